"""Hostile and unusual image bytes: every case either decodes correctly (detect() of the bytes
equals detect_array() of Pillow's decode of them, on a model whose mask fingerprints every pixel)
or is refused with a ValidationException; none crashes or hangs.

Cases run in a child process (tests/hostile_worker.py) with a per-case time limit, so a crash or
a hang fails the test and names the case. The sweep: the fuzzers' seed corpora (every PNG colour
type and bit depth, interlaced, palette + tRNS, 16-bit; JPEG baseline / progressive / grayscale /
CMYK / YCCK / 4:1:1 / arithmetic-coded / 12-bit / lossless headers / restart markers), truncation
at every offset of small files (sampled for a larger one), seeded bit flips (with the PNG CRCs
left wrong and fixed), wrong content types, empty and 1x1 bodies, images at the 4096-pixel limit,
progressive scan limits.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import builders
import imagegen

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(ROOT, "cpp", "fuzz", "corpus")
LIMITS = os.path.join(ROOT, "cpp", "fuzz", "limits")
WORKER = os.path.join(HERE, "hostile_worker.py")
CASE_TIMEOUT = 20.0  # seconds; a normal case takes milliseconds

# Seed files that must be refused, and why: not decodable by this libjpeg-turbo (12-bit, lossless)
# or outside the size limits / scan limit.
MUST_REFUSE = {
    "sof1_12bit.jpg": r"precision|unsupported",
    "sof3_lossless_header.jpg": r"unsupported|lossless|corrupt",
    "sof_60000x60000.jpg": r"max_side",
    "sof_4097x16.jpg": r"max_side",
    "sof_0x16.jpg": r"corrupt|image|empty|dimension|min_side",
    "huge_ihdr_100000.png": r"max_side",
    "huge_ihdr_4097x1.png": r"max_side",
    "progressive_600_scans.jpg": r"scan",
}
# Seed files whose decode differs from Pillow's, knowingly: a progressive 4:2:0 JPEG whose AC
# coefficients are never refined to full precision (no mainstream encoder writes one). libjpeg
# smooths such blocks (interblock smoothing), and the system libjpeg-turbo 2.1 the core links
# smooths subsampled components differently from the libjpeg-turbo 3.x inside Pillow's wheels
# (djpeg 2.1.5 agrees with the core). See SECURITY.md, "Known differences".
KNOWN_DIVERGENT = {"progressive_incomplete_420.jpg"}


# --------------------------------------------------------------------------------------------
# The fingerprint model
# --------------------------------------------------------------------------------------------


def fingerprint_model(height: int | str = "H", width: int | str = "W") -> onnx.ModelProto:
    """Segmentation model whose label at each pixel is (R + 3G + 5B) mod 8 of that pixel (scale
    1, mean 0, std 1): any change of one channel by less than 8 levels changes the pixel's label,
    so the mask (and the areas) fingerprint the decoded image. Dynamic height/width: with
    input.resize "none" every decoded pixel reaches the model unresampled."""
    inits = [
        numpy_helper.from_array(np.array([1, 3, 5], np.float32).reshape(1, 3, 1, 1), "w"),
        numpy_helper.from_array(np.array(8.0, np.float32), "eight"),
        numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(1, 8, 1, 1), "k"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["v"]),
        helper.make_node("Div", ["v", "eight"], ["q"]),
        helper.make_node("Floor", ["q"], ["fq"]),
        helper.make_node("Mul", ["fq", "eight"], ["m8"]),
        helper.make_node("Sub", ["v", "m8"], ["r"]),
        helper.make_node("Sub", ["r", "k"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("Neg", ["d2"], ["out"]),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, height, width])
    graph = helper.make_graph(nodes, "fingerprint", [image], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def fingerprint_manifest(resize: str, size: int | None = None) -> dict:
    inp: dict = {"resize": resize, "scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1]}
    if size is not None:
        inp.update(width=size, height=size)
    return {
        "format_version": 1,
        "task": "segmentation",
        "model": "model.onnx",
        "input": inp,
        "segmentation": {
            "output": "out",
            "upsample": "nearest",
            "activation": "none",
            "labels": [{"name": f"v{k}", "color": builders.probe_color(k)} for k in range(1, 8)],
        },
    }


@pytest.fixture(scope="module")
def fingerprint_packages(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fingerprint")
    return {
        # Every pixel at its own size: exact, for images up to a few megapixels.
        "exact": builders.write_package(
            root / "exact", fingerprint_model(), fingerprint_manifest("none")
        ),
        # 64x64 nearest samples: for the 4096x4096 images (the exact one would need GBs).
        "sampled": builders.write_package(
            root / "sampled", fingerprint_model(64, 64), fingerprint_manifest("nearest", 64)
        ),
    }


# --------------------------------------------------------------------------------------------
# Running cases
# --------------------------------------------------------------------------------------------


def run_cases(packages: dict, cases: list, tmp_path, total_timeout: float = 300.0) -> list[dict]:
    """Runs (name, body, content_type, package key, min_side[, original]) cases in a child
    process (see hostile_worker.py); returns
    one {"name", "outcome", "detail"} per case. A crash or hang fails here, naming the case."""
    spec = {"packages": packages, "case_timeout": CASE_TIMEOUT, "cases": cases}
    path = tmp_path / f"cases-{len(cases)}-{abs(hash(cases[0][0]))}.pickle"
    with open(path, "wb") as f:
        pickle.dump(spec, f)
    proc = subprocess.run(
        [sys.executable, WORKER, str(path)],
        capture_output=True,
        text=True,
        timeout=total_timeout,
        check=False,
    )
    results: dict[int, dict] = {}
    started = -1
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if "start" in record:
            started = record["start"]
        else:
            results[record["case"]] = record
    if len(results) != len(cases) or proc.returncode != 0:
        culprit = cases[started][0] if 0 <= started < len(cases) else "?"
        pytest.fail(
            f"the worker died (exit {proc.returncode}) on case {culprit!r} after "
            f"{len(results)}/{len(cases)} cases (crash or hang > {CASE_TIMEOUT}s):\n"
            f"{proc.stderr[-3000:]}"
        )
    return [
        {"name": cases[i][0], "outcome": results[i]["outcome"], "detail": results[i]["detail"]}
        for i in range(len(cases))
    ]


def assert_outcomes(results: list[dict], allowed: set[str]) -> dict[str, int]:
    bad = [r for r in results if r["outcome"] not in allowed]
    assert not bad, f"{len(bad)} unexpected outcomes, e.g. {bad[:5]}"
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


def content_type_of(name: str) -> str:
    return "image/png" if name.endswith(".png") else "image/jpeg"


def corpus_files(*targets: str) -> dict[str, bytes]:
    files = {}
    for target in targets:
        d = os.path.join(CORPUS, target)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                files[name] = f.read()
    return files


def limit_files() -> dict[str, bytes]:
    files = {}
    for name in sorted(os.listdir(LIMITS)):
        with open(os.path.join(LIMITS, name), "rb") as f:
            files[name] = f.read()
    return files


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_corpus_files_decode_like_pillow_or_are_refused(fingerprint_packages, tmp_path):
    """Every seed file: the valid ones (all colour types, bit depths, interlacing, palette+tRNS,
    16-bit, CMYK, YCCK, 4:1:1, arithmetic coding, restart markers, 1x1...) decode exactly as
    Pillow decodes them; the others get a ValidationException saying why."""
    files = corpus_files("fuzz_png", "fuzz_jpeg")
    cases = [(n, b, content_type_of(n), "exact", 1) for n, b in files.items()]
    results = run_cases(fingerprint_packages, cases, tmp_path)
    for r in results:
        if r["name"] in MUST_REFUSE:
            assert r["outcome"] == "validation", r
            assert re.search(MUST_REFUSE[r["name"]], r["detail"], re.IGNORECASE), r
        elif r["name"] in KNOWN_DIVERGENT:
            assert r["outcome"] in ("decoded", "mismatch"), r
        else:
            assert r["outcome"] == "decoded", r
    names = set(files)
    for expected in (
        "arithmetic.jpg",
        "arithmetic_progressive.jpg",
        "ycck.jpg",
        "cmyk_adobe.jpg",
        "sample_411.jpg",
        "palette8_trns_16x12.png",
        "rgba16_interlaced_16x12.png",
    ):
        assert expected in names, f"the corpus lost {expected} (re-run cpp/fuzz/make_corpus.py)"


TRUNCATION_FILES = [
    "rgb8_7x5.png",
    "palette8_trns_7x5.png",
    "rgba16_interlaced_7x5.png",
    "gray1_7x5.png",
    "rgb8_1x1_interlaced.png",
    "baseline_420.jpg",
    "progressive_444.jpg",
    "arithmetic.jpg",
    "cmyk_adobe.jpg",
    "restart_rows.jpg",
    "gray_1x1.jpg",
]


def test_truncation_at_every_offset(fingerprint_packages, tmp_path):
    """Small files cut at every byte offset, a larger one at 300 sampled offsets: each prefix is
    refused (none of these files is complete before its last byte)."""
    files = corpus_files("fuzz_png", "fuzz_jpeg")
    cases = []
    for name in TRUNCATION_FILES:
        body = files[name]
        cases += [
            (f"{name}[:{n}]", body[:n], content_type_of(name), "exact", 1) for n in range(len(body))
        ]
    large = imagegen.png_bytes(imagegen.natural_rgb(300, 200, 5))
    large_jpeg = imagegen.jpeg_bytes(
        Image.fromarray(imagegen.natural_rgb(300, 200, 6)), progressive=True
    )
    rng = np.random.default_rng(2024)
    for name, body, ct in (
        ("large.png", large, "image/png"),
        ("large.jpg", large_jpeg, "image/jpeg"),
    ):
        offsets = sorted(set(rng.integers(0, len(body), 150).tolist()) | {len(body) - 1})
        cases += [(f"{name}[:{n}]", body[:n], ct, "exact", 1) for n in offsets]
    results = run_cases(fingerprint_packages, cases, tmp_path)
    assert_outcomes(results, {"validation", "decoded"})
    for r in results:
        # Only a PNG cut inside IEND's CRC decodes: its pixels are all there, and libspng (like
        # Pillow) stops reading at IEND's type. Everything shorter is refused.
        if r["outcome"] == "decoded":
            name, cut = r["name"].rsplit("[:", 1)
            assert name.endswith(".png"), r
            full = len(files[name]) if name in files else None
            assert full is None or int(cut[:-1]) >= full - 4, r


BITFLIP_FILES = [
    "rgb8_16x12.png",
    "palette4_16x12.png",
    "gray16_16x12.png",
    "rgb8_interlaced_16x12.png",
    "rgb8_many_chunks.png",
    "baseline_420.jpg",
    "baseline_444.jpg",
    "progressive_420.jpg",
    "gray.jpg",
    "cmyk_adobe.jpg",
    "ycck.jpg",
    "arithmetic.jpg",
    "restart_rows.jpg",
]


def fix_png_crcs(body: bytes) -> bytes:
    out, at = bytearray(body), 8
    while at + 12 <= len(out):
        length = int.from_bytes(out[at : at + 4], "big")
        if length > len(out) - at - 12:
            break
        crc = zlib.crc32(bytes(out[at + 4 : at + 8 + length])) & 0xFFFFFFFF
        out[at + 8 + length : at + 12 + length] = crc.to_bytes(4, "big")
        at += 12 + length
    return bytes(out)


def test_bit_flips(fingerprint_packages, tmp_path):
    """Seeded 1-4 bit flips anywhere (PNGs also with their CRCs recomputed, so the flips reach
    the parsers): each variant decodes exactly as Pillow decodes it, or is refused."""
    files = corpus_files("fuzz_png", "fuzz_jpeg")
    rng = np.random.default_rng(6)
    cases = []
    for name in BITFLIP_FILES:
        body = files[name]
        for k in range(120):
            flipped = bytearray(body)
            for _ in range(int(rng.integers(1, 5))):
                # Skip the signature: a wrong signature is a content-type error, tested apart.
                pos = int(rng.integers(8 if name.endswith(".png") else 2, len(body)))
                flipped[pos] ^= 1 << int(rng.integers(0, 8))
            variant = bytes(flipped)
            if name.endswith(".png") and k % 2:
                variant = fix_png_crcs(variant)
            cases.append((f"{name}#flip{k}", variant, content_type_of(name), "exact", 1, body))
    results = run_cases(fingerprint_packages, cases, tmp_path)
    # A flipped palette entry decodes to what Pillow decodes. A flip in an ancillary chunk that
    # Pillow checks and libspng skips (APNG's acTL/fcTL, iTXt, a chunk type's case bit) leaves
    # the pixels alone: decoded as the original. Pillow accepts some corrupt streams the strict
    # decoder refuses, never the other way round.
    counts = assert_outcomes(results, {"decoded", "validation", "decoded_as_original"})
    assert counts.get("validation", 0) > 0
    assert counts.get("decoded", 0) > 0


def test_wrong_content_types(fingerprint_packages, tmp_path):
    files = corpus_files("fuzz_png", "fuzz_jpeg")
    cases = []
    for name, body in list(files.items())[::3]:
        other = "image/jpeg" if name.endswith(".png") else "image/png"
        for ct in (other, "image/gif", "", "image/png/jpeg", "IMAGE/" + "x" * 300, "image/\x00png"):
            cases.append((f"{name} as {ct[:20]!r}", body, ct, "exact", 1))
    results = run_cases(fingerprint_packages, cases, tmp_path)
    assert_outcomes(results, {"validation"})
    for r in results:
        assert "content type" in r["detail"] or "looks like" in r["detail"], r


def test_empty_and_one_pixel_bodies(fingerprint_packages, tmp_path):
    files = corpus_files("fuzz_png", "fuzz_jpeg")
    ones = {n: b for n, b in files.items() if re.search(r"_1x1[._]", n)}
    assert len(ones) >= 5, sorted(ones)
    cases = [
        ("empty png", b"", "image/png", "exact", 1),
        ("empty jpeg", b"", "image/jpeg", "exact", 1),
    ]
    cases += [(n, b, content_type_of(n), "exact", 1) for n, b in ones.items()]
    # With the default min_side (64) the same 1x1 images are refused for their size.
    cases += [(f"{n} min_side=64", b, content_type_of(n), "exact", 64) for n, b in ones.items()]
    results = run_cases(fingerprint_packages, cases, tmp_path)
    for r in results:
        if r["name"].startswith("empty"):
            assert r["outcome"] == "validation", r
            assert "empty" in r["detail"], r
        elif r["name"].endswith("min_side=64"):
            assert r["outcome"] == "validation", r
            assert "min_side" in r["detail"], r
        else:
            assert r["outcome"] == "decoded", r
            assert r["detail"] == "1x1", r


def _pattern(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x ^ y) & 255, (x >> 4) & 255, (y >> 4) & 255], -1).astype(np.uint8)


def test_images_at_the_size_limit(fingerprint_packages, tmp_path):
    """4096x4096 (the default max_side) decodes correctly, as a flat PNG, a patterned PNG and a
    JPEG; 4096x1 and 1x4096 too; one more pixel is refused."""
    flat = imagegen.encode_png(
        imagegen.uniform_rgb(4096, 4096, (200, 17, 90)), 2, 8, filters=(2,), idat_size=1 << 20
    )
    pattern = imagegen.png_bytes(_pattern(4096, 4096), compress_level=1)
    smooth = imagegen.jpeg_bytes(
        Image.fromarray(_pattern(4096, 4096)[..., [1, 2, 2]]), quality=60, subsampling=2
    )
    assert max(len(flat), len(pattern), len(smooth)) <= 8 << 20
    cases = [
        ("flat 4096x4096 png", flat, "image/png", "sampled", 64),
        ("pattern 4096x4096 png", pattern, "image/png", "sampled", 64),
        ("4096x4096 jpeg", smooth, "image/jpeg", "sampled", 64),
        ("4096x1 png", imagegen.png_bytes(_pattern(4096, 1)), "image/png", "exact", 1),
        ("1x4096 png", imagegen.png_bytes(_pattern(1, 4096)), "image/png", "exact", 1),
        ("4097x64 png", imagegen.png_bytes(_pattern(4097, 64)), "image/png", "exact", 1),
        (
            "64x4097 jpeg",
            imagegen.jpeg_bytes(Image.fromarray(_pattern(64, 4097))),
            "image/jpeg",
            "exact",
            1,
        ),
    ]
    results = run_cases(fingerprint_packages, cases, tmp_path)
    for r in results:
        if "4097" in r["name"]:
            assert r["outcome"] == "validation", r
            assert "max_side" in r["detail"], r
        else:
            assert r["outcome"] == "decoded", r


def test_progressive_scan_limits(fingerprint_packages, tmp_path):
    """Many-scan progressive JPEGs (valid files, spliced by cpp/fuzz/make_corpus.py): up to the
    scan budget they decode exactly; past it they are refused before decoding, in milliseconds."""
    files = limit_files()
    cases = [
        (n, b, "image/jpeg", "sampled" if "4096" in n else "exact", 1)
        for n, b in files.items()
        if n.endswith(".jpg")
    ]
    results = run_cases(fingerprint_packages, cases, tmp_path)
    for r in results:
        if "over" in r["name"]:
            assert r["outcome"] == "validation", r
            assert "scan" in r["detail"], r
        else:
            assert r["outcome"] == "decoded", r


CRASHERS = os.path.join(ROOT, "cpp", "fuzz", "crashers")


def crasher_cases() -> list:
    cases = []
    for target in ("fuzz_png", "fuzz_jpeg", "fuzz_pipeline"):
        d = os.path.join(CRASHERS, target)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            if target == "fuzz_pipeline":
                if not data:
                    continue
                ct, body = ("image/jpeg" if data[0] & 1 else "image/png"), data[1:]
            else:
                ct, body = ("image/png" if target == "fuzz_png" else "image/jpeg"), data
            cases.append((f"{target}/{name}", body, ct, "exact", 1))
    return cases


def test_fuzz_crashers_regressions(fingerprint_packages, tmp_path):
    """Every input a fuzzer ever failed on (cpp/fuzz/crashers/, see its README) now decodes
    exactly as Pillow decodes it or is refused cleanly."""
    assert os.path.isfile(os.path.join(CRASHERS, "README.md"))
    cases = crasher_cases()
    if not cases:
        return  # no findings so far
    assert_outcomes(run_cases(fingerprint_packages, cases, tmp_path), {"decoded", "validation"})
