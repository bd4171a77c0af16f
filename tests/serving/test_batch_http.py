"""The camera registry over HTTP, camera keys tied to a camera, and ``POST /v1/batches`` with partial failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx2

from serving.batch.job import BatchConfig, run_batch
from serving.batch.progress import Reporter
from serving.config import ServiceSettings
from tests.imagegen import make_photo
from tests.serving.helpers import Server, bearer, deposit_photo, moved, plain_photo, server_at
from vipare.detection import Detector

METZ = (49.1193, 6.1757)


def place(n: int) -> tuple[float, float]:
    return moved(*METZ, north_m=1000.0 * n)


def _camera(server: Server, camera_id: str, n: int) -> dict[str, object]:
    lat, lon = place(n)
    body = {"id": camera_id, "lat": lat, "lon": lon, "accuracy_m": 3, "heading_deg": 270, "description": "bins"}
    response = server.client.post("/v1/cameras", json=body, headers=server.headers("manager"))
    assert response.status_code == 201, response.text
    return dict(response.json())


def _tied_key(server: Server, camera_id: str) -> str:
    response = server.client.post("/v1/keys", json={"role": "camera", "name": f"key of {camera_id}",
                                                    "camera_id": camera_id}, headers=server.headers("admin"))
    assert response.status_code == 201, response.text
    assert response.json()["camera_id"] == camera_id
    return str(response.json()["key"])


def _send(server: Server, key: str, frames: list[tuple[str, bytes]], **fields: str) -> httpx2.Response:
    return server.client.post(
        "/v1/batches", files=[("frames", (name, data, "image/jpeg")) for name, data in frames], data=fields,
        headers=bearer(key),
    )


def test_managers_and_admins_keep_the_camera_registry(server: Server) -> None:
    created = _camera(server, "cam-reg", 1)
    assert created["heading_deg"] == 270.0 and created["description"] == "bins"
    again = server.client.post("/v1/cameras", json={"id": "cam-reg"}, headers=server.headers("admin"))
    assert again.status_code == 409 and again.json()["code"] == "camera_exists"

    moved_ = server.client.put("/v1/cameras/cam-reg", json={"lat": 49.5, "lon": 6.5}, headers=server.headers("admin"))
    assert moved_.status_code == 200 and moved_.json()["heading_deg"] is None  # PUT replaces every field
    mobile = server.client.put("/v1/cameras/truck-9", json={"description": "sweeper"},
                               headers=server.headers("manager"))
    assert mobile.status_code == 201 and mobile.json()["lat"] is None

    listed = server.client.get("/v1/cameras", headers=server.headers("manager")).json()
    assert [c["id"] for c in listed] == sorted(c["id"] for c in listed) and {"cam-reg", "truck-9"} <= {
        c["id"] for c in listed
    }
    assert server.client.get("/v1/cameras/cam-reg", headers=server.headers("manager")).json()["lat"] == 49.5
    assert server.client.get("/v1/cameras/nope", headers=server.headers("manager")).status_code == 404

    for who in ("agent", "camera"):
        assert server.client.get("/v1/cameras", headers=server.headers(who)).status_code == 403
    bad = [
        {"id": "cam reg"},
        {"id": "cam-x", "lat": 49.1},
        {"id": "cam-x", "lat": 91, "lon": 6},
        {"id": "cam-x", "heading_deg": 360},
        {"id": "cam-x", "colour": "red"},
    ]
    for body in bad:
        response = server.client.post("/v1/cameras", json=body, headers=server.headers("manager"))
        assert response.status_code == 422, body
    unknown = server.client.post("/v1/keys", json={"role": "camera", "name": "k", "camera_id": "cam-nope"},
                                 headers=server.headers("admin"))
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_camera"
    agent = server.client.post("/v1/keys", json={"role": "agent", "name": "k", "camera_id": "cam-reg"},
                               headers=server.headers("admin"))
    assert agent.status_code == 422


def test_a_key_tied_to_a_camera_reports_as_that_camera_at_its_registered_position(server: Server) -> None:
    camera = _camera(server, "cam-tied", 2)
    key = _tied_key(server, "cam-tied")
    response = server.client.post("/v1/reports", files={"photo": ("f.jpg", deposit_photo(20), "image/jpeg")},
                                  headers=bearer(key))
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["camera_id"] == "cam-tied"
    assert report["location"]["source"] == "camera" and report["location"]["camera_id"] == "cam-tied"
    assert (report["location"]["lat"], report["location"]["lon"]) == (camera["lat"], camera["lon"])
    keys = server.client.get("/v1/keys", headers=server.headers("admin")).json()
    assert [k["camera_id"] for k in keys if k["name"] == "key of cam-tied"] == ["cam-tied"]


def test_a_batch_answers_each_frame_and_partial_failures_do_not_sink_it(server: Server) -> None:
    lat, lon = place(3)
    good = deposit_photo(30, lat=lat, lon=lon)
    frames = [
        ("cam_20240501_093000.jpg", good),
        ("cut.jpg", good[: len(good) // 3]),
        ("notes.jpg", b"not a photo at all"),
        ("again.jpg", good),
        ("nowhere.jpg", plain_photo(31)),  # no GPS, and the camera key has no position
        ("empty.jpg", b""),
    ]
    response = _send(server, server.keys["camera"], frames)
    assert response.status_code == 200, response.text
    body = response.json()
    statuses = [(f["index"], f["filename"], f["status"], f["code"]) for f in body["frames"]]
    assert statuses[1:3] == [(1, "cut.jpg", 422, "corrupt_image"), (2, "notes.jpg", 415, "unsupported_image")]
    assert statuses[4:] == [(4, "nowhere.jpg", 422, "location_missing"), (5, "empty.jpg", 422, "empty_image")]
    assert sorted(s[2] for s in (statuses[0], statuses[3])) == [200, 201]  # one report, answered twice
    first, twin = body["frames"][0], body["frames"][3]
    assert first["report"]["id"] == twin["report"]["id"] and first["report"]["location"]["source"] == "exif"
    assert all(f["detail"] for f in body["frames"] if f["status"] >= 400)
    assert (body["created"], body["duplicates"], body["failed"]) == (1, 1, 4)


def test_a_batch_takes_positions_from_the_manifest_and_times_from_file_names(server: Server) -> None:
    camera_key = _tied_key(server, str(_camera(server, "cam-man", 4)["id"]))
    lat, lon = place(5)
    frames = [("vehicle.jpg", deposit_photo(40)), ("cam_2024-05-01T09-30-00.jpg", deposit_photo(41))]
    manifest = [{"lat": lat, "lon": lon, "accuracy_m": 5, "captured_at": "2024-05-01T08:00:00+02:00"}, {}]
    response = _send(server, camera_key, frames, manifest=json.dumps(manifest), tz="Europe/Paris")
    body = response.json()
    assert [f["status"] for f in body["frames"]] == [201, 201], body
    vehicle, fixed = (f["report"] for f in body["frames"])
    assert vehicle["location"]["source"] == "client" and vehicle["location"]["lat"] == lat
    assert vehicle["observed_at"].startswith("2024-05-01T06:00:00")
    assert fixed["location"]["source"] == "camera" and fixed["camera_id"] == "cam-man"
    assert fixed["observed_at"].startswith("2024-05-01T07:30:00")  # 09:30 in Paris

    for fields, problem in (
        ({"manifest": "[{}]"}, "1 entries for 2 frames"),
        ({"manifest": "{"}, "JSON list"),
        ({"manifest": '[{"lat": "north"}, {}]'}, "JSON list"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"note": "hello"}, "Unknown field"),
    ):
        refused = _send(server, camera_key, frames, **fields)
        assert refused.status_code == 422 and problem in refused.text, refused.text
    assert _send(server, server.keys["agent"], frames).status_code == 403
    no_frames = server.client.post("/v1/batches", data={"tz": "UTC"}, headers=bearer(camera_key))
    assert no_frames.status_code == 422


def test_a_batch_over_the_upload_limit_is_refused_whole(tmp_path: Path, detector: Detector) -> None:
    with server_at(tmp_path, detector, max_image_bytes=150_000, max_batch_frames=3) as small:
        photo = make_photo("JPEG", (448, 336), pattern="noise")  # noise: a large file from a small picture
        assert len(photo) < 150_000 and 3 * len(photo) > 150_000 + 64 * 1024
        response = _send(small, small.keys["camera"], [(f"{n}.jpg", photo) for n in range(3)])
        assert response.status_code == 413 and response.json()["code"] == "image_too_large"
        assert "fewer frames" in response.json()["detail"]
        too_many = _send(small, small.keys["camera"], [(f"{n}.jpg", b"x") for n in range(4)])
        assert too_many.status_code == 400
        assert small.counts() == (0, 0, 0)


def test_a_frame_pushed_by_a_tied_key_counts_once_with_a_batch_job(
    server: Server, tmp_path: Path, stand_in_model: Path
) -> None:
    _camera(server, "cam-both", 6)
    key = _tied_key(server, "cam-both")
    pushed = deposit_photo(60)
    assert _send(server, key, [("a.jpg", pushed)]).json()["created"] == 1
    folder = tmp_path / "frames" / "cam-both"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(pushed)
    (folder / "b.jpg").write_bytes(deposit_photo(61))
    settings = ServiceSettings(data_dir=server.data_dir, model_path=stand_in_model, intra_op_threads=1)
    summary = run_batch(BatchConfig(source=str(tmp_path / "frames"), workers=0), settings, Reporter(live=False))
    assert (summary.skipped, summary.written, summary.errors) == (1, 1, {})
    reports = server.client.get("/v1/reports", headers=server.headers("manager")).json()["items"]
    both = [r for r in reports if r["camera_id"] == "cam-both"]
    assert len(both) == 2 and {r["submitted_by"] for r in both} == {"key of cam-both", "vipare batch"}
    assert len({r["incident"]["id"] for r in both}) == 1  # the same deposit, the same incident
    assert all(datetime.fromisoformat(r["received_at"]) <= datetime.now(UTC) for r in both)
