"""Fine-tune the shipped model on a city's reviewed photos, and say whether the result may replace it.

The reviewed photos come from ``vipare dataset export OUT`` (``images/{train,val,test}``,
``labels/...``, ``data.yaml`` in the taxonomy, ``manifest.json``). Steps:

1. a training set: the city's ``train`` split plus a seeded sample of street-waste-cn training
   photos replayed so that the model does not forget them (:mod:`training.datasets`); its
   validation split is the city's ``val`` (Ultralytics reports on it; it selects nothing);
2. fine-tune from the shipped model's checkpoint (``weights/vipare-yolo11n.pt``, rebuilt from the
   ONNX by :mod:`training.from_onnx`) at the shipped input size (:mod:`training.train`: offline,
   recorded, resumable: run the same command again after an interruption);
3. export the last weights to ONNX with vipare's metadata (:mod:`training.export`);
4. evaluate the old and the new ONNX model through the vipare detector (:mod:`training.evaluate`)
   on the city's held-out photos (``test`` when the export has one, else ``val``) and on
   street-waste-cn val;
5. decide (:func:`decide`): the new model is promotable unless it is worse than the old one on the
   city's held-out photos (image-level recall or specificity) or loses more than 0.01 mAP50 on
   street-waste-cn val;
6. write the new model's JSON twin and card with an "adaptation" section (both evaluations, the
   dataset hashes and counts, the decision, the time it took).

Run::

    python -m training.adapt --reviews runs/reviews --replay 200 --epochs 10

Exit status 0 when the new model is promotable (the ONNX file and card paths are printed), 2 when
it is not (the message names each failed check; the files stay for inspection), 1 on bad input.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from training.datasets import SOURCES, Sample, Source, import_split, replay_sample, taxonomy_source, write_dataset
from training.images import IMAGE_SUFFIXES
from training.train import FINE_TUNE_OPTIMIZER

__all__ = [
    "AdaptConfig",
    "AdaptError",
    "AdaptResult",
    "Check",
    "Decision",
    "adapt",
    "decide",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = ROOT / "weights" / "vipare-yolo11n.pt"
DEFAULT_OLD_MODEL = ROOT / "weights" / "vipare-yolo11n.onnx"
DEFAULT_OUTPUT_ROOT = Path("runs/adapt")
DEFAULT_REPLAY = 200
DEFAULT_EPOCHS = 10
MAX_MAP50_DROP = 0.01
REFERENCE = SOURCES["street-waste-cn"]
REFERENCE_SPLIT = "val"
REVIEWS_SOURCE = "reviews"
MODEL_NAME = "vipare-yolo11n-adapted.onnx"
CARD_NAME = "MODEL_CARD.md"
RUN_NAME = "train"
DATA_DIR = "data"
MANIFEST = "manifest.json"
EXIT_REFUSED = 2
PARITY_IMAGES = 4


class AdaptError(Exception):
    """The reviews dataset or the output folder does not allow an adaptation; the message says why."""


@dataclass(frozen=True)
class Check:
    """One condition the new model must meet to be promotable.

    Attributes:
        name: what is compared, e.g. "image-level recall on the city's held-out photos".
        old: the old model's figure (None when not measurable on these photos).
        new: the new model's figure.
        passed: whether the condition holds (a figure that cannot be measured passes).
        detail: one sentence saying what was found.
    """

    name: str
    old: float | None
    new: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """The checks of :func:`decide`; the model is promotable when every one passed."""

    checks: tuple[Check, ...]

    @property
    def promotable(self) -> bool:
        """True when no check failed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed, in the order they were made."""
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the model card records it."""
        return {"promotable": self.promotable, "checks": [asdict(c) for c in self.checks]}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _not_worse(name: str, old: float | None, new: float | None, unmeasured: str) -> Check:
    if old is None or new is None:
        return Check(name, old, new, True, f"{name}: not measured ({unmeasured})")
    passed = new >= old
    if new == old:
        return Check(name, old, new, True, f"{name} stayed at {_fmt(new)}")
    verb = "rose" if passed else "fell"
    return Check(name, old, new, passed, f"{name} {verb} from {_fmt(old)} to {_fmt(new)}")


