"""Ultralytics' validator on an imported dataset, for ``.pt`` checkpoints and exported ``.onnx`` models.

Used by :mod:`training.export` to record the metrics in the model file and its JSON twin.
(:mod:`training.evaluate` measures the shipped model through the vipare detector instead.)

Ultralytics computes COCO-style mAP at IoU 0.5 and 0.5:0.95, and precision and recall at its
best-F1 confidence. :func:`photo_hit_rate` adds the photo-level question vipare's verdict asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["photo_hit_rate", "split_images", "ultralytics_val"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
DIGITS = 4
# vipare's default verdict threshold (vipare.settings.Settings.verdict_threshold).
DEFAULT_VERDICT_CONF = 0.35
DEFAULT_DEPOSIT_CLASSES = ("dumped_waste", "overflowing_bin")


def split_images(data_yaml: Path, split: str = "val", count: int | None = None) -> list[Path]:
    """The first ``count`` photos (all when None) of a split of ``data_yaml``, in name order."""
    data = yaml.safe_load(data_yaml.read_text())
    folder = Path(data["path"]) / data[split]
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]


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


def photo_hit_rate(
    weights: Path,
    data_yaml: Path,
    imgsz: int,
    conf: float = DEFAULT_VERDICT_CONF,
    split: str = "val",
    deposit_classes: Sequence[str] = DEFAULT_DEPOSIT_CLASSES,
) -> dict[str, Any]:
    """Photo-level check: among photos labelled with a deposit, how many get one detected.

    This is what vipare's verdict asks (is there dumping in this photo?), and it does not depend on
    whether a dataset boxes piles or single bags.

    Args:
        weights: ``.pt`` or ``.onnx`` model.
        data_yaml: dataset written by :mod:`training.datasets`.
        imgsz: square input size in pixels.
        conf: least score of a detection that counts (vipare's verdict threshold).
        split: dataset split.
        deposit_classes: class names that count as a deposit.

    Returns:
        ``{"conf", "photos_with_deposit", "hits", "hit_rate", "photos_without_deposit", "false_alarms"}``.
    """
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    names = yaml.safe_load(data_yaml.read_text())["names"]
    deposit_ids = {int(k) for k, v in names.items() if v in deposit_classes}
    counts = {"photos_with_deposit": 0, "hits": 0, "photos_without_deposit": 0, "false_alarms": 0}
    for image in split_images(data_yaml, split):
        label = image.parent.parent.parent / "labels" / split / f"{image.stem}.txt"
        lines = label.read_text().splitlines() if label.exists() else []
        labelled = any(int(line.split()[0]) in deposit_ids for line in lines if line.strip())
        result: Any = model.predict(str(image), imgsz=imgsz, conf=conf, verbose=False)[0]  # type: ignore[index]
        found = any(int(c) in deposit_ids for c in result.boxes.cls.tolist())
        if labelled:
            counts["photos_with_deposit"] += 1
            counts["hits"] += int(found)
        else:
            counts["photos_without_deposit"] += 1
            counts["false_alarms"] += int(found)
    rate = counts["hits"] / counts["photos_with_deposit"] if counts["photos_with_deposit"] else None
    return {"conf": conf, **counts, "hit_rate": None if rate is None else round(rate, DIGITS)}
