"""The bundled demo models: small, well-formed packages that really find scratches and holes on
images they were never trained on. The quality check generates a fresh held-out set with the
repository's generator (``tools/surfaces.py``, a seed used nowhere else) and scores the models
through ``openlookout.load_model(...).detect`` exactly as ``tools/evaluate_demo.py`` does for the
README's figures, on fewer images so it stays fast. No PyTorch needed: the models are committed."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import openlookout
from openlookout import demo

TOOLS = Path(__file__).resolve().parent.parent / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import evaluate_demo  # noqa: E402
import surfaces  # noqa: E402

QUALITY_SEED = 4004  # not the training (1001), validation (1002), test (3003) or sample seeds
QUALITY_IMAGES = 36


def test_bundled_packages():
    assert demo.model_names() == ["surface-seg", "surface-cls"]
    assert demo.DEFAULT_MODEL == "surface-seg"
    for name in demo.model_names():
        path = demo.demo_model_path(name)
        assert (path / "model.onnx").stat().st_size < 2 * 1024 * 1024  # "a few MB at most"
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["input"]["resize"] == "area"
        assert openlookout.load_model(path).task == manifest["task"]
    seg = openlookout.read_manifest(demo.demo_model_path("surface-seg"))
    assert seg.segmentation is not None
    assert [label.name for label in seg.segmentation.labels] == ["scratch", "hole"]
    assert openlookout.read_manifest(demo.demo_model_path("surface-cls")).task == "classification"
    with pytest.raises(openlookout.ResourceNotFoundException, match="surface-seg, surface-cls"):
        demo.demo_model_path("nope")


def test_package_data_stays_small():
    total = sum(p.stat().st_size for p in demo.DEMO_DIR.rglob("*") if p.is_file())
    assert total < 3.5 * 1024 * 1024


def test_resolve_package(tmp_path):
    assert demo.resolve_package("surface-cls") == demo.demo_model_path("surface-cls")
    assert demo.resolve_package(tmp_path) == tmp_path
    assert demo.resolve_package("no/such/dir") == Path("no/such/dir")


@pytest.mark.parametrize("path", demo.sample_images(), ids=lambda p: p.name)
def test_samples_are_answered_as_their_names_say(path):
    """Each bundled sample is named after what it shows; both models agree with the name, and
    the segmentation model finds each named defect type and no other."""
    body = path.read_bytes()
    content_type = "image/png" if path.suffix == ".png" else "image/jpeg"
    defects = {d for d in surfaces.DEFECTS if d in path.stem}
    seg = openlookout.load_model(demo.demo_model_path("surface-seg")).detect(body, content_type)
    cls = openlookout.load_model(demo.demo_model_path("surface-cls")).detect(body, content_type)
    assert seg["IsAnomalous"] == cls["IsAnomalous"] == bool(defects)
    assert {a["Name"] for a in seg["Anomalies"][1:]} == defects
    assert seg["Confidence"] > 0.7
    assert cls["Confidence"] > 0.7


@pytest.fixture(scope="module")
def held_out() -> evaluate_demo.Evaluation:
    return evaluate_demo.evaluate(QUALITY_IMAGES, QUALITY_SEED, evaluate_demo.TEST_SIZES)


def test_held_out_image_level_quality(held_out):
    assert 10 <= held_out.anomalous <= QUALITY_IMAGES - 10  # both kinds are represented
    assert held_out.segmentation.accuracy >= 0.85
    assert held_out.classification.accuracy >= 0.85
    assert held_out.segmentation.auroc >= 0.9
    assert held_out.classification.auroc >= 0.9


def test_held_out_pixel_quality(held_out):
    assert held_out.iou("scratch") >= 0.45
    assert held_out.iou("hole") >= 0.6


def test_each_defect_type_is_found_on_each_surface():
    model = openlookout.load_model(demo.demo_model_path("surface-seg"))
    for n, surface in enumerate(surfaces.SURFACES):
        for defect in surfaces.DEFECTS:
            sample = surfaces.make_sample(
                [QUALITY_SEED, n, len(defect)], 512, 384, surface, [defect]
            )
            body = surfaces.encode(sample.rgb, "png", optimize=False)
            result = model.detect(body, "image/png")
            found = {a["Name"] for a in result["Anomalies"][1:]}
            assert defect in found, (surface, defect, found)
            mask = np.asarray(Image.open(io.BytesIO(result["AnomalyMask"])).convert("RGB"))
            label = next(x for x in model.manifest.segmentation.labels if x.name == defect)
            predicted = np.all(mask == label.rgb, axis=2)
            truth = sample.mask == surfaces.LABELS[defect]
            # The defect found is the one painted: most of its pixels overlap the truth.
            assert (predicted & truth).sum() >= 0.4 * predicted.sum(), (surface, defect)
