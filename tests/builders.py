"""Tiny deterministic ONNX test models (onnx.helper, opset 17) and model packages.

Weights come from ``np.random.default_rng(seed)``. Random nets give scores that barely move from
image to image, so the last layer of each model is *calibrated*: the model is run once on a few
calibration images and its final affine layer rescaled/shifted so that scores spread across the
images (classification) or so that a minority of pixels, of more than one label, is anomalous
(segmentation). Calibration takes model inputs prepared by the caller
(``calib_inputs``, e.g. the reference's preprocessing of a few images under the package's
manifest); :func:`calibration_tensors` is a crude stand-alone alternative.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr.astype(np.float32)), name)


def _make_model(nodes, inputs, outputs, inits, name) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="openlookout-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def run_model(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def calibration_tensors(images, width: int, height: int, layout: str = "NCHW") -> list[np.ndarray]:
    """Crude preprocessing for calibration only: nearest resize, /255."""
    out = []
    for rgb in images:
        h, w = rgb.shape[:2]
        ys = (np.arange(height) * h) // height
        xs = (np.arange(width) * w) // width
        x = rgb[ys][:, xs].astype(np.float32) / 255.0
        x = np.transpose(x, (2, 0, 1))[None] if layout == "NCHW" else x[None]
        out.append(np.ascontiguousarray(x))
    return out


def _input_value_info(name, layout, height, width, batch="1", dynamic_hw=False):
    b = 1 if batch == "1" else batch
    hh = "H" if dynamic_hw else height
    ww = "W" if dynamic_hw else width
    shape = [b, 3, hh, ww] if layout == "NCHW" else [b, hh, ww, 3]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def classification_model(
    *,
    height: int = 64,
    width: int = 64,
    values: int = 1,
    final: str = "none",
    layout: str = "NCHW",
    batch: str = "1",
    dynamic_hw: bool = False,
    seed: int = 0,
    calib_inputs=(),
    spread: float = 2.0,
    input_name: str = "image",
    output_name: str = "score",
) -> onnx.ModelProto:
    """Conv3x3(3->8, stride 2) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> `values` outputs,
    then `final` in {"none", "sigmoid", "softmax"} inside the graph. With calibration images the
    anomalous logit is standardised to mean 0, std `spread` over them (for 2 values the Gemm rows
    are -/+ half the logit, so softmax()[1] = sigmoid(logit))."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.6, (8, 3, 3, 3))
    b1 = rng.normal(0, 0.2, 8)
    wg = rng.normal(0, 1.0, (1, 8))
    bg = np.zeros(1)

    def build(wg, bg):
        if values == 2:
            wg2 = np.concatenate([-wg / 2, wg / 2], 0)
            bg2 = np.concatenate([-bg / 2, bg / 2], 0)
        else:
            wg2, bg2 = wg, bg
        nodes = []
        x = input_name
        if layout == "NHWC":
            nodes.append(helper.make_node("Transpose", [x], ["x_nchw"], perm=[0, 3, 1, 2]))
            x = "x_nchw"
        nodes += [
            helper.make_node(
                "Conv",
                [x, "w1", "b1"],
                ["c1"],
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
            ),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("GlobalAveragePool", ["r1"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        ]
        last = output_name if final == "none" else "logits"
        nodes.append(helper.make_node("Gemm", ["flat", "wg", "bg"], [last], transB=1))
        if final == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", ["logits"], [output_name]))
        elif final == "softmax":
            nodes.append(helper.make_node("Softmax", ["logits"], [output_name], axis=1))
        b = 1 if batch == "1" else batch
        inputs = [_input_value_info(input_name, layout, height, width, batch, dynamic_hw)]
        outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [b, values])]
        inits = [_init("w1", w1), _init("b1", b1), _init("wg", wg2), _init("bg", bg2)]
        return _make_model(nodes, inputs, outputs, inits, "classifier")

    if len(calib_inputs):
        raw = build(wg, bg)
        # Logit with final "none" and 1 value: rebuild a probe without the final activation.
        probe_final, probe_values = final, values
        logits = []
        for x in calib_inputs:
            out = run_model(raw, {input_name: x})[0].reshape(-1)
            if probe_values == 2:
                if probe_final == "softmax":
                    out = np.log(out)
                logits.append(out[1] - out[0])
            else:
                if probe_final == "sigmoid":
                    out = np.log(out / (1 - out))
                logits.append(out[0])
        logits = np.asarray(logits, np.float64)
        a = spread / max(float(logits.std()), 1e-6)
        m = float(logits.mean())
        wg = wg * a
        bg = (bg - m) * a
    return build(wg, bg)


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------


