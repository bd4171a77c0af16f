"""Helpers for the service tests: photos at chosen places, a running app with keys (see conftest.py)."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from serving.app import create_app
from serving.auth import Role, create_key
from serving.config import ServiceSettings
from serving.db import write_session
from serving.models import Incident, Report
from serving.photos.store import PhotoStore
from serving.service import Service
from tests.imagegen import make_photo, pattern_array
from tests.onnxgen import COLOUR_SCORE, MAGENTA, Colour
from vipare.detection import Detector
from vipare.geotag import EARTH_RADIUS_M

ROOT = Path(__file__).resolve().parents[2]
PILE = ROOT / "datasets" / "samples" / "street-waste-cn-000031.jpg"


TEST_HOST = "testserver"
"""The ``Host`` TestClient sends: the test apps trust it (see :func:`service_settings`)."""

PHOTO_SIZE = (640, 480)
"""``(width, height)`` of a keyed photo: letterboxed by the stand-in model, each grid cell is one of its cells."""
CELL = 80
"""Side of a grid cell of a keyed photo, in photo pixels (8 columns x 6 rows)."""
DEPOSIT_CELL = (3, 2)
"""``(column, row)`` of the magenta square of a deposit photo."""
DEPOSIT_BOX = (240.0, 160.0, 320.0, 240.0)
"""Where the stand-in model finds the deposit of a deposit photo: xyxy in photo pixels."""
DEPOSIT_SCORE = COLOUR_SCORE


def cell_box(column: int, row: int) -> tuple[float, float, float, float]:
    """The xyxy box, in photo pixels, of grid cell ``(column, row)`` of a keyed photo."""
    return (float(CELL * column), float(CELL * row), float(CELL * (column + 1)), float(CELL * (row + 1)))


def keyed_photo(seed: int, squares: Mapping[tuple[int, int], Colour], *, fmt: str = "JPEG", **exif: Any) -> bytes:
    """A 640 x 480 photo with squares of the stand-in model's key colours on a gradient.

    Each ``(column, row): colour`` fills that 80-pixel grid cell; the stand-in model finds the
    colour's class there (magenta: ``dumped_waste``, cyan: ``bin``) at score :data:`DEPOSIT_SCORE`,
    box :func:`cell_box`, and nothing on the gradient. ``seed`` changes a few pixels, so each photo
    has its own sha256; ``exif`` as ``make_photo``.
    """
    array = pattern_array(PHOTO_SIZE)
    for (column, row), colour in squares.items():
        array[CELL * row : CELL * (row + 1), CELL * column : CELL * (column + 1)] = colour
    rng = np.random.default_rng(seed)
    for _ in range(4):  # too few to move a cell's mean colour: the answer stays the same
        y, x = rng.integers(0, array.shape[0]), rng.integers(0, array.shape[1])
        array[y, x] = rng.integers(0, 256, 3, dtype=np.uint8)
    return make_photo(fmt, array=array, quality=92, **exif)


def deposit_photo(seed: int, *, fmt: str = "JPEG", **exif: Any) -> bytes:
    """A photo of one deposit for the stand-in model: a magenta square at :data:`DEPOSIT_BOX`.

    See :func:`keyed_photo`; ``seed`` makes each photo its own, ``exif`` as ``make_photo``.
    """
    return keyed_photo(seed, {DEPOSIT_CELL: MAGENTA}, fmt=fmt, **exif)


def plain_photo(seed: int = 0, **exif: Any) -> bytes:
    """A photo with nothing to detect (a colour gradient), as JPEG."""
    array = np.zeros((240, 320, 3), dtype=np.uint8)
    array[..., 0] = np.linspace(0, 255, 320, dtype=np.uint8)[np.newaxis, :]
    array[..., 1] = seed % 256
    return make_photo("JPEG", array=array, **exif)


def moved(lat: float, lon: float, north_m: float = 0.0, east_m: float = 0.0) -> tuple[float, float]:
    """A point ``north_m`` and ``east_m`` metres from (lat, lon)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def bearer(key: str) -> dict[str, str]:
    """The header that carries an API key."""
    return {"Authorization": f"Bearer {key}"}


