"""The review loop's gain on a "new city": trash-bags-kr, which the base model never saw.

The city is replayed as a city would run vipare:

1. a service with the base model (``weights/vipare-yolo11n.onnx``) starts on a fresh data folder;
2. an agent uploads the first half of trash-bags-kr's phone photos, in the order they were taken
   (file names are capture times: a walk through Daejeon, so the halves are different streets and
   no near-identical shot straddles them), each at its own place;
3. a manager reviews every uploaded photo through ``POST /v1/reports/{id}/review`` with the
   dataset's own labels (each bag a ``dumped_waste`` box; a photo without a bag a false alarm);
4. ``vipare dataset export`` writes the reviews as a YOLO dataset;
5. ``training.adapt`` fine-tunes the base checkpoint on it, replaying street-waste-cn photos;
6. the base and the adapted model are measured on the second half, never uploaded: image-level
   recall, box mAP50, and the bags covered (half or more of a labelled bag's box inside a deposit box
   the model gives at the shipped thresholds); and on street-waste-cn val (mAP50).

Prints the before/after table and the adaptation's wall and CPU time, and writes them as JSON::

    python -m benchmarks.bench_review_loop --epochs 10 --replay 200
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx2
import numpy as np

from benchmarks.cli import command
from serving.launch import cli_key, start_server
from training.adapt import AdaptConfig, adapt
from training.evaluate import evaluate
from training.paths import SHARED_DATASETS
from vipare.machine import machine
from vipare.pipeline import Pipeline
from vipare.settings import Settings
from vipare.taxonomy import DEPOSIT_CLASSES

ROOT = Path(__file__).resolve().parents[1]
KR = SHARED_DATASETS / "trash-bags-kr"
SWCN = SHARED_DATASETS / "street-waste-cn"
BASE_ONNX = ROOT / "weights" / "vipare-yolo11n.onnx"
BASE_PT = ROOT / "weights" / "vipare-yolo11n.pt"
ORIGIN = (49.1193, 6.1757)  # the places are made up: one every ~150 m along a line
STEP_DEG = 0.0014


def kr_photos() -> list[tuple[Path, Path]]:
    """Every trash-bags-kr photo with its label file, in capture order (the file names are times)."""
    pairs = []
    for split in ("train", "val"):
        for image in sorted((KR / "images" / split).glob("*.jpg")):
            pairs.append((image, KR / "labels" / split / f"{image.stem}.txt"))
    return sorted(pairs, key=lambda pair: pair[0].name)


def bag_boxes(label: Path, width: int, height: int) -> list[list[float]]:
    """Each bag's box in pixels: the min/max of its polygon (or its YOLO box)."""
    boxes = []
    text = label.read_text() if label.exists() else ""
    for line in text.splitlines():
        values = [float(v) for v in line.split()[1:]]
        if len(values) == 4:  # cx cy w h
            cx, cy, w, h = values
            xs, ys = [cx - w / 2, cx + w / 2], [cy - h / 2, cy + h / 2]
        else:
            xs, ys = values[0::2], values[1::2]
        boxes.append([max(0.0, min(xs)) * width, max(0.0, min(ys)) * height,
                      min(1.0, max(xs)) * width, min(1.0, max(ys)) * height])
    return [b for b in boxes if b[2] - b[0] >= 1 and b[3] - b[1] >= 1]


