"""Draw detections on an image, for people checking what the model saw."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vipare.results import Detection
from vipare.size import Size

__all__ = ["annotate"]

# RGB colours: deposits in warm colours, context classes in blue.
_DEPOSIT_COLOUR = (230, 40, 40)
_CONTEXT_COLOUR = (40, 110, 230)


def annotate(
    image: np.ndarray,
    detections: Sequence[Detection],
    *,
    original_size: Size | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with boxes and labels drawn.

    Args:
        image: H x W x 3 uint8 RGB array, possibly a reduced decode of the original photo.
        detections: boxes in pixels of the original photo.
        original_size: size of the original photo; defaults to the array's size.

    Returns:
        H x W x 3 uint8 RGB array.
    """
    out = np.ascontiguousarray(image).copy()
    size = Size.of(out)
    original = size if original_size is None else original_size
    sx, sy = size.width / original.width, size.height / original.height
    thickness = max(2, round(size.long_side / 400))
    font_scale = max(0.4, size.long_side / 1600)
    for d in detections:
        x1, y1, x2, y2 = d.box
        p1 = (round(x1 * sx), round(y1 * sy))
        p2 = (round(x2 * sx), round(y2 * sy))
        colour = _DEPOSIT_COLOUR if d.deposit else _CONTEXT_COLOUR
        cv2.rectangle(out, p1, p2, colour, thickness, cv2.LINE_AA)
        text = f"{d.label} {d.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        ty = max(p1[1], th + base)
        cv2.rectangle(out, (p1[0], ty - th - base), (p1[0] + tw, ty), colour, -1)
        cv2.putText(
            out, text, (p1[0], ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness,
            cv2.LINE_AA,
        )
    return out
