"""Same-budget training runs for the model card's comparison table.

Four runs share one budget (epochs, share of the training split, seed, augmentation) and differ
in one thing each:

- ``scratch-320`` vs ``coco-320``: random initial weights against the imported COCO weights;
- ``coco-320`` / ``coco-416`` / ``coco-640``: the input size.

``--sizes`` runs three others instead, which decide the shipped model's input size: the shipped
model fine-tuned further (AdamW at 2e-4, no warm-up) at 320, 480 and 640 px, timed on 12 MP phone
photos (``--phone-photos``), since a phone photo is what the size decides the cost of.

Each run is trained (:mod:`training.train`), exported to ONNX with the parity check
(:mod:`training.export`, last checkpoint, as the budget is the point), evaluated through the vipare
detector (:mod:`training.evaluate`), and then all the exported models are timed on the same photos,
one after the other within each round and in reversed order the next, so that a busy machine slows
them alike. Every step skips what is already on disk, and an interrupted training run resumes from
its ``last.pt``::

    nohup .venv/bin/python -m training.compare --data runs/data/swcn/data.yaml \\
        > runs/compare.out 2>&1 &
    python -m training.model_card weights/vipare-yolo11n.json --comparisons runs/compare/comparisons.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from vipare.machine import machine

__all__ = ["Variant", "VARIANTS", "compare", "time_models"]

log = logging.getLogger(__name__)

SCRATCH_MODEL = Path("yolo11n.yaml")  # the architecture file that ships with Ultralytics
DEFAULT_OUT = Path("runs/compare")
TIMING_PHOTOS = 20


@dataclass(frozen=True)
class Variant:
    """One run of the comparison: where its weights start and its square input size."""

    name: str
    start: str  # "scratch", "coco" or "shipped"
    imgsz: int


VARIANTS = (
    Variant("scratch-320", "scratch", 320),
    Variant("coco-320", "coco", 320),
    Variant("coco-416", "coco", 416),
    Variant("coco-640", "coco", 640),
)
SIZES = (
    Variant("shipped-320", "shipped", 320),
    Variant("shipped-480", "shipped", 480),
    Variant("shipped-640", "shipped", 640),
)
SHIPPED_CHECKPOINT = Path("weights/vipare-yolo11n.pt")
STARTS = {"scratch": "random weights", "coco": "imported COCO YOLO11n", "shipped": "the shipped model"}


def _train(variant: Variant, data: Path, project: Path, pretrained: Path, epochs: int, fraction: float,
           batch: int, workers: int, device: str | None) -> Path:
    from training.train import FINE_TUNE_OPTIMIZER, TrainConfig, fine_tune

    start = {"scratch": SCRATCH_MODEL, "coco": pretrained, "shipped": SHIPPED_CHECKPOINT.resolve()}[variant.start]
    config = TrainConfig(
        data=data,
        model=start,
        project=project,
        name=variant.name,
        epochs=epochs,
        imgsz=variant.imgsz,
        batch=batch,
        workers=workers,
        device=device,
        close_mosaic=max(1, epochs // 5),
        fraction=fraction,
        val=False,
        optimizer=dict(FINE_TUNE_OPTIMIZER) if variant.start == "shipped" else {},
    )
    record_path = config.run_dir / "run.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    last = config.run_dir / "weights" / "last.pt"
    if record.get("finished") and last.exists():
        log.info("%s: trained already", variant.name)
        return config.run_dir
    if last.exists():
        log.info("%s: resuming", variant.name)
        return fine_tune(config, resume=True)
    log.info("%s: training %d epochs at %d px from %s", variant.name, epochs, variant.imgsz, variant.start)
    return fine_tune(config)


def export_run(run_dir: Path, onnx_path: Path) -> dict[str, Any]:
    """Export a run's last checkpoint to ``onnx_path`` unless done since it last changed; its JSON twin."""
    from training.export import export_model

    card_path = onnx_path.with_suffix(".json")
    last = run_dir / "weights" / "last.pt"
    if not (card_path.exists() and card_path.stat().st_mtime > last.stat().st_mtime):
        export_model(run_dir, onnx_path, weights_name="last.pt", parity_images=4)
    return dict(json.loads(card_path.read_text()))


def evaluate_model(onnx_path: Path, data: Path, suffix: str = ".eval.json") -> dict[str, Any]:
    """``vipare evaluate`` of ``onnx_path`` on ``data``, kept beside the model (``suffix``) and reused."""
    from training.evaluate import evaluate

    path = onnx_path.with_suffix(suffix)
    if not (path.exists() and path.stat().st_mtime > onnx_path.stat().st_mtime):
        path.write_text(json.dumps(evaluate(onnx_path, data).as_dict(), indent=2) + "\n")
    return dict(json.loads(path.read_text()))


