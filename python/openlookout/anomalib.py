"""Import anomalib's ONNX exports as model packages.

anomalib 2.x (``Engine.export(model, export_type="onnx")``) writes ``model.onnx`` (plus
``model.onnx.data``, the weights) whose input ``input`` is the RGB image in [0, 1] at its original
size, ``[N,3,H,W]`` float32; the graph resizes it to the training size and normalises it itself,
and answers ``pred_score`` (``[N,1]`` or ``[N]``, already normalised so that 0.5 is the cut-off),
``pred_label``, ``anomaly_map`` (``[N,1,h,w]`` or ``[N,h,w]`` at the training size, normalised
the same way) and ``pred_mask``. anomalib's ``OpenVINOInferencer`` feeds ``image / 255`` at the
original size and reads the outputs by name.

:func:`import_anomalib` inspects such a graph with the ``onnx`` package (without loading the
weights), checks that contract, and writes a model package whose manifest makes openlookout do
exactly that: ``input.resize: "none"`` (the image at its own size, ``scale`` 1/255, no mean/std),
``IsAnomalous``/``Confidence`` from ``pred_score`` and the mask from ``anomaly_map`` upsampled
bilinearly to the image's full size, both cut where the graph's own ``pred_label``/``pred_mask``
cut them (0.5 unless the post-processor's sensitivity was changed).

Feeding the original size converts every pixel of, say, a 4 MP image to float only for the graph
to shrink it. When the graph's first operation on the input is a bilinear resize (no
antialiasing) to a fixed size, ``feed="pre-resized"`` writes ``input.resize: "bilinear"`` at
that size instead: openlookout resizes the 8-bit image itself, the graph's own resize then maps
the size onto itself (the identity), and the results differ from the original-size feed only by
float rounding (timings and differences: ``benchmarks/bench_anomalib.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConflictException, ResourceNotFoundException, ValidationException
from .manifest import MANIFEST_NAME, parse_manifest

if TYPE_CHECKING:
    import onnx

__all__ = [
    "FEEDS",
    "AnomalibExport",
    "FirstResize",
    "anomalib_manifest",
    "find_export_model",
    "import_anomalib",
    "inspect_anomalib_export",
]

FEEDS = ("original", "pre-resized")
SCORE_OUTPUT = "pred_score"
LABEL_OUTPUT = "pred_label"
MAP_OUTPUT = "anomaly_map"
MASK_OUTPUT = "pred_mask"
# anomalib's post-processor normalises scores and maps so that its thresholds land on 0.5.
THRESHOLD = 0.5

# Ops that read only the input's shape: they do not stop the resize behind them from being the
# graph's first operation on the image.
_SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class FirstResize:
    """The graph's first operation on the input, when it is a ``Resize``."""

    node: str  # node name (or "#index" when unnamed)
    mode: str
    coordinate_transformation_mode: str
    antialias: bool
    width: int | None  # target size when it is fixed, whatever the input size
    height: int | None
    # Why openlookout cannot feed the resized tensor instead; None when it can.
    problem: str | None


@dataclass(frozen=True)
class AnomalibExport:
    """What :func:`inspect_anomalib_export` found in an anomalib ONNX export."""

    model_path: Path
    input_name: str
    batch: int | None  # fixed batch baked into the graph; None when dynamic
    input_width: int | None  # fixed spatial input size; None when dynamic
    input_height: int | None
    score_shape: tuple[int | str | None, ...]
    map_shape: tuple[int | str | None, ...] | None  # None: no anomaly_map (classification only)
    external_data: tuple[str, ...]  # files the graph's weights live in, relative to the model
    first_op: str  # op type of the input's first value consumer ("several" when ambiguous)
    first_resize: FirstResize | None
    opset: int
    # The cut-offs the graph's own pred_label / pred_mask use (0.5 unless the post-processor's
    # sensitivity was changed), and how they were found.
    score_threshold: float = THRESHOLD
    map_threshold: float = THRESHOLD
    thresholds_from: str = "default"

    @property
    def task(self) -> str:
        return "segmentation" if self.map_shape is not None else "classification"

    @property
    def pre_resize_problem(self) -> str | None:
        """Why ``feed="pre-resized"`` is refused for this export; None when it is possible."""
        if self.first_resize is None:
            return (
                f"the graph's first operation on '{self.input_name}' is {self.first_op}, not a "
                "Resize to a fixed size"
            )
        r = self.first_resize
        if r.problem is not None:
            return r.problem
        if self.input_width is not None and (self.input_width, self.input_height) != (
            r.width,
            r.height,
        ):
            return (
                f"the graph's input is fixed at {self.input_width}x{self.input_height} but its "
                f"first Resize targets {r.width}x{r.height}: export without input_size "
                "(Engine.export(..., input_size=None)) so that the input size is dynamic"
            )
        return None


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ValidationException(
            "importing anomalib exports needs the onnx package: pip install 'openlookout[anomalib]'"
        ) from None
    return onnx


