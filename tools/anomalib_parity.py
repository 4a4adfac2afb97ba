"""Parity of openlookout with anomalib's own inference on real anomalib ONNX exports.

Needs anomalib 2.7 and torch (``pip install torch==2.14.1 torchvision==0.29.1 anomalib==2.7.0
onnx onnxscript``; ``openvino`` too for the OpenVINOInferencer column) next to openlookout; keep
them in their own virtualenv. Nothing is downloaded: backbones are built with
``pre_trained=False`` and the data are textures generated here.

For each model (tiny PaDiM; PatchCore exported with batch 1, with anomalib's default export
settings and with a fixed batch of 2; EfficientAd), the script trains for one epoch on a few
generated texture images, exports with ``Engine.export(model, export_type="onnx")``, imports the
export with :func:`openlookout.anomalib.import_anomalib` and runs every test image (normal and
defective, at sizes other than the training size) through

* openlookout (``Model.detect`` on the PNG bytes), with the package fed at original size and,
  where the graph allows it, pre-resized;
* anomalib's ``OpenVINOInferencer`` (when openvino is installed) given the image file: at
  OpenVINO's default precision for this CPU and, where that is not f32 (CPUs with native bf16
  default to bf16), also at f32. Reduced-precision rows are shown for information, with how far
  OpenVINO's own bf16 answer is from its f32 one; openlookout computes in f32;
* the ONNX graph itself in onnxruntime on the RGB image / 255 at original size (what
  OpenVINOInferencer feeds).

It compares ``Confidence`` with the confidence implied by ``pred_score`` (L4V's formula:
``s`` when anomalous, else ``1 - s``), ``IsAnomalous`` with ``pred_label`` (away from the 0.5 tie),
and the mask with ``anomaly_map`` upsampled bilinearly to the image's full size and cut at 0.5,
and prints a Markdown table (and writes it as JSON with ``--json``). Exit status 1 when a row
fails: score difference above 1e-4, a label differing away from the tie, or fewer than 99.5 % of
mask pixels equal.

    python tools/anomalib_parity.py --work /tmp/anomalib-parity [--models padim,...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SCORE_TOLERANCE = 1e-4
MASK_AGREEMENT = 0.995
# Scores this close to the 0.5 cut-off may legitimately flip between runtimes.
TIE_MARGIN = 1e-4

# --------------------------------------------------------------------------------------------
# Generated textures
# --------------------------------------------------------------------------------------------


def texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A woven-fabric-like RGB texture (float in [0, 1]): two crossed sinusoidal weaves with
    a slightly random period and phase, a colour tint, and fine noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    period = rng.uniform(5.5, 6.5)
    phase_x, phase_y = rng.uniform(0, 2 * np.pi, 2)
    weave = 0.5 + 0.22 * np.sin(2 * np.pi * xx / period + phase_x) * np.sin(
        2 * np.pi * yy / period + phase_y
    )
    weave += 0.06 * np.sin(2 * np.pi * (xx + yy) / (period * 3.1))
    tint = np.array([0.85, 0.75, 0.6]) + rng.normal(0, 0.02, 3)
    rgb = weave[..., None] * tint + rng.normal(0, 0.025, (height, width, 3))
    return np.clip(rgb, 0, 1)


def add_defect(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark scratch or a bright stain; returns the image and its mask (bool HxW)."""
    height, width = rgb.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    out = rgb.copy()
    if rng.random() < 0.5:
        x0, y0 = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.3, 0.5) * min(width, height)
        along = (xx - x0) * np.cos(angle) + (yy - y0) * np.sin(angle)
        across = -(xx - x0) * np.sin(angle) + (yy - y0) * np.cos(angle)
        mask = (np.abs(across) < max(1.5, 0.03 * min(width, height))) & (np.abs(along) < length)
        out[mask] *= 0.25
    else:
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        r = rng.uniform(0.08, 0.15) * min(width, height)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        out[mask] = out[mask] * 0.3 + np.array([0.9, 0.2, 0.1]) * 0.7
    return out, mask


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


@dataclass
class Dataset:
    root: Path
    test_images: list[Path] = field(default_factory=list)