def decide(
    old_city: dict[str, Any],
    new_city: dict[str, Any],
    old_reference: dict[str, Any],
    new_reference: dict[str, Any],
    max_map50_drop: float = MAX_MAP50_DROP,
) -> Decision:
    """Whether the new model may replace the old one, from their evaluations.

    The new model must not be worse on the city's held-out photos (image-level recall and
    specificity, each measured only when the photos hold a deposit, resp. a photo without one),
    and must not lose more than ``max_map50_drop`` mAP50 on the reference set (street-waste-cn val),
    where the old model's figures come from.

    Args:
        old_city: :func:`training.evaluate.evaluate` metrics of the old model on the city's held-out photos.
        new_city: the same for the new model.
        old_reference: the old model's metrics on the reference set.
        new_reference: the new model's.
        max_map50_drop: largest mAP50 loss allowed on the reference set.

    Returns:
        The checks, in order: city recall, city specificity, reference mAP50.
    """
    old_level, new_level = old_city["image_level"], new_city["image_level"]
    checks = [
        _not_worse("image-level recall on the city's held-out photos", old_level["recall"], new_level["recall"],
                   "no held-out photo with a deposit"),
        _not_worse("image-level specificity on the city's held-out photos", old_level["specificity"],
                   new_level["specificity"], "no held-out photo without a deposit"),
    ]
    name = "mAP50 on street-waste-cn val"
    old_map, new_map = old_reference["map50"], new_reference["map50"]
    if old_map is None or new_map is None:
        checks.append(Check(name, old_map, new_map, True, f"{name}: not measured (no labelled box)"))
    else:
        drop = old_map - new_map
        # Figures are rounded to 4 digits: compare the rounded drop, so 0.01 exactly passes.
        passed = round(drop, 4) <= max_map50_drop
        detail = (f"{name} went from {_fmt(old_map)} to {_fmt(new_map)} "
                  f"({'a loss' if drop > 0 else 'a change'} of {abs(drop):.4f}; at most {max_map50_drop} may be lost)")
        checks.append(Check(name, old_map, new_map, passed, detail))
    return Decision(tuple(checks))


@dataclass
class AdaptConfig:
    """What :func:`adapt` does; every field is recorded in the model card.

    Attributes:
        reviews: folder written by ``vipare dataset export``.
        output: folder for the dataset, the run, the ONNX model and its card; None gives
            ``runs/adapt/<first 12 digits of the reviews' dataset hash>``.
        base: checkpoint to fine-tune (the shipped model's, by default).
        old_model: ONNX model the new one is compared with (the shipped one, by default).
        replay: how many street-waste-cn training photos to replay.
        epochs: most epochs (with ``time_hours`` Ultralytics fits them to the budget).
        time_hours: training time budget in hours, or None.
        imgsz: input size; None takes the old model's (the shipped size).
        batch: images per batch.
        workers: dataloader processes.
        seed: seed of the replay sample and of training.
        device: ``"cpu"``, ``"0"``...; None picks the first GPU when present.
        reference_images: evaluate on only the first N street-waste-cn val photos (smoke runs).
    """

    reviews: Path
    output: Path | None = None
    base: Path = DEFAULT_BASE
    old_model: Path = DEFAULT_OLD_MODEL
    replay: int = DEFAULT_REPLAY
    epochs: int = DEFAULT_EPOCHS
    time_hours: float | None = None
    imgsz: int | None = None
    batch: int = 16
    workers: int = 2
    seed: int = 0
    device: str | None = None
    reference_images: int | None = None


