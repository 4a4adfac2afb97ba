"""The ``openlookout`` command line. Each command group lives in its own module, which adds its
subcommands with a ``register(subparsers)`` function; this module only dispatches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__

# Command modules, in the order their commands appear in --help.
_COMMAND_MODULES: list[str] = [
    "detect",
    "models",  # `models` and `info`
    "anomalib",  # `anomalib-import`
    "registry",  # `project ...` and `model ...`
    "serve",  # `serve` and `aws-data-path`
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openlookout",
        description="Local replacement for Amazon Lookout for Vision's DetectAnomalies.",
    )
    parser.add_argument("--version", action="version", version=f"openlookout {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.handler(args) or 0)
