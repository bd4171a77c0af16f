"""Upload latency of 12 MP phone photos through a real ``vipare serve``, next to the library's own time.

Photos are phone-like 4032x3024 JPEGs of 3-5 MB with EXIF GPS and orientation (``phone_photos.py``).
On the same photos, with the same onnxruntime thread count, it times:

* library: ``Pipeline.analyze(<file bytes>)`` (decode, detect, verdict, location) in this process;
* library, anonymised: the same, then what the service does to every photo it stores, in this
  process: the search for faces and plates (``Pipeline.private_regions``) and, for a photo with
  some, the blurred copy (``serving.photos.anonymise.anonymised_copy``: the plate cells' check,
  the full-size decode, the blur and the encoding);
* upload: ``POST /v1/reports`` to ``vipare serve`` on 127.0.0.1 (one worker, a fresh SQLite data
  folder), from sending the request to the end of the 201 answer: multipart transfer, sha256,
  decode, detect, removing GPS, writing the photo with fsync, committing the rows, the JSON answer.
  Each request sends a distinct file (a JPEG comment makes its sha256 new), so none is answered
  from the duplicate check. Faces and plates are blurred after the answer (the default
  ``VIPARE_BLUR_PHOTOS``); the client then reads the photo back, untimed, which waits for that, so
  the throughput counts the blurring and none of it runs during the library's blocks;

first one at a time (1 client), then ``--clients`` at once (threads sharing the pipeline; clients
each with its connection). Library and upload measurements alternate in small blocks, so both see
the same background load. It prints p50/p95 of each, the ratio p50 upload / p50 library at the same
concurrency (the service's overhead; with several clients the server also queues analyses beyond
``VIPARE_ANALYSIS_SLOTS``), the mean decode + detect time the server measured itself (its Prometheus
metrics), and the throughput over the blocks, the upload's as a share of each library line's: against
the anonymised line, what the service adds to the work it must do for a photo it keeps (an upload is
answered before its photo is blurred, so its p50 is compared with the library's analysis alone). Requests are
bounded by ``--requests`` per concurrency; two uploads warm the server first and are not counted.

    python -m benchmarks.bench_upload --photos 8 --requests 24 --clients 4
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx2

from benchmarks.cli import command
from serving.launch import cli_key, start_server
from serving.photos.anonymise import anonymised_copy
from training.phone_photos import make_phone_photos
from vipare import Pipeline, Settings
from vipare.machine import cpu_name

WARM_UP_UPLOADS = 2
_ANALYSIS = re.compile(r'^vipare_analysis_duration_seconds_(sum|count)\{stage="(decode|detect)"\} (\S+)$', re.MULTILINE)


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def distinct(jpeg: bytes, tag: str) -> bytes:
    """The same JPEG with a comment (COM segment) after its APPn segments: same picture, new sha256."""
    at = 2  # after SOI
    while at + 4 <= len(jpeg) and jpeg[at] == 0xFF and 0xE0 <= jpeg[at + 1] <= 0xEF:
        at += 2 + struct.unpack(">H", jpeg[at + 2 : at + 4])[0]
    text = tag.encode()
    return jpeg[:at] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[at:]


def _percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds (p95: nearest rank)."""
    ordered = sorted(seconds)
    p95 = ordered[max(0, min(len(ordered) - 1, round(0.95 * len(ordered)) - 1))]
    return statistics.median(ordered) * 1000.0, p95 * 1000.0


@dataclass
class Timings:
    """Durations of single operations and the wall time of the blocks that ran them."""

    seconds: list[float] = field(default_factory=list)
    wall: float = 0.0

    def run(self, work: Callable[[int], float], indices: Sequence[int], concurrency: int) -> None:
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            self.seconds += pool.map(work, indices)
        self.wall += time.perf_counter() - start


@dataclass(frozen=True)
class Summary:
    """p50 and p95 of one line, milliseconds, and its throughput over its blocks."""

    p50: float
    p95: float
    rate: float

    @property
    def text(self) -> str:
        return f"p50 {self.p50:6.0f} ms  p95 {self.p95:6.0f} ms  {self.rate:5.2f} photos/s"


def _summary(timings: Timings) -> Summary:
    return Summary(*_percentiles(timings.seconds), len(timings.seconds) / timings.wall)


def _analysis_totals(url: str) -> tuple[float, float]:
    """(seconds the server spent decoding and detecting, analyses) so far, from its metrics."""
    text = httpx2.get(f"{url}/metrics", timeout=60).text
    found = {(kind, stage): float(value) for kind, stage, value in _ANALYSIS.findall(text)}
    return found.get(("sum", "decode"), 0.0) + found.get(("sum", "detect"), 0.0), found.get(("count", "detect"), 0.0)


@command(__doc__)
@click.option("--photos", "count", type=click.IntRange(1), default=8, show_default=True,
              help="Distinct 12 MP photos (reused across requests).")
@click.option("--requests", type=click.IntRange(1), default=24, show_default=True,
              help="Timed uploads (and library runs) per concurrency.")
@click.option("--clients", type=click.IntRange(1), default=4, show_default=True,
              help="Concurrent clients of the second measurement.")
@click.option("--threads", type=click.IntRange(0), default=1, show_default=True,
              help="onnxruntime threads per analysis, server and library (0: all cores).")
