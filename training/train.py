"""Fine-tune YOLO11n on an imported dataset, reproducibly and offline.

The run directory records everything needed to trace the weights: ``run.json`` (configuration,
seed, dataset hash, software versions, start/end times), ``train.log`` (Ultralytics' log), and
Ultralytics' own ``args.yaml``, ``results.csv`` and ``weights/{last,best}.pt``.

Run (background, as training takes hours on a CPU)::

    nohup .venv/bin/python -m training.train --data runs/data/swcn/data.yaml \\
        --model runs/pretrained/yolo11n-coco.pt --name swcn-320 --until 05:10 \\
        > runs/train-swcn-320.out 2>&1 &

Resume an interrupted run from its ``last.pt``::

    python -m training.train --name swcn-320 --resume
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from training.augment import EFFECTS

__all__ = ["TrainConfig", "fine_tune", "hours_until", "software_versions"]

log = logging.getLogger(__name__)

DEFAULT_PROJECT = Path("runs/train")
DEFAULT_PRETRAINED = Path("runs/pretrained/yolo11n-coco.pt")
RUN_RECORD = "run.json"
LOG_FILE = "train.log"
DATASET_RECORD = "dataset.json"
VERSIONED_PACKAGES = (
    "ultralytics",
    "torch",
    "torchvision",
    "numpy",
    "opencv-python",
    "opencv-python-headless",
    "onnx",
)
SECONDS_PER_HOUR = 3600.0
LOGGED = ("ultralytics", __name__, "training.augment")
# Fine-tuning a trained model: Ultralytics' defaults (3 warm-up epochs with a bias learning rate of
# 0.1, then lr0 0.01 or its automatic AdamW choice) are meant for a start from COCO weights and
# wreck the trained head within a few steps; a small constant-start rate without warm-up keeps it.
FINE_TUNE_OPTIMIZER: dict[str, float | str] = {"optimizer": "AdamW", "lr0": 2e-4, "warmup_epochs": 0.0}


@dataclass
class TrainConfig:
    """Fine-tuning settings; every field is recorded in ``run.json``.

    Attributes:
        data: ``data.yaml`` written by :mod:`training.datasets`.
        model: checkpoint to start from (see :mod:`training.pretrained`).
        project: parent folder of run directories.
        name: run directory name under ``project``.
        epochs: most epochs; with ``time_hours`` Ultralytics recomputes it to fit the budget.
        time_hours: training time budget in hours (Ultralytics ``time=``), or None.
        imgsz: square training size in pixels.
        batch: images per batch.
        workers: dataloader processes.
        threads: torch threads of the training process on a CPU; 0: one per core.
        cache: ``"ram"``, ``"disk"`` or ``""`` (no cache).
        seed: random seed (Ultralytics seeds python, numpy and torch with it).
        device: ``"cpu"``, ``"0"``...; None picks the first GPU when present, else the CPU.
        patience: epochs without improvement before early stopping.
        close_mosaic: last epochs trained without mosaic.
        fraction: share of the training split used (Ultralytics ``fraction=``), for budget runs.
        val: validate after every epoch (False: only after the last one).
        save_period: also keep ``weights/epochN.pt`` (N counted from 0) every this many epochs (-1: only
            ``last.pt`` and ``best.pt``), e.g. to average a run's checkpoints (:mod:`training.average`).
        augment: extra Ultralytics augmentation arguments (``hsv_v`` etc.).
        photo_noise: probability of each phone/camera effect of :class:`training.augment.PhotoNoise`
            (0: none).
        noise_effects: which of those effects (all by default; a subset for the ablation).
        cls_gain: weight of the classification loss (Ultralytics ``cls``, 0.5 by default) against the box
            and distribution losses: higher asks more of the scores that rank a deposit above a false alarm.
        optimizer: Ultralytics optimizer arguments (``optimizer``, ``lr0``, ``warmup_epochs``...);
            empty for its defaults, which suit training from COCO weights, not fine-tuning a
            trained model further.
    """

    data: Path
    model: Path = DEFAULT_PRETRAINED
    project: Path = DEFAULT_PROJECT
    name: str = "swcn"
    epochs: int = 100
    time_hours: float | None = None
    imgsz: int = 320
    batch: int = 16
    workers: int = 2
    threads: int = 0
    cache: str = "ram"
    seed: int = 0
    device: str | None = None
    patience: int = 100
    close_mosaic: int = 10
    fraction: float = 1.0
    val: bool = True
    save_period: int = -1
    augment: dict[str, float] = field(default_factory=lambda: {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.5})
    photo_noise: float = 0.0
    noise_effects: tuple[str, ...] = ()
    cls_gain: float = 0.5
    optimizer: dict[str, float | str] = field(default_factory=dict)

    def noise(self) -> Any:
        """The :class:`training.augment.PhotoNoise` of this run, or None."""
        from training.augment import EFFECTS, PhotoNoise

        if self.photo_noise <= 0:
            return None
        return PhotoNoise(self.photo_noise, tuple(self.noise_effects) or EFFECTS, self.seed)

    @property
    def run_dir(self) -> Path:
        """Where Ultralytics writes this run."""
        return (self.project / self.name).resolve()


def hours_until(hhmm_utc: str, now: dt.datetime | None = None) -> float:
    """Hours from ``now`` (UTC) to the next ``HH:MM`` UTC.

    Args:
        hhmm_utc: wall-clock end time, e.g. ``"05:10"``.
        now: current time, timezone-aware; defaults to the system clock.

    Returns:
        A positive number of hours (tomorrow's time when today's has passed).
    """
    now = now or dt.datetime.now(dt.UTC)
    hour, minute = (int(v) for v in hhmm_utc.split(":"))
    end = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if end <= now:
        end += dt.timedelta(days=1)
    return (end - now).total_seconds() / SECONDS_PER_HOUR


def software_versions() -> dict[str, str]:
    """Versions of Python, the platform and the installed training packages."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _pick_device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _dataset_hash(data_yaml: Path) -> str | None:
    """The hash :mod:`training.datasets` recorded next to ``data.yaml``, if any."""
    record = data_yaml.parent / DATASET_RECORD
    if not record.exists():
        return None
    return str(json.loads(record.read_text())["data_hash"])


