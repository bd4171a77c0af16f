"""What phones and street cameras do to a photo, as a training augmentation.

Ultralytics' own pipeline covers geometry (scale jitter, perspective, mosaic) and colour (HSV).
Field photos also come shaken, out of focus, at dusk or at night, recompressed by a messaging app,
or through rain on the lens. :class:`PhotoNoise` adds those effects to the training images (boxes
unchanged) and :func:`add_photo_noise` puts it into an Ultralytics trainer's pipeline, keeping it
there when the trainer rebuilds its transforms (the last epochs without mosaic) or resumes.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EFFECTS = ("motion_blur", "defocus", "low_light", "night", "jpeg", "rain")


@dataclass
class PhotoNoise:
    """Applies each effect in ``effects`` with probability ``p`` to ``labels["img"]`` (BGR uint8).

    Attributes:
        p: probability of each effect, drawn independently.
        effects: the effects used (a subset of :data:`EFFECTS`, for the ablation).
        seed: seed of the transform's own random generator (per worker process, offset by its pid).
    """

    p: float = 0.15
    effects: tuple[str, ...] = EFFECTS
    seed: int = 0
    _rng: random.Random | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.effects) - set(EFFECTS)
        if unknown:
            raise ValueError(f"unknown effects {sorted(unknown)}; known: {EFFECTS}")

    def rng(self) -> random.Random:
        import os

        if self._rng is None:
            self._rng = random.Random(self.seed * 100_003 + os.getpid())
        return self._rng

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng()
        image = labels["img"]
        for effect in self.effects:
            if rng.random() < self.p:
                image = getattr(self, f"_{effect}")(image, rng)
        labels["img"] = np.ascontiguousarray(image)
        return labels

    @staticmethod
    def _motion_blur(image: np.ndarray, rng: random.Random) -> np.ndarray:
        import cv2

        length = rng.choice((5, 7, 9, 13))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        angle = rng.uniform(0, 180)
        rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        return cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))

    @staticmethod
    def _defocus(image: np.ndarray, rng: random.Random) -> np.ndarray:
        import cv2

        radius = rng.choice((2, 3, 4))
        kernel = np.zeros((2 * radius + 1, 2 * radius + 1), np.float32)
        cv2.circle(kernel, (radius, radius), radius, 1.0, -1)
        return cv2.filter2D(image, -1, kernel / kernel.sum())

    @staticmethod
    def _low_light(image: np.ndarray, rng: random.Random) -> np.ndarray:
        """Dusk: darker, gamma lifted shadows, sensor noise."""
        gain, gamma = rng.uniform(0.35, 0.7), rng.uniform(1.2, 1.8)
        out = 255.0 * (image.astype(np.float32) / 255.0) ** gamma * gain
        out += np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(2, 6), image.shape)
        return np.clip(out, 0, 255).astype(np.uint8)

    @staticmethod
    def _night(image: np.ndarray, rng: random.Random) -> np.ndarray:
        """Night under street lights: very dark, orange cast, strong chroma noise."""
        out = image.astype(np.float32) * rng.uniform(0.15, 0.35)
        out *= np.array([0.7, 0.95, 1.25], np.float32)  # BGR: sodium-lamp orange
        out += np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(4, 10), image.shape)
        return np.clip(out, 0, 255).astype(np.uint8)

    @staticmethod
    def _jpeg(image: np.ndarray, rng: random.Random) -> np.ndarray:
        import cv2

        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(20, 60)])
        return cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else image

    @staticmethod
    def _rain(image: np.ndarray, rng: random.Random) -> np.ndarray:
        """Rain streaks: thin bright slanted lines, slightly blurred, blended over a dimmed photo."""
        import cv2

        h, w = image.shape[:2]
        streaks = np.zeros((h, w), np.uint8)
        angle = rng.uniform(-20, 20)
        dx = np.tan(np.radians(angle))
        for _ in range(int(h * w / 1500 * rng.uniform(0.5, 1.5))):
            x, y, length = rng.randrange(w), rng.randrange(h), rng.randint(8, 24)
            cv2.line(streaks, (x, y), (int(x + dx * length), y + length), 255, 1)
        streaks = cv2.GaussianBlur(streaks, (3, 3), 0).astype(np.float32)[..., None] / 255.0
        dimmed = image.astype(np.float32) * 0.85
        return np.clip(dimmed * (1 - 0.5 * streaks) + 220 * 0.5 * streaks, 0, 255).astype(np.uint8)


def _with_noise(transforms: Any, noise: PhotoNoise) -> Any:
    """``transforms`` (an Ultralytics ``Compose``) with ``noise`` before its last, formatting step."""
    if not any(isinstance(t, PhotoNoise) for t in transforms.transforms):
        transforms.transforms.insert(len(transforms.transforms) - 1, noise)
    return transforms


def _insert(trainer: Any, noise: PhotoNoise) -> None:
    """Put ``noise`` into the trainer's training pipeline, now and whenever the dataset rebuilds it."""
    loader = trainer.train_loader
    dataset = loader.dataset
    build = dataset.build_transforms
    dataset.build_transforms = lambda hyp=None: _with_noise(build(hyp), noise)  # closing the mosaic rebuilds
    dataset.transforms = _with_noise(dataset.transforms, noise)
    loader.reset()  # the workers hold a copy of the pipeline: start them again with the new one
    log.info("photo noise in the training pipeline: %s", noise)


def add_photo_noise(model: Any, noise: PhotoNoise) -> None:
    """Register a callback on an Ultralytics ``YOLO`` so that its trainer uses ``noise``.

    The trainer builds its loaders before ``on_pretrain_routine_end`` (on a fresh start and on
    resume alike); the callback inserts the transform there and makes the dataset keep it when it
    rebuilds its transforms for the last epochs without mosaic.
    """
    model.add_callback("on_pretrain_routine_end", lambda trainer: _insert(trainer, noise))