# --------------------------------------------------------------------------------------------
# Finding and reading the export
# --------------------------------------------------------------------------------------------


def find_export_model(export: str | Path) -> Path:
    """The ONNX file of an export: ``export`` itself when it is a file; else ``model.onnx`` in
    the directory, anomalib's ``weights/onnx/model.onnx`` under it, or the directory's only
    ``*.onnx`` file."""
    path = Path(export)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ResourceNotFoundException(
            f"anomalib export {str(path)!r} does not exist",
            resource_id=str(path),
            resource_type="MODEL",
        )
    for candidate in (path / "model.onnx", path / "weights" / "onnx" / "model.onnx"):
        if candidate.is_file():
            return candidate
    onnx_files = sorted(path.glob("*.onnx"))
    if len(onnx_files) == 1:
        return onnx_files[0]
    found = ", ".join(p.name for p in onnx_files) or "none"
    raise ResourceNotFoundException(
        f"anomalib export {str(path)!r}: expected model.onnx (or weights/onnx/model.onnx), "
        f"found {found}",
        resource_id=str(path),
        resource_type="MODEL",
    )


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    onnx = _require_onnx()
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in the graph: initializers and tensor attributes, subgraphs included."""
    onnx = _require_onnx()
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
        for sub in _subgraphs(node):
            yield from _tensors(sub)


def _external_data_files(model: onnx.ModelProto, model_path: Path) -> tuple[str, ...]:
    onnx = _require_onnx()
    locations: list[str] = []
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        parts = Path(location).parts
        if not location or Path(location).is_absolute() or ".." in parts:
            raise ValidationException(
                f"{model_path.name}: tensor '{tensor.name}' keeps its data at {location!r}, "
                "outside the model's folder"
            )
        if location not in locations:
            locations.append(location)
    for location in locations:
        if not (model_path.parent / location).is_file():
            raise ResourceNotFoundException(
                f"{model_path.name} keeps weights in {location!r}, which is not in "
                f"{str(model_path.parent)!r}: copy the whole export folder",
                resource_id=str(model_path.parent / location),
                resource_type="MODEL",
            )
    return tuple(locations)


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    """Shape as fixed sizes, symbolic names or None (unknown); None when the rank is unknown."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _fixed(dim: int | str | None) -> int | None:
    return dim if isinstance(dim, int) else None


def _shape_text(dims: tuple[int | str | None, ...] | None) -> str:
    if dims is None:
        return "[unknown rank]"
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


# --------------------------------------------------------------------------------------------
# The first Resize: its target size, evaluated from constants where the graph builds it
# --------------------------------------------------------------------------------------------


