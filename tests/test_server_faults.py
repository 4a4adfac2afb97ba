"""The server under faults: clients that vanish mid-upload, slow-loris senders, oversized bodies,
malformed requests, bursts far above capacity and StopModel under load. Each runs the real server
over loopback with a real model (a small segmentation package from tests/builders.py): the first
four against `openlookout serve` as a subprocess, as it runs in production; the burst and StopModel
tests in process (running_server), so that they can hold the model's workers busy with a gate and
make admission deterministic instead of timing-dependent."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

import openlookout
from l4v_support import boto3_client, sample_pngs, write_segmentation_package
from openlookout.hosting import HostingOptions
from openlookout.server import ServerConfig, running_server

DETECT = "/2020-11-20/projects/p/models/1/detect"
BODY_LIMIT = 200_000
# Short deadlines so the slow-loris test ends quickly; generous against a loaded machine, where a
# normal request's headers arrive in one segment within milliseconds.
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0
# Every wait in this file ends: sockets, polls and subprocesses have these limits.
SOCKET_TIMEOUT = 30.0
DEADLINE = 60.0

Response = tuple[int, dict[str, str], bytes]


# ---- shared pieces --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return write_segmentation_package(tmp_path_factory.mktemp("faults-pkg") / "seg")


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return sample_pngs(4)  # four sizes, so a response given to the wrong request is caught


@pytest.fixture(scope="module")
def expected(package, images) -> list[dict[str, Any]]:
    """The serial answer for each image: one model, one call at a time, no server."""
    model = openlookout.load_model(package)
    return [model.detect(image, "image/png") for image in images]


def make_home(tmp_path_factory, package: Path, name: str) -> Path:
    home = tmp_path_factory.mktemp(f"faults-{name}-home")
    lookout = openlookout.client(home)
    lookout.create_project(ProjectName="p")
    lookout.import_model(ProjectName="p", Package=package)
    return home


def wait_until(condition: Callable[[], bool], what: str, limit: float = DEADLINE) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def exchange(address: tuple[str, int], data: bytes) -> Response:
    """Sends raw bytes on a fresh connection and reads one HTTP response."""
    with socket.create_connection(address, timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def detect_request(body: bytes, content_type: str = "image/png", path: str = DETECT) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def decoded_result(body: bytes) -> dict[str, Any]:
    result = json.loads(body)["DetectAnomalyResult"]
    if "AnomalyMask" in result:
        result["AnomalyMask"] = base64.b64decode(result["AnomalyMask"])
    return result


def assert_l4v_error(response: Response, status: int, code: str) -> dict[str, Any]:
    """The service model's error shape, as botocore reads it: the status, the name in
    x-amzn-ErrorType, a JSON body with the message, and a request id."""
    got_status, headers, body = response
    assert (got_status, headers.get("x-amzn-errortype")) == (status, code), body[:300]
    assert headers["content-type"].startswith("application/json")
    assert headers.get("x-amzn-requestid")
    error = json.loads(body)
    assert error["message"]
    assert error["Message"] == error["message"]
    return error


def metrics(address: tuple[str, int]) -> dict[str, float]:
    """GET /metrics as {series: value}."""
    status, _, body = exchange(
        address, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def requests_with(values: dict[str, float], operation: str, status: int) -> float:
    return values.get(f'openlookout_requests_total{{operation="{operation}",status="{status}"}}', 0)


def server_errors(values: dict[str, float]) -> dict[str, float]:
    return {
        series: count
        for series, count in values.items()
        if series.startswith("openlookout_requests_total") and 'status="5' in series
    }


def assert_model_idle(values: dict[str, float]) -> None:
    labels = '{project="p",version="1"}'
    assert values[f"openlookout_model_running{labels}"] == 0
    assert values[f"openlookout_model_queue_depth{labels}"] == 0


# ---- `openlookout serve` in a subprocess ---------------------------------------------------


class ServeProcess:
    def __init__(self, home: Path, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openlookout", "serve", "--port", "0", "--home", str(home),
             "--log-level", "info", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], DEADLINE)
        assert ready, "openlookout serve did not start"
        line = self.process.stdout.readline()
        assert line.startswith("openlookout serving http://127.0.0.1:"), line
        host, port = line.split()[2].removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))

    def health(self) -> dict[str, Any]:
        status, _, body = exchange(
            self.address, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        assert status == 200
        return dict(json.loads(body))

    def stop(self) -> str:
        """SIGTERM; the server must exit 0. Returns its log."""
        self.process.send_signal(signal.SIGTERM)
        try:
            _, log = self.process.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, log = self.process.communicate()
            raise AssertionError(f"openlookout serve did not stop on SIGTERM:\n{log}") from None
        assert self.process.returncode == 0, log
        return str(log)


@pytest.fixture(scope="module")
def serve(tmp_path_factory, package) -> Iterator[ServeProcess]:
    """`openlookout serve` with p/1 started on two workers, a small body limit and short
    connection deadlines."""
    home = make_home(tmp_path_factory, package, "serve")
    server = ServeProcess(
        home, "--start", "p/1:2", "--max-body-bytes", str(BODY_LIMIT),
        "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
    )  # fmt: skip
    try:
        wait_until(lambda: server.health()["models"][0]["Status"] == "HOSTED", "HOSTED")
        yield server
    finally:
        log = server.stop()
    # Nothing any test sent was an internal error (the server logs each one with its traceback).
    assert "ERROR openlookout" not in log, log


def assert_serves(address: tuple[str, int], images: list[bytes], expected: list[dict]) -> None:
    for image, answer in zip(images, expected, strict=True):
        status, _, body = exchange(address, detect_request(image))
        assert status == 200, body[:300]
        assert decoded_result(body) == answer


# ---- the subprocess tests --------------------------------------------------------------------


def test_client_vanishing_mid_upload(serve, images, expected):
    """Clients that send the headers and half a DetectAnomalies body, then close (FIN) or reset
    (RST) the connection: the server answers no one, counts them as status 499 (not 5xx), keeps
    no admitted work (running and queue gauges at zero) and serves the next requests correctly."""
    before = metrics(serve.address)
    vanished = 8
    for i in range(vanished):
        image = images[i % len(images)]
        sock = socket.create_connection(serve.address, timeout=SOCKET_TIMEOUT)
        sock.sendall(detect_request(image)[: -len(image) // 2])
        if i % 2:  # abortive close: the server sees a reset, not an end of stream
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def all_seen() -> bool:
        now = metrics(serve.address)
        return (
            requests_with(now, "DetectAnomalies", 499)
            - requests_with(before, "DetectAnomalies", 499)
            == vanished
        )

    wait_until(all_seen, "the server to see every vanished client")
    assert_serves(serve.address, images, expected)
    after = metrics(serve.address)
    assert_model_idle(after)
    assert server_errors(after) == {}


def _trickle(address: tuple[str, int], head: bytes, drip: bytes, outcome: dict[str, Any]) -> None:
    """Sends ``head``, then ``drip`` one byte at a time every 0.25 s until the server closes the
    connection; records what it answered. Gives up (an assertion in the test) after DEADLINE."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(address, timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(head)
        position = 0
        while time.monotonic() - started < DEADLINE:
            readable, _, _ = select.select([sock], [], [], 0.25)
            try:
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        break  # the server closed the connection
                    answer += data
                    continue
                if position < len(drip):
                    sock.sendall(drip[position : position + 1])
                    position += 1
            except OSError:  # reset by the server
                break
        else:
            outcome["closed"] = False
            return
    outcome.update(closed=True, answer=answer, seconds=time.monotonic() - started)


