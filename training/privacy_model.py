"""Rebuild the privacy detector shipped in ``weights/``: the COCO YOLO11n as a small ONNX model.

The blurring step (:mod:`vipare.privacy`) needs persons (their heads, for faces too small for the
face detector) and vehicles (car, bus, truck, motorcycle: where their plates are). The COCO YOLO11n
finds them; offline it exists only as an INT8 OpenVINO IR in ``../shared/pretrained``, which
:mod:`training.pretrained` turns back into a ``.pt``. This command does that, then exports the
checkpoint to ONNX at a small input size with Ultralytics' metadata (class names, input size,
stride), which :class:`vipare.detection.Detector` reads back. Run::

    python -m training.privacy_model weights/coco-yolo11n-416.onnx --imgsz 416

torch, ultralytics and openvino are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import click

from training.ir import DEFAULT_IR_DIR
from training.rebuild import DEFAULT_CALIBRATION_DIR

__all__ = ["build_privacy_model"]

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "weights" / "coco-yolo11n-416.onnx"


def build_privacy_model(
    out: Path = DEFAULT_OUT,
    *,
    imgsz: int = 416,
    ir_dir: Path = DEFAULT_IR_DIR,
    calibration_dir: Path = DEFAULT_CALIBRATION_DIR,
    opset: int = 17,
) -> Path:
    """Rebuild the COCO YOLO11n from its IR and export it to ONNX at ``imgsz``.

    Args:
        out: the ONNX file to write.
        imgsz: the model's square input size, pixels (a multiple of 32).
        ir_dir: folder of the INT8 OpenVINO IR.
        calibration_dir: photos for the BatchNorm statistics of the rebuild.
        opset: ONNX opset.

    Returns:
        ``out``.
    """
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics import YOLO

    from training.pretrained import save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / "coco-yolo11n.pt", ir_dir, calibration_dir)
        exported = Path(YOLO(str(checkpoint)).export(format="onnx", imgsz=imgsz, opset=opset, simplify=True))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exported, out)
    log.info("wrote %s (%d bytes)", out, out.stat().st_size)
    return out


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT)
@click.option("--imgsz", type=click.IntRange(32), default=416, show_default=True, help="Input size, pixels.")
@click.option(
    "--ir-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_IR_DIR,
    show_default=True,
    help="The INT8 OpenVINO IR to rebuild from.",
)
def main(out: Path, imgsz: int, ir_dir: Path) -> None:
    """Rebuild the COCO YOLO11n privacy detector at OUT (weights/coco-yolo11n-416.onnx by default)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_privacy_model(out, imgsz=imgsz, ir_dir=ir_dir)


if __name__ == "__main__":
    main()
