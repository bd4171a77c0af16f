"""``/v1/reports``: upload a photo, read reports and their photos."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload
from starlette.datastructures import UploadFile

from serving.auth import Permission, Principal, Role
from serving.erasure import erase
from serving.errors import ErrorBody, NotFoundError, PermissionDeniedError
from serving.forms import read_form, text_fields
from serving.limits import FORM_OVERHEAD_BYTES
from serving.models import Report
from serving.observability import LOG_EXTRA_KEY
from serving.photos.annotated import ANNOTATED_CACHE, cached_annotated, keep_annotated
from serving.photos.render import render_annotated
from serving.photos.store import MEDIA_TYPES
from serving.reports.blurring import ensure_stored
from serving.reports.upload import Answered, submit
from serving.reports.view import can_read, load_report, report_out
from serving.retention import check_photo_kept
from serving.routes.deps import IdPath, Limit, Offset, ServiceDep, SessionDep, require, require_open311
from serving.routes.photo_response import photo_response
from serving.schemas import NOTE_MAX, ReportForm, ReportOut, ReportPage
from serving.service import Service
from vipare.results import Detection

__all__ = ["UPLOAD_PATH", "router", "upload_router"]

UPLOAD_PATH = "/v1/reports"

PHOTO_FIELD = "photo"
ANNOTATED_SIDE = 1600
THUMBNAIL_SIDE = 240
"""Longest side of the annotated photo, pixels."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "No API key, or an unknown or revoked one.",
        403: "The key's role may not do this.",
        404: "No such report, or not one of yours.",
    }.items()
}

_PHOTO_GONE: dict[str, Any] = {
    "model": ErrorBody,
    "description": "The photo is no longer kept (past its retention period, or erased); the report still is.",
}
_PHOTO_PENDING: dict[str, Any] = {
    "model": ErrorBody,
    "description": "Still being blurred after the read waited 30 s (code photo_pending): ask again after Retry-After.",
}

_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ReportOut,
        "description": "The same photo was already sent by this client: its first report (upgraded in place when "
        "sent again with agent_says_deposit=true).",
    },
    401: _ERRORS[401],
    403: {"model": ErrorBody, "description": "The key's role may not upload, or names a camera (camera_id) without "
          "being that camera's key."},
    413: {"model": ErrorBody, "description": "The upload or the image is too large."},
    415: {"model": ErrorBody, "description": "Not a JPEG, PNG, WebP or HEIC photo."},
    422: {
        "description": "Unreadable photo (empty, cut short, damaged), invalid coordinates, or no usable location "
        "(code location_missing: send lat and lon with the photo); or invalid form fields.",
    },
    503: {"model": ErrorBody, "description": "The model is still loading; retry after the Retry-After delay."},
}


def _upload_body_schema() -> dict[str, Any]:
    fields = ReportForm.model_json_schema()["properties"]
    photo = {"type": "string", "format": "binary", "description": "The photo: JPEG, PNG, WebP or HEIC."}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [PHOTO_FIELD],
                        "properties": {PHOTO_FIELD: photo, **fields},
                        "additionalProperties": False,
                    }
                }
            },
        }
    }


upload_router = APIRouter(tags=["reports"])
router = APIRouter(tags=["reports"], responses=_ERRORS)


@upload_router.post(
    UPLOAD_PATH,
    status_code=201,
    response_model=ReportOut,
    responses=_UPLOAD_ERRORS,
    openapi_extra=_upload_body_schema(),
    summary="Upload a photo",
)
async def create_report(
    request: Request,
    response: Response,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.REPORT_CREATE))],
) -> ReportOut:
    """Upload one photo (multipart field ``photo``) with optional ``lat``, ``lon``, ``accuracy_m``,
    ``captured_at``, ``camera_id``, ``note`` and ``agent_says_deposit``.

    201 with the new report: detections, verdict, location and its source, model identity, and the
    incident it opened or joined. 200 with the first report when this client already sent the same
    photo (it counts once). With ``agent_says_deposit=true`` ("report anyway") a photo the model sees no
    deposit in is grouped as one all the same, its incident marked ``to_review``; sent again so after a
    first send without it, the first report is upgraded in place (200). The key is checked and the
    model's readiness too before the body is read; the body's size is counted while it streams in.
    """
    service.require_ready()
    data, form = await _read_upload(request, service.settings.max_image_bytes + FORM_OVERHEAD_BYTES)
    _check_camera(principal, form.camera_id)
    outcome = await submit(service, principal, data, form)
    log = request.scope.get(LOG_EXTRA_KEY)
    if isinstance(log, dict):
        log["report_id"] = outcome.report_id
    response.status_code = 201 if outcome.created else 200
    if isinstance(outcome, Answered) and outcome.report is not None:  # read when it was stored
        return outcome.report
    return await anyio.to_thread.run_sync(_report_out, service, outcome.report_id)


