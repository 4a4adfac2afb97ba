"""End-to-end DetectAnomalies, side by side in one run: the NumPy/Pillow baseline, the fastest
Python (OpenCV) pipeline, openlookout, and the floor (session.run alone on the same tensor).

Each of them also runs on the workload's *replay* package (workloads.replay_package): the same
manifest with a model that returns the real model's recorded outputs for that image, so a call does
all the work outside the model on exactly the real scores while session.run costs only ORT's fixed
overhead (measured too, as "session.run-replay"). That measures the time outside the model
directly; subtracting two separately timed ~25 ms end-to-end figures left a few milliseconds of
drift in a difference of a few milliseconds.

One test function, parametrized with the workload as the outer loop and the implementation as the
inner one, so that the figures compared with each other are measured back to back (machine drift
over the whole run does not enter the ratios); group = workload name.

Every benchmarked call's result is checked against the tests' independent reference
(tests/reference.py): openlookout to the test suite's tolerances; the baselines, whose resize
arithmetic differs slightly (OpenCV uses fixed-point weights), to looser ones. The replay outputs
equal the real model's outputs on the reference's tensor, so the same assertions hold.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import openlookout
from baselines import BaselinePipeline, OpenCVPipeline
from reference import RefDetection, Reference, assert_matches_reference
from workloads import Workload, replay_package, rounds, workloads

WORKLOADS = workloads()
# Within a workload: the real model first, then the replay model; openlookout and fastest-python
# next to each other in both, since their ratio is the one the targets are about.
IMPLEMENTATIONS = ("session.run", "openlookout", "fastest-python", "baseline")
CASES = [
    (workload, implementation, replay)
    for workload in WORKLOADS
    for replay in (False, True)
    for implementation in IMPLEMENTATIONS
]


def _case_id(case: tuple[Workload, str, bool]) -> str:
    workload, implementation, replay = case
    return f"{workload.name}-{implementation}{'-replay' if replay else ''}"


@functools.cache
def reference_result(workload: Workload) -> RefDetection:
    return Reference(str(workload.package)).detect(workload.image.read_bytes())


@functools.cache
def replay_package_of(workload: Workload) -> Path:
    """The workload's replay package, written once per session from the reference's raw outputs
    (the real model run on the reference's input tensor)."""
    return replay_package(workload, reference_result(workload).raw_outputs)


@functools.cache
def openlookout_model(package: Path) -> openlookout.Model:
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


def _rounds(workload: Workload, implementation: str) -> int:
    if implementation == "baseline":  # ~0.1-0.4 s a call for segmentation
        return rounds(4 if workload.size == "4MP" else 8)
    return rounds(15)


def _benchmarked_call(
    workload: Workload, implementation: str, replay: bool
) -> tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any], None]]:
    """(function, its arguments, the check of its result) for one implementation on the
    workload's real or replay package."""
    package = replay_package_of(workload) if replay else workload.package
    body = workload.image.read_bytes()
    if implementation == "openlookout":
        model = openlookout_model(package)

        def check_openlookout(result: Any) -> None:
            assert_matches_reference(result, reference_result(workload), workload.task)

        return model.detect, (body, workload.content_type), check_openlookout
    if implementation == "fastest-python":
        opencv = OpenCVPipeline(package)
        return (
            opencv.detect,
            (body,),
            lambda result: assert_close(result, workload, confidence=0.02, mask_fraction=0.01),
        )
    if implementation == "baseline":
        baseline = BaselinePipeline(package)
        return (
            baseline.detect,
            (body,),
            lambda result: assert_close(result, workload, confidence=1e-3, mask_fraction=1e-3),
        )
    assert implementation == "session.run"
    session = BaselinePipeline(package)  # session.run alone, on the reference's input tensor
    expected = reference_result(workload).raw_outputs

    def check_outputs(outputs: list[np.ndarray]) -> None:
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected.values()):
            if replay:  # the recorded outputs, bit for bit
                np.testing.assert_array_equal(got, want.astype(got.dtype))
            else:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    return session.run_only, (reference_result(workload).tensor,), check_outputs


@pytest.mark.parametrize(("workload", "implementation", "replay"), CASES, ids=map(_case_id, CASES))
def test_pipeline(benchmark: Any, workload: Workload, implementation: str, replay: bool) -> None:
    function, arguments, check = _benchmarked_call(workload, implementation, replay)
    benchmark.group = workload.name
    benchmark.extra_info.update(
        implementation=f"{implementation}-replay" if replay else implementation,
        workload=workload.name,
    )
    result = benchmark.pedantic(
        function, arguments, rounds=_rounds(workload, implementation), warmup_rounds=1
    )
    check(result)
