"""Figures for the council: incidents opened and cleaned per week, time to clean, places of repeated deposits.

Definitions, the same for every figure:

- an incident is **opened** when its deposit was first photographed (``first_seen``: a camera's
  frames sent days later count in the week they were taken) and **cleaned** when it entered
  ``cleaned`` (``cleaned_at``, the transition's time);
- **time to clean** is ``cleaned_at - first_seen`` in hours (never below 0): how long the deposit was
  known to be in the street. A week's median is over the incidents *cleaned* that week;
- **rejected** incidents (false alarms, private ground) and **duplicates** (counted in the incident
  they were merged into) are not counted at all;
- **weeks** are ISO 8601 weeks (Monday to Sunday) in the time zone asked for; every week of the period
  is listed, empty ones too, and the first and last count only what falls within the period;
- **hotspots** are the places of repeated deposits: the incidents opened in the period, grouped on a
  grid of cells about :data:`HOTSPOT_CELL_M` metres wide (rows of constant latitude, columns of constant
  width in metres); a cell with at least :data:`HOTSPOT_MIN_INCIDENTS` incidents is a hotspot, at the
  mean position of its incidents. Two deposits either side of a cell's edge fall in two cells: a
  heat map of the city shows them side by side all the same.

The figures come from one query over the period's incidents (a few columns, no join), aggregated
here in Python, so that they are the same on SQLite and PostgreSQL; the period is bounded
(:data:`MAX_WEEKS`).
"""

from __future__ import annotations

import math
import statistics as stats
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from serving.incidents import Status
from serving.models import Incident
from serving.sizes import SIZES
from vipare.geotag import EARTH_RADIUS_M
from vipare.taxonomy import DEPOSIT_CLASSES

__all__ = [
    "HOTSPOT_CELL_M",
    "HOTSPOT_MIN_INCIDENTS",
    "MAX_HOTSPOTS",
    "MAX_WEEKS",
    "Figures",
    "Hotspot",
    "Statistics",
    "WeekFigures",
    "compute_statistics",
    "hotspots",
    "iso_week",
    "week_start",
]

MAX_WEEKS = 157
"""The longest period asked at once: three years of weeks."""
HOTSPOT_CELL_M = 100.0
"""Side of a hotspot cell, metres."""
HOTSPOT_MIN_INCIDENTS = 2
"""Incidents in one cell that make it a hotspot."""
MAX_HOTSPOTS = 1000
"""At most this many hotspots, the busiest first."""

_NOT_COUNTED = (Status.REJECTED.value, Status.DUPLICATE.value)


@dataclass(frozen=True)
class Figures:
    """Incidents opened and cleaned, and the median time to clean (hours; None when none was cleaned)."""

    opened: int = 0
    cleaned: int = 0
    median_hours_to_clean: float | None = None


@dataclass(frozen=True)
class WeekFigures:
    """One ISO week's figures: ``week`` as ``2026-W49``, ``start`` its Monday."""

    week: str
    start: date
    figures: Figures


@dataclass(frozen=True)
class Hotspot:
    """A place of repeated deposits: the mean position (degrees) of the incidents of one grid cell."""

    lat: float
    lon: float
    count: int
    recurrences: int
    """Of ``count``, the incidents opened where one had been cleaned before (``recurrence_of``)."""
    classes: dict[str, int]


@dataclass(frozen=True)
class Statistics:
    """The figures of one period (``since`` to ``until``) in one time zone."""

    since: datetime
    until: datetime
    weeks: list[WeekFigures]
    totals: Figures
    by_class: dict[str, Figures]
    hotspots: list[Hotspot] = field(default_factory=list)
    by_size: dict[str, Figures] = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    label: str
    first_seen: datetime
    cleaned_at: datetime | None
    lat: float
    lon: float
    recurrence: bool
    size: str | None = None


def iso_week(moment: datetime, tz: tzinfo) -> str:
    """The ISO week ``moment`` falls in, in ``tz``: ``2026-W49``."""
    year, week, _ = moment.astimezone(tz).isocalendar()
    return f"{year}-W{week:02d}"


def week_start(moment: datetime, tz: tzinfo) -> datetime:
    """Monday 00:00 in ``tz`` of the week ``moment`` falls in."""
    local = moment.astimezone(tz)
    monday = local.date() - timedelta(days=local.weekday())
    return datetime.combine(monday, time(), tzinfo=tz)


def _hours(row: _Row) -> float:
    assert row.cleaned_at is not None
    return max(0.0, (row.cleaned_at - row.first_seen).total_seconds() / 3600)


def _figures(opened: Sequence[_Row], cleaned: Sequence[_Row]) -> Figures:
    hours = [_hours(r) for r in cleaned]
    return Figures(
        opened=len(opened), cleaned=len(cleaned), median_hours_to_clean=round(stats.median(hours), 2) if hours else None
    )


