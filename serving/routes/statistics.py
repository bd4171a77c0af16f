"""``/v1/statistics``: incidents opened and cleaned per week, time to clean and hotspots, as JSON or CSV.

The definitions are :mod:`serving.statistics`'s. Without dates the period is the last
:data:`DEFAULT_WEEKS` weeks, the current one included, from a Monday 00:00 in ``tz``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, tzinfo
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from serving.auth import Permission, Principal
from serving.batch.times import parse_tz
from serving.errors import ErrorBody
from serving.exports import CsvFormat, csv_lines
from serving.models import utcnow
from serving.routes.deps import ServiceDep, require
from serving.routes.exports import CsvFormatDep
from serving.schemas import Timestamp
from serving.service import Service
from serving.statistics import (
    HOTSPOT_CELL_M,
    HOTSPOT_MIN_INCIDENTS,
    Figures,
    Statistics,
    compute_statistics,
    week_start,
)

__all__ = ["DEFAULT_WEEKS", "STATISTICS_CSV_COLUMNS", "StatisticsOut", "router"]

DEFAULT_WEEKS = 12
"""Without ``since``, the period starts this many weeks back (the current week is the last)."""
STATISTICS_CSV_COLUMNS = ("week", "week_start", "opened", "cleaned", "median_hours_to_clean")

router = APIRouter(
    tags=["statistics"],
    responses={
        401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
        403: {"model": ErrorBody, "description": "The key's role may not read incidents."},
        422: {"model": ErrorBody, "description": "since after until, a period over 157 weeks, or an unknown tz."},
    },
)
StatisticsPrincipal = Annotated[Principal, Depends(require(Permission.INCIDENT_READ))]


class FiguresOut(BaseModel):
    """Incidents opened and cleaned, and the median hours from first photo to cleaning."""

    opened: int
    cleaned: int
    median_hours_to_clean: float | None = Field(description="Over the incidents cleaned; null when none was.")


class WeekOut(FiguresOut):
    """One ISO week (Monday to Sunday in ``tz``)."""

    week: str = Field(examples=["2026-W49"])
    start: date = Field(description="Its Monday.")


class HotspotOut(BaseModel):
    """A place of repeated deposits, for a heat layer: ``count`` is its weight."""

    lat: float
    lon: float
    count: int
    recurrences: int = Field(description="Of count, incidents opened where one had been cleaned before.")
    classes: dict[str, int]


class StatisticsOut(BaseModel):
    """The figures of a period."""

    since: datetime
    until: datetime
    tz: str
    weeks: list[WeekOut]
    totals: FiguresOut
    by_class: dict[str, FiguresOut]
    by_size: dict[str, FiguresOut] = Field(
        default_factory=dict, description="S, M, L: a manager's size, else the estimate from the photos."
    )
    hotspot_cell_m: float = Field(description="Side of the grid cells hotspots are grouped on, metres.")
    hotspot_min_incidents: int
    hotspots: list[HotspotOut]


def _invalid(field: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("query", field), "msg": message, "input": value}])


class _Query:
    """The period, the time zone and the classes asked for."""

    def __init__(
        self,
        since: Annotated[Timestamp | None, Query(description="From (ISO 8601 with offset); default: 12 weeks back.")]
        = None,
        until: Annotated[Timestamp | None, Query(description="Until (ISO 8601 with offset); default: now.")] = None,
        class_: Annotated[
            list[str] | None, Query(alias="class", description="Only these classes (repeat the parameter).")
        ] = None,
        tz: Annotated[
            str, Query(description="The time zone weeks are cut in: an IANA name (Europe/Paris), UTC or +02:00.")
        ] = "UTC",
    ) -> None:
        try:
            zone: tzinfo = parse_tz(tz)
        except ValueError as exc:
            raise _invalid("tz", str(exc), tz) from None
        self.until = until or utcnow()
        self.since = since or week_start(self.until, zone) - timedelta(weeks=DEFAULT_WEEKS - 1)
        self.tz_name, self.tz, self.labels = tz, zone, tuple(class_ or ())

    def compute(self, service: Service) -> Statistics:
        with service.sessions() as session:
            try:
                return compute_statistics(session, since=self.since, until=self.until, tz=self.tz, labels=self.labels)
            except ValueError as exc:
                raise _invalid("since", str(exc), self.since.isoformat()) from None


QueryDep = Annotated[_Query, Depends()]


def _figures(figures: Figures) -> dict[str, Any]:
    return {
        "opened": figures.opened, "cleaned": figures.cleaned, "median_hours_to_clean": figures.median_hours_to_clean,
    }


@router.get("/v1/statistics", response_model=StatisticsOut, summary="Incidents per week, time to clean, hotspots")
def get_statistics(service: ServiceDep, query: QueryDep, _principal: StatisticsPrincipal) -> StatisticsOut:
    """Per ISO week of the period: incidents opened (first photographed) and cleaned, and the median hours
    from first photo to cleaning of those cleaned that week; the same for the whole period and per class;
    and the hotspots, cells of about 100 m with several incidents opened in the period, for a heat layer.
    Rejected and duplicate incidents are not counted.
    """
    result = query.compute(service)
    return StatisticsOut(
        since=result.since,
        until=result.until,
        tz=query.tz_name,
        weeks=[WeekOut(week=w.week, start=w.start, **_figures(w.figures)) for w in result.weeks],
        totals=FiguresOut(**_figures(result.totals)),
        by_class={name: FiguresOut(**_figures(f)) for name, f in result.by_class.items()},
        by_size={name: FiguresOut(**_figures(f)) for name, f in result.by_size.items()},
        hotspot_cell_m=HOTSPOT_CELL_M,
        hotspot_min_incidents=HOTSPOT_MIN_INCIDENTS,
        hotspots=[
            HotspotOut(lat=h.lat, lon=h.lon, count=h.count, recurrences=h.recurrences, classes=h.classes)
            for h in result.hotspots
        ],
    )


def _csv_rows(result: Statistics, fmt: CsvFormat) -> Iterator[list[str]]:
    for w in result.weeks:
        median = w.figures.median_hours_to_clean
        yield [
            w.week, w.start.isoformat(), str(w.figures.opened), str(w.figures.cleaned),
            "" if median is None else fmt.number(median, 1),
        ]


@router.get(
    "/v1/statistics.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "One row per ISO week."}},
    summary="Incidents per week as CSV",
)
def get_statistics_csv(
    service: ServiceDep, query: QueryDep, fmt: CsvFormatDep, _principal: StatisticsPrincipal
) -> StreamingResponse:
    """The weekly figures of ``/v1/statistics``, one row per week: week, week_start, opened, cleaned,
    median_hours_to_clean (one decimal; empty when none was cleaned). ``excel=fr`` (or ``sep``,
    ``decimal``, ``bom``) as for the incidents' CSV.
    """
    result = query.compute(service)
    return StreamingResponse(
        csv_lines(_csv_rows(result, fmt), fmt=fmt, header=STATISTICS_CSV_COLUMNS),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="statistics.csv"'},
    )
