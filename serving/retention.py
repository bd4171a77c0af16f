"""Retention of photos: a photo is kept while its deposit is handled and reviewed, then deleted.

A report's photo is past retention (:func:`due`) when, ``photo_retention_days`` ago or earlier,

- the report was received, and
- its incident was last changed (its closing, or a late photo joining it) and is now ``cleaned``,
  ``rejected`` or ``duplicate`` (a merged incident's reports move to the one it duplicates, so its
  photos follow that one's), or the report reached no incident at all (the model saw no deposit and
  the agent did not send it as one: nobody handles it).

The report row stays, with its detections, place and times (the city's statistics), marked
``photo_deleted_at``; ``GET /v1/reports/{id}/image`` then answers 410. Photos are files named by
their sha256 (:mod:`serving.photos.store`), so one file may serve several reports: it is deleted
only once no report still needs it (every report of that sha256 is marked).

Order of a purge (:func:`purge`), so that a crash anywhere leaves nothing served that should not be
and the next pass finishes the job:

1. mark the reports past retention, in write transactions of at most 500 reports, and commit: from
   then on nothing serves their photos;
2. then, file by file, in a write transaction (no upload commits meanwhile), check that no unmarked
   report has the file's sha256 and unlink it.

A crash between 1 and 2 leaves files whose reports are all marked: each pass looks for such files
(:func:`leftover_photos`) and deletes them, and so does the start-up sweep of orphans
(:func:`serving.storage.open_storage`), which counts only unmarked reports as references.
Erasing one report (:mod:`serving.erasure`) follows the same order.

One narrow window is not closed: an upload of the very same bytes by another client, that finds the
file still there between the moment it stores it and the commit of its report, while a pass deletes
it, gets a report whose photo is missing (answered 404, never another photo).

The service runs :func:`daily_pass` from every worker every hour; the first worker to claim the day's
pass in a write transaction (:func:`claim_pass`) runs it, the others find it done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from serving.db import write_session
from serving.errors import PhotoDeletedError
from serving.grouping import needs_review
from serving.incidents import Status
from serving.models import Incident, Report, ScheduledPass, utcnow
from serving.photos.annotated import forget_annotated
from serving.photos.backend import PhotoBackend

__all__ = [
    "CLOSED_STATUSES",
    "PASS_CHECK_S",
    "PASS_PERIOD",
    "PURGE_PASS",
    "PurgeResult",
    "check_photo_kept",
    "claim_pass",
    "daily_pass",
    "delete_unneeded",
    "due",
    "leftover_photos",
    "photo_kept",
    "purge",
]

logger = logging.getLogger("serving.retention")

CLOSED_STATUSES: frozenset[Status] = frozenset({Status.CLEANED, Status.REJECTED, Status.DUPLICATE})
"""Incidents whose photos are deleted once the retention period has passed."""

PURGE_PASS = "photo_purge"
"""The name of the daily purge in ``scheduled_passes``."""
PASS_PERIOD = timedelta(days=1)
"""How often the service purges."""
PASS_CHECK_S = 3600.0
"""How often each worker of the service looks whether the day's purge is due."""

_BATCH = 500  # reports or files per write transaction: short enough not to hold uploads up


@dataclass(frozen=True)
class PurgeResult:
    """What a purge did, or would do (a dry run).

    Attributes:
        reports: reports whose photo stopped being kept (marked ``photo_deleted_at``).
        files: photo files deleted, those a crashed pass left included.
        bytes: their total size.
        shared: photos of those reports kept because a report still under way has the same file.
        dry_run: nothing was changed; the numbers say what a purge would do now.
    """

    reports: int
    files: int
    bytes: int
    shared: int
    dry_run: bool = False


def due(cutoff: datetime) -> ColumnElement[bool]:
    """SQL condition on ``Report``: its photo is kept and past retention at ``cutoff`` (now minus the period).

    Args:
        cutoff: the retention period before now; reports received and incidents changed at or
            before it are past retention.
    """
    closed = (
        select(Incident.id)
        .where(
            Incident.id == Report.incident_id,
            Incident.status.in_([s.value for s in CLOSED_STATUSES]),
            Incident.updated_at <= cutoff,
        )
        .exists()
    )
    return and_(
        Report.photo_deleted_at.is_(None),
        Report.received_at <= cutoff,
        or_(Report.incident_id.is_(None), closed),
    )


