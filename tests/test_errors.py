"""Every bad input is a ValidationException (also a ValueError and an OpenLookoutError) whose
message says what was wrong; nothing crashes. load_model errors for missing packages."""

from __future__ import annotations

import io
import re
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

import builders
import imagegen
import openlookout

CONFIG = "seg3_nearest"  # segmentation: the longest native path


def expect_validation(fn, *patterns):
    """Calls fn, expects a ValidationException whose message matches one of `patterns`
    (case-insensitive regexes). Returns the message."""
    with pytest.raises(openlookout.ValidationException) as ei:
        fn()
    e = ei.value
    assert isinstance(e, ValueError)
    assert isinstance(e, openlookout.OpenLookoutError)
    msg = str(e)
    assert msg.strip(), "empty message"
    if patterns:
        assert any(re.search(p, msg, re.IGNORECASE) for p in patterns), (
            f"message {msg!r} matches none of {patterns}"
        )
    return msg


@pytest.fixture(scope="module")
def model(packages):
    return packages.native(CONFIG)


@pytest.fixture(scope="module")
def png(images):
    return imagegen.png_bytes(images["a97x71"])


@pytest.fixture(scope="module")
def jpeg(images):
    return imagegen.jpeg_bytes(Image.fromarray(images["a97x71"]), subsampling=2)


@pytest.fixture(scope="module")
def progressive_jpeg(images):
    return imagegen.jpeg_bytes(Image.fromarray(images["a97x71"]), progressive=True)


# --------------------------------------------------------------------------------------------
# Exception hierarchy
# --------------------------------------------------------------------------------------------


def test_exception_hierarchy():
    names = [
        "ValidationException",
        "ResourceNotFoundException",
        "ConflictException",
        "ThrottlingException",
        "InternalServerException",
        "AccessDeniedException",
    ]
    for n in names:
        cls = getattr(openlookout, n)
        assert issubclass(cls, openlookout.OpenLookoutError), n
        assert issubclass(cls, Exception)
    assert issubclass(openlookout.ValidationException, ValueError)
    assert not issubclass(openlookout.ResourceNotFoundException, openlookout.ValidationException)


# --------------------------------------------------------------------------------------------
# Body and content type
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", ["image/png", "image/jpeg"])
@pytest.mark.parametrize(
    "body", [b"", bytearray(), memoryview(b"")], ids=["bytes", "bytearray", "memoryview"]
)
def test_empty_body(model, body, ctype):
    expect_validation(
        lambda: model.detect(body, ctype), r"empty", r"no (image )?(data|bytes)", r"\b0 bytes"
    )


def test_empty_file_object(model):
    expect_validation(
        lambda: model.detect(io.BytesIO(b""), "image/png"),
        r"empty",
        r"no (image )?(data|bytes)",
        r"\b0 bytes",
    )


@pytest.mark.parametrize(
    "ctype", ["image/gif", "", "text/plain", "application/octet-stream", "image/bmp"]
)
def test_wrong_content_type(model, png, ctype):
    msg = expect_validation(
        lambda: model.detect(png, ctype), r"content.?type", r"image/png", r"image/jpeg"
    )
    if ctype:
        assert ctype in msg, msg


@pytest.mark.parametrize("ctype", ["image/p\udcffng", "image/pngé", "image/png\x00", "image/\tpng"])
def test_non_ascii_or_control_content_type(model, png, ctype):
    # Not the core's TypeError for a lone surrogate, nor its "?"-mangled echo of the text.
    msg = expect_validation(lambda: model.detect(png, ctype), r"content.?type", r"image/png")
    assert repr(ctype) in msg, msg


def test_png_bytes_declared_jpeg(model, png):
    expect_validation(lambda: model.detect(png, "image/jpeg"), r"jpe?g")


def test_jpeg_bytes_declared_png(model, jpeg):
    expect_validation(lambda: model.detect(jpeg, "image/png"), r"png")


