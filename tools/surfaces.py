"""Procedural industrial surfaces with painted defects and their exact masks.

This is the data behind openlookout's bundled demo models (see ``tools/train_demo.py``): nothing can
be downloaded, so the images are made here. Three kinds of surface, each with randomised material,
scale, orientation and lighting:

* ``metal``: brushed metal, long anisotropic streaks and a fine grain.
* ``fabric``: woven cloth (plain or twill weave) with per-thread colour and fibre noise.
* ``plastic``: a pebbled moulded part, sometimes with a printed label (text-like blocks,
  fiducial rings) on it.

All of them get harmless variation a real line camera sees (stains, dust specks, uneven lighting,
sensor noise), so that a model has to learn the defects rather than "anything unusual". Two defect
types are painted, each with its own label in the mask:

* ``scratch`` (label 1): a long thin, slightly curved line, brighter or darker than the surface.
* ``hole`` (label 2): an irregular dark opening with a lit and a shadowed rim.

Everything is a pure function of the seed (``numpy.random.default_rng``); sizes are relative to the
image width so any image size looks alike. The mask marks exactly the pixels the defect covers by at
least half, which is what the segmentation model is scored against.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "DEFECTS",
    "LABELS",
    "SURFACES",
    "Sample",
    "encode",
    "make_sample",
    "random_sample",
]

SURFACES = ("metal", "fabric", "plastic")
DEFECTS = ("scratch", "hole")
# Mask values: 0 is the background, then each defect type in DEFECTS order.
LABELS = {name: index + 1 for index, name in enumerate(DEFECTS)}
# Defect sizes are given for this width and scaled with the image.
_REFERENCE_WIDTH = 512.0

Seed = int | Sequence[int]


@dataclass(frozen=True)
class Sample:
    """One generated image and its ground truth."""

    rgb: np.ndarray  # HxWx3 uint8
    mask: np.ndarray  # HxW uint8: 0 background, LABELS[name] for each defect type
    surface: str
    defects: tuple[str, ...]  # defect types painted, in painting order (repeats possible)

    @property
    def is_anomalous(self) -> bool:
        return bool(self.defects)


# --------------------------------------------------------------------------------------------
# Noise and surfaces (float images in roughly 0..1)
# --------------------------------------------------------------------------------------------


def _frequencies(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]


def _filtered_noise(
    rng: np.random.Generator, height: int, width: int, gain: np.ndarray
) -> np.ndarray:
    """White noise shaped by a frequency-domain gain (rfft2 layout), normalised to unit std."""
    spectrum = np.fft.rfft2(rng.standard_normal((height, width))) * gain
    field = np.fft.irfft2(spectrum, s=(height, width))
    return field / max(float(field.std()), 1e-9)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cycles: float) -> np.ndarray:
    """Isotropic low-frequency noise with features about ``width / cycles`` pixels across."""
    fy, fx = _frequencies(height, width)
    radius = np.hypot(fx * width, fy * height)
    return _filtered_noise(rng, height, width, np.exp(-((radius / cycles) ** 2)))


def _rotated_frequencies(height: int, width: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies along and across the direction ``angle`` (radians from the x axis)."""
    fy, fx = _frequencies(height, width)
    c, s = math.cos(angle), math.sin(angle)
    return fx * c + fy * s, -fx * s + fy * c


def _lighting(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Multiplicative illumination: a linear gradient, a soft hot spot and a vignette."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = xx / width - 0.5, yy / height - 0.5
    gx, gy = rng.uniform(-0.25, 0.25, 2)
    light = 1.0 + gx * x + gy * y
    cx, cy = rng.uniform(-0.4, 0.4, 2)
    spread = rng.uniform(0.02, 0.1)
    spot = rng.uniform(0.0, 0.18) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / spread)
    vignette = rng.uniform(0.0, 0.25) * (x**2 + y**2)
    return light + spot - vignette


