"""The HTTP endpoint: Lookout for Vision's REST-JSON protocol on the service model's paths, served
with aiohttp, answered by the same :class:`openlookout.client.Client` as in-process calls.

Threads: the event loop parses requests and writes responses only. Registry and lifecycle calls
(Describe/List/Create/Delete/Start/Stop) run on a small control pool; DetectAnomalies runs on the
hosted model's own inference workers (the native core releases the GIL), behind its bounded
queue. So Describe and List stay quick while every worker is busy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import __version__
from ..client import Client
from ..errors import (
    InternalServerException,
    OpenLookoutError,
    ValidationException,
)
from ..hosting import HostingOptions
from ..model import DEFAULT_LIMITS, Model
from . import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, sigv4
from .metrics import Metrics

__all__ = ["Server", "ServerConfig", "running_server"]

log = logging.getLogger("openlookout.server")

API_PREFIX = "2020-11-20"
# JSON request bodies (CreateProject, StartModel) are a few dozen bytes.
MAX_JSON_BODY_BYTES = 64 * 1024
# Bodies larger than this are hashed for SigV4 off the event loop.
_HASH_OFF_LOOP_BYTES = 256 * 1024
# The status recorded in the metrics for a request whose client went away before its answer
# (nginx's "client closed request"); no response is written.
CLIENT_CLOSED_STATUS = 499


@dataclass
class ServerConfig:
    """``openlookout serve``'s settings."""

    host: str = "127.0.0.1"
    port: int = 8080
    home: str | Path | None = None
    # Largest DetectAnomalies body; refused with ValidationException (400) before it is read.
    max_body_bytes: int = DEFAULT_LIMITS["max_body_bytes"]
    # Access key id -> secret key. Empty: any Authorization (or none) is accepted.
    auth_keys: dict[str, str] = field(default_factory=dict)
    hosting: HostingOptions = field(default_factory=HostingOptions)
    control_threads: int = 4
    access_log: bool = False
    # Seconds a connection may stay open without a request being handled on it: from its accept,
    # or from its previous answer, to the end of the next request's headers. A client that is
    # idle or trickles its headers (slow loris) is disconnected after this.
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    # Seconds to receive a whole request body once its headers are in; a slower body is refused
    # (400 ValidationException) and the connection closed.
    body_timeout: float = DEFAULT_BODY_TIMEOUT


class _Route:
    __slots__ = ("method", "operation", "segments")

    def __init__(self, method: str, operation: str, pattern: str) -> None:
        self.method = method
        self.operation = operation
        self.segments = pattern.strip("/").split("/")


# The service model's operations: method, path under /2020-11-20 ({} marks a parameter).
_ROUTES = [
    _Route("POST", "CreateProject", "projects"),
    _Route("GET", "ListProjects", "projects"),
    _Route("GET", "DescribeProject", "projects/{projectName}"),
    _Route("DELETE", "DeleteProject", "projects/{projectName}"),
    _Route("GET", "ListModels", "projects/{projectName}/models"),
    _Route("GET", "DescribeModel", "projects/{projectName}/models/{modelVersion}"),
    _Route("DELETE", "DeleteModel", "projects/{projectName}/models/{modelVersion}"),
    _Route("POST", "StartModel", "projects/{projectName}/models/{modelVersion}/start"),
    _Route("POST", "StopModel", "projects/{projectName}/models/{modelVersion}/stop"),
    _Route("POST", "DetectAnomalies", "projects/{projectName}/models/{modelVersion}/detect"),
]


class _UnknownOperation(OpenLookoutError):
    code = "UnknownOperationException"
    http_status = 404


class _MethodNotAllowed(OpenLookoutError):
    code = "MethodNotAllowedException"
    http_status = 405


class _BodyTimeout(ValidationException):
    pass


class _ClientGone(Exception):
    """The client closed the connection before its request body was in: nothing to answer."""


