"""How long a city waits for its adapted model: ``training.adapt`` on N reviewed photos, timed.

The wall time of an adaptation depends on how many photos it trains on, their size and the epochs,
not on what they show; trash-bags-kr has too few photos to review 200 of them, so this takes the
first N street-waste-cn training photos (640 x 640, as trash-bags-kr's), reviews each through the
service with the dataset's own labels (``garbage`` a ``dumped_waste`` box, ``overflow`` an
``overflowing_bin``, ``garbage_bin`` a ``bin``), exports them with ``vipare dataset export`` and runs
``training.adapt`` as a city would (the shipped checkpoint, street-waste-cn photos replayed, the
shipped input size, its check against the shipped model on street-waste-cn val). It prints the wall
and CPU time of each step. The base model trained on these photos, so the adapted model's accuracy
says nothing here (``bench_review_loop`` measures the gain on a city the model never saw).

    python -m benchmarks.bench_adapt_time --photos 200 --epochs 10 --replay 200
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from benchmarks.bench_review_loop import BASE_ONNX, BASE_PT, ROOT, review_through_the_service
from benchmarks.cli import command
from training.adapt import AdaptConfig, adapt
from training.datasets import SOURCES, import_split
from vipare.machine import machine
from vipare.taxonomy import class_names

SOURCE = "street-waste-cn"


@command(__doc__)
@click.option("--photos", type=click.IntRange(1), default=200, show_default=True, help="Reviewed photos.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--replay", type=click.IntRange(0), default=200, show_default=True,
              help="street-waste-cn training photos replayed with the reviewed ones.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "runs" / "adapt-time",
              show_default=True, help="Working folder (emptied first).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON here too.")
def main(photos: int, epochs: int, replay: int, work: Path, output: Path | None) -> None:
    source = SOURCES[SOURCE]
    if not source.root.exists() or not BASE_PT.exists():
        raise click.ClickException(f"needs {source.root} (../shared beside the checkout) and {BASE_PT}")
    samples, _ = import_split(source, "train")
    chosen = samples[:photos]
    if len(chosen) < photos:
        raise click.ClickException(f"{SOURCE} train has only {len(chosen)} photos")
    names = class_names()
    labels = {sample.image: sample for sample in chosen}

    def boxes_of(image: Path, width: int, height: int) -> list[dict[str, Any]]:
        return [
            {"label": names[box.cls], "detection": None,
             "xyxy": [round((box.cx - box.w / 2) * width, 1), round((box.cy - box.h / 2) * height, 1),
                      round((box.cx + box.w / 2) * width, 1), round((box.cy + box.h / 2) * height, 1)]}
            for box in labels[image].boxes
        ]

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    pairs = [(sample.image, sample.image) for sample in chosen]  # the "label" handed to boxes_of is the image
    reviewed = review_through_the_service(pairs, work / "data", BASE_ONNX, boxes_of=boxes_of, note=f"{SOURCE} labels")
    review_s = time.perf_counter() - started
    export = work / "export"
    started = time.perf_counter()
    exported = subprocess.run(
        [sys.executable, "-m", "vipare.cli", "dataset", "export", str(export), "--data-dir", str(work / "data")],
        capture_output=True, text=True, check=False,
    )
    if exported.returncode != 0:
        raise click.ClickException(f"dataset export failed: {exported.stderr.strip()}")
    export_s = time.perf_counter() - started
    result = adapt(AdaptConfig(reviews=export, output=work / "adapt", base=BASE_PT, old_model=BASE_ONNX,
                               replay=replay, epochs=epochs))
    click.echo(f"machine: {machine()}")
    click.echo(f"reviews through the API: {reviewed} photos of {SOURCE} train in {review_s:.0f} s; "
               f"export {export_s:.0f} s")
    click.echo(f"adaptation ({reviewed} reviewed + {replay} replayed photos, {epochs} epochs, with its check "
               f"on street-waste-cn val): {result.wall_seconds:.0f} s wall ({result.wall_seconds / 60:.1f} min), "
               f"{result.cpu_seconds:.0f} s CPU")
    if output is not None:
        output.write_text(json.dumps({
            "machine": machine(), "reviewed": reviewed, "replay": replay, "epochs": epochs,
            "review_s": round(review_s, 1), "export_s": round(export_s, 1),
            "adapt_wall_s": round(result.wall_seconds, 1), "adapt_cpu_s": round(result.cpu_seconds, 1),
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
