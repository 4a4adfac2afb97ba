"""Small graphs with the I/O contract of anomalib 2.x ONNX exports, built with onnx.helper.

What anomalib's exporter (torch.onnx, dynamo, opset 18) writes, and what these graphs copy:

* one input ``input`` ``[N,3,H,W]`` float32, RGB in [0, 1] at the image's own size, N/H/W dynamic
  (or a fixed batch / fixed size, as some export options give);
* ``view = Reshape(input, Concat([-1], [3], Shape(input)[2:3], Shape(input)[3:4]))`` (a no-op),
  then ``Resize(view, sizes=Concat(Shape(view)[0:2], [h, w]))``, bilinear, half-pixel, no
  antialiasing: the pre-processor's resize to the training size, then ``Sub``/``Div`` by the
  ImageNet mean/std;
* a feature extractor (here: strided 3x3 convolutions), a raw anomaly map upsampled back to the
  training size, and the post-processor: ``(x - threshold) / (max - min) + 0.5`` clipped to
  [0, 1] for the map and for its maximum (the score);
* outputs, in order: ``pred_score`` ``[N,1]`` (or ``[N]``), ``pred_label = pred_score > 0.5``,
  ``anomaly_map`` ``[N,1,h,w]`` (or ``[N,h,w]``), ``pred_mask = anomaly_map > 0.5``;
* saved with the weights in ``model.onnx.data`` (tensors under 1 KiB stay inline, as torch keeps
  them, since ONNX Runtime refuses shape inputs stored externally).

The normalisation constants are calibrated on caller-supplied images so that some images and a
minority of pixels come out anomalous.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

OPSET = 18
IR_VERSION = 10
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class GraphSpec:
    """How an anomalib-style graph is built. ``batch``: None for a dynamic batch, else fixed.
    ``input_size``: None for dynamic height/width, else fixed (height, width). ``resize``:
    "torch" (sizes from Shape/Concat, as torch exports), "sizes" (one constant initializer),
    "scales" (a constant factor: the size follows the input) or "none" (no resize; the graph
    starts with the normalisation). ``score_rank``/``map_rank``: 2/4 or 1/3."""

    target: tuple[int, int] = (32, 32)  # (height, width) of the graph's own resize
    batch: int | None = None
    input_size: tuple[int, int] | None = None
    resize: str = "torch"
    mode: str = "linear"
    antialias: int = 0
    coordinate_transformation_mode: str = "half_pixel"
    scale_factor: float = 0.25  # for resize "scales"
    score_rank: int = 2
    map_rank: int = 4
    channels: int = 16
    stride: int = 2
    convs: int = 1  # 3x3 convolutions after the first one (benchmark graphs add work here)
    label_threshold: float = 0.5
    mask_threshold: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class Calibration:
    pixel_threshold: float = 0.0
    pixel_min: float = 0.0
    pixel_max: float = 1.0
    image_threshold: float = 0.0
    image_min: float = 0.0
    image_max: float = 1.0


def _f32(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _i64(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.int64), name)


def _resize_node(spec: GraphSpec, source: str, output: str, inits: list, nodes: list) -> None:
    """The pre-processor's resize of `source` to spec.target, spelled as spec.resize says."""
    h, w = spec.target
    attrs = dict(
        mode=spec.mode,
        coordinate_transformation_mode=spec.coordinate_transformation_mode,
        antialias=spec.antialias,
    )
    if spec.resize == "torch":
        inits.append(_i64("target_hw", [h, w]))
        nodes += [
            helper.make_node("Shape", [source], ["view_nc"], start=0, end=2),
            helper.make_node("Concat", ["view_nc", "target_hw"], ["resize_sizes"], axis=0),
            helper.make_node("Resize", [source, "", "", "resize_sizes"], [output], **attrs),
        ]
    elif spec.resize == "sizes":
        inits.append(_i64("resize_sizes", [spec.batch or 1, 3, h, w]))
        nodes.append(
            helper.make_node("Resize", [source, "", "", "resize_sizes"], [output], **attrs)
        )
    elif spec.resize == "scales":
        factor = spec.scale_factor
        inits.append(_f32("resize_scales", [1.0, 1.0, factor, factor]))
        nodes.append(helper.make_node("Resize", [source, "", "resize_scales"], [output], **attrs))
    elif spec.resize == "none":
        nodes.append(helper.make_node("Identity", [source], [output]))
    else:
        raise ValueError(spec.resize)


