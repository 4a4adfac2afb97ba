"""Finds and loads the ONNX Runtime shared library that the native core drives.

openlookout does not link ONNX Runtime. It dlopen()s the C API library shipped inside the
installed ``onnxruntime`` (or ``onnxruntime-gpu``, ...) Python package, located without importing
that package. ``OPENLOOKOUT_ORT_LIBRARY`` names another library file instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
from pathlib import Path

from . import _core
from .errors import InternalServerException

__all__ = ["ensure_onnxruntime", "find_onnxruntime_library"]

_lock = threading.Lock()


def _library_patterns() -> tuple[str, ...]:
    if sys.platform == "darwin":
        return ("libonnxruntime.*.dylib", "libonnxruntime.dylib")
    if sys.platform == "win32":
        return ("onnxruntime.dll",)
    return ("libonnxruntime.so.*", "libonnxruntime.so")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.name))


def find_onnxruntime_library() -> str:
    """Path of the ONNX Runtime C API library openlookout will load."""
    override = os.environ.get("OPENLOOKOUT_ORT_LIBRARY")
    if override:
        if not Path(override).is_file():
            raise InternalServerException(f"OPENLOOKOUT_ORT_LIBRARY={override} is not a file")
        return override
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise InternalServerException(
            "ONNX Runtime is not installed: pip install onnxruntime (or onnxruntime-gpu), "
            "or set OPENLOOKOUT_ORT_LIBRARY to a libonnxruntime shared library"
        )
    for package_dir in spec.submodule_search_locations:
        capi = Path(package_dir) / "capi"
        candidates = [p for pattern in _library_patterns() for p in capi.glob(pattern)]
        if candidates:
            return str(max(candidates, key=_version_key))
    raise InternalServerException(
        f"no ONNX Runtime C API library in {list(spec.submodule_search_locations)}; "
        "set OPENLOOKOUT_ORT_LIBRARY to a libonnxruntime shared library"
    )


def ensure_onnxruntime() -> None:
    """Loads ONNX Runtime into the process once (thread-safe, idempotent)."""
    if _core.onnxruntime_loaded():
        return
    with _lock:
        if not _core.onnxruntime_loaded():
            _core.load_onnxruntime(find_onnxruntime_library())
