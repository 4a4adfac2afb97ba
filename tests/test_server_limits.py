"""The body-size limit is enforced before the body is read whole (from Content-Length, while
streaming a chunked body, and on Expect: 100-continue), always as a 400 ValidationException
botocore understands; path parameters are URL-decoded before validation; and `openlookout serve`
runs as a command and stops cleanly on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import openlookout
from l4v_support import (
    boto3_client,
    hosted_classifier_server,
    sample_pngs,
    write_classification_package,
)
from openlookout.cli import main as cli_main

LIMIT = 50_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with hosted_classifier_server(tmp_path_factory, "limits", max_body_bytes=LIMIT) as running:
        yield running


def address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


DETECT = "/2020-11-20/projects/p/models/1/detect"


def test_oversized_body_through_boto3(server):
    client = boto3_client(server.url)
    with pytest.raises(ClientError) as caught:
        client.detect_anomalies(
            ProjectName="p",
            ModelVersion="1",
            Body=b"\x89PNG" + bytes(LIMIT),
            ContentType="image/png",
        )
    response = caught.value.response
    assert response["Error"]["Code"] == "ValidationException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert str(LIMIT) in response["Error"]["Message"]
    # A body at the limit is read and judged on its content.
    small = sample_pngs(1)[0]
    assert len(small) < LIMIT
    assert client.detect_anomalies(
        ProjectName="p", ModelVersion="1", Body=small, ContentType="image/png"
    )


def test_content_length_is_refused_before_any_body_byte(server):
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(
            f"POST {DETECT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {10**12}\r\n\r\n".encode()
        )
        started = time.perf_counter()
        status, headers, body = read_response(sock)  # answered with no body byte sent
    assert time.perf_counter() - started < 5
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationException"
    assert "limit" in json.loads(body)["message"]


def test_chunked_body_is_capped_while_streaming(server):
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(
            f"POST {DETECT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"\x00" * 16_384
        for _ in range(LIMIT // len(chunk) + 2):
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        status, headers, _ = read_response(sock)
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationException"


def test_expect_continue_with_an_oversized_body(server):
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(
            f"POST {DETECT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {LIMIT + 1}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        status, headers, _ = read_response(sock)
    assert status == 400  # not "100 Continue": the client never has to send the body
    assert headers["x-amzn-errortype"] == "ValidationException"


def test_json_bodies_are_small(server):
    connection = http.client.HTTPConnection(*address(server), timeout=10)
    connection.request(
        "POST", "/2020-11-20/projects", body=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    response = connection.getresponse()
    assert response.status == 400
    response.read()
    for body in (b"[1]", b"{not json", b"{}"):
        connection.request("POST", "/2020-11-20/projects", body=body)
        response = connection.getresponse()
        assert (response.status, response.getheader("x-amzn-ErrorType")) == (
            400,
            "ValidationException",
        )
        response.read()
    connection.close()


def test_path_parameters_are_url_decoded(server):
    connection = http.client.HTTPConnection(*address(server), timeout=10)
    # %70 is "p": the decoded name is valid and found.
    connection.request("GET", "/2020-11-20/projects/%70/models/%31")
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["ModelDescription"]["ModelVersion"] == "1"
    # An encoded slash stays inside the parameter (and fails the name pattern).
    connection.request("GET", "/2020-11-20/projects/a%2Fb")
    response = connection.getresponse()
    assert (response.status, response.getheader("x-amzn-ErrorType")) == (400, "ValidationException")
    response.read()
    connection.close()


def test_serve_command(tmp_path, capsys):
    home = tmp_path / "home"
    setup = openlookout.client(home)
    setup.create_project(ProjectName="from-cli")
    setup.import_model(
        ProjectName="from-cli", Package=write_classification_package(tmp_path / "pkg")
    )
    with subprocess.Popen(
        [sys.executable, "-m", "openlookout", "serve", "--port", "0", "--home", str(home),
         "--max-queue", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("openlookout serving http://127.0.0.1:"), line
            url = line.split()[2]
            client = openlookout.client(endpoint_url=url)
            assert [p["ProjectName"] for p in client.list_projects()["Projects"]] == ["from-cli"]
            with pytest.raises(openlookout.ResourceNotFoundException) as caught:
                client.describe_project(ProjectName="missing")
            assert caught.value.resource_type == "PROJECT"
            # `model start|stop` act on the server's hosting.
            hosting = ["--project", "from-cli", "--model-version", "1", "--endpoint", url]
            assert (
                cli_main(["model", "start", *hosting, "--max-inference-units", "2", "--wait"]) == 0
            )
            assert capsys.readouterr().out.strip() == "from-cli version 1: HOSTED"
            assert cli_main(["model", "describe", *hosting[:-2], "--home", str(home)]) == 0
            assert "Status             TRAINED" in capsys.readouterr().out  # not this process's
            assert cli_main(["model", "list", "--project", "from-cli", "--endpoint", url]) == 0
            assert "HOSTED" in capsys.readouterr().out
            assert cli_main(["model", "stop", *hosting, "--wait"]) == 0
            assert capsys.readouterr().out.strip() == "from-cli version 1: TRAINED"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                _, errors = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, errors = process.communicate()
    assert process.returncode == 0, errors
    assert "stopping: finishing requests in flight" in errors


def test_serve_rejects_bad_options(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "openlookout", "serve", "--port", "0", "--home", str(tmp_path),
         "--auth-key", "no-colon"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "ACCESS_KEY_ID:SECRET_ACCESS_KEY" in done.stderr


def test_aws_data_path_command():
    done = subprocess.run(
        [sys.executable, "-m", "openlookout", "aws-data-path"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    path = Path(done.stdout.strip())
    assert (path / "lookoutvision" / "2020-11-20" / "service-2.json").is_file()
    assert os.fspath(path) == openlookout.service_model.data_path()
