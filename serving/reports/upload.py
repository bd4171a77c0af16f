"""Taking in one photo: de-duplicate, analyse, locate, store, group into an incident.

Order of :func:`submit`, chosen so that a rejected upload leaves nothing and an accepted one is
never half-written:

1. the same photo (sha256) from the same client already stored? Answer with that report (200),
   upgraded in place first when it comes again with ``agent_says_deposit`` and came without it
   (:func:`serving.reports.store.send_anyway`: the agent page's "report anyway"). When a purge
   (:mod:`serving.retention`) deleted that report's photo, the photo is stored again on that report
   instead: steps 2, 3 and 5 as for a new photo (not 4: the report has its position), then the
   file written and the mark cleared in one write transaction (:func:`_restore`), answered 200.
   De-duplication stays one report per client and photo, and the report its agent sends again,
   perhaps as a deposit, has its photo. The report's retention is unchanged: still past it, the
   next pass deletes the photo again;
2. check the coordinates sent with it (422 when invalid);
3. decode and analyse it in a worker thread, at most ``analysis_slots`` at once (413/415/422 when
   the file cannot be used), started beside step 1 (which hashes the photo in another thread): a
   photo step 1 answers has its analysis dropped. Meanwhile another thread writes the held file of
   step 5, when the photo is to be blurred after the answer and its header names a format the intake
   opens; a photo refused at 3 or 4 has it deleted again before the answer;
4. no usable position (EXIF, sent coordinates or the camera's)? 422 ``location_missing``, which
   says how to send one. A report nobody can find cannot be collected, so it is not stored;
5. hold the photo file (metadata removed, fsynced; :mod:`serving.photos.pending`; written during 3,
   waited for here), or, when blurring is off, the purged photo is stored again or
   :data:`~serving.reports.blurring.MAX_IN_FLIGHT` photos already wait, blur its faces and plates
   now (:mod:`serving.photos.anonymise`) and write the photo file (metadata removed) atomically;
6. in one write transaction: look for the report again (a concurrent twin), insert it, give it its
   incident; commit. Then answer 201, and blur a held photo after the answer
   (:func:`serving.reports.blurring.blur_later`): its blurred copy is stored, the held file dropped.
   Until then nobody sees the photo: every reader waits for the blurred copy.

A crash after 3 started and before 6 leaves an unreferenced file that the next start-up deletes; a
crash after 6 and before the blurred copy is stored leaves a held file that the next start-up (or the
first reader) blurs. A full or read-only disk at 5 or 6 answers 507 or 503 (:func:`serving.errors.storage_error`)
with nothing kept: no temporary file (the store removes it), no row, and the photo file written at 5
removed again when this upload created it (a file already there may be another report's, the same
photo from another client).

Step 6 is :func:`serving.reports.store.store_report`, the step that the batch jobs share
(:mod:`serving.reports.store`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from serving.auth import Principal
from serving.db import write_session
from serving.errors import AfterPhotoError, IncidentClosedError, LocationMissingError, NotFoundError, storage_error
from serving.grouping import needs_review
from serving.incidents import OPEN_STATUSES, Status
from serving.models import Incident, Report, utcnow
from serving.photos.store import EXTENSIONS
from serving.reports.blurring import MAX_IN_FLIGHT, blur_later, blurred_copy
from serving.reports.store import LOCATION_MISSING, Submitted, places_of, send_anyway, store_report
from serving.reports.view import find_report, load_report, report_out
from serving.retention import photo_kept
from serving.schemas import ReportForm, ReportOut
from vipare.errors import LocationError, VipareError
from vipare.geotag import CameraPosition, ClientPosition, haversine_m
from vipare.intake import open_image
from vipare.results import ImageResult

if TYPE_CHECKING:  # annotations only: a batch job writes reports without the service or the detector
    from sqlalchemy.orm import Session

    from serving.service import Service
    from vipare.imaging import DecodedImage
    from vipare.pipeline import Pipeline
    from vipare.privacy import Region

__all__ = ["Answered", "submit"]

logger = logging.getLogger("serving.reports.upload")


@dataclass(frozen=True)
class Answered(Submitted):
    """:class:`~serving.reports.store.Submitted`, with the report as the API answers it.

    Attributes:
        report: the report as ``GET /v1/reports/{id}`` shows it, read in the write transaction that
            stored it (or found its twin); None when no such transaction ran (the same photo found
            before the analysis, a purged photo stored again): the caller reads it then.
    """

    report: ReportOut | None = None


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
    if principal.camera is not None:
        pipeline = pipeline.for_frames()  # a street camera's frame, not an agent's photo
    if form.after_of is not None and form.agent_says_deposit:
        raise AfterPhotoError(
            "A photo taken after a cleaning proves the incident's state: send it without agent_says_deposit."
        )
    received = utcnow()
    # Steps 1 and 3 side by side: the photo is hashed (and looked for) in one thread while another
    # decodes and analyses it; a photo found at 1 is answered as before, its analysis dropped.
    looking = asyncio.create_task(anyio.to_thread.run_sync(_look_up, service, principal.client_ref, data))
    refused: VipareError | None = None
    analysing: asyncio.Task[tuple[DecodedImage, ImageResult]] | None = None
    try:
        client = _client_position(form)
    except VipareError as exc:  # step 2 answers only once step 1 has not
        refused = exc
    else:
        analysing = asyncio.create_task(anyio.to_thread.run_sync(
            _analyze, service, pipeline, data, client, _camera_position(principal, form),
            limiter=service.analysis_limiter,
        ))
    try:
        sha256, existing = await looking
    except BaseException:
        _abandon(service, analysing)
        raise
    if existing is not None and not existing[1]:
        _abandon(service, analysing)
        service.metrics.reports.labels(outcome="duplicate").inc()
        if form.agent_says_deposit:
            return await anyio.to_thread.run_sync(_send_anyway, service, principal, existing[0], form.note)
        return Submitted(existing[0], created=False)
    purged = existing[0] if existing is not None else None  # its photo is stored again, blurred as a new one
    # Held as sent (metadata removed) and blurred after the answer (serving.photos.pending), unless
    # this process is blurring the same photo already (another client sent it too): then blurred now.
    # The held file is written while the photo is analysed (step 5 beside step 3).
    later = (
        purged is None and pipeline.privacy is not None and len(service.in_flight) < MAX_IN_FLIGHT
        and service.in_flight.start(sha256)
    )
    holding = asyncio.create_task(anyio.to_thread.run_sync(_hold, service, pipeline, data, sha256)) if later else None
    try:
        try:
            if analysing is None:
                assert refused is not None
                raise refused
            image, result = _named(*await analysing, sha256)
            if result.location is None and purged is None:  # the purged report keeps its own
                raise LocationMissingError(LOCATION_MISSING)
        except (VipareError, LocationMissingError):
            service.metrics.reports.labels(outcome="rejected").inc()
            raise
    except BaseException:
        if holding is not None:
            await _drop_hold(service, holding, sha256)
        raise
    ext = EXTENSIONS[result.image.format]
    stored: bytes = data
    regions: list[Region] = []
    if not later:
        stored, regions = await anyio.to_thread.run_sync(
            blurred_copy, service, pipeline, data, image, result.detections, result.verdict.dumping,
            form.agent_says_deposit, limiter=service.analysis_limiter,
        )
    written = False
    try:
        if regions and service.settings.keep_originals_days > 0:  # serving.originals
            await anyio.to_thread.run_sync(service.photos.keep_original, data, sha256, ext)
        if purged is not None:
            outcome = await anyio.to_thread.run_sync(_restore, service, principal, purged, stored, sha256, ext, form)
        else:
            if holding is not None:
                written = await _held(service, holding, data, sha256, ext)
            else:
                written = await anyio.to_thread.run_sync(_put_photo, service, stored, sha256, ext)
            outcome = await anyio.to_thread.run_sync(
                _persist, service, principal, result, form, ext, received, fallback_time
            )
    except BaseException as exc:
        if later:
            service.in_flight.finish(sha256)
        refusal = storage_error(exc) if isinstance(exc, (OSError, SQLAlchemyError)) else None
        if written:  # created by this call: gone again unless a report (a twin's) refers to it
            await anyio.to_thread.run_sync(_discard, service, sha256, ext, later, refusal is not None)
        if refusal is None:  # a full or read-only disk is answered here; the rest goes on up
            raise
        service.metrics.reports.labels(outcome="rejected").inc()
        raise refusal from exc
    if later:
        blur_later(service, pipeline, data, image, result.detections, result.verdict.dumping, sha256, ext,
                   form.agent_says_deposit)
    service.metrics.reports.labels(outcome="created" if outcome.created else "duplicate").inc()
    if outcome.created:
        service.metrics.count_detections(result.detections)
    return outcome


def _put_photo(service: Service, data: bytes, sha256: str, ext: str, held: bool = False) -> bool:
    """Store the photo file (``held``: hold it for blurring); True only when this call created it.

    Only a file this call created may a failure after delete. A file already there may be another
    report's (the same bytes from another client), rewritten when blurred otherwise (other detections,
    after a model promotion): not this upload's to delete.
    """
    if held:
        existed = service.photos.exists(sha256, ext, "held")
        return service.photos.hold(data, sha256, ext) and not existed
    existed = service.photos.exists(sha256, ext)
    return service.photos.put(data, sha256, ext) and not existed


def _hold(service: Service, pipeline: Pipeline, data: bytes, sha256: str) -> tuple[str, bool] | None:
    """Hold the photo under the extension its header names, while it is analysed: (extension, created).

    None when the intake cannot open it: the analysis then says why, and nothing was written.
    """
    settings = pipeline.settings
    try:
        with open_image(data, settings.max_image_pixels, settings.max_non_jpeg_pixels) as img:
            fmt = "JPEG" if img.format == "MPO" else str(img.format)
    except VipareError:
        return None
    ext = EXTENSIONS[fmt]
    return ext, _put_photo(service, data, sha256, ext, held=True)


async def _held(
    service: Service, holding: asyncio.Task[tuple[str, bool] | None], data: bytes, sha256: str, ext: str
) -> bool:
    """Once the photo is accepted: whether this upload created its held file (:func:`_put_photo`).

    The file written beside the analysis, or, should its header have named another format than the
    analysis found, one written now under the right extension.
    """
    early = await holding
    if early is not None and early[0] == ext:
        return early[1]
    if early is not None and early[1]:
        await anyio.to_thread.run_sync(service.photos.release, sha256, early[0])
    return await anyio.to_thread.run_sync(_put_photo, service, data, sha256, ext, True)


async def _drop_hold(service: Service, holding: asyncio.Task[tuple[str, bool] | None], sha256: str) -> None:
    """A refused upload: wait for its hold, delete the held file it created, give up its claim on the photo."""
    try:
        early = await holding
    except Exception:  # the refusal is the answer; a hold that failed left no file of its own
        early = None
    try:
        if early is not None and early[1]:
            await anyio.to_thread.run_sync(_discard, service, sha256, early[0], True, False)
    finally:
        service.in_flight.finish(sha256)


def _discard(service: Service, sha256: str, ext: str, held: bool, disk_failed: bool) -> None:
    """Delete the photo file (and original) a failed upload wrote, unless a report keeps the photo.

    On a full or read-only disk no twin's commit can have succeeded either, so the file goes without
    asking the database (which may be what failed).
    """
    if not disk_failed:
        try:
            if photo_kept(service.sessions, sha256):
                return
        except SQLAlchemyError:
            return  # cannot tell: the start-up sweep decides later
    try:
        service.photos.delete(sha256, ext, "held" if held else "photo")
        service.photos.delete(sha256, ext, "original")
    except OSError:  # the store that failed the upload may fail this too: the start-up sweep deletes it later
        logger.warning("a failed upload's photo could not be deleted", exc_info=True, extra={"sha256": sha256})


def _look_up(service: Service, client_ref: str, data: bytes) -> tuple[str, tuple[int, bool] | None]:
    """The photo's sha256 and this client's report of it (:func:`_existing`), in one trip to a worker thread."""
    sha256 = hashlib.sha256(data).hexdigest()
    return sha256, _existing(service, client_ref, sha256)


def _existing(service: Service, client_ref: str, sha256: str) -> tuple[int, bool] | None:
    """This client's report of this photo, and whether a purge deleted its photo; None when there is none.

    An erased report is no one's (:mod:`serving.erasure`), so never found here.
    """
    with service.sessions() as session:
        report = find_report(session, client_ref, sha256)
        if report is None:
            return None
        return report.id, report.photo_deleted_at is not None and report.erased_at is None


def _existing_id(service: Service, client_ref: str, sha256: str) -> int | None:
    existing = _existing(service, client_ref, sha256)
    return existing[0] if existing is not None else None


def _restore(
    service: Service, principal: Principal, report_id: int, data: bytes, sha256: str, ext: str, form: ReportForm
) -> Submitted:
    """Store again the photo of a report whose photo was purged, clear its mark, and upgrade it when sent anyway.

    The file is written, then the mark cleared, in one write transaction: a purge deletes files in
    write transactions, so none deletes this one between the two. On a failure the mark stays, and
    a file this call created goes.
    """
    created = False
    try:
        with write_session(service.sessions) as session:
            report = session.get(Report, report_id)
            if report is not None and report.photo_deleted_at is not None and report.erased_at is None:
                created = _put_photo(service, data, sha256, ext)
                report.photo_deleted_at = None
                incident = session.get(Incident, report.incident_id) if report.incident_id is not None else None
                if incident is not None:  # its photo can be reviewed again (serving.retention stopped waiting)
                    session.flush()
                    incident.to_review = needs_review(session, incident.id)
            if not form.agent_says_deposit:
                return Submitted(report_id, created=False)
            return send_anyway(session, report_id, principal, policy=service.policy, note=form.note)
    except (OSError, SQLAlchemyError):
        if created:
            service.photos.delete(sha256, ext)
        raise


def _send_anyway(service: Service, principal: Principal, report_id: int, note: str | None) -> Submitted:
    with write_session(service.sessions) as session:
        return send_anyway(session, report_id, principal, policy=service.policy, note=note)


def _check_after(session: Session, incident_id: int, result: ImageResult, max_m: float) -> None:
    """Refuse a photo "after cleaning" of an incident that is not open, or taken away from its place."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFoundError(f"There is no incident #{incident_id}.")
    if Status(incident.status) not in OPEN_STATUSES:
        raise IncidentClosedError(
            f"Incident #{incident_id} is {incident.status}: a photo after cleaning is for an open incident."
        )
    location = result.location
    assert location is not None  # checked before: no position, no report
    distance = haversine_m(location.lat, location.lon, incident.lat, incident.lon)
    if distance > max_m:
        raise AfterPhotoError(
            f"This photo was taken {distance:.0f} m from incident #{incident_id} (at most {max_m:.0f} m): take the "
            "photo after cleaning at the deposit's place."
        )


