"""What blurring faces and plates costs and does: upload time, the privacy set, deposit verdicts.

Three measurements, each optional:

* cost (``--photos N``): 12 MP phone-like JPEGs (``training.phone_photos``), half made from the
  privacy set's photos (people, cars: regions to blur) and half from street-waste-cn val. Two
  ``vipare serve`` on 127.0.0.1 side by side, one with ``VIPARE_BLUR_PHOTOS=1``, one with ``0``;
  uploads alternate between them one at a time (same background load), each a distinct file, and
  after each one its photo is read back (``GET /v1/reports/{id}/image``, untimed), which waits until
  it is stored blurred. Prints the p50/p95 of the answer and of "stored" (until that read returned),
  how much each grows with blurring, each server's CPU time per upload (``/proc``), then the library's
  parts per photo: decode + detect, finding the regions, and choosing the plate bands' cells (the
  verdict checked on the blurred reduced copy), blurring and encoding again, as the service does
  (only photos with regions).
* the privacy set (``--privacy-set``): ``tests/data/privacy_boxes.json``, with the measure of
  ``tests/serving/test_privacy_set.py`` (no face found by YuNet at threshold 0.5 on the blurred
  photo at twice its size, variance of the Laplacian under 0.2 of the original's), in the library.
* verdicts (``--verdicts N``): the first N photos of street-waste-cn val (0: all), analysed by the
  shipped model as sent and as stored after blurring (as the service blurs them: coarse, or the
  plate bands' fine cells when the coarse blur changed the verdict on the reduced copy); prints how
  many image-level verdicts are the same, and how many needed the fine cells.

    python -m benchmarks.bench_privacy --photos 8 --requests 16 --privacy-set --verdicts 0
"""

from __future__ import annotations

import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import click
import cv2
import httpx2
import numpy as np
from PIL import Image

from benchmarks.bench_upload import distinct
from benchmarks.cli import command
from serving.launch import cli_key, start_server
from serving.photos.anonymise import anonymise, anonymised_copy, fine_plates_needed
from training.phone_photos import make_phone_photos
from vipare import Pipeline, Settings
from vipare.machine import cpu_name
from vipare.privacy import box_iou, region_sharpness

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
BOXES = ROOT / "tests" / "data" / "privacy_boxes.json"
VAL = DATASETS / "street-waste-cn" / "images" / "val"


