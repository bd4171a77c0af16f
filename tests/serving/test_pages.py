"""The pages: the agent's upload page and the manager's map.

Fast tests go through ``TestClient``: what the router serves, the Content-Security-Policy, the
ui-config, and the answer when the front-end libraries are not installed.

Browser tests (``slow``, ``browser``) drive Debian's Chromium (``/usr/bin/chromium``) with Python's
Playwright, never a downloaded browser, against a real service: ``vipare serve`` in a subprocess on
127.0.0.1 with a tmp data folder and the stand-in model, keys made with ``vipare keys create``. They
record every request the browser makes and check that none leaves this machine. Screenshots of both
pages at phone (390x844) and desktop (1366x768) sizes go to ``$VIPARE_SCREENSHOTS`` or, without it,
a tmp folder whose path is printed at the end of the run. Skipped without playwright or Chromium.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from PIL import Image, ImageDraw

from serving.config import PLAN_IGN_TILES, ServiceSettings
from serving.routes import pages
from tests.serving.helpers import Server, deposit_photo
from tests.serving.live import cli_key, live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 768}
METZ = (49.1193, 6.1757)
NANCY = (48.6921, 6.1844)
STRASBOURG = (48.5734, 7.7521)
TIMEOUT_MS = 30_000
SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth > window.innerWidth"
MAX_IMAGE_BYTES = 2_500_000  # the live service's limit: the photos here are far smaller


# --------------------------------------------------------------------------------------------------
# What the router serves (TestClient)


def test_pages_are_served_with_a_strict_policy(server: Server) -> None:
    for path, marker in (("/", 'id="take"'), ("/manager", 'id="map"')):
        response = server.client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert marker in response.text
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "img-src 'self' data: blob: https://data.geopf.fr;" in policy  # and Plan IGN's tiles only
    script = server.client.get("/static/agent.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert server.client.get("/static/agent.js", headers={"If-None-Match": script.headers["etag"]}).status_code == 304


@pytest.mark.parametrize(
    "path",
    ["/static/nothing.js", "/static/%2e%2e/%2e%2e/config.py", "/static/", "/vendor/left-pad/index.js",
     "/vendor/leaflet/%2e%2e/package.json"],
)
def test_nothing_outside_the_web_folders_is_served(server: Server, path: str) -> None:
    assert server.client.get(path).status_code == 404


def test_ui_config(server: Server) -> None:
    config = server.client.get("/v1/ui-config").json()
    assert config["tile_url"] == PLAN_IGN_TILES and "IGN" in config["tile_attribution"]  # streets by default
    assert config["classes"] == ["dumped_waste", "overflowing_bin", "bin"]  # the model's order
    assert config["deposit_classes"] == ["dumped_waste", "overflowing_bin"]
    assert config["transitions"]["new"] == ["cleaned", "confirmed", "duplicate", "rejected", "scheduled"]
    assert config["transitions"]["cleaned"] == []
    assert config["max_image_bytes"] == server.service.settings.max_image_bytes
    assert config["map_library"] == all((pages.NODE_MODULES / d).is_dir() for d in pages.VENDOR.values())


def test_ui_config_says_how_the_agent_page_resizes(tmp_path: Path) -> None:
    config = pages.ui_config(ServiceSettings(upload_long_side=1600, upload_jpeg_quality=0.8))
    assert (config["upload_long_side"], config["upload_jpeg_quality"]) == (1600, 0.8)
    assert pages.ui_config(ServiceSettings())["upload_long_side"] == 2048


def test_the_agent_page_is_an_installable_app(server: Server) -> None:
    page = server.client.get("/").text
    assert '<link rel="manifest" href="/manifest.webmanifest">' in page
    manifest = server.client.get("/manifest.webmanifest", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    body = manifest.json()
    assert body["lang"] == "fr" and body["display"] == "standalone" and body["start_url"] == "/"
    for icon in body["icons"]:
        image = server.client.get(icon["src"])
        assert image.status_code == 200, icon
        if icon["type"] == "image/png":
            width, height = (int(v) for v in icon["sizes"].split("x"))
            assert image.content[:8] == b"\x89PNG\r\n\x1a\n"
            assert (int.from_bytes(image.content[16:20], "big"), int.from_bytes(image.content[20:24], "big")) == (
                width, height)
    assert server.client.get("/manifest.webmanifest", headers={"Accept-Language": "en"}).json()["lang"] == "en"

    worker = server.client.get("/sw.js")
    assert worker.status_code == 200 and "javascript" in worker.headers["content-type"]
    assert worker.headers["cache-control"] == "no-cache"  # the browser checks it on every visit
    version = pages.shell_version()
    assert f'"{version}"' in worker.text and "__SHELL" not in worker.text
    assert json.dumps(list(pages.SHELL)) in worker.text
    for path in pages.SHELL:
        if not path.startswith("/vendor/") or (pages.NODE_MODULES / "exifr").is_dir():
            assert server.client.get(path).status_code == 200, path


def test_a_new_release_is_a_new_service_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    before = pages.shell_version()
    static = tmp_path / "static"
    static.mkdir()
    for name in pages._SHELL_FILES:
        source = pages.STATIC_DIR / name
        (static / name).write_bytes(source.read_bytes())
    monkeypatch.setattr(pages, "STATIC_DIR", static)
    assert pages.shell_version() == before
    (static / "agent.js").write_text((static / "agent.js").read_text() + "\n// next release\n")
    assert pages.shell_version() != before


def test_french_and_english_are_complete() -> None:
    """Every text exists in both languages, and every key a page asks for by name exists."""
    source = (pages.STATIC_DIR / "i18n.js").read_text(encoding="utf-8")
    english, french = source.split("\n  fr: {", 1)
    key = re.compile(r'^    "([a-z0-9_.]+)":', re.MULTILINE)
    en_keys, fr_keys = set(key.findall(english)), set(key.findall(french))
    assert en_keys == fr_keys, {"only in English": en_keys - fr_keys, "only in French": fr_keys - en_keys}
    asked: set[str] = set()
    for script in pages.STATIC_DIR.glob("*.js"):
        asked |= set(re.findall(r'\bt\("([a-z0-9_.]+)"', script.read_text(encoding="utf-8")))
    for page in pages.STATIC_DIR.glob("*.html"):
        asked |= set(re.findall(r'data-i18n(?:-placeholder|-title|-aria-label)?="([a-z0-9_.]+)"', page.read_text()))
    assert asked and asked <= en_keys, f"texts missing: {sorted(asked - en_keys)}"


def test_without_node_modules_the_pages_load_and_say_so(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "NODE_MODULES", tmp_path / "node_modules")
    assert server.client.get("/manager").status_code == 200
    answer = server.client.get("/vendor/leaflet/leaflet.js")
    assert answer.status_code == 404 and "npm ci --prefix serving/web" in answer.json()["detail"]
    assert server.client.get("/v1/ui-config").json()["map_library"] is False


@pytest.mark.parametrize(
    ("tile_url", "source"),
    [
        (None, ""),
        ("https://tile.example.org/{z}/{x}/{y}.png", " https://tile.example.org"),
        ("https://{s}.tile.example.org/{z}/{x}/{y}.png?key=1", " https://*.tile.example.org"),
        ("/tiles/{z}/{x}/{y}.png", ""),  # same origin: 'self' covers it
        ("javascript:alert(1)", ""),
    ],
)
def test_tile_server_is_the_only_other_image_source(tile_url: str | None, source: str) -> None:
    assert pages._tile_source(tile_url) == source
    assert pages.ui_config(ServiceSettings(tile_url=tile_url))["tile_url"] == tile_url


# --------------------------------------------------------------------------------------------------
# A real service and a real browser

MAP_LIBRARY = pages.NODE_MODULES / "leaflet" / "dist" / "leaflet.js"
BROWSER = importlib.util.find_spec("playwright") is not None and CHROMIUM.exists() and MAP_LIBRARY.exists()
NO_BROWSER = (
    "needs Python's playwright package, Debian's Chromium at /usr/bin/chromium and the pages' map "
    "libraries (npm ci --prefix serving/web)"
)


@dataclass
class Live:
    """A running ``vipare serve``: its base URL and keys by role."""

    base: str
    keys: dict[str, str]

    def api(self, who: str = "manager") -> httpx2.Client:
        return httpx2.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=30)


@dataclass
class Tiles:
    """A tile server on 127.0.0.1 standing in for Plan IGN: one grey street-map tile for every z/x/y."""

    url: str
    requests: list[str]


class _TileHandler(BaseHTTPRequestHandler):
    tile = b""
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(self.path)
        if not self.path.startswith("/tiles/"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.tile)))
        self.end_headers()
        self.wfile.write(self.tile)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture(scope="module")
def tiles() -> Iterator[Tiles]:
    """The pages' base map, served locally: no request leaves the machine."""
    image = Image.new("RGB", (256, 256), (236, 232, 224))
    ImageDraw.Draw(image).line([(0, 128), (256, 128)], fill=(255, 255, 255), width=12)  # a street
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    seen: list[str] = []
    handler = type("Handler", (_TileHandler,), {"tile": buffer.getvalue(), "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Tiles(url=f"http://127.0.0.1:{server.server_port}/tiles/{{z}}/{{x}}/{{y}}.png", requests=seen)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, stand_in_model: Path, tiles: Tiles) -> Iterator[Live]:
    """``vipare serve`` on 127.0.0.1 with a tmp data folder, the stand-in model, keys from the CLI and the
    local tile server as its base map."""
    data = tmp_path_factory.mktemp("pages") / "data"
    keys = {role: cli_key(data, role, f"browser-{role}") for role in ("agent", "manager")}
    settings = {
        "VIPARE_TILE_URL": tiles.url,
        "VIPARE_TILE_ATTRIBUTION": "Test tiles",
        "VIPARE_MODEL_PATH": str(stand_in_model),
        "VIPARE_ANALYSIS_SLOTS": "1",
        "VIPARE_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
    }
    with live_server(data, settings) as server:
        yield Live(base=server.url, keys=keys)


@pytest.fixture
def deposit_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A deposit photo without GPS on disk, for the file picker; each test has its own."""
    path = tmp_path / "deposit.jpg"
    path.write_bytes(deposit_photo(int(hashlib.sha256(request.node.name.encode()).hexdigest()[:8], 16)))
    return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Where screenshots go; the path is printed at the end of the run."""
    folder = Path(os.environ.get("VIPARE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    if any(folder.iterdir()):
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"\nscreenshots of the pages: {folder}")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Browse:
    """Opens contexts that record every request; :meth:`check_local` asserts none left this machine."""

    browser: Any
    base: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)

    def page(self, *, viewport: dict[str, int], locale: str = "en-GB", where: tuple[float, float] | None = None,
             accuracy: float = 8.0, **extra: Any) -> Any:
        """A page in a new context; ``extra``: more context options (e.g. ``bypass_csp`` to inject axe-core)."""
        options: dict[str, Any] = {"viewport": viewport, "locale": locale, "base_url": self.base,
                                   "accept_downloads": True, **extra}
        if viewport is PHONE:
            options.update(is_mobile=True, has_touch=True, device_scale_factor=2)
        if where is not None:
            options.update(geolocation={"latitude": where[0], "longitude": where[1], "accuracy": accuracy},
                           permissions=["geolocation"])
        context = self.browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        context.on("request", lambda r: self.requests.append((r.method, r.url)))
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        return page

    def posts(self, path: str) -> int:
        return sum(1 for method, url in self.requests if method == "POST" and urlsplit(url).path == path)

    def check(self) -> None:
        """No script error on any page, and no request left this machine."""
        assert not self.errors, f"script errors: {self.errors}"
        self.check_local()

    def check_local(self) -> None:
        outside = [url for _, url in self.requests
                   if urlsplit(url).scheme not in ("data", "blob")
                   and urlsplit(url).hostname not in ("127.0.0.1", "localhost")]
        assert not outside, f"requests left this machine: {outside}"
        assert self.requests, "no request was recorded"


@pytest.fixture
def browse(live: Live, chromium: Any) -> Iterator[Browse]:
    session = Browse(chromium, live.base)
    yield session
    for context in session.contexts:
        context.close()
    session.check()


def sign_in(page: Any, key: str) -> None:
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#sign-in", state="hidden")


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def marker_offset_px(page: Any, incident_id: int, lat: float, lon: float) -> float:
    """How far the incident's marker is drawn from where (lat, lon) falls on the map, in pixels."""
    return float(page.evaluate(
        """([id, lat, lon]) => {
            const dot = document.querySelector(`[data-incident="${id}"]`).parentElement.getBoundingClientRect();
            const box = document.getElementById("map").getBoundingClientRect();
            const want = window.vipareMap.latLngToContainerPoint([lat, lon]);
            const x = dot.left + dot.width / 2 - box.left, y = dot.top + dot.height / 2 - box.top;
            return Math.hypot(x - want.x, y - want.y);
        }""",
        [incident_id, lat, lon],
    ))



@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)
def test_upload_then_confirm_on_the_map(live: Live, browse: Browse, shots: Path, deposit_file: Path) -> None:
    """Agent (phone, French) uploads with a mocked position -> the incident is on the manager's map at
    that place -> the manager confirms it with a comment -> the API shows it, comment included."""
    agent = browse.page(viewport=PHONE, locale="fr-FR", where=METZ, accuracy=8)
    agent.goto("/")
    assert agent.locator("html").get_attribute("lang") == "fr"
    sign_in(agent, live.keys["agent"])
    agent.set_input_files("#pick", deposit_file)
    agent.wait_for_function("() => document.getElementById('position').textContent.includes('49.11930')")
    agent.wait_for_function("() => document.getElementById('draft-photo').naturalWidth > 0")
    assert agent.locator("#send").is_visible() and agent.locator("#send").bounding_box()["y"] < PHONE["height"]
    agent.screenshot(path=shots / "agent-phone-draft.png")
    agent.click("#send")
    agent.wait_for_selector("#result[data-report-id]")
    report_id = int(agent.get_attribute("#result", "data-report-id"))
    assert "Dépôt détecté" in agent.inner_text("#verdict")
    assert agent.locator("#result-frame svg.boxes rect.deposit").count() == 1  # the photo's magenta square
    agent.wait_for_function("() => [...document.querySelectorAll('#result-frame img')].every(i => i.naturalWidth > 0)")
    assert agent.locator("#result-map path").count() == 2  # the accuracy circle and the place
    agent.wait_for_selector("#result-map .leaflet-tile-loaded")  # streets: the base map from the tile server
    agent.screenshot(path=shots / "agent-phone-result.png", full_page=True)
    assert not agent.evaluate(SIDEWAYS_SCROLL)

    with live.api() as api:
        report = api.get(f"/v1/reports/{report_id}").json()
    assert report["verdict"]["dumping"] and report["location"]["source"] == "client"
    assert report["location"]["lat"] == pytest.approx(METZ[0]) and report["location"]["lon"] == pytest.approx(METZ[1])
    assert report["location"]["accuracy_m"] == pytest.approx(8)
    incident_id = report["incident"]["id"]

    manager = browse.page(viewport=DESKTOP, locale="en-GB")
    manager.goto("/manager")
    sign_in(manager, live.keys["manager"])
    marker = manager.locator(f'[data-incident="{incident_id}"]')
    marker.wait_for()
    wait_for(lambda: marker_offset_px(manager, incident_id, *METZ) < 1.5, "the marker at its place (zoom animated)")
    manager.wait_for_selector("#map .leaflet-tile-loaded")  # streets under the markers
    assert "Test tiles" in manager.inner_text("#map .leaflet-control-attribution")
    marker.click()
    manager.wait_for_selector("#incident-state[data-state=new]")
    manager.wait_for_function("() => document.querySelector('#detail-view .photos img')?.naturalWidth > 0")
    comment = "Seen on site: mattress and bags; crew booked"
    manager.fill("#comment", comment)
    manager.click("#detail-view button[data-to=confirmed]")
    manager.wait_for_selector("#incident-state[data-state=confirmed]")
    assert comment in manager.inner_text("#detail-view .history")
    manager.wait_for_selector(f'.vp-marker.st-confirmed [data-incident="{incident_id}"]')  # coloured by state
    manager.screenshot(path=shots / "manager-desktop-incident.png")
    manager.uncheck("#state-filter input[value=confirmed]")  # filters apply at once
    marker.wait_for(state="detached")
    manager.check("#state-filter input[value=confirmed]")
    marker.wait_for()

    with live.api() as api:
        incident = api.get(f"/v1/incidents/{incident_id}").json()
    assert incident["properties"]["status"] == "confirmed"
    last = incident["history"][-1]
    assert (last["from_status"], last["to_status"], last["comment"]) == ("new", "confirmed", comment)
    assert "browser-manager" in last["actor"]

    with manager.expect_download() as download:
        manager.click("[data-export=csv]")
    csv = Path(download.value.path()).read_text()
    assert str(incident_id) in csv and "confirmed" in csv
    with manager.expect_download() as download:
        manager.click("[data-export=geojson]")
    collection = json.loads(Path(download.value.path()).read_text())
    assert incident_id in [f["id"] for f in collection["features"]]


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)
def test_offline_upload_waits_in_the_queue_then_goes_once(live: Live, browse: Browse, shots: Path) -> None:
    agent = browse.page(viewport=PHONE, locale="en-GB", where=NANCY, accuracy=15)
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    with live.api() as api:
        before = api.get("/v1/reports", params={"limit": 1}).json()["total"]
    agent.context.set_offline(True)
    photo = deposit_photo(5150)
    agent.set_input_files("#take", files=[{"name": "offline.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    agent.wait_for_function("() => document.getElementById('position').textContent.includes('48.69210')")
    agent.click("#send")
    agent.wait_for_selector("#queue-list li[data-status=waiting]")
    assert agent.locator("#queue-list li").count() == 1
    assert "1" in agent.inner_text("#queue-title")
    agent.screenshot(path=shots / "agent-phone-queue.png", full_page=True)
    time.sleep(1)  # give a wrong retry the chance to slip through
    assert browse.posts("/v1/reports") == 0
    with live.api() as api:
        assert api.get("/v1/reports", params={"limit": 1}).json()["total"] == before

    agent.context.set_offline(False)
    agent.wait_for_selector("#queue", state="hidden")
    agent.wait_for_selector("#result[data-report-id]")
    report_id = int(agent.get_attribute("#result", "data-report-id"))
    time.sleep(1)  # and a second upload the chance to happen
    assert browse.posts("/v1/reports") == 1
    with live.api() as api:
        page = api.get("/v1/reports", params={"limit": 5}).json()
    assert page["total"] == before + 1
    report = page["items"][0]
    assert report["id"] == report_id
    assert (report["location"]["lat"], report["location"]["lon"]) == pytest.approx(NANCY)
    assert report["image"]["sha256"] == hashlib.sha256(photo).hexdigest()
    observed, received = (datetime.fromisoformat(report[k]) for k in ("observed_at", "received_at"))
    assert observed < received  # dated when it was taken (captured_at), not when it arrived
    assert agent.evaluate("""() => new Promise((ok) => {
        const open = indexedDB.open("vipare-agent");
        open.onsuccess = () => {
            const all = open.result.transaction("outbox").objectStore("outbox").getAll();
            all.onsuccess = () => ok(all.result.length);
        };
    })""") == 0


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)
def test_refusals_are_explained(live: Live, browse: Browse, shots: Path) -> None:
    agent = browse.page(viewport=PHONE, locale="en-GB", where=METZ)
    agent.goto("/")
    agent.wait_for_selector("#sign-in")
    agent.screenshot(path=shots / "agent-phone-sign-in.png")
    agent.fill("#key-input", "vpr_0123456789_" + "x" * 43)
    agent.click("#key-form button[type=submit]")
    agent.wait_for_selector("#message:has-text('unknown or revoked')")
    assert agent.is_visible("#sign-in")
    agent.fill("#key-input", live.keys["manager"])  # the agent's page keeps agent keys only
    agent.click("#key-form button[type=submit]")
    agent.wait_for_selector("#message:has-text('not an agent key')")
    assert agent.is_visible("#sign-in")
    assert agent.evaluate("() => localStorage.getItem('vipare.key.agent')") is None
    sign_in(agent, live.keys["agent"])
    agent.set_input_files("#pick", files=[{"name": "p.jpg", "mimeType": "image/jpeg", "buffer": deposit_photo(77)}])
    agent.wait_for_function("() => !document.getElementById('send').disabled")
    agent.click("#send")
    agent.wait_for_selector("#result[data-report-id]")

    agent.set_input_files("#pick", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo"}])
    agent.click("#send")
    agent.wait_for_selector("#queue-list li[data-status=refused]")
    assert "not a photo the service can read" in agent.inner_text("#message")
    agent.click("#queue-list li[data-status=refused] button")  # Remove
    agent.wait_for_selector("#queue", state="hidden")

    big = b"\xff\xd8" + bytes(MAX_IMAGE_BYTES)  # cannot be resized, so refused before it is queued
    agent.set_input_files("#pick", files=[{"name": "big.jpg", "mimeType": "image/jpeg", "buffer": big}])
    agent.wait_for_selector("#message:has-text('too large (at most 2.5 MB)')")
    assert agent.is_hidden("#draft") and agent.is_hidden("#queue")

    lost = browse.page(viewport=PHONE, locale="fr-FR")  # no position: the permission is not granted
    lost.goto("/")
    sign_in(lost, live.keys["agent"])
    lost.set_input_files("#pick", files=[{"name": "p.jpg", "mimeType": "image/jpeg", "buffer": deposit_photo(78)}])
    lost.wait_for_selector("#position-retry")
    assert "La localisation est refusée" in lost.inner_text("#position")
    lost.wait_for_selector("#pin-map")  # no position: the agent places the photo (test_pages_agent_app.py)
    assert not lost.evaluate(SIDEWAYS_SCROLL)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)
def test_other_sizes_and_missing_map_library(live: Live, browse: Browse, shots: Path, deposit_file: Path) -> None:
    with live.api("agent") as api:  # an incident of its own, whatever ran before
        sent = api.post("/v1/reports", files={"photo": ("p.jpg", deposit_photo(4242), "image/jpeg")},
                        data={"lat": str(STRASBOURG[0]), "lon": str(STRASBOURG[1]), "accuracy_m": "5"})
    assert sent.status_code in (200, 201) and sent.json()["incident"] is not None
    agent = browse.page(viewport=DESKTOP, locale="en-GB", where=METZ)
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    agent.set_input_files("#pick", deposit_file)
    agent.wait_for_function("() => document.getElementById('position').textContent.includes('49.11930')")
    agent.wait_for_function("() => document.getElementById('draft-photo').naturalWidth > 0")
    agent.screenshot(path=shots / "agent-desktop-draft.png")
    agent.click("#cancel")
    assert agent.is_hidden("#draft")

    manager = browse.page(viewport=PHONE, locale="fr-FR")
    manager.goto("/manager")
    sign_in(manager, live.keys["manager"])
    manager.wait_for_selector("#incident-list .incident-entry")
    manager.screenshot(path=shots / "manager-phone-list.png", full_page=True)
    manager.click("#incident-list .incident-entry")
    manager.wait_for_selector("#detail-view[data-id]")
    manager.wait_for_function("() => document.querySelector('#detail-view .photos img')?.naturalWidth > 0")
    manager.screenshot(path=shots / "manager-phone-incident.png", full_page=True)
    assert not manager.evaluate(SIDEWAYS_SCROLL)
    manager.screenshot(path=shots / "manager-phone-viewport.png")  # scrolled to the panel

    no_tiles = browse.page(viewport=DESKTOP, locale="fr-FR")
    no_tiles.route("**/tiles/**", lambda route: route.abort())  # the tile server is down
    no_tiles.goto("/manager")
    sign_in(no_tiles, live.keys["manager"])
    no_tiles.wait_for_selector("#map .tile-notice")
    assert "fond de carte" in no_tiles.inner_text("#map .tile-notice").lower()
    no_tiles.wait_for_selector("#incident-list .incident-entry")  # the rest works
    no_tiles.screenshot(path=shots / "manager-desktop-tiles-down.png")

    bare = browse.page(viewport=DESKTOP, locale="en-GB")
    bare.route("**/vendor/**", lambda route: route.fulfill(status=404, body="not installed"))
    bare.goto("/manager")
    sign_in(bare, live.keys["manager"])
    assert "npm ci --prefix serving/web" in bare.inner_text("#map")
    bare.wait_for_selector("#incident-list .incident-entry")  # the list still works
    bare.screenshot(path=shots / "manager-desktop-no-map-library.png")
