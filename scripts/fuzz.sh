#!/usr/bin/env bash
# Builds and runs openlookout's fuzzers:
#   libFuzzer (clang, ASan + UBSan + LSan): fuzz_jpeg, fuzz_png (Decoder::decode) and
#     fuzz_pipeline (bytes -> Pipeline::detect -> result, on tiny ONNX models), each first replaying
#     cpp/fuzz/crashers/<target>/ (past findings), then fuzzing for SECONDS_PER_TARGET seconds from
#     the seed corpus cpp/fuzz/corpus/<target>/ (new inputs go to build/fuzz/corpus/<target>/,
#     crashes to build/fuzz/artifacts/<target>/);
#   atheris: the Python Model.detect() entry (cpp/fuzz/atheris_detect.py), for SECONDS_PER_TARGET/3
#     seconds (0 with FUZZ_ATHERIS=0).
# and finally tools/soak.py (FUZZ_SOAK_ITERATIONS detections, default 20000, 0 to skip), which
# reports resident-memory drift.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60; .ci/run uses a short run)
#   FUZZ_TARGETS="fuzz_png" bash scripts/fuzz.sh 600
#
# Needs clang and its runtime (scripts/bootstrap.sh installs clang and libclang-rt-14-dev), the
# onnx and onnxruntime Python packages, and for atheris/soak the installed openlookout package.
# Exits non-zero when a fuzzer finds a crash, leak, hang (-timeout) or memory blow-up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
seconds=${1:-60}
python=${PYTHON:-python3}
targets=${FUZZ_TARGETS:-fuzz_jpeg fuzz_png fuzz_png_scanlines fuzz_pipeline}
build=${FUZZ_BUILD_DIR:-$root/build/fuzz}
cxx=${FUZZ_CXX:-clang++}
max_len=${FUZZ_MAX_LEN:-65536}
jobs=$(nproc 2>/dev/null || echo 2)

if ! command -v "$cxx" >/dev/null; then
  echo "fuzz: $cxx not found (scripts/bootstrap.sh installs clang)" >&2
  exit 1
fi

# libspng and libjpeg-turbo instrumented for coverage and ASan, so that libFuzzer steers by the
# parsers' branches too (with the system's uninstrumented libraries it sees only openlookout's).
# Built once from Debian bookworm's source packages (the versions the tests run against; the
# tarballs are checked against scripts/native-deps.txt) into $deps; FUZZ_INSTRUMENT_DEPS=0 uses
# the system libraries instead. UBSan is left out there: third-party UB is not ours to fix and
# would stop every run.
deps=${FUZZ_DEPS_DIR:-$root/build/fuzz-deps}
build_instrumented_deps() {
  local work=$deps/work prefix=$deps/prefix cc=${FUZZ_CC:-clang}
  local flags="-O2 -g -fsanitize=fuzzer-no-link,address -fno-omit-frame-pointer -fPIC"
  [ -f "$prefix/lib/libjpeg.a" ] && [ -f "$prefix/lib/libspng.a" ] && return 0
  rm -rf "$deps" && mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/parts" \
    "$work/src" "$prefix/lib/pkgconfig" "$prefix/include"
  cat > "$work/parts/src.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  local apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/parts"
                  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
                  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work/src" && apt-get "${apt_opts[@]}" source -qq --download-only libspng libjpeg-turbo) \
    2>/dev/null
  local name tarball sha
  for name in libspng libjpeg-turbo; do
    tarball=$(ls "$work/src/${name}"_*.orig.tar.gz)
    sha=$(awk -v n="$name" '$1 == n {print $3}' scripts/native-deps.txt)
    echo "$sha  $tarball" | sha256sum -c --quiet - || return 1
    mkdir -p "$work/$name" && tar -xzf "$tarball" -C "$work/$name" --strip-components=1
  done
  # libspng: one C file (its CMake cannot build a static-only library in 0.7.3).
  $cc $flags -c "$work/libspng/spng/spng.c" -o "$work/spng.o"
  ar rcs "$prefix/lib/libspng.a" "$work/spng.o"
  cp "$work/libspng/spng/spng.h" "$prefix/include/"
  printf 'prefix=%s\nName: spng\nDescription: libspng (fuzzing build)\nVersion: 0.7.3\nLibs: -L${prefix}/lib -lspng -lz -lm\nCflags: -I${prefix}/include\n' \
    "$prefix" > "$prefix/lib/pkgconfig/spng.pc"
  # libjpeg-turbo's libjpeg (what the core links; TurboJPEG only makes the C++ tests' fixtures),
  # without SIMD (its assembly would be invisible to the instrumentation).
  CC=$cc CFLAGS="$flags" cmake -S "$work/libjpeg-turbo" -B "$work/libjpeg-turbo/build" -G Ninja \
    -DCMAKE_POLICY_VERSION_MINIMUM=3.5 -DCMAKE_BUILD_TYPE=None -DENABLE_SHARED=OFF \
    -DENABLE_STATIC=ON -DWITH_TURBOJPEG=OFF -DWITH_SIMD=0 -Wno-dev >/dev/null 2>&1
  cmake --build "$work/libjpeg-turbo/build" -j "$jobs" --target jpeg-static >/dev/null
  cp "$work/libjpeg-turbo/build/libjpeg.a" "$prefix/lib/"
  cp "$work/libjpeg-turbo/build/jconfig.h" "$work/libjpeg-turbo/jpeglib.h" \
    "$work/libjpeg-turbo/jmorecfg.h" "$work/libjpeg-turbo/jerror.h" "$prefix/include/"
  printf 'prefix=%s\nName: libjpeg\nDescription: libjpeg-turbo libjpeg API (fuzzing build)\nVersion: 2.1.5\nLibs: -L${prefix}/lib -ljpeg\nCflags: -I${prefix}/include\n' \
    "$prefix" > "$prefix/lib/pkgconfig/libjpeg.pc"
}
deps_note="system libspng/libjpeg-turbo (uninstrumented)"
if [ "${FUZZ_INSTRUMENT_DEPS:-1}" != 0 ]; then
  echo "== instrumented libspng and libjpeg-turbo ($deps)"
  if build_instrumented_deps; then
    export PKG_CONFIG_PATH=$deps/prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    deps_note="instrumented libspng 0.7.3 and libjpeg-turbo 2.1.5's libjpeg (no SIMD)"
  else
    echo "fuzz: could not build instrumented dependencies; using the system libraries" >&2
    rm -rf "$deps"
    build=$build-system-deps
  fi
