"""Making faces and licence plates unreadable: where they may be, and blurring them.

Two small ONNX detectors find the regions (boxes ``xyxy`` in pixels of the upright original photo,
as everywhere in vipare), run on the reduced copy of the photo the analysis already decoded:

- **faces**: YuNet (``weights/yunet_n_640_640.onnx``, Apache-2.0) on onnxruntime
  (:mod:`vipare.faces`, which finds the faces OpenCV's ``cv2.FaceDetectorYN`` finds, at the reduced
  copy's own size); each face box is grown by ``face_margin`` of its size on every side;
- **heads**: the COCO YOLO11n (``weights/coco-yolo11n-416.onnx``, rebuilt from the INT8 IR of ``../shared``)
  finds persons; the top of each person box is blurred (:func:`head_region`), for faces too small,
  turned away or half hidden for the face detector;
- **plates**: no licence-plate detector with permissive weights installs offline, so the rule is
  geometric: the same model finds vehicles (car, bus, truck, motorcycle) and the lower part of each
  vehicle box, where front and rear plates are, is blurred (:func:`plate_region`), whether a plate
  shows or not.

:mod:`vipare.blur` makes the regions unreadable.

Thread safety: :class:`PrivacyDetector` shares one onnxruntime session per model (thread-safe) and
keeps no state between calls, so one detector serves all threads without a lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from vipare.checks import check_fraction
from vipare.detection import Detector
from vipare.errors import ModelError
from vipare.faces import FaceDetector
from vipare.settings import Settings
from vipare.size import Size

__all__ = [
    "PERSON_CLASSES",
    "VEHICLE_CLASSES",
    "PrivacyDetector",
    "Region",
    "PLATE_TOP",
    "box_iou",
    "grow_box",
    "head_region",
    "outside",
    "plate_region",
    "region_sharpness",
    "spare",
]

Box = tuple[float, float, float, float]

PERSON_CLASSES: Final = frozenset({"person"})
VEHICLE_CLASSES: Final = frozenset({"car", "bus", "truck", "motorcycle"})
PLATE_TOP: Final = 0.45
"""Where a plate band starts, as a fraction of its vehicle's height from the top (:func:`plate_region`)."""


@dataclass(frozen=True, slots=True)
class Region:
    """A part of a photo to make unreadable.

    Attributes:
        kind: ``face`` (the face detector), ``head`` (top of a person) or ``plate`` (lower part of a vehicle).
        box: ``x1, y1, x2, y2`` in pixels of the upright original photo.
        score: the detector's confidence in the face, person or vehicle, in [0, 1].
        whole: the region before :func:`spare` cut it around a deposit (None: ``box`` itself); the
            blur's cells are sized on it (:func:`blur`), so a part is blurred as the whole would be.
    """

    kind: Literal["face", "head", "plate"]
    box: Box
    score: float
    whole: Box | None = None


def grow_box(box: Box, margin: float, size: Size) -> Box:
    """``box`` grown by ``margin`` times its width and height on each side, clipped to ``size``.

    Args:
        box: ``x1, y1, x2, y2``, pixels.
        margin: fraction of the box's width (height) added left and right (above and below), >= 0.
        size: the image the box lies in.
    """
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return (max(0.0, x1 - dx), max(0.0, y1 - dy), min(float(size.width), x2 + dx), min(float(size.height), y2 + dy))


def head_region(person: Box, *, min_fraction: float = 0.2, width_fraction: float = 0.6) -> Box:
    """Where the head of a person box is: its full width, from its top down.

    The band is ``max(min_fraction * height, width_fraction * width)`` high, never more than the box:
    a standing person's head is about an eighth of the height, and a person cut by the frame or
    seated has a box about as wide as high, whose head takes a larger share.

    Args:
        person: ``x1, y1, x2, y2`` of the person, pixels.
        min_fraction: smallest band, as a fraction of the box height.
        width_fraction: band height as a fraction of the box width, when larger.
    """
    x1, y1, x2, y2 = person
    height = min(y2 - y1, max(min_fraction * (y2 - y1), width_fraction * (x2 - x1)))
    return (x1, y1, x2, y1 + height)


