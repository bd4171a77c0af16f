"""Erasing one report on request: its photo and the fields that tell who sent it or what it shows.

An administrator erases a report (``POST /v1/reports/{id}/erase``, ``vipare reports erase ID``), for
instance when the person who sent it, or someone in the photo, asks for it (GDPR article 17).

Erased, because they identify or describe a person:

- the photo (faces, plates, homes), unless another report still has the same file (its own
  retention then applies);
- ``note``: free text by the agent, which may name or describe anyone;
- ``submitted_by``, ``client_ref`` and ``api_key_id``: who sent it (a key's name is often a person's),
  and the link to the key through which an agent reads its own reports;
- the agent's name as the actor of the history row where the report opened its incident;
- the free-text notes of the photo's reviews, and the notes the history repeats after their summary.

Kept, because they describe the deposit and not a person, and are the city's statistics: the
detections and verdict, the place, the times, the model, the incident and its counts (the report
still counts as one sighting of the deposit, so ``report_count``, first and last seen and the
position stay consistent with the rows), the reviews' boxes, and the photo's sha256 (which only
matches a photo one already holds, and tells whether another report still needs the file).

The incident's history gains one row, ``report #12 erased``, by the administrator, saying nothing of
what was erased; an incident waiting for a review of the erased report stops waiting (nothing is left
to review). A report with no incident records the erasure in ``erased_at`` and ``erased_by`` only.

Order, as for a purge (:mod:`serving.retention`): the database first, committed, then the file; a
crash between leaves a file the next purge or the start-up sweep deletes. Erasing an erased report
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from serving.db import write_session
from serving.errors import NotFoundError
from serving.grouping import needs_review
from serving.models import Incident, Report, ReportReview, Transition, utcnow
from serving.photos.backend import PhotoBackend
from serving.retention import delete_unneeded

__all__ = ["ERASED", "Erasure", "erase", "erase_fields"]

ERASED = "(erased)"
"""What stands in the place of an erased name."""


@dataclass(frozen=True)
class Erasure:
    """The outcome of an erasure.

    Attributes:
        report_id: the report.
        erased_at: when it was erased (by this call, or earlier).
        changed: False when it was already erased: nothing changed.
        file_deleted: the photo file was deleted by this call.
        file_shared: the photo file is kept because another report still has the same photo.
    """

    report_id: int
    erased_at: datetime
    changed: bool
    file_deleted: bool
    file_shared: bool


def erase_fields(
    session: Session, report_id: int, *, actor: str, actor_key_id: int | None, at: datetime | None = None
) -> tuple[Report, bool]:
    """Erase a report's personal fields and mark its photo deleted (see the module doc); the caller commits.

    Args:
        session: a session in a write transaction (:func:`serving.db.write_session`).
        report_id: the report.
        actor: the administrator, as the history's actor (``Principal.actor``).
        actor_key_id: their key id, if any.
        at: when; now when omitted.

    Returns:
        The report, and whether this call erased it (False: it already was).

    Raises:
        NotFoundError: no such report.
    """
    report = session.get(Report, report_id)
    if report is None:
        raise NotFoundError(f"There is no report #{report_id}.")
    if report.erased_at is not None:
        return report, False
    at = at or utcnow()
    report.note = None
    report.submitted_by = ERASED
    report.client_ref = f"erased:{report.id}"  # unique with the sha256, and no one's
    report.api_key_id = None
    report.erased_at, report.erased_by = at, actor
    report.photo_deleted_at = report.photo_deleted_at or at
    for review in session.scalars(select(ReportReview).where(ReportReview.report_id == report.id)):
        review.note = None
    opened, reviewed = f"opened by report #{report.id}", f"review of report #{report.id}: "
    history = select(Transition).where(
        or_(
            Transition.comment == opened,
            Transition.comment.startswith(f"{opened};", autoescape=True),
            Transition.comment.startswith(reviewed, autoescape=True),
        )
    )
    for row in session.scalars(history):
        comment = row.comment or ""
        if comment.startswith(reviewed):  # "review of report #N: <boxes>; <note>": the note goes
            row.comment = comment.split("; ", 1)[0]
        elif row.from_status is None:  # the opening: its actor is the agent who sent the photo
            row.actor, row.actor_key_id = ERASED, None
    incident = session.get(Incident, report.incident_id) if report.incident_id is not None else None
    if incident is not None:
        session.add(
            Transition(
                incident_id=incident.id,
                from_status=incident.status,
                to_status=incident.status,
                at=at,
                actor=actor,
                actor_key_id=actor_key_id,
                comment=f"report #{report.id} erased",
            )
        )
        session.flush()
        incident.to_review = needs_review(session, incident.id)
    session.flush()
    return report, True


def erase(
    sessions: sessionmaker[Session],
    photos: PhotoBackend,
    report_id: int,
    *,
    actor: str,
    actor_key_id: int | None,
    at: datetime | None = None,
    annotated_cache: Path | None = None,
) -> Erasure:
    """Erase a report: its fields in one committed write transaction, then its photo file if no report needs it.

    Args:
        sessions: the service's sessions.
        photos: the photo store.
        report_id: the report.
        actor: the administrator, as the history's actor.
        actor_key_id: their key id, if any.
        at: when; now when omitted.
        annotated_cache: the cache of annotated drawings (:mod:`serving.photos.annotated`), whose
            entries of the photo go with it.

    Returns:
        What was done.

    Raises:
        NotFoundError: no such report.
    """
    with write_session(sessions) as session:
        report, changed = erase_fields(session, report_id, actor=actor, actor_key_id=actor_key_id, at=at)
        erased_at, sha256, ext = report.erased_at, report.sha256, report.photo_ext
    assert erased_at is not None
    # Also finishes an erasure that a crash cut short between the commit and the file.
    files, _ = delete_unneeded(sessions, photos, {sha256: ext}, annotated_cache=annotated_cache)
    with sessions() as session:
        shared = session.scalar(select(Report.id).where(Report.sha256 == sha256, Report.photo_deleted_at.is_(None)))
    return Erasure(
        report_id=report_id,
        erased_at=erased_at,
        changed=changed,
        file_deleted=files > 0,
        file_shared=shared is not None,
    )
