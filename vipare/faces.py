"""The face detector: YuNet on onnxruntime, finding the faces OpenCV's ``cv2.FaceDetectorYN`` finds.

Three stages, the outer two pure::

    preprocess   pad to the divisor, BGR float blob    face_blob(image, divisor) -> blob
    inference    onnxruntime session.run               FaceDetector.run(blob) -> outputs by name
    postprocess  score and box per anchor, then NMS    decode_faces(outputs, ...), suppress(...)

Each stage does what OpenCV's ``FaceDetectorYN`` does (``modules/objdetect/src/face_detect.cpp``,
OpenCV 4.8 and later, for the YuNet of 2023 with ``cls``/``obj``/``bbox``/``kps`` outputs), so that
the faces are the same, in the same order, for the same threshold:

- the photo runs at its own size, padded with zeros on the bottom and the right to a multiple of
  the model's largest stride (32): the blob is BGR, 0-255, not normalised;
- for each stride ``s`` and each cell ``(row, col)`` of its grid, in that order, the score is
  ``sqrt(clip(cls, 0, 1) * clip(obj, 0, 1))``; a cell scoring at least the threshold gives a box of
  centre ``((col + dx) * s, (row + dy) * s)`` and size ``(exp(dw) * s, exp(dh) * s)``;
- when two or more cells do, OpenCV's ``dnn::NMSBoxes`` keeps them, best first: on boxes whose
  ``x, y, w, h`` are cut to whole pixels, a box overlapping a kept one by more than ``nms_threshold``
  (IoU, 0.3) is dropped, and only the ``top_k`` (5000) best scoring strictly above the threshold take part.

The landmarks (``kps_*``) are not read: vipare blurs the boxes. ``tests/test_faces.py`` compares the
faces with ``cv2.FaceDetectorYN``'s on drawn faces and street photos; ``benchmarks/bench_faces.py``
times both and compares what they find.

YuNet as published declares a fixed ``1 x 3 x 640 x 640`` input; its graph works at any size, so
the declaration is freed at load time (:func:`vipare.onnx_shapes.free_image_size`, in memory; the
file is left as it is).

Thread safety: nothing is mutated after ``__init__`` and onnxruntime's ``InferenceSession.run`` is
thread-safe, so one :class:`FaceDetector` serves all threads without a lock. Each ``run`` uses up to
``intra_op_threads`` threads, as the deposit detector's (:mod:`vipare.detection`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from vipare.checks import check_fraction, check_threads
from vipare.detection import ORT_ERRORS, cpu_session, read_model
from vipare.errors import ModelError
from vipare.onnx_shapes import free_image_size
from vipare.size import Size

__all__ = ["NMS_THRESHOLD", "TOP_K", "FaceDetector", "Faces", "decode_faces", "face_blob", "suppress"]

NMS_THRESHOLD: Final = 0.3
"""OpenCV's default IoU above which ``FaceDetectorYN`` drops the lower-scoring of two faces."""
TOP_K: Final = 5000
"""OpenCV's default number of best-scoring candidates ``FaceDetectorYN`` keeps before NMS."""

_SCORE_OUTPUT = re.compile(r"cls_(\d+)")


@dataclass(frozen=True, slots=True)
class Faces:
    """Faces found in an image, best first (OpenCV's order).

    Attributes:
        boxes: ``K x 4`` float32, ``x1, y1, x2, y2`` in pixels of the image the detector was given.
        scores: ``K`` float32 in [0, 1].
    """

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.scores)


