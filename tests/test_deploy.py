"""The production layout in ``deploy/``: backups restore to the same store, and the config files parse.

A service (the stand-in model, through ``TestClient``) takes reports into a data folder; while it
runs, ``deploy/backup.sh`` backs the folder up; ``deploy/restore.sh`` restores it into a new, empty
folder, where the service's own code finds the same reports, incidents and photo files (byte for
byte) and the old keys still work. On SQLite by default; with ``VIPARE_TEST_DATABASE_URL`` set
(``tests/database.py``), on PostgreSQL through ``pg_dump``/``pg_restore``, each folder with a
database of its own. The systemd units are checked with ``systemd-analyze verify`` and the nginx
site with ``nginx -t``, each skipped where its tool is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.database import ON_POSTGRES, database_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="needs the [serve] extra"),
]

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PLACES = [(49.1193, 6.1757), (49.1201, 6.1802), (49.1150, 6.1700)]


def _script(name: str, *args: str | Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIPARE_")}
    done = subprocess.run([str(DEPLOY / name), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**clean, **env})
    if check:
        assert done.returncode == 0, f"{name} failed ({done.returncode}): {done.stderr}"
    return done


def _tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH")


def _checksums(folder: Path) -> dict[str, str]:
    """sha256 of every photo file under ``folder``, by its path relative to it."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from serving.config import ServiceSettings
    from tests.onnxgen import make_colour_detector_onnx
    from vipare.detection import Detector

    model = make_colour_detector_onnx(tmp_path_factory.mktemp("model") / "colour.onnx")
    return Detector.from_settings(ServiceSettings(model_path=model, intra_op_threads=1))


