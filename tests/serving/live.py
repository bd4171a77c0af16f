"""A real vipare server in a subprocess on 127.0.0.1, for the load, crash and schemathesis tests.

``vipare serve`` runs as its own process (one uvicorn worker, so its pid is the server's and
``kill -9`` hits it), on a free loopback port, with its data under a folder of the caller's: a real
SQLite file and photo store that the tests then read with :mod:`sqlite3`. Its log goes to a file
next to the data folder, whose tail is shown when the server fails to start.

No traffic leaves the machine: the server binds 127.0.0.1 and clients only talk to it there.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

from serving.config import SQLITE_FILE

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

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
SERVER_SETTINGS: dict[str, str] = {
    # One onnxruntime thread per analysis and two analyses at once: the 2-core budget of serving/config.py.
    "VIPARE_INTRA_OP_THREADS": "1",
    "VIPARE_ANALYSIS_SLOTS": "2",
}


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _env(settings: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without its own VIPARE_* variables, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIPARE_")}
    env.update(SERVER_SETTINGS)
    env.update(settings)
    return env


def _vipare(*args: str) -> list[str]:
    return [sys.executable, "-m", "vipare.cli", *args]


def cli_key(data_dir: Path, role: str, name: str) -> str:
    """Create an API key with ``vipare keys create`` on the database under ``data_dir``; returns the key."""
    done = subprocess.run(
        _vipare("keys", "create", "--role", role, "--name", name, "--data-dir", str(data_dir)),
        cwd=ROOT, env=_env({}), capture_output=True, text=True, timeout=120, check=True,
    )
    return done.stdout.strip()


@dataclass
class LiveServer:
    """A ``vipare serve`` process and where it keeps its data."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{HOST}:{self.port}"

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the server's stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """Shut down gracefully (SIGTERM: uvicorn finishes the requests in flight); SIGKILL after ``timeout_s``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        """``kill -9``: the process dies at once, in the middle of whatever it was doing."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def start_server(
    data_dir: Path, settings: Mapping[str, str] | None = None, *, ready_timeout_s: float = 120.0
) -> LiveServer:
    """Start ``vipare serve`` on a free loopback port and return once ``/readyz`` answers 200.

    Args:
        data_dir: the service's data folder (database and photo store; created).
        ready_timeout_s: how long to wait for the model to be loaded and warm.
        settings: more ``VIPARE_*`` variables for the server, e.g. ``{"VIPARE_ANALYSIS_SLOTS": "1"}``.

    Raises:
        RuntimeError: the server exited or never became ready (with the end of its log).
    """
    port = free_port()
    log_path = data_dir.parent / f"server-{data_dir.name}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _vipare("serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir),
                    "--log-level", "warning"),
            cwd=ROOT, env=_env(settings or {}), stdout=log, stderr=subprocess.STDOUT,
        )
    server = LiveServer(process=process, port=port, data_dir=data_dir, log_path=log_path)
    deadline = time.monotonic() + ready_timeout_s
    with httpx2.Client(base_url=server.url, timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
            try:
                if client.get("/readyz").status_code == 200:
                    return server
            except httpx2.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the server was not ready after {ready_timeout_s:.0f} s:\n{server.log_tail()}")
            time.sleep(0.1)


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