def test_slow_loris_does_not_block_others_and_is_dropped(serve, images, expected):
    """Four clients trickle header bytes and four trickle a body, a byte every 0.25 s. Meanwhile
    normal requests are answered correctly; then the server drops every slow connection: the
    header tricklers after --header-timeout with no answer, the body tricklers after
    --body-timeout with a 400 ValidationException."""
    slow_head = f"POST {DETECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n".encode()
    endless_header = b"X-Padding: " + b"a" * 10_000  # never completes before the deadline
    body_head = (
        f"POST {DETECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(images[0])}\r\n\r\n"
    ).encode()
    outcomes: list[dict[str, Any]] = [{"kind": "header"} for _ in range(4)]
    outcomes += [{"kind": "body"} for _ in range(4)]
    threads = [
        threading.Thread(
            target=_trickle,
            args=(serve.address, b"", slow_head + endless_header, outcome)
            if outcome["kind"] == "header"
            else (serve.address, body_head, images[0], outcome),
            daemon=True,
        )
        for outcome in outcomes
    ]
    for thread in threads:
        thread.start()
    for _ in range(3):  # while they trickle
        assert_serves(serve.address, images, expected)
    for thread in threads:
        thread.join(DEADLINE + 10)
        assert not thread.is_alive()
    for outcome in outcomes:
        assert outcome["closed"], outcome
        if outcome["kind"] == "header":
            assert outcome["answer"] == b"", outcome  # dropped: nothing to answer yet
        else:
            head, _, body = outcome["answer"].partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), outcome
            assert b"x-amzn-ErrorType: ValidationException" in head
            assert "--body-timeout" in json.loads(body)["message"]
    assert_serves(serve.address, images, expected)
    assert_model_idle(metrics(serve.address))


