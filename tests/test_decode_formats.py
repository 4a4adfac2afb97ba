"""Every PNG colour type / bit depth and JPEG variant decodes exactly as the reference (Pillow)
decodes it.

The native package exposes no decode function, so decoding is observed through *probe* models
(builders.probe_model): a segmentation model whose mask label at each pixel is the value of one
colour channel of the decoded input (identity resize, scale 1). Three probes (R, G, B) read back
the decoded image exactly. On top of that, detect(body) must equal detect_array(Pillow-decoded)
on ordinary models, bit for bit.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import builders
import imagegen
import openlookout
import reference

PNG_VARIANTS = {v.name: v for v in imagegen.png_variants(97, 71, seed=11)}
PNG_VARIANTS.update(
    {
        f"{v.name}@130x64": v
        for v in imagegen.png_variants(130, 64, seed=12)
        if v.name
        in ("gray2", "gray16", "palette4", "rgb16", "rgba8", "rgb8_interlaced", "gray_alpha16")
    }
)
JPEG_VARIANTS = {v.name: v for v in imagegen.jpeg_variants(97, 71, seed=23)}
for size in ((71, 97), (130, 64), (64, 64)):
    JPEG_VARIANTS.update(
        {
            f"{v.name}@{size[0]}x{size[1]}": v
            for v in imagegen.jpeg_variants(*size, seed=size[0] + 7)
        }
    )
ALL_VARIANTS = {**PNG_VARIANTS, **JPEG_VARIANTS}


@pytest.fixture(scope="session")
def probes(tmp_path_factory):
    """(width, height) -> [(plain, inverted) native probe models for R, G, B]."""
    root = tmp_path_factory.mktemp("probes")
    cache = {}

    def get(width: int, height: int):
        if (width, height) not in cache:
            models = []
            for c in range(3):
                pair = []
                for invert in (False, True):
                    path = builders.write_package(
                        root / f"probe_{width}x{height}_{c}_{int(invert)}",
                        builders.probe_model(c, height, width, invert=invert),
                        builders.probe_manifest(height, width),
                    )
                    pair.append(openlookout.load_model(path))
                models.append(tuple(pair))
            cache[(width, height)] = models
        return cache[(width, height)]

    return get


def _probe_labels(model, body=None, content_type=None, rgb=None) -> np.ndarray:
    r = model.detect_array(rgb) if rgb is not None else model.detect(body, content_type)
    with Image.open(io.BytesIO(r["AnomalyMask"])) as m:
        assert m.mode == "RGB"
        return builders.probe_decode_labels(np.asarray(m))


def _native_decode(probe_models, body=None, content_type=None, rgb=None) -> np.ndarray:
    """The image as the native pipeline saw it, read back through the probes."""
    channels = []
    for plain, inverted in probe_models:
        channels.append(
            builders.probe_value(
                _probe_labels(plain, body, content_type, rgb),
                _probe_labels(inverted, body, content_type, rgb),
            )
        )
    return np.stack(channels, axis=-1)


def test_probe_reads_back_pixels(probes):
    """The probe itself works: detect_array of a known image reads back that image."""
    rgb = imagegen.natural_rgb(97, 71, 5)
    rgb[0, :6] = [
        (0, 255, 128),
        (254, 1, 253),
        (255, 254, 0),
        (1, 0, 255),
        (127, 128, 129),
        (2, 253, 3),
    ]
    np.testing.assert_array_equal(_native_decode(probes(97, 71), rgb=rgb), rgb)


@pytest.mark.parametrize("name", list(PNG_VARIANTS))
def test_reference_decodes_png_as_specified(name):
    """The reference decoder (Pillow) agrees with the independently computed expectation."""
    v = PNG_VARIANTS[name]
    np.testing.assert_array_equal(reference.decode(v.body), v.expected)


@pytest.mark.parametrize("name", list(ALL_VARIANTS))
def test_native_decode_is_exact(probes, name):
    v = ALL_VARIANTS[name]
    expected = reference.decode(v.body)
    h, w = expected.shape[:2]
    got = _native_decode(probes(w, h), v.body, v.content_type)
    diff = got.astype(int) - expected.astype(int)
    bad = np.argwhere(diff != 0)
    assert bad.size == 0, (
        f"{name}: {len(bad)} channel values differ from Pillow's decode (max |diff| "
        f"{np.abs(diff).max()}), first at (y, x, c) = {bad[0].tolist()}: "
        f"native {got[tuple(bad[0])]}, reference {expected[tuple(bad[0])]}"
    )


@pytest.mark.parametrize("config", ["cls_sigmoid_bilinear", "seg3_bilinear_area"])
@pytest.mark.parametrize("name", [n for n in ALL_VARIANTS if "@" not in n])
def test_detect_equals_detect_array_of_reference_decode(packages, config, name):
    v = ALL_VARIANTS[name]
    model = packages.native(config)
    decoded = reference.decode(v.body)
    assert model.detect(v.body, v.content_type) == model.detect_array(decoded)


def test_exif_orientation_not_applied(probes):
    v = JPEG_VARIANTS["jpeg420_exif_orientation"]
    with Image.open(io.BytesIO(v.body)) as img:
        assert img.getexif().get(0x0112) == 6  # the tag is really there
    plain = JPEG_VARIANTS["jpeg420"]
    # Same pixels as the file without EXIF, same (unrotated) size.
    np.testing.assert_array_equal(reference.decode(v.body), reference.decode(plain.body))
    np.testing.assert_array_equal(
        _native_decode(probes(97, 71), v.body, "image/jpeg"), reference.decode(plain.body)
    )
