"""``openlookout serve`` (the Lookout for Vision HTTP endpoint) and ``openlookout aws-data-path``
(where botocore finds openlookout's description of the API)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import OpenLookoutError, ValidationException
from ..hosting import HostingOptions
from ..model import DEFAULT_LIMITS
from ..server import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT
from .model_options import add_model_options, model_options

__all__ = ["parse_auth_keys", "register"]

DESCRIPTION = """\
Serves Lookout for Vision's REST API (DetectAnomalies, StartModel, StopModel, DescribeModel,
ListModels, ListProjects, DescribeProject, CreateProject, DeleteProject, DeleteModel) for
unmodified boto3: boto3.client("lookoutvision", endpoint_url="http://HOST:PORT"). With
botocore >= 1.40.61, which no longer ships lookoutvision, also set
AWS_DATA_PATH=$(openlookout aws-data-path).

Models are hosted by this process from StartModel until StopModel (or until it exits); each
inference unit is one concurrent inference worker. GET /health and GET /metrics (Prometheus)
are served beside the API. Stop with Ctrl-C or SIGTERM: requests in flight are finished."""


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve the Lookout for Vision HTTP API (for boto3's endpoint_url)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)"
    )
    serve.add_argument("--home", help="registry directory (default: $OPENLOOKOUT_HOME, ...)")
    serve.add_argument(
        "--auth-key",
        action="append",
        default=[],
        metavar="ACCESS:SECRET",
        help="accept only requests signed (SigV4) with these keys; repeatable",
    )
    serve.add_argument(
        "--auth-file",
        metavar="PATH",
        help="file of ACCESS:SECRET lines (# comments) to accept, like --auth-key",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_LIMITS["max_body_bytes"],
        help=f"largest image body (default: {DEFAULT_LIMITS['max_body_bytes']})",
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        default=HostingOptions.max_queue,
        help="requests per model that may wait for a busy worker; more are throttled (429) "
        f"(default: {HostingOptions.max_queue})",
    )
    serve.add_argument(
        "--max-inference-units",
        type=int,
        default=HostingOptions.max_inference_units,
        help="largest Min/MaxInferenceUnits StartModel accepts "
        f"(default: {HostingOptions.max_inference_units})",
    )
    serve.add_argument(
        "--intra-op-threads",
        type=int,
        help="ONNX Runtime threads per inference call (default: the cores shared among workers)",
    )
    serve.add_argument(
        "--provider",
        action="append",
        dest="providers",
        metavar="NAME",
        help="ONNX Runtime execution provider, in order of preference; repeatable "
        "(default: CPUExecutionProvider)",
    )
    add_model_options(serve)
    serve.add_argument(
        "--start",
        action="append",
        default=[],
        metavar="PROJECT/VERSION[:UNITS]",
        help="start this model when the server starts (as StartModel); repeatable",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that sends no complete request headers this long after it "
        "opened or after its previous answer (idle or slow clients) "
        f"(default: {DEFAULT_HEADER_TIMEOUT:g})",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help="refuse a request whose body is not received whole this long after its headers "
        f"(400) and close the connection (default: {DEFAULT_BODY_TIMEOUT:g})",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=run_serve)

    data_path = subparsers.add_parser(
        "aws-data-path",
        help="print the directory to put in AWS_DATA_PATH for botocore >= 1.40.61",
        description="Prints the directory holding openlookout's lookoutvision service "
        "description. botocore 1.40.61 and later no longer ship lookoutvision; with "
        "AWS_DATA_PATH=$(openlookout aws-data-path) they build the client again.",
    )
    data_path.set_defaults(handler=run_aws_data_path)


def run_aws_data_path(args: argparse.Namespace) -> int:
    from ..service_model import data_path

    print(data_path())
    return 0


def parse_auth_keys(keys: list[str], path: str | None) -> dict[str, str]:
    """``ACCESS:SECRET`` strings (and the lines of ``path``) as access key -> secret key."""
    entries = [(key, "--auth-key") for key in keys]
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ValidationException(f"--auth-file {path}: {error.strerror}") from None
        entries += [
            (line.strip(), f"{path}:{number}")
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    result = {}
    for entry, where in entries:
        access, sep, secret = entry.partition(":")
        if not sep or not access or not secret:
            raise ValidationException(f"{where}: expected ACCESS_KEY_ID:SECRET_ACCESS_KEY")
        result[access] = secret
    return result


def _parse_start(value: str) -> tuple[str, str, int]:
    target, _, units = value.partition(":")
    project, sep, version = target.partition("/")
    if not sep or not project or not version or (units and not units.isdigit()):
        raise ValidationException(f"--start {value}: expected PROJECT/VERSION[:UNITS]")
    return project, version, int(units or 1)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        from ..server.app import Server, ServerConfig
    except ImportError as error:
        print(
            f"openlookout serve needs aiohttp ({error}): pip install 'openlookout[server]'",
            file=sys.stderr,
        )
        return 1
    try:
        load_options: dict[str, Any] = model_options(args)
        if args.intra_op_threads is not None:
            load_options["intra_op_threads"] = args.intra_op_threads
        if args.providers:
            load_options["providers"] = args.providers
        for name in ("max_queue", "max_inference_units", "max_body_bytes", "port"):
            if getattr(args, name) < (0 if name in ("max_queue", "port") else 1):
                raise ValidationException(f"--{name.replace('_', '-')} is out of range")
        for name in ("header_timeout", "body_timeout"):
            if not 0 < getattr(args, name) < float("inf"):
                raise ValidationException(f"--{name.replace('_', '-')} must be a positive number")
        config = ServerConfig(
            host=args.host,
            port=args.port,
            home=args.home,
            max_body_bytes=args.max_body_bytes,
            auth_keys=parse_auth_keys(args.auth_key, args.auth_file),
            hosting=HostingOptions(
                max_queue=args.max_queue,
                max_inference_units=args.max_inference_units,
                load_options=load_options,
            ),
            access_log=args.access_log,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
        )
        starts = [_parse_start(value) for value in args.start]
        server = Server(config)
        for project, version, units in starts:
            server.client.start_model(
                ProjectName=project, ModelVersion=version, MinInferenceUnits=units
            )
    except OpenLookoutError as error:
        print(f"openlookout: {error.code}: {error.message}", file=sys.stderr)
        return 1

    def ready(server: Server) -> None:
        auth = f"SigV4 with {len(config.auth_keys)} key(s)" if config.auth_keys else "no auth"
        print(
            f"openlookout serving {server.url} (registry {server.client.registry.home}, {auth}, "
            f"pid {os.getpid()})",
            flush=True,
        )

    try:
        server.run(ready)
    except OSError as error:  # the port is taken, or the address is not ours
        print(f"openlookout: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0
