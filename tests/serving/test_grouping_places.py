"""Grouping at scale: the cells around a place, the few incidents a new report reads, the plans, the place locks."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, select, text

from serving.auth import camera_principal
from serving.bulk_exports import csv_row_statement
from serving.cells import MAX_CELLS, cell_of, cells_around
from serving.config import ServiceSettings
from serving.db import make_engine, migrate, session_factory, write_session
from serving.exports import SCRIPT_CSV
from serving.grouping import CELL_INDEX, OPEN_CELL_INDEX, Candidates, GroupingPolicy
from serving.models import Incident, Report
from serving.queries import IncidentFilter, latest_reports, list_incidents, parse_bbox
from serving.reports.store import NewReport, places_of, store_reports
from serving.storage import Storage, open_storage
from tests.database import ON_POSTGRES, store_url
from tests.serving.helpers import moved
from vipare.geotag import haversine_m
from vipare.results import Detection, ImageInfo, ImageResult, Location, ModelInfo, Verdict

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
METZ = (49.1193, 6.1757)
POLICY = GroupingPolicy(radius_m=30.0, window=timedelta(days=7))
MODEL = ModelInfo(name="m", sha256="0" * 64, classes=["dumped_waste"], input_size=(320, 320), stride=32)


# --------------------------------------------------------------------------------------------------
# Cells


@pytest.mark.parametrize("lat, lon", [METZ, (-33.87, 151.21), (64.15, -21.94), (0.0, 179.9999), (0.0, -180.0)])
def test_every_point_within_the_radius_lies_in_the_cells_around(lat: float, lon: float) -> None:
    rng = random.Random(f"{lat},{lon}")
    cells = cells_around(lat, lon, 30.0)
    assert cells is not None and cells == sorted(set(cells))
    for _ in range(2000):
        distance, bearing = 30.0 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        q_lat, q_lon = moved(lat, lon, north_m=distance * math.cos(bearing), east_m=distance * math.sin(bearing))
        q_lon = (q_lon + 180.0) % 360.0 - 180.0
        if abs(q_lat) > 90 or haversine_m(lat, lon, q_lat, q_lon) > 30.0:
            continue
        assert cell_of(q_lat, q_lon) in cells


def test_a_city_place_covers_at_most_four_cells_and_a_wide_radius_none() -> None:
    assert len(cells_around(*METZ, 30.0) or []) <= 4
    assert cells_around(*METZ, 5000.0) is None  # more than MAX_CELLS: callers use boxes
    assert cells_around(-89.99, 0.0, 30.0) is None  # so close to a pole, a circle spans every longitude
    assert MAX_CELLS >= 4


# --------------------------------------------------------------------------------------------------
# The incidents a new report reads


def _incident(lat: float, lon: float, *, cleaned_at: datetime | None, first_seen: datetime) -> Incident:
    return Incident(
        family="waste", label="dumped_waste", status="cleaned" if cleaned_at else "new", lat=lat, lon=lon,
        first_seen=first_seen, last_seen=first_seen, max_score=0.8, report_count=1, cleaned_at=cleaned_at,
        created_at=first_seen, updated_at=first_seen,
    )


def _frame(n: int, lat: float, lon: float, at: datetime) -> NewReport:
    result = ImageResult(
        source=f"f{n}.jpg",
        image=ImageInfo(width=640, height=480, format="JPEG", sha256=f"{n:064x}", size_bytes=100, captured_at=at),
        detections=[Detection(label="dumped_waste", class_id=0, score=0.8, box=(1, 2, 30, 40), area_fraction=0.05,
                              deposit=True)],
        verdict=Verdict(dumping=True, score=0.8, threshold=0.4),
        location=Location(lat=lat, lon=lon, source="camera", camera_id="cam-a"),
        model=MODEL,
    )
    return NewReport(camera_principal("cam-a", None, "test"), result, "jpg", at, camera_id="cam-a")


def _storage(tmp_path: Path) -> Storage:
    return open_storage(ServiceSettings(data_dir=tmp_path))


@contextmanager
def _loaded_incidents() -> Iterator[list[int]]:
    """The ids of the incidents read from the database meanwhile."""
    loaded: list[int] = []

    def record(target: Incident, _context: object) -> None:
        loaded.append(target.id)

    event.listen(Incident, "load", record)
    try:
        yield loaded
    finally:
        event.remove(Incident, "load", record)


def test_a_place_cleaned_hundreds_of_times_reads_a_page_and_points_at_the_last_cleaning(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    try:
        with write_session(storage.sessions) as session:
            for k in range(300):
                at = NOW - timedelta(days=400 - k)
                session.add(_incident(*moved(*METZ, east_m=(k % 5) - 2.0), cleaned_at=at, first_seen=at))
        places = cells_around(*METZ, 30.0)
        with _loaded_incidents() as loaded, write_session(storage.sessions, places=places) as session:
            (outcome,) = store_reports(session, [_frame(1, *METZ, NOW)], policy=POLICY)
        assert outcome.incident_action == "opened"
        with storage.sessions() as session:
            opened = session.scalars(select(Incident).where(Incident.status == "new")).one()
            last = session.scalars(select(Incident).where(Incident.status == "cleaned")
                                   .order_by(Incident.cleaned_at.desc())).first()
        assert opened.recurrence_of_id == last.id and opened.recurrence_count == last.recurrence_count + 1
        assert len(set(loaded)) <= 2 * Candidates._PREVIOUS_PAGE  # a page of the cell, not 300 incidents
    finally:
        storage.close()


def _expected(
    incidents: list[Incident], lat: float, lon: float, seen: datetime, policy: GroupingPolicy
) -> tuple[str, int | None]:
    """What serving.grouping's rules give a new report, read from every incident: (action, incident or previous)."""
    near = sorted(
        ((haversine_m(lat, lon, i.lat, i.lon), i.id, i) for i in incidents
         if haversine_m(lat, lon, i.lat, i.lon) <= policy.radius_m),
        key=lambda t: (t[0], t[1]),
    )
    for _, _, i in near:
        if i.status == "cleaned" and i.first_seen - policy.window <= seen <= i.cleaned_at:
            return "late", i.id
    for _, _, i in near:
        if i.status != "cleaned" and i.last_seen >= seen - policy.window:
            return "joined", i.id
    before = [i for _, _, i in near if i.status == "cleaned" and i.cleaned_at <= seen]
    previous = max(before, key=lambda i: (i.cleaned_at, i.id), default=None)
    return "opened", previous.id if previous else None


