"""Helpers for the service tests: photos at chosen places, a running app with keys (see conftest.py)."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator
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
from serving.service import Service
from tests.imagegen import make_photo
from vipare.detection import Detector
from vipare.geotag import EARTH_RADIUS_M

ROOT = Path(__file__).resolve().parents[2]
PILE = ROOT / "datasets" / "samples" / "street-waste-cn-000031.jpg"


@functools.cache
def _pile_array() -> np.ndarray:
    with Image.open(PILE) as img:
        return np.asarray(img.convert("RGB")).copy()


def deposit_photo(seed: int, *, fmt: str = "JPEG", **exif: Any) -> bytes:
    """The sample pile of waste as a new photo: ``seed`` changes a few pixels; ``exif`` as ``make_photo``."""
    array = _pile_array().copy()
    rng = np.random.default_rng(seed)
    for _ in range(4):
        y, x = rng.integers(0, array.shape[0]), rng.integers(0, array.shape[1])
        array[y, x] = rng.integers(0, 256, 3, dtype=np.uint8)
    return make_photo(fmt, array=array, quality=92, **exif)


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
    """Settings for a test app: data under ``data_dir``, one thread, quiet logs."""
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

    def headers(self, who: str) -> dict[str, str]:
        """Auth header of one of :attr:`keys` ('agent', 'agent2', 'camera', 'manager', 'admin')."""
        return bearer(self.keys[who])

    def upload(self, photo: bytes, who: str = "agent", filename: str = "photo.jpg", **fields: Any) -> Any:
        """POST a photo with form fields; returns the response."""
        data = {k: str(v) for k, v in fields.items() if v is not None}
        return self.client.post(
            "/v1/reports", files={"photo": (filename, photo, "application/octet-stream")}, data=data,
            headers=self.headers(who),
        )

    def counts(self) -> tuple[int, int, int]:
        """(report rows, incident rows, photo files)."""
        with self.service.sessions() as session:
            reports = session.scalar(select(func.count()).select_from(Report)) or 0
            incidents = session.scalar(select(func.count()).select_from(Incident)) or 0
        files = sum(1 for _ in self.service.photos.files())
        return reports, incidents, files


def add_keys(service: Service) -> dict[str, str]:
    """One key per role, plus 'agent2', straight into the database."""
    keys: dict[str, str] = {}
    with write_session(service.sessions) as session:
        for who, role in (("agent", Role.AGENT), ("agent2", Role.AGENT), ("camera", Role.CAMERA),
                          ("manager", Role.MANAGER), ("admin", Role.ADMIN)):
            _, keys[who] = create_key(session, role, f"test-{who}")
    return keys


@contextmanager
def server_at(data_dir: Path, detector: Detector, **overrides: Any) -> Iterator[Server]:
    """A running app on its own data folder, with keys."""
    app = create_app(service_settings(data_dir, **overrides), detector=detector)
    with running(app) as client:
        service: Service = app.state.service
        yield Server(client=client, app=app, data_dir=data_dir, keys=add_keys(service))


