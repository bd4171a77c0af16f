"""Fixtures for the HTTP service: one detector per test session, one app per module, real SQLite files.

Apps run with the shipped model (``weights/vipare-yolo11n.onnx``, one onnxruntime thread) through
``TestClient`` with the lifespan, on an SQLite file under ``tmp_path``. Deposit photos are the sample
pile of waste (``datasets/samples/street-waste-cn-000031.jpg``, which the model detects) re-encoded
with EXIF GPS at chosen coordinates and a few pixels changed, so each photo has its own sha256.

Without the ``[serve]`` extra installed, the folder is not collected.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

SERVE_MODULES = ("fastapi", "uvicorn", "multipart", "sqlalchemy", "alembic", "prometheus_client")
MISSING = [name for name in SERVE_MODULES if importlib.util.find_spec(name) is None]

if MISSING:  # pragma: no cover - depends on the installed extras
    collect_ignore_glob = ["test_*.py"]
else:
    from serving.config import ServiceSettings
    from tests.serving.helpers import Server, server_at
    from vipare.detection import Detector
    from vipare.settings import DEFAULT_MODEL_PATH

    @pytest.fixture(scope="session")
    def detector() -> Detector:
        """The shipped model, loaded once for every app of the test session (one onnxruntime thread)."""
        if not DEFAULT_MODEL_PATH.exists():  # pragma: no cover - a checkout without weights
            pytest.skip("the shipped model weights/vipare-yolo11n.onnx is missing")
        return Detector.from_settings(ServiceSettings(intra_op_threads=1))

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory, detector: Detector) -> Iterator[Server]:
        """One app for the module; tests use places of their own so they do not see each other's incidents."""
        with server_at(tmp_path_factory.mktemp("data"), detector) as running_server:
            yield running_server
