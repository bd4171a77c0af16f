"""Street-camera batch throughput: ``vipare batch`` with 1 and 2 workers against Ultralytics' ``predict``.

In one run, on the same frames (``camera_frames.py``: the shared validation photos, three fixed cameras
and a truck, ``frames.csv``), it times:

* ``vipare batch`` into a fresh store (reports, incidents, photo files; every frame committed), with
  1 worker and with 2 workers, 1 onnxruntime thread each: the whole command, from starting the
  interpreter to its exit (imports, worker start-up, model loading, database, writes included);
* Ultralytics: ``YOLO(<the same ONNX>, task="detect").predict(<the same frames>, stream=True, ...)``
  with the same input size and thresholds, iterating every result, in this process, from the first
  ``predict`` call to the last result (imports and ``YOLO()`` left out; onnxruntime at its default
  threads, as Ultralytics runs it). It only detects: nothing is decoded for EXIF, located or stored.

and prints frames/s, the CPU time each spent per frame (all processes and threads: less sensitive than
wall time to other work on the machine), and the ratio 2-worker vipare / Ultralytics (target >= 2).

    python -m benchmarks.bench_batch --frames 200
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.camera_frames import make_camera_frames, validation_photos
from benchmarks.machine import cpu_name
from vipare import Settings


def _childrencpu_name() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _vipare(frames: Path, data_dir: Path, workers: int, model: Path) -> tuple[float, float, float]:
    """Seconds for the whole ``vipare batch`` command, its CPU seconds (workers included), and the job's
    own frames/s from its summary.
    """
    command = [
        sys.executable, "-m", "vipare.cli", "batch", str(frames), "--cameras", str(frames.parent / "cameras.csv"),
        "--data-dir", str(data_dir), "--workers", str(workers), "--threads", "1", "--model", str(model),
        "--no-progress", "--log-every", "600",
    ]
    cpu, start = _childrencpu_name(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds, cpu = time.perf_counter() - start, _childrencpu_name() - cpu
    if done.returncode != 0:
        raise SystemExit(f"vipare batch failed:\n{done.stderr}")
    match = re.search(r"frames analysed, ([\d.]+) frames/s", done.stderr)
    return seconds, cpu, float(match[1]) if match else float("nan")


def _ultralytics(frames: Path, model: Path, settings: Settings, imgsz: tuple[int, int]) -> tuple[float, float, int]:
    """Seconds for Ultralytics' predict over every frame, its CPU seconds, and how many results it gave."""
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    height, width = imgsz
    cpu, start = time.process_time(), time.perf_counter()
    count = 0
    for _ in yolo.predict(
        str(frames / "**" / "*.jpg"), stream=True, imgsz=(height, width), conf=settings.conf_threshold,
        iou=settings.iou_threshold, max_det=settings.max_detections, verbose=False,
    ):
        count += 1
    return time.perf_counter() - start, time.process_time() - cpu, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200, help="number of frames")
    parser.add_argument("--size", type=int, default=640, help="longest side of the frames, pixels")
    parser.add_argument("--model", type=Path, default=Settings().model_path)
    parser.add_argument("--work-dir", type=Path, default=None, help="where frames and stores go (default: a temp dir)")
    args = parser.parse_args()

    photos = validation_photos(args.frames)
    if len(photos) < args.frames:
        raise SystemExit(f"needs {args.frames} validation photos under ../shared/datasets (found {len(photos)})")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vipare-bench-batch-"))
    frames = make_camera_frames(work / "batch", args.frames, size=args.size, photos=photos)
    settings = Settings(model_path=args.model)
    from vipare.detection import Detector

    input_size = Detector.from_settings(settings.model_copy(update={"intra_op_threads": 1})).input_size

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {load:.2f} at start")
    print(f"{args.frames} frames of at most {args.size} px in {frames}; model {args.model.name}, input {input_size}")
    results: dict[str, float] = {}
    n = args.frames
    for workers in (1, 2):
        seconds, cpu, job_rate = _vipare(frames, work / f"store-{workers}w", workers, args.model)
        results[f"vipare {workers}w"] = n / seconds
        print(f"vipare batch, {workers} worker(s) x 1 thread: {seconds:6.2f} s {n / seconds:6.1f} frames/s end to end "
              f"({job_rate:.1f} inside the job), {1000 * cpu / n:5.1f} ms CPU per frame")
    seconds, cpu, count = _ultralytics(frames, args.model, settings, input_size)
    if count != n:
        raise SystemExit(f"Ultralytics gave {count} results for {n} frames")
    results["ultralytics"] = n / seconds
    print(f"Ultralytics predict (stream):          {seconds:6.2f} s {n / seconds:6.1f} frames/s, "
          f"{1000 * cpu / n:5.1f} ms CPU per frame")
    ratio = results["vipare 2w"] / results["ultralytics"]
    print(f"vipare batch 2 workers / Ultralytics = {ratio:.2f}x (target >= 2); "
          f"2 workers / 1 worker = {results['vipare 2w'] / results['vipare 1w']:.2f}x")


if __name__ == "__main__":
    main()
