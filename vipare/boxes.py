"""Pure pre- and post-processing for a YOLO detection head: letterbox, blob, decode, NMS, box mapping.

Every function takes and returns values (no state), so each can be checked with hand-made arrays.
They follow Ultralytics' predictor (``LetterBox``, ``non_max_suppression``, ``scale_boxes``) closely
enough that the ONNX model gives the boxes Ultralytics gives for the same decoded image.

Shapes and units:

- image: ``H x W x 3`` uint8, RGB (the order the model was trained with).
- blob: ``1 x 3 x h x w`` float32 in [0, 1], ``h`` and ``w`` the model input size.
- raw head output: ``1 x (4 + nc) x N``; rows 0-3 are box centre x, centre y, width, height in
  model-input pixels, rows 4.. are per-class scores already passed through a sigmoid.
- boxes: ``K x 4`` float, ``x1, y1, x2, y2`` in pixels, origin top-left.
- sizes (model input, source image, original photo): :class:`~vipare.size.Size`, width and height
  by name; numpy's ``(height, width)`` order appears only where an array is built or indexed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vipare.checks import check_fraction
from vipare.size import Size

__all__ = ["Letterbox", "decode", "iou_matrix", "letterbox", "merge_boxes", "nms", "scale_boxes", "to_blob"]


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: resized by ``scale``, then padded.

    Attributes:
        scale: resize factor chosen for the source image (same on both axes before rounding).
        pad_x: columns of padding added on the left, in model-input pixels.
        pad_y: rows of padding added on the top, in model-input pixels.
        resized: size of the resized image before padding (each side rounded).
        padded: size of the padded result, the model input.
        source: size of the image that was letterboxed.
    """

    scale: float
    pad_x: int
    pad_y: int
    resized: Size
    padded: Size
    source: Size


