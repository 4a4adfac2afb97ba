"""What users would write without openlookout, for the same contract (docs/model-package.md).

* ``BaselinePipeline``: Pillow decode, NumPy bilinear resize + normalisation, the onnxruntime
  Python session, NumPy upsampling/argmax/areas and a Pillow PNG mask (the tests' reference
  written for speed rather than as an oracle).
* ``OpenCVPipeline``: the fastest combination of existing Python libraries: ``cv2.imdecode``,
  ``cv2.dnn.blobFromImage`` (resize + scale + channel swap + NCHW in one call), the same session,
  ``cv2.resize`` of the score maps, NumPy argmax and ``cv2.imencode`` of the mask.

Both build the same ``DetectAnomalyResult`` dict as openlookout. ``run_only`` is the floor:
``session.run`` on a prepared tensor.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

cv2.setNumThreads(1)  # one core per call, like the other implementations


def _session(package: Path) -> tuple[ort.InferenceSession, dict[str, Any]]:
    manifest = json.loads((package / "manifest.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(package / manifest["model"]), options, providers=["CPUExecutionProvider"]
    )
    return session, manifest


def _verdict(s: float, t: float) -> tuple[bool, float]:
    if s >= t:
        return True, 0.5 + 0.5 * (s - t) / (1 - t)
    return False, 0.5 + 0.5 * (t - s) / t


def _hex(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


class _Common:
    def __init__(self, package: Path) -> None:
        self.session, self.manifest = _session(package)
        self.input_name = self.session.get_inputs()[0].name
        spec = self.manifest["input"]
        self.width, self.height = spec["width"], spec["height"]
        self.scale = spec.get("scale", 1 / 255)
        self.mean = np.array(spec.get("mean", [0, 0, 0]), np.float32)
        self.std = np.array(spec.get("std", [1, 1, 1]), np.float32)
        self.task = self.manifest["task"]
        seg = self.manifest.get("segmentation")
        self.labels = [(lab["name"], lab["color"].upper()) for lab in seg["labels"]] if seg else []
        self.palette = np.array([(255, 255, 255)] + [_hex(c) for _, c in self.labels], np.uint8)

    def run_only(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: tensor})

    def _result(
        self, score: float, labels: np.ndarray | None, mask_png: bytes | None
    ) -> dict[str, Any]:
        threshold = self.manifest.get("classification", {}).get("threshold", 0.5)
        anomalous, confidence = _verdict(score, threshold)
        result: dict[str, Any] = {
            "Source": {"Type": "direct"},
            "IsAnomalous": anomalous,
            "Confidence": float(np.float32(confidence)),
        }
        if labels is None:
            return result
        counts = np.bincount(labels.ravel(), minlength=len(self.palette))
        total = labels.size
        anomalies = [
            {
                "Name": "background",
                "PixelAnomaly": {
                    "TotalPercentageArea": float(np.float32(counts[0] / total)),
                    "Color": "#FFFFFF",
                },
            }
        ]
        for (name, color), count in zip(self.labels, counts[1:]):
            if count:
                anomalies.append(
                    {
                        "Name": name,
                        "PixelAnomaly": {
                            "TotalPercentageArea": float(np.float32(count / total)),
                            "Color": color,
                        },
                    }
                )
        result["Anomalies"] = anomalies
        result["AnomalyMask"] = mask_png
        return result

    def _segmentation_score(self, full: np.ndarray) -> float:
        # Largest background-vs-best-anomaly logit margin over the full-size map (the contract).
        margin = float((full[1:].max(axis=0) - full[0]).max())
        return float(1 / (1 + np.exp(-margin)))


def _bilinear_indices(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    x0 = np.floor(x).astype(np.intp)
    x1 = np.minimum(x0 + 1, src - 1)
    return x0, x1, (x - x0).astype(np.float32)


def _bilinear(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Half-pixel bilinear resize of (..., H, W) float planes with NumPy gathers."""
    y0, y1, wy = _bilinear_indices(planes.shape[-2], height)
    x0, x1, wx = _bilinear_indices(planes.shape[-1], width)
    top = planes[..., y0, :]
    bottom = planes[..., y1, :]
    rows = top + (bottom - top) * wy[:, None]
    left = rows[..., x0]
    right = rows[..., x1]
    return left + (right - left) * wx


class BaselinePipeline(_Common):
    def preprocess(self, body: bytes) -> tuple[np.ndarray, int, int]:
        rgb = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), np.float32)
        h, w = rgb.shape[:2]
        planes = np.transpose(rgb, (2, 0, 1))
        resized = _bilinear(planes, self.width, self.height)
        a = (self.scale / self.std)[:, None, None]
        b = (self.mean / self.std)[:, None, None]
        tensor = (resized * a - b).astype(np.float32)[None]
        return np.ascontiguousarray(tensor), w, h

    def detect(self, body: bytes) -> dict[str, Any]:
        tensor, width, height = self.preprocess(body)
        outputs = self.run_only(tensor)
        if self.task == "classification":
            return self._result(float(1 / (1 + np.exp(-outputs[0].ravel()[0]))), None, None)
        full = _bilinear(outputs[0][0], width, height)
        labels = np.argmax(full, axis=0).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(self.palette[labels]).save(buffer, "PNG")
        return self._result(self._segmentation_score(full), labels, buffer.getvalue())


class OpenCVPipeline(_Common):
    def preprocess(self, body: bytes) -> tuple[np.ndarray, int, int]:
        bgr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        # blobFromImage: resize (INTER_LINEAR), swap to RGB, scale, NCHW; then per-channel std.
        blob = cv2.dnn.blobFromImage(
            bgr,
            self.scale,
            (self.width, self.height),
            mean=tuple(float(m / self.scale) for m in self.mean),
            swapRB=True,
            crop=False,
        )
        blob /= self.std[None, :, None, None]
        return blob, w, h

    def detect(self, body: bytes) -> dict[str, Any]:
        tensor, width, height = self.preprocess(body)
        outputs = self.run_only(tensor)
        if self.task == "classification":
            return self._result(float(1 / (1 + np.exp(-outputs[0].ravel()[0]))), None, None)
        scores = np.transpose(outputs[0][0], (1, 2, 0))  # HxWxC for cv2
        full = cv2.resize(scores, (width, height), interpolation=cv2.INTER_LINEAR)
        full = np.transpose(full, (2, 0, 1))
        labels = np.argmax(full, axis=0).astype(np.uint8)
        ok, png = cv2.imencode(
            ".png", self.palette[labels][..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1]
        )
        assert ok
        return self._result(self._segmentation_score(full), labels, png.tobytes())
