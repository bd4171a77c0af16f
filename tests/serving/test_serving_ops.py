"""Operations: readiness, model identity, metrics, the log line, migrations at start, orphan clean-up, CLI."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.db import SCHEMA_REVISION, current_revision, head_revision
from serving.models import Base
from serving.observability import JsonFormatter
from serving.photos.workers import WorkerLock
from serving.service import Service
from tests.database import database_env, store_url
from tests.serving.helpers import Server, deposit_photo, running, server_at, service_settings
from vipare.cli import main
from vipare.detection import Detector

NANTES = (47.2184, -1.5536)


def test_health_model_and_metrics(server: Server) -> None:
    assert server.client.get("/healthz").json() == {"status": "ok"}
    ready = server.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model_sha256"] == server.service.pipeline.detector.info.sha256
    model = server.client.get("/v1/model").json()
    assert model["model"]["classes"] == ["dumped_waste", "overflowing_bin", "bin"]
    assert model["deposit_classes"] == ["dumped_waste", "overflowing_bin"]
    assert model["class_families"] == {"dumped_waste": "waste", "overflowing_bin": "waste"}
    assert server.upload(deposit_photo(1, lat=NANTES[0], lon=NANTES[1])).status_code == 201
    assert server.upload(b"").status_code == 422
    metrics = server.client.get("/metrics").text
    assert 'vipare_http_requests_total{method="POST",route="/v1/reports",status="201"} 1.0' in metrics
    assert 'vipare_detections_total{label="dumped_waste"} 1.0' in metrics  # the deposit photo's one square
    assert 'vipare_reports_total{outcome="created"} 1.0' in metrics
    assert 'vipare_reports_total{outcome="rejected"} 1.0' in metrics
    assert 'vipare_analysis_duration_seconds_count{stage="detect"} 1.0' in metrics
    assert "vipare_ready 1.0" in metrics
    schema = server.client.get("/openapi.json").json()
    upload = schema["paths"]["/v1/reports"]["post"]
    assert upload["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["photo"]
    assert {"401", "403", "413", "415", "422", "503"} <= set(upload["responses"])


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_one_json_log_line_per_request(server: Server) -> None:
    handler = _Lines()
    access = logging.getLogger("serving.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)  # the test apps log warnings only
    try:
        response = server.client.get("/v1/incidents/424242", headers=server.headers("manager"))
        server.client.get("/open311/v2/services.json", params={"api_key": server.keys["manager"]})
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    assert response.status_code == 404
    first, second = handler.lines
    assert first["event"] == "request" and first["request_id"] == response.headers["x-request-id"]
    assert (first["method"], first["route"], first["status"]) == ("GET", "/v1/incidents/{incident_id}", 404)
    assert first["key"] == "test-manager (manager)" and first["duration_ms"] >= 0
    assert server.keys["manager"] not in json.dumps(second)  # query strings are never logged


def test_not_ready_until_warm(tmp_path: Path, detector: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    warm_up = Service.warm_up

    def slow_warm_up(self: Service) -> None:
        release.wait(10)
        warm_up(self)

    monkeypatch.setattr(Service, "warm_up", slow_warm_up)
    with TestClient(create_app(service_settings(tmp_path, trial_mode=True), detector=detector)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        upload = client.post("/v1/reports", files={"photo": ("a.jpg", deposit_photo(2), "image/jpeg")})
        assert upload.status_code == 503 and upload.json()["code"] == "model_not_ready"
        assert upload.headers["retry-after"] == "5"
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_the_database_is_at_head_after_start_and_restart_keeps_data(tmp_path: Path, detector: Detector) -> None:
    with server_at(tmp_path, detector) as first:
        engine = first.service.engine
        assert current_revision(engine) == head_revision() == SCHEMA_REVISION == "0011"
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
            if connection.dialect.name == "sqlite":
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        report = first.upload(deposit_photo(3, lat=NANTES[0], lon=NANTES[1])).json()
        key = first.keys["manager"]
    with running(create_app(service_settings(tmp_path), detector=detector)) as client:
        again = client.get(f"/v1/reports/{report['id']}", headers={"X-API-Key": key})
        assert again.status_code == 200 and again.json()["id"] == report["id"]


def test_a_store_at_the_latest_revision_opens_without_alembic(tmp_path: Path) -> None:
    """Batch jobs and workers opening an existing store skip Alembic; a new store is migrated with it."""
    import subprocess
    import sys

    url = store_url(tmp_path)
    script = (
        "import sys\n"
        "from serving.db import make_engine, migrate, current_revision\n"
        f"engine = make_engine({url!r})\n"
        "migrate(engine)\n"
        "print(current_revision(engine), 'alembic' in sys.modules)\n"
    )
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs == ["0011 True\n", "0011 False\n"]


def test_orphan_photos_are_removed_at_start(tmp_path: Path, detector: Detector) -> None:
    with server_at(tmp_path, detector) as first:
        first.upload(deposit_photo(4, lat=NANTES[0], lon=NANTES[1]))
        kept = list(first.folder.files())
    assert len(kept) == 1
    photos = tmp_path / "photos"
    fresh_orphan = photos / "ab" / ("ab" + "0" * 62 + ".jpg")
    old_orphan = photos / "cd" / ("cd" + "0" * 62 + ".jpg")
    leftover = photos / "ab" / ".tmp-123"
    for path in (fresh_orphan, old_orphan, leftover):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"written before a crash")
    two_hours_ago = time.time() - 7200
    os.utime(old_orphan, (two_hours_ago, two_hours_ago))
    marks = tmp_path / ".writers"
    (marks / "crashed-worker.mark").touch()  # the mark of a worker that died without closing

    other_worker = WorkerLock(tmp_path / ".workers.lock")  # another worker runs: keep what may be in flight
    assert other_worker.acquire()
    other_worker.mark()
    other_worker.share()
    try:
        with running(create_app(service_settings(tmp_path), detector=detector)):
            pass
    finally:
        other_worker.release()
    assert fresh_orphan.exists() and not old_orphan.exists() and kept[0].exists()
    assert [p.name.split("-")[0] for p in marks.iterdir()] == ["dead"]  # not covered yet: swept again

    with running(create_app(service_settings(tmp_path), detector=detector)):  # alone: every orphan goes
        pass
    assert not fresh_orphan.exists() and not leftover.exists() and kept[0].exists()
    assert list(marks.iterdir()) == []  # every worker closed: the next start has nothing to sweep


def test_the_photo_store_is_swept_only_after_a_worker_died(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clean closes leave nothing to sweep, whatever the store holds; a worker killed -9 leaves a sweep to do."""
    import subprocess
    import sys

    from serving.photos.store import PhotoStore
    from serving.storage import open_storage

    sweeps: list[float] = []
    real_sweep = PhotoStore.remove_orphans

    def counted(store: PhotoStore, *args: Any, **kwargs: Any) -> int:
        sweeps.append(kwargs["older_than_s"])
        return real_sweep(store, *args, **kwargs)

    monkeypatch.setattr(PhotoStore, "remove_orphans", counted)
    settings = service_settings(tmp_path)
    for _ in range(3):
        open_storage(settings).close()
    assert sweeps == [0.0]  # the new store's first start only

    script = (
        "import os\n"
        "from serving.config import ServiceSettings\n"
        "from serving.storage import open_storage\n"
        f"storage = open_storage(ServiceSettings(data_dir={str(tmp_path)!r}))\n"
        "storage.photos.root.joinpath('ee').mkdir(exist_ok=True)\n"
        "storage.photos.root.joinpath('ee', 'ee' + '0' * 62 + '.jpg').write_bytes(b'no report')\n"
        "os._exit(9)\n"  # dies between a photo and its report
    )
    env = {**os.environ, **database_env(tmp_path)}
    assert subprocess.run([sys.executable, "-c", script], check=False, timeout=120, env=env).returncode == 9
    orphan = settings.photo_dir / "ee" / ("ee" + "0" * 62 + ".jpg")
    assert orphan.exists()
    open_storage(settings).close()
    assert sweeps == [0.0, 0.0] and not orphan.exists()
    open_storage(settings).close()
    assert sweeps == [0.0, 0.0]