def face_blob(image: NDArray[np.uint8], divisor: int) -> NDArray[np.float32]:
    """The model input for an image: BGR, 0-255, zero-padded on the bottom and right to ``divisor``.

    Args:
        image: ``H x W x 3`` uint8, RGB.
        divisor: each side of the blob is the image's rounded up to a multiple of this (the model's
            largest stride).

    Returns:
        ``1 x 3 x H' x W'`` float32, channels B, G, R; the image in the top-left ``H x W``, zeros elsewhere.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
    if divisor < 1:
        raise ValueError(f"divisor must be at least 1, got {divisor}")
    height, width = image.shape[:2]
    blob = np.zeros((1, 3, -(-height // divisor) * divisor, -(-width // divisor) * divisor), dtype=np.float32)
    blob[0, :, :height, :width] = image.transpose(2, 0, 1)[::-1]
    return blob


def decode_faces(
    outputs: Mapping[str, NDArray[np.float32]], padded: Size, strides: Sequence[int], *, score_threshold: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Every anchor scoring at least ``score_threshold``, as a box, in OpenCV's order (stride, row, column).

    Args:
        outputs: ``cls_<s>`` and ``obj_<s>`` (``1 x N x 1``) and ``bbox_<s>`` (``1 x N x 4``: ``dx, dy,
            dw, dh``) for each stride ``s``, ``N = (H' / s) * (W' / s)`` cells of the grid, row by row.
        padded: the blob's size ``W' x H'``.
        strides: the strides, in the order OpenCV reads them (increasing).
        score_threshold: in [0, 1].

    Returns:
        Boxes ``K x 4`` float32 as ``x, y, w, h`` (top-left corner and size, blob pixels) and their
        ``K`` float32 scores.
    """
    threshold = np.float32(score_threshold)
    boxes: list[NDArray[np.float32]] = []
    scores: list[NDArray[np.float32]] = []
    for stride in strides:
        cols = padded.width // stride
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0.0, 1.0)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0.0, 1.0)
        score = np.sqrt(cls * obj)
        cells = np.flatnonzero(score >= threshold)
        delta = outputs[f"bbox_{stride}"].reshape(-1, 4)[cells]
        step = np.float32(stride)
        cx = ((cells % cols).astype(np.float32) + delta[:, 0]) * step
        cy = ((cells // cols).astype(np.float32) + delta[:, 1]) * step
        w = np.exp(delta[:, 2]) * step
        h = np.exp(delta[:, 3]) * step
        half = np.float32(2.0)
        boxes.append(np.stack([cx - w / half, cy - h / half, w, h], axis=1).astype(np.float32, copy=False))
        scores.append(score[cells].astype(np.float32, copy=False))
    if not boxes:
        return np.empty((0, 4), np.float32), np.empty(0, np.float32)
    return np.concatenate(boxes), np.concatenate(scores)


def suppress(
    boxes: NDArray[np.float32],
    scores: NDArray[np.float32],
    *,
    score_threshold: float,
    iou_threshold: float = NMS_THRESHOLD,
    top_k: int = TOP_K,
) -> NDArray[np.int64]:
    """OpenCV's ``dnn::NMSBoxes`` on integer rectangles: the indices of the boxes kept, best first.

    Each ``x, y, w, h`` is cut to a whole number of pixels (towards zero, as C++'s ``int()``); the
    boxes scoring strictly above ``score_threshold`` are ordered by score (ties in input order) and
    the best ``top_k`` kept; then a box is kept when its overlap with every kept box is at most
    ``iou_threshold``, the overlap being OpenCV's ``1 - jaccardDistance`` in single precision.

    Args:
        boxes: ``K x 4`` ``x, y, w, h`` in pixels.
        scores: ``K`` scores.
        score_threshold: candidates must score above this.
        iou_threshold: in [0, 1].
        top_k: most candidates (0 or less: all).

    Returns:
        int64 indices into ``boxes``, highest score first.
    """
    check_fraction("iou_threshold", iou_threshold)
    if boxes.shape != (len(scores), 4):
        raise ValueError(f"boxes {boxes.shape} and scores {scores.shape} disagree")
    candidates = np.flatnonzero(scores > np.float32(score_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if top_k > 0:
        order = order[:top_k]
    rects = np.trunc(boxes).astype(np.int64)
    x1, y1 = rects[:, 0], rects[:, 1]
    x2, y2 = x1 + rects[:, 2], y1 + rects[:, 3]
    areas = rects[:, 2] * rects[:, 3]
    limit = np.float32(iou_threshold)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        inter_w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        inter_h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.where((inter_w > 0) & (inter_h > 0), inter_w * inter_h, 0).astype(np.float64)
        total = (areas[i] + areas[rest]).astype(np.float64)
        union = total - inter
        iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)  # two empty boxes: the same
        overlap = np.float32(1.0) - (1.0 - iou).astype(np.float32)
        order = rest[overlap <= limit]
    return np.asarray(keep, dtype=np.int64)


class FaceDetector:
    """YuNet (``weights/yunet_n_640_640.onnx``) run with onnxruntime on the CPU.

    Args:
        model_path: the YuNet ``.onnx`` file (outputs ``cls_<s>``, ``obj_<s>``, ``bbox_<s>`` per stride).
        score_threshold: a face must score at least this, in [0, 1].
        intra_op_threads: onnxruntime threads per inference; 0 lets onnxruntime use every core.
        nms_threshold: IoU above which the lower-scoring of two faces is dropped, in [0, 1].
        top_k: most candidates before NMS (0: all).

    Raises:
        ModelError: the file is missing, not ONNX, or not a YuNet face model.
        ValueError: a threshold or count is out of range.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        score_threshold: float,
        intra_op_threads: int,
        nms_threshold: float = NMS_THRESHOLD,
        top_k: int = TOP_K,
    ) -> None:
        check_fraction("score_threshold", score_threshold)
        check_fraction("nms_threshold", nms_threshold)
        check_threads(intra_op_threads)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        path = Path(model_path)
        data = read_model(path, what="face model", variable="VIPARE_FACE_MODEL_PATH")
        try:
            data = free_image_size(data)
        except ValueError as exc:
            raise ModelError(f"{path} is not a usable YuNet face model: {exc}") from exc

        try:
            self._session = cpu_session(data, intra_op_threads)
        except ORT_ERRORS as exc:
            raise ModelError(f"{path} is not a usable YuNet face model: {exc}") from exc
        self._input_name = self._session.get_inputs()[0].name
        names = {node.name for node in self._session.get_outputs()}
        self.strides = tuple(sorted(int(m[1]) for name in names if (m := _SCORE_OUTPUT.fullmatch(name))))
        self._outputs = [f"{kind}_{s}" for s in self.strides for kind in ("cls", "obj", "bbox")]
        if not self.strides or not set(self._outputs) <= names:
            raise ModelError(
                f"{path} is not a YuNet face model: it needs outputs cls_<stride>, obj_<stride> and bbox_<stride>, "
                f"has {sorted(names)} (set VIPARE_FACE_MODEL_PATH)"
            )
        self.divisor = max(self.strides)

    def warm_up(self, size: Size) -> None:
        """Run one inference on a blank image of ``size``, so that the first photo is not slow.

        Raises:
            ModelError: the inference failed.
        """
        self.detect(np.zeros((size.height, size.width, 3), dtype=np.uint8))

    def run(self, blob: NDArray[np.float32]) -> dict[str, NDArray[np.float32]]:
        """Run the session on a blob from :func:`face_blob`; returns the score and box outputs by name."""
        try:
            outputs = self._session.run(self._outputs, {self._input_name: blob})
        except ORT_ERRORS as exc:
            raise ModelError(f"face inference failed: {exc}") from exc
        return {name: np.asarray(out) for name, out in zip(self._outputs, outputs, strict=True)}

    def detect(self, image: NDArray[np.uint8]) -> Faces:
        """The faces in one image.

        Args:
            image: ``H x W x 3`` uint8, RGB.

        Returns:
            The faces, best first, boxes in pixels of ``image``.
        """
        blob = face_blob(image, self.divisor)
        padded = Size(blob.shape[3], blob.shape[2])
        boxes, scores = decode_faces(self.run(blob), padded, self.strides, score_threshold=self.score_threshold)
        if len(scores) > 1:  # as OpenCV: NMS, and its strict threshold, only between two faces or more
            keep = suppress(
                boxes, scores, score_threshold=self.score_threshold, iou_threshold=self.nms_threshold, top_k=self.top_k
            )
            boxes, scores = boxes[keep], scores[keep]
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
        return Faces(xyxy, scores)
