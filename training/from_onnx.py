"""Rebuild a fine-tunable PyTorch checkpoint of the shipped model from its ONNX file.

The ONNX export fused each BatchNorm into its convolution; its initializers keep the PyTorch module
paths (``model.0.conv.weight``, ``model.0.conv.bias``, ``model.23.cv2.0.2.weight``...). They are
read with ``onnx``, the class names and input size come from the model's metadata
(:func:`vipare.model_metadata.parse_metadata`), and :func:`training.rebuild.rebuild_model` loads
them into an unfused YOLO11n with BatchNorms calibrated on training photos (see that module for
why unfused), so that ``YOLO(pt).train(...)`` fine-tunes the shipped model rather than a fresh one.

The checkpoint stores the model in float32: half precision, as Ultralytics stores its own, moved the
480 px model's class scores by up to 0.014 against onnxruntime, over the parity tolerance.
The parity check runs the saved file against onnxruntime on the ONNX file,
raw outputs on real photos, and fails above the tolerances.

Run::

    python -m training.from_onnx weights/vipare-yolo11n.onnx weights/vipare-yolo11n.pt
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from training.images import image_files
from training.paths import SHARED_DATASETS
from training.rebuild import (
    DEFAULT_CALIBRATION_DIR,
    FIXED_MODULE_SUFFIXES,
    FoldedConv,
    build_checkpoint,
    calibration_batch,
    rebuild_model,
)
from vipare.model_metadata import ModelMetadata, parse_metadata

__all__ = ["Parity", "check_parity", "read_onnx", "save_checkpoint"]

log = logging.getLogger(__name__)

MODULE_ROOT = "model."
DEFAULT_PARITY_DIR = SHARED_DATASETS / "street-waste-cn" / "images" / "val"
MAX_SCORE_DIFF = 1e-2
MAX_BOX_DIFF_PX = 1.0
KEPT_SCORE = 0.25  # the shipped score threshold: boxes below it never reach NMS
BOX_ROWS = 4  # raw output rows 0..3 are xywh in pixels, the rest are class scores


@dataclass(frozen=True)
class Parity:
    """Largest differences between the checkpoint and the ONNX model on the parity photos.

    Attributes:
        images: how many photos were compared.
        max_score_diff: largest |PyTorch - onnxruntime| class score, over every anchor.
        max_box_diff: largest |PyTorch - onnxruntime| box coordinate (pixels of the network input)
            over the anchors that either model scores at ``conf`` or more: the boxes NMS can keep.
        max_box_diff_all: the same over every anchor, for the record (half-precision rounding moves
            the boxes of anchors that score nothing by up to a few pixels).
        conf: score from which an anchor's box counts.
        score_tol: the tolerance on scores.
        box_tol: the tolerance on kept boxes.
    """

    images: int
    max_score_diff: float
    max_box_diff: float
    max_box_diff_all: float
    conf: float = KEPT_SCORE
    score_tol: float = MAX_SCORE_DIFF
    box_tol: float = MAX_BOX_DIFF_PX

    @property
    def ok(self) -> bool:
        """True when both differences are within their tolerances."""
        return self.max_score_diff <= self.score_tol and self.max_box_diff <= self.box_tol

    def summary(self) -> str:
        """One line with the figures and the verdict."""
        return (
            f"parity with onnxruntime on {self.images} photos: max |dscore| {self.max_score_diff:.2e} "
            f"(tolerance {self.score_tol:g}), max |dbox| {self.max_box_diff:.2e} px on anchors scoring >= "
            f"{self.conf:g} (tolerance {self.box_tol:g}), {self.max_box_diff_all:.2e} px on all anchors: "
            + ("ok" if self.ok else "FAILED")
        )


def read_onnx(onnx_path: Path) -> tuple[dict[str, FoldedConv], ModelMetadata]:
    """Read the folded convolutions and the metadata of an Ultralytics YOLO ONNX export.

    Args:
        onnx_path: the exported model.

    Returns:
        ``{"model.0.conv": FoldedConv, ...}`` keyed by PyTorch module path (fixed DFL layer left
        out), and the model's metadata (class names, input size).

    Raises:
        ValueError: a convolution weight without its bias (the export was not fused).
        vipare.errors.ModelMetadataError: the metadata lacks names, imgsz or stride.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    meta = parse_metadata({p.key: p.value for p in model.metadata_props})
    tensors = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name.startswith(MODULE_ROOT)}
    convs: dict[str, FoldedConv] = {}
    for name, weight in tensors.items():
        path, _, kind = name.rpartition(".")
        if kind != "weight" or path.endswith(FIXED_MODULE_SUFFIXES):
            continue
        bias = tensors.get(f"{path}.bias")
        if bias is None:
            raise ValueError(f"{onnx_path}: {path} has no bias; rebuild expects an export with BatchNorm fused")
        convs[path] = FoldedConv(weight=weight.astype(np.float32), bias=bias.astype(np.float32))
    return convs, meta


