"""A second, closer look at a photo in which the whole-image pass found no deposit.

The model sees the whole photo at its input size (480 px on the long side): a bag 20 m away in a
12 MP phone photo is then a few pixels wide. The decode keeps more than that (a JPEG is reduced to
at least 1.5 times the input size, :data:`vipare.imaging.DRAFT_OVERSAMPLE`), so the photo can be
looked at again in a 2 x 2 grid of overlapping tiles, each seen at the model's input size: about
1.7 times the detail of the first pass. The deposits the tiles find join the first pass's
detections through the same class-aware NMS; the verdict is then decided on all of them. What else
the tiles find (a bin cut in two by a tile's edge) is left out: the first pass saw it whole. A tile
sees a part of the street out of its context, so its deposits must score more than the whole
photo's (``min_scores``: the model's calibrated tile thresholds, see :func:`vipare.pipeline.tile_thresholds`).

It costs four more inferences, spent only on photos in which the first pass found nothing (the
clean ones, mostly), and a tile sees less context: both are measured on the model card.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vipare.boxes import nms
from vipare.detection import Detector
from vipare.results import Detection
from vipare.size import Size

__all__ = ["GRID", "OVERLAP", "TILE_MARGIN", "detect_in_tiles", "holds_tiles", "tile_windows"]

GRID = 2
OVERLAP = 0.25
TILE_MARGIN = 0.25
"""How much more than its class's verdict threshold a deposit found only in a tile must score, for a
model that carries no calibrated tile thresholds."""


def holds_tiles(size: Size, detector: Detector) -> bool:
    """Whether a decode of ``size`` (the reduced copy) can be looked at again in tiles: its long side
    holds at least the model's input size, so a tile adds detail instead of upscaling."""
    return max(size) >= max(detector.input_size)


def tile_windows(size: Size, grid: int = GRID, overlap: float = OVERLAP) -> list[tuple[int, int, int, int]]:
    """``grid x grid`` windows ``(x0, y0, x1, y1)`` covering an image of ``size``, neighbours
    overlapping by ``overlap`` of a window's side."""
    if grid < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"grid must be >= 1 and overlap within [0, 1), got {grid}, {overlap}")

    def spans(length: int) -> list[tuple[int, int]]:
        side = length / (grid - (grid - 1) * overlap)
        step = side * (1.0 - overlap)
        return [(round(i * step), min(length, round(i * step + side))) for i in range(grid)]

    return [(x0, y0, x1, y1) for y0, y1 in spans(size.height) for x0, x1 in spans(size.width)]


def detect_in_tiles(
    detector: Detector,
    image: np.ndarray,
    first: list[Detection],
    *,
    original_size: Size | None = None,
    min_scores: Mapping[str, float] | None = None,
) -> list[Detection]:
    """The first pass's detections merged with the deposits a tiled pass over ``image`` finds.

    Args:
        detector: the loaded detector.
        image: the ``H x W x 3`` uint8 RGB array the first pass saw (a reduced decode, maybe).
        first: the first pass's detections, boxes in original-image pixels.
        original_size: size of the full-size image when ``image`` is a reduced decode.
        min_scores: per deposit class, the score a tile's deposit must reach to be kept (a class
            missing from it is kept from the detector's own score threshold); all kept when None.

    Returns:
        All detections after class-aware NMS, best score first, capped at the detector's maximum.
    """
    height, width = image.shape[:2]
    size = original_size or Size(width, height)
    sx, sy = size.width / width, size.height / height
    found = list(first)
    for x0, y0, x1, y1 in tile_windows(Size(width, height)):
        tile = np.ascontiguousarray(image[y0:y1, x0:x1])
        tile_size = Size(round((x1 - x0) * sx), round((y1 - y0) * sy))
        for d in detector.detect(tile, original_size=tile_size):
            if not d.deposit or (min_scores is not None and d.score < min_scores.get(d.label, 0.0)):
                continue
            bx0, by0, bx1, by1 = d.box
            box = (bx0 + x0 * sx, by0 + y0 * sy, bx1 + x0 * sx, by1 + y0 * sy)
            area = (box[2] - box[0]) * (box[3] - box[1]) / float(size.width * size.height)
            found.append(d.model_copy(update={"box": box, "area_fraction": min(max(area, 0.0), 1.0)}))
    if not found:
        return []
    keep = nms(
        np.array([d.box for d in found], dtype=np.float32),
        np.array([d.score for d in found], dtype=np.float32),
        np.array([d.class_id for d in found], dtype=np.int64),
        iou_threshold=detector.iou_threshold,
        max_detections=detector.max_detections,
    )
    return [found[i] for i in keep.tolist()]
