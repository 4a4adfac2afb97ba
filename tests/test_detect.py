"""detect() / detect_array() against the independent reference: both tasks, every resize and
upsample mode, layouts, colour orders, normalisation, thresholds, activations, image_size, body
types, result shape and types, the mask format."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import builders
import imagegen
import openlookout
import reference
from conftest import (
    CLASSIFICATION_CONFIGS,
    CONFIGS,
    IMAGE_NAMES,
    LABELS,
    SEGMENTATION3_CONFIGS,
    SEGMENTATION_CONFIGS,
    json_roundtrip,
)

ALL_CONFIGS = list(CONFIGS)


def _check_blend(rgb: np.ndarray, mask: bytes) -> None:
    """AWS's display sample: Image.blend(input, mask, 0.5) needs the same size and mode."""
    img = Image.fromarray(rgb)
    with Image.open(io.BytesIO(mask)) as m:
        out = Image.blend(img, m, 0.5)
    assert out.size == img.size
    assert out.mode == "RGB"


@pytest.mark.parametrize("config", ALL_CONFIGS)
def test_task_attribute(packages, config):
    assert packages.native(config).task == CONFIGS[config]["task"]


@pytest.mark.parametrize("image", IMAGE_NAMES)
@pytest.mark.parametrize("config", ALL_CONFIGS)
def test_matches_reference(packages, images, png_bodies, config, image):
    pkg = packages.get(config)
    model = packages.native(config)
    native = model.detect(png_bodies[image], "image/png")
    ref = pkg.reference(image, images[image])
    reference.assert_matches_reference(native, ref, pkg.task)
    # JSON-serialisable apart from the mask bytes, with Python types only.
    assert json_roundtrip(native) == {k: v for k, v in native.items() if k != "AnomalyMask"}
    if pkg.task == "segmentation":
        _check_blend(images[image], native["AnomalyMask"])


@pytest.mark.parametrize(
    "config",
    [c for c in CLASSIFICATION_CONFIGS if c != "cls_default_threshold"]
    + ["seg3_with_cls", "seg1_sigmoid_inside", "seg1_logit"],
)
def test_both_verdicts_occur(packages, images, png_bodies, config):
    """The configs are set up so that the natural images get both verdicts (so the verdict
    comparison above cannot pass on a constant answer), and native agrees on each."""
    pkg = packages.get(config)
    model = packages.native(config)
    ref_verdicts = [pkg.reference(n, images[n]).result["IsAnomalous"] for n in IMAGE_NAMES]
    assert set(ref_verdicts) == {True, False}, ref_verdicts
    native_verdicts = [model.detect(png_bodies[n], "image/png")["IsAnomalous"] for n in IMAGE_NAMES]
    assert native_verdicts == ref_verdicts


def test_thresholds_other_than_half(packages):
    thresholds = [
        packages.get(c).ref.cfg.cls["threshold"]
        for c in CLASSIFICATION_CONFIGS
        if c != "cls_default_threshold"
    ]
    assert all(abs(t - 0.5) > 0.01 for t in thresholds), thresholds
    assert packages.get("cls_default_threshold").ref.cfg.cls["threshold"] == 0.5


@pytest.mark.parametrize("config", SEGMENTATION3_CONFIGS)
def test_segmentation_several_labels(packages, images, png_bodies, config):
    """Some image yields anomalous pixels of both labels, and native reports both, in manifest
    order, with upper-case colours."""
    pkg = packages.get(config)
    model = packages.native(config)
    found = False
    for n in IMAGE_NAMES:
        ref = pkg.reference(n, images[n])
        if ref.counts[1] > 20 and ref.counts[2] > 20:
            native = model.detect(png_bodies[n], "image/png")
            assert [a["Name"] for a in native["Anomalies"]] == ["background", "scratch", "dent"]
            assert [a["PixelAnomaly"]["Color"] for a in native["Anomalies"]] == [
                "#FFFFFF",
                "#7ED321",
                "#4DD8FF",
            ]
            found = True
    assert found, "test setup: no image produces two anomaly labels"


def test_segmentation_mask_and_verdict_are_independent_with_classification_section(
    packages, images, png_bodies
):
    """With a classification section, IsAnomalous comes from the classifier, not from the mask:
    some image must have anomalous mask pixels but a normal verdict (or the reverse)."""
    pkg = packages.get("seg3_with_cls")
    model = packages.native("seg3_with_cls")
    differs = []
    for n in IMAGE_NAMES:
        native = model.detect(png_bodies[n], "image/png")
        has_pixels = len(native["Anomalies"]) > 1
        if has_pixels != native["IsAnomalous"]:
            differs.append(n)
        assert native["IsAnomalous"] == pkg.reference(n, images[n]).result["IsAnomalous"]
    assert differs


