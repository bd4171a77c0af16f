"""vipare: find illegal dumping in street photos with a small ONNX model on a plain CPU.

Typical use::

    from vipare import Pipeline
    result = Pipeline().analyze("photo.jpg")
    print(result.verdict.dumping, result.location)

The names below load their module on first use (PEP 562), so that ``import vipare.errors`` or
``vipare.results`` costs only those modules: a batch job's own process, which decodes nothing,
never loads onnxruntime or OpenCV.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from vipare.detection import Detector
    from vipare.errors import (
        CorruptImageError,
        EmptyImageError,
        ImageError,
        ImageTooLargeError,
        LocationError,
        ModelError,
        ModelMetadataError,
        UnsupportedImageError,
        VipareError,
    )
    from vipare.geotag import CameraPosition, ClientPosition, resolve_location
    from vipare.imaging import DecodedImage, load_image
    from vipare.pipeline import Pipeline, decide_verdict
    from vipare.results import Detection, GpsFix, ImageInfo, ImageResult, Location, ModelInfo, Verdict
    from vipare.settings import Settings
    from vipare.size import Size
    from vipare.taxonomy import CLASSES, DEPOSIT_CLASSES, TAXONOMY_VERSION

_HOMES: dict[str, str] = {
    "Detector": "detection",
    **dict.fromkeys(
        ("CorruptImageError", "EmptyImageError", "ImageError", "ImageTooLargeError", "LocationError",
         "ModelError", "ModelMetadataError", "UnsupportedImageError", "VipareError"),
        "errors",
    ),
    **dict.fromkeys(("CameraPosition", "ClientPosition", "resolve_location"), "geotag"),
    **dict.fromkeys(("DecodedImage", "load_image"), "imaging"),
    **dict.fromkeys(("Pipeline", "decide_verdict"), "pipeline"),
    **dict.fromkeys(("Detection", "GpsFix", "ImageInfo", "ImageResult", "Location", "ModelInfo", "Verdict"), "results"),
    "Settings": "settings",
    "Size": "size",
    **dict.fromkeys(("CLASSES", "DEPOSIT_CLASSES", "TAXONOMY_VERSION"), "taxonomy"),
}
"""Public name -> the module of this package that defines it."""

__all__ = [
    "CLASSES",
    "DEPOSIT_CLASSES",
    "TAXONOMY_VERSION",
    "CameraPosition",
    "ClientPosition",
    "CorruptImageError",
    "DecodedImage",
    "Detection",
    "Detector",
    "EmptyImageError",
    "GpsFix",
    "ImageError",
    "ImageInfo",
    "ImageResult",
    "ImageTooLargeError",
    "Location",
    "LocationError",
    "ModelError",
    "ModelInfo",
    "ModelMetadataError",
    "Pipeline",
    "Settings",
    "Size",
    "UnsupportedImageError",
    "Verdict",
    "VipareError",
    "decide_verdict",
    "load_image",
    "resolve_location",
]


def __getattr__(name: str) -> _typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vipare' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"vipare.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
