"""Quick start: build a tiny segmentation model package, then call DetectAnomalies on it.

    python examples/quickstart.py [IMAGE ...]

With no image it paints a test part with a dark scratch on it. The model is a hand-set
two-layer ONNX graph (no training, no download): channel 1 ("scratch") fires where the image is
much darker than its surroundings. Real models come from training (see docs/model-package.md).
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

import openlookout


def build_package(directory: Path) -> Path:
    # Background score = mean brightness; scratch score = 0.8 - brightness (dark pixels win).
    weights = np.zeros((2, 3, 1, 1), np.float32)
    weights[0, :, 0, 0] = 1 / 3
    weights[1, :, 0, 0] = -1 / 3
    bias = np.array([0.0, 0.8], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool", ["image"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]
            ),
            helper.make_node("Conv", ["pooled", "w", "b"], ["scores"]),
        ],
        "quickstart",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 128, 128])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 64, 64])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, directory / "model.onnx")
    manifest = {
        "format_version": 1,
        "task": "segmentation",
        "model": "model.onnx",
        "input": {"width": 128, "height": 128, "resize": "area"},
        "segmentation": {
            "upsample": "bilinear",
            "activation": "none",
            "labels": [{"name": "scratch", "color": "#7ED321"}],
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def sample_image() -> bytes:
    rng = np.random.default_rng(7)
    _y, x = np.mgrid[0:480, 0:640]
    metal = 170 + 25 * np.sin(x / 9.0) + rng.normal(0, 6, (480, 640))
    image = Image.fromarray(np.clip(np.stack([metal] * 3, -1), 0, 255).astype(np.uint8))
    ImageDraw.Draw(image).line([(120, 300), (420, 160)], fill=(20, 20, 20), width=14)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = openlookout.load_model(build_package(Path(tmp)))
        inputs = [(p, Path(p).read_bytes()) for p in sys.argv[1:]] or [
            ("sample.jpg", sample_image())
        ]
        for name, body in inputs:
            content_type = "image/png" if body[:4] == b"\x89PNG" else "image/jpeg"
            result = model.detect(body, content_type)
            mask = result.pop("AnomalyMask")
            print(name, json.dumps(result, indent=1))
            print(f"  AnomalyMask: {len(mask)} bytes of PNG, {Image.open(io.BytesIO(mask)).size}")


if __name__ == "__main__":
    main()
