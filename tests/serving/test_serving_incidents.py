"""Incidents over HTTP: the workflow and its history, invalid changes, merging, recurrence, the time
window, and the map query's filters and pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.serving.helpers import Server, deposit_photo, moved

STRASBOURG = (48.5734, 7.7521)
_seed = iter(range(1000, 100000))
_spare_places = iter(range(200, 1000))


def place(n: int) -> tuple[float, float]:
    return moved(*STRASBOURG, north_m=1000.0 * n)


def report_at(server: Server, lat: float, lon: float, who: str = "agent", **fields: Any) -> dict[str, Any]:
    """Upload a new deposit photo taken at (lat, lon)."""
    response = server.upload(deposit_photo(next(_seed), lat=lat, lon=lon), who=who, **fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def change(server: Server, incident: int, to: str, **body: Any) -> Any:
    return server.client.post(f"/v1/incidents/{incident}/transitions", json={"to": to, **body},
                              headers=server.headers("manager"))


def incident(server: Server, incident_id: int) -> dict[str, Any]:
    body: dict[str, Any] = server.client.get(f"/v1/incidents/{incident_id}", headers=server.headers("manager")).json()
    return body


def test_workflow_to_cleaned_records_who_when_and_why(server: Server) -> None:
    first = report_at(server, *place(1))
    number = first["incident"]["id"]
    for to, comment in (("confirmed", "seen by the crew"), ("scheduled", "Tuesday round"), ("cleaned", None)):
        response = change(server, number, to, comment=comment)
        assert response.status_code == 201, response.text
        assert response.json()["properties"]["status"] == to
    history = incident(server, number)["history"]
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "new"), ("new", "confirmed"), ("confirmed", "scheduled"), ("scheduled", "cleaned")
    ]
    assert history[0]["actor"] == "test-agent (agent)" and history[0]["comment"] == f"opened by report #{first['id']}"
    assert {h["actor"] for h in history[1:]} == {"test-manager (manager)"}
    assert [h["comment"] for h in history[1:]] == ["seen by the crew", "Tuesday round", None]
    times = [datetime.fromisoformat(h["at"]) for h in history]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)


@pytest.mark.parametrize(
    ("path", "to", "extra", "status", "code"),
    [
        ([], "new", {}, 409, "invalid_transition"),
        (["cleaned"], "confirmed", {}, 409, "invalid_transition"),
        (["rejected"], "scheduled", {}, 409, "invalid_transition"),
        ([], "done", {}, 422, None),
        ([], "duplicate", {}, 422, "invalid_merge"),
        ([], "confirmed", {"merged_into": 1}, 422, "invalid_merge"),
        ([], "duplicate", {"merged_into": 999999}, 422, "invalid_merge"),
    ],
    ids=["new-to-new", "cleaned-is-final", "rejected-to-scheduled", "unknown-status", "duplicate-needs-target",
         "target-without-duplicate", "missing-target"],
)
def test_invalid_changes_are_refused_with_a_message(
    server: Server, path: list[str], to: str, extra: dict[str, Any], status: int, code: str | None
) -> None:
    number = report_at(server, *place(next(_spare_places)))["incident"]["id"]
    for step in path:
        assert change(server, number, step).status_code == 201
    before = incident(server, number)["history"]
    response = change(server, number, to, **extra)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["code"] == code and len(response.json()["detail"]) > 10
    assert incident(server, number)["history"] == before  # nothing recorded


def test_a_rejected_incident_can_be_reopened(server: Server) -> None:
    number = report_at(server, *place(40))["incident"]["id"]
    assert change(server, number, "rejected", comment="a skip for building works").status_code == 201
    assert change(server, number, "confirmed", comment="it was dumping after all").status_code == 201


def test_a_duplicate_is_merged_into_another_incident(server: Server) -> None:
    lat, lon = place(50)
    a = report_at(server, lat, lon)["incident"]["id"]
    b_report = report_at(server, *moved(lat, lon, east_m=60.0))
    b = b_report["incident"]["id"]
    assert a != b
    assert change(server, b, "duplicate", merged_into=b).json()["code"] == "invalid_merge"  # not into itself
    merged = change(server, b, "duplicate", merged_into=a, comment="same pile, two corners")
    assert merged.status_code == 201
    assert merged.json()["properties"]["merged_into"] == a
    assert merged.json()["reports"] == [] and merged.json()["history"][-1]["merged_into"] == a
    target = incident(server, a)
    assert target["properties"]["report_count"] == 2
    assert b_report["id"] in {r["id"] for r in target["reports"]}
    assert change(server, b, "confirmed").status_code == 409  # duplicate is final
    c = report_at(server, *moved(lat, lon, east_m=-200.0))["incident"]["id"]
    into_duplicate = change(server, c, "duplicate", merged_into=b)
    assert into_duplicate.status_code == 409 and f"#{a}" in into_duplicate.json()["detail"]
    assert into_duplicate.json()["code"] == "merge_target_closed"


def test_a_deposit_after_cleaning_opens_a_new_incident_and_counts_a_recurrence(server: Server) -> None:
    lat, lon = place(60)
    first = report_at(server, lat, lon)["incident"]["id"]
    assert change(server, first, "cleaned").status_code == 201
    again = report_at(server, *moved(lat, lon, north_m=5.0))
    second = again["incident"]["id"]
    assert second != first and again["incident"]["action"] == "opened"
    props = incident(server, second)["properties"]
    assert (props["recurrence_of"], props["recurrence_count"]) == (first, 1)
    assert change(server, second, "cleaned").status_code == 201
    third = report_at(server, lat, lon)["incident"]["id"]
    props = incident(server, third)["properties"]
    assert (props["recurrence_of"], props["recurrence_count"]) == (second, 2)


def test_a_photo_taken_before_the_cleaning_joins_the_cleaned_incident(server: Server) -> None:
    lat, lon = place(70)
    first = report_at(server, lat, lon)
    number = first["incident"]["id"]
    assert change(server, number, "cleaned").status_code == 201
    late = report_at(server, lat, lon, who="agent2", captured_at=first["observed_at"])  # uploaded at day's end
    assert late["incident"] == {"id": number, "status": "cleaned", "action": "late", "url": f"/v1/incidents/{number}"}
    assert incident(server, number)["properties"]["report_count"] == 2


def test_the_time_window_separates_old_sightings(server: Server) -> None:
    lat, lon = place(80)
    day = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
    first = report_at(server, lat, lon, captured_at=day.isoformat())["incident"]["id"]
    within = report_at(server, lat, lon, captured_at=(day + timedelta(days=5)).isoformat())["incident"]["id"]
    later = report_at(server, lat, lon, captured_at=(day + timedelta(days=5 + 8)).isoformat())["incident"]
    assert within == first  # 5 days after: the same deposit
    assert later["id"] != first and later["action"] == "opened"  # 8 days after the last sighting: a new one
    assert incident(server, later["id"])["properties"]["recurrence_count"] == 0  # never cleaned: no recurrence


def test_the_map_filters_and_pages(server: Server) -> None:
    lat, lon = place(90)
    numbers = [report_at(server, *moved(lat, lon, east_m=100.0 * i))["incident"]["id"] for i in range(3)]
    assert change(server, numbers[0], "confirmed").status_code == 201
    bbox = f"{lon - 0.01},{lat - 0.01},{lon + 0.01},{lat + 0.01}"
    get = lambda **params: server.client.get(  # noqa: E731
        "/v1/incidents", params={"bbox": bbox, **params}, headers=server.headers("manager")
    )

    page = get(limit=2).json()
    assert (page["numberMatched"], page["numberReturned"]) == (3, 2)
    assert [f["id"] for f in page["features"]] == numbers[::-1][:2]  # most recently seen first
    following = next(link["href"] for link in page["links"] if link["rel"] == "next")
    rest = server.client.get(following, headers=server.headers("manager")).json()
    assert [f["id"] for f in rest["features"]] == [numbers[0]]
    assert {link["rel"] for link in rest["links"]} == {"self", "prev"}

    assert [f["id"] for f in get(status="confirmed").json()["features"]] == [numbers[0]]
    assert get(status=["new", "confirmed"]).json()["numberMatched"] == 3
    assert get(**{"class": "dumped_waste"}).json()["numberMatched"] == 3
    assert get(**{"class": "overflowing_bin"}).json()["numberMatched"] == 0
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert get(since=tomorrow).json()["numberMatched"] == 0
    assert get(until=tomorrow).json()["numberMatched"] == 3
    for bad in ("1,2,3", "a,b,c,d", "0,50,1,40", "0,0,200,1"):
        response = server.client.get("/v1/incidents", params={"bbox": bad}, headers=server.headers("manager"))
        assert response.status_code == 422, bad


def test_grouping_and_the_map_work_across_the_antimeridian(server: Server) -> None:
    lat = -16.5
    east = report_at(server, lat, 179.99995)["incident"]["id"]
    west = report_at(server, lat, -179.99995)["incident"]  # about 11 m away, across the 180th meridian
    assert west["id"] == east and west["action"] == "joined"
    feature = server.client.get(
        "/v1/incidents", params={"bbox": "179.99,-16.6,-179.99,-16.4"}, headers=server.headers("manager")
    ).json()["features"]
    assert [f["id"] for f in feature] == [east]
    assert abs(feature[0]["geometry"]["coordinates"][0]) == pytest.approx(180.0, abs=1e-4)
