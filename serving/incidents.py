"""Incidents: one deposit at one place, however many photos report it, and its workflow.

Grouping (:func:`assign`), for a report whose verdict is dumping or that its agent sent as a deposit
anyway (:func:`groups_as_deposit`), at its position and the time the photo was taken (``observed_at``):

1. **late**: a photo taken before a *cleaned* incident there was cleaned (a phone that uploads at the
   end of the day) is attached to it - no new incident for a deposit already gone;
2. else **join** the nearest *open* incident (new, confirmed, scheduled) of the same class family
   within ``radius_m`` that was last seen at most ``window`` before the photo;
3. else **open** a new incident. If an incident was cleaned there before the photo was taken, the new
   one is a recurrence: it points at the last cleaned one and counts one more recurrence at that place.

Class families (:data:`FAMILIES`): ``dumped_waste`` and ``overflowing_bin`` are one family, ``waste``.
Waste heaped around a bin is both, and the model (like people) calls it either way from photo to
photo; the crew that comes clears both. The incident's ``label`` is the class of its best detection.

A report sent anyway (``agent_says_deposit``) where the model saw no deposit groups as a
:data:`SENT_ANYWAY_LABEL` of score 0, and its incident is ``to_review`` (managers look at it first)
until every such report of the incident has a review (:func:`needs_review`).

Workflow (:data:`ALLOWED_TRANSITIONS`)::

    new ──> confirmed ──> scheduled ──> cleaned
    new, confirmed ──> scheduled or cleaned   (a crew may skip a step)
    scheduled ──> confirmed                   (taken off the schedule)
    new, confirmed, scheduled ──> rejected    (false alarm) ──> confirmed (reopened after all)
    new, confirmed, scheduled ──> duplicate   (merged into another incident; its reports move there)

Every change, the opening included, is a :class:`~serving.models.Transition`: from, to, who, when,
comment. ``cleaned`` and ``duplicate`` are final: a deposit found again after cleaning is a new
incident (a recurrence), and a merge is not undone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from serving.models import Incident, Report, ReportReview, Transition, utcnow
from vipare.geotag import EARTH_RADIUS_M, haversine_m

__all__ = [
    "ALLOWED_TRANSITIONS",
    "FAMILIES",
    "OPEN_STATUSES",
    "SENT_ANYWAY_LABEL",
    "Candidates",
    "GroupingPolicy",
    "IncidentAction",
    "InvalidMergeError",
    "InvalidTransitionError",
    "Status",
    "assign",
    "family_of",
    "groups_as_deposit",
    "lat_lon_box",
    "needs_review",
    "transition",
]


class Status(StrEnum):
    """Where an incident stands."""

    NEW = "new"
    CONFIRMED = "confirmed"
    SCHEDULED = "scheduled"
    CLEANED = "cleaned"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


OPEN_STATUSES: frozenset[Status] = frozenset({Status.NEW, Status.CONFIRMED, Status.SCHEDULED})

ALLOWED_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset(
        {Status.CONFIRMED, Status.SCHEDULED, Status.CLEANED, Status.REJECTED, Status.DUPLICATE}
    ),
    Status.CONFIRMED: frozenset({Status.SCHEDULED, Status.CLEANED, Status.REJECTED, Status.DUPLICATE}),
    Status.SCHEDULED: frozenset({Status.CONFIRMED, Status.CLEANED, Status.REJECTED, Status.DUPLICATE}),
    Status.REJECTED: frozenset({Status.CONFIRMED}),
    Status.CLEANED: frozenset(),
    Status.DUPLICATE: frozenset(),
}

FAMILIES: dict[str, str] = {"dumped_waste": "waste", "overflowing_bin": "waste"}
"""Deposit class -> class family; reports join incidents of their family. Unknown classes are their own family."""

SENT_ANYWAY_LABEL = "dumped_waste"
"""The class a report sent anyway groups as when the model saw no deposit in its photo (family ``waste``)."""


class IncidentAction(StrEnum):
    """What a report did to its incident."""

    OPENED = "opened"
    JOINED = "joined"
    LATE = "late"


class InvalidTransitionError(Exception):
    """The incident's current status does not allow the requested one (HTTP 409)."""


class InvalidMergeError(Exception):
    """A duplicate transition without a usable target, or a target given for another transition (HTTP 422)."""


