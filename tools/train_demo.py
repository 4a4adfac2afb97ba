"""Trains openlookout's two bundled demo models on generated surfaces, exports them to ONNX and
writes their model packages into ``python/openlookout/demo/models/``.

    pip install torch==2.13.0          # CPU build; a development tool, not a runtime dependency
    python tools/train_demo.py         # both models: ~5 min of data, ~5 + ~1.5 min of training
    python tools/train_demo.py --model surface-seg --steps 1500

* ``surface-seg``: a small U-Net, 3 classes (background, scratch, hole), with a sub-pixel head that
  gives logits at the input resolution; the manifest upsamples them bilinearly to the image.
  Trained with cross-entropy against soft targets (each class's coverage of a model pixel), a soft
  Dice term (so thin scratches are not drowned by the background) and a BCE term on the image-level
  decision openlookout derives from the map (the largest defect-over-background margin).
* ``surface-cls``: a small CNN that scores every 8x8 patch and takes the maximum as the image's
  anomaly logit (sigmoid in the manifest). Besides the image label it learns from which patches
  hold a defect, which makes a couple of minutes of training enough.

Both read the image as openlookout will: decoded (a share of the training images went through JPEG
first), shrunk with the exact area filter of ``input.resize: area`` and normalised with the
manifest's mean and std. Training uses random 128x128 crops of the 256x192 model input (the nets
are fully convolutional), flips, transposes and a mild gain/offset jitter. Data come from
``tools/surfaces.py``: training split seed 1001 (3000 images at 448x336 to 640x480), validation
1002 (400, only to pick the decision offset below); ``tools/evaluate_demo.py`` tests on seed 3003.
Generated splits are cached in ``--cache-dir``. Runs are deterministic for a given seed on a given
machine (fixed seeds, deterministic algorithms), not bit-identical across CPUs.

After training the decision is calibrated on the validation split: a constant added to the final
bias moves the operating point to the best image-level accuracy nearest the trained one (the
images' verdicts are what users act on). Then the ONNX export (opset 17) is checked against
PyTorch with onnxruntime and loaded through ``openlookout.load_model``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import surfaces

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # pragma: no cover - a dev tool; say what to install
    sys.exit("tools/train_demo.py needs PyTorch: pip install torch==2.13.0")

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "python" / "openlookout" / "demo" / "models"

TRAIN_SEED, VALIDATION_SEED = 1001, 1002
INPUT_WIDTH, INPUT_HEIGHT = 256, 192
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LABEL_COLORS = {"scratch": "#7ED321", "hole": "#E5358F"}
JPEG_SHARE = 0.35  # share of training images that go through JPEG (quality 70..95) first


# --------------------------------------------------------------------------------------------
# Data: generated, decoded, area-resized exactly as openlookout does
# --------------------------------------------------------------------------------------------


def area_matrix(source: int, target: int) -> np.ndarray:
    """``target x source`` weights of the box filter of ``input.resize: area``: destination pixel
    ``i`` is the overlap-weighted mean of source pixels in ``[i*s/t, (i+1)*s/t)``."""
    ratio = source / target
    starts = np.arange(target)[:, None] * ratio
    ends = starts + ratio
    left = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(ends, left + 1) - np.maximum(starts, left), 0.0, None)
    return overlap / ratio


def area_resize(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-resizes ``C x H x W`` float planes to ``C x height x width``."""
    rows = area_matrix(planes.shape[1], height)
    cols = area_matrix(planes.shape[2], width)
    return np.einsum("yh,chw,xw->cyx", rows, planes, cols, optimize=True)


@dataclass
class Split:
    images: np.ndarray  # N x 3 x H x W float16, pixel values 0..255 at model input size
    coverage: np.ndarray  # N x 3 x H x W uint8, each class's share of the pixel, 0..255
    anomalous: np.ndarray  # N bool


