"""The opt-in ``fast_jpeg_scaling``: DetectAnomalies with the exact JPEG decode and with
libjpeg-turbo's DCT-domain downscaling, side by side, and what the shortcut changes in the answer
(Confidence difference, share of mask pixels labelled differently, verdict flips)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

import openlookout
from workloads import rounds, workloads

CASES = [w for w in workloads() if w.encoding != "png"]


def _mask(result: dict[str, Any]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result["AnomalyMask"])).convert("RGB"))


@pytest.mark.parametrize("fast", [False, True], ids=["exact", "fast_jpeg_scaling"])
@pytest.mark.parametrize("workload", CASES, ids=[w.name for w in CASES])
def test_jpeg_scaling(benchmark: Any, workload: Any, fast: bool) -> None:
    body = workload.image.read_bytes()
    exact = openlookout.load_model(workload.package, intra_op_threads=1, max_body_bytes=64 << 20)
    model = openlookout.load_model(
        workload.package, intra_op_threads=1, max_body_bytes=64 << 20, fast_jpeg_scaling=fast
    )
    benchmark.group = f"jpeg-scaling-{workload.name}"
    result = benchmark.pedantic(
        model.detect, (body, workload.content_type), rounds=rounds(10), warmup_rounds=1
    )
    reference = exact.detect(body, workload.content_type)
    info: dict[str, Any] = {
        "implementation": "fast" if fast else "exact",
        "workload": workload.name,
        "confidence_delta": abs(result["Confidence"] - reference["Confidence"]),
        "verdict_flip": result["IsAnomalous"] != reference["IsAnomalous"],
    }
    if "AnomalyMask" in reference:
        got, want = _mask(result), _mask(reference)
        assert got.shape == want.shape  # masks stay at the image's full size
        info["mask_pixels_changed"] = float(np.mean((got != want).any(axis=-1)))
    if not fast:
        assert result == reference
    benchmark.extra_info.update(info)