@dataclass(frozen=True)
class GroupingPolicy:
    """When a report joins an incident.

    Attributes:
        radius_m: largest distance, metres, between the report and the incident's position.
        window: longest time between the incident's last sighting and the photo.
    """

    radius_m: float
    window: timedelta


def family_of(label: str) -> str:
    """The class family of a deposit class."""
    return FAMILIES.get(label, label)


def groups_as_deposit(report: Report) -> bool:
    """True when the report joins an incident: the model saw a deposit, or the agent says there is one."""
    return report.dumping or report.agent_says_deposit


def _awaits_review(report: Report) -> bool:
    """A report sent anyway where the model saw no deposit: a manager should look at its photo."""
    return report.agent_says_deposit and not report.dumping


def needs_review(session: Session, incident_id: int) -> bool:
    """True while a report sent anyway of the incident, where the model saw no deposit, has no review."""
    unreviewed = (
        select(Report.id)
        .where(
            Report.incident_id == incident_id,
            Report.agent_says_deposit.is_(True),
            Report.dumping.is_(False),
            ~select(ReportReview.id).where(ReportReview.report_id == Report.id).exists(),
        )
        .limit(1)
    )
    return session.scalar(unreviewed) is not None


# --------------------------------------------------------------------------------------------------
# Space


def lat_lon_box(
    lat_col: InstrumentedAttribute[float],
    lon_col: InstrumentedAttribute[float],
    min_lon: float,
    min_lat: float,
    max_lon: float,
    max_lat: float,
) -> ColumnElement[bool]:
    """SQL condition: the point lies in the box; ``min_lon > max_lon`` means the box crosses the antimeridian."""
    lat_ok = lat_col.between(min_lat, max_lat)
    if min_lon <= max_lon:
        return and_(lat_ok, lon_col.between(min_lon, max_lon))
    return and_(lat_ok, or_(lon_col >= min_lon, lon_col <= max_lon))


def _box_around(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) of a box holding every point within ``radius_m``."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    cos_lat = math.cos(math.radians(min(89.9, abs(lat) + dlat)))
    dlon = min(180.0, dlat / cos_lat)
    min_lon, max_lon = lon - dlon, lon + dlon
    if dlon >= 180.0:
        min_lon, max_lon = -180.0, 180.0
    elif min_lon < -180.0:
        min_lon += 360.0
    elif max_lon > 180.0:
        max_lon -= 360.0
    return min_lon, max(-90.0, lat - dlat), max_lon, min(90.0, lat + dlat)


def _lon_delta(from_lon: float, to_lon: float) -> float:
    """Signed shortest difference of longitudes, degrees in [-180, 180) (across the antimeridian too)."""
    return (to_lon - from_lon + 180.0) % 360.0 - 180.0


def _wrap(lon: float) -> float:
    """A longitude brought back into [-180, 180)."""
    return (lon + 180.0) % 360.0 - 180.0


class Candidates:
    """The incidents some dumping reports may reach, read in one query and then kept in memory.

    Every incident that :func:`assign` could give any of ``reports`` is read at once: of their class
    families, in the box around one of them, cleaned, or open and seen within the window of the
    earliest. The reports are then grouped in memory, one after the other, against the incidents as
    the earlier ones left them (moved, seen later) and those they opened (:meth:`add`): what one query
    per report would find, without a query and a flush per report. An incident no report can reach is
    never read, and so cannot have changed.

    Args:
        session: the write transaction the reports are grouped in.
        reports: the dumping reports to group (their position, label and ``observed_at``).
        policy: radius and time window.
    """

    _BOXES_PER_QUERY = 200  # four bound parameters each, within SQLite's limit

    def __init__(self, session: Session, reports: Sequence[Report], policy: GroupingPolicy) -> None:
        self._policy = policy
        self._incidents: dict[int, Incident] = {}
        if not reports:
            return
        families = sorted({family_of(r.label) for r in reports if r.label is not None})
        earliest = min(r.observed_at for r in reports)
        reach = or_(
            Incident.status == Status.CLEANED.value,
            and_(Incident.status.in_([s.value for s in OPEN_STATUSES]), Incident.last_seen >= earliest - policy.window),
        )
        boxes = sorted({_box_around(r.lat, r.lon, policy.radius_m) for r in reports})
        for start in range(0, len(boxes), self._BOXES_PER_QUERY):
            near = or_(*(lat_lon_box(Incident.lat, Incident.lon, *box)
                         for box in boxes[start : start + self._BOXES_PER_QUERY]))
            query = select(Incident).where(near, Incident.family.in_(families), reach)
            self._incidents.update((incident.id, incident) for incident in session.scalars(query))

    def add(self, incident: Incident) -> None:
        """An incident opened since the query (flushed: it has its id)."""
        self._incidents[incident.id] = incident

    def near(self, report: Report) -> list[tuple[Incident, float]]:
        """The incidents ``report`` may reach now, nearest first, with their distance in metres."""
        family, seen = family_of(report.label or ""), report.observed_at
        oldest = seen - self._policy.window
        found = []
        for incident in self._incidents.values():
            if incident.family != family:
                continue
            if incident.status != Status.CLEANED.value and not (
                incident.status in OPEN_STATUSES and incident.last_seen >= oldest
            ):
                continue
            distance = haversine_m(report.lat, report.lon, incident.lat, incident.lon)
            if distance <= self._policy.radius_m:
                found.append((incident, distance))
        return sorted(found, key=lambda pair: (pair[1], pair[0].id))