class _Dim:
    """A dimension of the graph's input that is not fixed (dynamic batch, height or width)."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def __repr__(self) -> str:
        return f"input.shape[{self.axis}]"


class _Graph:
    """Producer/consumer maps and a small evaluator of 1-D constants, enough for the ways exporters
    spell a resize target and a threshold: an initializer or Constant, or (torch's exporter)
    ``Concat(Shape(x)[0:2], [h, w])`` where ``x`` is the input or a no-op ``Reshape`` of it.
    Dynamic input dimensions evaluate to :class:`_Dim` markers, anything else unknown to None."""

    def __init__(self, model: onnx.ModelProto, input_name: str, input_dims: tuple[Any, ...]):
        self.onnx = _require_onnx()
        graph = model.graph
        self.input_name = input_name
        self.input_shape: list[Any] = [
            d if isinstance(d, int) else _Dim(axis) for axis, d in enumerate(input_dims)
        ]
        # Names whose value is the input itself (pass-through ops and no-op reshapes of it).
        self.aliases = {input_name}
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}

    def _tensor_values(self, tensor: onnx.TensorProto) -> list[Any] | None:
        if tensor.data_location == self.onnx.TensorProto.EXTERNAL:
            return None  # weights stay on disk; a resize target is never stored that way
        array = self.onnx.numpy_helper.to_array(tensor)
        if array.ndim > 1:
            return None
        return [v.item() for v in array.reshape(-1)]

    def values(self, name: str, depth: int = 0) -> list[Any] | None:
        """The 1-D constant `name` evaluates to, or None."""
        if not name or depth > 32:
            return None
        if name in self.initializers:
            return self._tensor_values(self.initializers[name])
        node = self.producer.get(name)
        if node is None:
            return None
        helper = self.onnx.helper
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "Constant":
            if "value" in attrs:
                return self._tensor_values(attrs["value"])
            for key in ("value_ints", "value_floats"):
                if key in attrs:
                    return list(attrs[key])
            for key in ("value_int", "value_float"):
                if key in attrs:
                    return [attrs[key]]
            return None
        if op == "Shape":
            if node.input[0] not in self.aliases:
                return None
            dims = self.input_shape
            return dims[slice(attrs.get("start", 0), attrs.get("end", len(dims)))]
        if op in ("Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Flatten"):
            # Shape-only changes of a 1-D or scalar constant (Cast: an int64 stays an integer).
            return self.values(node.input[0], depth + 1)
        if op == "Concat":
            parts = [self.values(i, depth + 1) for i in node.input]
            if any(p is None for p in parts):
                return None
            return [v for p in parts if p is not None for v in p]
        if op == "Gather":
            data = self.values(node.input[0], depth + 1)
            indices = self.values(node.input[1], depth + 1)
            if data is None or indices is None or not all(isinstance(i, int) for i in indices):
                return None
            return [data[i] for i in indices]
        if op == "Slice":
            data = self.values(node.input[0], depth + 1)
            # Inputs: data, starts, ends[, axes[, steps]]; on a 1-D tensor, one of each.
            defaults: list[list[Any]] = [[0], [0], [0], [1]]
            names = list(node.input[1:5]) + [""] * (5 - len(node.input))
            bounds = [
                self.values(n, depth + 1) if n else default
                for n, default in zip(names, defaults, strict=True)
            ]
            if data is None or any(b is None or len(b) != 1 for b in bounds):
                return None
            start, end, axis, step = (b[0] for b in bounds if b is not None)
            if not all(isinstance(v, int) for v in (start, end, step)) or axis not in (0, -1):
                return None
            return data[start:end:step]
        if op in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
            a, b = self.values(node.input[0], depth + 1), self.values(node.input[1], depth + 1)
            numbers = (int, float)
            if (
                a is None
                or b is None
                or not all(isinstance(v, numbers) for v in a + b)
                or (len(a) != len(b) and 1 not in (len(a), len(b)))
            ):
                return None
            n = max(len(a), len(b))
            pairs = zip(a * n if len(a) == 1 else a, b * n if len(b) == 1 else b, strict=False)
            if op == "Add":
                return [x + y for x, y in pairs]
            if op == "Sub":
                return [x - y for x, y in pairs]
            if op == "Mul":
                return [x * y for x, y in pairs]
            return [x / y if y else None for x, y in pairs]
        return None

    def _is_noop_reshape(self, node: onnx.NodeProto) -> bool:
        """A Reshape of an alias of the input to the input's own shape (torch's exporter writes
        ``view(-1, 3, H, W)`` before the pre-processing)."""
        target = self.values(node.input[1]) if len(node.input) > 1 else None
        if target is None or len(target) != len(self.input_shape):
            return False
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        unmatched = 0
        for wanted, actual in zip(target, self.input_shape, strict=True):
            if wanted is actual or (isinstance(actual, int) and wanted == actual):
                continue
            if wanted == 0 and not allowzero:
                continue  # 0 copies the input's dimension
            if wanted == -1:
                unmatched += 1  # inferred; equal to the input's when all others match
                continue
            return False
        return unmatched <= 1

    def first_value_consumer(self) -> tuple[str, onnx.NodeProto | None]:
        """The first op that reads the input's values, past pass-through ops and no-op
        reshapes (which become aliases of the input); shape-only readers are skipped.
        Returns (description, node), node None when there is no single such op."""
        name = self.input_name
        for _ in range(8):
            if name in self.graph_outputs:
                return "a graph output", None
            readers = [n for n in self.consumers.get(name, []) if n.op_type not in _SHAPE_ONLY_OPS]
            if len(readers) != 1:
                kinds = ", ".join(sorted({n.op_type for n in readers})) or "nothing"
                return (f"several operations ({kinds})" if len(readers) > 1 else kinds), None
            node = readers[0]
            passes = node.op_type == "Identity" or (
                node.op_type == "Cast"
                and any(
                    a.name == "to" and a.i == self.onnx.TensorProto.FLOAT for a in node.attribute
                )
            )
            if passes or (node.op_type == "Reshape" and self._is_noop_reshape(node)):
                name = node.output[0]
                self.aliases.add(name)
                continue
            return node.op_type, node
        return "a chain of pass-through operations", None

    def comparison_threshold(self, output: str) -> tuple[float, str] | None:
        """For an output computed as ``Greater(x, t)`` (or GreaterOrEqual, possibly behind a Cast
        or Identity) with a constant scalar ``t``: (t, op type)."""
        name = output
        for _ in range(4):
            node = self.producer.get(name)
            if node is None:
                return None
            if node.op_type in ("Identity", "Cast"):
                name = node.input[0]
                continue
            if node.op_type in ("Greater", "GreaterOrEqual") and len(node.input) == 2:
                value = self.values(node.input[1])
                if value is not None and len(value) == 1 and isinstance(value[0], (int, float)):
                    return float(value[0]), node.op_type
            return None
        return None


def _first_resize(graph: _Graph, node: onnx.NodeProto, opset: int, index_name: str) -> FirstResize:
    helper = graph.onnx.helper
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def text(key: str, default: str) -> str:
        value = attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else str(value)

    mode = text("mode", "nearest")
    transform = text("coordinate_transformation_mode", "half_pixel")
    antialias = bool(attrs.get("antialias", 0))
    aspect = text("keep_aspect_ratio_policy", "stretch")
    axes = [int(a) for a in attrs.get("axes", [0, 1, 2, 3])]
    axes = [a + 4 if a < 0 else a for a in axes]

    width = height = None
    channels: float | int | None = None
    target_problem = None
    if opset < 11:
        target_problem = f"Resize of opset {opset} (scales only)"
    else:
        sizes = graph.values(node.input[3]) if len(node.input) > 3 else None
        scales = graph.values(node.input[2]) if len(node.input) > 2 else None
        if sizes:
            if len(sizes) != len(axes):
                target_problem = "a Resize whose sizes do not match its axes"
            else:
                target = dict(zip(axes, sizes, strict=True))
                h, w, channels = target.get(2), target.get(3), target.get(1)
                if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
                    height, width = h, w
                else:
                    target_problem = "a Resize whose target size is not a constant"
        elif scales and len(scales) == len(axes):
            factors = dict(zip(axes, scales, strict=True))
            if all(factors.get(a, 1.0) == 1.0 for a in (2, 3)):
                target_problem = "a Resize by factor 1 (no resize)"
            else:
                target_problem = "a Resize by scale factors, whose output size follows the input's"
        else:
            target_problem = "a Resize whose target size is not a constant"

    problem = None
    if target_problem is not None:
        problem = f"the graph's first operation is {target_problem}, not a resize to a fixed size"
    elif channels not in (None, 3):
        problem = f"the graph's first Resize changes the channel count to {channels}"
    elif mode != "linear":
        problem = (
            f"the graph's first Resize uses mode {mode!r}; openlookout pre-resizes bilinearly "
            "only (train with a PreProcessor whose Resize is bilinear)"
        )
    elif antialias:
        problem = (
            "the graph's first Resize antialiases; openlookout's bilinear resize does not "
            "(export with a PreProcessor whose Resize has antialias=False)"
        )
    elif transform not in ("half_pixel", "pytorch_half_pixel") or (
        transform == "pytorch_half_pixel" and min(width or 0, height or 0) < 2
    ):
        problem = (
            f"the graph's first Resize maps coordinates with {transform!r}; openlookout's "
            "bilinear resize uses half-pixel centres (torch's align_corners=False)"
        )
    elif aspect != "stretch":
        problem = f"the graph's first Resize keeps the aspect ratio ({aspect!r})"
    return FirstResize(
        node=node.name or index_name,
        mode=mode,
        coordinate_transformation_mode=transform,
        antialias=antialias,
        width=width,
        height=height,
        problem=problem,
    )


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------


def inspect_anomalib_export(export: str | Path) -> AnomalibExport:
    """Reads an anomalib ONNX export (a folder or the ``.onnx`` file) without its weights and
    checks its inputs and outputs against anomalib's contract. Raises ``ValidationException``
    naming what is wrong (and, where it helps, the export option to change)."""
    onnx = _require_onnx()
    model_path = find_export_model(export)
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as e:  # the onnx package raises DecodeError and others
        raise ValidationException(f"{model_path.name}: not a readable ONNX model: {e}") from None
    name = model_path.name
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    initializer_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ValidationException(
            f"{name}: an anomalib export has one input (the image), this graph has {names}"
        )
    image = inputs[0]
    if image.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ValidationException(f"{name}: input '{image.name}' must be float32")
    in_dims = _dims(image)
    if in_dims is None or len(in_dims) != 4:
        raise ValidationException(
            f"{name}: input '{image.name}' has shape {_shape_text(in_dims)}; an anomalib export "
            "takes [N,3,H,W]"
        )
    if _fixed(in_dims[1]) not in (None, 3):
        raise ValidationException(
            f"{name}: input '{image.name}' has shape {_shape_text(in_dims)}; openlookout feeds "
            "three RGB channels"
        )
    batch = _fixed(in_dims[0])
    input_height, input_width = _fixed(in_dims[2]), _fixed(in_dims[3])
    if (input_height is None) != (input_width is None):
        raise ValidationException(
            f"{name}: input '{image.name}' has shape {_shape_text(in_dims)}: height and width "
            "must be both dynamic (export without input_size) or both fixed"
        )

    outputs = {o.name: o for o in graph.output}
    if SCORE_OUTPUT not in outputs:
        raise ValidationException(
            f"{name}: no '{SCORE_OUTPUT}' output (outputs: {', '.join(outputs) or 'none'}); "
            "anomalib's ONNX export answers pred_score, pred_label, anomaly_map and pred_mask"
        )
    score = outputs[SCORE_OUTPUT]
    score_dims = _dims(score)
    if score.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ValidationException(f"{name}: output '{SCORE_OUTPUT}' must be float32")
    if score_dims is not None and (
        len(score_dims) not in (1, 2)
        or (len(score_dims) == 2 and _fixed(score_dims[1]) not in (1, None))
    ):
        raise ValidationException(
            f"{name}: output '{SCORE_OUTPUT}' has shape {_shape_text(score_dims)}; expected "
            "[N,1] or [N]"
        )
    map_dims: tuple[int | str | None, ...] | None = None
    if MAP_OUTPUT in outputs:
        anomaly_map = outputs[MAP_OUTPUT]
        if anomaly_map.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ValidationException(f"{name}: output '{MAP_OUTPUT}' must be float32")
        map_dims = _dims(anomaly_map) or (None, None, None, None)
        if len(map_dims) not in (3, 4) or (
            len(map_dims) == 4 and _fixed(map_dims[1]) not in (1, None)
        ):
            raise ValidationException(
                f"{name}: output '{MAP_OUTPUT}' has shape {_shape_text(map_dims)}; expected a "
                "one-channel map [N,1,h,w] or [N,h,w]"
            )
    flags = [LABEL_OUTPUT] + ([MASK_OUTPUT] if map_dims is not None else [])
    for flag in flags:
        if flag not in outputs:
            raise ValidationException(
                f"{name}: no '{flag}' output: the export's post-processor does not threshold, so "
                f"its scores are not normalised to the 0.5 cut-off openlookout relies on (export "
                "with anomalib's default PostProcessor)"
            )
        if outputs[flag].type.tensor_type.elem_type != onnx.TensorProto.BOOL:
            raise ValidationException(
                f"{name}: output '{flag}' is not boolean; is this an anomalib export?"
            )

    analysis = _Graph(model, image.name, in_dims)
    first_op, first = analysis.first_value_consumer()
    first_resize = None
    if first is not None and first.op_type == "Resize":
        index = next(i for i, n in enumerate(graph.node) if n is first)
        first_resize = _first_resize(analysis, first, opset, f"#{index}")

    rules = []
    found: dict[str, float] = {}
    for flag, source in ((LABEL_OUTPUT, SCORE_OUTPUT), (MASK_OUTPUT, MAP_OUTPUT)):
        rule = analysis.comparison_threshold(flag) if flag in outputs else None
        if rule is not None:
            value, op = rule
            if not 0.0 < value < 1.0:
                raise ValidationException(
                    f"{name}: '{flag}' is {source} {op} {value}; openlookout needs a cut-off "
                    "strictly between 0 and 1 (set the PostProcessor's sensitivity strictly "
                    "between 0 and 1)"
                )
            found[flag] = value
            rules.append(f"{flag} = {source} {'>' if op == 'Greater' else '>='} {value:g}")
    thresholds = found.get(LABEL_OUTPUT, THRESHOLD), found.get(MASK_OUTPUT, THRESHOLD)
    return AnomalibExport(
        model_path=model_path,
        input_name=image.name,
        batch=batch,
        input_width=input_width,
        input_height=input_height,
        score_shape=score_dims or (),
        map_shape=map_dims,
        external_data=_external_data_files(model, model_path),
        first_op=first_op,
        first_resize=first_resize,
        opset=opset,
        score_threshold=thresholds[0],
        map_threshold=thresholds[1],
        thresholds_from="; ".join(rules) or "default",
    )


# --------------------------------------------------------------------------------------------
# The manifest and the package
# --------------------------------------------------------------------------------------------


def anomalib_manifest(
    export: AnomalibExport,
    *,
    label: str = "anomaly",
    color: str = "#FF0000",
    feed: str = "original",
    model_file: str | None = None,
) -> dict[str, Any]:
    """The manifest (as a JSON-ready dict) that answers like anomalib's own inference."""
    if feed not in FEEDS:
        raise ValidationException(f"feed must be one of {', '.join(FEEDS)}, not {feed!r}")
    input_section: dict[str, Any] = {
        "name": export.input_name,
        "layout": "NCHW",
        "color": "RGB",
        # anomalib's graphs take [0, 1] RGB and normalise inside.
        "scale": 1.0 / 255.0,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
    }
    image_size = None
    if feed == "pre-resized":
        problem = export.pre_resize_problem
        if problem is not None:
            raise ValidationException(f"feed 'pre-resized' is not possible: {problem}")
        assert export.first_resize is not None
        input_section.update(
            resize="bilinear",
            width=export.first_resize.width,
            height=export.first_resize.height,
        )
    elif export.input_width is None:
        input_section["resize"] = "none"
    else:
        # A fixed input (exported with input_size) takes only images of that size, as anomalib's
        # own inference does; the bilinear resize of an image to its own size is the identity.
        input_section.update(
            resize="bilinear", width=export.input_width, height=export.input_height
        )
        image_size = {"width": export.input_width, "height": export.input_height}

    manifest: dict[str, Any] = {
        "format_version": 1,
        "task": export.task,
        "model": model_file or export.model_path.name,
        "input": input_section,
    }
    if image_size is not None:
        manifest["image_size"] = image_size
    manifest["classification"] = {
        "output": SCORE_OUTPUT,
        "activation": "none",
        "threshold": export.score_threshold,
    }
    if export.map_shape is not None:
        manifest["segmentation"] = {
            "output": MAP_OUTPUT,
            "activation": "none",
            "threshold": export.map_threshold,
            "upsample": "bilinear",
            "labels": [{"name": label, "color": color}],
        }
    resize = export.first_resize
    manifest["description"] = f"anomalib ONNX export, fed {feed}"
    manifest["anomalib"] = {
        "feed": feed,
        "input_batch": export.batch,
        "first_op": export.first_op,
        "resize_target": (
            {"width": resize.width, "height": resize.height}
            if resize is not None and resize.width is not None
            else None
        ),
        "pre_resize_problem": export.pre_resize_problem,
        "thresholds_from": export.thresholds_from,
        "external_data": list(export.external_data),
    }
    # Fails here, naming the field, rather than in a package that does not load.
    parse_manifest(manifest)
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_anomalib(
    export_dir: str | Path,
    package_dir: str | Path,
    *,
    label: str = "anomaly",
    color: str = "#FF0000",
    feed: str = "original",
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Writes a model package for an anomalib ONNX export and returns its directory.

    ``export_dir``: the folder holding ``model.onnx`` and ``model.onnx.data`` (or anomalib's
    export root with ``weights/onnx/model.onnx``, or the ``.onnx`` file). ``package_dir`` must not
    exist or be empty, unless ``overwrite``. ``label``/``color``: the anomaly label of the mask.
    ``feed``: ``"original"`` (the image at its own size, exactly what anomalib's
    OpenVINOInferencer feeds) or ``"pre-resized"`` (openlookout resizes to the graph's own first
    resize target; cheaper on large images, equal up to float rounding; only for graphs that
    start with a fixed-size bilinear resize). ``verify`` loads the written package once.

    The ONNX file and every external data file it references are copied byte for byte.
    """
    export = inspect_anomalib_export(export_dir)
    package = Path(package_dir)
    if package.resolve() == export.model_path.parent.resolve():
        raise ValidationException("package_dir must differ from the export's folder")
    if package.exists() and not package.is_dir():
        raise ConflictException(f"{str(package)!r} exists and is not a directory")
    if package.is_dir() and any(package.iterdir()) and not overwrite:
        raise ConflictException(
            f"{str(package)!r} is not empty (overwrite=True replaces it)",
            resource_id=str(package),
            resource_type="MODEL",
        )
    manifest = anomalib_manifest(export, label=label, color=color, feed=feed)
    manifest["anomalib"]["source"] = str(export.model_path.resolve())
    manifest["anomalib"]["onnx_sha256"] = _sha256(export.model_path)

    package.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the destination and moved into place, so a failed import leaves nothing.
    staging = Path(tempfile.mkdtemp(prefix=f".{package.name}.", dir=package.parent))
    try:
        shutil.copyfile(export.model_path, staging / export.model_path.name)
        for location in export.external_data:
            target = staging / location
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(export.model_path.parent / location, target)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        if verify:
            from .model import load_model

            load_model(staging, intra_op_threads=1)
        replaced = None
        if package.is_dir():
            replaced = Path(tempfile.mkdtemp(prefix=f".{package.name}.old.", dir=package.parent))
            os.replace(package, replaced)
        os.replace(staging, package)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return package
