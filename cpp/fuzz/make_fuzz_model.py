"""Writes the tiny ONNX models fuzz_pipeline runs (and tools/soak.py reuses) into a directory.

    python cpp/fuzz/make_fuzz_model.py OUT_DIR

fixed.onnx    input ``image`` [1,3,32,32] -> ``cls`` [1,1] (mean of R minus mean of B, a logit)
              and ``seg`` [1,3,8,8] (4x4 average pooling: three class logits per cell).
dynamic.onnx  input ``image`` [1,3,H,W] (any size) -> ``cls`` [1,1] and ``seg``
              [1,3,ceil(H/2),ceil(W/2)] (2x2 average pooling, padded so that 1x1 inputs work).

Both are deterministic (no random weights) and cost microseconds, so the fuzzer spends its time in
openlookout's own code. Needs only the ``onnx`` package.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(height, width, pool: int, pads: list[int]) -> onnx.ModelProto:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width])
    seg_h = "SH" if isinstance(height, str) else height // pool
    seg_w = "SW" if isinstance(width, str) else width // pool
    cls = helper.make_tensor_value_info("cls", TensorProto.FLOAT, [1, 1])
    seg = helper.make_tensor_value_info("seg", TensorProto.FLOAT, [1, 3, seg_h, seg_w])
    inits = [
        # Class logits per cell: background favoured in flat areas, labels in bright/blue areas.
        numpy_helper.from_array(np.array([6.0, 9.0, -7.0], np.float32).reshape(1, 3, 1, 1), "w"),
        numpy_helper.from_array(np.array([2.0, -4.0, 1.5], np.float32).reshape(1, 3, 1, 1), "b"),
        numpy_helper.from_array(np.array([[4.0], [0.0], [-4.0]], np.float32), "mix"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
    ]
    nodes = [
        helper.make_node(
            "AveragePool",
            ["image"],
            ["pooled"],
            kernel_shape=[pool, pool],
            strides=[pool, pool],
            pads=pads,
            count_include_pad=0,
        ),
        helper.make_node("Mul", ["pooled", "w"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["seg"]),
        helper.make_node("ReduceMean", ["image", "hw_axes"], ["means"], keepdims=0),  # [1,3]
        helper.make_node("MatMul", ["means", "mix"], ["cls"]),  # [1,1]
    ]
    graph = helper.make_graph(nodes, "openlookout_fuzz", [image], [cls, seg], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_models(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, model in (
        ("fixed.onnx", _model(32, 32, 4, [0, 0, 0, 0])),
        ("dynamic.onnx", _model("H", "W", 2, [0, 0, 1, 1])),
    ):
        path = os.path.join(out_dir, name)
        data = model.SerializeToString()
        # Rewrite only on change, so build systems see a stable file.
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read() == data:
                    paths.append(path)
                    continue
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


# A model package around fixed.onnx: what the Python-level harnesses (atheris_detect.py,
# tools/soak.py) load, with both a classification and a two-label segmentation output.
PACKAGE_MANIFEST = {
    "format_version": 1,
    "task": "segmentation",
    "model": "fixed.onnx",
    "input": {"width": 32, "height": 32, "resize": "area"},
    "classification": {"output": "cls", "activation": "sigmoid", "threshold": 0.5},
    "segmentation": {
        "output": "seg",
        "upsample": "bilinear",
        "labels": [{"name": "scratch", "color": "#7ED321"}, {"name": "dent", "color": "#4DD8FF"}],
    },
}


def write_package(out_dir: str) -> str:
    """The models and a manifest.json naming fixed.onnx, in out_dir; returns out_dir."""
    write_models(out_dir)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(PACKAGE_MANIFEST, f)
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for p in write_models(sys.argv[1]):
        print(p)