def check_photo_kept(report: Report) -> None:
    """Refuse to serve the photo of a report whose photo is no longer kept.

    Raises:
        PhotoDeletedError: past retention, or erased (HTTP 410).
    """
    if report.photo_deleted_at is None:
        return
    why = "erased" if report.erased_at is not None else "deleted after its retention period"
    raise PhotoDeletedError(
        f"The photo of report #{report.id} was {why} on {report.photo_deleted_at:%Y-%m-%d}; the report itself "
        "(detections, place, time) is still there."
    )


def leftover_photos(session: Session) -> dict[str, str]:
    """Photos whose reports are all marked deleted, ``sha256 -> extension``: files to delete if still there."""
    live = aliased(Report)
    still_needed = select(live.id).where(live.sha256 == Report.sha256, live.photo_deleted_at.is_(None)).exists()
    rows = session.execute(
        select(Report.sha256, Report.photo_ext).distinct().where(Report.photo_deleted_at.is_not(None), ~still_needed)
    )
    return {sha256: ext for sha256, ext in rows}


def photo_kept(sessions: sessionmaker[Session], sha256: str) -> bool:
    """Whether a report keeps the photo of this sha256 (its photo neither purged nor erased)."""
    with sessions() as session:
        return bool(_needed(session, [sha256]))


def _needed(session: Session, shas: Sequence[str], excluding: set[int] | None = None) -> set[str]:
    """Which of ``shas`` a report with its photo kept still has (reports in ``excluding`` aside)."""
    needed: set[str] = set()
    for start in range(0, len(shas), _BATCH):
        chunk = list(shas[start : start + _BATCH])
        rows = session.execute(
            select(Report.id, Report.sha256).where(Report.sha256.in_(chunk), Report.photo_deleted_at.is_(None))
        )
        needed.update(sha256 for report_id, sha256 in rows if excluding is None or report_id not in excluding)
    return needed


def _size(photos: PhotoBackend, sha256: str, ext: str) -> int | None:
    return photos.size(sha256, ext)


def delete_unneeded(
    sessions: sessionmaker[Session],
    photos: PhotoBackend,
    candidates: dict[str, str],
    *,
    annotated_cache: Path | None = None,
) -> tuple[int, int]:
    """Delete the files of ``candidates`` (``sha256 -> extension``) that no report with its photo kept has.

    Call it only after the marks of their reports are committed (see the module doc). Each file is
    checked and deleted in a write transaction, so that no report of the same photo commits meanwhile.
    The photo's cached drawings (:mod:`serving.photos.annotated`, under ``annotated_cache``) go first,
    so that a crash between the two leaves the photo, which the next pass finds again.

    Returns:
        How many files were deleted, and their total size in bytes.
    """
    present = [
        (sha256, ext) for sha256, ext in sorted(candidates.items())
        if _size(photos, sha256, ext) is not None
        or photos.exists(sha256, ext, "held")
        or photos.exists(sha256, ext, "original")
    ]
    files = size = 0
    for start in range(0, len(present), _BATCH):
        chunk = present[start : start + _BATCH]
        with write_session(sessions) as session:
            needed = _needed(session, [sha256 for sha256, _ in chunk])
            for sha256, ext in chunk:
                if sha256 in needed:
                    continue
                photos.release(sha256, ext)  # not blurred yet (serving.photos.pending): no longer needed either
                photos.delete(sha256, ext, "original")  # serving.originals
                found = _size(photos, sha256, ext)
                if found is None:
                    continue
                if annotated_cache is not None:
                    forget_annotated(annotated_cache, sha256)
                photos.delete(sha256, ext)
                files, size = files + 1, size + found
    return files, size


