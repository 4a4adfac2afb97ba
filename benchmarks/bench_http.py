"""HTTP serving overhead: DetectAnomalies through ``openlookout serve`` on loopback, against the
in-process client on the same model, at several concurrencies.

    python -m pytest benchmarks/bench_http.py --benchmark-enable

The server runs as its own process (``python -m openlookout serve``), as in production; the load
generator is this process: N threads, each with one keep-alive connection, sending requests
back to back for a fixed time (``OPENLOOKOUT_BENCH_SECONDS``, default 2 s per point). The
in-process side is ``openlookout.client()`` called from N threads for the same time. Both host
the model with 2 inference units (2 workers, one ORT thread each), so the two sides run the
same inference; the ratio is the price of HTTP, JSON and base64 on this machine. Every HTTP
answer is checked against the in-process answer.

Two models: ``tiny`` (a 64x64 classifier on a 97x71 PNG, where per-request overhead dominates)
and ``resnet-1MP`` (the benchmarks' ResNet18-shaped classifier on a 1 MP JPEG, a realistic
inspection call). Figures are reported in ``extra_info`` and as a table at the end of the run.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import openlookout
from openlookout.client import Client

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import imagegen  # noqa: E402
from l4v_support import write_classification_package  # noqa: E402

SECONDS = float(os.environ.get("OPENLOOKOUT_BENCH_SECONDS", "2"))
CONCURRENCIES = (1, 2, 4, 8)
UNITS = 2
RESULTS: list[dict[str, Any]] = []


@dataclass
class Case:
    name: str
    package: Path
    body: bytes
    content_type: str


@dataclass
class Load:
    requests: int
    seconds: float
    latencies: list[float]
    failures: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def _cases(root: Path) -> list[Case]:
    tiny = write_classification_package(root / "tiny")
    cases = [Case("tiny", tiny, imagegen.png_bytes(imagegen.natural_rgb(97, 71, 5)), "image/png")]
    try:
        from workloads import workloads

        resnet = next(
            w for w in workloads() if w.task == "classification" and w.size == "1MP"
            and w.encoding == "jpeg"
        )  # fmt: skip
        cases.append(
            Case("resnet-1MP", resnet.package, resnet.image.read_bytes(), resnet.content_type)
        )
    except ImportError:  # pragma: no cover - workloads needs the benchmark extras
        pass
    return cases


def _run_threads(concurrency: int, call: Callable[[], bool]) -> Load:
    """Calls ``call`` back to back from ``concurrency`` threads for SECONDS."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            began = time.perf_counter()
            ok = call()
            if ok:
                latencies[index].append(time.perf_counter() - began)
            else:
                failures[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + SECONDS
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = [x for per_thread in latencies for x in per_thread]
    return Load(len(flat), elapsed, flat, sum(failures))


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[Case]:
    return _cases(tmp_path_factory.mktemp("bench-http"))


@pytest.fixture(scope="module")
def home(tmp_path_factory, cases) -> Path:
    directory = tmp_path_factory.mktemp("bench-http-home")
    lookout = openlookout.client(directory)
    for case in cases:
        lookout.create_project(ProjectName=case.name)
        lookout.import_model(ProjectName=case.name, Package=case.package)
    return directory


@pytest.fixture(scope="module")
def server_url(home, cases) -> Iterator[str]:
    starts = [arg for case in cases for arg in ("--start", f"{case.name}/1:{UNITS}")]
    with subprocess.Popen(
        [sys.executable, "-m", "openlookout", "serve", "--port", "0", "--home", str(home),
         "--max-queue", "64", "--intra-op-threads", "1", "--log-level", "warning", *starts],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:  # fmt: skip
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split()[2]
        lookout = openlookout.client(endpoint_url=url)
        deadline = time.monotonic() + 60
        for case in cases:
            while (
                lookout.describe_model(ProjectName=case.name, ModelVersion="1")["ModelDescription"][
                    "Status"
                ]
                != "HOSTED"
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        yield url
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def in_process(home, cases) -> Iterator[Client]:
    lookout = openlookout.client(home, intra_op_threads=1)
    for case in cases:
        lookout.start_model(ProjectName=case.name, ModelVersion="1", MinInferenceUnits=UNITS)
    for case in cases:
        while lookout.hosting.get(case.name, 1).status != "HOSTED":
            time.sleep(0.01)
    yield lookout
    lookout.close()


def summary_lines() -> list[str]:
    """The run's figures as a table (printed by benchmarks/conftest.py at the end of the run) and
    saved to build/bench-http.json."""
    if not RESULTS:
        return []
    lines = [
        "",
        "HTTP (openlookout serve, loopback) vs in-process client, same model, 2 inference units:",
        f"{'model':<11} {'conc':>4} {'HTTP req/s':>10} {'in-proc req/s':>13} {'ratio':>6} "
        f"{'HTTP p50':>9} {'HTTP p99':>9} {'in-proc p50':>11} {'in-proc p99':>11}",
    ]
    by_key = {(r["model"], r["concurrency"], r["mode"]): r for r in RESULTS}
    for (model, concurrency, mode), row in sorted(by_key.items()):
        if mode != "http" or (model, concurrency, "in-process") not in by_key:
            continue
        local = by_key[(model, concurrency, "in-process")]
        lines.append(
            f"{model:<11} {concurrency:>4} {row['rps']:>10.0f} {local['rps']:>13.0f} "
            f"{row['rps'] / local['rps']:>6.2f} {row['p50_ms']:>7.2f}ms {row['p99_ms']:>7.2f}ms "
            f"{local['p50_ms']:>9.2f}ms {local['p99_ms']:>9.2f}ms"
        )
    output = HERE.parent / "build" / "bench-http.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(RESULTS, indent=1))
    lines.append(f"(ratio: HTTP req/s over in-process req/s; raw figures in {output})")
    return lines


def _record(benchmark: Any, case: Case, mode: str, concurrency: int, load: Load) -> None:
    assert load.failures == 0, f"{load.failures} failed requests"
    assert load.requests > 0
    figures = {
        "model": case.name,
        "mode": mode,
        "concurrency": concurrency,
        "requests": load.requests,
        "rps": round(load.rate, 1),
        "p50_ms": round(load.percentile(0.50), 3),
        "p99_ms": round(load.percentile(0.99), 3),
        "mean_ms": round(statistics.fmean(load.latencies) * 1000.0, 3),
    }
    RESULTS.append(figures)
    benchmark.group = f"http-{case.name}-c{concurrency}"
    benchmark.extra_info.update(figures)


def _expected_json(lookout: Any, case: Case) -> dict[str, Any]:
    result = lookout.detect_anomalies(
        ProjectName=case.name, ModelVersion="1", Body=case.body, ContentType=case.content_type
    )["DetectAnomalyResult"]
    if "AnomalyMask" in result:
        result["AnomalyMask"] = base64.b64encode(result["AnomalyMask"]).decode()
    return result


@pytest.mark.parametrize("concurrency", CONCURRENCIES)
@pytest.mark.parametrize("case_name", ["tiny", "resnet-1MP"])
def test_http_vs_in_process(benchmark, cases, server_url, in_process, case_name, concurrency):
    case = next((c for c in cases if c.name == case_name), None)
    if case is None:
        pytest.skip(f"{case_name}: benchmark workloads unavailable")
    expected = _expected_json(in_process, case)
    host, port = server_url.removeprefix("http://").rsplit(":", 1)
    path = f"/2020-11-20/projects/{case.name}/models/1/detect"
    local = threading.local()
    connections: list[http.client.HTTPConnection] = []
    seen: set[bytes] = set()

    def over_http() -> bool:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host, int(port), timeout=60)
            connections.append(connection)
        connection.request(
            "POST", path, body=case.body, headers={"Content-Type": case.content_type}
        )
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            return False
        if payload not in seen:  # answers are deterministic: check each distinct one
            assert json.loads(payload)["DetectAnomalyResult"] == expected
            seen.add(payload)
        return True

    def in_process_call() -> bool:
        in_process.detect_anomalies(
            ProjectName=case.name, ModelVersion="1", Body=case.body, ContentType=case.content_type
        )
        return True

    loads: dict[str, Load] = {}

    def measure() -> None:
        loads["http"] = _run_threads(concurrency, over_http)
        loads["in-process"] = _run_threads(concurrency, in_process_call)

    try:
        benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        for connection in connections:
            connection.close()
    _record(benchmark, case, "http", concurrency, loads["http"])
    _record(benchmark, case, "in-process", concurrency, loads["in-process"])
