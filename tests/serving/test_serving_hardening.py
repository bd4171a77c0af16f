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
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from serving.photos import store as photo_store
from serving.photos.annotated import ANNOTATED_CACHE
from serving.reports import upload as upload_module
from serving.routes import reports as report_routes
from tests.imagegen import make_png_bomb
from tests.serving.helpers import Server, deposit_photo, moved

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