def letterbox(
    image: np.ndarray,
    new_size: Size,
    stride: int,
    *,
    color: int = 114,
    auto: bool = False,
) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` keeping its aspect ratio and pad it, centred, to ``new_size``.

    Matches Ultralytics' ``LetterBox`` (``scaleup=True``, ``center=True``): bilinear resize to
    ``round(w * r) x round(h * r)`` with ``r = min(new_h / h, new_w / w)``, then split the padding
    with ``round(d - 0.1)`` before and ``round(d + 0.1)`` after, so an odd pixel goes bottom/right.

    Args:
        image: ``H x W x 3`` uint8 array.
        new_size: the model input size, each side a multiple of ``stride``.
        stride: the model's largest stride in pixels.
        color: grey level of the padding.
        auto: pad only up to the next multiple of ``stride`` instead of to ``new_size``
            (for models exported with dynamic input height and width).

    Returns:
        The ``h x w x 3`` uint8 letterboxed image (``new_size`` unless ``auto``) and how it was made.

    Raises:
        ValueError: when ``image`` is not ``H x W x 3`` or the shapes are inconsistent.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an H x W x 3 image, got shape {image.shape}")
    new_w, new_h = new_size
    if stride < 1 or new_h < stride or new_w < stride or new_h % stride or new_w % stride:
        raise ValueError(f"new_size {new_size} must be positive multiples of stride {stride}")
    w, h = Size.of(image)
    r = min(new_h / h, new_w / w)
    # Python's round() like Ultralytics; at least one pixel for extreme panoramas.
    resized_w, resized_h = max(1, round(w * r)), max(1, round(h * r))
    dw, dh = new_w - resized_w, new_h - resized_h
    if auto:
        dw, dh = dw % stride, dh % stride
    if (resized_h, resized_w) != (h, w):
        image = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(
            image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(color, color, color)
        )
    lb = Letterbox(
        scale=r,
        pad_x=left,
        pad_y=top,
        resized=Size(resized_w, resized_h),
        padded=Size(resized_w + left + right, resized_h + top + bottom),
        source=Size(w, h),
    )
    return image, lb


def to_blob(letterboxed: np.ndarray) -> np.ndarray:
    """Turn an ``h x w x 3`` uint8 image into the model's ``1 x 3 x h x w`` float32 input in [0, 1].

    One pass: the channel transpose is a strided read inside the division, written straight into
    the output (values equal Ultralytics' ``x / 255`` bit for bit).
    """
    if letterboxed.ndim != 3 or letterboxed.shape[2] != 3:
        raise ValueError(f"expected an h x w x 3 image, got shape {letterboxed.shape}")
    h, w = letterboxed.shape[:2]
    blob = np.empty((1, 3, h, w), dtype=np.float32)
    np.divide(letterboxed.transpose(2, 0, 1), np.float32(255.0), out=blob[0], dtype=np.float32)
    return blob


def decode(
    output: np.ndarray, *, conf_threshold: float, multi_label: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read candidate boxes from a raw YOLO detection head output.

    Keeps anchors whose best class score is strictly above ``conf_threshold`` (as Ultralytics
    does), and only then converts boxes and picks classes.

    Args:
        output: ``1 x (4 + nc) x N`` array: ``cx, cy, w, h`` in model-input pixels, then
            ``nc`` sigmoid class scores.
        conf_threshold: minimum score in [0, 1]; an anchor must score above it.
        multi_label: keep every class of an anchor that scores above the threshold, not only its
            best one. Evaluation protocols (mAP) use it; detection for people does not.

    Returns:
        ``boxes`` ``K x 4`` float32 xyxy in model-input pixels, ``scores`` ``K`` float32, and
        ``class_ids`` ``K`` int64 (the best class of each kept anchor).

    Raises:
        ValueError: when ``conf_threshold`` is outside [0, 1] or ``output`` has the wrong shape.
    """
    check_fraction("conf_threshold", conf_threshold)
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] < 5:
        raise ValueError(f"expected a 1 x (4 + nc) x N output, got shape {output.shape}")
    pred = output[0]
    class_scores = pred[4:]
    if multi_label:
        class_ids, keep = np.nonzero(class_scores > conf_threshold)
        scores = class_scores[class_ids, keep].astype(np.float32, copy=False)
        candidates = pred[:4, keep]
    else:
        keep = np.flatnonzero(class_scores.max(axis=0) > conf_threshold)
        candidates = pred[:, keep]
        class_ids = candidates[4:].argmax(axis=0)
        scores = candidates[4:][class_ids, np.arange(keep.size)].astype(np.float32, copy=False)
    cx, cy, bw, bh = candidates[:4]
    half_w, half_h = bw / 2, bh / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(
        np.float32, copy=False
    )
    return boxes, scores, class_ids.astype(np.int64, copy=False)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    *,
    iou_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Class-aware greedy non-maximum suppression.

    A box is dropped when it overlaps a higher-scoring box of the same class with IoU strictly
    above ``iou_threshold`` (torchvision's rule, which Ultralytics uses); boxes of different classes
    never suppress each other. Ties in score keep input order.

    Args:
        boxes: ``K x 4`` xyxy.
        scores: ``K`` scores.
        class_ids: ``K`` integer class ids.
        iou_threshold: overlap in [0, 1] above which the lower-scoring box is dropped.
        max_detections: most indices returned (at least 1).

    Returns:
        ``M`` int64 indices into the inputs, highest score first, ``M <= max_detections``.

    Raises:
        ValueError: when a threshold is out of range or the arrays' lengths disagree.
    """
    check_fraction("iou_threshold", iou_threshold)
    if max_detections < 1:
        raise ValueError(f"max_detections must be at least 1, got {max_detections}")
    n = len(scores)
    if boxes.shape != (n, 4) or class_ids.shape != (n,):
        raise ValueError(
            f"boxes {boxes.shape}, scores {scores.shape} and class_ids {class_ids.shape} disagree"
        )
    if n == 0:
        return np.empty(0, dtype=np.int64)
    # Shift each class into its own region so one pass never mixes classes; float64 keeps the
    # IoU of shifted boxes exact enough whatever the number of classes.
    b = boxes.astype(np.float64)
    span = float(b.max() - b.min()) + 1.0
    b = b + (class_ids.astype(np.float64) * span)[:, None]
    x1, y1, x2, y2 = b.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        inter_w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0, None)
        inter_h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0, None)
        inter = inter_w * inter_h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (``N x 4`` xyxy) with every box of ``b`` (``M x 4``).

    Returns:
        ``N x M`` float64; 0 where both boxes are empty.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0.0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0.0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0.0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def merge_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    keep: np.ndarray,
    *,
    iou_threshold: float,
) -> np.ndarray:
    """The boxes NMS kept, each moved to the score-weighted mean of its class's candidates around it.

    Neighbouring anchors of one object each draw a slightly different box; NMS keeps the best-scoring
    one and drops the rest. Averaging the candidates that overlap the kept box by more than
    ``iou_threshold`` (itself included), weighted by score, places its edges where the anchors
    agree: for a pile without clear edges, closer to where a person draws it. Scores, classes and
    which boxes are kept do not change.

    Args:
        boxes: ``K x 4`` xyxy, every candidate that went into :func:`nms`.
        scores: ``K`` scores of the candidates.
        class_ids: ``K`` class ids of the candidates.
        keep: ``M`` indices :func:`nms` returned.
        iou_threshold: overlap in [0, 1] above which a candidate counts towards a kept box; 1 keeps
            the boxes as drawn (no candidate overlaps by more than 1).

    Returns:
        ``M x 4`` float64 xyxy, in the order of ``keep``.

    Raises:
        ValueError: when the threshold is out of range or the arrays' lengths disagree.
    """
    check_fraction("iou_threshold", iou_threshold)
    n = len(scores)
    if boxes.shape != (n, 4) or class_ids.shape != (n,):
        raise ValueError(
            f"boxes {boxes.shape}, scores {scores.shape} and class_ids {class_ids.shape} disagree"
        )
    merged = boxes[keep].astype(np.float64)
    if iou_threshold >= 1.0 or len(keep) == 0:
        return merged
    kept_classes = class_ids[keep]
    for cls in np.unique(kept_classes):
        rows = np.flatnonzero(kept_classes == cls)
        pool = np.flatnonzero(class_ids == cls)
        weights = np.where(iou_matrix(merged[rows], boxes[pool]) > iou_threshold, scores[pool].astype(np.float64), 0.0)
        # a kept box always counts towards itself, even an empty one whose IoU with itself is 0
        weights[np.arange(len(rows)), np.searchsorted(pool, keep[rows])] = scores[keep[rows]]
        total = weights.sum(axis=1, keepdims=True)
        merged[rows] = np.divide(weights @ boxes[pool].astype(np.float64), total,
                                 out=merged[rows], where=total > 0)
    return merged


def scale_boxes(
    boxes: np.ndarray,
    letterbox: Letterbox,
    *,
    original_size: Size | None = None,
) -> np.ndarray:
    """Map boxes from model-input pixels back to pixels of the original image, clipped to it.

    Each axis uses the resize actually applied (``resized / source``, sides rounded to whole
    pixels) rather than the unrounded ``scale``, as current Ultralytics does, so the resized strip
    maps exactly onto the whole image.

    Args:
        boxes: ``K x 4`` xyxy in model-input pixels.
        letterbox: how the image was fitted into the model input.
        original_size: size of the full-size, orientation-corrected image when the letterboxed
            array was a reduced decode (JPEG draft mode); defaults to ``letterbox.source``.

    Returns:
        ``K x 4`` float64 xyxy in original-image pixels, within ``[0, width] x [0, height]``.
    """
    orig_w, orig_h = letterbox.source if original_size is None else original_size
    resized_w, resized_h = letterbox.resized
    out = boxes.astype(np.float64)  # a copy: the caller's array is left alone
    out[:, [0, 2]] = np.clip((out[:, [0, 2]] - letterbox.pad_x) * (orig_w / resized_w), 0.0, orig_w)
    out[:, [1, 3]] = np.clip((out[:, [1, 3]] - letterbox.pad_y) * (orig_h / resized_h), 0.0, orig_h)
    return out
