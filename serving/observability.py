"""Metrics (Prometheus) and one structured JSON log line per request.

Metrics live in a registry per application (tests build several apps in one process). With several
uvicorn workers, ``vipare serve`` gives them prometheus_client's multiprocess mode
(:func:`worker_metrics_dir`): before it starts the workers it makes a fresh private folder and names
it in ``PROMETHEUS_MULTIPROC_DIR``. prometheus_client reads that variable when it is first imported,
so each worker, a new interpreter, writes its values to files of its own there (``counter_<pid>.db``
...), and ``/metrics``, whichever worker answers, reads every worker's files: the counts of all of
them, those of workers that have died included (a counter never goes down). ``vipare_ready`` is
shown per live worker (label ``pid``); a worker removes its own gauge files when it stops
(:meth:`Metrics.close`), and a worker starting removes those of workers that died without stopping.
Without the variable (one worker, tests, an app embedded in another program) each app counts in
memory and shows its own counts.

A request's log line::

    {"ts": "2024-05-01T09:30:00.123Z", "level": "INFO", "logger": "serving.access", "event": "request",
     "request_id": "...", "method": "POST", "route": "/v1/reports", "status": 201, "duration_ms": 84.2,
     "key": "agent-7 (agent)", "report_id": 12}

The query string is never logged (Open311 clients may put their key there).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vipare.results import Detection

__all__ = [
    "LOG_EXTRA_KEY",
    "MULTIPROC_DIR_VARIABLE",
    "JsonFormatter",
    "Metrics",
    "RequestLogMiddleware",
    "configure_logging",
    "multiprocess_dir",
    "worker_metrics_dir",
]

ACCESS_LOGGER = "serving.access"
LOG_EXTRA_KEY = "vipare.log"
"""``scope[LOG_EXTRA_KEY]`` is a dict whose items are added to the request's log line."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STANDARD_RECORD_KEYS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's own variable (not a ``VIPARE_*`` setting): the folder of the processes' metric files."""
_LEGACY_MULTIPROC_DIR_VARIABLE = MULTIPROC_DIR_VARIABLE.lower()  # still read by prometheus_client
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")
_METRICS_PREFIX = "vipare-metrics-"
_METRICS_FOLDER = re.compile(re.escape(_METRICS_PREFIX) + r"(\d+)-[^/]+")


def multiprocess_dir() -> Path | None:
    """The folder this process's metric values are written to, or None when they are kept in memory.

    prometheus_client decides once, when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``;
    this asks it what it decided, so that a variable set after the import is not mistaken for it.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return Path(os.environ.get(MULTIPROC_DIR_VARIABLE) or os.environ[_LEGACY_MULTIPROC_DIR_VARIABLE])


@contextmanager
def worker_metrics_dir(workers: int) -> Iterator[Path | None]:
    """For the process that starts ``workers`` uvicorn workers: where they share their metrics.

    With several workers, a new private folder (mode 0700, under the system's temporary folder, so
    never one that another server or an earlier run wrote to) named in ``PROMETHEUS_MULTIPROC_DIR``
    for the workers to inherit, deleted with its files on exit. Its name carries this process's id:
    the folders of servers that were killed (``kill -9``, a power cut) are deleted here, those of
    servers still running are left alone. Must be entered before the workers import
    prometheus_client: uvicorn starts them as new interpreters, which do.

    With one worker, nothing: uvicorn runs it in this process, where prometheus_client may already
    have read the variable, so changing it now would leave the two disagreeing. The worker counts in
    memory, unless the variable was set before the command started.

    Yields:
        The folder, or None with one worker.
    """
    if workers <= 1:
        yield None
        return
    _forget_dead_servers(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-"))
    os.environ[MULTIPROC_DIR_VARIABLE] = str(folder)
    os.environ.pop(_LEGACY_MULTIPROC_DIR_VARIABLE, None)
    try:
        yield folder
    finally:
        if os.environ.get(MULTIPROC_DIR_VARIABLE) == str(folder):
            del os.environ[MULTIPROC_DIR_VARIABLE]
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _forget_dead_servers(temp: Path) -> None:
    """Delete the metrics folders (:func:`worker_metrics_dir`) in ``temp`` of this user's servers that ended without
    deleting theirs."""
    for folder in temp.glob(f"{_METRICS_PREFIX}*"):
        match = _METRICS_FOLDER.fullmatch(folder.name)
        try:
            mine = folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == os.getuid()
        except OSError:
            continue
        if match and mine and not _alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)


def _forget_dead_processes(folder: Path) -> None:
    """Remove the live gauges' files of processes that ended without :meth:`Metrics.close` (killed)."""
    for path in folder.glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match and not _alive(pid := int(match.group(1))):
            multiprocess.mark_process_dead(pid, str(folder))


class Metrics:
    """The service's metrics, in their own registry.

    ``registry`` is what ``/metrics`` shows: this app's metrics, or, in multiprocess mode
    (:func:`multiprocess_dir`), every process's values read from the shared folder.
    """

    def __init__(self) -> None:
        own = CollectorRegistry()
        self.requests = Counter(
            "vipare_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=own
        )
        self.latency = Histogram(
            "vipare_http_request_duration_seconds", "Time to answer an HTTP request.", ["method", "route"],
            buckets=_LATENCY_BUCKETS, registry=own,
        )
        self.analysis = Histogram(
            "vipare_analysis_duration_seconds", "Time to decode and analyse one photo (off the event loop).",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=own,
        )
        self.detections = Counter(
            "vipare_detections", "Detections in accepted photos, by class.", ["label"], registry=own
        )
        self.reports = Counter(
            "vipare_reports", "Uploads by outcome (created, duplicate, rejected).", ["outcome"], registry=own
        )
        # Across workers: one sample per live worker (label pid), as readiness is each worker's own.
        self.ready = Gauge(
            "vipare_ready", "1 once the model is loaded and warm.", multiprocess_mode="liveall", registry=own
        )
        self.folder = multiprocess_dir()
        """The shared folder of multiprocess mode, or None."""
        if self.folder is None:
            self.registry = own
        else:
            _forget_dead_processes(self.folder)
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry, path=str(self.folder))

    def close(self) -> None:
        """At the worker's shutdown: remove its live gauges from the shared folder (its counts stay)."""
        if self.folder is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.folder))

    def count_detections(self, detections: Iterable[Detection]) -> None:
        """Count an accepted photo's detections by class."""
        for detection in detections:
            self.detections.labels(label=detection.label).inc()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        message = record.getMessage()
        if message:
            line["event"] = message
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_KEYS})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    """Send the service's loggers (``serving.*``) to stderr as JSON lines, once."""
    logger = logging.getLogger("serving")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False


def _route_template(scope: Scope) -> str:
    """The matched route's path template (few, bounded label values), or 'unmatched'."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class RequestLogMiddleware:
    """Pure ASGI middleware: request id, metrics and one log line per HTTP request.

    Args:
        app: the wrapped application.
        metrics: where to count.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        extra: dict[str, Any] = {}
        scope[LOG_EXTRA_KEY] = extra
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = scope["method"]
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=route).observe(elapsed)
            self.logger.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    **extra,
                },
            )
