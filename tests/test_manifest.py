"""Manifest validation at load time: every invalid field or manifest/ONNX mismatch is a
ValidationException whose message names the field (e.g. "segmentation.labels")."""

from __future__ import annotations

import copy
import re

import pytest

import builders
import openlookout
import reference
from conftest import LABELS

DELETE = object()
MULTI = ("<several mutations>",)
# A layout that contradicts the model's input shape: the message may name the layout, or the
# input section together with the word "layout".
LAYOUT_FIELDS = [
    "input.layout",
    "input.width",
    "input.height",
    re.compile(r"\binput\b.*\blayout\b", re.S),
]
# A segmentation output of the wrong rank / channel count: the output or the labels are at fault.
RANK_FIELDS = ["segmentation.output", "segmentation.labels"]

# (id, base config, path, value, fields any of which the message must name)
CASES = [
    # -- top level --
    ("format_version_2", "cls_sigmoid_bilinear", ("format_version",), 2, ["format_version"]),
    ("format_version_0", "cls_sigmoid_bilinear", ("format_version",), 0, ["format_version"]),
    ("task_unknown", "cls_sigmoid_bilinear", ("task",), "detection", ["task"]),
    ("task_missing", "cls_sigmoid_bilinear", ("task",), DELETE, ["task"]),
    ("task_not_string", "cls_sigmoid_bilinear", ("task",), 1, ["task"]),
    ("model_not_string", "cls_sigmoid_bilinear", ("model",), 42, ["model"]),
    # -- input --
    ("input_width_mismatch", "cls_sigmoid_bilinear", ("input", "width"), 65, ["input.width"]),
    ("input_height_mismatch", "cls_sigmoid_bilinear", ("input", "height"), 63, ["input.height"]),
    ("input_width_zero", "cls_sigmoid_bilinear", ("input", "width"), 0, ["input.width"]),
    ("input_width_negative", "cls_sigmoid_bilinear", ("input", "width"), -64, ["input.width"]),
    ("input_width_string", "cls_sigmoid_bilinear", ("input", "width"), "64", ["input.width"]),
    ("input_width_fraction", "cls_sigmoid_bilinear", ("input", "width"), 64.5, ["input.width"]),
    (
        "input_height_nonsquare_swapped",
        "cls_nonsquare_48x40",
        ("input", "height"),
        48,
        ["input.height"],
    ),
    ("input_name_unknown", "cls_sigmoid_bilinear", ("input", "name"), "nope", ["input.name"]),
    ("input_layout_unknown", "cls_sigmoid_bilinear", ("input", "layout"), "NCWH", ["input.layout"]),
    (
        "input_layout_wrong_for_model",
        "cls_sigmoid_bilinear",
        ("input", "layout"),
        "NHWC",
        LAYOUT_FIELDS,
    ),
    (
        "input_layout_nchw_for_nhwc_model",
        "cls_nhwc_scale1",
        ("input", "layout"),
        DELETE,
        LAYOUT_FIELDS,
    ),
    ("input_color_unknown", "cls_sigmoid_bilinear", ("input", "color"), "RGBA", ["input.color"]),
    (
        "input_resize_unknown",
        "cls_sigmoid_bilinear",
        ("input", "resize"),
        "bicubic",
        ["input.resize"],
    ),
    ("input_scale_string", "cls_sigmoid_bilinear", ("input", "scale"), "x", ["input.scale"]),
    ("input_mean_short", "cls_sigmoid_bilinear", ("input", "mean"), [0.5, 0.5], ["input.mean"]),
    (
        "input_mean_strings",
        "cls_sigmoid_bilinear",
        ("input", "mean"),
        ["a", "b", "c"],
        ["input.mean"],
    ),
    ("input_std_zero", "cls_sigmoid_bilinear", ("input", "std"), [1, 0, 1], ["input.std"]),
    ("input_std_long", "cls_sigmoid_bilinear", ("input", "std"), [1, 1, 1, 1], ["input.std"]),
    # -- image_size --
    (
        "image_size_width_zero",
        "cls_sigmoid_bilinear",
        ("image_size",),
        {"width": 0, "height": 71},
        ["image_size.width"],
    ),
    (
        "image_size_height_missing",
        "cls_sigmoid_bilinear",
        ("image_size",),
        {"width": 97},
        ["image_size.height"],
    ),
    (
        "image_size_height_negative",
        "cls_sigmoid_bilinear",
        ("image_size",),
        {"width": 97, "height": -1},
        ["image_size.height"],
    ),
    # -- classification --
    (
        "cls_threshold_0",
        "cls_sigmoid_bilinear",
        ("classification", "threshold"),
        0,
        ["classification.threshold"],
    ),
    (
        "cls_threshold_1",
        "cls_sigmoid_bilinear",
        ("classification", "threshold"),
        1,
        ["classification.threshold"],
    ),
    (
        "cls_threshold_1.5",
        "cls_sigmoid_bilinear",
        ("classification", "threshold"),
        1.5,
        ["classification.threshold"],
    ),
    (
        "cls_threshold_negative",
        "cls_sigmoid_bilinear",
        ("classification", "threshold"),
        -0.1,
        ["classification.threshold"],
    ),
    (
        "cls_threshold_string",
        "cls_sigmoid_bilinear",
        ("classification", "threshold"),
        "0.5",
        ["classification.threshold"],
    ),
    (
        "cls_activation_unknown",
        "cls_sigmoid_bilinear",
        ("classification", "activation"),
        "relu",
        ["classification.activation"],
    ),
    (
        "cls_softmax_on_one_value",
        "cls_sigmoid_bilinear",
        ("classification", "activation"),
        "softmax",
        ["classification.activation", "classification.output"],
    ),
    (
        "cls_output_unknown",
        "cls_sigmoid_bilinear",
        ("classification", "output"),
        "nope",
        ["classification.output"],
    ),
    (
        "cls_output_is_segmentation_map",
        "seg3_with_cls",
        ("classification", "output"),
        "seg",
        ["classification.output"],
    ),
    (
        "cls_output_ambiguous",
        "seg3_with_cls",
        ("classification", "output"),
        DELETE,
        ["classification.output"],
    ),
    (
        "task_classification_on_seg_model",
        "seg3_nearest",
        MULTI,
        [(("task",), "classification"), (("segmentation",), DELETE), (("classification",), {})],
        ["classification"],
    ),
    (
        "classification_section_on_seg_task_only",
        "seg3_nearest",
        ("classification",),
        {"output": "seg"},
        ["classification.output"],
    ),
    # -- segmentation --
    ("seg_section_missing", "seg3_nearest", ("segmentation",), DELETE, ["segmentation"]),
    (
        "task_segmentation_on_cls_model",
        "cls_sigmoid_bilinear",
        MULTI,
        [
            (("task",), "segmentation"),
            (("classification",), DELETE),
            (("segmentation",), {"labels": LABELS[:1]}),
        ],
        RANK_FIELDS,
    ),
    (
        "segmentation_section_on_cls_task",
        "cls_sigmoid_bilinear",
        ("segmentation",),
        {"labels": LABELS[:1]},
        ["segmentation", "task"],
    ),
    (
        "seg_labels_too_few",
        "seg3_nearest",
        ("segmentation", "labels"),
        LABELS[:1],
        ["segmentation.labels"],
    ),
    (
        "seg_labels_too_many",
        "seg3_nearest",
        ("segmentation", "labels"),
        [*LABELS, {"name": "crack", "color": "#000000"}],
        ["segmentation.labels"],
    ),
    ("seg_labels_empty", "seg3_nearest", ("segmentation", "labels"), [], ["segmentation.labels"]),
    (
        "seg_labels_missing",
        "seg3_nearest",
        ("segmentation", "labels"),
        DELETE,
        ["segmentation.labels"],
    ),
    (
        "seg_labels_not_list",
        "seg3_nearest",
        ("segmentation", "labels"),
        "scratch",
        ["segmentation.labels"],
    ),
    ("seg1_two_labels", "seg1_logit", ("segmentation", "labels"), LABELS, ["segmentation.labels"]),
    (
        "seg_color_short",
        "seg3_nearest",
        ("segmentation", "labels", 0, "color"),
        "#12345",
        ["segmentation.labels"],
    ),
    (
        "seg_color_name",
        "seg3_nearest",
        ("segmentation", "labels", 1, "color"),
        "red",
        ["segmentation.labels"],
    ),
    (
        "seg_color_not_hex",
        "seg3_nearest",
        ("segmentation", "labels", 0, "color"),
        "#GGGGGG",
        ["segmentation.labels"],
    ),
    (
        "seg_color_no_hash",
        "seg3_nearest",
        ("segmentation", "labels", 0, "color"),
        "7ED321",
        ["segmentation.labels"],
    ),
    (
        "seg_color_number",
        "seg3_nearest",
        ("segmentation", "labels", 0, "color"),
        123,
        ["segmentation.labels"],
    ),
    (
        "seg_color_missing",
        "seg3_nearest",
        ("segmentation", "labels", 0, "color"),
        DELETE,
        ["segmentation.labels"],
    ),
    (
        "seg_label_name_missing",
        "seg3_nearest",
        ("segmentation", "labels", 0, "name"),
        DELETE,
        ["segmentation.labels"],
    ),
    (
        "seg_label_name_empty",
        "seg3_nearest",
        ("segmentation", "labels", 0, "name"),
        "",
        ["segmentation.labels"],
    ),
    (
        "seg_label_not_object",
        "seg3_nearest",
        ("segmentation", "labels", 0),
        "scratch",
        ["segmentation.labels"],
    ),
    (
        "seg_upsample_area",
        "seg3_nearest",
        ("segmentation", "upsample"),
        "area",
        ["segmentation.upsample"],
    ),
    (
        "seg_upsample_unknown",
        "seg3_nearest",
        ("segmentation", "upsample"),
        "bicubic",
        ["segmentation.upsample"],
    ),
    (
        "seg_threshold_1",
        "seg1_logit",
        ("segmentation", "threshold"),
        1.0,
        ["segmentation.threshold"],
    ),
    (
        "seg_threshold_0",
        "seg1_logit",
        ("segmentation", "threshold"),
        0.0,
        ["segmentation.threshold"],
    ),
    (
        "seg_threshold_big",
        "seg1_logit",
        ("segmentation", "threshold"),
        7,
        ["segmentation.threshold"],
    ),
    (
        "seg_activation_unknown",
        "seg3_nearest",
        ("segmentation", "activation"),
        "relu",
        ["segmentation.activation"],
    ),
    (
        "seg1_activation_softmax",
        "seg1_logit",
        ("segmentation", "activation"),
        "softmax",
        ["segmentation.activation"],
    ),
    (
        "seg_output_unknown",
        "seg3_nearest",
        ("segmentation", "output"),
        "nope",
        ["segmentation.output"],
    ),
    (
        "seg_output_ambiguous",
        "seg3_with_cls",
        ("segmentation", "output"),
        DELETE,
        ["segmentation.output"],
    ),
    ("seg_output_rank2", "seg3_with_cls", ("segmentation", "output"), "cls", RANK_FIELDS),
]


