"""Load on loopback (issue 4): 8 agents upload 50 photos each, at once, to a real ``vipare serve``.

The server is its own process on 127.0.0.1 with a real SQLite file and the stand-in model (see
conftest.py); the keys are made through the CLI (admin) and the API (agents). Every photo is distinct
(a deposit photo with a few pixels changed, 640 px, EXIF GPS or sent ``lat``/``lon``, one in ten with
nothing to detect),
at ten places 200 m apart, so concurrent uploads keep joining the same incidents. On top:

* each agent sends two of its photos again at the end: 200, the first report, counted once;
* agents 0 and 1 share one key (a phone with two upload queues) and send three photos at the same
  moment: one 201, one 200, one report;
* agents 2 and 3 (two keys) send one same photo: two reports, one stored file.

Checked from the answers, ``/metrics`` and the SQLite file after the server stopped: no 5xx, every
201 has exactly one report row, duplicates answer 200 with the first report and are counted once,
one incident per place, ``PRAGMA integrity_check`` ok, photo files = distinct photos of the reports.
"""

from __future__ import annotations

import hashlib
import re
import signal
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.serving.helpers import bearer, deposit_photo, moved, plain_photo
from tests.serving.live import cli_key, db_rows, integrity, live_server, photo_files

pytestmark = pytest.mark.slow

CLIENTS = 8
UPLOADS = 50
RESENT = 2
SHARED_KEY_CLIENTS = (0, 1)
SHARED_KEY_TWINS = (10, 25, 40)
CROSS_KEY_CLIENTS = (2, 3)
CROSS_KEY_INDEX = 15
PLACES = 10
METZ = (49.1193, 6.1757)
REQUEST_TIMEOUT_S = 60.0
RUN_DEADLINE_S = 300.0


@dataclass(frozen=True)
class Upload:
    """One photo to send, and where it was taken (``place`` None: nothing to detect in it)."""

    photo: bytes
    fields: dict[str, str]
    place: int | None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.photo).hexdigest()


@dataclass(frozen=True)
class Answer:
    """What the server said to one upload."""

    client: int
    key: str
    upload: Upload
    status: int
    body: dict[str, Any]
    seconds: float


@dataclass
class Client:
    """One agent's queue of uploads, sent in order."""

    index: int
    key: str
    uploads: list[Upload] = field(default_factory=list)
    twins: dict[int, threading.Barrier] = field(default_factory=dict)  # upload index -> sent together