def plate_region(vehicle: Box, *, top_fraction: float = PLATE_TOP) -> Box:
    """Where a vehicle's plates can be: its full width, from ``top_fraction`` of its height down.

    Front and rear plates sit between the bumper and the lights, in the lower half of the box
    whether the vehicle is seen from the front, the back or three quarters.

    Args:
        vehicle: ``x1, y1, x2, y2`` of the vehicle, pixels.
        top_fraction: where the band starts, as a fraction of the box height from its top, in [0, 1].
    """
    x1, y1, x2, y2 = vehicle
    return (x1, y1 + top_fraction * (y2 - y1), x2, y2)


def outside(box: Box, spared: Iterable[Box]) -> list[Box]:
    """The parts of ``box`` outside every box of ``spared``, as at most four boxes per spared box.

    Args:
        box: ``x1, y1, x2, y2``, pixels.
        spared: boxes to leave out (a deposit's).

    Returns:
        Non-overlapping boxes that together cover ``box`` minus ``spared``; ``[box]`` when none overlaps.
    """
    parts = [box]
    for sx1, sy1, sx2, sy2 in spared:
        kept: list[Box] = []
        for x1, y1, x2, y2 in parts:
            if sx1 >= x2 or sx2 <= x1 or sy1 >= y2 or sy2 <= y1:
                kept.append((x1, y1, x2, y2))
                continue
            top, bottom = max(y1, sy1), min(y2, sy2)
            candidates = [
                (x1, y1, x2, top),  # above
                (x1, bottom, x2, y2),  # below
                (x1, top, max(x1, sx1), bottom),  # left
                (min(x2, sx2), top, x2, bottom),  # right
            ]
            kept.extend(c for c in candidates if c[2] > c[0] and c[3] > c[1])
        parts = kept
    return parts


def spare(regions: Sequence[Region], deposits: Sequence[Box], *, face_share: float = 0.1) -> list[Region]:
    """``regions`` cut around ``deposits``, so that the blur never hides one; faces kept whole.

    Heads and plate bands are guesses from a person's or a vehicle's box, which often overlaps the
    deposit beside it: they are cut around every deposit. A face is kept whole when it touches a head
    (a person is there) or is small beside each deposit it overlaps (under ``face_share`` of its
    area); a large "face" on a deposit with no person around is the face detector mistaking litter
    for a face, and is cut around the deposit too.

    Args:
        regions: as :meth:`PrivacyDetector.find` gives them.
        deposits: boxes of the deposits to leave visible, pixels of the same image (the pipeline
            gives those that count towards the verdict: :meth:`vipare.pipeline.Pipeline.private_regions`).
        face_share: the largest share of a deposit's area a face without a person may cover and
            still be blurred over it.
    """
    heads = [region.box for region in regions if region.kind == "head"]
    out: list[Region] = []
    for region in regions:
        if not deposits or (region.kind == "face" and _a_face(region.box, heads, deposits, face_share)):
            out.append(region)
            continue
        whole = region.whole or region.box
        out.extend(Region(region.kind, part, region.score, whole) for part in outside(region.box, deposits))
    return out


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``xyxy`` boxes (0 when either is empty)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def region_sharpness(grey: NDArray[np.uint8], box: Sequence[float]) -> float:
    """The variance of the Laplacian inside ``box`` of a greyscale image: how much fine detail is left.

    A blurred face or plate keeps a small fraction of its original value; this is how the privacy
    test set and ``benchmarks/bench_privacy.py`` judge a region unreadable.
    """
    x1, y1, x2, y2 = (round(v) for v in box)
    return float(cv2.Laplacian(grey[y1:y2, x1:x2], cv2.CV_64F).var())


def _a_face(face: Box, heads: Sequence[Box], deposits: Sequence[Box], face_share: float) -> bool:
    """Whether a face box is believed over the deposits it overlaps (see :func:`spare`)."""
    if any(_overlap(face, head) for head in heads):
        return True
    return all(_area(face) < face_share * _area(d) for d in deposits if _overlap(face, d))


