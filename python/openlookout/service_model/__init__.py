"""openlookout's own description of the Lookout for Vision API, for botocore.

botocore 1.40.61 and later no longer ship ``lookoutvision``, so ``boto3.client("lookoutvision")``
fails with ``UnknownServiceError``. This package holds a minimal service description written for
openlookout (the ten operations it serves, ``lookoutvision/2020-11-20/service-2.json``, with the
paginators and an endpoint rule set that takes ``endpoint_url``). Point botocore at it::

    export AWS_DATA_PATH=$(openlookout aws-data-path)     # or: python -m openlookout.service_model

or, in Python, without touching the environment::

    import boto3, openlookout.service_model
    session = boto3.Session()
    openlookout.service_model.add_to_session(session)
    lookout = session.client("lookoutvision", endpoint_url="http://127.0.0.1:8080")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SERVICE_DIR", "add_to_session", "data_path"]

SERVICE_DIR = Path(__file__).resolve().parent / "lookoutvision" / "2020-11-20"


def data_path() -> str:
    """The directory to put in ``AWS_DATA_PATH`` (it holds ``lookoutvision/2020-11-20/``)."""
    return str(Path(__file__).resolve().parent)


def add_to_session(session: Any) -> None:
    """Adds :func:`data_path` to the front of the data search path of a ``boto3.Session`` or
    ``botocore.session.Session``, so that its ``client("lookoutvision")`` uses this description.
    Call it before the session makes its first client."""
    botocore_session = getattr(session, "_session", session)
    loader = botocore_session.get_component("data_loader")
    if data_path() not in loader.search_paths:
        loader.search_paths.insert(0, data_path())
