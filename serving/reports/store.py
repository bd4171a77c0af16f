"""Storing analysed photos as reports: the step that uploads and batch jobs share.

:func:`store_reports` inserts the reports of several analysed photos and gives each its incident,
with one look-up for their twins; :func:`store_report` is the same for one photo. Both work in a
write transaction the caller holds (:func:`serving.db.write_session`) and expect the photo files to
be in the store already; the caller commits. An upload ends with :func:`store_report` (step 6 of
:mod:`serving.reports.upload`); a batch job (:mod:`serving.batch.sinks`) writes each transaction's
frames through :func:`store_reports`, so that a frame reaches the same incidents, with the same
de-duplication, whichever way it came in.

:func:`observed_time` says when a photo was taken; a batch job's JSON-lines sink uses it too.

A photo its agent sends as a deposit whatever the model says (``agent_says_deposit``, the agent
page's "report anyway") is grouped like a deposit (:func:`serving.grouping.groups_as_deposit`).
The same photo sent again with the flag after a first send without it is a twin that
:func:`send_anyway` upgrades in place: flagged, and grouped if the model saw no deposit in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.auth import Principal
from serving.cells import cells_of_places
from serving.errors import LocationMissingError
from serving.grouping import SENT_ANYWAY_LABEL, Candidates, GroupingPolicy, assign, groups_as_deposit
from serving.models import Report
from vipare.results import ImageResult

__all__ = [
    "CLOCK_SKEW",
    "LOCATION_MISSING",
    "NewReport",
    "Submitted",
    "observed_time",
    "places_of",
    "send_anyway",
    "store_report",
    "store_reports",
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
    """The outcome of storing one photo: the report's id, whether this call created it, and what it did to an incident.

    Attributes:
        report_id: the report.
        created: False when the same client's report of the same photo was already there.
        incident_action: ``opened``, ``joined`` or ``late`` when the report created reached an incident.
    """

    report_id: int
    created: bool
    incident_action: str | None = None


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


@dataclass(frozen=True)
class NewReport:
    """An analysed photo to store as a report.

    Attributes:
        principal: who sent the photo; with the sha256, it decides whether the photo is a twin.
        result: what the pipeline said about the photo; its ``location`` must not be None.
        ext: the stored file's extension (:data:`serving.photos.store.EXTENSIONS`).
        received: when it was received (UTC).
        captured_at: the capture time sent with the photo, if any.
        fallback_time: a capture time to use when neither ``captured_at`` nor EXIF gives one.
        camera_id: the camera named with the photo (a camera key tied to a registered camera wins).
        note: free text.
        agent_says_deposit: the agent sent it as a deposit whatever the model says (never a camera frame).
        after_of: the incident whose place the photo shows after its cleaning; it then joins no incident.
    """

    principal: Principal
    result: ImageResult
    ext: str
    received: datetime
    captured_at: datetime | None = None
    fallback_time: datetime | None = None
    camera_id: str | None = None
    note: str | None = None
    agent_says_deposit: bool = False
    after_of: int | None = None


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
    agent_says_deposit: bool = False,
    after_of: int | None = None,
) -> Submitted:
    """Insert the report of one analysed photo and give it its incident; the caller commits.

    :func:`store_reports` for one photo (see there).
    """
    new = NewReport(
        principal, result, ext, received, captured_at, fallback_time, camera_id, note, agent_says_deposit, after_of
    )
    return store_reports(session, [new], policy=policy)[0]


def places_of(results: Iterable[ImageResult], policy: GroupingPolicy) -> list[int] | None:
    """The cells storing these photos may touch (``places`` of :func:`serving.db.write_session`).

    None (lock everything) when a photo has no location (it will be refused) or the radius is too wide for cells.
    """
    positions = []
    for result in results:
        if result.location is None:
            return None
        positions.append((result.location.lat, result.location.lon))
    return cells_of_places(positions, policy.radius_m)


def store_reports(session: Session, reports: Sequence[NewReport], *, policy: GroupingPolicy) -> list[Submitted]:
    """Insert the reports of analysed photos, in order, and give each its incident; the caller commits.

    The photo files must already be in the store (``PhotoStore.put``) under their sha256. One query
    finds the twins of them all (the same client's report of the same photo, stored before or
    earlier in ``reports``), one the incidents their deposits may reach
    (:class:`~serving.grouping.Candidates`); each dumping report (or one sent anyway) then joins or
    opens its incident as if it had come alone, after those before it. The reports go to the database with their
    incident, in as few statements as the grouping allows.

    Args:
        session: a session in a write transaction (:func:`serving.db.write_session`).
        reports: the photos, in the order they are to be grouped.
        policy: how reports group into incidents.

    Returns:
        One outcome per photo, in order; ``created`` is False for a twin, which writes nothing (even
        sent anyway: :func:`send_anyway` upgrades a twin).

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
    candidates = Candidates(session, [report for _, report in fresh if groups_as_deposit(report)], policy)
    for new, report in fresh:
        if groups_as_deposit(report):  # before the report is added: it is then inserted with its incident
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
    label, score = best.label if best else None, result.verdict.score
    if new.agent_says_deposit and not result.verdict.dumping:
        label, score = SENT_ANYWAY_LABEL, 0.0  # grouped as a deposit, never outranking one the model saw
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
        agent_says_deposit=new.agent_says_deposit,
        after_of=new.after_of,
        dumping=result.verdict.dumping,
        score=score,
        label=label,
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


def send_anyway(
    session: Session, report_id: int, principal: Principal, *, policy: GroupingPolicy, note: str | None = None
) -> Submitted:
    """Upgrade a stored report in place to one its agent sends as a deposit anyway; the caller commits.

    The agent page's "report anyway", after a first send that the model found nothing in, sends the
    same photo again with ``agent_says_deposit``: the report is flagged and, if the model saw no
    deposit in it, grouped as a :data:`~serving.grouping.SENT_ANYWAY_LABEL` of score 0 (its
    incident is then ``to_review``). A report already flagged is left as it is, so a queue that
    sends it again changes nothing.

    Args:
        session: a session in a write transaction (:func:`serving.db.write_session`).
        report_id: the stored report (the same client's report of the same photo).
        principal: who sends it again, for the history of an incident it opens.
        policy: how reports group into incidents.
        note: the note sent again; kept when the report had none.

    Returns:
        The report, not created, with the incident action when it reached an incident now.
    """
    report = session.get(Report, report_id)
    if report is None:
        raise ValueError(f"there is no report #{report_id}")
    if report.agent_says_deposit:
        return Submitted(report.id, created=False)
    report.agent_says_deposit = True
    if report.note is None:
        report.note = note
    action = None
    if report.incident_id is None:  # the model saw no deposit: grouped now, as a deposit
        report.label, report.score = SENT_ANYWAY_LABEL, 0.0
        _, grouped = assign(session, report, policy, actor=principal.actor, actor_key_id=principal.key_id)
        action = grouped.value
    session.flush()
    return Submitted(report.id, created=False, incident_action=action)
