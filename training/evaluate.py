"""Evaluate a shipped ONNX model through the vipare detector: what ships is what is measured.

Box metrics follow the usual detection protocol (the one Ultralytics' validator uses): detections
at a low score threshold, matched greedily to same-class labels by IoU at ten thresholds
0.50:0.95, average precision from the 101-point interpolated precision envelope. Operating
metrics use the shipped thresholds: precision and recall of the kept boxes (IoU 0.5) and the
image-level "dumping present" verdict (the rule in :func:`vipare.pipeline.decide_verdict`).

    vipare evaluate weights/vipare-yolo11n.onnx ../shared/datasets/street-waste-cn --split val
    vipare evaluate MODEL.onnx runs/data/swcn/data.yaml --compare-ultralytics
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from training.datasets import SOURCES, Source, import_split, taxonomy_source
from vipare.boxes import iou_matrix
from vipare.detection import Detector
from vipare.imaging import load_image
from vipare.pipeline import decide_verdict, tile_thresholds, verdict_thresholds
from vipare.results import Detection
from vipare.settings import Settings
from vipare.taxonomy import class_names, is_deposit
from vipare.tiles import detect_in_tiles, holds_tiles

__all__ = ["Evaluation", "average_precision", "evaluate", "match_detections", "resolve_source", "roc_auc"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
MAP_CONF_THRESHOLD = 0.001  # score floor for the precision-recall curve (the validator's default)
MAP_MAX_DETECTIONS = 300
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class ImageEval:
    """One image's labels and detections, in original pixels."""

    path: Path
    gt_boxes: np.ndarray  # (G, 4) xyxy
    gt_classes: np.ndarray  # (G,) int
    boxes: np.ndarray  # (D, 4) xyxy
    scores: np.ndarray  # (D,)
    classes: np.ndarray  # (D,) int
    size: tuple[int, int] = (0, 0)  # width, height of the upright original


@dataclass(frozen=True)
class Evaluation:
    """Everything :func:`evaluate` measured; ``as_dict`` is what the CLI prints."""

    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.metrics


