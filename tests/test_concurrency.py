"""One Model shared by several threads gives exactly the serial answers; two models used at once
don't interfere."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import imagegen
import openlookout
import reference

THREADS = 4
PER_THREAD = 25


def _workload(images):
    """Mixed PNG / JPEG / raw-array jobs of different sizes."""
    jobs = []
    for i, (name, rgb) in enumerate(sorted(images.items())):
        jobs.append(("png", name, imagegen.png_bytes(rgb), "image/png"))
        jobs.append(
            (
                "jpeg",
                name,
                imagegen.jpeg_bytes(Image.fromarray(rgb), subsampling=i % 3),
                "image/jpeg",
            )
        )
        jobs.append(("array", name, rgb, None))
    return jobs


def _run(model, job):
    kind, _, payload, ctype = job
    return model.detect_array(payload) if kind == "array" else model.detect(payload, ctype)


def _hammer(model, jobs, threads=THREADS, per_thread=PER_THREAD):
    """Each thread runs `per_thread` jobs starting at a different offset; all start together."""
    barrier = threading.Barrier(threads)
    results = [[None] * per_thread for _ in range(threads)]

    def worker(t):
        barrier.wait()
        for k in range(per_thread):
            j = (t * 7 + k) % len(jobs)
            results[t][k] = (j, _run(model, jobs[j]))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return results


@pytest.mark.parametrize("config", ["seg3_bilinear_area", "cls_nhwc_scale1"])
def test_threads_match_serial(packages, images, config):
    model = packages.native(config)
    jobs = _workload(images)
    serial = [_run(model, job) for job in jobs]
    for t_results in _hammer(model, jobs):
        for j, r in t_results:
            assert r == serial[j], jobs[j][:2]


def test_threads_match_reference(packages, images):
    pkg = packages.get("seg3_probs_13x11")
    model = openlookout.load_model(pkg.path)  # a fresh model: first calls happen concurrently
    jobs = [j for j in _workload(images) if j[0] != "jpeg"]
    for t_results in _hammer(model, jobs):
        for j, r in t_results:
            name = jobs[j][1]
            reference.assert_matches_reference(r, pkg.reference(name, images[name]), "segmentation")


def test_two_models_concurrently(packages, images):
    a_name, b_name = "seg3_nearest", "cls_softmax_nearest"
    a, b = packages.native(a_name), packages.native(b_name)
    jobs = _workload(images)
    serial_a = [_run(a, job) for job in jobs]
    serial_b = [_run(b, job) for job in jobs]
    barrier = threading.Barrier(4)
    errors = []

    def worker(t):
        model, serial = (a, serial_a) if t % 2 == 0 else (b, serial_b)
        barrier.wait()
        for k in range(PER_THREAD):
            j = (t * 5 + k) % len(jobs)
            r = _run(model, jobs[j])
            if r != serial[j]:
                errors.append((t, j))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    assert not errors


def test_errors_and_successes_interleaved(packages, images):
    """Threads mixing failing and succeeding calls: failures stay ValidationException, successes
    stay exact."""
    model = packages.native("seg3_nearest")
    png = imagegen.png_bytes(images["a97x71"])
    expected = model.detect(png, "image/png")
    bad = [
        (b"", "image/png"),
        (png[:60], "image/png"),
        (png, "image/gif"),
        (b"\xff\xd8\xff" + b"\x00" * 50, "image/jpeg"),
    ]
    barrier = threading.Barrier(THREADS)
    problems = []

    def worker(t):
        barrier.wait()
        for k in range(PER_THREAD):
            if (t + k) % 2:
                body, ct = bad[(t + k) % len(bad)]
                try:
                    model.detect(body, ct)
                    problems.append("no error")
                except openlookout.ValidationException:
                    pass
                except Exception as e:
                    problems.append(repr(e))
            elif model.detect(png, "image/png") != expected:
                problems.append("mismatch")

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    assert not problems, problems[:5]


def _bad_jobs(images):
    """Failing jobs: every one must give the same ValidationException message under load."""
    png = imagegen.png_bytes(images["a97x71"])
    jpeg = imagegen.jpeg_bytes(Image.fromarray(images["a97x71"]), progressive=True)
    return [
        ("bad", "empty", b"", "image/png"),
        ("bad", "truncated png", png[: len(png) // 3], "image/png"),
        ("bad", "truncated jpeg", jpeg[: len(jpeg) // 2], "image/jpeg"),
        ("bad", "gif", png, "image/gif"),
        ("bad", "png as jpeg", png, "image/jpeg"),
        ("bad", "huge", imagegen.huge_ihdr_png(), "image/png"),
        ("bad", "small", imagegen.png_bytes(imagegen.natural_rgb(20, 20, 1)), "image/png"),
    ]


def _outcome(model, job):
    kind, _, payload, ctype = job
    try:
        if kind == "array":
            return model.detect_array(payload)
        return model.detect(payload, ctype)
    except openlookout.ValidationException as e:
        return ("ValidationException", str(e))


def test_eight_threads_three_models_mixed_good_and_bad(packages, images):
    """8 threads, each on one of three models (segmentation, classification, a fresh load whose
    first calls are concurrent), running good PNG/JPEG/array jobs and failing ones in
    different orders: every answer, and every error message, equals the serial one."""
    names = ["seg3_nearest", "cls_softmax_nearest", "seg1_logit"]
    models = [packages.native(n) for n in names[:2]]
    models.append(openlookout.load_model(packages.get(names[2]).path))
    jobs = _workload(images) + _bad_jobs(images)
    serial = [[_outcome(m, job) for job in jobs] for m in models]
    threads, rounds = 8, 30
    barrier = threading.Barrier(threads)
    problems = []

    def worker(t):
        m = t % len(models)
        rng = np.random.default_rng(t)
        barrier.wait()
        for j in rng.integers(0, len(jobs), rounds):
            got = _outcome(models[m], jobs[j])
            if got != serial[m][j]:
                problems.append((names[m], jobs[j][:2]))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    assert not problems, problems[:5]
    # The fresh model now matches a serial pass too (its pool grew under load).
    assert [_outcome(models[2], job) for job in jobs] == serial[2]


def test_detect_batch_from_threads_matches_serial(packages, images):
    """detect_batch (itself multi-threaded) called from 4 threads at once."""
    model = packages.native("seg3_bilinear_area")
    jobs = [j for j in _workload(images) if j[0] != "array"]
    bodies = [j[2] for j in jobs]
    types = [j[3] for j in jobs]
    expected = [model.detect(b, t) for b, t in zip(bodies, types)]

    def worker(_):
        return model.detect_batch(bodies, types, workers=3)

    with ThreadPoolExecutor(4) as pool:
        for result in pool.map(worker, range(4)):
            assert result == expected