def _p(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[max(0, min(len(ordered) - 1, round(0.95 * len(ordered)) - 1))]
    return f"p50 {statistics.median(ordered) * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms"


def _cost(pipeline: Pipeline, count: int, requests: int, threads: int, photo_dir: Path) -> None:
    sets = json.loads(BOXES.read_text())["photos"]
    people = [DATASETS / case["photo"] for case in sets[: max(1, count // 2)]]
    paths = make_phone_photos(photo_dir / "people", len(people), sources=people)
    paths += make_phone_photos(photo_dir / "plain", max(1, count - len(people)))
    photos = [p.read_bytes() for p in paths]
    parts: dict[str, list[float]] = {
        "decode + detect": [], "find regions": [], "check + blur + encode (with regions)": []
    }
    with_regions = 0
    for data in photos:
        start = time.perf_counter()
        image = pipeline.decode(data)
        result = pipeline.analyze(image)
        found = time.perf_counter()
        regions = pipeline.private_regions(image, result.detections)
        blurred = time.perf_counter()
        anonymised_copy(pipeline, data, image, regions, result.verdict.dumping)
        end = time.perf_counter()
        parts["decode + detect"].append(found - start)
        parts["find regions"].append(blurred - found)
        if regions:
            with_regions += 1
            parts["check + blur + encode (with regions)"].append(end - blurred)
    timings: dict[str, list[float]] = {"privacy": [], "no-privacy": []}
    stored: dict[str, list[float]] = {"privacy": [], "no-privacy": []}
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vipare-bench-privacy-") as tmp:
        servers, clients = {}, {}
        try:
            for name, flag in (("privacy", "1"), ("no-privacy", "0")):
                data_dir = Path(tmp) / name
                key = cli_key(data_dir, "agent", "bench")
                env = {"VIPARE_INTRA_OP_THREADS": str(threads), "VIPARE_BLUR_PHOTOS": flag}
                servers[name] = start_server(data_dir, env)
                clients[name] = httpx2.Client(
                    base_url=servers[name].url, headers={"Authorization": f"Bearer {key}"}, timeout=300
                )
            for n in range(requests + 2):
                if n == 2:  # the first two warm the servers
                    cpu = {name: _cpu_seconds(server.process.pid) for name, server in servers.items()}
                for name, client in clients.items():
                    body = distinct(photos[n % len(photos)], f"vipare bench privacy {name} {n}")
                    start = time.perf_counter()
                    response = client.post("/v1/reports", files={"photo": (f"IMG_{n:04d}.jpg", body, "image/jpeg")})
                    elapsed = time.perf_counter() - start
                    if response.status_code != 201:
                        raise RuntimeError(f"{name} upload {n}: {response.status_code} {response.text[:300]}")
                    # untimed: waits until the photo is stored blurred, so no blurring runs during the next upload
                    read = client.get(f"/v1/reports/{response.json()['id']}/image")
                    if read.status_code != 200:
                        raise RuntimeError(f"{name} photo {n}: {read.status_code} {read.text[:300]}")
                    if n >= 2:
                        timings[name].append(elapsed)
                        stored[name].append(time.perf_counter() - start)
            cpu = {name: _cpu_seconds(server.process.pid) - cpu[name] for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    print(
        f"cost: {len(photos)} JPEGs 4032x3024 ({with_regions} with regions to blur), {requests} uploads "
        f"to each server, one at a time, VIPARE_INTRA_OP_THREADS={threads}"
    )
    for name, seconds in timings.items():
        print(f"  upload --{name:10s} {_p(seconds)}   answer to the agent")
    for name, seconds in stored.items():
        print(f"  stored --{name:10s} {_p(seconds)}   until GET /image returned the stored (blurred) photo")
    for name, used in cpu.items():
        print(f"  server CPU --{name:10s} {used / requests * 1000:6.0f} ms per upload (user + system, /proc)")
    growth = statistics.median(timings["privacy"]) / statistics.median(timings["no-privacy"]) - 1
    print(f"  p50 growth with blurring: {growth * 100:+.0f} % (answer), "
          f"{statistics.median(stored['privacy']) / statistics.median(stored['no-privacy']) * 100 - 100:+.0f} % "
          f"(stored), {cpu['privacy'] / cpu['no-privacy'] * 100 - 100:+.0f} % (server CPU)")
    for name, seconds in parts.items():
        if seconds:
            print(f"  library {name:30s} {_p(seconds)}  ({len(seconds)} photos)")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _grey(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L"))




def _privacy_set(pipeline: Pipeline) -> None:
    faces = cv2.FaceDetectorYN.create(str(pipeline.settings.face_model_path), "", (640, 640), 0.5)
    passed = total = 0
    for case in json.loads(BOXES.read_text())["photos"]:
        data = (DATASETS / case["photo"]).read_bytes()
        image = pipeline.decode(data)
        result = pipeline.analyze(image)
        regions = pipeline.private_regions(image, result.detections)
        stored = anonymise(  # as the service stores it
            data, regions, max_pixels=10**9, max_non_jpeg_pixels=10**9,
            fine_plates=fine_plates_needed(pipeline, image, regions, result.verdict.dumping),
        )
        before, after = _grey(data), _grey(stored)
        big = cv2.resize(cv2.cvtColor(after, cv2.COLOR_GRAY2BGR), (after.shape[1] * 2, after.shape[0] * 2))
        faces.setInputSize((big.shape[1], big.shape[0]))
        rows = faces.detect(big)[1]
        found = [] if rows is None else [[r[0] / 2, r[1] / 2, (r[0] + r[2]) / 2, (r[1] + r[3]) / 2] for r in rows]
        for box, is_face in [(b, True) for b in case["faces"]] + [(b, False) for b in case["plates"]]:
            total += 1
            ratio = region_sharpness(after, box) / max(1e-9, region_sharpness(before, box))
            hidden = not is_face or all(box_iou(box, face) < 0.3 for face in found)
            if ratio < 0.2 and hidden:
                passed += 1
            else:
                where = f"{case['photo']} {[round(v) for v in box]}"
                print(f"  readable: {where} sharpness {ratio:.2f} face found {not hidden}")
    print(f"privacy set: {passed}/{total} boxes unreadable ({passed / total:.1%})")


def _verdicts(pipeline: Pipeline, count: int) -> None:
    paths = sorted(VAL.glob("*.jpg"))
    paths = paths[:count] if count else paths
    same = blurred = fine = 0
    for path in paths:
        data = path.read_bytes()
        image = pipeline.decode(data)
        before = pipeline.analyze(image)
        regions = pipeline.private_regions(image, before.detections)
        if not regions:
            same += 1
            continue
        blurred += 1
        fine_plates = fine_plates_needed(pipeline, image, regions, before.verdict.dumping)
        stored = anonymise(
            data,
            regions,
            max_pixels=pipeline.settings.max_image_pixels,
            max_non_jpeg_pixels=pipeline.settings.max_non_jpeg_pixels,
            fine_plates=fine_plates,
        )
        fine += fine_plates
        after = pipeline.analyze(stored)
        if after.verdict.dumping == before.verdict.dumping:
            same += 1
        else:
            print(f"  verdict changed: {path.name} {before.verdict.dumping} -> {after.verdict.dumping}")
    print(
        f"verdicts: {same}/{len(paths)} street-waste-cn val photos keep their verdict ({blurred} had regions blurred; "
        f"{fine} kept it only with the plate bands' fine cells)"
    )


@command(__doc__)
@click.option(
    "--photos",
    "count",
    type=click.IntRange(0),
    default=8,
    show_default=True,
    help="12 MP photos for the cost (0: skip it).",
)
@click.option("--requests", type=click.IntRange(1), default=16, show_default=True, help="Uploads per server.")
@click.option("--threads", type=click.IntRange(0), default=1, show_default=True, help="onnxruntime threads.")
@click.option("--privacy-set", is_flag=True, help="Measure the privacy set.")
@click.option("--verdicts", type=click.IntRange(0), default=None, help="street-waste-cn val photos (0: all).")
@click.option(
    "--photo-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(tempfile.gettempdir()) / "vipare-privacy-photos",
    show_default=True,
)
def main(count: int, requests: int, threads: int, privacy_set: bool, verdicts: int | None, photo_dir: Path) -> None:
    pipeline = Pipeline(settings=Settings(intra_op_threads=threads))
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical cores; load average {os.getloadavg()[0]:.2f} at the start")
    if privacy_set:
        _privacy_set(pipeline)
    if verdicts is not None:
        _verdicts(pipeline, verdicts)
    if count:
        _cost(pipeline, count, requests, threads, photo_dir)


if __name__ == "__main__":
    main()