def make_dataset(root: Path, *, train: int, size: tuple[int, int], seed: int = 7) -> Dataset:
    """anomalib ``Folder`` layout: train/good, test/good, test/defect, ground_truth/defect.
    Training images are ``size`` (width, height); test images have other sizes too, since an
    anomalib export takes each image at its own size."""
    rng = np.random.default_rng(seed)
    data = Dataset(root)
    width, height = size
    for i in range(train):
        write_png(root / "train" / "good" / f"{i:03d}.png", to_uint8(texture(width, height, rng)))
    test_sizes = [(width, height), (width * 2 + 7, height * 2 - 5), (157, 203), (333, 250)]
    for i in range(6):
        w, h = test_sizes[i % len(test_sizes)]
        path = root / "test" / "good" / f"{i:03d}.png"
        write_png(path, to_uint8(texture(w, h, rng)))
        data.test_images.append(path)
    for i in range(8):
        w, h = test_sizes[i % len(test_sizes)]
        image, mask = add_defect(texture(w, h, rng), rng)
        path = root / "test" / "defect" / f"{i:03d}.png"
        write_png(path, to_uint8(image))
        write_png(root / "ground_truth" / "defect" / f"{i:03d}.png", mask.astype(np.uint8) * 255)
        data.test_images.append(path)
    return data


# --------------------------------------------------------------------------------------------
# Models: tiny, CPU, nothing downloaded
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    name: str
    description: str
    build: Callable[[Path], Any]  # work dir -> AnomalibModule
    train_batch_size: int = 4
    onnx_kwargs: Callable[[], dict[str, Any] | None] = lambda: None


def _padim(work: Path) -> Any:
    from anomalib.models import Padim

    return Padim(
        backbone="resnet18",
        layers=["layer1", "layer2"],
        pre_trained=False,
        pre_processor=Padim.configure_pre_processor((64, 64)),
        visualizer=False,
        evaluator=False,
    )


def _patchcore(work: Path) -> Any:
    from anomalib.models import Patchcore

    return Patchcore(
        backbone="resnet18",
        layers=["layer2", "layer3"],
        pre_trained=False,
        coreset_sampling_ratio=0.1,
        pre_processor=Patchcore.configure_pre_processor((64, 64)),
        visualizer=False,
        evaluator=False,
    )


def _efficient_ad(work: Path) -> Any:
    """EfficientAd has no pre_trained switch: it downloads its teacher's weights and ImageNette
    on train start. Here the teacher stays randomly initialised (what pre_trained=False means
    for the other models) and ImageNette is replaced by a folder of generated images. Its
    autoencoder needs inputs of at least 256x256 (five stride-2 convolutions, then an 8x8 one)."""
    from anomalib.models import EfficientAd
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Resize

    class OfflineEfficientAd(EfficientAd):
        def prepare_pretrained_model(self) -> None:
            pass  # keep the randomly initialised teacher: no download

    penalty_images = work / "penalty-images" / "generated"
    rng = np.random.default_rng(11)
    for i in range(4):
        write_png(penalty_images / f"{i}.png", to_uint8(texture(128, 128, rng)))
    return OfflineEfficientAd(
        imagenet_dir=penalty_images.parent,
        model_size="small",
        pre_processor=PreProcessor(transform=Resize((256, 256), antialias=True)),
        visualizer=False,
        evaluator=False,
    )


def _batch_one() -> dict[str, Any]:
    # Only height and width dynamic: anomalib's example input then has batch 1, fixed.
    return {"dynamic_axes": {"input": {2: "height", 3: "width"}}}


def _batch_two() -> dict[str, Any]:
    import torch

    dim = torch.export.Dim
    return {"dynamic_shapes": ({0: 2, 2: dim("height"), 3: dim("width")},)}


CASES = {
    "padim": ModelCase("padim", "PaDiM, resnet18 layer1+2, 64x64", _padim),
    "patchcore-b1": ModelCase(
        "patchcore-b1",
        "PatchCore, resnet18 layer2+3, 64x64, exported with batch 1",
        _patchcore,
        onnx_kwargs=_batch_one,
    ),
    "patchcore": ModelCase(
        "patchcore", "PatchCore, as above, anomalib's default export", _patchcore
    ),
    "patchcore-b2": ModelCase(
        "patchcore-b2",
        "PatchCore, as above, exported with a fixed batch of 2",
        _patchcore,
        onnx_kwargs=_batch_two,
    ),
    "efficient_ad": ModelCase(
        "efficient_ad",
        "EfficientAd-S, random teacher, 256x256",
        _efficient_ad,
        train_batch_size=1,
    ),
}


