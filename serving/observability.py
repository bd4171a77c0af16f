"""Metrics (Prometheus) and one structured JSON log line per request.

Metrics live in a registry per application (tests build several apps in one process). With several
uvicorn workers each process counts its own requests; aggregate them with prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) or scrape each worker - not done here.

A request's log line::

    {"ts": "2024-05-01T09:30:00.123Z", "level": "INFO", "logger": "serving.access", "event": "request",
     "request_id": "...", "method": "POST", "route": "/v1/reports", "status": 201, "duration_ms": 84.2,
     "key": "agent-7 (agent)", "report_id": 12}

The query string is never logged (Open311 clients may put their key there).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vipare.results import Detection

__all__ = ["LOG_EXTRA_KEY", "JsonFormatter", "Metrics", "RequestLogMiddleware", "configure_logging"]

ACCESS_LOGGER = "serving.access"
LOG_EXTRA_KEY = "vipare.log"
"""``scope[LOG_EXTRA_KEY]`` is a dict whose items are added to the request's log line."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STANDARD_RECORD_KEYS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class Metrics:
    """The service's metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vipare_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "vipare_http_request_duration_seconds", "Time to answer an HTTP request.", ["method", "route"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.analysis = Histogram(
            "vipare_analysis_duration_seconds", "Time to decode and analyse one photo (off the event loop).",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.detections = Counter(
            "vipare_detections", "Detections in accepted photos, by class.", ["label"], registry=self.registry
        )
        self.reports = Counter(
            "vipare_reports", "Uploads by outcome (created, duplicate, rejected).", ["outcome"], registry=self.registry
        )
        self.ready = Gauge("vipare_ready", "1 once the model is loaded and warm.", registry=self.registry)

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
