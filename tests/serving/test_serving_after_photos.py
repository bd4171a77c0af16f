"""Photos taken after a cleaning: a crew member's proof, shown beside the incident, "cleaned" proposed.

A photo sent with ``after_of`` joins no incident (it is no new sighting), is refused when the
incident is closed or the photo was taken away from its place, and makes the incident propose
"cleaned" when the model sees no deposit in it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.serving.helpers import Server, deposit_photo, moved, plain_photo

LYON = (45.7640, 4.8357)


def opened(server: Server, north_m: float, seed: int) -> dict[str, Any]:
    lat, lon = moved(*LYON, north_m=north_m)
    response = server.upload(deposit_photo(seed, lat=lat, lon=lon))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def detail(server: Server, incident_id: int) -> dict[str, Any]:
    body: dict[str, Any] = server.client.get(f"/v1/incidents/{incident_id}", headers=server.headers("manager")).json()
    return body


def test_a_clean_after_photo_proposes_cleaned_and_joins_nothing(server: Server) -> None:
    report = opened(server, 0.0, 501)
    incident_id = report["incident"]["id"]
    lat, lon = moved(*LYON, east_m=15.0)
    still_there = server.upload(deposit_photo(502, lat=lat, lon=lon), after_of=str(incident_id))
    assert still_there.status_code == 201, still_there.text
    assert still_there.json()["incident"] is None and still_there.json()["after_of"] == incident_id
    seen = detail(server, incident_id)
    assert seen["properties"]["report_count"] == 1  # no new sighting
    assert [r["id"] for r in seen["after_photos"]] == [still_there.json()["id"]]
    assert seen["cleaned_proposed"] is False  # a deposit is still in the photo

    gone = server.upload(plain_photo(503, lat=lat, lon=lon), after_of=str(incident_id))
    assert gone.status_code == 201, gone.text
    seen = detail(server, incident_id)
    assert len(seen["after_photos"]) == 2 and seen["cleaned_proposed"] is True
    moved_on = server.client.post(f"/v1/incidents/{incident_id}/transitions", json={"to": "cleaned"},
                                  headers=server.headers("manager"))
    assert moved_on.status_code == 201
    assert detail(server, incident_id)["cleaned_proposed"] is False  # done


@pytest.mark.parametrize(
    ("n", "case", "status", "code", "says"),
    [
        (1, "far", 422, "after_photo_refused", "m from incident"),
        (2, "closed", 409, "incident_closed", "open incident"),
        (3, "unknown", 404, "not_found", "no incident"),
        (4, "anyway", 422, "after_photo_refused", "without agent_says_deposit"),
    ],
)
def test_after_photos_that_cannot_be_one_are_refused(
    server: Server, n: int, case: str, status: int, code: str, says: str
) -> None:
    report = opened(server, 5000.0 + 1000.0 * n, 600 + n)
    incident_id = report["incident"]["id"]
    lat, lon = report["location"]["lat"], report["location"]["lon"]
    fields: dict[str, str] = {"after_of": str(incident_id)}
    if case == "far":
        lat, lon = moved(lat, lon, north_m=400.0)
    if case == "closed":
        server.client.post(f"/v1/incidents/{incident_id}/transitions", json={"to": "rejected"},
                           headers=server.headers("manager"))
    if case == "unknown":
        fields["after_of"] = "999999"
    if case == "anyway":
        fields["agent_says_deposit"] = "true"
    before = server.client.get("/v1/reports", params={"limit": 1}, headers=server.headers("manager")).json()["total"]
    response = server.upload(plain_photo(700 + n, lat=lat, lon=lon), **fields)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and says in response.json()["detail"]
    after = server.client.get("/v1/reports", params={"limit": 1}, headers=server.headers("manager")).json()["total"]
    assert after == before  # nothing half-written