class PrivacyDetector:
    """Finds the faces, heads and plate bands of a photo (see the module doc for the rules).

    Args:
        face_model: YuNet ONNX file (:class:`vipare.faces.FaceDetector`).
        object_model: a COCO detector exported by Ultralytics (persons and vehicles), read by
            :class:`vipare.detection.Detector`.
        face_threshold: a face must score at least this, in [0, 1].
        object_threshold: a person or vehicle must score above this, in [0, 1].
        face_margin: fraction of a face box's size added on each side.
        intra_op_threads: onnxruntime threads of each model (0: onnxruntime's default).
        warmup: call :meth:`warm_up` at load (a service that reports readiness calls it itself).

    Raises:
        ModelError: a model file is missing or unusable, or the object model has no ``person`` class.
    """

    def __init__(
        self,
        face_model: str | os.PathLike[str],
        object_model: str | os.PathLike[str],
        *,
        face_threshold: float = 0.6,
        object_threshold: float = 0.25,
        face_margin: float = 0.25,
        intra_op_threads: int = 0,
        warmup: bool = True,
    ) -> None:
        check_fraction("face_threshold", face_threshold)
        self.face_model = Path(face_model)
        self.face_threshold = face_threshold
        self.face_margin = face_margin
        self.faces = FaceDetector(self.face_model, score_threshold=face_threshold, intra_op_threads=intra_op_threads)
        self.objects = Detector(
            object_model,
            conf_threshold=object_threshold,
            iou_threshold=0.45,
            max_detections=300,
            intra_op_threads=intra_op_threads,
            warmup=False,
        )
        if "person" not in self.objects.names:
            raise ModelError(
                f"{object_model} has no 'person' class; use the shipped COCO detector (VIPARE_PRIVACY_MODEL_PATH)"
            )
        if warmup:
            self.warm_up()

    @classmethod
    def from_settings(cls, settings: Settings, *, warmup: bool = True) -> PrivacyDetector:
        """The detectors named by ``settings`` (``face_model_path``, ``privacy_model_path``, thresholds)."""
        return cls(
            settings.face_model_path,
            settings.privacy_model_path,
            face_threshold=settings.face_threshold,
            object_threshold=settings.privacy_threshold,
            intra_op_threads=settings.intra_op_threads,
            warmup=warmup,
        )

    def warm_up(self) -> None:
        """Run both models once on a blank image, so that the first photo is not slow.

        Raises:
            ModelError: the object model's output does not fit its class names.
        """
        self.objects.warm_up()
        self.faces.warm_up(self.objects.input_size)

    def find(self, image: NDArray[np.uint8], original_size: Size | None = None) -> list[Region]:
        """The regions to blur in a photo.

        Args:
            image: upright RGB pixels, shape ``(H, W, 3)``, uint8 (a reduced copy is enough:
                ``DecodedImage.array``).
            original_size: the upright original's size, which the boxes are given in; the array's
                own size when None.

        Returns:
            Faces first, then heads, then plate bands; boxes in pixels of ``original_size``.
        """
        size = Size.of(image)
        full = original_size or size
        sx, sy = full.width / size.width, full.height / size.height
        regions: list[Region] = []
        faces = self.faces.detect(image)
        for (x1, y1, x2, y2), score in zip(faces.boxes.tolist(), faces.scores.tolist(), strict=True):
            box = grow_box((x1 * sx, y1 * sy, x2 * sx, y2 * sy), self.face_margin, full)
            regions.append(Region("face", box, min(1.0, score)))
        objects = self.objects.detect(image, original_size=full)
        for det in objects:
            if det.label in PERSON_CLASSES:
                regions.append(Region("head", grow_box(head_region(det.box), self.face_margin / 2, full), det.score))
        for det in objects:
            if det.label in VEHICLE_CLASSES:
                regions.append(Region("plate", plate_region(det.box), det.score))
        return regions