def hotspots(
    points: Iterable[tuple[float, float, str, bool]],
    *,
    cell_m: float = HOTSPOT_CELL_M,
    min_incidents: int = HOTSPOT_MIN_INCIDENTS,
    limit: int = MAX_HOTSPOTS,
) -> list[Hotspot]:
    """Group incidents on a grid of ``cell_m``-metre cells and keep the cells of ``min_incidents`` or more.

    Args:
        points: ``(lat, lon, label, recurrence)`` per incident, degrees.
        cell_m: the cells' side, metres (rows of constant latitude; columns as wide at the row's middle).
        min_incidents: incidents a cell needs to be a hotspot.
        limit: at most this many hotspots, the busiest first.
    """
    if cell_m <= 0 or min_incidents < 1:
        raise ValueError("cell_m must be positive and min_incidents at least 1")
    step_lat = math.degrees(cell_m / EARTH_RADIUS_M)
    cells: dict[tuple[int, int], list[tuple[float, float, str, bool]]] = defaultdict(list)
    for point in points:
        lat, lon = point[0], point[1]
        row = math.floor(lat / step_lat)
        middle = math.radians((row + 0.5) * step_lat)
        step_lon = step_lat / max(math.cos(middle), 1e-6)
        cells[(row, math.floor(lon / step_lon))].append(point)
    found = [
        Hotspot(
            lat=round(sum(p[0] for p in members) / len(members), 6),
            lon=round(sum(p[1] for p in members) / len(members), 6),
            count=len(members),
            recurrences=sum(1 for p in members if p[3]),
            classes=dict(sorted(Counter(p[2] for p in members).items())),
        )
        for members in cells.values()
        if len(members) >= min_incidents
    ]
    found.sort(key=lambda h: (-h.count, -h.recurrences, h.lat, h.lon))
    return found[:limit]


def compute_statistics(
    session: Session, *, since: datetime, until: datetime, tz: tzinfo, labels: Sequence[str] = ()
) -> Statistics:
    """The period's figures per ISO week, in total, per class, and its hotspots (see the module doc).

    Args:
        session: a read session.
        since: the period's start (aware).
        until: its end (aware), at most :data:`MAX_WEEKS` weeks after ``since``'s week.
        tz: the time zone the weeks are cut in.
        labels: only these classes (all when empty).

    Raises:
        ValueError: ``since`` after ``until``, or a period over :data:`MAX_WEEKS` weeks.
    """
    if since > until:
        raise ValueError("since must not be after until")
    first_monday, last_monday = week_start(since, tz), week_start(until, tz)
    week_count = (last_monday.date() - first_monday.date()).days // 7 + 1
    if week_count > MAX_WEEKS:
        raise ValueError(f"the period covers {week_count} weeks; ask for at most {MAX_WEEKS} at once")

    where = [
        Incident.status.not_in(_NOT_COUNTED),
        or_(
            and_(Incident.first_seen >= since, Incident.first_seen <= until),
            and_(Incident.cleaned_at.is_not(None), Incident.cleaned_at >= since, Incident.cleaned_at <= until),
        ),
    ]
    if labels:
        where.append(Incident.label.in_(list(labels)))
    statement = select(
        Incident.label, Incident.first_seen, Incident.cleaned_at, Incident.lat, Incident.lon, Incident.recurrence_of_id,
        func.coalesce(Incident.size, Incident.size_estimate),
    ).where(*where)
    rows = [
        _Row(label, first_seen, cleaned_at, lat, lon, recurrence_of is not None, size)
        for label, first_seen, cleaned_at, lat, lon, recurrence_of, size in session.execute(statement)
    ]
    opened = [r for r in rows if since <= r.first_seen <= until]
    cleaned = [r for r in rows if r.cleaned_at is not None and since <= r.cleaned_at <= until]

    opened_by_week: dict[str, list[_Row]] = defaultdict(list)
    cleaned_by_week: dict[str, list[_Row]] = defaultdict(list)
    for r in opened:
        opened_by_week[iso_week(r.first_seen, tz)].append(r)
    for r in cleaned:
        assert r.cleaned_at is not None
        cleaned_by_week[iso_week(r.cleaned_at, tz)].append(r)
    weeks = []
    for k in range(week_count):
        monday = first_monday.date() + timedelta(weeks=k)
        year, number, _ = monday.isocalendar()
        key = f"{year}-W{number:02d}"
        weeks.append(WeekFigures(key, monday, _figures(opened_by_week[key], cleaned_by_week[key])))

    classes = sorted(set(labels) or (DEPOSIT_CLASSES | {r.label for r in rows}))
    by_class = {
        name: _figures([r for r in opened if r.label == name], [r for r in cleaned if r.label == name])
        for name in classes
    }
    by_size: dict[str, Figures] = {
        name: _figures([r for r in opened if r.size == name], [r for r in cleaned if r.size == name])
        for name in SIZES
    }
    return Statistics(
        since=since,
        by_size=by_size,
        until=until,
        weeks=weeks,
        totals=_figures(opened, cleaned),
        by_class=by_class,
        hotspots=hotspots((r.lat, r.lon, r.label, r.recurrence) for r in opened),
    )