@dataclass
class AdaptResult:
    """What :func:`adapt` wrote and decided.

    Attributes:
        onnx_path: the new model.
        card_json: its JSON twin (with the ``adaptation`` record).
        card_md: its Markdown card.
        decision: the checks and whether the model is promotable.
        evaluations: ``{"city": {"old", "new"}, "reference": {"old", "new"}}`` metrics.
        held_out_split: the city split the models were compared on.
        wall_seconds: wall-clock time of this call (a rerun that finds the training done counts
            only the export, the evaluations and the card).
        cpu_seconds: CPU time (user + system) of this process and its finished children, same span.
        counts: photos per city split (and those left out), replayed photos, training set counts.
    """

    onnx_path: Path
    card_json: Path
    card_md: Path
    decision: Decision
    evaluations: dict[str, dict[str, dict[str, Any]]]
    held_out_split: str
    wall_seconds: float
    cpu_seconds: float
    counts: dict[str, Any] = field(default_factory=dict)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _has_images(source: Source, split: str) -> bool:
    folder = source.root / "images" / split
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _split(source: Source, split: str) -> list[Sample]:
    """The samples of ``split``, none when the export has no such folder (an empty split)."""
    return import_split(source, split)[0] if _has_images(source, split) else []


def _left_out(source: Source, split: str) -> int:
    """Photos of ``split`` in a format the training tools do not read (HEIC from iPhones, say)."""
    folder = source.root / "images" / split
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES)


def _manifest(reviews: Path) -> dict[str, Any]:
    path = reviews / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def _metadata(model: Path) -> Any:
    import onnx

    from vipare.model_metadata import parse_metadata

    return parse_metadata({p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props})


def _input_size(model: Path) -> int:
    """The square input size of an ONNX model, from its metadata."""
    return int(_metadata(model).input_size.height)


def carry_thresholds(old_model: Path, new_model: Path) -> dict[str, Any] | None:
    """Write the old model's calibrated verdict and tile thresholds into the new one, if it has any.

    A city's held-out photos are too few to choose thresholds on; the adapted model keeps those
    chosen for the base model on its calibration photos, and the comparison on the city's photos
    measures the pair with them.
    """
    from training.calibrate import write_thresholds

    meta = _metadata(old_model)
    if not meta.verdict_thresholds:
        return None
    write_thresholds(new_model, dict(meta.verdict_thresholds), dict(meta.tile_thresholds))
    return {"carried_from": old_model.name, "thresholds": dict(meta.verdict_thresholds),
            "tile_thresholds": dict(meta.tile_thresholds)}


def _train(config: AdaptConfig, data_yaml: Path, data_hash: str, output: Path, imgsz: int) -> Path:
    """Fine-tune, resume an interrupted run, or find a finished one; return the run directory."""
    from training.train import RUN_RECORD, TrainConfig, fine_tune

    train_config = TrainConfig(
        data=data_yaml,
        model=config.base.resolve(),
        project=output.resolve(),
        name=RUN_NAME,
        epochs=config.epochs,
        time_hours=config.time_hours,
        imgsz=imgsz,
        batch=config.batch,
        workers=config.workers,
        cache="",
        seed=config.seed,
        device=config.device,
        val=False,
        optimizer=dict(FINE_TUNE_OPTIMIZER),
    )
    run_dir = train_config.run_dir
    record_path = run_dir / RUN_RECORD
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("data_hash") != data_hash:
            raise AdaptError(f"{output} holds a run on other photos (dataset {record.get('data_hash')}); "
                             "give a new --output")
        if record.get("finished"):
            log.info("%s finished already; not training again", run_dir)
            return run_dir
        if (run_dir / "weights" / "last.pt").exists():
            log.info("resuming %s", run_dir)
            return fine_tune(train_config, resume=True)
    return fine_tune(train_config)


