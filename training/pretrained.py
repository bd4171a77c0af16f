"""Rebuild a fine-tunable YOLO11n checkpoint from the INT8 OpenVINO IR of the COCO detector.

No full-precision COCO ``.pt`` is reachable offline; the IR in ``../shared/pretrained`` is. Its
Convolution nodes are named after the PyTorch modules they came from
(``__module.model.0.conv/aten::_convolution/Convolution``), their weights are int8 constants times
per-channel scales, and each BatchNorm is folded into the weights plus a following ``Add`` bias.

Rebuilding: read every convolution's dequantized weight and folded bias from the IR, then hand
them to :func:`training.rebuild.rebuild_model`, which loads them into an unfused YOLO11n and
calibrates each BatchNorm on real photos so that the model reproduces the IR and can be fine-tuned.

Run::

    python -m training.pretrained runs/pretrained/yolo11n-coco.pt

torch, ultralytics and openvino are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import yaml

from training.ir import DEFAULT_IR_DIR, IR_METADATA_NAME, IR_XML_NAME, evaluate_constant
from training.rebuild import (
    DEFAULT_CALIBRATION_DIR,
    FIXED_MODULE_SUFFIXES,
    FoldedConv,
    build_checkpoint,
    calibration_batch,
    rebuild_model,
)

__all__ = ["DEFAULT_CALIBRATION_DIR", "load_coco_names", "read_ir_convs", "save_checkpoint"]

log = logging.getLogger(__name__)

COCO_CLASSES = 80
MODULE_PREFIX = "__module."
DOCS = "rebuilt from the YOLO11n COCO INT8 OpenVINO IR by training.pretrained"


def _module_path(friendly_name: str) -> str:
    """``__module.model.0.conv/aten::_convolution/Convolution`` -> ``model.0.conv``."""
    head = friendly_name.split("/", 1)[0]
    return head.removeprefix(MODULE_PREFIX)


def read_ir_convs(ir_dir: Path = DEFAULT_IR_DIR) -> dict[str, FoldedConv]:
    """Read every learned convolution of the IR, keyed by PyTorch module path.

    Args:
        ir_dir: folder holding ``yolo11n.xml`` and ``yolo11n.bin``.

    Returns:
        ``{"model.0.conv": FoldedConv, ...}``; fixed layers (DFL) are left out.

    Raises:
        ValueError: when a convolution is not followed by a constant bias ``Add``.
    """
    import openvino as ov

    model = ov.Core().read_model(str(ir_dir / IR_XML_NAME))
    convs: dict[str, FoldedConv] = {}
    for node in model.get_ordered_ops():
        if node.get_type_name() not in ("Convolution", "GroupConvolution"):
            continue
        path = _module_path(node.get_friendly_name())
        if path.endswith(FIXED_MODULE_SUFFIXES):
            continue
        weight = evaluate_constant(node.input(1).get_source_output().get_node())
        consumers = [t.get_node() for t in node.output(0).get_target_inputs()]
        adds = [c for c in consumers if c.get_type_name() == "Add"]
        if len(adds) != 1:
            raise ValueError(f"{path}: expected one bias Add after the convolution, got {consumers}")
        bias_inputs = [
            i.get_source_output().get_node() for i in adds[0].inputs() if i.get_source_output().get_node() != node
        ]
        bias = evaluate_constant(bias_inputs[0]).reshape(-1)
        convs[path] = FoldedConv(weight=weight, bias=bias)
    return convs


def load_coco_names(ir_dir: Path = DEFAULT_IR_DIR) -> dict[int, str]:
    """Class names of the IR, from its ``metadata.yaml``."""
    meta = yaml.safe_load((ir_dir / IR_METADATA_NAME).read_text())
    return {int(k): str(v) for k, v in meta["names"].items()}


def save_checkpoint(
    out: Path,
    ir_dir: Path = DEFAULT_IR_DIR,
    calibration_dir: Path = DEFAULT_CALIBRATION_DIR,
    calibration_count: int = 64,
    imgsz: int = 640,
) -> Path:
    """Read the IR, rebuild and calibrate the model, and save an Ultralytics-loadable ``.pt``.

    Args:
        out: checkpoint path to write.
        ir_dir: folder of the INT8 OpenVINO IR.
        calibration_dir: photos for the BatchNorm statistics.
        calibration_count: how many photos to use.
        imgsz: letterbox size of the calibration photos (the IR's input size).

    Returns:
        ``out``.
    """
    import torch

    convs = read_ir_convs(ir_dir)
    log.info("read %d convolutions from %s", len(convs), ir_dir)
    model = rebuild_model(convs, calibration_batch(calibration_dir, calibration_count, imgsz), COCO_CLASSES)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_checkpoint(model, load_coco_names(ir_dir), imgsz, DOCS), out)
    log.info("wrote %s", out)
    return out


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ir-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_IR_DIR,
              show_default=True, help="The INT8 OpenVINO IR to rebuild from.")
@click.option("--calibration-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=DEFAULT_CALIBRATION_DIR, show_default=True, help="Photos that set the BatchNorm statistics.")
@click.option("--calibration-count", type=click.IntRange(1), default=64, show_default=True)
@click.option("--imgsz", type=click.IntRange(32), default=640, show_default=True)
@click.option("--check", is_flag=True, help="Compare detections with the IR afterwards.")
def main(out: Path, ir_dir: Path, calibration_dir: Path, calibration_count: int, imgsz: int, check: bool) -> None:
    """Rebuild a fine-tunable YOLO11n COCO checkpoint at OUT from the INT8 OpenVINO IR."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    save_checkpoint(out, ir_dir, calibration_dir, calibration_count, imgsz)
    if check:
        from training.parity import check_ir_parity, default_parity_images

        report = check_ir_parity(out, default_parity_images(), ir_dir=ir_dir, imgsz=imgsz)
        click.echo(report.summary())


if __name__ == "__main__":
    main()
