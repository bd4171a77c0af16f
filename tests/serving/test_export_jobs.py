"""Export jobs: a national export written to a file in the background, then downloaded."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from serving.export_jobs import ExportJobs
from serving.models import utcnow
from tests.serving.helpers import Server, deposit_photo, moved

BREST = (48.3904, -4.4861)
BOX = f"{BREST[1] - 0.05},{BREST[0] - 0.05},{BREST[1] + 0.05},{BREST[0] + 0.05}"


@pytest.fixture(scope="module")
def three(server: Server) -> list[int]:
    """Three incidents at Brest, one with a note."""
    ids = []
    for k in range(3):
        lat, lon = moved(*BREST, east_m=200.0 * k)
        ids.append(server.upload(deposit_photo(40 + k, lat=lat, lon=lon), note="Sac" if k == 1 else None)
                   .json()["incident"]["id"])
    return ids


def _done(server: Server, started: Any, who: str = "manager") -> dict[str, Any]:
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == job["status_url"] == f"/v1/exports/jobs/{job['id']}"
    deadline = time.monotonic() + 60
    while job["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
        job = server.client.get(job["status_url"], headers=server.headers(who)).json()
    return job


def test_a_csv_job_writes_the_file_the_stream_gives(server: Server, three: list[int]) -> None:
    params = {"bbox": BOX, "excel": "fr"}
    job = _done(server, server.client.post("/v1/exports/jobs", params=params, headers=server.headers("manager")))
    assert job["status"] == "done" and job["incidents"] == 3 and job["format"] == "csv"
    assert job["created_by"] and "excel=fr" in job["query"]
    file = server.client.get(job["file_url"], headers=server.headers("manager"))
    assert file.status_code == 200 and file.headers["content-type"].startswith("text/csv")
    assert "attachment" in file.headers["content-disposition"]
    streamed = server.client.get("/v1/exports/incidents.csv", params=params, headers=server.headers("manager"))
    assert file.content == streamed.content and len(file.content) == job["size_bytes"]
    assert file.content.startswith("\ufeff".encode()) and file.content.count(b"\r\n") == 4


def test_a_geojson_job(server: Server, three: list[int]) -> None:
    started = server.client.post("/v1/exports/jobs", params={"bbox": BOX, "format": "geojson"},
                                 headers=server.headers("manager"))
    job = _done(server, started)
    collection = json.loads(server.client.get(job["file_url"], headers=server.headers("manager")).content)
    assert sorted(f["id"] for f in collection["features"]) == sorted(three)


def test_jobs_refuse_what_they_should(server: Server, three: list[int]) -> None:
    refused = server.client.post("/v1/exports/jobs", headers=server.headers("agent"))
    assert refused.status_code == 403
    unknown = server.client.get(f"/v1/exports/jobs/{'0' * 32}", headers=server.headers("manager"))
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    traversal = server.client.get("/v1/exports/jobs/..%2Fsecret", headers=server.headers("manager"))
    assert traversal.status_code in (404, 422)
    bad = server.client.post("/v1/exports/jobs", params={"format": "xlsx"}, headers=server.headers("manager"))
    assert bad.status_code == 422


def test_a_running_or_stopped_job_has_no_file_yet(server: Server, three: list[int]) -> None:
    jobs: ExportJobs = server.service.exports
    job = _done(server, server.client.post("/v1/exports/jobs", params={"bbox": BOX}, headers=server.headers("manager")))
    stored = jobs.get(job["id"])
    assert stored is not None
    jobs._save(replace(stored, status="running", updated_at=utcnow()))  # as it read while it ran
    running = server.client.get(f"/v1/exports/jobs/{job['id']}/file", headers=server.headers("manager"))
    assert running.status_code == 409 and running.json()["code"] == "export_not_ready"
    assert running.headers["retry-after"] == "5"
    jobs._save(replace(stored, status="running", updated_at=utcnow() - timedelta(minutes=10)))  # its process died
    stopped = server.client.get(f"/v1/exports/jobs/{job['id']}", headers=server.headers("manager")).json()
    assert stopped["status"] == "failed" and "start it again" in stopped["error"] and stopped["file_url"] is None


def test_finished_jobs_expire(server: Server, three: list[int]) -> None:
    jobs: ExportJobs = server.service.exports
    job = _done(server, server.client.post("/v1/exports/jobs", params={"bbox": BOX}, headers=server.headers("manager")))
    stored = jobs.get(job["id"])
    assert stored is not None
    file = jobs.local_file(stored)
    assert file is not None and file.exists()
    jobs._save(replace(stored, finished_at=utcnow() - jobs.keep - timedelta(minutes=1)))
    _done(server, server.client.post("/v1/exports/jobs", params={"bbox": BOX}, headers=server.headers("manager")))
    assert jobs.get(job["id"]) is None and not file.exists()