def adapt(config: AdaptConfig) -> AdaptResult:
    """Fine-tune on the reviewed photos, export, evaluate old and new, decide, and write the card.

    Args:
        config: what to do; see :class:`AdaptConfig`.

    Returns:
        The files written and the decision (see :func:`decide`).

    Raises:
        AdaptError: no training photos, no held-out photos, classes outside the taxonomy, or an
            output folder that holds a run on other photos.
    """
    from training.evaluate import evaluate
    from training.export import DATASET_CREDITS, export_model
    from training.model_card import render

    wall_start, cpu_start = time.perf_counter(), _cpu_seconds()
    try:
        city = taxonomy_source(config.reviews, REVIEWS_SOURCE)
    except (FileNotFoundError, ValueError) as exc:
        raise AdaptError(f"{config.reviews} is not a reviews dataset from 'vipare dataset export': {exc}") from exc
    manifest = _manifest(config.reviews)
    reviews_hash = manifest.get("dataset_hash")
    city_splits = {s: _split(city, s) for s in ("train", "val", "test")}
    left_out = {s: n for s in city_splits if (n := _left_out(city, s))}
    if left_out:
        log.warning("photos left out, in a format training does not read (convert them to JPEG): %s", left_out)
    held_out = "test" if city_splits["test"] else "val"
    if not city_splits["train"]:
        raise AdaptError(f"{config.reviews} has no training photos (images/train): export more reviews first")
    if not city_splits[held_out]:
        raise AdaptError(f"{config.reviews} has no val or test photos to compare the models on: export more "
                         "reviews (from more places or weeks, since the split follows incidents and places)")
    output = config.output or DEFAULT_OUTPUT_ROOT / (reviews_hash or _sha256(config.reviews / "data.yaml"))[:12]
    output.mkdir(parents=True, exist_ok=True)
    imgsz = config.imgsz or _input_size(config.old_model)

    replay = replay_sample(import_split(REFERENCE, "train")[0], config.replay, config.seed) if config.replay else []
    info = write_dataset(output / DATA_DIR, {
        "train": city_splits["train"] + replay,
        "val": city_splits["val"] or city_splits[held_out],
    })
    log.info("training set %s: %s", info.data_hash, info.images)
    run_dir = _train(config, info.data_yaml, info.data_hash, output, imgsz)
    exported = export_model(run_dir, output / MODEL_NAME, weights_name="last.pt",
                            parity_images=min(PARITY_IMAGES, info.images["val"]), val_batch=config.batch)
    carried = carry_thresholds(config.old_model, exported.onnx_path)

    evaluations: dict[str, dict[str, dict[str, Any]]] = {"city": {}, "reference": {}}
    for label, model in (("old", config.old_model), ("new", exported.onnx_path)):
        evaluations["city"][label] = evaluate(model, config.reviews, split=held_out).as_dict()
        evaluations["reference"][label] = evaluate(model, REFERENCE.root, split=REFERENCE_SPLIT,
                                                   max_images=config.reference_images).as_dict()
    decision = decide(evaluations["city"]["old"], evaluations["city"]["new"],
                      evaluations["reference"]["old"], evaluations["reference"]["new"])
    wall, cpu = time.perf_counter() - wall_start, _cpu_seconds() - cpu_start

    counts = {
        "city_photos": {s: len(v) for s, v in city_splits.items()},
        "city_photos_left_out": left_out,
        "city_negatives": manifest.get("negatives"),
        "city_labels": manifest.get("labels"),
        "replay_photos": len(replay),
        "train_images": info.images,
        "train_boxes": info.boxes,
        "dropped": info.dropped,
    }
    card = json.loads(exported.card_path.read_text())
    if carried is not None:
        card.update(sha256=_sha256(exported.onnx_path), bytes=exported.onnx_path.stat().st_size)
        card["verdict_thresholds_carried"] = carried
    card["base_model"] = (f"{config.old_model.name} (sha256 {_sha256(config.old_model)}), fine-tuned further "
                          f"from its checkpoint {config.base.name}")
    card["datasets"] = [*DATASET_CREDITS,
                        f"the city's reviewed photos: {config.reviews} (vipare dataset export, hash {reviews_hash})"]
    card["evaluations"] = [evaluations["city"]["new"], evaluations["reference"]["new"]]
    card["adaptation"] = {
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "reviews": str(config.reviews),
        "reviews_hash": reviews_hash,
        "held_out_split": held_out,
        "data_hash": info.data_hash,
        "replay": {"source": f"{REFERENCE.name}:train", "photos": len(replay), "seed": config.seed},
        "counts": counts,
        "base_checkpoint": {"file": config.base.name, "sha256": _sha256(config.base)},
        "old_model": {"file": config.old_model.name, "sha256": _sha256(config.old_model)},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "imgsz": imgsz,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "evaluations": evaluations,
        "decision": decision.as_dict(),
    }
    exported.card_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    card_md = output / CARD_NAME
    card_md.write_text(render(card))
    return AdaptResult(exported.onnx_path, exported.card_path, card_md, decision, evaluations, held_out,
                       wall, cpu, counts)


