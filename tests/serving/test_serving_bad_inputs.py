"""The core issue's bad-input table, over HTTP: each gets its 4xx and a message; nothing is written;
the server keeps serving. Malformed EXIF GPS counts as no GPS: with lat/lon the upload succeeds."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from PIL.ExifTags import GPS
from PIL.TiffImagePlugin import IFDRational

from tests.imagegen import make_png_bomb, truncate
from tests.serving.helpers import Server, deposit_photo, moved, server_at
from vipare.detection import Detector

MAX_IMAGE_BYTES = 2 * 1024 * 1024
HERE = (48.8566, 2.3522)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, detector: Detector) -> Iterator[Server]:
    """This module's app accepts photos up to 2 MiB, so that going over the limit is cheap to test."""
    with server_at(tmp_path_factory.mktemp("data"), detector, max_image_bytes=MAX_IMAGE_BYTES) as running_server:
        yield running_server


def _bad_gps(seed: int, raw: dict[int, Any]) -> bytes:
    lat, lon = moved(*HERE, north_m=100.0 * seed)
    return deposit_photo(seed, lat=lat, lon=lon, raw_gps=raw)


ZERO_DENOMINATOR: dict[int, Any] = {GPS.GPSLatitude: (IFDRational(48, 0), IFDRational(51, 1), IFDRational(24, 1))}
LATITUDE_91: dict[int, Any] = {GPS.GPSLatitude: (IFDRational(91, 1), IFDRational(0, 1), IFDRational(0, 1))}
NULL_ISLAND: dict[int, Any] = {
    GPS.GPSLatitude: (IFDRational(0, 1), IFDRational(0, 1), IFDRational(0, 1)),
    GPS.GPSLongitude: (IFDRational(0, 1), IFDRational(0, 1), IFDRational(0, 1)),
}

# (case, file, file name, form fields, expected status, expected code or location source)
CASES: list[tuple[str, bytes, str, dict[str, Any], int, str]] = [
    ("empty file", b"", "empty.jpg", {}, 422, "empty_image"),
    ("truncated JPEG", truncate(deposit_photo(1, lat=HERE[0], lon=HERE[1])), "cut.jpg", {}, 422, "corrupt_image"),
    ("text named .jpg", b"this is a shopping list, not a photo\n" * 20, "list.jpg", {}, 415, "unsupported_image"),
    ("PNG bomb 30000 x 30000", make_png_bomb(), "bomb.png", {}, 413, "image_too_large"),
    ("HEIC named .jpg", deposit_photo(2, fmt="HEIF", lat=HERE[0], lon=HERE[1]), "photo.jpg", {}, 201, "exif"),
    ("GPS zero denominator", _bad_gps(3, ZERO_DENOMINATOR), "a.jpg", {}, 422, "location_missing"),
    ("GPS latitude 91", _bad_gps(4, LATITUDE_91), "b.jpg", {}, 422, "location_missing"),
    ("GPS 0/0", _bad_gps(5, NULL_ISLAND), "c.jpg", {}, 422, "location_missing"),
    ("GPS zero denominator + lat/lon", _bad_gps(6, ZERO_DENOMINATOR), "d.jpg", {"lat": 48.85, "lon": 2.35}, 201,
     "client"),
    ("GPS latitude 91 + lat/lon", _bad_gps(7, LATITUDE_91), "e.jpg", {"lat": 48.85, "lon": 2.36}, 201, "client"),
    ("GPS 0/0 + lat/lon", _bad_gps(8, NULL_ISLAND), "f.jpg", {"lat": 48.85, "lon": 2.37}, 201, "client"),
    ("lat 91 sent", deposit_photo(9), "g.jpg", {"lat": 91, "lon": 2.35}, 422, "invalid_location"),
    ("lat without lon", deposit_photo(10), "h.jpg", {"lat": 48.85}, 422, "invalid_location"),
    ("position 0, 0 sent", deposit_photo(11), "i.jpg", {"lat": 0, "lon": 0}, 422, "invalid_location"),
    ("photo over the byte limit", b"\xff\xd8\xff" + bytes(MAX_IMAGE_BYTES), "big.jpg", {}, 413, "image_too_large"),
    ("body over the upload limit", bytes(MAX_IMAGE_BYTES + 100_000), "bigger.jpg", {}, 413, "image_too_large"),
]


