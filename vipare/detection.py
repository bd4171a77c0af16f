"""The ONNX detector: one onnxruntime CPU session, read-only after load, shared by every caller.

Three stages, the outer two pure (see :mod:`vipare.boxes`)::

    preprocess   letterbox + blob                     Detector.preprocess(image) -> (blob, Letterbox)
    inference    onnxruntime session.run              Detector.run(blob) -> raw head output
    postprocess  decode + class-aware NMS + map back  Detector.postprocess(raw, lb, ...) -> detections

The model file is the contract: class names, input size and stride are read from the metadata the
Ultralytics exporter writes (:mod:`vipare.model_metadata`), and a model without them is refused at
load time.

Thread safety: nothing is mutated after ``__init__`` and onnxruntime's ``InferenceSession.run`` is
thread-safe, so one ``Detector`` serves all threads without a lock.

CPU budget: each ``session.run`` uses up to ``intra_op_threads`` threads (0 = onnxruntime's default,
one per core). With several processes (uvicorn workers) on one machine, keep
``workers x intra_op_threads <= cores`` so sessions do not fight over cores.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    RuntimeException,
)
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

from vipare.boxes import Letterbox, decode, letterbox, merge_boxes, nms, scale_boxes, to_blob
from vipare.checks import check_fraction, check_threads
from vipare.errors import ModelError
from vipare.model_metadata import parse_metadata
from vipare.results import Detection, ModelInfo
from vipare.settings import Settings
from vipare.size import Size
from vipare.taxonomy import is_deposit

__all__ = ["ORT_ERRORS", "Detector", "cpu_session", "read_model"]

ORT_ERRORS: tuple[type[Exception], ...] = (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    OrtNotImplemented,
    RuntimeException,
    RuntimeError,
)
"""onnxruntime's own exception types (they derive from Exception directly, not RuntimeError)."""


