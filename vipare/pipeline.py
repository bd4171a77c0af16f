"""One photo in, one :class:`~vipare.results.ImageResult` out: intake -> detection -> verdict -> location."""

from __future__ import annotations

import os
from collections.abc import Iterable

from vipare.detection import Detector
from vipare.geotag import CameraPosition, ClientPosition, resolve_location
from vipare.imaging import DecodedImage, load_image
from vipare.privacy import PrivacyDetector, Region, spare
from vipare.results import Detection, ImageResult, Verdict
from vipare.settings import Settings

__all__ = ["Pipeline", "decide_verdict"]


def decide_verdict(detections: Iterable[Detection], threshold: float) -> Verdict:
    """Image-level rule: dumping when the best deposit-class detection scores at least ``threshold``.

    Args:
        detections: detections of one image (any classes; non-deposit classes are ignored).
        threshold: score in [0, 1] at or above which a deposit makes the photo count as dumping.

    Returns:
        The verdict with the score that decided it (0 when the photo has no deposit detection).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"verdict threshold must be within [0, 1], got {threshold}")
    best = max((d.score for d in detections if d.deposit), default=0.0)
    return Verdict(dumping=best >= threshold and best > 0.0, score=best, threshold=threshold)


class Pipeline:
    """Decodes, detects, decides and geotags photos with one shared detector.

    Thread-safe: the detector's onnxruntime session may be shared across threads.

    Args:
        detector: a loaded detector; built from ``settings`` when omitted.
        settings: limits and thresholds; read from ``VIPARE_*`` variables when omitted.
        privacy: the face, person and vehicle detectors of :meth:`private_regions`; built from
            ``settings`` when omitted and ``settings.blur_photos`` is on (warmed up when
            ``detector`` is omitted too, as the detector), else none.
    """

    def __init__(
        self,
        detector: Detector | None = None,
        settings: Settings | None = None,
        privacy: PrivacyDetector | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.detector = detector or Detector.from_settings(self.settings)
        if privacy is None and self.settings.blur_photos:
            privacy = PrivacyDetector.from_settings(self.settings, warmup=detector is None)
        self.privacy = privacy

    def decode(self, source: bytes | str | os.PathLike[str]) -> DecodedImage:
        """Read and orient a photo at the size the model needs (raises an ``ImageError`` subclass)."""
        return load_image(
            source,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
            target_size=self.detector.input_size,
            max_non_jpeg_pixels=self.settings.max_non_jpeg_pixels,
        )

    def analyze(
        self,
        source: bytes | str | os.PathLike[str] | DecodedImage,
        *,
        client: ClientPosition | None = None,
        camera: CameraPosition | None = None,
        name: str | None = None,
    ) -> ImageResult:
        """Analyze one photo.

        Args:
            source: file bytes, a path, or an image already returned by :meth:`decode`.
            client: coordinates sent by the caller (phone geolocation), used when EXIF has none.
            camera: position of the fixed camera that took the photo, the last resort.
            name: label stored as the result's ``source``; defaults to the path when given one.

        Returns:
            Detections in original-image pixels, the verdict, the chosen location and the model identity.
        """
        image = source if isinstance(source, DecodedImage) else self.decode(source)
        if name is None and isinstance(source, (str, os.PathLike)):
            name = os.fspath(source)
        info = image.info
        detections = self.detector.detect(image.array, original_size=info.size)
        location = resolve_location(image.gps, client, camera, conflict_m=self.settings.gps_conflict_m)
        return ImageResult(
            source=name,
            image=info,
            detections=detections,
            verdict=decide_verdict(detections, self.settings.verdict_threshold),
            location=location,
            model=self.detector.info,
        )

    def private_regions(self, image: DecodedImage, detections: Iterable[Detection] = ()) -> list[Region]:
        """Faces, heads and plate bands to blur before the photo is stored (:mod:`vipare.privacy`).

        Args:
            image: the photo as :meth:`decode` returned it (its reduced copy is enough).
            detections: what :meth:`analyze` found in it; heads and plate bands are cut around its
                deposits, so the blur never hides what the report is about.

        Returns:
            Regions in pixels of the upright original; none when blurring is off.
        """
        if self.privacy is None:
            return []
        regions = self.privacy.find(image.array, original_size=image.info.size)
        return spare(regions, [d.box for d in detections if d.deposit])
