"""detect_batch (order, errors, agreement with detect) and the opt-in fast_jpeg_scaling
(DCT-domain JPEG downscaling: full-size masks, answers close to the exact decode, PNG and exact
mode untouched)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import imagegen
import openlookout


@pytest.fixture(scope="module")
def seg(packages):
    return packages.get("seg3_bilinear_area")


def _jpeg(rgb: np.ndarray) -> bytes:
    return imagegen.jpeg_bytes(Image.fromarray(rgb), quality=90)


def test_detect_batch_matches_detect_in_order(packages, png_bodies):
    model = packages.native("seg3_nearest")
    names = sorted(png_bodies)
    bodies = [png_bodies[n] for n in names] * 3
    expected = [model.detect(b, "image/png") for b in bodies]
    assert model.detect_batch(bodies, "image/png", workers=3) == expected
    assert model.detect_batch(bodies, ["image/png"] * len(bodies), workers=1) == expected


def test_detect_batch_errors(packages, png_bodies):
    model = packages.native("cls_sigmoid_bilinear")
    good = png_bodies["c256x192"]
    results = model.detect_batch([good, b"junk", good], "image/png", return_exceptions=True)
    assert isinstance(results[1], openlookout.ValidationException)
    assert results[0] == results[2] == model.detect(good, "image/png")
    with pytest.raises(openlookout.ValidationException, match="not a PNG"):
        model.detect_batch([good, b"junk"], "image/png")
    with pytest.raises(openlookout.ValidationException, match="content_types"):
        model.detect_batch([good, good], ["image/png"])
    with pytest.raises(openlookout.ValidationException, match="workers"):
        model.detect_batch([good], "image/png", workers=0)
    assert model.detect_batch([], "image/png") == []


def test_fast_jpeg_scaling_keeps_full_size_and_stays_close(seg):
    rgb = imagegen.natural_rgb(1200, 900, 7)  # large enough for 1/2..1/4 DCT scaling to 64x64
    body = _jpeg(rgb)
    exact = openlookout.load_model(seg.path)
    fast = openlookout.load_model(seg.path, fast_jpeg_scaling=True)
    want, got = exact.detect(body, "image/jpeg"), fast.detect(body, "image/jpeg")
    assert got != want  # it really decoded differently
    mask = Image.open(io.BytesIO(got["AnomalyMask"]))
    assert mask.size == (1200, 900)
    assert mask.mode == "RGB"
    assert abs(sum(a["PixelAnomaly"]["TotalPercentageArea"] for a in got["Anomalies"]) - 1) < 1e-6
    assert abs(got["Confidence"] - want["Confidence"]) < 0.05
    changed = np.mean(
        (np.asarray(mask) != np.asarray(Image.open(io.BytesIO(want["AnomalyMask"])))).any(-1)
    )
    assert changed < 0.05


def test_fast_jpeg_scaling_leaves_png_and_small_images_exact(seg):
    exact = openlookout.load_model(seg.path)
    fast = openlookout.load_model(seg.path, fast_jpeg_scaling=True)
    rgb = imagegen.natural_rgb(1200, 900, 8)
    png = imagegen.png_bytes(rgb)
    assert fast.detect(png, "image/png") == exact.detect(png, "image/png")
    small = _jpeg(imagegen.natural_rgb(100, 90, 9))  # no scale keeps >= the 64x64 input
    assert fast.detect(small, "image/jpeg") == exact.detect(small, "image/jpeg")


def test_fast_jpeg_scaling_from_manifest_and_validation(seg, tmp_path):
    import json
    import shutil

    pkg = tmp_path / "pkg"
    shutil.copytree(seg.path, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["input"]["fast_jpeg_scaling"] = True
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    body = _jpeg(imagegen.natural_rgb(1200, 900, 7))
    from_manifest = openlookout.load_model(pkg).detect(body, "image/jpeg")
    assert from_manifest == openlookout.load_model(seg.path, fast_jpeg_scaling=True).detect(
        body, "image/jpeg"
    )
    assert openlookout.load_model(pkg, fast_jpeg_scaling=False).detect(
        body, "image/jpeg"
    ) == openlookout.load_model(seg.path).detect(body, "image/jpeg")
    manifest["input"]["fast_jpeg_scaling"] = "yes"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(openlookout.ValidationException, match=r"input\.fast_jpeg_scaling"):
        openlookout.load_model(pkg)
    with pytest.raises(openlookout.ValidationException, match="fast_jpeg_scaling"):
        openlookout.load_model(seg.path, fast_jpeg_scaling=1)
