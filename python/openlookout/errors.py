"""Exceptions named after Amazon Lookout for Vision's errors.

Every error openlookout raises is an :class:`OpenLookoutError`; each subclass carries the L4V
error name (``code``) and HTTP status of the service model, and also subclasses the Python
builtin it corresponds to, so ``except ValueError`` catches bad input as callers expect.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessDeniedException",
    "ConflictException",
    "InternalServerException",
    "OpenLookoutError",
    "ResourceNotFoundException",
    "ServiceQuotaExceededException",
    "ThrottlingException",
    "ValidationException",
]


class OpenLookoutError(Exception):
    """Base class of openlookout's errors."""

    code: ClassVar[str] = "InternalServerException"
    http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str = "",
        *,
        resource_id: str | None = None,
        resource_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.resource_id = resource_id
        self.resource_type = resource_type


class ValidationException(OpenLookoutError, ValueError):
    """Bad input: body, content type, image, manifest or options (HTTP 400)."""

    code = "ValidationException"
    http_status = 400


class AccessDeniedException(OpenLookoutError, PermissionError):
    """The caller is not authorized (HTTP 403)."""

    code = "AccessDeniedException"
    http_status = 403


class ResourceNotFoundException(OpenLookoutError, LookupError):
    """A project, model version or model package that does not exist (HTTP 404)."""

    code = "ResourceNotFoundException"
    http_status = 404


class ConflictException(OpenLookoutError):
    """The resource's state does not allow the call, e.g. a model that is not hosted (HTTP 409)."""

    code = "ConflictException"
    http_status = 409


class ServiceQuotaExceededException(OpenLookoutError):
    """A configured quota would be exceeded (HTTP 402, as in L4V's service model)."""

    code = "ServiceQuotaExceededException"
    http_status = 402


class ThrottlingException(OpenLookoutError):
    """Temporarily overloaded; retrying later may succeed (HTTP 429)."""

    code = "ThrottlingException"
    http_status = 429


class InternalServerException(OpenLookoutError, RuntimeError):
    """A fault inside openlookout or ONNX Runtime (HTTP 500)."""

    code = "InternalServerException"
    http_status = 500
