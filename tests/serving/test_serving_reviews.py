"""Reports sent anyway over HTTP: a photo the agent sends as a deposit whatever the model says.

Where the model sees nothing, it opens or joins an incident marked ``to_review``, which the managers'
list shows first; the same photo sent again with the flag upgrades the first report in place. A
camera's frames group as before.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.serving.helpers import (
    Server,
    bearer,
    deposit_photo,
    moved,
    plain_photo,
)

NANTES = (47.2184, -1.5536)
_seed = itertools.count(5000)
_places = itertools.count(1)


def new_place() -> tuple[float, float]:
    """A place 1 km from every other test's, so that no test sees another's incidents."""
    return moved(*NANTES, north_m=1000.0 * next(_places))


def upload(server: Server, photo: bytes, lat: float, lon: float, who: str = "agent", **fields: Any) -> Any:
    return server.upload(photo, who=who, lat=lat, lon=lon, accuracy_m=5, **fields)


def created(server: Server, photo: bytes, lat: float, lon: float, **fields: Any) -> dict[str, Any]:
    response = upload(server, photo, lat, lon, **fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def get(server: Server, path: str, who: str = "manager") -> dict[str, Any]:
    response = server.client.get(path, headers=server.headers(who))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def incident(server: Server, incident_id: int) -> dict[str, Any]:
    return get(server, f"/v1/incidents/{incident_id}")


def change(server: Server, incident_id: int, to: str, **body: Any) -> Any:
    return server.client.post(f"/v1/incidents/{incident_id}/transitions", json={"to": to, **body},
                              headers=server.headers("manager"))


# --------------------------------------------------------------------------------------------------
# Report anyway


def test_a_photo_sent_anyway_opens_an_incident_to_review_that_the_list_shows_first(server: Server) -> None:
    lat, lon = new_place()
    seen = created(server, deposit_photo(next(_seed)), lat, lon)  # an older incident, elsewhere, not to review
    report = created(server, plain_photo(next(_seed)), *moved(lat, lon, east_m=500.0), agent_says_deposit="true")
    assert report["agent_says_deposit"] is True and report["detections"] == []
    assert report["verdict"]["dumping"] is False  # the model's answer stays the model's
    assert report["incident"]["action"] == "opened"
    opened = incident(server, report["incident"]["id"])["properties"]
    assert opened["to_review"] is True and opened["label"] == "dumped_waste" and opened["family"] == "waste"
    assert opened["max_score"] == 0.0
    assert incident(server, seen["incident"]["id"])["properties"]["to_review"] is False

    listed = get(server, "/v1/incidents?limit=1000")["features"]
    flags = [f["properties"]["to_review"] for f in listed]
    assert flags == sorted(flags, reverse=True)  # every incident to review comes before the others
    assert report["incident"]["id"] in [f["id"] for f in listed if f["properties"]["to_review"]]


def test_a_photo_sent_anyway_joins_the_open_incident_nearby(server: Server) -> None:
    lat, lon = new_place()
    first = created(server, deposit_photo(next(_seed)), lat, lon)
    number = first["incident"]["id"]
    assert incident(server, number)["properties"]["to_review"] is False
    anyway = created(server, plain_photo(next(_seed)), *moved(lat, lon, east_m=8.0), agent_says_deposit="true")
    assert anyway["incident"] == {**first["incident"], "action": "joined"}
    properties = incident(server, number)["properties"]
    assert properties["to_review"] is True and properties["report_count"] == 2
    assert properties["max_score"] == pytest.approx(0.9) and properties["label"] == "dumped_waste"


def test_a_deposit_sent_anyway_is_stored_as_usual_with_its_flag(server: Server) -> None:
    lat, lon = new_place()
    report = created(server, deposit_photo(next(_seed)), lat, lon, agent_says_deposit="true")
    assert report["agent_says_deposit"] is True and report["verdict"]["dumping"] is True
    assert incident(server, report["incident"]["id"])["properties"]["to_review"] is False


def test_sending_a_stored_photo_again_anyway_upgrades_its_report_in_place(server: Server) -> None:
    lat, lon = new_place()
    photo = plain_photo(next(_seed))
    first = created(server, photo, lat, lon)
    assert first["incident"] is None and first["agent_says_deposit"] is False
    before = server.counts()

    again = upload(server, photo, lat, lon, agent_says_deposit="true", note="a mattress behind the van")
    assert again.status_code == 200, again.text
    upgraded = again.json()
    assert upgraded["id"] == first["id"] and upgraded["agent_says_deposit"] is True
    assert upgraded["incident"]["action"] == "opened" and upgraded["note"] == "a mattress behind the van"
    assert upgraded["detections"] == first["detections"] == []
    assert server.counts() == (before[0], before[1] + 1, before[2])  # no new report, no new photo
    assert incident(server, upgraded["incident"]["id"])["properties"]["to_review"] is True

    for fields in ({"agent_says_deposit": "true"}, {}):  # the offline queue sending it once more changes nothing
        third = upload(server, photo, lat, lon, **fields)
        assert third.status_code == 200 and third.json() == upgraded
    assert server.counts() == (before[0], before[1] + 1, before[2])


def test_a_camera_batch_groups_only_what_the_model_sees(server: Server) -> None:
    lat, lon = new_place()
    frames = [("deposit.jpg", deposit_photo(next(_seed), lat=lat, lon=lon)),
              ("clean.jpg", plain_photo(next(_seed), lat=lat, lon=lon))]
    response = server.client.post(
        "/v1/batches", files=[("frames", (name, data, "image/jpeg")) for name, data in frames],
        headers=bearer(server.keys["camera"]),
    )
    assert response.status_code == 200, response.text
    deposit, clean = (frame["report"] for frame in response.json()["frames"])
    assert deposit["incident"]["action"] == "opened" and clean["incident"] is None
    assert deposit["agent_says_deposit"] is False and clean["agent_says_deposit"] is False
    assert incident(server, deposit["incident"]["id"])["properties"]["to_review"] is False


def test_a_merge_carries_the_reports_to_review(server: Server) -> None:
    lat, lon = new_place()
    target = created(server, deposit_photo(next(_seed)), lat, lon)["incident"]["id"]
    anyway = created(server, plain_photo(next(_seed)), *moved(lat, lon, east_m=300.0), agent_says_deposit="true")
    source = anyway["incident"]["id"]
    assert change(server, source, "duplicate", merged_into=target).status_code == 201
    assert incident(server, target)["properties"]["to_review"] is True
    assert incident(server, source)["properties"]["to_review"] is False