def _place(index: int) -> tuple[float, float]:
    return moved(*METZ, north_m=200.0 * (index // 5), east_m=200.0 * (index % 5))


def _upload(client: int, i: int) -> Upload:
    seed = 1000 * (client + 1) + i
    if i % 10 == 9:  # a street with nothing dumped: a report without an incident
        lat, lon = moved(*METZ, north_m=-500.0 - i, east_m=20.0 * client)
        return Upload(plain_photo(seed), {"lat": f"{lat:.7f}", "lon": f"{lon:.7f}", "accuracy_m": "8"}, None)
    place = (client + i) % PLACES
    lat, lon = moved(*_place(place), north_m=(i % 5) - 2.0, east_m=(client % 5) - 2.0)  # within 5 m
    if i % 2:  # the phone's position sent with a photo whose EXIF has none
        return Upload(deposit_photo(seed), {"lat": f"{lat:.7f}", "lon": f"{lon:.7f}", "accuracy_m": "6"}, place)
    return Upload(deposit_photo(seed, lat=lat, lon=lon), {}, place)


def _plan(agent_keys: list[str]) -> list[Client]:
    """Each client's uploads (see the module doc for the duplicates mixed in)."""
    clients = []
    for c in range(CLIENTS):
        key = agent_keys[0] if c in SHARED_KEY_CLIENTS else agent_keys[c]
        clients.append(Client(index=c, key=key, uploads=[_upload(c, i) for i in range(UPLOADS)]))
    first, second = (clients[c] for c in SHARED_KEY_CLIENTS)
    for i in SHARED_KEY_TWINS:
        second.uploads[i] = first.uploads[i]
        first.twins[i] = second.twins[i] = threading.Barrier(2, timeout=REQUEST_TIMEOUT_S)
    a, b = (clients[c] for c in CROSS_KEY_CLIENTS)
    b.uploads[CROSS_KEY_INDEX] = a.uploads[CROSS_KEY_INDEX]
    for client in clients:
        client.uploads += client.uploads[:RESENT]
    return clients


def _send(url: str, client: Client, start: threading.Barrier, deadline: float, answers: list[Answer],
          errors: list[str]) -> None:
    try:
        with httpx2.Client(base_url=url, headers=bearer(client.key), timeout=REQUEST_TIMEOUT_S) as http:
            start.wait()
            for i, upload in enumerate(client.uploads):
                if time.monotonic() > deadline:
                    errors.append(f"client {client.index}: deadline reached at upload {i}")
                    return
                if i in client.twins:
                    client.twins[i].wait()
                began = time.perf_counter()
                response = http.post(
                    "/v1/reports", files={"photo": ("photo.jpg", upload.photo, "image/jpeg")}, data=upload.fields
                )
                body = response.json() if response.headers.get("content-type") == "application/json" else {}
                answers.append(Answer(client.index, client.key, upload, response.status_code, body,
                                      time.perf_counter() - began))
    except Exception as exc:  # reported by the test, which then fails
        errors.append(f"client {client.index}: {exc!r}")


def _metric(text: str, outcome: str) -> float:
    match = re.search(rf'^vipare_reports_total\{{outcome="{outcome}"\}} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_eight_clients_fifty_uploads_each(tmp_path: Path, stand_in_model: Path) -> None:
    data_dir = tmp_path / "data"
    admin = cli_key(data_dir, "admin", "load-admin")
    with live_server(data_dir, {"VIPARE_MODEL_PATH": str(stand_in_model)}) as server:
        with httpx2.Client(base_url=server.url, headers=bearer(admin), timeout=REQUEST_TIMEOUT_S) as http:
            created = [http.post("/v1/keys", json={"role": "agent", "name": f"agent {c}"}) for c in range(CLIENTS)]
        assert all(r.status_code == 201 for r in created)
        agent_keys = [r.json()["key"] for r in created]
        key_ids = {r.json()["key"]: r.json()["id"] for r in created}
        clients = _plan(agent_keys)

        answers: list[Answer] = []
        errors: list[str] = []
        start = threading.Barrier(CLIENTS, timeout=60)
        began = time.monotonic()
        threads = [
            threading.Thread(target=_send, args=(server.url, c, start, began + RUN_DEADLINE_S, answers, errors))
            for c in clients
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RUN_DEADLINE_S + REQUEST_TIMEOUT_S)
        elapsed = time.monotonic() - began
        assert not any(t.is_alive() for t in threads), "a client never finished"
        metrics = httpx2.get(f"{server.url}/metrics", timeout=REQUEST_TIMEOUT_S).text
    assert server.process.returncode in (0, -signal.SIGTERM), server.log_tail()  # uvicorn re-raises SIGTERM

    # -- the answers
    assert not errors, errors
    assert len(answers) == sum(len(c.uploads) for c in clients)
    server_errors = [(a.status, a.body) for a in answers if a.status >= 500]
    assert not server_errors, server_errors
    assert {a.status for a in answers} <= {200, 201}, [(a.status, a.body) for a in answers if a.status > 201]
    sent: dict[tuple[str, str], list[Answer]] = defaultdict(list)  # (key, sha256) -> answers
    for answer in answers:
        assert answer.body["image"]["sha256"] == answer.upload.sha256
        sent[(answer.key, answer.upload.sha256)].append(answer)
    for group in sent.values():  # one report per (client, photo), created once, the same for every resend
        assert sorted(a.status for a in group) == [200] * (len(group) - 1) + [201]
        assert len({a.body["id"] for a in group}) == 1
    twins = [sent[(agent_keys[0], clients[0].uploads[i].sha256)] for i in SHARED_KEY_TWINS]
    assert all(len(group) == 2 for group in twins)  # the two queues of one phone, at once: one report
    cross = clients[CROSS_KEY_CLIENTS[0]].uploads[CROSS_KEY_INDEX].sha256
    assert len({a.body["id"] for a in answers if a.upload.sha256 == cross}) == 2  # two keys: two reports
    created_ids = sorted(a.body["id"] for a in answers if a.status == 201)
    assert len(created_ids) == len(set(created_ids)) == len(sent)

    # -- incidents: every report of a place with a deposit joined the one incident of that place
    by_place: dict[int, set[int]] = defaultdict(set)
    dumping = [a for a in answers if a.upload.place is not None and a.body["verdict"]["dumping"]]
    assert len(dumping) == sum(1 for a in answers if a.upload.place is not None)  # each deposit photo is dumping
    for answer in dumping:
        assert answer.upload.place is not None and answer.body["incident"] is not None
        by_place[answer.upload.place].add(answer.body["incident"]["id"])
    assert all(len(ids) == 1 for ids in by_place.values()), dict(by_place)
    assert all(a.body["incident"] is None for a in answers if a.upload.place is None)

    # -- counted once (one worker: its metrics are the whole server's)
    assert _metric(metrics, "created") == len(created_ids)
    assert _metric(metrics, "duplicate") == len(answers) - len(created_ids)
    assert _metric(metrics, "rejected") == 0

    # -- the SQLite file, after the server stopped
    assert integrity(data_dir) == ["ok"]
    rows = db_rows(data_dir, "SELECT id, api_key_id, sha256, incident_id FROM reports ORDER BY id")
    assert [row[0] for row in rows] == created_ids  # every 201 has exactly one row, and nothing else is there
    first = {a.body["id"]: a for a in answers if a.status == 201}
    for report_id, key_id, sha256, incident_id in rows:
        answer = first[int(str(report_id))]
        assert (key_id, sha256) == (key_ids[answer.key], answer.upload.sha256)
        assert incident_id == (answer.body["incident"] or {}).get("id")
    incidents = db_rows(
        data_dir,
        "SELECT i.id, i.report_count, COUNT(r.id) FROM incidents i LEFT JOIN reports r ON r.incident_id = i.id "
        "GROUP BY i.id",
    )
    assert len(incidents) == len(by_place)
    assert all(count == joined for _, count, joined in incidents), incidents
    files = photo_files(data_dir)
    assert not [f for f in files if f.name.startswith(".")]  # no temporary file left
    assert sorted(f.name.split(".")[0] for f in files) == sorted({str(row[2]) for row in rows})

    latencies = sorted(a.seconds for a in answers if a.status == 201)
    print(
        f"\n{len(answers)} uploads from {CLIENTS} clients in {elapsed:.1f} s ({len(answers) / elapsed:.1f}/s); "
        f"201 latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms; "
        f"{len(created_ids)} reports, {len(incidents)} incidents, {len(files)} photo files"
    )
