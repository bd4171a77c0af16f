"""A street-camera batch made from the shared validation photos: frames, ``frames.csv`` and ``cameras.csv``.

Three fixed cameras and one truck share the frames in turn. The fixed cameras' frames carry no
position (the registry places them); the truck's are given a ``lat,lon`` in ``frames.csv``, 12 m
further along its route at each of its frames. Frames are 50 minutes apart, so 200 frames span about
a week and the incident window matters. Every other frame has its time in ``frames.csv``; the others
only in their file name (``<camera>/<camera>_YYYYMMDD_HHMMSS_<photo>.jpg``).

Used by ``bench_batch`` and ``bench_writer``; OUT gets ``frames/`` and ``cameras.csv``::

    python -m benchmarks.camera_frames OUT --count 200
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from PIL import Image

from benchmarks.cli import command

__all__ = ["CAMERAS", "VAL_DIR", "benchmark_frames", "make_camera_frames", "validation_photos"]

ROOT = Path(__file__).resolve().parents[1]
VAL_DIR = ROOT.parent / "shared" / "datasets" / "street-waste-cn" / "images" / "val"

CAMERAS: tuple[tuple[str, float | None, float | None], ...] = (
    ("cam-a", 49.1193, 6.1757),
    ("cam-b", 49.1201, 6.1802),
    ("cam-c", 49.1150, 6.1700),
    ("truck-1", None, None),
)
"""(id, lat, lon): three fixed cameras and a truck (a mobile camera, no position of its own)."""

START = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
STEP = timedelta(minutes=50)
TRUCK_START = (49.1100, 6.1600)
TRUCK_STEP_M = 12.0


def validation_photos(count: int) -> list[Path]:
    """The first ``count`` validation photos by name; fewer when the folder has fewer (none when absent)."""
    if not VAL_DIR.is_dir():
        return []
    return sorted(VAL_DIR.glob("*.jpg"))[:count]


def _truck_position(step: int) -> tuple[float, float]:
    lat0, lon0 = TRUCK_START
    east = step * TRUCK_STEP_M
    return lat0, lon0 + math.degrees(east / (6_371_008.8 * math.cos(math.radians(lat0))))


def make_camera_frames(out: Path, count: int = 200, *, size: int = 320, photos: list[Path] | None = None) -> Path:
    """Write a batch under ``out``: ``frames/<camera>/*.jpg``, ``frames/frames.csv``, ``cameras.csv``.

    Args:
        out: the folder (created); an existing batch there is reused when it has the same frames.
        count: frames wanted (at most the validation photos there are).
        size: longest side of the frames, pixels (the photos are shrunk, EXIF dropped).
        photos: the photos to use; default the first ``count`` validation photos.

    Returns:
        The frames folder (the SOURCE of ``vipare batch``, with its ``frames.csv``).
    """
    photos = validation_photos(count) if photos is None else photos
    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, photo in enumerate(photos):
        camera, _, _ = CAMERAS[i % len(CAMERAS)]
        taken = START + i * STEP
        name = f"{camera}/{camera}_{taken:%Y%m%d_%H%M%S}_{photo.stem}.jpg"
        target = frames / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(photo) as img:
                small = img.convert("RGB")
                small.thumbnail((size, size))
                small.save(target, "JPEG", quality=85)
        lat = lon = ""
        if camera.startswith("truck"):
            truck_lat, truck_lon = _truck_position(i // len(CAMERAS))
            lat, lon = f"{truck_lat:.7f}", f"{truck_lon:.7f}"
        captured = taken.isoformat() if i % 2 == 0 else ""
        rows.append((name, camera, captured, lat, lon))
    with open(frames / "frames.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file", "camera_id", "captured_at", "lat", "lon"])
        writer.writerows(rows)
    with open(out / "cameras.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "lat", "lon", "accuracy_m", "description"])
        for camera, lat_, lon_ in CAMERAS:
            writer.writerow([camera, lat_ or "", lon_ or "", 3 if lat_ else "", f"test {camera}"])
    return frames


def benchmark_frames(count: int, work: Path, *, size: int) -> Path:
    """A benchmark's batch of ``count`` frames under ``work/batch``; exits when the shared photos are too few."""
    photos = validation_photos(count)
    if len(photos) < count:
        raise SystemExit(f"needs {count} validation photos under ../shared/datasets (found {len(photos)})")
    return make_camera_frames(work / "batch", count, size=size, photos=photos)


@command(__doc__)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", type=click.IntRange(1), default=200, show_default=True,
              help="Frames wanted (at most the validation photos there are).")
@click.option("--size", type=click.IntRange(1), default=320, show_default=True,
              help="Longest side of the frames, pixels.")
def main(out: Path, count: int, size: int) -> None:
    frames = make_camera_frames(out, count, size=size)
    print(f"{len(list(frames.rglob('*.jpg')))} frames in {frames}; cameras in {out / 'cameras.csv'}")


if __name__ == "__main__":
    main()