def _prepared(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, bool]:
    split_seed, index = args
    sample = surfaces.random_sample(split_seed, index, surfaces.TRAINING_SIZES)
    rng = np.random.default_rng([split_seed, index, 2])
    rgb = sample.rgb
    if rng.random() < JPEG_SHARE:
        from io import BytesIO

        from PIL import Image

        encoded = surfaces.encode(rgb, "jpeg", quality=int(rng.integers(70, 96)))
        rgb = np.asarray(Image.open(BytesIO(encoded)).convert("RGB"))
    image = area_resize(rgb.transpose(2, 0, 1).astype(np.float64), INPUT_WIDTH, INPUT_HEIGHT)
    one_hot = np.stack([sample.mask == k for k in range(3)]).astype(np.float64)
    coverage = area_resize(one_hot, INPUT_WIDTH, INPUT_HEIGHT)
    return (
        image.astype(np.float16),
        np.round(coverage * 255).astype(np.uint8),
        sample.is_anomalous,
    )


def make_split(split_seed: int, count: int, cache_dir: Path | None) -> Split:
    cache = (
        cache_dir / f"split-{split_seed}-{count}-{INPUT_WIDTH}x{INPUT_HEIGHT}.npz"
        if cache_dir
        else None
    )
    if cache is not None and cache.is_file():
        data = np.load(cache)
        return Split(data["images"], data["coverage"], data["anomalous"])
    started = time.perf_counter()
    with multiprocessing.Pool() as pool:
        items = pool.map(_prepared, [(split_seed, i) for i in range(count)], chunksize=16)
    split = Split(
        np.stack([i[0] for i in items]),
        np.stack([i[1] for i in items]),
        np.array([i[2] for i in items]),
    )
    print(
        f"split {split_seed}: {count} images in {time.perf_counter() - started:.0f} s", flush=True
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=split.images, coverage=split.coverage, anomalous=split.anomalous)
    return split


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SegmentationNet(nn.Module):
    """U-Net-ish: four stride-2 stages down to 1/16 (a dilated conv widens the view there, so a
    long scratch is told from the surface's own streaks), back up to 1/2 with skip connections,
    and a sub-pixel head (each 1/2-resolution pixel predicts its 2x2 input pixels) so that thin
    scratches get input-resolution edges for almost no extra work."""

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 48, 64), classes: int = 3):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.enc1 = nn.Sequential(conv_bn(3, w1, 2), conv_bn(w1, w1))
        self.enc2 = nn.Sequential(conv_bn(w1, w2, 2), conv_bn(w2, w2))
        self.enc3 = nn.Sequential(conv_bn(w2, w3, 2), conv_bn(w3, w3))
        self.enc4 = nn.Sequential(conv_bn(w3, w4, 2), conv_bn(w4, w4, dilation=2))
        self.dec3 = conv_bn(w4 + w3, w3)
        self.dec2 = conv_bn(w3 + w2, w2)
        self.dec1 = conv_bn(w2 + w1, w1)
        self.head = nn.Conv2d(w1, classes * 4, 3, padding=1)
        self.to_input_resolution = nn.PixelShuffle(2)  # ONNX DepthToSpace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(torch.cat([_upsample_to(e4, e3), e3], 1))
        d2 = self.dec2(torch.cat([_upsample_to(d3, e2), e2], 1))
        d1 = self.dec1(torch.cat([_upsample_to(d2, e1), e1], 1))
        return self.to_input_resolution(self.head(d1))


class ClassificationNet(nn.Module):
    """Scores each 8x8 patch; ``forward`` returns the patch map, ``image_logit`` its maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 2),
            conv_bn(16, 16),
            conv_bn(16, 32, 2),
            conv_bn(32, 32),
            conv_bn(32, 64, 2),
            conv_bn(64, 64),
            conv_bn(64, 64, dilation=2),
        )
        self.head = nn.Conv2d(64, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @staticmethod
    def image_logit(patch_logits: torch.Tensor) -> torch.Tensor:
        return patch_logits.amax(dim=(2, 3))


class ImageScore(nn.Module):
    """The exported classifier: ``[1,3,H,W] -> [1,1]``, the anomaly logit."""

    def __init__(self, net: ClassificationNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ClassificationNet.image_logit(self.net(x))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

_MEAN = torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0
_STD = torch.tensor(STD).view(1, 3, 1, 1) * 255.0


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 pixels to the model input, as the manifest's scale/mean/std tell openlookout."""
    return (pixels - _MEAN) / _STD