def _check_content_type(content_type: str) -> None:
    # Refuses before the body is read what Model.detect would refuse after: header bytes that are
    # not UTF-8 reach us as surrogate escapes (content types are ASCII tokens, RFC 9110).
    if not 1 <= len(content_type) <= 255:
        raise ValidationException(
            "Content-Type must name the image format: image/png or image/jpeg"
        )
    if not content_type.isascii() or not content_type.isprintable():
        raise ValidationException(
            f"Content-Type {content_type!r} is not printable ASCII: use image/png or image/jpeg"
        )


def _match(method: str, raw_path: str) -> tuple[str, dict[str, str]]:
    """The operation and URL-decoded path parameters of a request."""
    segments = raw_path.strip("/").split("/")
    if not segments or segments[0] != API_PREFIX:
        raise _UnknownOperation(f"no operation at {raw_path}")
    segments = segments[1:]
    path_matched = False
    for route in _ROUTES:
        if len(route.segments) != len(segments):
            continue
        params: dict[str, str] = {}
        for pattern, value in zip(route.segments, segments, strict=True):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = urllib.parse.unquote(value)
            elif pattern != value:
                break
        else:
            path_matched = True
            if route.method == method:
                return route.operation, params
    if path_matched:
        raise _MethodNotAllowed(f"{method} is not allowed on {raw_path}")
    raise _UnknownOperation(f"no operation at {method} {raw_path}")


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.timestamp()  # rest-json timestamps: epoch seconds, a JSON number
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=_json_default).encode()


def _detect_body(model: Model, data: bytes, content_type: str) -> bytes:
    """Runs on an inference worker: detection and its JSON (the mask base64-encoded), so the event
    loop only writes bytes."""
    result = model.detect(data, content_type)
    mask = result.get("AnomalyMask")
    if mask is not None:
        result["AnomalyMask"] = base64.b64encode(mask).decode("ascii")
    return _dumps({"DetectAnomalyResult": result})


def _error_response(error: OpenLookoutError, request_id: str) -> web.Response:
    # botocore reads the error name from x-amzn-ErrorType and the message from "message" or
    # "Message"; the other members of the error shape come from the body (and Retry-After).
    body: dict[str, Any] = {"message": error.message, "Message": error.message}
    if error.resource_id is not None:
        body["ResourceId"] = error.resource_id
    if error.resource_type is not None:
        body["ResourceType"] = error.resource_type
    if error.quota_code is not None:
        body["QuotaCode"] = error.quota_code
        body["ServiceCode"] = "lookoutvision"
    headers = {"x-amzn-ErrorType": error.code, "x-amzn-RequestId": request_id}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return web.Response(
        status=error.http_status,
        body=_dumps(body),
        content_type="application/json",
        headers=headers,
    )