def test_cli_keys_and_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "WORKERS", "DATA_DIR", "LOG_LEVEL"):  # serve exports its options to workers
        monkeypatch.setenv(f"VIPARE_{name}", "unset")
        monkeypatch.delenv(f"VIPARE_{name}")
    runner = CliRunner()
    assert {"serve", "keys"} <= set(runner.invoke(main, ["--help"]).stdout.split())

    data = str(tmp_path / "data")
    refused = runner.invoke(main, ["serve", "--host", "0.0.0.0", "--data-dir", data], env={"VIPARE_TRIAL_MODE": "1"})
    assert refused.exit_code == 1 and "trial mode" in refused.stderr
    assert not Path(data).exists()  # refused before the store is made

    created = runner.invoke(main, ["keys", "create", "--role", "manager", "--name", "depot", "--data-dir", data])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("vpr_") and len(key.splitlines()) == 1
    listed = runner.invoke(main, ["keys", "list", "--data-dir", data]).stdout
    secret = key.split("_", 2)[2]  # vpr_<prefix>_<secret>; the secret may hold "_" itself
    assert "manager" in listed and "depot" in listed and secret not in listed

    qr = tmp_path / "agent-key.svg"
    linked = runner.invoke(main, ["keys", "create", "--role", "agent", "--name", "équipe nord", "--data-dir", data,
                                  "--link", "https://vipare.example.fr/", "--qr", str(qr)])
    assert linked.exit_code == 0, linked.output
    agent_key, link = linked.stdout.split()
    assert link == f"https://vipare.example.fr/#key={agent_key}"  # the key in the fragment, never sent to a server
    assert qr.read_text().lstrip().startswith(("<?xml", "<svg")) and "<path" in qr.read_text()
    for refused_options in (["--role", "manager", "--link", "https://x.fr/"], ["--role", "agent", "--qr", str(qr)],
                            ["--role", "agent", "--link", "vipare.example.fr"]):
        refused_link = runner.invoke(main, ["keys", "create", *refused_options, "--data-dir", data])
        assert refused_link.exit_code == 2, refused_link.output

    calls: list[tuple[Any, dict[str, Any]]] = []
    metrics_dirs: list[str | None] = []

    def run(app: Any, **kwargs: Any) -> None:
        calls.append((app, kwargs))
        metrics_dirs.append(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))  # what the workers would inherit
        if metrics_dirs[-1]:
            assert list(Path(metrics_dirs[-1]).iterdir()) == []

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr("uvicorn.run", run)
    empty = runner.invoke(main, ["serve", "--data-dir", str(tmp_path / "empty")])
    assert empty.exit_code == 0 and "No API key exists yet" in empty.stderr  # starts closed, and says so
    calls.clear()
    options = ["--host", "0.0.0.0", "--port", "8123", "--workers", "2", "--data-dir", data]
    started = runner.invoke(main, ["serve", *options])
    assert started.exit_code == 0, started.output
    assert calls == [("serving.app:create_app", {
        "factory": True, "host": "0.0.0.0", "port": 8123, "workers": 2, "access_log": False, "log_level": "info",
        "http": "serving.http_protocol:HeaderTimeoutProtocol", "timeout_keep_alive": 10,
    })]
    assert os.environ["VIPARE_WORKERS"] == "2" and os.environ["VIPARE_DATA_DIR"] == data
    one_worker, two_workers = metrics_dirs  # several workers share a fresh folder, removed when they stop
    assert one_worker is None and two_workers and not Path(two_workers).exists()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ

    assert runner.invoke(main, ["keys", "revoke", "1", "--data-dir", data]).exit_code == 0
    assert runner.invoke(main, ["keys", "revoke", "99", "--data-dir", data]).exit_code == 1


