"""``/v1/reports/{id}/original`` and ``/v1/originals/reads``: unblurred originals, read under a log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from serving.auth import Permission, Principal
from serving.errors import ErrorBody, OriginalNotKeptError
from serving.models import Report
from serving.originals import read_original, reads
from serving.photos.store import MEDIA_TYPES
from serving.reports.blurring import ensure_stored
from serving.routes.deps import IdPath, Limit, Offset, ServiceDep, SessionDep, require
from serving.routes.photo_response import photo_response
from serving.schemas import MAX_ID, OriginalReadOut, OriginalReadPage
from serving.text import FreeText
from vipare.results import Detection

__all__ = ["router"]

router = APIRouter(
    tags=["originals"],
    responses={
        401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
        403: {"model": ErrorBody, "description": "The key's role may not do this."},
    },
)

REASON_MIN, REASON_MAX = 10, 1000


@router.get(
    "/v1/reports/{report_id}/original",
    response_class=Response,
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "The photo as sent, not blurred."},
        404: {"model": ErrorBody, "description": "No such report."},
        410: {"model": ErrorBody, "description": "Its original is not kept (code original_not_kept)."},
    },
    summary="The unblurred original (privacy officers; every read logged)",
)
def get_original(
    report_id: IdPath,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.ORIGINAL_READ))],
    reason: Annotated[
        FreeText,
        Query(min_length=REASON_MIN, max_length=REASON_MAX, description="Why it is read (kept in the log)."),
    ],
) -> Response:
    """The photo as sent, faces and plates readable, metadata removed, while it is kept
    (``VIPARE_KEEP_ORIGINALS_DAYS``). The read, with its reason, is logged before it is served."""
    with service.sessions() as session:  # a photo sent a moment ago: its original is kept with its blurred copy
        report = session.get(Report, report_id)
        if report is not None and report.photo_deleted_at is None:
            detections = [Detection.model_validate(d) for d in report.detections]
            ensure_stored(service, report.sha256, report.photo_ext, detections, report.dumping,
                          report.agent_says_deposit)
    sha256, ext = read_original(service.sessions, service.photos, report_id, principal, reason)
    try:
        return photo_response(service.photos, sha256, ext, "original", headers={"Cache-Control": "no-store"})
    except FileNotFoundError:  # expired or erased since the read was logged
        raise OriginalNotKeptError(f"The unblurred original of report #{report_id} is no longer kept.") from None


@router.get("/v1/originals/reads", response_model=OriginalReadPage, summary="The log of reads of originals")
def list_reads(
    session: SessionDep,
    service: ServiceDep,
    _principal: Annotated[Principal, Depends(require(Permission.ORIGINAL_AUDIT))],
    report_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only the reads of this report.")] = None,
    limit: Limit = None,
    offset: Offset = 0,
) -> OriginalReadPage:
    """Who read which original, when and why; newest first (admins and privacy officers)."""
    size = min(limit or service.settings.page_size, service.settings.max_page_size)
    rows, total = reads(session, report_id=report_id, limit=size, offset=offset)
    items = [
        OriginalReadOut(id=r.id, report_id=r.report_id, read_at=r.read_at, reader=r.reader, reason=r.reason)
        for r in rows
    ]
    return OriginalReadPage(items=items, total=total, limit=size, offset=offset)
