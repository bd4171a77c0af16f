"""Check that the rebuilt PyTorch checkpoint detects what the INT8 OpenVINO IR detects.

Both models see the same letterboxed tensor; both raw outputs go through Ultralytics' NMS. The IR
quantizes activations to int8 and the rebuilt model does not, so scores differ a little and a
detection right at the confidence threshold may fall on either side: detections are kept above
``conf - score_tol`` and only those scoring at least ``conf`` must find a partner (same class,
IoU >= ``iou_min``, score within ``score_tol``), in both directions.

``quantized=False`` compares against the IR with its activation FakeQuantize nodes bypassed and
its weights replaced by their dequantized float values: that graph computes exactly what the
rebuilt model should, so raw outputs must agree to float rounding. It separates "the rebuild is
wrong" from "int8 activations move borderline scores".

Run::

    python -m training.parity runs/pretrained/yolo11n-coco.pt
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from training.images import image_files, letterbox_tensor
from training.ir import DEFAULT_IR_DIR, IR_XML_NAME, evaluate_constant
from training.paths import SHARED_DATASETS

if TYPE_CHECKING:
    import torch

__all__ = [
    "ImageParity",
    "ParityReport",
    "check_ir_parity",
    "compile_ir",
    "default_parity_images",
    "match_detections",
]

DEFAULT_STREET_DIR = SHARED_DATASETS / "street-waste-cn" / "images" / "val"


@dataclass
class ImageParity:
    """Comparison on one image.

    Attributes:
        image: the photo.
        reference: IR detections at or above ``conf``, rows (x0, y0, x1, y1, score, cls) in pixels
            of the letterboxed input.
        candidate: rebuilt-model detections at or above ``conf``, same layout.
        matched: how many detections (both directions) found a partner.
        unmatched: detections without a partner, as (source, cls, score).
        min_iou: lowest IoU among matched pairs (1.0 when none).
        max_score_diff: largest score difference among matched pairs (0.0 when none).
        max_abs_output_diff: largest absolute difference of the raw (84, anchors) outputs.
    """

    image: Path
    reference: np.ndarray
    candidate: np.ndarray
    matched: int = 0
    unmatched: list[tuple[str, int, float]] = field(default_factory=list)
    min_iou: float = 1.0
    max_score_diff: float = 0.0
    max_abs_output_diff: float = 0.0


@dataclass
class ParityReport:
    """Comparison over all images; ``ok`` when every detection found its partner."""

    images: list[ImageParity]

    @property
    def ok(self) -> bool:
        """True when no detection is left unmatched."""
        return all(not i.unmatched for i in self.images)

    @property
    def min_iou(self) -> float:
        """Lowest IoU of any matched pair."""
        return min((i.min_iou for i in self.images), default=1.0)

    @property
    def max_score_diff(self) -> float:
        """Largest score difference of any matched pair."""
        return max((i.max_score_diff for i in self.images), default=0.0)

    def summary(self) -> str:
        """Human-readable table, one line per image plus totals."""
        lines = []
        for i in self.images:
            lines.append(
                f"{i.image.name}: IR {len(i.reference)} det, rebuilt {len(i.candidate)} det, "
                f"matched {i.matched}, "
                f"min IoU {i.min_iou:.3f}, max |dscore| {i.max_score_diff:.3f}, "
                f"max |dout| {i.max_abs_output_diff:.3f}, unmatched {i.unmatched}"
            )
        lines.append(f"ok={self.ok} min IoU {self.min_iou:.3f} max |dscore| {self.max_score_diff:.3f}")
        return "\n".join(lines)


def default_parity_images(street_dir: Path = DEFAULT_STREET_DIR, street_count: int = 4) -> list[Path]:
    """Ultralytics' bundled COCO photos (people, a bus) plus a few street-waste-cn photos."""
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics.utils import ASSETS

    street = image_files(street_dir, street_count)
    return [Path(ASSETS) / "bus.jpg", Path(ASSETS) / "zidane.jpg", *street]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box against rows of xyxy boxes."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, np.finfo(np.float32).eps)


def match_detections(
    queries: np.ndarray, pool: np.ndarray, conf: float, iou_min: float, score_tol: float
) -> tuple[list[tuple[float, float]], list[tuple[int, float]]]:
    """Find a partner in ``pool`` for every query scoring at least ``conf``.

    Args:
        queries: rows (x0, y0, x1, y1, score, cls).
        pool: rows in the same layout, kept down to ``conf - score_tol``.
        conf: score above which a query must be matched.
        iou_min: least IoU of a partner.
        score_tol: largest score difference of a partner.

    Returns:
        (IoU, score difference) of matched queries, and (cls, score) of unmatched ones.
    """
    matched: list[tuple[float, float]] = []
    unmatched: list[tuple[int, float]] = []
    for row in queries[queries[:, 4] >= conf]:
        same = pool[pool[:, 5] == row[5]]
        if len(same):
            ious = _iou(row[:4], same[:, :4])
            best = int(np.argmax(ious))
            diff = abs(float(same[best, 4] - row[4]))
            if ious[best] >= iou_min and diff <= score_tol:
                matched.append((float(ious[best]), diff))
                continue
        unmatched.append((int(row[5]), float(row[4])))
    return matched, unmatched


