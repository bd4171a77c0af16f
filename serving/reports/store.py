"""Taking in one photo: de-duplicate, analyse, locate, store, group into an incident.

Order of :func:`submit`, chosen so that a rejected upload writes nothing and an accepted one is
never half-written:

1. the same photo (sha256) from the same client already stored? Answer with that report (200);
2. check the coordinates sent with it (422 when invalid);
3. decode and analyse it in a worker thread, at most ``analysis_slots`` at once (413/415/422 when
   the file cannot be used);
4. no usable position (EXIF, sent coordinates or the camera's)? 422 ``location_missing``, which
   says how to send one. A report nobody can find cannot be collected, so it is not stored;
5. write the photo file (GPS removed) atomically;
6. in one write transaction: look for the report again (a concurrent twin), insert it, give it its
   incident; commit. Then answer 201.

A crash after 5 and before 6 leaves an unreferenced file that the next start-up deletes.

Step 6 is :func:`store_report`, which works in a write transaction the caller holds. The batch
jobs (:mod:`serving.batch`) write their frames through :func:`store_reports`, the same step for
several photos per transaction (one look-up for their twins), so that a frame reaches the same
incidents, with the same de-duplication, whichever way it came in.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from serving.auth import Permission, Principal
from serving.db import write_session
from serving.errors import LocationMissingError
from serving.incidents import Candidates, GroupingPolicy, IncidentAction, Status, assign
from serving.models import Report, utcnow
from serving.photos import EXTENSIONS
from serving.schemas import IncidentRef, ReportForm, ReportLinks, ReportOut
from vipare.errors import LocationError, VipareError
from vipare.geotag import CameraPosition, ClientPosition
from vipare.results import Detection, ImageInfo, ImageResult, Location, ModelInfo, Verdict

if TYPE_CHECKING:  # annotations only: a batch job writes reports without the service or the detector
    from serving.service import Service
    from vipare.pipeline import Pipeline

__all__ = [
    "CLOCK_SKEW",
    "LOCATION_MISSING",
    "NewReport",
    "Submitted",
    "can_read",
    "find_report",
    "observed_time",
    "report_out",
    "store_report",
    "store_reports",
    "submit",
]

CLOCK_SKEW = timedelta(minutes=10)
"""A capture time later than reception by more than this is a wrong clock, and ignored."""

LOCATION_MISSING = (
    "This photo carries no usable GPS position and none was sent with it, so nobody could find the "
    "deposit. Send the phone's position with the photo: the form fields lat and lon in decimal degrees "
    "(WGS 84), and accuracy_m in metres if known. In a browser, navigator.geolocation.getCurrentPosition() "
    "gives them (coords.latitude, coords.longitude, coords.accuracy). Nothing was stored: send the photo "
    "again with its position."
)


@dataclass(frozen=True)
class Submitted:
    """The outcome of an upload: the report's id, whether this upload created it, and what it did to an incident.

    Attributes:
        report_id: the report.
        created: False when the same client's report of the same photo was already there.
        incident_action: ``opened``, ``joined`` or ``late`` when the report created reached an incident.
    """

    report_id: int
    created: bool
    incident_action: str | None = None


async def submit(
    service: Service, principal: Principal, data: bytes, form: ReportForm, *, fallback_time: datetime | None = None
) -> Submitted:
    """Take in one uploaded photo (see the module doc for the order of the steps).

    Args:
        service: the running service.
        principal: the caller.
        data: the photo's bytes.
        form: the fields sent with it.
        fallback_time: when the photo was taken, used only when neither ``form`` nor EXIF says
            (a time read from a camera frame's file name).

    Raises:
        vipare.ImageError: the file cannot be used as a photo (its subclasses map to 413/415/422).
        vipare.LocationError: the coordinates sent are invalid.
        LocationMissingError: no usable position at all.
        ModelNotReadyError: the model is not warm yet.
    """
    pipeline = service.require_ready()
    received = utcnow()
    sha256 = await anyio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())
    existing = await anyio.to_thread.run_sync(_existing_id, service, principal.client_ref, sha256)
    if existing is not None:
        service.metrics.reports.labels(outcome="duplicate").inc()
        return Submitted(existing, created=False)
    try:
        client = _client_position(form)
        result = await anyio.to_thread.run_sync(
            _analyze, service, pipeline, data, client, _camera_position(principal, form),
            limiter=service.analysis_limiter,
        )
        if result.location is None:
            raise LocationMissingError(LOCATION_MISSING)
    except (VipareError, LocationMissingError):
        service.metrics.reports.labels(outcome="rejected").inc()
        raise
    ext = EXTENSIONS[result.image.format]
    await anyio.to_thread.run_sync(service.photos.put, data, sha256, ext)
    outcome = await anyio.to_thread.run_sync(
        _persist, service, principal, result, form, ext, received, fallback_time
    )
    service.metrics.reports.labels(outcome="created" if outcome.created else "duplicate").inc()
    if outcome.created:
        service.metrics.count_detections(result.detections)
    return outcome


def _existing_id(service: Service, client_ref: str, sha256: str) -> int | None:
    with service.sessions() as session:
        report = find_report(session, client_ref, sha256)
        return report.id if report is not None else None


def _client_position(form: ReportForm) -> ClientPosition | None:
    if form.lat is None and form.lon is None:
        return None
    if form.lat is None or form.lon is None:
        raise LocationError("Send both lat and lon (decimal degrees, WGS 84), or neither.")
    return ClientPosition(lat=form.lat, lon=form.lon, accuracy_m=form.accuracy_m)


def _camera_position(principal: Principal, form: ReportForm) -> CameraPosition | None:
    camera = principal.camera
    if camera is None:
        return None
    return CameraPosition(
        camera_id=principal.camera_id or form.camera_id or camera.camera_id,
        lat=camera.lat, lon=camera.lon, accuracy_m=camera.accuracy_m,
    )


def _analyze(
    service: Service,
    pipeline: Pipeline,
    data: bytes,
    client: ClientPosition | None,
    camera: CameraPosition | None,
) -> ImageResult:
    start = time.perf_counter()
    image = pipeline.decode(data)
    decoded = time.perf_counter()
    result = pipeline.analyze(image, client=client, camera=camera)
    service.metrics.analysis.labels(stage="decode").observe(decoded - start)
    service.metrics.analysis.labels(stage="detect").observe(time.perf_counter() - decoded)
    return result


def observed_time(
    result: ImageResult, received: datetime, *, sent: datetime | None = None, fallback: datetime | None = None
) -> tuple[datetime, datetime | None]:
    """When the photo was taken, for grouping, and the capture time to store (None when unknown).

    The first known of: ``sent`` (``captured_at`` sent with the photo), the EXIF GPS time, the EXIF
    capture time when it has a UTC offset, ``fallback`` (a batch job's reading of a naive EXIF time or
    of the file name). A time more than :data:`CLOCK_SKEW` after reception is ignored. Otherwise the
    reception time.
    """
    location = result.location
    gps_time = location.gps_time if location is not None and location.source == "exif" else None
    exif_time = result.image.captured_at
    candidates = (sent, gps_time, exif_time if exif_time and exif_time.tzinfo else None, fallback)
    for candidate in candidates:
        if candidate is not None and candidate <= received + CLOCK_SKEW:
            taken = candidate.astimezone(UTC)
            return taken, taken
    return received, None


def _persist(
    service: Service,
    principal: Principal,
    result: ImageResult,
    form: ReportForm,
    ext: str,
    received: datetime,
    fallback_time: datetime | None,
) -> Submitted:
    try:
        with write_session(service.sessions) as session:
            return store_report(
                session, principal, result, ext=ext, received=received, policy=service.policy,
                captured_at=form.captured_at, fallback_time=fallback_time, camera_id=form.camera_id, note=form.note,
            )
    except IntegrityError:  # a twin committed by another process between our look and our insert
        existing = _existing_id(service, principal.client_ref, result.image.sha256)
        if existing is None:
            raise
        return Submitted(existing, created=False)


@dataclass(frozen=True)
class NewReport:
    """An analysed photo to store as a report.

    Attributes:
        principal: who sent the photo; with the sha256, it decides whether the photo is a twin.
        result: what the pipeline said about the photo; its ``location`` must not be None.
        ext: the stored file's extension (:data:`serving.photos.EXTENSIONS`).
        received: when it was received (UTC).
        captured_at: the capture time sent with the photo, if any.
        fallback_time: a capture time to use when neither ``captured_at`` nor EXIF gives one.
        camera_id: the camera named with the photo (a camera key tied to a registered camera wins).
        note: free text.
    """

    principal: Principal
    result: ImageResult
    ext: str
    received: datetime
    captured_at: datetime | None = None
    fallback_time: datetime | None = None
    camera_id: str | None = None
    note: str | None = None


def store_report(
    session: Session,
    principal: Principal,
    result: ImageResult,
    *,
    ext: str,
    received: datetime,
    policy: GroupingPolicy,
    captured_at: datetime | None = None,
    fallback_time: datetime | None = None,
    camera_id: str | None = None,
    note: str | None = None,
) -> Submitted:
    """Insert the report of one analysed photo and give it its incident; the caller commits.

    :func:`store_reports` for one photo (see there).
    """
    new = NewReport(principal, result, ext, received, captured_at, fallback_time, camera_id, note)
    return store_reports(session, [new], policy=policy)[0]


def store_reports(session: Session, reports: Sequence[NewReport], *, policy: GroupingPolicy) -> list[Submitted]:
    """Insert the reports of analysed photos, in order, and give each its incident; the caller commits.

    The photo files must already be in the store (``PhotoStore.put``) under their sha256. One query
    finds the twins of them all (the same client's report of the same photo, stored before or
    earlier in ``reports``), one the incidents their deposits may reach
    (:class:`~serving.incidents.Candidates`); each dumping report then joins or opens its incident
    as if it had come alone, after those before it. The reports go to the database with their
    incident, in as few statements as the grouping allows.

    Args:
        session: a session in a write transaction (:func:`serving.db.write_session`).
        reports: the photos, in the order they are to be grouped.
        policy: how reports group into incidents.

    Returns:
        One outcome per photo, in order; ``created`` is False for a twin, which writes nothing.

    Raises:
        LocationMissingError: a photo has no location (checked before anything is written).
    """
    if any(new.result.location is None for new in reports):
        raise LocationMissingError(LOCATION_MISSING)
    keys = [(new.principal.client_ref, new.result.image.sha256) for new in reports]
    stored: dict[tuple[str, str], int | Report] = dict(_report_ids(session, set(keys)))
    rows: list[tuple[int | Report, bool]] = []  # (stored id or new row, created by this call)
    fresh: list[tuple[NewReport, Report]] = []
    for new, key in zip(reports, keys, strict=True):
        twin = stored.get(key)  # stored before, or earlier in ``reports``
        if twin is not None:
            rows.append((twin, False))
            continue
        report = _report_row(new)
        stored[key] = report
        rows.append((report, True))
        fresh.append((new, report))
    candidates = Candidates(session, [report for _, report in fresh if report.dumping], policy)
    for new, report in fresh:
        if report.dumping:  # before the report is added: it is then inserted with its incident
            assign(session, report, policy, actor=new.principal.actor, actor_key_id=new.principal.key_id,
                   candidates=candidates)
        session.add(report)
    session.flush()
    return [
        Submitted(row, created=False) if isinstance(row, int)
        else Submitted(row.id, created=created, incident_action=row.incident_action if created else None)
        for row, created in rows
    ]


def _report_ids(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Ids of the stored reports among ``(client_ref, sha256)`` keys."""
    shas = sorted({sha256 for _, sha256 in keys})
    found: dict[tuple[str, str], int] = {}
    for start in range(0, len(shas), 500):  # within SQLite's bound-parameter limit
        query = select(Report.id, Report.client_ref, Report.sha256).where(Report.sha256.in_(shas[start : start + 500]))
        for report_id, client_ref, sha256 in session.execute(query):
            if (client_ref, sha256) in keys:
                found[(client_ref, sha256)] = report_id
    return found


def _report_row(new: NewReport) -> Report:
    result, principal, location = new.result, new.principal, new.result.location
    assert location is not None  # checked by store_reports
    observed, captured = observed_time(result, new.received, sent=new.captured_at, fallback=new.fallback_time)
    deposits = [d for d in result.detections if d.deposit]
    best = max(deposits, key=lambda d: d.score, default=None)
    return Report(
        client_ref=principal.client_ref,
        api_key_id=principal.key_id,
        submitted_by=principal.name,
        sha256=result.image.sha256,
        photo_ext=new.ext,
        received_at=new.received,
        observed_at=observed,
        captured_at=captured,
        camera_id=principal.camera_id or new.camera_id or location.camera_id,
        note=new.note,
        dumping=result.verdict.dumping,
        score=result.verdict.score,
        label=best.label if best else None,
        lat=location.lat,
        lon=location.lon,
        location_source=location.source,
        model_sha256=result.model.sha256,
        image=result.image.model_dump(mode="json"),
        detections=[d.model_dump(mode="json") for d in result.detections],
        verdict=result.verdict.model_dump(mode="json"),
        location=location.model_dump(mode="json"),
        model=result.model.model_dump(mode="json"),
    )


def find_report(session: Session, client_ref: str, sha256: str) -> Report | None:
    """The report of this photo from this client, if any."""
    return session.scalar(select(Report).where(Report.client_ref == client_ref, Report.sha256 == sha256))


def load_report(session: Session, report_id: int) -> Report | None:
    """A report with its incident loaded."""
    return session.scalar(select(Report).options(selectinload(Report.incident)).where(Report.id == report_id))


def can_read(principal: Principal, report: Report) -> bool:
    """Managers read every report; agents (and the local caller) their own."""
    if principal.can(Permission.REPORT_READ_ALL):
        return True
    return principal.can(Permission.REPORT_READ_OWN) and report.client_ref == principal.client_ref


def report_out(report: Report) -> ReportOut:
    """The API's view of a report (its incident must be loaded)."""
    incident = None
    if report.incident_id is not None and report.incident is not None:
        incident = IncidentRef(
            id=report.incident_id,
            status=Status(report.incident.status),
            action=IncidentAction(report.incident_action or IncidentAction.JOINED),
            url=f"/v1/incidents/{report.incident_id}",
        )
    base = f"/v1/reports/{report.id}"
    return ReportOut(
        id=report.id,
        received_at=report.received_at,
        observed_at=report.observed_at,
        submitted_by=report.submitted_by,
        camera_id=report.camera_id,
        note=report.note,
        image=ImageInfo.model_validate(report.image),
        detections=[Detection.model_validate(d) for d in report.detections],
        verdict=Verdict.model_validate(report.verdict),
        location=Location.model_validate(report.location),
        model=ModelInfo.model_validate(report.model),
        incident=incident,
        links=ReportLinks(self=base, image=f"{base}/image", annotated_image=f"{base}/image/annotated"),
    )
