"""``openlookout project ...`` and ``openlookout model ...``: the registry of projects and model
versions, and hosting.

Commands act on the registry directory (``--home``, ``OPENLOOKOUT_HOME``, else the user's data
directory) in this process, or, with ``--endpoint URL`` (``OPENLOOKOUT_ENDPOINT``), through a
running ``openlookout serve``. Hosting lives in the serving process, so ``model start`` and
``model stop`` always go to a server (``--endpoint``, default ``http://127.0.0.1:8080``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..client import Client, RemoteClient
from ..errors import OpenLookoutError, ValidationException
from ..hosting import HOSTED, HOSTING_FAILED, STARTING_HOSTING, STOPPING_HOSTING, TRAINED
from .anomalib import add_model_import_anomalib

__all__ = ["register"]

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
Lookout = Client | RemoteClient


def _common(parser: argparse.ArgumentParser, *, remote_only: bool = False) -> None:
    if not remote_only:
        parser.add_argument(
            "--home",
            help="registry directory (default: $OPENLOOKOUT_HOME, else "
            "$XDG_DATA_HOME/openlookout or ~/.local/share/openlookout)",
        )
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("OPENLOOKOUT_ENDPOINT")
        or (DEFAULT_ENDPOINT if remote_only else None),
        help="act through the openlookout server at this URL "
        + (
            f"(default: $OPENLOOKOUT_ENDPOINT, else {DEFAULT_ENDPOINT})"
            if remote_only
            else "instead of on the registry directory (default: $OPENLOOKOUT_ENDPOINT)"
        ),
    )
    parser.add_argument(
        "--auth-key",
        metavar="ACCESS:SECRET",
        help="sign requests to the server with these keys (default: $AWS_ACCESS_KEY_ID and "
        "$AWS_SECRET_ACCESS_KEY when set)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def _project_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", "--project-name", dest="project", required=True)


def _version_argument(parser: argparse.ArgumentParser, *, allow_latest: bool = True) -> None:
    parser.add_argument(
        "--model-version",
        dest="model_version",
        required=True,
        help="model version number" + (" or 'latest'" if allow_latest else ""),
    )


def register(subparsers: Any) -> None:
    project = subparsers.add_parser(
        "project",
        help="create, list, describe and delete projects",
        description="Projects hold numbered model versions, as in Lookout for Vision.",
    )
    project_commands = project.add_subparsers(dest="project_command", metavar="COMMAND")
    create = project_commands.add_parser("create", help="create an empty project")
    create.add_argument("name", metavar="NAME", help="[a-zA-Z0-9][a-zA-Z0-9_-]*, up to 255")
    list_projects = project_commands.add_parser("list", help="list projects")
    describe = project_commands.add_parser("describe", help="describe a project and its models")
    describe.add_argument("name", metavar="NAME")
    delete = project_commands.add_parser(
        "delete", help="delete a project (it must have no model versions left)"
    )
    delete.add_argument("name", metavar="NAME")
    for command, handler in (
        (create, _project_create),
        (list_projects, _project_list),
        (describe, _project_describe),
        (delete, _project_delete),
    ):
        _common(command)
        command.set_defaults(handler=handler)
    project.set_defaults(handler=lambda args: _usage(project))

    model = subparsers.add_parser(
        "model",
        help="import, list, describe, start, stop and delete model versions",
        description="Model versions are model packages (manifest.json + ONNX) imported into a "
        "project; a server hosts them between `model start` and `model stop`.",
    )
    model_commands = model.add_subparsers(dest="model_command", metavar="COMMAND")
    import_ = model_commands.add_parser(
        "import",
        help="import a model package as the project's next version",
        description="Copies a model package directory into the project as its next version "
        "(numbers are never reused), after checking that it loads. The copy is atomic: an "
        "interrupted import leaves no version behind.",
    )
    import_.add_argument(
        "package", metavar="PACKAGE", help="model package directory, or a bundled model's name"
    )
    _project_argument(import_)
    import_.add_argument("--description", help="model description ([0-9A-Za-z.-_]*, up to 500)")
    import_.add_argument(
        "--no-check", action="store_true", help="do not load the package before importing it"
    )
    import_.add_argument("--home", help="registry directory")
    import_.add_argument("--json", action="store_true", help="print the new version as JSON")
    import_.set_defaults(handler=_model_import)
    add_model_import_anomalib(model_commands)  # `model import-anomalib`, in cli/anomalib.py

    list_models = model_commands.add_parser("list", help="list a project's model versions")
    _project_argument(list_models)
    _common(list_models)
    list_models.set_defaults(handler=_model_list)

    describe_model = model_commands.add_parser("describe", help="describe a model version")
    _project_argument(describe_model)
    _version_argument(describe_model)
    _common(describe_model)
    describe_model.set_defaults(handler=_model_describe)

    start = model_commands.add_parser(
        "start",
        help="host a model version in a running server (StartModel)",
        description="Asks the server to load the model (StartModel); the model is HOSTED once "
        "loaded. Inference units are the server's concurrent inference workers for the model.",
    )
    _project_argument(start)
    _version_argument(start)
    start.add_argument("--min-inference-units", type=int, default=1, help="default: 1")
    start.add_argument(
        "--max-inference-units", type=int, help="inference workers (default: the minimum)"
    )
    start.add_argument("--wait", action="store_true", help="wait until HOSTED (or failed)")
    _common(start, remote_only=True)
    start.set_defaults(handler=_model_start)

    stop = model_commands.add_parser(
        "stop", help="stop hosting a model version in a running server (StopModel)"
    )
    _project_argument(stop)
    _version_argument(stop)
    stop.add_argument("--wait", action="store_true", help="wait until TRAINED")
    _common(stop, remote_only=True)
    stop.set_defaults(handler=_model_stop)

    delete_model = model_commands.add_parser(
        "delete", help="delete a model version (it must not be hosted)"
    )
    _project_argument(delete_model)
    _version_argument(delete_model, allow_latest=False)
    _common(delete_model)
    delete_model.set_defaults(handler=_model_delete)
    model.set_defaults(handler=lambda args: _usage(model))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# ---- helpers --------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client | RemoteClient:
    endpoint = getattr(args, "endpoint", None)
    if not endpoint:
        return Client(getattr(args, "home", None))
    if getattr(args, "home", None):
        raise ValidationException("give either --home or --endpoint, not both")
    access_key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if args.auth_key:
        access_key, _, secret_key = args.auth_key.partition(":")
    return RemoteClient(endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _when(value: Any) -> str:
    return (
        value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else ""
    )


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def _call(args: argparse.Namespace, action: Callable[[Lookout], dict[str, Any]]) -> Any:
    """``action(client)``, or None after printing the error."""
    try:
        with _client(args) as lookout:
            return action(lookout)
    except OpenLookoutError as error:
        print(f"openlookout: {error.code}: {error.message}", file=sys.stderr)
        return None


def _emit(args: argparse.Namespace, answer: Any, show: Callable[[Any], None]) -> int:
    """Prints ``answer`` as JSON (``--json``) or with ``show``; the exit status."""
    if answer is None:
        return 1
    if args.json:
        print(json.dumps(_jsonable(answer), indent=1))
    else:
        show(answer)
    return 0


def _all_pages(lookout: Lookout, operation: str, **kwargs: Any) -> dict[str, Any]:
    return lookout.get_paginator(operation).paginate(**kwargs).build_full_result()


# ---- projects ------------------------------------------------------------------------------


def _project_create(args: argparse.Namespace) -> int:
    answer = _call(args, lambda c: c.create_project(ProjectName=args.name))
    return _emit(args, answer, lambda a: print(f"created project {args.name}"))


def _project_list(args: argparse.Namespace) -> int:
    answer = _call(args, lambda c: _all_pages(c, "list_projects"))
    return _emit(
        args,
        answer,
        lambda a: _table(
            [[p["ProjectName"], _when(p["CreationTimestamp"])] for p in a["Projects"]],
            ["PROJECT", "CREATED"],
        ),
    )


def _project_describe(args: argparse.Namespace) -> int:
    def act(c: Lookout) -> dict[str, Any]:
        description = c.describe_project(ProjectName=args.name)
        description["Models"] = _all_pages(c, "list_models", ProjectName=args.name)["Models"]
        return description

    def show(answer: dict[str, Any]) -> None:
        project = answer["ProjectDescription"]
        print(f"project  {project['ProjectName']}")
        print(f"arn      {project['ProjectArn']}")
        print(f"created  {_when(project['CreationTimestamp'])}")
        models = ", ".join(f"{m['ModelVersion']} {m['Status']}" for m in answer["Models"])
        print(f"models   {models or '-'}")

    return _emit(args, _call(args, act), show)


def _project_delete(args: argparse.Namespace) -> int:
    answer = _call(args, lambda c: c.delete_project(ProjectName=args.name))
    return _emit(args, answer, lambda a: print(f"deleted project {args.name}"))


# ---- models --------------------------------------------------------------------------------


def _resolve_package(package: str) -> str:
    """A directory as given, else the bundled demo model of that name."""
    if os.path.isdir(package):
        return package
    try:
        from .. import demo

        return str(demo.demo_model_path(package))
    except (ImportError, OpenLookoutError):
        return package  # import_model reports the missing directory


def _model_import(args: argparse.Namespace) -> int:
    def act(c: Lookout) -> dict[str, Any]:
        assert isinstance(c, Client)
        record = c.registry.import_model(
            args.project,
            _resolve_package(args.package),
            description=args.description,
            check=not args.no_check,
        )
        return {
            "ProjectName": record.project,
            "ModelVersion": str(record.version),
            "ModelArn": record.arn,
            "Package": str(record.package),
        }

    args.endpoint = None  # importing writes the registry directory itself
    answer = _call(args, act)
    return _emit(
        args,
        answer,
        lambda a: print(
            f"imported {args.package} as {a['ProjectName']} version {a['ModelVersion']}"
        ),
    )


def _model_list(args: argparse.Namespace) -> int:
    answer = _call(args, lambda c: _all_pages(c, "list_models", ProjectName=args.project))
    return _emit(
        args,
        answer,
        lambda a: _table(
            [
                [
                    m["ModelVersion"],
                    m["Status"],
                    _when(m["CreationTimestamp"]),
                    m.get("Description", ""),
                ]
                for m in a["Models"]
            ],
            ["VERSION", "STATUS", "CREATED", "DESCRIPTION"],
        ),
    )


def _show_model(answer: dict[str, Any]) -> None:
    description = answer.get("ModelDescription", answer)
    for key in (
        "ModelVersion",
        "Status",
        "StatusMessage",
        "ModelArn",
        "Description",
        "MinInferenceUnits",
        "MaxInferenceUnits",
    ):
        if key in description:
            print(f"{key:<18} {description[key]}")
    if "CreationTimestamp" in description:
        print(f"{'CreationTimestamp':<18} {_when(description['CreationTimestamp'])}")


def _model_describe(args: argparse.Namespace) -> int:
    answer = _call(
        args, lambda c: c.describe_model(ProjectName=args.project, ModelVersion=args.model_version)
    )
    return _emit(args, answer, _show_model)


def _wait_while(lookout: Lookout, args: argparse.Namespace, status: str) -> dict[str, Any]:
    """DescribeModel, polled while the model's status is ``status``."""
    while True:
        answer = lookout.describe_model(ProjectName=args.project, ModelVersion=args.model_version)
        if answer["ModelDescription"]["Status"] != status:
            return answer
        time.sleep(0.2)