def _line(label: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    o, n = old["image_level"], new["image_level"]
    pairs = [("image recall", o["recall"], n["recall"]), ("specificity", o["specificity"], n["specificity"]),
             ("AUC", o.get("auc"), n.get("auc")), ("mAP50", old["map50"], new["map50"])]
    figures = ", ".join(f"{name} {_fmt(a)} -> {_fmt(b)}" for name, a, b in pairs)
    return f"{label} ({new['split']}, {new['images']} photos): {figures}"


@click.command()
@click.option("--reviews", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder written by 'vipare dataset export'.")
@click.option("--base", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_BASE,
              show_default=True, help="Checkpoint to fine-tune (python -m training.from_onnx makes it).")
@click.option("--old-model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=DEFAULT_OLD_MODEL, show_default=True, help="ONNX model the new one must not be worse than.")
@click.option("--replay", type=click.IntRange(0), default=DEFAULT_REPLAY, show_default=True,
              help="street-waste-cn training photos replayed with the city's.")
@click.option("--epochs", type=click.IntRange(1), default=DEFAULT_EPOCHS, show_default=True)
@click.option("--time", "time_hours", type=click.FloatRange(0, min_open=True), default=None,
              help="Training time budget in hours (Ultralytics fits the epochs to it).")
@click.option("--imgsz", type=click.IntRange(32), default=None, help="Input size [default: the old model's].")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the run and the new model [default: runs/adapt/<reviews hash>].")
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, 0, ... [default: first GPU if any].")
@click.option("--reference-images", type=click.IntRange(1), default=None,
              help="Compare on only the first N street-waste-cn val photos (smoke runs) [default: all].")
def main(reviews: Path, base: Path, old_model: Path, replay: int, epochs: int, time_hours: float | None,
         imgsz: int | None, output: Path | None, batch: int, workers: int, seed: int, device: str | None,
         reference_images: int | None) -> None:
    """Fine-tune the shipped model on the city's reviewed photos in REVIEWS and decide whether it is promotable.

    Exit status 0: promotable, the new ONNX model's and its card's paths are printed. 2: not
    promotable, the failed checks are printed. 1: the reviews or the output folder do not allow it.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = AdaptConfig(reviews=reviews, output=output, base=base, old_model=old_model, replay=replay,
                         epochs=epochs, time_hours=time_hours, imgsz=imgsz, batch=batch, workers=workers,
                         seed=seed, device=device, reference_images=reference_images)
    try:
        result = adapt(config)
    except AdaptError as exc:
        raise click.ClickException(str(exc)) from exc
    ev = result.evaluations
    click.echo(_line("city held-out photos", ev["city"]["old"], ev["city"]["new"]))
    click.echo(_line("street-waste-cn", ev["reference"]["old"], ev["reference"]["new"]))
    click.echo(f"adaptation took {result.wall_seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU")
    if result.decision.promotable:
        click.echo(f"promotable: {result.onnx_path}")
        click.echo(f"card: {result.card_md}")
        return
    for check in result.decision.failures:
        click.echo(f"not promotable: {check.detail}", err=True)
    click.echo(f"kept for inspection, not promotable: {result.onnx_path} (card {result.card_md})", err=True)
    raise SystemExit(EXIT_REFUSED)


if __name__ == "__main__":
    main()