@pytest.mark.parametrize("radius_m", [30.0, 3000.0])  # cells, and boxes for a radius too wide for cells
def test_the_incidents_read_give_what_reading_every_incident_gives(
    tmp_path: Path, radius_m: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random places crowded with incidents cleaned at all times, some just outside the radius in the same
    cells and cleaned later (so that a cell's first page misses the answer): the same outcome as the rules
    applied to every incident."""
    rng = random.Random(21)
    paged: list[int] = []
    page_previous = Candidates._page_previous

    def counted(self: Candidates, *args: object, **kwargs: object) -> None:
        paged.append(1)
        page_previous(self, *args, **kwargs)

    monkeypatch.setattr(Candidates, "_page_previous", counted)
    actions: list[tuple[str, int | None]] = []
    storage = _storage(tmp_path)
    policy = GroupingPolicy(radius_m=radius_m, window=POLICY.window)
    try:
        for case in range(30):
            place = moved(*METZ, north_m=case * 20_000.0)
            scale = radius_m / 30.0
            made = []
            seen = NOW - timedelta(days=rng.uniform(0, 100))
            with write_session(storage.sessions) as session:
                for _ in range(rng.choice([3, 12, 40])):
                    distance = rng.choice([rng.uniform(0, 29), rng.uniform(31, 90)]) * scale
                    bearing = rng.uniform(0, 2 * math.pi)
                    at = NOW - timedelta(days=rng.uniform(0, 200))
                    lat, lon = moved(*place, north_m=distance * math.cos(bearing), east_m=distance * math.sin(bearing))
                    cleaned = at + timedelta(days=rng.uniform(0.1, 3)) if rng.random() < 0.85 else None
                    incident = _incident(lat, lon, cleaned_at=cleaned, first_seen=at)
                    if distance > radius_m:  # outside the radius, cleaned shortly before: they fill the cell's page
                        incident.first_seen = incident.last_seen = seen - timedelta(days=rng.uniform(2, 6))
                        incident.cleaned_at = incident.first_seen + timedelta(hours=1)
                        incident.status = "cleaned"
                    session.add(incident)
                    made.append(incident)
            action, target = _expected(made, *place, seen, policy)
            actions.append((action, target))
            with write_session(storage.sessions, places=places_of([_frame(case, *place, seen).result], policy)) as s:
                (outcome,) = store_reports(s, [_frame(case, *place, seen)], policy=policy)
            with storage.sessions() as session:
                report = session.get(Report, outcome.report_id)
                incident = session.get(Incident, report.incident_id)
            assert outcome.incident_action == action, case
            assert (incident.id if action != "opened" else incident.recurrence_of_id) == target, case
        assert {a for a, _ in actions} == {"late", "joined", "opened"}
        assert any(a == "opened" and t is not None for a, t in actions)  # recurrences among them
        if radius_m == 30.0:
            assert paged  # some cells' first page did not hold the answer, and it was found further down
    finally:
        storage.close()


# --------------------------------------------------------------------------------------------------
# Query plans (SQLite, whichever database the other tests use)


def _plans(engine: Engine, run: Callable[[], object]) -> list[str]:
    """SQLite's plan lines of every SELECT (or WITH ... SELECT) ``run`` sends."""
    sent: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().startswith(("SELECT", "WITH")):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with engine.connect() as connection:
        return [row[3] for statement, parameters in sent
                for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]


def test_lookups_read_indexes_not_whole_tables(tmp_path: Path) -> None:
    """Without statistics (no ANALYZE, as a new store runs), and with them, the grouping lookup reads the
    cell index, not the status index (every open incident of the country); the list of a box reads the
    position index, and the facts an export fetches per incident are read from covering indexes."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    rng = random.Random(5)
    with write_session(sessions) as session:
        for k in range(600):
            at = NOW - timedelta(days=rng.uniform(0, 300))
            lat, lon = moved(*METZ, north_m=rng.uniform(-5000, 5000), east_m=rng.uniform(-5000, 5000))
            session.add(_incident(lat, lon, cleaned_at=None if k % 50 == 0 else at, first_seen=at))
    report = Report(lat=METZ[0], lon=METZ[1], label="dumped_waste", observed_at=NOW)

    def lookup() -> None:
        with sessions() as session:
            Candidates(session, [report], POLICY)

    for analyzed in (False, True):
        if analyzed:
            with engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
        lookup_plans = [line for line in _plans(engine, lookup) if "incidents" in line]
        assert lookup_plans and all(
            CELL_INDEX in line or OPEN_CELL_INDEX in line or "PRIMARY KEY" in line for line in lookup_plans
        ), lookup_plans
        if not analyzed:  # with statistics of so small a table, a cell and family alone say enough
            assert any(OPEN_CELL_INDEX in line and "last_seen>?" in line for line in lookup_plans), lookup_plans

    box = IncidentFilter(bbox=parse_bbox("6.10,49.08,6.25,49.16"))

    def listing() -> None:
        with sessions() as session:
            page = list_incidents(session, box, limit=100)
            latest_reports(session, [i.id for i in page])

    def export() -> None:
        with sessions() as session:
            session.execute(csv_row_statement(box, SCRIPT_CSV, "/v1/reports/")).all()

    list_plans, csv_plans = _plans(engine, listing), _plans(engine, export)
    assert any("COVERING INDEX ix_incidents_lat_lon_to_review_last_seen_id" in line for line in list_plans), list_plans
    assert any("COVERING INDEX ix_reports_incident_id_photo_deleted_at_id" in line for line in list_plans), list_plans
    assert any("INDEX ix_incidents_lat_lon_to_review_last_seen_id" in line for line in csv_plans), csv_plans
    assert any("COVERING INDEX ix_reports_incident_id_photo_deleted_at_id" in line for line in csv_plans), csv_plans
    assert any("INDEX ix_reports_noted" in line for line in csv_plans), csv_plans
    assert "MATERIALIZE matching" in csv_plans  # the box's incidents, read once through the position index
    list_plans += [line for line in csv_plans if line != "SCAN matching"]
    assert not any(line.startswith("SCAN") for line in lookup_plans + list_plans)
    engine.dispose()


# --------------------------------------------------------------------------------------------------
# Place locks (PostgreSQL: SQLite has one writer at a time)


@pytest.mark.skipif(not ON_POSTGRES, reason="place locks are PostgreSQL's: SQLite lets one writer in at a time")
def test_writers_at_distant_places_go_together_and_at_one_place_in_turn(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    here, far = cells_around(*METZ, 30.0), cells_around(*moved(*METZ, north_m=5000.0), 30.0)
    holding, release = threading.Event(), threading.Event()

    def hold(places: list[int] | None) -> None:
        with write_session(storage.sessions, places=places) as session:
            session.execute(text("SELECT 1"))
            holding.set()
            release.wait(30)

    def took(places: list[int] | None) -> float:
        start = time.monotonic()
        with write_session(storage.sessions, places=places) as session:
            session.execute(text("SELECT 1"))
        return time.monotonic() - start

    try:
        for held, other, waits in [(here, far, False), (here, here, True), (here, None, True), (None, far, True)]:
            holding.clear()
            release.clear()
            holder = threading.Thread(target=hold, args=(held,))
            holder.start()
            assert holding.wait(10)
            waiter_time: list[float] = []
            waiter = threading.Thread(target=lambda o=other, out=waiter_time: out.append(took(o)))
            waiter.start()
            waiter.join(0.5)
            assert waiter.is_alive() == waits, (held, other)
            release.set()
            holder.join(10)
            waiter.join(10)
            assert waiter_time and (waiter_time[0] >= 0.5) == waits
    finally:
        release.set()
        storage.close()


def test_the_migration_gives_incidents_already_there_their_cell(tmp_path: Path) -> None:
    engine = make_engine(store_url(tmp_path))
    try:
        migrate(engine, "0008")
        rng = random.Random(8)
        places = [(rng.uniform(-60, 60), rng.uniform(-180, 180)) for _ in range(25)] + [METZ]
        with engine.begin() as connection:
            for k, (lat, lon) in enumerate(places, start=1):
                connection.execute(
                    text("INSERT INTO incidents (id, family, label, status, lat, lon, first_seen, last_seen, "
                         "max_score, report_count, recurrence_count, to_review, created_at, updated_at) VALUES "
                         "(:id, 'waste', 'dumped_waste', 'new', :lat, :lon, :t, :t, 0.5, 1, 0, false, :t, :t)"),
                    {"id": k, "lat": lat, "lon": lon, "t": NOW.replace(tzinfo=None)},
                )
        migrate(engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT lat, lon, cell FROM incidents ORDER BY id")).all()
        assert [cell for _, _, cell in rows] == [cell_of(lat, lon) for lat, lon in places]
    finally:
        engine.dispose()
