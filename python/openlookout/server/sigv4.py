"""AWS Signature Version 4 (``AWS4-HMAC-SHA256``, header form) for service ``lookoutvision``:
verification for ``openlookout serve --auth-key``, and signing for
:class:`openlookout.client.RemoteClient`. Standard library only.

The canonical request follows what botocore builds for non-S3 services: the path as sent, with
dot segments removed, percent-encoded once more (``%`` becomes ``%25``); query parameters sorted,
each key and value percent-encoded with only ``-_.~`` left bare; the signed headers lower-cased,
values with runs of whitespace collapsed; and the SHA-256 of the body.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping

from ..errors import AccessDeniedException

__all__ = [
    "ALGORITHM",
    "SERVICE",
    "SignatureHeader",
    "canonical_request",
    "parse_authorization",
    "sign",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "lookoutvision"
MAX_CLOCK_SKEW_SECONDS = 15 * 60  # what AWS tolerates between X-Amz-Date and its clock
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_AUTHORIZATION = re.compile(
    rf"{ALGORITHM}\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)


class SignatureHeader:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    def __init__(
        self,
        access_key: str,
        date: str,
        region: str,
        service: str,
        signed: list[str],
        signature: str,
    ) -> None:
        self.access_key = access_key
        self.date = date
        self.region = region
        self.service = service
        self.signed_headers = signed
        self.signature = signature

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _denied(reason: str) -> AccessDeniedException:
    return AccessDeniedException(f"request signature rejected: {reason}")


def parse_authorization(value: str | None) -> SignatureHeader:
    """Parses the Authorization header; ``AccessDeniedException`` when it is missing or is not
    a SigV4 header for ``lookoutvision``."""
    if not value:
        raise _denied("no Authorization header (sign requests with SigV4)")
    match = _AUTHORIZATION.fullmatch(value.strip())
    if match is None:
        raise _denied(f"Authorization is not an {ALGORITHM} header")
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise _denied("malformed Credential")
    access_key, date, region, service, _ = parts
    if service != SERVICE:
        raise _denied(f"credential scope names service {service!r}, not {SERVICE!r}")
    return SignatureHeader(
        access_key, date, region, service, match["signed"].split(";"), match["signature"]
    )


def _remove_dot_segments(path: str) -> str:
    if not path:
        return "/"
    kept: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if kept:
                kept.pop()
        else:
            kept.append(segment)
    leading = "/" if path.startswith("/") else ""
    trailing = "/" if path.endswith("/") and kept else ""
    return leading + "/".join(kept) + trailing


def _canonical_query(raw_query: str) -> str:
    pairs = []
    for piece in raw_query.split("&") if raw_query else []:
        key, _, value = piece.partition("=")
        pairs.append(
            (
                urllib.parse.quote(urllib.parse.unquote(key), safe="-_.~"),
                urllib.parse.quote(urllib.parse.unquote(value), safe="-_.~"),
            )
        )
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request. ``headers`` maps lower-case names to values (several values of
    one header joined with ``,``)."""
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers
    )
    return "\n".join(
        [
            method.upper(),
            urllib.parse.quote(_remove_dot_segments(raw_path), safe="/~"),
            _canonical_query(raw_query),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def _signature(secret_key: str, scope: SignatureHeader, amz_date: str, request: str) -> str:
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope.scope, hashlib.sha256(request.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (scope.date, scope.region, scope.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _request_time(amz_date: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise _denied(f"X-Amz-Date {amz_date!r} is not YYYYMMDDTHHMMSSZ") from None


def check_header(
    authorization: SignatureHeader,
    headers: Mapping[str, str],
    keys: Mapping[str, str],
    now: dt.datetime | None = None,
) -> None:
    """The checks that need no body: a known access key, ``host`` and ``x-amz-date`` signed, and
    a request time within 15 minutes of ours. Done before the body is read."""
    if authorization.access_key not in keys:
        raise _denied(f"unknown access key {authorization.access_key!r}")
    if "host" not in authorization.signed_headers:
        raise _denied("the host header is not signed")
    amz_date = headers.get("x-amz-date", "")
    if not amz_date:
        raise _denied("no X-Amz-Date header")
    if amz_date[:8] != authorization.date:
        raise _denied("X-Amz-Date does not match the credential scope's date")
    skew = abs(
        ((now or dt.datetime.now(dt.timezone.utc)) - _request_time(amz_date)).total_seconds()
    )
    if skew > MAX_CLOCK_SKEW_SECONDS:
        raise _denied(f"request time is {skew:.0f} s away from the server's clock")


def verify(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body_sha256: str,
    keys: Mapping[str, str],
    now: dt.datetime | None = None,
) -> str:
    """Verifies a request's SigV4 signature against ``keys`` (access key id -> secret). Returns
    the access key id; raises ``AccessDeniedException`` when the signature is missing or wrong.
    ``headers`` maps lower-case names to values; ``body_sha256`` is the hex SHA-256 of the body."""
    authorization = parse_authorization(headers.get("authorization"))
    check_header(authorization, headers, keys, now)
    declared = headers.get("x-amz-content-sha256")
    payload_hash = body_sha256
    if declared:
        if declared != UNSIGNED_PAYLOAD and declared != body_sha256:
            raise _denied("X-Amz-Content-SHA256 does not match the body")
        payload_hash = declared
    request = canonical_request(
        method, raw_path, raw_query, headers, authorization.signed_headers, payload_hash
    )
    expected = _signature(
        keys[authorization.access_key], authorization, headers["x-amz-date"], request
    )
    if not hmac.compare_digest(expected, authorization.signature):
        raise _denied("signature does not match (wrong secret key, or the request was altered)")
    return authorization.access_key


def sign(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """The headers that sign a request (``X-Amz-Date``, ``Authorization``); ``headers`` must
    already hold ``Host``. Every header given is signed."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    lower = {k.lower(): v for k, v in headers.items()}
    lower["x-amz-date"] = amz_date
    signed = sorted(lower)
    scope = SignatureHeader(access_key, amz_date[:8], region, SERVICE, signed, "")
    request = canonical_request(
        method, raw_path, raw_query, lower, signed, hashlib.sha256(body).hexdigest()
    )
    signature = _signature(secret_key, scope, amz_date, request)
    return {
        "X-Amz-Date": amz_date,
        "Authorization": (
            f"{ALGORITHM} Credential={access_key}/{scope.scope}, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}"
        ),
    }
