"""Limits before work: oversized headers, decompression bombs in PNG chunks, oversized bodies and
progressive-scan bombs are refused with a ValidationException quickly and without a large
allocation.

Memory is measured in a child process, from the kernel's peak resident set size (VmHWM in
/proc/self/status, reset before each case through /proc/self/clear_refs), so allocations by
libspng, libjpeg-turbo and our C++ code all count, which tracemalloc would not see.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import imagegen
import openlookout

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LIMITS = os.path.join(ROOT, "cpp", "fuzz", "limits")


def _can_reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _can_reset_peak_rss(), reason="needs Linux /proc/self/clear_refs (peak RSS reset)"
)

# The child: loads the model, warms it up, then for each case resets the peak RSS, runs detect()
# and reports the outcome, the seconds it took and how far the peak RSS rose above the RSS before.
CHILD = r"""
import json, pickle, sys, time
import openlookout

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

spec = pickle.load(open(sys.argv[1], "rb"))
model = openlookout.load_model(spec["package"], intra_op_threads=1, **spec["options"])
model.detect(spec["warmup"], "image/png")
model.detect(spec["warmup_jpeg"], "image/jpeg")
for name, body, content_type in spec["cases"]:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    t0 = time.perf_counter()
    try:
        model.detect(body, content_type)
        outcome, detail = "decoded", ""
    except openlookout.ValidationException as e:
        outcome, detail = "validation", str(e)
    except Exception as e:
        outcome, detail = "error", repr(e)
    seconds = time.perf_counter() - t0
    peak = status("VmHWM") - before
    print(json.dumps({"name": name, "outcome": outcome, "detail": detail,
                      "seconds": seconds, "peak_mib": peak / 2**20}), flush=True)
