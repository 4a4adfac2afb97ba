"""``openlookout.client()``, the in-process Lookout for Vision client: boto3's method names,
response shapes and exceptions, the hosting lifecycle, pagination and idempotency tokens."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest

import openlookout
from l4v_support import (
    expected_result,
    sample_pngs,
    write_classification_package,
    write_segmentation_package,
)
from openlookout.client import Client
from openlookout.hosting import HostingOptions


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("client-packages")
    return {
        "cls": write_classification_package(root / "cls"),
        "seg": write_segmentation_package(root / "seg"),
    }


@pytest.fixture
def lookout(tmp_path, packages):
    client = openlookout.client(tmp_path / "home", hosting=HostingOptions(max_inference_units=4))
    client.create_project(ProjectName="parts")
    client.import_model(ProjectName="parts", Package=packages["cls"])
    client.import_model(ProjectName="parts", Package=packages["seg"], Description="seg")
    yield client
    client.close()


def wait_while(client, status: str, version: str = "1", project: str = "parts") -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        description = client.describe_model(ProjectName=project, ModelVersion=version)
        if description["ModelDescription"]["Status"] != status:
            return description["ModelDescription"]
        time.sleep(0.01)
    raise AssertionError(f"model still {status} after 30 s")


def host(client, version: str = "1", **units) -> dict:
    started = client.start_model(
        ProjectName="parts", ModelVersion=version, MinInferenceUnits=units.pop("min", 1), **units
    )
    assert started["Status"] in ("STARTING_HOSTING", "HOSTED")
    assert started["ResponseMetadata"]["HTTPStatusCode"] == 202
    return wait_while(client, "STARTING_HOSTING", version)


def test_lifecycle_and_detection(lookout, packages):
    bodies = sample_pngs(2)
    before = lookout.describe_model(ProjectName="parts", ModelVersion="2")["ModelDescription"]
    assert before["Status"] == "TRAINED"
    assert "MinInferenceUnits" not in before
    with pytest.raises(lookout.exceptions.ConflictException) as not_hosted:
        lookout.detect_anomalies(
            ProjectName="parts", ModelVersion="2", Body=bodies[0], ContentType="image/png"
        )
    assert not_hosted.value.response["ResourceType"] == "MODEL"

    described = host(lookout, "2", min=1, MaxInferenceUnits=3)
    assert described["Status"] == "HOSTED"
    assert (described["MinInferenceUnits"], described["MaxInferenceUnits"]) == (1, 3)
    assert described["Description"] == "seg"
    assert lookout.hosting.get("parts", 2).workers == 3  # units are inference workers
    for body in bodies:
        answer = lookout.detect_anomalies(
            ProjectName="parts", ModelVersion="latest", Body=body, ContentType="image/png"
        )
        assert answer["DetectAnomalyResult"] == expected_result(packages["seg"], body)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200

    stopped = lookout.stop_model(ProjectName="parts", ModelVersion="2")
    assert stopped["Status"] == "STOPPING_HOSTING"
    assert wait_while(lookout, "STOPPING_HOSTING", "2")["Status"] == "TRAINED"


def test_response_shapes(lookout):
    project = lookout.describe_project(ProjectName="parts")["ProjectDescription"]
    assert set(project) == {"ProjectArn", "ProjectName", "CreationTimestamp", "Datasets"}
    assert isinstance(project["CreationTimestamp"], dt.datetime)
    assert project["CreationTimestamp"].tzinfo is not None
    models = lookout.list_models(ProjectName="parts")["Models"]
    assert [m["ModelVersion"] for m in models] == ["2", "1"]
    assert set(models[1]) == {
        "CreationTimestamp",
        "ModelVersion",
        "ModelArn",
        "Status",
        "StatusMessage",
    }
    metadata = lookout.list_projects()["ResponseMetadata"]
    assert set(metadata) == {"RequestId", "HTTPStatusCode", "HTTPHeaders", "RetryAttempts"}


def test_errors_are_boto3_shaped(lookout):
    exceptions = lookout.exceptions
    assert exceptions.ValidationException is openlookout.ValidationException
    assert issubclass(exceptions.ConflictException, exceptions.ClientError)
    assert exceptions.from_code("ThrottlingException") is openlookout.ThrottlingException
    with pytest.raises(exceptions.ResourceNotFoundException) as e:
        lookout.describe_model(ProjectName="nope", ModelVersion="1")
    response = e.value.response
    assert response["Error"] == {"Code": "ResourceNotFoundException", "Message": e.value.message}
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert (response["ResourceId"], response["ResourceType"]) == ("nope", "PROJECT")
    assert e.value.operation_name == "DescribeModel"
    with pytest.raises(exceptions.ResourceNotFoundException) as e:
        lookout.describe_model(ProjectName="parts", ModelVersion="7")
    assert (e.value.response["ResourceId"], e.value.response["ResourceType"]) == (
        "parts/7",
        "MODEL",
    )
    with pytest.raises(exceptions.ValidationException):
        lookout.describe_model(ProjectName="parts", ModelVersion="0")
    with pytest.raises(exceptions.ValidationException):
        lookout.delete_model(ProjectName="parts", ModelVersion="latest")
    with pytest.raises(exceptions.ValidationException):
        lookout.list_models(ProjectName="parts", MaxResults=101)
    with pytest.raises(exceptions.ConflictException):
        lookout.create_project(ProjectName="parts")
    with pytest.raises(exceptions.ConflictException) as e:
        lookout.delete_project(ProjectName="parts")
    assert e.value.response["ResourceType"] == "PROJECT"
    with pytest.raises(exceptions.ConflictException):
        lookout.stop_model(ProjectName="parts", ModelVersion="1")  # not hosted
    with pytest.raises(exceptions.ValidationException, match="less than"):
        lookout.start_model(
            ProjectName="parts", ModelVersion="1", MinInferenceUnits=2, MaxInferenceUnits=1
        )
    with pytest.raises(exceptions.ServiceQuotaExceededException) as quota:
        lookout.start_model(ProjectName="parts", ModelVersion="1", MinInferenceUnits=5)
    assert quota.value.response["QuotaCode"] == "inference-units"
    with pytest.raises(AttributeError, match="not supported by openlookout"):
        lookout.create_model  # noqa: B018


def test_hosted_models_cannot_be_deleted_and_bad_input_is_validation(lookout):
    host(lookout, "1")
    with pytest.raises(lookout.exceptions.ConflictException) as e:
        lookout.delete_model(ProjectName="parts", ModelVersion="1")
    assert e.value.response["ResourceId"] == "parts/1"
    with pytest.raises(lookout.exceptions.ValidationException):
        lookout.detect_anomalies(
            ProjectName="parts", ModelVersion="1", Body=b"GIF89a", ContentType="image/gif"
        )
    with pytest.raises(lookout.exceptions.ValidationException):
        lookout.detect_anomalies(
            ProjectName="parts", ModelVersion="1", Body=b"", ContentType="image/png"
        )
    # Starting again with the same units is a no-op; with other units it is a conflict.
    assert (
        lookout.start_model(ProjectName="parts", ModelVersion="1", MinInferenceUnits=1)["Status"]
        == "HOSTED"
    )
    with pytest.raises(lookout.exceptions.ConflictException, match="stop it first"):
        lookout.start_model(ProjectName="parts", ModelVersion="1", MinInferenceUnits=2)


def test_pagination(tmp_path, packages):
    client = openlookout.client(tmp_path / "many")
    names = [f"p{i:02d}" for i in range(7)]
    for name in names:
        client.create_project(ProjectName=name)
    for _ in range(5):
        client.registry.import_model("p00", packages["cls"], check=False)

    first = client.list_projects(MaxResults=3)
    assert [p["ProjectName"] for p in first["Projects"]] == names[:3]
    second = client.list_projects(MaxResults=3, NextToken=first["NextToken"])
    assert [p["ProjectName"] for p in second["Projects"]] == names[3:6]
    last = client.list_projects(NextToken=second["NextToken"])
    assert [p["ProjectName"] for p in last["Projects"]] == names[6:]
    assert "NextToken" not in last

    paginator = client.get_paginator("list_models")
    pages = list(paginator.paginate(ProjectName="p00", PaginationConfig={"PageSize": 2}))
    assert [[m["ModelVersion"] for m in page["Models"]] for page in pages] == [
        ["5", "4"],
        ["3", "2"],
        ["1"],
    ]
    partial = paginator.paginate(
        ProjectName="p00", PaginationConfig={"MaxItems": 3, "PageSize": 2}
    ).build_full_result()
    assert [m["ModelVersion"] for m in partial["Models"]] == ["5", "4", "3"]
    rest = paginator.paginate(
        ProjectName="p00", PaginationConfig={"StartingToken": partial["NextToken"]}
    ).build_full_result()
    assert [m["ModelVersion"] for m in rest["Models"]] == ["2", "1"]
    assert client.can_paginate("list_projects")
    assert not client.can_paginate("describe_model")

    for token in ("not base64!", "bW9kZWw6eA==", first["NextToken"] + "A", "x" * 2049):
        with pytest.raises(client.exceptions.ValidationException, match="pagination token"):
            client.list_models(ProjectName="p00", NextToken=token)
    # A projects token is no models token.
    with pytest.raises(client.exceptions.ValidationException):
        client.list_models(ProjectName="p00", NextToken=first["NextToken"])


def test_client_tokens_make_calls_idempotent(lookout):
    first = lookout.create_project(ProjectName="again", ClientToken="token-1")
    retried = lookout.create_project(ProjectName="again", ClientToken="token-1")
    assert retried["ProjectMetadata"] == first["ProjectMetadata"]
    with pytest.raises(lookout.exceptions.ConflictException, match="other parameters"):
        lookout.create_project(ProjectName="other", ClientToken="token-1")
    with pytest.raises(lookout.exceptions.ConflictException, match="already exists"):
        lookout.create_project(ProjectName="again", ClientToken="token-2")
    with pytest.raises(lookout.exceptions.ValidationException):
        lookout.create_project(ProjectName="x", ClientToken="bad token")


def test_stop_waits_for_calls_in_flight(lookout):
    host(lookout, "1")
    hosted = lookout.hosting.get("parts", 1)
    release = threading.Event()
    running = hosted.submit(lambda model: release.wait(10))
    assert lookout.stop_model(ProjectName="parts", ModelVersion="1")["Status"] == "STOPPING_HOSTING"
    time.sleep(0.1)
    status = lookout.describe_model(ProjectName="parts", ModelVersion="1")["ModelDescription"]
    assert status["Status"] == "STOPPING_HOSTING"  # the call in flight holds the model
    with pytest.raises(lookout.exceptions.ConflictException, match="stopping"):
        lookout.detect_anomalies(
            ProjectName="parts", ModelVersion="1", Body=sample_pngs(1)[0], ContentType="image/png"
        )
    release.set()
    assert running.result(timeout=10) is True
    assert wait_while(lookout, "STOPPING_HOSTING")["Status"] == "TRAINED"


def test_hosting_failed_and_restart(tmp_path, packages):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((packages["cls"] / "manifest.json").read_text())
    (broken / "model.onnx").write_bytes(b"garbage")
    home = tmp_path / "home"
    client = Client(home)
    client.create_project(ProjectName="p")
    client.registry.import_model("p", broken, check=False)
    client.registry.import_model("p", packages["cls"])
    client.start_model(ProjectName="p", ModelVersion="1", MinInferenceUnits=1)
    failed = wait_while(client, "STARTING_HOSTING", "1", "p")
    assert failed["Status"] == "HOSTING_FAILED"
    assert failed["StatusMessage"].startswith("Hosting failed:")
    # A failed model holds nothing: it can be stopped (back to TRAINED) or deleted.
    assert client.stop_model(ProjectName="p", ModelVersion="1")["Status"] == "STOPPING_HOSTING"
    assert wait_while(client, "STOPPING_HOSTING", "1", "p")["Status"] == "TRAINED"
    client.delete_model(ProjectName="p", ModelVersion="1")

    client.start_model(ProjectName="p", ModelVersion="2", MinInferenceUnits=1)
    assert wait_while(client, "STARTING_HOSTING", "2", "p")["Status"] == "HOSTED"
    # Hosting belongs to a process (here: a client); another one sees the model TRAINED.
    other = Client(home)
    assert (
        other.describe_model(ProjectName="p", ModelVersion="2")["ModelDescription"]["Status"]
        == "TRAINED"
    )
    with pytest.raises(other.exceptions.ConflictException, match="hosted by an openlookout"):
        other.delete_model(ProjectName="p", ModelVersion="2")
    client.close()  # stops its models
    other.delete_model(ProjectName="p", ModelVersion="2")


def test_concurrent_in_process_calls(lookout, packages):
    host(lookout, "2")
    bodies = sample_pngs(4)
    expected = [expected_result(packages["seg"], body) for body in bodies]
    results: list[list[dict]] = [[] for _ in range(4)]

    def worker(index: int) -> None:
        for _ in range(3):
            answer = lookout.detect_anomalies(
                ProjectName="parts", ModelVersion="2", Body=bodies[index], ContentType="image/png"
            )
            results[index].append(answer["DetectAnomalyResult"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for index in range(4):
        assert results[index] == [expected[index]] * 3
    assert lookout.hosting.get("parts", 2).completed == 12


def test_remote_client_argument_errors():
    with pytest.raises(openlookout.ValidationException):
        openlookout.client(endpoint_url="ftp://example")
    with pytest.raises(openlookout.ValidationException):
        openlookout.client("home", endpoint_url="http://127.0.0.1:1")
