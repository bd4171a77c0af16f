"""The Ray engine gives the same reports, detections and incidents as the local engine on the same frames.

Both run ``vipare batch`` on 24 frames of the shared validation photos into fresh stores: the local
engine with one worker, Ray Data with two actors on a local Ray instance (the driver then stores the
photos itself). Skipped without Ray (the ``[ray]`` extra) or without the photos.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.batch.store_view import store_view
from tests.batch.street_frames import street_frames
from tests.database import database_env
from vipare.settings import DEFAULT_MODEL_PATH

FRAMES = 24

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.real_model,
    pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(), reason=f"the shipped model {DEFAULT_MODEL_PATH} is missing"),
]


def _run(frames: Path, data_dir: Path, *engine: str) -> None:
    command = [
        sys.executable, "-m", "vipare.cli", "batch", str(frames), "--cameras", str(frames.parent / "cameras.csv"),
        "--data-dir", str(data_dir), "--threads", "1", "--no-progress", *engine,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **database_env(data_dir)})
    assert done.returncode == 0, done.stderr
    assert f"written     {FRAMES}" in done.stderr, done.stderr


def test_ray_and_local_engines_agree(tmp_path: Path) -> None:
    pytest.importorskip("ray.data", reason="the Ray engine needs the [ray] extra")
    frames = street_frames(tmp_path / "batch", FRAMES)

    _run(frames, tmp_path / "local", "--engine", "local", "--workers", "1")
    _run(frames, tmp_path / "ray", "--engine", "ray", "--workers", "2", "--ray-batch-size", "4")

    local, ray = store_view(tmp_path / "local"), store_view(tmp_path / "ray")
    assert any(detections for *_, detections in local["reports"].values())
    assert ray["reports"] == local["reports"]
    assert ray["incidents"] == local["incidents"]
    assert ray["photos"] == local["photos"] and ray["photo_files"] == FRAMES
