"""Importing anomalib ONNX exports (openlookout.anomalib): graphs with the I/O contract of anomalib
2.x exports (tests/anomalib_graphs.py; nothing is trained) are imported end to end and
openlookout's answers are checked against the graph run directly in onnxruntime on the RGB image
/ 255 at its original size, which is what anomalib's OpenVINOInferencer feeds:

* ``Confidence`` within 1e-4 of L4V's formula applied to ``pred_score`` (``s`` or ``1 - s``),
* ``IsAnomalous`` equal to ``pred_score >= t`` (and to the graph's ``pred_label``, ``> t``, away
  from the tie),
* the mask equal to ``anomaly_map`` upsampled bilinearly to the image's full size and cut at
  ``t``, on at least 99.5 % of pixels and on every pixel not within 1e-5 of the cut-off.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import anomalib_graphs as ag
import imagegen
import openlookout
import reference
from openlookout.anomalib import (
    anomalib_manifest,
    find_export_model,
    import_anomalib,
    inspect_anomalib_export,
)

SCORE_TOLERANCE = 1e-4
MASK_AGREEMENT = 0.995
TIE = 1e-5  # map values this close to the cut-off may round either way
ANOMALY_COLOR = (255, 0, 0)

# (width, height, seed): odd sizes, portrait and landscape, L4V's minimum side, and a larger one.
IMAGE_SPECS = [(97, 71, 301), (130, 64, 302), (256, 192, 303), (64, 64, 304), (71, 97, 305)]
IMAGE_SPECS += [(320, 240, 306)]

VARIANTS = {
    "dynamic": ag.GraphSpec(),
    "batch2": ag.GraphSpec(batch=2, seed=1),
    "flat_outputs": ag.GraphSpec(score_rank=1, map_rank=3, seed=2),
    "batch2_flat_outputs": ag.GraphSpec(batch=2, score_rank=1, map_rank=3, seed=3),
    "const_sizes_batch1": ag.GraphSpec(resize="sizes", batch=1, seed=4),
    "non_square_target": ag.GraphSpec(target=(40, 48), seed=5),
    "scale_factor_resize": ag.GraphSpec(resize="scales", seed=6),
    "antialiased_resize": ag.GraphSpec(antialias=1, seed=7),
    "no_resize": ag.GraphSpec(resize="none", stride=4, seed=8),
}
PRE_RESIZABLE = ["dynamic", "batch2", "flat_outputs", "const_sizes_batch1", "non_square_target"]


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [imagegen.natural_rgb(w, h, seed) for w, h, seed in IMAGE_SPECS]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, images):
    """name -> export folder, built on first use, calibrated on the test images (so that both
    verdicts occur)."""
    root = tmp_path_factory.mktemp("anomalib_exports")
    built: dict[str, Path] = {}

    def get(name: str, spec: ag.GraphSpec | None = None, **kwargs) -> Path:
        if name not in built:
            spec = spec or VARIANTS[name]
            built[name] = ag.anomalib_export(root / name, spec, images, **kwargs)
        return built[name]

    return get


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "package"


def graph_outputs(export: Path, rgb: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    """The export run directly, as anomalib's OpenVINOInferencer runs it; slot 0's outputs."""
    session = ag.session(export / "model.onnx")
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {"input": ag.feed(rgb, batch)})
    return {name: value[0] for name, value in zip(names, values)}


def mask_labels(result: dict) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(result["AnomalyMask"])).convert("RGB"))
    anomalous = (rgb == np.array(ANOMALY_COLOR, np.uint8)).all(axis=2)
    background = (rgb == 255).all(axis=2)
    assert (anomalous | background).all(), "mask holds colours other than white and the label's"
    return anomalous


def upsampled_map(anomaly_map: np.ndarray, width: int, height: int) -> np.ndarray:
    planes = anomaly_map.reshape(1, *anomaly_map.shape[-2:])
    return reference.resize_planes(planes, width, height, "bilinear")[0]


def compare(
    result: dict,
    outputs: dict[str, np.ndarray],
    rgb: np.ndarray,
    t: float = 0.5,
    mask_threshold: float = 0.5,
):
    """Asserts the contract above; returns (score difference, mask agreement, anomalous)."""
    s = float(outputs["pred_score"].reshape(-1)[0])
    expected_anomalous, expected_confidence = reference.verdict(s, t)
    assert result["IsAnomalous"] == expected_anomalous, (s, result)
    if abs(s - t) > SCORE_TOLERANCE:
        assert result["IsAnomalous"] == bool(outputs["pred_label"].reshape(-1)[0])
    score_difference = abs(result["Confidence"] - expected_confidence)
    assert score_difference <= SCORE_TOLERANCE, (s, result["Confidence"], expected_confidence)
    if "anomaly_map" not in outputs:
        assert "AnomalyMask" not in result
        return score_difference, 1.0, expected_anomalous
    height, width = rgb.shape[:2]
    up = upsampled_map(outputs["anomaly_map"], width, height)
    expected = up >= mask_threshold
    labels = mask_labels(result)
    agreement = float(np.mean(labels == expected))
    assert agreement >= MASK_AGREEMENT, agreement
    clear = np.abs(up - mask_threshold) > TIE
    assert (labels[clear] == expected[clear]).all()
    anomalous_pixels = int(labels.sum())
    names = [a["Name"] for a in result["Anomalies"]]
    assert names == (["background", "anomaly"] if anomalous_pixels else ["background"])
    if anomalous_pixels:
        area = result["Anomalies"][1]["PixelAnomaly"]["TotalPercentageArea"]
        assert area == pytest.approx(anomalous_pixels / (width * height), rel=1e-6)
    return score_difference, agreement, expected_anomalous


# --------------------------------------------------------------------------------------------
# Parity with the graph itself
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_original_size_feed_matches_the_graph(variant, exports, images, out):
    export = exports(variant)
    package = import_anomalib(export, out)
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["input"]["resize"] == "none"
    model = openlookout.load_model(package, intra_op_threads=1)
    verdicts, any_mask = set(), False
    for rgb in images:
        result = model.detect(imagegen.png_bytes(rgb), "image/png")
        outputs = graph_outputs(export, rgb, VARIANTS[variant].batch)
        _, _, anomalous = compare(result, outputs, rgb)
        verdicts.add(anomalous)
        any_mask = any_mask or len(result["Anomalies"]) > 1
    # Not vacuous: both verdicts and some anomalous pixels occur.
    assert verdicts == {True, False}
    assert any_mask


@pytest.mark.parametrize("variant", PRE_RESIZABLE)
def test_pre_resized_feed_matches_the_graph(variant, exports, images, out):
    """The pre-resized package (openlookout resizes to the graph's own target) against the
    graph fed at original size: the same contract, with the differences only float rounding.
    Against the graph fed the reference's bilinear resize of the image, it is tighter still."""
    export = exports(variant)
    spec = VARIANTS[variant]
    package = import_anomalib(export, out, feed="pre-resized")
    manifest = json.loads((package / "manifest.json").read_text())
    height, width = spec.target
    assert manifest["input"]["resize"] == "bilinear"
    assert (manifest["input"]["width"], manifest["input"]["height"]) == (width, height)
    model = openlookout.load_model(package, intra_op_threads=1)
    worst_score, worst_agreement = 0.0, 1.0
    for rgb in images:
        result = model.detect_array(rgb)
        score_difference, agreement, _ = compare(
            result, graph_outputs(export, rgb, spec.batch), rgb
        )
        worst_score = max(worst_score, score_difference)
        worst_agreement = min(worst_agreement, agreement)
        # The graph fed the reference's bilinear resize (float, not rounded to 8 bits, as
        # openlookout keeps it): what the pre-resized package computes.
        small = reference.resize(rgb, width, height, "bilinear").astype(np.float32)
        pre = graph_outputs(export, small, spec.batch)
        compare(result, pre, rgb)
    assert worst_score <= 1e-5  # measured: about 1e-6
    assert worst_agreement >= 0.999


def test_pre_resized_and_original_differ_only_by_rounding(exports, images, out):
    """Both feeds of one export side by side: the measured difference (reported in the README
    by benchmarks/bench_anomalib.py) is float rounding, far below the parity tolerance."""
    export = exports("dynamic")
    original = openlookout.load_model(import_anomalib(export, out / "original"))
    pre = openlookout.load_model(import_anomalib(export, out / "pre", feed="pre-resized"))
    for rgb in images:
        a, b = original.detect_array(rgb), pre.detect_array(rgb)
        assert a["IsAnomalous"] == b["IsAnomalous"]
        assert abs(a["Confidence"] - b["Confidence"]) < 1e-5
        assert np.mean(mask_labels(a) == mask_labels(b)) >= 0.999


def test_classification_only_export(exports, images, tmp_path, out):
    """An export without anomaly_map (and pred_mask) becomes a classification package."""
    model = onnx.load(str(exports("dynamic") / "model.onnx"))
    keep = [o for o in model.graph.output if o.name in ("pred_score", "pred_label")]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    export = ag.write_export(tmp_path / "cls_export", model)
    package = import_anomalib(export, out)
    assert json.loads((package / "manifest.json").read_text())["task"] == "classification"
    native = openlookout.load_model(package)
    assert native.task == "classification"
    for rgb in images:
        outputs = graph_outputs(export, rgb, None)
        result = native.detect_array(rgb)
        assert set(result) == {"Source", "IsAnomalous", "Confidence"}
        compare(result, outputs, rgb)


def test_thresholds_come_from_the_graph(images, out, tmp_path):
    """A post-processor with other sensitivities bakes other cut-offs into pred_label/pred_mask;
    the manifest takes them from the graph."""
    spec = ag.GraphSpec(label_threshold=0.4, mask_threshold=0.6, seed=9)
    export = ag.anomalib_export(tmp_path / "export", spec, images)
    package = import_anomalib(export, out)
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["classification"]["threshold"] == pytest.approx(0.4)
    assert manifest["segmentation"]["threshold"] == pytest.approx(0.6)
    assert "pred_label = pred_score > 0.4" in manifest["anomalib"]["thresholds_from"]
    model = openlookout.load_model(package)
    for rgb in images:
        outputs = graph_outputs(export, rgb, None)
        compare(model.detect_array(rgb), outputs, rgb, t=0.4, mask_threshold=0.6)


# --------------------------------------------------------------------------------------------
# The package written
# --------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_package_contents(exports, out):
    export = exports("dynamic")
    package = import_anomalib(export, out, label="scratch", color="#00ff7f")
    assert sorted(p.name for p in package.iterdir()) == [
        "manifest.json",
        "model.onnx",
        "model.onnx.data",
    ]
    for name in ("model.onnx", "model.onnx.data"):
        assert sha256(package / name) == sha256(export / name)  # copied byte for byte
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["task"] == "segmentation"
    assert manifest["model"] == "model.onnx"
    assert manifest["input"] == {
        "name": "input",
        "layout": "NCHW",
        "color": "RGB",
        "scale": 1 / 255,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "resize": "none",
    }
    assert "image_size" not in manifest
    assert manifest["classification"] == {
        "output": "pred_score",
        "activation": "none",
        "threshold": 0.5,
    }
    assert manifest["segmentation"] == {
        "output": "anomaly_map",
        "activation": "none",
        "threshold": 0.5,
        "upsample": "bilinear",
        "labels": [{"name": "scratch", "color": "#00ff7f"}],
    }
    info = manifest["anomalib"]
    assert info["feed"] == "original"
    assert info["input_batch"] is None
    assert info["first_op"] == "Resize"
    assert info["resize_target"] == {"width": 32, "height": 32}
    assert info["pre_resize_problem"] is None
    assert info["external_data"] == ["model.onnx.data"]
    assert info["onnx_sha256"] == sha256(export / "model.onnx")
    model = openlookout.load_model(package)
    assert model.manifest.segmentation.labels[0].color == "#00FF7F"
    assert model.manifest.extra["anomalib"]["feed"] == "original"


def test_batch_is_detected(exports, out):
    assert inspect_anomalib_export(exports("batch2")).batch == 2
    assert inspect_anomalib_export(exports("const_sizes_batch1")).batch == 1
    assert inspect_anomalib_export(exports("dynamic")).batch is None
    package = import_anomalib(exports("batch2"), out)
    assert json.loads((package / "manifest.json").read_text())["anomalib"]["input_batch"] == 2


def test_several_external_data_files_are_copied(exports, images, out):
    export = exports("multi_file", ag.GraphSpec(convs=2, seed=10), one_file=False)
    data_files = sorted(p.name for p in export.iterdir() if p.name != "model.onnx")
    assert len(data_files) >= 3
    package = import_anomalib(export, out)
    assert sorted(p.name for p in package.iterdir()) == sorted(
        [*data_files, "model.onnx", "manifest.json"]
    )
    model = openlookout.load_model(package)
    rgb = images[0]
    compare(model.detect_array(rgb), graph_outputs(export, rgb, None), rgb)


def test_anomalib_export_root_and_onnx_file_are_found(exports, tmp_path):
    export = exports("dynamic")
    root = tmp_path / "exported"
    (root / "weights" / "onnx").mkdir(parents=True)
    for name in ("model.onnx", "model.onnx.data"):
        (root / "weights" / "onnx" / name).write_bytes((export / name).read_bytes())
    assert find_export_model(root) == root / "weights" / "onnx" / "model.onnx"
    assert find_export_model(export / "model.onnx") == export / "model.onnx"
    package = import_anomalib(root, tmp_path / "package")
    assert (package / "model.onnx.data").is_file()


def test_fixed_input_size_takes_only_that_size(images, tmp_path, out):
    """An export with input_size=(64, 80) runs on 80x64 images only, as in anomalib; the
    package enforces it with image_size (and the bilinear resize to the same size is exact)."""
    spec = ag.GraphSpec(input_size=(64, 80), seed=11)
    export = ag.anomalib_export(tmp_path / "export", spec, images)
    info = inspect_anomalib_export(export)
    assert (info.input_width, info.input_height) == (80, 64)
    assert "input_size" in info.pre_resize_problem
    with pytest.raises(openlookout.ValidationException, match="input_size"):
        import_anomalib(export, out, feed="pre-resized")
    package = import_anomalib(export, out)
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["image_size"] == {"width": 80, "height": 64}
    assert manifest["input"]["resize"] == "bilinear"
    model = openlookout.load_model(package)
    rgb = imagegen.natural_rgb(80, 64, 501)
    compare(model.detect_array(rgb), graph_outputs(export, rgb, None), rgb)
    with pytest.raises(openlookout.ValidationException, match="80x64"):
        model.detect_array(imagegen.natural_rgb(81, 64, 502))


def test_fixed_input_at_the_resize_target_can_be_pre_resized(images, tmp_path, out):
    spec = ag.GraphSpec(input_size=(64, 64), target=(64, 64), seed=12)
    export = ag.anomalib_export(tmp_path / "export", spec, images)
    package = import_anomalib(export, out, feed="pre-resized")
    manifest = json.loads((package / "manifest.json").read_text())
    assert "image_size" not in manifest
    assert (manifest["input"]["width"], manifest["input"]["height"]) == (64, 64)
    result = openlookout.load_model(package).detect_array(imagegen.natural_rgb(97, 71, 503))
    assert result["AnomalyMask"]


# --------------------------------------------------------------------------------------------
# What is refused, and how
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("scale_factor_resize", "scale factors"),
        ("antialiased_resize", "antialias=False"),
        ("no_resize", "first operation on 'input' is Sub"),
    ],
)
def test_pre_resized_refused_where_the_graph_does_not_start_with_a_fixed_resize(
    variant, message, exports, out
):
    with pytest.raises(openlookout.ValidationException, match=message):
        import_anomalib(exports(variant), out, feed="pre-resized")
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "nearest"}, "mode 'nearest'"),
        ({"mode": "cubic"}, "mode 'cubic'"),
        ({"coordinate_transformation_mode": "align_corners"}, "align_corners"),
    ],
)
def test_pre_resized_refused_for_other_resizes(changes, message, tmp_path, out):
    model = ag.build(ag.GraphSpec(**changes))
    export = ag.write_export(tmp_path / "export", model)
    assert inspect_anomalib_export(export).pre_resize_problem is not None
    with pytest.raises(openlookout.ValidationException, match=message):
        import_anomalib(export, out, feed="pre-resized")
    import_anomalib(export, out)  # the original-size feed takes any graph


