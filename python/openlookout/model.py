"""``load_model`` and ``Model``: a model package ready to answer DetectAnomalies."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import _core
from ._runtime import ensure_onnxruntime
from .errors import OpenLookoutError, ValidationException
from .manifest import Manifest, read_manifest

__all__ = ["DEFAULT_LIMITS", "Body", "Model", "load_model"]

Body = bytes | bytearray | memoryview | BinaryIO
# What one image may cost, checked before the work it bounds (SECURITY.md explains each): pixels
# per side (L4V's documented 64..4096), the body size (a little above L4V's 8 MB file limit), PNG
# ancillary chunk sizes, JPEG marker and scan counts. The defaults are the C++ core's.
LIMIT_NAMES = (
    "min_side",
    "max_side",
    "max_body_bytes",
    "png_max_chunk_bytes",
    "png_max_ancillary_bytes",
    "jpeg_max_markers",
    "jpeg_max_scans",
    "jpeg_max_scan_pixels",
)
DEFAULT_LIMITS: dict[str, int] = {
    name: int(getattr(_core.DecodeLimits(), name)) for name in LIMIT_NAMES
}

ProviderArg = str | tuple[str, dict[str, Any]]


def _float32(x: float) -> float:
    """Rounds to float32 and back, as L4V reported areas."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _providers(providers: Sequence[ProviderArg] | None) -> list[tuple[str, list[tuple[str, str]]]]:
    result: list[tuple[str, list[tuple[str, str]]]] = []
    for p in providers or ():
        if isinstance(p, str):
            result.append((p, []))
        elif (
            isinstance(p, tuple)
            and len(p) == 2
            and isinstance(p[0], str)
            and isinstance(p[1], dict)
        ):
            result.append((p[0], [(str(k), str(v)) for k, v in p[1].items()]))
        else:
            raise ValidationException(
                f"providers: each entry is a name or (name, options dict), not {p!r}"
            )
    return result


