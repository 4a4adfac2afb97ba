"""Every decode limit is a load_model option: invalid values are refused at load, each limit
refuses what is over it and lets through what is under it, on both PNG decoders (the fast path
for 8-bit layouts and libspng for the rest) and on JPEG, and SECURITY.md documents every default.
"""

from __future__ import annotations

import inspect
import io
import os
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import openlookout
from openlookout import _core
from openlookout.demo import demo_model_path
from openlookout.model import DEFAULT_LIMITS, LIMIT_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 96


@pytest.fixture(scope="module")
def package():
    return demo_model_path("surface-cls")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(ancillary: bytes, *, bit_depth: int) -> bytes:
    """An RGB PNG of SIDE x SIDE with `ancillary` chunks before its image data. 8-bit RGB takes
    the fast path; 16-bit goes to libspng."""
    rng = np.random.default_rng(7)
    dtype = ">u2" if bit_depth == 16 else np.uint8
    high = 65535 if bit_depth == 16 else 255
    pixels = rng.integers(0, high, (SIDE, SIDE * 3), dtype=np.uint32).astype(dtype)
    raw = b"".join(b"\0" + row.tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", SIDE, SIDE, bit_depth, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + ancillary
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _ztxt(inflated_bytes: int) -> bytes:
    return _chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"x" * inflated_bytes, 9))


def _texts(count: int, each: int) -> bytes:
    return b"".join(_chunk(b"tEXt", b"comment\0" + b"y" * each) for _ in range(count))


def test_load_model_defaults_are_the_cores_and_documented(package) -> None:
    core = _core.DecodeLimits()
    signature = inspect.signature(openlookout.Model)
    with open(os.path.join(ROOT, "SECURITY.md"), encoding="utf-8") as f:
        security = f.read()
    table = security[security.index("## Limits and defaults") :]
    for name in LIMIT_NAMES:
        assert DEFAULT_LIMITS[name] == getattr(core, name)
        assert signature.parameters[name].default == getattr(core, name), name
        assert re.search(rf"`{name}=?`", table), f"SECURITY.md's limits table lacks {name}"
    model = openlookout.load_model(package)
    assert model.max_body_bytes == DEFAULT_LIMITS["max_body_bytes"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        *[({name: 0}, name) for name in LIMIT_NAMES],
        *[({name: -5}, name) for name in LIMIT_NAMES],
        *[({name: True}, name) for name in LIMIT_NAMES],
        *[({name: 2.0}, name) for name in LIMIT_NAMES],
        *[({name: "64"}, name) for name in LIMIT_NAMES],
        ({"max_side": 2**31}, "max_side"),
        ({"jpeg_max_scan_pixels": 2**63}, "jpeg_max_scan_pixels"),
        ({"min_side": 200, "max_side": 100}, "min_side"),
        ({"png_max_chunk_bytes": 2_000, "png_max_ancillary_bytes": 1_000}, "png_max_chunk_bytes"),
        ({"png_max_chunk_bytes": 2**31, "png_max_ancillary_bytes": 2**40}, "png_max_chunk_bytes"),
    ],
)
def test_invalid_limits_are_refused_at_load(package, options, message) -> None:
    with pytest.raises(openlookout.ValidationException, match=message):
        openlookout.load_model(package, **options)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_max_chunk_bytes_bounds_one_inflated_chunk(package, bit_depth) -> None:
    plain = openlookout.load_model(package).detect(_png(b"", bit_depth=bit_depth), "image/png")
    body = _png(_ztxt(200_000), bit_depth=bit_depth)
    roomy = openlookout.load_model(package, png_max_chunk_bytes=1_000_000)
    assert roomy.detect(body, "image/png") == plain
    tight = openlookout.load_model(package, png_max_chunk_bytes=50_000)
    with pytest.raises(openlookout.ValidationException, match="png_max_chunk_bytes"):
        tight.detect(body, "image/png")
    # The limit is on what a chunk inflates to: stored chunks of that size pass.
    assert tight.detect(_png(_texts(1, 60_000), bit_depth=bit_depth), "image/png") == plain


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_max_ancillary_bytes_bounds_all_kept_chunks(package, bit_depth) -> None:
    plain = openlookout.load_model(package).detect(_png(b"", bit_depth=bit_depth), "image/png")
    body = _png(_texts(8, 5_000), bit_depth=bit_depth)  # 40 KB of text in all
    roomy = openlookout.load_model(
        package, png_max_chunk_bytes=10_000, png_max_ancillary_bytes=400_000
    )
    assert roomy.detect(body, "image/png") == plain
    tight = openlookout.load_model(
        package, png_max_chunk_bytes=10_000, png_max_ancillary_bytes=20_000
    )
    with pytest.raises(openlookout.ValidationException, match="png_max_ancillary_bytes"):
        tight.detect(body, "image/png")
    # The image data itself is not ancillary: a tight cache still decodes a plain file.
    assert tight.detect(_png(b"", bit_depth=bit_depth), "image/png") == plain


def _jpeg(*, progressive: bool, side: int = SIDE) -> bytes:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90, progressive=progressive)
    return out.getvalue()


def _markers(jpeg: bytes) -> list[int]:
    """The marker codes of a JPEG's segments after SOI and before EOI, skipping entropy-coded
    data (what jpeg_max_markers counts: RSTn inside a scan is data, not a segment)."""
    markers, at = [], 2
    while jpeg[at + 1] != 0xD9:
        assert jpeg[at] == 0xFF, at
        marker = jpeg[at + 1]
        markers.append(marker)
        at += 2 + ((jpeg[at + 2] << 8) | jpeg[at + 3])
        if marker == 0xDA:
            while not (jpeg[at] == 0xFF and jpeg[at + 1] not in (0x00, *range(0xD0, 0xD8))):
                at += 1
    return markers


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_marker_and_scan_limits_at_their_edges(package, progressive) -> None:
    body = _jpeg(progressive=progressive)
    markers = _markers(body)
    scans = markers.count(0xDA)
    assert (scans > 1) == progressive, scans
    plain = openlookout.load_model(package).detect(body, "image/jpeg")
    edges = {"jpeg_max_markers": len(markers)}
    if progressive:  # one scan is always allowed, so only a multi-scan file can be over these
        edges |= {"jpeg_max_scans": scans, "jpeg_max_scan_pixels": scans * SIDE * SIDE}
    for name, edge in edges.items():
        assert openlookout.load_model(package, **{name: edge}).detect(body, "image/jpeg") == plain
        over = openlookout.load_model(package, **{name: edge - 1})
        with pytest.raises(openlookout.ValidationException, match=name):
            over.detect(body, "image/jpeg")