# --------------------------------------------------------------------------------------------------
# Grouping


def assign(
    session: Session,
    report: Report,
    policy: GroupingPolicy,
    *,
    actor: str,
    actor_key_id: int | None,
    candidates: Candidates | None = None,
) -> tuple[Incident, IncidentAction]:
    """Give a dumping report its incident (see the module doc); the caller commits.

    Args:
        session: a session in a write transaction (:func:`serving.db.write_session`).
        report: a report that :func:`groups_as_deposit`, with its ``label``, position and
            ``observed_at``; new ones are best given before they are added to the session, so that
            they are inserted with their incident (one that opens an incident is added and flushed
            here, for its id). A report sent anyway where the model saw no deposit makes its
            incident ``to_review``.
        policy: radius and time window.
        actor: who uploaded, for the history of a newly opened incident.
        actor_key_id: the uploader's key id, if any.
        candidates: the incidents read for this report and others grouped in the same transaction
            (see :class:`Candidates`); read for this report alone when omitted.

    Returns:
        The incident and whether the report opened it, joined it, or arrived late at a cleaned one.
    """
    if not groups_as_deposit(report) or report.label is None:
        raise ValueError("only a report with a deposit joins an incident")
    family, seen = family_of(report.label), report.observed_at
    if candidates is None:
        candidates = Candidates(session, [report], policy)
    near = candidates.near(report)  # cleaned ones, and open ones seen within the window
    cleaned_near = [incident for incident, _ in near if incident.status == Status.CLEANED.value]
    for incident in cleaned_near:  # first: a photo of a deposit since cleaned is not news
        if incident.cleaned_at is not None and incident.first_seen - policy.window <= seen <= incident.cleaned_at:
            return _attach(report, incident, IncidentAction.LATE)

    open_near = [incident for incident, _ in near if incident.status != Status.CLEANED.value]
    if open_near:
        return _attach(report, open_near[0], IncidentAction.JOINED)

    cleaned_before = [i for i in cleaned_near if i.cleaned_at is not None and i.cleaned_at <= seen]
    previous = max(cleaned_before, key=lambda i: (i.cleaned_at, i.id), default=None)
    now = utcnow()
    incident = Incident(
        family=family,
        label=report.label,
        status=Status.NEW.value,
        lat=report.lat,
        lon=report.lon,
        first_seen=seen,
        last_seen=seen,
        max_score=report.score,
        report_count=1,
        recurrence_of_id=previous.id if previous else None,
        recurrence_count=previous.recurrence_count + 1 if previous else 0,
        to_review=_awaits_review(report),
        created_at=now,
        updated_at=now,
    )
    session.add(incident)
    session.flush()
    candidates.add(incident)
    report.incident_id, report.incident_action = incident.id, IncidentAction.OPENED.value
    session.add(report)
    session.flush()  # the report's id, for the history
    comment = f"opened by report #{report.id}"
    if previous is not None:
        comment += f"; deposit again where #{previous.id} was cleaned"
    session.add(
        Transition(
            incident_id=incident.id, from_status=None, to_status=Status.NEW.value, at=now,
            actor=actor, actor_key_id=actor_key_id, comment=comment,
        )
    )
    return incident, IncidentAction.OPENED


