"""``openlookout.client()``: Lookout for Vision's API with boto3's method names, keyword arguments,
response dicts and exceptions, answered in this process (no network hop) from the registry on
disk and the models this client hosts.

>>> import openlookout
>>> lookout = openlookout.client()              # was: boto3.client("lookoutvision")
>>> lookout.start_model(ProjectName="parts", ModelVersion="1", MinInferenceUnits=1)
>>> lookout.describe_model(ProjectName="parts", ModelVersion="1")["ModelDescription"]["Status"]
>>> lookout.detect_anomalies(ProjectName="parts", ModelVersion="1",
...                          Body=image_bytes, ContentType="image/jpeg")["DetectAnomalyResult"]

``openlookout.client(endpoint_url="http://127.0.0.1:8080")`` gives the same interface over HTTP to
an ``openlookout serve`` (no boto3 needed); it is what the command line uses to start and stop
models in a running server.

The same class answers the HTTP server's requests, so both behave alike: validation, errors,
lifecycle and pagination are implemented once, here.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import http.client
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, ParamSpec, TypeVar, overload

from . import errors
from .errors import (
    ConflictException,
    OpenLookoutError,
    ValidationException,
)
from .hosting import (
    HOSTED,
    STARTING_HOSTING,
    STOPPING_HOSTING,
    TRAINED,
    HostedModel,
    Hosting,
    HostingOptions,
)
from .model import Body
from .registry import (
    ModelRecord,
    ProjectRecord,
    Registry,
    check_client_token,
    check_model_version,
    check_project_name,
)

__all__ = ["Client", "Paginator", "RemoteClient", "client"]

P = ParamSpec("P")
R = TypeVar("R")
ClientT = TypeVar("ClientT", bound="_ClientBase")

MAX_RESULTS = 100  # the service model's PageSize maximum, and its default
_TOKEN = re.compile(r"[a-zA-Z0-9/+=]{0,2048}")
# Idempotency tokens stay active for 8 hours (the service model's ClientToken documentation).
IDEMPOTENCY_SECONDS = 8 * 3600
IDEMPOTENCY_ENTRIES = 10_000
STATUS_MESSAGES = {TRAINED: "The model is trained and ready to start (StartModel)."}
# L4V operations that openlookout does not serve (it trains nothing and keeps no datasets).
UNSUPPORTED = {
    "create_model": "CreateModel (training)",
    "create_dataset": "CreateDataset",
    "delete_dataset": "DeleteDataset",
    "describe_dataset": "DescribeDataset",
    "list_dataset_entries": "ListDatasetEntries",
    "update_dataset_entries": "UpdateDatasetEntries",
    "start_model_packaging_job": "StartModelPackagingJob",
    "describe_model_packaging_job": "DescribeModelPackagingJob",
    "list_model_packaging_jobs": "ListModelPackagingJobs",
    "tag_resource": "TagResource",
    "untag_resource": "UntagResource",
    "list_tags_for_resource": "ListTagsForResource",
}


class Exceptions:
    """``client.exceptions``: the exception classes by L4V name, as on a boto3 client.
    ``ClientError`` is the base of them all, as botocore's is."""

    ClientError = OpenLookoutError
    AccessDeniedException = errors.AccessDeniedException
    ConflictException = errors.ConflictException
    InternalServerException = errors.InternalServerException
    ResourceNotFoundException = errors.ResourceNotFoundException
    ServiceQuotaExceededException = errors.ServiceQuotaExceededException
    ThrottlingException = errors.ThrottlingException
    ValidationException = errors.ValidationException

    @classmethod
    def from_code(cls, code: str) -> type[OpenLookoutError]:
        """The exception class for an error code (``ClientError`` for an unknown one)."""
        found = getattr(cls, code, None)
        if isinstance(found, type) and issubclass(found, OpenLookoutError):
            return found
        return OpenLookoutError


