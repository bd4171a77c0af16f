"""``POST /v1/batches``: a camera sends many frames in one request; each is answered on its own.

Every frame goes through the same path as ``POST /v1/reports`` (:func:`serving.reports.upload.submit`):
de-duplication, analysis, location, photo store, incident. A frame that fails (not an image, no
position...) gets its own 4xx entry in the answer and the other frames are still taken in; the
request as a whole answers 200 once its body was read. The body has the byte limit of one upload
(``max_image_bytes`` plus form overhead, enforced while it streams in); each frame is held to
``max_image_bytes`` by the intake; at most ``max_batch_frames`` frames per request.

Multipart fields:

* ``frames`` (repeated): the frame files. A frame's time comes from EXIF, else from its file name
  (:mod:`serving.batch.times`; a name without an offset is read in ``tz``);
* ``manifest`` (optional): a JSON list with one object per frame, in order, each with optional
  ``captured_at`` (ISO 8601 with offset), ``lat``, ``lon``, ``accuracy_m`` (a vehicle's GPS log);
* ``tz`` (optional): the IANA time zone of times written without offset in file names (default UTC).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from serving.auth import Permission, Principal
from serving.batch.times import parse_tz, time_from_name
from serving.errors import ErrorBody, ServiceError, error_status
from serving.forms import invalid_field, read_form
from serving.reports.upload import submit
from serving.reports.view import load_report, report_out
from serving.routes.deps import ServiceDep, require
from serving.schemas import ReportForm, ReportOut, Timestamp
from serving.service import Service
from vipare.errors import VipareError

__all__ = ["BATCH_PATH", "BatchOut", "FrameMeta", "FrameResult", "router"]

BATCH_PATH = "/v1/batches"
FRAMES_FIELD = "frames"
MANIFEST_FIELD = "manifest"
TZ_FIELD = "tz"
_TEXT_PART_MAX = 1024 * 1024


class FrameMeta(BaseModel):
    """What a manifest says about one frame."""

    model_config = ConfigDict(extra="forbid")

    captured_at: Timestamp | None = Field(None, description="When the frame was taken, ISO 8601 with offset.")
    lat: float | None = Field(None, description="Latitude, decimal degrees (WGS 84), e.g. from a vehicle's GPS.")
    lon: float | None = None
    accuracy_m: float | None = None


class FrameResult(BaseModel):
    """The answer for one frame."""

    index: int = Field(description="The frame's position in the request, from 0.")
    filename: str | None
    status: int = Field(
        description="201: a new report; 200: this camera already sent this frame (its first report); "
        "413, 415, 422: refused (see code and detail); nothing was stored for it."
    )
    code: str | None = Field(None, description="For a refused frame: the error code, as in a single upload.")
    detail: str | None = None
    report: ReportOut | None = None


class BatchOut(BaseModel):
    """Per-frame results, in the order the frames were sent."""

    frames: list[FrameResult]
    created: int
    duplicates: int
    failed: int


_MANIFEST = TypeAdapter(list[FrameMeta])

router = APIRouter(tags=["reports"])


@router.post(
    BATCH_PATH,
    response_model=BatchOut,
    responses={
        401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
        403: {"model": ErrorBody, "description": "Only camera keys send batches."},
        413: {"model": ErrorBody, "description": "The request is over the byte limit of one upload."},
        422: {"description": "No frames, too many, or an invalid manifest or tz."},
        503: {"model": ErrorBody, "description": "The model is still loading; retry after the Retry-After delay."},
    },
    summary="Send many camera frames",
)
async def create_batch(
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.BATCH_CREATE))],
) -> BatchOut:
    """Send up to ``max_batch_frames`` frames (multipart field ``frames``, repeated), with an optional
    ``manifest`` (JSON list, one object per frame: ``captured_at``, ``lat``, ``lon``, ``accuracy_m``) and
    ``tz`` (zone of the times in file names, default UTC).

    Answers 200 with one result per frame, in order: 201 (new report), 200 (already sent by this
    camera) or the 4xx a single upload of that frame would get, with its code and message.
    """
    service.require_ready()
    limit = service.settings.max_batch_frames
    form = await read_form(request, max_files=limit, max_fields=4, max_part_size=_TEXT_PART_MAX)
    try:
        unknown = sorted({name for name in form if name not in (FRAMES_FIELD, MANIFEST_FIELD, TZ_FIELD)})
        if unknown:
            raise invalid_field(unknown[0], f"Unknown field; send {FRAMES_FIELD}, {MANIFEST_FIELD} and {TZ_FIELD}.")
        for name in (MANIFEST_FIELD, TZ_FIELD):
            if len(form.getlist(name)) > 1:
                raise invalid_field(name, "The field is sent more than once; send it once.")
        parts = form.getlist(FRAMES_FIELD)
        if not parts or not all(isinstance(part, UploadFile) for part in parts):
            raise invalid_field(FRAMES_FIELD, f"Send the frames as files in the multipart field '{FRAMES_FIELD}'.")
        manifest = _manifest(form.get(MANIFEST_FIELD), len(parts))
        try:
            tz = parse_tz(str(form.get(TZ_FIELD) or "UTC"))
        except ValueError as exc:
            raise invalid_field(TZ_FIELD, str(exc)) from None
        frames = [(part.filename, await part.read()) for part in parts if isinstance(part, UploadFile)]
    finally:
        await form.close()

    results: list[FrameResult | None] = [None] * len(frames)

    async def take(index: int) -> None:
        filename, data = frames[index]
        meta = manifest[index]
        try:
            fields = ReportForm(lat=meta.lat, lon=meta.lon, accuracy_m=meta.accuracy_m, captured_at=meta.captured_at)
            fallback = time_from_name(filename, tz) if filename else None
            outcome = await submit(service, principal, data, fields, fallback_time=fallback)
        except (VipareError, ServiceError) as exc:
            status, code = error_status(exc) or (500, "error")
            detail = exc.detail if isinstance(exc, ServiceError) else str(exc)
            results[index] = FrameResult(index=index, filename=filename, status=status, code=code, detail=detail)
            return
        report = await anyio.to_thread.run_sync(_report_out, service, outcome.report_id)
        status = 201 if outcome.created else 200
        results[index] = FrameResult(index=index, filename=filename, status=status, report=report)

    async with anyio.create_task_group() as group:
        for index in range(len(frames)):
            group.start_soon(take, index)
    done = [r for r in results if r is not None]
    return BatchOut(
        frames=done,
        created=sum(r.status == 201 for r in done),
        duplicates=sum(r.status == 200 for r in done),
        failed=sum(r.status >= 400 for r in done),
    )


def _report_out(service: Service, report_id: int) -> ReportOut:
    with service.sessions() as session:
        report = load_report(session, report_id)
        assert report is not None, "a report just stored or found"
        return report_out(report)


def _manifest(raw: Any, count: int) -> list[FrameMeta]:
    if raw is None:
        return [FrameMeta() for _ in range(count)]
    if not isinstance(raw, str):
        raise invalid_field(MANIFEST_FIELD, "Send the manifest as text (JSON), not a file.")
    try:
        manifest = _MANIFEST.validate_python(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise invalid_field(
            MANIFEST_FIELD,
            f"The manifest must be a JSON list of objects with captured_at, lat, lon, accuracy_m: {exc}"[:500],
        ) from None
    if len(manifest) != count:
        raise invalid_field(
            MANIFEST_FIELD, f"The manifest has {len(manifest)} entries for {count} frames; send one per frame."
        )
    return manifest
