"""Command-line options that become ``load_model`` keywords, shared by ``detect`` and ``serve``:
``--limit NAME=VALUE`` for the decode limits and ``--io-binding``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ValidationException
from ..model import DEFAULT_LIMITS, LIMIT_NAMES, _limits

__all__ = ["add_model_options", "model_options"]

# --max-body-bytes has its own flag on serve (the server checks it before reading a body).
_LIMIT_FLAG_NAMES = tuple(name for name in LIMIT_NAMES if name != "max_body_bytes")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        dest="limits",
        metavar="NAME=VALUE",
        help="a decode limit (SECURITY.md); repeatable. Names and defaults: "
        + ", ".join(f"{name}={DEFAULT_LIMITS[name]}" for name in _LIMIT_FLAG_NAMES),
    )
    parser.add_argument(
        "--io-binding",
        choices=("auto", "on", "off"),
        default="auto",
        help="feed ONNX Runtime through IO binding (default auto: when the first provider keeps "
        "tensors on a device, such as CUDAExecutionProvider)",
    )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The load_model keywords the options above give. Raises ValidationException."""
    options: dict[str, Any] = {"io_binding": args.io_binding}
    for text in args.limits:
        name, sep, value = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in _LIMIT_FLAG_NAMES:
            raise ValidationException(
                f"--limit {text}: expected NAME=VALUE with NAME one of "
                + ", ".join(_LIMIT_FLAG_NAMES)
            )
        try:
            options[name] = int(value.strip().replace("_", ""))
        except ValueError:
            raise ValidationException(f"--limit {text}: VALUE must be an integer") from None
    # Checked now, so that `serve` refuses bad values at start rather than at StartModel.
    _limits({**DEFAULT_LIMITS, **{k: v for k, v in options.items() if k in LIMIT_NAMES}})
    return options
