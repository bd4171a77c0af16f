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
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from serving.geo import lon_delta, wrap_lon
from serving.models import Incident, Report, Transition, utcnow

__all__ = [
    "ALLOWED_TRANSITIONS",
    "OPEN_STATUSES",
    "InvalidMergeError",
    "InvalidTransitionError",
    "Status",
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
    incident.lon = wrap_lon(origin + sum(lon_delta(origin, r.lon) for r in reports) / len(reports))
    best = max(reports, key=lambda r: r.score)
    if best.label is not None:
        incident.max_score, incident.label = best.score, best.label
