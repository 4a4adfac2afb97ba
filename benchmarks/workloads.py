"""Benchmark workloads: two realistic 256x256 models with random weights and natural-content
images at 1 MP and 4 MP in three encodings, written once into a cache directory.

* classification: a ResNet18-shaped network (7x7 stem, four stages of two basic blocks,
  64-128-256-512 channels, global pooling, one logit, sigmoid in the manifest);
* segmentation: a small U-Net (16-32-64-128 channels, three down/up levels with skip
  connections) ending in 3 class logits at 256x256 (background + 2 anomaly types), bilinear
  upsampling to the image size in the manifest. Its background bias is raised so that a few
  percent of pixels are anomalous, as on a real inspection line (a flat mask is mostly runs).

Random weights are fine for timing; the benchmark still asserts every result against the tests'
independent reference implementation.

Each workload also gets a *replay* package (:func:`replay_package`): the same manifest with a model
that declares the real model's input and outputs but only returns the real model's recorded
outputs for that workload's image. Running a pipeline on it does all the work outside the model
(decode, preprocess, post-processing, mask encoding) on exactly the real scores, while
``session.run`` costs only ORT's fixed per-call overhead: the time outside the model is measured
directly instead of as the difference of two separately timed ~25 ms end-to-end figures.
"""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from imagegen import natural_rgb  # noqa: E402

CACHE = Path(os.environ.get("OPENLOOKOUT_BENCH_CACHE", ROOT / "build" / "bench-data"))
# Set by ``run.py --quick``: a smoke run checks that everything runs and renders, not timings.
QUICK = os.environ.get("OPENLOOKOUT_BENCH_QUICK") == "1"
INPUT = 256
SIZES = {"1MP": (1280, 800), "4MP": (2560, 1600)}
ENCODINGS = ("jpeg", "progressive", "png")
TASKS = ("classification", "segmentation")


@dataclass(frozen=True)
class Workload:
    task: str
    size: str
    encoding: str
    package: Path
    image: Path

    @property
    def name(self) -> str:
        return f"{self.task[:3]}-{self.size}-{self.encoding}"

    @property
    def content_type(self) -> str:
        return "image/png" if self.encoding == "png" else "image/jpeg"


def rounds(full: int) -> int:
    """Benchmark rounds: ``full`` in a real run, 2 in a ``--quick`` smoke run."""
    return 2 if QUICK else full


