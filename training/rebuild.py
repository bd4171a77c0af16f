"""Rebuild a trainable Ultralytics YOLO11n from convolutions whose BatchNorm was folded in.

An export (the INT8 OpenVINO IR of :mod:`training.pretrained`, the shipped ONNX of
:mod:`training.from_onnx`) keeps each convolution as a weight and a bias, ``w' = w * g/s`` and
``b' = beta - mu * g/s``; the BatchNorm statistics are gone. Loading ``w'`` and ``b'`` into a fused
model would reproduce the export but could not be fine-tuned: Ultralytics' trainer rebuilds the
unfused architecture and keeps only the weights whose names match, which drops every folded bias.

So the folded weights go into the *unfused* model and each BatchNorm is set so that it reproduces
the folded layer in eval mode and behaves sensibly in train mode: measure the per-channel mean
``mu`` and variance ``sigma^2`` of the convolution's output (before the bias) on real photos, then
``running_mean=mu``, ``running_var=sigma^2``, ``gamma=sqrt(sigma^2+eps)``, ``beta=b'+mu``. Eval-mode
BN then computes ``x + b'`` exactly, and train-mode BN on similar photos starts from nearly the
same function. The statistics are measured in one forward pass: a hook on each convolution sets
its BatchNorm before the BatchNorm runs, so later layers see already-calibrated earlier ones.

torch and ultralytics are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.images import image_files, letterbox_tensor
from training.paths import SHARED_DATASETS

if TYPE_CHECKING:
    import torch

__all__ = [
    "ARCH_YAML",
    "DEFAULT_CALIBRATION_DIR",
    "FIXED_MODULE_SUFFIXES",
    "FoldedConv",
    "build_checkpoint",
    "calibration_batch",
    "rebuild_model",
]

DEFAULT_CALIBRATION_DIR = SHARED_DATASETS / "street-waste-cn" / "images" / "train"
ARCH_YAML = "yolo11n.yaml"
# The DFL convolution is a fixed arange projection, not a learned layer.
FIXED_MODULE_SUFFIXES = (".dfl.conv",)


@dataclass(frozen=True)
class FoldedConv:
    """One convolution of an export with its BatchNorm folded in.

    Attributes:
        weight: kernel, float32, with as many values as the module's weight (out, in/groups, kh, kw);
            an IR stores grouped kernels as (groups, out/groups, in/groups, kh, kw).
        bias: folded bias, float32, shape (out,).
    """

    weight: np.ndarray
    bias: np.ndarray


def calibration_batch(folder: Path = DEFAULT_CALIBRATION_DIR, count: int = 64, imgsz: int = 640) -> torch.Tensor:
    """Letterboxed photos used to measure BatchNorm statistics; see :func:`letterbox_tensor`."""
    paths = image_files(folder, count)
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    return letterbox_tensor(paths, imgsz)


def _copy_weight(target: torch.nn.Conv2d, weight: np.ndarray, path: str) -> None:
    """Copy an exported kernel into ``target``, reshaping an IR's grouped layout to PyTorch's."""
    import torch

    shape = tuple(target.weight.shape)
    if int(np.prod(weight.shape)) != int(np.prod(shape)):
        raise ValueError(f"{path}: exported weight {weight.shape} does not fit module weight {shape}")
    target.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(weight).reshape(shape)))


def _widen_class_branch(model: torch.nn.Module, convs: dict[str, FoldedConv]) -> None:
    """Give the head's class branch the width of the export's, when they differ.

    The branch's width follows the class count (``max(channels, min(nc, 100))``), and Ultralytics'
    trainer keeps the starting model's width when it fine-tunes to fewer classes: a 3-class model
    fine-tuned from the 80-class COCO one has 80 channels where a fresh 3-class one has 64. Build
    the branch at the export's width as the trainer did, with a last layer for this model's classes.
    """
    import torch
    from ultralytics.nn.tasks import DetectionModel

    layers: Any = model.model  # Ultralytics' nn.Sequential of layers, the Detect head last
    index = len(layers) - 1
    head = layers[index]
    hidden = convs.get(f"model.{index}.cv3.0.0.1.conv")
    if hidden is None:
        return
    width = int(hidden.weight.shape[0])
    if width == head.cv3[0][-1].in_channels:
        return
    wide_layers: Any = DetectionModel(ARCH_YAML, nc=width, verbose=False).model
    wide = wide_layers[index].cv3
    for branch in wide:
        branch[-1] = torch.nn.Conv2d(branch[-1].in_channels, head.nc, 1)
    head.cv3 = wide


def rebuild_model(convs: dict[str, FoldedConv], calibration: torch.Tensor, nc: int) -> torch.nn.Module:
    """Build YOLO11n and load folded weights, calibrating BatchNorms on ``calibration``.

    Args:
        convs: folded convolutions keyed by PyTorch module path (``model.0.conv``, and the head's
            plain convolutions such as ``model.23.cv2.0.2``); fixed layers (DFL) left out.
        calibration: photos, shape (N, 3, H, W), RGB in [0, 1]; N of a few dozen is enough.
        nc: number of classes of the export's head.

    Returns:
        An eval-mode, unfused ``DetectionModel`` whose eval-mode output equals the folded export.

    Raises:
        ValueError: when the export and the architecture disagree on a layer.
    """
    import torch

    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics.nn.modules.conv import Conv
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(ARCH_YAML, nc=nc, verbose=False)
    _widen_class_branch(model, convs)
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
                raise ValueError(f"{path} missing from the export")
            _copy_weight(module.conv, folded.weight, path)
            bias = torch.from_numpy(np.ascontiguousarray(folded.bias))
            handles.append(module.conv.register_forward_hook(calibrate_hook(module.bn, bias)))
            used.add(path)
        elif isinstance(module, torch.nn.Conv2d) and name in convs and name not in used:
            folded = convs[name]
            _copy_weight(module, folded.weight, name)
            if module.bias is None:
                raise ValueError(f"{name}: plain head convolution without bias")
            module.bias.data.copy_(torch.from_numpy(np.ascontiguousarray(folded.bias)))
            used.add(name)
    unused = set(convs) - used
    if unused:
        raise ValueError(f"exported convolutions without a module: {sorted(unused)}")
    with torch.no_grad():
        model(calibration)
    for handle in handles:
        handle.remove()
    return model


def build_checkpoint(model: torch.nn.Module, names: dict[int, str], imgsz: int, docs: str) -> dict[str, Any]:
    """Wrap ``model`` in the checkpoint dictionary Ultralytics' ``.pt`` loader and trainer expect.

    Args:
        model: the rebuilt model.
        names: class index -> name, as the head predicts them.
        imgsz: square input size the model was exported at; ``YOLO(pt).train()`` keeps it by default.
        docs: where the weights came from, stored in the checkpoint's ``docs``.
    """
    import ultralytics

    model.names = names  # type: ignore[assignment]  # Ultralytics reads class names from this attribute
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": docs,
        "epoch": -1,
        "best_fitness": None,
        "model": model,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "detect", "imgsz": imgsz, "model": ARCH_YAML},
        "train_metrics": None,
    }