def save_checkpoint(
    onnx_path: Path,
    out: Path,
    calibration_dir: Path = DEFAULT_CALIBRATION_DIR,
    calibration_count: int = 64,
) -> Path:
    """Rebuild the model of ``onnx_path`` and save it as an Ultralytics checkpoint at ``out``.

    Args:
        onnx_path: the shipped ONNX model.
        out: checkpoint path to write.
        calibration_dir: training photos that set the BatchNorm statistics.
        calibration_count: how many of them.

    Returns:
        ``out``.

    Raises:
        ValueError: when the export is not a square-input YOLO11n the rebuild recognises.
    """
    import torch

    convs, meta = read_onnx(onnx_path)
    height, width = meta.input_size.hw
    if height != width:
        raise ValueError(f"{onnx_path}: input {height}x{width}; the rebuild expects a square input")
    log.info("read %d convolutions, %d classes, input %d from %s", len(convs), len(meta.names), height, onnx_path)
    model = rebuild_model(convs, calibration_batch(calibration_dir, calibration_count, height), len(meta.names))
    docs = f"rebuilt from {onnx_path.name} by training.from_onnx"
    checkpoint = build_checkpoint(model.float(), dict(enumerate(meta.names)), height, docs)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    log.info("wrote %s", out)
    return out


def check_parity(
    onnx_path: Path,
    checkpoint: Path,
    images: Sequence[Path],
    conf: float = KEPT_SCORE,
    score_tol: float = MAX_SCORE_DIFF,
    box_tol: float = MAX_BOX_DIFF_PX,
) -> Parity:
    """Compare the raw outputs of ``checkpoint`` (PyTorch) and ``onnx_path`` (onnxruntime) on ``images``.

    Args:
        onnx_path: the ONNX model.
        checkpoint: the ``.pt`` rebuilt from it.
        images: photos, letterboxed to the model's input size as Ultralytics' predictor does.
        conf: score from which an anchor's box is compared against ``box_tol``.
        score_tol: tolerance on class scores.
        box_tol: tolerance on box coordinates, pixels of the network input.
    """
    import onnxruntime as ort
    import torch

    from training.images import letterbox_tensor
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics.nn.tasks import load_checkpoint

    _, meta = read_onnx(onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    score_diff = box_diff = box_diff_all = 0.0
    for path in images:
        tensor = letterbox_tensor([path], meta.input_size.height)
        reference = session.run(None, {input_name: tensor.numpy()})[0][0]
        with torch.no_grad():
            candidate = model(tensor)[0][0].numpy()
        diff = np.abs(reference - candidate)
        kept = (reference[BOX_ROWS:].max(axis=0) >= conf) | (candidate[BOX_ROWS:].max(axis=0) >= conf)
        score_diff = max(score_diff, float(diff[BOX_ROWS:].max()))
        box_diff_all = max(box_diff_all, float(diff[:BOX_ROWS].max()))
        if kept.any():
            box_diff = max(box_diff, float(diff[:BOX_ROWS, kept].max()))
    return Parity(len(images), score_diff, box_diff, box_diff_all, conf, score_tol, box_tol)


@click.command()
@click.argument("onnx_path", metavar="ONNX", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--calibration-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=DEFAULT_CALIBRATION_DIR, show_default=True, help="Photos that set the BatchNorm statistics.")
@click.option("--calibration-count", type=click.IntRange(1), default=64, show_default=True)
@click.option("--parity-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=DEFAULT_PARITY_DIR, show_default=True, help="Photos on which the outputs are compared.")
@click.option("--parity-images", type=click.IntRange(1), default=8, show_default=True)
def main(onnx_path: Path, out: Path, calibration_dir: Path, calibration_count: int, parity_dir: Path,
         parity_images: int) -> None:
    """Rebuild a fine-tunable checkpoint OUT from the ONNX model ONNX and check that both give the same outputs.

    Prints the parity figures; the exit status is 1 when they exceed the tolerances.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    save_checkpoint(onnx_path, out, calibration_dir, calibration_count)
    parity = check_parity(onnx_path, out, image_files(parity_dir, parity_images))
    click.echo(parity.summary())
    raise SystemExit(0 if parity.ok else 1)


if __name__ == "__main__":
    main()