def _report_out(service: Service, report_id: int) -> ReportOut:
    with service.sessions() as session:
        report = load_report(session, report_id)
        assert report is not None, "a report just stored or found"
        return report_out(report)


def _check_camera(principal: Principal, camera_id: str | None) -> None:
    """Only a camera key names the camera a photo comes from (and a key tied to a camera, only that one)."""
    if camera_id is None or principal.role is None:  # None: the open local trial, every permission
        return
    if principal.role is not Role.CAMERA:
        raise PermissionDeniedError(
            f"Only camera keys may name a camera (camera_id); this is a {principal.role} key. Send the photo without "
            "camera_id: it is recorded as yours."
        )
    if principal.camera_id is not None and camera_id != principal.camera_id:
        raise PermissionDeniedError(
            f"This key belongs to camera {principal.camera_id!r} and may not name another one; send camera_id "
            f"{principal.camera_id!r}, or none."
        )


async def _read_upload(request: Request, body_limit: int) -> tuple[bytes, ReportForm]:
    # The photo is read whole to be analysed: held in memory as it streams in, not spooled to a file.
    form = await read_form(
        request, max_files=1, max_fields=len(ReportForm.model_fields) + 4, max_part_size=4 * NOTE_MAX + 1024,
        in_memory=body_limit,
    )
    try:
        photo = form.get(PHOTO_FIELD)
        if not isinstance(photo, UploadFile):
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body", PHOTO_FIELD), "input": None,
                  "msg": f"Send the photo as a file in the multipart/form-data field '{PHOTO_FIELD}'."}]
            )
        # Each field once (no silent "last one wins"); an empty HTML form field means "not given".
        fields = {name: value for name, value in text_fields(form, skip={PHOTO_FIELD}).items() if value.strip()}
        try:
            parsed = ReportForm.model_validate(fields)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
            raise RequestValidationError(errors) from None
        data = await photo.read()
    finally:
        await form.close()
    return data, parsed


@router.get("/v1/reports", response_model=ReportPage, summary="List reports")
def list_reports(
    session: SessionDep,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.REPORT_READ_OWN))],
    limit: Limit = None,
    offset: Offset = 0,
    dumping: Annotated[bool | None, Query(description="Only photos with (true) or without (false) dumping.")] = None,
) -> ReportPage:
    """Reports, newest first: every report for a manager, an agent's own otherwise."""
    size = min(limit or service.settings.page_size, service.settings.max_page_size)
    where = []
    if not principal.can(Permission.REPORT_READ_ALL):
        where.append(Report.client_ref == principal.client_ref)
    if dumping is not None:
        where.append(Report.dumping.is_(dumping))
    total = session.scalar(select(func.count()).select_from(Report).where(*where)) or 0
    page = session.scalars(
        select(Report).options(selectinload(Report.incident), selectinload(Report.reviews)).where(*where)
        .order_by(Report.id.desc()).limit(size).offset(offset)
    )
    return ReportPage(items=[report_out(r) for r in page], total=total, limit=size, offset=offset)


def _readable(session: Session, principal: Principal, report_id: int) -> Report:
    report = load_report(session, report_id)
    if report is None or not can_read(principal, report):
        raise NotFoundError(f"There is no report #{report_id} you may read.")
    return report


@router.get("/v1/reports/{report_id}", response_model=ReportOut, summary="Read a report")
def get_report(
    report_id: IdPath,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require(Permission.REPORT_READ_OWN))],
) -> ReportOut:
    """One report (managers: any; agents: their own)."""
    return report_out(_readable(session, principal, report_id))


@router.get(
    "/v1/reports/{report_id}/image",
    response_class=Response,
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "The stored photo."},
        410: _PHOTO_GONE,
        503: _PHOTO_PENDING,
    },
    summary="The photo",
)
def get_report_image(
    report_id: IdPath,
    session: SessionDep,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require_open311(Permission.REPORT_READ_OWN))],
) -> Response:
    """The stored photo, as uploaded but without its EXIF GPS; 410 once it is no longer kept.

    The key may also come as ``?api_key=`` (an Open311 client following ``media_url``); never logged.
    """
    report = _readable(session, principal, report_id)
    check_photo_kept(report)
    if not ensure_stored(service, report.sha256, report.photo_ext, _detections(report), report.dumping,
                         report.agent_says_deposit):
        raise NotFoundError(f"The photo of report #{report_id} is missing from the store.")
    try:
        return photo_response(service.photos, report.sha256, report.photo_ext)
    except FileNotFoundError:  # deleted since the look above (erased, expired)
        raise NotFoundError(f"The photo of report #{report_id} is missing from the store.") from None