def _positive_int(name: str, value: Any, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationException(
            f"{name} must be an integer from {minimum} to {maximum}, not {value!r}"
        )
    return value


def _limits(values: dict[str, Any]) -> _core.DecodeLimits:
    limits = _core.DecodeLimits()
    for name in LIMIT_NAMES:
        # Sides are C ints; byte and count limits are 64-bit in the core.
        maximum = 2**31 - 1 if name.endswith("_side") else 2**63 - 1
        setattr(limits, name, _positive_int(name, values[name], 1, maximum))
    if limits.min_side > limits.max_side:
        raise ValidationException(
            f"min_side ({limits.min_side}) must not exceed max_side ({limits.max_side})"
        )
    # libspng's own rule for its chunk limits.
    if limits.png_max_chunk_bytes > min(limits.png_max_ancillary_bytes, 2**31 - 1):
        raise ValidationException(
            f"png_max_chunk_bytes ({limits.png_max_chunk_bytes}) must not exceed "
            f"png_max_ancillary_bytes ({limits.png_max_ancillary_bytes}) or 2**31 - 1"
        )
    return limits


def _io_binding(value: Any) -> _core.IoBindingMode:
    if not isinstance(value, str) or value not in ("auto", "on", "off"):
        raise ValidationException(f"io_binding must be 'auto', 'on' or 'off', not {value!r}")
    mode: _core.IoBindingMode = getattr(_core.IoBindingMode, value)
    return mode


def _config(
    package: Path,
    manifest: Manifest,
    *,
    intra_op_threads: int,
    inter_op_threads: int,
    providers: Sequence[ProviderArg] | None,
    limits: dict[str, Any],
    fast_jpeg_scaling: bool | None,
) -> _core.PipelineConfig:
    config = _core.PipelineConfig()
    if fast_jpeg_scaling is not None and not isinstance(fast_jpeg_scaling, bool):
        raise ValidationException(
            f"fast_jpeg_scaling must be True, False or None, not {fast_jpeg_scaling!r}"
        )
    config.fast_jpeg_scaling = (
        manifest.input.fast_jpeg_scaling if fast_jpeg_scaling is None else fast_jpeg_scaling
    )
    config.model_path = str(package / manifest.model)
    config.task = getattr(_core.Task, manifest.task)
    config.input_name = manifest.input.name or ""
    config.original_size = manifest.input.resize == "none"
    spec = manifest.input
    config.set_input(
        width=spec.width,
        height=spec.height,
        layout=getattr(_core.Layout, spec.layout),
        color=getattr(_core.ColorOrder, spec.color),
        # "none": the core feeds the image at its own size and resizes nothing.
        resize=getattr(_core.ResizeMode, "nearest" if spec.resize == "none" else spec.resize),
        scale=spec.scale,
        mean=list(spec.mean),
        std=list(spec.std),
    )
    if manifest.image_size is not None:
        config.image_width, config.image_height = manifest.image_size
    if manifest.classification is not None:
        c = manifest.classification
        config.set_classification(
            output=c.output or "",
            activation=getattr(_core.ScoreActivation, c.activation),
            threshold=c.threshold,
        )
    if manifest.segmentation is not None:
        s = manifest.segmentation
        # The default activation depends on the output's channel count, which only the core sees:
        # "none" works for both a 1-channel map (scores) and C >= 2 (argmax is unaffected), and
        # the core switches C >= 2 to softmax (logits) when the manifest leaves it unset.
        activation = s.activation or "auto"
        config.set_segmentation(
            output=s.output or "",
            activation=getattr(
                _core.ScoreActivation, "none" if activation == "auto" else activation
            ),
            threshold=s.threshold,
            upsample=getattr(_core.ResizeMode, s.upsample),
            label_colors=[list(label.rgb) for label in s.labels],
            activation_is_default=activation == "auto",
        )
    config.limits = _limits(limits)
    config.set_session(
        intra_op_threads=_positive_int("intra_op_threads", intra_op_threads),
        inter_op_threads=_positive_int("inter_op_threads", inter_op_threads),
        providers=_providers(providers),
    )
    return config


class Model:
    """A loaded model package. Thread-safe: call ``detect`` from as many threads as you like;
    native work runs without the GIL and each call borrows its own buffers."""

    def __init__(
        self,
        package: str | Path,
        *,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        providers: Sequence[ProviderArg] | None = None,
        io_binding: str = "auto",
        min_side: int = DEFAULT_LIMITS["min_side"],
        max_side: int = DEFAULT_LIMITS["max_side"],
        max_body_bytes: int = DEFAULT_LIMITS["max_body_bytes"],
        png_max_chunk_bytes: int = DEFAULT_LIMITS["png_max_chunk_bytes"],
        png_max_ancillary_bytes: int = DEFAULT_LIMITS["png_max_ancillary_bytes"],
        jpeg_max_markers: int = DEFAULT_LIMITS["jpeg_max_markers"],
        jpeg_max_scans: int = DEFAULT_LIMITS["jpeg_max_scans"],
        jpeg_max_scan_pixels: int = DEFAULT_LIMITS["jpeg_max_scan_pixels"],
        fast_jpeg_scaling: bool | None = None,
    ) -> None:
        self.path = Path(package)
        self.manifest = read_manifest(self.path)
        self.max_body_bytes = max_body_bytes
        config = _config(
            self.path,
            self.manifest,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            providers=providers,
            limits={
                "min_side": min_side,
                "max_side": max_side,
                "max_body_bytes": max_body_bytes,
                "png_max_chunk_bytes": png_max_chunk_bytes,
                "png_max_ancillary_bytes": png_max_ancillary_bytes,
                "jpeg_max_markers": jpeg_max_markers,
                "jpeg_max_scans": jpeg_max_scans,
                "jpeg_max_scan_pixels": jpeg_max_scan_pixels,
            },
            fast_jpeg_scaling=fast_jpeg_scaling,
        )
        config.io_binding = _io_binding(io_binding)
        ensure_onnxruntime()
        self._pipeline = _core.Pipeline(config)
        segmentation = self.manifest.segmentation
        self._labels = (
            [(label.name, label.color) for label in segmentation.labels] if segmentation else []
        )

    @property
    def task(self) -> str:
        """``"classification"`` or ``"segmentation"``."""
        return self.manifest.task

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, task={self.task!r})"

    def detect(self, body: Body, content_type: str) -> dict[str, Any]:
        """DetectAnomalies on encoded image bytes: returns the ``DetectAnomalyResult`` dict,
        shaped and typed as boto3 returned it.

        ``body`` is bytes, bytearray, memoryview or a readable binary file object;
        ``content_type`` is ``"image/png"`` or ``"image/jpeg"``.
        """
        if not isinstance(content_type, str):
            raise ValidationException(
                "content_type must be a string ('image/png' or 'image/jpeg'), "
                f"not {type(content_type).__name__}"
            )
        if not (content_type.isascii() and content_type.isprintable()):
            # The core takes bytes; a lone surrogate or other non-ASCII text would otherwise
            # fail its conversion with a TypeError, or be mangled in the message.
            raise ValidationException(
                f"unsupported content type {content_type!r}; it must be image/png or image/jpeg"
            )
        if isinstance(body, (bytes, bytearray)):
            data: bytes | bytearray | memoryview = body
        elif isinstance(body, memoryview):
            data = body if body.contiguous else body.tobytes()
        elif hasattr(body, "read"):
            # Read one byte past the limit so an oversized stream is reported, not truncated.
            data = body.read(self.max_body_bytes + 1)
            if not isinstance(data, (bytes, bytearray)):
                raise ValidationException("body file object must be opened in binary mode")
        else:
            raise ValidationException(
                "body must be bytes, bytearray, memoryview or a binary file object, "
                f"not {type(body).__name__}"
            )
        return self._result(self._pipeline.detect(data, content_type))

    def detect_batch(
        self,
        bodies: Sequence[Body],
        content_types: str | Sequence[str],
        *,
        workers: int = 2,
        return_exceptions: bool = False,
    ) -> list[dict[str, Any] | OpenLookoutError]:
        """DetectAnomalies on many images, in order, with ``workers`` calls in flight so that
        decoding the next images overlaps inference on the current one (each call releases the
        GIL). ``content_types`` is one type for all or one per body. With
        ``return_exceptions=True`` a failed image yields its exception in the list; otherwise the
        first failure (in input order) is raised after all calls have finished."""
        types = (
            [content_types] * len(bodies) if isinstance(content_types, str) else list(content_types)
        )
        if len(types) != len(bodies):
            raise ValidationException(
                f"content_types has {len(types)} entries for {len(bodies)} bodies"
            )
        workers = _positive_int("workers", workers, 1)

        def one(i: int) -> dict[str, Any] | OpenLookoutError:
            try:
                return self.detect(bodies[i], types[i])
            except OpenLookoutError as error:
                return error

        if workers == 1 or len(bodies) <= 1:
            results = [one(i) for i in range(len(bodies))]
        else:
            with ThreadPoolExecutor(
                max_workers=min(workers, len(bodies)), thread_name_prefix="openlookout"
            ) as pool:
                results = list(pool.map(one, range(len(bodies))))
        if not return_exceptions:
            for r in results:
                if isinstance(r, OpenLookoutError):
                    raise r
        return results

    def detect_array(self, rgb: np.ndarray) -> dict[str, Any]:
        """DetectAnomalies on decoded pixels: an ``HxWx3`` ``uint8`` RGB array (what L4V's edge
        agent took as RGB888)."""
        if not isinstance(rgb, np.ndarray):
            raise ValidationException(f"rgb must be a numpy array, not {type(rgb).__name__}")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValidationException(
                f"rgb must be an HxWx3 uint8 array, not {rgb.dtype} with shape {rgb.shape}"
            )
        if rgb.strides[2] != 1 or rgb.strides[1] != 3 or rgb.strides[0] < 3 * rgb.shape[1]:
            rgb = np.ascontiguousarray(rgb)
        return self._result(self._pipeline.detect_rgb(rgb))

    def _result(
        self, raw: tuple[bool, float, list[int] | None, int, bytes | None]
    ) -> dict[str, Any]:
        is_anomalous, confidence, label_pixels, total_pixels, mask = raw
        result: dict[str, Any] = {
            "Source": {"Type": "direct"},
            "IsAnomalous": bool(is_anomalous),
            "Confidence": float(confidence),
        }
        if label_pixels is None:
            return result
        anomalies = [
            {
                "Name": "background",
                "PixelAnomaly": {
                    "TotalPercentageArea": _float32(label_pixels[0] / total_pixels),
                    "Color": "#FFFFFF",
                },
            }
        ]
        for (name, color), count in zip(self._labels, label_pixels[1:], strict=False):
            if count:
                anomalies.append(
                    {
                        "Name": name,
                        "PixelAnomaly": {
                            "TotalPercentageArea": _float32(count / total_pixels),
                            "Color": color,
                        },
                    }
                )
        result["Anomalies"] = anomalies
        result["AnomalyMask"] = mask
        return result