@click.option("--slots", type=click.IntRange(0), default=0, show_default=True,
              help="Server analyses at once (0: cores // threads).")
@click.option("--photo-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(tempfile.gettempdir()) / "vipare-phone-photos", show_default=True,
              help="Where the photos are made, or found from an earlier run.")
def main(count: int, requests: int, clients: int, threads: int, slots: int, photo_dir: Path) -> None:
    load_before = _load()
    paths = make_phone_photos(photo_dir, count)
    photos = [p.read_bytes() for p in paths]
    sizes = [len(p) / 1e6 for p in photos]
    cores = os.cpu_count() or 1
    slots = slots or max(1, cores // (threads or cores))
    pipeline = Pipeline(settings=Settings(intra_op_threads=threads))
    pipeline.analyze(photos[0])
    pipeline.private_regions(pipeline.decode(photos[0]))  # loads the face and plate detectors

    def analyze(i: int) -> float:
        start = time.perf_counter()
        pipeline.analyze(photos[i % len(photos)])
        return time.perf_counter() - start

    def analyze_anonymised(i: int) -> float:
        data = photos[i % len(photos)]
        start = time.perf_counter()
        image = pipeline.decode(data)
        result = pipeline.analyze(image)
        regions = pipeline.private_regions(image, result.detections)
        anonymised_copy(pipeline, data, image, regions, result.verdict.dumping)
        return time.perf_counter() - start

    concurrencies = (1, clients)
    library = {c: Timings() for c in concurrencies}
    anonymised = {c: Timings() for c in concurrencies}
    uploads = {c: Timings() for c in concurrencies}
    in_server: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="vipare-bench-upload-") as tmp:
        data_dir = Path(tmp) / "data"
        key = cli_key(data_dir, "agent", "bench")
        server = start_server(
            data_dir, {"VIPARE_INTRA_OP_THREADS": str(threads), "VIPARE_ANALYSIS_SLOTS": str(slots)}
        )
        counter = iter(range(10**9))
        lock = threading.Lock()
        local = threading.local()

        def upload(i: int) -> float:
            with lock:
                n = next(counter)
            if not hasattr(local, "client"):
                auth = {"Authorization": f"Bearer {key}"}
                local.client = httpx2.Client(base_url=server.url, headers=auth, timeout=300)
            body = distinct(photos[i % len(photos)], f"vipare bench upload {n}")
            start = time.perf_counter()
            response = local.client.post("/v1/reports", files={"photo": (f"IMG_{n:04d}.jpg", body, "image/jpeg")})
            elapsed = time.perf_counter() - start
            if response.status_code != 201:
                raise RuntimeError(f"upload {n}: {response.status_code} {response.text[:300]}")
            # untimed: waits until the photo is stored blurred, so that no blurring overlaps the next block
            read = local.client.get(f"/v1/reports/{response.json()['id']}/image")
            if read.status_code != 200:
                raise RuntimeError(f"photo {n}: {read.status_code} {read.text[:300]}")
            return elapsed

        try:
            uploads[1].run(upload, range(WARM_UP_UPLOADS), 1)
            uploads[1] = Timings()
            for concurrency in concurrencies:
                before = _analysis_totals(server.url)
                for block in range(0, requests, concurrency):  # alternate: same background load for both
                    indices = range(block, min(block + concurrency, requests))
                    library[concurrency].run(analyze, indices, concurrency)
                    anonymised[concurrency].run(analyze_anonymised, indices, concurrency)
                    uploads[concurrency].run(upload, indices, concurrency)
                after = _analysis_totals(server.url)
                in_server[concurrency] = (after[0] - before[0]) / max(1.0, after[1] - before[1]) * 1000.0
        finally:
            server.stop()

    import onnxruntime

    print(f"machine: {cpu_name()}, {cores} logical cores; {platform.python_implementation()} "
          f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}; "
          f"load average {load_before} before, {_load()} after")
    print(f"server: vipare serve on 127.0.0.1, 1 worker, VIPARE_INTRA_OP_THREADS={threads}, "
          f"VIPARE_ANALYSIS_SLOTS={slots}; SQLite (WAL, synchronous=FULL) and photo store in {tempfile.gettempdir()}")
    print(f"photos: {len(paths)} JPEGs 4032x3024, {min(sizes):.1f}-{max(sizes):.1f} MB, EXIF GPS + orientation; "
          f"{requests} timed requests per concurrency, each upload a distinct file")
    for concurrency in concurrencies:
        who = "1 client " if concurrency == 1 else f"{concurrency} clients"
        lib, anon, up = (_summary(t[concurrency]) for t in (library, anonymised, uploads))
        print(f"  {who}  library Pipeline.analyze  {lib.text}")
        print(f"  {who}  library, anonymised       {anon.text}")
        print(f"  {who}  upload POST /v1/reports   {up.text}"
              f"  (decode+detect in the server: {in_server[concurrency]:.0f} ms mean)")
        alone = _summary(library[1]).p50
        versus_alone = "" if concurrency == 1 else f"; / p50 library one photo at a time = {up.p50 / alone:.2f}"
        print(f"  {who}  p50 upload / p50 library = {up.p50 / lib.p50:.2f}{versus_alone}")
        print(f"  {who}  upload throughput = {up.rate / lib.rate:.0%} of the library's, "
              f"{up.rate / anon.rate:.0%} of the library's anonymised")


if __name__ == "__main__":
    main()