class Server:
    """One ``openlookout serve``: an aiohttp application around a :class:`Client`.

    ``await start()`` binds (``port=0`` picks a free port; :attr:`url` tells which),
    ``await stop()`` stops accepting, finishes the requests in flight and stops every model.
    :meth:`run` does both around a wait for SIGINT/SIGTERM; :func:`running_server` runs one in a
    background thread.
    """

    def __init__(self, config: ServerConfig | None = None, client: Client | None = None) -> None:
        self.config = config or ServerConfig()
        hosting = self.config.hosting
        # The model's own body check must not be stricter than the server's.
        hosting.load_options.setdefault("max_body_bytes", self.config.max_body_bytes)
        self.client = client or Client(self.config.home, hosting=hosting)
        self.metrics = Metrics()
        self.url = ""
        self._runner: web.AppRunner | None = None
        # Header deadline bookkeeping (event loop only): connections with a request in our
        # handler, and when each other connection was first seen idle.
        self._busy: dict[web.RequestHandler, int] = {}
        self._idle_since: dict[web.RequestHandler, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._control = ThreadPoolExecutor(
            max_workers=self.config.control_threads, thread_name_prefix="openlookout-control"
        )
        self._handlers: dict[
            str, Callable[[web.Request, dict[str, str], bytes], Awaitable[web.Response]]
        ] = {
            "CreateProject": self._create_project,
            "ListProjects": self._list_projects,
            "DescribeProject": self._describe_project,
            "DeleteProject": self._delete_project,
            "ListModels": self._list_models,
            "DescribeModel": self._describe_model,
            "DeleteModel": self._delete_model,
            "StartModel": self._start_model,
            "StopModel": self._stop_model,
            "DetectAnomalies": self._detect_anomalies,
        }

    # ---- life ----------------------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._handle, expect_handler=self._expect)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.application(),
            handle_signals=False,
            access_log=log if self.config.access_log else None,
            # aiohttp's own idle timer; recent versions also start it on accept. The sweeper
            # below enforces the header deadline on every aiohttp version >= 3.9.
            keepalive_timeout=self.config.header_timeout,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle_connections())
        log.info("openlookout %s serving %s on %s", __version__, self.client.registry, self.url)

    async def _sweep_idle_connections(self) -> None:
        """Closes connections that have had no request in the handler for ``header_timeout``
        seconds. aiohttp before 3.14 waits for a request's headers without any limit, so a client
        trickling header bytes (or sending none) held its connection forever; a request being
        handled (body read, inference, answer) is never cut here: its body has its own deadline."""
        timeout = self.config.header_timeout
        interval = min(1.0, timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            server = self._runner.server if self._runner is not None else None
            if server is None:
                continue
            now = loop.time()
            live = set(server.connections)
            for gone in [handler for handler in self._idle_since if handler not in live]:
                del self._idle_since[gone]
            for handler in live:
                if handler in self._busy:
                    continue
                since = self._idle_since.setdefault(handler, now)
                if now - since >= timeout:
                    log.debug("closing a connection with no request for %.0f s", now - since)
                    del self._idle_since[handler]
                    handler.force_close()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.client.close)
        self._control.shutdown(wait=True)

    def run(self, ready: Callable[[Server], None] | None = None) -> None:
        """Serves until SIGINT or SIGTERM. ``ready`` is called once the socket is bound."""
        import signal

        async def main() -> None:
            await self.start()
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):  # not on Windows
                    loop.add_signal_handler(signum, stopping.set)
            if ready is not None:
                ready(self)
            try:
                await stopping.wait()
            finally:
                log.info("stopping: finishing requests in flight")
                await self.stop()

        asyncio.run(main())

    # ---- plumbing ------------------------------------------------------------------------

    async def _control_call(
        self, method: Callable[..., dict[str, Any]], **kwargs: Any
    ) -> web.Response:
        """Runs a client method on the control pool and writes its answer."""
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._control, functools.partial(method, **kwargs))
        status = answer.pop("ResponseMetadata", {}).get("HTTPStatusCode", 200)
        return web.Response(status=status, body=_dumps(answer), content_type="application/json")

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse an oversized body before the client sends it."""
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            return _error_response(self._too_large(length), str(uuid.uuid4()))
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    def _too_large(self, length: int | None) -> ValidationException:
        size = f"{length} bytes" if length is not None else "larger"
        return ValidationException(
            f"request body is {size}; the limit is {self.config.max_body_bytes} bytes "
            "(openlookout serve --max-body-bytes)"
        )

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        """The request body, refused with ValidationException as soon as it is known to exceed
        ``limit`` (from Content-Length before reading anything, else while streaming) or when it
        is not in within ``body_timeout`` seconds; :class:`_ClientGone` when the client closed
        the connection before sending it all."""
        timeout = self.config.body_timeout
        try:
            return await asyncio.wait_for(self._read_body_unbounded(request, limit), timeout)
        except asyncio.TimeoutError:
            raise _BodyTimeout(
                f"request body was not received within {timeout:g} seconds "
                "(openlookout serve --body-timeout)"
            ) from None
        except ConnectionError as error:  # aiohttp: the connection was lost mid-body
            raise _ClientGone(str(error)) from None

    async def _read_body_unbounded(self, request: web.Request, limit: int) -> bytes:
        length = request.content_length
        if length is not None:
            if length > limit:
                raise self._too_large(length)
            if length == 0:
                return b""
            try:
                return await request.content.readexactly(length)
            except asyncio.IncompleteReadError:
                raise ValidationException("request body ended before Content-Length") from None
        received = bytearray()
        async for chunk in request.content.iter_any():
            received += chunk
            if len(received) > limit:
                raise self._too_large(None)
        return bytes(received)

    async def _authenticate(self, request: web.Request, body: bytes) -> None:
        headers = {name.lower(): ",".join(request.headers.getall(name)) for name in request.headers}
        if len(body) > _HASH_OFF_LOOP_BYTES:
            loop = asyncio.get_running_loop()
            digest = await loop.run_in_executor(
                self._control, lambda: hashlib.sha256(body).hexdigest()
            )
        else:
            digest = hashlib.sha256(body).hexdigest()
        sigv4.verify(
            request.method,
            request.rel_url.raw_path,
            request.rel_url.raw_query_string,
            headers,
            digest,
            self.config.auth_keys,
        )

    def _precheck_auth(self, request: web.Request) -> None:
        """The signature checks that need no body, so an unsigned upload is refused unread."""
        headers = {"x-amz-date": request.headers.get("X-Amz-Date", "")}
        authorization = sigv4.parse_authorization(request.headers.get("Authorization"))
        sigv4.check_header(authorization, headers, self.config.auth_keys)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        protocol = request.protocol
        self._busy[protocol] = self._busy.get(protocol, 0) + 1
        self._idle_since.pop(protocol, None)
        try:
            return await self._handle_request(request)
        finally:
            count = self._busy.pop(protocol) - 1
            if count:
                self._busy[protocol] = count  # pipelined requests
            else:
                self._idle_since[protocol] = asyncio.get_running_loop().time()

    async def _handle_request(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        operation = "Unknown"
        try:
            raw_path = request.rel_url.raw_path
            if raw_path in ("/health", "/metrics") and request.method in ("GET", "HEAD"):
                operation = raw_path[1:]
                response = self._health() if raw_path == "/health" else self._metrics()
            else:
                operation, params = _match(request.method, raw_path)
                if self.config.auth_keys:
                    self._precheck_auth(request)
                limit = (
                    self.config.max_body_bytes
                    if operation == "DetectAnomalies"
                    else MAX_JSON_BODY_BYTES
                )
                if operation == "DetectAnomalies" and not self.config.auth_keys:
                    # Throttle before the body is read, so refused uploads take no memory. (With
                    # --auth the signature, which covers the body, is verified first, so that
                    # unsigned callers learn nothing about projects and models.)
                    self._admission_precheck(request, params)
                body = await self._read_body(request, limit)
                if self.config.auth_keys:
                    await self._authenticate(request, body)
                response = await self._handlers[operation](request, params, body)
        except _ClientGone as gone:
            # Not a server fault: nothing was admitted (the body is read before any work is
            # submitted), nobody is left to answer, and it must not count as a 500.
            log.debug("%s: client closed the connection mid-body (%s)", operation, gone)
            self.metrics.observe(operation, CLIENT_CLOSED_STATUS, time.perf_counter() - started)
            response = web.Response(status=400)
            response.force_close()
            return response
        except OpenLookoutError as error:
            response = _error_response(error, request_id)
            if isinstance(error, _BodyTimeout):
                # The rest of a body that was too slow is not worth waiting for either (aiohttp
                # would otherwise go on reading and discarding it).
                response.force_close()
        except Exception as error:  # a bug: answered as the service model's fault
            log.exception("%s failed", operation)
            response = _error_response(
                InternalServerException(f"internal error: {type(error).__name__}: {error}"),
                request_id,
            )
        response.headers["x-amzn-RequestId"] = request_id
        self.metrics.observe(operation, response.status, time.perf_counter() - started)
        return response

    def _health(self) -> web.Response:
        models = [
            {
                "ProjectName": hosted.record.project,
                "ModelVersion": str(hosted.record.version),
                "Status": hosted.status,
            }
            for hosted in self.client.hosting.models()
        ]
        return web.Response(
            body=_dumps({"status": "ok", "version": __version__, "models": models}),
            content_type="application/json",
        )

    def _metrics(self) -> web.Response:
        return web.Response(
            text=self.metrics.render(self.client.hosting),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    @staticmethod
    def _query(request: web.Request) -> dict[str, Any]:
        query = urllib.parse.parse_qs(request.rel_url.raw_query_string, keep_blank_values=True)
        result: dict[str, Any] = {}
        if "nextToken" in query:
            result["NextToken"] = query["nextToken"][0]
        if "maxResults" in query:
            text = query["maxResults"][0]
            try:
                result["MaxResults"] = int(text)
            except ValueError:
                raise ValidationException(f"maxResults must be an integer, not {text!r}") from None
        return result

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body) if body else {}
        except ValueError as error:
            raise ValidationException(f"request body is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ValidationException("request body must be a JSON object")
        return data

    @staticmethod
    def _client_token(request: web.Request) -> dict[str, str]:
        token = request.headers.get("X-Amzn-Client-Token")
        return {"ClientToken": token} if token is not None else {}

    # ---- operations ----------------------------------------------------------------------

    async def _create_project(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        data = self._json(body)
        if "ProjectName" not in data:
            raise ValidationException("ProjectName is required")
        return await self._control_call(
            self.client.create_project,
            ProjectName=data["ProjectName"],
            **self._client_token(request),
        )

    async def _list_projects(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        return await self._control_call(self.client.list_projects, **self._query(request))

    async def _describe_project(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        return await self._control_call(
            self.client.describe_project, ProjectName=params["projectName"]
        )

    async def _delete_project(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        return await self._control_call(
            self.client.delete_project,
            ProjectName=params["projectName"],
            **self._client_token(request),
        )

    async def _list_models(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        return await self._control_call(
            self.client.list_models, ProjectName=params["projectName"], **self._query(request)
        )

    async def _describe_model(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        return await self._control_call(
            self.client.describe_model,
            ProjectName=params["projectName"],
            ModelVersion=params["modelVersion"],
        )

    async def _delete_model(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        return await self._control_call(
            self.client.delete_model,
            ProjectName=params["projectName"],
            ModelVersion=params["modelVersion"],
            **self._client_token(request),
        )

    async def _start_model(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        data = self._json(body)
        if "MinInferenceUnits" not in data:
            raise ValidationException("MinInferenceUnits is required")
        return await self._control_call(
            self.client.start_model,
            ProjectName=params["projectName"],
            ModelVersion=params["modelVersion"],
            MinInferenceUnits=data["MinInferenceUnits"],
            MaxInferenceUnits=data.get("MaxInferenceUnits"),
            **self._client_token(request),
        )

    async def _stop_model(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        return await self._control_call(
            self.client.stop_model,
            ProjectName=params["projectName"],
            ModelVersion=params["modelVersion"],
            **self._client_token(request),
        )

    def _admission_precheck(self, request: web.Request, params: dict[str, str]) -> None:
        _check_content_type(request.headers.get("Content-Type", ""))
        hosted = self.client.hosted_model(params["projectName"], params["modelVersion"])
        hosted.check_capacity()

    async def _detect_anomalies(
        self, request: web.Request, params: dict[str, str], body: bytes
    ) -> web.Response:
        hosted = self.client.hosted_model(params["projectName"], params["modelVersion"])
        content_type = request.headers.get("Content-Type", "")
        # Model.detect refuses a bad content type itself (with --auth the precheck is skipped).
        future = hosted.submit(
            functools.partial(_detect_body, data=body, content_type=content_type)
        )
        payload = await asyncio.wrap_future(future)
        return web.Response(body=payload, content_type="application/json")


@contextlib.contextmanager
def running_server(
    config: ServerConfig | None = None, client: Client | None = None
) -> Iterator[Server]:
    """A :class:`Server` serving from a background thread (its own event loop) for the duration
    of the ``with`` block; ``server.url`` is its address. For tests and notebooks."""
    server = Server(config, client)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="openlookout-server", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
        yield server
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
