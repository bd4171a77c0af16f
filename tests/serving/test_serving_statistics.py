"""Statistics for the council: weekly figures, the median time to clean, hotspots, the CSV of the weeks."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from serving.statistics import HOTSPOT_CELL_M, MAX_WEEKS, hotspots, iso_week
from tests.serving.helpers import Server, deposit_photo, moved
from vipare.geotag import EARTH_RADIUS_M

BORDEAUX = (44.8378, -0.5792)


@dataclass
class Seeded:
    """What the fixture made: when each opened incident was first photographed, and the cleaned ones' ids."""

    now: datetime
    opened_at: list[datetime]
    cleaned: list[int]
    recurrence: int
    first: int


def _upload(server: Server, seed: int, place: tuple[float, float], captured_at: datetime | None = None) -> int:
    fields: dict[str, Any] = {"lat": place[0], "lon": place[1]}
    if captured_at is not None:
        fields["captured_at"] = captured_at.isoformat()
    response = server.upload(deposit_photo(seed), **fields)
    assert response.status_code == 201, response.text
    incident: int = response.json()["incident"]["id"]
    return incident


def _to(server: Server, incident: int, status: str) -> None:
    response = server.client.post(f"/v1/incidents/{incident}/transitions", json={"to": status},
                                  headers=server.headers("manager"))
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def seeded(server: Server) -> Seeded:
    """Around Bordeaux: three incidents cleaned 10, 20 and 40 hours after their first photo, one three weeks
    old still open, one rejected (not counted), and a deposit again where the first was cleaned."""
    now = datetime.now(UTC)
    places = [moved(*BORDEAUX, east_m=1000 * k) for k in range(5)]
    taken = [now - timedelta(hours=h) for h in (10, 20, 40)]
    cleaned = [_upload(server, 100 + k, places[k], when) for k, when in enumerate(taken)]
    for incident in cleaned:
        _to(server, incident, "cleaned")
    old = now - timedelta(weeks=3)
    _upload(server, 110, places[3], old)
    _to(server, _upload(server, 111, places[4], now - timedelta(hours=1)), "rejected")
    again = moved(*places[0], north_m=15)
    recurrence = _upload(server, 112, again)  # taken now, after the cleaning: a new incident, a recurrence
    detail = server.client.get(f"/v1/incidents/{recurrence}", headers=server.headers("manager")).json()
    assert detail["properties"]["recurrence_of"] == cleaned[0]
    reported = datetime.fromisoformat(detail["properties"]["first_seen"])
    return Seeded(now=now, opened_at=[*taken, old, reported], cleaned=cleaned, recurrence=recurrence, first=cleaned[0])


def _stats(server: Server, who: str = "manager", **params: Any) -> Any:
    response = server.client.get("/v1/statistics", params=params, headers=server.headers(who))
    assert response.status_code == 200, response.text
    return response.json()


def test_weekly_figures_and_the_median_time_to_clean(server: Server, seeded: Seeded) -> None:
    body = _stats(server)
    weeks = body["weeks"]
    assert len(weeks) == 12 and weeks[-1]["week"] == iso_week(datetime.now(UTC), UTC)
    assert [w["start"] for w in weeks] == sorted(w["start"] for w in weeks)
    assert all(datetime.fromisoformat(w["start"]).weekday() == 0 for w in weeks)  # Mondays

    expected: dict[str, int] = {}
    for moment in seeded.opened_at:
        expected[iso_week(moment, UTC)] = expected.get(iso_week(moment, UTC), 0) + 1
    assert {w["week"]: w["opened"] for w in weeks if w["opened"]} == expected  # the rejected one is not counted
    current = weeks[-1]
    assert current["cleaned"] == 3
    assert current["median_hours_to_clean"] == pytest.approx(20, abs=0.1)  # of 10, 20 and 40 hours
    assert all(w["median_hours_to_clean"] is None for w in weeks[:-1] if not w["cleaned"])

    totals = body["totals"]
    assert (totals["opened"], totals["cleaned"]) == (5, 3)
    assert totals["median_hours_to_clean"] == pytest.approx(20, abs=0.1)
    assert body["by_class"]["dumped_waste"] == totals
    assert body["by_class"]["overflowing_bin"] == {"opened": 0, "cleaned": 0, "median_hours_to_clean": None}
    assert sum(body["by_size"][size]["opened"] for size in ("S", "M", "L")) == totals["opened"]  # estimated sizes