def _mark(sessions: sessionmaker[Session], ids: Sequence[int], cutoff: datetime, now: datetime) -> int:
    """Mark the reports of ``ids`` still past retention as photo deleted, and commit; returns how many."""
    marked = 0
    for start in range(0, len(ids), _BATCH):
        chunk = list(ids[start : start + _BATCH])
        with write_session(sessions) as session:
            rows = list(session.execute(select(Report.id, Report.incident_id).where(Report.id.in_(chunk), due(cutoff))))
            if not rows:
                continue
            session.execute(update(Report).where(Report.id.in_([r for r, _ in rows])).values(photo_deleted_at=now))
            marked += len(rows)
            # A photo nobody can see any more cannot be reviewed: its incident stops waiting for that review.
            for incident_id in sorted({i for _, i in rows if i is not None}):
                incident = session.get(Incident, incident_id)
                if incident is not None and incident.to_review:
                    incident.to_review = needs_review(session, incident_id)
    return marked


def purge(
    sessions: sessionmaker[Session],
    photos: PhotoBackend,
    *,
    retention_days: int,
    now: datetime | None = None,
    dry_run: bool = False,
    annotated_cache: Path | None = None,
) -> PurgeResult:
    """Delete the photos past retention (see the module doc for which, and in what order).

    Args:
        sessions: the service's sessions.
        photos: the photo store.
        retention_days: ``photo_retention_days``.
        now: the time to count from (UTC); now when omitted.
        dry_run: change nothing; say what a purge would do.
        annotated_cache: the cache of annotated drawings, whose entries of deleted photos go too.

    Returns:
        What was done (or would be).
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=retention_days)
    with sessions() as session:
        rows = list(session.execute(select(Report.id, Report.sha256, Report.photo_ext).where(due(cutoff))))
        candidates = leftover_photos(session)
        candidates.update((sha256, ext) for _, sha256, ext in rows)
        due_ids = {report_id for report_id, _, _ in rows}
        needed = _needed(session, sorted(candidates), excluding=due_ids)
    due_shas = {sha256 for _, sha256, _ in rows}
    shared = len(due_shas & needed)
    if dry_run:
        sizes = [_size(photos, sha256, ext) for sha256, ext in candidates.items() if sha256 not in needed]
        found = [size for size in sizes if size is not None]
        return PurgeResult(reports=len(rows), files=len(found), bytes=sum(found), shared=shared, dry_run=True)
    marked = _mark(sessions, sorted(due_ids), cutoff, now)
    files, size = delete_unneeded(sessions, photos, candidates, annotated_cache=annotated_cache)
    return PurgeResult(reports=marked, files=files, bytes=size, shared=shared)


def claim_pass(sessions: sessionmaker[Session], name: str, now: datetime, period: timedelta) -> bool:
    """Claim a periodic pass: True when it last started at least ``period`` before ``now`` (or never).

    The row is read and updated in one write transaction, so that of several workers asking at once
    exactly one gets True.
    """
    with write_session(sessions) as session:
        row = session.get(ScheduledPass, name)
        if row is None:
            row = ScheduledPass(name=name)
            session.add(row)
        if row.started_at is not None and row.started_at > now - period:
            return False
        row.started_at = now
        return True


def daily_pass(
    sessions: sessionmaker[Session],
    photos: PhotoBackend,
    *,
    retention_days: int,
    now: datetime | None = None,
    annotated_cache: Path | None = None,
) -> PurgeResult | None:
    """The service's daily purge: run it when no worker has in the last day.

    Each worker of the service calls this every :data:`PASS_CHECK_S` seconds (see :mod:`serving.app`).

    Args:
        sessions: the service's sessions.
        photos: the photo store.
        retention_days: ``photo_retention_days``.
        now: the time (UTC); now when omitted.
        annotated_cache: the cache of annotated drawings, whose entries of deleted photos go too.

    Returns:
        What the purge did, or None when it was not due (another worker, or this one, ran it).
    """
    now = now or utcnow()
    if not claim_pass(sessions, PURGE_PASS, now, PASS_PERIOD):
        return None
    result = purge(sessions, photos, retention_days=retention_days, now=now, annotated_cache=annotated_cache)
    with write_session(sessions) as session:
        finished = update(ScheduledPass).where(ScheduledPass.name == PURGE_PASS).values(finished_at=max(now, utcnow()))
        session.execute(finished)
    if result.reports or result.files:
        logger.info(
            "photos past retention deleted",
            extra={"reports": result.reports, "files": result.files, "bytes": result.bytes, "shared": result.shared},
        )
    return result
