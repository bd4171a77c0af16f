"""The manager's desk in a browser: addresses, bulk scheduling, a crew's round, safe merges and undoing them.

Browser tests (``slow``, ``browser``) at a desktop's size against a real ``vipare serve`` with an
address index imported from a small file in BAN's format, a depot, and the local tile server (see
``test_pages.py``). axe-core checks each state of the page for serious or critical violations.
"""

# ruff: noqa: F811 - the browser fixtures come from test_pages.py and are named as parameters

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.addresses import import_ban
from tests.serving.helpers import deposit_photo, moved
from tests.serving.live import cli_key, live_server
from tests.serving.test_pages import (  # noqa: F401 - fixtures, used by name
    BROWSER,
    DESKTOP,
    NO_BROWSER,
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

BAN_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "ban-sample.csv"
SERPENOISE = (49.11980, 6.17050)  # 5 Rue Serpenoise in the sample
DEPOT = (49.1100, 6.1600)
AXE = Path(__file__).resolve().parents[2] / "serving" / "web" / "node_modules" / "axe-core" / "axe.min.js"
GPX = "{http://www.topografix.com/GPX/1/1}"
_seed = iter(range(70000, 80000))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, stand_in_model: Path, tiles: Tiles) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("desk") / "data"
    keys = {role: cli_key(data, role, f"desk-{role}") for role in ("agent", "manager")}
    index = data / "addresses.npz"
    import_ban(BAN_SAMPLE, index)
    settings = {
        "VIPARE_MODEL_PATH": str(stand_in_model),
        "VIPARE_ANALYSIS_SLOTS": "1",
        "VIPARE_TILE_URL": tiles.url,
        "VIPARE_ADDRESSES_PATH": str(index),
        "VIPARE_DEPOT_LAT": str(DEPOT[0]),
        "VIPARE_DEPOT_LON": str(DEPOT[1]),
    }
    with live_server(data, settings) as server:
        yield Live(base=server.url, keys=keys)


def report(live: Live, lat: float, lon: float) -> int:
    with live.api("agent") as api:
        sent = api.post("/v1/reports", files={"photo": ("p.jpg", deposit_photo(next(_seed)), "image/jpeg")},
                        data={"lat": str(lat), "lon": str(lon), "accuracy_m": "5"})
    assert sent.status_code == 201, sent.text
    incident: int = sent.json()["incident"]["id"]
    return incident


def desk(browse: Browse, live: Live) -> Any:
    page = browse.page(viewport=DESKTOP, locale="fr-FR", bypass_csp=True, timezone_id="Europe/Paris")
    page.goto("/manager")
    sign_in(page, live.keys["manager"])
    page.wait_for_selector("#incident-list .incident-entry")
    return page


