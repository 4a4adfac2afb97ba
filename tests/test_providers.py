"""Execution providers and IO binding (``load_model(providers=..., io_binding=...)``).

No GPU here and the suite must not depend on one, so the GPU path is checked as far as the CPU
build of ONNX Runtime allows: IO binding forced on with the CPU provider must give results
bit-identical to the plain ``Run`` path on every kind of model the core handles (static outputs,
outputs whose shape follows the image, anomalib exports fed at the image's own size, fixed
batches larger than one, NHWC, two outputs), from several threads, and without growing memory;
and a provider the installed onnxruntime lacks (CUDA with the CPU wheel) is a clear
``ValidationException``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import anomalib_graphs as ag
import imagegen
import openlookout
from conftest import IMAGE_NAMES
from openlookout import _core, demo
from openlookout._runtime import ensure_onnxruntime
from openlookout.anomalib import import_anomalib

BUILDER_CONFIGS = [
    "cls_sigmoid_bilinear",
    "cls_softmax_nearest",
    "cls_nhwc_scale1",
    "cls_dynbatch_named",
    "cls_dynamic_hw",
    "seg3_nearest",
    "seg3_nhwc",
    "seg1_logit_bilinear",
    "seg3_with_cls",
]
ANOMALIB_VARIANTS = {
    "dynamic": ag.GraphSpec(),  # image's own size in, dynamic output shapes
    "batch2": ag.GraphSpec(batch=2, seed=1),  # fixed batch 2: the image in both slots
    "batch2_flat_outputs": ag.GraphSpec(batch=2, score_rank=1, map_rank=3, seed=3),
    "const_sizes_batch1": ag.GraphSpec(resize="sizes", batch=1, seed=4),
}
ANOMALIB_SIZES = [(97, 71, 301), (130, 64, 302), (256, 192, 303), (64, 64, 304), (320, 240, 306)]


def available_providers() -> list[str]:
    ensure_onnxruntime()
    return _core.onnxruntime_providers()


def pair(path, **options) -> tuple[openlookout.Model, openlookout.Model]:
    """The same package loaded with IO binding off and forced on (CPU provider)."""
    off = openlookout.load_model(path, io_binding="off", **options)
    on = openlookout.load_model(
        path, providers=["CPUExecutionProvider"], io_binding="on", **options
    )
    # Without this the comparisons below could pass with both models on one code path.
    assert off._pipeline.io_binding is False
    assert on._pipeline.io_binding is True
    return off, on


def sample_bodies() -> list[tuple[bytes, str]]:
    samples = Path(demo.__file__).parent / "samples"
    bodies = []
    for path in sorted(samples.iterdir()):
        kind = {".png": "image/png", ".jpg": "image/jpeg"}.get(path.suffix)
        if kind:
            bodies.append((path.read_bytes(), kind))
    assert len(bodies) >= 6
    return bodies


# --------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------


def test_cpu_provider_named_explicitly_works():
    path = demo.demo_model_path("surface-seg")
    default = openlookout.load_model(path)
    cpu = openlookout.load_model(path, providers=["CPUExecutionProvider"])
    assert cpu._pipeline.io_binding is False  # auto: CPU first, nothing to bind
    for body, kind in sample_bodies():
        assert cpu.detect(body, kind) == default.detect(body, kind)


@pytest.mark.parametrize(
    "providers",
    [
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"],
        ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    ],
)
def test_gpu_provider_without_the_gpu_wheel_is_a_clear_error(providers):
    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing to refuse")
    first = providers[0] if isinstance(providers[0], str) else providers[0][0]
    with pytest.raises(openlookout.ValidationException) as info:
        openlookout.load_model(demo.demo_model_path("surface-cls"), providers=providers)
    message = str(info.value)
    assert f"{first} is not available in ONNX Runtime" in message
    for name in available_providers():
        assert name in message  # what the library does offer
    assert "install onnxruntime-gpu in place of onnxruntime" in message
    assert isinstance(info.value, ValueError)


def test_unknown_provider_lists_the_available_ones():
    with pytest.raises(openlookout.ValidationException, match="NoSuchExecutionProvider") as info:
        openlookout.load_model(
            demo.demo_model_path("surface-cls"), providers=["NoSuchExecutionProvider"]
        )
    assert "CPUExecutionProvider" in str(info.value)
    assert "onnxruntime-gpu" not in str(info.value)


# --------------------------------------------------------------------------------------------
# The io_binding option
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "ON", True, None, 1, ["on"]])
def test_io_binding_value_is_validated(value):
    with pytest.raises(openlookout.ValidationException, match="io_binding must be"):
        openlookout.load_model(demo.demo_model_path("surface-cls"), io_binding=value)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, False),
        ({"io_binding": "auto"}, False),
        ({"providers": ["CPUExecutionProvider"]}, False),
        ({"io_binding": "on"}, True),
        ({"providers": ["CPUExecutionProvider"], "io_binding": "off"}, False),
    ],
)
def test_io_binding_resolves(options, expected):
    model = openlookout.load_model(demo.demo_model_path("surface-cls"), **options)
    assert model._pipeline.io_binding is expected


# --------------------------------------------------------------------------------------------
# IO binding on == plain Run, bit for bit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", demo.model_names())
def test_demo_models_identical_with_io_binding(name):
    off, on = pair(demo.demo_model_path(name))
    bodies = sample_bodies()
    expected = [off.detect(body, kind) for body, kind in bodies]
    assert {r["IsAnomalous"] for r in expected} == {True, False}
    # Twice, the second time in reverse: the worker's binding is reused across calls.
    for order in (range(len(bodies)), reversed(range(len(bodies)))):
        for i in order:
            assert on.detect(*bodies[i]) == expected[i]
    batch = on.detect_batch([b for b, _ in bodies] * 3, [k for _, k in bodies] * 3, workers=4)
    assert batch == expected * 3


@pytest.mark.parametrize("config", BUILDER_CONFIGS)
def test_builder_models_identical_with_io_binding(config, packages, png_bodies, images):
    off, on = pair(packages.get(config).path)
    for name in IMAGE_NAMES:
        assert on.detect(png_bodies[name], "image/png") == off.detect(png_bodies[name], "image/png")
        assert on.detect_array(images[name]) == off.detect_array(images[name])


@pytest.fixture(scope="module")
def anomalib_images() -> list[np.ndarray]:
    return [imagegen.natural_rgb(w, h, seed) for w, h, seed in ANOMALIB_SIZES]


@pytest.fixture(scope="module")
def anomalib_packages(tmp_path_factory, anomalib_images) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("providers_anomalib")
    packages = {}
    for name, spec in ANOMALIB_VARIANTS.items():
        export = ag.anomalib_export(root / "exports" / name, spec, anomalib_images)
        packages[name] = import_anomalib(export, root / "packages" / name)
    packages["dynamic_pre_resized"] = import_anomalib(
        root / "exports" / "dynamic", root / "packages" / "dynamic_pre_resized", feed="pre-resized"
    )
    return packages


@pytest.mark.parametrize("variant", [*ANOMALIB_VARIANTS, "dynamic_pre_resized"])
def test_anomalib_exports_identical_with_io_binding(variant, anomalib_packages, anomalib_images):
    off, on = pair(anomalib_packages[variant])
    bodies = [imagegen.png_bytes(rgb) for rgb in anomalib_images]
    expected = [off.detect(body, "image/png") for body in bodies]
    assert {r["IsAnomalous"] for r in expected} == {True, False}
    # Sizes change from call to call: the input is re-shaped and the outputs' shapes follow.
    for i in [0, 4, 1, 3, 2, 2, 0]:
        assert on.detect(bodies[i], "image/png") == expected[i]
    batch = on.detect_batch(bodies * 4, "image/png", workers=4)
    assert batch == expected * 4


# --------------------------------------------------------------------------------------------
# Steady state
# --------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys
    import openlookout

    def rss_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    package, *paths = sys.argv[1:]
    bodies = [open(p, "rb").read() for p in paths]
    model = openlookout.load_model(package, io_binding="on", intra_op_threads=1)
    assert model._pipeline.io_binding
    def run(n):
        for i in range(n):
            model.detect(bodies[i % len(bodies)], "image/png")
    run(400)
    before = rss_kib()
    run(4000)
    print(json.dumps({"before_kib": before, "after_kib": rss_kib()}))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_io_binding_memory_is_flat(anomalib_packages, anomalib_images, tmp_path):
    """The dynamic-output path takes ORT's outputs from the binding each call and must hand them
    back: thousands of calls at changing sizes leave resident memory where it was."""
    paths = []
    for i, rgb in enumerate(anomalib_images):
        path = tmp_path / f"{i}.png"
        path.write_bytes(imagegen.png_bytes(rgb))
        paths.append(str(path))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(anomalib_packages["dynamic"]), *paths],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["after_kib"] - report["before_kib"] <= 3 * 1024, report
