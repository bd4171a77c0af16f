"""Rebuild a fine-tunable YOLO11n checkpoint from the INT8 OpenVINO IR of the COCO detector.

No full-precision COCO ``.pt`` is reachable offline; the IR in ``../shared/pretrained`` is. Its
Convolution nodes are named after the PyTorch modules they came from
(``__module.model.0.conv/aten::_convolution/Convolution``), their weights are int8 constants times
per-channel scales, and each BatchNorm is folded into the weights plus a following ``Add`` bias.

Rebuilding:

1. read every convolution's dequantized weight and folded bias from the IR;
2. build the architecture with ``DetectionModel("yolo11n.yaml", nc=80)`` (shipped in the package);
3. load the folded weights, and set each BatchNorm so that it reproduces the folded layer in eval
   mode *and* behaves sensibly in train mode: measure the per-channel mean ``mu`` and variance
   ``sigma^2`` of the convolution's output (before the bias) on real photos, then
   ``running_mean=mu``, ``running_var=sigma^2``, ``gamma=sqrt(sigma^2+eps)``,
   ``beta=folded_bias+mu``. Eval-mode BN then computes ``x + folded_bias`` exactly, and train-mode
   BN on similar photos starts from nearly the same function. The statistics are measured in one
   forward pass: a hook on each convolution sets its BatchNorm before the BatchNorm runs, so later
   layers see already-calibrated earlier ones.

Run::

    python -m training.pretrained runs/pretrained/yolo11n-coco.pt

torch, ultralytics and openvino are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import yaml

from training.images import image_files, letterbox_tensor
from training.ir import DEFAULT_IR_DIR, IR_METADATA_NAME, IR_XML_NAME, evaluate_constant
from training.paths import SHARED_DATASETS

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_CALIBRATION_DIR",
    "FoldedConv",
    "build_checkpoint",
    "calibration_batch",
    "load_coco_names",
    "read_ir_convs",
    "rebuild_model",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_DIR = SHARED_DATASETS / "street-waste-cn" / "images" / "train"
ARCH_YAML = "yolo11n.yaml"
COCO_CLASSES = 80
MODULE_PREFIX = "__module."
# The DFL convolution is a fixed arange projection, not a learned layer.
FIXED_MODULE_SUFFIXES = (".dfl.conv",)


@dataclass(frozen=True)
class FoldedConv:
    """One convolution of the IR with its BatchNorm folded in.

    Attributes:
        weight: dequantized kernel, float32, shape (out, in/groups, kh, kw) for plain convolutions
            or (groups, out/groups, in/groups, kh, kw) for grouped ones, as stored in the IR.
        bias: folded bias, float32, shape (out,).
    """

    weight: np.ndarray
    bias: np.ndarray


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


def calibration_batch(folder: Path = DEFAULT_CALIBRATION_DIR, count: int = 64, imgsz: int = 640) -> torch.Tensor:
    """Letterboxed photos used to measure BatchNorm statistics; see :func:`letterbox_tensor`."""
    paths = image_files(folder, count)
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    return letterbox_tensor(paths, imgsz)


def _copy_weight(target: torch.nn.Conv2d, weight: np.ndarray, path: str) -> None:
    """Copy an IR kernel into ``target``, reshaping the IR's grouped layout to PyTorch's."""
    import torch

    shape = tuple(target.weight.shape)
    if int(np.prod(weight.shape)) != int(np.prod(shape)):
        raise ValueError(f"{path}: IR weight {weight.shape} does not fit module weight {shape}")
    target.weight.data.copy_(torch.from_numpy(weight.reshape(shape)))


def rebuild_model(convs: dict[str, FoldedConv], calibration: torch.Tensor, nc: int = COCO_CLASSES) -> torch.nn.Module:
    """Build YOLO11n and load the IR's weights, calibrating BatchNorms on ``calibration``.

    Args:
        convs: output of :func:`read_ir_convs`.
        calibration: photos, shape (N, 3, H, W), RGB in [0, 1]; N of a few dozen is enough.
        nc: number of classes of the IR's head.

    Returns:
        An eval-mode ``DetectionModel`` whose eval-mode output equals the folded IR (before
        activation quantization).

    Raises:
        ValueError: when the IR and the architecture disagree on a layer.
    """
    import torch

    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics.nn.modules.conv import Conv
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(ARCH_YAML, nc=nc, verbose=False)
    model.eval()
    used: set[str] = set()
    handles = []

    def calibrate_hook(bn: torch.nn.BatchNorm2d, bias: torch.Tensor) -> Any:
        def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            mu = output.mean(dim=(0, 2, 3))
            var = output.var(dim=(0, 2, 3), unbiased=False)
            assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats
            bn.running_mean.copy_(mu)
            bn.running_var.copy_(var)
            bn.weight.data.copy_(torch.sqrt(var + bn.eps))
            bn.bias.data.copy_(bias + mu)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, Conv):
            path = f"{name}.conv"
            folded = convs.get(path)
            if folded is None:
                raise ValueError(f"{path} missing from the IR")
            _copy_weight(module.conv, folded.weight, path)
            bias = torch.from_numpy(folded.bias)
            handles.append(module.conv.register_forward_hook(calibrate_hook(module.bn, bias)))
            used.add(path)
        elif isinstance(module, torch.nn.Conv2d) and name in convs and name not in used:
            folded = convs[name]
            _copy_weight(module, folded.weight, name)
            if module.bias is None:
                raise ValueError(f"{name}: plain head convolution without bias")
            module.bias.data.copy_(torch.from_numpy(folded.bias))
            used.add(name)
    unused = set(convs) - used
    if unused:
        raise ValueError(f"IR convolutions without a module: {sorted(unused)}")
    with torch.no_grad():
        model(calibration)
    for handle in handles:
        handle.remove()
    return model


def build_checkpoint(model: torch.nn.Module, names: dict[int, str], imgsz: int) -> dict[str, Any]:
    """Wrap ``model`` in the checkpoint dictionary Ultralytics' ``.pt`` loader expects."""
    import ultralytics

    model.names = names  # type: ignore[assignment]  # Ultralytics reads class names from this attribute
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "rebuilt from the YOLO11n COCO INT8 OpenVINO IR by training.pretrained",
        "epoch": -1,
        "best_fitness": None,
        "model": model,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "detect", "imgsz": imgsz, "model": ARCH_YAML},
        "train_metrics": None,
    }


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
    model = rebuild_model(convs, calibration_batch(calibration_dir, calibration_count, imgsz))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_checkpoint(model, load_coco_names(ir_dir), imgsz), out)
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