def match_detections(
    gt_boxes: np.ndarray, gt_classes: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """Which detections are true positives at each IoU threshold.

    One-to-one matching of same-class pairs: each detection takes its best-IoU label, and a label
    claimed by several detections goes to the highest-scoring one. ``boxes`` must be sorted by
    descending score, as the detector returns them.

    Returns:
        (D, T) bool array: detection d is correct at threshold t.
    """
    correct = np.zeros((len(boxes), len(iou_thresholds)), dtype=bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return correct
    iou = iou_matrix(gt_boxes, boxes) * (gt_classes[:, None] == classes[None, :])
    for t, threshold in enumerate(iou_thresholds):
        gi, di = np.nonzero(iou >= threshold)
        if gi.size == 0:
            continue
        # Each detection keeps its best-IoU label; then each label keeps the first detection that
        # chose it in detection order, i.e. the highest-scoring one (detections come best first).
        order = np.argsort(-iou[gi, di], kind="stable")
        gi, di = gi[order], di[order]
        _, first_d = np.unique(di, return_index=True)
        gi, di = gi[first_d], di[first_d]
        _, first_g = np.unique(gi, return_index=True)
        correct[di[first_g], t] = True
    return correct


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated precision envelope, sampled at 101 recall points.

    Args:
        recall: cumulative recall, non-decreasing, by descending score.
        precision: cumulative precision at the same points.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(np.trapezoid(np.interp(RECALL_POINTS, mrec, mpre), RECALL_POINTS))


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random positive outscores a random negative.

    Ties count one half (the Mann-Whitney U statistic over average ranks).

    Args:
        scores: (N,) one score per item.
        positives: (N,) bool, True for the items that should score high.

    Returns:
        The AUC in [0, 1], or None when there is no positive or no negative.
    """
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # Tied scores share the mean of their ranks.
    unique, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    if len(unique) < len(scores):
        sums = np.zeros(len(unique))
        np.add.at(sums, inverse, ranks)
        ranks = (sums / counts)[inverse]
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _per_class_ap(
    correct: np.ndarray, scores: np.ndarray, classes: np.ndarray, gt_classes: np.ndarray, n_classes: int
) -> np.ndarray:
    """(C, T) average precision per class and IoU threshold."""
    ap = np.zeros((n_classes, correct.shape[1]))
    order = np.argsort(-scores, kind="stable")
    correct, classes = correct[order], classes[order]
    for c in range(n_classes):
        n_labels = int((gt_classes == c).sum())
        mine = classes == c
        if n_labels == 0 or not mine.any():
            continue
        tp = np.cumsum(correct[mine], axis=0)
        fp = np.cumsum(~correct[mine], axis=0)
        recall = tp / n_labels
        precision = tp / (tp + fp)
        for t in range(correct.shape[1]):
            ap[c, t] = average_precision(recall[:, t], precision[:, t])
    return ap


def resolve_source(dataset: Path) -> Source:
    """The dataset's folder and class mapping: a taxonomy-named YOLO dataset or a declared source.

    Args:
        dataset: a folder holding ``data.yaml``, ``images/<split>``, ``labels/<split>``, or the
            ``data.yaml`` itself.

    Raises:
        click.UsageError: no ``data.yaml``, or classes that neither match the taxonomy nor a
            declared source mapping.
    """
    root = dataset.parent if dataset.suffix in {".yaml", ".yml"} else dataset
    data_yaml = root / "data.yaml"
    if not data_yaml.exists():
        raise click.UsageError(f"{root} has no data.yaml: give a YOLO dataset folder or its data.yaml")
    names = yaml.safe_load(data_yaml.read_text()).get("names", {})
    names = list(names.values()) if isinstance(names, dict) else list(names)
    taxonomy = class_names()
    if set(names) <= set(taxonomy):
        return taxonomy_source(root)
    for source in SOURCES.values():
        if set(names) <= set(source.mapping):
            return Source(source.name, root, source.mapping)
    raise click.UsageError(
        f"classes {names} match neither the taxonomy {taxonomy} nor a declared source in training.datasets"
    )


def _collect(
    detector: Detector, source: Source, splits: Sequence[str], max_images: int | None,
    thresholds: dict[str, float], tiles: dict[str, float] | None,
) -> tuple[list[ImageEval], list[list[Detection]], float]:
    """Run the detector once per image; decode twice: the mAP protocol and the shipped settings.

    The shipped detections are the service's: with ``tiles`` (the tile thresholds), a photo in which
    the whole-image pass finds no deposit gets the tiled second look (:mod:`vipare.tiles`), as in
    :meth:`vipare.pipeline.Pipeline.analyze`. The mAP protocol uses the whole-image pass only.
    """
    samples = [sample for split in splits for sample in import_split(source, split)[0]]
    samples = samples[:max_images] if max_images else samples
    images: list[ImageEval] = []
    shipped: list[list[Detection]] = []
    seconds = 0.0
    for sample in samples:
        start = time.perf_counter()
        decoded = load_image(sample.image, target_size=detector.input_size)
        info = decoded.info
        size = info.size
        blob, lb = detector.preprocess(decoded.array)
        raw = detector.run(blob)
        found = detector.postprocess(raw, lb, original_size=size)
        if tiles is not None and holds_tiles(decoded.size, detector) and not decide_verdict(found, thresholds).dumping:
            found = detect_in_tiles(detector, decoded.array, found, original_size=size, min_scores=tiles)
        shipped.append(found)
        seconds += time.perf_counter() - start
        dets = detector.postprocess(raw, lb, original_size=size, conf_threshold=MAP_CONF_THRESHOLD,
                                    max_detections=MAP_MAX_DETECTIONS, multi_label=True)
        gt = np.array([[b.cx - b.w / 2, b.cy - b.h / 2, b.cx + b.w / 2, b.cy + b.h / 2] for b in sample.boxes])
        gt = gt.reshape(-1, 4) * [info.width, info.height, info.width, info.height]
        images.append(ImageEval(
            path=sample.image,
            gt_boxes=gt,
            gt_classes=np.array([b.cls for b in sample.boxes], dtype=int),
            boxes=np.array([d.box for d in dets], dtype=float).reshape(-1, 4),
            scores=np.array([d.score for d in dets], dtype=float),
            classes=np.array([d.class_id for d in dets], dtype=int),
            size=(info.width, info.height),
        ))
    return images, shipped, seconds


def evaluate(
    model: Path, dataset: Path, *, split: str | Sequence[str] = "val", settings: Settings | None = None,
    max_images: int | None = None,
) -> Evaluation:
    """Measure ``model`` on one split of ``dataset`` through :class:`vipare.detection.Detector`.

    Args:
        model: the ONNX file.
        dataset: YOLO dataset folder or data.yaml (see :func:`resolve_source`).
        split: split folder name, or several whose images are pooled.
        settings: shipped thresholds (score, NMS IoU, verdict); defaults to ``Settings()``.
        max_images: evaluate only the first N images (smoke tests).
    """
    settings = settings or Settings()
    source = resolve_source(dataset)
    detector = Detector.from_settings(settings, model_path=model)
    names = list(detector.names)
    splits = [split] if isinstance(split, str) else list(split)
    thresholds = verdict_thresholds(detector, settings)
    tiles = tile_thresholds(detector, settings) if settings.tiles_when_empty else None
    images, shipped, seconds = _collect(detector, source, splits, max_images, thresholds, tiles)

    correct = [match_detections(i.gt_boxes, i.gt_classes, i.boxes, i.classes) for i in images]
    all_correct = np.concatenate(correct) if correct else np.zeros((0, len(IOU_THRESHOLDS)), bool)
    all_scores = np.concatenate([i.scores for i in images]) if images else np.zeros(0)
    all_classes = np.concatenate([i.classes for i in images]) if images else np.zeros(0, int)
    gt_classes = np.concatenate([i.gt_classes for i in images]) if images else np.zeros(0, int)
    ap = _per_class_ap(all_correct, all_scores, all_classes, gt_classes, len(names))
    present = [c for c in range(len(names)) if (gt_classes == c).any()]

    # Operating point: the detections as shipped (score threshold, single label, cap), IoU 0.5.
    per_class: dict[str, Any] = {}
    op_correct = [match_detections(i.gt_boxes, i.gt_classes, _boxes(d), _classes(d), IOU_THRESHOLDS[:1])[:, 0]
                  for i, d in zip(images, shipped, strict=True)]
    op_hits = np.concatenate(op_correct) if op_correct else np.zeros(0, bool)
    op_classes = np.concatenate([_classes(d) for d in shipped]) if shipped else np.zeros(0, int)
    for c in range(len(names)):
        n_labels = int((gt_classes == c).sum())
        mine = op_classes == c
        tp = int(op_hits[mine].sum())
        per_class[names[c]] = {
            "labels": n_labels,
            "ap50": round(float(ap[c, 0]), 4),
            "ap50_95": round(float(ap[c].mean()), 4),
            "precision": round(tp / int(mine.sum()), 4) if mine.any() else None,
            "recall": round(tp / n_labels, 4) if n_labels else None,
        }
    tp_all = int(op_hits.sum())
    verdicts = _image_level(images, shipped, names, thresholds)
    metrics = {
        "model": model.name,
        "dataset": str(dataset),
        "split": "+".join(splits),
        "input_size": list(detector.input_size.hw),
        "images": len(images),
        "labels": int(len(gt_classes)),
        "map50": round(float(ap[present, 0].mean()), 4) if present else None,
        "map50_95": round(float(ap[present].mean()), 4) if present else None,
        "per_class": per_class,
        "conf_threshold": settings.conf_threshold,
        "iou_threshold": settings.iou_threshold,
        "box_merge_iou": settings.box_merge_iou,
        "precision": round(tp_all / len(op_hits), 4) if len(op_hits) else None,
        "recall": round(tp_all / len(gt_classes), 4) if len(gt_classes) else None,
        "image_level": verdicts,
        "deposit_coverage": deposit_coverage(images, shipped, names),
        "ms_per_image": round(1000 * seconds / max(len(images), 1), 1),
        "tiles_when_empty": settings.tiles_when_empty,
        "tile_thresholds": tiles,
        "mirrored_view": settings.mirrored_view,
    }
    return Evaluation(metrics)


COVERED_SHARE = 0.5
SMALL_AREA = 0.01


def covered(labels: np.ndarray, predicted: np.ndarray, share: float = COVERED_SHARE) -> np.ndarray:
    """For each labelled box (``N x 4`` xyxy), whether ``share`` or more of its area lies inside one
    predicted box (``M x 4``): a pile box around five bags covers all five."""
    if len(labels) == 0:
        return np.zeros(0, bool)
    if len(predicted) == 0:
        return np.zeros(len(labels), bool)
    lo = np.maximum(labels[:, None, :2], predicted[None, :, :2])
    hi = np.minimum(labels[:, None, 2:], predicted[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=2)
    area = np.clip(labels[:, 2:] - labels[:, :2], 0, None).prod(axis=1)
    return (inter >= share * np.maximum(area, 1e-9)[:, None]).any(axis=1)


def deposit_coverage(
    images: Sequence[ImageEval], shipped: Sequence[Sequence[Detection]], names: Sequence[str]
) -> dict[str, Any]:
    """Share of labelled deposits covered by a shipped deposit detection (any deposit class), all and
    small ones (under :data:`SMALL_AREA` of the photo)."""
    deposit = np.array([is_deposit(n) for n in names], dtype=bool)
    hits: list[np.ndarray] = []
    small: list[np.ndarray] = []
    for image, dets in zip(images, shipped, strict=True):
        mine = deposit[image.gt_classes] if len(image.gt_classes) else np.zeros(0, bool)
        labels = image.gt_boxes[mine]
        found = _boxes([d for d in dets if d.deposit])
        hits.append(covered(labels, found))
        area = np.clip(labels[:, 2:] - labels[:, :2], 0, None).prod(axis=1)
        small.append(area < SMALL_AREA * image.size[0] * image.size[1])
    hit = np.concatenate(hits) if hits else np.zeros(0, bool)
    tiny = np.concatenate(small) if small else np.zeros(0, bool)
    return {
        "rule": f"a labelled deposit is covered when {COVERED_SHARE:.0%} or more of its box lies inside a shipped "
        "deposit-class detection",
        "labels": int(len(hit)),
        "covered": round(float(hit.mean()), 4) if len(hit) else None,
        "small_labels": int(tiny.sum()),
        "small_covered": round(float(hit[tiny].mean()), 4) if tiny.any() else None,
    }


def _boxes(dets: Sequence[Detection]) -> np.ndarray:
    return np.array([d.box for d in dets], dtype=float).reshape(-1, 4)


def _classes(dets: Sequence[Detection]) -> np.ndarray:
    return np.array([d.class_id for d in dets], dtype=int)


def _image_level(
    images: Sequence[ImageEval], shipped: Sequence[Sequence[Detection]], names: Sequence[str],
    thresholds: dict[str, float],
) -> dict[str, Any]:
    """Confusion counts of the "dumping present" verdict against "has a deposit label", and its AUC.

    The AUC ranks photos by their best deposit-class detection among the low-threshold ones (the
    mAP protocol's), measured against its class's threshold (score minus threshold: the verdict's
    own order), so that it measures the ranking over every threshold, not only above 0.25.
    """
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    bars = np.array([thresholds.get(n, np.inf) if is_deposit(n) else np.inf for n in names])
    truths: list[bool] = []
    best: list[float] = []
    for image, dets in zip(images, shipped, strict=True):
        truth = any(is_deposit(names[c]) for c in image.gt_classes)
        said = decide_verdict(dets, thresholds).dumping
        counts[("t" if said == truth else "f") + ("p" if said else "n")] += 1
        truths.append(truth)
        margins = image.scores - bars[image.classes] if len(image.classes) else np.zeros(0)
        best.append(float(margins.max()) if np.isfinite(margins).any() else -1.0)
    auc = roc_auc(np.array(best), np.array(truths, dtype=bool))
    positives, negatives = counts["tp"] + counts["fn"], counts["tn"] + counts["fp"]
    total = positives + negatives
    return {
        "rule": "dumping when a deposit-class detection scores >= its class's verdict threshold",
        "verdict_thresholds": thresholds,
        "deposit_classes": [n for n in names if is_deposit(n)],
        "positives": positives,
        "negatives": negatives,
        **counts,
        "accuracy": round((counts["tp"] + counts["tn"]) / total, 4) if total else None,
        "recall": round(counts["tp"] / positives, 4) if positives else None,
        "specificity": round(counts["tn"] / negatives, 4) if negatives else None,
        "auc": round(auc, 4) if auc is not None else None,
        "auc_score": f"best deposit-class detection score minus its class's threshold per photo, detections from "
        f"{MAP_CONF_THRESHOLD}",
    }


def ultralytics_map50(model: Path, data_yaml: Path, imgsz: int, settings: Settings) -> float:
    """mAP50 of the same ONNX file from Ultralytics' own validator, for the cross-check."""
    from ultralytics import YOLO

    from training.offline import ensure_offline

    ensure_offline()
    result = YOLO(str(model), task="detect").val(
        data=str(data_yaml), imgsz=imgsz, batch=1, conf=MAP_CONF_THRESHOLD, iou=settings.iou_threshold,
        max_det=MAP_MAX_DETECTIONS, plots=False, verbose=False, device="cpu", workers=0,
    )
    return float(result.box.map50)


@click.command("evaluate")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--split", "splits", multiple=True, default=["val"], show_default=True,
              help="Split folder under images/ and labels/; repeat to pool several.")
@click.option("--max-images", type=click.IntRange(1), default=None, help="Only the first N images.")
@click.option("--compare-ultralytics", is_flag=True,
              help="Also run Ultralytics' validator on the same ONNX (needs a taxonomy-named dataset).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the metrics to this JSON file.")
def evaluate_command(model: Path, dataset: Path, splits: tuple[str, ...], max_images: int | None,
                     compare_ultralytics: bool, output: Path | None) -> None:
    """Measure MODEL on DATASET through the vipare detector and print the metrics as JSON."""
    settings = Settings()
    result = evaluate(model, dataset, split=splits, settings=settings, max_images=max_images).as_dict()
    if compare_ultralytics:
        source = resolve_source(dataset)
        if set(source.mapping) != set(source.mapping.values()):
            raise click.UsageError("--compare-ultralytics needs a dataset whose classes are the taxonomy's "
                                   "(write one with python -m training.datasets)")
        theirs = ultralytics_map50(model, source.root / "data.yaml", result["input_size"][0], settings)
        result["ultralytics_map50"] = round(theirs, 4)
        result["map50_difference"] = round(abs(theirs - result["map50"]), 4)
    text = json.dumps(result, indent=2)
    if output is not None:
        output.write_text(text + "\n")
    click.echo(text)
