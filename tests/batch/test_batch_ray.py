"""The Ray engine gives the same reports, detections and incidents as the local engine on the same frames.

Both run ``vipare batch`` on 24 frames of the shared validation photos into fresh stores: the local
engine with one worker, Ray Data with two actors on a local Ray instance (the driver then stores the
photos itself), and again on a cluster that ``ray start --head`` started as a separate process
(``--ray-address``). Skipped without Ray (the ``[ray]`` extra) or without the photos.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.batch.store_view import store_view
from tests.batch.street_frames import street_frames
from tests.database import database_env
from vipare.settings import DEFAULT_MODEL_PATH

FRAMES = 24
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.real_model,
    pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(), reason=f"the shipped model {DEFAULT_MODEL_PATH} is missing"),
]


LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's single-machine mode: a driver given ``127.0.0.1:PORT`` connects there, instead of replacing the
loopback address with the machine's own (where a head started with ``--node-ip-address 127.0.0.1`` does
not listen)."""


@dataclass(frozen=True)
class RayHead:
    """A running head node: its GCS address and the environment a driver needs to join it."""

    address: str
    env: dict[str, str]


def _run(frames: Path, data_dir: Path, *engine: str, env: dict[str, str] | None = None) -> None:
    command = [
        sys.executable, "-m", "vipare.cli", "batch", str(frames), "--cameras", str(frames.parent / "cameras.csv"),
        "--data-dir", str(data_dir), "--threads", "1", "--no-progress", *engine,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **database_env(data_dir), **(env or {})})
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(head: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """End the cluster: its processes share the head's process group (never ``ray stop``, which ends every
    Ray instance of this user on the machine, other jobs' as well)."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(head.pid, 0)
        except ProcessLookupError:
            break
        head.poll()
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # the GCS and the raylet may outlive a SIGTERM
    head.wait(timeout=10)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[RayHead]:
    """A Ray head node started by ``ray start --head`` as a separate process, stopped when the test ends.

    127.0.0.1, two CPUs, no dashboard; its temporary folder is short, since Ray puts Unix sockets
    there. The workers it starts import this checkout (``PYTHONPATH``), as the batch driver does.
    Ray's token authentication is on, with a token of this test's own (never the user's
    ``~/.ray/auth_token``): head and driver both get it in ``RAY_AUTH_TOKEN``.
    """
    pytest.importorskip("ray.data", reason="the Ray engine needs the [ray] extra")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"no ray command beside {sys.executable}")
    port = _free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="vipare-ray-"))
    log = (tmp_path / "ray-head.log").open("wb")
    joining = {**LOOPBACK_ONLY, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env = {**os.environ, **joining,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--include-dashboard=false", "--temp-dir", str(temp_dir), "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (temp_dir / "ray_current_cluster").exists():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up: {(tmp_path / 'ray-head.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield RayHead(address=f"127.0.0.1:{port}", env=joining)
    finally:
        _stop(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_engine_on_an_existing_cluster_agrees_with_local(tmp_path: Path, ray_head: RayHead) -> None:
    """``--ray-address`` joins a cluster ``ray start --head`` started, and stores what the local engine stores."""
    frames = street_frames(tmp_path / "batch", FRAMES)

    _run(frames, tmp_path / "local", "--engine", "local", "--workers", "1")
    _run(frames, tmp_path / "ray", "--engine", "ray", "--ray-address", ray_head.address,
         "--workers", "2", "--ray-batch-size", "4", env=ray_head.env)

    local, ray = store_view(tmp_path / "local"), store_view(tmp_path / "ray")
    assert any(detections for *_, detections in local["reports"].values())
    assert ray["reports"] == local["reports"]
    assert ray["incidents"] == local["incidents"]
    assert ray["photos"] == local["photos"] and ray["photo_files"] == FRAMES
