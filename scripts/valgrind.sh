#!/usr/bin/env bash
# The C++ core's unit tests (every stage, every error path, whole pipelines on real ONNX Runtime
# sessions) under valgrind's memcheck: no leak (definite or indirect) and no invalid or
# uninitialised access, which the ASan build in scripts/test.sh does not see (ASan has no
# uninitialised-read check). A plain optimised build with debug info, so the code is the shipped
# code. Run scripts/bootstrap.sh once before (it installs valgrind); .ci/run runs this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
jobs=$(nproc 2>/dev/null || echo 2)
build=build/valgrind

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOPENLOOKOUT_BUILD_TESTS=ON \
      -DOPENLOOKOUT_BUILD_PYTHON=OFF >/dev/null
cmake --build "$build" -j "$jobs" >/dev/null
"$python" cpp/fuzz/make_fuzz_model.py "$build/models" >/dev/null

log="$build/memcheck.log"
status=0
OPENLOOKOUT_ORT_LIBRARY=${OPENLOOKOUT_ORT_LIBRARY:-$("$python" -c \
  'from openlookout._runtime import find_onnxruntime_library as f; print(f())')} \
OPENLOOKOUT_TEST_MODELS="$build/models" \
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --track-origins=no \
  --suppressions=scripts/valgrind.supp --num-callers=30 --log-file="$log" \
  "./$build/core_tests" || status=$?
grep -E "ERROR SUMMARY|definitely lost|indirectly lost" "$log" | sed 's/^==[0-9]*== */valgrind: /'
if [ "$status" -ne 0 ]; then
  echo "valgrind: core_tests failed (exit $status); see $log" >&2
  exit "$status"
fi
echo "valgrind: ok"
