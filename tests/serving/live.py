"""A real vipare server in a subprocess on 127.0.0.1, for the load, crash and schemathesis tests.

The server is :mod:`serving.launch`'s (``vipare serve`` as its own process, one uvicorn worker, on a
free loopback port), held to the tests' 2-core budget; its data lives under a folder of the test's:
a real SQLite file and photo store that the tests then read with :mod:`sqlite3` (or, with
``VIPARE_TEST_DATABASE_URL`` set, the folder's PostgreSQL database: :mod:`tests.database`).

No traffic leaves the machine: the server binds 127.0.0.1 and clients only talk to it there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from serving import launch
from serving.config import SQLITE_FILE
from serving.launch import HOST, LiveServer, free_port
from serving.photos.store import OWNER_FILE
from tests.database import ON_POSTGRES, database_env, url_for

__all__ = [
    "HOST",
    "LiveServer",
    "cli_key",
    "db_rows",
    "free_port",
    "integrity",
    "live_server",
    "photo_files",
    "start_server",
]

ROOT = Path(__file__).resolve().parents[2]
SERVER_SETTINGS: dict[str, str] = {
    # One onnxruntime thread per analysis and two analyses at once: the 2-core budget of serving/config.py.
    "VIPARE_INTRA_OP_THREADS": "1",
    "VIPARE_ANALYSIS_SLOTS": "2",
}


def start_server(
    data_dir: Path, settings: Mapping[str, str] | None = None, *, ready_timeout_s: float = 120.0
) -> LiveServer:
    """:func:`serving.launch.start_server` within :data:`SERVER_SETTINGS`, which ``settings`` may override."""
    settings = {**SERVER_SETTINGS, **database_env(data_dir), **(settings or {})}
    return launch.start_server(data_dir, settings, ready_timeout_s=ready_timeout_s)


def cli_key(data_dir: Path, role: str, name: str) -> str:
    """:func:`serving.launch.cli_key` on the database :func:`start_server` gives the server of ``data_dir``."""
    return launch.cli_key(data_dir, role, name, database_env(data_dir))


@contextmanager
def live_server(data_dir: Path, settings: Mapping[str, str] | None = None) -> Iterator[LiveServer]:
    """:func:`start_server`, stopped gracefully on exit (killed when it does not stop)."""
    server = start_server(data_dir, settings)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# Looking at what the server left on disk


def _connect(data_dir: Path) -> sqlite3.Connection:
    path = data_dir / SQLITE_FILE
    assert path.exists(), f"no database at {path}"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def db_rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of one query on the service's database, read-only on SQLite (the server may still be running)."""
    if ON_POSTGRES:
        engine = create_engine(url_for(data_dir))
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(text(sql))]
        finally:
            engine.dispose()
    with closing(_connect(data_dir)) as connection:
        return list(connection.execute(sql))


def integrity(data_dir: Path) -> list[str]:
    """``PRAGMA integrity_check`` then ``PRAGMA foreign_key_check``: ``["ok"]`` for a sound database.

    On PostgreSQL, ``["ok"]`` once the database answers: the server checks foreign keys on every
    write, and its files are not the service's to check.
    """
    if ON_POSTGRES:
        return ["ok" if db_rows(data_dir, "SELECT 1") == [(1,)] else "no answer"]
    with closing(_connect(data_dir)) as connection:
        checks = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
        checks += [f"foreign key: {row}" for row in connection.execute("PRAGMA foreign_key_check")]
        return checks


def photo_files(data_dir: Path) -> list[Path]:
    """Every file in the photo store, temporary ones included, but the one naming its database (``.database``)."""
    root = data_dir / "photos"
    owner = root / OWNER_FILE
    return sorted(p for p in root.rglob("*") if p.is_file() and p != owner) if root.exists() else []
