"""``openlookout models`` (the bundled model packages) and ``openlookout info`` (what a model
package holds: its manifest, the ONNX model's inputs and outputs, and whether it loads)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import demo
from ..errors import OpenLookoutError
from ..manifest import Manifest, read_manifest
from ..model import load_model

__all__ = ["OnnxSignature", "TensorInfo", "read_onnx_signature", "register"]


def register(subparsers: Any) -> None:
    models = subparsers.add_parser(
        "models",
        help="list the bundled demo model packages",
        description="Lists the model packages bundled with openlookout: name (usable as "
        "--model NAME and in `openlookout info NAME`), task, model input size, anomaly labels "
        "with their mask colours, and directory.",
    )
    models.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    models.set_defaults(handler=run_models)

    info = subparsers.add_parser(
        "info",
        help="describe a model package (manifest, ONNX inputs/outputs) and check that it loads",
        description="Describes a model package: every manifest field (with defaults filled in), "
        "the ONNX model's inputs and outputs, opset and producer, and whether openlookout loads it "
        "(which checks the manifest against the model). Exit status 1 when it does not load. "
        "The fields are explained in docs/model-package.md.",
    )
    info.add_argument(
        "package",
        metavar="PACKAGE",
        help="model package directory, or the name of a bundled model (see `openlookout models`)",
    )
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(handler=run_info)


# --------------------------------------------------------------------------------------------
# `models`
# --------------------------------------------------------------------------------------------


def _labels(manifest: Manifest) -> list[dict[str, str]]:
    if manifest.segmentation is None:
        return []
    return [{"name": label.name, "color": label.color} for label in manifest.segmentation.labels]


def bundled_models() -> list[dict[str, Any]]:
    rows = []
    for name in demo.model_names():
        path = demo.demo_model_path(name)
        manifest = read_manifest(path)
        rows.append(
            {
                "name": name,
                "default": name == demo.DEFAULT_MODEL,
                "task": manifest.task,
                "input": {"width": manifest.input.width, "height": manifest.input.height},
                "labels": _labels(manifest),
                "description": manifest.extra.get("description", ""),
                "path": str(path),
            }
        )
    return rows


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def run_models(args: argparse.Namespace) -> int:
    models = bundled_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    rows = [
        [
            m["name"] + (" *" if m["default"] else ""),
            m["task"],
            f"{m['input']['width']}x{m['input']['height']}",
            ", ".join(f"{label['name']} {label['color']}" for label in m["labels"]) or "-",
            m["path"],
        ]
        for m in models
    ]
    _print_table(["NAME", "TASK", "INPUT", "LABELS", "PATH"], rows)
    print("\n* the default model of `openlookout detect`")
    for m in models:
        if m["description"]:
            print(f"{m['name']}: {m['description']}")
    return 0


# --------------------------------------------------------------------------------------------
# Reading the ONNX model's signature (a few fields of its protobuf, no onnx package needed)
# --------------------------------------------------------------------------------------------

# TensorProto.DataType values that can appear on a model's inputs and outputs.
_ELEMENT_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    element_type: str
    shape: tuple[int | str, ...] | None  # None: unknown rank; str: a symbolic dimension

    def describe(self) -> str:
        shape = "?" if self.shape is None else "[" + ", ".join(map(str, self.shape)) + "]"
        return f"{self.name}  {self.element_type} {shape}"


@dataclass
class OnnxSignature:
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    ir_version: int | None = None
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("" = ai.onnx) -> version
    producer: str = ""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of a protobuf message: ints for varints, bytes views otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire_type = key & 7
        value: int | memoryview
        if wire_type == 0:
            value, pos = _varint(data, pos)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(data):
            raise ValueError("truncated protobuf field")
        yield key >> 3, value


def _text(value: int | memoryview) -> str:
    return bytes(value).decode("utf-8", "replace") if isinstance(value, memoryview) else ""


def _message(value: int | memoryview) -> memoryview:
    if not isinstance(value, memoryview):
        raise ValueError("expected an embedded message")
    return value


def _value_info(data: memoryview) -> TensorInfo:
    name, element_type, shape = "", "?", None
    for number, value in _fields(data):
        if number == 1:  # ValueInfoProto.name
            name = _text(value)
        elif number == 2:  # ValueInfoProto.type -> TypeProto
            for type_number, type_value in _fields(_message(value)):
                if type_number != 1:  # TypeProto.tensor_type; sequences/maps stay "?"
                    continue
                for tensor_number, tensor_value in _fields(_message(type_value)):
                    if tensor_number == 1 and isinstance(tensor_value, int):
                        element_type = _ELEMENT_TYPES.get(tensor_value, f"type{tensor_value}")
                    elif tensor_number == 2:  # TensorShapeProto
                        dims: list[int | str] = []
                        for _, dim in _fields(_message(tensor_value)):
                            entry: int | str = "?"
                            for dim_number, dim_value in _fields(_message(dim)):
                                if dim_number == 1 and isinstance(dim_value, int):
                                    entry = dim_value
                                elif dim_number == 2:
                                    entry = _text(dim_value)
                            dims.append(entry)
                        shape = tuple(dims)
    return TensorInfo(name, element_type, shape)


def read_onnx_signature(path: Path) -> OnnxSignature:
    """The inputs (graph inputs that are not initializers), outputs, IR version, opsets and
    producer of an ONNX file."""
    data = memoryview(path.read_bytes())
    signature = OnnxSignature()
    producer = version = ""
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            signature.ir_version = value
        elif number == 2:
            producer = _text(value)
        elif number == 3:
            version = _text(value)
        elif number == 8:  # OperatorSetIdProto
            domain, opset = "", 0
            for opset_number, opset_value in _fields(_message(value)):
                if opset_number == 1:
                    domain = _text(opset_value)
                elif opset_number == 2 and isinstance(opset_value, int):
                    opset = opset_value
            signature.opsets[domain] = opset
        elif number == 7:  # GraphProto
            initializers: set[str] = set()
            inputs: list[TensorInfo] = []
            for graph_number, graph_value in _fields(_message(value)):
                if graph_number == 5:  # TensorProto; name is field 8
                    for tensor_number, tensor_value in _fields(_message(graph_value)):
                        if tensor_number == 8:
                            initializers.add(_text(tensor_value))
                elif graph_number == 11:
                    inputs.append(_value_info(_message(graph_value)))
                elif graph_number == 12:
                    signature.outputs.append(_value_info(_message(graph_value)))
            # Before IR 4, weights were listed as graph inputs too; they are not fed.
            signature.inputs = [i for i in inputs if i.name not in initializers]
    signature.producer = f"{producer} {version}".strip()
    return signature


# --------------------------------------------------------------------------------------------
# `info`
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_package(path: Path) -> dict[str, Any]:
    """Everything ``info`` prints, as a JSON-ready dict. Raises OpenLookoutError when the
    manifest cannot be read at all."""
    manifest = read_manifest(path)
    model_file = path / manifest.model
    spec = manifest.input
    description: dict[str, Any] = {
        "package": str(path),
        "task": manifest.task,
        "format_version": manifest.format_version,
        "model": {
            "file": manifest.model,
            "bytes": model_file.stat().st_size,
            "sha256": _sha256(model_file),
        },
        "input": {
            "name": spec.name,
            "width": spec.width,
            "height": spec.height,
            "layout": spec.layout,
            "color": spec.color,
            "resize": spec.resize,
            "scale": spec.scale,
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
        "image_size": (
            {"width": manifest.image_size[0], "height": manifest.image_size[1]}
            if manifest.image_size
            else None
        ),
    }
    if manifest.classification is not None:
        c = manifest.classification
        description["classification"] = {
            "output": c.output,
            "activation": c.activation,
            "threshold": c.threshold,
        }
    if manifest.segmentation is not None:
        s = manifest.segmentation
        description["segmentation"] = {
            "output": s.output,
            "upsample": s.upsample,
            "activation": s.activation,
            "threshold": s.threshold,
            "labels": _labels(manifest),
        }
    description["extra"] = manifest.extra
    try:
        signature = read_onnx_signature(model_file)
        description["onnx"] = {
            "ir_version": signature.ir_version,
            "opsets": signature.opsets,
            "producer": signature.producer,
            "inputs": [_tensor_json(t) for t in signature.inputs],
            "outputs": [_tensor_json(t) for t in signature.outputs],
        }
    except (ValueError, UnicodeDecodeError) as e:
        description["onnx"] = {"error": f"not a readable ONNX file: {e}"}
    try:
        load_model(path)
        description["loads"] = True
        description["error"] = None
    except OpenLookoutError as e:
        description["loads"] = False
        description["error"] = f"{e.code}: {e.message}"
    return description


def _tensor_json(tensor: TensorInfo) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "type": tensor.element_type,
        "shape": None if tensor.shape is None else list(tensor.shape),
    }


def _numbers(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _print_description(d: dict[str, Any]) -> None:
    lines: list[tuple[str, str]] = [("package", d["package"])]
    if d["extra"].get("description"):
        lines.append(("description", str(d["extra"]["description"])))
    lines.append(("task", d["task"]))
    model = d["model"]
    lines.append(
        (
            "model",
            f"{model['file']} ({model['bytes'] / 1024:.1f} KiB, sha256 {model['sha256'][:16]})",
        )
    )
    i = d["input"]
    own_size = i["resize"] == "none"
    fed_at = "each image at its own size" if own_size else f"{i['width']}x{i['height']}"
    lines.append(
        (
            "input",
            f"{i['name'] or '(the only input)'}: {fed_at} {i['layout']} "
            f"{i['color']}, resize {i['resize']}, scale {i['scale']:g}, mean "
            f"{_numbers(i['mean'])}, std {_numbers(i['std'])}",
        )
    )
    size = d["image_size"]
    lines.append(
        (
            "image size",
            f"{size['width']}x{size['height']} only"
            if size
            else "any" + ("" if i["resize"] == "none" else " (resized to the input)"),
        )
    )
    if "classification" in d:
        c = d["classification"]
        lines.append(
            (
                "classification",
                f"output {c['output'] or '(the only output)'}, activation {c['activation']}, "
                f"threshold {c['threshold']:g}",
            )
        )
    if "segmentation" in d:
        s = d["segmentation"]
        activation = s["activation"] or "default (softmax for 2+ channels, none for 1)"
        lines.append(
            (
                "segmentation",
                f"output {s['output'] or '(the only output)'}, upsample {s['upsample']}, "
                f"activation {activation}, threshold {s['threshold']:g}",
            )
        )
        labels = ["background #FFFFFF"] + [f"{x['name']} {x['color']}" for x in s["labels"]]
        lines.append(("labels", ", ".join(labels)))
    for key, value in d["extra"].items():
        if key != "description":
            lines.append((key, json.dumps(value)))
    onnx = d["onnx"]
    if "error" in onnx:
        lines.append(("onnx", onnx["error"]))
    else:
        opsets = ", ".join(f"{k or 'ai.onnx'} {v}" for k, v in sorted(onnx["opsets"].items()))
        lines.append(
            ("onnx", f"IR {onnx['ir_version']}, opset {opsets}, by {onnx['producer'] or '?'}")
        )
        for kind in ("inputs", "outputs"):
            for n, t in enumerate(onnx[kind]):
                shape = "?" if t["shape"] is None else "[" + ", ".join(map(str, t["shape"])) + "]"
                lines.append(
                    (f"  {kind[:-1]}" if n == 0 else "", f"{t['name']}  {t['type']} {shape}")
                )
    lines.append(("loads", "yes" if d["loads"] else f"no: {d['error']}"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")


def run_info(args: argparse.Namespace) -> int:
    path = demo.resolve_package(args.package)
    try:
        description = describe_package(path)
    except OpenLookoutError as e:
        print(f"openlookout info: error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(description, indent=2))
    else:
        _print_description(description)
    return 0 if description["loads"] else 1
