"""The whole review loop on a live service with the shipped model, as a city's IT desk drives it.

Upload photos (one the model finds nothing in, sent anyway), review them as a manager (keep a
detection, delete the others, draw a box, a false alarm), ``vipare dataset export``, adapt the model
for one short epoch (``training.adapt``), promote the result over HTTP, and check that the next
upload is analysed by the new model (its sha256 on the report). Needs the ``[train]`` extra and the
shared datasets (the adaptation replays street-waste-cn photos and compares on its val split).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.database import database_env
from tests.serving.helpers import moved, plain_photo
from tests.serving.live import cli_key, live_server
from vipare.settings import DEFAULT_MODEL_PATH

pytest.importorskip("ultralytics", reason="the adaptation needs the [train] extra")
httpx2 = pytest.importorskip("httpx2")
from training.adapt import AdaptConfig, adapt  # noqa: E402
from training.paths import SHARED_DATASETS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "datasets" / "samples").glob("*.jpg"))
CHECKPOINT = ROOT / "weights" / "vipare-yolo11n.pt"
PLACE = (49.1100, 6.1700)

pytestmark = [
    pytest.mark.train,
    pytest.mark.slow,
    pytest.mark.real_model,
    pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists() or not CHECKPOINT.exists(), reason="shipped weights missing"),
    pytest.mark.skipif(not (SHARED_DATASETS / "street-waste-cn").exists(), reason="../shared datasets not present"),
]


def _photos() -> list[bytes]:
    """The sample photos and their mirror images (other photos of the same kind of street), as JPEG."""
    photos = []
    for path in SAMPLES:
        with Image.open(path) as img:
            for image in (img.convert("RGB"), img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=92)
                photos.append(buffer.getvalue())
    return photos


def _review_body(report: dict[str, Any], index: int) -> dict[str, Any]:
    """Each way a manager reviews: keep the first detection and draw a box, a false alarm, or draw only."""
    width, height = report["image"]["width"], report["image"]["height"]
    drawn = {"label": "dumped_waste", "xyxy": [width * 0.1, height * 0.5, width * 0.4, height * 0.9]}
    deposits = [i for i, d in enumerate(report["detections"]) if d["label"] != "bin"]
    if index == 1:
        return {"deposit": False, "boxes": [], "note": "a plain street"}
    if deposits:  # keep the first deposit detection, delete the others, draw one more
        return {"deposit": True, "boxes": [{"detection": deposits[0]}, drawn]}
    return {"deposit": True, "boxes": [drawn]}


def test_upload_review_export_adapt_promote(tmp_path: Path) -> None:
    data = tmp_path / "data"
    keys = {role: cli_key(data, role, f"loop-{role}") for role in ("agent", "manager", "admin")}
    auth = {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}
    with live_server(data, {"VIPARE_MODEL_CHECK_S": "1"}) as server, \
            httpx2.Client(base_url=server.url, timeout=120) as client:
        old_sha = client.get("/v1/model").json()["model"]["sha256"]

        # An agent's photos, each at its own place, sent as deposits whatever the model says.
        reports = []
        for i, photo in enumerate([*_photos(), plain_photo(7)]):
            lat, lon = moved(*PLACE, north_m=200.0 * i)
            sent = client.post("/v1/reports", headers=auth["agent"],
                               files={"photo": (f"p{i}.jpg", photo, "image/jpeg")},
                               data={"lat": lat, "lon": lon, "accuracy_m": 8, "agent_says_deposit": "true"})
            assert sent.status_code == 201, sent.text
            reports.append(sent.json())
        anyway = reports[-1]
        assert not anyway["verdict"]["dumping"] and anyway["agent_says_deposit"] and anyway["incident"] is not None
        first = client.get("/v1/incidents", headers=auth["manager"]).json()["features"][0]
        assert first["properties"]["to_review"] and first["id"] == anyway["incident"]["id"]

        # A manager reviews every photo.
        for i, report in enumerate(reports):
            review = client.post(f"/v1/reports/{report['id']}/review", headers=auth["manager"],
                                 json=_review_body(report, i))
            assert review.status_code == 201, review.text
        kept = client.get(f"/v1/reports/{reports[0]['id']}", headers=auth["manager"]).json()
        assert kept["detections"] == reports[0]["detections"] and kept["review"]["deposit"] is True

        # The city's dataset, then its model.
        export = tmp_path / "export"
        exported = subprocess.run(
            [sys.executable, "-m", "vipare.cli", "dataset", "export", str(export), "--data-dir", str(data),
             "--val-fraction", "0.4"],
            capture_output=True, text=True, check=False, env={**os.environ, **database_env(data)},
        )
        assert exported.returncode == 0, exported.stderr
        labels = sorted((export / "labels").rglob("*.txt"))
        assert len(labels) == len(reports) and sum(not p.read_text().strip() for p in labels) == 1
        result = adapt(AdaptConfig(reviews=export, output=tmp_path / "adapt", base=CHECKPOINT,
                                   old_model=DEFAULT_MODEL_PATH, replay=4, epochs=1, batch=4, workers=0,
                                   reference_images=8))
        assert result.card_md.exists()
        new_sha = hashlib.sha256(result.onnx_path.read_bytes()).hexdigest()
        assert new_sha != old_sha

        # Promoted over HTTP, the new model analyses the next upload.
        candidate = ("city.onnx", result.onnx_path.read_bytes(), "application/octet-stream")
        promoted = client.post("/v1/models", headers=auth["admin"], files={"model": candidate},
                               data={"comment": "first city model"})
        assert promoted.status_code in (200, 201), promoted.text
        model = client.get("/v1/model").json()
        assert model["model"]["sha256"] == new_sha and model["history"][0]["sha256"] == new_sha
        lat, lon = moved(*PLACE, east_m=500.0)
        rng = np.random.default_rng(0)
        pixels = np.asarray(Image.open(io.BytesIO(_photos()[0]))).copy()
        pixels[0, 0] = rng.integers(0, 256, 3)  # a new photo (its own sha256)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
        after = client.post("/v1/reports", headers=auth["agent"],
                            files={"photo": ("after.jpg", buffer.getvalue(), "image/jpeg")},
                            data={"lat": lat, "lon": lon, "accuracy_m": 8})
        assert after.status_code == 201, after.text
        assert after.json()["model"]["sha256"] == new_sha