def _client_position(form: ReportForm) -> ClientPosition | None:
    if form.lat is None and form.lon is None:
        return None
    if form.lat is None or form.lon is None:
        raise LocationError("Send both lat and lon (decimal degrees, WGS 84), or neither.")
    return ClientPosition(lat=form.lat, lon=form.lon, accuracy_m=form.accuracy_m, origin=form.position)


def _camera_position(principal: Principal, form: ReportForm) -> CameraPosition | None:
    camera = principal.camera
    if camera is None:
        return None
    return CameraPosition(
        camera_id=principal.camera_id or form.camera_id or camera.camera_id,
        lat=camera.lat, lon=camera.lon, accuracy_m=camera.accuracy_m,
    )


_UNNAMED = "0" * 64
"""The sha256 an analysis started before the hash carries until :func:`_named` gives it the photo's."""


def _analyze(
    service: Service,
    pipeline: Pipeline,
    data: bytes,
    client: ClientPosition | None,
    camera: CameraPosition | None,
) -> tuple[DecodedImage, ImageResult]:
    start = time.perf_counter()
    image = pipeline.decode(data, sha256=_UNNAMED)  # hashed once, beside it (:func:`_look_up`)
    decoded = time.perf_counter()
    result = pipeline.analyze(image, client=client, camera=camera)
    service.metrics.analysis.labels(stage="decode").observe(decoded - start)
    service.metrics.analysis.labels(stage="detect").observe(time.perf_counter() - decoded)
    return image, result