def held_out_dataset(pairs: list[tuple[Path, Path]], out: Path) -> Path:
    """The held-out half as a trash-bags-kr-named YOLO dataset (links to the shared photos)."""
    for sub in ("images/val", "labels/val"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for image, label in pairs:
        (out / "images" / "val" / image.name).symlink_to(image)
        shutil.copyfile(label, out / "labels" / "val" / label.name)
    (out / "data.yaml").write_text((KR / "data.yaml").read_text())
    return out


def bags_covered(model: Path, pairs: list[tuple[Path, Path]]) -> tuple[int, int]:
    """(bags covered, bags): half or more of a bag's box inside a deposit box, at the shipped thresholds."""
    pipeline = Pipeline(settings=Settings(model_path=model))
    covered = total = 0
    for image, label in pairs:
        result = pipeline.analyze(image)
        deposits = np.array([d.box for d in result.detections if d.label in DEPOSIT_CLASSES]).reshape(-1, 4)
        for x1, y1, x2, y2 in bag_boxes(label, result.image.width, result.image.height):
            total += 1
            area = (x2 - x1) * (y2 - y1)
            iw = np.clip(np.minimum(deposits[:, 2], x2) - np.maximum(deposits[:, 0], x1), 0, None)
            ih = np.clip(np.minimum(deposits[:, 3], y2) - np.maximum(deposits[:, 1], y1), 0, None)
            covered += bool(((iw * ih) >= area / 2).any())
    return covered, total


def kr_review_boxes(label: Path, width: int, height: int) -> list[dict[str, Any]]:
    """A trash-bags-kr photo's review: each bag a ``dumped_waste`` box drawn by the manager."""
    return [{"label": "dumped_waste", "xyxy": [round(v, 1) for v in box], "detection": None}
            for box in bag_boxes(label, width, height)]


def review_through_the_service(
    pairs: list[tuple[Path, Path]],
    data_dir: Path,
    base: Path,
    boxes_of: Callable[[Path, int, int], list[dict[str, Any]]] = kr_review_boxes,
    note: str = "trash-bags-kr labels",
) -> int:
    """Upload the city's photos as an agent and review each as a manager with ``boxes_of(label, width,
    height)``; returns the reviews made."""
    agent = cli_key(data_dir, "agent", "bench-agent")
    manager = cli_key(data_dir, "manager", "bench-manager")
    server = start_server(data_dir, {"VIPARE_MODEL_PATH": str(base), "VIPARE_ANALYSIS_SLOTS": "2"})
    reviewed = 0
    try:
        with httpx2.Client(base_url=server.url, timeout=120) as client:
            for i, (image, label) in enumerate(pairs):
                lat, lon = ORIGIN[0] + STEP_DEG * i, ORIGIN[1]
                sent = client.post(
                    "/v1/reports", headers={"Authorization": f"Bearer {agent}"},
                    files={"photo": (image.name, image.read_bytes(), "image/jpeg")},
                    data={"lat": str(lat), "lon": str(lon), "accuracy_m": "10"},
                )
                sent.raise_for_status()
                report = sent.json()
                width, height = report["image"]["width"], report["image"]["height"]
                boxes = boxes_of(label, width, height)
                deposit = any(box["label"] in DEPOSIT_CLASSES for box in boxes)
                review = client.post(
                    f"/v1/reports/{report['id']}/review", headers={"Authorization": f"Bearer {manager}"},
                    json={"deposit": deposit, "boxes": boxes, "note": note},
                )
                review.raise_for_status()
                reviewed += 1
    finally:
        server.stop()
    return reviewed


def measure(
    model: Path, held_out: Path, pairs: list[tuple[Path, Path]], reference_images: int | None
) -> dict[str, Any]:
    """One model's figures on the held-out half and on street-waste-cn val."""
    city = evaluate(model, held_out, split="val").as_dict()
    reference = evaluate(model, SWCN, split="val", max_images=reference_images).as_dict()
    covered, bags = bags_covered(model, pairs)
    return {
        "image_recall": city["image_level"].get("recall"),
        "box_map50": city["map50"],
        "bags_covered": covered,
        "bags": bags,
        "swcn_val_map50": reference["map50"],
    }


@command(__doc__)
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--replay", type=click.IntRange(0), default=200, show_default=True,
              help="street-waste-cn training photos replayed with the city's.")
@click.option("--reference-images", type=click.IntRange(1), default=None,
              help="Only the first N street-waste-cn val photos [default: all 670].")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "runs" / "review-loop",
              show_default=True, help="Working folder (emptied first).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON here too.")
def main(epochs: int, replay: int, reference_images: int | None, work: Path, output: Path | None) -> None:
    if not KR.exists() or not BASE_PT.exists():
        raise click.ClickException(f"needs {KR} (../shared beside the checkout) and {BASE_PT}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pairs = kr_photos()
    half = len(pairs) // 2
    city, kept = pairs[:half], pairs[half:]
    click.echo(f"trash-bags-kr: {len(city)} photos reviewed through the service, {len(kept)} held out")

    started = time.perf_counter()
    reviewed = review_through_the_service(city, work / "data", BASE_ONNX)
    review_s = time.perf_counter() - started
    export = work / "export"
    exported = subprocess.run(
        [sys.executable, "-m", "vipare.cli", "dataset", "export", str(export), "--data-dir", str(work / "data")],
        capture_output=True, text=True, check=False,
    )
    if exported.returncode != 0:
        raise click.ClickException(f"dataset export failed: {exported.stderr.strip()}")
    click.echo(exported.stdout.strip())

    result = adapt(AdaptConfig(reviews=export, output=work / "adapt", base=BASE_PT, old_model=BASE_ONNX,
                               replay=replay, epochs=epochs, reference_images=reference_images))
    held_out = held_out_dataset(kept, work / "held-out")
    before = measure(BASE_ONNX, held_out, kept, reference_images)
    after = measure(result.onnx_path, held_out, kept, reference_images)

    rows = [("image recall, held-out half", "image_recall"), ("box mAP50, held-out half", "box_map50"),
            ("street-waste-cn val mAP50", "swcn_val_map50")]
    click.echo(f"\nmachine: {machine()}")
    click.echo(f"{'':34} {'before':>8} {'after':>8}")
    for name, key in rows:
        click.echo(f"{name:34} {before[key]!s:>8} {after[key]!s:>8}")
    click.echo(f"{'bags covered, held-out half':34} {before['bags_covered']:>4}/{before['bags']:<3} "
               f"{after['bags_covered']:>4}/{after['bags']:<3}")
    click.echo(f"reviews through the API: {reviewed} in {review_s:.0f} s")
    click.echo(f"adaptation ({epochs} epochs, {replay} replayed photos): {result.wall_seconds:.0f} s wall, "
               f"{result.cpu_seconds:.0f} s CPU; promotable: {result.decision.promotable}")
    figures = {"machine": machine(), "reviewed": reviewed, "held_out": len(kept), "epochs": epochs, "replay": replay,
               "before": before, "after": after, "adapt_wall_s": round(result.wall_seconds, 1),
               "adapt_cpu_s": round(result.cpu_seconds, 1), "promotable": result.decision.promotable,
               "new_model": str(result.onnx_path)}
    if output is not None:
        output.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
