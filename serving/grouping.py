"""Grouping reports into incidents: one deposit at one place, however many photos report it.

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

What happens to an incident after it opens (its statuses and their changes) is :mod:`serving.incidents`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import zip_longest
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Table, and_, or_, select, union_all
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session

from serving.cells import cells_around, cells_of_places
from serving.geo import box_around, lat_lon_box, lon_delta, wrap_lon
from serving.incidents import OPEN_STATUSES, Status
from serving.models import Incident, Report, ReportReview, Transition, utcnow
from serving.sizes import estimate_size, larger
from vipare.geotag import haversine_m

__all__ = [
    "FAMILIES",
    "SENT_ANYWAY_LABEL",
    "Candidates",
    "GroupingPolicy",
    "IncidentAction",
    "assign",
    "family_of",
    "groups_as_deposit",
    "needs_review",
]


FAMILIES: dict[str, str] = {"dumped_waste": "waste", "overflowing_bin": "waste"}
"""Deposit class -> class family; reports join incidents of their family. Unknown classes are their own family."""

SENT_ANYWAY_LABEL = "dumped_waste"
"""The class a report sent anyway groups as when the model saw no deposit in its photo (family ``waste``)."""


class IncidentAction(StrEnum):
    """What a report did to its incident."""

    OPENED = "opened"
    JOINED = "joined"
    LATE = "late"


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
    """True when the report joins an incident: the model saw a deposit, or the agent says there is one.

    A photo taken after a cleaning (``after_of``) never does: it is the proof of one incident's state.
    """
    return report.after_of is None and (report.dumping or report.agent_says_deposit)


LOW_CONFIDENCE_MARGIN = 0.10
"""A deposit the model saw with a score less than this above its verdict threshold is a low-confidence one."""


def _awaits_review(report: Report) -> bool:
    """A manager should look at this report's photo: sent anyway where the model saw no deposit, or a
    deposit the model saw with low confidence (a score within :data:`LOW_CONFIDENCE_MARGIN` of its threshold)."""
    if report.agent_says_deposit and not report.dumping:
        return True
    verdict = report.verdict or {}
    low = float(verdict.get("score", 1.0)) < float(verdict.get("threshold", 0.0)) + LOW_CONFIDENCE_MARGIN
    return bool(report.dumping and low)


def needs_review(session: Session, incident_id: int) -> bool:
    """True while a report of the incident awaits a review (:func:`_awaits_review`) and has none.

    A report whose photo is no longer kept (``photo_deleted_at``) cannot be reviewed, and is not waited for.
    """
    unreviewed = session.scalars(
        select(Report).where(
            Report.incident_id == incident_id,
            Report.photo_deleted_at.is_(None),
            ~select(ReportReview.id).where(ReportReview.report_id == Report.id).exists(),
        )
    )
    return any(_awaits_review(report) for report in unreviewed)


class Candidates:
    """The incidents some dumping reports may reach, read in one statement and then kept in memory.

    Every incident that :func:`assign` could give any of ``reports`` is read at once (one round trip to
    the database; a batch spread over more than 200 cells takes one per 200), of their class
    families around them (the cells of :mod:`serving.cells`, or a box on ``lat``/``lon`` for a radius
    too wide for cells):

    - the open ones seen within the window before the earliest report;
    - the cleaned ones a report may arrive late at (cleaned at or after the earliest report, first
      seen at most the window after the latest);
    - for each place, the cleaned ones before that, most recently cleaned first, until one lies within
      the radius: the one a recurrence points at.

    Any other cleaned incident there can change nothing (see :func:`assign`), so a place cleaned
    thousands of times costs no more than a new one. The reports are then grouped in memory, one
    after the other, against the incidents as the earlier ones left them (moved, seen later) and those
    they opened (:meth:`add`): what one query per report would find, without a query and a flush per
    report. An incident no report can reach is never read, and so cannot have changed.

    Args:
        session: the write transaction the reports are grouped in.
        reports: the dumping reports to group (their position, label and ``observed_at``).
        policy: radius and time window.
    """

    _PLACES_PER_QUERY = 200  # cells, or boxes of four bound parameters, in one condition
    _PAIRS_PER_QUERY = 100  # (cell, family) pages of previous cleanings in one statement
    _PREVIOUS_PAGE = 8

    def __init__(self, session: Session, reports: Sequence[Report], policy: GroupingPolicy) -> None:
        self._policy = policy
        self._incidents: dict[int, Incident] = {}
        if not reports:
            return
        families = sorted({family_of(r.label) for r in reports if r.label is not None})
        earliest, latest = min(r.observed_at for r in reports), max(r.observed_at for r in reports)
        open_recent = and_(
            Incident.status.in_([s.value for s in OPEN_STATUSES]), Incident.last_seen >= earliest - policy.window
        )
        cleaned = Incident.status == Status.CLEANED.value
        late = and_(cleaned, Incident.cleaned_at >= earliest, Incident.first_seen <= latest + policy.window)
        reached: list[list[Select[Any]]] = [
            [
                _by_place(select(Incident.id).where(place, Incident.family.in_(families), reach),
                          index if by_cell else None)
                for reach, index in ((open_recent, OPEN_CELL_INDEX), (late, CELL_INDEX))
            ]
            for place, by_cell in _places(reports, policy.radius_m, self._PLACES_PER_QUERY)
        ]
        around = {id(r): cells_around(r.lat, r.lon, policy.radius_m) for r in reports}
        pairs = sorted({(cell, family_of(r.label or "")) for r in reports for cell in around[id(r)] or ()})
        step = self._PAIRS_PER_QUERY
        previous: list[list[Select[Any]]] = [
            [_previous_page(cell, family, earliest, self._PREVIOUS_PAGE) for cell, family in pairs[i : i + step]]
            for i in range(0, len(pairs), step)
        ]
        # One round trip for a report or a camera's batch: each place's open and late incidents and each
        # cell's page of previous cleanings, by their indexes, in one statement.
        none: list[Select[Any]] = []
        for place_ids, previous_ids in zip_longest(reached, previous, fillvalue=none):
            wanted = union_all(*place_ids, *previous_ids)
            self._incidents.update(
                (incident.id, incident) for incident in session.scalars(select(Incident).where(Incident.id.in_(wanted)))
            )
        self._check_previous(session, reports, around, pairs, before=earliest)

    def _check_previous(
        self, session: Session, reports: Sequence[Report], around: dict[int, list[int] | None],
        pairs: list[tuple[int, str]], *, before: datetime,
    ) -> None:
        """Make sure each report has the incident most recently cleaned before ``before`` within its radius.

        The statement of ``__init__`` read the :data:`_PREVIOUS_PAGE` most recently cleaned of each cell and
        family (an index range each, however many were cleaned there). A report whose answer may lie further
        down a cell (the cell's page full, and nothing within the radius newer than its last row) pages
        through its own place; so does a report whose radius is too wide for cells.
        """
        pages: dict[tuple[int | None, str], list[Incident]] = {pair: [] for pair in pairs}
        for incident in self._incidents.values():
            page = pages.get((incident.cell, incident.family))
            cleaned_before = incident.status == Status.CLEANED.value and incident.cleaned_at is not None and (
                incident.cleaned_at < before
            )
            if page is not None and cleaned_before:
                page.append(incident)
        for report in reports:
            cells, family = around[id(report)], family_of(report.label or "")
            if cells is None:
                self._page_previous(session, report, before=before)
                continue
            mine = [i for cell in cells for i in pages[(cell, family)]]
            best = max((i for i in mine if self._within(report, i)), key=_cleaning_order, default=None)
            full = [pages[(cell, family)] for cell in cells if len(pages[(cell, family)]) == self._PREVIOUS_PAGE]
            if any(best is None or _cleaning_order(best) < min(map(_cleaning_order, page)) for page in full):
                self._page_previous(session, report, before=before)

    def _page_previous(self, session: Session, report: Report, *, before: datetime) -> None:
        """:meth:`_add_previous` for one report, page by page through its place."""
        ((place, by_cell),) = _places([report], self._policy.radius_m, self._PLACES_PER_QUERY)
        query = _by_place(
            select(Incident)
            .where(place, Incident.family == family_of(report.label or ""), Incident.status == Status.CLEANED.value,
                   Incident.cleaned_at < before)
            .order_by(Incident.cleaned_at.desc(), Incident.id.desc())
            .limit(self._PREVIOUS_PAGE),
            CELL_INDEX if by_cell else None,
        )
        offset = 0
        while True:
            page = list(session.scalars(query.offset(offset)))
            for incident in page:
                if self._within(report, incident):
                    self._incidents[incident.id] = incident
                    return
            if len(page) < self._PREVIOUS_PAGE:
                return
            offset += len(page)

    def _within(self, report: Report, incident: Incident) -> bool:
        return haversine_m(report.lat, report.lon, incident.lat, incident.lon) <= self._policy.radius_m

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


def _previous_page(cell: int, family: str, before: datetime, size: int) -> Select[Any]:
    """The ids of the ``size`` incidents of ``family`` in ``cell`` most recently cleaned before ``before``
    (one range of :data:`CELL_INDEX`), as a member of a UNION (SQLite takes no LIMIT in one directly)."""
    first = (
        select(Incident.id)
        .where(Incident.cell == cell, Incident.family == family, Incident.status == Status.CLEANED.value,
               Incident.cleaned_at < before)
        .with_hint(Incident, f"INDEXED BY {CELL_INDEX}", "sqlite")
        .order_by(Incident.cleaned_at.desc(), Incident.id.desc()).limit(size).subquery()
    )
    return select(first.c.id)


def _cleaning_order(incident: Incident) -> tuple[datetime | None, int]:
    return incident.cleaned_at, incident.id


_Query = TypeVar("_Query", bound=Select[Any])

CELL_INDEX = "ix_incidents_cell_family_status_cleaned_at"
"""The index the lookups of cleaned incidents around a place read (:mod:`serving.models`)."""
OPEN_CELL_INDEX = "ix_incidents_cell_family_status_last_seen"
"""The index the lookup of open incidents around a place reads."""


def _by_place(query: _Query, index: str | None) -> _Query:
    """``query`` told to read ``index`` on SQLite (None: no hint, for a place that is not one of cells).

    SQLite's planner, without statistics (no ``ANALYZE``), takes the status index for the open incidents
    near a place, which holds every open incident of the country. PostgreSQL weighs the indexes with its
    statistics, and finds the open ones in :data:`OPEN_CELL_INDEX` by itself.
    """
    return query.with_hint(Incident, f"INDEXED BY {index}", "sqlite") if index else query


@compiles(Table, "sqlite")
def _table_with_index_hint(table: Table, compiler: Any, **kw: Any) -> str:
    """A table in SQLite's FROM with its ``INDEXED BY`` hint (:func:`_by_place`): SQLAlchemy drops table
    hints on SQLite, whose dialect has none of its own."""
    text = compiler.visit_table(table, **kw)
    hint = (kw.get("fromhints") or {}).get(table)
    return f"{text} {hint}" if hint and hint.startswith("INDEXED BY ") and not kw.get("ashint") else text


def _places(
    reports: Sequence[Report], radius_m: float, per_query: int
) -> list[tuple[ColumnElement[bool], bool]]:
    """SQL conditions, each for at most ``per_query`` cells or boxes, that together hold every incident
    within ``radius_m`` of a report: its cells (:func:`serving.cells.cells_of_places`), or boxes on
    ``lat``/``lon`` when the radius is too wide for cells; each with True when it is one of cells."""
    cells = cells_of_places(((r.lat, r.lon) for r in reports), radius_m)
    if cells is not None:
        return [(Incident.cell.in_(cells[i : i + per_query]), True) for i in range(0, len(cells), per_query)]
    boxes = sorted({box_around(r.lat, r.lon, radius_m) for r in reports})
    return [
        (or_(*(lat_lon_box(Incident.lat, Incident.lon, *box) for box in boxes[i : i + per_query])), False)
        for i in range(0, len(boxes), per_query)
    ]


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
        size_estimate=estimate_size(report.detections),
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
            incident_id=incident.id,
            from_status=None,
            to_status=Status.NEW.value,
            at=now,
            actor=actor,
            actor_key_id=actor_key_id,
            comment=comment,
        )
    )
    return incident, IncidentAction.OPENED


def _attach(report: Report, incident: Incident, action: IncidentAction) -> tuple[Incident, IncidentAction]:
    count = incident.report_count + 1
    incident.lat += (report.lat - incident.lat) / count  # running mean of the reports' positions
    incident.lon = wrap_lon(incident.lon + lon_delta(incident.lon, report.lon) / count)
    incident.report_count = count
    incident.first_seen = min(incident.first_seen, report.observed_at)
    incident.last_seen = max(incident.last_seen, report.observed_at)
    if report.score > incident.max_score and report.label is not None:
        incident.max_score, incident.label = report.score, report.label
    if _awaits_review(report):
        incident.to_review = True
    incident.size_estimate = larger(incident.size_estimate, estimate_size(report.detections))
    incident.updated_at = utcnow()
    report.incident_id, report.incident_action = incident.id, action.value
    return incident, action