def _detections(report: Report) -> list[Detection]:
    return [Detection.model_validate(d) for d in report.detections]


@router.get(
    "/v1/reports/{report_id}/image/annotated",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The photo with boxes, JPEG."},
        410: _PHOTO_GONE,
        503: _PHOTO_PENDING,
    },
    summary="The photo with the detections drawn",
)
async def get_report_annotated(
    report_id: IdPath,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require_open311(Permission.REPORT_READ_OWN))],
) -> Response:
    """The photo, upright, with each detection's box and score, at most 1600 pixels wide or high.

    Open311's ``media_url``: the key may also come as ``?api_key=``, as Open311 clients send it (never logged).

    Drawn at the first request, then read from a cache (:mod:`serving.photos.annotated`).
    """
    return await _rendered(service, principal, report_id, boxes=True, side=ANNOTATED_SIDE)


@router.get(
    "/v1/reports/{report_id}/thumbnail",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "A small JPEG of the photo."},
        410: _PHOTO_GONE,
        503: _PHOTO_PENDING,
    },
    summary="A thumbnail of the photo",
)
async def get_report_thumbnail(
    report_id: IdPath,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require_open311(Permission.REPORT_READ_OWN))],
) -> Response:
    """The photo, upright, at most 240 pixels wide or high (lists, map popups); made once, then cached."""
    return await _rendered(service, principal, report_id, boxes=False, side=THUMBNAIL_SIDE)


async def _rendered(service: Service, principal: Principal, report_id: int, *, boxes: bool, side: int) -> Response:
    """The stored photo drawn at ``side`` pixels, with its boxes or without, from the cache or made now."""
    settings = service.settings

    photos = service.photos

    def find() -> tuple[str, str, list[Detection]]:
        with service.sessions() as session:
            report = _readable(session, principal, report_id)
            check_photo_kept(report)
            detections = _detections(report)
            if not ensure_stored(service, report.sha256, report.photo_ext, detections, report.dumping,
                                 report.agent_says_deposit):
                raise NotFoundError(f"The photo of report #{report_id} is missing from the store.")
            return report.sha256, report.photo_ext, detections if boxes else []

    sha256, ext, detections = await anyio.to_thread.run_sync(find)

    try:
        entry, jpeg = await anyio.to_thread.run_sync(
            lambda: cached_annotated(
                settings.data_dir / ANNOTATED_CACHE, sha256, photos.version(sha256, ext), detections, max_side=side
            )
        )
        if jpeg is None:  # drawn once, in one of the analysis slots: it decodes the photo
            jpeg = await anyio.to_thread.run_sync(
                lambda: render_annotated(
                    photos.local_path(sha256, ext) or photos.read(sha256, ext), detections, max_side=side,
                    max_pixels=settings.max_image_pixels, max_non_jpeg_pixels=settings.max_non_jpeg_pixels,
                ),
                limiter=service.analysis_limiter,
            )
            await anyio.to_thread.run_sync(keep_annotated, entry, jpeg)
    except FileNotFoundError:  # deleted since the look above (erased, expired)
        raise NotFoundError(f"The photo of report #{report_id} is missing from the store.") from None
    return Response(jpeg, media_type="image/jpeg")


@router.post("/v1/reports/{report_id}/erase", response_model=ReportOut, summary="Erase a report's photo and sender")
def erase_report(
    report_id: IdPath,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.REPORT_ERASE))],
) -> ReportOut:
    """Erase a report on request (admins): its photo, unless another report has the same file, its note
    and who sent it; the incident's history records "report #N erased" and nothing of what was erased.

    The report stays as an anonymous sighting of the deposit (detections, place, time), so the
    incident's counts do not change. Erasing it again changes nothing. See :mod:`serving.erasure`.
    """
    erase(
        service.sessions, service.photos, report_id, actor=principal.actor, actor_key_id=principal.key_id,
        annotated_cache=service.settings.data_dir / ANNOTATED_CACHE,
    )
    return _report_out(service, report_id)
