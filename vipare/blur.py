"""Making private regions unreadable: each is averaged down to a few cells and smoothly scaled back up.

Pure numpy/OpenCV. Three cells across a face, a head or a plate band (:func:`blur_regions`,
:func:`blur`), or, in a plate band, cells of about half a plate's height (``fine_plates``): either
way nothing with high frequencies is left (no letters, no features). The regions come from
:mod:`vipare.privacy`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from vipare.privacy import PLATE_TOP, Box, Region

__all__ = ["FACE_CELLS", "PLATE_CELL", "blur", "blur_regions"]

FACE_CELLS: Final = 3
"""Cells across the shorter side of a face or head after the blur's averaging."""
PLATE_CELL: Final = 0.045
"""Side of a plate band's fine blur cells, as a fraction of the vehicle's height (about half a plate's height)."""


def blur_regions(image: NDArray[np.uint8], boxes: Iterable[Box], *, cells: int = FACE_CELLS) -> NDArray[np.uint8]:
    """A copy of ``image`` where every box is blurred beyond reading.

    Each box is averaged down to ``cells`` cells across its shorter side (``INTER_AREA``) and scaled
    back up bilinearly: what is left varies smoothly over a sixth of a face or a plate band, with no
    edges to read letters or features from. Overlapping boxes are each blurred in turn.

    Args:
        image: pixels, shape ``(H, W)`` or ``(H, W, C)``, uint8.
        boxes: ``x1, y1, x2, y2`` in pixels of ``image``; clipped to it, empty ones skipped.
        cells: cells across the shorter side of a box after averaging (>= 1); fewer blur more.

    Returns:
        The blurred copy, same shape and dtype (``image`` itself is not modified).
    """
    if cells < 1:
        raise ValueError(f"cells must be at least 1, got {cells}")
    out = image.copy()
    for box in boxes:
        _blur_box(out, box, _short_side(box) / cells)
    return out


def blur(
    image: NDArray[np.uint8],
    regions: Iterable[Region],
    *,
    fine_plates: bool = False,
    in_place: bool = False,
    orientation: int = 1,
) -> NDArray[np.uint8]:
    """A copy of ``image`` with every region blurred beyond reading, cells sized on the whole region.

    Faces and heads are averaged down to :data:`FACE_CELLS` cells across their shorter side; plate
    bands too, or with ``fine_plates`` to cells of :data:`PLATE_CELL` of their vehicle's height, about
    half a plate's height: no letter survives either way, and with fine cells a large car seen close
    stays a car instead of a smooth dark slab that the deposit detector may take for a bin or a bag
    (the service takes the fine cells only when the coarse ones change the photo's
    verdict).

    With ``in_place``, ``image`` itself is blurred and returned: for a photo decoded only to be blurred,
    the copy of its 36 MB (12 MP) would cost more than the blur.

    ``orientation`` is the EXIF orientation (1 to 8) of ``image`` as stored, the regions being in
    pixels of the upright picture: each box is moved onto the stored pixels and blurred there, so a
    photo is blurred without being turned (turning 12 MP costs a third of decoding them) and keeps
    its orientation for the viewer.
    """
    out = image if in_place else image.copy()
    height, width = out.shape[:2]
    upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    for region in regions:
        whole = region.whole or region.box
        if fine_plates and region.kind == "plate":
            cell = PLATE_CELL * (whole[3] - whole[1]) / (1.0 - PLATE_TOP)  # the vehicle's height
        else:
            cell = _short_side(whole) / FACE_CELLS
        _blur_box(out, _stored_box(region.box, orientation, upright), cell)
    return out


def _stored_box(box: Box, orientation: int, upright: tuple[int, int]) -> Box:
    """``box`` in pixels of the upright picture (``upright``: its width, height) in pixels of the
    picture as stored with the EXIF ``orientation`` (turned back as ``ImageOps.exif_transpose`` turns it)."""
    x1, y1, x2, y2 = box
    width, height = upright
    if orientation in (2, 3, 6, 7):  # mirrored left to right once upright
        x1, x2 = width - x2, width - x1
    if orientation in (3, 4, 7, 8):  # mirrored top to bottom once upright
        y1, y2 = height - y2, height - y1
    if orientation in (5, 6, 7, 8):  # stored with rows and columns swapped
        x1, y1, x2, y2 = y1, x1, y2, x2
    return x1, y1, x2, y2


def _blur_box(out: NDArray[np.uint8], box: Box, cell: float) -> None:
    height, width = out.shape[:2]
    x1, y1, x2, y2 = box
    left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
    right, bottom = min(width, math.ceil(x2)), min(height, math.ceil(y2))
    if right - left < 2 or bottom - top < 2:
        return
    patch = out[top:bottom, left:right]
    step = max(1.0, cell)
    small = cv2.resize(
        patch,
        (max(1, round((right - left) / step)), max(1, round((bottom - top) / step))),
        interpolation=cv2.INTER_AREA,
    )
    out[top:bottom, left:right] = cv2.resize(small, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)


def _short_side(box: Box) -> float:
    return min(box[2] - box[0], box[3] - box[1])