def test_workers_starting_together_migrate_one_after_the_other(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from serving.db import make_engine, migrate

    url = store_url(tmp_path)

    def start(_: int) -> str | None:
        engine = make_engine(url)
        try:
            migrate(engine)
            return current_revision(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(start, range(4))) == ["0011"] * 4


def test_a_postgresql_url_without_a_driver_uses_psycopg_3(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from serving.db import make_engine

    pytest.importorskip("psycopg")
    engine = make_engine("postgresql://vipare@/vipare?host=/nowhere")  # connects on first use only
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as without the [postgres] extra
    with pytest.raises(ModuleNotFoundError, match=r"'psycopg' is not installed \(pip install 'vipare\[postgres\]'\)"):
        make_engine("postgresql://vipare@/vipare?host=/nowhere")


def test_the_connection_pool_of_postgresql_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.pool import QueuePool

    from serving.config import ServiceSettings
    from serving.db import engine_from_settings, make_engine

    pytest.importorskip("psycopg")
    monkeypatch.setenv("VIPARE_DATABASE_URL", "postgresql+psycopg://vipare@/vipare?host=/nowhere")  # never connected
    monkeypatch.setenv("VIPARE_DB_POOL_SIZE", "12")
    monkeypatch.setenv("VIPARE_DB_MAX_OVERFLOW", "3")
    monkeypatch.setenv("VIPARE_DB_POOL_TIMEOUT_S", "4.5")
    pool = engine_from_settings(ServiceSettings(data_dir=tmp_path)).pool
    assert isinstance(pool, QueuePool)
    assert (pool.size(), pool._max_overflow, pool.timeout()) == (12, 3, 4.5)

    default = make_engine(f"sqlite:///{tmp_path / 'vipare.db'}").pool  # SQLite's own
    assert isinstance(default, QueuePool)
    assert (default.size(), default._max_overflow, default.timeout()) == (5, 10, 30.0)


def test_processes_starting_together_on_a_new_database_migrate_once(tmp_path: Path) -> None:
    """Four processes migrate one empty database at once (on PostgreSQL: one at a time, by an advisory lock)."""
    import subprocess
    import sys

    from serving.db import make_engine

    url = store_url(tmp_path)
    script = (
        "import sys\n"
        "from serving.db import make_engine, migrate, current_revision\n"
        "engine = make_engine(sys.argv[1])\n"
        "sys.stdin.read()\n"  # wait for the go, so that all four start at once
        "migrate(engine)\n"
        "print(current_revision(engine))\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    answers = [process.communicate("", timeout=120) for process in processes]
    assert [(process.returncode, out, err) for process, (out, err) in zip(processes, answers, strict=True)] == [
        (0, "0011\n", "")
    ] * 4
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [("0011",)]
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()
