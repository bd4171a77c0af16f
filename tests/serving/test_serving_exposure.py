"""What the service exposes beyond its API's answers: its files on disk, the hosts and origins it
serves, the links it writes, its headers, its documentation page and its idle connections."""

# The browser fixtures imported from test_pages are used by name as test arguments, which ruff reads as
# redefinitions of the imported names.
# ruff: noqa: F811

from __future__ import annotations

import re
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.app import create_app
from serving.config import LOOPBACK_NAMES, SQLITE_FILE, ServiceSettings
from serving.routes import pages
from serving.security import host_allowed
from tests.database import ON_POSTGRES
from tests.serving.helpers import Server, deposit_photo, server_at, service_settings
from tests.serving.live import live_server
from tests.serving.test_pages import (  # noqa: F401 - fixtures, used by name
    BROWSER,
    DESKTOP,
    NO_BROWSER,
    Browse,
    Live,
    browse,
    chromium,
    live,
    tiles,
)
from vipare.detection import Detector

PLACE = (48.1173, -1.6778)  # Rennes: this module's places, away from the other modules'


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_files_are_private(tmp_path: Path, detector: Detector, stand_in_model: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # left readable by an older version: tightened at start
    with server_at(data, detector) as server:
        assert server.upload(deposit_photo(1, lat=PLACE[0], lon=PLACE[1])).status_code == 201
        promoted = server.client.post(
            "/v1/models", files={"model": ("colour.onnx", stand_in_model.read_bytes(), "application/octet-stream")},
            headers=server.headers("admin"),
        )
        assert promoted.status_code == 201, promoted.text
        folders = [data, *(p for p in data.rglob("*") if p.is_dir())]
        files = [p for p in data.rglob("*") if p.is_file()]
        names = {p.name for p in files}
        if not ON_POSTGRES:  # else the database is not in the folder
            assert SQLITE_FILE in names and f"{SQLITE_FILE}-wal" in names
        assert any(p.suffix == ".jpg" for p in files) and any(p.suffix == ".onnx" for p in files)
        assert {str(p.relative_to(data)): oct(_mode(p)) for p in folders if _mode(p) != 0o700} == {}
        assert {str(p.relative_to(data)): oct(_mode(p)) for p in files if _mode(p) != 0o600} == {}


# --------------------------------------------------------------------------------------------------
# Trusted hosts and origins

LOCAL_BASE = "http://127.0.0.1:8000"


@contextmanager
def _local(settings: ServiceSettings, detector: Detector) -> Iterator[TestClient]:
    """A client of a service that sends ``Host: 127.0.0.1:8000``, as a browser on this machine does."""
    with TestClient(create_app(settings, detector=detector), base_url=LOCAL_BASE) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.01)
        yield client


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, detector: Detector) -> Iterator[TestClient]:
    """A service in trial mode on loopback with the default trusted hosts."""
    with _local(service_settings(tmp_path_factory.mktemp("local"), trial_mode=True, trusted_hosts=[]), detector) as c:
        yield c


@pytest.mark.parametrize(
    ("host", "status"),
    [("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200), ("LOCALHOST", 200),
     ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400), ("", 400), ("[::1", 400)],
)
def test_only_trusted_host_names_are_served(local: TestClient, host: str, status: int) -> None:
    for method, path in (("GET", "/v1/incidents"), ("GET", "/v1/keys"), ("POST", "/v1/reports"), ("GET", "/")):
        answer = local.request(method, path, headers={"Host": host})
        if status == 400:
            assert answer.status_code == 400 and answer.json()["code"] == "untrusted_host", (method, path)
            assert "VIPARE_TRUSTED_HOSTS" in answer.json()["detail"]
        else:
            assert answer.status_code in (200, 422), (method, path, answer.text)  # 422: a report needs a photo
    assert local.get("/readyz", headers={"Host": host}).status_code == 200  # probes answer any host


@pytest.mark.parametrize("query", ["class=%00", "class=dumped%00waste", "crew=a%00b&day=2026-12-01"])
def test_a_nul_in_a_query_is_refused_before_anything_reads_it(local: TestClient, query: str) -> None:
    for path in ("/v1/exports/incidents.csv", "/v1/incidents", "/v1/rounds"):
        answer = local.get(f"{path}?{query}")
        assert answer.status_code == 422 and answer.json()["code"] == "invalid_query", (path, answer.text)