def service_settings(data_dir: Path, **overrides: Any) -> ServiceSettings:
    """Settings for a test app: data under ``data_dir``, one thread, quiet logs, TestClient's host name trusted."""
    overrides.setdefault("trusted_hosts", [TEST_HOST])
    return ServiceSettings(data_dir=data_dir, intra_op_threads=1, analysis_slots=2, log_level="WARNING", **overrides)


@contextmanager
def running(app: FastAPI) -> Iterator[TestClient]:
    """A client for ``app`` with its lifespan run, once the model is warm."""
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.01)
        yield client


@dataclass
class Server:
    """A running app, its data folder and one key per role (plus a second agent)."""

    client: TestClient
    app: FastAPI
    data_dir: Path
    keys: dict[str, str]

    @property
    def service(self) -> Service:
        service: Service = self.app.state.service
        return service

    @property
    def folder(self) -> PhotoStore:
        """The service's photo store, a folder in these tests, for its files' paths."""
        photos = self.service.photos
        assert isinstance(photos, PhotoStore), f"the photos are in {photos.location}, not in a folder"
        return photos

    def headers(self, who: str) -> dict[str, str]:
        """Auth header of one of :attr:`keys` ('agent', 'agent2', 'camera', 'manager', 'admin')."""
        return bearer(self.keys[who])

    def upload(self, photo: bytes, who: str = "agent", filename: str = "photo.jpg", **fields: Any) -> Any:
        """POST a photo with form fields; returns the response."""
        data = {k: str(v) for k, v in fields.items() if v is not None}
        response = self.client.post(
            "/v1/reports", files={"photo": (filename, photo, "application/octet-stream")}, data=data,
            headers=self.headers(who),
        )
        self.settle()
        return response

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the photos answered for are stored blurred (:mod:`serving.photos.pending`)."""
        deadline = time.monotonic() + timeout
        while len(self.service.in_flight):
            if time.monotonic() > deadline:
                raise TimeoutError(f"photos still being blurred after {timeout} s")
            time.sleep(0.01)

    def counts(self) -> tuple[int, int, int]:
        """(report rows, incident rows, photo files, held ones included)."""
        self.settle()
        with self.service.sessions() as session:
            reports = session.scalar(select(func.count()).select_from(Report)) or 0
            incidents = session.scalar(select(func.count()).select_from(Incident)) or 0
        files = sum(1 for _ in self.folder.files())
        return reports, incidents, files


def add_keys(service: Service) -> dict[str, str]:
    """One key per role (named as the role), plus 'agent2', straight into the database."""
    keys: dict[str, str] = {}
    with write_session(service.sessions) as session:
        for who, role in (("agent", Role.AGENT), ("agent2", Role.AGENT), ("camera", Role.CAMERA),
                          ("manager", Role.MANAGER), ("admin", Role.ADMIN), ("privacy_officer", Role.PRIVACY_OFFICER)):
            _, keys[who] = create_key(session, role, f"test-{who}")
    return keys


@contextmanager
def server_at(data_dir: Path, detector: Detector, **overrides: Any) -> Iterator[Server]:
    """A running app on its own data folder, with keys."""
    app = create_app(service_settings(data_dir, **overrides), detector=detector)
    with running(app) as client:
        service: Service = app.state.service
        yield Server(client=client, app=app, data_dir=data_dir, keys=add_keys(service))




PHONE_SIZE = (4032, 3024)
"""A 12 MP phone photo's size (4:3)."""


def phone_photo(seed: int, *, grain: float = 9.0, **exif: Any) -> bytes:
    """A 12 MP phone JPEG (4032 x 3024, quality 92, a few MB) of one deposit, with ``exif`` as ``make_photo``.

    :func:`deposit_photo`'s picture scaled up, with sensor-like grain (``grain``: standard deviation,
    0-255 levels) so that it weighs what a phone's photo weighs; the stand-in model finds the deposit
    at :data:`DEPOSIT_BOX` scaled by ``PHONE_SIZE[0] / PHOTO_SIZE[0]``.
    """
    small = Image.open(io.BytesIO(deposit_photo(seed))).convert("RGB")
    big = np.asarray(small.resize(PHONE_SIZE, Image.Resampling.BICUBIC), dtype=np.float32)
    rng = np.random.default_rng(seed)
    noisy = big + rng.normal(0.0, grain, big.shape).astype(np.float32)
    array = np.clip(noisy, 0, 255).astype(np.uint8)
    return make_photo("JPEG", array=array, quality=92, **exif)