def load_model(path: str | Path, **options: Any) -> Model:
    """Loads a model package directory (``manifest.json`` + ONNX file).

    Options: ``intra_op_threads`` (ORT threads per call, 0 = ORT's default), ``inter_op_threads``,
    ``providers`` (ORT execution providers in order of preference, names or ``(name, options)``;
    one the installed onnxruntime lacks is a ``ValidationException`` listing those it has),
    ``io_binding`` (``"auto"``: run through an ORT IO binding exactly when the first provider
    keeps tensors on a device, such as CUDA or TensorRT; ``"on"``/``"off"`` force it; see the
    README's GPU section),
    the input limits (defaults in ``DEFAULT_LIMITS``, explained in SECURITY.md) ``min_side``,
    ``max_side`` (pixels per side), ``max_body_bytes``, ``png_max_chunk_bytes`` (one ancillary
    chunk, inflated), ``png_max_ancillary_bytes`` (all ancillary data kept), ``jpeg_max_markers``,
    ``jpeg_max_scans`` and ``jpeg_max_scan_pixels`` (scans x pixels: progressive bombs), and
    ``fast_jpeg_scaling`` (``True``/``False`` overrides the manifest's ``input.fast_jpeg_scaling``:
    decode JPEGs scaled down in the DCT domain when the model input is much smaller; faster, not
    exact; see benchmarks/RESULTS.md).
    """
    return Model(path, **options)
