"""Short, same-budget runs that measure what each training augmentation brings.

Every run fine-tunes the shipped model (``weights/vipare-yolo11n.pt``) on the same number of photos,
for the same epochs, at the same input size, seed and optimizer, and differs in one thing:

- ``none``: Ultralytics' own augmentation only (mosaic, flips, HSV, scale jitter 0.5);
- ``geometry``: stronger scale jitter (0.75, more small and far deposits) and a perspective warp;
- ``photo``: the phone and camera effects of :mod:`training.augment` (motion and defocus blur,
  low light, night, JPEG recompression, rain), each with probability 0.2;
- ``paste``: 150 of the street-waste-cn photos replaced by as many bin scenes with trash-bags-kr
  bags pasted beside the bins (:mod:`training.copy_paste`);
- ``all``: the three together.

Each run is exported to ONNX (last checkpoint) and evaluated through the vipare detector on the
trash-bags-kr held-out sessions and on street-waste-cn val. Every step skips what is on disk and a
training run resumes after an interruption::

    nohup python -m training.ablation > runs/ablation.out 2>&1 &
    python -m training.model_card weights/vipare-yolo11n.json --ablation runs/ablation/ablation.json
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from training.compare import evaluate_model, export_run

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("runs/ablation")
SHIPPED_CHECKPOINT = Path("weights/vipare-yolo11n.pt")
STREET_PHOTOS = 400
PASTED = 150


@dataclass(frozen=True)
class Arm:
    """One run: the augmentation it adds and whether its photos include pasted bags."""

    name: str
    augment: dict[str, float] = field(default_factory=dict)
    photo_noise: float = 0.0
    paste: bool = False


GEOMETRY = {"scale": 0.75, "perspective": 0.0005}
ARMS = (
    Arm("none"),
    Arm("geometry", augment=GEOMETRY),
    Arm("photo", photo_noise=0.2),
    Arm("paste", paste=True),
    Arm("all", augment=GEOMETRY, photo_noise=0.2, paste=True),
)


def build_data(out: Path, paste_dir: Path) -> tuple[dict[str, Path], int]:
    """Two training sets of the same size: street-waste-cn + trash-bags-kr fit photos, and the same
    with ``PASTED`` street photos swapped for pasted scenes; both validate on street-waste-cn val.
    Returns their ``data.yaml`` paths and their (common) number of training photos."""
    from training.datasets import import_spec, replay_sample, write_dataset

    street = import_spec("street-waste-cn:train:fit")[0]
    bags = import_spec("trash-bags-kr:train+val:fit")[0]
    pasted = import_spec(f"{paste_dir}:train")[0]
    val = import_spec("street-waste-cn:val")[0]
    chosen = replay_sample(street, STREET_PHOTOS)
    sets = {
        "plain": chosen + bags,
        "paste": chosen[: STREET_PHOTOS - PASTED] + replay_sample(pasted, PASTED) + bags,
    }
    paths = {}
    for name, train in sets.items():
        folder = out / "data" / name
        if not (folder / "data.yaml").exists():
            write_dataset(folder, {"train": train, "val": val})
        paths[name] = folder / "data.yaml"
    return paths, len(sets["plain"])


def _train(arm: Arm, data: Path, project: Path, epochs: int, imgsz: int) -> Path:
    from training.train import FINE_TUNE_OPTIMIZER, TrainConfig, fine_tune

    config = TrainConfig(
        data=data.resolve(), model=SHIPPED_CHECKPOINT.resolve(), project=project.resolve(), name=arm.name,
        epochs=epochs, imgsz=imgsz, batch=16, workers=1, cache="", close_mosaic=1, val=False,
        augment={"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.5, "scale": 0.5, "perspective": 0.0, **arm.augment},
        photo_noise=arm.photo_noise, optimizer=dict(FINE_TUNE_OPTIMIZER),
    )
    record = config.run_dir / "run.json"
    if record.exists() and json.loads(record.read_text()).get("finished"):
        return config.run_dir
    resume = (config.run_dir / "weights" / "last.pt").exists()
    return fine_tune(config, resume=resume)


def ablate(out: Path, paste_dir: Path, holdout: Path, epochs: int = 4, imgsz: int = 320) -> Path:
    """Train, export and evaluate every arm; write ``out/ablation.json``."""
    data, photos = build_data(out, paste_dir)
    rows: list[dict[str, Any]] = []
    for arm in ARMS:
        run_dir = _train(arm, data["paste" if arm.paste else "plain"], out / "train", epochs, imgsz)
        onnx_path = out / f"{arm.name}.onnx"
        card = export_run(run_dir, onnx_path)
        street = evaluate_model(onnx_path, data["plain"])
        held = evaluate_model(onnx_path, holdout, suffix=".holdout.json")
        rows.append({
            "name": arm.name,
            "augment": {**arm.augment, "photo_noise": arm.photo_noise, "paste": arm.paste},
            "train_minutes": round((card["train_seconds"] or 0) / 60, 1),
            "map50": street["map50"],
            "ap50_dumped_waste": street["per_class"]["dumped_waste"]["ap50"],
            "image_recall": street["image_level"]["recall"],
            "image_specificity": street["image_level"]["specificity"],
            "image_auc": street["image_level"]["auc"],
            "holdout_image_recall": held["image_level"]["recall"],
            "holdout_covered": held["deposit_coverage"]["covered"],
        })
    result = {
        "budget": {"epochs": epochs, "imgsz": imgsz, "train_photos": photos,
                   "start": str(SHIPPED_CHECKPOINT), "optimizer": "AdamW 2e-4, no warm-up", "seed": 0},
        "holdout": str(holdout),
        "runs": rows,
    }
    path = out / "ablation.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--paste", "paste_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=Path("runs/data/paste"), show_default=True, help="Pasted scenes (training.copy_paste).")
@click.option("--holdout", type=click.Path(exists=True, path_type=Path), default=Path("runs/data/kr-holdout"),
              show_default=True, help="The trash-bags-kr held-out sessions (training.datasets --no-train).")
@click.option("--epochs", type=click.IntRange(1), default=4, show_default=True)
@click.option("--imgsz", type=click.IntRange(32), default=320, show_default=True)
def main(out: Path, paste_dir: Path, holdout: Path, epochs: int, imgsz: int) -> None:
    """Same-budget augmentation ablation; prints the path of ablation.json."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(ablate(out, paste_dir, holdout, epochs, imgsz))


if __name__ == "__main__":
    main()
