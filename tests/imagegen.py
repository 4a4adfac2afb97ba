"""Deterministic test images and their encodings (PNG and JPEG), built with NumPy, zlib and Pillow.

Everything here is a pure function of its arguments (fixed seeds), so the suite needs no files and
no network. Besides the pixel generators there is a small hand-written PNG encoder
(:func:`encode_png`): Pillow cannot write Adam7-interlaced PNGs, 16-bit gray+alpha, 16-bit RGB(A),
or low-bit-depth gray, and writing them by hand also lets every PNG filter type (None, Sub, Up,
Average, Paeth) and multi-IDAT streams be exercised. Each PNG variant comes with the 8-bit RGB it
must decode to, computed here from the source samples and *not* by Pillow, so the reference decoder
itself is checked too.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Sizes (width, height) used throughout: odd, non-square, portrait, and the L4V minimum.
SIZES = [(97, 71), (130, 64), (256, 192), (64, 64), (71, 97), (200, 150)]


# --------------------------------------------------------------------------------------------
# Pixel content
# --------------------------------------------------------------------------------------------


def _natural_float(width: int, height: int, seed: int) -> np.ndarray:
    """HxWx3 float64 in roughly [0, 1]: a smooth colour gradient, soft blobs, a few hard-edged
    rectangles (edges matter for resizing) and fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    norm = float(max(width, height))
    img = np.empty((height, width, 3), np.float64)
    base = rng.uniform(0.15, 0.85, 3)
    gx, gy = rng.uniform(-0.5, 0.5, (2, 3))
    img[:] = base + (xx / norm)[..., None] * gx + (yy / norm)[..., None] * gy
    for _ in range(int(rng.integers(3, 7))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.04, 0.25) * norm
        col = rng.uniform(-0.6, 0.6, 3)
        img += col * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, width - 1)), int(rng.integers(0, height - 1))
        x1 = min(width, x0 + int(rng.integers(2, max(3, width // 3))))
        y1 = min(height, y0 + int(rng.integers(2, max(3, height // 3))))
        img[y0:y1, x0:x1] = rng.uniform(0, 1, 3)
    img += rng.normal(0.0, 0.02, img.shape)
    return np.clip(img, 0.0, 1.0)


def natural_rgb(width: int, height: int, seed: int) -> np.ndarray:
    """HxWx3 uint8 RGB image with natural-ish content."""
    return np.round(_natural_float(width, height, seed) * 255.0).astype(np.uint8)


def natural_rgb16(width: int, height: int, seed: int) -> np.ndarray:
    """HxWx3 uint16 image; the low byte is deliberately busy (noise) so that decoders that round
    instead of taking the high byte are caught."""
    hi = np.round(_natural_float(width, height, seed) * 255.0).astype(np.uint16)
    lo = np.random.default_rng(seed + 7919).integers(0, 256, hi.shape, dtype=np.uint16)
    return (hi << 8) | lo


def natural_gray(width: int, height: int, seed: int) -> np.ndarray:
    rgb = natural_rgb(width, height, seed).astype(np.float64)
    return np.round(rgb @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)


def alpha_channel(width: int, height: int, seed: int, bits: int = 8) -> np.ndarray:
    """A busy alpha plane (including fully transparent pixels) that must be ignored."""
    rng = np.random.default_rng(seed + 104729)
    return rng.integers(0, 1 << bits, (height, width), dtype=np.uint32).astype(
        np.uint16 if bits == 16 else np.uint8
    )


def uniform_rgb(width: int, height: int, value) -> np.ndarray:
    out = np.empty((height, width, 3), np.uint8)
    out[:] = np.asarray(value, np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# PNG writer (hand-written; supports every colour type / bit depth, all filters, Adam7)
# --------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_ihdr(width: int, height: int, bit_depth: int, color_type: int, interlace: int = 0) -> bytes:
    return png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    )


def _pack_rows(samples: np.ndarray, bit_depth: int) -> np.ndarray:
    """HxWxC integer samples -> H x rowbytes uint8 (big-endian 16-bit, MSB-first sub-byte)."""
    h, w, c = samples.shape
    if bit_depth == 16:
        return samples.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
    if bit_depth == 8:
        return samples.astype(np.uint8).reshape(h, w * c)
    per_byte = 8 // bit_depth
    flat = samples.reshape(h, w * c).astype(np.uint8)
    n = flat.shape[1]
    padded = np.zeros((h, -(-n // per_byte) * per_byte), np.uint8)
    padded[:, :n] = flat
    groups = padded.reshape(h, -1, per_byte)
    out = np.zeros(groups.shape[:2], np.uint8)
    for k in range(per_byte):
        out |= (groups[:, :, k] << (8 - bit_depth * (k + 1))).astype(np.uint8)
    return out


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(rows: np.ndarray, bpp: int, filters) -> bytes:
    out = bytearray()
    prior = np.zeros(rows.shape[1], np.int32)
    for y in range(rows.shape[0]):
        raw = rows[y].astype(np.int32)
        left = (
            np.concatenate([np.zeros(bpp, np.int32), raw[:-bpp]])
            if raw.size > bpp
            else np.zeros_like(raw)
        )
        upleft = (
            np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])
            if raw.size > bpp
            else np.zeros_like(raw)
        )
        ftype = filters[y % len(filters)]
        if ftype == 0:
            f = raw
        elif ftype == 1:
            f = raw - left
        elif ftype == 2:
            f = raw - prior
        elif ftype == 3:
            f = raw - ((left + prior) >> 1)
        else:
            f = raw - _paeth(left, prior, upleft)
        out.append(ftype)
        out += (f & 0xFF).astype(np.uint8).tobytes()
        prior = raw
    return bytes(out)


def encode_png(
    samples: np.ndarray,
    color_type: int,
    bit_depth: int,
    *,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
    interlace: bool = False,
    filters=(0, 1, 2, 3, 4),
    idat_size: int = 4096,
    extra_chunks: list[tuple[bytes, bytes]] = (),
) -> bytes:
    """Encodes HxWxC samples (C from the colour type; indices for palette) as a PNG.

    `filters` are cycled over the scanlines; the zlib stream is split into IDAT chunks of
    `idat_size` bytes; `extra_chunks` (ancillary, e.g. gAMA) go before PLTE/IDAT."""
    if samples.ndim == 2:
        samples = samples[..., None]
    h, w, c = samples.shape
    assert c == _CHANNELS[color_type], (c, color_type)
    bpp = max(1, c * bit_depth // 8)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in _ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            raw += _filter_rows(_pack_rows(sub, bit_depth), bpp, filters)
    else:
        raw = _filter_rows(_pack_rows(samples, bit_depth), bpp, filters)
    data = zlib.compress(raw, 6)
    out = PNG_SIGNATURE + png_ihdr(w, h, bit_depth, color_type, 1 if interlace else 0)
    for kind, payload in extra_chunks:
        out += png_chunk(kind, payload)
    if palette is not None:
        out += png_chunk(b"PLTE", np.asarray(palette, np.uint8).reshape(-1).tobytes())
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    for i in range(0, len(data), idat_size):
        out += png_chunk(b"IDAT", data[i : i + idat_size])
    return out + png_chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------
# Encoders through Pillow
# --------------------------------------------------------------------------------------------


def png_bytes(rgb: np.ndarray, **save_kwargs) -> bytes:
    """Plain 8-bit RGB PNG through Pillow."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "PNG", **save_kwargs)
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, **save_kwargs) -> bytes:
    save_kwargs.setdefault("quality", 90)
    buf = io.BytesIO()
    image.save(buf, "JPEG", **save_kwargs)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Variant catalogue
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    content_type: str
    body: bytes
    # The 8-bit RGB the body must decode to, computed independently of Pillow; None for JPEG
    # (lossy: the reference decoder, Pillow, is the only oracle).
    expected: np.ndarray | None


def _palette(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3), dtype=np.uint8)


def png_variants(width: int = 97, height: int = 71, seed: int = 11) -> list[Variant]:
    """Every PNG colour type and bit depth, with and without alpha / tRNS, plus interlaced and
    ancillary-chunk variants, each with its independently computed expected RGB."""
    out: list[Variant] = []
    rng = np.random.default_rng(seed)
    gray8 = natural_gray(width, height, seed)
    rgb8 = natural_rgb(width, height, seed + 1)
    rgb16 = natural_rgb16(width, height, seed + 2)
    gray16 = rgb16[..., 1]
    alpha8 = alpha_channel(width, height, seed)
    alpha16 = alpha_channel(width, height, seed, bits=16)

    def add(name, samples, ct, bd, expected, **kw):
        out.append(Variant(name, "image/png", encode_png(samples, ct, bd, **kw), expected))

    def rep(g):
        return np.repeat(np.asarray(g, np.uint8)[..., None], 3, axis=2)

    for bd in (1, 2, 4):
        levels = (1 << bd) - 1
        v = (gray8.astype(np.uint32) * levels + 127) // 255  # quantised gray, 0..levels
        add(f"gray{bd}", v, 0, bd, rep(v * (255 // levels)))
    add("gray8", gray8, 0, 8, rep(gray8))
    add("gray8_trns", gray8, 0, 8, rep(gray8), trns=struct.pack(">H", int(gray8[0, 0])))
    add("gray16", gray16, 0, 16, rep(gray16 >> 8))
    add("gray_alpha8", np.stack([gray8, alpha8], -1), 4, 8, rep(gray8))
    add("gray_alpha16", np.stack([gray16, alpha16], -1), 4, 16, rep(gray16 >> 8))
    for bd in (1, 2, 4, 8):
        n = 1 << bd
        pal = _palette(seed + bd, n)
        idx = rng.integers(0, n, (height, width), dtype=np.uint8)
        # Make the index image spatially coherent (blocks) so it compresses and looks image-like.
        idx = np.repeat(np.repeat(idx[::4, ::4], 4, 0), 4, 1)[:height, :width]
        add(f"palette{bd}", idx, 3, bd, pal[idx], palette=pal)
    pal = _palette(seed + 99, 200)
    idx = (gray8.astype(np.uint32) * 199 // 255).astype(np.uint8)
    trns = bytes(np.random.default_rng(seed + 5).integers(0, 256, 120, dtype=np.uint8))
    add("palette8_trns", idx, 3, 8, pal[idx], palette=pal, trns=trns)
    add("rgb8", rgb8, 2, 8, rgb8)
    add("rgb8_trns", rgb8, 2, 8, rgb8, trns=struct.pack(">HHH", *map(int, rgb8[0, 0])))
    add("rgb16", rgb16, 2, 16, (rgb16 >> 8).astype(np.uint8))
    add("rgba8", np.concatenate([rgb8, alpha8[..., None]], -1), 6, 8, rgb8)
    add(
        "rgba16",
        np.concatenate([rgb16, alpha16[..., None]], -1),
        6,
        16,
        (rgb16 >> 8).astype(np.uint8),
    )
    add("rgb8_interlaced", rgb8, 2, 8, rgb8, interlace=True)
    add("gray4_interlaced", (gray8 >> 4), 0, 4, rep((gray8 >> 4) * 17), interlace=True)
    add(
        "rgba16_interlaced",
        np.concatenate([rgb16, alpha16[..., None]], -1),
        6,
        16,
        (rgb16 >> 8).astype(np.uint8),
        interlace=True,
    )
    add("rgb8_filter_none", rgb8, 2, 8, rgb8, filters=(0,), idat_size=1 << 20)
    add("rgb8_filter_paeth_small_idat", rgb8, 2, 8, rgb8, filters=(4,), idat_size=97)
    # Ancillary chunks that must not change the pixels (no gamma / colour management applied).
    add(
        "rgb8_ancillary",
        rgb8,
        2,
        8,
        rgb8,
        extra_chunks=[
            (b"gAMA", struct.pack(">I", 100000)),
            (b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)),
            (b"tEXt", b"Comment\x00openlookout test"),
            (b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
        ],
    )
    # Pillow's own writer too (what most clients send).
    out.append(Variant("rgb8_pillow", "image/png", png_bytes(rgb8), rgb8))
    return out


def jpeg_variants(width: int = 97, height: int = 71, seed: int = 23) -> list[Variant]:
    """Baseline 4:4:4 / 4:2:2 / 4:2:0, progressive, grayscale, Adobe CMYK, restart markers, EXIF
    orientation (not to be applied), quality 90."""
    rgb = Image.fromarray(natural_rgb(width, height, seed))
    gray = Image.fromarray(natural_gray(width, height, seed + 1))
    rng = np.random.default_rng(seed + 2)
    cmyk_arr = np.concatenate(
        [
            natural_rgb(width, height, seed + 3),
            rng.integers(0, 120, (height, width, 1), dtype=np.uint8),
        ],
        -1,
    )
    cmyk = Image.frombytes("CMYK", (width, height), np.ascontiguousarray(cmyk_arr).tobytes())
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display; must NOT be applied
    v = [
        ("jpeg444", jpeg_bytes(rgb, subsampling=0)),
        ("jpeg422", jpeg_bytes(rgb, subsampling=1)),
        ("jpeg420", jpeg_bytes(rgb, subsampling=2)),
        ("jpeg420_progressive", jpeg_bytes(rgb, subsampling=2, progressive=True)),
        ("jpeg444_progressive", jpeg_bytes(rgb, subsampling=0, progressive=True)),
        ("jpeg_gray", jpeg_bytes(gray)),
        ("jpeg_cmyk", jpeg_bytes(cmyk)),
        ("jpeg420_restart", jpeg_bytes(rgb, subsampling=2, restart_marker_rows=1)),
        ("jpeg420_exif_orientation", jpeg_bytes(rgb, subsampling=2, exif=exif.tobytes())),
        ("jpeg420_q50_optimize", jpeg_bytes(rgb, subsampling=2, quality=50, optimize=True)),
    ]
    return [Variant(n, "image/jpeg", b, None) for n, b in v]


def huge_ihdr_png(width: int = 100000, height: int = 100000) -> bytes:
    """A syntactically valid PNG whose IHDR claims a huge size (with a tiny IDAT); a decoder must
    reject it from the header, before allocating anything."""
    row = b"\x00" + b"\x00" * 3 * 8
    return (
        PNG_SIGNATURE
        + png_ihdr(width, height, 8, 2)
        + png_chunk(b"IDAT", zlib.compress(row * 8))
        + png_chunk(b"IEND", b"")
    )


def patch_jpeg_size(body: bytes, width: int, height: int) -> bytes:
    """Rewrites the frame header (SOF0/1/2) dimensions of a JPEG."""
    b = bytearray(body)
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            raise ValueError("bad marker")
        marker = b[i + 1]
        length = (b[i + 2] << 8) | b[i + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", b, i + 5, height, width)
            return bytes(b)
        i += 2 + length
    raise ValueError("no SOF")
