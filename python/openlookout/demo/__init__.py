"""The bundled demo: two small trained model packages and a few sample images, so that
``openlookout detect`` shows real anomaly detection with no model of your own.

* ``surface-seg`` (the default): segmentation, finds ``scratch`` and ``hole`` defects.
* ``surface-cls``: classification, anomalous or normal.

Both were trained on generated images of brushed metal, woven fabric and moulded plastic
(``tools/surfaces.py``, ``tools/train_demo.py`` in the source tree); their measured quality is in
the README. They are demos: they know those surfaces and those two defects, nothing else.

>>> from openlookout import demo, load_model
>>> model = load_model(demo.demo_model_path())          # "surface-seg"
>>> sample = demo.SAMPLES_DIR / "metal_hole.jpg"
>>> model.detect(sample.read_bytes(), "image/jpeg")["IsAnomalous"]
True
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ResourceNotFoundException
from ..manifest import MANIFEST_NAME

__all__ = [
    "DEFAULT_MODEL",
    "MODELS_DIR",
    "SAMPLES_DIR",
    "demo_model_path",
    "model_names",
    "resolve_package",
    "sample_images",
]

DEMO_DIR = Path(__file__).resolve().parent
MODELS_DIR = DEMO_DIR / "models"
SAMPLES_DIR = DEMO_DIR / "samples"
DEFAULT_MODEL = "surface-seg"
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")


def model_names() -> list[str]:
    """Names of the bundled model packages, the default first."""
    if not MODELS_DIR.is_dir():
        return []
    names = sorted(
        p.name for p in MODELS_DIR.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file()
    )
    return sorted(names, key=lambda name: name != DEFAULT_MODEL)


def demo_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Directory of the bundled model package ``name``."""
    if name not in model_names():
        raise ResourceNotFoundException(
            f"no bundled model {name!r}; bundled: {', '.join(model_names())}",
            resource_id=name,
            resource_type="MODEL",
        )
    return MODELS_DIR / name


def resolve_package(spec: str | Path) -> Path:
    """A model package given as a directory, or else as the name of a bundled model."""
    path = Path(spec)
    if path.is_dir() or str(spec) not in model_names():
        return path  # load_model reports a missing directory itself, naming it
    return demo_model_path(str(spec))


def sample_images() -> list[Path]:
    """The bundled sample images (PNG and JPEG; normal ones and each defect type), by name."""
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)