def serious(page: Any, state: str, found: dict[str, Any]) -> None:
    """Run axe-core on the page; keep its serious or critical violations under ``state``."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    bad = [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:4]}
           for v in result["violations"] if v["impact"] in ("serious", "critical")]
    if bad:
        found[state] = bad


def test_addresses_bulk_schedule_and_a_round_of_twelve(live: Live, browse: Browse, shots: Path) -> None:
    at_address = report(live, *SERPENOISE)
    ids = [report(live, *moved(49.1000, 6.1500, north_m=80.0 * (k % 4), east_m=80.0 * (k // 4))) for k in range(11)]
    ids.append(at_address)
    page = desk(browse, live)
    found: dict[str, Any] = {}
    serious(page, "list", found)

    entry = page.locator(f".incident-entry[data-id='{at_address}']")
    assert "Rue Serpenoise, 57000 Metz" in entry.inner_text()  # the nearest address, in the list
    with page.expect_download() as download:
        page.click("[data-export=csv]")
    assert "Rue Serpenoise" in Path(download.value.path()).read_text(encoding="utf-8-sig")

    for incident in ids:
        page.check(f".pick[data-id='{incident}']")
    page.wait_for_selector("#bulk:has-text('12')")
    page.fill("#bulk-when", "2026-12-10T08:30")
    page.fill("#bulk-crew", "Équipe Est")
    serious(page, "bulk", found)
    page.click("[data-bulk=scheduled]")
    page.wait_for_selector("#message.ok:has-text('12 signalement(s) désormais')")  # not the export's message
    with live.api() as api:
        for incident in ids:
            request = api.get(f"/open311/v2/requests/{incident}.json").json()[0]
            assert request["expected_datetime"] == "2026-12-10T07:30:00Z"  # 08:30 in Metz
    page.screenshot(path=shots / "manager-desk-bulk.png")

    page.goto("/manager/round?day=2026-12-10&crew=%C3%89quipe%20Est")
    page.wait_for_selector("#stops li")
    assert page.locator("#stops li").count() == 12
    assert page.locator("#round-map .stop-marker").count() == 12
    serious(page, "round", found)
    page.screenshot(path=shots / "manager-round.png", full_page=True)
    with page.expect_download() as download:
        page.click("#gpx")
    points = ET.parse(download.value.path()).getroot().findall(f"{GPX}rte/{GPX}rtept")
    assert len(points) == 14  # the depot, 12 stops, the depot
    order = [int(li.get_attribute("data-incident")) for li in page.locator("#stops li").all()]
    assert sorted(order) == sorted(ids)
    assert not found, f"axe-core: {json.dumps(found)}"


def test_merges_are_safe_and_can_be_undone(live: Live, browse: Browse, shots: Path) -> None:
    base = (49.0800, 6.1300)
    here = report(live, *base)
    near = report(live, *moved(*base, east_m=50.0))
    far = report(live, *moved(*base, north_m=200.0))
    cleaned = report(live, *moved(*base, east_m=-60.0))
    with live.api() as api:
        assert api.post(f"/v1/incidents/{cleaned}/transitions", json={"to": "cleaned"}).status_code == 201
        near_before = api.get(f"/v1/incidents/{near}").json()["properties"]["report_count"]
    page = desk(browse, live)
    found: dict[str, Any] = {}
    page.click(f".incident-entry[data-id='{here}']")
    page.wait_for_selector(f"#detail-view[data-id='{here}']")
    serious(page, "detail", found)

    page.click("#merge-search")
    page.wait_for_selector(f"#merge-candidates button[data-id='{near}']")
    offered = {int(b.get_attribute("data-id")) for b in page.locator("#merge-candidates button").all()}
    assert {near, far} <= offered and cleaned not in offered  # open incidents only

    page.fill("#merge-target", str(cleaned))  # typed: a cleaned target is shown, and refused
    page.click("#merge button:has-text('Comparer')")
    page.wait_for_selector("#merge-preview .message.error")
    assert page.is_disabled("#merge-confirm")

    page.click(f"#merge-candidates button[data-id='{far}']")  # 200 m: over the limit
    page.wait_for_selector(f"#merge-preview[data-target='{far}']")
    page.click("#merge-confirm")
    page.wait_for_selector("#merge-force-row:not([hidden])")
    assert page.get_attribute("#incident-state", "data-state") == "new"  # nothing merged
    serious(page, "merge refused", found)

    page.click(f"#merge-candidates button[data-id='{near}']")
    page.wait_for_selector(f"#merge-preview[data-target='{near}']")
    page.wait_for_function("() => document.querySelectorAll('#merge-preview img').length === 2")  # side by side
    page.screenshot(path=shots / "manager-merge-preview.png")
    page.click("#merge-confirm")
    page.wait_for_selector("#incident-state[data-state=duplicate]")
    with live.api() as api:
        assert api.get(f"/v1/incidents/{near}").json()["properties"]["report_count"] == near_before + 1

    page.click("#unmerge")
    page.wait_for_selector("#incident-state[data-state=new]")
    with live.api() as api:
        restored = api.get(f"/v1/incidents/{here}").json()
        assert restored["properties"]["report_count"] == 1 and restored["properties"]["merged_into"] is None
        assert "unmerged" in restored["history"][-1]["comment"]
        assert api.get(f"/v1/incidents/{near}").json()["properties"]["report_count"] == near_before
    assert not found, f"axe-core: {json.dumps(found)}"


def test_photos_first_all_reachable_in_a_lightbox_labelled_in_french(live: Live, browse: Browse, shots: Path) -> None:
    place = (49.0600, 6.1100)
    incident = report(live, *place)
    for k in range(7):  # seven more photos of the same deposit: one incident, eight photos
        assert report(live, *moved(*place, north_m=2.0 * (k + 1))) == incident
    page = desk(browse, live)
    found: dict[str, Any] = {}
    page.wait_for_function(  # its latest photo, small, in the list
        f"() => document.querySelector(\".incident-entry[data-id='{incident}'] img.thumb\")?.naturalWidth > 0")
    page.click(f".incident-entry[data-id='{incident}']")
    shown = "(n) => document.querySelectorAll('#detail-view .photos figure:not([hidden]) img').length === n"
    page.wait_for_function(shown, arg=6)
    assert page.locator("#detail-view .photos figure[hidden]").count() == 2
    photo_top = page.locator("#detail-view .photos").bounding_box()["y"]
    assert photo_top < page.locator("#detail-view .actions").bounding_box()["y"]  # the photo first
    assert "Dépôt sauvage" in (page.text_content("#detail-view .photos figure:first-child svg.boxes") or "")
    page.click("#more-photos")
    page.wait_for_function(shown, arg=8)
    page.click("#detail-view .photos figure:nth-child(8)")
    page.wait_for_selector("#lightbox[open] img")
    assert "Photo 8 sur 8" in page.inner_text("#lightbox .lightbox-caption")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#lightbox .lightbox-caption:has-text('Photo 1 sur 8')")
    page.wait_for_function("() => document.querySelector('#lightbox img')?.naturalWidth > 0")
    width = page.locator("#lightbox img").bounding_box()["width"]
    assert width > 600  # far beyond the panel's thumbnails
    serious(page, "lightbox", found)
    page.screenshot(path=shots / "manager-lightbox.png")
    page.click("#lightbox-close")
    page.wait_for_selector("#lightbox", state="detached")

    tablet = browse.page(viewport={"width": 820, "height": 1180}, locale="fr-FR", has_touch=True)
    tablet.goto("/manager")
    sign_in(tablet, live.keys["manager"])
    tablet.wait_for_selector("#incident-list .incident-entry")
    tablet.click(f".incident-entry[data-id='{incident}']")
    tablet.wait_for_selector(f"#detail-view[data-id='{incident}']")
    assert not tablet.evaluate("() => document.documentElement.scrollWidth > window.innerWidth")
    tablet.screenshot(path=shots / "manager-tablet.png")
    assert not found, f"axe-core: {json.dumps(found)}"