def _is_clean_normal(pkg, ref) -> bool:
    """All background, far from every decision boundary; normal verdict unless a classifier
    decides the verdict."""
    total = ref.rgb.shape[0] * ref.rgb.shape[1]
    if ref.counts[0] != total or ref.near_tie.any() or abs(ref.score - ref.threshold) <= 1e-3:
        return False
    return pkg.ref.cfg.cls is not None or not ref.result["IsAnomalous"]


@pytest.mark.parametrize("config", SEGMENTATION_CONFIGS)
def test_normal_image_on_segmentation_model(packages, uniform_images, config):
    """A normal image still gets Anomalies == [background, 1.0] and an all-white mask of its
    size."""
    pkg = packages.get(config)
    model = packages.native(config)
    normal = [
        rgb for rgb in uniform_images.values() if _is_clean_normal(pkg, pkg.ref.detect_array(rgb))
    ]
    assert normal, "test setup: no uniform image is normal for this model"
    rgb = normal[0]
    ref = pkg.ref.detect_array(rgb)
    for native in (model.detect_array(rgb), model.detect(imagegen.png_bytes(rgb), "image/png")):
        reference.assert_matches_reference(native, ref, "segmentation")
        assert native["Anomalies"] == [
            {"Name": "background", "PixelAnomaly": {"TotalPercentageArea": 1.0, "Color": "#FFFFFF"}}
        ]
        mask = reference.check_mask_png(native["AnomalyMask"], rgb.shape[1], rgb.shape[0])
        assert (mask == 255).all()
        if pkg.ref.cfg.cls is None:
            assert native["IsAnomalous"] is False
            assert native["Confidence"] > 0.5


@pytest.mark.parametrize(
    "config",
    ["cls_sigmoid_bilinear", "cls_nhwc_scale1", "seg3_nearest", "seg3_probs_13x11", "seg1_logit"],
)
@pytest.mark.parametrize("fmt", ["png", "jpeg420", "jpeg444"])
def test_detect_equals_detect_array_of_reference_decode(packages, images, config, fmt):
    """Native decode is bit-exact with Pillow's: detect(encoded) == detect_array(Pillow-decoded)."""
    model = packages.native(config)
    for n in ("a97x71", "e71x97", "c256x192"):
        rgb = images[n]
        if fmt == "png":
            body, ctype = imagegen.png_bytes(rgb), "image/png"
        else:
            body = imagegen.jpeg_bytes(
                Image.fromarray(rgb), subsampling=2 if fmt == "jpeg420" else 0
            )
            ctype = "image/jpeg"
        decoded = reference.decode(body)
        assert model.detect(body, ctype) == model.detect_array(decoded), n


@pytest.mark.parametrize(
    "config", ["cls_softmax_nearest", "seg3_bilinear_area", "seg1_sigmoid_inside"]
)
def test_jpeg_matches_reference(packages, images, config):
    pkg = packages.get(config)
    model = packages.native(config)
    for n in IMAGE_NAMES:
        body = imagegen.jpeg_bytes(Image.fromarray(images[n]), subsampling=2)
        reference.assert_matches_reference(
            model.detect(body, "image/jpeg"), pkg.ref.detect(body), pkg.task
        )


@pytest.mark.parametrize("config", ["cls_none_area", "seg3_nearest"])
def test_detect_array_matches_detect(packages, images, png_bodies, config):
    model = packages.native(config)
    for n in IMAGE_NAMES:
        assert model.detect_array(images[n]) == model.detect(png_bodies[n], "image/png")


@pytest.mark.parametrize("config", ["cls_sigmoid_bilinear", "seg3_bilinear_area"])
def test_body_types(packages, png_bodies, tmp_path, config):
    model = packages.native(config)
    body = png_bodies["a97x71"]
    expected = model.detect(body, "image/png")
    path = tmp_path / "img.png"
    path.write_bytes(body)
    padded = b"xyz" + body + b"abc"
    variants = {
        "bytearray": bytearray(body),
        "memoryview": memoryview(body),
        "memoryview_slice": memoryview(padded)[3:-3],
        "memoryview_bytearray": memoryview(bytearray(body)),
        "BytesIO": io.BytesIO(body),
    }
    for name, b in variants.items():
        assert model.detect(b, "image/png") == expected, name
    with open(path, "rb") as f:
        assert model.detect(f, "image/png") == expected
    with open(path, "rb", buffering=0) as f:  # raw FileIO
        assert model.detect(f, "image/png") == expected


