"""Street-camera frames for the slow batch tests, made from the shared validation photos.

Three fixed cameras, placed by ``cameras.csv``, and a truck, placed by its GPS log in ``frames.csv``
(12 m further east at each of its frames), take the frames in turn, 50 minutes apart. Half the frames
have their time in ``frames.csv``, the others only in their name
(``<camera>/<camera>_YYYYMMDD_HHMMSS_<photo>.jpg``). The frames are shrunk to 320 px, EXIF dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from tests.serving.helpers import moved

__all__ = ["VAL_DIR", "street_frames"]

VAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "street-waste-cn" / "images" / "val"

# camera -> its (lat, lon) in cameras.csv; None for the truck, which has no place of its own
CAMERAS: dict[str, tuple[float, float] | None] = {
    "cam-a": (49.1193, 6.1757),
    "cam-b": (49.1201, 6.1802),
    "cam-c": (49.1150, 6.1700),
    "truck-1": None,
}
FIRST = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
EVERY = timedelta(minutes=50)
TRUCK_FROM = (49.1100, 6.1600)
TRUCK_STEP_M = 12.0


def street_frames(out: Path, count: int, *, size: int = 320) -> Path:
    """Write ``count`` frames, ``frames.csv`` and ``cameras.csv`` under ``out``; skip the test without the photos.

    Returns:
        The frames folder (the SOURCE of ``vipare batch``); ``cameras.csv`` is beside it.
    """
    photos = sorted(VAL_DIR.glob("*.jpg"))[:count] if VAL_DIR.is_dir() else []
    if len(photos) < count:
        pytest.skip(f"needs {count} validation photos in {VAL_DIR}")
    root = out / "frames"
    sidecar = ["file,camera_id,captured_at,lat,lon"]
    for i, photo in enumerate(photos):
        camera = list(CAMERAS)[i % len(CAMERAS)]
        taken = FIRST + i * EVERY
        name = f"{camera}/{camera}_{taken:%Y%m%d_%H%M%S}_{photo.stem}.jpg"
        (root / camera).mkdir(parents=True, exist_ok=True)
        with Image.open(photo) as image:
            frame = image.convert("RGB")
        frame.thumbnail((size, size))
        frame.save(root / name, "JPEG", quality=85)
        truck_at = moved(*TRUCK_FROM, east_m=TRUCK_STEP_M * (i // len(CAMERAS)))
        place = "," if CAMERAS[camera] else f"{truck_at[0]:.7f},{truck_at[1]:.7f}"
        sidecar.append(f"{name},{camera},{taken.isoformat() if i % 2 == 0 else ''},{place}")
    (root / "frames.csv").write_text("\n".join(sidecar) + "\n")
    cameras = [f"{camera},{at[0]},{at[1]},3" if at else f"{camera},,," for camera, at in CAMERAS.items()]
    (out / "cameras.csv").write_text("\n".join(["id,lat,lon,accuracy_m", *cameras]) + "\n")
    return root
