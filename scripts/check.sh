#!/usr/bin/env bash
# Pre-commit-style checks, runnable by hand: lint, formatting (ruff format), type stubs up to date,
# mypy over the package (against the installed extension).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}

lint_dirs=()
for d in python tests benchmarks tools examples; do [ -d "$d" ] && lint_dirs+=("$d"); done
"$python" -m ruff check "${lint_dirs[@]}"
"$python" -m ruff format --check --quiet "${lint_dirs[@]}" \
  || { echo "unformatted files: run ruff format ${lint_dirs[*]}" >&2; exit 1; }
"$python" -m mypy

# The extension's stub is generated from the built module; a stale committed stub fails here.
stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
(cd "$stubs" && "$python" -m pybind11_stubgen openlookout._core -o "$stubs" >/dev/null)
if ! diff -u python/openlookout/_core.pyi "$stubs/openlookout/_core.pyi"; then
  echo "python/openlookout/_core.pyi is stale: run scripts/gen_stubs.sh" >&2
  exit 1
fi
echo "checks: ok"