def _mutate(manifest: dict, path: tuple, value) -> dict:
    if path is MULTI:
        for p, v in value:
            manifest = _mutate(manifest, p, v)
        return manifest
    m = copy.deepcopy(manifest)
    node = m
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return m


def _model_bytes(pkg) -> bytes:
    with open(pkg.ref.cfg.model_path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_invalid_manifest_names_field(packages, tmp_path, case):
    name, base, path, value, fields = case
    pkg = packages.get(base)
    manifest = _mutate(pkg.manifest, path, value)
    d = builders.write_package(tmp_path / name, _model_bytes(pkg), manifest)
    with pytest.raises(openlookout.ValidationException) as ei:
        openlookout.load_model(d)
    e = ei.value
    assert isinstance(e, ValueError)
    assert isinstance(e, openlookout.OpenLookoutError)
    msg = str(e)
    assert any(
        f.search(msg)
        if isinstance(f, re.Pattern)
        else re.search(re.escape(f) + r"(?![A-Za-z_])", msg)
        for f in fields
    ), f"{msg!r} names none of {fields}"


@pytest.mark.parametrize(
    "base",
    ["cls_sigmoid_bilinear", "cls_nhwc_scale1", "seg3_nearest", "seg1_logit", "seg3_with_cls"],
)
def test_base_manifests_are_valid(packages, tmp_path, base):
    """The unmutated bases load, so the failures above come from the mutation."""
    pkg = packages.get(base)
    d = builders.write_package(tmp_path / base, _model_bytes(pkg), pkg.manifest)
    assert openlookout.load_model(d).task == pkg.task


def test_minimal_manifest_uses_defaults(packages, images, tmp_path):
    """Only the required fields: NCHW, RGB, bilinear, 1/255, mean 0, std 1, activation none,
    threshold 0.5, output and input names from the model."""
    pkg = packages.get("cls_none_area")  # Sigmoid inside the model: values are probabilities
    manifest = {
        "format_version": 1,
        "task": "classification",
        "model": "model.onnx",
        "input": {"width": 64, "height": 64},
        "classification": {},
    }
    d = builders.write_package(tmp_path / "minimal", _model_bytes(pkg), manifest)
    model = openlookout.load_model(d)
    ref = reference.Reference(d)
    for rgb in images.values():
        reference.assert_matches_reference(
            model.detect_array(rgb), ref.detect_array(rgb), "classification"
        )


def test_segmentation_defaults(packages, images, tmp_path):
    """No activation / upsample / output: nearest upsampling and softmax logits for C = 3."""
    pkg = packages.get("seg3_nearest")
    manifest = {
        "format_version": 1,
        "task": "segmentation",
        "model": "model.onnx",
        "input": {"width": 64, "height": 64},
        "segmentation": {"labels": LABELS},
    }
    d = builders.write_package(tmp_path / "seg_defaults", _model_bytes(pkg), manifest)
    model = openlookout.load_model(d)
    ref = reference.Reference(d)
    for rgb in images.values():
        reference.assert_matches_reference(
            model.detect_array(rgb), ref.detect_array(rgb), "segmentation"
        )


def test_custom_model_file_name(packages, images, tmp_path):
    pkg = packages.get("cls_sigmoid_bilinear")
    manifest = dict(pkg.manifest, model="nets/classifier-v2.onnx")
    d = tmp_path / "custom_name"
    (d / "nets").mkdir(parents=True)
    builders.write_package(d, _model_bytes(pkg), manifest)
    model = openlookout.load_model(str(d))
    rgb = images["a97x71"]
    reference.assert_matches_reference(
        model.detect_array(rgb), pkg.reference("a97x71", rgb), "classification"
    )
