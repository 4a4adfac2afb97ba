"""SigV4: by default any Authorization (or none) is accepted; with configured keys the server
verifies botocore's signatures (both botocore routes) and answers AccessDeniedException (403)
to a missing, stale, foreign or wrong signature, before reading an unsigned body."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import subprocess
import sys

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import openlookout
from l4v_support import (
    boto3_client,
    hosted_classifier_server,
    pinned_botocore_env,
    sample_pngs,
)
from openlookout.server import sigv4

KEYS = {"AKIDOPENLOOKOUT": "correct-horse-battery"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with hosted_classifier_server(tmp_path_factory, "auth", auth_keys=KEYS) as running:
        yield running


def signed_client(server, secret: str = KEYS["AKIDOPENLOOKOUT"], key: str = "AKIDOPENLOOKOUT"):
    return boto3_client(server.url, aws_access_key_id=key, aws_secret_access_key=secret)


def denied(call, **kwargs) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    assert response["Error"]["Code"] == "AccessDeniedException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return response["Error"]["Message"]


def test_signed_requests_pass(server):
    client = signed_client(server)
    assert [p["ProjectName"] for p in client.list_projects(MaxResults=5)["Projects"]] == ["p"]
    answer = client.detect_anomalies(
        ProjectName="p", ModelVersion="latest", Body=sample_pngs(1)[0], ContentType="image/png"
    )
    assert "Confidence" in answer["DetectAnomalyResult"]
    created = client.create_project(ProjectName="signed-one")
    assert created["ProjectMetadata"]["ProjectName"] == "signed-one"
    client.delete_project(ProjectName="signed-one")


def test_wrong_unknown_and_missing_signatures(server):
    assert "does not match" in denied(signed_client(server, secret="wrong").list_projects)
    assert "unknown access key" in denied(signed_client(server, key="AKIDOTHER").list_projects)
    from botocore import UNSIGNED

    unsigned = boto3_client(server.url, signature_version=UNSIGNED)
    assert "no Authorization" in denied(unsigned.list_projects)


def test_unsigned_upload_is_refused_unread_and_tampering_is_caught(server):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/2020-11-20/projects/p/models/1/detect")
    connection.putheader("Content-Type", "image/png")
    connection.putheader("Content-Length", str(5_000_000))
    connection.endheaders()  # no body sent: the answer must not wait for it
    response = connection.getresponse()
    assert (response.status, response.getheader("x-amzn-ErrorType")) == (
        403,
        "AccessDeniedException",
    )
    connection.close()

    body = sample_pngs(1)[0]
    path = "/2020-11-20/projects/p/models/1/detect"
    headers = {"Host": f"{host}:{port}", "Content-Type": "image/png"}
    headers.update(
        sigv4.sign("POST", path, "", headers, body, access_key="AKIDOPENLOOKOUT",
                   secret_key=KEYS["AKIDOPENLOOKOUT"], region="eu-west-1")
    )  # fmt: skip
    for payload, status in ((body[:-1] + b"\x00", 403), (body, 200)):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("POST", path, body=payload, headers=headers)
        response = connection.getresponse()
        assert response.status == status, response.read()
        response.read()
        connection.close()


def test_stale_signature(server):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    headers = {"Host": f"{host}:{port}"}
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=20)
    headers.update(
        sigv4.sign("GET", "/2020-11-20/projects", "", headers, b"", access_key="AKIDOPENLOOKOUT",
                   secret_key=KEYS["AKIDOPENLOOKOUT"], region="us-east-1", now=old)
    )  # fmt: skip
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/2020-11-20/projects", headers=headers)
    response = connection.getresponse()
    assert response.status == 403
    assert "away from the server's clock" in json.loads(response.read())["message"]
    connection.close()


def test_remote_client_signs(server):
    signed = openlookout.client(
        endpoint_url=server.url,
        aws_access_key_id="AKIDOPENLOOKOUT",
        aws_secret_access_key=KEYS["AKIDOPENLOOKOUT"],
    )
    assert (
        signed.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["Status"]
        == "HOSTED"
    )
    # Query strings (MaxResults, a NextToken with "/", "+" and "=") are signed as AWS does.
    for name in ("q-a", "q-b", "q-c"):
        signed.create_project(ProjectName=name)
    pages = signed.get_paginator("list_projects").paginate(PaginationConfig={"PageSize": 1})
    assert [p["ProjectName"] for page in pages for p in page["Projects"]] == [
        "p",
        "q-a",
        "q-b",
        "q-c",
    ]
    for name in ("q-a", "q-b", "q-c"):
        signed.delete_project(ProjectName=name)
    with pytest.raises(openlookout.AccessDeniedException):
        openlookout.client(endpoint_url=server.url).list_projects()


def test_health_and_metrics_need_no_signature(server):
    import urllib.request

    assert urllib.request.urlopen(server.url + "/health", timeout=10).status == 200
    assert urllib.request.urlopen(server.url + "/metrics", timeout=10).status == 200


def test_pinned_botocore_signatures_verify(server):
    script = (
        "import sys, boto3\n"
        "c = boto3.client('lookoutvision', endpoint_url=sys.argv[1], region_name='eu-west-1',\n"
        "                 aws_access_key_id='AKIDOPENLOOKOUT', aws_secret_access_key=sys.argv[2])\n"
        "print(c.list_models(ProjectName='p', MaxResults=1)['Models'][0]['Status'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, server.url, KEYS["AKIDOPENLOOKOUT"]],
        env=pinned_botocore_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "HOSTED"


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        (
            "GET",
            "http://127.0.0.1:8080/2020-11-20/projects?maxResults=5&nextToken=YS8rYg%3D%3D",
            b"",
        ),
        ("GET", "http://localhost/2020-11-20/projects/a%20b%2Fc/models/latest", b""),
        ("POST", "http://127.0.0.1:9/2020-11-20/projects/p/models/1/detect", b"\x89PNG..."),
        ("DELETE", "http://127.0.0.1:9/2020-11-20/projects/./x/../p", b""),
    ],
)
def test_verification_matches_botocore_signing(method, url, body):
    """Our canonical request is botocore's: its signatures verify, and altering one fails."""
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "image/png"})
    SigV4Auth(Credentials("AKIDX", "sekrit"), "lookoutvision", "us-west-2").add_auth(request)
    prepared = request.prepare()
    split = prepared.url.split("?", 1)
    raw_path = split[0].split("/", 3)[3]
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    headers["host"] = url.split("/")[2]
    raw_query = split[1] if len(split) > 1 else ""
    digest = hashlib.sha256(body).hexdigest()
    assert (
        sigv4.verify(method, "/" + raw_path, raw_query, headers, digest, {"AKIDX": "sekrit"})
        == "AKIDX"
    )
    with pytest.raises(openlookout.AccessDeniedException):
        sigv4.verify("PATCH", "/" + raw_path, raw_query, headers, digest, {"AKIDX": "sekrit"})
