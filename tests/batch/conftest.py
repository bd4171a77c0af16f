"""Fixtures for batch jobs: a tiny stand-in model, frames on disk, settings on a fresh store.

Fast tests run the job in the test's own process (``workers=0``) with the stand-in model, which
sees a deposit in every frame. The slow ones (``@pytest.mark.slow``) run ``vipare batch`` with the
shipped model on frames made from the shared validation photos.

Without the ``[serve]`` extra installed, the folder is not collected.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SERVE_MODULES = ("fastapi", "sqlalchemy", "alembic")
MISSING = [name for name in SERVE_MODULES if importlib.util.find_spec(name) is None]


if MISSING:  # pragma: no cover - depends on the installed extras
    collect_ignore_glob = ["test_*.py"]
else:
    from serving.config import ServiceSettings
    from tests.onnxgen import make_centre_deposit_onnx

    @pytest.fixture(scope="session")
    def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
        """A stand-in model that finds dumped waste (score 0.8) in the middle of every frame."""
        return make_centre_deposit_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")

    @pytest.fixture
    def settings(tmp_path: Path, tiny_model: Path) -> ServiceSettings:
        """Settings on a fresh store under ``tmp_path``, with the stand-in model and one thread."""
        return ServiceSettings(data_dir=tmp_path / "data", model_path=tiny_model, intra_op_threads=1)