@pytest.mark.parametrize("config", ["cls_probs_bgr_imagenet", "seg3_stride2_bgr"])
def test_detect_array_layouts(packages, images, config):
    """Non-contiguous, read-only and Fortran-ordered arrays give the same result as a C array."""
    model = packages.native(config)
    rgb = images["f200x150"]
    expected = model.detect_array(rgb)
    big = np.zeros((150, 400, 3), np.uint8)
    big[:, ::2] = rgb
    strided = big[:, ::2]
    assert not strided.flags["C_CONTIGUOUS"]
    ro = np.frombuffer(rgb.tobytes(), np.uint8).reshape(rgb.shape)
    assert not ro.flags.writeable
    assert model.detect_array(strided) == expected
    assert model.detect_array(ro) == expected
    assert model.detect_array(np.asfortranarray(rgb)) == expected
    # A channel-reversed view (negative stride) of a BGR buffer.
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    assert model.detect_array(bgr[..., ::-1]) == expected


@pytest.mark.parametrize("config", ["cls_dynamic_hw", "seg3_probs_13x11"])
def test_repeatable(packages, png_bodies, config):
    model = packages.native(config)
    for n in IMAGE_NAMES:
        a = model.detect(png_bodies[n], "image/png")
        b = model.detect(png_bodies[n], "image/png")
        assert a == b


def _image_size_package(packages, task: str, width: int, height: int) -> str:
    base = packages.get("seg3_nearest" if task == "segmentation" else "cls_sigmoid_bilinear")
    manifest = json.loads(json.dumps(base.manifest))
    manifest["image_size"] = {"width": width, "height": height}
    with open(base.ref.cfg.model_path, "rb") as f:
        model = f.read()
    return packages.custom(f"image_size_{task}_{width}x{height}", model, manifest)


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_image_size_enforced(packages, images, png_bodies, task):
    path = _image_size_package(packages, task, 97, 71)
    model = openlookout.load_model(path)
    ref = reference.Reference(path)
    # Matching size: a normal answer equal to the reference.
    native = model.detect(png_bodies["a97x71"], "image/png")
    reference.assert_matches_reference(native, ref.detect_array(images["a97x71"]), task)
    assert model.detect_array(images["a97x71"]) == native
    # Other sizes (including the transposed one): ValidationException naming the sizes.
    for n in ("e71x97", "b130x64", "d64x64"):
        with pytest.raises(openlookout.ValidationException) as ei:
            model.detect(png_bodies[n], "image/png")
        msg = str(ei.value)
        assert "97" in msg, msg
        assert "71" in msg, msg
        with pytest.raises(openlookout.ValidationException):
            model.detect_array(images[n])


def test_image_size_absent_accepts_any_size(packages, images, png_bodies):
    model = packages.native("seg3_nearest")
    for n in IMAGE_NAMES:
        r = model.detect(png_bodies[n], "image/png")
        h, w = images[n].shape[:2]
        reference.check_mask_png(r["AnomalyMask"], w, h)


@pytest.mark.parametrize("config", SEGMENTATION_CONFIGS)
def test_mask_format(packages, png_bodies, images, config):
    """8-bit RGB (colour type 2) PNG of the input's size; white background; label colours only;
    areas sum to 1 and describe the mask."""
    model = packages.native(config)
    labels = CONFIGS[config]["segmentation"]["labels"]
    palette = [(255, 255, 255)] + [reference.hex_to_rgb(lab["color"]) for lab in labels]
    for n in IMAGE_NAMES:
        r = model.detect(png_bodies[n], "image/png")
        h, w = images[n].shape[:2]
        mask = reference.check_mask_png(r["AnomalyMask"], w, h)
        got = reference.mask_to_labels(mask, palette)
        total = sum(a["PixelAnomaly"]["TotalPercentageArea"] for a in r["Anomalies"])
        assert abs(total - 1.0) <= 1e-6
        by_name = {a["Name"]: a["PixelAnomaly"]["TotalPercentageArea"] for a in r["Anomalies"]}
        assert by_name["background"] == float(np.float32(np.count_nonzero(got == 0) / (w * h)))
        for k, lab in enumerate(labels, start=1):
            cnt = np.count_nonzero(got == k)
            if cnt:
                assert by_name[lab["name"]] == float(np.float32(cnt / (w * h)))
            else:
                assert lab["name"] not in by_name


