"""The model package: a directory holding ``manifest.json`` and the ONNX file it names.

This module reads and validates the manifest (every problem names the field at fault) and turns
it into the native core's configuration. The fields are documented in ``docs/model-package.md``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ResourceNotFoundException, ValidationException

__all__ = [
    "ClassificationSpec",
    "InputSpec",
    "Label",
    "Manifest",
    "SegmentationSpec",
    "read_manifest",
]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
# L4V's AnomalyName pattern is [a-zA-Z0-9]* (1-256); "-" and "_" are allowed here too, since
# manifests written by hand use them, and "background" is reserved for the first entry.
_LABEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,255}$")


@dataclass(frozen=True)
class InputSpec:
    width: int
    height: int
    name: str | None = None
    layout: str = "NCHW"
    color: str = "RGB"
    resize: str = "bilinear"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fast_jpeg_scaling: bool = False


@dataclass(frozen=True)
class ClassificationSpec:
    output: str | None = None
    activation: str = "none"
    threshold: float = 0.5


@dataclass(frozen=True)
class Label:
    name: str
    color: str  # upper-case "#RRGGBB"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return (int(self.color[1:3], 16), int(self.color[3:5], 16), int(self.color[5:7], 16))


@dataclass(frozen=True)
class SegmentationSpec:
    labels: tuple[Label, ...]
    output: str | None = None
    threshold: float = 0.5
    upsample: str = "nearest"
    activation: str | None = None  # None: "none" for a 1-channel map, "softmax" for C >= 2


@dataclass(frozen=True)
class Manifest:
    task: str
    model: str
    input: InputSpec
    image_size: tuple[int, int] | None = None  # (width, height)
    classification: ClassificationSpec | None = None
    segmentation: SegmentationSpec | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # unknown top-level fields, kept


def _fail(field_name: str, problem: str) -> ValidationException:
    return ValidationException(f"manifest.json: {field_name}: {problem}")


def _section(data: dict[str, Any], key: str, required: bool) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        if required:
            raise _fail(key, "is required")
        return None
    if not isinstance(value, dict):
        raise _fail(key, f"must be an object, not {type(value).__name__}")
    return value


def _int(section: dict[str, Any], key: str, where: str, low: int, high: int) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{where}.{key}", f"must be an integer, not {value!r}")
    if not low <= value <= high:
        raise _fail(f"{where}.{key}", f"must be between {low} and {high}, not {value}")
    return value


def _number(section: dict[str, Any], key: str, where: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"{where}.{key}", f"must be a finite number, not {value!r}")
    return float(value)


def _threshold(section: dict[str, Any], where: str) -> float:
    value = _number(section, "threshold", where, 0.5)
    if not 0.0 < value < 1.0:
        raise _fail(f"{where}.threshold", f"must be strictly between 0 and 1, not {value}")
    return value


def _choice(
    section: dict[str, Any], key: str, where: str, choices: tuple[str, ...], default: str | None
) -> str | None:
    value = section.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in {c.lower() for c in choices}:
        raise _fail(f"{where}.{key}", f"must be one of {', '.join(choices)}, not {value!r}")
    return next(c for c in choices if c.lower() == value.lower())


def _triple(
    section: dict[str, Any], key: str, where: str, default: tuple[float, float, float]
) -> tuple[float, float, float]:
    value = section.get(key, list(default))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    ):
        raise _fail(f"{where}.{key}", f"must be a list of three finite numbers, not {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _optional_name(section: dict[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}.{key}", f"must be a non-empty string, not {value!r}")
    return value


def _parse_input(data: dict[str, Any]) -> InputSpec:
    section = _section(data, "input", required=True)
    assert section is not None
    std = _triple(section, "std", "input", (1.0, 1.0, 1.0))
    if any(s == 0.0 for s in std):
        raise _fail("input.std", "must not contain zero")
    scale = _number(section, "scale", "input", 1.0 / 255.0)
    if scale == 0.0:
        raise _fail("input.scale", "must not be zero")
    fast = section.get("fast_jpeg_scaling", False)
    if not isinstance(fast, bool):
        raise _fail("input.fast_jpeg_scaling", f"must be true or false, not {fast!r}")
    resize = (
        _choice(section, "resize", "input", ("bilinear", "area", "nearest", "none"), "bilinear")
        or "bilinear"
    )
    # resize "none" feeds each image at its own size; width/height then describe nothing.
    sized = resize != "none" or "width" in section or "height" in section
    return InputSpec(
        fast_jpeg_scaling=fast,
        width=_int(section, "width", "input", 1, 16384) if sized else 0,
        height=_int(section, "height", "input", 1, 16384) if sized else 0,
        name=_optional_name(section, "name", "input"),
        layout=_choice(section, "layout", "input", ("NCHW", "NHWC"), "NCHW") or "NCHW",
        color=_choice(section, "color", "input", ("RGB", "BGR"), "RGB") or "RGB",
        resize=resize,
        scale=scale,
        mean=_triple(section, "mean", "input", (0.0, 0.0, 0.0)),
        std=std,
    )


def _parse_labels(section: dict[str, Any]) -> tuple[Label, ...]:
    raw = section.get("labels")
    if not isinstance(raw, list) or not raw:
        raise _fail("segmentation.labels", "must be a non-empty list of {name, color}")
    if len(raw) > 254:
        raise _fail("segmentation.labels", f"at most 254 labels, not {len(raw)}")
    labels = []
    seen_names: set[str] = set()
    seen_colors: set[str] = {"#FFFFFF"}
    for i, item in enumerate(raw):
        where = f"segmentation.labels[{i}]"
        if not isinstance(item, dict):
            raise _fail(where, "must be an object with name and color")
        name, color = item.get("name"), item.get("color")
        if not isinstance(name, str) or not _LABEL_NAME.match(name):
            raise _fail(f"{where}.name", f"must match [A-Za-z0-9][A-Za-z0-9_-]*, not {name!r}")
        if name.lower() == "background":
            raise _fail(f"{where}.name", "'background' is reserved for the implicit first entry")
        if name in seen_names:
            raise _fail(f"{where}.name", f"duplicate label {name!r}")
        if not isinstance(color, str) or not _COLOR.match(color):
            raise _fail(f"{where}.color", f"must be a colour '#RRGGBB', not {color!r}")
        color = color.upper()
        if color in seen_colors:
            raise _fail(f"{where}.color", f"{color} is already used (white is the background)")
        seen_names.add(name)
        seen_colors.add(color)
        labels.append(Label(name=name, color=color))
    return tuple(labels)


def parse_manifest(data: Any) -> Manifest:
    """Validates a manifest already loaded from JSON."""
    if not isinstance(data, dict):
        raise ValidationException("manifest.json: must hold a JSON object")
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise _fail(
            "format_version", f"this openlookout reads version {FORMAT_VERSION}, not {version!r}"
        )
    task = _choice(data, "task", "manifest", ("classification", "segmentation"), None)
    if task is None:
        raise _fail("task", "is required (classification or segmentation)")
    model = data.get("model", "model.onnx")
    if (
        not isinstance(model, str)
        or not model
        or Path(model).is_absolute()
        or ".." in Path(model).parts
    ):
        raise _fail("model", f"must be a file name inside the package, not {model!r}")

    image_size = None
    size_section = _section(data, "image_size", required=False)
    if size_section is not None:
        image_size = (
            _int(size_section, "width", "image_size", 1, 1 << 20),
            _int(size_section, "height", "image_size", 1, 1 << 20),
        )

    classification = None
    cls_section = _section(data, "classification", required=False)
    if cls_section is None and task == "classification":
        cls_section = {}
    if cls_section is not None:
        classification = ClassificationSpec(
            output=_optional_name(cls_section, "output", "classification"),
            activation=_choice(
                cls_section, "activation", "classification", ("none", "sigmoid", "softmax"), "none"
            )
            or "none",
            threshold=_threshold(cls_section, "classification"),
        )

    segmentation = None
    seg_section = _section(data, "segmentation", required=task == "segmentation")
    if seg_section is not None and task == "segmentation":
        segmentation = SegmentationSpec(
            labels=_parse_labels(seg_section),
            output=_optional_name(seg_section, "output", "segmentation"),
            threshold=_threshold(seg_section, "segmentation"),
            upsample=_choice(
                seg_section, "upsample", "segmentation", ("nearest", "bilinear"), "nearest"
            )
            or "nearest",
            activation=_choice(
                seg_section, "activation", "segmentation", ("none", "sigmoid", "softmax"), None
            ),
        )
    elif seg_section is not None:
        raise _fail("segmentation", "is only allowed when task is segmentation")

    known = {
        "format_version",
        "task",
        "model",
        "input",
        "image_size",
        "classification",
        "segmentation",
    }
    return Manifest(
        task=task,
        model=model,
        input=_parse_input(data),
        image_size=image_size,
        classification=classification,
        segmentation=segmentation,
        format_version=FORMAT_VERSION,
        extra={k: v for k, v in data.items() if k not in known},
    )


def read_manifest(package: str | Path) -> Manifest:
    """Reads ``manifest.json`` of the model package directory ``package``."""
    directory = Path(package)
    if not directory.is_dir():
        raise ResourceNotFoundException(
            f"model package {str(directory)!r} is not a directory",
            resource_id=str(directory),
            resource_type="MODEL",
        )
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ResourceNotFoundException(
            f"model package {str(directory)!r} has no {MANIFEST_NAME}",
            resource_id=str(directory),
            resource_type="MODEL",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValidationException(f"manifest.json: not valid JSON: {e}") from None
    manifest = parse_manifest(data)
    if not (directory / manifest.model).is_file():
        raise ResourceNotFoundException(
            f"manifest.json: model: {manifest.model!r} is not in {str(directory)!r}",
            resource_id=str(directory),
            resource_type="MODEL",
        )
    return manifest
