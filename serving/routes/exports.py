"""Exports for managers and city systems: CSV, GeoJSON, and Open311 GeoReport v2 (read-only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from serving.auth import Permission, Principal
from serving.bulk_exports import csv_text, geojson_text, photo_link
from serving.errors import ErrorBody, NotFoundError
from serving.export_jobs import MEDIA_TYPES, ExportJob, ExportNotReadyError
from serving.exports import FRENCH_EXCEL, OPEN311_SERVICES, SCRIPT_CSV, CsvFormat, incident_addresses, open311_request
from serving.incidents import OPEN_STATUSES, Status
from serving.models import utcnow
from serving.queries import IncidentFilter, iter_incidents, last_comments, latest_reports
from serving.routes.deps import IdPath, ServiceDep, require, require_open311
from serving.routes.incidents import FilterDep
from serving.routes.photo_response import streamed
from serving.schemas import MAX_ID, ExportJobOut, Timestamp
from serving.service import Service

__all__ = ["OPEN311_DEFAULT_DAYS", "OPEN311_MAX_REQUESTS", "CsvFormatDep", "csv_format", "router"]

OPEN311_DEFAULT_DAYS = 90
"""Open311: without dates or ids, requests.json returns the last 90 days."""
OPEN311_MAX_REQUESTS = 1000
"""Open311: at most this many requests per answer."""

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "The key's role may not export."},
}

router = APIRouter(responses=_AUTH_ERRORS)


def csv_format(
    excel: Annotated[
        Literal["fr"] | None,
        Query(description="fr: for a French Excel (semicolons, decimal commas, UTF-8 BOM); the other parameters "
              "override it one by one."),
    ] = None,
    sep: Annotated[Literal["comma", "semicolon"] | None, Query(description="Between cells (default comma).")] = None,
    decimal: Annotated[
        Literal["point", "comma"] | None, Query(description="Decimal mark of numbers (default point).")
    ] = None,
    bom: Annotated[bool | None, Query(description="Start with a UTF-8 byte order mark (default false).")] = None,
) -> CsvFormat:
    """The CSV flavour a request asks for: the script default, or :data:`FRENCH_EXCEL` with ``excel=fr``."""
    base = FRENCH_EXCEL if excel == "fr" else SCRIPT_CSV
    return CsvFormat(
        separator=base.separator if sep is None else {"comma": ",", "semicolon": ";"}[sep],
        decimal_comma=base.decimal_comma if decimal is None else decimal == "comma",
        bom=base.bom if bom is None else bom,
    )


CsvFormatDep = Annotated[CsvFormat, Depends(csv_format)]


ExportPrincipal = Annotated[Principal, Depends(require(Permission.EXPORT))]
Open311Principal = Annotated[Principal, Depends(require_open311(Permission.EXPORT))]


@router.get(
    "/v1/exports/incidents.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "One row per incident."}},
    tags=["exports"],
    summary="Incidents as CSV",
)
def export_csv(
    service: ServiceDep, flt: FilterDep, fmt: CsvFormatDep, _principal: ExportPrincipal
) -> StreamingResponse:
    """Every matching incident: id, class, status, lat, lon, the nearest address (street, house_number,
    postcode, city; empty without an address index or none near), first and last seen, when it entered
    each status, merge target, report and recurrence counts, the best score, the link to the latest
    photo still kept (absolute under ``VIPARE_PUBLIC_URL``; fetch it with the key) and the note of the
    latest report that has one.

    Commas and decimal points by default; ``excel=fr`` for a French Excel (semicolons, decimal commas,
    UTF-8 BOM), or ``sep``, ``decimal``, ``bom`` one by one. Lines end with CRLF.
    """

    return StreamingResponse(
        csv_text(service, flt, fmt),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="incidents.csv"'},
    )


@router.get(
    "/v1/exports/incidents.geojson",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/geo+json": {}}, "description": "A FeatureCollection."}},
    tags=["exports"],
    summary="Incidents as one GeoJSON file",
)
def export_geojson(service: ServiceDep, flt: FilterDep, _principal: ExportPrincipal) -> StreamingResponse:
    """Every matching incident in one FeatureCollection (RFC 7946, ``[lon, lat]``), without paging; each
    with its nearest ``address`` when the service has an address index.
    """
    return StreamingResponse(
        geojson_text(service, flt),
        media_type="application/geo+json",
        headers={"Content-Disposition": 'attachment; filename="incidents.geojson"'},
    )


# --------------------------------------------------------------------------------------------------
# Export jobs


JobId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="The job's id (32 hexadecimal digits).")]


def _job_out(job: ExportJob) -> ExportJobOut:
    base = f"/v1/exports/jobs/{job.id}"
    return ExportJobOut(
        id=job.id, format=job.kind, status=job.status, query=job.query, created_by=job.created_by,
        created_at=job.created_at, updated_at=job.updated_at, incidents=job.incidents, size_bytes=job.size_bytes,
        finished_at=job.finished_at, error=job.error, status_url=base, file_url=f"{base}/file" if job.status == "done"
        else None,
    )


def _job(service: Service, job_id: str) -> ExportJob:
    job = service.exports.get(job_id)
    if job is None:
        raise _gone(job_id, service)
    return job


def _gone(job_id: str, service: Service) -> NotFoundError:
    return NotFoundError(f"There is no export job {job_id} (finished jobs are kept "
                         f"{service.settings.export_keep_hours} hours).")


@router.post(
    "/v1/exports/jobs",
    status_code=202,
    response_model=ExportJobOut,
    tags=["exports"],
    summary="Start an export job (a national export)",
)
def start_export_job(
    request: Request,
    service: ServiceDep,
    flt: FilterDep,
    fmt: CsvFormatDep,
    principal: ExportPrincipal,
    kind: Annotated[Literal["csv", "geojson"], Query(alias="format", description="The file's format.")] = "csv",
) -> JSONResponse:
    """Write the matching incidents (the same filters and CSV options as the exports above) to a file in the
    background, for exports too large to stream in one request: a département's years, the whole country.

    Answers 202 at once with the job (``Location``: its status); ask ``status_url`` until ``status`` is
    ``done``, then download ``file_url`` (kept ``VIPARE_EXPORT_KEEP_HOURS``). A job stopped by a restart
    reads ``failed``: start it again.
    """
    if kind == "csv":
        job = service.exports.start(
            "csv", lambda progress: csv_text(service, flt, fmt, progress), query=request.url.query,
            created_by=principal.name,
        )
    else:
        job = service.exports.start(
            "geojson", lambda progress: geojson_text(service, flt, progress), query=request.url.query,
            created_by=principal.name,
        )
    out = _job_out(job)
    return JSONResponse(out.model_dump(mode="json"), status_code=202, headers={"Location": out.status_url})


@router.get("/v1/exports/jobs/{job_id}", response_model=ExportJobOut, tags=["exports"], summary="An export job")
def export_job(service: ServiceDep, job_id: JobId, _principal: ExportPrincipal) -> ExportJobOut:
    """How far the job went; ``file_url`` once it is done."""
    return _job_out(_job(service, job_id))


@router.get(
    "/v1/exports/jobs/{job_id}/file",
    response_class=FileResponse,
    responses={200: {"content": {"text/csv": {}, "application/geo+json": {}}, "description": "The file."},
               409: {"model": ErrorBody, "description": "Still running (ask again later), or failed."}},
    tags=["exports"],
    summary="An export job's file",
)
def export_job_file(service: ServiceDep, job_id: JobId, _principal: ExportPrincipal) -> Response:
    """The file a done job wrote (from this host's disk, or streamed from the bucket that keeps it)."""
    job = _job(service, job_id)
    if job.status == "running":
        raise ExportNotReadyError(f"Export job {job_id} is still running ({job.incidents} incidents written): "
                                  "ask again in a moment.", headers={"Retry-After": "5"})
    if job.status == "failed":
        raise ExportNotReadyError(f"Export job {job_id} failed: {job.error}")
    name = f"incidents-{job.created_at:%Y%m%d-%H%M%S}.{job.kind}"
    local = service.exports.local_file(job)
    if local is not None:
        return FileResponse(local, media_type=MEDIA_TYPES[job.kind], filename=name)
    try:
        stream, size = service.exports.open(job)
    except FileNotFoundError:  # expired and deleted by another host since the job was read
        raise _gone(job_id, service) from None
    return streamed(stream, size, media_type=MEDIA_TYPES[job.kind],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# --------------------------------------------------------------------------------------------------
# Open311 GeoReport v2


@router.get("/open311/v2/services.json", tags=["open311"], summary="Open311 service list")
def open311_services(_principal: Open311Principal) -> list[dict[str, Any]]:
    """One service per deposit class."""
    return list(OPEN311_SERVICES)


def _open311_requests(service: Service, flt: IncidentFilter, limit: int) -> list[dict[str, Any]]:
    with service.sessions() as session:
        incidents = list(iter_incidents(session, flt, limit=limit))
        ids = [i.id for i in incidents]
        notes, latest = last_comments(session, ids), latest_reports(session, ids)
    return [
        open311_request(
            incident,
            status_notes=notes.get(incident.id),
            media_url=photo_link(service, latest[incident.id]) if incident.id in latest else None,
            address=address,
        )
        for incident, address in zip(incidents, incident_addresses(service.geocoder, incidents), strict=True)
    ]


@router.get("/open311/v2/requests.json", tags=["open311"], summary="Open311 service requests")
def open311_requests(
    service: ServiceDep,
    _principal: Open311Principal,
    service_request_id: Annotated[str | None, Query(description="Comma-separated incident ids.")] = None,
    service_code: Annotated[str | None, Query(description="Comma-separated classes.")] = None,
    start_date: Annotated[Timestamp | None, Query(description="Requested at or after (ISO 8601).")] = None,
    end_date: Annotated[Timestamp | None, Query(description="Requested at or before (ISO 8601).")] = None,
    status: Annotated[Literal["open", "closed"] | None, Query(description="open or closed")] = None,
) -> Any:
    """Incidents as Open311 requests, most recently seen first; the last 90 days when no ids or dates are given."""
    ids: tuple[int, ...] = ()
    if service_request_id:
        try:
            ids = tuple(int(part) for part in service_request_id.split(",") if part.strip())
            if not all(1 <= i <= MAX_ID for i in ids):
                raise ValueError("out of range")
        except ValueError:
            return JSONResponse([{"code": 400, "description": "service_request_id: comma-separated numbers"}], 400)
    if not ids and start_date is None and end_date is None:
        start_date = utcnow() - timedelta(days=OPEN311_DEFAULT_DAYS)
    statuses: tuple[Status, ...] = ()
    if status == "open":
        statuses = tuple(OPEN_STATUSES)
    elif status == "closed":
        statuses = tuple(s for s in Status if s not in OPEN_STATUSES)
    flt = IncidentFilter(
        statuses=statuses,
        labels=tuple(c.strip() for c in service_code.split(",") if c.strip()) if service_code else (),
        ids=ids,
        opened_since=start_date,
        opened_until=end_date,
    )
    return _open311_requests(service, flt, OPEN311_MAX_REQUESTS)


@router.get(
    "/open311/v2/requests/{request_id}.json",
    tags=["open311"],
    responses={404: {"description": "Open311 error list: [{code, description}]."}},
    summary="One Open311 service request",
)
def open311_request_by_id(
    request_id: IdPath, service: ServiceDep, _principal: Open311Principal
) -> Any:
    """One incident as a one-element list, as Open311 answers."""
    found = _open311_requests(service, IncidentFilter(ids=(request_id,)), 1)
    if not found:
        return JSONResponse([{"code": 404, "description": f"no service request {request_id}"}], status_code=404)
    return found