def _metal(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    # Brushing mostly runs along an axis, as on sheet stock; sometimes at an angle (turned parts).
    if rng.random() < 0.75:
        angle = rng.choice([0.0, math.pi / 2]) + rng.normal(0.0, 0.03)
    else:
        angle = rng.uniform(0.0, math.pi)
    along, across = _rotated_frequencies(height, width, angle)
    streak_length = rng.uniform(0.002, 0.008) / scale
    streaks = _filtered_noise(
        rng,
        height,
        width,
        np.exp(-((along / streak_length) ** 2) - (across / (rng.uniform(0.08, 0.25) / scale)) ** 2),
    )
    coarse = _filtered_noise(
        rng,
        height,
        width,
        np.exp(-((along / (streak_length / 2)) ** 2) - (across / (0.03 / scale)) ** 2),
    )
    grain = rng.standard_normal((height, width))
    base = rng.uniform(0.42, 0.78)
    tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0.0, 0.025, 3)
    value = (
        base
        + rng.uniform(0.025, 0.07) * streaks
        + rng.uniform(0.0, 0.04) * coarse
        + rng.uniform(0.004, 0.015) * grain
    )
    return value[..., None] * tint


_FABRIC_COLORS = np.array(
    [
        [0.16, 0.22, 0.40],  # navy
        [0.36, 0.40, 0.24],  # olive
        [0.72, 0.66, 0.52],  # beige
        [0.50, 0.50, 0.52],  # grey
        [0.50, 0.22, 0.18],  # brick
        [0.82, 0.82, 0.80],  # off-white
        [0.22, 0.42, 0.42],  # teal
    ]
)


