"""The agent's page as an app: installable, usable offline, fast on a weak network, placing reports right.

Browser tests (``slow``, ``browser``) drive Debian's Chromium at a phone's size, in French, against a
real ``vipare serve`` (see ``test_pages.py``): the manifest and the service worker make the page
installable (Chromium's own installability check, through the DevTools protocol), a reload while
offline shows the page and its queue, a 12 MP phone JPEG is resized in the browser and keeps its EXIF
position and time in the report, a stale or missing fix makes the agent place a pin, "report anyway"
reaches the manager, "Mes signalements" follows the incident's state, a link brings a key, and
axe-core finds no serious or critical violation in any state of the page.
"""

# ruff: noqa: F811 - the browser fixtures come from test_pages.py and are named as parameters

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from serving.routes import pages
from tests.onnxgen import CYAN, MAGENTA
from tests.serving.helpers import deposit_photo, keyed_photo, phone_photo, plain_photo
from tests.serving.live import cli_key, live_server
from tests.serving.test_pages import (  # noqa: F401 - fixtures, used by name
    BROWSER,
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    METZ,
    NANCY,
    NO_BROWSER,
    PHONE,
    SIDEWAYS_SCROLL,
    STRASBOURG,
    Browse,
    Live,
    Tiles,
    browse,
    chromium,
    shots,
    sign_in,
    tiles,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)]

AXE = pages.NODE_MODULES / "axe-core" / "axe.min.js"
MAX_SENT_BYTES = 1_000_000


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, stand_in_model: Path, tiles: Tiles) -> Iterator[Live]:
    """``vipare serve`` with the stand-in model and the local tiles, taking originals of up to 20 MB."""
    data = tmp_path_factory.mktemp("agent-app") / "data"
    keys = {role: cli_key(data, role, f"app-{role}") for role in ("agent", "manager")}
    settings = {
        "VIPARE_MODEL_PATH": str(stand_in_model),
        "VIPARE_ANALYSIS_SLOTS": "1",
        "VIPARE_MAX_IMAGE_BYTES": str(20_000_000),
        "VIPARE_TILE_URL": tiles.url,
    }
    with live_server(data, settings) as server:
        yield Live(base=server.url, keys=keys)


def photo_file(name: str, data: bytes) -> dict[str, Any]:
    """A JPEG for ``set_input_files``."""
    return {"name": name, "mimeType": "image/jpeg", "buffer": data}


def controlled(page: Any) -> None:
    """Wait until the service worker controls the page."""
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")


def outbox_size(page: Any) -> int:
    return int(page.evaluate("""() => new Promise((ok) => {
        const open = indexedDB.open("vipare-agent");
        open.onsuccess = () => {
            const all = open.result.transaction("outbox").objectStore("outbox").getAll();
            all.onsuccess = () => ok(all.result.length);
        };
    })"""))


# --------------------------------------------------------------------------------------------------


def test_installable_offline_reload_shows_the_queue_then_sends_once(
    live: Live, chromium: Any, shots: Path, tmp_path: Path
) -> None:
    # A profile on disk: Chromium does not offer to install from an incognito-like context.
    context = chromium.browser_type.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, viewport=PHONE,
        locale="fr-FR", is_mobile=True, has_touch=True, base_url=live.base, permissions=["geolocation"],
        geolocation={"latitude": METZ[0], "longitude": METZ[1], "accuracy": 6},
    )
    # Uploads that got an answer. A try while offline (the page's or Background Sync's, which Chromium
    # may fire before it sees the emulated outage) fails without one and keeps the photo queued.
    posts: list[int] = []
    context.on(
        "requestfinished", lambda r: posts.append(1) if r.method == "POST" and r.url.endswith("/v1/reports") else None
    )
    errors: list[str] = []
    try:
        agent = context.pages[0] if context.pages else context.new_page()
        agent.on("pageerror", lambda error: errors.append(str(error)))
        installable_then_offline(live, agent, shots, posts)
    finally:
        context.close()
    assert not errors, errors


