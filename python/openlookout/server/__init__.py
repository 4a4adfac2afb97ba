"""``openlookout serve``: Lookout for Vision's HTTP API, for unmodified boto3.

:class:`Server` and :func:`running_server` need aiohttp (``pip install openlookout[server]``);
they are imported on first use, so :mod:`openlookout.server.sigv4` (standard library only) can
be used without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Server, ServerConfig, running_server

__all__ = ["Server", "ServerConfig", "running_server"]

# Connection deadlines (seconds), here so that the command line can show them without aiohttp:
# from a connection's accept or previous answer to the end of its next request's headers, and
# from the end of the headers to the end of the body.
DEFAULT_HEADER_TIMEOUT = 60.0
DEFAULT_BODY_TIMEOUT = 120.0


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