def _fabric(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    period = rng.uniform(4.5, 10.0) * scale  # thread pitch in pixels
    angle = rng.normal(0.0, 0.05) + (math.pi / 4 if rng.random() < 0.15 else 0.0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    # A slow warp of the weave, as cloth never lies perfectly flat.
    wobble = 0.6 * period * _smooth_noise(rng, height, width, 3.0)
    c, s = math.cos(angle), math.sin(angle)
    u = (xx * c + yy * s + wobble) / period
    v = (-xx * s + yy * c + 0.5 * wobble) / period
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    plain_weave = rng.random() < 0.6  # else a 2/2 twill
    warp_on_top = (iu + iv) % 2 == 0 if plain_weave else (iu - iv) % 4 < 2
    # A thread is brightest along its middle and dips where it goes under the crossing thread.
    warp = np.sin(np.pi * fu) ** 0.7 * (0.75 + 0.25 * np.sin(np.pi * fv))
    weft = np.sin(np.pi * fv) ** 0.7 * (0.75 + 0.25 * np.sin(np.pi * fu))
    relief = np.where(warp_on_top, warp, weft)
    # Each thread's own dye and twist: constant along a thread, varying between threads.
    thread_tone = rng.normal(0.0, 1.0, 4096)
    tone = np.where(
        warp_on_top,
        thread_tone[iu.astype(np.int64) % 4096],
        thread_tone[(iv.astype(np.int64) + 2048) % 4096],
    )
    color = _FABRIC_COLORS[rng.integers(len(_FABRIC_COLORS))] * rng.uniform(0.85, 1.15, 3)
    weft_color = color * (rng.uniform(0.8, 1.1) if rng.random() < 0.5 else 1.0)
    fibres = rng.standard_normal((height, width))
    value = (0.55 + 0.45 * relief) * (1.0 + 0.04 * tone) + 0.03 * fibres
    colored = np.where(warp_on_top[..., None], color, weft_color)
    return np.clip(value[..., None] * colored * 1.2, 0.0, 1.2)


_PLASTIC_COLORS = np.array(
    [
        [0.12, 0.12, 0.13],  # black
        [0.30, 0.31, 0.33],  # dark grey
        [0.62, 0.62, 0.60],  # light grey
        [0.85, 0.84, 0.80],  # white
        [0.78, 0.72, 0.58],  # beige
        [0.20, 0.36, 0.26],  # green
        [0.18, 0.28, 0.50],  # blue
    ]
)


def _plastic(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    fy, fx = _frequencies(height, width)
    radius = np.hypot(fx, fy)
    peak = rng.uniform(0.05, 0.18) / scale
    bumps = _filtered_noise(rng, height, width, np.exp(-(((radius - peak) / (0.5 * peak)) ** 2)))
    # Shade the pebbled height field with a light from a random direction.
    light = rng.uniform(0.0, 2 * math.pi)
    gy, gx = np.gradient(bumps)
    shading = gx * math.cos(light) + gy * math.sin(light)
    color = _PLASTIC_COLORS[rng.integers(len(_PLASTIC_COLORS))] * rng.uniform(0.9, 1.1, 3)
    value = 1.0 + rng.uniform(0.04, 0.12) * shading + 0.01 * rng.standard_normal((height, width))
    image = value[..., None] * color
    if rng.random() < 0.5:
        _print_label(rng, image, scale)
    return image


def _print_label(rng: np.random.Generator, image: np.ndarray, scale: float) -> None:
    """A printed label: a light or dark field with rows of text-like blocks, and fiducial rings."""
    height, width = image.shape[:2]
    background_luma = float(image.mean())
    ink = np.array([0.08, 0.08, 0.1]) if background_luma > 0.45 else np.array([0.9, 0.9, 0.88])
    if rng.random() < 0.5:
        ink = ink * 0.5 + rng.uniform(0.0, 0.5, 3) * 0.5
    label_w = int(rng.uniform(0.25, 0.5) * width)
    label_h = int(rng.uniform(0.15, 0.3) * height)
    x0 = int(rng.integers(0, width - label_w))
    y0 = int(rng.integers(0, height - label_h))
    if rng.random() < 0.5:  # a sticker of its own colour
        image[y0 : y0 + label_h, x0 : x0 + label_w] = (
            image[y0 : y0 + label_h, x0 : x0 + label_w] * 0.3 + (1.0 - ink) * 0.7
        )
        ink = ink if float(np.mean(1.0 - ink)) > 0.5 else 1.0 - ink
    glyph_h = max(3, int(rng.uniform(6, 12) * scale))
    row = y0 + glyph_h
    while row + glyph_h < y0 + label_h:
        col = x0 + glyph_h
        end = x0 + int(rng.uniform(0.5, 1.0) * (label_w - 2 * glyph_h))
        while col < end:
            glyph_w = max(2, int(rng.uniform(0.4, 0.8) * glyph_h))
            if rng.random() < 0.85:
                image[row : row + glyph_h, col : col + glyph_w] = ink
            col += glyph_w + max(1, glyph_h // 4) + (glyph_h if rng.random() < 0.15 else 0)
        row += int(glyph_h * rng.uniform(1.6, 2.2))
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        r = rng.uniform(6, 14) * scale
        yy, xx = np.ogrid[0:height, 0:width]
        ring = np.abs(np.hypot(xx - cx, yy - cy) - r) < max(1.0, 1.2 * scale)
        image[ring] = ink


def _stains_and_dust(rng: np.random.Generator, image: np.ndarray, scale: float) -> None:
    """Harmless variation: faint soft stains and tiny dust specks (much smaller than holes)."""
    height, width = image.shape[:2]
    yy, xx = np.ogrid[0:height, 0:width]
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.04, 0.15) * width
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        image += (rng.uniform(-0.07, 0.05) * blob)[..., None] * rng.uniform(0.8, 1.2, 3)
    for _ in range(int(rng.integers(0, 12))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.4, 1.3) * scale
        speck = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        image += (rng.uniform(-0.25, 0.25) * speck)[..., None]


# --------------------------------------------------------------------------------------------
# Defects
# --------------------------------------------------------------------------------------------


def _segment_distance(xx: np.ndarray, yy: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from each pixel centre to a polyline given by ``points`` (N x 2, x y)."""
    best = np.full(np.broadcast_shapes(xx.shape, yy.shape), np.inf)
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        dx, dy = bx - ax, by - ay
        length2 = max(dx * dx + dy * dy, 1e-12)
        t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / length2, 0.0, 1.0)
        best = np.minimum(best, np.hypot(xx - ax - t * dx, yy - ay - t * dy))
    return best


def _paint_scratch(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, scale: float
) -> None:
    height, width = mask.shape
    length = rng.uniform(0.18, 0.6) * width
    angle = rng.uniform(0.0, math.pi)
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    bend = rng.normal(0.0, 0.08) * length
    # A quadratic Bezier: a straight stroke bent a little, as a slipping tool leaves.
    t = np.linspace(0.0, 1.0, 24)[:, None]
    p0, p2 = np.array([cx - dx, cy - dy]), np.array([cx + dx, cy + dy])
    p1 = np.array([cx, cy]) + bend * np.array([-math.sin(angle), math.cos(angle)])
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    half_width = rng.uniform(1.0, 2.6) * scale
    margin = half_width + 3
    x0 = int(max(0, math.floor(points[:, 0].min() - margin)))
    x1 = int(min(width, math.ceil(points[:, 0].max() + margin)))
    y0 = int(max(0, math.floor(points[:, 1].min() - margin)))
    y1 = int(min(height, math.ceil(points[:, 1].max() + margin)))
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    distance = _segment_distance(xx, yy, points)
    # The scratch tapers at both ends: the tool touches down and lifts off.
    along = _segment_distance(xx, yy, points[:1]), _segment_distance(xx, yy, points[-1:])
    taper = np.clip(np.minimum(*along) / (0.12 * length), 0.35, 1.0)
    local_half_width = half_width * taper
    coverage = np.clip(local_half_width + 0.5 - distance, 0.0, 1.0)
    inside = distance <= local_half_width
    # Bright (a fresh cut catching the light) or dark (dirt in the groove), with a thin shadow.
    strength = rng.uniform(0.2, 0.45) * (1.0 if rng.random() < 0.6 else -1.0)
    shadow = np.clip(1.0 - np.abs(distance - local_half_width - 1.0 * scale), 0.0, 1.0)
    region = image[y0:y1, x0:x1]
    local_mean = region.mean(axis=(0, 1))
    target = np.clip(local_mean + strength, 0.0, 1.0)
    # The cut is deeper in some places than others: its contrast varies slowly along it.
    depth = 0.8 + 0.2 * np.clip(_smooth_noise(rng, y1 - y0, x1 - x0, 4.0), -1.0, 1.0)
    region += (target - region) * (coverage * depth)[..., None]
    region -= (0.06 * shadow * (1.0 - coverage))[..., None]
    mask[y0:y1, x0:x1][inside] = LABELS["scratch"]


def _paint_hole(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, scale: float
) -> None:
    height, width = mask.shape
    radius = rng.uniform(4.5, 20.0) * scale
    rim = rng.uniform(1.2, 3.0) * scale
    margin = radius * 1.3 + rim + 2
    cx = rng.uniform(margin, width - margin)
    cy = rng.uniform(margin, height - margin)
    x0, x1 = int(cx - margin), math.ceil(cx + margin)
    y0, y1 = int(cy - margin), math.ceil(cy + margin)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    phi = np.arctan2(yy - cy, xx - cx)
    # An irregular outline: a few low harmonics, and an elongation.
    outline = radius * (1.0 + rng.uniform(-0.25, 0.25) * np.cos(2 * (phi - rng.uniform(0, np.pi))))
    for harmonic in (3, 4, 5):
        wiggle = rng.normal(0.0, 0.05) * np.cos(harmonic * phi + rng.uniform(0, 6))
        outline = outline * (1.0 + wiggle)
    depth = outline - np.hypot(xx - cx, yy - cy)  # > 0 inside the hole
    coverage = np.clip(depth + 0.5, 0.0, 1.0)
    inside = depth >= 0.0
    light = rng.uniform(0.0, 2 * math.pi)
    facing = np.cos(phi - light)  # +1 on the rim side that faces the light
    region = image[y0:y1, x0:x1]
    surface_tone = region.mean(axis=(0, 1))
    # Inside: dark, with the far wall catching a little light.
    darkness = rng.uniform(0.02, 0.14)
    wall = np.clip(1.0 - depth / max(0.35 * radius, 1.0), 0.0, 1.0) * np.clip(-facing, 0.0, 1.0)
    interior = darkness + 0.25 * wall[..., None] * surface_tone
    region *= (1.0 - coverage)[..., None]
    region += coverage[..., None] * interior
    # The rim: a raised burr, lit on one side and shadowed on the other.
    ring = np.clip(1.0 - np.abs(-depth - rim / 2) / (rim / 2 + 0.5), 0.0, 1.0) * (1.0 - coverage)
    region += (ring * facing * rng.uniform(0.12, 0.28))[..., None]
    mask[y0:y1, x0:x1][inside] = LABELS["hole"]


_PAINTERS = {"scratch": _paint_scratch, "hole": _paint_hole}
_SURFACES = {"metal": _metal, "fabric": _fabric, "plastic": _plastic}


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


def make_sample(
    seed: Seed,
    width: int = 512,
    height: int = 384,
    surface: str | None = None,
    defects: Sequence[str] | None = None,
) -> Sample:
    """One image of ``surface`` (random if None) with ``defects`` painted in order (a random
    mix if None: normal 40%, scratches 25%, holes 25%, both 10%)."""
    rng = np.random.default_rng(seed)
    if surface is None:
        surface = SURFACES[int(rng.integers(len(SURFACES)))]
    if defects is None:
        kind = rng.choice(["normal", "scratch", "hole", "both"], p=[0.4, 0.25, 0.25, 0.1])
        scratches = int(rng.integers(1, 3)) if kind in ("scratch", "both") else 0
        holes = int(rng.integers(1, 4)) if kind in ("hole", "both") else 0
        order = ["scratch"] * scratches + ["hole"] * holes
        defects = [order[i] for i in rng.permutation(len(order))]
    unknown = set(defects) - set(DEFECTS)
    if surface not in _SURFACES or unknown:
        raise ValueError(f"unknown surface {surface!r} or defects {sorted(unknown)}")
    scale = width / _REFERENCE_WIDTH
    image = _SURFACES[surface](rng, height, width, scale)
    image = image * _lighting(rng, height, width)[..., None]
    _stains_and_dust(rng, image, scale)
    mask = np.zeros((height, width), np.uint8)
    for defect in defects:
        _PAINTERS[defect](rng, image, mask, scale)
    image += rng.uniform(0.003, 0.015) * rng.standard_normal(image.shape)
    rgb = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Sample(rgb=rgb, mask=mask, surface=surface, defects=tuple(defects))


# Image sizes a random sample is drawn at (width, height): the demo models see several scales.
TRAINING_SIZES = ((512, 384), (640, 480), (448, 336), (576, 432))


def random_sample(
    split_seed: int, index: int, sizes: Sequence[tuple[int, int]] = ((512, 384),)
) -> Sample:
    """Sample ``index`` of the split seeded ``split_seed``: independent of every other index, so a
    split can be generated in parallel and any image regenerated alone."""
    rng = np.random.default_rng([split_seed, index, 0])
    width, height = sizes[int(rng.integers(len(sizes)))]
    return make_sample([split_seed, index, 1], width, height)


def encode(rgb: np.ndarray, fmt: str, quality: int = 90, optimize: bool = True) -> bytes:
    """PNG or JPEG bytes of an RGB image (``fmt``: ``"png"`` or ``"jpeg"``); ``optimize``
    trades PNG encoding time for size."""
    buffer = io.BytesIO()
    image = Image.fromarray(rgb)
    if fmt == "png":
        image.save(buffer, "PNG", optimize=optimize)
    else:
        image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