def edited_export(source: Path, directory: Path, edit) -> Path:
    model = onnx.load(str(source / "model.onnx"))
    edit(model)
    return ag.write_export(directory, model)


def _drop_output(name):
    def edit(model):
        keep = [o for o in model.graph.output if o.name != name]
        del model.graph.output[:]
        model.graph.output.extend(keep)

    return edit


def _set_input_dims(dims):
    def edit(model):
        shape = model.graph.input[0].type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d

    return edit


def _pred_label_as_float(model):
    for o in model.graph.output:
        if o.name == "pred_label":
            o.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop_output("pred_score"), "no 'pred_score' output"),
        (_drop_output("pred_label"), "no 'pred_label' output"),
        (_drop_output("pred_mask"), "no 'pred_mask' output"),
        (_set_input_dims(["N", 1, "H", "W"]), "three RGB channels"),
        (_set_input_dims(["N", 3, "H"]), r"takes \[N,3,H,W\]"),
        (_set_input_dims(["N", 3, 64, "W"]), "both dynamic"),
        (_pred_label_as_float, "not boolean"),
    ],
    ids=["no_score", "no_label", "no_mask", "one_channel", "rank3", "half_fixed", "float_label"],
)
def test_contract_violations_are_named(edit, message, exports, tmp_path, out):
    export = edited_export(exports("dynamic"), tmp_path / "export", edit)
    with pytest.raises(openlookout.ValidationException, match=message):
        import_anomalib(export, out)
    assert not out.exists()