def _attach_log_file(path: Path) -> logging.Handler:
    """Copy Ultralytics' and this package's training log records (info and up) into ``path``."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in LOGGED:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return handler


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_RECORD).write_text(json.dumps(record, indent=2, default=str))


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (loader workers), user and system."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _keep_workers(yolo: Any, workers: int) -> None:
    """Keep ``workers`` loader processes on a CPU too.

    Ultralytics sets no loader process for CPU training, reasoning that the model's compute dominates;
    with mosaic and photo effects at 480 px the loading takes about half of each step on one core while
    the other waits. One loader process lets both cores work.
    """
    def restore(trainer: Any) -> None:
        trainer.args.workers = workers

    yolo.add_callback("on_pretrain_routine_start", restore)


def _use_cores(yolo: Any, threads: int) -> None:
    """Give torch ``threads`` threads (0: one per core) for CPU training.

    Ultralytics leaves a core to its loader processes (``torch.set_num_threads(cores - 1)``): on a
    2-core machine the model then computes on one core while the loader, with the photos cached in
    memory, needs a fraction of the other.
    """
    import torch

    def widen(trainer: Any) -> None:
        if trainer.device.type == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
            log.info("training on %d CPU threads", torch.get_num_threads())

    yolo.add_callback("on_pretrain_routine_start", widen)


def _add_noise(yolo: Any, noise: Any) -> None:
    if noise is not None:
        from training.augment import add_photo_noise

        add_photo_noise(yolo, noise)


def fine_tune(config: TrainConfig, resume: bool = False) -> Path:
    """Fine-tune (or resume) and return the run directory.

    Args:
        config: run settings. On resume only ``project``/``name`` matter: Ultralytics restores the
            rest from ``weights/last.pt``.
        resume: continue the run in ``config.run_dir`` from its ``weights/last.pt``.

    Returns:
        The run directory (``weights/best.pt`` inside when training finished).

    Raises:
        FileNotFoundError: on resume without ``last.pt``.
    """
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics import YOLO

    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(run_dir / LOG_FILE)
    record_path = run_dir / RUN_RECORD
    record: dict[str, Any] = json.loads(record_path.read_text()) if resume and record_path.exists() else {}
    try:
        if resume:
            last = run_dir / "weights" / "last.pt"
            if not last.exists():
                raise FileNotFoundError(f"nothing to resume: {last} missing")
            record.setdefault("resumes", []).append(dt.datetime.now(dt.UTC).isoformat())
            _write_record(run_dir, record)
            log.info("resuming %s", last)
            yolo = YOLO(str(last))
            _keep_workers(yolo, int(record.get("config", {}).get("workers", 0)))
            _use_cores(yolo, int(record.get("config", {}).get("threads", 0)))
            _add_noise(yolo, TrainConfig(**{**record.get("config", {}), "data": Path(), "model": Path()}).noise())
            yolo.train(resume=True, plots=False)
        else:
            device = _pick_device(config.device)
            record = {
                "config": asdict(config),
                "device": device,
                "data_hash": _dataset_hash(config.data),
                "software": software_versions(),
                "started": dt.datetime.now(dt.UTC).isoformat(),
            }
            _write_record(run_dir, record)
            log.info("training %s", json.dumps(record, default=str))
            yolo = YOLO(str(config.model))
            _keep_workers(yolo, config.workers)
            _use_cores(yolo, config.threads)
            _add_noise(yolo, config.noise())
            yolo.train(
                data=str(config.data.resolve()),
                epochs=config.epochs,
                time=config.time_hours,
                imgsz=config.imgsz,
                batch=config.batch,
                workers=config.workers,
                cache=config.cache or False,
                seed=config.seed,
                deterministic=True,
                device=device,
                patience=config.patience,
                close_mosaic=config.close_mosaic,
                fraction=config.fraction,
                val=config.val,
                save_period=config.save_period,
                project=str(config.project.resolve()),
                name=config.name,
                exist_ok=True,
                plots=False,
                amp=device != "cpu",
                cls=config.cls_gain,
                **config.augment,
                **config.optimizer,
            )
        record["finished"] = dt.datetime.now(dt.UTC).isoformat()
        # Every part of a resumed run adds its own: the energy on the model card is the whole run's.
        record["cpu_seconds"] = round(float(record.get("cpu_seconds", 0.0)) + _cpu_seconds(), 1)
        _write_record(run_dir, record)
    finally:
        for name in LOGGED:
            logging.getLogger(name).removeHandler(handler)
        handler.close()
    return run_dir


@click.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="data.yaml from training.datasets (required unless --resume).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_PRETRAINED,
              show_default=True, help="Checkpoint to start from.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_PROJECT,
              show_default=True, help="Parent folder of run directories.")
@click.option("--name", default="swcn", show_default=True, help="Run directory under PROJECT.")
@click.option("--epochs", type=click.IntRange(1), default=100, show_default=True)
@click.option("--time", "time_hours", type=click.FloatRange(0, min_open=True), default=None,
              help="Time budget in hours (not with --until).")
@click.option("--until", default=None, metavar="HH:MM", help="Finish training by this UTC time (not with --time).")
@click.option("--imgsz", type=click.IntRange(32), default=320, show_default=True)
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True,
              help="Torch threads for CPU training; 0: one per core.")
@click.option("--cache", default="ram", show_default=True, help="ram, disk, or '' for none.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, 0, ... (default: first GPU if any).")
@click.option("--patience", type=click.IntRange(0), default=100, show_default=True)
@click.option("--close-mosaic", type=click.IntRange(0), default=10, show_default=True)
@click.option("--hsv-v", type=float, default=0.5, show_default=True, help="Brightness augmentation (low light).")
@click.option("--hsv-s", type=float, default=0.7, show_default=True, help="Saturation augmentation.")
@click.option("--hsv-h", type=float, default=0.015, show_default=True, help="Hue augmentation.")
@click.option("--scale", type=click.FloatRange(0, 0.95), default=0.5, show_default=True,
              help="Scale jitter (+/- gain): higher shows more small, far deposits.")
@click.option("--perspective", type=click.FloatRange(0, 0.001), default=0.0, show_default=True,
              help="Perspective warp, as from a phone held at an angle.")
@click.option("--multi-scale", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Each batch at a random size within +/- this fraction of --imgsz (Ultralytics multi_scale): "
              "deposits seen at more scales.")
@click.option("--photo-noise", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability of each phone/camera effect (motion and defocus blur, low light, night, JPEG, rain).")
@click.option("--noise-effect", "noise_effects", multiple=True, type=click.Choice(EFFECTS),
              help="Only these effects (repeatable; default all).")
@click.option("--cls-gain", type=click.FloatRange(0, min_open=True), default=0.5, show_default=True,
              help="Weight of the classification loss (Ultralytics cls) against the box losses.")
@click.option("--save-period", type=click.IntRange(-1), default=-1, show_default=True,
              help="Keep weights/epochN.pt (N from 0) every this many epochs (-1: only last.pt and best.pt).")
@click.option("--fine-tune", "from_trained", is_flag=True,
              help="AdamW at 2e-4 without warm-up, for a start from a trained vipare model (not from COCO).")
@click.option("--resume", is_flag=True, help="Continue PROJECT/NAME from weights/last.pt.")
def main(data: Path | None, model: Path, project: Path, name: str, epochs: int, time_hours: float | None,
         until: str | None, imgsz: int, batch: int, workers: int, threads: int, cache: str, seed: int,
         device: str | None, patience: int, close_mosaic: int, hsv_v: float, hsv_s: float, hsv_h: float, scale: float,
         perspective: float, multi_scale: float, photo_noise: float, noise_effects: tuple[str, ...], cls_gain: float,
         save_period: int, from_trained: bool, resume: bool) -> None:
    """Fine-tune YOLO11n offline; prints the run directory."""
    if time_hours is not None and until is not None:
        raise click.UsageError("give --time or --until, not both")
    if not resume and data is None:
        raise click.UsageError("--data is required unless --resume")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = TrainConfig(
        data=(data or Path()).resolve(),
        model=model.resolve(),
        project=project,
        name=name,
        epochs=epochs,
        time_hours=hours_until(until) if until else time_hours,
        imgsz=imgsz,
        batch=batch,
        workers=workers,
        threads=threads,
        cache=cache,
        seed=seed,
        device=device,
        patience=patience,
        close_mosaic=close_mosaic,
        augment={"hsv_h": hsv_h, "hsv_s": hsv_s, "hsv_v": hsv_v, "scale": scale, "perspective": perspective,
                 "multi_scale": multi_scale},
        photo_noise=photo_noise,
        noise_effects=noise_effects,
        cls_gain=cls_gain,
        save_period=save_period,
        optimizer=dict(FINE_TUNE_OPTIMIZER) if from_trained else {},
    )
    click.echo(fine_tune(config, resume=resume))


if __name__ == "__main__":
    main()