def time_models(models: dict[str, Path], photos: Sequence[Path], rounds: int = 3, *,
                threads: int = 0) -> dict[str, dict[str, float]]:
    """Median wall and CPU milliseconds per photo of ``Pipeline.analyze`` for each model.

    Each round times every model over all photos in turn, the order reversed every round, so that
    load from other processes falls on all of them alike. The models do not alternate photo by
    photo: onnxruntime's threads keep spinning for a moment after each run and would slow down the
    next model's run, so each block starts with one untimed photo. ``threads``: onnxruntime threads per
    session (0: all cores).
    """
    from vipare import Pipeline, Settings

    pipelines = {name: Pipeline(settings=Settings(model_path=path, intra_op_threads=threads))
                 for name, path in models.items()}
    wall: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    order = list(pipelines)
    for _ in range(rounds):
        for name in order:
            pipeline = pipelines[name]
            pipeline.analyze(photos[0])
            for photo in photos:
                w0, c0 = time.perf_counter(), time.process_time()
                pipeline.analyze(photo)
                wall[name].append((time.perf_counter() - w0) * 1000)
                cpu[name].append((time.process_time() - c0) * 1000)
        order.reverse()
    return {
        name: {"ms_per_photo": round(statistics.median(wall[name]), 1),
               "cpu_ms_per_photo": round(statistics.median(cpu[name]), 1)}
        for name in models
    }


def compare(data: Path, out: Path = DEFAULT_OUT, *, variants: Sequence[Variant] = VARIANTS, epochs: int = 5,
            fraction: float = 0.25, batch: int = 16, workers: int = 2, device: str | None = None,
            pretrained: Path | None = None, timing_photos: Sequence[Path] = (), rounds: int = 3,
            phone: bool = False) -> Path:
    """Train, export, evaluate and time every variant; write ``out/comparisons.json``.

    Returns:
        The path of ``comparisons.json``: ``{"budget": {...}, "timing": {...}, "runs": [...]}``.
    """
    from training.train import DEFAULT_PRETRAINED, _pick_device
    from training.validate import split_images

    out.mkdir(parents=True, exist_ok=True)
    pretrained = (pretrained or DEFAULT_PRETRAINED).resolve()
    # Read now: the runs start from this file, which a new shipped model may replace meanwhile.
    shipped_sha = (hashlib.sha256(SHIPPED_CHECKPOINT.read_bytes()).hexdigest()
                   if any(v.start == "shipped" for v in variants) else None)
    rows, models = [], {}
    for variant in variants:
        run_dir = _train(variant, data, out / "train", pretrained, epochs, fraction, batch, workers, device)
        onnx_path = out / f"{variant.name}.onnx"
        card = export_run(run_dir, onnx_path)
        ev = evaluate_model(onnx_path, data)
        models[variant.name] = onnx_path
        rows.append({
            "name": variant.name,
            "start": STARTS[variant.start],
            "imgsz": variant.imgsz,
            "epochs": card["epochs_done"],
            "train_minutes": round((card["train_seconds"] or 0) / 60, 1),
            "device": card["device"],
            "map50": ev["map50"],
            "map50_95": ev["map50_95"],
            "ap50_dumped_waste": ev["per_class"]["dumped_waste"]["ap50"],
            "image_recall": ev["image_level"]["recall"],
            "image_specificity": ev["image_level"]["specificity"],
            "image_auc": ev["image_level"].get("auc"),
            "eval_images": ev["images"],
        })
    photos = list(timing_photos) or split_images(data, "val", TIMING_PHOTOS)
    timing = time_models(models, photos, rounds)
    for row in rows:
        row.update(timing[row["name"]])
    train_photos = len(split_images(data, "train"))
    result = {
        "budget": {
            "epochs": epochs,
            "fraction": fraction,
            "train_photos": round(train_photos * fraction),
            "batch": batch,
            "seed": 0,
            "device": _pick_device(device),
            "data": str(data),
            **({"shipped_checkpoint_sha256": shipped_sha} if shipped_sha else {}),
        },
        "timing": {"photos": len(photos), "rounds": rounds, "what": "Pipeline.analyze, decode to result",
                   "threads": "all", "machine": machine(),
                   "kind": "12 MP phone JPEGs" if phone else "validation JPEGs"},
        "runs": rows,
    }
    path = out / "comparisons.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


@click.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="data.yaml from training.datasets.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Folder of the runs and of comparisons.json.")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.25, show_default=True,
              help="Share of the training split each run sees.")
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True)
@click.option("--device", default=None, help="cpu, 0, ... (default: first GPU if any).")
@click.option("--pretrained", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="COCO checkpoint the coco-* runs start from (default: training.train's).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="Timing rounds over the photos.")
@click.option("--only", multiple=True, type=click.Choice([v.name for v in VARIANTS + SIZES]),
              help="Run only this variant (repeatable).")
@click.option("--sizes", is_flag=True, help="The shipped model fine-tuned at 320, 480 and 640 px instead.")
@click.option("--phone-photos", type=click.IntRange(0), default=0, show_default=True,
              help="Time on this many 12 MP phone photos instead of validation photos.")
def main(data: Path, out: Path, epochs: int, fraction: float, batch: int, workers: int, device: str | None,
         pretrained: Path | None, rounds: int, only: tuple[str, ...], sizes: bool, phone_photos: int) -> None:
    """Same-budget comparison runs for the model card; prints the path of comparisons.json."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    variants = [v for v in (SIZES if sizes else VARIANTS) if not only or v.name in only]
    photos: list[Path] = []
    if phone_photos:
        from training.phone_photos import make_phone_photos

        photos = make_phone_photos(out / "phone-photos", phone_photos)
    click.echo(compare(data.resolve(), out, variants=variants, epochs=epochs, fraction=fraction, batch=batch,
                       workers=workers, device=device, pretrained=pretrained, rounds=rounds,
                       timing_photos=photos, phone=bool(phone_photos)))


if __name__ == "__main__":
    main()
