"""The model registry: Lookout for Vision projects and their numbered model versions, on disk.

Layout under the registry's home (``OPENLOOKOUT_HOME``, else ``$XDG_DATA_HOME/openlookout``, else
``~/.local/share/openlookout``)::

    projects/<ProjectName>/project.json          name, creation time, last version handed out
    projects/<ProjectName>/models/<N>/model.json  version, creation time, description
    projects/<ProjectName>/models/<N>/package/   the model package (manifest.json + ONNX)

Every change is atomic at the directory level: a version is assembled in a hidden staging
directory beside ``models/`` and renamed into place once complete (so a crash mid-import leaves
no half version, only a hidden leftover that the next change sweeps away), and deletions rename
the directory aside before removing it. Changes are serialised by an exclusive ``flock`` on
``<home>/.lock`` (between processes) and a thread lock (within one). Reads take no lock.

A process that hosts a model holds a shared ``flock`` on that version's ``model.json``; deleting
the version asks for an exclusive one, so a model hosted by *any* process (a server, a script
with an in-process client) cannot be deleted from another.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import ConflictException, ResourceNotFoundException, ValidationException
from .manifest import read_manifest

try:  # POSIX only; elsewhere the registry still works, without the cross-process guards.
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ARN_ACCOUNT",
    "ARN_REGION",
    "ModelRecord",
    "ProjectRecord",
    "Registry",
    "check_client_token",
    "check_description",
    "check_model_version",
    "check_project_name",
    "default_home",
]

# The service model's constraints (service-2.json shapes ProjectName, ModelVersion,
# ModelVersionNoLatest, ModelDescriptionMessage, ClientToken). botocore checks only minimum
# lengths, so patterns and maximum lengths are enforced here, for every caller.
PROJECT_NAME_PATTERN = r"[a-zA-Z0-9][a-zA-Z0-9_\-]*"
PROJECT_NAME_MAX = 255
MODEL_VERSION_PATTERN = r"([1-9][0-9]*|latest)"
MODEL_VERSION_NO_LATEST_PATTERN = r"([1-9][0-9]*)"
MODEL_VERSION_MAX = 10
DESCRIPTION_PATTERN = r"[0-9A-Za-z\.\-_]*"
DESCRIPTION_MAX = 500
CLIENT_TOKEN_PATTERN = r"[a-zA-Z0-9-]+"
CLIENT_TOKEN_MAX = 64

# ARNs name resources the way L4V did; there is no AWS account or region behind them.
ARN_REGION = "local"
ARN_ACCOUNT = "000000000000"

PROJECT_FILE = "project.json"
MODEL_FILE = "model.json"
PACKAGE_DIR = "package"
FORMAT_VERSION = 1
# Hidden names are never projects or versions: staging and trash directories use them.
_STAGING = ".staging-"
_TRASH = ".trash-"
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,9}")


def default_home() -> Path:
    """The registry directory used when none is given: ``OPENLOOKOUT_HOME``, else
    ``$XDG_DATA_HOME/openlookout``, else ``~/.local/share/openlookout``."""
    explicit = os.environ.get("OPENLOOKOUT_HOME")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "openlookout"


def _constraint_error(value: object, member: str, constraint: str) -> ValidationException:
    # The wording of AWS's own validation errors, which scripts sometimes log or match.
    return ValidationException(
        f"1 validation error detected: Value {value!r} at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _check_string(value: object, member: str, pattern: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise ValidationException(f"{member} must be a string, not {type(value).__name__}")
    if not 1 <= len(value) <= max_length:
        raise _constraint_error(
            value, member, f"Member must have length between 1 and {max_length}"
        )
    if not re.fullmatch(pattern, value):
        raise _constraint_error(
            value, member, f"Member must satisfy regular expression pattern: {pattern}"
        )
    return value


def check_project_name(name: object, member: str = "projectName") -> str:
    """``name`` if it is a valid ProjectName, else ``ValidationException``."""
    return _check_string(name, member, PROJECT_NAME_PATTERN, PROJECT_NAME_MAX)


def check_model_version(version: object, *, allow_latest: bool = True) -> str:
    """``version`` if it is a valid ModelVersion (``latest`` only where the operation takes it,
    i.e. everywhere but DeleteModel), else ``ValidationException``."""
    pattern = MODEL_VERSION_PATTERN if allow_latest else MODEL_VERSION_NO_LATEST_PATTERN
    return _check_string(version, "modelVersion", pattern, MODEL_VERSION_MAX)


def check_description(description: object) -> str:
    """``description`` if it is a valid model Description, else ``ValidationException``."""
    return _check_string(description, "description", DESCRIPTION_PATTERN, DESCRIPTION_MAX)


def check_client_token(token: object) -> str:
    """``token`` if it is a valid ClientToken (idempotency token), else ``ValidationException``."""
    return _check_string(token, "clientToken", CLIENT_TOKEN_PATTERN, CLIENT_TOKEN_MAX)


@dataclass(frozen=True)
class ProjectRecord:
    name: str
    created: float  # epoch seconds

    @property
    def arn(self) -> str:
        return f"arn:aws:lookoutvision:{ARN_REGION}:{ARN_ACCOUNT}:project/{self.name}"


@dataclass(frozen=True)
class ModelRecord:
    project: str
    version: int
    created: float  # epoch seconds
    directory: Path
    description: str | None = None

    @property
    def package(self) -> Path:
        """The model package directory (``manifest.json`` + ONNX file)."""
        return self.directory / PACKAGE_DIR

    @property
    def arn(self) -> str:
        return (
            f"arn:aws:lookoutvision:{ARN_REGION}:{ARN_ACCOUNT}:model/{self.project}/{self.version}"
        )

    @property
    def resource_id(self) -> str:
        """What errors about this model report as ResourceId: ``<ProjectName>/<version>``."""
        return f"{self.project}/{self.version}"


class HostingLease:
    """A shared lock on one model version, held by a process while it hosts that version, so that
    no process can delete it meanwhile. Released by :meth:`release` (or at process exit)."""

    def __init__(self, record: ModelRecord) -> None:
        self.record = record
        self._file: IO[bytes] | None = None
        try:
            self._file = open(record.directory / MODEL_FILE, "rb")  # noqa: SIM115 (held open)
        except FileNotFoundError:
            raise _model_not_found(record.project, record.version) from None
        if fcntl is not None:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                self.release()
                raise ConflictException(
                    f"model {record.resource_id} is being deleted",
                    resource_id=record.resource_id,
                    resource_type="MODEL",
                ) from None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def _project_not_found(name: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(
        f"project {name!r} does not exist", resource_id=name, resource_type="PROJECT"
    )


def _model_not_found(project: str, version: int | str) -> ResourceNotFoundException:
    return ResourceNotFoundException(
        f"model version {version} of project {project!r} does not exist",
        resource_id=f"{project}/{version}",
        resource_type="MODEL",
    )


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flushes every file and directory under ``root`` to disk, so that the rename that
    publishes it cannot outlive its contents in a power loss."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath), directory=True)


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f"{_STAGING}{uuid.uuid4().hex}-{path.name}")
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class Registry:
    """Projects and model versions under ``home`` (default :func:`default_home`). Thread-safe;
    several processes may share one home."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.projects_dir = self.home / "projects"
        self._thread_lock = threading.Lock()
        # `latest` is resolved on every DetectAnomalies that names it: cache the highest version
        # per project, keyed by the models directory's mtime (every import and delete renames an
        # entry in that directory, which updates it).
        self._latest_cache: dict[str, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"Registry({str(self.home)!r})"

    # ---- locking -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Serialises changes to the registry, between threads and between processes."""
        with self._thread_lock:
            self.projects_dir.mkdir(parents=True, exist_ok=True)
            with open(self.home / ".lock", "a+b") as lock_file:
                if fcntl is not None:
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
                yield  # the flock is dropped when the file closes

    @staticmethod
    def _sweep(directory: Path) -> None:
        """Removes staging and trash leftovers of interrupted changes. Only called while holding
        the change lock, so no change in progress owns them."""
        if not directory.is_dir():
            return
        for entry in directory.iterdir():
            if entry.name.startswith((_STAGING, _TRASH)):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _remove_directory(self, directory: Path) -> None:
        """Renames ``directory`` aside (atomic: it is gone for every reader at once), then
        deletes it."""
        trash = directory.parent / f"{_TRASH}{uuid.uuid4().hex}"
        os.rename(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # ---- projects ------------------------------------------------------------------------

    def _project_dir(self, name: str) -> Path:
        return self.projects_dir / check_project_name(name)

    def create_project(self, name: str) -> ProjectRecord:
        """Creates an empty project; ``ConflictException`` if one has that name."""
        directory = self._project_dir(name)
        with self._changing():
            self._sweep(self.projects_dir)
            if directory.exists():
                raise ConflictException(
                    f"project {name!r} already exists", resource_id=name, resource_type="PROJECT"
                )
            record = ProjectRecord(name=name, created=time.time())
            staging = self.projects_dir / f"{_STAGING}{uuid.uuid4().hex}"
            try:
                (staging / "models").mkdir(parents=True)
                _write_json_atomically(
                    staging / PROJECT_FILE,
                    {
                        "format_version": FORMAT_VERSION,
                        "ProjectName": name,
                        "CreationTimestamp": record.created,
                        "LastModelVersion": 0,
                    },
                )
                _fsync_tree(staging)
                os.rename(staging, directory)
                _fsync_path(self.projects_dir, directory=True)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return record

    def get_project(self, name: str) -> ProjectRecord:
        directory = self._project_dir(name)
        try:
            data = _read_json(directory / PROJECT_FILE)
        except FileNotFoundError:
            raise _project_not_found(name) from None
        return ProjectRecord(name=name, created=float(data["CreationTimestamp"]))

    def list_projects(self) -> list[ProjectRecord]:
        """All projects, by name."""
        if not self.projects_dir.is_dir():
            return []
        records = []
        for entry in sorted(os.listdir(self.projects_dir)):
            if entry.startswith("."):
                continue
            try:
                records.append(self.get_project(entry))
            except (ResourceNotFoundException, ValidationException):
                continue  # deleted meanwhile, or not a project directory
        return records

    def delete_project(self, name: str) -> ProjectRecord:
        """Deletes an empty project. As in L4V, a project that still has model versions cannot be
        deleted (``ConflictException``): delete its versions first."""
        with self._changing():
            record = self.get_project(name)
            versions = self._versions(name)
            if versions:
                raise ConflictException(
                    f"project {name!r} still has model versions "
                    f"{', '.join(map(str, versions))}: delete them first (DeleteModel)",
                    resource_id=name,
                    resource_type="PROJECT",
                )
            self._remove_directory(self._project_dir(name))
            self._latest_cache.pop(name, None)
        return record

    # ---- model versions ------------------------------------------------------------------

    def _models_dir(self, project: str) -> Path:
        return self._project_dir(project) / "models"

    def _versions(self, project: str) -> list[int]:
        """Version numbers of ``project``, ascending; ``ResourceNotFoundException`` if the project
        does not exist."""
        try:
            entries = os.listdir(self._models_dir(project))
        except FileNotFoundError:
            raise _project_not_found(project) from None
        return sorted(int(e) for e in entries if _VERSION_DIR.fullmatch(e))

    def import_model(
        self,
        project: str,
        package: str | os.PathLike[str],
        *,
        description: str | None = None,
        check: bool = True,
    ) -> ModelRecord:
        """Copies the model package directory ``package`` into ``project`` as its next version
        (one more than any version it ever had, so numbers are never reused). With ``check``
        (default) the copy is loaded once, which checks the manifest against the ONNX model;
        a package that does not load is not imported."""
        if description is not None:
            check_description(description)
        source = Path(package)
        read_manifest(source)  # a missing or bad manifest fails before anything is copied
        with self._changing():
            project_dir = self._project_dir(project)
            self.get_project(project)
            self._sweep(project_dir)
            staging = project_dir / f"{_STAGING}{uuid.uuid4().hex}"
            try:
                shutil.copytree(
                    source,
                    staging / PACKAGE_DIR,
                    ignore=shutil.ignore_patterns(".*", "__pycache__"),
                )
                if check:
                    from .model import load_model  # the native core, only when checking

                    load_model(staging / PACKAGE_DIR, intra_op_threads=1)
                project_data = _read_json(project_dir / PROJECT_FILE)
                versions = self._versions(project)
                version = max([int(project_data.get("LastModelVersion", 0)), *versions]) + 1
                created = time.time()
                metadata: dict[str, Any] = {
                    "format_version": FORMAT_VERSION,
                    "ModelVersion": str(version),
                    "CreationTimestamp": created,
                    "Source": str(source.resolve()),
                }
                if description is not None:
                    metadata["Description"] = description
                _write_json_atomically(staging / MODEL_FILE, metadata)
                _fsync_tree(staging)
                target = self._models_dir(project) / str(version)
                os.rename(staging, target)
                _fsync_path(target.parent, directory=True)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            # The version is published; remembering the number only keeps it from being reused
            # after a delete (a crash before this line is covered by the max() above).
            project_data["LastModelVersion"] = version
            _write_json_atomically(project_dir / PROJECT_FILE, project_data)
        return ModelRecord(project, version, created, target, description)

    def get_model(self, project: str, version: int) -> ModelRecord:
        """Model ``version`` of ``project``: ``ResourceNotFoundException`` with ResourceType
        PROJECT for an unknown project, MODEL for an unknown version."""
        directory = self._models_dir(project) / str(version)
        try:
            data = _read_json(directory / MODEL_FILE)
        except FileNotFoundError:
            if not (self._project_dir(project) / PROJECT_FILE).is_file():
                raise _project_not_found(project) from None
            raise _model_not_found(project, version) from None
        return ModelRecord(
            project=project,
            version=version,
            created=float(data["CreationTimestamp"]),
            directory=directory,
            description=data.get("Description"),
        )

    def list_models(self, project: str) -> list[ModelRecord]:
        """The versions of ``project``, newest first."""
        records = []
        for version in reversed(self._versions(project)):
            try:
                records.append(self.get_model(project, version))
            except ResourceNotFoundException:
                continue  # deleted meanwhile
        return records

    def latest_version(self, project: str) -> int:
        """The highest version of ``project`` (what ``latest`` means)."""
        models_dir = self._models_dir(project)
        try:
            stamp = os.stat(models_dir).st_mtime_ns
        except FileNotFoundError:
            raise _project_not_found(project) from None
        cached = self._latest_cache.get(project)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        versions = self._versions(project)
        if not versions:
            raise _model_not_found(project, "latest")
        self._latest_cache[project] = (stamp, versions[-1])
        return versions[-1]

    def resolve(self, project: str, version: str) -> ModelRecord:
        """The model named by a ModelVersion string (a number or ``latest``)."""
        check_model_version(version)
        number = self.latest_version(project) if version == "latest" else int(version)
        return self.get_model(project, number)

    def delete_model(self, project: str, version: int) -> ModelRecord:
        """Deletes model ``version``. ``ConflictException`` while any process hosts it."""
        with self._changing():
            record = self.get_model(project, version)
            with open(record.directory / MODEL_FILE, "rb") as model_file:
                if fcntl is not None:
                    try:
                        fcntl.flock(model_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise ConflictException(
                            f"model {record.resource_id} is hosted by an openlookout process: "
                            "stop it there first (StopModel)",
                            resource_id=record.resource_id,
                            resource_type="MODEL",
                        ) from None
                self._remove_directory(record.directory)
        return record

    def lease(self, record: ModelRecord) -> HostingLease:
        """Marks ``record`` as hosted by this process until the lease is released."""
        return HostingLease(record)
