"""Finding incidents: the filters shared by the list, the exports and Open311.

Filters, all optional and combined with AND:

- ``bbox``: ``min_lon,min_lat,max_lon,max_lat`` (RFC 7946 order; ``min_lon > max_lon`` crosses the
  antimeridian), on the plain indexed ``lat``/``lon`` columns;
- ``statuses`` and ``labels``: any of;
- ``since`` / ``until``: incidents seen during the period (last seen at or after ``since``, first
  seen at or before ``until``);
- ``opened_since`` / ``opened_until``: first seen within the period (Open311's start/end dates);
- ``ids``: any of these incident ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from serving.geo import lat_lon_box
from serving.incidents import Status
from serving.models import Incident, Report, Transition

__all__ = [
    "Bbox",
    "IncidentFilter",
    "batches",
    "count_incidents",
    "iter_incidents",
    "last_comments",
    "latest_reports",
    "list_incidents",
    "parse_bbox",
]

_BATCH = 500


@dataclass(frozen=True)
class Bbox:
    """A box in WGS 84 degrees."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


def parse_bbox(text: str) -> Bbox:
    """Read ``min_lon,min_lat,max_lon,max_lat``.

    Raises:
        ValueError: not four finite numbers within range, or ``min_lat > max_lat``; the message says which.
    """
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError("bbox needs four numbers: min_lon,min_lat,max_lon,max_lat (decimal degrees)")
    try:
        min_lon, min_lat, max_lon, max_lat = (float(p) for p in parts)
    except ValueError:
        raise ValueError("bbox needs four numbers: min_lon,min_lat,max_lon,max_lat (decimal degrees)") from None
    if not all(math.isfinite(v) for v in (min_lon, min_lat, max_lon, max_lat)):
        raise ValueError("bbox values must be finite numbers")
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise ValueError("bbox out of range: longitudes in [-180, 180], latitudes in [-90, 90], min_lat <= max_lat")
    return Bbox(min_lon, min_lat, max_lon, max_lat)


@dataclass(frozen=True)
class IncidentFilter:
    """Which incidents a query wants (see the module doc)."""

    bbox: Bbox | None = None
    statuses: Sequence[Status] = field(default_factory=tuple)
    labels: Sequence[str] = field(default_factory=tuple)
    since: datetime | None = None
    until: datetime | None = None
    ids: Sequence[int] = field(default_factory=tuple)
    opened_since: datetime | None = None
    opened_until: datetime | None = None
    sizes: Sequence[str] = field(default_factory=tuple)

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions."""
        where: list[ColumnElement[bool]] = []
        if self.bbox is not None:
            b = self.bbox
            where.append(lat_lon_box(Incident.lat, Incident.lon, b.min_lon, b.min_lat, b.max_lon, b.max_lat))
        if self.statuses:
            where.append(Incident.status.in_([s.value for s in self.statuses]))
        if self.labels:
            where.append(Incident.label.in_(list(self.labels)))
        if self.sizes:  # a manager's size, else the estimate
            where.append(func.coalesce(Incident.size, Incident.size_estimate).in_(list(self.sizes)))
        if self.since is not None:
            where.append(Incident.last_seen >= self.since)
        if self.until is not None:
            where.append(Incident.first_seen <= self.until)
        if self.ids:
            where.append(Incident.id.in_(list(self.ids)))
        if self.opened_since is not None:
            where.append(Incident.first_seen >= self.opened_since)
        if self.opened_until is not None:
            where.append(Incident.first_seen <= self.opened_until)
        return where


def _ordered(flt: IncidentFilter) -> Select[Incident]:
    return select(Incident).where(*flt.conditions()).order_by(Incident.last_seen.desc(), Incident.id.desc())


def count_incidents(session: Session, flt: IncidentFilter) -> int:
    """How many incidents match."""
    return session.scalar(select(func.count()).select_from(Incident).where(*flt.conditions())) or 0


def list_incidents(session: Session, flt: IncidentFilter, *, limit: int, offset: int = 0) -> list[Incident]:
    """One page of matching incidents for the managers' list: those to review first, then most recently seen first.

    The page's ids are chosen first, then only those incidents are read: a city's box matches tens of
    thousands of incidents, which the index on ``(lat, lon, to_review, last_seen)`` sorts without
    reading a row of them.
    """
    order = (Incident.to_review.desc(), Incident.last_seen.desc(), Incident.id.desc())
    page = select(Incident.id).where(*flt.conditions()).order_by(*order).limit(limit).offset(offset)
    return list(session.scalars(select(Incident).where(Incident.id.in_(page.scalar_subquery())).order_by(*order)))


def iter_incidents(session: Session, flt: IncidentFilter, *, limit: int | None = None) -> Iterator[Incident]:
    """Every matching incident (up to ``limit``), most recently seen first, fetched in batches."""
    statement = _ordered(flt)
    if limit is not None:
        statement = statement.limit(limit)
    yield from session.scalars(statement.execution_options(yield_per=_BATCH))


def batches(incidents: Iterator[Incident], size: int = _BATCH) -> Iterator[list[Incident]]:
    """Incidents in lists of ``size`` (so per-incident facts can be fetched per batch)."""
    batch: list[Incident] = []
    for incident in incidents:
        batch.append(incident)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def latest_reports(session: Session, incident_ids: Sequence[int]) -> dict[int, int]:
    """Each incident's most recent report id whose photo is still kept (none once all are deleted)."""
    latest: dict[int, int] = {}
    for start in range(0, len(incident_ids), _BATCH):
        chunk = list(incident_ids[start : start + _BATCH])
        rows = session.execute(
            select(Report.incident_id, func.max(Report.id))
            .where(Report.incident_id.in_(chunk), Report.photo_deleted_at.is_(None))
            .group_by(Report.incident_id)
        )
        for incident_id, report_id in rows:
            if incident_id is not None:
                latest[incident_id] = report_id
    return latest


def last_comments(session: Session, incident_ids: Sequence[int]) -> dict[int, str | None]:
    """Each incident's most recent transition comment (Open311 status notes)."""
    notes: dict[int, str | None] = {}
    for start in range(0, len(incident_ids), _BATCH):
        chunk = list(incident_ids[start : start + _BATCH])
        rows = session.execute(
            select(Transition.incident_id, Transition.comment).where(Transition.incident_id.in_(chunk))
            .order_by(Transition.incident_id, Transition.id)
        )
        for incident_id, comment in rows:
            notes[incident_id] = comment
    return notes
