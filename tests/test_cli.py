"""The ``openlookout`` command line, run as a user runs it (``python -m openlookout`` in a
subprocess) on the bundled samples: its JSON is the Python API's answer, masks and overlays are
written, bad files are reported without stopping the run, and ``models`` / ``info`` describe the
bundled packages. A few pure helpers (content sniffing, output names, the progress bar, the ONNX
signature reader) are tested in-process."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import openlookout
from openlookout import demo
from openlookout.cli import build_parser
from openlookout.cli.detect import (
    Input,
    ProgressBar,
    expand_inputs,
    output_names,
    sniff_content_type,
)
from openlookout.cli.models import read_onnx_signature

SAMPLES = demo.sample_images()
SEG = "surface-seg"
CLS = "surface-cls"


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openlookout", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def content_type(path: Path) -> str:
    return "image/png" if path.read_bytes()[:4] == b"\x89PNG" else "image/jpeg"


@pytest.fixture(scope="module")
def seg_model() -> openlookout.Model:
    return openlookout.load_model(demo.demo_model_path(SEG))


@pytest.fixture(scope="module")
def expected(seg_model) -> dict[str, dict]:
    """The Python API's answer for each sample, by file name."""
    return {p.name: seg_model.detect(p.read_bytes(), content_type(p)) for p in SAMPLES}


def open_image(path: Path) -> tuple[str | None, str, tuple[int, int], np.ndarray]:
    """Format, mode, size and RGB pixels of an image file (closed again at once)."""
    with Image.open(path) as image:
        return image.format, image.mode, image.size, np.asarray(image.convert("RGB"))


