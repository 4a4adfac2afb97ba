"""A script in the style of AWS's Lookout for Vision Python samples (hosting.py, inference.py):
start a model and poll until it is hosted, detect anomalies, stop it and poll until it is trained,
and list the hosted models. It uses nothing but boto3, so it runs unchanged on the pinned botocore
1.40.60 and on the current botocore with AWS_DATA_PATH, and prints a JSON summary for the test.

    python l4v_sample.py ENDPOINT PROJECT VERSION IMAGE...
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time

import boto3
import botocore
from botocore.exceptions import ClientError

POLL_SECONDS = 0.05  # AWS's sample sleeps 10 s between polls; a local model loads in ms


def start_model(lookoutvision_client, project_name, model_version, min_inference_units):
    """Starts the hosting of a model version and waits until it is hosted (as the sample)."""
    statuses = []
    response = lookoutvision_client.start_model(
        ProjectName=project_name,
        ModelVersion=model_version,
        MinInferenceUnits=min_inference_units,
    )
    status = response["Status"]
    statuses.append(status)
    while status == "STARTING_HOSTING":
        time.sleep(POLL_SECONDS)
        describe_response = lookoutvision_client.describe_model(
            ProjectName=project_name, ModelVersion=model_version
        )
        status = describe_response["ModelDescription"]["Status"]
        statuses.append(status)
    if status != "HOSTED":
        raise RuntimeError(f"model failed to start: {status}")
    return statuses


def stop_model(lookoutvision_client, project_name, model_version):
    """Stops a hosted model and waits until it is trained again (as the sample)."""
    statuses = []
    response = lookoutvision_client.stop_model(ProjectName=project_name, ModelVersion=model_version)
    status = response["Status"]
    statuses.append(status)
    while status == "STOPPING_HOSTING":
        time.sleep(POLL_SECONDS)
        status = lookoutvision_client.describe_model(
            ProjectName=project_name, ModelVersion=model_version
        )["ModelDescription"]["Status"]
        statuses.append(status)
    if status != "TRAINED":
        raise RuntimeError(f"model failed to stop: {status}")
    return statuses


def list_hosted(lookoutvision_client):
    """Walks every project and model and keeps the hosted ones (as the sample's list_hosted)."""
    hosted = []
    paginator = lookoutvision_client.get_paginator("list_projects")
    for page in paginator.paginate(PaginationConfig={"PageSize": 1}):
        for project in page["Projects"]:
            models = lookoutvision_client.get_paginator("list_models").paginate(
                ProjectName=project["ProjectName"], PaginationConfig={"PageSize": 1}
            )
            for model_page in models:
                for model in model_page["Models"]:
                    description = lookoutvision_client.describe_model(
                        ProjectName=project["ProjectName"], ModelVersion=model["ModelVersion"]
                    )["ModelDescription"]
                    if description["Status"] == "HOSTED":
                        hosted.append(f"{project['ProjectName']}/{model['ModelVersion']}")
    return hosted


def detect_anomalies(lookoutvision_client, project_name, model_version, photo):
    with open(photo, "rb") as image:
        response = lookoutvision_client.detect_anomalies(
            ProjectName=project_name,
            ContentType="image/png",
            Body=image.read(),
            ModelVersion=model_version,
        )
    result = response["DetectAnomalyResult"]
    if "AnomalyMask" in result:  # bytes from boto3; summarised for JSON
        result["AnomalyMask"] = hashlib.sha256(result["AnomalyMask"]).hexdigest()
    return result


def error_of(call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        response = error.response
        return {
            "Code": response["Error"]["Code"],
            "HTTPStatusCode": response["ResponseMetadata"]["HTTPStatusCode"],
            "ResourceType": response.get("ResourceType"),
        }
    return None


def main(endpoint, project_name, model_version, *photos):
    client = boto3.client(
        "lookoutvision",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
    )
    summary = {"botocore": botocore.__version__}
    summary["not_hosted"] = error_of(
        client.detect_anomalies,
        ProjectName=project_name,
        ModelVersion=model_version,
        Body=b"x",
        ContentType="image/png",
    )
    summary["start"] = start_model(client, project_name, model_version, 1)
    summary["hosted"] = list_hosted(client)
    summary["results"] = [
        detect_anomalies(client, project_name, model_version, photo) for photo in photos
    ]
    summary["errors"] = {
        "unknown_project": error_of(client.describe_model, ProjectName="nope", ModelVersion="1"),
        "unknown_version": error_of(
            client.describe_model, ProjectName=project_name, ModelVersion="999"
        ),
        "bad_name": error_of(client.describe_project, ProjectName="bad name"),
        "delete_hosted": error_of(
            client.delete_model, ProjectName=project_name, ModelVersion=model_version
        ),
        "bad_content_type": error_of(
            client.detect_anomalies,
            ProjectName=project_name,
            ModelVersion=model_version,
            Body=b"GIF89a",
            ContentType="image/gif",
        ),
    }
    summary["stop"] = stop_model(client, project_name, model_version)
    summary["projects"] = [p["ProjectName"] for p in client.list_projects()["Projects"]]
    summary["description"] = client.describe_model(
        ProjectName=project_name, ModelVersion=model_version
    )["ModelDescription"]["Status"]
    print(json.dumps(summary, default=lambda v: base64.b64encode(v).decode()))


if __name__ == "__main__":
    main(*sys.argv[1:])
