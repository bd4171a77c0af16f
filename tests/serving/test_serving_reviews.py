"""The review loop over HTTP: reports sent anyway, managers' reviews of a photo, rejections as negatives.

A photo sent anyway (``agent_says_deposit``) where the model sees nothing opens or joins an incident
marked ``to_review``; the same photo sent again with the flag upgrades the first report in place. A
review keeps, deletes, re-classes or draws boxes, or says "no deposit"; it is stored apart from the
model's detections, recorded in the incident's history, and clears ``to_review`` once every report
sent anyway of the incident has one. A bad review writes nothing.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from serving.models import ReportReview, Transition
from tests.onnxgen import CYAN, MAGENTA
from tests.serving.helpers import (
    DEPOSIT_BOX,
    DEPOSIT_CELL,
    PHOTO_SIZE,
    Server,
    bearer,
    cell_box,
    deposit_photo,
    keyed_photo,
    moved,
    plain_photo,
)

NANTES = (47.2184, -1.5536)
BIN_CELL = (6, 4)
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


def review(server: Server, report_id: int, body: dict[str, Any], who: str = "manager") -> Any:
    return server.client.post(f"/v1/reports/{report_id}/review", json=body, headers=server.headers(who))


def reviewed(server: Server, report_id: int, body: dict[str, Any], who: str = "manager") -> dict[str, Any]:
    response = review(server, report_id, body, who)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


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


def written(server: Server) -> tuple[int, int]:
    """(review rows, transition rows)."""
    with server.service.sessions() as session:
        reviews = session.scalar(select(func.count()).select_from(ReportReview)) or 0
        transitions = session.scalar(select(func.count()).select_from(Transition)) or 0
    return reviews, transitions


def bin_and_deposit_photo() -> bytes:
    """A photo where the stand-in model sees a deposit (detection 0, score order) and a normal bin."""
    return keyed_photo(next(_seed), {DEPOSIT_CELL: MAGENTA, BIN_CELL: CYAN})


# --------------------------------------------------------------------------------------------------
# Report anyway


def test_a_photo_sent_anyway_opens_an_incident_to_review_that_the_list_shows_first(server: Server) -> None:
    lat, lon = new_place()
    seen = created(server, deposit_photo(next(_seed)), lat, lon)  # an older incident, elsewhere, not to review
    report = created(server, plain_photo(next(_seed)), *moved(lat, lon, east_m=500.0), agent_says_deposit="true")
    assert report["agent_says_deposit"] is True and report["detections"] == []
    assert report["verdict"]["dumping"] is False  # the model's answer stays the model's
    assert report["incident"]["action"] == "opened" and report["review"] is None
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
    # Beyond the grouping radius (an incident of its own), within the merge distance.
    anyway = created(server, plain_photo(next(_seed)), *moved(lat, lon, east_m=60.0), agent_says_deposit="true")
    source = anyway["incident"]["id"]
    assert change(server, source, "duplicate", merged_into=target).status_code == 201
    assert incident(server, target)["properties"]["to_review"] is True
    assert incident(server, source)["properties"]["to_review"] is False


# --------------------------------------------------------------------------------------------------
# Reviews


def test_a_review_keeps_deletes_reclasses_and_draws_boxes_apart_from_the_detections(server: Server) -> None:
    lat, lon = new_place()
    report = created(server, bin_and_deposit_photo(), lat, lon)
    assert [d["label"] for d in report["detections"]] == ["dumped_waste", "bin"]
    number = report["incident"]["id"]

    kept = reviewed(server, report["id"], {"deposit": True, "boxes": [{"detection": 0}]})  # the bin deleted
    assert kept["boxes"] == [{"label": "dumped_waste", "xyxy": list(DEPOSIT_BOX), "detection": 0}]
    assert kept["source"] == "review" and kept["reviewer"] == "test-manager (manager)" and kept["deposit"] is True

    drawn_box = [10.0, 20.0, 110.5, 90.0]
    changed = reviewed(server, report["id"], {
        "deposit": True,
        "boxes": [{"detection": 0, "label": "overflowing_bin"}, {"detection": 1},
                  {"label": "dumped_waste", "xyxy": drawn_box}],
        "note": "bags left of the bin",
    })
    assert changed["boxes"] == [
        {"label": "overflowing_bin", "xyxy": list(DEPOSIT_BOX), "detection": 0},
        {"label": "bin", "xyxy": list(cell_box(*BIN_CELL)), "detection": 1},
        {"label": "dumped_waste", "xyxy": drawn_box, "detection": None},
    ]

    again = get(server, f"/v1/reports/{report['id']}")
    assert again["detections"] == report["detections"]  # the model's detections stay as they were
    assert again["review"] == changed
    assert [r["id"] for r in server.client.get(f"/v1/reports/{report['id']}/reviews",
                                               headers=server.headers("manager")).json()] == [kept["id"], changed["id"]]

    history = incident(server, number)["history"]
    assert [(h["from_status"], h["to_status"]) for h in history[1:]] == [("new", "new"), ("new", "new")]
    assert [h["comment"] for h in history[1:]] == [
        f"review of report #{report['id']}: 1 dumped_waste",
        f"review of report #{report['id']}: 1 bin, 1 dumped_waste, 1 overflowing_bin; bags left of the bin",
    ]
    assert history[-1]["actor"] == "test-manager (manager)"


def test_a_false_alarm_keeps_only_normal_bins_and_is_in_the_history(server: Server) -> None:
    lat, lon = new_place()
    report = created(server, bin_and_deposit_photo(), lat, lon)
    number = report["incident"]["id"]
    assert change(server, number, "confirmed").status_code == 201
    alarm = reviewed(server, report["id"], {"deposit": False, "boxes": [{"detection": 1}]})
    assert alarm["deposit"] is False and [b["label"] for b in alarm["boxes"]] == ["bin"]
    nothing = reviewed(server, report["id"], {"deposit": False}, who="admin")
    assert nothing["boxes"] == [] and nothing["reviewer"] == "test-admin (admin)"
    last = incident(server, number)["history"][-2:]
    assert [(h["from_status"], h["to_status"], h["comment"]) for h in last] == [
        ("confirmed", "confirmed", f"review of report #{report['id']}: no deposit (1 bin)"),
        ("confirmed", "confirmed", f"review of report #{report['id']}: no deposit"),
    ]


def test_an_incident_stays_to_review_until_every_report_sent_anyway_has_a_review(server: Server) -> None:
    lat, lon = new_place()
    one = created(server, plain_photo(next(_seed)), lat, lon, agent_says_deposit="true")
    two = created(server, plain_photo(next(_seed)), *moved(lat, lon, north_m=5.0), agent_says_deposit="true")
    number = one["incident"]["id"]
    assert two["incident"]["id"] == number
    drawn = {"deposit": True, "boxes": [{"label": "dumped_waste", "xyxy": [0, 0, 100, 100]}]}
    reviewed(server, one["id"], drawn)
    assert incident(server, number)["properties"]["to_review"] is True
    reviewed(server, two["id"], {"deposit": False})
    assert incident(server, number)["properties"]["to_review"] is False
    reports = {r["id"]: r for r in incident(server, number)["reports"]}
    assert reports[one["id"]]["review"]["boxes"][0]["detection"] is None
    assert reports[two["id"]]["review"]["deposit"] is False


# --------------------------------------------------------------------------------------------------
# Rejection


def test_rejecting_marks_the_unreviewed_photos_as_negatives(server: Server) -> None:
    lat, lon = new_place()
    first = created(server, deposit_photo(next(_seed)), lat, lon)
    second = created(server, plain_photo(next(_seed)), *moved(lat, lon, east_m=5.0), agent_says_deposit="true")
    number = first["incident"]["id"]
    kept = reviewed(server, first["id"], {"deposit": True, "boxes": [{"detection": 0}]})
    response = change(server, number, "rejected", comment="a market stall")
    assert response.status_code == 201, response.text
    assert response.json()["properties"]["to_review"] is False
    assert get(server, f"/v1/reports/{first['id']}")["review"] == kept  # a reviewed photo keeps its review
    negative = get(server, f"/v1/reports/{second['id']}")["review"]
    assert {k: negative[k] for k in ("deposit", "boxes", "source", "reviewer", "note")} == {
        "deposit": False, "boxes": [], "source": "rejection", "reviewer": "test-manager (manager)",
        "note": "a market stall",
    }
    assert incident(server, number)["history"][-1]["to_status"] == "rejected"


def test_rejecting_without_negatives_leaves_the_photos_unreviewed(server: Server) -> None:
    lat, lon = new_place()
    report = created(server, plain_photo(next(_seed)), lat, lon, agent_says_deposit="true")
    number = report["incident"]["id"]
    before = written(server)
    assert change(server, number, "rejected", negatives=False).status_code == 201
    assert written(server) == (before[0], before[1] + 1)  # the transition only
    assert get(server, f"/v1/reports/{report['id']}")["review"] is None
    assert incident(server, number)["properties"]["to_review"] is True


# --------------------------------------------------------------------------------------------------
# Bad input and roles


WIDTH, HEIGHT = PHOTO_SIZE


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        ({"deposit": True, "boxes": [{"label": "dumped_waste", "xyxy": [0, 0, WIDTH + 1, 10]}]}, 422,
         "invalid_review", "not inside the photo"),
        ({"deposit": True, "boxes": [{"label": "dumped_waste", "xyxy": [50, 10, 40, 20]}]}, 422,
         "invalid_review", "0 <= x1 < x2"),
        ({"deposit": True, "boxes": [{"label": "dumped_waste", "xyxy": [-1, 0, 10, 10]}]}, 422,
         "invalid_review", "not inside the photo"),
        ({"deposit": True, "boxes": [{"detection": 0, "xyxy": [0, 0, 10, HEIGHT + 0.5]}]}, 422,
         "invalid_review", "not inside the photo"),
        ({"deposit": True, "boxes": [{"label": "mattress", "xyxy": [0, 0, 10, 10]}]}, 422,
         "invalid_review", "unknown class 'mattress'"),
        ({"deposit": True, "boxes": [{"detection": 1}]}, 422, "invalid_review", "no box is of a deposit class"),
        ({"deposit": True, "boxes": []}, 422, "invalid_review", "no box is of a deposit class"),
        ({"deposit": False, "boxes": [{"detection": 0}]}, 422, "invalid_review", "deposit is false"),
        ({"deposit": True, "boxes": [{"detection": 2}]}, 422, "invalid_review", "has no detection 2"),
        ({"deposit": True, "boxes": [{"detection": 0}, {"detection": 0}]}, 422, "invalid_review", "kept twice"),
        ({"deposit": True, "boxes": [{"label": "dumped_waste"}]}, 422, "invalid_review", "needs its label and"),
        ({"deposit": True, "boxes": [{"detection": -1}]}, 422, None, None),
        ({"boxes": []}, 422, None, None),
        ({"deposit": True, "boxes": [{"detection": 0}], "colour": "red"}, 422, None, None),
    ],
    ids=["right-of-photo", "x2-before-x1", "negative", "kept-box-below", "unknown-class", "deposit-without-box",
         "deposit-no-boxes", "false-alarm-with-deposit", "no-such-detection", "kept-twice", "drawn-without-box",
         "negative-index", "no-deposit-field", "unknown-field"],
)
def test_a_bad_review_is_refused_with_a_message_and_writes_nothing(
    server: Server, body: dict[str, Any], status: int, code: str | None, says: str | None
) -> None:
    lat, lon = new_place()
    report = created(server, bin_and_deposit_photo(), lat, lon)
    before = written(server)
    response = review(server, report["id"], body)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["code"] == code and says in response.json()["detail"]
    assert written(server) == before
    assert get(server, f"/v1/reports/{report['id']}")["review"] is None


def test_a_nan_coordinate_is_refused(server: Server) -> None:
    lat, lon = new_place()
    report = created(server, deposit_photo(next(_seed)), lat, lon)
    before = written(server)
    raw = '{"deposit": true, "boxes": [{"label": "dumped_waste", "xyxy": [NaN, 0, 10, 10]}]}'
    response = server.client.post(f"/v1/reports/{report['id']}/review", content=raw,
                                  headers={**server.headers("manager"), "Content-Type": "application/json"})
    assert response.status_code == 422 and written(server) == before
    json.loads(response.text)  # a JSON answer whatever the stage that refused it


def test_reviewing_an_unknown_report_is_404_and_writes_nothing(server: Server) -> None:
    before = written(server)
    response = review(server, 10**9, {"deposit": False})
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert "10000000" in response.json()["detail"]
    listing = server.client.get(f"/v1/reports/{10**9}/reviews", headers=server.headers("manager"))
    assert listing.status_code == 404 and listing.json()["code"] == "not_found"
    assert written(server) == before


@pytest.mark.parametrize("who", ["agent", "camera"])
def test_agents_and_cameras_may_not_review(server: Server, who: str) -> None:
    lat, lon = new_place()
    report = created(server, deposit_photo(next(_seed)), lat, lon)
    before = written(server)
    response = review(server, report["id"], {"deposit": True, "boxes": [{"detection": 0}]}, who=who)
    assert response.status_code == 403 and response.json()["code"] == "forbidden", response.text
    assert "review" in response.json()["detail"]
    listing = server.client.get(f"/v1/reports/{report['id']}/reviews", headers=server.headers(who))
    assert listing.status_code == 403
    assert written(server) == before
    no_key = server.client.post(f"/v1/reports/{report['id']}/review", json={"deposit": False})
    assert no_key.status_code == 401 and written(server) == before
