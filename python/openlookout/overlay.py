"""The picture a person wants to look at: the input image with each anomaly type painted over it
in its colour (outlined, so thin defects stay visible) and a small legend with the verdict,
confidence and each type's share of the image.

Needs Pillow (``pip install pillow``), which is imported on first use, since detection itself does
not need it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ValidationException

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["overlay_image", "overlay_png"]

# How strongly an anomaly's colour covers the image inside its region (its outline is opaque).
FILL_OPACITY = 0.5


def _require_pillow() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("overlays need Pillow: pip install pillow") from None


def _decode_rgb(body: bytes) -> np.ndarray:
    """HxWx3 uint8 pixels as openlookout used them (stored orientation, 16-bit: high byte)."""
    from PIL import Image

    image = Image.open(io.BytesIO(body))
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow would clip 16-bit gray to 255 on convert("L"); openlookout keeps the high byte.
        gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    rgb: np.ndarray = np.asarray(image.convert("RGB"))
    return rgb


def _outline(region: np.ndarray, thickness: int) -> np.ndarray:
    """The pixels of ``region`` within ``thickness`` pixels of its border."""
    inner = region.copy()
    for _ in range(thickness):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = False
        shrunk[:, 0] = shrunk[:, -1] = False
        inner = shrunk
    border: np.ndarray = region & ~inner
    return border


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def overlay_image(body: bytes, result: dict[str, Any]) -> PILImage.Image:
    """The overlay of a ``DetectAnomalyResult`` (``result``) on the image it was computed from
    (``body``, the PNG or JPEG bytes), as an RGB Pillow image of the input's size."""
    _require_pillow()
    from PIL import Image, ImageDraw

    try:
        pixels = _decode_rgb(body).astype(np.float32)
    except (OSError, ValueError) as e:
        raise ValidationException(f"overlay: cannot decode the image: {e}") from None
    height, width = pixels.shape[:2]
    anomalies = result.get("Anomalies", [])[1:]
    mask_png = result.get("AnomalyMask")
    legend: list[tuple[tuple[int, int, int] | None, str]] = []
    if mask_png:
        mask = np.asarray(Image.open(io.BytesIO(mask_png)).convert("RGB"))
        if mask.shape[:2] != (height, width):
            raise ValidationException(
                f"overlay: mask is {mask.shape[1]}x{mask.shape[0]}, image {width}x{height}"
            )
        thickness = max(1, round(min(width, height) / 300))
        for anomaly in anomalies:
            color = _hex_rgb(anomaly["PixelAnomaly"]["Color"])
            region = np.all(mask == color, axis=2)
            paint = np.asarray(color, np.float32)
            pixels[region] = pixels[region] * (1 - FILL_OPACITY) + paint * FILL_OPACITY
            pixels[_outline(region, thickness)] = paint
            area = anomaly["PixelAnomaly"]["TotalPercentageArea"] * 100
            legend.append((color, f"{anomaly['Name']}  {area:.2f}%"))
    image = Image.fromarray(np.round(pixels).astype(np.uint8))
    verdict = "ANOMALOUS" if result["IsAnomalous"] else "NORMAL"
    lines: list[tuple[tuple[int, int, int] | None, str]] = [
        (None, f"{verdict}  {result['Confidence']:.3f}"),
        *legend,
    ]
    _draw_legend(image, lines, ImageDraw)
    return image


def _draw_legend(
    image: PILImage.Image, lines: list[tuple[tuple[int, int, int] | None, str]], image_draw: Any
) -> None:
    """A translucent dark box in the top-left corner: the verdict, then a colour swatch and the
    area of each anomaly type."""
    width, height = image.size
    size = max(11, round(min(width, height) / 26))
    font = _font(size)
    pad, gap = max(4, size // 2), max(2, size // 4)
    swatch = size
    draw = image_draw.Draw(image, "RGBA")
    box_width = pad * 2 + max(
        draw.textlength(text, font=font) + (0 if color is None else swatch + gap * 2)
        for color, text in lines
    )
    box_height = pad * 2 + len(lines) * size + (len(lines) - 1) * gap
    origin = pad
    draw.rectangle((origin, origin, origin + box_width, origin + box_height), fill=(0, 0, 0, 165))
    y = origin + pad
    for color, text in lines:
        x = origin + pad
        if color is not None:  # an anomaly type: its swatch, then its name and area
            draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=(*color, 255))
            draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), outline=(255, 255, 255, 255))
            x += swatch + gap * 2
        draw.text((x, y), text, font=font, fill=(255, 255, 255, 255))
        y += size + gap


def overlay_png(body: bytes, result: dict[str, Any]) -> bytes:
    """:func:`overlay_image` as PNG bytes."""
    buffer = io.BytesIO()
    overlay_image(body, result).save(buffer, "PNG")
    return buffer.getvalue()
