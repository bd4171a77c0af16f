"""Crash (issue 4): ``kill -9`` a real ``vipare serve`` while uploads stream in, restart it, lose nothing.

Three agents upload photos back to back; two more requests have sent their headers and half of
their body when the server is killed (SIGKILL: no shutdown, no flush, whatever it was doing). The
server then restarts on the same data folder. Checked:

* every upload answered 201 or 200 before the kill is there, with the same report id and photo;
* no report row without its photo file, and (after the start-up orphan sweep) no photo file
  without a row, no temporary file left; ``PRAGMA integrity_check`` ok;
* nothing appears that was never sent;
* the restarted server keeps serving: a client that got no answer sends its photo again and gets
  the report, once (200 when it had been stored before the kill, else 201), an acknowledged photo
  sent again answers 200 with its first report, a new photo 201.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.serving.helpers import bearer, deposit_photo, moved
from tests.serving.live import HOST, LiveServer, cli_key, db_rows, integrity, photo_files, start_server

pytestmark = pytest.mark.slow

STREAMERS = 3
PHOTOS_PER_STREAMER = 150  # more than are sent before the kill; bounds the loop
HALF_SENT = 2
ACKNOWLEDGED_BEFORE_KILL = 24
KILL_DEADLINE_S = 90.0
REQUEST_TIMEOUT_S = 30.0
LYON = (45.7640, 4.8357)


@dataclass(frozen=True)
class Sent:
    """One upload that reached the server, and what came back (``status`` None: no answer, the server died)."""

    key: str
    photo: bytes
    lat: float
    lon: float
    status: int | None
    report_id: int | None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.photo).hexdigest()


class Stream:
    """What the streaming agents sent, shared between their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[Sent] = []
        self.errors: list[str] = []
        self.in_flight = 0
        self.stop = threading.Event()

    def acknowledged(self) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if s.status in (200, 201)]


def _photo(agent: int, i: int) -> tuple[bytes, float, float]:
    lat, lon = moved(*LYON, north_m=150.0 * agent, east_m=3.0 * (i % 4))
    return deposit_photo(50_000 + 1000 * agent + i), lat, lon


def _upload(http: httpx2.Client, key: str, photo: bytes, lat: float, lon: float) -> httpx2.Response:
    return http.post("/v1/reports", headers=bearer(key), files={"photo": ("photo.jpg", photo, "image/jpeg")},
                     data={"lat": f"{lat:.7f}", "lon": f"{lon:.7f}"})


def _stream(url: str, key: str, agent: int, stream: Stream) -> None:
    with httpx2.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as http:
        for i in range(PHOTOS_PER_STREAMER):
            if stream.stop.is_set():
                return
            photo, lat, lon = _photo(agent, i)
            with stream.lock:
                stream.in_flight += 1
            try:
                response = _upload(http, key, photo, lat, lon)
            except httpx2.TransportError:  # killed while this one was in flight
                with stream.lock:
                    stream.sent.append(Sent(key, photo, lat, lon, None, None))
                return
            finally:
                with stream.lock:
                    stream.in_flight -= 1
            report_id = response.json().get("id") if response.status_code in (200, 201) else None
            with stream.lock:
                stream.sent.append(Sent(key, photo, lat, lon, response.status_code, report_id))
                if response.status_code not in (200, 201):
                    stream.errors.append(f"agent {agent}: {response.status_code} {response.text[:300]}")


