"""Measures the bundled demo models on a held-out split of generated images, through openlookout
itself: each image is encoded (PNG or JPEG, alternately), passed to ``load_model(...).detect``, and
the answer scored as a user would read it.

    python tools/evaluate_demo.py [--images 400] [--seed 3003]

* Image level, both models: accuracy of ``IsAnomalous`` and AUROC of the anomaly score recovered
  from the answer (``Confidence`` when anomalous, else ``1 - Confidence``; both manifests use
  threshold 0.5), with precision and recall of "anomalous".
* Per anomaly type, segmentation: the share of the images holding that type whose ``Anomalies``
  name it, and the IoU of the decoded ``AnomalyMask`` against the generator's exact mask, summed
  over the split (intersection over union of all pixels).

The split (seed 3003) shares no seed with training (1001), validation (1002) or the samples (5000+).
Prints a Markdown table (pasted into the README); the figures are a pure function of the models
and the seed.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import surfaces

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "python") not in sys.path:  # run from a source tree without installing
    sys.path.append(str(ROOT / "python"))

import openlookout  # noqa: E402
from openlookout import demo  # noqa: E402

TEST_SEED = 3003
# The test images come at a size the models were trained at and at one they never saw.
TEST_SIZES = ((512, 384), (640, 480), (800, 600))


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative (ties count half)."""
    s = np.asarray(scores, np.float64)
    p = np.asarray(positive, bool)
    pos, neg = s[p], s[~p]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def anomaly_score(result: dict[str, object]) -> float:
    confidence = float(result["Confidence"])  # type: ignore[arg-type]
    return confidence if result["IsAnomalous"] else 1.0 - confidence


@dataclass
class ImageLevel:
    truth: list[bool] = field(default_factory=list)
    predicted: list[bool] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def add(self, truth: bool, result: dict[str, object]) -> None:
        self.truth.append(truth)
        self.predicted.append(bool(result["IsAnomalous"]))
        self.scores.append(anomaly_score(result))

    @property
    def accuracy(self) -> float:
        return float(np.mean(np.array(self.truth) == np.array(self.predicted)))

    @property
    def precision(self) -> float:
        t, p = np.array(self.truth), np.array(self.predicted)
        return float((t & p).sum() / max(p.sum(), 1))

    @property
    def recall(self) -> float:
        t, p = np.array(self.truth), np.array(self.predicted)
        return float((t & p).sum() / max(t.sum(), 1))

    @property
    def auroc(self) -> float:
        return auroc(self.scores, self.truth)


@dataclass
class Evaluation:
    images: int = 0
    anomalous: int = 0
    segmentation: ImageLevel = field(default_factory=ImageLevel)
    classification: ImageLevel = field(default_factory=ImageLevel)
    with_type: dict[str, int] = field(default_factory=dict)  # images holding the defect type
    type_found: dict[str, int] = field(default_factory=dict)  # ... whose Anomalies name it
    intersection: dict[str, int] = field(default_factory=dict)
    union: dict[str, int] = field(default_factory=dict)

    def iou(self, label: str) -> float:
        return self.intersection.get(label, 0) / max(self.union.get(label, 0), 1)


def mask_labels(mask_png: bytes, colors: dict[str, tuple[int, int, int]]) -> np.ndarray:
    """The AnomalyMask PNG as generator label values (0 background, surfaces.LABELS[name])."""
    rgb = np.asarray(Image.open(io.BytesIO(mask_png)).convert("RGB"))
    labels = np.zeros(rgb.shape[:2], np.uint8)
    for name, color in colors.items():
        labels[np.all(rgb == color, axis=2)] = surfaces.LABELS[name]
    return labels


def evaluate(
    count: int,
    seed: int = TEST_SEED,
    sizes: Sequence[tuple[int, int]] = TEST_SIZES,
    segmentation_model: str | Path | None = None,
    classification_model: str | Path | None = None,
) -> Evaluation:
    seg = openlookout.load_model(segmentation_model or demo.demo_model_path("surface-seg"))
    cls = openlookout.load_model(classification_model or demo.demo_model_path("surface-cls"))
    assert seg.manifest.segmentation is not None
    colors = {label.name: label.rgb for label in seg.manifest.segmentation.labels}
    evaluation = Evaluation()
    for index in range(count):
        sample = surfaces.random_sample(seed, index, sizes)
        png = index % 2 == 0
        body = surfaces.encode(sample.rgb, "png" if png else "jpeg", quality=90, optimize=False)
        content_type = "image/png" if png else "image/jpeg"
        seg_result = seg.detect(body, content_type)
        cls_result = cls.detect(body, content_type)
        evaluation.images += 1
        evaluation.anomalous += sample.is_anomalous
        evaluation.segmentation.add(sample.is_anomalous, seg_result)
        evaluation.classification.add(sample.is_anomalous, cls_result)
        predicted = mask_labels(seg_result["AnomalyMask"], colors)
        named = {a["Name"] for a in seg_result["Anomalies"][1:]}
        for name in set(sample.defects):
            evaluation.with_type[name] = evaluation.with_type.get(name, 0) + 1
            evaluation.type_found[name] = evaluation.type_found.get(name, 0) + (name in named)
        for name, value in surfaces.LABELS.items():
            truth, guess = sample.mask == value, predicted == value
            evaluation.intersection[name] = evaluation.intersection.get(name, 0) + int(
                (truth & guess).sum()
            )
            evaluation.union[name] = evaluation.union.get(name, 0) + int((truth | guess).sum())
    return evaluation


def report(evaluation: Evaluation, seed: int, sizes: Sequence[tuple[int, int]]) -> str:
    n = evaluation.images
    lines = [
        f"Held-out split: {n} generated images (seed {seed}; {evaluation.anomalous} with defects; "
        f"sizes {', '.join(f'{w}x{h}' for w, h in sizes)}; PNG and JPEG alternately).",
        "",
        "| model | image accuracy | AUROC | precision | recall | pixel IoU |",
        "|---|---|---|---|---|---|",
    ]
    for name, level in (
        ("surface-seg", evaluation.segmentation),
        ("surface-cls", evaluation.classification),
    ):
        iou = (
            ", ".join(f"{label} {evaluation.iou(label):.3f}" for label in surfaces.DEFECTS)
            if name == "surface-seg"
            else "-"
        )
        lines.append(
            f"| {name} | {level.accuracy:.3f} | {level.auroc:.3f} | {level.precision:.3f} | "
            f"{level.recall:.3f} | {iou} |"
        )
    lines += [
        "",
        "| surface-seg, per type | images with it | of them, Anomalies lists it | pixel IoU |",
        "|---|---|---|---|",
    ]
    for label in surfaces.DEFECTS:
        count = evaluation.with_type.get(label, 0)
        found = evaluation.type_found.get(label, 0) / max(count, 1)
        lines.append(f"| {label} | {count} | {found:.3f} | {evaluation.iou(label):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--seed", type=int, default=TEST_SEED)
    parser.add_argument("--segmentation-model", help="package directory (default: bundled)")
    parser.add_argument("--classification-model", help="package directory (default: bundled)")
    args = parser.parse_args()
    evaluation = evaluate(
        args.images,
        args.seed,
        TEST_SIZES,
        args.segmentation_model,
        args.classification_model,
    )
    print(report(evaluation, args.seed, TEST_SIZES))


if __name__ == "__main__":
    main()
