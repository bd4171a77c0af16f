"""A real vipare server in a subprocess on 127.0.0.1, for the load, crash and schemathesis tests.

The server is :mod:`serving.launch`'s (``vipare serve`` as its own process, one uvicorn worker, on a
free loopback port), held to the tests' 2-core budget; its data lives under a folder of the test's:
a real SQLite file and photo store that the tests then read with :mod:`sqlite3`.

No traffic leaves the machine: the server binds 127.0.0.1 and clients only talk to it there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path

from serving import launch
from serving.config import SQLITE_FILE
from serving.launch import HOST, LiveServer, cli_key, free_port

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
    return launch.start_server(data_dir, {**SERVER_SETTINGS, **(settings or {})}, ready_timeout_s=ready_timeout_s)


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


def db_rows(data_dir: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows of one query on the service's SQLite file, read-only (the server may still be running)."""
    with closing(_connect(data_dir)) as connection:
        return list(connection.execute(sql, params))


def integrity(data_dir: Path) -> list[str]:
    """``PRAGMA integrity_check`` then ``PRAGMA foreign_key_check``: ``["ok"]`` for a sound database."""
    with closing(_connect(data_dir)) as connection:
        checks = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
        checks += [f"foreign key: {row}" for row in connection.execute("PRAGMA foreign_key_check")]
        return checks


def photo_files(data_dir: Path) -> list[Path]:
    """Every file in the photo store, temporary ones included."""
    root = data_dir / "photos"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
