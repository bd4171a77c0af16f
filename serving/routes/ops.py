"""Operations: liveness, readiness, the model's identity, Prometheus metrics. No key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from serving.incidents import FAMILIES
from serving.routes.deps import ServiceDep
from serving.schemas import ModelOut
from vipare.taxonomy import DEPOSIT_CLASSES

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


@router.get("/v1/model", response_model=ModelOut, tags=["model"], summary="The model in service")
def model(service: ServiceDep) -> ModelOut:
    """The model's identity (file sha256, classes, input size), the thresholds applied and the class families.

    Every report carries the same identity, so any detection can be traced to exact weights. The
    thresholds are those of the loaded detector and pipeline, which may differ from the settings when
    the app was given a detector.
    """
    pipeline = service.pipeline
    detector = pipeline.detector
    return ModelOut(
        model=detector.info,
        conf_threshold=detector.conf_threshold,
        iou_threshold=detector.iou_threshold,
        max_detections=detector.max_detections,
        verdict_threshold=pipeline.settings.verdict_threshold,
        deposit_classes=sorted(DEPOSIT_CLASSES),
        class_families=dict(FAMILIES),
        ready=service.ready,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Requests, latency, analysis time, detections by class, uploads by outcome, readiness."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
