"""openlookout: a local, fast replacement for Amazon Lookout for Vision's DetectAnomalies.

>>> import openlookout
>>> model = openlookout.load_model("path/to/package")
>>> result = model.detect(open("part.jpg", "rb").read(), "image/jpeg")
>>> result["IsAnomalous"], result["Confidence"]
"""

from __future__ import annotations

from .client import client
from .errors import (
    AccessDeniedException,
    ConflictException,
    InternalServerException,
    OpenLookoutError,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    ThrottlingException,
    ValidationException,
)
from .manifest import Manifest, read_manifest
from .model import Model, load_model

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedException",
    "ConflictException",
    "InternalServerException",
    "Manifest",
    "Model",
    "OpenLookoutError",
    "ResourceNotFoundException",
    "ServiceQuotaExceededException",
    "ThrottlingException",
    "ValidationException",
    "__version__",
    "client",
    "load_model",
    "read_manifest",
]
