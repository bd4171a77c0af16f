"""Acceptance: a 200-frame batch killed half-way with SIGKILL and resumed ends with every frame processed
exactly once, and with the same reports and incidents as a clean run on a fresh store.

The frames are the shared validation photos shrunk to 320 px (``street_frames.py``): three
fixed cameras and a truck with its GPS log in ``frames.csv``, 50 minutes apart. The job runs as
``vipare batch`` in its own process group (2 workers x 1 thread, 8 frames per transaction); the test
kills the whole group once a third of the frames are committed.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from serving.config import SQLITE_FILE
from tests.batch.store_view import report_rows, store_view
from tests.batch.street_frames import street_frames
from tests.database import ON_POSTGRES, database_env, store_url
from vipare.settings import DEFAULT_MODEL_PATH

FRAMES = 200

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_model,
    pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(), reason=f"the shipped model {DEFAULT_MODEL_PATH} is missing"),
]


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return street_frames(tmp_path_factory.mktemp("batch"), FRAMES)


def _command(frames: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "vipare.cli", "batch", str(frames), "--cameras", str(frames.parent / "cameras.csv"),
        "--data-dir", str(data_dir), "--workers", "2", "--threads", "1", "--commit-every", "8", "--no-progress",
        "--log-every", "5", *extra,
    ]


def _env(data_dir: Path) -> dict[str, str]:
    """The job's environment: ours, with the database of ``data_dir`` (:mod:`tests.database`)."""
    return {**os.environ, **database_env(data_dir)}


def _committed(data_dir: Path) -> int:
    if not ON_POSTGRES and not (data_dir / SQLITE_FILE).exists():
        return 0
    engine = create_engine(store_url(data_dir), connect_args={"timeout": 1} if not ON_POSTGRES else {})
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM reports")).scalar_one())
    except DBAPIError:  # the job is still creating the tables
        return 0
    finally:
        engine.dispose()


def _summary_count(stderr: str, label: str) -> int:
    match = re.search(rf"batch: {label}\s+(\d+)", stderr)
    assert match, stderr
    return int(match[1])


def _expected_keys(frames: Path) -> set[tuple[str, str]]:
    return {
        (f"camera:{path.parent.name}", hashlib.sha256(path.read_bytes()).hexdigest())
        for path in frames.rglob("*.jpg")
    }


def test_a_killed_job_resumes_and_matches_a_clean_run(frames: Path, tmp_path: Path) -> None:
    resumed_dir, clean_dir = tmp_path / "resumed", tmp_path / "clean"
    expected = _expected_keys(frames)
    assert len(expected) == FRAMES

    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115 - closed below, after the kill
    job = subprocess.Popen(_command(frames, resumed_dir), stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True, env=_env(resumed_dir))
    try:
        deadline = time.monotonic() + 120
        while _committed(resumed_dir) < FRAMES // 3:
            assert job.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "the job never got a third of the way"
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the job and its workers, as a crash would
        job.wait()
        log.close()
    at_kill = _committed(resumed_dir)
    assert FRAMES // 3 <= at_kill < FRAMES, f"killed at {at_kill} frames"

    resumed = subprocess.run(_command(frames, resumed_dir), capture_output=True, text=True, timeout=300,
                             env=_env(resumed_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert _summary_count(resumed.stderr, "skipped") == at_kill
    assert _summary_count(resumed.stderr, "written") == FRAMES - at_kill

    rows = report_rows(resumed_dir)
    assert len(rows) == FRAMES and set(rows) == expected  # every frame, once

    clean = subprocess.run(_command(frames, clean_dir), capture_output=True, text=True, timeout=300,
                           env=_env(clean_dir))
    assert clean.returncode == 0, clean.stderr
    assert _summary_count(clean.stderr, "written") == FRAMES

    after_kill, fresh = store_view(resumed_dir), store_view(clean_dir)
    assert after_kill["reports"] == fresh["reports"]
    assert after_kill["incidents"] == fresh["incidents"]
    assert len(fresh["incidents"]) >= 3 and sum(len(k) for k in fresh["incidents"]) > FRAMES // 2
    # One photo file per frame, none left over from the frames in flight at the kill.
    assert after_kill["photos"] == {sha for _, sha in expected} and after_kill["photo_files"] == FRAMES


def _wait_for_a_third(job: subprocess.Popen[bytes], data_dir: Path) -> None:
    deadline = time.monotonic() + 120
    while _committed(data_dir) < FRAMES // 3:
        assert job.poll() is None, "the job ended early"
        assert time.monotonic() < deadline, "the job never got a third of the way"
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_end_when_only_the_job_is_killed(frames: Path, tmp_path: Path) -> None:
    """kill -9 of the job's process alone: its fork server and workers go too, leaving nothing running."""
    job = subprocess.Popen(_command(frames, tmp_path / "store"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True, env=_env(tmp_path / "store"))
    try:
        _wait_for_a_third(job, tmp_path / "store")
        job.kill()
        job.wait()
        deadline = time.monotonic() + 15
        while _group_alive(job.pid):
            assert time.monotonic() < deadline, "worker processes outlived the killed job"
            time.sleep(0.1)
    finally:
        if _group_alive(job.pid):
            os.killpg(job.pid, signal.SIGKILL)


def test_an_interrupted_job_says_so_and_stops_cleanly(frames: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole group): exit 130, the message to run again, no traceback, no process left."""
    # As started from a terminal: a shell's background job inherits SIGINT ignored, and keeps ignoring it.
    job = subprocess.Popen(_command(frames, tmp_path / "store"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, start_new_session=True, env=_env(tmp_path / "store"),
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_a_third(job, tmp_path / "store")
        os.killpg(job.pid, signal.SIGINT)
        _, stderr = job.communicate(timeout=60)
    finally:
        if _group_alive(job.pid):
            os.killpg(job.pid, signal.SIGKILL)
    text = stderr.decode()
    assert job.returncode == 130, text
    assert "interrupted; what was written stays written" in text and "Traceback" not in text
    deadline = time.monotonic() + 15
    while _group_alive(job.pid):
        assert time.monotonic() < deadline, "worker processes outlived the interrupted job"
        time.sleep(0.1)
