#!/usr/bin/env bash
# The project's test command (README, .ci/run): builds and installs the package, runs the C++
# core's unit tests under ASan+UBSan, the static checks, and the Python test suite.
# Run scripts/bootstrap.sh once before (it installs the native prerequisites).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
jobs=$(nproc 2>/dev/null || echo 2)

echo "== build and install openlookout"
"$python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps .

echo "== C++ core unit tests (ASan + UBSan + LSan)"
cmake -S . -B build/core-tests -G Ninja -DCMAKE_BUILD_TYPE=Debug -DOPENLOOKOUT_BUILD_TESTS=ON \
      -DOPENLOOKOUT_BUILD_PYTHON=OFF -DOPENLOOKOUT_SANITIZE=address,undefined >/dev/null
cmake --build build/core-tests -j "$jobs" >/dev/null
# The pipeline tests (cpp/tests/test_pipeline.cpp) run real ONNX Runtime sessions: they need the
# library inside the onnxruntime wheel and the tiny models of cpp/fuzz/make_fuzz_model.py.
"$python" cpp/fuzz/make_fuzz_model.py build/core-tests/models >/dev/null
OPENLOOKOUT_ORT_LIBRARY=${OPENLOOKOUT_ORT_LIBRARY:-$("$python" -c \
  'from openlookout._runtime import find_onnxruntime_library as f; print(f())')} \
OPENLOOKOUT_TEST_MODELS=build/core-tests/models \
ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_init_order=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ./build/core-tests/core_tests

echo "== static checks"
bash scripts/check.sh

echo "== Python tests"
"$python" -m pytest tests -q -p no:cacheprovider "$@"
