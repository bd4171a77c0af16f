"""Retention and erasure: photos deleted once their deposit is handled, one report erased on request.

Time moves through the explicit ``now`` of :func:`serving.retention.purge` and
:func:`serving.retention.daily_pass` (the rows were written at the real time), or, for the commands,
which count from the real time, by moving the rows' times back.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from serving import retention
from serving.dataset.select import ExportFilter, select_samples
from serving.erasure import ERASED
from serving.models import Incident, Report, Transition, utcnow
from serving.photos.annotated import ANNOTATED_CACHE
from serving.reports import upload as upload_module
from serving.retention import PURGE_PASS, PurgeResult, claim_pass, daily_pass, purge
from serving.retention_cli import photos, reports
from serving.storage import _referenced
from tests.serving.helpers import Server, deposit_photo, moved, plain_photo, server_at
from vipare.detection import Detector

NANTES = (47.2184, -1.5536)
DAYS = 90
_seed = itertools.count(7000)
_places = itertools.count(1)


@pytest.fixture
def server(tmp_path: Path, detector: Detector) -> Iterator[Server]:
    """A fresh service per test: a purge reaches every report of the database."""
    with server_at(tmp_path, detector, photo_retention_days=DAYS) as running_server:
        yield running_server


def new_place() -> tuple[float, float]:
    return moved(*NANTES, north_m=1000.0 * next(_places))


def sent(server: Server, photo: bytes | None = None, who: str = "agent", **fields: Any) -> dict[str, Any]:
    lat, lon = new_place()
    response = server.upload(photo or deposit_photo(next(_seed)), who=who, lat=lat, lon=lon, accuracy_m=5, **fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def change(server: Server, incident_id: int, to: str, **body: Any) -> None:
    response = server.client.post(
        f"/v1/incidents/{incident_id}/transitions", json={"to": to, **body}, headers=server.headers("manager")
    )
    assert response.status_code == 201, response.text


def get(server: Server, path: str, who: str = "manager") -> Any:
    return server.client.get(path, headers=server.headers(who))


def photo_file(server: Server, report: dict[str, Any]) -> Path:
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic"}[report["image"]["format"]]
    return server.folder.path(report["image"]["sha256"], ext)


def run_purge(server: Server, now: datetime, *, dry_run: bool = False) -> PurgeResult:
    service = server.service
    return purge(
        service.sessions,
        service.photos,
        retention_days=DAYS,
        now=now,
        dry_run=dry_run,
        annotated_cache=server.data_dir / ANNOTATED_CACHE,
    )


def later(days: float) -> datetime:
    return utcnow() + timedelta(days=days)


def assert_gone(server: Server, report_id: int) -> None:
    for path in (f"/v1/reports/{report_id}/image", f"/v1/reports/{report_id}/image/annotated"):
        response = get(server, path)
        assert response.status_code == 410, response.text
        assert response.json()["code"] == "photo_deleted"


def history(server: Server, incident_id: int) -> list[dict[str, Any]]:
    response = get(server, f"/v1/incidents/{incident_id}")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["history"]
    return rows


# --------------------------------------------------------------------------------------------------
# Purge


def test_photos_of_closed_incidents_and_of_reports_without_one_go_after_the_retention_period(server: Server) -> None:
    cleaned, rejected, still_open = sent(server), sent(server), sent(server)
    nothing = sent(server, plain_photo(next(_seed)))
    assert nothing["incident"] is None
    change(server, cleaned["incident"]["id"], "cleaned")
    change(server, rejected["incident"]["id"], "rejected")
    assert get(server, f"/v1/reports/{cleaned['id']}/image/annotated").status_code == 200  # drawn and cached

    assert run_purge(server, later(DAYS - 1)) == PurgeResult(reports=0, files=0, bytes=0, shared=0)

    result = run_purge(server, later(DAYS + 1))
    assert (result.reports, result.files, result.shared) == (3, 3, 0)
    assert result.bytes > 0
    for report in (cleaned, rejected, nothing):
        assert_gone(server, report["id"])
        assert not photo_file(server, report).exists()
        kept = get(server, f"/v1/reports/{report['id']}").json()
        assert kept["photo_deleted_at"] is not None and kept["erased_at"] is None
        assert kept["detections"] == report["detections"] and kept["location"] == report["location"]
    sha256 = cleaned["image"]["sha256"]
    assert not (server.data_dir / ANNOTATED_CACHE / sha256[:2] / sha256).exists()  # its drawings went too
    assert get(server, f"/v1/reports/{still_open['id']}/image").status_code == 200
    assert photo_file(server, still_open).exists()
    incident = get(server, f"/v1/incidents/{cleaned['incident']['id']}").json()
    assert incident["properties"]["report_count"] == 1  # the statistics stay

    assert run_purge(server, later(DAYS + 2)) == PurgeResult(reports=0, files=0, bytes=0, shared=0)  # idempotent


def test_the_clock_starts_at_the_incidents_last_change(server: Server) -> None:
    report = sent(server)
    with server.service.sessions.begin() as session:  # received long ago, cleaned only now
        session.execute(update(Report).where(Report.id == report["id"]).values(received_at=utcnow() - timedelta(400)))
    change(server, report["incident"]["id"], "cleaned")
    assert run_purge(server, later(DAYS - 1)).reports == 0
    assert run_purge(server, later(DAYS + 1)).reports == 1


def test_a_merged_incidents_photos_follow_the_incident_it_duplicates(server: Server) -> None:
    lat, lon = new_place()
    first = server.upload(deposit_photo(next(_seed)), lat=lat, lon=lon, accuracy_m=5).json()
    lat2, lon2 = moved(lat, lon, east_m=40.0)  # beyond the radius a report joins, near enough to merge
    other = server.upload(deposit_photo(next(_seed)), lat=lat2, lon=lon2, accuracy_m=5).json()
    merged, target = first["incident"]["id"], other["incident"]["id"]
    assert merged != target
    change(server, merged, "duplicate", merged_into=target)
    assert run_purge(server, later(DAYS + 1)).reports == 0  # its photos moved to an incident under way
    change(server, target, "cleaned")
    assert run_purge(server, later(DAYS + 1)).reports == 2
    for report in (first, other):
        assert_gone(server, report["id"])


def test_a_photo_shared_with_a_report_under_way_is_kept_until_that_one_is_done(server: Server) -> None:
    photo = deposit_photo(next(_seed))
    mine, theirs = sent(server, photo), sent(server, photo, who="agent2")
    assert mine["incident"]["id"] != theirs["incident"]["id"]
    change(server, mine["incident"]["id"], "cleaned")

    dry = run_purge(server, later(DAYS + 1), dry_run=True)
    assert (dry.reports, dry.files, dry.shared, dry.dry_run) == (1, 0, 1, True)
    assert run_purge(server, later(DAYS + 1)) == PurgeResult(reports=1, files=0, bytes=0, shared=1)
    assert_gone(server, mine["id"])
    assert get(server, f"/v1/reports/{theirs['id']}/image").status_code == 200
    assert photo_file(server, theirs).exists()

    change(server, theirs["incident"]["id"], "cleaned")
    result = run_purge(server, later(DAYS + 1))
    assert (result.reports, result.files, result.shared) == (1, 1, 0)
    assert not photo_file(server, theirs).exists()


def test_a_dry_run_says_what_a_purge_does_and_changes_nothing(server: Server) -> None:
    report = sent(server)
    change(server, report["incident"]["id"], "rejected")
    dry = run_purge(server, later(DAYS + 1), dry_run=True)
    assert dry.dry_run and (dry.reports, dry.files) == (1, 1)
    assert dry.bytes == photo_file(server, report).stat().st_size
    assert get(server, f"/v1/reports/{report['id']}/image").status_code == 200
    assert get(server, f"/v1/reports/{report['id']}").json()["photo_deleted_at"] is None
    done = run_purge(server, later(DAYS + 1))
    assert (done.reports, done.files, done.bytes, done.shared) == (dry.reports, dry.files, dry.bytes, dry.shared)


def test_a_purge_cut_between_its_commit_and_the_files_serves_nothing_and_the_next_pass_finishes_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = sent(server)
    change(server, report["incident"]["id"], "cleaned")
    size = photo_file(server, report).stat().st_size

    def killed(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
        raise SystemExit("killed after the commit")

    with monkeypatch.context() as patch:
        patch.setattr(retention, "delete_unneeded", killed)
        with pytest.raises(SystemExit):
            run_purge(server, later(DAYS + 1))
    assert photo_file(server, report).exists()
    assert_gone(server, report["id"])  # committed first: nothing serves it any more

    # The start-up sweep counts only reports whose photo is kept as references...
    referenced = _referenced(server.service.sessions)
    assert referenced([report["image"]["sha256"]]) == set()
    # ...and the next pass deletes what the cut pass left.
    assert run_purge(server, later(DAYS + 1)) == PurgeResult(reports=0, files=1, bytes=size, shared=0)
    assert not photo_file(server, report).exists()


def test_a_photo_sent_again_after_its_purge_is_stored_again_on_its_report(server: Server) -> None:
    """De-duplication keeps the one report per client and photo: that report gets its photo back."""
    photo = plain_photo(next(_seed))
    report = sent(server, photo)
    assert run_purge(server, later(DAYS + 1)).files == 1
    assert_gone(server, report["id"])

    again = server.upload(photo, lat=report["location"]["lat"], lon=report["location"]["lon"])
    assert again.status_code == 200, again.text
    assert again.json()["id"] == report["id"] and again.json()["photo_deleted_at"] is None
    assert get(server, f"/v1/reports/{report['id']}/image").status_code == 200
    assert photo_file(server, report).exists()
    # Its retention is the report's: still past it, the next pass deletes the photo again.
    assert run_purge(server, later(DAYS + 1)).files == 1
    assert_gone(server, report["id"])


def test_a_purged_photo_sent_again_as_a_deposit_opens_its_incident_with_its_photo(server: Server) -> None:
    photo = plain_photo(next(_seed))
    report = sent(server, photo)
    run_purge(server, later(DAYS + 1))
    assert_gone(server, report["id"])

    again = server.upload(photo, agent_says_deposit="true")
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["id"] == report["id"] and body["incident"]["action"] == "opened"
    assert get(server, f"/v1/reports/{report['id']}/image").status_code == 200
    assert get(server, f"/v1/incidents/{body['incident']['id']}").json()["properties"]["to_review"] is True
    assert run_purge(server, later(DAYS + 1)).files == 0  # its incident is under way


def test_a_purged_photo_sent_again_onto_a_failing_disk_stays_purged_and_leaves_no_file(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = plain_photo(next(_seed))
    report = sent(server, photo)
    run_purge(server, later(DAYS + 1))

    def read_only(*_args: Any, **_kwargs: Any) -> Any:  # after the file is written, before the commit
        readonly = sqlite3.OperationalError("attempt to write a readonly database")
        raise OperationalError("UPDATE reports ...", {}, readonly)

    with monkeypatch.context() as patch:
        patch.setattr(upload_module, "send_anyway", read_only)
        refused = server.upload(photo, agent_says_deposit="true")
    assert refused.status_code == 503, refused.text
    assert_gone(server, report["id"])
    assert not photo_file(server, report).exists()
    assert server.upload(photo, agent_says_deposit="true").status_code == 200
    assert get(server, f"/v1/reports/{report['id']}/image").status_code == 200


def test_a_reviewed_photo_past_retention_leaves_the_dataset_export(server: Server) -> None:
    report = sent(server)
    change(server, report["incident"]["id"], "rejected")  # its photo becomes a reviewed negative
    with server.service.sessions() as session:
        assert [s.report_id for s in select_samples(session, ExportFilter())] == [report["id"]]
    run_purge(server, later(DAYS + 1))
    with server.service.sessions() as session:
        assert select_samples(session, ExportFilter()) == []


# --------------------------------------------------------------------------------------------------
# The daily pass


def test_the_daily_pass_runs_once_a_day_whichever_worker_asks(server: Server) -> None:
    service = server.service
    report = sent(server)
    change(server, report["incident"]["id"], "cleaned")
    start = later(DAYS + 1)

    def daily(now: datetime) -> PurgeResult | None:
        return daily_pass(service.sessions, service.photos, retention_days=DAYS, now=now)

    first = daily(start)
    assert first is not None and (first.reports, first.files) == (1, 1)
    assert not photo_file(server, report).exists()
    assert daily(start + timedelta(hours=23)) is None  # done today
    assert daily(start + timedelta(hours=25)) == PurgeResult(reports=0, files=0, bytes=0, shared=0)

    # Several workers asking at once: exactly one runs it.
    moment = start + timedelta(days=3)
    with ThreadPoolExecutor(max_workers=4) as pool:
        claims = list(pool.map(lambda _: claim_pass(service.sessions, PURGE_PASS, moment, timedelta(days=1)), range(4)))
    assert sorted(claims) == [False, False, False, True]


def test_the_service_looks_for_the_daily_pass_on_its_own(
    tmp_path: Path, detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.app

    monkeypatch.setattr(serving.app, "PURGE_FIRST_CHECK_S", 0.0)
    with server_at(tmp_path, detector) as running:
        import time

        deadline = time.monotonic() + 10
        while True:
            with running.service.sessions() as session:
                row = session.get(retention.ScheduledPass, PURGE_PASS)
                if row is not None and row.finished_at is not None:
                    break
            assert time.monotonic() < deadline, "the service never ran its daily pass"
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# Erasure


def erase(server: Server, report_id: int, who: str = "admin") -> Any:
    return server.client.post(f"/v1/reports/{report_id}/erase", headers=server.headers(who))


def test_an_admin_erases_a_report_photo_and_personal_fields(server: Server) -> None:
    note = "the man in the red coat left it"
    report = sent(server, note=note)
    other = sent(server)
    incident_id = report["incident"]["id"]
    review = server.client.post(
        f"/v1/reports/{report['id']}/review",
        json={"deposit": True, "boxes": [{"detection": 0}], "note": "face visible near the red coat"},
        headers=server.headers("manager"),
    )
    assert review.status_code == 201, review.text
    before = get(server, f"/v1/incidents/{incident_id}").json()

    response = erase(server, report["id"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["note"] is None and body["submitted_by"] == ERASED
    assert body["erased_at"] is not None and body["photo_deleted_at"] is not None
    assert body["detections"] == report["detections"] and body["location"] == report["location"]
    assert body["review"]["note"] is None and body["review"]["boxes"]
    assert_gone(server, report["id"])
    assert not photo_file(server, report).exists()
    assert get(server, f"/v1/reports/{report['id']}", who="agent").status_code == 404  # no longer tied to its key
    listed = get(server, "/v1/reports", who="agent").json()["items"]
    assert report["id"] not in [r["id"] for r in listed] and other["id"] in [r["id"] for r in listed]

    after = get(server, f"/v1/incidents/{incident_id}").json()
    for field in ("report_count", "first_seen", "last_seen", "max_score", "label", "status"):
        assert after["properties"][field] == before["properties"][field]
    assert after["geometry"] == before["geometry"]
    rows = after["history"]
    text = repr(rows)
    assert "red coat" not in text and "test-agent" not in text
    assert rows[0]["actor"] == ERASED and rows[0]["comment"] == f"opened by report #{report['id']}"
    assert rows[-1]["comment"] == f"report #{report['id']} erased" and rows[-1]["actor"] == "test-admin (admin)"
    assert rows[-1]["from_status"] == rows[-1]["to_status"] == after["properties"]["status"]
    with server.service.sessions() as session:
        row = session.get(Report, report["id"])
        assert row is not None
        assert (row.api_key_id, row.client_ref, row.erased_by) == (None, f"erased:{report['id']}", "test-admin (admin)")

    again = erase(server, report["id"])  # idempotent
    assert again.status_code == 200 and again.json()["erased_at"] == body["erased_at"]
    assert history(server, incident_id) == rows


def test_only_admins_erase(server: Server) -> None:
    report = sent(server)
    for who in ("agent", "manager", "camera"):
        response = erase(server, report["id"], who)
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert get(server, f"/v1/reports/{report['id']}/image").status_code == 200
    missing = erase(server, 10**6)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_erasing_a_report_keeps_a_file_another_report_has(server: Server) -> None:
    photo = deposit_photo(next(_seed))
    mine, theirs = sent(server, photo), sent(server, photo, who="agent2")
    assert erase(server, mine["id"]).status_code == 200
    assert_gone(server, mine["id"])
    assert get(server, f"/v1/reports/{theirs['id']}/image").status_code == 200
    assert photo_file(server, theirs).exists()


def test_an_erasure_cut_before_the_file_serves_nothing_and_erasing_again_finishes_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.erasure

    report = sent(server)

    def killed(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
        raise SystemExit("killed after the commit")

    with monkeypatch.context() as patch:
        patch.setattr(serving.erasure, "delete_unneeded", killed)
        with pytest.raises(SystemExit):
            serving.erasure.erase(
                server.service.sessions, server.folder, report["id"], actor="dpo", actor_key_id=None
            )
    assert_gone(server, report["id"])
    assert photo_file(server, report).exists()
    assert erase(server, report["id"]).status_code == 200
    assert not photo_file(server, report).exists()


def test_an_erased_report_sent_anyway_no_longer_holds_its_incident_in_review(server: Server) -> None:
    report = sent(server, plain_photo(next(_seed)), agent_says_deposit="true")
    incident_id = report["incident"]["id"]
    assert get(server, f"/v1/incidents/{incident_id}").json()["properties"]["to_review"] is True
    assert erase(server, report["id"]).status_code == 200
    assert get(server, f"/v1/incidents/{incident_id}").json()["properties"]["to_review"] is False


def test_an_erased_report_without_incident_records_who_erased_it(server: Server) -> None:
    report = sent(server, plain_photo(next(_seed)), note="private")
    assert erase(server, report["id"]).json()["note"] is None
    with server.service.sessions() as session:
        row = session.get(Report, report["id"])
        assert row is not None and row.erased_by == "test-admin (admin)" and row.erased_at is not None
        assert session.scalars(select(Transition)).all() == []


# --------------------------------------------------------------------------------------------------
# The commands


def age(server: Server, days: float) -> None:
    """Move every report's reception and incident's last change ``days`` back."""
    with server.service.sessions.begin() as session:
        for report in session.scalars(select(Report)):
            report.received_at -= timedelta(days=days)
        for incident in session.scalars(select(Incident)):
            incident.updated_at -= timedelta(days=days)


def test_vipare_photos_purge(server: Server) -> None:
    report, other = sent(server), sent(server)
    change(server, report["incident"]["id"], "cleaned")
    age(server, DAYS + 1)
    runner = CliRunner()
    options = ["--data-dir", str(server.data_dir)]
    env = {"VIPARE_PHOTO_RETENTION_DAYS": str(DAYS)}

    dry = runner.invoke(photos, ["purge", "--dry-run", *options], env=env)
    assert dry.exit_code == 0, dry.output
    size = photo_file(server, report).stat().st_size
    assert dry.output == (
        f"would delete the photos of 1 reports past the {DAYS}-day retention: 1 files, {size / 1e6:.1f} MB "
        "(dry run: nothing changed)\n"
    )
    assert photo_file(server, report).exists()

    done = runner.invoke(photos, ["purge", *options], env=env)
    assert done.exit_code == 0, done.output
    megabytes = f"{size / 1e6:.1f} MB"
    assert done.output == f"deleted the photos of 1 reports past the {DAYS}-day retention: 1 files, {megabytes}\n"
    assert not photo_file(server, report).exists() and photo_file(server, other).exists()
    assert_gone(server, report["id"])

    again = runner.invoke(photos, ["purge", *options], env=env)
    assert again.output.startswith("deleted the photos of 0 reports")


def test_vipare_reports_erase(server: Server) -> None:
    report = sent(server, note="call me on 06 12 34 56 78")
    runner = CliRunner()
    options = ["--data-dir", str(server.data_dir)]
    done = runner.invoke(reports, ["erase", str(report["id"]), "--by", "dpo", *options])
    assert done.exit_code == 0, done.output
    assert done.output == f"report #{report['id']} erased (its photo file deleted)\n"
    assert history(server, report["incident"]["id"])[-1]["actor"] == "dpo"
    again = runner.invoke(reports, ["erase", str(report["id"]), *options])
    assert again.exit_code == 0 and again.output.startswith(f"report #{report['id']} was already erased on ")
    missing = runner.invoke(reports, ["erase", "999999", *options])
    assert missing.exit_code == 1 and "There is no report #999999." in missing.output


def test_vipare_reports_erase_says_when_the_file_stays_for_another_report(server: Server) -> None:
    photo = deposit_photo(next(_seed))
    mine, theirs = sent(server, photo), sent(server, photo, who="agent2")
    done = CliRunner().invoke(reports, ["erase", str(mine["id"]), "--data-dir", str(server.data_dir)])
    assert done.output == f"report #{mine['id']} erased (its photo file kept: another report has the same photo)\n"
    assert photo_file(server, theirs).exists()
