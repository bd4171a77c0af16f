"""Uploads over HTTP with the stand-in model: what it finds, location sources, formats, grouping, idempotency, storage.

The stand-in model (conftest.py) finds ``dumped_waste`` at score 0.9 on the magenta square of a deposit
photo and ``bin`` on a cyan one, so each test knows the exact detections its photo must give.
"""

from __future__ import annotations

import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.ExifTags import IFD, Base

from tests.onnxgen import CYAN, MAGENTA, small_deposit_photo
from tests.serving.helpers import (
    DEPOSIT_BOX,
    DEPOSIT_SCORE,
    Server,
    cell_box,
    deposit_photo,
    keyed_photo,
    moved,
    phone_photo,
    plain_photo,
    server_at,
)
from vipare.detection import Detector
from vipare.imaging import load_image

# Each test works at its own place, about 1 km from the others, so incidents never mix.
METZ = (49.1193, 6.1757)


def place(n: int) -> tuple[float, float]:
    return moved(*METZ, north_m=1000.0 * n)


def found(report: dict[str, Any]) -> list[tuple[str, tuple[float, ...], bool]]:
    """(label, box, deposit) of each detection of a report, best first; every score is the stand-in's."""
    assert all(d["score"] == pytest.approx(DEPOSIT_SCORE) for d in report["detections"])
    return [(d["label"], tuple(d["box"]), d["deposit"]) for d in report["detections"]]


def test_geotagged_jpeg_shows_up_in_the_geojson_at_its_exif_coordinates(server: Server) -> None:
    lat, lon = place(1)
    response = server.upload(deposit_photo(1, lat=lat, lon=lon), note="behind the bakery")
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["verdict"]["dumping"] is True and report["verdict"]["score"] == pytest.approx(DEPOSIT_SCORE)
    assert found(report) == [("dumped_waste", DEPOSIT_BOX, True)]
    assert report["location"]["source"] == "exif"
    assert report["model"]["sha256"] == server.service.pipeline.detector.info.sha256
    assert report["incident"]["action"] == "opened"
    assert report["note"] == "behind the bakery"

    bbox = f"{lon - 0.001},{lat - 0.001},{lon + 0.001},{lat + 0.001}"
    collection = server.client.get("/v1/incidents", params={"bbox": bbox}, headers=server.headers("manager"))
    assert collection.headers["content-type"].startswith("application/geo+json")
    features = collection.json()["features"]
    assert [f["id"] for f in features] == [report["incident"]["id"]]
    got_lon, got_lat = features[0]["geometry"]["coordinates"]  # RFC 7946: lon, lat
    assert got_lat == pytest.approx(lat, abs=1e-6) and got_lon == pytest.approx(lon, abs=1e-6)


@pytest.mark.parametrize("joins", [False, True])
def test_the_upload_answers_the_report_as_it_is_read_back(server: Server, joins: bool) -> None:
    lat, lon = place(17)
    if joins:
        assert server.upload(deposit_photo(1701, lat=lat, lon=lon)).status_code == 201
    taken = None if joins else "2024-05-01T10:00:00+02:00"  # an offset, stored and answered in UTC
    answer = server.upload(deposit_photo(1702 + joins, lat=lat, lon=lon), note="by the gate", captured_at=taken)
    assert answer.status_code == 201, answer.text
    assert answer.json()["incident"]["action"] == ("joined" if joins else "opened")
    read = server.client.get(answer.json()["links"]["self"], headers=server.headers("agent"))
    assert read.json() == answer.json()


def test_a_photo_without_gps_takes_the_position_sent_with_it(server: Server) -> None:
    lat, lon = place(2)
    response = server.upload(deposit_photo(2), lat=lat, lon=lon, accuracy_m=12)
    assert response.status_code == 201, response.text
    location = response.json()["location"]
    assert location["source"] == "client"
    assert (location["lat"], location["lon"], location["accuracy_m"]) == (lat, lon, 12.0)


def test_heic_upload_works_and_is_stored_as_heic_without_gps(server: Server) -> None:
    lat, lon = place(3)
    response = server.upload(deposit_photo(3, fmt="HEIF", lat=lat, lon=lon), filename="IMG_0001.HEIC")
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["image"]["format"] == "HEIF"
    assert report["verdict"]["dumping"] is True and found(report) == [("dumped_waste", DEPOSIT_BOX, True)]
    assert report["location"]["source"] == "exif"
    image = server.client.get(report["links"]["image"], headers=server.headers("agent"))
    assert image.headers["content-type"] == "image/heic"
    assert load_image(image.content).gps is None


