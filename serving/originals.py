"""Unblurred originals: not kept, unless ``VIPARE_KEEP_ORIGINALS_DAYS`` says so, and then read under a log.

Every photo vipare shows is blurred (:mod:`serving.photos.anonymise`). A city may need the photo as
taken for a short time (a complaint about a deposit, a police request about a vehicle): with
``keep_originals_days`` above 0, the original of each upload with faces or plates blurred,
metadata removed, is kept in the store's ``.originals`` folder for that many days (by file age,
checked every hour), and only a ``privacy_officer`` key may read it, through
``GET /v1/reports/{id}/original?reason=...``. Each read is written to ``original_reads`` (who,
when, why) and committed before the first byte is served;
``GET /v1/originals/reads`` lists them (admins and privacy officers). The default, 0, keeps none.
Privacy officer keys are created on the server only (``vipare keys create``), never through the API.

An original goes with its report's photo (a purge past retention, an erasure) and when it is older
than the setting; turning the setting back to 0 deletes the ones kept at the next hourly check.
Frames of batch jobs (``vipare batch``) never keep theirs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from serving.auth import Principal
from serving.db import write_session
from serving.errors import NotFoundError, OriginalNotKeptError
from serving.models import OriginalRead, Report, utcnow
from serving.photos.backend import PhotoBackend

__all__ = ["DAY_S", "expire_originals", "read_original", "reads"]

DAY_S = 86_400.0


def read_original(
    sessions: sessionmaker[Session], photos: PhotoBackend, report_id: int, principal: Principal, reason: str,
    *, at: datetime | None = None,
) -> tuple[str, str]:
    """Log a read of a report's original and return its sha256 and extension (its copy ``original`` in the store).

    Raises:
        NotFoundError: no such report.
        OriginalNotKeptError: its original is not kept (never was, expired, purged, erased).
    """
    with write_session(sessions) as session:
        report = session.get(Report, report_id)
        if report is None:
            raise NotFoundError(f"There is no report #{report_id}.")
        if report.photo_deleted_at is not None or not photos.exists(report.sha256, report.photo_ext, "original"):
            raise OriginalNotKeptError(
                f"The unblurred original of report #{report_id} is not kept: originals are kept only when "
                "VIPARE_KEEP_ORIGINALS_DAYS is above 0, for that many days, of photos with something blurred "
                "(without, the stored photo is the original), and go with the report's photo. The stored photo "
                f"is at /v1/reports/{report_id}/image while it is kept."
            )
        session.add(
            OriginalRead(
                report_id=report_id, read_at=at or utcnow(), reader=principal.actor, reader_key_id=principal.key_id,
                reason=reason,
            )
        )
        return report.sha256, report.photo_ext


def reads(session: Session, *, report_id: int | None, limit: int, offset: int) -> tuple[list[OriginalRead], int]:
    """The log of reads, newest first, and how many there are (of one report, when given)."""
    where = [] if report_id is None else [OriginalRead.report_id == report_id]
    total = session.scalar(select(func.count()).select_from(OriginalRead).where(*where)) or 0
    rows = session.scalars(
        select(OriginalRead).where(*where).order_by(OriginalRead.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), total


def expire_originals(photos: PhotoBackend, keep_days: int) -> int:
    """Delete the originals older than ``keep_days`` days (all of them for 0); returns how many."""
    removed = 0
    for sha256, ext, age in photos.originals():
        if age >= keep_days * DAY_S:
            photos.delete(sha256, ext, "original")
            removed += 1
    return removed
