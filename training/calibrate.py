"""Per-class verdict thresholds chosen on held-out photos, written into the model file.

A photo counts as dumping when a deposit-class detection scores at least its class's threshold
(:func:`vipare.pipeline.decide_verdict`). One threshold for every class is a poor fit: an ordinary
container read as ``overflowing_bin`` at 0.4 makes a clean street "dumping", while a bag at 0.4 is
usually a bag. This command measures every pair of thresholds on a calibration split the model
never trained on (``street-waste-cn:train:holdout``, never the test photos), through the same path
the service takes (whole photo, then the tiled second look when nothing was found), and keeps the
pair with the highest specificity among those whose recall reaches ``--recall``; ties go to the
higher recall, then to the lower thresholds. The pair goes into the ONNX metadata
(``vipare_verdict_thresholds``), which the service reads at load; the JSON twin records the choice.

    python -m training.calibrate weights/vipare-yolo11n.onnx runs/data/calib
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from training.datasets import import_split
from training.evaluate import resolve_source
from vipare.detection import Detector
from vipare.imaging import load_image
from vipare.model_metadata import VERDICT_THRESHOLDS_KEY
from vipare.settings import Settings
from vipare.taxonomy import is_deposit
from vipare.tiles import detect_in_tiles

log = logging.getLogger(__name__)

GRID = tuple(round(0.25 + 0.01 * i, 2) for i in range(71))  # 0.25 .. 0.95: nothing below the score threshold survives
TARGET_RECALL = 0.95


@dataclass(frozen=True)
class Scores:
    """Per photo and deposit class, the best score of the whole-image pass and of the tiled pass."""

    classes: tuple[str, ...]
    first: np.ndarray  # (photos, classes)
    tiled: np.ndarray  # (photos, classes); the first pass's where the photo cannot be tiled
    truth: np.ndarray  # (photos,) bool: has a labelled deposit


def _best(detections: list[Any], classes: tuple[str, ...]) -> np.ndarray:
    return np.array([max((d.score for d in detections if d.label == c), default=0.0) for c in classes])


def collect(model: Path, dataset: Path, splits: tuple[str, ...], settings: Settings, tiles: bool) -> Scores:
    """Run the model over the calibration photos, both passes on every photo."""
    detector = Detector(model, conf_threshold=settings.conf_threshold, iou_threshold=settings.iou_threshold,
                        max_detections=settings.max_detections, intra_op_threads=settings.intra_op_threads)
    classes = tuple(n for n in detector.names if is_deposit(n))
    source = resolve_source(dataset)
    first, tiled, truth = [], [], []
    for split in splits:
        for sample in import_split(source, split)[0]:
            decoded = load_image(sample.image, target_size=detector.input_size)
            found = detector.detect(decoded.array, original_size=decoded.info.size)
            first.append(_best(found, classes))
            can_tile = tiles and max(decoded.size) >= max(detector.input_size)
            more = found
            if can_tile:
                more = detect_in_tiles(detector, decoded.array, found, original_size=decoded.info.size)
            tiled.append(_best(more, classes))
            truth.append(any(is_deposit(detector.names[b.cls]) for b in sample.boxes))
    return Scores(classes, np.array(first).reshape(-1, len(classes)), np.array(tiled).reshape(-1, len(classes)),
                  np.array(truth, dtype=bool))


def verdicts(scores: Scores, bars: np.ndarray) -> np.ndarray:
    """Each photo's verdict at thresholds ``bars`` (one per class), as the service decides it."""
    first = (scores.first >= bars).any(axis=1)
    return first | (scores.tiled >= bars).any(axis=1)


def choose(scores: Scores, target_recall: float = TARGET_RECALL, grid: tuple[float, ...] = GRID) -> dict[str, Any]:
    """The thresholds with the best specificity at ``target_recall`` or more (see the module doc).

    Raises:
        ValueError: when the photos hold no deposit or no clean photo, or no pair reaches the recall.
    """
    positives, negatives = int(scores.truth.sum()), int((~scores.truth).sum())
    if not positives or not negatives:
        raise ValueError(f"calibration needs photos with and without a deposit, got {positives} and {negatives}")
    best: tuple[Any, ...] | None = None
    for bars in itertools.product(grid, repeat=len(scores.classes)):
        said = verdicts(scores, np.array(bars))
        recall = float((said & scores.truth).sum()) / positives
        if recall < target_recall:
            continue
        specificity = float((~said & ~scores.truth).sum()) / negatives
        key = (specificity, recall, -sum(bars))
        if best is None or key > best[0]:
            best = (key, bars, recall, specificity)
    if best is None:
        raise ValueError(f"no thresholds reach recall {target_recall} on these photos: lower --recall")
    _, bars, recall, specificity = best
    return {
        "thresholds": dict(zip(scores.classes, bars, strict=True)),
        "recall": round(recall, 4),
        "specificity": round(specificity, 4),
        "target_recall": target_recall,
        "positives": positives,
        "negatives": negatives,
    }


def write_thresholds(model: Path, thresholds: dict[str, float]) -> None:
    """Put the thresholds into the ONNX file's metadata, replacing any there."""
    import onnx

    proto = onnx.load(str(model))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != VERDICT_THRESHOLDS_KEY]
    del proto.metadata_props[:]
    for key, value in [*kept, (VERDICT_THRESHOLDS_KEY, repr(thresholds))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = model.with_suffix(".calibrating")
    onnx.save(proto, str(tmp))
    tmp.replace(model)


def calibrate(model: Path, dataset: Path, splits: tuple[str, ...], target_recall: float, tiles: bool) -> dict[str, Any]:
    """Measure, choose, write the thresholds into ``model`` and the choice into its JSON twin."""
    import hashlib

    settings = Settings(tiles_when_empty=tiles)
    chosen = choose(collect(model, dataset, splits, settings, tiles), target_recall)
    write_thresholds(model, chosen["thresholds"])
    record = {
        **chosen,
        "dataset": str(dataset),
        "split": "+".join(splits),
        "tiles_when_empty": tiles,
        "rule": "highest specificity with recall >= target_recall, then highest recall, then lowest thresholds; "
        f"grid {GRID[0]}..{GRID[-1]} by 0.01",
    }
    twin = model.with_suffix(".json")
    if twin.exists():
        data = json.loads(twin.read_text())
        data["verdict_calibration"] = record
        data["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
        data["bytes"] = model.stat().st_size
        twin.write_text(json.dumps(data, indent=2) + "\n")
    return record


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--split", "splits", multiple=True, default=["val"], show_default=True,
              help="Split folder of DATASET (repeatable); never the test photos.")
@click.option("--recall", "target_recall", type=click.FloatRange(0, 1), default=TARGET_RECALL, show_default=True,
              help="Image-level recall the thresholds must reach on the calibration photos.")
@click.option("--tiles/--no-tiles", default=True, show_default=True,
              help="Calibrate with the tiled second look, as the service runs by default.")
def main(model: Path, dataset: Path, splits: tuple[str, ...], target_recall: float, tiles: bool) -> None:
    """Choose per-class verdict thresholds for MODEL on DATASET and write them into MODEL."""
    logging.basicConfig(level=logging.INFO)
    try:
        record = calibrate(model, dataset, splits, target_recall, tiles)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
