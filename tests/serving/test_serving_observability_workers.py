"""Metrics across worker processes: prometheus_client's multiprocess mode, in one process and in a real server.

In one process, two :class:`Metrics` stand for two workers by writing under two process ids (the
test's own and its parent's, both alive); ``/metrics`` of either shows their sum. Then a real
``vipare serve --workers 2`` (the stand-in model, one analysis slot and one onnxruntime thread per
worker: the tests' 2-core budget) answers requests over fresh connections until each worker has
answered some, as its own file in the metrics folder says, and one scrape of ``/metrics`` must count
every request, and show both workers ready.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from serving.launch import start_server
from serving.observability import MULTIPROC_DIR_VARIABLE, Metrics, multiprocess_dir, worker_metrics_dir
from tests.database import database_env
from tests.serving.live import SERVER_SETTINGS

HEALTHZ = "/healthz"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    ]


def _healthz_count(exposition: str) -> float:
    return sum(value for labels, value in _samples(exposition, "vipare_http_requests_total")
               if labels["route"] == HEALTHZ)


def _as_process(monkeypatch: pytest.MonkeyPatch, pid: Callable[[], int]) -> Metrics:
    """Metrics that write their values under process id ``pid()``, as a worker of that pid would."""
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(process_identifier=pid))
    return Metrics()


def test_in_memory_without_the_folder() -> None:
    assert multiprocess_dir() is None  # the test process imported prometheus_client without the variable
    metrics = Metrics()
    assert metrics.folder is None
    metrics.requests.labels(method="GET", route=HEALTHZ, status="200").inc()
    assert _healthz_count(generate_latest(metrics.registry).decode()) == 1
    metrics.close()  # nothing to remove


def test_metrics_of_two_processes_are_added_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_VARIABLE, str(tmp_path))
    parent, own = _as_process(monkeypatch, os.getppid), _as_process(monkeypatch, os.getpid)
    assert parent.folder == own.folder == tmp_path
    for metrics, answered in ((parent, 3), (own, 4)):
        metrics.requests.labels(method="GET", route=HEALTHZ, status="200").inc(answered)
        metrics.ready.set(1)
    for metrics in (parent, own):  # whichever process answers /metrics shows both
        exposition = generate_latest(metrics.registry).decode()
        assert _healthz_count(exposition) == 7
        ready = {labels["pid"]: value for labels, value in _samples(exposition, "vipare_ready")}
        assert ready == {str(os.getppid()): 1.0, str(os.getpid()): 1.0}

    own.close()  # this process's worker stops: its readiness goes, its counts stay
    exposition = generate_latest(parent.registry).decode()
    assert [labels["pid"] for labels, _ in _samples(exposition, "vipare_ready")] == [str(os.getppid())]
    assert _healthz_count(exposition) == 7


def test_a_worker_starting_forgets_the_readiness_of_workers_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_VARIABLE, str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    killed = _as_process(monkeypatch, lambda: int(ended.stdout))  # a worker killed -9 never closes
    killed.ready.set(1)
    killed.requests.labels(method="GET", route=HEALTHZ, status="200").inc(2)
    restarted = _as_process(monkeypatch, os.getpid)
    exposition = generate_latest(restarted.registry).decode()
    assert [labels["pid"] for labels, _ in _samples(exposition, "vipare_ready")] == [str(os.getpid())]
    assert _healthz_count(exposition) == 2  # what the killed worker counted is still counted


def test_the_command_gives_several_workers_a_fresh_private_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_VARIABLE, raising=False)
    with worker_metrics_dir(1) as none:
        assert none is None and MULTIPROC_DIR_VARIABLE not in os.environ  # one worker counts in memory
    with worker_metrics_dir(2) as first, worker_metrics_dir(2) as second:
        assert first is not None and second is not None and first != second
        assert os.environ[MULTIPROC_DIR_VARIABLE] == str(second)
        assert list(first.iterdir()) == [] and first.stat().st_mode & 0o777 == 0o700
        (first / "counter_1.db").write_bytes(b"")
    assert not first.exists() and not second.exists()


def test_a_killed_server_s_metrics_folder_is_deleted_by_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    killed = tmp_path / f"vipare-metrics-{int(ended.stdout)}-x1y2z3"  # its server is gone: nothing deletes it
    running = tmp_path / f"vipare-metrics-{os.getppid()}-a1b2c3"  # a server still running
    other = tmp_path / "vipare-metrics-notes"  # not a server's folder
    for folder in (killed, running, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"")
    with worker_metrics_dir(2) as mine:
        assert mine is not None and mine.name.startswith(f"vipare-metrics-{os.getpid()}-")
        assert not killed.exists() and running.exists() and other.exists()
    assert not mine.exists()


def _per_process_healthz(folder: Path, scratch: Path) -> dict[int, float]:
    """Each worker's count of ``/healthz`` answers, read from its own counter file."""
    counts: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        alone = scratch / path.stem
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[int(path.stem.split("_")[1])] = _healthz_count(generate_latest(registry).decode())
    return counts


def _get(url: str) -> int:
    with _DIRECT.open(url, timeout=30) as answer:  # one new connection per request
        return int(answer.status)


@pytest.mark.slow
def test_metrics_of_a_two_worker_server_count_every_request(tmp_path: Path, stand_in_model: Path) -> None:
    data_dir = tmp_path / "data"
    temp = tmp_path / "temp"  # where vipare serve makes its metrics folder (TMPDIR), to look into it
    temp.mkdir()
    settings = {
        **SERVER_SETTINGS, **database_env(data_dir), "VIPARE_MODEL_PATH": str(stand_in_model),
        "VIPARE_ANALYSIS_SLOTS": "1", "TMPDIR": str(temp),  # 2 workers x 1 slot x 1 thread: 2 cores
    }
    server = start_server(data_dir, settings, workers=2)  # returns once both workers are ready
    try:
        (folder,) = temp.glob("vipare-metrics-*")
        sent = 0
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(max_workers=4) as pool:
            while True:  # the kernel hands connections to either worker: send until each has answered some
                assert set(pool.map(_get, [f"{server.url}{HEALTHZ}"] * 20)) == {200}
                sent += 20
                per_worker = _per_process_healthz(folder, tmp_path / "alone")
                if len(per_worker) == 2 and all(per_worker.values()):
                    break
                assert time.monotonic() < deadline, f"one worker answered every request: {per_worker}"
        # A worker counts a request once its answer is sent: the last few may still be on their way.
        while sum(per_worker.values()) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
            per_worker = _per_process_healthz(folder, tmp_path / "alone")
        with _DIRECT.open(f"{server.url}/metrics", timeout=30) as answer:
            exposition = answer.read().decode()
        assert sum(per_worker.values()) == sent
        assert _healthz_count(exposition) == sent  # one scrape counts both workers' answers
        ready = {int(labels["pid"]): value for labels, value in _samples(exposition, "vipare_ready")}
        assert ready == dict.fromkeys(per_worker, 1.0)  # the two workers that answered, each ready
    finally:
        assert server.stop() == 0, server.log_tail()
    assert not folder.exists()  # the command removes the folder when it stops
