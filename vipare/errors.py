"""Errors raised by vipare, each with a message a field agent or operator can act on.

The tree::

    VipareError
    ├── ImageError                 the uploaded or listed file cannot be used as a photo
    │   ├── EmptyImageError        zero bytes
    │   ├── UnsupportedImageError  not JPEG, PNG, WebP or HEIC/HEIF (judged from the content)
    │   ├── CorruptImageError      recognised format but cannot be decoded (truncated, damaged)
    │   └── ImageTooLargeError     over the byte limit or the pixel limit (decompression bomb)
    ├── ModelError                 the ONNX model cannot be used
    │   └── ModelMetadataError     the model lacks the metadata vipare needs (names, imgsz, stride)
    └── LocationError              coordinates given by a caller are invalid

"No GPS" is not an error: a photo whose EXIF GPS is missing or malformed simply has no EXIF fix.
"""

from __future__ import annotations

__all__ = [
    "CorruptImageError",
    "EmptyImageError",
    "ImageError",
    "ImageTooLargeError",
    "LocationError",
    "ModelError",
    "ModelMetadataError",
    "UnsupportedImageError",
    "VipareError",
]


class VipareError(Exception):
    """Base of every error vipare raises on purpose."""


class ImageError(VipareError):
    """The file cannot be used as a photo."""


class EmptyImageError(ImageError):
    """The file is empty."""


class UnsupportedImageError(ImageError):
    """The content is not a supported image format."""


class CorruptImageError(ImageError):
    """The format is recognised but the image cannot be decoded."""


class ImageTooLargeError(ImageError):
    """The file is over the byte limit, or the image over the pixel limit."""


class ModelError(VipareError):
    """The ONNX model cannot be loaded or run."""


class ModelMetadataError(ModelError):
    """The ONNX model lacks metadata that vipare reads (class names, input size, stride)."""


class LocationError(VipareError):
    """Coordinates supplied by a caller are out of range or incomplete."""
