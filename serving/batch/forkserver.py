"""Where the local engine's worker processes come from, and how many cores they may use.

Light on purpose (the standard library only): ``vipare batch`` imports it first and starts the fork
server before it imports anything else, so that the server imports the library for the workers
while the job's own process imports the store's. On Linux the workers come from that server
(:func:`start_worker_server`): a fresh process that imports :data:`WORKER_MODULES` once, then forks a
worker per request, which then only loads its own onnxruntime session. The server never runs an
analysis, so no thread pool of OpenCV or onnxruntime is half-copied into a worker. Elsewhere (macOS,
Windows) workers are spawned.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

__all__ = ["WORKER_MODULES", "available_cores", "default_start_method", "ensure_fork_server", "start_worker_server"]

WORKER_MODULES = ["serving.batch.preload"]
"""What the fork server imports: :mod:`serving.batch.preload` (the analysis and the library, and a quick exit)."""


def default_start_method() -> str:
    """``forkserver`` on Linux (see the module doc), ``spawn`` elsewhere."""
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


def start_worker_server() -> None:
    """Start the fork server now, importing :data:`WORKER_MODULES`, if workers are to come from one.

    Returns at once; the server imports in the background. Later pools fork their workers from it.
    """
    if default_start_method() == "forkserver":
        ensure_fork_server()


def ensure_fork_server() -> None:
    """Start the fork server with :data:`WORKER_MODULES` preloaded, unless it runs already."""
    from multiprocessing import forkserver

    multiprocessing.set_forkserver_preload(WORKER_MODULES)  # read only when the server starts
    forkserver.ensure_running()


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
