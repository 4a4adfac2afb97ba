"""``openlookout anomalib-import``: turns an anomalib ONNX export into a model package
(:func:`openlookout.anomalib.import_anomalib`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..anomalib import FEEDS, AnomalibExport, import_anomalib, inspect_anomalib_export
from ..errors import OpenLookoutError

__all__ = ["add_import_arguments", "add_model_import_anomalib", "describe_export", "register"]

DESCRIPTION = """\
Writes a model package (manifest.json + the export's model.onnx and model.onnx.data, copied byte
for byte) for an anomalib 2.x ONNX export (Engine.export(model, export_type="onnx")), so that
openlookout answers DetectAnomalies with anomalib's own numbers: IsAnomalous and Confidence from
pred_score, the mask from anomaly_map upsampled bilinearly to the image's size, both cut at the
graph's own threshold (0.5). EXPORT is the folder holding model.onnx (or anomalib's export root,
with weights/onnx/model.onnx, or the .onnx file).

--feed original (default) feeds each image at its own size, as anomalib's OpenVINOInferencer
does. --feed pre-resized makes openlookout resize the image to the graph's own first resize
target instead (only for graphs that start with a bilinear resize to a fixed size): the same
answer up to float rounding, and cheaper on large images, since the image is shrunk before it is
converted to float (see docs/model-package.md)."""


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by every command that imports an anomalib export."""
    parser.add_argument("export", metavar="EXPORT", help="anomalib ONNX export folder or file")
    parser.add_argument(
        "--label", default="anomaly", help="anomaly label name in the mask (default: anomaly)"
    )
    parser.add_argument(
        "--color", default="#FF0000", help="mask colour of the label, #RRGGBB (default: #FF0000)"
    )
    parser.add_argument(
        "--feed",
        choices=FEEDS,
        default="original",
        help="feed the image at its own size (default) or pre-resized to the graph's resize target",
    )


def register(subparsers: Any) -> None:
    command = subparsers.add_parser(
        "anomalib-import",
        help="turn an anomalib ONNX export into a model package",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_import_arguments(command)
    command.add_argument(
        "--out", required=True, metavar="PACKAGE_DIR", help="model package directory to write"
    )
    command.add_argument(
        "--overwrite", action="store_true", help="replace PACKAGE_DIR when it is not empty"
    )
    command.set_defaults(handler=run_import)


def add_model_import_anomalib(model_subparsers: Any) -> None:
    """Adds ``import-anomalib`` to the registry's ``openlookout model`` group (cli/registry.py):
    the export becomes the project's next model version (``Registry.import_model``)."""
    command = model_subparsers.add_parser(
        "import-anomalib",
        help="import an anomalib ONNX export as the project's next model version",
        description=DESCRIPTION.replace(
            "Writes a model package",
            "Imports, as the project's next model version, a model package",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_import_arguments(command)
    command.add_argument("--project", "--project-name", dest="project", required=True)
    command.add_argument("--description", help="model description ([0-9A-Za-z.-_]*, up to 500)")
    command.add_argument("--home", help="registry directory")
    command.add_argument("--json", action="store_true", help="print the new version as JSON")
    command.set_defaults(handler=run_model_import)


def run_model_import(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from ..registry import Registry

    try:
        with tempfile.TemporaryDirectory(prefix="openlookout-anomalib-") as scratch:
            # Written without loading it: the registry loads the copy it keeps, once.
            package = import_anomalib(
                args.export,
                Path(scratch) / "package",
                label=args.label,
                color=args.color,
                feed=args.feed,
                verify=False,
            )
            export = inspect_anomalib_export(package)
            record = Registry(args.home).import_model(
                args.project, package, description=args.description
            )
    except (OpenLookoutError, OSError) as e:
        print(f"openlookout: {_error_text(e)}", file=sys.stderr)
        return 1
    if args.json:
        answer = {
            "ProjectName": record.project,
            "ModelVersion": str(record.version),
            "ModelArn": record.arn,
            "Package": str(record.package),
        }
        print(json.dumps(answer, indent=1))
        return 0
    print(f"imported {args.export} as {record.project} version {record.version}")
    for line in describe_export(export, args.feed):
        print(line)
    return 0


def describe_export(export: AnomalibExport, feed: str) -> list[str]:
    """A few lines on what the import found, for the terminal."""
    batch = "dynamic" if export.batch is None else f"fixed at {export.batch} (image repeated)"
    size = (
        "dynamic"
        if export.input_width is None
        else f"fixed at {export.input_width}x{export.input_height}"
    )
    resize = export.first_resize
    target = (
        f"{resize.width}x{resize.height}"
        if resize is not None and resize.width is not None
        else "none fixed"
    )
    lines = [
        f"  task {export.task}; batch {batch}; input size {size}; feed {feed}",
        f"  first operation {export.first_op}; resize target {target}",
        f"  thresholds: {export.thresholds_from}",
    ]
    problem = export.pre_resize_problem
    if feed == "original" and problem is None:
        lines.append(
            "  --feed pre-resized is possible: the same answer up to float rounding, cheaper on "
            "large images"
        )
    elif feed == "original":
        lines.append(f"  --feed pre-resized is not possible: {problem}")
    return lines


def _error_text(error: BaseException) -> str:
    if isinstance(error, OpenLookoutError):
        return f"{error.code}: {error.message}"
    return f"{type(error).__name__}: {error}"


def run_import(args: argparse.Namespace) -> int:
    try:
        package = import_anomalib(
            args.export,
            args.out,
            label=args.label,
            color=args.color,
            feed=args.feed,
            overwrite=args.overwrite,
        )
        export = inspect_anomalib_export(package)
    except (OpenLookoutError, OSError) as e:
        text = _error_text(e).replace("overwrite=True", "--overwrite")
        print(f"openlookout anomalib-import: error: {text}", file=sys.stderr)
        return 1
    print(f"wrote model package {Path(package)}")
    for line in describe_export(export, args.feed):
        print(line)
    return 0
