"""Tiny ONNX graphs that stand in for an Ultralytics YOLO export in tests.

The graph's output is a fixed array ``raw`` (a hand-made detection head output) plus
``0 * sum(input)``, so the input is really consumed and the session sees a normal model.
Metadata is written the way Ultralytics' exporter writes it: ``str()`` of each value.

:func:`make_colour_detector_onnx` builds one whose answer depends on the photo: it splits the input
into square cells and finds an object of a class in every cell whose mean colour is that class's key
colour (magenta for ``dumped_waste``, cyan for ``bin`` by default), so a test photo with a magenta
square is dumping at that square's place and an ordinary photo is not.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "COLOUR_SCORE",
    "CYAN",
    "KEY_COLOURS",
    "MAGENTA",
    "OPSET",
    "default_metadata",
    "head_output",
    "make_colour_detector_onnx",
    "make_detector_onnx",
    "make_wrong_output_onnx",
]

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


Colour = tuple[int, int, int]
MAGENTA: Colour = (255, 0, 255)
CYAN: Colour = (0, 255, 255)
KEY_COLOURS: dict[str, Colour] = {"dumped_waste": MAGENTA, "bin": CYAN}
"""Default key colours of :func:`make_colour_detector_onnx`; ``overflowing_bin`` has none (never found)."""
COLOUR_SCORE = 0.9
"""The score of a cell whose mean colour is (within JPEG noise of) its class's key colour."""


def make_colour_detector_onnx(
    path: Path,
    *,
    names: Mapping[int, str] | None = None,
    keys: Mapping[str, Colour] | None = None,
    imgsz: tuple[int, int] = (256, 256),
    cell: int = 32,
    score: float = COLOUR_SCORE,
) -> Path:
    """Write a detector that finds, in each ``cell x cell`` square of its input, the class whose key colour it is.

    One anchor per cell, row by row: its box is the cell itself; its class scores come from the cell's
    mean colour ``rgb`` (in [0, 1]) through ``clip(5 * (w . rgb - (on - 0.4)), 0, score)``, where ``w``
    is +1 on the key's lit channels and ``-on`` on its dark ones and ``on`` counts the lit channels.
    A cell of the key colour gives ``w . rgb = on`` and scores ``score``; grey, white, black and the
    test gradients stay at or under ``on - 0.4`` and score 0; so does a cell less than about 89 %
    covered by a patch of the key colour on a neutral ground. Classes without a key always score 0.

    With the defaults (256 x 256 input, 32-pixel cells), a 640 x 480 photo is letterboxed at scale 0.4
    with one cell of padding above and below, so its own 80-pixel squares at multiples of 80 are the
    model's cells: a magenta square there comes back as one ``dumped_waste`` box on that square.

    Args:
        path: where to write the ``.onnx`` file.
        names: class names in output order; the project's taxonomy by default.
        keys: class name -> key colour, RGB with each channel 0 or 255; :data:`KEY_COLOURS` by default.
        imgsz: input ``(height, width)``, multiples of ``cell``.
        cell: side of a cell in input pixels (also the stride written to metadata).
        score: the score of a cell of exactly its key colour, in (0, 1].

    Returns:
        ``path``.
    """
    if names is None:
        from vipare.taxonomy import class_names

        names = dict(enumerate(class_names()))
    keys = KEY_COLOURS if keys is None else keys
    unknown = set(keys) - set(names.values())
    if unknown:
        raise ValueError(f"key colours for classes the model does not have: {sorted(unknown)}")
    h, w = imgsz
    if h % cell or w % cell:
        raise ValueError(f"imgsz {imgsz} must be multiples of the cell size {cell}")
    rows, cols, nc = h // cell, w // cell, len(names)
    gain = 5.0
    weight = np.zeros((nc, 3, cell, cell), dtype=np.float32)
    bias = np.full(nc, -1.0, dtype=np.float32)  # a class without a key stays under 0
    for class_id, name in names.items():
        if name not in keys:
            continue
        lit = [channel >= 128 for channel in keys[name]]
        on = sum(lit)
        if on == 0:
            raise ValueError(f"the key colour of {name!r} must light at least one channel, got {keys[name]}")
        per_channel = np.array([1.0 if is_lit else -float(on) for is_lit in lit], dtype=np.float32)
        # The mean over the cell folded into the weights: one strided Conv is pooling and projection.
        weight[class_id] = gain * per_channel[:, np.newaxis, np.newaxis] / (cell * cell)
        bias[class_id] = -gain * (on - 0.4)
    col_centres = (np.arange(cols, dtype=np.float32) + 0.5) * cell
    row_centres = (np.arange(rows, dtype=np.float32) + 0.5) * cell
    cx, cy = np.meshgrid(col_centres, row_centres)  # (rows, cols), flattened row by row like the Conv output
    boxes = np.stack([cx.ravel(), cy.ravel(), np.full(rows * cols, cell), np.full(rows * cols, cell)])
    graph = helper.make_graph(
        [
            helper.make_node(
                "Conv", ["images", "weight", "bias"], ["logits"], kernel_shape=[cell, cell], strides=[cell, cell]
            ),
            helper.make_node("Clip", ["logits", "floor", "ceiling"], ["cells"]),
            helper.make_node("Reshape", ["cells", "scores_shape"], ["scores"]),
            helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
        ],
        "yolo_colour_stand_in",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + nc, rows * cols])],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(bias, "bias"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "floor"),
            numpy_helper.from_array(np.array(score, dtype=np.float32), "ceiling"),
            numpy_helper.from_array(np.array([1, nc, rows * cols], dtype=np.int64), "scores_shape"),
            numpy_helper.from_array(boxes[np.newaxis].astype(np.float32), "boxes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    meta = default_metadata(names, imgsz, cell)
    meta["description"] = "Colour-keyed detector (test stand-in): one box per cell of a key colour"
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path))
    return path


def small_deposit_photo(variant: int = 0) -> bytes:
    """For :func:`make_colour_detector_onnx`: a 1280 px grey PNG with a 130 px magenta square, a quarter
    of one of the whole-image pass's cells (160 photo px at scale 0.2) but a whole cell of the first
    tile's (91 px at scale 0.35): found only by the tiled second look. ``variant`` changes a corner
    pixel, for photos alike but for their sha256."""
    from PIL import Image

    photo = Image.new("RGB", (1280, 1280), (128, 128, 128))
    photo.paste(MAGENTA, (80, 80, 210, 210))
    photo.putpixel((1279, 1279), (128, 128, 128 - variant))
    out = io.BytesIO()
    photo.save(out, "PNG")
    return out.getvalue()