def table_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["FILE", "VERDICT", "CONFIDENCE"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


# --------------------------------------------------------------------------------------------
# detect
# --------------------------------------------------------------------------------------------


def test_samples_are_png_and_jpeg_of_each_kind():
    names = [p.name for p in SAMPLES]
    assert {content_type(p) for p in SAMPLES} == {"image/png", "image/jpeg"}
    assert any("normal" in n for n in names)
    assert any("scratch" in n for n in names)
    assert any("hole" in n for n in names)


def test_json_is_the_python_api_answer(expected):
    proc = run_cli("detect", "--json", *SAMPLES)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(SAMPLES)
    for path, line in zip(SAMPLES, lines, strict=True):
        printed = json.loads(line)
        assert list(printed) == ["DetectAnomalyResult"]
        result = printed["DetectAnomalyResult"]
        want = expected[path.name]
        assert list(result) == list(want)  # Source, IsAnomalous, Confidence, Anomalies, Mask
        assert base64.b64decode(result.pop("AnomalyMask"), validate=True) == want["AnomalyMask"]
        assert result == {k: v for k, v in want.items() if k != "AnomalyMask"}
    assert "8 images" in proc.stderr
    assert "images/s" in proc.stderr


def test_table_without_arguments_runs_the_samples(expected):
    proc = run_cli("detect")
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    assert set(rows) == set(expected)
    for name, cells in rows.items():
        want = expected[name]
        assert cells[0] == ("anomalous" if want["IsAnomalous"] else "normal")
        assert cells[1] == f"{want['Confidence']:.3f}"
        for anomaly in want["Anomalies"][1:]:
            area = anomaly["PixelAnomaly"]["TotalPercentageArea"] * 100
            assert f"{anomaly['Name']} {area:.2f}%" in " ".join(cells[2:])
    anomalous = sum(r["IsAnomalous"] for r in expected.values())
    assert f"{len(SAMPLES)} images: {anomalous} anomalous, " in proc.stderr
    assert "bundled samples" in proc.stderr


def test_masks_and_overlays(tmp_path, expected):
    masks, overlays = tmp_path / "masks", tmp_path / "new" / "overlays"
    proc = run_cli("detect", *SAMPLES, "--mask-dir", masks, "--overlay-dir", overlays)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in masks.iterdir()) == sorted(f"{p.stem}.png" for p in SAMPLES)
    for path in SAMPLES:
        want = expected[path.name]
        mask_bytes = (masks / f"{path.stem}.png").read_bytes()
        assert mask_bytes == want["AnomalyMask"]
        _, _, size, original = open_image(path)
        overlay_format, overlay_mode, overlay_size, painted = open_image(
            overlays / f"{path.stem}.png"
        )
        assert (overlay_format, overlay_mode, overlay_size) == ("PNG", "RGB", size)
        mask = np.asarray(Image.open(io.BytesIO(mask_bytes)).convert("RGB"))
        original, painted = original.astype(int), painted.astype(int)
        # Outside the legend (top-left), exactly the anomalous pixels are changed.
        below_legend = slice(size[1] // 2, None)
        changed = np.any(painted != original, axis=2)[below_legend]
        anomalous = np.any(mask != 255, axis=2)[below_legend]
        assert np.array_equal(changed, anomalous)
        # The legend: a dark box in the corner.
        corner = painted[12:20, 12:20]
        assert corner.mean() < original[12:20, 12:20].mean()


def test_bad_files_are_reported_and_the_run_goes_on(tmp_path):
    good = [SAMPLES[0], SAMPLES[1]]
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(
        next(p for p in SAMPLES if p.suffix == ".jpg").read_bytes()[:300]
    )
    bad = [tmp_path / n for n in ("notes.png", "empty.jpg", "truncated.jpg", "missing.png")]
    arguments = [good[0], *bad[:2], good[1], *bad[2:]]

    proc = run_cli("detect", *arguments)
    assert proc.returncode == 1
    rows = table_rows(proc.stdout)
    assert len(rows) == 6
    for path in good:
        assert rows[str(path)][0] in ("anomalous", "normal")
    assert rows[str(bad[0])][:2] == ["error", "-"]
    assert "not a PNG or JPEG" in " ".join(rows[str(bad[0])])
    assert "empty file" in " ".join(rows[str(bad[1])])
    assert "ValidationException" in " ".join(rows[str(bad[2])])
    assert "No such file" in " ".join(rows[str(bad[3])])
    assert "6 images:" in proc.stderr
    assert "4 errors" in proc.stderr

    proc = run_cli("detect", "--json", *arguments)
    assert proc.returncode == 1
    assert [
        json.loads(line)["DetectAnomalyResult"]["Source"] for line in proc.stdout.splitlines()
    ] == [{"Type": "direct"}] * 2
    for path in bad:
        assert str(path) in proc.stderr


def test_content_type_comes_from_the_bytes(tmp_path, expected):
    png = next(p for p in SAMPLES if p.suffix == ".png")
    jpeg = next(p for p in SAMPLES if p.suffix == ".jpg")
    shutil.copy(png, tmp_path / "looks_like.jpg")
    shutil.copy(jpeg, tmp_path / "looks_like.png")
    shutil.copy(png, tmp_path / "no_extension")
    proc = run_cli(
        "detect",
        "--json",
        tmp_path / "looks_like.jpg",
        tmp_path / "looks_like.png",
        tmp_path / "no_extension",
    )
    assert proc.returncode == 0, proc.stderr
    masks = [
        base64.b64decode(json.loads(line)["DetectAnomalyResult"]["AnomalyMask"])
        for line in proc.stdout.splitlines()
    ]
    assert masks == [expected[p.name]["AnomalyMask"] for p in (png, jpeg, png)]


def test_directories_and_globs(tmp_path):
    (tmp_path / "sub").mkdir()
    for path in SAMPLES[:3]:
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(SAMPLES[3], tmp_path / "sub" / SAMPLES[3].name)
    (tmp_path / "README.txt").write_text("not an image; directories take only image names")
    top = sorted(p.name for p in SAMPLES[:3])

    rows = table_rows(run_cli("detect", tmp_path).stdout)
    assert [Path(name).name for name in rows] == top
    rows = table_rows(run_cli("detect", "--recursive", tmp_path).stdout)
    assert sorted(Path(name).name for name in rows) == sorted([*top, SAMPLES[3].name])
    # A quoted glob is expanded by openlookout; ** descends; an image named twice runs once.
    proc = run_cli("detect", str(tmp_path / "**" / "*.*g"), tmp_path / SAMPLES[0].name)
    assert len(table_rows(proc.stdout)) == 4
    proc = run_cli("detect", str(tmp_path / "*.gif"))
    assert proc.returncode == 1
    assert "no file matches" in proc.stdout
    (tmp_path / "empty").mkdir()
    proc = run_cli("detect", tmp_path / "empty")
    assert proc.returncode == 1
    assert "no .png, .jpg or .jpeg" in proc.stdout


def test_jobs_keep_the_order_and_the_answers(tmp_path):
    arguments = [*SAMPLES, *SAMPLES[:3]]  # a repeat is run once
    (tmp_path / "a").mkdir()
    copies = [shutil.copy(p, tmp_path / "a" / f"x{i}{p.suffix}") for i, p in enumerate(SAMPLES)]
    serial = run_cli("detect", "--json", *arguments, *copies)
    parallel = run_cli("detect", "--json", "--jobs", "3", *arguments, *copies)
    assert serial.returncode == parallel.returncode == 0, parallel.stderr
    assert serial.stdout == parallel.stdout
    assert len(serial.stdout.splitlines()) == 2 * len(SAMPLES)


def test_same_names_get_distinct_output_files(tmp_path):
    (tmp_path / "b").mkdir()
    png = next(p for p in SAMPLES if p.suffix == ".png")
    shutil.copy(png, tmp_path / "part.png")
    shutil.copy(png, tmp_path / "b" / "part.png")
    shutil.copy(png, tmp_path / "part.jpg")
    proc = run_cli(
        "detect",
        tmp_path / "part.png",
        tmp_path / "b" / "part.png",
        tmp_path / "part.jpg",
        "--mask-dir",
        tmp_path / "m",
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "part-2.png",
        "part-3.png",
        "part.png",
    ]
    # Writing masks next to the images must never overwrite an input.
    proc = run_cli("detect", tmp_path / "part.png", "--mask-dir", tmp_path)
    assert proc.returncode == 1
    assert "not overwriting" in proc.stdout
    assert (tmp_path / "part.png").read_bytes() == png.read_bytes()


def test_classification_model_by_name(tmp_path):
    cls = openlookout.load_model(demo.demo_model_path(CLS))
    proc = run_cli("detect", "--model", CLS, "--json", *SAMPLES, "--mask-dir", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    for path, line in zip(SAMPLES, proc.stdout.splitlines(), strict=True):
        assert json.loads(line) == {
            "DetectAnomalyResult": cls.detect(path.read_bytes(), content_type(path))
        }
    assert "no masks" in proc.stderr
    proc = run_cli("detect", "--model", CLS, SAMPLES[0], "--overlay-dir", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert open_image(tmp_path / "o" / f"{SAMPLES[0].stem}.png")[2] == open_image(SAMPLES[0])[2]


def test_model_that_does_not_load_is_exit_status_2(tmp_path):
    proc = run_cli("detect", "--model", tmp_path / "nothing-here", SAMPLES[0])
    assert proc.returncode == 2
    assert "ResourceNotFoundException" in proc.stderr
    assert "nothing-here" in proc.stderr
    assert proc.stdout == ""


def test_limits_and_io_binding_options_reach_the_model():
    # Each sample is 512x384: a max_side of 400 refuses every one, 600 none.
    tight = run_cli("detect", "--json", "--limit", "max_side=400", *SAMPLES)
    loose = run_cli("detect", "--json", "--limit", "max_side=600", "--io-binding", "on", *SAMPLES)
    assert tight.returncode == 1, tight.stderr
    assert loose.returncode == 0, loose.stderr
    for line in tight.stdout.splitlines():
        assert json.loads(line)["Error"]["Code"] == "ValidationException", line
        assert "max_side" in line
    assert [json.loads(line)["DetectAnomalyResult"] for line in loose.stdout.splitlines()] == [
        json.loads(line)["DetectAnomalyResult"]
        for line in run_cli("detect", "--json", *SAMPLES).stdout.splitlines()
    ]


@pytest.mark.parametrize(
    "option",
    [
        ["--limit", "bogus=1"],
        ["--limit", "max_side"],
        ["--limit", "max_side=big"],
        ["--limit", "jpeg_max_scans=0"],
    ],
)
def test_bad_model_options_are_exit_status_2(option):
    proc = run_cli("detect", *option, SAMPLES[0])
    assert proc.returncode == 2
    assert "ValidationException" in proc.stderr
    assert proc.stdout == ""


def test_progress_bar_on_request():
    proc = run_cli("detect", "--progress", "always", "--json", *SAMPLES)
    assert proc.returncode == 0
    assert "\x1b[K" in proc.stderr  # the bar is redrawn in place (text mode turned \r to \n)
    assert "images/s" in proc.stderr
    assert "ETA" in proc.stderr
    assert "\x1b[K" not in proc.stdout
    quiet = run_cli("detect", "--json", *SAMPLES)  # stderr is not a terminal here
    assert "\x1b[K" not in quiet.stderr


# --------------------------------------------------------------------------------------------
# models, info, help
# --------------------------------------------------------------------------------------------


def test_models_lists_the_bundled_packages():
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "INPUT", "LABELS", "PATH"]
    seg_line = next(line for line in lines if line.startswith(SEG))
    assert "segmentation" in seg_line
    assert "scratch #" in seg_line
    assert "hole #" in seg_line
    assert str(demo.demo_model_path(SEG)) in seg_line
    assert any(line.startswith(CLS) and "classification" in line for line in lines)
    listed = json.loads(run_cli("models", "--json").stdout)
    assert [m["name"] for m in listed] == demo.model_names() == [SEG, CLS]
    assert listed[0]["default"]
    assert listed[0]["labels"][0]["name"] == "scratch"


def test_info_describes_a_package():
    path = demo.demo_model_path(SEG)
    proc = run_cli("info", path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for needle in ("task", "segmentation", "scratch #", "hole #", "resize area", "loads"):
        assert needle in text
    assert "images  float32 [1, 3, 192, 256]" in text
    described = json.loads(run_cli("info", SEG, "--json").stdout)
    assert described["loads"] is True
    assert described["package"] == str(path)
    # The signature read from the protobuf agrees with the onnx package.
    graph = onnx.load(str(path / "model.onnx"))
    onnx_inputs = [
        {
            "name": i.name,
            "type": "float32",
            "shape": [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim],
        }
        for i in graph.graph.input
    ]
    assert described["onnx"]["inputs"] == onnx_inputs
    assert [o["name"] for o in described["onnx"]["outputs"]] == [o.name for o in graph.graph.output]
    assert described["onnx"]["opsets"][""] == graph.opset_import[0].version


def test_info_on_broken_packages(tmp_path):
    proc = run_cli("info", tmp_path / "nope")
    assert proc.returncode == 1
    assert "ResourceNotFoundException" in proc.stderr
    broken = tmp_path / "broken"
    shutil.copytree(demo.demo_model_path(SEG), broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["segmentation"]["labels"].append({"name": "dent", "color": "#123456"})
    (broken / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("info", broken)
    assert proc.returncode == 1
    assert "loads" in proc.stdout
    assert "no: ValidationException" in proc.stdout


@pytest.mark.parametrize("command", [[], ["detect"], ["models"], ["info"]])
def test_help(command):
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: openlookout")
    if command == ["detect"]:
        for option in (
            "--json",
            "--model",
            "--mask-dir",
            "--overlay-dir",
            "--jobs",
            "--threads",
            "--recursive",
            "--progress",
            "exit status",
        ):
            assert option in proc.stdout


def test_no_command_prints_usage():
    proc = run_cli()
    assert proc.returncode == 2
    assert "detect" in proc.stderr
    assert "models" in proc.stderr


# --------------------------------------------------------------------------------------------
# Helpers, in-process
# --------------------------------------------------------------------------------------------


def test_sniff_content_type():
    assert sniff_content_type(b"\x89PNG\r\n\x1a\n\0\0") == "image/png"
    assert sniff_content_type(b"\xff\xd8\xff\xe0\0\x10JFIF") == "image/jpeg"
    assert sniff_content_type(b"GIF89a") is None
    assert sniff_content_type(b"") is None
    assert sniff_content_type(b"\x89PNG") is None


def test_output_names():
    inputs = [Input(n, Path(n)) for n in ("a.png", "x/a.jpg", "b.jpeg", "a.png")]
    assert output_names(inputs) == ["a.png", "a-2.png", "b.png", "a-3.png"]


def test_expand_inputs_keeps_order_and_drops_repeats(tmp_path):
    for name in ("b.png", "a.JPG", "c.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    found = expand_inputs([str(tmp_path / "b.png"), str(tmp_path)], recursive=False)
    assert [Path(i.name).name for i in found] == ["b.png", "a.JPG"]


def test_progress_bar_text():
    stream = io.StringIO()
    bar = ProgressBar(40, stream, enabled=True)
    bar.started -= 4.0
    for _ in range(10):
        bar.done += 1
    text = bar.text(bar.started + 4.0)
    assert text.startswith("10/40 [######..................]  25%")
    assert "2.5 images/s" in text
    assert "ETA 0:12" in text
    bar.advance()
    assert stream.getvalue().startswith("\r\x1b[K11/40")
    bar.clear()
    assert stream.getvalue().endswith("\r\x1b[K")
    silent = io.StringIO()
    ProgressBar(5, silent, enabled=False).advance()
    assert silent.getvalue() == ""


def test_onnx_signature_reader_matches_onnx(packages):
    # A test package with a dynamic batch, named tensors and its weights as initializers.
    path = Path(packages.get("cls_dynbatch_named").path) / "model.onnx"
    signature = read_onnx_signature(path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in signature.inputs] == [i.name for i in graph.input]
    assert signature.inputs[0].shape == ("N", 3, 64, 64)
    assert [o.name for o in signature.outputs] == [o.name for o in graph.output]


def test_parser_lists_the_commands():
    help_text = build_parser().format_help()
    for command in ("detect", "models", "info"):
        assert command in help_text
