#!/usr/bin/env bash
# cibuildwheel `before-all` for manylinux_2_28 containers: builds the native libraries from the
# pinned sources in scripts/native-deps.txt (checked by sha256) as static, position-independent
# libraries under /opt/deps, and unpacks the ONNX Runtime C API headers to /opt/onnxruntime.
# Static linking keeps the wheel self-contained; libonnxruntime is never bundled (it comes from
# the onnxruntime wheel and is loaded at run time).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=/opt/deps
work=$(mktemp -d)
jobs=$(nproc)

fetch() {  # fetch NAME -> path of the verified download
  local name=$1 url sha file
  read -r _ url sha < <(grep -E "^$name[[:space:]]" "$here/native-deps.txt")
  file="$work/$(basename "${url//%2b/+}")"
  curl -fsSL --retry 3 -o "$file" "$url"
  echo "$sha  $file" | sha256sum -c - >&2
  echo "$file"
}

build_cmake() {  # build_cmake NAME [cmake args...]
  local name=$1; shift
  local archive src
  archive=$(fetch "$name")
  mkdir -p "$work/$name" && tar -xf "$archive" -C "$work/$name" --strip-components=1
  src="$work/$name"
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$prefix \
        -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
        -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_SHARED_LIBS=OFF "$@"
  cmake --build "$src/build" -j "$jobs"
  cmake --install "$src/build"
}

yum install -y -q nasm pkgconfig zlib-devel cpio || true
# The core uses libjpeg (libjpeg.a, libjpeg.pc); TurboJPEG only makes the C++ tests' fixtures.
build_cmake libjpeg-turbo -DENABLE_SHARED=OFF -DENABLE_STATIC=ON -DWITH_TURBOJPEG=OFF
build_cmake libdeflate -DLIBDEFLATE_BUILD_SHARED_LIB=OFF -DLIBDEFLATE_BUILD_GZIP=OFF
build_cmake libspng -DSPNG_SHARED=ON -DSPNG_STATIC=ON -DBUILD_EXAMPLES=OFF  # its CMake needs the shared target
build_cmake highway -DHWY_ENABLE_TESTS=OFF -DHWY_ENABLE_EXAMPLES=OFF -DHWY_ENABLE_CONTRIB=OFF

deb=$(fetch onnxruntime-dev)
mkdir -p "$work/ort" /opt/onnxruntime/include
(cd "$work/ort" && ar x "$deb" && tar -xf data.tar.*)
cp "$(dirname "$(find "$work/ort" -name onnxruntime_c_api.h | head -n1)")"/*.h /opt/onnxruntime/include/
rm -rf "$work"
