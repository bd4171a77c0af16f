"""Incidents and their workflow: where an incident stands, and who moved it there, when and why.

An incident is one deposit at one place, however many photos report it; :mod:`serving.grouping`
gives each report its incident and opens new ones.

Workflow (:data:`ALLOWED_TRANSITIONS`)::

    new ──> confirmed ──> scheduled ──> cleaned
    new, confirmed ──> scheduled or cleaned   (a crew may skip a step)
    scheduled ──> confirmed                   (taken off the schedule)
    new, confirmed, scheduled ──> rejected    (false alarm) ──> confirmed (reopened after all)
    new, confirmed, scheduled ──> duplicate   (merged into another incident; its reports move there)

Every change, the opening included, is a :class:`~serving.models.Transition`: from, to, who, when,
comment. ``cleaned`` and ``duplicate`` are final: a deposit found again after cleaning is a new
incident (a recurrence), and a merge is not undone.

A merge target must be open (new, confirmed, scheduled), so that a deposit still there never leaves
the open views for a cleaned, rejected or merged incident (:class:`MergeTargetClosedError`), and
within ``merge_max_distance_m`` of the duplicate (:class:`MergeTooFarError`): two photos of one
deposit are a few metres apart, not kilometres. A manager who knows better sends ``force``; the
distance and the override are then written in the transition's comment.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import reduce

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from serving.geo import lon_delta, wrap_lon
from serving.models import Incident, Report, Transition, utcnow
from serving.sizes import estimate_size, larger
from vipare.geotag import haversine_m

__all__ = [
    "ALLOWED_TRANSITIONS",
    "OPEN_STATUSES",
    "InvalidMergeError",
    "InvalidTransitionError",
    "MergeRefusedError",
    "MergeTargetClosedError",
    "MergeTooFarError",
    "Status",
    "transition",
    "unmerge",
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
    Status.NEW: frozenset({Status.CONFIRMED, Status.SCHEDULED, Status.CLEANED, Status.REJECTED, Status.DUPLICATE}),
    Status.CONFIRMED: frozenset({Status.SCHEDULED, Status.CLEANED, Status.REJECTED, Status.DUPLICATE}),
    Status.SCHEDULED: frozenset({Status.CONFIRMED, Status.CLEANED, Status.REJECTED, Status.DUPLICATE}),
    Status.REJECTED: frozenset({Status.CONFIRMED}),
    Status.CLEANED: frozenset(),
    Status.DUPLICATE: frozenset(),
}


class InvalidTransitionError(Exception):
    """The incident's current status does not allow the requested one (HTTP 409)."""


class InvalidMergeError(Exception):
    """A duplicate transition without a usable target, or a target given for another transition (HTTP 422)."""


class MergeRefusedError(Exception):
    """A merge target that exists but may not take the duplicate's reports (HTTP 409)."""


class MergeTargetClosedError(MergeRefusedError):
    """The merge target is cleaned, rejected or itself a duplicate: not open (HTTP 409)."""


class MergeTooFarError(MergeRefusedError):
    """The merge target is farther than the limit and the merge was not forced (HTTP 409)."""


def _km_or_m(metres: float) -> str:
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.0f} m"


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
    merge_max_distance_m: float | None = None,
    force: bool = False,
    scheduled_for: datetime | None = None,
    crew: str | None = None,
) -> Transition:
    """Move an incident to status ``to`` and record who, when and why; the caller commits.

    A ``duplicate`` transition needs ``merged_into_id``, an open incident: the incident's reports move
    to that one, whose counts, times and position are recomputed.

    Args:
        merge_max_distance_m: farthest a merge target may be from the incident, metres; None: no limit.
        force: merge into a farther target all the same; the distance and the override are added
            to ``comment``.
        scheduled_for, crew: for ``scheduled``, when and by whom (kept on the incident, written in the
            history's comment).

    Raises:
        InvalidTransitionError: ``to`` is not allowed from the current status.
        InvalidMergeError: no, or an unknown, merge target; or a target given for another status.
        MergeTargetClosedError: the target is not open (cleaned, rejected, duplicate).
        MergeTooFarError: the target is farther than ``merge_max_distance_m`` and ``force`` is false.
    """
    current = Status(incident.status)
    allowed = ALLOWED_TRANSITIONS[current]
    if to not in allowed:
        choices = ", ".join(sorted(allowed)) or "nothing: it is final"
        raise InvalidTransitionError(f"incident #{incident.id} is {current}; it can go to {choices}, not {to}")
    if merged_into_id is not None and to is not Status.DUPLICATE:
        raise InvalidMergeError("merged_into is only for the duplicate status")
    if (scheduled_for is not None or crew is not None) and to is not Status.SCHEDULED:
        raise InvalidMergeError("scheduled_for and crew are for the scheduled status")
    at = at or utcnow()
    if to is Status.SCHEDULED:
        incident.scheduled_for, incident.crew = scheduled_for, crew
        planned = " ".join(
            part for part in (
                f"for {scheduled_for.isoformat(timespec='minutes')}" if scheduled_for else "",
                f"crew {crew}" if crew else "",
            ) if part
        )
        if planned:
            comment = f"{comment}; {planned}" if comment else planned
    if to is Status.DUPLICATE:
        target = _merge_target(session, incident, merged_into_id)
        distance = haversine_m(incident.lat, incident.lon, target.lat, target.lon)
        if merge_max_distance_m is not None and distance > merge_max_distance_m:
            if not force:
                raise MergeTooFarError(
                    f"incident #{target.id} is {_km_or_m(distance)} from #{incident.id}, farther than the "
                    f"{merge_max_distance_m:g} m a merge may reach: check merged_into, or send force: true to merge "
                    "all the same (recorded in the history)"
                )
            forced = f"merged {_km_or_m(distance)} away, over the {merge_max_distance_m:g} m limit (forced)"
            comment = f"{comment}; {forced}" if comment else forced
        session.execute(
            update(Report).where(Report.incident_id == incident.id)
            .values(incident_id=target.id, merged_from=func.coalesce(Report.merged_from, incident.id))
        )
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
        incident_id=incident.id,
        from_status=current.value,
        to_status=to.value,
        at=at,
        actor=actor,
        actor_key_id=actor_key_id,
        comment=comment,
        merged_into_id=merged_into_id,
    )
    session.add(row)
    session.flush()
    return row


