"""The statistics page (``/manager/stats``): the figures it shows are the API's, and it is accessible.

A fast ``TestClient`` test checks that the page is served like the others; browser tests (``slow``,
``browser``) drive Debian's Chromium against a real ``vipare serve`` (see ``test_pages.py``) with a
few incidents, one cleaned and one deposit again at its place: the current week's figures, the
period's totals and the hotspots on the map equal ``/v1/statistics``'s, and axe-core finds no serious
or critical violation, in English and in French.
"""

# ruff: noqa: F811 - the browser fixtures come from test_pages.py and are named as parameters

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.routes import pages
from tests.serving.helpers import Server, deposit_photo, moved
from tests.serving.live import cli_key, live_server
from tests.serving.test_pages import (  # noqa: F401 - fixtures, used by name
    BROWSER,
    DESKTOP,
    NO_BROWSER,
    PHONE,
    SIDEWAYS_SCROLL,
    Browse,
    Live,
    Tiles,
    browse,
    chromium,
    shots,
    sign_in,
    tiles,
)

AXE = pages.NODE_MODULES / "axe-core" / "axe.min.js"
TOULOUSE = (43.6047, 1.4442)


def test_the_page_is_served_with_a_strict_policy(server: Server) -> None:
    response = server.client.get("/manager/stats")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert 'src="/static/stats.js"' in response.text and 'id="weeks"' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert 'href="/manager/stats"' in server.client.get("/manager").text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, stand_in_model: Path, tiles: Tiles) -> Iterator[Live]:
    """``vipare serve`` with the stand-in model and the local tiles; three incidents near Toulouse, one of
    them cleaned then reported again at the same place (a hotspot of two), one rejected (not counted)."""
    data = tmp_path_factory.mktemp("stats-page") / "data"
    keys = {role: cli_key(data, role, f"stats-{role}") for role in ("agent", "manager")}
    settings = {"VIPARE_MODEL_PATH": str(stand_in_model), "VIPARE_ANALYSIS_SLOTS": "1", "VIPARE_TILE_URL": tiles.url}
    with live_server(data, settings) as server:
        running = Live(base=server.url, keys=keys)
        with running.api("agent") as agent, running.api() as manager:

            def report(seed: int, place: tuple[float, float]) -> int:
                photo = {"photo": ("deposit.jpg", deposit_photo(seed), "image/jpeg")}
                answer = agent.post("/v1/reports", files=photo, data={"lat": place[0], "lon": place[1]})
                assert answer.status_code == 201, answer.text
                incident: int = answer.json()["incident"]["id"]
                return incident

            def change(incident: int, to: str) -> None:
                assert manager.post(f"/v1/incidents/{incident}/transitions", json={"to": to}).status_code == 201

            change(report(300, TOULOUSE), "cleaned")
            report(301, moved(*TOULOUSE, north_m=10))  # a deposit again where the first was cleaned
            report(302, moved(*TOULOUSE, east_m=2000))
            change(report(303, moved(*TOULOUSE, east_m=4000)), "rejected")
        yield running


def _shown(page: Any, selector: str) -> str:
    return str(page.inner_text(selector)).strip()


def _hours(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)
def test_the_page_shows_the_apis_figures(live: Live, browse: Browse, shots: Path) -> None:
    page = browse.page(viewport=DESKTOP, locale="en-GB")
    page.goto("/manager/stats")
    sign_in(page, live.keys["manager"])
    page.wait_for_selector("body[data-loaded]")
    tz = page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone")
    with live.api() as api:
        body = api.get("/v1/statistics", params={"tz": tz}).json()

    week = body["weeks"][-1]  # the current week
    assert (week["opened"], week["cleaned"]) == (3, 1)  # the rejected incident is not counted
    row = f'#weeks tr[data-week="{week["week"]}"]'
    assert page.locator("#weeks tbody tr").first.get_attribute("data-week") == week["week"]  # newest first
    assert _shown(page, f"{row} [data-field=opened]") == str(week["opened"])
    assert _shown(page, f"{row} [data-field=cleaned]") == str(week["cleaned"])
    assert _shown(page, f"{row} [data-field=median]") == _hours(week["median_hours_to_clean"])
    assert page.locator("#weeks tbody tr").count() == len(body["weeks"])

    totals = body["totals"]
    assert _shown(page, "#total-opened") == str(totals["opened"])
    assert _shown(page, "#total-cleaned") == str(totals["cleaned"])
    assert _shown(page, "#total-median") == f"{_hours(totals['median_hours_to_clean'])} h"
    for name, figures in body["by_class"].items():
        assert _shown(page, f'#classes tr[data-class="{name}"] [data-field=opened]') == str(figures["opened"])

    (spot,) = body["hotspots"]
    assert spot["count"] == 2
    circle = page.locator("#map path.hotspot")
    assert circle.count() == 1 and circle.get_attribute("data-count") == "2"
    page.screenshot(path=shots / "stats-desktop.png", full_page=True)

    with page.expect_download() as download:
        page.click("[data-csv=excel]")
    saved = download.value.path()
    assert Path(saved).read_bytes().startswith(b"\xef\xbb\xbfweek;week_start;opened;")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)
@pytest.mark.skipif(not AXE.exists(), reason="needs axe-core (npm ci --prefix serving/web)")
@pytest.mark.parametrize(("locale", "viewport"), [("fr-FR", PHONE), ("en-GB", DESKTOP)], ids=["fr-phone", "en"])
def test_no_serious_accessibility_violation(
    live: Live, chromium: Any, shots: Path, locale: str, viewport: dict[str, int]
) -> None:
    context = chromium.new_context(viewport=viewport, locale=locale, base_url=live.base, bypass_csp=True)
    try:
        page = context.new_page()
        page.goto("/manager/stats")
        page.wait_for_selector("body[data-ready=true]")
        found = {"sign-in": axe_violations(page)}
        sign_in(page, live.keys["manager"])
        page.wait_for_selector("body[data-loaded]")
        if locale == "fr-FR":
            assert page.locator("html").get_attribute("lang") == "fr"
            assert "Semaine par semaine" in page.inner_text("#weeks-title")
        found["figures"] = axe_violations(page)
        assert not page.evaluate(SIDEWAYS_SCROLL)  # the tables scroll inside their cards on a phone
        page.screenshot(path=shots / f"stats-{locale}-{viewport['width']}.png", full_page=True)
    finally:
        context.close()
    brief = {state: [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in violations]
             for state, violations in found.items() if violations}
    assert not brief, f"axe-core found serious or critical violations: {brief}"
