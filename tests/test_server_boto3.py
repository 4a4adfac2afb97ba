"""The HTTP endpoint driven by unmodified boto3 on loopback: the lifecycle as AWS's samples run
it, on both botocore routes (the pinned 1.40.60, and the current botocore with openlookout's
service description in AWS_DATA_PATH); every error with its status, type and resource; pagination;
concurrent clients; throttling; responsiveness while inference runs; health and metrics."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ParamValidationError

import openlookout
from l4v_support import (
    PINNED_BOTOCORE_VERSION,
    boto3_client,
    data_path_env,
    expected_result,
    pinned_botocore_env,
    run_sample,
    sample_pngs,
    write_classification_package,
    write_segmentation_package,
)
from openlookout.hosting import HostingOptions
from openlookout.server import ServerConfig, running_server


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("server-packages")
    return {
        "cls": write_classification_package(root / "cls"),
        "seg": write_segmentation_package(root / "seg"),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("server-images")
    paths = []
    for index, body in enumerate(sample_pngs(3)):
        path = root / f"part{index}.png"
        path.write_bytes(body)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory, packages):
    home = tmp_path_factory.mktemp("server-home")
    lookout = openlookout.client(home)
    for project in ("line1", "line2"):
        lookout.create_project(ProjectName=project)
    lookout.import_model(ProjectName="line1", Package=packages["cls"])
    lookout.import_model(ProjectName="line1", Package=packages["seg"])
    lookout.import_model(ProjectName="line2", Package=packages["seg"])
    config = ServerConfig(
        port=0,
        home=home,
        max_body_bytes=200_000,
        hosting=HostingOptions(max_queue=2, max_inference_units=4),
    )
    with running_server(config) as running:
        yield running


@pytest.fixture(scope="module")
def boto(server):
    return boto3_client(server.url)


def wait_while(client, project: str, version: str, status: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = client.describe_model(ProjectName=project, ModelVersion=version)
        if current["ModelDescription"]["Status"] != status:
            return current["ModelDescription"]["Status"]
        time.sleep(0.01)
    raise AssertionError(f"{project}/{version} still {status}")


@pytest.fixture
def hosted(boto):
    """line2 version 1 hosted with 2 workers for the test, stopped after it."""
    boto.start_model(
        ProjectName="line2", ModelVersion="1", MinInferenceUnits=1, MaxInferenceUnits=2
    )
    assert wait_while(boto, "line2", "1", "STARTING_HOSTING") == "HOSTED"
    yield "line2", "1"
    boto.stop_model(ProjectName="line2", ModelVersion="1")
    assert wait_while(boto, "line2", "1", "STOPPING_HOSTING") == "TRAINED"


def error(call, **kwargs) -> dict:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response


# ---- the two botocore routes, as AWS's samples use the API --------------------------------


def check_sample_summary(summary: dict, packages, images) -> None:
    assert summary["not_hosted"] == {
        "Code": "ConflictException",
        "HTTPStatusCode": 409,
        "ResourceType": "MODEL",
    }
    assert summary["start"][0] == "STARTING_HOSTING"
    assert summary["start"][-1] == "HOSTED"
    assert summary["hosted"] == ["line1/2"]
    for path, result in zip(images, summary["results"], strict=True):
        expected = expected_result(packages["seg"], path.read_bytes())
        import hashlib

        expected["AnomalyMask"] = hashlib.sha256(expected["AnomalyMask"]).hexdigest()
        assert result == expected
    assert summary["errors"] == {
        "unknown_project": {
            "Code": "ResourceNotFoundException",
            "HTTPStatusCode": 404,
            "ResourceType": "PROJECT",
        },
        "unknown_version": {
            "Code": "ResourceNotFoundException",
            "HTTPStatusCode": 404,
            "ResourceType": "MODEL",
        },
        "bad_name": {"Code": "ValidationException", "HTTPStatusCode": 400, "ResourceType": None},
        "delete_hosted": {
            "Code": "ConflictException",
            "HTTPStatusCode": 409,
            "ResourceType": "MODEL",
        },
        "bad_content_type": {
            "Code": "ValidationException",
            "HTTPStatusCode": 400,
            "ResourceType": None,
        },
    }
    assert summary["stop"][0] == "STOPPING_HOSTING"
    assert summary["stop"][-1] == "TRAINED"
    assert summary["projects"] == ["line1", "line2"]
    assert summary["description"] == "TRAINED"


def test_sample_script_on_pinned_botocore(server, packages, images):
    done = run_sample(pinned_botocore_env(), server.url, "line1", "2", *map(str, images))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["botocore"] == PINNED_BOTOCORE_VERSION
    check_sample_summary(summary, packages, images)


def test_sample_script_on_current_botocore_with_aws_data_path(server, packages, images):
    done = run_sample(data_path_env(), server.url, "line1", "2", *map(str, images))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["botocore"] != PINNED_BOTOCORE_VERSION
    check_sample_summary(summary, packages, images)


# ---- operations -----------------------------------------------------------------------------


def test_projects(boto):
    created = boto.create_project(ProjectName="scratch-pad")["ProjectMetadata"]
    assert created["ProjectName"] == "scratch-pad"
    assert created["ProjectArn"].endswith(":project/scratch-pad")
    assert created["CreationTimestamp"].tzinfo is not None  # epoch seconds parsed by botocore
    described = boto.describe_project(ProjectName="scratch-pad")["ProjectDescription"]
    assert described["CreationTimestamp"] == created["CreationTimestamp"]
    assert described["Datasets"] == []
    assert boto.delete_project(ProjectName="scratch-pad")["ProjectArn"] == created["ProjectArn"]
    assert "scratch-pad" not in [p["ProjectName"] for p in boto.list_projects()["Projects"]]


def test_models_and_latest(boto):
    models = boto.list_models(ProjectName="line1")["Models"]
    assert [(m["ModelVersion"], m["Status"]) for m in models] == [
        ("2", "TRAINED"),
        ("1", "TRAINED"),
    ]
    latest = boto.describe_model(ProjectName="line1", ModelVersion="latest")["ModelDescription"]
    assert latest["ModelVersion"] == "2"
    assert latest["ModelArn"].endswith(":model/line1/2")


def test_detection_matches_the_native_model(boto, hosted, packages):
    project, version = hosted
    described = boto.describe_model(ProjectName=project, ModelVersion=version)["ModelDescription"]
    assert (described["MinInferenceUnits"], described["MaxInferenceUnits"]) == (1, 2)
    for body in sample_pngs(3):
        answer = boto.detect_anomalies(
            ProjectName=project, ModelVersion=version, Body=body, ContentType="image/png"
        )
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert answer["DetectAnomalyResult"] == expected_result(packages["seg"], body)
    # A file object works as boto3's Body too.
    import io

    answer = boto.detect_anomalies(
        ProjectName=project, ModelVersion="latest", Body=io.BytesIO(body), ContentType="image/png"
    )
    assert answer["DetectAnomalyResult"]["AnomalyMask"][:8] == b"\x89PNG\r\n\x1a\n"


def test_every_error(boto, hosted, server):
    project, version = hosted
    png = sample_pngs(1)[0]

    def expect(response: dict, code: str, status: int, resource: str | None = None) -> None:
        assert response["Error"]["Code"] == code
        assert response["Error"]["Message"]
        assert response["ResponseMetadata"]["HTTPStatusCode"] == status
        assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == code
        assert response.get("ResourceType") == resource

    # 400: what botocore lets through (it checks only minimum lengths) the server refuses.
    expect(error(boto.describe_project, ProjectName="x" * 256), "ValidationException", 400)
    expect(error(boto.describe_project, ProjectName="bad name"), "ValidationException", 400)
    expect(error(boto.describe_project, ProjectName="a/b"), "ValidationException", 400)
    expect(
        error(boto.describe_model, ProjectName=project, ModelVersion="0"),
        "ValidationException",
        400,
    )
    expect(
        error(boto.delete_model, ProjectName=project, ModelVersion="latest"),
        "ValidationException",
        400,
    )
    expect(error(boto.list_projects, MaxResults=101), "ValidationException", 400)
    expect(error(boto.list_projects, NextToken="bm9wZQ=="), "ValidationException", 400)
    expect(
        error(
            boto.start_model,
            ProjectName="line1",
            ModelVersion="1",
            MinInferenceUnits=3,
            MaxInferenceUnits=2,
        ),
        "ValidationException",
        400,
    )
    for body, content_type in (
        (png, "text/plain"),
        (b"not an image", "image/png"),
        (png, "image/jpeg"),
    ):
        expect(
            error(
                boto.detect_anomalies,
                ProjectName=project,
                ModelVersion=version,
                Body=body,
                ContentType=content_type,
            ),
            "ValidationException",
            400,
        )
    # 404 with the resource that is missing.
    missing = error(boto.list_models, ProjectName="nope")
    expect(missing, "ResourceNotFoundException", 404, "PROJECT")
    assert missing["ResourceId"] == "nope"
    missing = error(boto.start_model, ProjectName=project, ModelVersion="9", MinInferenceUnits=1)
    expect(missing, "ResourceNotFoundException", 404, "MODEL")
    assert missing["ResourceId"] == f"{project}/9"
    # 409: state conflicts.
    expect(
        error(
            boto.detect_anomalies,
            ProjectName="line1",
            ModelVersion="1",
            Body=png,
            ContentType="image/png",
        ),
        "ConflictException",
        409,
        "MODEL",
    )
    expect(
        error(boto.delete_model, ProjectName=project, ModelVersion=version),
        "ConflictException",
        409,
        "MODEL",
    )
    expect(error(boto.delete_project, ProjectName=project), "ConflictException", 409, "PROJECT")
    expect(error(boto.create_project, ProjectName=project), "ConflictException", 409, "PROJECT")
    expect(
        error(boto.stop_model, ProjectName="line1", ModelVersion="1"),
        "ConflictException",
        409,
        "MODEL",
    )
    # 402: more inference units than the server allows.
    quota = error(boto.start_model, ProjectName="line1", ModelVersion="1", MinInferenceUnits=9)
    expect(quota, "ServiceQuotaExceededException", 402, "MODEL")
    assert (quota["QuotaCode"], quota["ServiceCode"]) == ("inference-units", "lookoutvision")
    # botocore's own check (minimum length) still happens client-side.
    with pytest.raises(ParamValidationError):
        boto.describe_project(ProjectName="")


def test_internal_errors_are_500(boto, hosted, server, monkeypatch):
    project, version = hosted
    model = server.client.hosting.get(project, int(version)).model

    def broken(body, content_type):
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(model, "detect", broken)
    response = error(
        boto.detect_anomalies,
        ProjectName=project,
        ModelVersion=version,
        Body=sample_pngs(1)[0],
        ContentType="image/png",
    )
    assert response["Error"]["Code"] == "InternalServerException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_pagination_with_boto3_paginators(boto, server):
    names = [f"page-{i}" for i in range(5)]
    for name in names:
        boto.create_project(ProjectName=name)
    for _ in range(3):
        server.client.registry.import_model(
            "page-0", server.client.registry.resolve("line2", "1").package
        )
    try:
        first = boto.list_projects(MaxResults=2)
        assert len(first["Projects"]) == 2
        assert first["NextToken"]
        everything = (
            boto.get_paginator("list_projects")
            .paginate(PaginationConfig={"PageSize": 2})
            .build_full_result()
        )
        assert [p["ProjectName"] for p in everything["Projects"]] == sorted(
            ["line1", "line2", *names]
        )
        pages = list(
            boto.get_paginator("list_models").paginate(
                ProjectName="page-0", PaginationConfig={"PageSize": 2}
            )
        )
        assert [[m["ModelVersion"] for m in page["Models"]] for page in pages] == [
            ["3", "2"],
            ["1"],
        ]
        truncated = (
            boto.get_paginator("list_models")
            .paginate(ProjectName="page-0", PaginationConfig={"MaxItems": 1, "PageSize": 1})
            .build_full_result()
        )
        assert [m["ModelVersion"] for m in truncated["Models"]] == ["3"]
        assert truncated["NextToken"]
    finally:
        for version in ("1", "2", "3"):
            boto.delete_model(ProjectName="page-0", ModelVersion=version)
        for name in names:
            boto.delete_project(ProjectName=name)


def test_client_token_replays_the_first_answer(boto):
    first = boto.create_project(ProjectName="idem", ClientToken="retry-1")
    again = boto.create_project(ProjectName="idem", ClientToken="retry-1")
    assert again["ProjectMetadata"] == first["ProjectMetadata"]
    response = error(boto.create_project, ProjectName="idem2", ClientToken="retry-1")
    assert response["Error"]["Code"] == "ConflictException"
    boto.delete_project(ProjectName="idem")


def test_concurrent_clients(server, hosted, packages):
    project, version = hosted
    bodies = sample_pngs(4)
    expected = [expected_result(packages["seg"], body) for body in bodies]
    clients = [boto3_client(server.url, retries=5) for _ in range(6)]

    def session(index: int) -> list[bool]:
        client = clients[index]
        matches = []
        for round_ in range(4):
            body_index = (index + round_) % len(bodies)
            answer = client.detect_anomalies(
                ProjectName=project,
                ModelVersion=version,
                Body=bodies[body_index],
                ContentType="image/png",
            )
            matches.append(answer["DetectAnomalyResult"] == expected[body_index])
        return matches

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(session, range(6)))
    assert all(all(matches) for matches in outcomes)


def test_throttling_when_the_queue_is_full(server, hosted, boto):
    project, version = hosted
    model = server.client.hosting.get(project, int(version))
    release = threading.Event()
    # 2 workers + a queue of 2: four blocking calls fill the model.
    blockers = [model.submit(lambda m: release.wait(10)) for _ in range(4)]
    try:
        started = time.perf_counter()
        # The server stays responsive while every worker is busy.
        described = boto.describe_model(ProjectName=project, ModelVersion=version)
        assert described["ModelDescription"]["Status"] == "HOSTED"
        assert time.perf_counter() - started < 2
        response = error(
            boto.detect_anomalies,
            ProjectName=project,
            ModelVersion=version,
            Body=sample_pngs(1)[0],
            ContentType="image/png",
        )
        assert response["Error"]["Code"] == "ThrottlingException"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert int(response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1
        assert response["QuotaCode"] == "model-queue"
        metrics = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
        labels = f'project="{project}",version="{version}"'
        assert f"openlookout_model_queue_depth{{{labels}}} 2" in metrics
        assert f"openlookout_model_running{{{labels}}} 2" in metrics
        # botocore retries a 429: once the queue drains, the retried call succeeds.
        threading.Timer(0.3, release.set).start()
        patient = boto3_client(server.url, retries=6)
        answer = patient.detect_anomalies(
            ProjectName=project,
            ModelVersion=version,
            Body=sample_pngs(1)[0],
            ContentType="image/png",
        )
        assert "IsAnomalous" in answer["DetectAnomalyResult"]
    finally:
        release.set()
        for blocker in blockers:
            blocker.result(timeout=10)


def test_health_and_metrics(server, hosted):
    health = json.loads(urllib.request.urlopen(server.url + "/health", timeout=10).read())
    assert health["status"] == "ok"
    assert {"ProjectName": "line2", "ModelVersion": "1", "Status": "HOSTED"} in health["models"]
    response = urllib.request.urlopen(server.url + "/metrics", timeout=10)
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.read().decode()
    assert 'openlookout_model_status{project="line2",version="1",status="HOSTED"} 1' in text
    assert 'openlookout_model_workers{project="line2",version="1"} 2' in text
    assert "# TYPE openlookout_request_duration_seconds histogram" in text
    assert 'openlookout_requests_total{operation="DescribeModel",status="200"}' in text
    assert (
        'openlookout_request_duration_seconds_bucket{operation="DescribeModel",le="+Inf"}' in text
    )


def test_unknown_paths(server):
    for method, path, status, error_type in (
        ("GET", "/", 404, "UnknownOperationException"),
        ("GET", "/2020-11-20/nothing", 404, "UnknownOperationException"),
        ("PUT", "/2020-11-20/projects", 405, "MethodNotAllowedException"),
    ):
        request = urllib.request.Request(server.url + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == status
        assert caught.value.headers["x-amzn-ErrorType"] == error_type
        assert json.loads(caught.value.read())["message"]


def test_mask_is_base64_on_the_wire(server, hosted):
    project, version = hosted
    request = urllib.request.Request(
        f"{server.url}/2020-11-20/projects/{project}/models/{version}/detect",
        data=sample_pngs(1)[0],
        headers={"Content-Type": "image/png"},
        method="POST",
    )
    answer = json.loads(urllib.request.urlopen(request, timeout=10).read())["DetectAnomalyResult"]
    assert base64.b64decode(answer["AnomalyMask"])[:4] == b"\x89PNG"
    assert answer["Source"] == {"Type": "direct"}
