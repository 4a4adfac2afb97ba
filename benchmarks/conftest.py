"""Shared fixtures for the benchmarks (run with ``python benchmarks/run.py`` or
``python -m pytest benchmarks --benchmark-enable``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
