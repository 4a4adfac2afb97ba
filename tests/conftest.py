"""Shared fixtures: test images, model packages (built on demand, once per session), the reference
for each package and cached native models.

A *config* (see CONFIGS) describes one model package: the task, the builder arguments and the
manifest. Packages are calibrated against the reference's own preprocessing so that scores spread;
a classification threshold given as "median" is placed between the middle reference scores over the
natural test images, so every such config sees both verdicts.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import builders  # noqa: E402
import imagegen  # noqa: E402
import openlookout  # noqa: E402  (the suite must fail, not skip, without the package)
import reference  # noqa: E402

LABELS = [{"name": "scratch", "color": "#7ed321"}, {"name": "dent", "color": "#4DD8FF"}]
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
IMAGENET_255 = {"scale": 1.0, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}

# name -> (width, height, seed): natural-ish test images of several (odd) sizes.
IMAGE_SPECS = {
    "a97x71": (97, 71, 101),
    "b130x64": (130, 64, 102),
    "c256x192": (256, 192, 103),
    "d64x64": (64, 64, 104),
    "e71x97": (71, 97, 105),
    "f200x150": (200, 150, 106),
}
IMAGE_NAMES = list(IMAGE_SPECS)
# Candidates for a "normal" (all-background) image on segmentation models.
UNIFORM_LEVELS = [0, 16, 32, 64, 96, 128, 160, 192, 224, 255]
CALIBRATION_SEEDS = range(900, 910)

CONFIGS: dict[str, dict] = {
    # ---- classification ----
    "cls_sigmoid_bilinear": dict(
        task="classification",
        model=dict(values=1, final="none", seed=10),
        input=dict(width=64, height=64, resize="bilinear"),
        classification=dict(activation="sigmoid", threshold="median"),
    ),
    "cls_none_area": dict(
        task="classification",
        model=dict(values=1, final="sigmoid", seed=11),
        input=dict(width=64, height=64, resize="area"),
        classification=dict(activation="none", threshold="median"),
    ),
    "cls_softmax_nearest": dict(
        task="classification",
        model=dict(values=2, final="none", seed=12),
        input=dict(width=64, height=64, resize="nearest"),
        classification=dict(activation="softmax", threshold="median"),
    ),
    "cls_probs_bgr_imagenet": dict(
        task="classification",
        model=dict(values=2, final="softmax", seed=13),
        input=dict(width=64, height=64, resize="bilinear", color="BGR", **IMAGENET),
        classification=dict(activation="none", threshold="median"),
    ),
    "cls_nhwc_scale1": dict(
        task="classification",
        model=dict(values=1, final="none", seed=14),
        input=dict(width=64, height=64, layout="NHWC", resize="area", **IMAGENET_255),
        classification=dict(activation="sigmoid", threshold="median"),
    ),
    "cls_nonsquare_48x40": dict(
        task="classification",
        model=dict(values=1, final="none", seed=15),
        input=dict(width=48, height=40, resize="bilinear"),
        classification=dict(activation="sigmoid", threshold="median"),
    ),
    "cls_dynbatch_named": dict(
        task="classification",
        model=dict(
            values=1, final="sigmoid", seed=16, batch="N", input_name="pixels", output_name="prob"
        ),
        input=dict(name="pixels", width=64, height=64, resize="area", color="BGR"),
        classification=dict(output="prob", threshold="median"),
    ),
    "cls_dynamic_hw": dict(
        task="classification",
        model=dict(values=1, final="none", seed=17, batch="N", dynamic_hw=True),
        input=dict(width=72, height=56, resize="nearest"),
        classification=dict(activation="sigmoid", threshold="median"),
    ),
    # Model inputs larger than (some of) the images: upscaling, and mixed up/down per axis.
    "cls_area_upscale": dict(
        task="classification",
        model=dict(values=1, final="none", seed=19),
        input=dict(width=160, height=120, resize="area"),
        classification=dict(activation="sigmoid", threshold="median"),
    ),
    "cls_bilinear_upscale": dict(
        task="classification",
        model=dict(values=2, final="none", seed=29),
        input=dict(width=144, height=112, resize="bilinear"),
        classification=dict(activation="softmax", threshold="median"),
    ),
    "cls_default_threshold": dict(
        task="classification",
        model=dict(values=1, final="none", seed=18),
        input=dict(width=64, height=64),
        classification=dict(activation="sigmoid"),
    ),
    # ---- segmentation ----
    "seg3_nearest": dict(
        task="segmentation",
        model=dict(channels=3, stride=4, final="none", seed=20),
        input=dict(width=64, height=64, resize="bilinear"),
        segmentation=dict(upsample="nearest", labels=LABELS),
    ),
    "seg3_bilinear_area": dict(
        task="segmentation",
        model=dict(channels=3, stride=4, final="none", seed=20),
        input=dict(width=64, height=64, resize="area"),
        segmentation=dict(upsample="bilinear", labels=LABELS),
    ),
    "seg3_probs_13x11": dict(
        task="segmentation",
        model=dict(channels=3, stride=4, final="softmax", seed=21),
        input=dict(width=44, height=52, resize="nearest"),
        segmentation=dict(upsample="bilinear", activation="none", labels=LABELS),
    ),
    "seg3_stride2_bgr": dict(
        task="segmentation",
        model=dict(channels=3, stride=2, final="none", seed=22),
        input=dict(width=64, height=64, resize="bilinear", color="BGR", **IMAGENET),
        segmentation=dict(upsample="bilinear", activation="softmax", labels=LABELS),
    ),
    "seg3_nhwc": dict(
        task="segmentation",
        model=dict(channels=3, stride=4, final="none", seed=23),
        input=dict(width=64, height=64, layout="NHWC", resize="area", **IMAGENET_255),
        segmentation=dict(upsample="nearest", labels=LABELS),
    ),
    "seg1_sigmoid_inside": dict(
        task="segmentation",
        model=dict(channels=1, stride=4, final="sigmoid", seed=24),
        input=dict(width=64, height=64, resize="bilinear"),
        segmentation=dict(upsample="bilinear", threshold=0.4, labels=LABELS[:1]),
    ),
    "seg1_logit": dict(
        task="segmentation",
        model=dict(channels=1, stride=4, final="none", seed=25),
        input=dict(width=52, height=52, resize="area"),
        segmentation=dict(
            upsample="nearest", activation="sigmoid", threshold=0.65, labels=LABELS[1:]
        ),
    ),
    "seg1_logit_bilinear": dict(
        task="segmentation",
        model=dict(channels=1, stride=4, final="none", seed=27),
        input=dict(width=64, height=64, resize="nearest"),
        segmentation=dict(
            upsample="bilinear", activation="sigmoid", threshold=0.3, labels=LABELS[:1]
        ),
    ),
    "seg3_with_cls": dict(
        task="segmentation",
        model=dict(channels=3, stride=4, final="none", seed=26, with_classifier=True),
        input=dict(width=64, height=64, resize="bilinear"),
        classification=dict(output="cls", activation="none", threshold="median"),
        segmentation=dict(output="seg", upsample="nearest", labels=LABELS),
    ),
}
CLASSIFICATION_CONFIGS = [n for n, c in CONFIGS.items() if c["task"] == "classification"]
SEGMENTATION_CONFIGS = [n for n, c in CONFIGS.items() if c["task"] == "segmentation"]
SEGMENTATION3_CONFIGS = [n for n in SEGMENTATION_CONFIGS if CONFIGS[n]["model"]["channels"] == 3]


def manifest_for(spec: dict) -> dict:
    m = {
        "format_version": 1,
        "task": spec["task"],
        "model": "model.onnx",
        "input": dict(spec["input"]),
    }
    for section in ("classification", "segmentation", "image_size"):
        if section in spec:
            m[section] = copy.deepcopy(spec[section])
    if m.get("classification", {}).get("threshold") == "median":
        m["classification"]["threshold"] = 0.5  # placeholder until calibrated
    return m


def pick_threshold(scores) -> float:
    """A threshold between the two middle scores (never near any score), in (0, 1)."""
    s = sorted(float(v) for v in scores)
    n = len(s)
    order = sorted(range(1, n), key=lambda i: abs(i - n / 2))
    for i in order:
        lo, hi = s[i - 1], s[i]
        t = (lo + hi) / 2
        if hi - lo > 2e-3 and 0.01 < t < 0.99:
            return t
    raise AssertionError(f"scores do not spread enough to pick a threshold: {s}")


@dataclass
class Package:
    name: str
    path: str
    manifest: dict
    ref: reference.Reference
    task: str
    ref_cache: dict = field(default_factory=dict)

    def reference(self, image_name: str, rgb: np.ndarray) -> reference.RefDetection:
        if image_name not in self.ref_cache:
            self.ref_cache[image_name] = self.ref.detect_array(rgb)
        return self.ref_cache[image_name]


class Packages:
    """Builds packages on first use; caches references and native models."""

    def __init__(self, root, images: dict, calib_images: list):
        self.root = str(root)
        self.images = images
        self.calib_images = calib_images
        self._packages: dict[str, Package] = {}
        self._natives: dict = {}

    def get(self, name: str) -> Package:
        if name not in self._packages:
            self._packages[name] = self._build(name, CONFIGS[name])
        return self._packages[name]

    def native(self, name: str, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in self._natives:
            self._natives[key] = openlookout.load_model(self.get(name).path, **kwargs)
        return self._natives[key]

    def build_model(self, spec: dict, manifest: dict):
        cfg = reference.config_from_manifest(manifest)
        calib = [reference.preprocess(img, cfg) for img in self.calib_images]
        kw = dict(spec["model"])
        kw.update(height=cfg.height, width=cfg.width, layout=cfg.layout, calib_inputs=calib)
        if spec["task"] == "classification":
            return builders.classification_model(**kw)
        return builders.segmentation_model(**kw)

    def _build(self, name: str, spec: dict) -> Package:
        manifest = manifest_for(spec)
        model = self.build_model(spec, manifest)
        path = builders.write_package(os.path.join(self.root, name), model, manifest)
        ref = reference.Reference(path)
        if spec.get("classification", {}).get("threshold") == "median":
            scores = [ref.detect_array(self.images[n]).score for n in IMAGE_NAMES]
            manifest["classification"]["threshold"] = pick_threshold(scores)
            builders.set_manifest(path, manifest)
            ref = reference.Reference(path)
        return Package(name, path, manifest, ref, spec["task"])

    def custom(self, name: str, model, manifest: dict) -> str:
        """Writes an ad-hoc package (not cached as a config) and returns its directory."""
        return builders.write_package(os.path.join(self.root, "custom", name), model, manifest)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def images() -> dict:
    return {n: imagegen.natural_rgb(w, h, seed) for n, (w, h, seed) in IMAGE_SPECS.items()}


@pytest.fixture(scope="session")
def png_bodies(images) -> dict:
    return {n: imagegen.png_bytes(rgb) for n, rgb in images.items()}


@pytest.fixture(scope="session")
def calib_images() -> list:
    sizes = [(96, 96), (120, 80), (64, 64), (150, 100), (80, 120)]
    return [
        imagegen.natural_rgb(*sizes[i % len(sizes)], seed)
        for i, seed in enumerate(CALIBRATION_SEEDS)
    ]


@pytest.fixture(scope="session")
def packages(tmp_path_factory, images, calib_images) -> Packages:
    return Packages(tmp_path_factory.mktemp("packages"), images, calib_images)


@pytest.fixture(scope="session")
def uniform_images() -> dict:
    return {f"u{v}": imagegen.uniform_rgb(97, 71, (v, v, v)) for v in UNIFORM_LEVELS}


def json_roundtrip(result: dict) -> dict:
    """The result with AnomalyMask removed, through JSON (catches NumPy scalars and the like)."""
    r = {k: v for k, v in result.items() if k != "AnomalyMask"}
    return json.loads(json.dumps(r))
