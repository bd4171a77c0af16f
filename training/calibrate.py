"""Per-class verdict thresholds chosen on held-out photos, written into the model file.

A photo counts as dumping when a deposit-class detection scores at least its class's threshold
(:func:`vipare.pipeline.decide_verdict`). One threshold for every class is a poor fit: an ordinary
container read as ``overflowing_bin`` at 0.4 makes a clean street "dumping", while a bag at 0.4 is
usually a bag. This command measures every pair of thresholds on a calibration split held out of the
model's training (``street-waste-cn:train:holdout``, never the test photos), through the same path the
service takes: the whole photo, then, when it shows nothing, the tiled second look, whose finds
must reach their class's threshold plus a margin (a tile sees a part of the street out of context).
It keeps the thresholds and margin with the highest specificity among those whose recall reaches
``--recall``; ties go to the higher recall, then to the lower thresholds, then to the larger margin.
They go into the ONNX metadata (``vipare_verdict_thresholds``, ``vipare_tile_thresholds``), which the
service reads at load; the JSON twin records the choice.

Specificity can only be traded on clean photos that the model gives some deposit detection (a score
of at least the grid's lowest threshold): a photo it scores 0 on is clean at every threshold. The
record counts them, in the whole photo (``negatives_firing``) and in its tiles
(``negatives_firing_in_tiles``). With fewer than :data:`MIN_NEGATIVES_FIRING` in the whole photo the
photos cannot rank thresholds by specificity: "the lowest thresholds" would then mean the most false
alarms on streets nobody measured. So no threshold goes below the uncalibrated default
(:data:`~vipare.settings.DEFAULT_VERDICT_THRESHOLD`) unless the recall target needs it, and the record
says so (``floor``). A model that trained on the calibration photos (or started from one that did)
scores its clean ones 0: hold them out of its whole lineage.

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
from vipare.model_metadata import TILE_THRESHOLDS_KEY, VERDICT_THRESHOLDS_KEY
from vipare.settings import DEFAULT_VERDICT_THRESHOLD, Settings
from vipare.taxonomy import is_deposit
from vipare.tiles import detect_in_tiles, holds_tiles

log = logging.getLogger(__name__)

GRID = tuple(round(0.25 + 0.01 * i, 2) for i in range(71))  # 0.25 .. 0.95: nothing below the score threshold survives
MARGINS = tuple(round(0.05 * i, 2) for i in range(11))  # 0 .. 0.5
TARGET_RECALL = 0.95
MIN_NEGATIVES_FIRING = 5
"""Clean calibration photos with a deposit detection, below which specificity is not measured."""


@dataclass(frozen=True)
class Scores:
    """Per photo and deposit class, the best score of the whole-image pass and of the tiles' own finds."""

    classes: tuple[str, ...]
    first: np.ndarray  # (photos, classes)
    tiled: np.ndarray  # (photos, classes): deposits found in the tiles; 0 where the photo cannot be tiled
    truth: np.ndarray  # (photos,) bool: has a labelled deposit


def _best(detections: list[Any], classes: tuple[str, ...]) -> np.ndarray:
    return np.array([max((d.score for d in detections if d.label == c), default=0.0) for c in classes])


def collect(model: Path, dataset: Path, splits: tuple[str, ...], settings: Settings, tiles: bool) -> Scores:
    """Run the model over the calibration photos, both passes on every photo."""
    detector = Detector.from_settings(settings, model_path=model)
    classes = tuple(n for n in detector.names if is_deposit(n))
    source = resolve_source(dataset)
    first, tiled, truth = [], [], []
    for split in splits:
        for sample in import_split(source, split)[0]:
            decoded = load_image(sample.image, target_size=detector.input_size)
            found = detector.detect(decoded.array, original_size=decoded.info.size)
            first.append(_best(found, classes))
            can_tile = tiles and holds_tiles(decoded.size, detector)
            more = detect_in_tiles(detector, decoded.array, [], original_size=decoded.info.size) if can_tile else []
            tiled.append(_best(more, classes))
            truth.append(any(is_deposit(detector.names[b.cls]) for b in sample.boxes))
    return Scores(classes, np.array(first).reshape(-1, len(classes)), np.array(tiled).reshape(-1, len(classes)),
                  np.array(truth, dtype=bool))


def verdicts(scores: Scores, bars: np.ndarray, tile_bars: np.ndarray | None = None) -> np.ndarray:
    """Each photo's verdict at thresholds ``bars`` and tile thresholds ``tile_bars`` (one per class;
    the same as ``bars`` when None), as the service decides it."""
    first = (scores.first >= bars).any(axis=1)
    return first | (scores.tiled >= (bars if tile_bars is None else tile_bars)).any(axis=1)


def negatives_firing(scores: Scores, tiled: bool = False, lowest: float = GRID[0]) -> int:
    """Clean photos with a deposit detection of ``lowest`` or more, in the whole photo or in its tiles."""
    found = scores.tiled if tiled else scores.first
    return int(((found >= lowest).any(axis=1) & ~scores.truth).sum())


