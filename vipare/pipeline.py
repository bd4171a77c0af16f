"""One photo in, one :class:`~vipare.results.ImageResult` out: intake -> detection -> verdict -> location."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from vipare.detection import Detector
from vipare.geotag import CameraPosition, ClientPosition, resolve_location
from vipare.imaging import DecodedImage, load_image
from vipare.privacy import PrivacyDetector, Region, spare
from vipare.results import Detection, ImageResult, Verdict
from vipare.settings import DEFAULT_VERDICT_THRESHOLD, Settings
from vipare.taxonomy import is_deposit
from vipare.tiles import TILE_MARGIN, detect_in_tiles, holds_tiles

__all__ = ["Pipeline", "counted_deposits", "decide_verdict", "tile_thresholds", "verdict_thresholds"]


def decide_verdict(detections: Iterable[Detection], threshold: float | Mapping[str, float]) -> Verdict:
    """Image-level rule: dumping when a deposit-class detection scores at least its class's threshold.

    Args:
        detections: detections of one image (any classes; non-deposit classes are ignored).
        threshold: score in [0, 1] at or above which a deposit makes the photo count as dumping: one
            for every class, or one per class name (a deposit class missing from it never counts).

    Returns:
        The verdict with the detection that decided it: the one whose score stands highest against
        its class's threshold (score 0 and the lowest threshold when the photo has no deposit).
    """
    per_class: Mapping[str, float] | None
    if isinstance(threshold, Mapping):
        per_class, values = threshold, list(threshold.values())
    else:
        per_class, values = None, [float(threshold)]
    if not values or any(not 0.0 <= t <= 1.0 for t in values):
        raise ValueError(f"verdict thresholds must be within [0, 1], got {threshold}")

    def bar(d: Detection) -> float | None:
        return per_class.get(d.label) if per_class is not None else values[0]

    scored = [(d.score, t) for d in detections if d.deposit and (t := bar(d)) is not None]
    if not scored:
        return Verdict(dumping=False, score=0.0, threshold=min(values))
    score, bar_of_best = max(scored, key=lambda st: (st[0] - st[1], st[0]))
    return Verdict(dumping=score >= bar_of_best and score > 0.0, score=score, threshold=bar_of_best)


def counted_deposits(detections: Iterable[Detection], thresholds: Mapping[str, float]) -> list[Detection]:
    """The deposits that count towards the verdict: each scoring at least its class's threshold (a deposit
    class missing from ``thresholds`` never counts, as in :func:`decide_verdict`)."""
    return [d for d in detections if d.deposit and (t := thresholds.get(d.label)) is not None and d.score >= t]


def verdict_thresholds(detector: Detector, settings: Settings) -> dict[str, float]:
    """Per deposit class of ``detector``'s model, the score that makes a photo count as dumping.

    ``settings.verdict_threshold`` for every class when it is set; else the model's calibrated
    thresholds; else :data:`~vipare.settings.DEFAULT_VERDICT_THRESHOLD` for a model that carries none.
    """
    fixed = settings.verdict_threshold
    calibrated = detector.verdict_thresholds
    deposits = [n for n in detector.names if is_deposit(n)]
    if fixed is None and calibrated:
        return {n: calibrated.get(n, DEFAULT_VERDICT_THRESHOLD) for n in deposits}
    return dict.fromkeys(deposits, DEFAULT_VERDICT_THRESHOLD if fixed is None else fixed)


def tile_thresholds(detector: Detector, settings: Settings) -> dict[str, float]:
    """Per deposit class, the score a deposit found only by the tiled second look must reach.

    A tile sees a part of the street without its surroundings, where a shadow or a bin's lid looks
    more like a bag: its finds need more than the whole photo's. The model's calibrated tile
    thresholds when it carries them and no fixed threshold is set; else the verdict thresholds plus
    :data:`~vipare.tiles.TILE_MARGIN`.
    """
    calibrated = detector.tile_thresholds
    verdict = verdict_thresholds(detector, settings)
    if settings.verdict_threshold is None and calibrated:
        return {n: calibrated.get(n, min(1.0, t + TILE_MARGIN)) for n, t in verdict.items()}
    return {n: min(1.0, t + TILE_MARGIN) for n, t in verdict.items()}


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

    @property
    def verdict_thresholds(self) -> dict[str, float]:
        """The score each deposit class of the model needs to make a photo count as dumping."""
        return verdict_thresholds(self.detector, self.settings)

    def decode(self, source: bytes | str | os.PathLike[str], *, sha256: str | None = None) -> DecodedImage:
        """Read and orient a photo at the size the model needs (raises an ``ImageError`` subclass).

        ``sha256``: the file's sha256 (hex) when the caller has it already (see :func:`load_image`).
        """
        return load_image(
            source,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
            target_size=self.detector.input_size,
            max_non_jpeg_pixels=self.settings.max_non_jpeg_pixels,
            sha256=sha256,
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
        thresholds = self.verdict_thresholds
        verdict = decide_verdict(detections, thresholds)
        if not verdict.dumping and self.looks_again(image):
            detections = detect_in_tiles(self.detector, image.array, detections, original_size=info.size,
                                         min_scores=tile_thresholds(self.detector, self.settings))
            verdict = decide_verdict(detections, thresholds)
        location = resolve_location(image.gps, client, camera, conflict_m=self.settings.gps_conflict_m)
        return ImageResult(
            source=name,
            image=info,
            detections=detections,
            verdict=verdict,
            location=location,
            model=self.detector.info,
        )

    def for_frames(self) -> Pipeline:
        """This pipeline as street-camera frames use it: the same detectors with :meth:`Settings.for_frames`."""
        frames = self.settings.for_frames()
        if frames == self.settings:
            return self
        return Pipeline(self.detector, frames, self.privacy)

    def looks_again(self, image: DecodedImage) -> bool:
        """Whether a photo without a deposit gets the tiled second look (:mod:`vipare.tiles`): when the
        setting is on and the decode holds at least the model's input size on its long side."""
        return self.settings.tiles_when_empty and holds_tiles(image.size, self.detector)

    def private_regions(
        self, image: DecodedImage, detections: Iterable[Detection] = (), *, every_deposit: bool = False
    ) -> list[Region]:
        """Faces, heads and plate bands to blur before the photo is stored (:mod:`vipare.privacy`).

        Args:
            image: the photo as :meth:`decode` returned it (its reduced copy is enough).
            detections: what :meth:`analyze` found in it; heads and plate bands are cut around its
                deposits that count towards the verdict (:func:`counted_deposits`), so the blur never
                hides what the report is about. A weaker find spares nothing: a face on it is blurred.
            every_deposit: spare every deposit find, however weak (a person said there is a deposit:
                the photo is about it even though the model doubts it).

        Returns:
            Regions in pixels of the upright original; none when blurring is off.
        """
        if self.privacy is None:
            return []
        regions = self.privacy.find(image.array, original_size=image.info.size)
        spared = [d for d in detections if d.deposit] if every_deposit else counted_deposits(
            detections, self.verdict_thresholds)
        return spare(regions, [d.box for d in spared])