def test_hotspots_are_the_places_of_repeated_deposits(server: Server, seeded: Seeded) -> None:
    (spot,) = _stats(server)["hotspots"]
    assert (spot["count"], spot["recurrences"], spot["classes"]) == (2, 1, {"dumped_waste": 2})
    place = moved(*BORDEAUX, north_m=7.5)  # between the cleaned deposit and the new one 15 m north
    assert spot["lat"] == pytest.approx(place[0], abs=1e-5) and spot["lon"] == pytest.approx(place[1], abs=1e-5)


def test_filters_period_class_and_time_zone(server: Server, seeded: Seeded) -> None:
    since = (seeded.now - timedelta(hours=30)).isoformat()
    body = _stats(server, since=since)
    assert body["totals"]["opened"] == 3  # 10 and 20 hours ago, and the recurrence
    assert body["totals"]["cleaned"] == 3  # all three were cleaned within the period
    assert body["totals"]["median_hours_to_clean"] == pytest.approx(20, abs=0.1)
    assert len(body["weeks"]) in (1, 2)
    none = _stats(server, **{"class": "overflowing_bin"})
    assert none["totals"]["opened"] == 0 and none["hotspots"] == [] and list(none["by_class"]) == ["overflowing_bin"]
    far_east = _stats(server, tz="Pacific/Kiritimati")  # UTC+14: days, and so weeks, start earlier
    assert far_east["tz"] == "Pacific/Kiritimati"
    assert sum(w["opened"] for w in far_east["weeks"]) == far_east["totals"]["opened"] == 5
    assert far_east["weeks"][-1]["week"] == iso_week(datetime.now(UTC), ZoneInfo("Pacific/Kiritimati"))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"since": "2026-05-02T00:00:00Z", "until": "2026-05-01T00:00:00Z"}, "since"),
        ({"since": "2020-01-01T00:00:00Z", "until": (datetime(2020, 1, 1, tzinfo=UTC) + timedelta(weeks=MAX_WEEKS))
          .isoformat()}, "since"),
    ],
)
def test_refusals_say_what_to_change(server: Server, params: dict[str, str], field: str) -> None:
    response = server.client.get("/v1/statistics", params=params, headers=server.headers("manager"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", field]


def test_managers_only(server: Server) -> None:
    assert server.client.get("/v1/statistics").status_code == 401
    assert server.client.get("/v1/statistics", headers=server.headers("agent")).status_code == 403
    assert server.client.get("/v1/statistics.csv", headers=server.headers("agent")).status_code == 403


def test_csv_of_the_weeks_for_a_french_excel(server: Server, seeded: Seeded) -> None:
    weeks = _stats(server)["weeks"]
    response = server.client.get("/v1/statistics.csv", params={"excel": "fr"}, headers=server.headers("manager"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith(b"\xef\xbb\xbfweek;week_start;opened;cleaned;median_hours_to_clean\r\n")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert [r["week"] for r in rows] == [w["week"] for w in weeks]
    last = rows[-1]
    assert (int(last["opened"]), int(last["cleaned"])) == (weeks[-1]["opened"], weeks[-1]["cleaned"])
    assert last["median_hours_to_clean"] == f"{weeks[-1]['median_hours_to_clean']:.1f}".replace(".", ",")
    plain = server.client.get("/v1/statistics.csv", headers=server.headers("manager")).text
    assert plain.startswith("week,week_start,") and "." in plain.splitlines()[-1]


@pytest.mark.parametrize(
    ("offsets_m", "min_incidents", "counts"),
    [
        ([(0, 0), (0, 30)], 2, [2]),  # 30 m apart: one place (both inside the cell)
        ([(0, 0), (0, 300)], 2, []),  # 300 m apart: two places with one deposit each
        ([(0, 0), (0, 300)], 1, [1, 1]),
        ([(0, 0), (0, 20), (10, 0), (0, 300), (0, 310)], 2, [3, 2]),  # 300 m east: another cell  # the busiest first
        ([], 2, []),
    ],
)
def test_hotspot_grid(offsets_m: list[tuple[float, float]], min_incidents: int, counts: list[int]) -> None:
    step = math.degrees(HOTSPOT_CELL_M / EARTH_RADIUS_M)
    row = math.floor(BORDEAUX[0] / step)
    step_lon = step / math.cos(math.radians((row + 0.5) * step))
    centre = ((row + 0.5) * step, (math.floor(BORDEAUX[1] / step_lon) + 0.5) * step_lon)  # 30 m either way stays in
    points = [(*moved(*centre, north_m=n, east_m=e), "dumped_waste", False) for n, e in offsets_m]
    assert [h.count for h in hotspots(points, min_incidents=min_incidents)] == counts