def train_and_export(case: ModelCase, work: Path, data: Dataset) -> Path:
    """One epoch on the generated textures, then Engine.export(..., export_type="onnx")."""
    from anomalib.data import Folder
    from anomalib.engine import Engine

    datamodule = Folder(
        name="textures",
        root=data.root,
        normal_dir="train/good",
        abnormal_dir="test/defect",
        normal_test_dir="test/good",
        mask_dir="ground_truth/defect",
        train_batch_size=case.train_batch_size,
        eval_batch_size=4,
        num_workers=0,
        seed=0,
    )
    model = case.build(work)
    engine = Engine(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=work / "runs" / case.name,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    engine.fit(model=model, datamodule=datamodule)
    kwargs = case.onnx_kwargs()
    exported = engine.export(
        model=model,
        export_type="onnx",
        export_root=work / "exports" / case.name,
        **({"onnx_kwargs": kwargs} if kwargs else {}),
    )
    assert exported is not None
    return Path(exported).parent


# --------------------------------------------------------------------------------------------
# References: the export run as anomalib runs it
# --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    score: float
    label: bool
    anomaly_map: np.ndarray  # h x w, at the graph's size


def onnxruntime_reference(onnx_path: Path, batch: int | None) -> Callable[[Path], Answer]:
    """The graph in onnxruntime on RGB / 255 at original size (OpenVINOInferencer's input),
    repeated into every slot of a fixed batch; slot 0's outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def answer(path: Path) -> Answer:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        x = (rgb / 255.0).astype(np.float32).transpose(2, 0, 1)[None]
        x = np.ascontiguousarray(np.repeat(x, batch or 1, axis=0))
        out = dict(zip(names, session.run(None, {"input": x}), strict=True))
        return Answer(
            float(out["pred_score"].reshape(-1)[0]),
            bool(out["pred_label"].reshape(-1)[0]),
            out["anomaly_map"][0].reshape(out["anomaly_map"].shape[-2:]),
        )

    return answer


def openvino_reference(
    onnx_path: Path, precision: str | None, notes: list[str]
) -> Callable[[Path], Answer]:
    """anomalib's own OpenVINOInferencer, given the image path (it reads RGB / 255 itself).
    ``precision``: None for OpenVINO's default on this CPU, or e.g. "f32".

    ``OpenVINOInferencer.predict`` names each output by ``next(iter(names))`` of the compiled
    output, and OpenVINO may give a fused output several names (``{"clamp", "pred_score"}``), so
    predict can fail with ``unexpected keyword argument 'clamp'``. When it does, the same compiled
    model is run on the same ``pre_process``-ed input and its outputs are taken by name (a note
    says so)."""
    from anomalib.data.utils import read_image
    from anomalib.deploy import OpenVINOInferencer

    config: dict[str, str] = {"INFERENCE_NUM_THREADS": "2"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    inferencer = OpenVINOInferencer(path=onnx_path, device="CPU", config=config)
    wanted = ("pred_score", "pred_label", "anomaly_map")

    def by_name(path: Path) -> dict[str, np.ndarray]:
        image = inferencer.pre_process(read_image(path, as_tensor=False))
        outputs = inferencer.model({inferencer.input_blob.any_name: image})
        found = {}
        for output, value in zip(inferencer.model.outputs, outputs.to_tuple(), strict=True):
            for name in wanted:
                if name in output.get_names():
                    found[name] = np.asarray(value)
        return found

    def answer(path: Path) -> Answer:
        try:
            batch = inferencer.predict(path)
            values = {name: np.asarray(getattr(batch, name)) for name in wanted}
        except TypeError as e:
            message = f"OpenVINOInferencer.predict failed ({e}); outputs taken by name"
            if message not in notes:
                notes.append(message)
            values = by_name(path)
        anomaly_map = values["anomaly_map"]
        return Answer(
            float(values["pred_score"].reshape(-1)[0]),
            bool(values["pred_label"].reshape(-1)[0]),
            anomaly_map.reshape(-1, *anomaly_map.shape[-2:])[0],
        )

    return answer


def openvino_precision(onnx_path: Path) -> str:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(onnx_path), "CPU")
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return str(value.to_string() if hasattr(value, "to_string") else value)


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """Half-pixel bilinear weights (dst x src), source coordinate clamped to the edges."""
    m = np.zeros((dst, src))
    for i in range(dst):
        x = min(max((i + 0.5) * src / dst - 0.5, 0.0), src - 1.0)
        x0 = int(np.floor(x))
        x1 = min(x0 + 1, src - 1)
        m[i, x0] += 1.0 - (x - x0)
        m[i, x1] += x - x0
    return m


def upsample(anomaly_map: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = anomaly_map.shape
    return bilinear_matrix(h, height) @ anomaly_map.astype(np.float64) @ bilinear_matrix(w, width).T


def mask_of(result: dict[str, Any]) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(result["AnomalyMask"])).convert("RGB"))
    return ~(rgb == 255).all(axis=2)


@dataclass
class Row:
    model: str
    export: str
    feed: str
    reference: str
    images: int = 0
    anomalous: int = 0
    max_confidence_difference: float = 0.0
    labels_equal: int = 0
    labels_at_tie: int = 0
    min_mask_agreement: float = 1.0
    ms_per_image: float = 0.0
    passed: bool = True
    note: str = ""
    # A comparison shown for information, not judged: OpenVINO at reduced precision.
    informational: bool = False


def compare(row: Row, model: Any, reference: Callable[[Path], Answer], images: list[Path]) -> Row:
    seconds = 0.0
    for path in images:
        body = path.read_bytes()
        start = time.perf_counter()
        result = model.detect(body, "image/png")
        seconds += time.perf_counter() - start
        expected = reference(path)
        s = expected.score
        confidence = s if s >= 0.5 else 1.0 - s
        row.images += 1
        row.anomalous += int(expected.label)
        difference = abs(result["Confidence"] - confidence)
        row.max_confidence_difference = max(row.max_confidence_difference, difference)
        if abs(s - 0.5) <= TIE_MARGIN:
            row.labels_at_tie += 1
        elif result["IsAnomalous"] == expected.label:
            row.labels_equal += 1
        width, height = Image.open(path).size
        wanted = upsample(expected.anomaly_map, width, height) >= 0.5
        row.min_mask_agreement = min(
            row.min_mask_agreement, float(np.mean(mask_of(result) == wanted))
        )
    row.ms_per_image = 1000.0 * seconds / max(row.images, 1)
    row.passed = (
        row.max_confidence_difference <= SCORE_TOLERANCE
        and row.labels_equal + row.labels_at_tie == row.images
        and row.min_mask_agreement >= MASK_AGREEMENT
    )
    return row


def export_description(export: Any) -> str:
    batch = "N" if export.batch is None else str(export.batch)
    resize = export.first_resize
    target = f", Resize→{resize.width}x{resize.height}" if resize and resize.width else ""
    return f"[{batch},3,H,W]{target}"


def run_case(case: ModelCase, work: Path, data: Dataset, use_openvino: bool) -> list[Row]:
    import openlookout
    from openlookout.anomalib import import_anomalib, inspect_anomalib_export

    export_dir = train_and_export(case, work, data)
    export = inspect_anomalib_export(export_dir)
    rows: list[Row] = []
    references: list[tuple[str, Callable[[Path], Answer], list[str]]] = [
        ("onnxruntime", onnxruntime_reference(export.model_path, export.batch), [])
    ]
    notes: dict[str, str] = {}
    informational: set[str] = set()
    if use_openvino:
        if export.batch not in (None, 1):
            notes["OpenVINOInferencer"] = (
                f"not run: it feeds one image, the export's batch is fixed at {export.batch}"
            )
        else:
            precision = openvino_precision(export.model_path)
            for hint in [None] if precision == "f32" else [None, "f32"]:
                case_notes: list[str] = []
                name = f"OpenVINOInferencer ({hint or precision})"
                references.append(
                    (name, openvino_reference(export.model_path, hint, case_notes), case_notes)
                )
            if precision != "f32":
                # OpenVINO's default on CPUs with native bf16 is bf16: show how far that moves
                # anomalib's own answer from its f32 one (openlookout computes in f32).
                reduced, full = references[-2][1], references[-1][1]
                spread = max(abs(reduced(p).score - full(p).score) for p in data.test_images)
                notes_for_reduced = (
                    f"OpenVINO's default precision on this CPU is {precision}; it moves "
                    f"anomalib's own pred_score from its f32 run by up to {spread:.1e}"
                )
                references[-2][2].append(notes_for_reduced)
                informational.add(references[-2][0])
    for feed in ("original", "pre-resized"):
        package = work / "packages" / f"{case.name}-{feed}"
        try:
            import_anomalib(export_dir, package, feed=feed, overwrite=True)
        except openlookout.ValidationException as e:
            rows.append(
                Row(case.name, export_description(export), feed, "-", passed=True, note=str(e))
            )
            continue
        model = openlookout.load_model(package, intra_op_threads=2)
        for name, reference, reference_notes in references:
            row = Row(case.name, export_description(export), feed, name)
            rows.append(compare(row, model, reference, data.test_images))
            row.note = "; ".join(reference_notes)
            row.informational = name in informational
        for name, note in notes.items():
            rows.append(Row(case.name, export_description(export), feed, name, note=note))
    return rows


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def verdict(row: Row) -> str:
    if row.informational:
        return "(info)"
    if row.images == 0 and row.passed:
        return "n/a"  # not compared: the note says why
    return "pass" if row.passed else "FAIL"


def _cell(row: Row) -> str:
    if row.images == 0:
        return "not run"
    labels = f"{row.labels_equal}/{row.images - row.labels_at_tie}"
    if row.labels_at_tie:
        labels += f" +{row.labels_at_tie} tie"
    return f"{row.max_confidence_difference:.1e} · {labels} · {row.min_mask_agreement:.2%}"


def markdown(rows: list[Row]) -> str:
    """One line per model and feed; one column per reference, each cell "max |dConfidence| ·
    labels equal · min. mask agreement"; notes as numbered footnotes."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.model, r.export, r.feed), []).append(r)
    columns = [
        "onnxruntime",
        "OpenVINOInferencer (f32)",
        "OpenVINOInferencer (its default; not judged)",
    ]
    notes: list[str] = []

    def mark(note: str) -> str:
        if not note:
            return ""
        if note not in notes:
            notes.append(note)
        return f" [{notes.index(note) + 1}]"

    lines = [
        "| model | export input | feed | images (anomalous) | vs "
        + " | vs ".join(columns)
        + " | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (model, export, feed), members in groups.items():
        if len(members) == 1 and members[0].images == 0:
            r = members[0]
            lines.append(
                f"| {model} | {export} | {feed} | | {verdict(r)}{mark(r.note)} | | | {verdict(r)} |"
            )
            continue
        cells: dict[str, tuple[Row, str]] = {}
        for r in members:
            text = _cell(r) + mark(r.note)
            if r.reference == "onnxruntime":
                cells[columns[0]] = (r, text)
            elif r.images == 0:  # OpenVINO not run: the note covers both columns
                cells[columns[1]] = cells[columns[2]] = (r, text)
            elif r.informational:
                cells[columns[2]] = (r, text)
            else:
                cells[columns[1]] = (r, text)
        if columns[2] not in cells and columns[1] in cells:
            cells[columns[2]] = (cells[columns[1]][0], "(the default is f32)")
        ort = cells[columns[0]][0]
        judged = [r for r, _ in cells.values() if not r.informational and r.images]
        result = "pass" if all(r.passed for r in judged) else "FAIL"
        lines.append(
            f"| {model} | {export} | {feed} | {ort.images} ({ort.anomalous}) | "
            + " | ".join(cells.get(c, (None, ""))[1] for c in columns)
            + f" | {result} |"
        )
    lines.append("")
    lines += [f"[{i + 1}] {note}" for i, note in enumerate(notes)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("anomalib-parity"), help="work folder")
    parser.add_argument(
        "--models",
        default=",".join(CASES),
        help=f"comma-separated subset of {', '.join(CASES)}",
    )
    parser.add_argument("--train-images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-openvino", action="store_true", help="skip OpenVINOInferencer")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only print the table of an earlier --json"
    )
    args = parser.parse_args(argv)
    if args.render:
        print(markdown([Row(**r) for r in json.loads(args.render.read_text())]))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    try:
        import openvino  # noqa: F401

        use_openvino = not args.no_openvino
    except ImportError:
        use_openvino = False
        print("openvino is not installed: comparing with onnxruntime only", file=sys.stderr)

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # OpenVINOInferencer writes an openvino_cache folder into the working dir
    data = make_dataset(work / "data", train=args.train_images, size=(96, 80))
    rows: list[Row] = []
    for name in args.models.split(","):
        case = CASES[name]
        started = time.perf_counter()
        print(f"== {name}: {case.description}", file=sys.stderr)
        try:
            rows += run_case(case, work, data, use_openvino)
        except Exception as e:  # report the failure in the table, with its reason
            traceback.print_exc()
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            rows.append(Row(name, "-", "-", "-", passed=False, note=f"FAILED: {reason}"))
        print(f"   {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0 if all(r.passed or r.informational for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
