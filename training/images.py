"""The photos a training tool feeds a model: found in name order, letterboxed as Ultralytics' predictor does.

cv2, torch and ultralytics are imported inside :func:`letterbox_tensor`: importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGE_SUFFIXES", "image_files", "letterbox_tensor"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
"""The photo files Ultralytics reads from a dataset folder (lower case)."""


def image_files(folder: Path, count: int | None = None) -> list[Path]:
    """The first ``count`` photos (all when None) of ``folder``, in name order so that runs repeat."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]


def letterbox_tensor(paths: Sequence[Path], imgsz: int) -> torch.Tensor:
    """Load photos and letterbox them the way Ultralytics' predictor does.

    Args:
        paths: image files.
        imgsz: square network input size in pixels.

    Returns:
        float32 tensor, shape (len(paths), 3, imgsz, imgsz), RGB in [0, 1].

    Raises:
        ValueError: when OpenCV cannot read one of the files.
    """
    import cv2
    import torch
    from ultralytics.data.augment import LetterBox

    letterbox = LetterBox(new_shape=(imgsz, imgsz), auto=False)
    arrays = []
    for path in paths:
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise ValueError(f"unreadable image {path}")
        boxed = np.asarray(letterbox(image=bgr))
        arrays.append(np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1)))
    return torch.from_numpy(np.stack(arrays)).float() / 255.0