def _attach(report: Report, incident: Incident, action: IncidentAction) -> tuple[Incident, IncidentAction]:
    count = incident.report_count + 1
    incident.lat += (report.lat - incident.lat) / count  # running mean of the reports' positions
    incident.lon = _wrap(incident.lon + _lon_delta(incident.lon, report.lon) / count)
    incident.report_count = count
    incident.first_seen = min(incident.first_seen, report.observed_at)
    incident.last_seen = max(incident.last_seen, report.observed_at)
    if report.score > incident.max_score and report.label is not None:
        incident.max_score, incident.label = report.score, report.label
    if _awaits_review(report):
        incident.to_review = True
    incident.updated_at = utcnow()
    report.incident_id, report.incident_action = incident.id, action.value
    return incident, action


# --------------------------------------------------------------------------------------------------
# Workflow


def transition(
    session: Session,
    incident: Incident,
    to: Status,
    *,
    actor: str,
    actor_key_id: int | None,
    comment: str | None = None,
    merged_into_id: int | None = None,
    at: datetime | None = None,
) -> Transition:
    """Move an incident to status ``to`` and record who, when and why; the caller commits.

    A ``duplicate`` transition needs ``merged_into_id``: the incident's reports move to that one,
    whose counts, times and position are recomputed.

    Raises:
        InvalidTransitionError: ``to`` is not allowed from the current status.
        InvalidMergeError: no, or an unusable, merge target; or a target given for another status.
    """
    current = Status(incident.status)
    allowed = ALLOWED_TRANSITIONS[current]
    if to not in allowed:
        choices = ", ".join(sorted(allowed)) or "nothing: it is final"
        raise InvalidTransitionError(f"incident #{incident.id} is {current}; it can go to {choices}, not {to}")
    if merged_into_id is not None and to is not Status.DUPLICATE:
        raise InvalidMergeError("merged_into is only for the duplicate status")
    at = at or utcnow()
    if to is Status.DUPLICATE:
        target = _merge_target(session, incident, merged_into_id)
        session.execute(update(Report).where(Report.incident_id == incident.id).values(incident_id=target.id))
        _recompute(target, list(session.scalars(select(Report).where(Report.incident_id == target.id))))
        target.updated_at = at
        target.to_review = target.to_review or incident.to_review  # the reports to review move with them
        incident.report_count, incident.to_review = 0, False
        incident.merged_into_id = target.id
    if to is Status.CLEANED:
        incident.cleaned_at = at
    incident.status = to.value
    incident.updated_at = at
    row = Transition(
        incident_id=incident.id, from_status=current.value, to_status=to.value, at=at,
        actor=actor, actor_key_id=actor_key_id, comment=comment, merged_into_id=merged_into_id,
    )
    session.add(row)
    session.flush()
    return row


def _merge_target(session: Session, incident: Incident, target_id: int | None) -> Incident:
    if target_id is None:
        raise InvalidMergeError("a duplicate needs merged_into: the id of the incident it duplicates")
    if target_id == incident.id:
        raise InvalidMergeError("an incident cannot be merged into itself")
    target = session.get(Incident, target_id)
    if target is None:
        raise InvalidMergeError(f"merged_into: there is no incident #{target_id}")
    if target.status == Status.DUPLICATE.value:
        raise InvalidMergeError(
            f"incident #{target_id} is itself a duplicate of #{target.merged_into_id}; merge into that one"
        )
    return target


def _recompute(incident: Incident, reports: list[Report]) -> None:
    """Counts, times, position and best class of an incident from its reports."""
    if not reports:
        return
    incident.report_count = len(reports)
    incident.first_seen = min(r.observed_at for r in reports)
    incident.last_seen = max(r.observed_at for r in reports)
    incident.lat = sum(r.lat for r in reports) / len(reports)
    origin = reports[0].lon
    incident.lon = _wrap(origin + sum(_lon_delta(origin, r.lon) for r in reports) / len(reports))
    best = max(reports, key=lambda r: r.score)
    if best.label is not None:
        incident.max_score, incident.label = best.score, best.label
