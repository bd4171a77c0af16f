"""The model in service: one warm-up before /readyz says ready, and /v1/model tells what the loaded model applies.

Each test builds its own tiny stand-in model (:func:`tests.onnxgen.make_detector_onnx`), so the sizes
and thresholds it checks are its own.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.imagegen import make_photo
from tests.onnxgen import head_output, make_detector_onnx
from tests.serving.helpers import add_keys, bearer, running, service_settings
from vipare.detection import Detector
from vipare.errors import ModelError

NAMES = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in with a 96 wide, 64 high input (metadata ``imgsz`` [64, 96]) that finds nothing."""
    path = tmp_path_factory.mktemp("model") / "wide.onnx"
    make_detector_onnx(path, names=NAMES, raw=head_output(3, []), imgsz=(64, 96))
    return path


def test_model_reports_the_model_s_calibrated_thresholds_when_none_is_set(tmp_path: Path) -> None:
    path = tmp_path / "calibrated.onnx"
    make_detector_onnx(path, names=NAMES, raw=head_output(3, []),
                       metadata={"vipare_verdict_thresholds": "{'dumped_waste': 0.3, 'overflowing_bin': 0.7}"})
    detector = Detector(path, conf_threshold=0.25, iou_threshold=0.45, max_detections=7, intra_op_threads=1)
    with running(create_app(service_settings(tmp_path), detector=detector)) as client:
        model = client.get("/v1/model").json()
    assert model["verdict_threshold"] is None
    assert model["verdict_thresholds"] == {"dumped_waste": 0.3, "overflowing_bin": 0.7}


def test_model_reports_the_loaded_detectors_thresholds_and_identity(tmp_path: Path, wide_model: Path) -> None:
    detector = Detector(wide_model, conf_threshold=0.6, iou_threshold=0.3, max_detections=7, intra_op_threads=1,
                        merge_iou=0.8)
    settings = service_settings(tmp_path, verdict_threshold=0.5)  # conf 0.25, iou 0.45, 100 detections, merge 0.7
    with running(create_app(settings, detector=detector)) as client:
        model = client.get("/v1/model").json()
    assert (model["conf_threshold"], model["iou_threshold"], model["max_detections"]) == (0.6, 0.3, 7)
    assert model["box_merge_iou"] == 0.8
    assert model["verdict_threshold"] == 0.5
    assert model["verdict_thresholds"] == {"dumped_waste": 0.5, "overflowing_bin": 0.5}
    assert model["model"]["sha256"] == detector.info.sha256 and model["model"]["name"] == "wide"
    assert model["model"]["input_size"] == [64, 96]  # [height, width], as the model file's imgsz
    assert model["ready"] is True


def test_the_model_warms_up_once_and_readyz_waits_for_it(
    tmp_path: Path, wide_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded by the service itself, the model runs one inference before /readyz answers 200: the service's."""
    release = threading.Event()
    runs: list[tuple[int, ...]] = []
    real_run = ort.InferenceSession.run

    def counted(session: ort.InferenceSession, *args: Any, **kwargs: Any) -> Any:
        runs.append(next(iter(args[1].values())).shape)
        release.wait(10)
        return real_run(session, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", counted)
    with TestClient(create_app(service_settings(tmp_path, model_path=wide_model))) as client:
        assert client.get("/readyz").status_code == 503
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # the model's, then the privacy detectors': persons and vehicles, faces (at the same size)
        assert runs == [(1, 3, 64, 96), (1, 3, 416, 416), (1, 3, 416, 416)]


def test_a_failed_warm_up_keeps_the_service_unready_and_says_why(
    tmp_path: Path, wide_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(detector: Detector) -> None:
        raise ModelError("model output has shape (1, 9, 8); a YOLO detection head for 3 classes gives 1 x 7 x anchors")

    monkeypatch.setattr(Detector, "warm_up", broken)
    with TestClient(create_app(service_settings(tmp_path, model_path=wide_model))) as client:
        deadline = time.monotonic() + 10
        while (ready := client.get("/readyz").json())["status"] == "starting":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert ready["status"] == "failed" and "1 x 7 x anchors" in ready["detail"]
        assert client.get("/readyz").status_code == 503
        agent = bearer(add_keys(client.app.state.service)["agent"])  # type: ignore[attr-defined]
        upload = client.post("/v1/reports", files={"photo": ("a.jpg", make_photo(), "image/jpeg")}, headers=agent)
        assert upload.status_code == 503 and upload.json()["code"] == "model_unavailable"