"""

MIB = 1 << 20


@pytest.fixture(scope="module")
def package(packages) -> str:
    return packages.get("cls_sigmoid_bilinear").path


def measure(package: str, cases: list, tmp_path, **options) -> dict[str, dict]:
    import pickle

    rgb = imagegen.natural_rgb(97, 71, 1)
    spec = {
        "package": package,
        "options": options,
        "warmup": imagegen.png_bytes(rgb),
        "warmup_jpeg": imagegen.jpeg_bytes(Image.fromarray(rgb)),
        "cases": cases,
    }
    path = tmp_path / "limits.pickle"
    with open(path, "wb") as f:
        pickle.dump(spec, f)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=HERE,
    )
    results = {}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        results[r["name"]] = r
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(results) == len(cases), proc.stderr[-3000:]
    return results


def chunk(kind: bytes, data: bytes) -> bytes:
    return imagegen.png_chunk(kind, data)


def small_png(
    extra: list[bytes],
    width: int = 64,
    height: int = 64,
    idat: bytes | None = None,
    after_idat: list[bytes] = (),
) -> bytes:
    raw = (b"\x00" + bytes(3 * width)) * height
    return (
        imagegen.PNG_SIGNATURE
        + imagegen.png_ihdr(width, height, 8, 2)
        + b"".join(extra)
        + chunk(b"IDAT", zlib.compress(raw) if idat is None else idat)
        + b"".join(after_idat)
        + chunk(b"IEND", b"")
    )


def zlib_bomb(size: int) -> bytes:
    """A zlib stream of `size` zero bytes (about 1/1000 of that compressed)."""
    c = zlib.compressobj(9)
    block = bytes(1 << 20)
    out = [c.compress(block) for _ in range(size >> 20)]
    return b"".join(out) + c.flush()


def test_oversized_headers_refused_without_allocating(package, tmp_path):
    """A header beyond max_side is refused from the header: no pixel buffer, in milliseconds.
    4097x4097 would need 48 MiB of RGB (and more inside the decoders); nothing near that is
    allocated. 100000x100000 and 60000x60000 would need tens of GiB."""
    jpeg = imagegen.jpeg_bytes(Image.fromarray(imagegen.natural_rgb(97, 71, 2)))
    cases = [
        ("png 100000x100000", imagegen.huge_ihdr_png(100000, 100000), "image/png"),
        ("png 4097x4097", imagegen.huge_ihdr_png(4097, 4097), "image/png"),
        ("png 2^31-1 square", imagegen.huge_ihdr_png(2**31 - 1, 2**31 - 1), "image/png"),
        (
            "png 4097x4096 16-bit rgba",
            imagegen.PNG_SIGNATURE
            + imagegen.png_ihdr(4097, 4096, 16, 6)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""),
            "image/png",
        ),
        ("jpeg 60000x60000", imagegen.patch_jpeg_size(jpeg, 60000, 60000), "image/jpeg"),
        ("jpeg 65535x65535", imagegen.patch_jpeg_size(jpeg, 65535, 65535), "image/jpeg"),
        ("jpeg 4097x4097", imagegen.patch_jpeg_size(jpeg, 4097, 4097), "image/jpeg"),
    ]
    for name, r in measure(package, cases, tmp_path).items():
        # libjpeg itself refuses sides over 65500 before we see them.
        assert r["outcome"] == "validation", r
        assert "max_side" in r["detail"] or "65500" in r["detail"], r
        assert r["seconds"] < 0.5, r
        assert r["peak_mib"] < 16, f"{name}: peak RSS rose by {r['peak_mib']:.1f} MiB"


def test_png_chunk_bombs_refused_quickly(package, tmp_path):
    """Ancillary chunks that inflate to gigabytes (zTXt, iTXt, iCCP), an IDAT stream far longer
    than the image, a chunk length past the end of the body, and 8 MiB of tiny chunks: each is
    refused (or, for chunks the decoder may skip, decoded) within the chunk limits (16 MiB per
    chunk, 64 MiB of cached chunk data) in well under a second, without allocating the
    inflated size."""
    bomb = zlib_bomb(1 << 30)  # 1 GiB of zeros, about 1 MiB compressed
    assert len(bomb) < 2 * MIB
    tiny = chunk(b"prVt", b"")  # 12 bytes
    cases = [
        ("zTXt bomb", small_png([chunk(b"zTXt", b"Comment\x00\x00" + bomb)]), "image/png"),
        (
            "iTXt bomb",
            small_png([chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + bomb)]),
            "image/png",
        ),
        ("iCCP bomb", small_png([chunk(b"iCCP", b"icc\x00\x00" + bomb)]), "image/png"),
        (
            "zTXt bomb after IDAT",
            small_png([], after_idat=[chunk(b"zTXt", b"C\x00\x00" + bomb)]),
            "image/png",
        ),
        ("IDAT inflating to 1 GiB", small_png([], idat=bomb), "image/png"),
        (
            "chunk length past the end",
            small_png([struct.pack(">I", 0x7FFFFFF0) + b"tEXt" + b"k\x00v"]),
            "image/png",
        ),
        ("700k tiny chunks", small_png([tiny * ((7 * MIB) // len(tiny))]), "image/png"),
        (
            "60k tEXt chunks",
            small_png([chunk(b"tEXt", b"k%d\x00v" % i) for i in range(60000)]),
            "image/png",
        ),
    ]
    assert all(len(c[1]) <= 8 * MIB for c in cases)
    results = measure(package, cases, tmp_path)
    for name, r in results.items():
        print(
            f"{name}: {r['outcome']} in {r['seconds'] * 1000:.1f} ms, peak RSS "
            f"+{r['peak_mib']:.1f} MiB ({r['detail'][:70]})"
        )
        assert r["outcome"] in ("validation", "decoded"), r
        assert r["seconds"] < 2.0, r
        assert r["peak_mib"] < 96, f"{name}: peak RSS rose by {r['peak_mib']:.1f} MiB"
    # The decoder stops inflating IDAT at the last scanline; a chunk running past the body's end
    # is truncation.
    assert results["chunk length past the end"]["outcome"] == "validation"


def test_body_size_limit_before_decoding(package, tmp_path):
    """A body over max_body_bytes is refused before any decoding: a valid 3.5 MiB PNG with
    max_body_bytes=1 MiB costs nothing."""
    rgb = np.random.default_rng(3).integers(0, 256, (1100, 1100, 3), dtype=np.uint8)
    body = imagegen.png_bytes(rgb, compress_level=1)
    assert MIB < len(body) <= 8 * MIB
    results = measure(package, [("big body", body, "image/png")], tmp_path, max_body_bytes=MIB)
    r = results["big body"]
    assert r["outcome"] == "validation", r
    assert "max_body_bytes" in r["detail"], r
    assert r["seconds"] < 0.25, r
    assert r["peak_mib"] < 8, r


def test_progressive_scan_bomb_refused_before_decoding(package, tmp_path):
    """A 4096x4096 progressive JPEG of 50 KB with 111 scans would cost about a second of CPU per
    call (every scan is a pass over the whole image; 500 scans took 3.6 s): it is refused from a
    marker walk before decoding, as is one with over 500 scans at any size."""
    names = ["progressive_4096x4096_over_111_scans.jpg", "progressive_24x16_over_606_scans.jpg"]
    cases = []
    for name in names:
        with open(os.path.join(LIMITS, name), "rb") as f:
            cases.append((name, f.read(), "image/jpeg"))
    results = measure(package, cases, tmp_path, min_side=1)
    for r in results.values():
        assert r["outcome"] == "validation", r
        assert "scan" in r["detail"], r
        assert r["seconds"] < 0.25, r  # decoding would take a second and more
        assert r["peak_mib"] < 8, r


def test_limits_are_configurable(packages):
    """min_side / max_side / max_body_bytes are per model (load_model options); checked in
    test_errors too, here only that a small max_side also protects detect_array."""
    path = packages.get("cls_sigmoid_bilinear").path
    small = openlookout.load_model(path, max_side=128)
    with pytest.raises(openlookout.ValidationException, match="max_side"):
        small.detect(imagegen.huge_ihdr_png(129, 64), "image/png")
    with pytest.raises(openlookout.ValidationException, match="max_side"):
        small.detect_array(np.zeros((64, 129, 3), np.uint8))