@pytest.mark.parametrize("ctype", ["image/png", "image/jpeg"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_garbage(model, ctype, seed):
    body = np.random.default_rng(seed).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    expect_validation(lambda: model.detect(body, ctype), r"png|jpe?g|image|decode|format|signature")


@pytest.mark.parametrize("ctype", ["image/png", "image/jpeg"])
def test_text_body(model, ctype):
    expect_validation(lambda: model.detect(b"hello, this is not an image" * 20, ctype))


# --------------------------------------------------------------------------------------------
# Truncated and corrupt images
# --------------------------------------------------------------------------------------------

TRUNCATION_PATTERNS = (
    r"truncat",
    r"corrupt",
    r"invalid",
    r"decod",
    r"incomplete",
    r"premature",
    r"end of",
    r"unexpected",
    r"short",
    r"eof",
    r"png",
    r"jpe?g",
)


@pytest.mark.parametrize("cut", ["4", "8", "20", "33", "45", "half", "-20"])
def test_truncated_png(model, png, cut):
    n = (
        len(png) // 2
        if cut == "half"
        else (len(png) + int(cut) if cut.startswith("-") else int(cut))
    )
    body = png[:n]
    expect_validation(lambda: model.detect(body, "image/png"), *TRUNCATION_PATTERNS)


@pytest.mark.parametrize("which", ["jpeg", "progressive_jpeg"])
@pytest.mark.parametrize("cut", ["1", "2", "10", "quarter", "half", "-10"])
def test_truncated_jpeg(model, request, which, cut):
    full = request.getfixturevalue(which)
    n = {"quarter": len(full) // 4, "half": len(full) // 2}.get(cut)
    if n is None:
        n = len(full) + int(cut) if cut.startswith("-") else int(cut)
    body = full[:n]
    expect_validation(lambda: model.detect(body, "image/jpeg"), *TRUNCATION_PATTERNS)


def _chunks(png: bytes):
    i, out = 8, []
    while i < len(png):
        (length,) = struct.unpack(">I", png[i : i + 4])
        out.append((png[i + 4 : i + 8], i, length))
        i += 12 + length
    return out


def test_corrupt_png_idat_crc(model, png):
    _, off, length = next(c for c in _chunks(png) if c[0] == b"IDAT")
    body = bytearray(png)
    body[off + 8 + length // 2] ^= 0xFF  # data changed, CRC now wrong
    expect_validation(
        lambda: model.detect(bytes(body), "image/png"), r"crc", r"checksum", *TRUNCATION_PATTERNS
    )


def test_corrupt_png_bad_zlib_stream(model, images):
    """A PNG whose IDAT holds invalid zlib data (with a correct CRC)."""
    body = (
        imagegen.PNG_SIGNATURE
        + imagegen.png_ihdr(97, 71, 8, 2)
        + imagegen.png_chunk(b"IDAT", b"\x78\x9c" + bytes(range(7, 250)))
        + imagegen.png_chunk(b"IEND", b"")
    )
    expect_validation(
        lambda: model.detect(body, "image/png"),
        r"zlib|inflate|compress|deflate",
        *TRUNCATION_PATTERNS,
    )


def test_corrupt_png_too_little_data(model, images):
    """Valid zlib stream that decompresses to fewer scanlines than the IHDR promises."""
    raw = b"\x00" + bytes(97 * 3)
    body = (
        imagegen.PNG_SIGNATURE
        + imagegen.png_ihdr(97, 71, 8, 2)
        + imagegen.png_chunk(b"IDAT", zlib.compress(raw * 10))
        + imagegen.png_chunk(b"IEND", b"")
    )
    expect_validation(lambda: model.detect(body, "image/png"), *TRUNCATION_PATTERNS)


def test_corrupt_png_bad_filter_type(model):
    raw = (b"\x07" + bytes(97 * 3)) * 71  # filter type 7 does not exist
    body = (
        imagegen.PNG_SIGNATURE
        + imagegen.png_ihdr(97, 71, 8, 2)
        + imagegen.png_chunk(b"IDAT", zlib.compress(raw))
        + imagegen.png_chunk(b"IEND", b"")
    )
    expect_validation(lambda: model.detect(body, "image/png"), r"filter", *TRUNCATION_PATTERNS)


@pytest.mark.parametrize(
    "ihdr",
    [(97, 71, 3, 2), (97, 71, 8, 5), (97, 71, 16, 3), (0, 71, 8, 2), (97, 0, 8, 2)],
    ids=["depth3", "colortype5", "palette16", "width0", "height0"],
)
def test_corrupt_png_invalid_ihdr(model, ihdr):
    w, h, bd, ct = ihdr
    body = (
        imagegen.PNG_SIGNATURE
        + imagegen.png_ihdr(w, h, bd, ct)
        + imagegen.png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + imagegen.png_chunk(b"IEND", b"")
    )
    expect_validation(lambda: model.detect(body, "image/png"))


def test_palette_png_without_plte(model):
    idx = np.zeros((71, 97), np.uint8)
    body = imagegen.encode_png(idx, 3, 8)  # no PLTE chunk
    expect_validation(lambda: model.detect(body, "image/png"))


def test_corrupt_jpeg_headers(model, jpeg):
    """The quantisation/Huffman tables and frame header overwritten with junk."""
    body = bytearray(jpeg)
    for i in range(20, min(300, len(body) - 2)):
        body[i] = (body[i] * 7 + 13) & 0xFF
    expect_validation(lambda: model.detect(bytes(body), "image/jpeg"))


@pytest.mark.parametrize("seed", range(4))
def test_corrupt_jpeg_entropy_data_never_crashes(model, jpeg, seed):
    """Bytes flipped inside the entropy-coded data: libjpeg may recover (a valid result) or fail;
    either way the answer is a result dict or a ValidationException, never a crash."""
    rng = np.random.default_rng(seed)
    body = bytearray(jpeg)
    for i in rng.integers(len(body) // 2, len(body) - 4, 8):
        body[i] ^= int(rng.integers(1, 256))
    try:
        r = model.detect(bytes(body), "image/jpeg")
    except openlookout.ValidationException:
        return
    assert set(r) == {"Source", "IsAnomalous", "Confidence", "Anomalies", "AnomalyMask"}


# --------------------------------------------------------------------------------------------
# Dimension and size limits
# --------------------------------------------------------------------------------------------

SIZE_PATTERNS = (r"\b64\b", r"too small", r"at least", r"minimum", r"min_side", r"smaller")


@pytest.mark.parametrize("size", [(10, 10), (63, 64), (64, 63), (500, 20)])
def test_too_small(model, size):
    w, h = size
    rgb = imagegen.natural_rgb(w, h, 3)
    expect_validation(lambda: model.detect(imagegen.png_bytes(rgb), "image/png"), *SIZE_PATTERNS)
    expect_validation(
        lambda: model.detect(imagegen.jpeg_bytes(Image.fromarray(rgb)), "image/jpeg"),
        *SIZE_PATTERNS,
    )
    expect_validation(lambda: model.detect_array(rgb), *SIZE_PATTERNS)


def test_minimum_size_accepted(model):
    rgb = imagegen.natural_rgb(64, 64, 3)
    assert "Anomalies" in model.detect(imagegen.png_bytes(rgb), "image/png")
    assert "Anomalies" in model.detect_array(rgb)


MAX_PATTERNS = (r"4096", r"too large", r"too big", r"exceed", r"maximum", r"max_side", r"larger")


@pytest.mark.parametrize("size", [(100000, 100000), (4097, 64), (64, 4097), (2**31 - 1, 2**31 - 1)])
def test_too_large_png_fails_fast(model, size):
    body = imagegen.huge_ihdr_png(*size)
    t0 = time.perf_counter()
    expect_validation(lambda: model.detect(body, "image/png"), *MAX_PATTERNS)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("size", [(60000, 60000), (4097, 100), (100, 65535)])
def test_too_large_jpeg_fails_fast(model, jpeg, size):
    body = imagegen.patch_jpeg_size(jpeg, *size)
    t0 = time.perf_counter()
    expect_validation(lambda: model.detect(body, "image/jpeg"), *MAX_PATTERNS)
    assert time.perf_counter() - t0 < 1.0


def test_max_side_configurable(packages):
    path = packages.get(CONFIG).path
    small = openlookout.load_model(path, max_side=100)
    ok = imagegen.natural_rgb(100, 100, 4)
    assert "Anomalies" in small.detect(imagegen.png_bytes(ok), "image/png")
    assert "Anomalies" in small.detect_array(ok)
    big = imagegen.natural_rgb(101, 80, 4)
    expect_validation(
        lambda: small.detect(imagegen.png_bytes(big), "image/png"), r"\b100\b", *MAX_PATTERNS
    )
    expect_validation(lambda: small.detect_array(big), r"\b100\b", *MAX_PATTERNS)


def test_min_side_configurable(packages):
    path = packages.get(CONFIG).path
    m = openlookout.load_model(path, min_side=100)
    expect_validation(
        lambda: m.detect(imagegen.png_bytes(imagegen.natural_rgb(130, 99, 4)), "image/png"),
        r"\b100\b",
        *SIZE_PATTERNS,
    )
    assert "Anomalies" in m.detect(
        imagegen.png_bytes(imagegen.natural_rgb(130, 100, 4)), "image/png"
    )


BODY_PATTERNS = (
    r"too large",
    r"too big",
    r"exceed",
    r"max_body_bytes",
    r"bytes",
    r"larger",
    r"MiB",
    r"limit",
)


def test_body_larger_than_limit(packages, png):
    path = packages.get(CONFIG).path
    exact = openlookout.load_model(path, max_body_bytes=len(png))
    assert "Anomalies" in exact.detect(png, "image/png")
    under = openlookout.load_model(path, max_body_bytes=len(png) - 1)
    expect_validation(lambda: under.detect(png, "image/png"), *BODY_PATTERNS)
    expect_validation(lambda: under.detect(io.BytesIO(png), "image/png"), *BODY_PATTERNS)
    expect_validation(lambda: under.detect(memoryview(png), "image/png"), *BODY_PATTERNS)


def test_body_larger_than_default_8mib(model, png):
    body = png + b"\x00" * (8 * 1024 * 1024 + 1 - len(png))
    assert len(body) == 8 * 1024 * 1024 + 1
    expect_validation(lambda: model.detect(body, "image/png"), *BODY_PATTERNS)


# --------------------------------------------------------------------------------------------
# detect_array input checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((71, 97, 3), np.float32),
        np.zeros((71, 97, 3), np.uint16),
        np.zeros((71, 97, 3), np.int8),
        np.zeros((71, 97, 3), np.float64),
        np.zeros((71, 97), np.uint8),
        np.zeros((1, 71, 97, 3), np.uint8),
        np.zeros((71, 97, 4), np.uint8),
        np.zeros((71, 97, 1), np.uint8),
        np.zeros((3, 71, 97), np.uint8),
        np.zeros((0, 97, 3), np.uint8),
    ],
    ids=["float32", "uint16", "int8", "float64", "2d", "4d", "rgba", "1ch", "chw", "empty"],
)
def test_detect_array_bad_arrays(model, arr):
    expect_validation(
        lambda: model.detect_array(arr),
        r"uint8|dtype|shape|channel|dimension|HxWx3|\b3\b|ndim|size|small",
    )


# --------------------------------------------------------------------------------------------
# image_size mismatch (see also test_detect.test_image_size_enforced)
# --------------------------------------------------------------------------------------------


def test_image_size_mismatch_message(packages, images, png_bodies):
    base = packages.get("cls_sigmoid_bilinear")
    manifest = dict(base.manifest, image_size={"width": 256, "height": 192})
    with open(base.ref.cfg.model_path, "rb") as f:
        path = packages.custom("errors_image_size", f.read(), manifest)
    m = openlookout.load_model(path)
    assert set(m.detect(png_bodies["c256x192"], "image/png")) == {
        "Source",
        "IsAnomalous",
        "Confidence",
    }
    msg = expect_validation(
        lambda: m.detect(png_bodies["f200x150"], "image/png"),
        r"size",
        r"dimension",
        r"width",
        r"height",
    )
    assert "256" in msg, msg
    assert "192" in msg, msg
    expect_validation(
        lambda: m.detect_array(images["a97x71"]), r"size", r"dimension", r"width", r"height"
    )


# --------------------------------------------------------------------------------------------
# The model stays usable after errors
# --------------------------------------------------------------------------------------------


def test_model_usable_after_errors(model, png, jpeg, images):
    before = model.detect(png, "image/png")
    for body, ct in [
        (b"", "image/png"),
        (png[:50], "image/png"),
        (jpeg[:100], "image/jpeg"),
        (png, "image/gif"),
        (imagegen.huge_ihdr_png(), "image/png"),
    ]:
        with pytest.raises(openlookout.ValidationException):
            model.detect(body, ct)
    assert model.detect(png, "image/png") == before
    assert model.detect_array(images["a97x71"]) == before


# --------------------------------------------------------------------------------------------
# load_model
# --------------------------------------------------------------------------------------------


def test_load_missing_directory(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(openlookout.ResourceNotFoundException) as ei:
        openlookout.load_model(str(missing))
    assert isinstance(ei.value, openlookout.OpenLookoutError)
    assert "does-not-exist" in str(ei.value)


def test_load_missing_manifest(tmp_path, packages):
    d = tmp_path / "pkg"
    d.mkdir()
    with open(packages.get("cls_sigmoid_bilinear").ref.cfg.model_path, "rb") as f:
        (d / "model.onnx").write_bytes(f.read())
    with pytest.raises(openlookout.ResourceNotFoundException) as ei:
        openlookout.load_model(str(d))
    assert "manifest.json" in str(ei.value)


def test_load_missing_model_file(tmp_path, packages):
    manifest = dict(packages.get("cls_sigmoid_bilinear").manifest, model="nothere.onnx")
    d = builders.write_package(tmp_path / "pkg", None, manifest)
    with pytest.raises(openlookout.ResourceNotFoundException) as ei:
        openlookout.load_model(d)
    assert "nothere.onnx" in str(ei.value)


def test_load_accepts_pathlike(packages):
    import pathlib

    m = openlookout.load_model(pathlib.Path(packages.get("cls_sigmoid_bilinear").path))
    assert m.task == "classification"


def test_load_invalid_json(tmp_path):
    d = builders.write_package(tmp_path / "pkg", None, b'{"format_version": 1, "task": ')
    msg = expect_validation(lambda: openlookout.load_model(d), r"manifest", r"json")
    assert msg


def test_load_manifest_not_an_object(tmp_path):
    d = builders.write_package(tmp_path / "pkg", None, b"[1, 2, 3]")
    expect_validation(lambda: openlookout.load_model(d), r"manifest", r"object", r"json")


def test_load_corrupt_onnx(tmp_path, packages):
    d = builders.write_package(
        tmp_path / "pkg",
        b"this is not an onnx model" * 10,
        packages.get("cls_sigmoid_bilinear").manifest,
    )
    expect_validation(lambda: openlookout.load_model(d), r"onnx", r"model", r"protobuf", r"load")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_side=0),
        dict(max_side=0),
        dict(min_side=100, max_side=50),
        dict(max_body_bytes=0),
        dict(intra_op_threads=-1),
        dict(inter_op_threads=-1),
    ],
    ids=["min0", "max0", "min>max", "body0", "intra-1", "inter-1"],
)
def test_load_bad_options(packages, kwargs):
    path = packages.get("cls_sigmoid_bilinear").path
    expect_validation(
        lambda: openlookout.load_model(path, **kwargs), *[re.escape(k) for k in kwargs]
    )
