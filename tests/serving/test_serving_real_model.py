"""The service with the shipped model (``weights/vipare-yolo11n.onnx``): the few HTTP tests that need it.

Every other service test runs on the stand-in model (conftest.py), so a retrained model can only
break these: the sample pile of waste (``datasets/samples/street-waste-cn-000031.jpg``) is dumping,
opens an incident and is drawn; an ordinary street photo with nothing on it is not dumping; the
service names the weights it runs. Skipped when the weights are missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tests.serving.helpers import PILE, Server, moved, plain_photo, server_at
from vipare.detection import Detector
from vipare.settings import DEFAULT_MODEL_PATH

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

BREST = (48.3904, -4.4861)


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory, real_detector: Detector) -> Iterator[Server]:
    """One app on the shipped model for the module."""
    with server_at(tmp_path_factory.mktemp("real"), real_detector) as running_server:
        yield running_server


def test_the_sample_pile_is_dumping_and_opens_an_incident(real_server: Server) -> None:
    lat, lon = BREST
    response = real_server.upload(PILE.read_bytes(), filename=PILE.name, lat=lat, lon=lon)
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["verdict"]["dumping"] is True
    assert "dumped_waste" in {d["label"] for d in report["detections"] if d["deposit"]}
    assert report["incident"]["action"] == "opened"
    assert report["model"]["sha256"] == hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()
    annotated = real_server.client.get(report["links"]["annotated_image"], headers=real_server.headers("agent"))
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "image/jpeg"


def test_a_street_with_nothing_dumped_is_not_dumping(real_server: Server) -> None:
    lat, lon = moved(*BREST, north_m=1000.0)
    response = real_server.upload(plain_photo(3), lat=lat, lon=lon)
    assert response.status_code == 201, response.text
    assert response.json()["verdict"]["dumping"] is False and response.json()["incident"] is None


def test_the_service_names_the_shipped_weights(real_server: Server) -> None:
    ready = real_server.client.get("/readyz").json()
    assert ready["model_sha256"] == hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()
    model = real_server.client.get("/v1/model").json()["model"]
    assert model["classes"] == ["dumped_waste", "overflowing_bin", "bin"]
