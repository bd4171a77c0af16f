"""The model in service: its identity and history (anyone), promoting and rolling back (admin keys).

Who promoted a model, why, and its card are shown to admin keys only (a key's name is often a
person's); anyone else sees when each model came into service.

A promotion over HTTP is checked and recorded like ``vipare models promote`` (see
:mod:`serving.model_registry`); the worker that takes it switches at once, with the detector it
checked, and the other workers within ``model_check_s`` seconds. Uploads already running finish on
the model they started with.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from serving.auth import Permission, Principal
from serving.errors import ErrorBody
from serving.forms import invalid_field, read_form
from serving.grouping import FAMILIES
from serving.model_registry import (
    Promotion,
    list_promotions,
    parse_card,
    promote,
    rollback,
)
from serving.routes.deps import ServiceDep, get_optional_principal, require
from serving.schemas import COMMENT_MAX, ModelOut
from serving.service import Service
from serving.text import FreeText, clean_free_text
from vipare.detection import Detector
from vipare.taxonomy import DEPOSIT_CLASSES

__all__ = ["MODELS_PATH", "ModelStateOut", "PromotionOut", "router"]

MODELS_PATH = "/v1/models"
MODEL_FIELD, COMMENT_FIELD, CARD_FIELD = "model", "comment", "card"
_CARD_MAX = 1024 * 1024

router = APIRouter(tags=["model"])
AdminPrincipal = Annotated[Principal, Depends(require(Permission.MODEL_MANAGE))]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "Only admin keys promote models."},
}


_ADMINS_ONLY = " Null unless the caller's key may promote models."


class PromotionOut(BaseModel):
    """One promotion: the model every worker was told to run from then on."""

    sha256: str = Field(description="The model file's sha256, as in the reports it analysed.")
    promoted_at: datetime
    promoted_by: str | None = Field(None, description="The admin key's name, or who ran vipare models." + _ADMINS_ONLY)
    previous_sha256: str | None = Field(None, description="The model it replaced, when known." + _ADMINS_ONLY)
    comment: str | None = Field(None, description="Why." + _ADMINS_ONLY)
    card: dict[str, Any] | None = Field(None, description="The model card given with it." + _ADMINS_ONLY)

    @classmethod
    def of(cls, promotion: Promotion, *, full: bool) -> PromotionOut:
        """The view of a promotion: with who, why and the card when ``full``, else only what and when."""
        if not full:
            return cls(sha256=promotion.sha256, promoted_at=promotion.promoted_at)
        return cls(
            sha256=promotion.sha256,
            promoted_at=promotion.promoted_at,
            promoted_by=promotion.promoted_by,
            previous_sha256=promotion.previous_sha256,
            comment=promotion.comment,
            card=promotion.card,
        )


class ModelStateOut(ModelOut):
    """The model this worker runs, and the promotions' history."""

    history: list[PromotionOut] = Field(
        description="Promotions, newest first. The first is the model every worker switches to within "
        "model_check_s seconds; empty while the service runs its configured model."
    )


class RollbackIn(BaseModel):
    """Why the model goes back."""

    comment: FreeText | None = Field(None, max_length=COMMENT_MAX)


def _state(service: Service, *, full: bool) -> ModelStateOut:
    pipeline = service.pipeline
    detector = pipeline.detector
    with service.sessions() as session:
        history = [PromotionOut.of(p, full=full) for p in list_promotions(session)]
    return ModelStateOut(
        model=detector.info,
        conf_threshold=detector.conf_threshold,
        iou_threshold=detector.iou_threshold,
        box_merge_iou=detector.merge_iou,
        max_detections=detector.max_detections,
        verdict_threshold=pipeline.settings.verdict_threshold,
        verdict_thresholds=pipeline.verdict_thresholds,
        deposit_classes=sorted(DEPOSIT_CLASSES),
        class_families=dict(FAMILIES),
        ready=service.ready,
        history=history,
    )


@router.get("/v1/model", response_model=ModelStateOut, summary="The model in service")
def model(
    service: ServiceDep, principal: Annotated[Principal | None, Depends(get_optional_principal)]
) -> ModelStateOut:
    """The model's identity (file sha256, classes, input size), the thresholds applied, the class families
    and the promotions' history: who promoted each model, why and its card for an admin key only.

    Every report carries the same identity, so any detection can be traced to exact weights. The
    thresholds are those of the loaded detector and pipeline, which may differ from the settings when
    the app was given a detector.
    """
    return _state(service, full=principal is not None and principal.can(Permission.MODEL_MANAGE))


