"""Street-camera batch throughput: ``vipare batch`` with 1 and 2 workers against Ultralytics' ``predict``.

In one run, on the same frames (``camera_frames.py``: the shared validation photos, three fixed cameras
and a truck, ``frames.csv``), each side runs as its own command, timed two ways:

* ``vipare batch`` into a new, empty store (made beforehand with ``vipare cameras import``, untimed:
  the database and the camera registry), writing reports, incidents and photo files, every frame
  committed; with 1 worker and with 2 workers, 1 onnxruntime thread each;
* ``vipare batch --output``, 2 workers: the same analyses written as JSON lines (one fsynced line per
  frame), nothing stored, so no face or plate searched: what the store and the photos' privacy cost;
* Ultralytics (``ultralytics_predict.py``, which imports nothing of vipare):
  ``YOLO(<the same ONNX>, task="detect").predict(<the same frames>, stream=True, ...)`` with the same
  input size and thresholds, iterating every result (onnxruntime at its default threads, as
  Ultralytics runs it). It only detects: nothing is decoded for EXIF, located or stored.

*Whole command*: from starting the interpreter to its exit (imports, worker start-up, model loading,
database and writes included). *Inside*: vipare's job from its start to its last commit (worker
start-up and model loading included, interpreter imports not), against Ultralytics from its first
``predict`` call to its last result (model loading included, imports and ``YOLO()`` not).

vipare's modules are byte-compiled first (``compileall``), as installing them does; Ultralytics'
come compiled from pip. Each command runs once untimed first (the page cache then holds its
libraries). Each round runs every side once, in turn, so that a slow spell of the machine falls on
all of them; it prints the medians over the rounds of frames/s both ways and of the CPU
time each spent per frame (the machine's busy time while the command ran: less sensitive than wall
time to a slow spell), and the ratios 2-worker vipare / Ultralytics (target >= 2 into the store), round by round:
their median and range. For vipare it also prints the CPU time of the job's own process per frame
(its ``RUSAGE_CHILDREN``: the job and the children it waited for, not the workers, which the fork
server starts): what the single writer takes from the cores the workers share. Last, three ceilings,
measured in this process before the rounds: the CPU time of one bare ``session.run`` with one
thread (the same ONNX), and of one worker's whole analysis of a frame for the store
(``analyze_frame``: read, sha256 check, decode, detect, locate, find its faces and plates and, with
a plate band, the verdict checked on the blurred reduced copy; nothing stored), then with the
worker's part of storing the photo (decoded in full, blurred, encoded, put); the frames/s two such
workers would reach if nothing else cost anything, and those over Ultralytics' frames/s inside.

    python -m benchmarks.bench_batch --frames 200 --rounds 3
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from benchmarks.camera_frames import benchmark_frames
from benchmarks.cli import command
from vipare import Settings
from vipare.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def _busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``), else those of our waited-for children.

    Machine-wide, because ``vipare batch``'s workers are the children of its fork server, which the
    job does not wait for: their time would not reach ``RUSAGE_CHILDREN``. Other work on the
    machine counts too, so run this on an otherwise idle machine.
    """
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:8]]
    except OSError:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    """CPU seconds of this process's waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _command(command: list[str], what: str) -> tuple[float, float, float, str]:
    """Seconds and CPU seconds of ``command`` (see :func:`_busy_cpu`), its own process's CPU seconds, and its stderr."""
    cpu, own, start = _busy_cpu(), _own_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds, cpu, own = time.perf_counter() - start, _busy_cpu() - cpu, _own_cpu() - own
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr}")
    return seconds, cpu, own, done.stderr


def _vipare(
    frames: Path, work: Path, workers: int, model: Path, *, jsonl: bool = False
) -> tuple[float, float, float, float]:
    """Seconds of the whole ``vipare batch`` command, its CPU seconds, the job's seconds, its process's CPU seconds.

    Into the store (``jsonl`` false): the store is made first, untimed, as an operator does once:
    ``vipare cameras import`` creates the database and registers the cameras; the job then writes
    into it. With ``jsonl``: ``--output`` JSON lines, the cameras from ``--cameras``; nothing stored.
    """
    vipare = [sys.executable, "-m", "vipare.cli"]
    cameras = frames.parent / "cameras.csv"
    if jsonl:
        output = work / "results.jsonl"
        output.unlink(missing_ok=True)
        into = ["--output", str(output), "--cameras", str(cameras)]
    else:
        data_dir = work / "store"
        shutil.rmtree(data_dir, ignore_errors=True)
        _command([*vipare, "cameras", "import", str(cameras), "--data-dir", str(data_dir)], "vipare cameras import")
        into = ["--data-dir", str(data_dir)]
    seconds, cpu, own, log = _command([
        *vipare, "batch", str(frames), *into, "--workers", str(workers), "--threads", "1",
        "--model", str(model), "--no-progress", "--log-every", "600",
    ], "vipare batch")
    match = re.search(r"time\s+([\d.]+) s, (\d+) frames analysed", log)
    if match is None or int(match[2]) == 0:
        raise SystemExit(f"vipare batch analysed nothing:\n{log}")
    return seconds, cpu, float(match[1]), own


