"""How many frames a batch job's writer takes in: the ceiling of one job, whatever its workers.

A job has one writer (its own process, with the local engine or Ray): it groups the analysed frames
into incidents and commits them, ``--commit-every`` at a time, while the workers analyse. This
measures that part alone, on real analyses: ``vipare batch --output`` analyses the frames once
(``camera_frames.py``: the shared validation photos, three fixed cameras and a truck), then each
round writes those results into a new store with :class:`serving.batch.sinks.StoreSink`, as the job
does (reports, incidents and their histories; the photo files are the workers' part and are not
written here). It prints the median over the rounds of the writer's CPU time and wall time per
frame, and the frames per second that makes.

    python -m benchmarks.bench_writer --frames 200 --rounds 5
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import click

from benchmarks.camera_frames import benchmark_frames
from benchmarks.cli import command
from vipare.machine import machine


def _analyses(frames: Path, cameras: Path, out: Path) -> list[dict[str, object]]:
    """The frames' JSON lines, from one ``vipare batch --output`` run."""
    out.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "vipare.cli", "batch", str(frames), "--output", str(out), "--cameras", str(cameras),
         "--no-progress"],
        check=True, capture_output=True,
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


@command(__doc__)
@click.option("--frames", "count", type=click.IntRange(1), default=200, show_default=True, help="Number of frames.")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Rounds, each on a new store.")
@click.option("--commit-every", type=click.IntRange(1), default=32, show_default=True,
              help="Frames per write transaction, as the job's.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where frames and stores go (default: a temp dir).")
def main(count: int, rounds: int, commit_every: int, work_dir: Path | None) -> None:
    work = work_dir or Path(tempfile.mkdtemp(prefix="vipare-bench-writer-"))
    frames = benchmark_frames(count, work, size=640)
    cameras = frames.parent / "cameras.csv"
    lines = _analyses(frames, cameras, work / "analyses.jsonl")

    from serving.batch.job import load_registry
    from serving.batch.sinks import Accepted, StoreSink
    from serving.config import ServiceSettings
    from vipare.results import ImageResult

    def when(value: object) -> datetime | None:
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    # observed_at as the fallback time: these frames carry no EXIF clock, so the job's fallback (the
    # time in the file name) is what it resolved to whenever frames.csv gives no time.
    accepted = [
        Accepted(str(line["frame"]), str(line["camera_id"]), ImageResult.model_validate(line["result"]),
                 when(line.get("captured_at")), when(line.get("observed_at")))
        for line in lines
    ]
    cpu, wall, deposits = [], [], sum(a.result.verdict.dumping for a in accepted)
    for _ in range(rounds):
        data_dir = work / "store"
        shutil.rmtree(data_dir, ignore_errors=True)
        settings = ServiceSettings(data_dir=data_dir)
        sink = StoreSink(settings, load_registry(settings, cameras_file=cameras, into_store=True))
        try:
            start_cpu, start = time.process_time(), time.perf_counter()
            for at in range(0, len(accepted), commit_every):
                sink.write(accepted[at : at + commit_every])
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        finally:
            sink.close()
    n = len(accepted)
    print(f"{machine()}; {n} analysed frames ({deposits} with deposits), {commit_every} per transaction, "
          f"{rounds} rounds, medians")
    print(f"writer: {1000 * statistics.median(cpu) / n:.2f} ms CPU and {1000 * statistics.median(wall) / n:.2f} ms "
          f"per frame: {n / statistics.median(wall):.0f} frames/s")


if __name__ == "__main__":
    main()
