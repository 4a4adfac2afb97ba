#!/usr/bin/env bash
# Installs everything openlookout's build and tests need on a fresh Debian bookworm machine.
# Idempotent: re-running it is cheap and changes nothing that is already in place.
#
#   1. Debian packages: compilers (gcc; clang and its libFuzzer/sanitizer runtimes for
#      scripts/fuzz.sh), libjpeg-turbo (libjpeg for the core, TurboJPEG for the C++ tests'
#      fixtures), libspng, zlib, libdeflate, Highway.
#   2. ONNX Runtime C API headers. Bookworm has none, so they are taken from Debian trixie's
#      libonnxruntime-dev (ORT_API_VERSION 21) with `apt-get download` through a one-off sources
#      list, and only its headers are unpacked (dpkg -x); no trixie library is installed.
#      The ORT *library* is the one inside the onnxruntime Python wheel, loaded at run time.
#   3. Python packages for building and testing (pip), and boto3/botocore 1.40.60 (the last
#      botocore with lookoutvision) in third_party/botocore-1.40.60 for the server tests.
#
# Environment knobs:
#   OPENLOOKOUT_ORT_HEADERS  where the headers go (default: third_party/onnxruntime in this repo)
#   OPENLOOKOUT_SKIP_APT=1   skip step 1 (packages already present, or not root)
#   OPENLOOKOUT_SKIP_PIP=1   skip step 3
#   OPENLOOKOUT_PINNED_BOTOCORE  where boto3/botocore 1.40.60 go (default: third_party/botocore-1.40.60)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ort_dir=${OPENLOOKOUT_ORT_HEADERS:-$here/third_party/onnxruntime}
pinned_botocore=${OPENLOOKOUT_PINNED_BOTOCORE:-$here/third_party/botocore-1.40.60}
python=${PYTHON:-python3}

apt_packages=(build-essential pkg-config libjpeg62-turbo-dev libturbojpeg0-dev libspng-dev zlib1g-dev libdeflate-dev libhwy-dev)
# scripts/fuzz.sh: clang with libFuzzer and the sanitizer runtimes (-fsanitize=fuzzer,address,
# undefined), which bookworm ships in libclang-rt-14-dev (only recommended by clang, and
# recommends are not installed here).
apt_packages+=(clang libclang-rt-14-dev)
# scripts/valgrind.sh: the C++ tests under memcheck (leaks and uninitialised reads).
apt_packages+=(valgrind)

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "${OPENLOOKOUT_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

if [ ! -f "$ort_dir/include/onnxruntime_c_api.h" ]; then
  echo "bootstrap: fetching ONNX Runtime C API headers from Debian trixie's libonnxruntime-dev"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  cat > "$work/trixie.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/parts"
            -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
            -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Architecture=amd64")
  mkdir -p "$work/parts" && mv "$work/trixie.sources" "$work/parts/"
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && apt-get "${apt_opts[@]}" download libonnxruntime-dev)
  deb=$(ls "$work"/libonnxruntime-dev_*.deb)
  dpkg -x "$deb" "$work/x"
  hdr=$(dirname "$(find "$work/x" -name onnxruntime_c_api.h | head -n1)")
  mkdir -p "$ort_dir/include"
  cp "$hdr"/*.h "$ort_dir/include/"
  basename "$deb" > "$ort_dir/SOURCE"
  echo "bootstrap: ORT headers in $ort_dir/include ($(grep -m1 'define ORT_API_VERSION' "$ort_dir/include/onnxruntime_c_api.h"))"
fi

if [ "${OPENLOOKOUT_SKIP_PIP:-0}" != 1 ]; then
  "$python" -m pip install -q --disable-pip-version-check -r "$here/requirements-dev.txt"
  # botocore 1.40.60, the last release that ships lookoutvision, with its boto3, kept aside in
  # its own directory: the server tests run AWS-style scripts on it in subprocesses
  # (PYTHONPATH=$pinned_botocore), beside the current botocore installed above.
  if [ ! -f "$pinned_botocore/botocore-1.40.60.dist-info/METADATA" ]; then
    echo "bootstrap: installing boto3/botocore 1.40.60 into $pinned_botocore"
    "$python" -m pip install -q --disable-pip-version-check --no-warn-conflicts \
      --target "$pinned_botocore" boto3==1.40.60 botocore==1.40.60
  fi
fi
echo "bootstrap: ok"
