"""Model hosting, as L4V's StartModel/StopModel had it: which model versions this process has
loaded, their status, and the inference workers and bounded queue of each.

Status moves as in the service model::

    TRAINED --StartModel--> STARTING_HOSTING --loaded--> HOSTED --StopModel--> STOPPING_HOSTING
                                     \\--load failed--> HOSTING_FAILED         (in-flight calls
                                                                                finish) --> TRAINED

Hosting lives in memory: it belongs to one process (a server, or a script's in-process client)
and ends with it. A model that no process hosts is ``TRAINED``, so after a restart every model
reads ``TRAINED`` until it is started again.

Inference units are inference workers: a hosted model runs its calls on a pool of
``MaxInferenceUnits`` threads (``MinInferenceUnits`` when no maximum is given) sharing one ONNX
Runtime session; the native core releases the GIL, so they run in parallel. Requests beyond the
busy workers wait in a queue of bounded length; when it is full, the next request is refused
with ``ThrottlingException`` and a ``Retry-After`` estimate instead of growing a backlog.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import (
    ConflictException,
    OpenLookoutError,
    ServiceQuotaExceededException,
    ThrottlingException,
    ValidationException,
)
from .model import Model, load_model
from .registry import HostingLease, ModelRecord, Registry

__all__ = [
    "HOSTED",
    "HOSTING_FAILED",
    "STARTING_HOSTING",
    "STOPPING_HOSTING",
    "TRAINED",
    "HostedModel",
    "Hosting",
    "HostingOptions",
]

log = logging.getLogger("openlookout.hosting")

TRAINED = "TRAINED"
STARTING_HOSTING = "STARTING_HOSTING"
HOSTED = "HOSTED"
HOSTING_FAILED = "HOSTING_FAILED"
STOPPING_HOSTING = "STOPPING_HOSTING"

T = TypeVar("T")


@dataclass
class HostingOptions:
    """How this process hosts models.

    ``max_queue``: requests per model that may wait for a busy worker before further ones are
    throttled. ``max_inference_units``: the largest Min/MaxInferenceUnits StartModel accepts
    (more is ``ServiceQuotaExceededException``). ``load_options``: keyword arguments for
    :func:`openlookout.load_model` (``providers``, ``max_body_bytes``, ...); unless it sets
    ``intra_op_threads``, each worker gets an equal share of the CPU cores.
    """

    max_queue: int = 64
    max_inference_units: int = 16
    load_options: dict[str, Any] = field(default_factory=dict)


def _positive_units(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationException(f"{name} must be an integer, not {value!r}")
    if value < 1:
        raise ValidationException(
            f"1 validation error detected: Value {value} at '{name}' failed to satisfy "
            "constraint: Member must have value greater than or equal to 1"
        )
    return value


class HostedModel:
    """One model version hosted by this process."""

    def __init__(
        self,
        record: ModelRecord,
        min_units: int,
        max_units: int | None,
        max_queue: int,
        lease: HostingLease,
    ) -> None:
        self.record = record
        self.min_units = min_units
        self.max_units = max_units
        self.workers = max_units if max_units is not None else min_units
        self.max_queue = max_queue
        self.status = STARTING_HOSTING
        self.status_message = "Loading the model."
        self.model: Model | None = None
        self._lease: HostingLease | None = lease
        self._executor: ThreadPoolExecutor | None = None
        self._condition = threading.Condition()
        self._pending = 0  # admitted and not finished: waiting + running
        self._running = 0
        # Mean seconds per call (exponentially weighted), for Retry-After estimates.
        self._mean_seconds = 0.05
        self.completed = 0
        self.throttled = 0

    def __repr__(self) -> str:
        return f"HostedModel({self.record.resource_id!r}, {self.status})"

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        """Requests admitted and waiting for a worker."""
        return max(0, self._pending - self._running)

    def _not_hosted(self) -> ConflictException:
        return ConflictException(
            f"model {self.record.resource_id} is not hosted (status {self.status}): "
            "call StartModel and wait for HOSTED",
            resource_id=self.record.resource_id,
            resource_type="MODEL",
        )

    def _retry_after(self) -> int:
        """Seconds until the queue has likely drained by one worker-turn."""
        backlog = self._pending / max(1, self.workers)
        return int(min(60, max(1, math.ceil(backlog * self._mean_seconds))))

    def _refusal(self) -> OpenLookoutError | None:
        """Why a call would be refused now, if it would. Called with the condition held."""
        if self.status != HOSTED or self.model is None:
            return self._not_hosted()
        if self._pending >= self.workers + self.max_queue:
            self.throttled += 1
            return ThrottlingException(
                f"model {self.record.resource_id} has {self._pending} requests in progress "
                f"({self.workers} inference workers, queue of {self.max_queue}): retry later",
                retry_after=self._retry_after(),
                quota_code="model-queue",
            )
        return None

    def check_capacity(self) -> None:
        """Raises what :meth:`submit` would raise now, admitting nothing: lets the server refuse
        a request before reading its body."""
        with self._condition:
            refusal = self._refusal()
        if refusal is not None:
            raise refusal

    def _finish(self, seconds: float) -> None:
        with self._condition:
            self._running -= 1
            self._pending -= 1
            self.completed += 1
            self._mean_seconds += 0.1 * (seconds - self._mean_seconds)
            if self._pending == 0:
                self._condition.notify_all()

    def _run(self, model: Model, work: Callable[[Model], T]) -> T:
        with self._condition:
            self._running += 1
        started = time.perf_counter()
        try:
            return work(model)
        finally:
            self._finish(time.perf_counter() - started)

    def submit(self, work: Callable[[Model], T]) -> Future[T]:
        """Runs ``work(model)`` on one of the model's workers. Raises ``ConflictException`` when
        the model is not HOSTED and ``ThrottlingException`` when its queue is full."""
        with self._condition:
            refusal = self._refusal()
            if refusal is not None:
                raise refusal
            self._pending += 1
            model, executor = self.model, self._executor
            assert model is not None
            assert executor is not None
        try:
            future = executor.submit(self._run, model, work)
        except RuntimeError:  # the executor was shut down under us (close() timed out)
            self._forget()
            raise self._not_hosted() from None
        future.add_done_callback(self._forget_if_cancelled)
        return future

    def _forget(self) -> None:
        with self._condition:
            self._pending -= 1
            if self._pending == 0:
                self._condition.notify_all()

    def _forget_if_cancelled(self, future: Future[Any]) -> None:
        # A call cancelled while it waited for a worker (the server's handler was cancelled, or
        # the executor shut down with cancel_futures) never reaches _run, whose _finish counts it
        # out: without this it stayed in _pending for ever, the queue gauge never returned to
        # zero, throttling counted a ghost, and StopModel's drain waited for it until timeout.
        if future.cancelled():
            self._forget()

    @contextlib.contextmanager
    def inline(self) -> Iterator[Model]:
        """The model, for a call made on the caller's own thread (the in-process client): it
        counts as in flight, so StopModel waits for it, but it takes no worker and no queue
        place, since the caller's threads are its workers."""
        with self._condition:
            if self.status != HOSTED or self.model is None:
                raise self._not_hosted()
            self._pending += 1
            self._running += 1
            model = self.model
        started = time.perf_counter()
        try:
            yield model
        finally:
            self._finish(time.perf_counter() - started)

    # ---- transitions (called by Hosting) ----------------------------------------------------

    def _loaded(self, model: Model) -> None:
        with self._condition:
            self.model = model
            self._executor = ThreadPoolExecutor(
                max_workers=self.workers,
                thread_name_prefix=f"openlookout-{self.record.project}-{self.record.version}",
            )
            self.status = HOSTED
            self.status_message = (
                f"The model is hosted with {self.workers} inference worker"
                f"{'s' if self.workers != 1 else ''}."
            )

    def _failed(self, error: BaseException) -> None:
        with self._condition:
            self.status = HOSTING_FAILED
            message = error.message if isinstance(error, OpenLookoutError) else str(error)
            self.status_message = f"Hosting failed: {message or type(error).__name__}"
        self._release_lease()

    def _release_lease(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def _begin_stop(self) -> None:
        with self._condition:
            self.status = STOPPING_HOSTING
            self.status_message = "Stopping: waiting for in-flight requests to finish."

    def _drain_and_unload(self, timeout: float | None = None) -> None:
        """Waits for the calls in flight, then drops the session and the workers."""
        with self._condition:
            drained = self._condition.wait_for(lambda: self._pending == 0, timeout)
            executor, self._executor = self._executor, None
            self.model = None
        if executor is not None:
            executor.shutdown(wait=drained)
        self._release_lease()


class Hosting:
    """The models this process hosts, keyed by (project, version)."""

    def __init__(self, registry: Registry, options: HostingOptions | None = None) -> None:
        self.registry = registry
        self.options = options or HostingOptions()
        self._models: dict[tuple[str, int], HostedModel] = {}
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()

    def get(self, project: str, version: int) -> HostedModel | None:
        return self._models.get((project, version))

    def models(self) -> list[HostedModel]:
        with self._lock:
            return list(self._models.values())

    def status(self, record: ModelRecord) -> HostedModel | None:
        """The hosting entry of ``record``, or None when this process does not host it
        (status TRAINED)."""
        return self._models.get((record.project, record.version))

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(thread)
        thread.start()

    def start(self, record: ModelRecord, min_units: object, max_units: object = None) -> str:
        """StartModel: begins loading ``record`` in the background and returns its hosting status
        (STARTING_HOSTING, or HOSTED when it already was, with the same units)."""
        minimum = _positive_units("minInferenceUnits", min_units)
        maximum = None if max_units is None else _positive_units("maxInferenceUnits", max_units)
        if maximum is not None and maximum < minimum:
            raise ValidationException(
                f"MaxInferenceUnits ({maximum}) must not be less than MinInferenceUnits ({minimum})"
            )
        quota = self.options.max_inference_units
        if max(minimum, maximum or 0) > quota:
            raise ServiceQuotaExceededException(
                f"this server hosts a model with at most {quota} inference units "
                f"(openlookout serve --max-inference-units)",
                resource_id=record.resource_id,
                resource_type="MODEL",
                quota_code="inference-units",
            )
        key = (record.project, record.version)
        with self._lock:
            existing = self._models.get(key)
            if existing is not None:
                if existing.status in (STARTING_HOSTING, HOSTED):
                    if (existing.min_units, existing.max_units) == (minimum, maximum):
                        return existing.status  # a repeated StartModel changes nothing
                    raise ConflictException(
                        f"model {record.resource_id} is already {existing.status} with "
                        f"MinInferenceUnits={existing.min_units}, "
                        f"MaxInferenceUnits={existing.max_units}: stop it first to change them",
                        resource_id=record.resource_id,
                        resource_type="MODEL",
                    )
                if existing.status == STOPPING_HOSTING:
                    raise ConflictException(
                        f"model {record.resource_id} is stopping; start it once it is TRAINED",
                        resource_id=record.resource_id,
                        resource_type="MODEL",
                    )
                # HOSTING_FAILED: start afresh.
            hosted = HostedModel(
                record, minimum, maximum, self.options.max_queue, self.registry.lease(record)
            )
            self._models[key] = hosted
        self._spawn(lambda: self._load(hosted), f"openlookout-start-{record.resource_id}")
        # Not hosted.status: a tiny model may be loaded already, but StartModel answers with the
        # state it put the model in, as L4V did.
        return STARTING_HOSTING

    def _load(self, hosted: HostedModel) -> None:
        options = dict(self.options.load_options)
        if "intra_op_threads" not in options and hosted.workers > 1:
            options["intra_op_threads"] = max(1, (os.cpu_count() or 1) // hosted.workers)
        try:
            model = load_model(hosted.record.package, **options)
        except Exception as error:  # every failure becomes HOSTING_FAILED with its message
            log.warning("hosting %s failed: %s", hosted.record.resource_id, error)
            hosted._failed(error)
            return
        hosted._loaded(model)
        log.info("hosted %s with %d workers", hosted.record.resource_id, hosted.workers)

    def stop(self, record: ModelRecord) -> str:
        """StopModel: refuses new calls at once, unloads once the calls in flight have finished
        (in the background), and returns STOPPING_HOSTING."""
        key = (record.project, record.version)
        with self._lock:
            hosted = self._models.get(key)
            if hosted is None:
                raise ConflictException(
                    f"model {record.resource_id} is not hosted (status {TRAINED})",
                    resource_id=record.resource_id,
                    resource_type="MODEL",
                )
            if hosted.status == STARTING_HOSTING:
                raise ConflictException(
                    f"model {record.resource_id} is starting; stop it once it is HOSTED",
                    resource_id=record.resource_id,
                    resource_type="MODEL",
                )
            if hosted.status == STOPPING_HOSTING:
                return STOPPING_HOSTING
            if hosted.status == HOSTING_FAILED:
                del self._models[key]  # nothing loaded: back to TRAINED at once
                return STOPPING_HOSTING
            hosted._begin_stop()

        def unload() -> None:
            hosted._drain_and_unload()
            with self._lock:
                if self._models.get(key) is hosted:
                    del self._models[key]
            log.info("stopped %s", record.resource_id)

        self._spawn(unload, f"openlookout-stop-{record.resource_id}")
        return STOPPING_HOSTING

    def close(self, timeout: float = 30.0) -> None:
        """Stops every model: waits up to ``timeout`` seconds for calls in flight and for
        loads in progress."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            hosted_models = list(self._models.values())
            self._models.clear()
        for hosted in hosted_models:
            hosted._begin_stop()
            hosted._drain_and_unload(max(0.0, deadline - time.monotonic()))
