"""Exceptions named after Amazon Lookout for Vision's errors.

Every error openlookout raises is an :class:`OpenLookoutError`; each subclass carries the L4V
error name (``code``) and HTTP status of the service model, and also subclasses the Python
builtin it corresponds to, so ``except ValueError`` catches bad input as callers expect.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
        retry_after: int | None = None,
        quota_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.resource_id = resource_id
        self.resource_type = resource_type
        # Seconds after which a retry may succeed: the HTTP `Retry-After` header of
        # ThrottlingException and InternalServerException.
        self.retry_after = retry_after
        # Which limit was hit (ThrottlingException, ServiceQuotaExceededException).
        self.quota_code = quota_code
        # The L4V operation that failed ("DetectAnomalies", ...), set by openlookout.client().
        self.operation_name: str | None = None

    @property
    def response(self) -> dict[str, Any]:
        """The error as botocore's ``ClientError.response`` holds it, so that code written
        against boto3 (``e.response["Error"]["Code"]``, ``e.response["ResourceType"]``) works
        unchanged with :func:`openlookout.client`."""
        headers = {"x-amzn-errortype": self.code}
        if self.retry_after is not None:
            headers["retry-after"] = str(self.retry_after)
        response: dict[str, Any] = {
            "Error": {"Code": self.code, "Message": self.message},
            "ResponseMetadata": {
                "HTTPStatusCode": self.http_status,
                "HTTPHeaders": headers,
                "RetryAttempts": 0,
            },
            "Message": self.message,
        }
        if self.resource_id is not None:
            response["ResourceId"] = self.resource_id
        if self.resource_type is not None:
            response["ResourceType"] = self.resource_type
        if self.retry_after is not None:
            response["RetryAfterSeconds"] = self.retry_after
        if self.quota_code is not None:
            response["QuotaCode"] = self.quota_code
            response["ServiceCode"] = "lookoutvision"
        return response


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