@pytest.mark.parametrize(("apart_m", "incidents"), [(10.0, 1), (60.0, 2)])
def test_two_photos_of_a_deposit_group_by_distance(server: Server, apart_m: float, incidents: int) -> None:
    lat, lon = place(4 if apart_m < 30 else 5)
    other = moved(lat, lon, east_m=apart_m)
    first = server.upload(deposit_photo(40, lat=lat, lon=lon)).json()
    second = server.upload(deposit_photo(41, lat=other[0], lon=other[1]), who="agent2").json()
    ids = {first["incident"]["id"], second["incident"]["id"]}
    assert len(ids) == incidents
    if incidents == 1:
        assert second["incident"]["action"] == "joined"
        detail = server.client.get(f"/v1/incidents/{first['incident']['id']}", headers=server.headers("manager"))
        body = detail.json()
        assert body["properties"]["report_count"] == 2
        assert [r["id"] for r in body["reports"]] == [first["id"], second["id"]]
        middle = moved(lat, lon, east_m=apart_m / 2)  # the incident sits at the mean of its reports
        assert body["geometry"]["coordinates"][0] == pytest.approx(middle[1], abs=1e-6)


def test_the_same_photo_from_the_same_client_counts_once(server: Server) -> None:
    lat, lon = place(6)
    photo = deposit_photo(6, lat=lat, lon=lon)
    first = server.upload(photo)
    before = server.counts()
    again = server.upload(photo)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert server.counts() == before
    incident = server.client.get(f"/v1/incidents/{first.json()['incident']['id']}", headers=server.headers("manager"))
    assert incident.json()["properties"]["report_count"] == 1
    from_someone_else = server.upload(photo, who="agent2")  # another client's report of it is its own
    assert from_someone_else.status_code == 201
    assert from_someone_else.json()["id"] != first.json()["id"]


def test_the_same_photo_is_recognised_before_its_position_or_content_is_judged(server: Server) -> None:
    """The photo is hashed beside its analysis: one already sent is answered as before, whatever the analysis says."""
    lat, lon = place(40)
    photo = deposit_photo(40, lat=lat, lon=lon)
    first = server.upload(photo)
    before = server.counts()
    again = server.upload(photo)  # its analysis started beside the hash, and is dropped
    with_a_bad_position = server.upload(photo, lat=123.0, lon=lon)  # a new photo with it is refused (422)
    assert [again.status_code, with_a_bad_position.status_code] == [200, 200]
    assert again.json()["id"] == with_a_bad_position.json()["id"] == first.json()["id"]
    assert server.upload(deposit_photo(41), lat=123.0, lon=lon).status_code == 422
    deadline = time.monotonic() + 30
    while server.service.background and time.monotonic() < deadline:  # the dropped analysis ends on its own
        time.sleep(0.05)
    assert server.service.background == set()
    assert server.counts() == before


def test_a_phone_photo_of_several_megabytes_is_read_without_a_temporary_file(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    lat, lon = place(16)
    photo = phone_photo(16, lat=lat, lon=lon)
    assert len(photo) > 2 * 1024 * 1024  # over Starlette's in-memory spool (1 MB)

    def no_file(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the upload spooled to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_file)
    response = server.upload(photo)
    assert response.status_code == 201 and response.json()["image"]["size_bytes"] == len(photo)


def test_concurrent_uploads_of_one_photo_make_one_report(server: Server) -> None:
    lat, lon = place(7)
    photo = deposit_photo(7, lat=lat, lon=lon)
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: server.upload(photo), range(4)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1


def test_stored_jpeg_has_no_gps_and_the_same_picture(server: Server) -> None:
    lat, lon = place(8)
    photo = deposit_photo(8, lat=lat, lon=lon, orientation=6)
    report = server.upload(photo).json()
    # Orientation 6 turns the stored picture 90 degrees clockwise: the square at stored x 240..320,
    # y 160..240 is upright at x 480 - 240..480 - 160, y 240..320.
    assert (report["image"]["width"], report["image"]["height"]) == (480, 640)
    assert found(report) == [("dumped_waste", (240.0, 240.0, 320.0, 320.0), True)]
    stored = server.client.get(report["links"]["image"], headers=server.headers("agent")).content
    with Image.open(io.BytesIO(stored)) as img:  # the orientation is the one tag left; the picture is not re-encoded
        assert dict(img.getexif()) == {Base.Orientation: 6} and img.getexif().get_ifd(IFD.GPSInfo) == {}
    original, kept = load_image(photo), load_image(stored)
    assert kept.gps is None and kept.info.orientation == 6
    assert np.array_equal(original.array, kept.array)
    annotated = server.client.get(report["links"]["annotated_image"], headers=server.headers("agent"))
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(annotated.content)) as drawn:
        assert drawn.size == (report["image"]["width"], report["image"]["height"])


def test_a_photo_without_a_deposit_is_a_report_without_incident(server: Server) -> None:
    lat, lon = place(9)
    response = server.upload(plain_photo(9), lat=lat, lon=lon)
    assert response.status_code == 201
    assert response.json()["verdict"]["dumping"] is False
    assert response.json()["detections"] == []
    assert response.json()["incident"] is None


