"""
openlookout's native core (private; use the openlookout package)
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
__all__: list[str] = ['ColorOrder', 'DecodeLimits', 'IoBindingMode', 'Layout', 'Pipeline', 'PipelineConfig', 'ResizeMode', 'ScoreActivation', 'Task', 'load_onnxruntime', 'onnxruntime_loaded', 'onnxruntime_providers', 'onnxruntime_version']
class ResizeMode:
    """
    Members:
    
      bilinear
    
      area
    
      nearest
    """
    __members__: typing.ClassVar[dict[str, ResizeMode]]
    area: typing.ClassVar[ResizeMode]
    bilinear: typing.ClassVar[ResizeMode]
    nearest: typing.ClassVar[ResizeMode]
    @typing.overload
    def __eq__(self, other: ResizeMode) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: ResizeMode) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class Layout:
    """
    Members:
    
      NCHW
    
      NHWC
    """
    NCHW: typing.ClassVar[Layout]
    NHWC: typing.ClassVar[Layout]
    __members__: typing.ClassVar[dict[str, Layout]]
    @typing.overload
    def __eq__(self, other: Layout) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: Layout) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class ColorOrder:
    """
    Members:
    
      RGB
    
      BGR
    """
    BGR: typing.ClassVar[ColorOrder]
    RGB: typing.ClassVar[ColorOrder]
    __members__: typing.ClassVar[dict[str, ColorOrder]]
    @typing.overload
    def __eq__(self, other: ColorOrder) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: ColorOrder) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class ScoreActivation:
    """
    Members:
    
      none
    
      sigmoid
    
      softmax
    """
    __members__: typing.ClassVar[dict[str, ScoreActivation]]
    none: typing.ClassVar[ScoreActivation]
    sigmoid: typing.ClassVar[ScoreActivation]
    softmax: typing.ClassVar[ScoreActivation]
    @typing.overload
    def __eq__(self, other: ScoreActivation) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: ScoreActivation) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class Task:
    """
    Members:
    
      classification
    
      segmentation
    """
    __members__: typing.ClassVar[dict[str, Task]]
    classification: typing.ClassVar[Task]
    segmentation: typing.ClassVar[Task]
    @typing.overload
    def __eq__(self, other: Task) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: Task) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class IoBindingMode:
    """
    Members:
    
      auto
    
      on
    
      off
    """
    __members__: typing.ClassVar[dict[str, IoBindingMode]]
    auto: typing.ClassVar[IoBindingMode]
    off: typing.ClassVar[IoBindingMode]
    on: typing.ClassVar[IoBindingMode]
    @typing.overload
    def __eq__(self, other: IoBindingMode) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: IoBindingMode) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class DecodeLimits:
    def __init__(self) -> None:
        ...
    @property
    def jpeg_max_markers(self) -> int:
        ...
    @jpeg_max_markers.setter
    def jpeg_max_markers(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def jpeg_max_scan_pixels(self) -> int:
        ...
    @jpeg_max_scan_pixels.setter
    def jpeg_max_scan_pixels(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def jpeg_max_scans(self) -> int:
        ...
    @jpeg_max_scans.setter
    def jpeg_max_scans(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def max_body_bytes(self) -> int:
        ...
    @max_body_bytes.setter
    def max_body_bytes(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def max_side(self) -> int:
        ...
    @max_side.setter
    def max_side(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def min_side(self) -> int:
        ...
    @min_side.setter
    def min_side(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def png_max_ancillary_bytes(self) -> int:
        ...
    @png_max_ancillary_bytes.setter
    def png_max_ancillary_bytes(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def png_max_chunk_bytes(self) -> int:
        ...
    @png_max_chunk_bytes.setter
    def png_max_chunk_bytes(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class PipelineConfig:
    fast_jpeg_scaling: bool
    has_classification: bool
    has_segmentation: bool
    input_name: str
    io_binding: IoBindingMode
    limits: DecodeLimits
    model_path: str
    original_size: bool
    task: Task
    def __init__(self) -> None:
        ...
    def set_classification(self, output: str, activation: ScoreActivation, threshold: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    def set_input(self, width: typing.SupportsInt | typing.SupportsIndex, height: typing.SupportsInt | typing.SupportsIndex, layout: Layout, color: ColorOrder, resize: ResizeMode, scale: typing.SupportsFloat | typing.SupportsIndex, mean: typing.Annotated[collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex], "FixedSize(3)"], std: typing.Annotated[collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex], "FixedSize(3)"]) -> None:
        ...
    def set_segmentation(self, output: str, activation: ScoreActivation, threshold: typing.SupportsFloat | typing.SupportsIndex, upsample: ResizeMode, label_colors: collections.abc.Sequence[typing.Annotated[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], "FixedSize(3)"]], activation_is_default: bool) -> None:
        ...
    def set_session(self, intra_op_threads: typing.SupportsInt | typing.SupportsIndex, inter_op_threads: typing.SupportsInt | typing.SupportsIndex, providers: collections.abc.Sequence[tuple[str, collections.abc.Sequence[tuple[str, str]]]]) -> None:
        ...
    @property
    def image_height(self) -> int:
        ...
    @image_height.setter
    def image_height(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def image_width(self) -> int:
        ...
    @image_width.setter
    def image_width(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class Pipeline:
    def __init__(self, config: PipelineConfig) -> None:
        ...
    def detect(self, body: typing.Any, content_type: str) -> tuple[bool, float, list[int] | None, int, bytes | None]:
        """
        Decode and run; returns (is_anomalous, confidence, label_pixels, total_pixels, mask_png)
        """
    def detect_rgb(self, rgb: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8]) -> tuple[bool, float, list[int] | None, int, bytes | None]:
        ...
    @property
    def input_name(self) -> str:
        ...
    @property
    def io_binding(self) -> bool:
        """
        Whether runs go through an ONNX Runtime IO binding
        """
    @property
    def label_count(self) -> int:
        ...
    @property
    def output_names(self) -> list[str]:
        ...
def load_onnxruntime(library_path: str) -> None:
    """
    dlopen the ONNX Runtime shared library (once per process)
    """
def onnxruntime_loaded() -> bool:
    ...
def onnxruntime_providers() -> list[str]:
    """
    Execution providers the loaded ONNX Runtime library offers
    """
def onnxruntime_version() -> str:
    ...