def _operation(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Names the L4V operation on the errors a client method raises (botocore's
    ``ClientError.operation_name``)."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(*args, **kwargs)
            except OpenLookoutError as error:
                error.operation_name = name
                raise

        return wrapper

    return decorate


def _timestamp(seconds: float) -> dt.datetime:
    # boto3 hands timestamps over as timezone-aware datetimes.
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def _response(body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    body["ResponseMetadata"] = {
        "RequestId": str(uuid.uuid4()),
        "HTTPStatusCode": status,
        "HTTPHeaders": {},
        "RetryAttempts": 0,
    }
    return body


def _max_results(value: object) -> int:
    if value is None:
        return MAX_RESULTS
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationException(f"maxResults must be an integer, not {value!r}")
    if not 1 <= value <= MAX_RESULTS:
        raise ValidationException(
            f"1 validation error detected: Value {value} at 'maxResults' failed to satisfy "
            f"constraint: Member must have value between 1 and {MAX_RESULTS}"
        )
    return value


def _encode_token(kind: str, after: str) -> str:
    return base64.b64encode(f"{kind}:{after}".encode()).decode("ascii")


def _decode_token(kind: str, token: object) -> str | None:
    """The key a NextToken continues after, or None to start from the beginning. Tokens hold the
    last key returned rather than an offset, so paging stays correct while items come and go."""
    if token is None or token == "":
        return None
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ValidationException("invalid pagination token")
    try:
        text = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValidationException("invalid pagination token") from None
    prefix, _, after = text.partition(":")
    if prefix != kind or not after:
        raise ValidationException("invalid pagination token")
    return after


class _Idempotency:
    """Remembers the answers to calls that carried a ClientToken, so that a retried call (botocore
    retries with the same token) gets the first answer instead of acting twice. The same token
    with other parameters is a ``ConflictException``."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, tuple[Any, ...], dict[str, Any]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def run(
        self,
        token: str | None,
        call: tuple[Any, ...],
        resource: tuple[str, str],
        act: Callable[[], dict[str, Any]],
    ) -> dict[str, Any]:
        if token is None:
            return act()
        check_client_token(token)
        now = time.monotonic()
        with self._lock:
            while self._entries and (
                len(self._entries) > IDEMPOTENCY_ENTRIES
                or next(iter(self._entries.values()))[0] < now - IDEMPOTENCY_SECONDS
            ):
                self._entries.popitem(last=False)
            seen = self._entries.get(token)
        if seen is not None:
            if seen[1] != call:
                raise ConflictException(
                    f"ClientToken {token!r} was already used with other parameters",
                    resource_id=resource[0],
                    resource_type=resource[1],
                )
            return dict(seen[2])
        answer = act()
        with self._lock:
            self._entries[token] = (now, call, dict(answer))
        return answer


class Paginator:
    """``client.get_paginator("list_models" | "list_projects")``, as in boto3:
    ``paginate(**kwargs)`` yields pages; ``PaginationConfig`` takes ``MaxItems``, ``PageSize``
    and ``StartingToken``; ``.build_full_result()`` joins the pages."""

    def __init__(self, method: Callable[..., dict[str, Any]], result_key: str) -> None:
        self._method = method
        self._result_key = result_key

    def paginate(self, **kwargs: Any) -> PageIterator:
        config = dict(kwargs.pop("PaginationConfig", None) or {})
        return PageIterator(self._method, self._result_key, kwargs, config)


class PageIterator:
    def __init__(
        self,
        method: Callable[..., dict[str, Any]],
        result_key: str,
        kwargs: dict[str, Any],
        config: dict[str, Any],
    ) -> None:
        self._method = method
        self._result_key = result_key
        self._kwargs = kwargs
        self._max_items = config.get("MaxItems")
        self._page_size = _max_results(config.get("PageSize"))
        self._token = config.get("StartingToken")
        self.resume_token: str | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        token = self._token
        remaining = self._max_items
        while True:
            size = self._page_size if remaining is None else min(self._page_size, remaining)
            args = dict(self._kwargs, MaxResults=size)
            if token:
                args["NextToken"] = token
            page = self._method(**args)
            yield page
            token = page.get("NextToken")
            if remaining is not None:
                remaining -= len(page.get(self._result_key, []))
                if remaining <= 0:
                    self.resume_token = token
                    return
            if not token:
                return

    def build_full_result(self) -> dict[str, Any]:
        items: list[Any] = []
        for page in self:
            items.extend(page.get(self._result_key, []))
        result: dict[str, Any] = {self._result_key: items}
        if self.resume_token:
            result["NextToken"] = self.resume_token
        return result


class _ClientBase:
    """What the in-process and HTTP clients share: exceptions, paginators, the unsupported
    operations."""

    exceptions = Exceptions
    _PAGINATED: ClassVar[dict[str, str]] = {"list_models": "Models", "list_projects": "Projects"}

    def can_paginate(self, operation_name: str) -> bool:
        return operation_name in self._PAGINATED

    def get_paginator(self, operation_name: str) -> Paginator:
        if operation_name not in self._PAGINATED:
            raise ValidationException(
                f"operation {operation_name!r} cannot be paginated; "
                f"paginated: {', '.join(self._PAGINATED)}"
            )
        return Paginator(getattr(self, operation_name), self._PAGINATED[operation_name])

    def __getattr__(self, name: str) -> Any:
        if name in UNSUPPORTED:
            raise AttributeError(
                f"{UNSUPPORTED[name]} is not supported by openlookout, which hosts trained "
                "models: import a model package with `openlookout model import` instead"
            )
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __enter__(self: ClientT) -> ClientT:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Releases what the client holds."""


class Client(_ClientBase):
    """The in-process Lookout for Vision client. See the module documentation.

    ``home``: the registry directory (default: ``OPENLOOKOUT_HOME``, else the user's data
    directory). ``hosting``: how started models are hosted (:class:`HostingOptions`); keyword
    arguments left over are :func:`openlookout.load_model` options for every model started
    (``providers=["CUDAExecutionProvider", "CPUExecutionProvider"]``, ...).

    Models started by a client are hosted by that client, in this process, until
    ``stop_model`` or :meth:`close`.
    """

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        hosting: HostingOptions | None = None,
        **load_options: Any,
    ) -> None:
        self.registry = Registry(home)
        options = hosting or HostingOptions()
        if load_options:
            options.load_options = {**options.load_options, **load_options}
        self.hosting = Hosting(self.registry, options)
        self._idempotency = _Idempotency()

    def __repr__(self) -> str:
        return f"openlookout.Client(home={str(self.registry.home)!r})"

    def close(self) -> None:
        """Stops every model this client hosts (waiting for calls in flight)."""
        self.hosting.close()

    # ---- projects ------------------------------------------------------------------------

    @staticmethod
    def _project_metadata(record: ProjectRecord) -> dict[str, Any]:
        return {
            "ProjectArn": record.arn,
            "ProjectName": record.name,
            "CreationTimestamp": _timestamp(record.created),
        }

    @_operation("CreateProject")
    def create_project(self, *, ProjectName: str, ClientToken: str | None = None) -> dict[str, Any]:
        name = check_project_name(ProjectName, "ProjectName")
        return self._idempotency.run(
            ClientToken,
            ("CreateProject", name),
            (name, "PROJECT"),
            lambda: _response(
                {"ProjectMetadata": self._project_metadata(self.registry.create_project(name))}
            ),
        )

    @_operation("DescribeProject")
    def describe_project(self, *, ProjectName: str) -> dict[str, Any]:
        record = self.registry.get_project(check_project_name(ProjectName))
        # openlookout keeps no datasets: models arrive as packages.
        return _response({"ProjectDescription": {**self._project_metadata(record), "Datasets": []}})

    @_operation("ListProjects")
    def list_projects(
        self, *, NextToken: str | None = None, MaxResults: int | None = None
    ) -> dict[str, Any]:
        limit = _max_results(MaxResults)
        after = _decode_token("project", NextToken)
        projects = [p for p in self.registry.list_projects() if after is None or p.name > after]
        page = projects[:limit]
        body: dict[str, Any] = {"Projects": [self._project_metadata(p) for p in page]}
        if len(projects) > limit:
            body["NextToken"] = _encode_token("project", page[-1].name)
        return _response(body)

    @_operation("DeleteProject")
    def delete_project(self, *, ProjectName: str, ClientToken: str | None = None) -> dict[str, Any]:
        name = check_project_name(ProjectName)
        return self._idempotency.run(
            ClientToken,
            ("DeleteProject", name),
            (name, "PROJECT"),
            lambda: _response({"ProjectArn": self.registry.delete_project(name).arn}),
        )

    # ---- models --------------------------------------------------------------------------

    def _status(self, record: ModelRecord) -> tuple[str, str, HostedModel | None]:
        hosted = self.hosting.status(record)
        if hosted is None:
            return TRAINED, STATUS_MESSAGES[TRAINED], None
        return hosted.status, hosted.status_message, hosted

    def _model_metadata(self, record: ModelRecord) -> dict[str, Any]:
        status, message, _ = self._status(record)
        metadata: dict[str, Any] = {
            "CreationTimestamp": _timestamp(record.created),
            "ModelVersion": str(record.version),
            "ModelArn": record.arn,
            "Status": status,
            "StatusMessage": message,
        }
        if record.description:
            metadata["Description"] = record.description
        return metadata

    def _resolve(self, project: str, version: str) -> ModelRecord:
        return self.registry.resolve(check_project_name(project), version)

    @_operation("ListModels")
    def list_models(
        self, *, ProjectName: str, NextToken: str | None = None, MaxResults: int | None = None
    ) -> dict[str, Any]:
        name = check_project_name(ProjectName)
        limit = _max_results(MaxResults)
        after = _decode_token("model", NextToken)
        if after is not None and not after.isdigit():
            raise ValidationException("invalid pagination token")
        models = [
            m for m in self.registry.list_models(name) if after is None or m.version < int(after)
        ]  # newest first, so the next page holds lower versions
        page = models[:limit]
        body: dict[str, Any] = {"Models": [self._model_metadata(m) for m in page]}
        if len(models) > limit:
            body["NextToken"] = _encode_token("model", str(page[-1].version))
        return _response(body)

    @_operation("DescribeModel")
    def describe_model(self, *, ProjectName: str, ModelVersion: str) -> dict[str, Any]:
        record = self._resolve(ProjectName, ModelVersion)
        description = self._model_metadata(record)
        hosted = self._status(record)[2]
        if hosted is not None:
            description["MinInferenceUnits"] = hosted.min_units
            if hosted.max_units is not None:
                description["MaxInferenceUnits"] = hosted.max_units
        return _response({"ModelDescription": description})

    @_operation("DeleteModel")
    def delete_model(
        self, *, ProjectName: str, ModelVersion: str, ClientToken: str | None = None
    ) -> dict[str, Any]:
        name = check_project_name(ProjectName)
        version = check_model_version(ModelVersion, allow_latest=False)

        def act() -> dict[str, Any]:
            record = self.registry.get_model(name, int(version))
            status = self._status(record)[0]
            if status != TRAINED:
                raise ConflictException(
                    f"model {record.resource_id} is {status}: stop it first (StopModel)",
                    resource_id=record.resource_id,
                    resource_type="MODEL",
                )
            return _response({"ModelArn": self.registry.delete_model(name, int(version)).arn}, 202)

        return self._idempotency.run(
            ClientToken, ("DeleteModel", name, version), (f"{name}/{version}", "MODEL"), act
        )

    @_operation("StartModel")
    def start_model(
        self,
        *,
        ProjectName: str,
        ModelVersion: str,
        MinInferenceUnits: int,
        MaxInferenceUnits: int | None = None,
        ClientToken: str | None = None,
    ) -> dict[str, Any]:
        record = self._resolve(ProjectName, ModelVersion)
        return self._idempotency.run(
            ClientToken,
            ("StartModel", record.resource_id, MinInferenceUnits, MaxInferenceUnits),
            (record.resource_id, "MODEL"),
            lambda: _response(
                {"Status": self.hosting.start(record, MinInferenceUnits, MaxInferenceUnits)}, 202
            ),
        )

    @_operation("StopModel")
    def stop_model(
        self, *, ProjectName: str, ModelVersion: str, ClientToken: str | None = None
    ) -> dict[str, Any]:
        record = self._resolve(ProjectName, ModelVersion)
        return self._idempotency.run(
            ClientToken,
            ("StopModel", record.resource_id),
            (record.resource_id, "MODEL"),
            lambda: _response({"Status": self.hosting.stop(record)}, 202),
        )

    def hosted_model(self, project: str, version: str) -> HostedModel:
        """The HOSTED model that a DetectAnomalies call names, or the error that call gets:
        ``ValidationException`` (bad name or version), ``ResourceNotFoundException`` (no such
        project or version), ``ConflictException`` (not HOSTED). Hosted models are found in
        memory, so the registry on disk is only read for ``latest`` and for errors."""
        check_project_name(project)
        check_model_version(version)
        number = self.registry.latest_version(project) if version == "latest" else int(version)
        hosted = self.hosting.get(project, number)
        if hosted is not None and hosted.status == HOSTED:
            return hosted
        record = self.registry.get_model(project, number)  # 404 when it does not exist
        status = hosted.status if hosted is not None else TRAINED
        hint = {
            STARTING_HOSTING: "wait until DescribeModel says HOSTED",
            STOPPING_HOSTING: "it is stopping",
        }.get(status, "start it first (StartModel)")
        raise ConflictException(
            f"model {record.resource_id} is not hosted (status {status}): {hint}",
            resource_id=record.resource_id,
            resource_type="MODEL",
        )

    @_operation("DetectAnomalies")
    def detect_anomalies(
        self, *, ProjectName: str, ModelVersion: str, Body: Body, ContentType: str
    ) -> dict[str, Any]:
        if not isinstance(ContentType, str) or not 1 <= len(ContentType) <= 255:
            raise ValidationException(
                "ContentType must be a string of 1 to 255 characters: image/png or image/jpeg"
            )
        hosted = self.hosted_model(ProjectName, ModelVersion)
        with hosted.inline() as model:
            result = model.detect(Body, ContentType)
        return _response({"DetectAnomalyResult": result})

    # ---- openlookout's own --------------------------------------------------------------

    def import_model(
        self, *, ProjectName: str, Package: str | Path, Description: str | None = None
    ) -> dict[str, Any]:
        """Imports a model package as the project's next version (not an L4V operation: L4V
        trained models, openlookout imports them). Returns ``{"ModelMetadata": ...}``."""
        record = self.registry.import_model(
            check_project_name(ProjectName), Package, description=Description
        )
        return _response({"ModelMetadata": self._model_metadata(record)})


# ------------------------------------------------------------------------------------------
# Over HTTP
# ------------------------------------------------------------------------------------------

# operation -> (HTTP method, path under /2020-11-20, success status). Path parameters are the
# {ProjectName} and {ModelVersion} members; the rest go where the service model puts them.
_ROUTES: dict[str, tuple[str, str]] = {
    "CreateProject": ("POST", "/projects"),
    "ListProjects": ("GET", "/projects"),
    "DescribeProject": ("GET", "/projects/{ProjectName}"),
    "DeleteProject": ("DELETE", "/projects/{ProjectName}"),
    "ListModels": ("GET", "/projects/{ProjectName}/models"),
    "DescribeModel": ("GET", "/projects/{ProjectName}/models/{ModelVersion}"),
    "DeleteModel": ("DELETE", "/projects/{ProjectName}/models/{ModelVersion}"),
    "StartModel": ("POST", "/projects/{ProjectName}/models/{ModelVersion}/start"),
    "StopModel": ("POST", "/projects/{ProjectName}/models/{ModelVersion}/stop"),
    "DetectAnomalies": ("POST", "/projects/{ProjectName}/models/{ModelVersion}/detect"),
}
_TIMESTAMP_KEYS = {"CreationTimestamp"}


def _parse_timestamps(value: Any) -> Any:
    """Epoch-second numbers under timestamp keys become datetimes, as boto3 parses them."""
    if isinstance(value, dict):
        parsed = {}
        for key, item in value.items():
            is_time = key in _TIMESTAMP_KEYS and isinstance(item, (int, float))
            parsed[key] = _timestamp(item) if is_time else _parse_timestamps(item)
        return parsed
    if isinstance(value, list):
        return [_parse_timestamps(v) for v in value]
    return value


class RemoteClient(_ClientBase):
    """The same interface as :class:`Client`, over HTTP to an ``openlookout serve``. Signs its
    requests (SigV4, service ``lookoutvision``) when given keys, for servers run with ``--auth``."""

    def __init__(
        self,
        endpoint_url: str,
        *,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        region_name: str = "us-east-1",
        timeout: float = 60.0,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationException(
                f"endpoint_url must be http://HOST:PORT or https://..., not {endpoint_url!r}"
            )
        self.endpoint_url = endpoint_url.rstrip("/")
        self._parts = parts
        self._keys = (
            (aws_access_key_id, aws_secret_access_key)
            if aws_access_key_id and aws_secret_access_key
            else None
        )
        self._region = region_name
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"openlookout.RemoteClient({self.endpoint_url!r})"

    def _call(
        self,
        operation: str,
        path_params: dict[str, str],
        *,
        query: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        raw_body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        from .server.sigv4 import sign  # stdlib only; the server package loads aiohttp lazily

        method, template = _ROUTES[operation]
        path = "/2020-11-20" + template.format(
            **{k: urllib.parse.quote(str(v), safe="") for k, v in path_params.items()}
        )
        query_string = urllib.parse.urlencode(
            {k: v for k, v in (query or {}).items() if v is not None}, quote_via=urllib.parse.quote
        )
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        body = raw_body if json_body is None else json.dumps(json_body).encode()
        host = self._parts.netloc
        all_headers["Host"] = host
        if self._keys is not None:
            all_headers.update(
                sign(
                    method,
                    path,
                    query_string,
                    all_headers,
                    body,
                    access_key=self._keys[0],
                    secret_key=self._keys[1],
                    region=self._region,
                )
            )
        connection_class = (
            http.client.HTTPSConnection
            if self._parts.scheme == "https"
            else http.client.HTTPConnection
        )
        connection = connection_class(
            self._parts.hostname or "", self._parts.port, timeout=self._timeout
        )
        try:
            target = (self._parts.path.rstrip("/") + path) + (
                f"?{query_string}" if query_string else ""
            )
            connection.request(method, target, body=body, headers=all_headers)
            response = connection.getresponse()
            payload = response.read()
            status = response.status
            error_type = response.getheader("x-amzn-ErrorType", "")
            retry_after = response.getheader("Retry-After")
        except OSError as error:
            raise errors.InternalServerException(
                f"cannot reach openlookout at {self.endpoint_url}: {error}"
            ) from error
        finally:
            connection.close()
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            data = {"message": payload[:200].decode("utf-8", "replace")}
        if status >= 300:
            raise self._error(status, error_type, data, retry_after, operation)
        data = _parse_timestamps(data)
        return _response(data, status)

    @staticmethod
    def _error(
        status: int,
        error_type: str,
        data: dict[str, Any],
        retry_after: str | None,
        operation: str,
    ) -> OpenLookoutError:
        name = error_type.split(":")[0]
        cls = Exceptions.from_code(name)
        message = str(data.get("message") or data.get("Message") or f"HTTP {status}")
        if cls is OpenLookoutError:
            cls = errors.InternalServerException
            message = f"HTTP {status} {name}: {message}".strip()
        error = cls(
            message,
            resource_id=data.get("ResourceId"),
            resource_type=data.get("ResourceType"),
            retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
        )
        error.operation_name = operation
        return error

    @staticmethod
    def _token_header(token: str | None) -> dict[str, str]:
        return {"X-Amzn-Client-Token": token or str(uuid.uuid4())}

    def create_project(self, *, ProjectName: str, ClientToken: str | None = None) -> dict[str, Any]:
        return self._call(
            "CreateProject",
            {},
            json_body={"ProjectName": ProjectName},
            headers=self._token_header(ClientToken),
        )

    def describe_project(self, *, ProjectName: str) -> dict[str, Any]:
        return self._call("DescribeProject", {"ProjectName": ProjectName})

    def list_projects(
        self, *, NextToken: str | None = None, MaxResults: int | None = None
    ) -> dict[str, Any]:
        return self._call(
            "ListProjects", {}, query={"nextToken": NextToken, "maxResults": MaxResults}
        )

    def delete_project(self, *, ProjectName: str, ClientToken: str | None = None) -> dict[str, Any]:
        return self._call(
            "DeleteProject", {"ProjectName": ProjectName}, headers=self._token_header(ClientToken)
        )

    def list_models(
        self, *, ProjectName: str, NextToken: str | None = None, MaxResults: int | None = None
    ) -> dict[str, Any]:
        return self._call(
            "ListModels",
            {"ProjectName": ProjectName},
            query={"nextToken": NextToken, "maxResults": MaxResults},
        )

    def describe_model(self, *, ProjectName: str, ModelVersion: str) -> dict[str, Any]:
        return self._call(
            "DescribeModel", {"ProjectName": ProjectName, "ModelVersion": ModelVersion}
        )

    def delete_model(
        self, *, ProjectName: str, ModelVersion: str, ClientToken: str | None = None
    ) -> dict[str, Any]:
        return self._call(
            "DeleteModel",
            {"ProjectName": ProjectName, "ModelVersion": ModelVersion},
            headers=self._token_header(ClientToken),
        )

    def start_model(
        self,
        *,
        ProjectName: str,
        ModelVersion: str,
        MinInferenceUnits: int,
        MaxInferenceUnits: int | None = None,
        ClientToken: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"MinInferenceUnits": MinInferenceUnits}
        if MaxInferenceUnits is not None:
            body["MaxInferenceUnits"] = MaxInferenceUnits
        return self._call(
            "StartModel",
            {"ProjectName": ProjectName, "ModelVersion": ModelVersion},
            json_body=body,
            headers=self._token_header(ClientToken),
        )

    def stop_model(
        self, *, ProjectName: str, ModelVersion: str, ClientToken: str | None = None
    ) -> dict[str, Any]:
        return self._call(
            "StopModel",
            {"ProjectName": ProjectName, "ModelVersion": ModelVersion},
            headers=self._token_header(ClientToken),
        )

    def detect_anomalies(
        self, *, ProjectName: str, ModelVersion: str, Body: Body, ContentType: str
    ) -> dict[str, Any]:
        data = Body.read() if hasattr(Body, "read") else bytes(Body)
        response = self._call(
            "DetectAnomalies",
            {"ProjectName": ProjectName, "ModelVersion": ModelVersion},
            raw_body=data,
            headers={"Content-Type": ContentType},
        )
        result = response.get("DetectAnomalyResult", {})
        if "AnomalyMask" in result:
            result["AnomalyMask"] = base64.b64decode(result["AnomalyMask"])
        return response


@overload
def client(
    home: str | Path | None = None, *, endpoint_url: None = None, **options: Any
) -> Client: ...


@overload
def client(home: None = None, *, endpoint_url: str, **options: Any) -> RemoteClient: ...


def client(
    home: str | Path | None = None,
    *,
    endpoint_url: str | None = None,
    **options: Any,
) -> Client | RemoteClient:
    """A Lookout for Vision client, called like ``boto3.client("lookoutvision")``.

    Without ``endpoint_url``: the in-process :class:`Client` on the registry at ``home``
    (``options``: ``hosting=HostingOptions(...)`` and :func:`openlookout.load_model` options for
    the models it starts). With ``endpoint_url``: a :class:`RemoteClient` for an
    ``openlookout serve`` at that address (``options``: ``aws_access_key_id``,
    ``aws_secret_access_key``, ``region_name``, ``timeout``).
    """
    if endpoint_url is not None:
        if home is not None:
            raise ValidationException("give either home (in-process) or endpoint_url, not both")
        return RemoteClient(endpoint_url, **options)
    return Client(home, **options)
