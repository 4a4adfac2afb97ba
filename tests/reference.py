"""Independent reference implementation of openlookout's detect() contract.

Pure NumPy (float64) + Pillow (decode) + onnxruntime's Python API. It shares no code with the
package under test and is written from the contract in issue 2:

1. decode with Pillow, ``.convert("RGB")``; 16-bit grayscale (mode I;16 / I) takes the high byte;
   EXIF orientation is not applied;
2. separable resize to the model input (bilinear half-pixel without antialias / exact box-filter
   area / nearest ``floor((i + 0.5) * src / dst)``);
3. ``x = (pixel * scale - mean[c]) / std[c]`` in the model's colour order, float32, NCHW or NHWC;
4. classification score ``s`` and the verdict ``IsAnomalous = s >= t``, confidence in the predicted
   class;
5. segmentation: upsample the raw output channels to the image's full size, argmax (C >= 2) or
   threshold (C == 1), ``s`` from the classification section if there is one, else the largest
   per-pixel anomalous probability;
6. the result dict (areas float32-rounded; mask as 8-bit RGB).

Besides the result, :class:`RefDetection` carries what a comparison needs: the full-size label map,
the near-tie pixels (where a float32 implementation may legitimately decide the other way), the
score and the threshold. :func:`assert_matches_reference` compares a native result with it.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RESULT_KEYS_CLASSIFICATION = {"Source", "IsAnomalous", "Confidence"}
RESULT_KEYS_SEGMENTATION = RESULT_KEYS_CLASSIFICATION | {"Anomalies", "AnomalyMask"}

# Comparison tolerances (native computes in float32).
CONFIDENCE_TOL = 1e-4
VERDICT_TIE = 1e-5
PIXEL_TIE = 1e-4
MAX_TIE_FRACTION = 0.005  # near-tie pixels allowed before a case counts as badly conditioned


# --------------------------------------------------------------------------------------------
# 1. Decode
# --------------------------------------------------------------------------------------------


def decode(body: bytes) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> HxWx3 uint8 RGB, as the contract defines it (Pillow)."""
    with warnings.catch_warnings(), Image.open(io.BytesIO(bytes(body))) as img:
        warnings.simplefilter("ignore")
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit grayscale: the high byte (Pillow's convert would clip instead).
            arr = np.asarray(img).astype(np.int64)
            gray = (arr >> 8).clip(0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


# --------------------------------------------------------------------------------------------
# 2. Resampling (dense dst x src weight matrices, float64)
# --------------------------------------------------------------------------------------------


def resize_matrix(mode: str, src: int, dst: int) -> np.ndarray:
    """Weights W (dst x src) so that resized = W @ signal along one axis."""
    m = np.zeros((dst, src), np.float64)
    if mode == "nearest":
        for i in range(dst):
            # floor((i + 0.5) * src / dst) in exact integer arithmetic.
            j = min(((2 * i + 1) * src) // (2 * dst), src - 1)
            m[i, j] = 1.0
    elif mode == "bilinear":
        for i in range(dst):
            sx = (i + 0.5) * src / dst - 0.5
            sx = min(max(sx, 0.0), src - 1.0)
            x0 = math.floor(sx)
            x1 = min(x0 + 1, src - 1)
            w1 = sx - x0
            m[i, x0] += 1.0 - w1
            m[i, x1] += w1
    elif mode == "area":
        scale = src / dst
        for i in range(dst):
            a = i * src / dst
            b = (i + 1) * src / dst
            for j in range(math.floor(a), min(src, math.ceil(b))):
                overlap = min(b, j + 1.0) - max(a, float(j))
                if overlap > 0:
                    m[i, j] = overlap / scale
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    return m


def resize(image: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """HxWxC (or CxHxW with channels_first) array -> height x width x C float64."""
    h, w = image.shape[:2]
    my = resize_matrix(mode, h, height)
    mx = resize_matrix(mode, w, width)
    img = np.asarray(image, np.float64)
    return np.einsum("ih,hwc,jw->ijc", my, img, mx, optimize=True)


def resize_planes(planes: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """C x h x w float -> C x height x width float64."""
    _, h, w = planes.shape
    my = resize_matrix(mode, h, height)
    mx = resize_matrix(mode, w, width)
    return np.einsum("ih,chw,jw->cij", my, np.asarray(planes, np.float64), mx, optimize=True)


# --------------------------------------------------------------------------------------------
# Manifest (with the contract's defaults)
# --------------------------------------------------------------------------------------------


@dataclass
class RefConfig:
    task: str
    model_path: str
    input_name: str | None
    width: int
    height: int
    layout: str
    color: str
    resize: str
    scale: float
    mean: np.ndarray
    std: np.ndarray
    image_size: tuple[int, int] | None
    cls: dict | None
    seg: dict | None


def parse_manifest(package_dir: str) -> RefConfig:
    with open(os.path.join(package_dir, "manifest.json"), encoding="utf-8") as f:
        return config_from_manifest(json.load(f), package_dir)


def config_from_manifest(m: dict, package_dir: str = ".") -> RefConfig:
    """The manifest dict with the contract's defaults filled in."""
    inp = m.get("input", {})
    image_size = None
    if "image_size" in m:
        image_size = (int(m["image_size"]["width"]), int(m["image_size"]["height"]))
    cls = None
    if "classification" in m:
        c = m["classification"]
        cls = {
            "output": c.get("output"),
            "activation": c.get("activation", "none"),
            "threshold": float(c.get("threshold", 0.5)),
        }
    seg = None
    if "segmentation" in m:
        s = m["segmentation"]
        seg = {
            "output": s.get("output"),
            "activation": s.get("activation"),  # default depends on C, resolved later
            "threshold": float(s.get("threshold", 0.5)),
            "upsample": s.get("upsample", "nearest"),
            "labels": [(lab["name"], lab["color"].upper()) for lab in s["labels"]],
        }
    return RefConfig(
        task=m["task"],
        model_path=os.path.join(package_dir, m.get("model", "model.onnx")),
        input_name=inp.get("name"),
        width=int(inp["width"]),
        height=int(inp["height"]),
        layout=inp.get("layout", "NCHW"),
        color=inp.get("color", "RGB"),
        resize=inp.get("resize", "bilinear"),
        scale=float(inp.get("scale", 1.0 / 255.0)),
        mean=np.asarray(inp.get("mean", [0.0, 0.0, 0.0]), np.float64),
        std=np.asarray(inp.get("std", [1.0, 1.0, 1.0]), np.float64),
        image_size=image_size,
        cls=cls,
        seg=seg,
    )


# --------------------------------------------------------------------------------------------
# 3-6. The pipeline
# --------------------------------------------------------------------------------------------


def preprocess(rgb: np.ndarray, c: RefConfig) -> np.ndarray:
    """Decoded RGB -> the model's float32 input tensor [1, 3, H, W] or [1, H, W, 3]."""
    img = resize(rgb, c.width, c.height, c.resize)  # H x W x 3, RGB, float64
    if c.color == "BGR":
        img = img[..., ::-1]
    x = (img * c.scale - c.mean) / c.std
    x = x.astype(np.float32)
    if c.layout == "NCHW":
        x = np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(x[None])


def sigmoid(v):
    v = np.asarray(v, np.float64)
    return np.where(
        v >= 0, 1.0 / (1.0 + np.exp(-np.abs(v))), np.exp(-np.abs(v)) / (1.0 + np.exp(-np.abs(v)))
    )


def verdict(s: float, t: float) -> tuple[bool, float]:
    if s >= t:
        return True, 0.5 + 0.5 * (s - t) / (1.0 - t)
    return False, 0.5 + 0.5 * (t - s) / t


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@dataclass
class RefDetection:
    result: dict  # the contract's result dict (AnomalyMask is a PNG written by Pillow)
    score: float
    threshold: float
    rgb: np.ndarray  # decoded input
    tensor: np.ndarray  # model input (float32)
    labels: np.ndarray | None = None  # HxW int, 0 = background
    near_tie: np.ndarray | None = None  # HxW bool
    counts: list = field(default_factory=list)  # per label index (0 = background)
    palette: list = field(default_factory=list)  # RGB per label index (0 = white)
    label_names: list = field(default_factory=list)  # per label index (0 = background)
    raw_outputs: dict = field(default_factory=dict)


class Reference:
    """Reference model: same package directory as openlookout.load_model takes."""

    def __init__(self, package_dir: str):
        self.cfg = parse_manifest(package_dir)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            self.cfg.model_path, so, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.cfg.input_name or self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.cls_output = None
        self.seg_output = None
        if self.cfg.cls is not None:
            self.cls_output = self.cfg.cls["output"] or outputs[0]
        if self.cfg.seg is not None:
            self.seg_output = self.cfg.seg["output"] or outputs[0]

    # -- stages -----------------------------------------------------------------------------

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return preprocess(rgb, self.cfg)

    def run(self, tensor: np.ndarray) -> dict:
        names = [n for n in (self.cls_output, self.seg_output) if n is not None]
        outs = self.session.run(names, {self.input_name: tensor})
        return {n: np.asarray(o, np.float64) for n, o in zip(names, outs, strict=False)}

    def classification_score(self, values: np.ndarray) -> float:
        v = values.reshape(-1)
        act = self.cfg.cls["activation"]
        if v.size == 1:
            return float(sigmoid(v[0])) if act == "sigmoid" else float(v[0])
        assert v.size == 2, v.shape
        if act == "softmax":
            e = np.exp(v - v.max())
            return float(e[1] / e.sum())
        return float(v[1])

    # -- whole pipeline ---------------------------------------------------------------------

    def detect(self, body: bytes, content_type: str | None = None) -> RefDetection:
        return self.detect_array(decode(body))

    def detect_array(self, rgb: np.ndarray) -> RefDetection:
        c = self.cfg
        rgb = np.asarray(rgb, np.uint8)
        height, width = rgb.shape[:2]
        if c.image_size is not None and (width, height) != c.image_size:
            raise ValueError(f"image {width}x{height} != image_size {c.image_size}")
        tensor = self.preprocess(rgb)
        outs = self.run(tensor)
        result = {"Source": {"Type": "direct"}}
        det = RefDetection(
            result=result, score=0.0, threshold=0.5, rgb=rgb, tensor=tensor, raw_outputs=outs
        )
        if c.cls is not None:
            det.score = self.classification_score(outs[self.cls_output])
            det.threshold = c.cls["threshold"]
        if c.task == "segmentation":
            self._segment(outs[self.seg_output], width, height, det)
        anomalous, confidence = verdict(det.score, det.threshold)
        if c.cls is None and det.labels is not None:
            # Without a classification section the verdict is the mask's: anomalous exactly when
            # a pixel carries a label (s sits on the threshold when the two could disagree).
            has_label = bool((det.labels > 0).any())
            if has_label != anomalous:
                anomalous, confidence = has_label, 0.5
        result["IsAnomalous"] = bool(anomalous)
        result["Confidence"] = float(confidence)
        if c.task == "segmentation":
            result["Anomalies"] = det.result.pop("_anomalies")
            result["AnomalyMask"] = det.result.pop("_mask")
        return det

    def _segment(self, raw: np.ndarray, width: int, height: int, det: RefDetection) -> None:
        seg = self.cfg.seg
        assert raw.ndim == 4, raw.shape
        assert raw.shape[0] == 1, raw.shape
        planes = raw[0]  # C x h x w
        n_ch = planes.shape[0]
        labels_cfg = seg["labels"]
        full = resize_planes(planes, width, height, seg["upsample"])  # C x H x W
        activation = seg["activation"] or ("none" if n_ch == 1 else "softmax")
        if n_ch == 1:
            assert len(labels_cfg) == 1
            score = sigmoid(full[0]) if activation == "sigmoid" else full[0]
            t = seg["threshold"]
            labels = (score >= t).astype(np.int64)
            near = np.abs(score - t) < PIXEL_TIE
            pixel_s = float(score.max())
            seg_threshold = t
        else:
            assert n_ch == len(labels_cfg) + 1, (n_ch, len(labels_cfg))
            labels = np.argmax(full, axis=0)  # ties -> lower index
            top2 = np.sort(full, axis=0)[-2:]
            near = (top2[1] - top2[0]) < PIXEL_TIE
            if activation == "softmax":
                z = full
            else:
                with np.errstate(divide="ignore"):
                    z = np.log(full)
            gap = z[1:].max(axis=0) - z[0]
            pixel_s = float(sigmoid(gap.max()))
            seg_threshold = 0.5
        if self.cfg.cls is None:
            det.score = pixel_s
            det.threshold = seg_threshold
        total = width * height
        counts = [int(np.count_nonzero(labels == k)) for k in range(len(labels_cfg) + 1)]
        palette = [(255, 255, 255)] + [hex_to_rgb(col) for _, col in labels_cfg]
        anomalies = [
            {
                "Name": "background",
                "PixelAnomaly": {
                    "TotalPercentageArea": float(np.float32(counts[0] / total)),
                    "Color": "#FFFFFF",
                },
            }
        ]
        for k, (name, col) in enumerate(labels_cfg, start=1):
            if counts[k] > 0:
                anomalies.append(
                    {
                        "Name": name,
                        "PixelAnomaly": {
                            "TotalPercentageArea": float(np.float32(counts[k] / total)),
                            "Color": col,
                        },
                    }
                )
        mask = np.asarray(palette, np.uint8)[labels]
        buf = io.BytesIO()
        Image.fromarray(mask, "RGB").save(buf, "PNG")
        det.labels = labels
        det.near_tie = near
        det.counts = counts
        det.palette = palette
        det.label_names = ["background"] + [n for n, _ in labels_cfg]
        det.result["_anomalies"] = anomalies
        det.result["_mask"] = buf.getvalue()


# --------------------------------------------------------------------------------------------
# Checking a native result
# --------------------------------------------------------------------------------------------


def check_mask_png(mask: bytes, width: int, height: int) -> np.ndarray:
    """Asserts the AnomalyMask is an 8-bit truecolour RGB PNG of the image's size; returns HxWx3."""
    assert isinstance(mask, bytes), type(mask)
    assert len(mask) > 33, len(mask)
    assert mask[:8] == PNG_SIGNATURE, mask[:16]
    assert mask[12:16] == b"IHDR"
    w, h, bit_depth, color_type = struct.unpack(">IIBB", mask[16:26])
    assert (w, h) == (width, height), ((w, h), (width, height))
    assert bit_depth == 8, bit_depth
    assert color_type == 2, f"mask PNG colour type {color_type}, expected 2 (RGB)"
    with Image.open(io.BytesIO(mask)) as img:
        assert img.format == "PNG"
        assert img.mode == "RGB", img.mode
        assert img.size == (width, height)
        return np.asarray(img.convert("RGB"))


def mask_to_labels(mask_rgb: np.ndarray, palette: list) -> np.ndarray:
    """Maps mask colours back to label indices; every pixel must be a palette colour."""
    key = (
        (mask_rgb[..., 0].astype(np.int64) << 16)
        | (mask_rgb[..., 1].astype(np.int64) << 8)
        | mask_rgb[..., 2]
    )
    labels = np.full(key.shape, -1, np.int64)
    for k, (r, g, b) in enumerate(palette):
        labels[key == ((r << 16) | (g << 8) | b)] = k
    bad = labels < 0
    assert not bad.any(), (
        f"{int(bad.sum())} mask pixels have a colour that is no label's, e.g. {mask_rgb[bad][0]}"
    )
    return labels


def check_result_shape(native: dict, task: str) -> None:
    assert type(native) is dict, type(native)
    keys = RESULT_KEYS_SEGMENTATION if task == "segmentation" else RESULT_KEYS_CLASSIFICATION
    assert set(native) == keys, sorted(native)
    assert native["Source"] == {"Type": "direct"}
    assert type(native["IsAnomalous"]) is bool, type(native["IsAnomalous"])
    assert type(native["Confidence"]) is float, type(native["Confidence"])
    assert 0.5 - 1e-6 <= native["Confidence"] <= 1.0 + 1e-6, native["Confidence"]
    if task == "segmentation":
        anomalies = native["Anomalies"]
        assert type(anomalies) is list
        assert len(anomalies) >= 1
        for a in anomalies:
            assert type(a) is dict
            assert set(a) == {"Name", "PixelAnomaly"}, a
            assert type(a["Name"]) is str
            pa = a["PixelAnomaly"]
            assert type(pa) is dict
            assert set(pa) == {"TotalPercentageArea", "Color"}, pa
            assert type(pa["TotalPercentageArea"]) is float
            assert 0.0 <= pa["TotalPercentageArea"] <= 1.0
            assert type(pa["Color"]) is str
            assert re.fullmatch(r"#[0-9A-F]{6}", pa["Color"]), pa["Color"]
        assert anomalies[0]["Name"] == "background"
        assert anomalies[0]["PixelAnomaly"]["Color"] == "#FFFFFF"
        total = sum(a["PixelAnomaly"]["TotalPercentageArea"] for a in anomalies)
        assert abs(total - 1.0) <= 1e-6, total
        assert type(native["AnomalyMask"]) is bytes


def assert_matches_reference(native: dict, ref: RefDetection, task: str) -> dict:
    """Compares a native result with the reference within float32 tolerances. Returns some
    diagnostics (near-tie and mismatch pixel counts)."""
    check_result_shape(native, task)
    info = {"near_tie": 0, "mismatch": 0}
    r = ref.result
    if abs(ref.score - ref.threshold) >= VERDICT_TIE:
        assert native["IsAnomalous"] == r["IsAnomalous"], (
            f"IsAnomalous {native['IsAnomalous']} != reference {r['IsAnomalous']} "
            f"(reference s={ref.score!r}, t={ref.threshold!r})"
        )
    assert abs(native["Confidence"] - r["Confidence"]) <= CONFIDENCE_TOL, (
        f"Confidence {native['Confidence']!r} != reference {r['Confidence']!r} "
        f"(reference s={ref.score!r}, t={ref.threshold!r})"
    )
    if task != "segmentation":
        return info
    height, width = ref.rgb.shape[:2]
    total = width * height
    mask = check_mask_png(native["AnomalyMask"], width, height)
    got = mask_to_labels(mask, ref.palette)
    ties = int(ref.near_tie.sum())
    assert ties <= max(8, MAX_TIE_FRACTION * total), (
        f"badly conditioned case: {ties} near-tie pixels"
    )
    mismatch = got != ref.labels
    assert not (mismatch & ~ref.near_tie).any(), (
        f"{int((mismatch & ~ref.near_tie).sum())} mask pixels differ from the reference away from "
        f"near-ties (of {total}); first at {np.argwhere(mismatch & ~ref.near_tie)[0].tolist()}"
    )
    info.update(near_tie=ties, mismatch=int(mismatch.sum()))
    # Anomalies must describe the native mask exactly (float32 areas) ...
    counts = [int(np.count_nonzero(got == k)) for k in range(len(ref.palette))]
    expected = [
        {
            "Name": "background",
            "PixelAnomaly": {
                "TotalPercentageArea": float(np.float32(counts[0] / total)),
                "Color": "#FFFFFF",
            },
        }
    ]
    for k in range(1, len(ref.palette)):
        if counts[k] > 0:
            expected.append(
                {
                    "Name": ref.label_names[k],
                    "PixelAnomaly": {
                        "TotalPercentageArea": float(np.float32(counts[k] / total)),
                        "Color": "#{:02X}{:02X}{:02X}".format(*ref.palette[k]),
                    },
                }
            )
    assert native["Anomalies"] == expected, (native["Anomalies"], expected)
    # ... and agree with the reference's up to the near-tie pixels.
    ref_an = r["Anomalies"]
    if ties == 0:
        assert native["Anomalies"] == ref_an
    else:
        ref_areas = {a["Name"]: a["PixelAnomaly"]["TotalPercentageArea"] for a in ref_an}
        for a in native["Anomalies"]:
            assert (
                abs(a["PixelAnomaly"]["TotalPercentageArea"] - ref_areas.get(a["Name"], 0.0))
                <= ties / total + 1e-7
            )
        for name, area in ref_areas.items():
            if area > ties / total + 1e-7:
                assert any(a["Name"] == name for a in native["Anomalies"]), name
    return info
