"""Tiny ONNX graphs that stand in for an Ultralytics YOLO export in tests.

The graph's output is a fixed array ``raw`` (a hand-made detection head output) plus
``0 * sum(input)``, so the input is really consumed and the session sees a normal model.
Metadata is written the way Ultralytics' exporter writes it: ``str()`` of each value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["OPSET", "default_metadata", "head_output", "make_detector_onnx", "make_wrong_output_onnx"]

OPSET = 17
IR_VERSION = 8  # onnxruntime >= 1.14 reads IR 8 / opset 17; onnx >= 1.16 would write a newer IR


def default_metadata(names: Mapping[int, str], imgsz: tuple[int, int], stride: int) -> dict[str, str]:
    """Metadata as Ultralytics writes it for a detection model."""
    return {
        "description": "Ultralytics YOLO11n model (test stand-in)",
        "author": "vipare tests",
        "version": "8.3.0",
        "task": "detect",
        "batch": "1",
        "stride": str(stride),
        "imgsz": str(list(imgsz)),
        "names": str(dict(names)),
    }


def head_output(
    nc: int, boxes: Iterable[tuple[tuple[float, float, float, float], int, float]], *, anchors: int = 8
) -> np.ndarray:
    """Build a ``1 x (4 + nc) x anchors`` raw output holding the given boxes, zeros elsewhere.

    Args:
        nc: number of classes.
        boxes: ``((x1, y1, x2, y2), class_id, score)`` in model-input pixels, one per anchor.
        anchors: total anchors ``N`` (at least the number of boxes).
    """
    raw = np.zeros((1, 4 + nc, anchors), dtype=np.float32)
    for i, ((x1, y1, x2, y2), class_id, score) in enumerate(boxes):
        raw[0, :4, i] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        raw[0, 4 + class_id, i] = score
    return raw


def make_detector_onnx(
    path: str | os.PathLike[str],
    *,
    names: Mapping[int, str],
    raw: np.ndarray,
    imgsz: tuple[int, int] = (64, 64),
    stride: int = 32,
    metadata: Mapping[str, str] | None = None,
    omit: Iterable[str] = (),
    dynamic: bool = False,
) -> None:
    """Write a detector stand-in whose output is always ``raw``.

    Args:
        path: where to write the ``.onnx`` file.
        names: class names, written as Ultralytics does (``str`` of a dict).
        raw: the fixed output, ``1 x (4 + nc) x N`` float32 for a well-formed model.
        imgsz: input ``(height, width)``.
        stride: written to metadata.
        metadata: entries added to or replacing the defaults.
        omit: metadata keys to leave out.
        dynamic: declare the input height and width as symbolic (a ``dynamic=True`` export).
    """
    meta = default_metadata(names, imgsz, stride) | dict(metadata or {})
    for key in omit:
        meta.pop(key, None)
    h, w = imgsz
    in_shape: list[int | str] = [1, 3, "height", "width"] if dynamic else [1, 3, h, w]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["raw", "nothing"], ["output0"]),
        ],
        "yolo_stand_in",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(raw.shape))],
        initializer=[
            numpy_helper.from_array(np.asarray(raw, dtype=np.float32), "raw"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path))


def make_wrong_output_onnx(
    path: str | os.PathLike[str],
    *,
    names: Mapping[int, str],
    extra_rows: int = 1,
    anchors: int = 8,
    imgsz: tuple[int, int] = (64, 64),
    stride: int = 32,
) -> None:
    """A model whose output has ``4 + nc + extra_rows`` rows: it does not match its names."""
    raw = np.zeros((1, 4 + len(names) + extra_rows, anchors), dtype=np.float32)
    make_detector_onnx(path, names=names, raw=raw, imgsz=imgsz, stride=stride)


TAXONOMY_NAMES = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}


def make_centre_deposit_onnx(path: Path) -> Path:
    """A 64x64 model of the project's classes that finds dumped waste (score 0.8) in the middle of
    every image: the box spans x 16..48, y 16..48 of its input."""
    raw = np.zeros((1, 4 + len(TAXONOMY_NAMES), 1), dtype=np.float32)
    raw[0, :, 0] = [32, 32, 32, 32, 0.8, 0.0, 0.0]
    make_detector_onnx(path, names=TAXONOMY_NAMES, imgsz=(64, 64), stride=32, raw=raw)
    return path