def segmentation_model(
    *,
    height: int = 64,
    width: int = 64,
    channels: int = 3,
    stride: int = 4,
    final: str = "none",
    layout: str = "NCHW",
    seed: int = 1,
    calib_inputs=(),
    anomalous_fraction: float = 0.12,
    spread: float = 3.0,
    with_classifier: bool = False,
    input_name: str = "image",
    output_name: str = "seg",
    cls_output_name: str = "cls",
) -> onnx.ModelProto:
    """Conv3x3(3->8, stride `stride`, pad 1) -> Relu -> Conv1x1(8->C) [-> Softmax(axis 1) | Sigmoid]
    -> [1, C, h, w] with h = floor((H - 1) / stride) + 1. With `with_classifier`, a second output
    `cls_output_name` = Sigmoid(Gemm(GAP(features))) of shape [1, 1].

    Calibration (C >= 2): the two anomaly channels are balanced against each other and the
    background bias set so that about `anomalous_fraction` of the output pixels are anomalous over
    the calibration images. C == 1: the logit is scaled to std `spread` and shifted so that
    about `anomalous_fraction` of pixels have a positive logit."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.8, (8, 3, 3, 3))
    b1 = np.abs(rng.normal(0, 0.1, 8)) + 0.05
    w2 = rng.normal(0, 1.0, (channels, 8, 1, 1))
    b2 = np.zeros(channels)
    wg = rng.normal(0, 1.0, (1, 8))
    bg = np.zeros(1)

    def build(w2, b2, wg, bg):
        nodes = []
        x = input_name
        if layout == "NHWC":
            nodes.append(helper.make_node("Transpose", [x], ["x_nchw"], perm=[0, 3, 1, 2]))
            x = "x_nchw"
        nodes += [
            helper.make_node(
                "Conv",
                [x, "w1", "b1"],
                ["c1"],
                kernel_shape=[3, 3],
                strides=[stride, stride],
                pads=[1, 1, 1, 1],
            ),
            helper.make_node("Relu", ["c1"], ["r1"]),
        ]
        last = output_name if final == "none" else "seg_logits"
        nodes.append(helper.make_node("Conv", ["r1", "w2", "b2"], [last], kernel_shape=[1, 1]))
        if final == "softmax":
            nodes.append(helper.make_node("Softmax", ["seg_logits"], [output_name], axis=1))
        elif final == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", ["seg_logits"], [output_name]))
        oh = (height - 1) // stride + 1
        ow = (width - 1) // stride + 1
        outputs = [
            helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, channels, oh, ow])
        ]
        inits = [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2)]
        if with_classifier:
            nodes += [
                helper.make_node("GlobalAveragePool", ["r1"], ["gap"]),
                helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
                helper.make_node("Gemm", ["flat", "wg", "bg"], ["cls_logit"], transB=1),
                helper.make_node("Sigmoid", ["cls_logit"], [cls_output_name]),
            ]
            outputs.append(
                helper.make_tensor_value_info(cls_output_name, TensorProto.FLOAT, [1, 1])
            )
            inits += [_init("wg", wg), _init("bg", bg)]
        inputs = [_input_value_info(input_name, layout, height, width)]
        return _make_model(nodes, inputs, outputs, inits, "segmenter")

    if len(calib_inputs):
        probe = build(w2, b2, wg, bg)
        zs, cls_logits = [], []
        for x in calib_inputs:
            outs = run_model(probe, {input_name: x})
            z = outs[0][0].astype(np.float64)
            if final == "softmax":
                z = np.log(np.maximum(z, 1e-30))
            elif final == "sigmoid":
                z = np.log(z / (1 - z))
            zs.append(z.reshape(channels, -1))
            if with_classifier:
                cls_logits.append(
                    float(np.log(outs[1].reshape(-1)[0] / (1 - outs[1].reshape(-1)[0])))
                )
        z = np.concatenate(zs, axis=1)  # C x pixels
        if channels == 1:
            a = spread / max(float(z[0].std()), 1e-6)
            zc = z[0] * a
            q = float(np.quantile(zc, 1.0 - anomalous_fraction))
            if np.mean(zc > q) < anomalous_fraction / 2:  # mass piled up at the top: flip
                a, zc = -a, -zc
                q = float(np.quantile(zc, 1.0 - anomalous_fraction))
            # Stretch so that the top of the anomalous tail reaches a logit of about +`spread`.
            g = spread / max(float(np.quantile(zc - q, 0.998)), 1e-6)
            w2 = w2 * a * g
            b2 = np.array([-q * g])
        else:
            a = spread / max(float(z.std()), 1e-6)
            w2 = w2 * a
            z = z * a
            b2 = np.zeros(channels)
            # Balance anomaly channels: each channel k >= 1 wins against the others about equally.
            for k in range(2, channels):
                b2[k] = float(np.median(z[1] - z[k]))
            zb = z + b2[:, None]
            b2[0] = float(np.quantile(zb[1:].max(axis=0) - zb[0], 1.0 - anomalous_fraction))
        if with_classifier:
            cl = np.asarray(cls_logits)
            ac = 2.0 / max(float(cl.std()), 1e-6)
            wg = wg * ac
            bg = (bg - float(cl.mean())) * ac
    return build(w2, b2, wg, bg)


def tie_model(kind: str, height: int, width: int, *, input_name: str = "image") -> onnx.ModelProto:
    """Segmentation models with exact ties (identity-sized output; use nearest upsampling):

    - "anomaly_tie":    channels [a, b, b] with a = R, b = G (scaled input): where b > a labels 1
      and 2 tie exactly; the lower index (1) must win, so label 2 never appears.
    - "background_tie": channels [max(a, b), b, b]: wherever b >= a all three tie; background
      must win everywhere.
    - "threshold_tie":  one channel min(max(R, 0), 0.5): exactly 0.5 (= the threshold) where
      R >= 0.5, and the rule score >= threshold makes those pixels anomalous.
    """

    def sl(c, name):
        return helper.make_node("Slice", [input_name, f"s{c}", f"e{c}", "axes"], [name])

    inits = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
    for c in range(3):
        inits += [
            numpy_helper.from_array(np.array([c], np.int64), f"s{c}"),
            numpy_helper.from_array(np.array([c + 1], np.int64), f"e{c}"),
        ]
    nodes = [sl(0, "a"), sl(1, "b")]
    channels = 3
    if kind == "anomaly_tie":
        nodes.append(helper.make_node("Concat", ["a", "b", "b"], ["out"], axis=1))
    elif kind == "background_tie":
        nodes.append(helper.make_node("Max", ["a", "b"], ["m"]))
        nodes.append(helper.make_node("Concat", ["m", "b", "b"], ["out"], axis=1))
    elif kind == "threshold_tie":
        inits += [
            numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
            numpy_helper.from_array(np.array(0.5, np.float32), "hi"),
        ]
        nodes.append(helper.make_node("Clip", ["a", "lo", "hi"], ["out"]))
        channels = 1
    else:
        raise ValueError(kind)
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, height, width])]
    outputs = [
        helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, channels, height, width])
    ]
    return _make_model(nodes, inputs, outputs, inits, kind)


PROBE_CLASSES = 255  # background + 254 labels (openlookout's maximum label count)


def probe_model(
    channel: int, height: int, width: int, *, invert: bool = False, input_name: str = "image"
) -> onnx.ModelProto:
    """A 'decoder probe' segmentation model. With manifest scale 1, mean 0, std 1 and an identity
    resize, x is the (integer) value of colour channel `channel`, or 255 - x with `invert`.
    Output channel k (k = 0..254) holds -(x - k)^2, so the mask label is min(x, 254): label 0 is
    background, labels 1..254 get distinct colours (see probe_labels). A plain and an inverted
    probe together read back x exactly (see probe_value)."""
    k = np.arange(PROBE_CLASSES, dtype=np.float32).reshape(1, PROBE_CLASSES, 1, 1)
    nodes = [helper.make_node("Slice", [input_name, "starts", "ends", "axes"], ["ch0"])]
    if invert:
        nodes.append(helper.make_node("Sub", ["c255", "ch0"], ["ch"]))
    else:
        nodes.append(helper.make_node("Identity", ["ch0"], ["ch"]))
    nodes += [
        helper.make_node("Sub", ["ch", "k"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("Neg", ["d2"], ["out"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([channel], np.int64), "starts"),
        numpy_helper.from_array(np.array([channel + 1], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(k, "k"),
        numpy_helper.from_array(np.array(255.0, np.float32), "c255"),
    ]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, height, width])]
    outputs = [
        helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, PROBE_CLASSES, height, width])
    ]
    return _make_model(nodes, inputs, outputs, inits, "probe")


def probe_color(k: int) -> str:
    """Distinct, non-white colour for probe label k (1..254); the red byte is k itself."""
    return f"#{k:02x}{(k * 37) & 0xFF:02x}{255 - k:02x}"


def probe_labels() -> list[dict]:
    return [{"name": f"v{k}", "color": probe_color(k)} for k in range(1, PROBE_CLASSES)]


def probe_manifest(height: int, width: int, resize: str = "nearest") -> dict:
    return {
        "format_version": 1,
        "task": "segmentation",
        "model": "model.onnx",
        "input": {
            "width": width,
            "height": height,
            "resize": resize,
            "scale": 1.0,
            "mean": [0, 0, 0],
            "std": [1, 1, 1],
        },
        "segmentation": {
            "output": "out",
            "upsample": "nearest",
            "activation": "softmax",
            "labels": probe_labels(),
        },
    }


def probe_decode_labels(mask_rgb: np.ndarray) -> np.ndarray:
    """Probe mask (HxWx3 uint8) -> labels: label k has red byte k, white is 0."""
    white = (mask_rgb == 255).all(axis=2)
    vals = mask_rgb[..., 0].astype(np.int64)
    vals[white] = 0
    return vals


def probe_value(plain_labels: np.ndarray, inverted_labels: np.ndarray) -> np.ndarray:
    """Channel values from a plain probe's labels (min(x, 254)) and an inverted probe's
    (min(255 - x, 254))."""
    return np.where(plain_labels < PROBE_CLASSES - 1, plain_labels, 255 - inverted_labels)


# --------------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------------


def write_package(
    directory, model: onnx.ModelProto | bytes | None, manifest: dict | str | bytes
) -> str:
    """Writes `manifest` (dict -> JSON, or raw str/bytes) and the model (to manifest['model'],
    default model.onnx) into `directory`, which is created. Returns the directory as str."""
    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    if isinstance(manifest, dict):
        text = json.dumps(manifest, indent=1).encode()
        model_file = (
            manifest.get("model", "model.onnx")
            if isinstance(manifest.get("model", "model.onnx"), str)
            else "model.onnx"
        )
    else:
        text = manifest.encode() if isinstance(manifest, str) else manifest
        model_file = "model.onnx"
    with open(os.path.join(directory, "manifest.json"), "wb") as f:
        f.write(text)
    if model is not None:
        data = model if isinstance(model, bytes) else model.SerializeToString()
        with open(os.path.join(directory, model_file), "wb") as f:
            f.write(data)
    return directory


def copy_package(src: str, dst) -> str:
    shutil.copytree(src, str(dst))
    return str(dst)


def read_manifest(directory) -> dict:
    with open(os.path.join(str(directory), "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def set_manifest(directory, manifest: dict) -> None:
    with open(os.path.join(str(directory), "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
