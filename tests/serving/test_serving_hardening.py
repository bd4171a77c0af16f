"""The outside probe's findings about the service, each answered: drawings cached, a full or read-only disk,
who may name a camera, text fields, form fields, merges, and one JSON shape for every error."""

from __future__ import annotations

import errno
import io
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from serving.cli import keys
from serving.forms import invalid_field
from serving.photos import anonymise as anonymising
from serving.photos import store as photo_store
from serving.photos.annotated import ANNOTATED_CACHE
from serving.reports import upload as upload_module
from serving.routes import reports as report_routes
from tests.imagegen import make_png_bomb
from tests.serving.helpers import Server, deposit_photo, moved
from vipare.privacy import Region

BASE = (43.2965, 5.3698)  # Marseille: this module's places, away from the other modules'


def _place(index: int) -> tuple[float, float]:
    return moved(*BASE, north_m=500.0 * index)


# --------------------------------------------------------------------------------------------------
# The annotated photo is drawn once


def test_the_annotated_photo_is_drawn_once_then_read_from_the_cache(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    lat, lon = _place(1)
    report = server.upload(deposit_photo(9101, lat=lat, lon=lon)).json()
    drawn: list[Path] = []
    render = report_routes.render_annotated

    def counting(path: Path, *args: Any, **kwargs: Any) -> bytes:
        drawn.append(path)
        return render(path, *args, **kwargs)

    monkeypatch.setattr(report_routes, "render_annotated", counting)
    url, headers = report["links"]["annotated_image"], server.headers("agent")
    first = server.client.get(url, headers=headers)
    second = server.client.get(url, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content and len(drawn) == 1
    cached = list((server.data_dir / ANNOTATED_CACHE / report["image"]["sha256"][:2]).rglob("*.jpg"))
    assert len(cached) == 1

    # The stored file rewritten (re-encoded, blurred again): drawn again from the new file.
    stored = drawn[0]
    tmp = stored.with_name(".rewrite")
    tmp.write_bytes(stored.read_bytes())
    os.replace(tmp, stored)
    assert server.client.get(url, headers=headers).status_code == 200
    assert len(drawn) == 2


# --------------------------------------------------------------------------------------------------
# A full or read-only disk


class _FullDisk(io.BufferedIOBase):
    """A file whose writes fail as on a full disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")  # the temporary file exists, as a real one would

    def write(self, _data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def _sqlite_error(message: str) -> OperationalError:
    return OperationalError("INSERT INTO reports ...", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(
    ("seed", "failure", "status", "code"),
    [
        (9201, "photo write: disk full", 507, "storage_full"),
        (9202, "photo folder read-only", 503, "storage_read_only"),
        (9203, "database full", 507, "storage_full"),
        (9204, "database read-only", 503, "storage_read_only"),
    ],
)
def test_a_full_or_read_only_disk_is_answered_in_json_with_nothing_kept(
    server: Server, monkeypatch: pytest.MonkeyPatch, seed: int, failure: str, status: int, code: str
) -> None:
    if failure == "photo write: disk full":
        monkeypatch.setattr(photo_store, "open", lambda path, _mode: _FullDisk(Path(path)), raising=False)
    elif failure == "photo folder read-only":

        def read_only(path: Any, _mode: str) -> Any:
            raise OSError(errno.EROFS, "Read-only file system", str(path))

        monkeypatch.setattr(photo_store, "open", read_only, raising=False)
    else:
        message = "database or disk is full" if failure == "database full" else "attempt to write a readonly database"

        def failing(*_args: Any, **_kwargs: Any) -> Any:
            raise _sqlite_error(message)

        monkeypatch.setattr(upload_module, "store_report", failing)
    before = server.counts()
    lat, lon = _place(2)
    response = server.upload(deposit_photo(seed, lat=lat, lon=lon))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and "nothing was stored" in body["detail"] and "administrator" in body["detail"]
    assert server.counts() == before  # no row, no photo file, no temporary file
    monkeypatch.undo()
    assert server.upload(deposit_photo(seed, lat=lat, lon=lon)).status_code == 201


def test_a_refused_upload_keeps_the_file_of_an_earlier_report_of_the_same_photo(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blurred with other regions (a promoted model), the same photo gives other bytes under the same name:
    the refused upload, blurring before its answer, rewrites the file, and must not then delete it."""
    lat, lon = _place(3)
    photo = deposit_photo(9311, lat=lat, lon=lon)
    first = server.upload(photo)
    assert first.status_code == 201, first.text
    blur = anonymising.anonymise

    def blurred_otherwise(data: bytes, regions: list[Region], **limits: Any) -> bytes:
        return blur(data, [*regions, Region("face", (0.0, 0.0, 16.0, 16.0), 0.9)], **limits)

    def database_full(*_args: Any, **_kwargs: Any) -> Any:
        raise _sqlite_error("database or disk is full")

    monkeypatch.setattr(anonymising, "anonymise", blurred_otherwise)
    monkeypatch.setattr(upload_module, "MAX_IN_FLIGHT", 0)  # blurred before the answer, over the first's file
    monkeypatch.setattr(upload_module, "store_report", database_full)
    refused = server.upload(photo, who="agent2")
    assert refused.status_code == 507, refused.text
    monkeypatch.undo()
    image = server.client.get(first.json()["links"]["image"], headers=server.headers("agent"))
    assert image.status_code == 200, image.text


def test_an_unexpected_error_is_a_json_500(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(report_routes, "load_report", broken)
    client = TestClient(server.app, raise_server_exceptions=False)  # the running app, without a second lifespan
    response = client.get("/v1/reports/1", headers=server.headers("agent"))
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "internal_error" and "X-Request-ID" in response.json()["detail"]


def test_a_read_only_database_outside_uploads_is_a_json_503(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*_args: Any, **_kwargs: Any) -> Any:
        raise _sqlite_error("attempt to write a readonly database")

    monkeypatch.setattr(report_routes, "load_report", read_only)
    client = TestClient(server.app, raise_server_exceptions=False)
    response = client.get("/v1/reports/1", headers=server.headers("agent"))
    assert response.status_code == 503 and response.json()["code"] == "storage_read_only"


# --------------------------------------------------------------------------------------------------
# One JSON shape for every error


def test_every_error_has_the_one_shape_and_its_code(server: Server) -> None:
    client, manager, agent = server.client, server.headers("manager"), server.headers("agent")
    no_boundary = {**agent, "Content-Type": "multipart/form-data"}
    lat, lon = _place(3)
    cases = [
        ("no key", client.get("/v1/incidents"), 401, "unauthenticated"),
        ("wrong role", client.get("/v1/incidents", headers=agent), 403, "forbidden"),
        ("no such report", client.get("/v1/reports/999999", headers=manager), 404, "not_found"),
        ("unknown path", client.get("/v1/nothing-here", headers=manager), 404, "not_found"),
        ("wrong method", client.put("/v1/incidents", headers=manager), 405, "method_not_allowed"),
        ("bad query", client.get("/v1/reports?limit=-1", headers=manager), 422, "invalid_request"),
        ("bad JSON body", client.post("/v1/incidents/1/transitions", json={"to": "gone"}, headers=manager), 422,
         "invalid_request"),
        ("not JSON", client.post("/v1/incidents/1/transitions", content=b"{", headers={**manager,
         "Content-Type": "application/json"}), 422, "invalid_request"),
        ("form field", server.upload(deposit_photo(9301, lat=lat, lon=lon), captured_at="yesterday"), 422,
         "invalid_request"),
        ("no photo", client.post("/v1/reports", data={"lat": "1"}, headers=agent), 422, "invalid_request"),
        ("multipart without boundary", client.post("/v1/reports", content=b"x", headers=no_boundary), 400,
         "bad_request"),
        ("PNG too large to decode", server.upload(make_png_bomb(10000, 10000, mode="L"), filename="big.png"), 413,
         "image_too_large"),
    ]
    for name, response, status, code in cases:
        assert response.status_code == status, (name, response.text)
        body = response.json()
        assert set(body) <= {"detail", "code", "errors"} and isinstance(body["detail"], str), (name, body)
        assert body["code"] == code, (name, body)
        assert len(body["detail"]) > 20, (name, body)
    invalid = client.get("/v1/reports?limit=-1", headers=manager).json()
    assert invalid["errors"][0]["loc"] == ["query", "limit"] and "limit" in invalid["detail"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["HTTPValidationError"]
    assert {"detail", "code", "errors"} <= set(schema["properties"])


# --------------------------------------------------------------------------------------------------
# Who may name a camera


def test_only_camera_keys_may_name_a_camera(server: Server) -> None:
    lat, lon = _place(4)
    before = server.counts()
    refused = server.upload(deposit_photo(9401, lat=lat, lon=lon), who="agent", camera_id="cam-12")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert "Only camera keys may name a camera" in refused.json()["detail"]
    assert server.counts() == before
    taken = server.upload(deposit_photo(9402, lat=lat, lon=lon), who="camera", camera_id="cam-12")
    assert taken.status_code == 201 and taken.json()["camera_id"] == "cam-12"

    admin = server.headers("admin")
    assert server.client.post("/v1/cameras", json={"id": "cam-hardening", "lat": lat, "lon": lon},
                              headers=admin).status_code == 201
    tied = server.client.post("/v1/keys", json={"role": "camera", "name": "cam-hardening key",
                                                "camera_id": "cam-hardening"}, headers=admin)
    assert tied.status_code == 201, tied.text
    other = server.client.post(
        "/v1/reports", files={"photo": ("f.jpg", deposit_photo(9403, lat=lat, lon=lon))},
        data={"camera_id": "cam-12"}, headers={"Authorization": f"Bearer {tied.json()['key']}"},
    )
    assert other.status_code == 403 and "belongs to camera 'cam-hardening'" in other.json()["detail"]


# --------------------------------------------------------------------------------------------------
# Text fields and form fields


def _multipart(fields: list[tuple[str, bytes]], photo: bytes) -> tuple[bytes, str]:
    boundary = "vipare-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in fields
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode() + photo + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_notes_lose_control_and_direction_characters(server: Server) -> None:
    lat, lon = _place(5)
    note = "sacs\x00 devant\r\nle n\u00b0 12\u202e\u2066 \u0644\u0627\ttab\x1b[31m"
    response = server.upload(deposit_photo(9501, lat=lat, lon=lon), note=note)
    assert response.status_code == 201, response.text
    assert response.json()["note"] == "sacs devant\nle n\u00b0 12 \u0644\u0627\ttab[31m"


@pytest.mark.parametrize("name", ["ops\u202egnp.exe", "a\x00b", "two\nlines", "tab\there", "mark\u200f"])
def test_key_names_with_control_or_direction_characters_are_refused(server: Server, name: str) -> None:
    response = server.client.post("/v1/keys", json={"role": "agent", "name": name}, headers=server.headers("admin"))
    body = response.json()
    assert response.status_code == 422 and body["code"] == "invalid_request"
    assert body["errors"][0]["loc"] == ["body", "name"] and "invisible character" in body["detail"]


def test_a_transition_comment_loses_control_characters(server: Server) -> None:
    lat, lon = _place(6)
    incident = server.upload(deposit_photo(9601, lat=lat, lon=lon)).json()["incident"]["id"]
    response = server.client.post(
        f"/v1/incidents/{incident}/transitions", json={"to": "confirmed", "comment": "vu\x00 \u202bici\u202c"},
        headers=server.headers("manager"),
    )
    assert response.status_code == 201 and response.json()["history"][-1]["comment"] == "vu ici"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (invalid_field("tz", "Unknown zone."), ("value_error", ("body", "tz"), "Unknown zone.", None)),
        (invalid_field("note", "Not text.", kind="string_type"), ("string_type", ("body", "note"), "Not text.", None)),
        (invalid_field("bbox", "Four numbers.", where="query", value="1,2"), ("value_error", ("query", "bbox"),
                                                                            "Four numbers.", "1,2")),
    ],
)
def test_one_field_error_has_the_shape_of_fastapis_own(error: Any, expected: tuple[Any, ...]) -> None:
    kind, loc, msg, value = expected
    assert error.errors() == [{"type": kind, "loc": loc, "msg": msg, "input": value}]


def test_invalid_utf8_in_a_form_field_is_refused(server: Server) -> None:
    lat, lon = _place(7)
    before = server.counts()
    body, content_type = _multipart([("note", "d\u00e9p\u00f4t".encode("latin-1"))],
                                    deposit_photo(9701, lat=lat, lon=lon))
    response = server.client.post("/v1/reports", content=body,
                                  headers={**server.headers("agent"), "Content-Type": content_type})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    assert response.json()["errors"][0]["loc"] == ["body", "note"] and "UTF-8" in response.json()["detail"]
    assert server.counts() == before
    body, content_type = _multipart([("note", "d\u00e9p\u00f4t".encode())], deposit_photo(9701, lat=lat, lon=lon))
    taken = server.client.post("/v1/reports", content=body,
                               headers={**server.headers("agent"), "Content-Type": content_type})
    assert taken.status_code == 201 and taken.json()["note"] == "d\u00e9p\u00f4t"


def test_a_repeated_form_field_is_refused(server: Server) -> None:
    lat, lon = _place(8)
    before = server.counts()
    body, content_type = _multipart([("lat", str(lat).encode()), ("lat", b"0.5"), ("lon", str(lon).encode())],
                                    deposit_photo(9801))
    response = server.client.post("/v1/reports", content=body,
                                  headers={**server.headers("agent"), "Content-Type": content_type})
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "lat"]
    assert "more than once" in response.json()["detail"]
    assert server.counts() == before
    batch = server.client.post(
        "/v1/batches", files=[("frames", ("a.jpg", deposit_photo(9802, lat=lat, lon=lon)))],
        data={"tz": ["UTC", "Europe/Paris"]}, headers=server.headers("camera"),
    )
    assert batch.status_code == 422 and batch.json()["errors"][0]["loc"] == ["body", "tz"]


# --------------------------------------------------------------------------------------------------
# Merges: into an open incident, nearby


def _transition(server: Server, incident: int, to: str, **body: Any) -> Any:
    return server.client.post(f"/v1/incidents/{incident}/transitions", json={"to": to, **body},
                              headers=server.headers("manager"))


def _open_ids(server: Server) -> set[int]:
    query = "/v1/incidents?status=new&status=confirmed&status=scheduled&limit=1000"
    return {f["id"] for f in server.client.get(query, headers=server.headers("manager")).json()["features"]}


@pytest.mark.parametrize("closed", ["cleaned", "rejected"])
def test_a_merge_into_a_closed_incident_is_refused_and_the_deposit_stays_open(server: Server, closed: str) -> None:
    lat, lon = _place(10 if closed == "cleaned" else 11)
    target = server.upload(deposit_photo(10_001 + len(closed), lat=lat, lon=lon)).json()["incident"]["id"]
    assert _transition(server, target, closed).status_code == 201
    source = server.upload(deposit_photo(10_101 + len(closed), lat=lat, lon=lon)).json()["incident"]["id"]
    assert source != target and source in _open_ids(server)
    refused = _transition(server, source, "duplicate", merged_into=target, force=True)
    assert refused.status_code == 409 and refused.json()["code"] == "merge_target_closed"
    assert f"#{target} is {closed}" in refused.json()["detail"]
    assert source in _open_ids(server)


def test_a_far_merge_needs_force_and_is_recorded(server: Server) -> None:
    lat, lon = _place(12)
    target = server.upload(deposit_photo(10_201, lat=lat, lon=lon)).json()["incident"]["id"]
    near_lat, near_lon = moved(lat, lon, east_m=80.0)
    near = server.upload(deposit_photo(10_202, lat=near_lat, lon=near_lon))
    assert _transition(server, near.json()["incident"]["id"], "duplicate", merged_into=target).status_code == 201
    far_lat, far_lon = moved(lat, lon, north_m=67_000.0)
    far = server.upload(deposit_photo(10_203, lat=far_lat, lon=far_lon)).json()["incident"]["id"]
    refused = _transition(server, far, "duplicate", merged_into=target)
    assert refused.status_code == 409 and refused.json()["code"] == "merge_too_far"
    assert "67.0 km" in refused.json()["detail"] and "force" in refused.json()["detail"]
    assert far in _open_ids(server)
    forced = _transition(server, far, "duplicate", merged_into=target, force=True, comment="same truck, two stops")
    assert forced.status_code == 201
    assert forced.json()["history"][-1]["comment"] == (
        "same truck, two stops; merged 67.0 km away, over the 100 m limit (forced)"
    )


def test_the_cli_refuses_the_same_key_names(tmp_path: Path) -> None:
    refused = CliRunner().invoke(keys, ["create", "--role", "agent", "--name", "ops\u202egnp", "--data-dir",
                                        str(tmp_path)])
    assert refused.exit_code == 2 and "U+202E" in refused.output
