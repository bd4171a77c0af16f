"""Energy of the model in use: CPU-seconds and estimated watt-hours per 1,000 photos and per training run.

This machine exposes no energy counter (no RAPL), so the estimate is CPU time x a stated power per
busy core: ``Wh = CPU-seconds x watts_per_core / 3600``. CPU time is the process's own
(``time.process_time``: every thread, onnxruntime's included), measured around each photo's work:

* 12 MP upload: what the service does with a phone photo: decode, detect (with the tiled second
  look when nothing is found), find faces and plates, blur and re-encode, check the verdict holds;
* batch frames: street-camera frames (``--frame-size`` px on the long side) decoded and analysed
  (the tiled look as ``VIPARE_FRAME_TILES_WHEN_EMPTY`` says: off by default), and blurred like an
  upload when the verdict is dumping (only those are kept);
* training: the CPU-seconds a training run recorded (``run.json``'s ``cpu_seconds``, or the last line
  of the run's ``cpu.log``), when ``--train-run`` names its folder. A model fine-tuned from another
  run cost both: name each run of its lineage, first to last, and the total is added. Runs whose
  folders are gone (another machine) come from the JSON twin of the model they led to
  (``--earlier-runs``: its recorded per-run rows, first in the lineage).

The default 10 W per busy core is about a server CPU's rated power divided by its cores (a 200 W,
20-core part); give your own with ``--watts-per-core``. Idle power, memory, disks, network and
cooling are not counted. ``--record`` writes the figures into the model's JSON twin for the card.

    python -m benchmarks.bench_energy --photos 10 --frames 100 --train-run runs/train/clean-480 \\
        --record weights/vipare-yolo11n.json
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from benchmarks.camera_frames import benchmark_frames
from benchmarks.cli import command
from serving.photos.anonymise import anonymised_copy
from training.energy import WATTS_PER_CORE, recorded_runs, training_rows, wh
from training.phone_photos import make_phone_photos
from vipare import Pipeline, Settings
from vipare.machine import machine


def _upload_cpu(pipeline: Pipeline, data: bytes) -> float:
    start = time.process_time()
    image = pipeline.decode(data)
    result = pipeline.analyze(image)
    regions = pipeline.private_regions(image, result.detections)
    if regions:
        anonymised_copy(pipeline, data, image, regions, result.verdict.dumping)
    return time.process_time() - start


def _frame_cpu(pipeline: Pipeline, data: bytes) -> float:
    start = time.process_time()
    image = pipeline.decode(data)
    result = pipeline.analyze(image)
    if result.verdict.dumping:
        regions = pipeline.private_regions(image, result.detections)
        if regions:
            anonymised_copy(pipeline, data, image, regions, True)
    return time.process_time() - start


@command(__doc__)
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="ONNX model (default: the shipped model, or VIPARE_MODEL_PATH).")
@click.option("--photos", type=click.IntRange(1), default=10, show_default=True, help="12 MP phone photos.")
@click.option("--frames", type=click.IntRange(1), default=100, show_default=True, help="Camera frames.")
@click.option("--frame-size", type=click.IntRange(64), default=1280, show_default=True,
              help="Long side of the camera frames, px.")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True)
@click.option("--watts-per-core", type=click.FloatRange(0, min_open=True), default=WATTS_PER_CORE,
              show_default=True, help="Power of one busy core, W.")
@click.option("--train-run", "train_runs", multiple=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A training run's folder (runs/train/NAME), for its CPU-seconds; repeat for each run the model "
              "was fine-tuned through, first to last.")
@click.option("--earlier-runs", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The JSON twin of the model the first --train-run started from: its recorded training runs "
              "come first in the lineage (for run folders no longer at hand).")
@click.option("--record", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Write the figures into this model JSON twin (its 'energy' entry).")
def main(model: Path | None, photos: int, frames: int, frame_size: int, rounds: int, watts_per_core: float,
         train_runs: tuple[Path, ...], earlier_runs: Path | None, record: Path | None) -> None:
    try:  # a run without a figure stops the command before it measures
        training = training_rows(train_runs, recorded_runs(earlier_runs) if earlier_runs else ())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = Settings(model_path=model or Settings().model_path)
    pipeline = Pipeline(settings=settings)
    framed = pipeline.for_frames()
    work = Path(tempfile.gettempdir())
    uploads = [p.read_bytes() for p in make_phone_photos(work / "vipare-phone-photos", photos)]
    folder = benchmark_frames(frames, work / f"vipare-energy-frames-{frame_size}", size=frame_size)
    camera = [p.read_bytes() for p in sorted(folder.rglob("*.jpg"))]
    cost: dict[str, list[float]] = {"upload": [], "frame": []}
    for _ in range(rounds):
        cost["upload"] += [_upload_cpu(pipeline, data) for data in uploads]
        cost["frame"] += [_frame_cpu(framed, data) for data in camera]
    rows: list[dict[str, Any]] = [
        {"work": f"12 MP phone upload (analysis, blur), {photos} photos x {rounds}", "unit": "1,000 photos",
         "cpu_seconds": round(1000 * statistics.mean(cost["upload"]), 1)},
        {"work": f"camera frames, {frame_size} px, {frames} frames x {rounds}", "unit": "1,000 frames",
         "cpu_seconds": round(1000 * statistics.mean(cost["frame"]), 1)},
    ]
    rows += training
    for row in rows:
        row["wh"] = round(wh(row["cpu_seconds"], watts_per_core), 2)
    result = {
        "model": settings.model_path.name,
        "machine": machine(),
        "watts_per_core": watts_per_core,
        "method": "CPU-seconds of the process (every thread) x watts_per_core / 3600; idle power, memory, disks, "
        "network and cooling not counted",
        "command": "python -m benchmarks.bench_energy",
        "rows": rows,
    }
    print(f"machine: {result['machine']}; model {result['model']}; {watts_per_core:g} W per busy core")
    for row in rows:
        print(f"  {row['work']:<55} {row['cpu_seconds']:>10.1f} CPU-s  {row['wh']:>8.2f} Wh per {row['unit']}")
    if record is not None:
        twin = json.loads(record.read_text())
        twin["energy"] = result
        record.write_text(json.dumps(twin, indent=2) + "\n")
        print(f"recorded in {record}")


if __name__ == "__main__":
    main()