def _promotion_body_schema() -> dict[str, Any]:
    properties = {
        MODEL_FIELD: {"type": "string", "format": "binary", "description": "The ONNX file."},
        COMMENT_FIELD: {"type": "string", "maxLength": COMMENT_MAX, "description": "Why."},
        CARD_FIELD: {"type": "string", "format": "binary", "description": "Its model card (JSON object)."},
    }
    schema = {"type": "object", "required": [MODEL_FIELD], "properties": properties, "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def _text(value: UploadFile | str | None, field: str, limit: int) -> bytes | None:
    if value is None:
        return None
    data = await value.read(limit + 1) if isinstance(value, UploadFile) else value.encode()
    if len(data) > limit:  # cut short, it would be refused as "not JSON"
        raise invalid_field(
            field, f"Too large: at most {limit // 1024} KiB; send the .json card the export step wrote."
        )
    return data if data.strip() else None


def _promote(
    service: Service, upload: UploadFile, principal: Principal, comment: str | None, card: dict[str, Any] | None
) -> tuple[Promotion, Detector]:
    return promote(
        service.sessions,
        service.settings,
        upload.file,
        name=upload.filename or "the uploaded model",
        promoted_by=principal.actor,
        comment=comment,
        card=card,
        replacing=service.pipeline.detector.info.sha256,
    )


@router.post(
    MODELS_PATH,
    status_code=201,
    response_model=ModelStateOut,
    responses={
        **_ERRORS,
        413: {"model": ErrorBody, "description": "The file is over the size a model may have."},
        422: {"model": ErrorBody, "description": "Not a vipare detector of the project's classes (nothing kept)."},
    },
    openapi_extra=_promotion_body_schema(),
    summary="Promote a model",
)
async def promote_model(request: Request, service: ServiceDep, principal: AdminPrincipal) -> ModelStateOut:
    """Make an ONNX file (multipart field ``model``, with optional ``comment`` and ``card``) the model in service.

    The file must load as vipare's detector, with the metadata Ultralytics' exporter writes and the
    project's classes in the project's order; it runs one warm-up inference. Else 422 says why, and
    nothing is kept. Accepted, it is kept under the data folder by its sha256 and recorded; this worker
    switches at once, the others within ``model_check_s`` seconds. 201 with the model now in service.
    """
    form = await read_form(request, max_files=2, max_fields=2, max_part_size=4 * COMMENT_MAX)
    try:
        unknown = sorted(name for name in form if name not in (MODEL_FIELD, COMMENT_FIELD, CARD_FIELD))
        if unknown:
            raise invalid_field(
                unknown[0], f"Unknown field; send {MODEL_FIELD}, and optionally {COMMENT_FIELD} and {CARD_FIELD}."
            )
        for name in (MODEL_FIELD, COMMENT_FIELD, CARD_FIELD):
            if len(form.getlist(name)) > 1:
                raise invalid_field(name, "The field is sent more than once; send it once.")
        upload = form.get(MODEL_FIELD)
        if not isinstance(upload, UploadFile):
            raise invalid_field(MODEL_FIELD, f"Send the ONNX file in the multipart/form-data field '{MODEL_FIELD}'.")
        comment = form.get(COMMENT_FIELD)
        if isinstance(comment, UploadFile):
            raise invalid_field(COMMENT_FIELD, "Send text, not a file.")
        if comment is not None and len(comment) > COMMENT_MAX:
            raise invalid_field(COMMENT_FIELD, f"At most {COMMENT_MAX} characters.")
        card_bytes = await _text(form.get(CARD_FIELD), CARD_FIELD, _CARD_MAX)
        card = parse_card(card_bytes, "the card") if card_bytes is not None else None
        promotion, detector = await anyio.to_thread.run_sync(
            _promote, service, upload, principal, (clean_free_text(comment).strip() or None) if comment else None, card
        )
    finally:
        await form.close()
    await anyio.to_thread.run_sync(service.install, detector, promotion.id)
    return await anyio.to_thread.run_sync(lambda: _state(service, full=True))


@router.post(
    f"{MODELS_PATH}/rollback",
    status_code=201,
    response_model=ModelStateOut,
    responses={
        **_ERRORS,
        409: {"model": ErrorBody, "description": "No earlier model to go back to."},
        422: {"model": ErrorBody, "description": "The earlier model's file no longer loads."},
    },
    summary="Roll back to the model before",
)
def rollback_model(service: ServiceDep, principal: AdminPrincipal, body: RollbackIn | None = None) -> ModelStateOut:
    """Promote again the model in service before the current one (a new row in the history), with an
    optional ``{"comment": "..."}``. This worker switches at once, the others within ``model_check_s``
    seconds. 409 when there is none (no promotion yet, or only one and the configured model changed).
    """
    promotion, detector = rollback(
        service.sessions, service.settings, promoted_by=principal.actor, comment=body.comment if body else None
    )
    service.install(detector, promotion.id)
    return _state(service, full=True)
