"""Library settings, read once from ``VIPARE_*`` environment variables (or passed explicitly)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Self

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MODEL_PATH", "DEFAULT_VERDICT_THRESHOLD", "Settings"]

MODEL_FILE = "vipare-yolo11n.onnx"
FACE_MODEL_FILE = "yunet_n_640_640.onnx"
PRIVACY_MODEL_FILE = "coco-yolo11n-416.onnx"


def _default_model_path(name: str = MODEL_FILE) -> Path:
    """A shipped model: ``weights/`` of a source checkout, else where a wheel install put it."""
    checkout = Path(__file__).resolve().parent.parent / "weights" / name
    installed = Path(sys.prefix) / "share" / "vipare" / "weights" / name
    return checkout if checkout.exists() or not installed.exists() else installed


DEFAULT_MODEL_PATH = _default_model_path()
DEFAULT_VERDICT_THRESHOLD = 0.35


class Settings(BaseSettings):
    """Detection, intake and geotagging settings.

    Every field can be set from the environment with the ``VIPARE_`` prefix, e.g.
    ``VIPARE_CONF_THRESHOLD=0.3``.

    A keyword argument that names no field is an error (``Settings(conf_treshold=0.9)`` raises a
    ``pydantic.ValidationError`` naming ``conf_treshold``), so a misspelt override is never silently
    dropped. ``VIPARE_*`` environment variables that name no field are not read at all, so those of
    a program that extends these settings with its own fields (``VIPARE_DATA_DIR``) are left alone.
    """

    # extra="forbid" applies to keyword arguments: pydantic-settings' environment source only reads
    # the variables that name a field, so unknown VIPARE_* variables never reach validation.
    model_config = SettingsConfigDict(env_prefix="VIPARE_", extra="forbid")

    model_path: Path = Field(DEFAULT_MODEL_PATH, description="ONNX detector to load.")
    conf_threshold: float = Field(
        0.25, ge=0, le=1, description="A detection must score above this to be kept."
    )
    iou_threshold: float = Field(0.45, ge=0, le=1, description="Class-aware NMS overlap threshold.")
    box_merge_iou: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Each box kept by NMS becomes the score-weighted mean of its class's candidate boxes overlapping "
        "it by more than this IoU (closer edges on piles; scores and verdicts unchanged). 1 keeps the boxes as the "
        "network drew them, as Ultralytics does.",
    )
    max_detections: int = Field(100, ge=1, description="Most detections kept per image.")
    verdict_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="A photo counts as dumping when a deposit scores at least this, whatever its class. Unset: the "
        f"model's own per-class thresholds, calibrated on held-out photos, or {DEFAULT_VERDICT_THRESHOLD} for a "
        "model that carries none.",
    )
    tiles_when_empty: bool = Field(
        False,
        description="When the whole photo shows no deposit, look again at it in 2 x 2 overlapping tiles (small, far "
        "deposits; four more inferences on those photos only). Applies to photos (uploads, vipare detect and "
        "evaluate); street-camera frames follow frame_tiles_when_empty.",
    )
    frame_tiles_when_empty: bool = Field(
        False,
        description="The same second look for street-camera frames (batch jobs, photos pushed with a camera key), "
        "whatever tiles_when_empty says: most frames show no deposit, and each would cost four more inferences.",
    )
    mirrored_view: bool = Field(
        False,
        description="Also run the model on the photo's mirror image and average the two views: fewer false alarms, "
        "weaker small far deposits, twice the inference time (the README gives the measured trade).",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="onnxruntime intra-op threads per session; 0 lets onnxruntime use all cores."
    )
    max_image_bytes: int = Field(40 * 1024 * 1024, ge=1, description="Largest accepted file, in bytes.")
    max_image_pixels: int = Field(
        120_000_000, ge=1, description="Largest accepted image, in pixels (guards decompression bombs)."
    )
    max_non_jpeg_pixels: int = Field(
        50_000_000,
        ge=1,
        description="Largest accepted PNG or HEIC image, in pixels (WebP: a quarter of it). Unlike a JPEG, these "
        "decode at full size whatever the model needs (PNG and HEIC about 4 bytes of memory per pixel, WebP about "
        "16), so they get a lower limit than max_image_pixels.",
    )
    gps_conflict_m: float = Field(
        250.0, gt=0, description="EXIF and caller positions further apart than this are flagged."
    )
    blur_photos: bool = Field(
        True,
        description="Blur faces and licence plates in every stored photo (off where a city blurs them elsewhere).",
    )
    face_model_path: Path = Field(
        _default_model_path(FACE_MODEL_FILE), description="YuNet face detector (ONNX) used to blur faces."
    )
    privacy_model_path: Path = Field(
        _default_model_path(PRIVACY_MODEL_FILE),
        description="COCO detector (ONNX) whose persons and vehicles give the heads and plate bands to blur.",
    )
    face_threshold: float = Field(0.6, ge=0, le=1, description="A face scoring at least this is blurred.")
    privacy_threshold: float = Field(
        0.25, ge=0, le=1, description="A person or vehicle scoring above this has its head or plate band blurred."
    )

    def for_frames(self) -> Self:
        """These settings as street-camera frames use them: the tiled second look as ``frame_tiles_when_empty`` says."""
        return self.model_copy(update={"tiles_when_empty": self.frame_tiles_when_empty})
