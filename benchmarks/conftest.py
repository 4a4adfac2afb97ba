"""Shared fixtures for the benchmarks (run with ``python benchmarks/run.py`` or
``python -m pytest benchmarks --benchmark-enable``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """bench_http.py's table of HTTP against in-process figures, when it ran."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and module.__file__.endswith("bench_http.py"):
            for line in module.summary_lines():
                terminalreporter.write_line(line)
