"""Throughput on one model from Python threads: one thread, two threads calling ``detect``, and
``detect_batch`` (two calls in flight, decode of the next image overlapping inference of the
current one). ORT runs one intra-op thread per call, so the two cores are shared by the callers
and the ratio shows whether the GIL or a lock serialises anything."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import openlookout
from workloads import rounds, workloads

IMAGES = 16
CASES = [w for w in workloads() if w.size == "1MP" and w.encoding == "jpeg"]


def _serial(model: openlookout.Model, body: bytes, content_type: str) -> None:
    for _ in range(IMAGES):
        model.detect(body, content_type)


def _two_threads(model: openlookout.Model, body: bytes, content_type: str) -> None:
    threads = [
        threading.Thread(
            target=lambda: [model.detect(body, content_type) for _ in range(IMAGES // 2)]
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _batch(model: openlookout.Model, body: bytes, content_type: str) -> None:
    results = model.detect_batch([body] * IMAGES, content_type, workers=2)
    assert len(results) == IMAGES


@pytest.mark.parametrize("mode", ["1-thread", "2-threads", "detect_batch"])
@pytest.mark.parametrize("workload", CASES, ids=[w.name for w in CASES])
def test_throughput(benchmark: Any, workload: Any, mode: str) -> None:
    model = openlookout.load_model(workload.package, intra_op_threads=1)
    body = workload.image.read_bytes()
    expected = model.detect(body, workload.content_type)
    fn = {"1-thread": _serial, "2-threads": _two_threads, "detect_batch": _batch}[mode]
    benchmark.group = f"threads-{workload.name}"
    benchmark.extra_info.update(implementation=mode, workload=workload.name, images=IMAGES)
    benchmark.pedantic(fn, (model, body, workload.content_type), rounds=rounds(8), warmup_rounds=1)
    assert model.detect(body, workload.content_type) == expected
