"""The manager's desk over HTTP: scheduling with a date and a crew (Open311 expected_datetime), bulk
changes, undoing a merge, and a crew's round for the day as JSON, GPX and GeoJSON."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from tests.serving.helpers import Server, deposit_photo, moved

TOULOUSE = (43.6047, 1.4442)
GPX = "{http://www.topografix.com/GPX/1/1}"
_seed = iter(range(30000, 40000))


def opened(server: Server, north_m: float, east_m: float = 0.0) -> int:
    lat, lon = moved(*TOULOUSE, north_m=north_m, east_m=east_m)
    response = server.upload(deposit_photo(next(_seed), lat=lat, lon=lon))
    assert response.status_code == 201, response.text
    incident: int = response.json()["incident"]["id"]
    return incident


def change(server: Server, incident: int, **body: Any) -> Any:
    return server.client.post(f"/v1/incidents/{incident}/transitions", json=body, headers=server.headers("manager"))


def test_scheduling_with_a_date_and_a_crew_fills_open311_expected_datetime(server: Server) -> None:
    incident = opened(server, 0.0)
    when = "2026-12-07T08:30:00+01:00"
    done = change(server, incident, to="scheduled", scheduled_for=when, crew="Équipe Nord", comment="camion 2")
    assert done.status_code == 201, done.text
    props = done.json()["properties"]
    assert props["crew"] == "Équipe Nord"
    assert datetime.fromisoformat(props["scheduled_for"]) == datetime.fromisoformat(when)
    assert done.json()["history"][-1]["comment"] == "camion 2; for 2026-12-07T07:30+00:00 crew Équipe Nord"
    request = server.client.get(f"/open311/v2/requests/{incident}.json", headers=server.headers("manager")).json()[0]
    assert request["expected_datetime"] == "2026-12-07T07:30:00Z"
    refused = change(server, opened(server, 300.0), to="confirmed", crew="Équipe Nord")
    assert refused.status_code == 422 and "scheduled status" in refused.text


def test_bulk_changes_apply_to_each_and_say_which_could_not(server: Server) -> None:
    ids = [opened(server, 1000.0 + 200.0 * k) for k in range(3)]
    assert change(server, ids[2], to="rejected").status_code == 201  # a rejected one cannot be scheduled
    body = {"ids": [*ids, 999999], "to": "scheduled", "scheduled_for": "2026-12-08T09:00:00+01:00", "crew": "Sud"}
    outcomes = server.client.post("/v1/incidents/transitions", json=body, headers=server.headers("manager")).json()
    assert [(o["id"], o["done"], o["status"]) for o in outcomes] == [
        (ids[0], True, "scheduled"), (ids[1], True, "scheduled"), (ids[2], False, "rejected"), (999999, False, None)
    ]
    assert "rejected" in outcomes[2]["error"] and "no incident" in outcomes[3]["error"]
    for incident in ids[:2]:
        request = server.client.get(f"/open311/v2/requests/{incident}.json", headers=server.headers("manager")).json()
        assert request[0]["expected_datetime"] == "2026-12-08T08:00:00Z"
    merge = server.client.post("/v1/incidents/transitions", headers=server.headers("manager"),
                               json={"ids": ids, "to": "duplicate", "merged_into": ids[0]})
    assert merge.status_code == 422  # merges one at a time
    agent = server.client.post("/v1/incidents/transitions", json=body, headers=server.headers("agent"))
    assert agent.status_code == 403


def test_a_merge_refused_when_closed_or_far_and_an_unmerge_restores(server: Server) -> None:
    here = opened(server, 5000.0)
    twin = opened(server, 5000.0, east_m=60.0)  # 60 m away: its own incident (beyond 30 m)
    far = opened(server, 5600.0)
    cleaned = opened(server, 5000.0, east_m=-70.0)
    assert change(server, cleaned, to="cleaned").status_code == 201
    closed = change(server, here, to="duplicate", merged_into=cleaned)
    assert closed.status_code == 409 and closed.json()["code"] == "merge_target_closed"
    too_far = change(server, here, to="duplicate", merged_into=far)
    assert too_far.status_code == 409 and too_far.json()["code"] == "merge_too_far"

    before = server.client.get(f"/v1/incidents/{twin}", headers=server.headers("manager")).json()
    assert change(server, here, to="confirmed").status_code == 201
    merged = change(server, here, to="duplicate", merged_into=twin)
    assert merged.status_code == 201, merged.text
    target = server.client.get(f"/v1/incidents/{twin}", headers=server.headers("manager")).json()
    assert target["properties"]["report_count"] == before["properties"]["report_count"] + 1

    undone = server.client.post(f"/v1/incidents/{here}/unmerge", json={"comment": "not the same pile"},
                                headers=server.headers("manager"))
    assert undone.status_code == 201, undone.text
    restored = undone.json()
    assert restored["properties"]["status"] == "confirmed" and restored["properties"]["merged_into"] is None
    assert restored["properties"]["report_count"] == 1 and len(restored["reports"]) == 1
    last = restored["history"][-1]
    assert (last["from_status"], last["to_status"]) == ("duplicate", "confirmed")
    assert last["comment"] == f"not the same pile; unmerged from #{twin}"
    target = server.client.get(f"/v1/incidents/{twin}", headers=server.headers("manager")).json()
    assert target["properties"]["report_count"] == before["properties"]["report_count"]
    again = server.client.post(f"/v1/incidents/{here}/unmerge", headers=server.headers("manager"))
    assert again.status_code == 409


def test_a_round_of_twelve_incidents_as_json_gpx_and_geojson(server: Server) -> None:
    day = datetime(2026, 12, 9, tzinfo=UTC)
    ids = [opened(server, 20000.0 + 150.0 * (k % 4), east_m=150.0 * (k // 4)) for k in range(12)]
    other_day = opened(server, 21000.0)
    other_crew = opened(server, 21200.0)
    body = {"ids": ids, "to": "scheduled", "scheduled_for": (day + timedelta(hours=7)).isoformat(), "crew": "Est"}
    assert all(o["done"] for o in server.client.post("/v1/incidents/transitions", json=body,
                                                     headers=server.headers("manager")).json())
    change(server, other_day, to="scheduled", scheduled_for=(day + timedelta(days=1, hours=7)).isoformat(), crew="Est")
    change(server, other_crew, to="scheduled", scheduled_for=(day + timedelta(hours=7)).isoformat(), crew="Ouest")
    depot = moved(*TOULOUSE, north_m=19000.0)
    params = {"day": "2026-12-09", "crew": "Est", "depot_lat": depot[0], "depot_lon": depot[1]}
    plan = server.client.get("/v1/rounds", params=params, headers=server.headers("manager"))
    assert plan.status_code == 200, plan.text
    stops = plan.json()["stops"]
    assert sorted(s["incident"] for s in stops) == sorted(ids) and [s["order"] for s in stops] == list(range(1, 13))
    assert plan.json()["length_m"] == pytest.approx(sum(s["leg_m"] for s in stops) + plan.json()["back_m"], abs=1.0)

    gpx = server.client.get("/v1/rounds", params={**params, "format": "gpx"}, headers=server.headers("manager"))
    assert gpx.headers["content-type"].startswith("application/gpx+xml")
    points = ET.fromstring(gpx.content).findall(f"{GPX}rte/{GPX}rtept")
    assert len(points) == 14  # the depot, 12 stops, the depot
    names = [p.find(f"{GPX}name").text for p in points[1:-1]]  # type: ignore[union-attr]
    assert [int(str(n).split()[0].lstrip("#")) for n in names] == [s["incident"] for s in stops]

    geojson = json.loads(server.client.get("/v1/rounds", params={**params, "format": "geojson"},
                                           headers=server.headers("manager")).content)
    assert geojson["type"] == "FeatureCollection" and geojson["features"][0]["geometry"]["type"] == "LineString"

    no_depot = server.client.get("/v1/rounds", params={"day": "2026-12-09"}, headers=server.headers("manager"))
    assert no_depot.status_code == 422 and "VIPARE_DEPOT_LAT" in no_depot.json()["detail"]


def test_the_map_lists_a_thumbnail_of_each_incidents_latest_photo(server: Server) -> None:
    incident = opened(server, 40000.0)
    lat, lon = moved(*TOULOUSE, north_m=40000.0)
    box = f"{lon - 0.01},{lat - 0.01},{lon + 0.01},{lat + 0.01}"
    listed = server.client.get("/v1/incidents", params={"bbox": box}, headers=server.headers("manager")).json()
    link = next(f for f in listed["features"] if f["id"] == incident)["properties"]["thumbnail"]
    detail = server.client.get(f"/v1/incidents/{incident}", headers=server.headers("manager")).json()
    assert link == f"/v1/reports/{detail['reports'][-1]['id']}/thumbnail" == detail["properties"]["thumbnail"]
    small = server.client.get(link, headers=server.headers("manager"))
    assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(small.content)) as image:
        assert max(image.size) == 240 and image.size == (240, 180)  # the 640 x 480 photo, scaled down
    assert server.client.get(link).status_code == 401
