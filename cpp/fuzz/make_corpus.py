"""Writes the fuzzers' seed corpora: small real PNG and JPEG files of every colour type and edge
case, from fixed seeds (deterministic for a given Pillow/libjpeg-turbo).

    python cpp/fuzz/make_corpus.py      # rewrites cpp/fuzz/corpus/<target>/ and cpp/fuzz/limits/
    python cpp/fuzz/make_corpus.py OUT_DIR   (OUT_DIR/<target>/, OUT_DIR/../limits/)

Corpora (one directory per libFuzzer target):
  fuzz_png       every colour type and bit depth (gray 1/2/4/8/16, gray+alpha 8/16, palette
                 1/2/4/8 with and without tRNS, RGB/RGBA 8/16), Adam7 interlacing (including
                 sizes with empty passes), all filter types, many small IDATs, zero-length IDAT,
                 ancillary chunks (iCCP, zTXt, iTXt, sBIT, bKGD, APNG's acTL/fcTL, unknown ones),
                 1x1 / 1xN / Nx1 images, a large flat image that compresses to a few bytes and
                 headers claiming 100000x100000.
  fuzz_jpeg      baseline 4:4:4 / 4:2:2 / 4:2:0 (and 4:1:1, 4:4:0 with cjpeg), progressive,
                 grayscale, Adobe CMYK, YCCK (TurboJPEG), restart markers, optimised tables,
                 arithmetic coding (jpegtran), EXIF / ICC / COM segments, partial MCUs, 1x1,
                 a 12-bit frame header, a lossless (SOF3) header and an oversized frame header.
  fuzz_png_scanlines  per colour type and bit depth, plain and Adam7: header bytes, palette,
                 tRNS and raw filtered scanlines (the layout fuzz_png_scanlines.cpp reads).
  fuzz_pipeline  a selection of both, each behind the selector byte fuzz_pipeline reads (bit 0:
                 JPEG, bits 1-2: which of its four pipelines).

cjpeg/jpegtran (Debian: libjpeg-turbo-progs) are optional: without them the files they would make
are left as they are (the committed ones). tests/test_hostile_inputs.py reads these files too, and
cpp/fuzz/limits/: valid progressive JPEGs on both sides of the scan limits (too slow as seeds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))

import imagegen  # noqa: E402

PNG_SIG = imagegen.PNG_SIGNATURE
chunk = imagegen.png_chunk


def _rgb(width: int, height: int, seed: int) -> np.ndarray:
    """imagegen.natural_rgb, also for sides below 2 (random pixels there)."""
    if width >= 2 and height >= 2:
        return imagegen.natural_rgb(width, height, seed)
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------


def png_files() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    # Every colour type / bit depth / tRNS / interlace / filter variant, at two small sizes.
    for w, h, seed in ((16, 12, 1), (7, 5, 2)):
        for v in imagegen.png_variants(w, h, seed):
            out[f"{v.name}_{w}x{h}.png"] = v.body
    rgb = imagegen.natural_rgb(9, 9, 3)
    gray = imagegen.natural_gray(9, 9, 4)
    # Degenerate sizes: 1x1 of several types, one row, one column, interlaced with empty passes.
    one = _rgb(1, 1, 5)
    out["rgb8_1x1.png"] = imagegen.encode_png(one, 2, 8)
    out["rgb8_1x1_interlaced.png"] = imagegen.encode_png(one, 2, 8, interlace=True)
    out["gray1_1x1.png"] = imagegen.encode_png(np.ones((1, 1), np.uint8), 0, 1)
    out["rgba16_1x1.png"] = imagegen.encode_png(np.full((1, 1, 4), 40000, np.uint16), 6, 16)
    out["palette1_1x1_trns.png"] = imagegen.encode_png(
        np.zeros((1, 1), np.uint8), 3, 1, palette=np.array([[9, 8, 7], [1, 2, 3]]), trns=b"\x00"
    )
    out["rgb8_33x1.png"] = imagegen.encode_png(_rgb(33, 1, 6), 2, 8)
    out["rgb8_1x33.png"] = imagegen.encode_png(_rgb(1, 33, 7), 2, 8)
    out["gray2_3x5_interlaced.png"] = imagegen.encode_png(gray[:5, :3] >> 6, 0, 2, interlace=True)
    out["rgb16_2x3_interlaced.png"] = imagegen.encode_png(
        imagegen.natural_rgb16(2, 3, 8), 2, 16, interlace=True
    )
    # Chunk layout: one IDAT per byte, a zero-length IDAT, ancillary chunks of every kind.
    out["rgb8_idat_per_byte.png"] = imagegen.encode_png(rgb, 2, 8, idat_size=1)
    plain = imagegen.encode_png(rgb, 2, 8)
    iend = plain.rindex(b"IEND") - 4
    out["rgb8_empty_idat.png"] = plain[:iend] + chunk(b"IDAT", b"") + plain[iend:]
    icc = zlib.compress(b"fake icc profile " * 8)
    ancillary = [
        (b"sRGB", b"\x00"),
        (b"iCCP", b"profile\x00\x00" + icc),
        (b"sBIT", b"\x08\x08\x08"),
        (b"bKGD", struct.pack(">HHH", 1, 2, 3)),
        (b"zTXt", b"Comment\x00\x00" + zlib.compress(b"compressed text " * 4)),
        (b"iTXt", b"Title\x00\x01\x00en\x00Titel\x00" + zlib.compress(b"international")),
        (b"tIME", struct.pack(">HBBBBB", 2024, 1, 2, 3, 4, 5)),
        (b"oFFs", struct.pack(">iiB", 1, 2, 0)),
        (b"eXIf", b"MM\x00\x2a\x00\x00\x00\x08\x00\x00"),
        (b"acTL", struct.pack(">II", 1, 0)),
        (b"fcTL", struct.pack(">IIIIIHHBB", 0, 9, 9, 0, 0, 1, 1, 0, 0)),
        (b"prVt", b"private ancillary chunk"),
    ]
    out["rgb8_many_chunks.png"] = imagegen.encode_png(rgb, 2, 8, extra_chunks=ancillary)
    out["palette8_splt_hist.png"] = imagegen.encode_png(
        (gray >> 5).astype(np.uint8),
        3,
        8,
        palette=np.arange(24, dtype=np.uint8).reshape(8, 3) * 10,
        extra_chunks=[(b"sPLT", b"pal\x00\x08" + bytes(6 * 3))],
    )
    out["gray8_text_after_idat.png"] = plain[:iend] + chunk(b"tEXt", b"k\x00v") + plain[iend:]
    # Flat images that compress to almost nothing (decompression-bomb shaped, but legal).
    out["gray1_1024x1024_flat.png"] = imagegen.encode_png(
        np.zeros((1024, 1024), np.uint8), 0, 1, filters=(0,), idat_size=1 << 20
    )
    out["rgb8_256x256_flat.png"] = imagegen.encode_png(
        imagegen.uniform_rgb(256, 256, (10, 200, 30)), 2, 8, filters=(2,), idat_size=1 << 20
    )
    # Headers beyond any limit, and one just past 4096.
    out["huge_ihdr_100000.png"] = imagegen.huge_ihdr_png(100000, 100000)
    out["huge_ihdr_4097x1.png"] = imagegen.huge_ihdr_png(4097, 1)
    # Pillow's encoder (what clients send most).
    out["rgb8_pillow_optimize.png"] = imagegen.png_bytes(rgb, optimize=True)
    return out


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, **kw) -> bytes:
    return imagegen.jpeg_bytes(image, **kw)


def _tool(name: str) -> str | None:
    return shutil.which(name)


def _run(args: list[str], data: bytes) -> bytes:
    return subprocess.run(args, input=data, stdout=subprocess.PIPE, check=True).stdout


def _ycck(width: int, height: int, seed: int) -> bytes | None:
    """A YCCK JPEG: TurboJPEG writes CMYK input as YCCK (Adobe transform 2)."""
    path = ctypes.util.find_library("turbojpeg")
    if path is None:
        return None
    tj = ctypes.CDLL(path)
    tj.tjInitCompress.restype = ctypes.c_void_p
    handle = tj.tjInitCompress()
    cmyk = np.ascontiguousarray(
        np.concatenate(
            [imagegen.natural_rgb(width, height, seed), np.full((height, width, 1), 60, np.uint8)],
            -1,
        )
    )
    buf = ctypes.POINTER(ctypes.c_ubyte)()
    size = ctypes.c_ulong(0)
    tjpf_cmyk, tjsamp_420 = 11, 2
    rc = tj.tjCompress2(
        ctypes.c_void_p(handle),
        cmyk.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte)),
        width,
        width * 4,
        height,
        tjpf_cmyk,
        ctypes.byref(buf),
        ctypes.byref(size),
        tjsamp_420,
        85,
        0,
    )
    data = ctypes.string_at(buf, size.value) if rc == 0 else None
    tj.tjFree(buf)
    tj.tjDestroy(ctypes.c_void_p(handle))
    return data


def _set_sof(body: bytes, marker: int, precision: int | None = None) -> bytes:
    """The first SOFn marker rewritten to `marker` (and its sample precision)."""
    b = bytearray(body)
    i = 2
    while i + 4 <= len(b):
        m, length = b[i + 1], (b[i + 2] << 8) | b[i + 3]
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            b[i + 1] = marker
            if precision is not None:
                b[i + 4] = precision
            return bytes(b)
        i += 2 + length
    raise ValueError("no SOF marker")


_NOT_MARKERS = (0x00, *range(0xD0, 0xD8))


def _chains_script(chains: list[tuple[int, int]], components: int) -> str:
    """A progressive scan script: the DC scan, then for each (component, coefficient) chain the
    coefficient alone at successive-approximation bit 10, refined one bit at a time to bit 0
    (11 scans per chain). At most 9 chains: jpegtran reads at most 100 scans from a script."""
    lines = [",".join(map(str, range(components))) + ": 0-0, 0, 0;"]
    for comp, k in chains:
        lines.append(f"{comp}: {k}-{k}, 0, 10;")
        lines += [f"{comp}: {k}-{k}, {al + 1}, {al};" for al in range(9, -1, -1)]
    return "\n".join(lines) + "\n"


def _scans(jpeg: bytes) -> tuple[int, list[int]]:
    """(offset where the first scan's tables or SOS start, offsets where each later scan's
    segments start), and the EOI offset last: scans are cut at the marker that follows each
    scan's entropy-coded data."""
    i, starts, header_end, pending = 2, [], None, None
    while i + 2 <= len(jpeg):
        marker = jpeg[i + 1]
        if marker == 0xD9:
            starts.append(i)
            break
        if pending is None:
            pending = i  # a scan's segments (DHT, SOS) begin here
        length = (jpeg[i + 2] << 8) | jpeg[i + 3]
        if marker != 0xDA:
            if marker != 0xC4:  # only Huffman tables belong to the scan that follows them
                pending = None
            i += 2 + length
            continue
        if header_end is None:
            header_end = pending
        starts.append(pending)
        pending = None
        i += 2 + length
        # Entropy-coded data: up to a marker (0xFF followed by neither 0x00 nor RSTn).
        while i + 1 < len(jpeg) and not (jpeg[i] == 0xFF and jpeg[i + 1] not in _NOT_MARKERS):
            i += 1
    assert header_end is not None
    return header_end, starts


