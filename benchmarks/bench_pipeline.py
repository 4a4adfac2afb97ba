"""End-to-end DetectAnomalies, side by side in one run: the NumPy/Pillow baseline, the fastest
Python (OpenCV) pipeline, openlookout, and the floor (session.run alone on the same tensor).

Every benchmarked call's result is checked against the tests' independent reference
(tests/reference.py): openlookout to the test suite's tolerances; the baselines, whose resize
arithmetic differs slightly (OpenCV uses fixed-point weights), to looser ones.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

import openlookout
from baselines import BaselinePipeline, OpenCVPipeline
from reference import Reference, assert_matches_reference
from workloads import Workload, workloads

WORKLOADS = workloads()
IDS = [w.name for w in WORKLOADS]


@functools.cache
def reference_result(workload: Workload) -> Any:
    return Reference(str(workload.package)).detect(workload.image.read_bytes())


@functools.cache
def openlookout_model(package: Any) -> openlookout.Model:
    return openlookout.load_model(package, intra_op_threads=1, max_body_bytes=64 << 20)


def _labels(mask_png: bytes, palette: list[Any]) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(mask_png)).convert("RGB"))
    labels = np.zeros(rgb.shape[:2], np.int32)
    for k, color in enumerate(palette):
        labels[(rgb == np.array(color, np.uint8)).all(axis=-1)] = k
    return labels


def assert_close(
    result: dict[str, Any], workload: Workload, *, confidence: float, mask_fraction: float
) -> None:
    """Looser agreement for the baselines: same verdict and keys, confidence within
    ``confidence``, at most ``mask_fraction`` of mask pixels labelled differently."""
    ref = reference_result(workload)
    expected = ref.result
    assert set(result) == set(expected)
    assert result["IsAnomalous"] == expected["IsAnomalous"]
    assert abs(result["Confidence"] - expected["Confidence"]) <= confidence
    if "AnomalyMask" in expected:
        labels = _labels(result["AnomalyMask"], ref.palette)
        assert labels.shape == ref.labels.shape
        assert np.mean(labels != ref.labels) <= mask_fraction


def _rounds(workload: Workload, slow: bool) -> int:
    return 4 if (slow and workload.size == "4MP") else 8 if slow else 15


@pytest.mark.parametrize("workload", WORKLOADS, ids=IDS)
def test_openlookout(benchmark: Any, workload: Workload) -> None:
    model = openlookout_model(workload.package)
    body = workload.image.read_bytes()
    benchmark.group = workload.name
    benchmark.extra_info.update(implementation="openlookout", workload=workload.name)
    result = benchmark.pedantic(
        model.detect,
        (body, workload.content_type),
        rounds=_rounds(workload, False),
        warmup_rounds=1,
    )
    assert_matches_reference(result, reference_result(workload), workload.task)


@pytest.mark.parametrize("workload", WORKLOADS, ids=IDS)
def test_fastest_python(benchmark: Any, workload: Workload) -> None:
    pipeline = OpenCVPipeline(workload.package)
    body = workload.image.read_bytes()
    benchmark.group = workload.name
    benchmark.extra_info.update(implementation="fastest-python", workload=workload.name)
    result = benchmark.pedantic(
        pipeline.detect, (body,), rounds=_rounds(workload, False), warmup_rounds=1
    )
    assert_close(result, workload, confidence=0.02, mask_fraction=0.01)


@pytest.mark.parametrize("workload", WORKLOADS, ids=IDS)
def test_baseline(benchmark: Any, workload: Workload) -> None:
    pipeline = BaselinePipeline(workload.package)
    body = workload.image.read_bytes()
    benchmark.group = workload.name
    benchmark.extra_info.update(implementation="baseline", workload=workload.name)
    result = benchmark.pedantic(
        pipeline.detect, (body,), rounds=_rounds(workload, True), warmup_rounds=1
    )
    assert_close(result, workload, confidence=1e-3, mask_fraction=1e-3)


@pytest.mark.parametrize("workload", WORKLOADS, ids=IDS)
def test_session_run_floor(benchmark: Any, workload: Workload) -> None:
    pipeline = BaselinePipeline(workload.package)
    tensor = reference_result(workload).tensor
    benchmark.group = workload.name
    benchmark.extra_info.update(implementation="session.run", workload=workload.name)
    outputs = benchmark.pedantic(pipeline.run_only, (tensor,), rounds=15, warmup_rounds=1)
    expected = reference_result(workload).raw_outputs
    for got, want in zip(outputs, expected.values()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
