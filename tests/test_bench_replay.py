"""The benchmark's replay model (benchmarks/workloads.py): the real model's signature, the recorded
outputs bit for bit, and a package openlookout loads and answers from exactly as the reference does
with the real model. The benchmark's non-model figures rely on all three."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import openlookout
import workloads
from imagegen import natural_rgb
from reference import Reference, assert_matches_reference


def _signature(session: ort.InferenceSession) -> list[tuple[str, list[object], str]]:
    return [(a.name, a.shape, a.type) for a in session.get_inputs() + session.get_outputs()]


def test_replay_package_answers_like_the_real_model(tmp_path: Path) -> None:
    real_dir = workloads._write_package(tmp_path / "real", workloads.small_unet(), "segmentation")
    buffer = io.BytesIO()
    Image.fromarray(natural_rgb(320, 200, seed=3)).save(buffer, "PNG")
    body = buffer.getvalue()
    ref = Reference(str(real_dir)).detect(body)

    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    shutil.copy(real_dir / "manifest.json", replay_dir / "manifest.json")
    real = onnx.load(real_dir / "model.onnx")
    onnx.save(workloads.replay_model(real, ref.raw_outputs), replay_dir / "model.onnx")

    real_session = ort.InferenceSession(str(real_dir / "model.onnx"))
    replay_session = ort.InferenceSession(str(replay_dir / "model.onnx"))
    assert _signature(replay_session) == _signature(real_session)
    outputs = replay_session.run(None, {"image": ref.tensor})
    for got, want in zip(outputs, ref.raw_outputs.values(), strict=True):
        np.testing.assert_array_equal(got, want.astype(np.float32))

    model = openlookout.load_model(replay_dir, intra_op_threads=1)
    assert_matches_reference(model.detect(body, "image/png"), ref, "segmentation")
