"""The annotated variant of a stored photo: upright, the detections' boxes drawn, as a JPEG.

Made on request, never stored.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from vipare.results import Detection

__all__ = ["render_annotated"]


def render_annotated(
    path: Path, detections: Sequence[Detection], *, max_side: int = 1600, max_pixels: int = 120_000_000
) -> bytes:
    """The stored photo, upright, with the detections' boxes drawn, as a JPEG at most ``max_side`` wide or high.

    Args:
        path: a stored photo.
        detections: boxes in pixels of the upright original photo.
        max_side: longest side of the result, pixels.
        max_pixels: the intake's pixel limit.
    """
    from vipare.draw import annotate  # OpenCV: only where a page asks for a drawing
    from vipare.imaging import load_image

    half = max(1, max_side // 2)  # load_image keeps twice the target size when it reduces a JPEG
    image = load_image(path, max_pixels=max_pixels, target_size=(half, half))
    drawn = annotate(image.array, detections, original_size=(image.info.width, image.info.height))
    picture = Image.fromarray(drawn)
    picture.thumbnail((max_side, max_side))  # only ever shrinks
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()