def _ultralytics(frames: Path, model: Path, input_size: tuple[int, int]) -> tuple[float, float, float]:
    """Seconds for the whole Ultralytics command, its CPU seconds, and the seconds inside ``predict``."""
    settings = Settings(model_path=model)
    seconds, cpu, _, log = _command([
        sys.executable, "-m", "benchmarks.ultralytics_predict", str(frames), str(model),
        "--imgsz", *map(str, input_size), "--conf", str(settings.conf_threshold),
        "--iou", str(settings.iou_threshold), "--max-det", str(settings.max_detections),
    ], "Ultralytics predict")
    match = re.search(r"predict ([\d.]+) s, (\d+) results", log)
    if match is None:
        raise SystemExit(f"Ultralytics printed no timing:\n{log}")
    return seconds, cpu, float(match[1])


def _session_run_cpu_ms(model: Path, runs: int = 40) -> tuple[float, tuple[int, int]]:
    """Median CPU milliseconds of one bare ``session.run`` at one thread, on a fixed input; the input size."""
    import numpy as np

    from vipare.detection import Detector

    detector = Detector.from_settings(Settings(model_path=model, intra_op_threads=1))
    blob = np.random.default_rng(0).random((1, 3, *detector.input_size.hw), dtype=np.float32)
    detector.run(blob)
    times = []
    for _ in range(runs):
        start = time.process_time()
        detector.run(blob)
        times.append(time.process_time() - start)
    return 1000 * sorted(times)[runs // 2], detector.input_size.hw


def _analysis_cpu_ms(model: Path, frames: Path, photos: Path | None = None) -> float:
    """Median CPU milliseconds of one worker's analysis of a frame at one thread (nothing stored, unless ``photos``).

    :func:`~serving.batch.frames.analyze_frame` as a worker of a job into the store runs it (read, sha256
    check, decode, detect, locate, find faces and plates, check the verdict on the blurred reduced copy
    when a plate band is among them), in this process, over the benchmark's frames, after one untimed
    frame. With ``photos``, a worker's part of storing the frame too: its photo decoded in full,
    blurred, encoded and put (without fsync) in a photo store there.
    """
    import hashlib

    from serving.batch.frames import FrameRef, FrameTask, analyze_frame, set_thread_budget
    from serving.photos.store import PhotoStore
    from vipare.geotag import CameraPosition
    from vipare.pipeline import Pipeline

    set_thread_budget(1)
    pipeline = Pipeline(settings=Settings(model_path=model, intra_op_threads=1)).for_frames()
    camera = CameraPosition(camera_id="bench", lat=49.1193, lon=6.1757)
    paths = sorted(frames.rglob("*.jpg"))
    tasks = [FrameTask(i, path.name, FrameRef(str(path)), hashlib.sha256(path.read_bytes()).hexdigest(), camera, None)
             for i, path in enumerate(paths)]
    store = PhotoStore(photos) if photos is not None else None
    analyze_frame(pipeline, tasks[0])
    times = []
    for task in tasks:
        start = time.process_time()
        outcome = analyze_frame(pipeline, task, store)
        times.append(time.process_time() - start)
        if outcome.error is not None:
            raise SystemExit(f"{task.name}: {outcome.error}")
    return 1000 * statistics.median(times)


@dataclass
class _Side:
    """One side's runs: seconds of the whole command, seconds inside, CPU seconds, the job process's CPU seconds
    (vipare); one entry per round."""

    label: str
    whole: list[float] = field(default_factory=list)
    inside: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)

    def add(self, whole: float, inside: float, cpu: float, own: float | None = None) -> None:
        self.whole.append(whole)
        self.inside.append(inside)
        self.cpu.append(cpu)
        if own is not None:
            self.own.append(own)

    def line(self, frames: int) -> str:
        whole, inside, cpu = (statistics.median(v) for v in (self.whole, self.inside, self.cpu))
        own = f" (job process {1000 * statistics.median(self.own) / frames:.1f})" if self.own else ""
        return (f"{self.label:<42} whole command {whole:6.2f} s {frames / whole:6.1f} frames/s; "
                f"inside {inside:6.2f} s {frames / inside:6.1f} frames/s; {1000 * cpu / frames:5.1f} ms CPU per frame"
                + own)