def batch_of(
    split: Split, indices: np.ndarray, crop: int | None, generator: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (normalised) and coverages for ``indices``: random crops, flips, 90-degree turns
    (square crops only) and a mild gain/offset jitter per channel."""
    images = torch.from_numpy(split.images[indices].astype(np.float32))
    coverage = torch.from_numpy(split.coverage[indices].astype(np.float32) / 255.0)
    if crop is not None:
        top = int(generator.integers(0, INPUT_HEIGHT - crop + 1))
        left = int(generator.integers(0, INPUT_WIDTH - crop + 1))
        images = images[:, :, top : top + crop, left : left + crop]
        coverage = coverage[:, :, top : top + crop, left : left + crop]
        if generator.random() < 0.5:
            images, coverage = images.transpose(2, 3), coverage.transpose(2, 3)
    if generator.random() < 0.5:
        images, coverage = images.flip(3), coverage.flip(3)
    if generator.random() < 0.5:
        images, coverage = images.flip(2), coverage.flip(2)
    n = len(indices)
    gain = torch.from_numpy(generator.uniform(0.85, 1.15, (n, 3, 1, 1)).astype(np.float32))
    offset = torch.from_numpy(generator.uniform(-12, 12, (n, 1, 1, 1)).astype(np.float32))
    images = (images * gain + offset).clamp(0, 255)
    return normalise(images).contiguous(), coverage.contiguous()


def segmentation_loss(logits: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy plus soft Dice over the defect classes, at input resolution,
    plus the image-level decision openlookout derives: an image is anomalous when any pixel's
    best defect logit beats the background's, so the largest such margin is trained with BCE
    against whether the crop holds a defect (without it, stray pixels on normal images would
    have to be suppressed afterwards by a bias that also thins every true scratch)."""
    log_probs = F.log_softmax(logits, 1)
    cross_entropy = -(coverage * log_probs).sum(1).mean()
    probs = log_probs.exp()[:, 1:]
    target = coverage[:, 1:]
    intersection = (probs * target).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    dice = 1.0 - (2 * intersection + 1.0) / (total + 1.0)
    margin = (logits[:, 1:].amax(1) - logits[:, 0]).amax(dim=(1, 2))
    has_defect = (coverage[:, 0] <= 0.5).flatten(1).any(1).float()
    image_loss = F.binary_cross_entropy_with_logits(margin, has_defect)
    return cross_entropy + 0.5 * dice.mean() + 0.5 * image_loss


def classification_loss(patch_logits: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Image-level BCE on the maximum patch logit plus patch-level BCE (a patch is anomalous when
    defects cover at least a tenth of it... or any of its pixels fully)."""
    defect = 1.0 - coverage[:, :1]
    size = patch_logits.shape[-2:]
    patch_share = F.adaptive_avg_pool2d(defect, size)
    patch_peak = F.adaptive_max_pool2d(defect, size)
    patch_target = ((patch_share >= 0.1) | (patch_peak >= 0.5)).float()
    image_target = patch_target.amax(dim=(2, 3))
    image_loss = F.binary_cross_entropy_with_logits(
        ClassificationNet.image_logit(patch_logits), image_target
    )
    patch_loss = F.binary_cross_entropy_with_logits(
        patch_logits, patch_target, pos_weight=torch.tensor(5.0)
    )
    return image_loss + patch_loss


def train(
    net: nn.Module,
    split: Split,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    batch: int,
    crop: int | None,
    learning_rate: float,
    seed: int,
) -> None:
    generator = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=learning_rate, total_steps=steps, pct_start=0.15
    )
    net.train()
    started = time.perf_counter()
    running = 0.0
    for step in range(1, steps + 1):
        indices = generator.choice(len(split.images), batch, replace=False)
        images, coverage = batch_of(split, indices, crop, generator)
        loss = loss_fn(net(images), coverage)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        value = loss.item()
        running = 0.98 * running + 0.02 * value if step > 1 else value
        if step % 100 == 0 or step == steps:
            elapsed = time.perf_counter() - started
            print(
                f"  step {step}/{steps}  loss {running:.4f}  {elapsed:.0f} s "
                f"(ETA {elapsed / step * (steps - step):.0f} s)",
                flush=True,
            )
    net.eval()


# --------------------------------------------------------------------------------------------
# Calibration of the decision, export, checks
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def validation_scores(net: nn.Module, split: Split, task: str) -> np.ndarray:
    """Per image, the anomalous margin openlookout will threshold: for segmentation the largest
    (best defect logit - background logit) over the bilinearly upsampled map, for classification
    the image logit."""
    scores = []
    for start in range(0, len(split.images), 32):
        images = normalise(torch.from_numpy(split.images[start : start + 32].astype(np.float32)))
        out = net(images)
        if task == "segmentation":
            margin = out[:, 1:].amax(1) - out[:, 0]
            scores.append(margin.amax(dim=(1, 2)).numpy())
        else:
            scores.append(ClassificationNet.image_logit(out)[:, 0].numpy())
    return np.concatenate(scores)


def balanced_offset(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """The logit offset to subtract so that 0 sits where image-level accuracy on the validation
    split is best: of the best thresholds (midpoints between sorted scores), the one nearest 0."""
    candidates = np.unique(scores)
    midpoints = np.concatenate([[candidates[0] - 1], (candidates[1:] + candidates[:-1]) / 2])
    accuracy = np.array([np.mean((scores > t) == anomalous) for t in midpoints])
    best = np.flatnonzero(accuracy == accuracy.max())
    # The training already aimed the decision at 0: move it no further than needed.
    choice = best[np.argmin(np.abs(midpoints[best]))]
    print(
        f"  validation accuracy at logit 0: {np.mean((scores > 0) == anomalous):.4f}; "
        f"best {accuracy.max():.4f} at {midpoints[choice]:+.3f}",
        flush=True,
    )
    return float(midpoints[choice])


def shift_decision(head: nn.Conv2d, offset: float, task: str) -> None:
    """Moves the decision by ``offset`` logits, in the final layer's bias."""
    with torch.no_grad():
        assert head.bias is not None
        if task == "segmentation":
            # The background's sub-pixel channels (0..3 before the pixel shuffle): every defect
            # margin drops by the offset.
            head.bias[:4] += offset
        else:
            head.bias[0] -= offset


def export(module: nn.Module, path: Path, input_name: str, output_name: str) -> None:
    module.eval()
    example = torch.zeros(1, 3, INPUT_HEIGHT, INPUT_WIDTH)
    # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript.
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=[input_name],
        output_names=[output_name],
        opset_version=17,
        dynamo=False,  # the dynamo exporter needs onnxscript, which is not a dependency here
        do_constant_folding=True,
    )


def check_export(module: nn.Module, package: Path, split: Split) -> None:
    """ONNX Runtime must reproduce PyTorch, and openlookout must load the package."""
    import onnxruntime

    import openlookout

    session = onnxruntime.InferenceSession(str(package / "model.onnx"))
    name = session.get_inputs()[0].name
    worst = 0.0
    with torch.no_grad():
        for i in range(4):
            x = normalise(torch.from_numpy(split.images[i : i + 1].astype(np.float32)))
            expected = module(x).numpy()
            actual = session.run(None, {name: x.numpy()})[0]
            worst = max(worst, float(np.abs(expected - actual).max()))
    if worst > 1e-3:
        raise SystemExit(f"ONNX export differs from PyTorch by {worst}")
    model = openlookout.load_model(package)
    print(f"  export checked: max |onnx - torch| = {worst:.2e}; loaded {model!r}", flush=True)


def write_package(
    module: nn.Module,
    name: str,
    task: str,
    description: str,
    training: dict[str, object],
    out_dir: Path,
) -> Path:
    package = out_dir / name
    package.mkdir(parents=True, exist_ok=True)
    output_name = "scores" if task == "segmentation" else "score"
    export(module, package / "model.onnx", "images", output_name)
    manifest: dict[str, object] = {
        "format_version": 1,
        "task": task,
        "model": "model.onnx",
        "input": {
            "name": "images",
            "width": INPUT_WIDTH,
            "height": INPUT_HEIGHT,
            "layout": "NCHW",
            "color": "RGB",
            "resize": "area",
            "scale": 1.0 / 255.0,
            "mean": list(MEAN),
            "std": list(STD),
        },
    }
    if task == "segmentation":
        manifest["segmentation"] = {
            "output": output_name,
            "upsample": "bilinear",
            "activation": "softmax",
            "labels": [{"name": k, "color": v} for k, v in LABEL_COLORS.items()],
        }
    else:
        manifest["classification"] = {
            "output": output_name,
            "activation": "sigmoid",
            "threshold": 0.5,
        }
    manifest["description"] = description
    manifest["training"] = training
    (package / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return package


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    make_net: Callable[[], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    steps: int  # the bundled packages were trained with these
    batch: int
    seed_offset: int
    description: str


RECIPES = (
    Recipe(
        "surface-seg",
        "segmentation",
        SegmentationNet,
        segmentation_loss,
        steps=3500,
        batch=12,
        seed_offset=0,
        description="Demo: finds scratches and holes on brushed metal, woven fabric and moulded "
        "plastic (trained on generated images; see tools/train_demo.py).",
    ),
    Recipe(
        "surface-cls",
        "classification",
        ClassificationNet,
        classification_loss,
        steps=2000,
        batch=16,
        seed_offset=1,
        description="Demo: tells whether brushed metal, woven fabric or moulded plastic has a "
        "scratch or a hole (trained on generated images; see tools/train_demo.py).",
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["surface-seg", "surface-cls", "all"], default="all")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--validation-images", type=int, default=400)
    parser.add_argument("--steps", type=int, default=None, help="training steps (per model)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches")
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument(
        "--cache-dir",
        default="/tmp/openlookout-demo-data",
        help="where generated splits are kept between runs ('' to keep nothing)",
    )
    args = parser.parse_args()
    cache_dir = Path(args.cache_dir) if args.cache_dir else None

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(4, multiprocessing.cpu_count())))

    train_split = make_split(TRAIN_SEED, args.train_images, cache_dir)
    validation_split = make_split(VALIDATION_SEED, args.validation_images, cache_dir)
    common = {
        "generator": "tools/surfaces.py",
        "train_split": {"seed": TRAIN_SEED, "images": args.train_images},
        "validation_split": {"seed": VALIDATION_SEED, "images": args.validation_images},
        "seed": args.seed,
        "torch": torch.__version__,
    }

    for recipe in RECIPES:
        if args.model not in (recipe.name, "all"):
            continue
        print(f"== {recipe.name}", flush=True)
        started = time.perf_counter()
        torch.manual_seed(args.seed)
        net = recipe.make_net()
        steps = args.steps or recipe.steps
        train(
            net,
            train_split,
            recipe.loss,
            steps=steps,
            batch=recipe.batch,
            crop=128,
            learning_rate=4e-3,
            seed=args.seed + recipe.seed_offset,
        )
        offset = balanced_offset(
            validation_scores(net, validation_split, recipe.task), validation_split.anomalous
        )
        head = net.head
        assert isinstance(head, nn.Conv2d)
        shift_decision(head, offset, recipe.task)
        exported = ImageScore(net) if isinstance(net, ClassificationNet) else net
        training = {**common, "steps": steps, "decision_offset": round(offset, 4)}
        package = write_package(
            exported, recipe.name, recipe.task, recipe.description, training, args.out
        )
        check_export(exported, package, validation_split)
        print(f"  {recipe.name}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