def _search(scores: Scores, target_recall: float, grid: tuple[float, ...],
            margins: tuple[float, ...]) -> tuple[Any, ...] | None:
    """The best (thresholds, tile thresholds, margin, recall, specificity) on ``grid``, or None."""
    positives, negatives = int(scores.truth.sum()), int((~scores.truth).sum())
    best: tuple[Any, ...] | None = None
    for bars in itertools.product(grid, repeat=len(scores.classes)):
        for margin in margins:
            tile_bars = np.minimum(np.array(bars) + margin, 1.0)
            said = verdicts(scores, np.array(bars), tile_bars)
            recall = float((said & scores.truth).sum()) / positives
            if recall < target_recall:
                continue
            specificity = float((~said & ~scores.truth).sum()) / negatives
            key = (specificity, recall, -round(sum(bars), 2), margin)
            if best is None or key > best[0]:
                best = (key, bars, tile_bars, margin, recall, specificity)
    return None if best is None else best[1:]


def choose(scores: Scores, target_recall: float = TARGET_RECALL, grid: tuple[float, ...] = GRID,
           margins: tuple[float, ...] = MARGINS, floor: float | None = None) -> dict[str, Any]:
    """The thresholds with the best specificity at ``target_recall`` or more (see the module doc).

    ``floor``: thresholds below it are tried only when none at or above it reach the recall target;
    the record's ``floor`` is the one that held (None when none was given or it had to give way).

    Raises:
        ValueError: when the photos hold no deposit or no clean photo, or no pair reaches the recall.
    """
    positives, negatives = int(scores.truth.sum()), int((~scores.truth).sum())
    if not positives or not negatives:
        raise ValueError(f"calibration needs photos with and without a deposit, got {positives} and {negatives}")
    found = None
    if floor is not None:
        found = _search(scores, target_recall, tuple(g for g in grid if g >= floor), margins)
        if found is None:
            log.warning("no thresholds of %s or more reach recall %s: going below", floor, target_recall)
            floor = None
    if found is None:
        found = _search(scores, target_recall, grid, margins)
    if found is None:
        raise ValueError(f"no thresholds reach recall {target_recall} on these photos: lower --recall")
    bars, tile_bars, margin, recall, specificity = found
    return {
        "thresholds": dict(zip(scores.classes, bars, strict=True)),
        "tile_thresholds": {c: round(float(t), 2) for c, t in zip(scores.classes, tile_bars, strict=True)},
        "tile_margin": margin,
        "recall": round(recall, 4),
        "specificity": round(specificity, 4),
        "target_recall": target_recall,
        "positives": positives,
        "negatives": negatives,
        "negatives_firing": negatives_firing(scores, lowest=grid[0]),
        "negatives_firing_in_tiles": negatives_firing(scores, tiled=True, lowest=grid[0]),
        "floor": floor,
    }


def write_thresholds(model: Path, thresholds: dict[str, float], tile_thresholds: dict[str, float]) -> None:
    """Put the verdict and tile thresholds into the ONNX file's metadata, replacing any there."""
    import onnx

    proto = onnx.load(str(model))
    ours = {VERDICT_THRESHOLDS_KEY: repr(thresholds), TILE_THRESHOLDS_KEY: repr(tile_thresholds)}
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in ours]
    del proto.metadata_props[:]
    for key, value in [*kept, *ours.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = model.with_suffix(".calibrating")
    onnx.save(proto, str(tmp))
    tmp.replace(model)


def calibrate(model: Path, dataset: Path, splits: tuple[str, ...], target_recall: float, tiles: bool) -> dict[str, Any]:
    """Measure, choose, write the thresholds into ``model`` and the choice into its JSON twin."""
    import hashlib

    settings = Settings(tiles_when_empty=tiles)
    scores = collect(model, dataset, splits, settings, tiles)
    firing, clean = negatives_firing(scores), int((~scores.truth).sum())
    floor = None
    if firing < MIN_NEGATIVES_FIRING:
        floor = DEFAULT_VERDICT_THRESHOLD
        log.warning("%d of the %d photos without a deposit get a deposit detection in the whole photo: they "
                    "cannot rank thresholds by specificity (has the model, or the one it started from, trained "
                    "on them?); no threshold goes below %s unless the recall target needs it", firing, clean, floor)
    chosen = choose(scores, target_recall, floor=floor)
    write_thresholds(model, chosen["thresholds"], chosen["tile_thresholds"])
    record = {
        **chosen,
        "dataset": str(dataset),
        "split": "+".join(splits),
        "tiles_when_empty": tiles,
        "mirrored_view": settings.mirrored_view,
        "rule": "highest specificity with recall >= target_recall, then highest recall, then lowest thresholds, "
        f"then largest tile margin; thresholds {GRID[0]}..{GRID[-1]} by 0.01, margins {MARGINS[0]}..{MARGINS[-1]} "
        f"by 0.05; none below {DEFAULT_VERDICT_THRESHOLD}, unless the recall target needs it, when fewer than "
        f"{MIN_NEGATIVES_FIRING} photos without a deposit get a deposit detection",
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
              help="Calibrate with the tiled second look, choosing its thresholds too (VIPARE_TILES_WHEN_EMPTY).")
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
