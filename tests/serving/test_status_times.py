"""When an incident last entered each status is kept on the incident (serving.models.STATUS_TIMES), and the CSV
writes it."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, text

from serving.bulk_exports import csv_row_statement
from serving.config import ServiceSettings
from serving.db import make_engine, migrate, write_session
from serving.exports import CSV_COLUMNS, SCRIPT_CSV
from serving.incidents import Status, transition
from serving.models import STATUS_TIMES, Incident, Transition
from serving.queries import IncidentFilter
from serving.storage import open_storage
from tests.database import store_url

T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_each_status_change_sets_its_time_and_a_note_in_the_history_does_not(tmp_path: Path) -> None:
    storage = open_storage(ServiceSettings(data_dir=tmp_path))
    try:
        with write_session(storage.sessions) as session:
            incident = Incident(family="waste", label="dumped_waste", status="new", lat=49.1193, lon=6.1757,
                                first_seen=T0, last_seen=T0, max_score=0.8, report_count=1)
            session.add(incident)
            session.flush()
            session.add(Transition(incident_id=incident.id, from_status=None, to_status="new", at=T0, actor="agent"))
            session.flush()
            moves = [(Status.CONFIRMED, 1), (Status.SCHEDULED, 2), (Status.CLEANED, 30)]
            for to, hours in moves:
                transition(session, incident, to, actor="manager", actor_key_id=None, at=T0 + timedelta(hours=hours),
                           scheduled_for=T0 + timedelta(days=1) if to is Status.SCHEDULED else None)
            # A review noted in the history keeps the status: no status was entered.
            session.add(Transition(incident_id=incident.id, from_status="cleaned", to_status="cleaned",
                                   at=T0 + timedelta(days=5), actor="reviewer", comment="review of report #1"))
            incident_id = incident.id
        with storage.sessions() as session:
            line = session.execute(csv_row_statement(IncidentFilter(ids=[incident_id]), SCRIPT_CSV, "/")).scalar_one()
        cells = dict(zip(CSV_COLUMNS, next(csv.reader([line], delimiter=SCRIPT_CSV.separator)), strict=True))
        assert cells["new_at"] == _iso(T0)
        assert cells["confirmed_at"] == _iso(T0 + timedelta(hours=1))
        assert cells["scheduled_at"] == _iso(T0 + timedelta(hours=2))
        assert cells["cleaned_at"] == _iso(T0 + timedelta(hours=30))
        assert cells["rejected_at"] == "" and cells["duplicate_at"] == ""
    finally:
        storage.engine.dispose()


def test_the_migration_gives_incidents_already_there_their_status_times(tmp_path: Path) -> None:
    engine = make_engine(store_url(tmp_path))
    naive = T0.replace(tzinfo=None)
    history = [  # (from, to, hours after T0)
        (None, "new", 0), ("new", "confirmed", 1), ("confirmed", "confirmed", 3), ("confirmed", "rejected", 4),
        ("rejected", "new", 5), ("new", "new", 9),
    ]
    try:
        migrate(engine, "0009")
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO incidents (id, family, label, status, lat, lon, first_seen, last_seen, "
                     "max_score, report_count, recurrence_count, to_review, created_at, updated_at) VALUES "
                     "(1, 'waste', 'dumped_waste', 'new', 49.1, 6.1, :t, :t, 0.5, 1, 0, false, :t, :t)"),
                {"t": naive},
            )
            for before, after, hours in history:
                connection.execute(
                    text("INSERT INTO transitions (incident_id, from_status, to_status, at, actor) "
                         "VALUES (1, :before, :after, :at, 'seed')"),
                    {"before": before, "after": after, "at": naive + timedelta(hours=hours)},
                )
        migrate(engine)
        with engine.connect() as connection:
            times = connection.execute(select(*(getattr(Incident, c) for c in STATUS_TIMES.values()))).one()
        assert dict(zip(STATUS_TIMES, times, strict=True)) == {
            "new": T0 + timedelta(hours=5), "confirmed": T0 + timedelta(hours=1), "scheduled": None,
            "cleaned": None, "rejected": T0 + timedelta(hours=4), "duplicate": None,
        }
    finally:
        engine.dispose()


def test_every_status_has_its_time_column() -> None:
    assert set(STATUS_TIMES) == {status.value for status in Status}
    assert all(name in Incident.__table__.columns for name in STATUS_TIMES.values())
