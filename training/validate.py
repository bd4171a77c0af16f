"""Ultralytics' validator on an imported dataset, for ``.pt`` checkpoints and exported ``.onnx`` models.

Used by :mod:`training.export` to record the metrics in the model file and its JSON twin.
(:mod:`training.evaluate` measures the shipped model through the vipare detector instead.)

Ultralytics computes COCO-style mAP at IoU 0.5 and 0.5:0.95, and precision and recall at its
best-F1 confidence. The photo-level verdict is measured by :mod:`training.evaluate`, with the
rule vipare ships (:func:`vipare.pipeline.decide_verdict`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from training.images import image_files

__all__ = ["split_images", "ultralytics_val"]

DIGITS = 4


def split_images(data_yaml: Path, split: str = "val", count: int | None = None) -> list[Path]:
    """The first ``count`` photos (all when None) of a split of ``data_yaml``, in name order."""
    data = yaml.safe_load(data_yaml.read_text())
    folder = Path(data["path"]) / data[split]
    return image_files(folder, count)


def ultralytics_val(weights: Path, data_yaml: Path, imgsz: int, batch: int = 16, split: str = "val") -> dict[str, Any]:
    """Ultralytics ``val`` of ``weights`` on ``split`` of ``data_yaml``.

    Args:
        weights: ``.pt`` checkpoint or ``.onnx`` model (Ultralytics runs a static ONNX model with
            batch 1 whatever ``batch`` says).
        data_yaml: dataset written by :mod:`training.datasets`.
        imgsz: square input size in pixels.
        batch: validation batch size (``.pt`` only).
        split: dataset split to evaluate.

    Returns:
        ``{"split", "imgsz", "images", "mAP50", "mAP50_95", "precision", "recall",
        "per_class": {name: {"mAP50", "mAP50_95", "precision", "recall"}}}``, rounded to 4 digits.
        Classes without labels in the split are left out of ``per_class``.
    """
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics import YOLO

    metrics = YOLO(str(weights), task="detect").val(
        data=str(data_yaml), imgsz=imgsz, batch=batch, plots=False, split=split, verbose=False
    )
    box = metrics.box
    per_class = {
        metrics.names[int(c)]: {
            "mAP50": round(float(box.ap50[i]), DIGITS),
            "mAP50_95": round(float(box.ap[i]), DIGITS),
            "precision": round(float(box.p[i]), DIGITS),
            "recall": round(float(box.r[i]), DIGITS),
        }
        for i, c in enumerate(box.ap_class_index)
    }
    return {
        "split": split,
        "imgsz": imgsz,
        "images": len(split_images(data_yaml, split)),
        "mAP50": round(float(box.map50), DIGITS),
        "mAP50_95": round(float(box.map), DIGITS),
        "precision": round(float(box.mp), DIGITS),
        "recall": round(float(box.mr), DIGITS),
        "per_class": per_class,
    }