def test_foreign_pages_may_not_change_anything(local: TestClient) -> None:
    photo = {"photo": ("p.jpg", deposit_photo(2, lat=PLACE[0], lon=PLACE[1]), "image/jpeg")}
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "https://localhost:8000", "null"):
        refused = local.post("/v1/reports", files=photo, headers={"Origin": origin})
        assert refused.status_code == 403 and refused.json()["code"] == "foreign_origin", origin
        key = local.post("/v1/keys", json={"role": "admin", "name": "x"}, headers={"Origin": origin})
        assert key.status_code == 403
    assert local.get("/v1/reports").json()["total"] == 0  # nothing was stored
    assert local.get("/v1/incidents", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: no CORS
    sent = local.post("/v1/reports", files=photo, headers={"Origin": LOCAL_BASE})  # the service's own page
    assert sent.status_code == 201, sent.text


def test_allowed_origins_and_the_public_url(tmp_path: Path, detector: Detector) -> None:
    settings = service_settings(
        tmp_path, trial_mode=True, trusted_hosts=[], public_url="https://vipare.example.org/",
        allowed_origins=["https://intranet.example.org"],
    )
    assert settings.host_names == ("vipare.example.org", "127.0.0.1", "localhost", "::1")
    with _local(settings, detector) as client:
        # behind a proxy that passes the Host on, or one that sends its own (loopback)
        for host in ("vipare.example.org", "127.0.0.1:8000"):
            for origin, status in (("https://vipare.example.org", 422), ("https://intranet.example.org", 422),
                                   ("https://other.example.org", 403), ("http://vipare.example.org", 403)):
                answer = client.post("/v1/reports", headers={"Host": host, "Origin": origin})
                assert answer.status_code == status, (host, origin, answer.text)  # 422: no photo, but let in
        assert client.get("/v1/incidents", headers={"Host": "other.example.org"}).status_code == 400


def test_which_host_names_are_trusted_by_default() -> None:
    assert ServiceSettings().host_names == LOOPBACK_NAMES
    assert ServiceSettings(host="0.0.0.0").host_names == ("*",)  # beyond loopback, no public URL: any name
    assert ServiceSettings(host="0.0.0.0", public_url="https://v.example.org").host_names == ("v.example.org",)
    assert ServiceSettings(trusted_hosts="a.example.org, *.b.example.org").host_names == (  # type: ignore[arg-type]
        "a.example.org", "*.b.example.org"
    )
    assert host_allowed("x.b.example.org", ["*.b.example.org"])
    assert not host_allowed("b.example.org", ["*.b.example.org"])
    assert not host_allowed("evilb.example.org", ["*.b.example.org"]) and host_allowed(None, ["*"])
    for bad in ("ftp://v.example.org", "https://v.example.org/?q=1", "v.example.org"):
        with pytest.raises(ValidationError):
            ServiceSettings(public_url=bad)
    with pytest.raises(ValidationError):
        ServiceSettings(allowed_origins=["https://a.example.org/path"])


# --------------------------------------------------------------------------------------------------
# Links for other systems


def _links(server: Server, index: int) -> tuple[list[str], str]:
    """The paging links of the incidents list and an Open311 media_url, after two uploads near ``index``."""
    for n in (0, 1):
        lat, lon = PLACE[0] + 0.02 * index, PLACE[1] + 0.001 * n
        assert server.upload(deposit_photo(100 + 10 * index + n, lat=lat, lon=lon)).status_code == 201
    manager = server.headers("manager")
    page = server.client.get("/v1/incidents", params={"limit": 1, "offset": 1}, headers=manager).json()
    requests = server.client.get("/open311/v2/requests.json", headers=manager).json()
    return [link["href"] for link in page["links"]], requests[0]["media_url"]


def test_links_are_relative_without_a_public_url(server: Server) -> None:
    hrefs, media_url = _links(server, 1)
    assert len(hrefs) >= 2 and all(href.startswith("/v1/incidents?") for href in hrefs), hrefs
    assert re.fullmatch(r"/v1/reports/\d+/image/annotated", media_url)
    assert server.client.get(media_url, headers=server.headers("manager")).status_code == 200


def test_links_use_the_public_url_whatever_the_host(tmp_path: Path, detector: Detector) -> None:
    public = "https://vipare.example.org/city"
    with server_at(tmp_path, detector, public_url=public + "/", trusted_hosts=["testserver", "evil.example"]) as s:
        s.client.headers["Host"] = "evil.example"  # a name the request chose: never in a link
        hrefs, media_url = _links(s, 2)
    assert len(hrefs) >= 2 and all(href.startswith(f"{public}/v1/incidents?") for href in hrefs), hrefs
    assert re.fullmatch(rf"{public}/v1/reports/\d+/image/annotated", media_url)


# --------------------------------------------------------------------------------------------------
# Idle connections


def _closed_after(sock: socket.socket, trickle: bytes = b"", limit_s: float = 6.0) -> float:
    """Seconds until the server closes ``sock``, sending ``trickle`` a byte every 0.2 s meanwhile."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit_s:
        if trickle:
            sock.sendall(trickle[:1])
            trickle = trickle[1:] or b"x"
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return float("inf")


@pytest.mark.slow
def test_connections_that_never_finish_their_headers_are_closed(tmp_path: Path, stand_in_model: Path) -> None:
    settings = {"VIPARE_MODEL_PATH": str(stand_in_model), "VIPARE_HEADER_TIMEOUT_S": "1"}
    with live_server(tmp_path / "data", settings) as server:
        address = (server.host, server.port)
        with socket.create_connection(address) as silent:
            assert _closed_after(silent) < 3.0  # nothing sent at all
        with socket.create_connection(address) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert _closed_after(slow, trickle=b"X-Slow: " + b"a" * 100) < 3.0  # headers trickled, never ended
        with socket.create_connection(address) as polite:
            polite.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            polite.settimeout(5)
            assert polite.recv(4096).startswith(b"HTTP/1.1 200")  # a whole request is answered
            assert _closed_after(polite) < 3.0  # then, idle, closed too


# --------------------------------------------------------------------------------------------------
# Headers and pages


def test_every_answer_says_nosniff(server: Server) -> None:
    report = server.upload(deposit_photo(3, lat=PLACE[0] + 0.01, lon=PLACE[1])).json()
    server.app.router.add_api_route("/v1/test-bug", _bug)
    client = TestClient(server.app, raise_server_exceptions=False)
    manager = server.headers("manager")
    answers = {
        "json": server.client.get("/v1/incidents", headers=manager),
        "photo": server.client.get(f"/v1/reports/{report['id']}/image", headers=manager),
        "page": server.client.get("/"),
        "script": server.client.get("/static/agent.js"),
        "401": server.client.get("/v1/incidents"),
        "404": server.client.get("/nothing/here"),
        "413": server.client.post("/v1/keys", content=b"x" * 2_000_000, headers={"Content-Type": "application/json"}),
        "400 host": server.client.get("/v1/incidents", headers={"Host": "evil.example"}),
        "500": client.get("/v1/test-bug"),
        "probe": server.client.get("/metrics"),
    }
    assert {name: a.status_code for name, a in answers.items()}["500"] == 500
    missing = {name for name, a in answers.items() if a.headers.get("x-content-type-options") != "nosniff"}
    assert missing == set()


def _bug() -> None:
    raise RuntimeError("a bug")


@pytest.mark.skipif(
    not (pages.NODE_MODULES / pages.VENDOR["swagger-ui"]).is_dir(),
    reason="needs the pages' libraries, Swagger UI among them (npm ci --prefix serving/web)",
)
def test_no_page_loads_anything_from_elsewhere(server: Server) -> None:
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    policy = docs.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    for path in ("/", "/manager", "/docs"):
        html = server.client.get(path).text
        outside = re.findall(r"""(?:src|href|url)\s*[=:(]\s*["']?((?:https?:)?//[^"'\s)>]+)""", html, re.IGNORECASE)
        assert outside == [] and "cdn" not in html.lower(), path
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert server.client.get(f"/vendor/swagger-ui/{asset}").status_code == 200
    for other in ("/vendor/swagger-ui/index.html", "/vendor/swagger-ui/swagger-initializer.js", "/redoc"):
        assert server.client.get(other).status_code == 404, other


def test_without_swagger_ui_the_docs_page_says_how_to_install_it(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "NODE_MODULES", tmp_path / "node_modules")
    answer = server.client.get("/docs")
    assert answer.status_code == 404 and "npm ci --prefix serving/web" in answer.json()["detail"]
    assert "/openapi.json" in answer.json()["detail"]


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)
def test_the_docs_page_works_in_a_browser_from_this_server_alone(live: Live, browse: Browse) -> None:
    page = browse.page(viewport=DESKTOP)
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path[data-path='/v1/reports']")
    assert "vipare" in page.title()
    browse.check()  # no script error (the policy lets Swagger UI's set-up run), nothing from elsewhere