def test_label_colour_is_upper_cased(packages, images, png_bodies):
    assert LABELS[0]["color"] == "#7ed321"  # lower-case in the manifest
    model = packages.native("seg3_nearest")
    seen = set()
    for n in IMAGE_NAMES:
        for a in model.detect(png_bodies[n], "image/png")["Anomalies"]:
            seen.add((a["Name"], a["PixelAnomaly"]["Color"]))
    assert ("scratch", "#7ED321") in seen


def test_classification_has_only_three_keys(packages, png_bodies):
    r = packages.native("cls_softmax_nearest").detect(png_bodies["c256x192"], "image/png")
    assert set(r) == {"Source", "IsAnomalous", "Confidence"}
    assert r["Source"] == {"Type": "direct"}


def test_load_options_do_not_change_answers(packages, images):
    """load_model's thread options don't change the answer."""
    pkg = packages.get("seg3_bilinear_area")
    a = openlookout.load_model(pkg.path, intra_op_threads=1, inter_op_threads=1)
    b = openlookout.load_model(pkg.path, intra_op_threads=2)
    c = openlookout.load_model(pkg.path, providers=["CPUExecutionProvider"])
    for n in ("a97x71", "c256x192"):
        ra, rb, rc = a.detect_array(images[n]), b.detect_array(images[n]), c.detect_array(images[n])
        reference.assert_matches_reference(ra, pkg.reference(n, images[n]), "segmentation")
        reference.assert_matches_reference(rb, pkg.reference(n, images[n]), "segmentation")
        reference.assert_matches_reference(rc, pkg.reference(n, images[n]), "segmentation")


def test_small_images_with_min_side(packages):
    """Images smaller than 64 px work when min_side allows them (and are upsampled to the model)."""
    pkg = packages.get("seg3_probs_13x11")
    model = openlookout.load_model(pkg.path, min_side=1)
    for w, h, seed in [(10, 10, 1), (33, 17, 2), (1, 1, 3), (5, 64, 4)]:
        rgb = (
            imagegen.natural_rgb(w, h, seed)
            if min(w, h) > 1
            else imagegen.uniform_rgb(w, h, (200, 10, 90))
        )
        native = model.detect(imagegen.png_bytes(rgb), "image/png")
        reference.assert_matches_reference(native, pkg.ref.detect_array(rgb), "segmentation")
        assert model.detect_array(rgb) == native


@pytest.mark.parametrize("kind", ["anomaly_tie", "background_tie", "threshold_tie"])
def test_tie_rules(packages, images, kind):
    """Exact ties: argmax ties go to the lower channel index (background before labels, labels
    in order); a C == 1 score equal to the threshold is anomalous (score >= threshold)."""
    rgb = images["a97x71"].copy()
    rgb[:10, :, 0] = rgb[:10, :, 1]  # rows where R == G exactly (ties for a = b too)
    h, w = rgb.shape[:2]
    labels = LABELS if kind != "threshold_tie" else LABELS[:1]
    manifest = {
        "format_version": 1,
        "task": "segmentation",
        "model": "model.onnx",
        "input": {"width": w, "height": h, "resize": "nearest"},
        "segmentation": {"upsample": "nearest", "labels": labels},
    }
    if kind == "threshold_tie":
        manifest["segmentation"].update(activation="none", threshold=0.5)
    path = packages.custom(kind, builders.tie_model(kind, h, w), manifest)
    model = openlookout.load_model(path)
    r = model.detect_array(rgb)
    palette = [(255, 255, 255)] + [reference.hex_to_rgb(lab["color"]) for lab in labels]
    got = reference.mask_to_labels(reference.check_mask_png(r["AnomalyMask"], w, h), palette)
    red, green = rgb[..., 0].astype(int), rgb[..., 1].astype(int)
    if kind == "anomaly_tie":
        expected = (green > red).astype(int)  # label 1 where b > a; never label 2
    elif kind == "background_tie":
        expected = np.zeros((h, w), int)
    else:
        expected = (red >= 128).astype(int)  # R/255 >= 0.5 clips to exactly 0.5
    assert (expected.any() and not expected.all()) or kind == "background_tie"
    np.testing.assert_array_equal(got, expected)
    # The reference follows the same rules.
    np.testing.assert_array_equal(reference.Reference(path).detect_array(rgb).labels, expected)
    if kind == "threshold_tie":
        assert r["IsAnomalous"] is True
        assert r["Confidence"] == 0.5