class _Graph:
    """A tiny graph builder: conv/relu/add with He-initialised random weights."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        relu: bool = True,
        bias: np.ndarray | None = None,
    ) -> str:
        w = self._name("w")
        b = self._name("b")
        std = np.sqrt(2.0 / (cin * k * k))
        self.inits.append(
            numpy_helper.from_array(
                (self.rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32), w
            )
        )
        self.inits.append(
            numpy_helper.from_array(
                (bias if bias is not None else np.zeros(cout)).astype(np.float32), b
            )
        )
        y = self._name("conv")
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w, b],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return self.relu(y) if relu else y

    def relu(self, x: str) -> str:
        y = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def op(self, kind: str, inputs: list[str], **attrs: object) -> str:
        y = self._name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [y], **attrs))
        return y

    def model(self, output: str, out_shape: list[int], name: str) -> onnx.ModelProto:
        self.nodes[-1].output[0] = output
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, INPUT, INPUT])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model


def resnet18_like(seed: int = 1) -> onnx.ModelProto:
    g = _Graph(seed)
    x = g.conv("image", 3, 64, 7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            y = g.conv(x, cin, cout, 3, stride=s)
            y = g.conv(y, cout, cout, 3, relu=False)
            shortcut = (
                x if (s == 1 and cin == cout) else g.conv(x, cin, cout, 1, stride=s, relu=False)
            )
            x = g.relu(g.op("Add", [y, shortcut]))
            cin = cout
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x])
    w = "fc_w"
    g.inits.append(
        numpy_helper.from_array((g.rng.standard_normal((512, 1)) * 0.002).astype(np.float32), w)
    )
    g.inits.append(numpy_helper.from_array(np.zeros(1, np.float32), "fc_b"))
    g.nodes.append(helper.make_node("Gemm", [x, w, "fc_b"], ["score"]))
    return g.model("score", [1, 1], "resnet18_like")


def small_unet(seed: int = 2) -> onnx.ModelProto:
    g = _Graph(seed)
    widths = (16, 32, 64, 128)
    skips = []
    x, cin = "image", 3
    for i, w in enumerate(widths):
        x = g.conv(x, cin, w, 3, stride=1 if i == 0 else 2)
        x = g.conv(x, w, w, 3)
        skips.append((x, w))
        cin = w
    for x_skip, w in reversed(skips[:-1]):
        x = g.op("Resize", [x, "", "up_scales"], mode="nearest")
        x = g.op("Concat", [x, x_skip], axis=1)
        x = g.conv(x, cin + w, w, 3)
        cin = w
    g.inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up_scales"))
    # Background logit raised so anomalies cover a few percent of the image.
    g.conv(x, cin, 3, 1, relu=False, bias=np.array([3.6, 0.0, 0.0]))
    return g.model("scores", [1, 3, INPUT, INPUT], "small_unet")


def _write_package(directory: Path, model: onnx.ModelProto, task: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    manifest: dict[str, object] = {
        "format_version": 1,
        "task": task,
        "model": "model.onnx",
        "input": {
            "width": INPUT,
            "height": INPUT,
            "resize": "bilinear",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
    }
    if task == "classification":
        manifest["classification"] = {"activation": "sigmoid", "threshold": 0.5}
    else:
        manifest["segmentation"] = {
            "upsample": "bilinear",
            "activation": "softmax",
            "labels": [
                {"name": "scratch", "color": "#7ED321"},
                {"name": "dent", "color": "#4DD8FF"},
            ],
        }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return directory


def _encode(rgb: np.ndarray, encoding: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(rgb)
    if encoding == "png":
        image.save(buffer, "PNG")
    else:
        image.save(buffer, "JPEG", quality=90, progressive=encoding == "progressive")
    return buffer.getvalue()


def workloads() -> list[Workload]:
    """All 12 workloads, creating the cached files on first use."""
    packages = {
        "classification": CACHE / "classification",
        "segmentation": CACHE / "segmentation",
    }
    if not (packages["classification"] / "manifest.json").exists():
        _write_package(packages["classification"], resnet18_like(), "classification")
    if not (packages["segmentation"] / "manifest.json").exists():
        _write_package(packages["segmentation"], small_unet(), "segmentation")
    result = []
    for size, (width, height) in SIZES.items():
        rgb = None
        for encoding in ENCODINGS:
            path = CACHE / f"{size}.{encoding}.{'png' if encoding == 'png' else 'jpg'}"
            if not path.exists():
                rgb = natural_rgb(width, height, seed=width) if rgb is None else rgb
                path.write_bytes(_encode(rgb, encoding))
            for task in TASKS:
                result.append(Workload(task, size, encoding, packages[task], path))
    return result


def replay_model(real: onnx.ModelProto, outputs: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A model with ``real``'s graph inputs and outputs (names, shapes, dtypes) whose outputs
    are constants: ``outputs[name]`` cast to the declared dtype (exact for the float64 copies of
    float32 outputs that the tests' reference keeps).

    Each output is an ``Identity`` of an initializer, so the graph stays an ordinary one that any
    ONNX consumer validates. The input is declared but consumed by no node: ORT accepts that (it
    logs it at info level only) and the caller still binds its tensor as for the real model."""
    nodes = []
    constants = []
    for output in real.graph.output:
        dtype = helper.tensor_dtype_to_np_dtype(output.type.tensor_type.elem_type)
        value = np.ascontiguousarray(outputs[output.name], dtype=dtype)
        declared = [
            d.dim_value if d.HasField("dim_value") else None
            for d in output.type.tensor_type.shape.dim
        ]
        assert len(value.shape) == len(declared), (output.name, value.shape, declared)
        assert all(d in (None, n) for n, d in zip(value.shape, declared)), (output.name, declared)
        recorded = f"{output.name}_recorded"
        constants.append(numpy_helper.from_array(value, recorded))
        nodes.append(helper.make_node("Identity", [recorded], [output.name]))
    inputs, declared_outputs = list(real.graph.input), list(real.graph.output)
    graph = helper.make_graph(
        nodes, f"{real.graph.name}_replay", inputs, declared_outputs, constants
    )
    model = helper.make_model(graph, opset_imports=list(real.opset_import))
    model.ir_version = real.ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def replay_package(workload: Workload, outputs: dict[str, np.ndarray]) -> Path:
    """Writes (or rewrites: the recorded outputs must follow the cached model and image) the
    workload's replay package next to the real one: the same manifest, the model swapped for
    :func:`replay_model` of the real model and ``outputs``."""
    directory = CACHE / "replay" / workload.name
    directory.mkdir(parents=True, exist_ok=True)
    manifest_text = (workload.package / "manifest.json").read_text()
    model_file = json.loads(manifest_text)["model"]
    real = onnx.load(workload.package / model_file)
    onnx.save(replay_model(real, outputs), directory / model_file)
    (directory / "manifest.json").write_text(manifest_text)
    return directory