def _named(image: DecodedImage, result: ImageResult, sha256: str) -> tuple[DecodedImage, ImageResult]:
    """The analysis of :func:`_analyze` with the photo's sha256."""
    info = image.info.model_copy(update={"sha256": sha256})
    return replace(image, info=info), result.model_copy(update={"image": info})


def _abandon(service: Service, analysing: asyncio.Task[tuple[DecodedImage, ImageResult]] | None) -> None:
    """Let an analysis no longer wanted finish in its thread, its result or error dropped."""
    if analysing is None:
        return
    def dropped(task: asyncio.Task[tuple[DecodedImage, ImageResult]]) -> None:
        service.background.discard(task)  # type: ignore[arg-type]
        if not task.cancelled():
            task.exception()  # retrieved: an unusable photo found a duplicate first

    service.background.add(analysing)  # type: ignore[arg-type]
    analysing.add_done_callback(dropped)


def _answered(session: Session, outcome: Submitted) -> Answered:
    """The outcome with its report as the API answers it, read in the transaction that wrote it.

    Read as ``GET /v1/reports/{id}`` reads it, without a second trip to a worker thread and a session
    of its own after the commit.
    """
    report = load_report(session, outcome.report_id)
    assert report is not None, "a report just stored or found"
    return Answered(outcome.report_id, outcome.created, outcome.incident_action, report=report_out(report))


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
        with write_session(service.sessions, places=places_of([result], service.policy)) as session:
            if form.after_of is not None:
                _check_after(session, form.after_of, result, service.settings.after_photo_max_m)
            outcome = store_report(
                session, principal, result, ext=ext, received=received, policy=service.policy,
                captured_at=form.captured_at, fallback_time=fallback_time, camera_id=form.camera_id, note=form.note,
                agent_says_deposit=form.agent_says_deposit, after_of=form.after_of,
            )
            if not outcome.created and form.agent_says_deposit:
                outcome = send_anyway(session, outcome.report_id, principal, policy=service.policy, note=form.note)
            return _answered(session, outcome)
    except IntegrityError:  # a twin committed by another process between our look and our insert
        existing = _existing_id(service, principal.client_ref, result.image.sha256)
        if existing is None:
            raise
        if form.agent_says_deposit:
            return _send_anyway(service, principal, existing, form.note)
        return Submitted(existing, created=False)
