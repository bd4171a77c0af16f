"""The annotated variant of a stored photo: upright, the detections' boxes drawn, as a JPEG.

Drawn once per stored file and detections: :mod:`serving.photos.annotated` keeps the result.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from vipare.results import Detection
from vipare.size import Size

__all__ = ["render_annotated"]


def render_annotated(
    photo: bytes | Path,
    detections: Sequence[Detection],
    *,
    max_side: int = 1600,
    max_pixels: int = 120_000_000,
    max_non_jpeg_pixels: int = 50_000_000,
) -> bytes:
    """The stored photo, upright, with the detections' boxes drawn, as a JPEG at most ``max_side`` wide or high.

    Args:
        photo: a stored photo's file, or its bytes.
        detections: boxes in pixels of the upright original photo.
        max_side: longest side of the result, pixels.
        max_pixels: the intake's pixel limit.
        max_non_jpeg_pixels: the intake's pixel limit for PNG, WebP and HEIC.

    Returns:
        The JPEG's bytes: ``max_side`` on its long side, or the photo's own size when smaller.
    """
    from vipare.draw import annotate  # OpenCV: only where a page asks for a drawing
    from vipare.imaging import load_image

    box = Size(max_side, max_side)
    # No margin over the box (load_image's default 1.5x is the detector's): a JPEG decodes at the
    # strongest reduction (1/2, 1/4, 1/8) that still covers the box, so the resize below only shrinks.
    image = load_image(
        photo, max_pixels=max_pixels, max_non_jpeg_pixels=max_non_jpeg_pixels, target_size=box, draft_oversample=1.0
    )
    drawn = annotate(image.array, detections, original_size=image.info.size)
    picture = Image.fromarray(drawn)
    picture.thumbnail(box)  # only ever shrinks
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()