def _hosting_change(args: argparse.Namespace, start: bool) -> int:
    def act(c: Lookout) -> dict[str, Any]:
        if start:
            answer = c.start_model(
                ProjectName=args.project,
                ModelVersion=args.model_version,
                MinInferenceUnits=args.min_inference_units,
                MaxInferenceUnits=args.max_inference_units,
            )
        else:
            answer = c.stop_model(ProjectName=args.project, ModelVersion=args.model_version)
        if args.wait:
            return _wait_while(c, args, STARTING_HOSTING if start else STOPPING_HOSTING)
        return answer

    answer = _call(args, act)
    code = _emit(
        args,
        answer,
        lambda a: print(
            f"{args.project} version {args.model_version}: {a.get('ModelDescription', a)['Status']}"
        ),
    )
    if answer is not None:
        status = answer.get("ModelDescription", answer)["Status"]
        if status == HOSTING_FAILED:
            print(answer["ModelDescription"].get("StatusMessage", ""), file=sys.stderr)
            return 1
        if args.wait and status != (HOSTED if start else TRAINED):
            return 1
    return code


def _model_start(args: argparse.Namespace) -> int:
    return _hosting_change(args, start=True)


def _model_stop(args: argparse.Namespace) -> int:
    return _hosting_change(args, start=False)


def _model_delete(args: argparse.Namespace) -> int:
    answer = _call(
        args, lambda c: c.delete_model(ProjectName=args.project, ModelVersion=args.model_version)
    )
    return _emit(
        args, answer, lambda a: print(f"deleted {args.project} version {args.model_version}")
    )