def _fill(server, count: int = 7) -> None:  # type: ignore[no-untyped-def]
    """Reports at three places, a few metres apart at each: a few incidents of several reports."""
    from tests.serving.helpers import deposit_photo, moved

    seeds = itertools.count(100)
    for i in range(count):
        lat, lon = moved(*PLACES[i % len(PLACES)], north_m=2.0 * (i // len(PLACES)))
        response = server.upload(deposit_photo(next(seeds), lat=lat, lon=lon))
        assert response.status_code == 201, response.text


def test_a_backup_taken_while_the_service_runs_restores_into_an_empty_folder(tmp_path: Path, detector) -> None:  # type: ignore[no-untyped-def]
    _tools("tar", "sha256sum", *(("pg_dump", "pg_restore", "psql") if ON_POSTGRES else ()))
    from serving.app import create_app
    from tests.batch.store_view import store_view
    from tests.serving.helpers import running, server_at, service_settings

    data, restored, backups = tmp_path / "data", tmp_path / "restored", tmp_path / "backups"
    with server_at(data, detector) as server:
        _fill(server)
        listed = server.client.get("/v1/incidents", headers=server.headers("manager")).json()
        # a photo written after the database's snapshot, whose report the backup therefore lacks
        orphan = data / "photos" / "ff" / f"{'f' * 64}.jpg"
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(b"not referenced")
        _script("backup.sh", "--data-dir", data, "--keep", "2", backups, env=database_env(data))
        keys = server.keys

    (backup,) = backups.iterdir()
    assert re.fullmatch(r"vipare-\d{8}T\d{6}Z", backup.name)
    database_file = "database.pgdump" if ON_POSTGRES else "database.sqlite"
    assert sorted(p.name for p in backup.iterdir()) == sorted(
        [database_file, "data.tar", "files.sha256", "MANIFEST", "SHA256SUMS"])
    assert "vipare.db" not in (backup / "files.sha256").read_text()

    _script("restore.sh", "--data-dir", restored, backup, env=database_env(restored))

    before, after = store_view(data), store_view(restored)
    assert len(before["reports"]) == 7 and len(before["incidents"]) == len(PLACES)
    assert before["photo_files"] == 7 + 1
    assert after == before
    assert _checksums(restored / "photos") == _checksums(data / "photos")
    assert (restored / orphan.relative_to(data)).exists()
    assert (restored.stat().st_mode & 0o777) == 0o700

    # the service opens the restored store as it was: same incidents, and the keys made before still work
    app = create_app(service_settings(restored), detector=detector)
    with running(app) as client:
        answer = client.get("/v1/incidents", headers={"Authorization": f"Bearer {keys['manager']}"})
        assert answer.status_code == 200 and answer.json() == listed
    assert not (restored / orphan.relative_to(data)).exists(), "the first start deletes unreferenced photos"
    assert store_view(restored)["photo_files"] == 7


def test_restore_refuses_a_damaged_backup_and_a_folder_in_use(tmp_path: Path, detector) -> None:  # type: ignore[no-untyped-def]
    _tools("tar", "sha256sum", *(("pg_dump", "pg_restore", "psql") if ON_POSTGRES else ()))
    from tests.serving.helpers import server_at

    data, backups = tmp_path / "data", tmp_path / "backups"
    with server_at(data, detector) as server:
        _fill(server, count=2)
    _script("backup.sh", "--data-dir", data, backups, env=database_env(data))
    (backup,) = backups.iterdir()

    in_use = _script("restore.sh", "--data-dir", data, backup, env=database_env(data), check=False)
    assert in_use.returncode == 1 and "not empty" in in_use.stderr

    with (backup / "data.tar").open("r+b") as tar:  # one byte of the archive changed
        tar.seek(1024)
        byte = tar.read(1)
        tar.seek(1024)
        tar.write(bytes([byte[0] ^ 0xFF]))
    elsewhere = tmp_path / "elsewhere"
    damaged = _script("restore.sh", "--data-dir", elsewhere, backup, env=database_env(elsewhere), check=False)
    assert damaged.returncode == 1 and "damaged backup" in damaged.stderr
    assert not elsewhere.exists()


def test_backups_beyond_keep_are_removed_oldest_first(tmp_path: Path) -> None:
    _tools("tar", "sha256sum")
    if ON_POSTGRES:
        pytest.skip("the retention of backup folders does not depend on the database")
    import sqlite3

    data, backups = tmp_path / "data", tmp_path / "backups"
    (data / "photos").mkdir(parents=True)
    sqlite3.connect(data / "vipare.db").close()
    for old in ("vipare-20240101T000000Z", "vipare-20240102T000000Z", ".partial-vipare-20240103T000000Z"):
        (backups / old).mkdir(parents=True)
    _script("backup.sh", "--data-dir", data, "--keep", "2", backups, env={})
    names = sorted(p.name for p in backups.iterdir())
    assert names[:2] == [".partial-vipare-20240103T000000Z", "vipare-20240102T000000Z"] and len(names) == 3


UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted((DEPLOY / "systemd").glob("*.timer"))


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify``, with the installed paths pointed at files that exist here."""
    _tools("systemd-analyze")
    assert {u.name for u in UNITS} >= {"vipare.service", "vipare-backup.service", "vipare-backup.timer"}
    opt = tmp_path / "opt"
    (opt / "venv" / "bin").mkdir(parents=True)
    (opt / "venv" / "bin" / "vipare").write_text("#!/bin/sh\n")
    (opt / "venv" / "bin" / "vipare").chmod(0o755)
    (opt / "src" / "deploy").mkdir(parents=True)
    shutil.copy(DEPLOY / "backup.sh", opt / "src" / "deploy" / "backup.sh")
    for unit in UNITS:
        text = unit.read_text().replace("/opt/vipare", str(opt))
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / u.name) for u in UNITS)],
                          capture_output=True, text=True, timeout=60)
    # A machine without the vipare user or without PostgreSQL's unit may say so; nothing else may be wrong.
    problems = [line for line in done.stderr.splitlines()
                if line.strip() and not re.search(r"postgresql\.service|nginx\.service|User=|Group=", line)]
    assert not problems, done.stderr

    # and it does see a wrong value: the check above is not vacuous
    (tmp_path / "bad.service").write_text((tmp_path / "vipare.service").read_text().replace(
        "ProtectSystem=strict", "ProtectSystem=everything"))
    bad = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "bad.service")],
                         capture_output=True, text=True, timeout=60)
    assert "ProtectSystem" in bad.stderr or "protect system" in bad.stderr


def test_the_nginx_site_parses(tmp_path: Path) -> None:
    """``nginx -t`` on a main file that includes the site, with a throwaway certificate."""
    _tools("nginx", "openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=vipare.example.org",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    site = (DEPLOY / "nginx" / "vipare.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/vipare.example.org/privkey.pem", str(key))
    site = site.replace("/etc/letsencrypt/live/vipare.example.org/fullchain.pem", str(cert))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log stderr; events {{}}\n"
        f"http {{ access_log off; include {tmp_path}/site.conf; }}\n")
    done = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_nginx_body_limit_matches_the_service_upload_limit() -> None:
    """``client_max_body_size`` lets through the largest photo the service accepts, and the form around it."""
    from serving.config import ServiceSettings
    from serving.limits import FORM_OVERHEAD_BYTES

    site = (DEPLOY / "nginx" / "vipare.conf").read_text()
    (size,) = re.findall(r"client_max_body_size\s+(\d+)m;", site)
    upload = ServiceSettings.model_fields["max_image_bytes"].default + FORM_OVERHEAD_BYTES
    assert upload <= int(size) * 1024 * 1024 <= upload + 2 * 1024 * 1024
    for header in ("Host $host", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme"):
        assert f"proxy_set_header {header};" in site


def test_the_environment_file_names_only_real_settings() -> None:
    """Every ``VIPARE_*`` line of ``deploy/vipare.env.example`` is a setting, and together they load."""
    from serving.config import ServiceSettings

    values: dict[str, str] = {}
    for line in (DEPLOY / "vipare.env.example").read_text().splitlines():
        line = line.lstrip("#").strip()
        if re.match(r"VIPARE_[A-Z_]+=", line):
            name, value = line.split("=", 1)
            assert name[len("VIPARE_"):].lower() in ServiceSettings.model_fields, f"{name} is no setting"
            values[name[len("VIPARE_"):].lower()] = value
    settings = ServiceSettings(**values)
    assert settings.host_names == ("vipare.example.org",) or settings.trusted_hosts