def _half_send(server: LiveServer, key: str, photo: bytes, lat: float, lon: float) -> socket.socket:
    """Open a connection and send an upload's headers and half of its body; the rest never comes."""
    request = httpx2.Request(
        "POST", f"{server.url}/v1/reports", headers=bearer(key),
        files={"photo": ("photo.jpg", photo, "image/jpeg")}, data={"lat": f"{lat:.7f}", "lon": f"{lon:.7f}"},
    )
    body = request.read()
    head = "POST /v1/reports HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
    sock = socket.create_connection((HOST, server.port), timeout=REQUEST_TIMEOUT_S)
    sock.sendall(head.encode("latin-1") + body[: len(body) // 2])
    return sock


def _answer(sock: socket.socket) -> bytes:
    """What the server sent on this connection before closing it (b"": nothing)."""
    try:
        return sock.recv(65536)
    except (ConnectionResetError, TimeoutError):
        return b""


def _report_rows(data_dir: Path) -> dict[int, tuple[int, str, str]]:
    """report id -> (api key id, sha256, photo extension)."""
    rows = db_rows(data_dir, "SELECT id, api_key_id, sha256, photo_ext FROM reports")
    return {int(str(r[0])): (int(str(r[1])), str(r[2]), str(r[3])) for r in rows}


def _store_matches_rows(data_dir: Path, rows: dict[int, tuple[int, str, str]]) -> None:
    files = photo_files(data_dir)
    assert not [f for f in files if f.name.startswith(".")], "a temporary file survived the start-up"
    expected = {(data_dir / "photos" / sha[:2] / f"{sha}.{ext}") for _, sha, ext in rows.values()}
    missing = sorted(str(p) for p in expected if not p.exists())
    assert not missing, f"report rows without their photo: {missing}"
    orphans = sorted(str(f) for f in files if f not in expected)
    assert not orphans, f"photo files without a report row: {orphans}"


def test_kill_minus_nine_mid_stream_then_restart(tmp_path: Path, stand_in_model: Path) -> None:
    data_dir = tmp_path / "data"
    admin = cli_key(data_dir, "admin", "crash-admin")
    model = {"VIPARE_MODEL_PATH": str(stand_in_model)}
    server = start_server(data_dir, model)
    half_open: list[socket.socket] = []
    try:
        with httpx2.Client(base_url=server.url, headers=bearer(admin), timeout=REQUEST_TIMEOUT_S) as http:
            made = [http.post("/v1/keys", json={"role": role, "name": f"crash {role} {n}"}).json()
                    for n, role in enumerate(["agent"] * STREAMERS + ["manager"])]
        agent_keys = [m["key"] for m in made[:STREAMERS]]
        key_ids = {m["key"]: m["id"] for m in made}
        manager = made[-1]["key"]

        stream = Stream()
        threads = [threading.Thread(target=_stream, args=(server.url, key, a, stream))
                   for a, key in enumerate(agent_keys)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + KILL_DEADLINE_S
        while len(stream.acknowledged()) < ACKNOWLEDGED_BEFORE_KILL // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        half_sent = [(agent_keys[h], *_photo(STREAMERS + h, 0)) for h in range(HALF_SENT)]
        half_open = [_half_send(server, key, photo, lat, lon) for key, photo, lat, lon in half_sent]
        while len(stream.acknowledged()) < ACKNOWLEDGED_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        with stream.lock:
            in_flight_at_kill = stream.in_flight
        server.kill()  # SIGKILL
        half_answers = [_answer(sock) for sock in half_open]
        stream.stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_S)
        assert not any(t.is_alive() for t in threads)
    finally:
        server.kill()
        for sock in half_open:
            sock.close()

    assert not stream.errors, stream.errors
    assert half_answers == [b""] * HALF_SENT  # still waiting for the rest of their body when it died
    acknowledged = stream.acknowledged()
    unanswered = [s for s in stream.sent if s.status is None]
    assert len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL, server.log_tail()
    files_at_kill = len(photo_files(data_dir))

    restarted = start_server(data_dir, model)  # the start-up sweeps the photo store
    try:
        # -- right after the restart, before any new upload
        rows = _report_rows(data_dir)
        for sent in acknowledged:
            assert sent.report_id is not None
            assert rows.get(sent.report_id) == (key_ids[sent.key], sent.sha256, "jpg"), sent.report_id
        attempted = {(key_ids[s.key], s.sha256) for s in stream.sent}
        assert {(key_id, sha) for key_id, sha, _ in rows.values()} <= attempted  # nothing that was not sent
        half_sent_shas = {hashlib.sha256(photo).hexdigest() for _, photo, _, _ in half_sent}
        assert not half_sent_shas & {sha for _, sha, _ in rows.values()}
        _store_matches_rows(data_dir, rows)
        assert integrity(data_dir) == ["ok"]
        swept = files_at_kill - len(photo_files(data_dir))

        # -- it keeps serving
        with httpx2.Client(base_url=restarted.url, timeout=REQUEST_TIMEOUT_S) as http:
            for sent in acknowledged:
                got = http.get(f"/v1/reports/{sent.report_id}", headers=bearer(manager))
                assert got.status_code == 200 and got.json()["image"]["sha256"] == sent.sha256
            stored_before = {(key_id, sha): rid for rid, (key_id, sha, _) in rows.items()}
            for sent in unanswered:  # the client got no answer and sends it again: the report, once
                again = _upload(http, sent.key, sent.photo, sent.lat, sent.lon)
                before = stored_before.get((key_ids[sent.key], sent.sha256))
                assert again.status_code == (201 if before is None else 200), again.text
                assert before is None or again.json()["id"] == before
            first = acknowledged[0]
            again = _upload(http, first.key, first.photo, first.lat, first.lon)
            assert (again.status_code, again.json()["id"]) == (200, first.report_id)
            fresh = _upload(http, agent_keys[0], *_photo(STREAMERS + HALF_SENT, 0))
            assert fresh.status_code == 201, fresh.text
    finally:
        restarted.stop()

    rows = _report_rows(data_dir)
    _store_matches_rows(data_dir, rows)
    assert integrity(data_dir) == ["ok"]
    assert len({(key_id, sha) for key_id, sha, _ in rows.values()}) == len(rows)
    print(
        f"\nkilled with {len(acknowledged)} uploads acknowledged, {in_flight_at_kill} in flight, "
        f"{HALF_SENT} half-sent; {len(unanswered)} unanswered; {files_at_kill} photo files at the kill, "
        f"{swept} swept at the restart; {len(rows)} reports at the end"
    )