def installable_then_offline(live: Live, agent: Any, shots: Path, posts: list[int]) -> None:
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    controlled(agent)

    manifest = agent.evaluate("() => fetch('/manifest.webmanifest').then((r) => r.json())")
    assert manifest["display"] == "standalone" and manifest["start_url"] == "/" and manifest["lang"] == "fr"
    assert {"192x192", "512x512"} <= {icon["sizes"] for icon in manifest["icons"] if icon["type"] == "image/png"}
    cdp = agent.context.new_cdp_session(agent)
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert errors == [], f"Chromium says the page is not installable: {errors}"
    cdp.detach()

    with live.api() as api:
        before = api.get("/v1/reports", params={"limit": 1}).json()["total"]
    agent.context.set_offline(True)
    photo = deposit_photo(6060)
    agent.set_input_files("#take", files=[{"name": "hors-ligne.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    agent.wait_for_function("() => document.getElementById('position').dataset.state === 'device'")
    agent.click("#send")
    agent.wait_for_selector("#queue-list li[data-status=waiting]")

    agent.reload()  # offline: the service worker answers from its cache
    agent.wait_for_selector("body[data-ready=true]")
    assert agent.locator("html").get_attribute("lang") == "fr"
    agent.wait_for_selector("#queue-list li[data-status=waiting]")
    assert agent.locator("#queue-list li").count() == 1
    assert agent.is_visible("#take + label, label[for=take]")
    agent.screenshot(path=shots / "agent-app-offline-reload.png", full_page=True)
    time.sleep(1)
    assert not posts
    with live.api() as api:
        assert api.get("/v1/reports", params={"limit": 1}).json()["total"] == before

    agent.context.set_offline(False)
    agent.wait_for_selector("#queue", state="hidden", timeout=60_000)
    wait_for(lambda: outbox_size(agent) == 0, "the outbox to empty")
    time.sleep(1.5)  # a second sender (the page's retry, Background Sync) gets the chance to send it again
    with live.api() as api:
        page = api.get("/v1/reports", params={"limit": 5}).json()
    assert page["total"] == before + 1
    assert page["items"][0]["image"]["sha256"] == hashlib.sha256(photo).hexdigest()  # small: sent as it was


def test_a_phone_photo_goes_resized_with_its_exif_position_and_time(live: Live, browse: Browse, shots: Path) -> None:
    taken = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    taken_local = taken.astimezone(timezone(timedelta(hours=1)))  # with its offset, as phones write it
    original = phone_photo(7070, lat=NANCY[0], lon=NANCY[1], captured_at=taken_local)
    assert len(original) > 3_000_000
    agent = browse.page(viewport=PHONE, locale="fr-FR", where=METZ, accuracy=6)  # the phone is elsewhere now
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    agent.set_input_files("#pick", files=[{"name": "IMG_7070.jpg", "mimeType": "image/jpeg", "buffer": original}])
    agent.wait_for_function("() => document.getElementById('position').dataset.state === 'photo'")
    assert "GPS de la photo" in agent.inner_text("#position") and "48.69210" in agent.inner_text("#position")
    agent.wait_for_function("() => !document.getElementById('send').disabled")
    assert "2048" in agent.inner_text("#prepared")
    agent.click("#send")
    agent.wait_for_selector("#result[data-report-id]", timeout=60_000)
    report_id = int(agent.get_attribute("#result", "data-report-id"))
    agent.screenshot(path=shots / "agent-app-result.png", full_page=True)

    with live.api() as api:
        report = api.get(f"/v1/reports/{report_id}").json()
    assert report["image"]["size_bytes"] <= MAX_SENT_BYTES, report["image"]  # the file the service received
    assert report["location"]["source"] == "exif"
    assert (report["location"]["lat"], report["location"]["lon"]) == pytest.approx(NANCY, abs=1e-5)
    assert datetime.fromisoformat(report["observed_at"]) == taken
    assert max(report["image"]["width"], report["image"]["height"]) == 2048
    assert report["verdict"]["dumping"]
    assert "dépôt sauvage" in agent.inner_text("#result-details").lower()
    labels = agent.eval_on_selector_all(
        "#result-frame svg.boxes text",
        "(ts) => ts.map((t) => { const b = t.getBBox(); return [b.x, b.y, b.width, b.height]; })",
    )
    width, height = report["image"]["width"], report["image"]["height"]
    for x, y, w, h in labels:  # inside the photo
        assert x >= 0 and y >= 0 and x + w <= width + 1 and y + h <= height + 1


def test_a_stale_or_missing_fix_makes_the_agent_place_the_pin(live: Live, browse: Browse, shots: Path) -> None:
    # No position at all (permission not granted): the pin is asked for before anything is sent.
    lost = browse.page(viewport=PHONE, locale="fr-FR")
    lost.goto("/")
    sign_in(lost, live.keys["agent"])
    lost.set_input_files("#take", files=[{"name": "p.jpg", "mimeType": "image/jpeg", "buffer": deposit_photo(8080)}])
    lost.wait_for_function("() => document.getElementById('position').dataset.state === 'needs-pin'")
    assert lost.is_visible("#pin-map") and lost.is_disabled("#pin-done")
    lost.screenshot(path=shots / "agent-app-pin.png", full_page=True)
    lost.click("#send")
    time.sleep(0.5)
    assert browse.posts("/v1/reports") == 0  # nothing goes without a place
    box = lost.locator("#pin-map").bounding_box()
    lost.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    lost.click("#pin-done")
    lost.wait_for_function("() => document.getElementById('position').dataset.state === 'placed'")
    lost.click("#send")
    lost.wait_for_selector("#result[data-report-id]")
    with live.api() as api:
        report = api.get(f"/v1/reports/{lost.get_attribute('#result', 'data-report-id')}").json()
    assert report["location"]["source"] == "placed"

    # A gallery photo taken days ago, no GPS in it: the phone's fresh fix is not where it was taken.
    old = datetime.now(UTC) - timedelta(days=3)
    agent = browse.page(viewport=PHONE, locale="fr-FR", where=METZ, accuracy=6)
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    agent.set_input_files("#pick", files=[{"name": "vieux.jpg", "mimeType": "image/jpeg",
                                           "buffer": deposit_photo(8081, captured_at=old)}])
    agent.wait_for_function("() => document.getElementById('position').dataset.state === 'needs-pin'")
    assert "il y a 3 jours" in agent.inner_text("#position")
    agent.click("#cancel")

    # An entry refused for lack of a position (queued by an older page): placed, then sent again.
    photo = base64.b64encode(deposit_photo(8082)).decode()
    agent.evaluate("""(b64) => new Promise((ok, fail) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
        const open = indexedDB.open("vipare-agent");
        open.onsuccess = () => {
            const tx = open.result.transaction("outbox", "readwrite");
            tx.objectStore("outbox").put({ id: "old-entry", bytes, type: "image/jpeg", name: "a.jpg",
                size: bytes.byteLength, lat: null, lon: null, accuracy_m: null, captured_at: null, note: "",
                queued_at: new Date().toISOString(),
                status: "waiting", message: "" });
            tx.oncomplete = () => ok(true);
            tx.onerror = () => fail(tx.error);
        };
    })""", photo)
    agent.reload()
    agent.wait_for_selector("#queue-list li[data-status=place]")
    assert "Aucune position" in agent.inner_text("#queue-list li[data-status=place]")
    agent.click("#queue-list li[data-status=place] button.primary")
    box = agent.locator("#pin-map").bounding_box()
    agent.mouse.click(box["x"] + box["width"] / 3, box["y"] + box["height"] / 3)
    agent.click("#pin-done")
    agent.wait_for_selector("#queue", state="hidden")
    agent.wait_for_selector("#result[data-report-id]")
    assert not agent.evaluate(SIDEWAYS_SCROLL)


def test_report_anyway_reaches_the_manager_and_my_reports_follow_the_state(
    live: Live, browse: Browse, shots: Path
) -> None:
    agent = browse.page(viewport=PHONE, locale="fr-FR", where=NANCY, accuracy=5)
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    agent.set_input_files("#take", files=[{"name": "rien.jpg", "mimeType": "image/jpeg", "buffer": plain_photo(9090)}])
    agent.wait_for_function("() => !document.getElementById('send').disabled")
    agent.click("#send")
    agent.wait_for_selector("#result[data-report-id]")
    assert agent.inner_text("#verdict").strip() == "Aucun dépôt vu"
    agent.click("#report-anyway")
    agent.wait_for_selector("#verdict.anyway")
    report_id = int(agent.get_attribute("#result", "data-report-id"))
    with live.api() as api:
        report = api.get(f"/v1/reports/{report_id}").json()
        assert report["agent_says_deposit"] and report["incident"] is not None
        incident_id = report["incident"]["id"]
        listed = api.get("/v1/incidents", params={"limit": 200}).json()
        assert incident_id in [f["id"] for f in listed["features"]]

    agent.set_input_files("#take", files=[photo_file("depot.jpg", deposit_photo(9091))])
    agent.wait_for_function("() => !document.getElementById('send').disabled")
    agent.click("#send")
    agent.wait_for_function(f"() => document.getElementById('result').dataset.reportId !== '{report_id}'")
    second = int(agent.get_attribute("#result", "data-report-id"))
    agent.wait_for_selector(f"#mine-list li[data-report='{second}']")
    assert agent.locator(f"#mine-list li[data-report='{report_id}']").count() == 1  # each send has its own line

    with live.api() as api:
        moved = api.post(f"/v1/incidents/{incident_id}/transitions", json={"to": "confirmed", "comment": "vu"})
        assert moved.status_code == 201, moved.text
    agent.reload()
    agent.wait_for_selector(f"#mine-list li[data-report='{report_id}'][data-state=confirmed]")
    assert "Confirmé" in agent.inner_text(f"#mine-list li[data-report='{report_id}']")
    agent.wait_for_function("() => [...document.querySelectorAll('#mine-list img')].some((i) => i.naturalWidth > 0)")
    agent.screenshot(path=shots / "agent-app-mine.png", full_page=True)


def test_a_photo_after_cleaning_proposes_cleaned_to_the_manager(live: Live, browse: Browse, shots: Path) -> None:
    agent = browse.page(viewport=PHONE, locale="fr-FR", where=STRASBOURG, accuracy=5)
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    agent.set_input_files("#take", files=[photo_file("avant.jpg", deposit_photo(9595))])
    agent.wait_for_function("() => !document.getElementById('send').disabled")
    agent.click("#send")
    agent.wait_for_selector("#result[data-report-id]")
    with live.api() as api:
        report_id = agent.get_attribute("#result", "data-report-id")
        incident_id = api.get(f"/v1/reports/{report_id}").json()["incident"]["id"]
    button = agent.locator(f"#mine-list button.after-photo[data-incident='{incident_id}']").first
    with agent.expect_file_chooser() as chooser:
        button.click()
    chooser.value.set_files(files=[photo_file("apres.jpg", plain_photo(9596))])
    assert f"n° {incident_id}" in agent.inner_text("#message")
    agent.wait_for_function("() => !document.getElementById('send').disabled")
    agent.click("#send")
    agent.wait_for_selector("#result-details:has-text('semble nettoyé')")
    agent.screenshot(path=shots / "agent-app-after.png", full_page=True)

    manager = browse.page(viewport=DESKTOP, locale="fr-FR")
    manager.goto("/manager")
    sign_in(manager, live.keys["manager"])
    manager.click(f"#incident-list .incident-entry[data-id='{incident_id}']")
    manager.wait_for_selector(f"#detail-view[data-id='{incident_id}'] #after-photos", timeout=30_000)
    manager.wait_for_function("() => document.querySelectorAll('#after-photos img').length === 2")
    manager.screenshot(path=shots / "manager-after-photo.png")
    manager.click("#cleaned-proposal button")
    manager.wait_for_selector("#incident-state[data-state=cleaned]")
    with live.api() as api:
        detail = api.get(f"/v1/incidents/{incident_id}").json()
    assert detail["properties"]["status"] == "cleaned" and "n°" in detail["history"][-1]["comment"]


def test_many_detections_are_summarised_and_labelled_apart_with_big_touch_targets(
    live: Live, browse: Browse, shots: Path
) -> None:
    agent = browse.page(viewport=PHONE, locale="fr-FR", where=METZ, accuracy=5)
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    photo = keyed_photo(9797, {(3, 2): MAGENTA, (4, 2): MAGENTA, (3, 3): CYAN})  # three neighbouring cells
    agent.set_input_files("#take", files=[photo_file("trois.jpg", photo)])
    agent.wait_for_function("() => !document.getElementById('send').disabled")
    agent.click("#send")
    agent.wait_for_selector("#result[data-report-id]")
    assert "Vu : 2 dépôts sauvages, 1 poubelle" in agent.inner_text("#result-details")
    spots = agent.eval_on_selector_all(
        "#result-frame svg.boxes rect.label-back",
        "(rs) => rs.map((r) => ['x', 'y', 'width', 'height'].map((a) => Number(r.getAttribute(a))))",
    )
    assert len(spots) == 3
    for i, (x, y, w, h) in enumerate(spots):
        assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480  # inside the 640 x 480 photo
        for x2, y2, w2, h2 in spots[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y, "two labels overlap"
    agent.screenshot(path=shots / "agent-app-many.png", full_page=True)
    small = agent.evaluate("""() => [...document.querySelectorAll('button, label.button')]
        .filter((b) => b.offsetParent !== null)
        .map((b) => [b.textContent.trim(), b.getBoundingClientRect()])
        .filter(([, r]) => r.height < 44 || r.width < 44).map(([t]) => t)""")
    assert not small, f"touch targets under 44 px: {small}"


def test_a_link_brings_an_agent_key_and_no_other(live: Live, browse: Browse) -> None:
    agent = browse.page(viewport=PHONE, locale="fr-FR")
    agent.goto(f"/#key={live.keys['agent']}")
    agent.wait_for_selector("body[data-ready=true]")
    assert "#" not in agent.url and agent.is_hidden("#sign-in")
    assert agent.evaluate("() => localStorage.getItem('vipare.key.agent')") == live.keys["agent"]
    assert "Clé reçue" in agent.inner_text("#message")

    other = browse.page(viewport=PHONE, locale="fr-FR")
    other.goto(f"/#key={live.keys['manager']}")
    other.wait_for_selector("body[data-ready=true]")
    assert other.evaluate("() => localStorage.getItem('vipare.key.agent')") is None
    assert "pas une clé d'agent" in other.inner_text("#message") and other.is_visible("#sign-in")


# --------------------------------------------------------------------------------------------------
# Accessibility


def axe_violations(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


def brief(violations: list[dict[str, Any]]) -> str:
    return json.dumps([{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:5]} for v in violations])


@pytest.mark.skipif(not AXE.exists(), reason="needs axe-core (npm ci --prefix serving/web)")
def test_no_serious_accessibility_violation_in_any_state(live: Live, chromium: Any) -> None:
    context = chromium.new_context(
        viewport=PHONE, locale="fr-FR", base_url=live.base, bypass_csp=True, is_mobile=True, has_touch=True,
        geolocation={"latitude": METZ[0], "longitude": METZ[1], "accuracy": 6}, permissions=["geolocation"],
    )
    page = context.new_page()
    found: dict[str, str] = {}

    def check(state: str) -> None:
        violations = axe_violations(page)
        if violations:
            found[state] = brief(violations)

    try:
        page.goto("/")
        page.wait_for_selector("#sign-in")
        check("first open")
        page.fill("#key-input", "vpr_0000_nothing")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#message.error")
        check("error")
        sign_in(page, live.keys["agent"])
        page.set_input_files("#take", files=[photo_file("p.jpg", deposit_photo(9393))])
        page.wait_for_function("() => !document.getElementById('send').disabled")
        check("draft")
        page.click("#send")
        page.wait_for_selector("#result[data-report-id]")
        check("result")
        context.set_offline(True)
        page.set_input_files("#take", files=[photo_file("q.jpg", deposit_photo(9394))])
        page.wait_for_function("() => !document.getElementById('send').disabled")
        page.click("#send")
        page.wait_for_selector("#queue-list li[data-status=waiting]")
        check("queue, offline")
        context.set_offline(False)
        page.wait_for_selector("#queue", state="hidden", timeout=60_000)
    finally:
        context.close()
    assert not found, f"axe-core found serious or critical violations: {found}"
