"""Soak test: many detections in a loop on a tiny model, reporting resident-memory drift.

    python tools/soak.py [--iterations 20000] [--threads 1] [--max-drift-mib 8]

Each round runs good PNG and JPEG bodies of a few sizes, detect_array, and the error paths
(empty, truncated, corrupt, oversized header, wrong content type, oversized body), so a leak on
any of them shows. The resident set size (VmRSS) is sampled after a warm-up (the first tenth of
the iterations, at least 200), then through the run; the drift is the final RSS minus the RSS
after warm-up. Exits 1 when the drift exceeds --max-drift-mib or when an answer changes (every
good input must give the same result each time). scripts/fuzz.sh runs 20,000 iterations;
tests/test_memory.py a short run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "cpp", "fuzz"))

import make_fuzz_model  # noqa: E402

import openlookout  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _image(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1)
    return (base + rng.integers(0, 40, (height, width, 3))).clip(0, 255).astype(np.uint8)


def _encode(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


def workload() -> tuple[list, list]:
    """(good cases, bad cases): (label, body or array, content type or None)."""
    good, bad = [], []
    for i, (w, h) in enumerate([(97, 71), (64, 64), (130, 90)]):
        rgb = _image(w, h, i)
        good.append((f"png {w}x{h}", _encode(rgb, "PNG"), "image/png"))
        good.append((f"jpeg {w}x{h}", _encode(rgb, "JPEG", quality=90), "image/jpeg"))
        good.append((f"progressive {w}x{h}", _encode(rgb, "JPEG", progressive=True), "image/jpeg"))
        good.append((f"array {w}x{h}", rgb, None))
    png, jpeg = good[0][1], good[1][1]
    huge = bytearray(png)
    huge[16:24] = (100000).to_bytes(4, "big") * 2
    bad += [
        ("empty", b"", "image/png"),
        ("truncated png", png[: len(png) // 2], "image/png"),
        ("truncated jpeg", jpeg[: len(jpeg) // 2], "image/jpeg"),
        ("corrupt jpeg", jpeg[:200] + bytes(range(256)) * 4 + jpeg[-2:], "image/jpeg"),
        ("png as jpeg", png, "image/jpeg"),
        ("gif", png, "image/gif"),
        ("huge header", bytes(huge), "image/png"),
        ("body too large", png + bytes(300_000), "image/png"),
        ("array too small", np.zeros((8, 8, 3), np.uint8), None),
    ]
    return good, bad


def run(model, case):
    _, payload, content_type = case
    return (
        model.detect_array(payload) if content_type is None else model.detect(payload, content_type)
    )


def soak(iterations: int, threads: int) -> dict:
    directory = tempfile.mkdtemp(prefix="openlookout-soak-")
    make_fuzz_model.write_package(directory)
    model = openlookout.load_model(directory, intra_op_threads=1, max_body_bytes=256 * 1024)
    good, bad = workload()
    expected = [run(model, c) for c in good]
    cases = [(i, c) for i, c in enumerate(good)] + [(None, c) for c in bad]
    warmup = max(200, iterations // 10)
    problems: list[str] = []
    samples: list[tuple[int, int]] = []
    counter = {"done": 0}
    lock = threading.Lock()

    def one(k: int) -> None:
        index, case = cases[k % len(cases)]
        try:
            result = run(model, case)
            if index is None:
                problems.append(f"{case[0]}: no error")
            elif result != expected[index]:
                problems.append(f"{case[0]}: answer changed")
        except openlookout.ValidationException:
            if index is not None:
                problems.append(f"{case[0]}: unexpected ValidationException")

    def worker(t: int) -> None:
        k = t
        while True:
            with lock:
                if counter["done"] >= iterations:
                    return
                counter["done"] += 1
                done = counter["done"]
            one(k)
            k += threads
            if done == warmup or done % max(1, iterations // 20) == 0:
                samples.append((done, rss_bytes()))

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    seconds = time.perf_counter() - start
    after_warmup = next(rss for done, rss in samples if done >= warmup)
    final = rss_bytes()
    return {
        "iterations": iterations,
        "threads": threads,
        "seconds": seconds,
        "error_fraction": len(bad) / len(cases),
        "rss_after_warmup_mib": after_warmup / 2**20,
        "rss_final_mib": final / 2**20,
        "rss_max_mib": max(rss for _, rss in samples) / 2**20,
        "drift_mib": (final - after_warmup) / 2**20,
        "problems": problems[:10],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-drift-mib", type=float, default=8.0)
    args = parser.parse_args()
    r = soak(args.iterations, args.threads)
    ok = not r["problems"] and r["drift_mib"] <= args.max_drift_mib
    print(json.dumps(r))
    print(
        f"{r['iterations']} detections ({r['error_fraction']:.0%} error paths) on "
        f"{r['threads']} thread(s) in {r['seconds']:.1f} s: RSS {r['rss_after_warmup_mib']:.1f} "
        f"MiB after warm-up, {r['rss_final_mib']:.1f} MiB at the end (drift "
        f"{r['drift_mib']:+.2f} MiB, max {r['rss_max_mib']:.1f} MiB)"
        + ("" if ok else f"; FAILED (limit {args.max_drift_mib} MiB, problems {r['problems']})")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
