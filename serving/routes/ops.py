"""Operations: liveness, readiness, Prometheus metrics. No key needed.

The model's identity and history (``/v1/model``) are in :mod:`serving.routes.models`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from serving.routes.deps import ServiceDep

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    """200 while the process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"description": "Starting (model not warm yet), warm-up failed, or the database is unreachable."}},
)
def readyz(service: ServiceDep) -> Any:
    """200 once the model is loaded and warm and the database answers; 503 before, or if the warm-up failed."""
    if service.warm_up_error is not None:
        return JSONResponse({"status": "failed", "detail": service.warm_up_error}, status_code=503)
    if not service.ready:
        return JSONResponse({"status": "starting", "detail": "the model is warming up"}, status_code=503)
    try:
        with service.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return JSONResponse({"status": "unavailable", "detail": f"database: {type(exc).__name__}"}, status_code=503)
    return {"status": "ready", "model_sha256": service.pipeline.detector.info.sha256}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Requests, latency, analysis time, detections by class, uploads by outcome, readiness."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