def _ratios(fast: _Side, slow: _Side, attr: str) -> str:
    """Median, lowest and highest of the per-round speed ratios ``slow seconds / fast seconds``."""
    ratios = [b / a for a, b in zip(getattr(fast, attr), getattr(slow, attr), strict=True)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


@command(__doc__)
@click.option("--frames", "count", type=click.IntRange(1), default=200, show_default=True, help="Number of frames.")
@click.option("--size", type=click.IntRange(1), default=640, show_default=True,
              help="Longest side of the frames, pixels.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Rounds; each runs every side once, in turn.")
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="ONNX model (default: the shipped model, or VIPARE_MODEL_PATH).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where frames and stores go (default: a temp dir).")
def main(count: int, size: int, rounds: int, model: Path | None, work_dir: Path | None) -> None:
    model = model or Settings().model_path
    work = work_dir or Path(tempfile.mkdtemp(prefix="vipare-bench-batch-"))
    frames = benchmark_frames(count, work, size=size)

    # Byte-code for vipare's own modules, as an install (or any first run) leaves it: Ultralytics'
    # modules have theirs from pip, and without it each command would compile vipare's sources again.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "vipare"), str(ROOT / "serving")],
                   check=True, capture_output=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {load:.2f} at start")
    print(f"{count} frames of at most {size} px in {frames}; model {model}; "
          f"{rounds} rounds, medians")
    n = count
    run_ms, input_size = _session_run_cpu_ms(model)
    analysis_ms = _analysis_cpu_ms(model, frames)
    stored_ms = _analysis_cpu_ms(model, frames, photos=work / "ceiling-photos")
    # (workers, JSON lines instead of the store) -> the side's runs
    sides = {
        (1, False): _Side("vipare batch, 1 worker x 1 thread, store:"),
        (2, False): _Side("vipare batch, 2 workers x 1 thread, store:"),
        (2, True): _Side("vipare batch, 2 workers x 1 thread, --output:"),
    }
    ultralytics = _Side("Ultralytics predict (stream):")
    # One untimed run of each command first: the first start of an interpreter reads its libraries
    # from disk (torch's are large) and would count a cold page cache as the command's own time.
    for workers, jsonl in sides:
        _vipare(frames, work / f"{workers}w-{jsonl}", workers, model, jsonl=jsonl)
    _ultralytics(frames, model, input_size)
    for round_ in range(1, rounds + 1):
        for (workers, jsonl), side in sides.items():
            seconds, cpu, job, own = _vipare(frames, work / f"{workers}w-{jsonl}", workers, model, jsonl=jsonl)
            side.add(seconds, job, cpu, own)
        seconds, cpu, inner = _ultralytics(frames, model, input_size)
        ultralytics.add(seconds, inner, cpu)
        print(f"round {round_}: whole/inside s: " + "; ".join(
            f"{side.label.split(':')[0]} {side.whole[-1]:.2f}/{side.inside[-1]:.2f}"
            for side in (*sides.values(), ultralytics)
        ), flush=True)
    for side in (*sides.values(), ultralytics):
        print(side.line(n))
    store, lines = sides[(2, False)], sides[(2, True)]
    print(f"vipare batch 2 workers, store / Ultralytics: whole command {_ratios(store, ultralytics, 'whole')}, "
          f"inside {_ratios(store, ultralytics, 'inside')} (target >= 2; median and range over the rounds)")
    print(f"vipare batch 2 workers, --output / Ultralytics: whole command {_ratios(lines, ultralytics, 'whole')}, "
          f"inside {_ratios(lines, ultralytics, 'inside')}")
    print(f"2 workers / 1 worker, store: whole command {_ratios(store, sides[(1, False)], 'whole')}, "
          f"inside {_ratios(store, sides[(1, False)], 'inside')}")
    ceiling = 2 * 1000 / run_ms
    inside_ultralytics = n / statistics.median(ultralytics.inside)
    print(f"inference alone: session.run {run_ms:.1f} ms CPU per frame at 1 thread; 2 workers doing nothing else "
          f"would reach {ceiling:.1f} frames/s, {ceiling / inside_ultralytics:.2f}x Ultralytics inside")
    analysis_ceiling = 2 * 1000 / analysis_ms
    print(f"a worker's analysis (read, check, decode, detect, locate, find faces and plates, choose the plate cells; "
          f"nothing stored): "
          f"{analysis_ms:.1f} ms CPU per "
          f"frame at 1 thread; 2 workers doing only that would reach {analysis_ceiling:.1f} frames/s, "
          f"{analysis_ceiling / inside_ultralytics:.2f}x Ultralytics inside")
    stored_ceiling = 2 * 1000 / stored_ms
    print(f"the same with the worker's part of storing the photo (decode in full, blur, encode, put): {stored_ms:.1f} "
          f"ms CPU per frame; 2 workers doing only that would reach {stored_ceiling:.1f} frames/s, "
          f"{stored_ceiling / inside_ultralytics:.2f}x Ultralytics inside")


if __name__ == "__main__":
    main()
