"""Start ``vipare serve`` in a subprocess and wait until it is ready, for scripts, benchmarks and tests.

:func:`start_server` runs ``vipare serve`` as its own process with one uvicorn worker by default, so
that the process's pid is the server's and a signal sent to it (``kill -9`` included) reaches the
server. With ``workers=N`` the workers are that process's children, in a process group of their own
that :meth:`LiveServer.kill` kills whole. It listens on a free port of 127.0.0.1 unless told
otherwise, keeps its data under the caller's folder and writes its log to a file, whose end is in the
error when it fails to start. It returns once ``/readyz`` answers 200 (the model is loaded and warm)
and, with several workers, once ``/metrics`` shows every worker ready. :func:`cli_key` makes an API
key for the same folder with ``vipare keys create``.

The server's ``VIPARE_*`` settings are the ones given, never the caller's own ``VIPARE_*``
variables: a script gets the server it asked for, whatever its environment holds::

    from serving.launch import cli_key, start_server

    key = cli_key(data_dir, "agent", "nightly-check")
    server = start_server(data_dir, {"VIPARE_ANALYSIS_SLOTS": "2"})
    try:
        ...  # requests to server.url, with the header "Authorization: Bearer <key>"
    finally:
        server.stop()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from serving.private_files import PRIVATE_FILE

__all__ = ["HOST", "LiveServer", "cli_key", "free_port", "server_env", "start_server"]

HOST = "127.0.0.1"
"""Where :func:`start_server` binds by default: loopback, so that nothing outside the machine reaches it."""

# A proxy from the environment must not stand between a client and a server on the same machine.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on at ``host`` right now (another process may take it before you do)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its ``VIPARE_*`` variables, plus ``settings``.

    Args:
        settings: ``VIPARE_*`` variables for the command, e.g. ``{"VIPARE_INTRA_OP_THREADS": "1"}``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIPARE_")}
    env.update(settings or {})
    return env


def _vipare(*args: str) -> list[str]:
    return [sys.executable, "-m", "vipare.cli", *args]


def cli_key(
    data_dir: Path, role: str, name: str, settings: Mapping[str, str] | None = None, *, timeout_s: float = 120.0
) -> str:
    """Create an API key with ``vipare keys create`` on the store under ``data_dir`` (created).

    Args:
        data_dir: the service's data folder, as given to :func:`start_server`.
        role: the key's role (``agent``, ``camera``, ``manager``, ``admin``).
        name: a label for the key, shown by ``vipare keys list``.
        settings: ``VIPARE_*`` variables for the command, as for :func:`start_server` (e.g. the
            ``VIPARE_DATABASE_URL`` the server will use).
        timeout_s: how long the command may take.

    Returns:
        The key, to send as ``Authorization: Bearer <key>``.

    Raises:
        subprocess.CalledProcessError: the command failed (its stderr is on the exception).
    """
    done = subprocess.run(
        _vipare("keys", "create", "--role", role, "--name", name, "--data-dir", str(data_dir)),
        env=server_env(settings), capture_output=True, text=True, timeout=timeout_s, check=True,
    )
    return done.stdout.strip()


@dataclass
class LiveServer:
    """A running ``vipare serve`` process and where it keeps its data."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    data_dir: Path
    log_path: Path
    workers: int = 1

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    def log_tail(self, chars: int = 6000) -> str:
        """The last ``chars`` characters of the server's stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """Shut down gracefully (SIGTERM: uvicorn finishes the requests in flight), SIGKILL after ``timeout_s``.

        Returns:
            The process's exit status (negative: the signal that ended it).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        """``kill -9``: the process (with several workers: its whole group) dies at once, mid-work."""
        if self.workers > 1:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # the workers would outlive their parent
        elif self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def _ready(url: str, workers: int) -> bool:
    """Whether ``/readyz`` answers 200 and, with several workers, ``/metrics`` shows them all ready.

    False while nothing listens or it answers 503 (model not warm).
    """
    try:
        with _DIRECT.open(f"{url}/readyz", timeout=5.0) as answer:
            if answer.status != 200:
                return False
        if workers == 1:
            return True
        with _DIRECT.open(f"{url}/metrics", timeout=5.0) as answer:
            exposition = answer.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):  # HTTPError is a URLError
        return False
    ready = {
        sample.labels.get("pid")
        for family in text_string_to_metric_families(exposition) if family.name == "vipare_ready"
        for sample in family.samples if sample.value == 1
    }
    return len(ready) >= workers


def start_server(
    data_dir: Path,
    settings: Mapping[str, str] | None = None,
    *,
    host: str = HOST,
    port: int | None = None,
    workers: int = 1,
    log_path: Path | None = None,
    ready_timeout_s: float = 120.0,
) -> LiveServer:
    """Start ``vipare serve`` and return once ``/readyz`` answers 200.

    Args:
        data_dir: the service's data folder (database and photo store; created).
        settings: ``VIPARE_*`` variables for the server, e.g. ``{"VIPARE_ANALYSIS_SLOTS": "1"}``; the
            caller's own ``VIPARE_*`` variables are not passed on.
        host: the IPv4 interface to bind; anything but loopback needs an API key first (:func:`cli_key`).
        port: the port; default a free one (:func:`free_port`).
        workers: uvicorn worker processes (``--workers``); mind the CPU budget of :mod:`serving.config`.
        log_path: where the server's stdout and stderr go; default ``server-<data_dir name>-<port>.log``
            beside ``data_dir``.
        ready_timeout_s: how long to wait for the model to be loaded and warm (in every worker).

    Returns:
        The running server; stop it with :meth:`LiveServer.stop`.

    Raises:
        RuntimeError: the server exited or was not ready in time (killed then); the message ends with its log.
    """
    port = port or free_port(host)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir.parent / f"server-{data_dir.name}-{port}.log"
    # The log may hold request details: the same privacy as the data folder's files.
    with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb") as log:
        process = subprocess.Popen(
            _vipare("serve", "--host", host, "--port", str(port), "--workers", str(workers), "--data-dir",
                    str(data_dir), "--log-level", "warning"),
            env=server_env(settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=workers > 1,
        )
    server = LiveServer(process=process, host=host, port=port, data_dir=data_dir, log_path=log_path, workers=workers)
    deadline = time.monotonic() + ready_timeout_s
    while not _ready(server.url, workers):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the server was not ready after {ready_timeout_s:.0f} s:\n{server.log_tail()}")
        time.sleep(0.1)
    return server