def test_oversized_bodies(serve, images, expected):
    """Bodies over --max-body-bytes are refused as L4V's spec says: 400 ValidationException
    (not 413, which botocore does not model), before they are read when Content-Length says so,
    while streaming when chunked; through boto3 too. The server keeps serving."""
    too_big = b"\x89PNG" + bytes(BODY_LIMIT)
    error = assert_l4v_error(
        exchange(serve.address, detect_request(too_big)), 400, "ValidationException"
    )
    assert str(BODY_LIMIT) in error["message"]
    # Announced as far larger than sent: refused from the header alone, without waiting.
    announced = (
        f"POST {DETECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {10**12}\r\n\r\n"
    ).encode()
    assert_l4v_error(exchange(serve.address, announced), 400, "ValidationException")
    chunk = b"\x00" * 65_536
    chunked = (
        (
            f"POST {DETECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * (BODY_LIMIT // len(chunk) + 2)
        + b"0\r\n\r\n"
    )
    assert_l4v_error(exchange(serve.address, chunked), 400, "ValidationException")
    url = f"http://{serve.address[0]}:{serve.address[1]}"
    with pytest.raises(ClientError) as caught:
        boto3_client(url).detect_anomalies(
            ProjectName="p", ModelVersion="1", Body=too_big, ContentType="image/png"
        )
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert_serves(serve.address, images, expected)


def _request(method: str, path: str, headers: str = "", body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


# (name, raw request, status, x-amzn-ErrorType) for requests that reach the API.
def _api_cases(png: bytes) -> list[tuple[str, bytes, int, str]]:
    png_type = "Content-Type: image/png\r\n"
    return [
        ("unknown route", _request("GET", "/nothing/here"), 404, "UnknownOperationException"),
        ("unknown API path", _request("GET", "/2020-11-20/projects/p/models/1/detect/x"),
         404, "UnknownOperationException"),
        ("wrong method", _request("PUT", DETECT, png_type, png), 405, "MethodNotAllowedException"),
        ("no such project", _request("POST", "/2020-11-20/projects/q/models/1/detect", png_type,
         png), 404, "ResourceNotFoundException"),
        ("no such version", _request("POST", "/2020-11-20/projects/p/models/9/detect", png_type,
         png), 404, "ResourceNotFoundException"),
        ("bad project name", _request("POST", "/2020-11-20/projects/-p/models/1/detect",
         png_type, png), 400, "ValidationException"),
        ("project name too long", _request("GET", "/2020-11-20/projects/" + "a" * 300),
         400, "ValidationException"),
        ("non-numeric ModelVersion", _request("POST", "/2020-11-20/projects/p/models/one/detect",
         png_type, png), 400, "ValidationException"),
        ("ModelVersion 0", _request("POST", "/2020-11-20/projects/p/models/0/detect", png_type,
         png), 400, "ValidationException"),
        ("huge ModelVersion", _request("GET", "/2020-11-20/projects/p/models/" + "9" * 40),
         400, "ValidationException"),
        ("dot-dot segments", _request("GET", "/2020-11-20/projects/../../../etc/passwd"),
         404, "UnknownOperationException"),
        ("encoded traversal", _request("GET", "/2020-11-20/projects/..%2F..%2Fetc%2Fpasswd"),
         400, "ValidationException"),
        ("encoded dot-dot", _request("GET", "/2020-11-20/projects/%2e%2e/models"),
         400, "ValidationException"),
        ("NUL in a name", _request("GET", "/2020-11-20/projects/p%00"), 400,
         "ValidationException"),
        ("invalid UTF-8 in a name", _request("GET", "/2020-11-20/projects/%ff%fe"), 400,
         "ValidationException"),
        ("missing Content-Type", _request("POST", DETECT, "", png), 400, "ValidationException"),
        ("unsupported Content-Type", _request("POST", DETECT, "Content-Type: image/gif\r\n", png),
         400, "ValidationException"),
        ("garbled Content-Type", _request("POST", DETECT, "Content-Type: ;;;===\r\n", png),
         400, "ValidationException"),
        # Header bytes that are not UTF-8: was a 500 (TypeError in the native call).
        ("non-ASCII Content-Type", _request("POST", DETECT, "Content-Type: imXXage/png\r\n",
         png).replace(b"XX", b"\xff\xfe", 1), 400, "ValidationException"),
        ("body not an image", _request("POST", DETECT, png_type, b"GIF89a" + bytes(100)),
         400, "ValidationException"),
        ("empty body", _request("POST", DETECT, png_type), 400, "ValidationException"),
        ("JSON body not an object", _request("POST", "/2020-11-20/projects", "", b"[]"),
         400, "ValidationException"),
        ("JSON body not JSON", _request("POST", "/2020-11-20/projects/p/models/1/start", "",
         b"{MinInferenceUnits"), 400, "ValidationException"),
        ("maxResults not a number", _request("GET", "/2020-11-20/projects?maxResults=ten"),
         400, "ValidationException"),
    ]  # fmt: skip


# Requests that are not valid HTTP/1.1: aiohttp's parser refuses them before the API is reached,
# with its own plain 400, and closes the connection.
_BAD_HTTP = [
    ("Content-Length not a number", (
        f"POST {DETECT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        "Content-Length: ten\r\n\r\n").encode()),
    ("negative Content-Length", (
        f"POST {DETECT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        "Content-Length: -5\r\n\r\n").encode()),
    ("two Content-Lengths", (
        f"POST {DETECT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcde").encode()),
    ("bad chunk size", (
        f"POST {DETECT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n").encode()),
    ("no Host", b"GET /2020-11-20/projects HTTP/1.1\r\n\r\n"),
    ("invalid method", b"BR\x00EW /2020-11-20/projects HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("TLS on the HTTP port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)),
    ("NUL in a header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
]  # fmt: skip


def test_malformed_paths_and_headers(serve, images, expected):
    """Unknown routes, bad names and versions, traversal attempts, missing or garbled content
    types and bodies get the service model's 4xx in L4V's error shape (ValidationException 400,
    ResourceNotFoundException 404; the unknown-operation and method errors AWS's REST services
    give); requests that are not HTTP get a plain 400. Never a 5xx, never a hang; the server
    then still serves."""
    before = metrics(serve.address)
    for name, raw, status, code in _api_cases(images[0]):
        try:
            assert_l4v_error(exchange(serve.address, raw), status, code)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None
    for name, raw in _BAD_HTTP:
        assert exchange(serve.address, raw)[0] == 400, name
    after = metrics(serve.address)
    assert server_errors(after) == server_errors(before) == {}
    assert_serves(serve.address, images, expected)


# ---- in process: burst and StopModel ---------------------------------------------------------


async def _send(address: tuple[str, int], raw: bytes) -> Response:
    """One request on its own connection, from an asyncio client."""

    async def go() -> Response:
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(raw)
            await writer.drain()
            data = await reader.read()  # Connection: close, so the answer ends at EOF
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, body

    return await asyncio.wait_for(go(), SOCKET_TIMEOUT * 2)


def _address(server: Any) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _hosted(server: Any, units: int) -> Any:
    server.client.start_model(ProjectName="p", ModelVersion="1", MinInferenceUnits=units)
    wait_until(lambda: server.client.hosting.get("p", 1).status == "HOSTED", "HOSTED")
    return server.client.hosting.get("p", 1)


def _hold_workers(hosted: Any, gate: threading.Event) -> list[Any]:
    """Occupies every inference worker of ``hosted`` until ``gate`` is set, through the hosting
    layer's own submit, so that requests are admitted and wait in the queue deterministically."""
    started = threading.Semaphore(0)

    def hold(model: Any) -> None:
        started.release()
        gate.wait(DEADLINE)

    holders = [hosted.submit(hold) for _ in range(hosted.workers)]
    for _ in holders:
        assert started.acquire(timeout=DEADLINE)
    return holders


def _classify(
    responses: list[Response], sent: list[int], expected: list[dict[str, Any]]
) -> Counter[str]:
    """Counts answers by status, checking every 200 against the serial result of its image and
    every refusal's error shape."""
    counts: Counter[str] = Counter()
    for (status, headers, body), image_index in zip(responses, sent, strict=True):
        if status == 200:
            assert decoded_result(body) == expected[image_index]
        elif status == 429:
            assert_l4v_error((status, headers, body), 429, "ThrottlingException")
            assert int(headers["retry-after"]) >= 1
        elif status == 409:
            error = assert_l4v_error((status, headers, body), 409, "ConflictException")
            assert error["ResourceType"] == "MODEL"
        else:
            raise AssertionError(f"unexpected answer {status}: {body[:300]!r}")
        counts[str(status)] += 1
    return counts


BURST = 300


def test_burst_far_above_capacity(tmp_path_factory, package, images, expected):
    """300 concurrent DetectAnomalies against 2 workers and a queue of 4. First with the workers
    held: exactly 4 requests are admitted and the other 296 are throttled (429
    ThrottlingException with Retry-After); once released, the 4 answer with the serial result.
    Then a free-running burst: every request is answered, 200 + 429 == sent, every 200 equals the
    serial result. The server's own counts agree, its gauges return to zero and it still
    serves."""
    home = make_home(tmp_path_factory, package, "burst")
    config = ServerConfig(port=0, home=home, hosting=HostingOptions(max_queue=4))
    with running_server(config) as server:
        hosted = _hosted(server, units=2)
        address = _address(server)
        sent = [i % len(images) for i in range(BURST)]
        raws = [detect_request(images[i]) for i in sent]

        gate = threading.Event()
        holders = _hold_workers(hosted, gate)
        try:

            async def held_burst() -> list[Response]:
                tasks = [asyncio.ensure_future(_send(address, raw)) for raw in raws]
                refused = BURST - hosted.max_queue
                deadline = time.monotonic() + DEADLINE
                while sum(task.done() for task in tasks) < refused:
                    assert time.monotonic() < deadline, "the refusals did not all arrive"
                    await asyncio.sleep(0.02)
                # The admitted ones are still waiting behind the held workers.
                assert sum(task.done() for task in tasks) == refused
                assert hosted.queued == hosted.max_queue
                gate.set()
                return list(await asyncio.gather(*tasks))

            held = asyncio.run(held_burst())
        finally:
            gate.set()
        for holder in holders:
            holder.result(timeout=DEADLINE)
        counts = _classify(held, sent, expected)
        assert counts == {"200": 4, "429": BURST - 4}, counts

        async def free_burst() -> list[Response]:
            return list(await asyncio.gather(*(_send(address, raw) for raw in raws)))

        free = asyncio.run(free_burst())
        assert len(free) == BURST  # every request answered
        free_counts = _classify(free, sent, expected)
        assert free_counts["200"] + free_counts["429"] == BURST, free_counts
        assert free_counts["200"] >= 1
        print(f"free-running burst of {BURST}: {dict(free_counts)}")

        status, _, body = exchange(address, detect_request(images[1]))
        assert status == 200
        assert decoded_result(body) == expected[1]
        values = metrics(address)
        assert_model_idle(values)
        assert server_errors(values) == {}
        throttled = counts["429"] + free_counts["429"]
        assert requests_with(values, "DetectAnomalies", 429) == throttled
        assert requests_with(values, "DetectAnomalies", 200) == 4 + free_counts["200"] + 1
        assert values['openlookout_model_throttled_total{project="p",version="1"}'] == throttled
        assert hosted.queued == hosted.running == 0


def test_stop_model_under_load(tmp_path_factory, package, images, expected):
    """StopModel while DetectAnomalies calls are in flight. With the workers held, 12 requests
    are admitted and queued; StopModel answers STOPPING_HOSTING, later requests get 409
    ConflictException (the model is not hosted), and DescribeModel says STOPPING_HOSTING until
    the 12 have finished, each with the serial result; then the model is TRAINED and unloaded.
    Then, restarted, under free-running load from 16 clients, a StopModel mid-way: every request
    gets a correct 200 or a 409, none a 5xx, none hangs, and the model ends TRAINED."""
    home = make_home(tmp_path_factory, package, "stop")
    config = ServerConfig(port=0, home=home, hosting=HostingOptions(max_queue=32))
    with running_server(config) as server:
        address = _address(server)
        url = server.url
        boto = boto3_client(url)

        def status() -> str:
            return str(
                boto.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["Status"]
            )

        hosted = _hosted(server, units=2)
        admitted = 12
        sent = [i % len(images) for i in range(admitted)]
        gate = threading.Event()
        holders = _hold_workers(hosted, gate)
        try:

            async def stop_while_queued() -> tuple[list[Response], list[Response]]:
                tasks = [
                    asyncio.ensure_future(_send(address, detect_request(images[i]))) for i in sent
                ]
                deadline = time.monotonic() + DEADLINE
                while hosted.queued < admitted:
                    assert time.monotonic() < deadline, "the requests were not all admitted"
                    await asyncio.sleep(0.02)
                stop = await _send(
                    address, _request("POST", "/2020-11-20/projects/p/models/1/stop", "", b"{}")
                )
                assert stop[0] == 202
                assert json.loads(stop[2]) == {"Status": "STOPPING_HOSTING"}
                late = await asyncio.gather(
                    *(_send(address, detect_request(images[i % 4])) for i in range(8))
                )
                assert not any(task.done() for task in tasks)  # still held, still owed
                assert await asyncio.to_thread(status) == "STOPPING_HOSTING"
                gate.set()
                return list(await asyncio.gather(*tasks)), list(late)

            accepted, late = asyncio.run(stop_while_queued())
        finally:
            gate.set()
        for holder in holders:
            holder.result(timeout=DEADLINE)
        assert _classify(accepted, sent, expected) == {"200": admitted}
        assert _classify(late, [i % 4 for i in range(8)], expected) == {"409": 8}
        wait_until(lambda: status() == "TRAINED", "TRAINED")
        assert server.client.hosting.get("p", 1) is None
        assert hosted.model is None
        assert hosted.queued == hosted.running == 0
        with pytest.raises(ClientError) as caught:
            boto.detect_anomalies(
                ProjectName="p", ModelVersion="1", Body=images[0], ContentType="image/png"
            )
        assert caught.value.response["Error"]["Code"] == "ConflictException"

        # Free-running: 16 clients in a loop, StopModel once 20 answers are in.
        hosted = _hosted(server, units=2)
        total = 160
        order = [i % len(images) for i in range(total)]

        async def stop_under_load() -> list[Response]:
            responses: list[Response | None] = [None] * total
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(total):
                queue.put_nowait(i)
            answered = asyncio.Event()

            async def client() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    responses[i] = await _send(address, detect_request(images[order[i]]))
                    if sum(r is not None for r in responses) >= 20:
                        answered.set()

            clients = [asyncio.ensure_future(client()) for _ in range(16)]
            await asyncio.wait_for(answered.wait(), DEADLINE)
            stop = await _send(
                address, _request("POST", "/2020-11-20/projects/p/models/1/stop", "", b"{}")
            )
            assert stop[0] == 202
            await asyncio.gather(*clients)
            assert all(r is not None for r in responses)
            return [r for r in responses if r is not None]

        responses = asyncio.run(stop_under_load())
        counts = _classify(responses, order, expected)
        assert counts["200"] + counts["409"] == total, counts
        assert counts["200"] >= 20, counts
        print(f"StopModel under load, {total} requests: {dict(counts)}")
        wait_until(lambda: status() == "TRAINED", "TRAINED")
        assert hosted.queued == hosted.running == 0
        values = metrics(address)
        assert server_errors(values) == {}
        assert not any(series.startswith("openlookout_model_running") for series in values)
        # And it starts again cleanly.
        _hosted(server, units=1)
        assert_serves(address, images, expected)


def test_cancelled_queued_call_leaves_the_queue(tmp_path_factory, package, images, expected):
    """A call cancelled while it waits for a worker (as the server's handler is when aiohttp
    cancels it at shutdown) is counted out: the queue gauge returns to zero, it takes no queue
    place from later calls, and StopModel's drain does not wait for it. (Before the fix it stayed
    pending for ever, and StopModel never reached TRAINED.)"""
    home = make_home(tmp_path_factory, package, "cancel")
    lookout = openlookout.client(home, hosting=HostingOptions(max_queue=3))
    try:
        lookout.start_model(ProjectName="p", ModelVersion="1", MinInferenceUnits=1)
        wait_until(lambda: lookout.hosting.get("p", 1).status == "HOSTED", "HOSTED")
        hosted = lookout.hosting.get("p", 1)
        gate = threading.Event()
        holders = _hold_workers(hosted, gate)
        try:
            queued = [hosted.submit(lambda model: model.detect(images[0], "image/png"))]
            queued += [hosted.submit(lambda model: None) for _ in range(2)]
            assert hosted.queued == 3
            assert all(future.cancel() for future in queued)
            assert hosted.queued == 0
            # The three places are free again.
            kept = [
                hosted.submit(lambda model, i=i: model.detect(images[i], "image/png"))
                for i in range(3)
            ]
        finally:
            gate.set()
        for holder in holders:
            holder.result(timeout=DEADLINE)
        assert [future.result(timeout=DEADLINE) for future in kept] == expected[:3]
        lookout.stop_model(ProjectName="p", ModelVersion="1")
        wait_until(lambda: lookout.hosting.get("p", 1) is None, "the model to stop")
        assert hosted.queued == hosted.running == 0
    finally:
        lookout.close()


def test_serve_passes_limits_to_the_model(tmp_path_factory, package, images, expected):
    """`serve --limit` reaches the hosted model: the images are 64 to 120 pixels a side, so
    max_side=100 refuses exactly the one that is 120 wide, with a 400 naming the limit."""
    home = make_home(tmp_path_factory, package, "limits")
    server = ServeProcess(home, "--start", "p/1", "--limit", "max_side=100")
    try:
        wait_until(lambda: server.health()["models"][0]["Status"] == "HOSTED", "HOSTED")
        for image, answer in zip(images, expected, strict=True):
            response = exchange(server.address, detect_request(image))
            if b"\x00\x00\x00\x78" in image[16:24]:  # IHDR width 120
                body = assert_l4v_error(response, 400, "ValidationException")
                assert "max_side" in body["message"]
            else:
                assert response[0] == 200, response[2][:300]
                assert decoded_result(response[2]) == answer
    finally:
        server.stop()
    bad = subprocess.run(
        [sys.executable, "-m", "openlookout", "serve", "--port", "0", "--home", str(home),
         "--limit", "jpeg_max_scans=-1"],
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "ValidationException" in bad.stderr
