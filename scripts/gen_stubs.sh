#!/usr/bin/env bash
# Regenerates python/openlookout/_core.pyi from the installed extension module.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd "$out" && "$python" -m pybind11_stubgen openlookout._core -o "$out")
cp "$out/openlookout/_core.pyi" python/openlookout/_core.pyi
echo "wrote python/openlookout/_core.pyi"
