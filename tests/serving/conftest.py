"""Fixtures for the HTTP service: one detector per test session, one app per module, real databases.

Apps run through ``TestClient`` with the lifespan, on an SQLite file under ``tmp_path`` (or, with
``VIPARE_TEST_DATABASE_URL`` set, a PostgreSQL database of their own: ``tests/database.py``), with a
stand-in model built once per session (:func:`tests.onnxgen.make_colour_detector_onnx`, one
onnxruntime thread): it sees ``dumped_waste`` (score 0.9) on each magenta 80-pixel square of a
640 x 480 photo and nothing on ordinary pixels, so what a test asserts about detections follows from
the photo it sent, not from the shipped weights. Deposit photos (``helpers.deposit_photo``) carry one
such square, with EXIF GPS at chosen coordinates and a few pixels changed so each has its own sha256.

The few tests about the shipped model itself (``weights/vipare-yolo11n.onnx``) take
``real_detector`` and are marked ``slow`` and ``real_model``; they skip when the weights are missing.

Without the ``[serve]`` extra installed, the folder is not collected.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVE_MODULES = (
    "fastapi", "uvicorn", "multipart", "sqlalchemy", "alembic", "prometheus_client", "scipy", "segno", "gpxpy",
)
MISSING = [name for name in SERVE_MODULES if importlib.util.find_spec(name) is None]

if MISSING:  # pragma: no cover - depends on the installed extras
    collect_ignore_glob = ["test_*.py"]
else:
    from serving.config import ServiceSettings
    from tests.onnxgen import make_colour_detector_onnx
    from tests.serving.helpers import Server, server_at
    from vipare.detection import Detector
    from vipare.settings import DEFAULT_MODEL_PATH

    @pytest.fixture(scope="session")
    def stand_in_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The colour-keyed stand-in model's file, written once per session (for servers in a subprocess)."""
        return make_colour_detector_onnx(tmp_path_factory.mktemp("model") / "colour.onnx")

    @pytest.fixture(scope="session")
    def detector(stand_in_model: Path) -> Detector:
        """The stand-in model, loaded once for every app of the test session (one onnxruntime thread)."""
        return Detector.from_settings(ServiceSettings(model_path=stand_in_model, intra_op_threads=1))

    @pytest.fixture(scope="session")
    def real_detector() -> Detector:
        """The shipped model (one onnxruntime thread), for the tests marked ``real_model``."""
        if not DEFAULT_MODEL_PATH.exists():  # pragma: no cover - a checkout without weights
            pytest.skip(f"the shipped model {DEFAULT_MODEL_PATH} is missing (a checkout without weights)")
        return Detector.from_settings(ServiceSettings(intra_op_threads=1))

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory, detector: Detector) -> Iterator[Server]:
        """One app for the module; tests use places of their own so they do not see each other's incidents."""
        with server_at(tmp_path_factory.mktemp("data"), detector) as running_server:
            yield running_server