@pytest.mark.parametrize(("file", "name", "fields", "status", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gets_its_answer_and_writes_nothing(
    server: Server, file: bytes, name: str, fields: dict[str, Any], status: int, expected: str
) -> None:
    before = server.counts()
    response = server.upload(file, filename=name, **fields)
    assert response.status_code == status, response.text
    body = response.json()
    if status == 201:
        assert body["location"]["source"] == expected
        assert server.counts()[0] == before[0] + 1
    else:
        assert body["code"] == expected
        assert len(body["detail"]) > 20  # a sentence that says what to do, not a bare status
        assert server.counts() == before  # no row, no file
    assert server.client.get("/healthz").status_code == 200


def test_no_location_says_how_to_send_one(server: Server) -> None:
    response = server.upload(deposit_photo(20))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "lat" in detail and "lon" in detail and "navigator.geolocation" in detail


def test_the_server_keeps_serving_after_the_table(server: Server) -> None:
    lat, lon = moved(*HERE, north_m=5000)
    assert server.upload(deposit_photo(21, lat=lat, lon=lon)).status_code == 201


def test_the_body_limit_is_enforced_while_the_body_streams_in(server: Server) -> None:
    """Drive the ASGI app with a chunked body (no Content-Length) and count the chunks it pulls."""
    chunk = 64 * 1024
    total_chunks = 3 * MAX_IMAGE_BYTES // chunk
    pulled = 0
    boundary = "vipare-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        body = head if pulled == 1 else bytes(chunk)
        return {"type": "http.request", "body": body, "more_body": pulled < total_chunks}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/reports", "raw_path": b"/v1/reports", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                    (b"transfer-encoding", b"chunked"), (b"authorization", f"Bearer {server.keys['agent']}".encode())],
        "client": ("127.0.0.1", 1234), "server": ("testserver", 80), "state": {},
    }
    before = server.counts()

    async def drive() -> None:
        await server.app(scope, receive, send)

    portal = server.client.portal  # runs drive() on the app's event loop
    assert portal is not None
    portal.call(drive)
    assert status == [413]
    assert pulled <= MAX_IMAGE_BYTES // chunk + 3  # stopped at the limit, not after the whole body
    assert pulled < total_chunks
    assert server.counts() == before


def test_json_bodies_are_limited_too(server: Server) -> None:
    huge = {"to": "confirmed", "comment": "x" * 100_000}
    declared = server.client.post("/v1/incidents/1/transitions", json=huge, headers=server.headers("manager"))
    assert declared.status_code == 413 and declared.json()["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"to": "confirmed", "comment": "'
        yield b"x" * 100_000
        yield b'"}'

    streamed = server.client.post("/v1/keys", content=chunks(), headers={**server.headers("admin"),
                                                                         "content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["code"] == "body_too_large"


def test_out_of_range_values_are_refused_not_crashing(server: Server) -> None:
    manager, huge = server.headers("manager"), str(2**31)  # beyond PostgreSQL's integer columns
    assert server.client.get(f"/v1/incidents/{2**31 - 1}", headers=manager).status_code == 404
    assert server.client.get("/v1/originals/reads", params={"report_id": huge},
                             headers=server.headers("privacy_officer")).status_code == 422
    assert server.client.get(f"/v1/incidents/{huge}", headers=manager).status_code == 422
    assert server.client.get(f"/v1/reports/{huge}/image", headers=manager).status_code == 422
    assert server.client.get("/v1/reports", params={"offset": 10**12}, headers=manager).status_code == 422
    assert server.client.get("/v1/incidents", params={"since": "0001-01-01T00:00:00+01:00"},
                             headers=manager).status_code == 422
    merge = server.client.post("/v1/incidents/1/transitions", json={"to": "duplicate", "merged_into": 2**31},
                               headers=manager)
    assert merge.status_code == 422
    assert server.client.get("/open311/v2/requests.json", params={"service_request_id": huge},
                             headers=manager).status_code == 400
    lat, lon = moved(*HERE, north_m=7000)
    old = server.upload(deposit_photo(30), lat=lat, lon=lon, captured_at="0001-01-01T00:00:00+14:00")
    assert old.status_code == 422 and old.json()["errors"][0]["loc"] == ["body", "captured_at"]