def build(spec: GraphSpec, calibration: Calibration = Calibration(), *, probe: bool = False):
    """The graph. With ``probe``, the outputs are the raw map and raw score instead (for
    calibration)."""
    rng = np.random.default_rng(spec.seed)
    n = spec.batch if spec.batch is not None else "batch_size"
    height, width = spec.input_size if spec.input_size is not None else ("height", "width")
    inits: list = [
        _i64("view_n", [-1]),
        _i64("view_c", [3]),
        _f32("mean", np.reshape(IMAGENET_MEAN, (1, 3, 1, 1))),
        _f32("std", np.reshape(IMAGENET_STD, (1, 3, 1, 1))),
        _f32("w_in", rng.normal(0, 0.5, (spec.channels, 3, 3, 3))),
        _f32("b_in", rng.normal(0, 0.1, spec.channels)),
        _f32("w_map", rng.normal(0, 1.0, (1, spec.channels, 1, 1))),
        _i64("hw_axes", [2, 3]),
    ]
    if not probe and (spec.score_rank == 1 or spec.map_rank == 3):
        inits.append(_i64("channel_axis", [1]))
    nodes = [
        # torch's exporter starts with batch.view(-1, 3, H, W), a no-op reshape.
        helper.make_node("Shape", ["input"], ["in_h"], start=2, end=3),
        helper.make_node("Shape", ["input"], ["in_w"], start=3, end=4),
        helper.make_node("Concat", ["view_n", "view_c", "in_h", "in_w"], ["view_shape"], axis=0),
        helper.make_node("Reshape", ["input", "view_shape"], ["view"], allowzero=1),
    ]
    _resize_node(spec, "view", "resized", inits, nodes)
    nodes += [
        helper.make_node("Sub", ["resized", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalised"]),
        helper.make_node(
            "Conv",
            ["normalised", "w_in", "b_in"],
            ["features_0"],
            kernel_shape=[3, 3],
            strides=[spec.stride, spec.stride],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["features_0"], ["act_0"]),
    ]
    for k in range(1, spec.convs + 1):
        inits += [
            _f32(
                f"w_{k}", rng.normal(0, 0.3 / np.sqrt(spec.channels), (spec.channels,) * 2 + (3, 3))
            ),
            _f32(f"b_{k}", rng.normal(0, 0.05, spec.channels)),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                [f"act_{k - 1}", f"w_{k}", f"b_{k}"],
                [f"features_{k}"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            ),
            helper.make_node("Relu", [f"features_{k}"], [f"act_{k}"]),
        ]
    inits.append(_i64("one", [1]))
    nodes += [
        helper.make_node(
            "Conv", [f"act_{spec.convs}", "w_map"], ["small_map"], kernel_shape=[1, 1]
        ),
        # The raw map back at the training size (anomalib never resizes it to the image's).
        helper.make_node("Shape", ["resized"], ["resized_n"], start=0, end=1),
        helper.make_node("Shape", ["resized"], ["resized_hw"], start=2, end=4),
        helper.make_node("Concat", ["resized_n", "one", "resized_hw"], ["map_sizes"], axis=0),
        helper.make_node("Resize", ["small_map", "", "", "map_sizes"], ["raw_map"], mode="linear"),
        helper.make_node("ReduceMax", ["raw_map", "hw_axes"], ["raw_score"], keepdims=0),
    ]

    th, tw = spec.target
    if spec.resize == "scales":
        base_h, base_w = spec.input_size or ("map_h", "map_w")
        map_h = int(base_h * spec.scale_factor) if isinstance(base_h, int) else "map_h"
        map_w = int(base_w * spec.scale_factor) if isinstance(base_w, int) else "map_w"
    elif spec.resize == "none":
        map_h, map_w = height, width
    else:
        map_h, map_w = th, tw
    if probe:
        outputs = [
            helper.make_tensor_value_info("raw_map", TensorProto.FLOAT, [n, 1, map_h, map_w]),
            helper.make_tensor_value_info("raw_score", TensorProto.FLOAT, [n, 1]),
        ]
    else:
        c = calibration
        inits += [
            _f32("pixel_threshold", c.pixel_threshold),
            _f32("pixel_range", c.pixel_max - c.pixel_min),
            _f32("image_threshold", c.image_threshold),
            _f32("image_range", c.image_max - c.image_min),
            _f32("half", 0.5),
            _f32("zero", 0.0),
            _f32("unit", 1.0),
            _f32("label_threshold", spec.label_threshold),
            _f32("mask_threshold", spec.mask_threshold),
        ]
        score = "pred_score" if spec.score_rank == 2 else "score_n1"
        amap = "anomaly_map" if spec.map_rank == 4 else "map_n1hw"
        nodes += [
            helper.make_node("Sub", ["raw_map", "pixel_threshold"], ["map_centred"]),
            helper.make_node("Div", ["map_centred", "pixel_range"], ["map_scaled"]),
            helper.make_node("Add", ["map_scaled", "half"], ["map_shifted"]),
            helper.make_node("Clip", ["map_shifted", "zero", "unit"], [amap]),
            helper.make_node("Sub", ["raw_score", "image_threshold"], ["score_centred"]),
            helper.make_node("Div", ["score_centred", "image_range"], ["score_scaled"]),
            helper.make_node("Add", ["score_scaled", "half"], ["score_shifted"]),
            helper.make_node("Clip", ["score_shifted", "zero", "unit"], [score]),
        ]
        if spec.score_rank == 1:
            nodes.append(helper.make_node("Squeeze", [score, "channel_axis"], ["pred_score"]))
        if spec.map_rank == 3:
            nodes.append(helper.make_node("Squeeze", [amap, "channel_axis"], ["anomaly_map"]))
        nodes += [
            helper.make_node("Greater", ["pred_score", "label_threshold"], ["pred_label"]),
            helper.make_node("Greater", ["anomaly_map", "mask_threshold"], ["pred_mask"]),
        ]
        score_shape = [n, 1] if spec.score_rank == 2 else [n]
        map_shape = [n, 1, map_h, map_w] if spec.map_rank == 4 else [n, map_h, map_w]
        outputs = [
            helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, score_shape),
            helper.make_tensor_value_info("pred_label", TensorProto.BOOL, score_shape),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, map_shape),
            helper.make_tensor_value_info("pred_mask", TensorProto.BOOL, map_shape),
        ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 3, height, width])]
    graph = helper.make_graph(nodes, "anomalib_style", inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pytorch"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def feed(rgb: np.ndarray, batch: int | None = None) -> np.ndarray:
    """What anomalib's OpenVINOInferencer feeds: RGB / 255, NCHW, at the image's own size."""
    x = (rgb.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(np.repeat(x, batch or 1, axis=0))


def session(model_or_path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = (
        model_or_path.SerializeToString()
        if isinstance(model_or_path, onnx.ModelProto)
        else (str(model_or_path))
    )
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def calibrate(spec: GraphSpec, images, *, anomalous_fraction: float = 0.06) -> Calibration:
    """Post-processor constants from the probe's raw outputs on `images` (HxWx3 uint8; resized to
    a fixed input size): a pixel threshold that leaves about `anomalous_fraction` of map pixels
    above it, and an image threshold halfway between the two middle image scores, so that about
    half the images are anomalous and none sits on the cut-off."""
    probe = session(build(spec, probe=True))
    maps, scores = [], []
    for rgb in images:
        if spec.input_size is not None:
            height, width = spec.input_size
            rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))
        raw_map, raw_score = probe.run(None, {"input": feed(rgb, spec.batch)})
        maps.append(raw_map[0].ravel())
        scores.append(float(raw_score.ravel()[0]))
    pixels = np.concatenate(maps).astype(np.float64)
    middle = sorted(scores)[len(scores) // 2 - 1 : len(scores) // 2 + 1]
    return Calibration(
        pixel_threshold=float(np.quantile(pixels, 1.0 - anomalous_fraction)),
        pixel_min=float(pixels.min()),
        pixel_max=float(pixels.max()),
        image_threshold=float(np.mean(middle)),
        image_min=float(min(scores)),
        image_max=float(max(scores)),
    )


def write_export(directory: Path, model: onnx.ModelProto, *, one_file: bool = True) -> Path:
    """Saves like anomalib: ``model.onnx`` plus ``model.onnx.data`` (or, with ``one_file``
    False, one data file per large tensor). Returns the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(
        model,
        str(directory / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=one_file,
        location="model.onnx.data" if one_file else None,
        size_threshold=1024,
    )
    return directory


def anomalib_export(
    directory: Path,
    spec: GraphSpec,
    images,
    *,
    anomalous_fraction: float = 0.06,
    one_file: bool = True,
) -> Path:
    """Builds, calibrates (see :func:`calibrate`) and writes an export folder."""
    calibration = calibrate(spec, images, anomalous_fraction=anomalous_fraction)
    return write_export(directory, build(spec, calibration), one_file=one_file)