def unmerge(session: Session, incident: Incident, *, actor: str, actor_key_id: int | None,
            comment: str | None = None, at: datetime | None = None) -> Transition:
    """Undo the merge of a duplicate: its reports go back from the incident it was merged into, and it
    takes back the status it had before; both incidents' counts, times and position are recomputed.

    Raises:
        InvalidTransitionError: the incident is not a duplicate.
    """
    if incident.status != Status.DUPLICATE.value or incident.merged_into_id is None:
        raise InvalidTransitionError(
            f"incident #{incident.id} is {incident.status}, not a duplicate: nothing to unmerge"
        )
    at = at or utcnow()
    target = session.get(Incident, incident.merged_into_id)
    merge = session.scalars(
        select(Transition).where(Transition.incident_id == incident.id, Transition.to_status == Status.DUPLICATE.value)
        .order_by(Transition.id.desc()).limit(1)
    ).first()
    back = Status(merge.from_status) if merge is not None and merge.from_status else Status.NEW
    session.execute(
        update(Report).where(Report.merged_from == incident.id).values(incident_id=incident.id, merged_from=None)
    )
    session.flush()
    _recompute(incident, list(session.scalars(select(Report).where(Report.incident_id == incident.id))))
    if target is not None:
        _recompute(target, list(session.scalars(select(Report).where(Report.incident_id == target.id))))
        target.updated_at = at
    note = f"unmerged from #{incident.merged_into_id}"
    incident.merged_into_id = None
    incident.status = back.value
    incident.updated_at = at
    row = Transition(
        incident_id=incident.id, from_status=Status.DUPLICATE.value, to_status=back.value, at=at, actor=actor,
        actor_key_id=actor_key_id, comment=f"{comment}; {note}" if comment else note,
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
        raise MergeTargetClosedError(
            f"incident #{target_id} is itself a duplicate of #{target.merged_into_id}; merge into that one"
        )
    if Status(target.status) not in OPEN_STATUSES:
        why = (
            "its deposit was cleaned: a deposit seen since is a new one, keep this incident open"
            if target.status == Status.CLEANED.value
            else "it was rejected as a false alarm: reopen it (to confirmed) first, or keep this incident"
        )
        raise MergeTargetClosedError(
            f"incident #{target_id} is {target.status}, and only an open incident (new, confirmed, scheduled) takes "
            f"a duplicate; {why}"
        )
    return target


def _recompute(incident: Incident, reports: list[Report]) -> None:
    """Counts, times, position and best class of an incident from its reports."""
    if not reports:
        return
    incident.report_count = len(reports)
    incident.size_estimate = reduce(larger, (estimate_size(r.detections) for r in reports), None)
    incident.first_seen = min(r.observed_at for r in reports)
    incident.last_seen = max(r.observed_at for r in reports)
    incident.lat = sum(r.lat for r in reports) / len(reports)
    origin = reports[0].lon
    incident.lon = wrap_lon(origin + sum(lon_delta(origin, r.lon) for r in reports) / len(reports))
    best = max(reports, key=lambda r: r.score)
    if best.label is not None:
        incident.max_score, incident.label = best.score, best.label
