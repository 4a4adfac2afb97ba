"""Shared pieces of the registry, client and server tests: tiny model packages, test images, the
two botocore routes (the pinned botocore 1.40.60 that still ships lookoutvision, and the current
botocore with openlookout's service description) and a boto3 client factory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import builders
import imagegen
import openlookout
from openlookout import service_model

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
# Installed by scripts/bootstrap.sh: boto3 + botocore 1.40.60 in their own directory, used by
# subprocesses only (the test process has the current botocore).
PINNED_BOTOCORE_VERSION = "1.40.60"
PINNED_BOTOCORE = Path(
    os.environ.get("OPENLOOKOUT_PINNED_BOTOCORE", REPO / "third_party" / "botocore-1.40.60")
)

CLASSIFICATION_MANIFEST = {
    "format_version": 1,
    "task": "classification",
    "model": "model.onnx",
    "input": {"width": 64, "height": 64},
    "classification": {"activation": "sigmoid"},
}
SEGMENTATION_MANIFEST = {
    "format_version": 1,
    "task": "segmentation",
    "model": "model.onnx",
    "input": {"width": 64, "height": 64},
    "segmentation": {
        "labels": [{"name": "scratch", "color": "#7ED321"}, {"name": "dent", "color": "#4DD8FF"}]
    },
}


def write_classification_package(directory: Path) -> Path:
    model = builders.classification_model(height=64, width=64, values=1, seed=3)
    return Path(builders.write_package(directory, model, CLASSIFICATION_MANIFEST))


def write_segmentation_package(directory: Path) -> Path:
    model = builders.segmentation_model(height=64, width=64, channels=3, seed=4)
    return Path(builders.write_package(directory, model, SEGMENTATION_MANIFEST))


def sample_pngs(count: int = 4) -> list[bytes]:
    sizes = [(97, 71), (80, 64), (64, 90), (120, 100)]
    return [
        imagegen.png_bytes(imagegen.natural_rgb(*sizes[i % len(sizes)], 300 + i))
        for i in range(count)
    ]


def boto3_client(endpoint_url: str, *, retries: int = 1, **kwargs: object):
    """A boto3 lookoutvision client on the current botocore (which no longer ships the service)
    with openlookout's service description, as a user would make one. ``retries``: total
    attempts (1: none, so 429/500 are seen as they are)."""
    import boto3
    from botocore.config import Config

    session = boto3.Session(
        aws_access_key_id=kwargs.pop("aws_access_key_id", "AKIDEXAMPLE"),
        aws_secret_access_key=kwargs.pop("aws_secret_access_key", "secret"),
        region_name="us-east-1",
    )
    service_model.add_to_session(session)
    config = Config(retries={"total_max_attempts": retries, "mode": "standard"}, **kwargs)
    return session.client("lookoutvision", endpoint_url=endpoint_url, config=config)


def pinned_botocore_env() -> dict[str, str]:
    """Environment for a subprocess that imports the pinned boto3/botocore 1.40.60."""
    marker = PINNED_BOTOCORE / "botocore" / "data" / "lookoutvision"
    if not marker.is_dir():
        raise AssertionError(
            f"botocore {PINNED_BOTOCORE_VERSION} is not installed in {PINNED_BOTOCORE}: "
            "run scripts/bootstrap.sh (or set OPENLOOKOUT_PINNED_BOTOCORE)"
        )
    env = dict(os.environ)
    env.pop("AWS_DATA_PATH", None)
    env["PYTHONPATH"] = str(PINNED_BOTOCORE)
    return env


def data_path_env() -> dict[str, str]:
    """Environment for a subprocess on the current botocore with ``AWS_DATA_PATH`` set, exactly
    as the README says."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["AWS_DATA_PATH"] = service_model.data_path()
    return env


def run_sample(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs tests/l4v_sample.py (the AWS-sample-style script) in a subprocess."""
    return subprocess.run(
        [sys.executable, str(TESTS / "l4v_sample.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def expected_result(package: Path, body: bytes) -> dict:
    """What DetectAnomalies must answer: the native model's own result."""
    return openlookout.load_model(package).detect(body, "image/png")


@contextlib.contextmanager
def hosted_classifier_server(
    tmp_path_factory: Any, prefix: str, **server_options: Any
) -> Iterator[Any]:
    """A real server on a loopback port with project "p" version 1 (a small classifier)
    imported and HOSTED; ``server_options`` go to ServerConfig."""
    from openlookout.server import ServerConfig, running_server

    home = tmp_path_factory.mktemp(f"{prefix}-home")
    package = write_classification_package(tmp_path_factory.mktemp(f"{prefix}-pkg") / "cls")
    lookout = openlookout.client(home)
    lookout.create_project(ProjectName="p")
    lookout.import_model(ProjectName="p", Package=package)
    with running_server(ServerConfig(port=0, home=home, **server_options)) as running:
        running.client.start_model(ProjectName="p", ModelVersion="1", MinInferenceUnits=1)
        deadline = time.monotonic() + 30
        while running.client.hosting.get("p", 1).status != "HOSTED":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield running
