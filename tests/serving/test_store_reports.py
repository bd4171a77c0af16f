"""Storing several reports in one call gives what storing them one by one gives: same twins, same incidents."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from serving.auth import camera_principal
from serving.config import ServiceSettings
from serving.db import write_session
from serving.errors import LocationMissingError
from serving.grouping import Candidates, GroupingPolicy
from serving.incidents import Status, transition
from serving.models import Incident, Report, Transition
from serving.reports.store import NewReport, store_report, store_reports
from serving.storage import Storage, grouping_policy, open_storage
from tests.serving.helpers import moved
from vipare.results import Detection, ImageInfo, ImageResult, Location, ModelInfo, Verdict

START = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
BASE = (49.1193, 6.1757)
MODEL = ModelInfo(name="m", sha256="0" * 64, classes=["dumped_waste", "overflowing_bin", "bin"], input_size=(320, 320),
                  stride=32)


def _result(n: int, *, east_m: float, hours: float, dumping: bool, label: str = "dumped_waste",
            located: bool = True) -> ImageResult:
    lat, lon = moved(*BASE, east_m=east_m)
    score = 0.5 + (n % 7) / 20
    detections = [Detection(label=label, class_id=0, score=score, box=(1, 2, 30, 40), area_fraction=0.1,
                            deposit=True)] if dumping else []
    return ImageResult(
        source=f"frame-{n}.jpg",
        image=ImageInfo(width=640, height=640, format="JPEG", sha256=hashlib.sha256(b"%d" % n).hexdigest(),
                        size_bytes=1000 + n, captured_at=START + timedelta(hours=hours)),
        detections=detections,
        verdict=Verdict(dumping=dumping, score=score if dumping else 0.0, threshold=0.4),
        location=Location(lat=lat, lon=lon, source="camera", camera_id="cam-a") if located else None,
        model=MODEL,
    )


def _frames() -> list[ImageResult]:
    """Deposits along a street over weeks, in cases where a report's grouping depends on the one before.

    Four spots 35 m apart, in turn, with clean frames between; a spot seen every 5 days, which stays
    one incident only if each sighting moves its last sighting on (the window is 7 days); a deposit
    whose position drifts, so that the last report reaches it only from the moved mean position.
    """
    frames = []
    for n in range(40):
        east = (n % 4) * 35.0 + (n % 3) * 4.0
        frames.append(_result(n, east_m=east, hours=n * 7.0, dumping=n % 5 != 0,
                              label="overflowing_bin" if n % 6 == 0 else "dumped_waste"))
    frames += [_result(100 + k, east_m=400.0, hours=24.0 * 5 * k, dumping=True) for k in range(5)]
    frames += [_result(200 + k, east_m=800.0 + east, hours=300.0 + k, dumping=True)
               for k, east in enumerate((0.0, 28.0, 28.0, 28.0, 50.0))]
    return frames


def _new(result: ImageResult) -> NewReport:
    principal = camera_principal("cam-a", None, "vipare batch")
    return NewReport(principal, result, ".jpg", START + timedelta(days=30), camera_id="cam-a")


def _store(tmp_path: Path) -> tuple[Storage, ServiceSettings]:
    settings = ServiceSettings(data_dir=tmp_path)
    return open_storage(settings), settings


def _contents(storage: Storage) -> tuple[list[tuple], list[tuple], list[tuple]]:
    with storage.sessions() as session:
        reports = [(r.id, r.sha256, r.dumping, r.incident_id, r.incident_action, r.observed_at)
                   for r in session.scalars(select(Report).order_by(Report.id))]
        incidents = [(i.id, i.family, i.label, round(i.lat, 9), round(i.lon, 9), i.report_count, i.first_seen,
                      i.last_seen, i.max_score, i.status)
                     for i in session.scalars(select(Incident).order_by(Incident.id))]
        transitions = [(t.incident_id, t.to_status, t.comment)
                       for t in session.scalars(select(Transition).order_by(Transition.id))]
    return reports, incidents, transitions


def test_reports_stored_together_match_reports_stored_one_by_one(tmp_path: Path) -> None:
    frames = _frames()
    together, settings = _store(tmp_path / "together")
    policy = grouping_policy(settings)
    outcomes = []
    for start in range(0, len(frames), 25):  # the chain and the drift each within one call
        with write_session(together.sessions) as session:
            outcomes += store_reports(session, [_new(r) for r in frames[start : start + 25]], policy=policy)
    alone, _ = _store(tmp_path / "alone")
    singles = []
    for result in frames:
        new = _new(result)
        with write_session(alone.sessions) as session:
            singles.append(store_report(session, new.principal, result, ext=new.ext, received=new.received,
                                        policy=policy, camera_id=new.camera_id))
    try:
        reports, incidents, transitions = _contents(together)
        assert (reports, incidents, transitions) == _contents(alone)
        assert len(reports) == len(frames)
        assert 2 < len(incidents) < sum(r.verdict.dumping for r in frames)  # some joined, some opened
        assert {o.incident_action for o in outcomes} == {"opened", "joined", None}
        chain, drift = outcomes[40:45], outcomes[45:50]
        assert [o.incident_action for o in chain] == ["opened"] + ["joined"] * 4  # each sighting extends it
        assert [o.incident_action for o in drift] == ["opened"] + ["joined"] * 4  # reached from the moved mean
        assert [(o.report_id, o.created) for o in outcomes] == [(o.report_id, o.created) for o in singles]
        assert [o.incident_action for o in outcomes] == [r[4] for r in reports]
        assert all(f"opened by report #{r[0]}" in {t[2] for t in transitions} for r in reports if r[4] == "opened")
    finally:
        together.close()
        alone.close()


def test_twins_are_found_in_the_store_and_within_one_call(tmp_path: Path) -> None:
    storage, settings = _store(tmp_path)
    policy = grouping_policy(settings)
    first, second = _result(1, east_m=0, hours=1, dumping=True), _result(2, east_m=5, hours=2, dumping=True)
    try:
        with write_session(storage.sessions) as session:
            [stored] = store_reports(session, [_new(first)], policy=policy)
        with write_session(storage.sessions) as session:
            again, new, twin = store_reports(session, [_new(first), _new(second), _new(second)], policy=policy)
        assert stored.created and stored.incident_action == "opened"
        assert (again.report_id, again.created, again.incident_action) == (stored.report_id, False, None)
        assert new.created and new.incident_action == "joined"
        assert (twin.report_id, twin.created) == (new.report_id, False)
        with storage.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Report)) == 2
            assert session.scalar(select(Incident.report_count)) == 2
    finally:
        storage.close()


def test_a_report_without_location_writes_none_of_its_call(tmp_path: Path) -> None:
    storage, settings = _store(tmp_path)
    located = _result(1, east_m=0, hours=1, dumping=True)
    lost = _result(2, east_m=0, hours=2, dumping=True, located=False)
    try:
        with pytest.raises(LocationMissingError), write_session(storage.sessions) as session:
            store_reports(session, [_new(located), _new(lost)], policy=grouping_policy(settings))
        with storage.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Report)) == 0
            assert session.scalar(select(func.count()).select_from(Incident)) == 0
    finally:
        storage.close()


def _stored_then_cleaned(storage: Storage, policy: GroupingPolicy, cleaned_at: datetime) -> None:
    """Three spots 400 m apart seen on the first day; the first two cleaned at ``cleaned_at``."""
    first = [_result(300 + k, east_m=400.0 * (k % 3), hours=2.0 + k, dumping=True) for k in range(6)]
    with write_session(storage.sessions) as session:
        store_reports(session, [_new(r) for r in first], policy=policy)
    with write_session(storage.sessions) as session:
        for incident in session.scalars(select(Incident).where(Incident.lon < moved(*BASE, east_m=600.0)[1])):
            transition(session, incident, Status.CLEANED, actor="crew", actor_key_id=None, at=cleaned_at)


@pytest.mark.parametrize("per_statement", [None, (2, 1)])  # (cells, cell pages): several statements for one call
def test_grouped_reports_meet_cleaned_and_open_incidents_as_single_ones_do(
    tmp_path: Path, per_statement: tuple[int, int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if per_statement is not None:
        monkeypatch.setattr(Candidates, "_PLACES_PER_QUERY", per_statement[0])
        monkeypatch.setattr(Candidates, "_PAIRS_PER_QUERY", per_statement[1])
    days = 24.0
    later = [
        _result(400, east_m=3.0, hours=5 * days, dumping=True),  # taken before its spot was cleaned: late
        _result(401, east_m=0.0, hours=12 * days, dumping=True),  # a deposit again where one was cleaned
        _result(402, east_m=2.0, hours=12.5 * days, dumping=True, label="overflowing_bin"),  # joins that one
        _result(403, east_m=401.0, hours=20 * days, dumping=True),  # a recurrence at the second spot
        _result(404, east_m=805.0, hours=3 * days, dumping=True),  # joins the open third spot
        _result(405, east_m=800.0, hours=30 * days, dumping=True),  # the third spot, past the window: opens
        _result(406, east_m=5000.0, hours=4 * days, dumping=True),  # far from all: opens
        _result(407, east_m=0.0, hours=13 * days, dumping=False),
    ]
    cleaned_at = START + timedelta(days=10)
    together, settings = _store(tmp_path / "together")
    alone, _ = _store(tmp_path / "alone")
    policy = grouping_policy(settings)
    incident_queries: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001 - SQLAlchemy's event signature
        if statement.lstrip().startswith("SELECT") and "FROM incidents" in statement:
            incident_queries.append(statement)

    try:
        for storage in (together, alone):
            _stored_then_cleaned(storage, policy, cleaned_at)
        event.listen(together.engine, "before_cursor_execute", count)
        with write_session(together.sessions) as session:
            outcomes = store_reports(session, [_new(r) for r in later], policy=policy)
        event.remove(together.engine, "before_cursor_execute", count)
        for result in later:
            with write_session(alone.sessions) as session:
                store_reports(session, [_new(result)], policy=policy)
        assert _contents(together) == _contents(alone)
        assert [o.incident_action for o in outcomes] == [
            "late", "opened", "joined", "opened", "joined", "opened", "opened", None,
        ]
        # one query for the whole call, none per report: the open incidents, the cleaned ones a report may be
        # late at and the last cleaned ones of each cell together (none before these reports here, so no second)
        assert len(incident_queries) == 1 if per_statement is None else len(incident_queries) > 1
        with together.sessions() as session:
            recurrences = session.scalars(select(Incident).where(Incident.recurrence_of_id.is_not(None))).all()
            assert sorted(i.recurrence_count for i in recurrences) == [1, 1]
    finally:
        together.close()
        alone.close()
