"""vipare: find illegal dumping in street photos with a small ONNX model on a plain CPU.

Typical use::

    from vipare import Pipeline
    result = Pipeline().analyze("photo.jpg")
    print(result.verdict.dumping, result.location)
"""

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
from vipare.taxonomy import CLASSES, DEPOSIT_CLASSES, TAXONOMY_VERSION

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
    "UnsupportedImageError",
    "Verdict",
    "VipareError",
    "decide_verdict",
    "load_image",
    "resolve_location",
]