def read_model(path: Path, *, what: str, variable: str) -> bytes:
    """The bytes of a model file.

    Args:
        path: the file.
        what: how the errors name it (``model file``, ``face model``).
        variable: the ``VIPARE_*`` setting that names the file, which the errors point to.

    Raises:
        ModelError: the file does not exist, cannot be read or is empty.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"{what} {path} does not exist (set {variable})") from exc
    except OSError as exc:
        raise ModelError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not data:
        raise ModelError(f"{what} {path} is empty (set {variable})")
    return data


def cpu_session(model: bytes, intra_op_threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session of a serialized model, as vipare runs every model.

    One inference at a time per call (sequential, one inter-op thread), up to ``intra_op_threads``
    threads inside each operator (0: onnxruntime's default, one per core), all graph optimisations.

    Raises:
        One of :data:`ORT_ERRORS`: onnxruntime cannot load the model.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


MIRROR_STRIDES = (8, 16, 32)  # YOLO11's detection levels, in the order its head concatenates their anchors


@functools.lru_cache(maxsize=8)
def mirror_index(height: int, width: int, strides: tuple[int, ...] = MIRROR_STRIDES) -> np.ndarray:
    """For each anchor of a ``height x width`` input, the one that sees the same place in its mirror image
    (column ``c`` of a stride's grid and column ``columns - 1 - c``); read-only, made once per input size."""
    parts, offset = [], 0
    for stride in strides:
        rows, columns = height // stride, width // stride
        parts.append(np.arange(rows * columns).reshape(rows, columns)[:, ::-1].ravel() + offset)
        offset += rows * columns
    index = np.concatenate(parts)
    index.flags.writeable = False
    return index


class Detector:
    """A YOLO detector exported to ONNX by Ultralytics, run with onnxruntime on the CPU.

    Args:
        model_path: the ``.onnx`` file.
        conf_threshold: a detection must score above this, in [0, 1].
        iou_threshold: class-aware NMS drops a box overlapping a better one of its class by more
            than this IoU, in [0, 1].
        max_detections: most detections returned per image (at least 1).
        intra_op_threads: onnxruntime threads per inference; 0 lets onnxruntime use every core.
        warmup: call :meth:`warm_up` at load. A service that reports readiness passes False and
            calls :meth:`warm_up` itself, so the model warms up once, when readiness can show it.
        mirrored: run the model on the photo and on its mirror image and average the two outputs
            anchor by anchor (:meth:`run`): fewer one-view false alarms, twice the inference time.
        merge_iou: each box NMS keeps becomes the score-weighted mean of its class's candidates that
            overlap it by more than this IoU (:func:`vipare.boxes.merge_boxes`); 1, the default,
            keeps the boxes as the network drew them, as Ultralytics does.

    Raises:
        ModelError: the file is missing, unreadable, not ONNX, or its inputs/outputs do not fit a
            YOLO detection head for its class names.
        ModelMetadataError: the model lacks ``names``, ``imgsz`` or ``stride`` metadata.
        ValueError: a threshold or count is out of range.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
        intra_op_threads: int,
        warmup: bool = True,
        mirrored: bool = False,
        merge_iou: float = 1.0,
    ) -> None:
        check_fraction("conf_threshold", conf_threshold)
        check_fraction("iou_threshold", iou_threshold)
        check_fraction("merge_iou", merge_iou)
        if max_detections < 1:
            raise ValueError(f"max_detections must be at least 1, got {max_detections}")
        check_threads(intra_op_threads)
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.merge_iou = merge_iou
        self.max_detections = max_detections
        self.mirrored = mirrored

        path = Path(model_path)
        data = read_model(path, what="model file", variable="VIPARE_MODEL_PATH")

        try:
            # Load from the bytes just hashed, so the sha256 is that of the weights in use.
            self._session = cpu_session(data, intra_op_threads)
        except ORT_ERRORS as exc:
            raise ModelError(f"{path} is not a usable ONNX model: {exc}") from exc

        self._meta = parse_metadata(self._session.get_modelmeta().custom_metadata_map)
        self._input_name, self._dynamic = self._check_input(path)
        self._output_name = self._check_output(path)
        self._info = ModelInfo(
            name=path.stem,
            sha256=hashlib.sha256(data).hexdigest(),
            classes=list(self._meta.names),
            input_size=self._meta.input_size.hw,
            stride=self._meta.stride,
            version=self._meta.version,
            taxonomy_version=self._meta.taxonomy_version,
        )
        if warmup:
            self.warm_up()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, model_path: str | os.PathLike[str] | None = None, warmup: bool = True
    ) -> Detector:
        """Load ``settings.model_path`` with the thresholds and thread count from ``settings``.

        Args:
            settings: model path, thresholds and thread count.
            model_path: load this file instead of ``settings.model_path``, with the same settings.
            warmup: call :meth:`warm_up` at load (see the class's arguments).
        """
        return cls(
            settings.model_path if model_path is None else model_path,
            conf_threshold=settings.conf_threshold,
            iou_threshold=settings.iou_threshold,
            max_detections=settings.max_detections,
            intra_op_threads=settings.intra_op_threads,
            warmup=warmup,
            mirrored=settings.mirrored_view,
            merge_iou=settings.box_merge_iou,
        )

    def warm_up(self) -> None:
        """Run one inference on a blank model input and check the output's shape.

        The first runs of a session are slow; after this one, the first photo is not. A model whose
        output does not match its metadata fails here rather than on a photo.

        Raises:
            ModelError: the inference failed or its output does not fit the class names.
        """
        width, height = self._meta.input_size
        self._check_raw(self.run(np.zeros((1, 3, height, width), dtype=np.float32)))

    def _check_input(self, path: Path) -> tuple[str, bool]:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{path} has {len(inputs)} inputs; a YOLO detector has one image input")
        node = inputs[0]
        if node.type != "tensor(float)":
            raise ModelError(f"{path} input '{node.name}' is {node.type}; vipare feeds tensor(float)")
        shape = list(node.shape)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ModelError(f"{path} input '{node.name}' has shape {shape}; expected 1 x 3 x height x width")
        height, width = shape[2:]
        dynamic = not (isinstance(height, int) and isinstance(width, int))
        expected = self._meta.input_size
        if not dynamic and (width, height) != expected:
            raise ModelError(
                f"{path} input is {height} x {width} (height x width) but its metadata 'imgsz' says "
                f"{expected.height} x {expected.width}"
            )
        return node.name, dynamic

    def _check_output(self, path: Path) -> str:
        node = self._session.get_outputs()[0]
        shape = list(node.shape)
        rows = 4 + len(self._meta.names)
        if len(shape) != 3 or (isinstance(shape[1], int) and shape[1] != rows):
            raise ModelError(
                f"{path} output '{node.name}' has shape {shape}; a YOLO detection head for "
                f"{len(self._meta.names)} classes gives 1 x {rows} x anchors"
            )
        return str(node.name)

    def _check_raw(self, raw: np.ndarray) -> None:
        rows = 4 + len(self._meta.names)
        if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[1] != rows:
            raise ModelError(
                f"model output has shape {raw.shape}; a YOLO detection head for "
                f"{len(self._meta.names)} classes gives 1 x {rows} x anchors"
            )

    @property
    def info(self) -> ModelInfo:
        """Identity of the loaded model: file stem, sha256, classes, input size, stride, versions."""
        return self._info

    @property
    def input_size(self) -> Size:
        """Model input size in pixels (for a dynamic model, the size it was exported at)."""
        return self._meta.input_size

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime session (shared and thread-safe; for benchmarks timing bare ``run``)."""
        return self._session

    @property
    def verdict_thresholds(self) -> dict[str, float]:
        """The model's calibrated per-class verdict thresholds (empty when it carries none)."""
        return dict(self._meta.verdict_thresholds)

    @property
    def tile_thresholds(self) -> dict[str, float]:
        """The model's calibrated per-class thresholds for the tiled second look (empty when none)."""
        return dict(self._meta.tile_thresholds)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in output order."""
        return self._meta.names

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Letterbox an ``H x W x 3`` uint8 RGB image into a ``1 x 3 x h x w`` float32 blob."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
        boxed, lb = letterbox(image, self._meta.input_size, self._meta.stride, auto=self._dynamic)
        return to_blob(boxed), lb

    def run(self, blob: np.ndarray) -> np.ndarray:
        """Run the session on a blob; returns the raw ``1 x (4 + nc) x N`` head output.

        Mirrored, the blob's mirror image is run too, and each anchor's output is averaged with the
        mirror's anchor that saw the same place (:func:`mirror_index`), its box centre mirrored back:
        a thing seen in one view only keeps half its score.
        """
        straight = self._run(blob)
        if not self.mirrored:
            return straight
        mirrored = self._run(np.ascontiguousarray(blob[..., ::-1]))
        height, width = blob.shape[2:]
        index = mirror_index(height, width)
        if straight.ndim != 3 or len(index) != straight.shape[2]:
            raise ModelError(f"output {straight.shape} for a {width}x{height} input: the mirrored view needs a "
                             f"YOLO11 head (anchors at strides {MIRROR_STRIDES}); unset VIPARE_MIRRORED_VIEW")
        mirrored = mirrored[:, :, index]
        mirrored[:, 0, :] = width - mirrored[:, 0, :]
        return (straight + mirrored) / 2

    def _run(self, blob: np.ndarray) -> np.ndarray:
        try:
            outputs = self._session.run([self._output_name], {self._input_name: blob})
        except ORT_ERRORS as exc:
            raise ModelError(f"inference failed: {exc}") from exc
        return np.asarray(outputs[0])

    def postprocess(
        self,
        raw: np.ndarray,
        lb: Letterbox,
        *,
        original_size: Size | None = None,
        conf_threshold: float | None = None,
        max_detections: int | None = None,
        multi_label: bool = False,
    ) -> list[Detection]:
        """Decode, suppress and map a raw output back to original-image detections.

        Args:
            raw: ``1 x (4 + nc) x N`` head output from :meth:`run`.
            lb: the letterbox :meth:`preprocess` returned with the blob.
            original_size: size of the full-size image when the preprocessed array was a reduced
                decode; defaults to the preprocessed array's size.
            conf_threshold: overrides the detector's score threshold for this call.
            max_detections: overrides the detector's detection cap for this call.
            multi_label: keep every class of an anchor above the threshold (mAP protocol).

        Returns:
            Detections, best score first, boxes in original-image pixels.
        """
        self._check_raw(raw)
        conf = self.conf_threshold if conf_threshold is None else conf_threshold
        cap = self.max_detections if max_detections is None else max_detections
        boxes, scores, class_ids = decode(raw, conf_threshold=conf, multi_label=multi_label)
        keep = nms(boxes, scores, class_ids, iou_threshold=self.iou_threshold, max_detections=cap)
        kept = merge_boxes(boxes, scores, class_ids, keep, iou_threshold=self.merge_iou)
        size = original_size or lb.source
        mapped = scale_boxes(kept, lb, original_size=size)
        image_area = float(size.width * size.height)
        detections = []
        for (x1, y1, x2, y2), score, class_id in zip(
            mapped.tolist(), scores[keep].tolist(), class_ids[keep].tolist(), strict=True
        ):
            label = self._meta.names[class_id]
            detections.append(
                Detection(
                    label=label,
                    class_id=class_id,
                    score=min(max(score, 0.0), 1.0),
                    box=(x1, y1, x2, y2),
                    area_fraction=min(max((x2 - x1) * (y2 - y1) / image_area, 0.0), 1.0),
                    deposit=is_deposit(label),
                )
            )
        return detections

    def detect(self, image: np.ndarray, *, original_size: Size | None = None) -> list[Detection]:
        """Detect objects in one image.

        Args:
            image: ``H x W x 3`` uint8 RGB array, orientation-corrected; may be a reduced decode.
            original_size: size of the full-size image when ``image`` is a reduced decode;
                defaults to ``image``'s own size.

        Returns:
            Detections, best score first, with boxes in pixels of the full-size image.
        """
        if original_size is not None and (original_size.width < 1 or original_size.height < 1):
            raise ValueError(f"original_size must be positive, got {original_size}")
        blob, lb = self.preprocess(image)
        return self.postprocess(self.run(blob), lb, original_size=original_size)