def test_a_bin_is_found_but_is_no_deposit_and_opens_no_incident(server: Server) -> None:
    lat, lon = place(15)
    report = server.upload(keyed_photo(15, {(6, 4): CYAN}, lat=lat, lon=lon)).json()
    assert found(report) == [("bin", cell_box(6, 4), False)]
    assert report["verdict"] == {"dumping": False, "score": 0.0, "threshold": pytest.approx(0.35)}
    assert report["incident"] is None
    both = server.upload(keyed_photo(16, {(6, 4): CYAN, (1, 0): MAGENTA}, lat=lat, lon=lon)).json()
    assert sorted(found(both)) == [("bin", cell_box(6, 4), False), ("dumped_waste", cell_box(1, 0), True)]
    assert both["verdict"]["dumping"] is True and both["incident"]["action"] == "opened"


def test_a_camera_key_locates_frames_without_gps(server: Server) -> None:
    from serving.auth import Role, create_key
    from serving.db import write_session
    from vipare.geotag import CameraPosition

    lat, lon = place(10)
    with write_session(server.service.sessions) as session:
        _, key = create_key(session, Role.CAMERA, "cam-rue-serpenoise", CameraPosition(camera_id="x", lat=lat, lon=lon))
    response = server.client.post(
        "/v1/reports", files={"photo": ("frame.jpg", deposit_photo(10), "image/jpeg")},
        data={"camera_id": "cam-12"}, headers={"X-API-Key": key},
    )
    assert response.status_code == 201, response.text
    location = response.json()["location"]
    assert (location["source"], location["camera_id"], location["lat"]) == ("camera", "cam-12", lat)


def test_capture_time_needs_an_offset_and_unknown_fields_are_refused(server: Server) -> None:
    lat, lon = place(11)
    naive = server.upload(deposit_photo(11), lat=lat, lon=lon, captured_at="2024-05-01T09:30:00")
    assert naive.status_code == 422 and naive.json()["errors"][0]["loc"] == ["body", "captured_at"]
    typo = server.upload(deposit_photo(11), latitude=lat, longitude=lon)
    assert typo.status_code == 422
    assert {e["loc"][-1] for e in typo.json()["errors"]} == {"latitude", "longitude"}
    no_photo = server.client.post("/v1/reports", data={"lat": str(lat)}, headers=server.headers("agent"))
    assert no_photo.status_code == 422 and no_photo.json()["errors"][0]["loc"] == ["body", "photo"]


def test_capture_time_sent_with_the_photo_is_when_it_was_observed(server: Server) -> None:
    lat, lon = place(12)
    response = server.upload(deposit_photo(12), lat=lat, lon=lon, captured_at="2024-05-01T09:30:00+02:00")
    assert response.status_code == 201
    assert response.json()["observed_at"] == "2024-05-01T07:30:00Z"


def test_an_agent_reads_its_own_reports_only(server: Server) -> None:
    lat, lon = place(13)
    mine = server.upload(deposit_photo(13, lat=lat, lon=lon)).json()
    theirs = server.upload(deposit_photo(14, lat=lat, lon=lon), who="agent2").json()
    assert server.client.get(f"/v1/reports/{mine['id']}", headers=server.headers("agent")).status_code == 200
    assert server.client.get(f"/v1/reports/{theirs['id']}", headers=server.headers("agent")).status_code == 404
    assert server.client.get(f"/v1/reports/{theirs['id']}/image", headers=server.headers("agent")).status_code == 404
    listed = server.client.get("/v1/reports", headers=server.headers("agent")).json()
    assert theirs["id"] not in {r["id"] for r in listed["items"]} and mine["id"] in {r["id"] for r in listed["items"]}
    everything = server.client.get("/v1/reports", params={"limit": 1000}, headers=server.headers("manager")).json()
    assert {mine["id"], theirs["id"]} <= {r["id"] for r in everything["items"]}


def test_an_agent_s_photo_gets_the_tiled_second_look_and_a_camera_s_frame_does_not(
    tmp_path: Path, detector: Detector
) -> None:
    """With VIPARE_TILES_WHEN_EMPTY on, an agent's photo is looked at again in tiles; a camera's frame is not."""
    from serving.auth import Role, create_key
    from serving.db import write_session
    from vipare.geotag import CameraPosition

    lat, lon = place(18)
    with server_at(tmp_path, detector, tiles_when_empty=True) as server:
        agent = server.upload(small_deposit_photo(), lat=lat, lon=lon)
        assert agent.status_code == 201, agent.text
        assert agent.json()["verdict"]["dumping"] is True
        with write_session(server.service.sessions) as session:
            _, key = create_key(session, Role.CAMERA, "cam-tiles", CameraPosition(camera_id="cam-t", lat=lat, lon=lon))
        frame = server.client.post("/v1/reports", headers={"X-API-Key": key},
                                   files={"photo": ("frame.png", small_deposit_photo(1), "image/png")})
        assert frame.status_code == 201, frame.text
        assert frame.json()["verdict"]["dumping"] is False and frame.json()["detections"] == []