def progressive_with_chains(body: bytes, chains: int) -> bytes | None:
    """`body` losslessly re-encoded as a valid progressive JPEG with 1 + 11 * `chains` scans (the
    DC scan, then `chains` AC coefficients each sent alone in 11 successive-approximation scans;
    up to 63 chains per component). jpegtran writes at most 100 scans per file, so the chains of
    several re-encodings are spliced after the first one's scans: they are independent."""
    jpegtran = _tool("jpegtran")
    if jpegtran is None:
        return None
    i = 2
    while body[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + ((body[i + 2] << 8) | body[i + 3])
    components = body[i + 9]
    order = [(comp, k) for k in range(1, 64) for comp in range(components)]
    assert chains <= len(order), chains
    files = []
    for first in range(0, chains, 9):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(_chains_script(order[first : min(first + 9, chains)], components))
        try:
            files.append(_run([jpegtran, "-scans", f.name], body))
        finally:
            os.unlink(f.name)
    out = bytearray()
    for n, data in enumerate(files):
        _, starts = _scans(data)
        # The first file whole (up to EOI); from the others, every scan after their DC scan.
        out += data[: starts[-1]] if n == 0 else data[starts[1] : starts[-1]]
    out += b"\xff\xd9"
    assert out.count(b"\xff\xda") == 1 + 11 * chains
    return bytes(out)


def limit_files() -> dict[str, bytes]:
    """Valid progressive JPEGs around the scan limits (decode_jpeg.cpp: at most 500 scans, and
    scans x pixels at most 100 x 4096 x 4096), for tests/test_hostile_inputs.py. Not seeds: the
    4096x4096 ones take a second each to decode."""
    out: dict[str, bytes | None] = {}
    small = _jpeg(Image.fromarray(imagegen.natural_rgb(24, 16, 21)), subsampling=0)
    out["progressive_24x16_496_scans.jpg"] = progressive_with_chains(small, 45)
    out["progressive_24x16_over_606_scans.jpg"] = progressive_with_chains(small, 55)
    y, x = np.mgrid[0:4096, 0:4096]
    gray = Image.fromarray(((x // 64 + y // 64) * 3 & 255).astype(np.uint8))
    big = _jpeg(gray, quality=40)
    out["progressive_4096x4096_100_scans.jpg"] = progressive_with_chains(big, 9)
    out["progressive_4096x4096_over_111_scans.jpg"] = progressive_with_chains(big, 10)
    return {k: v for k, v in out.items() if v is not None}


def jpeg_files() -> dict[str, bytes]:
    out: dict[str | None, bytes | None] = {}
    rgb = Image.fromarray(imagegen.natural_rgb(24, 16, 21))
    gray = Image.fromarray(imagegen.natural_gray(24, 16, 22))
    cmyk_arr = np.concatenate(
        [imagegen.natural_rgb(24, 16, 23), np.full((16, 24, 1), 50, np.uint8)], -1
    )
    cmyk = Image.frombytes("CMYK", (24, 16), np.ascontiguousarray(cmyk_arr).tobytes())
    odd = Image.fromarray(imagegen.natural_rgb(19, 11, 24))  # partial MCUs at both edges
    for name, sub in (("444", 0), ("422", 1), ("420", 2)):
        out[f"baseline_{name}.jpg"] = _jpeg(rgb, subsampling=sub)
        out[f"progressive_{name}.jpg"] = _jpeg(rgb, subsampling=sub, progressive=True)
        out[f"odd_19x11_{name}.jpg"] = _jpeg(odd, subsampling=sub)
    out["gray.jpg"] = _jpeg(gray)
    out["gray_progressive.jpg"] = _jpeg(gray, progressive=True)
    out["cmyk_adobe.jpg"] = _jpeg(cmyk)
    out["cmyk_progressive.jpg"] = _jpeg(cmyk, progressive=True)
    out["ycck.jpg"] = _ycck(24, 16, 25)
    out["restart_rows.jpg"] = _jpeg(rgb, subsampling=2, restart_marker_rows=1)
    out["restart_blocks_progressive.jpg"] = _jpeg(
        rgb, subsampling=2, restart_marker_blocks=1, progressive=True
    )
    out["optimized_q30.jpg"] = _jpeg(rgb, quality=30, optimize=True)
    out["q100_444.jpg"] = _jpeg(rgb, quality=100, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif_icc_comment.jpg"] = _jpeg(
        rgb, exif=exif.tobytes(), icc_profile=b"\x00" * 128, comment=b"openlookout fuzz seed"
    )
    out["rgb_1x1.jpg"] = _jpeg(Image.fromarray(_rgb(1, 1, 26)))
    out["gray_1x1.jpg"] = _jpeg(Image.fromarray(_rgb(1, 1, 27)[..., 0]))
    out["rgb_1x17_420.jpg"] = _jpeg(Image.fromarray(_rgb(1, 17, 28)), subsampling=2)
    out["rgb_17x1_progressive.jpg"] = _jpeg(
        Image.fromarray(_rgb(17, 1, 29)), progressive=True
    )
    out["flat_512x512_420.jpg"] = _jpeg(
        Image.fromarray(imagegen.uniform_rgb(512, 512, (90, 60, 200))), subsampling=2, quality=50
    )
    base = out["baseline_420.jpg"]
    assert base is not None
    # Frame headers this libjpeg-turbo does not decode (12-bit, lossless) or sizes past the limit.
    out["sof1_12bit.jpg"] = _set_sof(base, 0xC1, precision=12)
    out["sof3_lossless_header.jpg"] = _set_sof(base, 0xC3)
    out["sof_60000x60000.jpg"] = imagegen.patch_jpeg_size(base, 60000, 60000)
    out["sof_4097x16.jpg"] = imagegen.patch_jpeg_size(base, 4097, 16)
    out["sof_0x16.jpg"] = imagegen.patch_jpeg_size(base, 0, 16)
    jpegtran, cjpeg = _tool("jpegtran"), _tool("cjpeg")
    if jpegtran:
        out["arithmetic.jpg"] = _run([jpegtran, "-arithmetic"], base)
        out["arithmetic_progressive.jpg"] = _run(
            [jpegtran, "-arithmetic", "-progressive"], out["baseline_444.jpg"]
        )
        out["arithmetic_gray.jpg"] = _run([jpegtran, "-arithmetic"], out["gray.jpg"])
        out["arithmetic_cmyk.jpg"] = _run([jpegtran, "-arithmetic"], out["cmyk_adobe.jpg"])
        out["arithmetic_restart.jpg"] = _run([jpegtran, "-arithmetic", "-restart", "1"], base)
        out["progressive_45_scans.jpg"] = progressive_with_chains(out["baseline_444.jpg"], 4)
        # Chroma subsampled, and most AC coefficients never sent to full precision: libjpeg's
        # interblock smoothing then shapes the output, and libjpeg-turbo 2.1 and 3.x differ.
        out["progressive_incomplete_420.jpg"] = progressive_with_chains(base, 4)
        out["progressive_600_scans.jpg"] = progressive_with_chains(out["baseline_444.jpg"], 55)
    if cjpeg:
        ppm = io.BytesIO()
        rgb.save(ppm, "PPM")
        samplings = (("411", "4x1,1x1,1x1"), ("440", "1x2,1x1,1x1"), ("mixed", "2x1,1x2,1x1"))
        for name, sample in samplings:
            args = [cjpeg, "-sample", sample, "-quality", "80"]
            out[f"sample_{name}.jpg"] = _run(args, ppm.getvalue())
    return {k: v for k, v in out.items() if k is not None and v is not None}


# --------------------------------------------------------------------------------------------
# Pipeline corpus and output
# --------------------------------------------------------------------------------------------

PIPELINE_PNG = [
    "rgb8_16x12.png",
    "gray16_16x12.png",
    "palette8_trns_16x12.png",
    "rgba16_interlaced_16x12.png",
    "gray2_3x5_interlaced.png",
    "rgb8_1x1.png",
    "rgb8_33x1.png",
    "rgb8_256x256_flat.png",
]
PIPELINE_JPEG = [
    "baseline_420.jpg",
    "progressive_444.jpg",
    "gray.jpg",
    "cmyk_adobe.jpg",
    "ycck.jpg",
    "odd_19x11_422.jpg",
    "rgb_1x1.jpg",
    "flat_512x512_420.jpg",
]


def _rows(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> list[int]:
    """Byte length (filter byte included) of each scanline of the filtered image data."""
    adam7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
             (0, 1, 1, 2)]
    passes = adam7 if interlaced else [(0, 0, 1, 1)]
    rows = []
    for x0, y0, dx, dy in passes:
        pw, ph = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if pw and ph:
            rows += [1 + (pw * bits_per_pixel + 7) // 8] * ph
    return rows


def scanline_files() -> dict[str, bytes]:
    """Seeds for fuzz_png_scanlines (see its input layout): each colour type and bit depth,
    progressive and not, with valid filter bytes and random samples."""
    rng = np.random.default_rng(31)
    depths = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
    out = {}
    for type_index, color_type in enumerate((0, 2, 3, 4, 6)):
        for depth_index, depth in enumerate(depths[color_type]):
            for interlaced in (0, 1):
                width, height = int(rng.integers(1, 41)), int(rng.integers(1, 21))
                options = interlaced | int(rng.integers(0, 4)) << 1 | int(rng.integers(0, 8)) << 3
                options |= int(rng.integers(0, 2)) << 6
                entries = int(rng.integers(1, 257))
                head = [type_index, depth_index, options, width - 1, height - 1, entries - 1]
                body = bytearray(head)
                if color_type == 3:
                    body += rng.integers(0, 256, 3 * entries, dtype=np.uint8).tobytes()
                if options >> 6 & 1 and color_type in (0, 2, 3):
                    n = 2 if color_type == 0 else 6 if color_type == 2 else entries
                    if color_type == 3:
                        body.append(n - 1)  # the harness reads the entry count first
                    body += rng.integers(0, 256, n, dtype=np.uint8).tobytes()
                for row in _rows(width, height, channels[color_type] * depth, bool(interlaced)):
                    body.append(int(rng.integers(0, 5)))
                    body += rng.integers(0, 256, row - 1, dtype=np.uint8).tobytes()
                out[f"type{color_type}_depth{depth}_adam7{interlaced}"] = bytes(body)
    return out


def pipeline_files(png: dict[str, bytes], jpeg: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for names, files, fmt in ((PIPELINE_PNG, png, 0), (PIPELINE_JPEG, jpeg, 1)):
        for name in names:
            if name not in files:
                continue
            for pipeline in range(4):
                selector = fmt | (pipeline << 1)
                out[f"p{pipeline}_{name}"] = bytes([selector]) + files[name]
    return out


def _write_if_changed(path: str, data: bytes) -> None:
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    with open(path, "wb") as f:
        f.write(data)


def write(out_dir: str, limits_dir: str) -> None:
    png, jpeg = png_files(), jpeg_files()
    corpora = {
        "fuzz_png": png,
        "fuzz_png_scanlines": scanline_files(),
        "fuzz_jpeg": jpeg,
        "fuzz_pipeline": pipeline_files(png, jpeg),
    }
    total = 0
    for target, files in corpora.items():
        d = os.path.join(out_dir, target)
        os.makedirs(d, exist_ok=True)
        for name, data in sorted(files.items()):
            path = os.path.join(d, name)
            _write_if_changed(path, data)
            total += len(data)
        digest = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()[:12]
        print(f"{target}: {len(files)} files, {sum(map(len, files.values()))} bytes ({digest})")
    limits = limit_files()
    if limits:
        os.makedirs(limits_dir, exist_ok=True)
        for name, data in sorted(limits.items()):
            path = os.path.join(limits_dir, name)
            _write_if_changed(path, data)
        print(f"limits: {len(limits)} files, {sum(map(len, limits.values()))} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    write(out, os.path.join(os.path.dirname(os.path.abspath(out)), "limits"))