def compile_ir(ir_dir: Path = DEFAULT_IR_DIR, quantized: bool = True) -> Any:
    """Compile the IR for the CPU, as shipped (int8 activations) or dequantized.

    Args:
        ir_dir: folder of the IR.
        quantized: False bypasses every activation FakeQuantize and stores each convolution's
            weight as its dequantized float constant (which also keeps OpenVINO's compressed-weight
            passes, which trip over the bypassed graph, from firing).

    Returns:
        An ``openvino.CompiledModel``.
    """
    import openvino as ov
    import openvino.opset13 as ops

    core = ov.Core()
    model = core.read_model(str(ir_dir / IR_XML_NAME))
    if quantized:
        return core.compile_model(model, "CPU")
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        if kind == "FakeQuantize" and node.input(0).get_source_output().get_node().get_type_name() != "Constant":
            for target in list(node.output(0).get_target_inputs()):
                target.replace_source_output(node.input_value(0))
        elif kind in ("Convolution", "GroupConvolution"):
            weight = evaluate_constant(node.input(1).get_source_output().get_node())
            node.input(1).replace_source_output(ops.constant(weight).output(0))
    model.validate_nodes_and_infer_types()
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _nms(raw: torch.Tensor, conf: float, iou: float) -> np.ndarray:
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(raw, conf_thres=conf, iou_thres=iou)[0].cpu().numpy()


def check_ir_parity(
    checkpoint: Path,
    images: Sequence[Path],
    ir_dir: Path = DEFAULT_IR_DIR,
    imgsz: int = 640,
    conf: float = 0.25,
    nms_iou: float = 0.7,
    iou_min: float = 0.9,
    score_tol: float = 0.05,
    quantized: bool = True,
) -> ParityReport:
    """Run the IR (OpenVINO) and the rebuilt checkpoint (PyTorch) on ``images`` and compare.

    Args:
        checkpoint: ``.pt`` written by :mod:`training.pretrained`.
        images: photos to compare on.
        ir_dir: folder of the IR.
        imgsz: letterbox size (the IR's static input size).
        conf: score from which a detection must be matched.
        nms_iou: NMS overlap threshold (Ultralytics' predictor default).
        iou_min: least IoU between partners.
        score_tol: largest score difference between partners.
        quantized: compare with the IR as shipped (True) or dequantized (see :func:`compile_ir`).

    Returns:
        Per-image comparisons.
    """
    import torch

    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics.nn.tasks import load_checkpoint

    compiled = compile_ir(ir_dir, quantized)
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    floor = max(conf - score_tol, 0.0)
    results = []
    for path in images:
        tensor = letterbox_tensor([path], imgsz)
        ir_raw = torch.from_numpy(np.asarray(compiled(tensor.numpy())[0]))
        with torch.no_grad():
            pt_raw = model(tensor)[0]
        reference, candidate = _nms(ir_raw, floor, nms_iou), _nms(pt_raw, floor, nms_iou)
        forward, missing_pt = match_detections(reference, candidate, conf, iou_min, score_tol)
        backward, missing_ir = match_detections(candidate, reference, conf, iou_min, score_tol)
        pairs = forward + backward
        results.append(
            ImageParity(
                image=path,
                reference=reference[reference[:, 4] >= conf],
                candidate=candidate[candidate[:, 4] >= conf],
                matched=len(pairs),
                unmatched=[("ir", c, s) for c, s in missing_pt] + [("rebuilt", c, s) for c, s in missing_ir],
                min_iou=min((p[0] for p in pairs), default=1.0),
                max_score_diff=max((p[1] for p in pairs), default=0.0),
                max_abs_output_diff=float((ir_raw - pt_raw).abs().max()),
            )
        )
    return ParityReport(results)


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ir-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_IR_DIR,
              show_default=True)
@click.option("--imgsz", type=click.IntRange(32), default=640, show_default=True)
@click.option("--dequantized", is_flag=True, help="Compare with the float (dequantized) IR.")
def main(checkpoint: Path, images: tuple[Path, ...], ir_dir: Path, imgsz: int, dequantized: bool) -> None:
    """Compare the rebuilt CHECKPOINT with the INT8 IR on IMAGES (default: bus, zidane, 4 street photos).

    Prints the parity table; the exit status is 1 on a mismatch.
    """
    from training.offline import ensure_offline

    ensure_offline()
    report = check_ir_parity(checkpoint, list(images) or default_parity_images(), ir_dir, imgsz,
                             quantized=not dequantized)
    click.echo(report.summary())
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