def test_threshold_outside_zero_one_is_refused(images, tmp_path, out):
    spec = ag.GraphSpec(label_threshold=1.0)
    export = ag.anomalib_export(tmp_path / "export", spec, images)
    with pytest.raises(openlookout.ValidationException, match="sensitivity"):
        import_anomalib(export, out)


def test_missing_and_unreadable_exports(exports, tmp_path, out):
    with pytest.raises(openlookout.ResourceNotFoundException):
        import_anomalib(tmp_path / "nowhere", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(openlookout.ResourceNotFoundException, match=r"model\.onnx"):
        import_anomalib(empty, out)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(openlookout.ValidationException, match="not a readable ONNX model"):
        import_anomalib(garbage, out)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model.onnx").write_bytes((exports("dynamic") / "model.onnx").read_bytes())
    with pytest.raises(openlookout.ResourceNotFoundException, match=r"model\.onnx\.data"):
        import_anomalib(partial, out)
    assert not out.exists()


def test_existing_package_directory(exports, out):
    export = exports("dynamic")
    out.mkdir()
    import_anomalib(export, out)  # an empty directory is fine
    with pytest.raises(openlookout.ConflictException, match="not empty"):
        import_anomalib(export, out, feed="pre-resized")
    import_anomalib(export, out, feed="pre-resized", overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["anomalib"]["feed"] == "pre-resized"
    with pytest.raises(openlookout.ValidationException, match="differ"):
        import_anomalib(export, export, overwrite=True)
    assert (export / "model.onnx").is_file()
    # Nothing left behind by the staging directories.
    assert sorted(p.name for p in out.parent.iterdir()) == ["package"]


def test_bad_options(exports, out):
    export = exports("dynamic")
    with pytest.raises(openlookout.ValidationException, match="feed"):
        import_anomalib(export, out, feed="resized")
    with pytest.raises(openlookout.ValidationException, match="color"):
        import_anomalib(export, out, color="red")
    with pytest.raises(openlookout.ValidationException, match="name"):
        import_anomalib(export, out, label="background")
    assert not out.exists()
    manifest = anomalib_manifest(inspect_anomalib_export(export), feed="original")
    assert manifest["input"]["resize"] == "none"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "openlookout", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_import(exports, tmp_path):
    export = exports("dynamic")
    target = tmp_path / "cli_package"
    done = run_cli(
        "anomalib-import",
        str(export),
        "--out",
        str(target),
        "--feed",
        "pre-resized",
        "--label",
        "defect",
        "--color",
        "#00FF00",
    )
    assert done.returncode == 0, done.stderr
    assert str(target) in done.stdout
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["input"]["resize"] == "bilinear"
    assert manifest["segmentation"]["labels"] == [{"name": "defect", "color": "#00FF00"}]
    again = run_cli("anomalib-import", str(export), "--out", str(target))
    assert again.returncode == 1
    assert "ConflictException" in again.stderr
    assert "--overwrite" in again.stderr
    refused = run_cli(
        "anomalib-import",
        str(exports("scale_factor_resize")),
        "--out",
        str(tmp_path / "x"),
        "--feed",
        "pre-resized",
    )
    assert refused.returncode == 1
    assert "scale factors" in refused.stderr


def test_cli_model_import_anomalib_into_the_registry(exports, images, tmp_path):
    """`openlookout model import-anomalib` (the registry's model group): the export becomes the
    project's next version."""
    home = str(tmp_path / "home")
    assert run_cli("project", "create", "parts", "--home", home).returncode == 0
    export = exports("batch2")
    done = run_cli(
        "model",
        "import-anomalib",
        str(export),
        "--project",
        "parts",
        "--home",
        home,
        "--feed",
        "pre-resized",
        "--label",
        "defect",
    )
    assert done.returncode == 0, done.stderr
    assert "as parts version 1" in done.stdout
    assert "batch fixed at 2" in done.stdout
    package = tmp_path / "home" / "projects" / "parts" / "models" / "1" / "package"
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["input"]["resize"] == "bilinear"
    assert manifest["anomalib"]["input_batch"] == 2
    rgb = images[0]
    compare(
        openlookout.load_model(package).detect_array(rgb),
        graph_outputs(export, rgb, 2),
        rgb,
    )
    second = run_cli(
        "model", "import-anomalib", str(export), "--project", "parts", "--home", home, "--json"
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["ModelVersion"] == "2"
    missing = run_cli("model", "import-anomalib", str(export), "--project", "nope", "--home", home)
    assert missing.returncode == 1
    assert "ResourceNotFoundException" in missing.stderr