else
  build=$build-system-deps
fi

echo "== build the fuzzers ($build; $deps_note)"
# CMake caches what pkg-config found: start afresh when the libraries changed.
if [ -f "$build/CMakeCache.txt" ] && [ "$(cat "$build/.fuzz-deps" 2>/dev/null)" != "$deps_note" ]; then
  rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
fi
mkdir -p "$build" && echo "$deps_note" > "$build/.fuzz-deps"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
      -DOPENLOOKOUT_BUILD_FUZZERS=ON -DOPENLOOKOUT_BUILD_PYTHON=OFF -DOPENLOOKOUT_BUILD_TESTS=OFF \
      -DOPENLOOKOUT_SANITIZE=address,undefined >/dev/null
cmake --build "$build" -j "$jobs" --target $targets >/dev/null
"$python" cpp/fuzz/make_fuzz_model.py "$build" >/dev/null

if [ -z "${OPENLOOKOUT_ORT_LIBRARY:-}" ]; then
  # The library inside the onnxruntime wheel, as openlookout finds it (without importing it).
  OPENLOOKOUT_ORT_LIBRARY=$("$python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("onnxruntime")
libs = [p for d in spec.submodule_search_locations for p in pathlib.Path(d, "capi").glob("libonnxruntime.so*")]
print(max(libs, key=lambda p: len(p.name)))
PY
)
fi
export OPENLOOKOUT_ORT_LIBRARY OPENLOOKOUT_FUZZ_MODELS=$build
# halt_on_error: UBSan findings are crashes too. detect_leaks: LSan at the end of every run.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}

status=0
summary=()
for target in $targets; do
  case $target in
    fuzz_jpeg) dict=(-dict=cpp/fuzz/jpeg.dict) ;;
    fuzz_png) dict=(-dict=cpp/fuzz/png.dict) ;;
    *) dict=() ;;
  esac
  work=$build/corpus/$target artifacts=$build/artifacts/$target/ log=$build/$target.log
  mkdir -p "$work" "$artifacts"
  crashers=(cpp/fuzz/crashers/$target/*)
  if [ -e "${crashers[0]}" ]; then
    echo "== $target: replaying ${#crashers[@]} past crasher(s)"
    "$build/$target" -timeout=5 -rss_limit_mb=2048 "${crashers[@]}" >"$log.replay" 2>&1 || {
      echo "fuzz: $target fails on a past crasher again; see $log.replay" >&2
      tail -n 30 "$log.replay" >&2
      status=1
    }
  fi
  echo "== $target: fuzzing for ${seconds}s"
  rc=0
  "$build/$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=5 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts" -print_final_stats=1 "${dict[@]}" \
      "$work" "cpp/fuzz/corpus/$target" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  corpus=$(find "$work" -type f | wc -l)
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "fuzz: $target FOUND A PROBLEM (exit $rc); input saved under $artifacts; log $log" >&2
    grep -E "ERROR|SUMMARY|fuzz:|==[0-9]+==" "$log" | head -n 20 >&2 || true
    summary+=("$target: ${execs:-?} executions (${rate:-?}/s), FAILED (exit $rc)")
  else
    summary+=("$target: ${execs:-?} executions (${rate:-?}/s), $corpus inputs in the working corpus, no findings")
  fi
done

if [ "${FUZZ_ATHERIS:-1}" != 0 ]; then
  atheris_seconds=$(( seconds / 3 > 10 ? seconds / 3 : 10 ))
  echo "== atheris: Model.detect for ${atheris_seconds}s"
  log=$build/atheris_detect.log
  mkdir -p "$build/artifacts/atheris/" "$build/corpus/atheris"
  if ! "$python" -c "import atheris" 2>/dev/null; then
    echo "fuzz: atheris is not installed (pip install atheris); skipped" >&2
    summary+=("atheris_detect: skipped (atheris not installed)")
  elif "$python" cpp/fuzz/atheris_detect.py -max_total_time="$atheris_seconds" -timeout=10 \
        -rss_limit_mb=4096 -max_len="$max_len" -artifact_prefix="$build/artifacts/atheris/" \
        -print_final_stats=1 "$build/corpus/atheris" cpp/fuzz/corpus/fuzz_pipeline >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    summary+=("atheris_detect: ${execs:-?} executions, no findings")
  else
    status=1
    tail -n 30 "$log" >&2
    summary+=("atheris_detect: FAILED; log $log")
  fi
fi

if [ "${FUZZ_SOAK_ITERATIONS:-20000}" != 0 ]; then
  echo "== soak: ${FUZZ_SOAK_ITERATIONS:-20000} detections"
  if "$python" tools/soak.py --iterations "${FUZZ_SOAK_ITERATIONS:-20000}" | tee "$build/soak.log"; then
    summary+=("soak: $(tail -n1 "$build/soak.log")")
  else
    status=1
    summary+=("soak: FAILED (see above)")
  fi
fi

echo "== fuzz summary"
printf '  %s\n' "${summary[@]}"
exit $status
