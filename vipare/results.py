"""Result types: what vipare says about one photo. All are pydantic v2 models and round-trip JSON.

Box convention, end to end: ``xyxy`` in pixels of the orientation-corrected original image
(``ImageInfo.width`` x ``ImageInfo.height``), origin top-left, x to the right, y down.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vipare.size import Size

__all__ = [
    "Detection",
    "GpsFix",
    "ImageInfo",
    "ImageResult",
    "Location",
    "LocationSource",
    "ModelInfo",
    "Verdict",
]

LocationSource = Literal["exif", "client", "placed", "camera"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImageInfo(_Frozen):
    """What the intake learned about the file itself."""

    width: int = Field(description="Width in pixels after EXIF orientation.")
    height: int = Field(description="Height in pixels after EXIF orientation.")
    format: Literal["JPEG", "PNG", "WEBP", "HEIF"] = Field(description="Format read from the content.")
    sha256: str = Field(description="Hex sha256 of the file's bytes.")
    size_bytes: int
    orientation: int = Field(1, description="EXIF orientation tag (1-8) that was applied.")
    captured_at: datetime | None = Field(
        None, description="EXIF DateTimeOriginal; timezone-aware when EXIF gives the offset."
    )

    @property
    def size(self) -> Size:
        """Width and height after EXIF orientation, the pixels detection boxes are given in."""
        return Size(self.width, self.height)


class GpsFix(_Frozen):
    """A position read from a photo's EXIF GPS block."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    altitude_m: float | None = None
    accuracy_m: float | None = Field(
        None, description="GPSHPositioningError, or an estimate from GPSDOP when only that is present."
    )
    accuracy_from: Literal["hpositioning_error", "dop"] | None = None
    gps_time: datetime | None = Field(None, description="GPS date and time stamp, UTC.")


class Location(_Frozen):
    """The position chosen for a photo, and where it came from.

    Precedence: EXIF GPS, then coordinates the caller supplies, then a fixed camera's position.
    """

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    source: LocationSource
    accuracy_m: float | None = None
    altitude_m: float | None = None
    gps_time: datetime | None = None
    camera_id: str | None = None
    disagreement_m: float | None = Field(
        None, description="Distance between the EXIF fix and the caller's coordinates, when both exist."
    )
    conflict: bool = Field(
        False, description="True when EXIF and caller disagree by more than the allowed distance."
    )


class Detection(_Frozen):
    """One detected object."""

    label: str = Field(description="Class name from the project taxonomy.")
    class_id: int
    score: float = Field(ge=0, le=1)
    box: tuple[float, float, float, float] = Field(
        description="x1, y1, x2, y2 in pixels of the orientation-corrected original image."
    )
    area_fraction: float = Field(ge=0, le=1, description="Box area divided by image area.")
    deposit: bool = Field(description="True when this class counts as a deposit.")


class Verdict(_Frozen):
    """Image-level answer: is there dumping in this photo?"""

    dumping: bool
    score: float = Field(ge=0, le=1, description="Best deposit score, 0 when none; decides the verdict.")
    threshold: float = Field(ge=0, le=1, description="Score at or above which the photo counts as dumping.")


class ModelInfo(_Frozen):
    """Identity of the model that produced a result."""

    name: str
    sha256: str
    classes: list[str]
    # Stored and served as [height, width], the order of the model file's own ``imgsz`` entry;
    # ``vipare.detection.Detector.input_size`` gives it as a Size.
    input_size: tuple[int, int] = Field(description="Model input height, width in pixels.")
    stride: int
    version: str | None = None
    taxonomy_version: str | None = None


class ImageResult(_Frozen):
    """Everything vipare says about one photo."""

    source: str | None = Field(None, description="File path or upload name, when known.")
    image: ImageInfo
    detections: list[Detection]
    verdict: Verdict
    location: Location | None
    model: ModelInfo
