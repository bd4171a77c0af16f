"""The pages' side of the review loop, in a real browser against a real service.

An agent reports anyway a photo the model found nothing in (online and through the offline queue)
and the manager's list shows its incident first with a badge; a manager reviews a photo (deletes a
box, changes a class, draws a box, saves) and the API holds exactly those boxes; a false alarm; a
rejection that marks the photos as negatives, or not.

The service, browser and request recording are :mod:`tests.serving.test_pages`' fixtures (this
module gets its own ``vipare serve`` with an empty data folder). Marked ``slow`` and ``browser``;
skipped without playwright, Chromium or the pages' map libraries.
"""

# The fixtures imported from test_pages are used by name as test arguments, which ruff reads as
# redefinitions of the imported names.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.onnxgen import CYAN, MAGENTA
from tests.serving.helpers import DEPOSIT_BOX, DEPOSIT_CELL, cell_box, deposit_photo, keyed_photo, moved, plain_photo
from tests.serving.test_pages import (  # noqa: F401 - fixtures, used by name
    BROWSER,
    DESKTOP,
    NO_BROWSER,
    PHONE,
    Browse,
    Live,
    browse,
    chromium,
    live,
    shots,
    sign_in,
    tiles,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.skipif(not BROWSER, reason=NO_BROWSER)]

LYON = (45.7640, 4.8357)
BIN_CELL = (6, 4)
BIN_BOX = cell_box(*BIN_CELL)
REVIEW_SHOT = Path("/tmp/review.png")


def send(live: Live, photo: bytes, where: tuple[float, float], **fields: str) -> dict[str, Any]:
    """Upload a photo with the agent's key at ``where``; the report."""
    with live.api("agent") as api:
        answer = api.post("/v1/reports", files={"photo": ("p.jpg", photo, "image/jpeg")},
                          data={"lat": str(where[0]), "lon": str(where[1]), "accuracy_m": "5", **fields})
    assert answer.status_code in (200, 201), answer.text
    report: dict[str, Any] = answer.json()
    return report


def reviews(live: Live, report_id: int) -> list[dict[str, Any]]:
    with live.api() as api:
        answer = api.get(f"/v1/reports/{report_id}/reviews")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def open_incident(page: Any, incident_id: int) -> None:
    page.click(f"#incident-list .incident-entry[data-id='{incident_id}']")
    page.wait_for_selector(f"#detail-view[data-id='{incident_id}']")


def open_review(page: Any, report_id: int) -> Any:
    """Open the review of a report's photo from the keyboard; the dialog, once its photo is shown."""
    page.focus(f"#detail-view button.review-open[data-report='{report_id}']")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"dialog#review[data-report='{report_id}'][open]")
    page.wait_for_function("() => document.querySelector('#review .review-stage img')?.naturalWidth > 0")
    return page.locator("dialog#review")


def photo_point(page: Any, x: float, y: float) -> tuple[float, float]:
    """Where photo pixel (x, y) of the review's photo is on the screen."""
    point = page.evaluate(
        """([x, y]) => {
            const svg = document.querySelector("#review svg.review-boxes");
            const frame = svg.getBoundingClientRect();
            const [, , w, h] = svg.getAttribute("viewBox").split(" ").map(Number);
            return [frame.left + x / w * frame.width, frame.top + y / h * frame.height];
        }""",
        [x, y],
    )
    return float(point[0]), float(point[1])


def test_report_anyway_then_first_in_the_list(live: Live, browse: Browse, shots: Path) -> None:
    agent = browse.page(viewport=PHONE, locale="fr-FR", where=LYON)
    agent.goto("/")
    sign_in(agent, live.keys["agent"])
    agent.set_input_files("#pick", files=[{"name": "rue.jpg", "mimeType": "image/jpeg", "buffer": plain_photo(31)}])
    agent.wait_for_function("() => document.getElementById('position').textContent.includes('45.76400')")
    agent.click("#send")
    agent.wait_for_selector("#result[data-report-id]")
    report_id = int(agent.get_attribute("#result", "data-report-id"))
    assert agent.inner_text("#verdict").strip() == "Aucun dépôt vu"  # and no "null" after it
    button = agent.locator("#report-anyway")
    assert button.inner_text() == "Signaler quand même" and button.is_visible()
    agent.screenshot(path=shots / "agent-phone-no-deposit.png", full_page=True)
    with live.api() as api:
        assert api.get(f"/v1/reports/{report_id}").json()["incident"] is None

    # Offline, the photo waits in the queue like any other, then goes once.
    agent.context.set_offline(True)
    button.click()
    agent.wait_for_selector("#queue-list li[data-status=waiting]")
    assert "Signalée quand même" in agent.inner_text("#queue-list")
    agent.screenshot(path=shots / "agent-phone-anyway-queued.png", full_page=True)
    agent.context.set_offline(False)
    agent.wait_for_selector("#queue", state="hidden")
    agent.wait_for_selector("#verdict.anyway")
    assert int(agent.get_attribute("#result", "data-report-id")) == report_id  # the same report, upgraded
    assert agent.inner_text("#verdict").strip() == "Signalé par vous comme dépôt"
    details = agent.inner_text("#result-details")
    assert "À vérifier par un responsable." in details
    assert agent.is_hidden("#anyway-offer")
    agent.screenshot(path=shots / "agent-phone-anyway-result.png", full_page=True)
    assert browse.posts("/v1/reports") == 2

    with live.api() as api:
        report = api.get(f"/v1/reports/{report_id}").json()
        assert report["agent_says_deposit"] is True and report["incident"] is not None
        incident_id = report["incident"]["id"]
        assert f"n° {incident_id}" in details
        assert api.get(f"/v1/incidents/{incident_id}").json()["properties"]["to_review"] is True
        assert api.get("/v1/reports", params={"limit": 1}).json()["total"] == 1  # one photo, one report
    send(live, deposit_photo(32), moved(*LYON, north_m=900))  # a newer incident, nothing to review

    manager = browse.page(viewport=DESKTOP, locale="fr-FR")
    manager.goto("/manager")
    sign_in(manager, live.keys["manager"])
    manager.wait_for_selector("#incident-list .incident-entry >> nth=1")
    first = manager.locator("#incident-list .incident-entry").first
    assert first.get_attribute("data-id") == str(incident_id)
    assert first.get_attribute("data-to-review") == "true"
    assert first.locator(".badge.review").inner_text() == "À vérifier"
    assert manager.locator("#incident-list .badge.review").count() == 1
    open_incident(manager, incident_id)
    assert manager.inner_text("#incident-to-review") == "À vérifier"
    assert "Signalée quand même par l'agent" in manager.inner_text("#detail-view .photos")
    manager.screenshot(path=shots / "manager-desktop-to-review.png")


def test_manager_reviews_a_photo(live: Live, browse: Browse, shots: Path) -> None:
    where = moved(*LYON, east_m=3000)
    report = send(live, keyed_photo(41, {DEPOSIT_CELL: MAGENTA, BIN_CELL: CYAN}), where)
    labels = [d["label"] for d in report["detections"]]
    assert sorted(labels) == ["bin", "dumped_waste"]
    deposit_index, bin_index = labels.index("dumped_waste"), labels.index("bin")
    report_id, incident_id = report["id"], report["incident"]["id"]

    manager = browse.page(viewport=DESKTOP, locale="en-GB")
    manager.goto("/manager")
    sign_in(manager, live.keys["manager"])
    open_incident(manager, incident_id)
    dialog = open_review(manager, report_id)
    assert "Not reviewed yet" in dialog.locator("#review-state").inner_text()
    items = dialog.locator(".review-item")
    assert items.count() == 2 and dialog.locator("svg rect.box").count() == 2

    dialog.locator(f".review-item[data-origin='{bin_index}'] .review-delete").click()  # the bin: not wanted
    dialog.locator(f".review-item[data-origin='{deposit_index}'] select").select_option("overflowing_bin")
    drawn = (40.0, 60.0, 200.0, 140.0)
    start, end = photo_point(manager, *drawn[:2]), photo_point(manager, *drawn[2:])
    manager.mouse.move(*start)
    manager.mouse.down()
    manager.mouse.move(end[0], end[1], steps=8)
    manager.mouse.up()
    assert dialog.locator(".review-item").count() == 2
    assert dialog.locator(".review-item[data-origin=drawn] select").input_value() == "dumped_waste"
    dialog.locator("#review-show-model").check()  # the model's boxes, dashed, under the review's
    assert dialog.locator("svg rect.model").count() == 2
    manager.screenshot(path=REVIEW_SHOT)
    manager.screenshot(path=shots / "manager-desktop-review.png")
    dialog.locator("#review-save").click()
    manager.wait_for_selector("dialog#review[data-saved]")
    assert "Reviewed by browser-manager" in dialog.locator("#review-state").inner_text()

    found = reviews(live, report_id)
    assert len(found) == 1
    review = found[0]
    assert review["deposit"] is True and review["source"] == "review" and "browser-manager" in review["reviewer"]
    kept = [b for b in review["boxes"] if b["detection"] is not None]
    new = [b for b in review["boxes"] if b["detection"] is None]
    assert len(review["boxes"]) == 2 and len(kept) == 1 and len(new) == 1
    assert kept[0]["label"] == "overflowing_bin" and kept[0]["detection"] == deposit_index
    assert kept[0]["xyxy"] == pytest.approx(DEPOSIT_BOX)
    assert new[0]["label"] == "dumped_waste"
    assert new[0]["xyxy"] == pytest.approx(drawn, abs=3)  # one screen pixel is about 1.5 photo pixels here

    # The incident's history says so, and the photo shows who reviewed it.
    manager.wait_for_selector(f"#detail-view .history :text('review of report #{report_id}')")
    assert "Reviewed by browser-manager" in manager.inner_text(f"#detail-view figure[data-report='{report_id}']")

    # Opened again: the review's boxes, not the model's; the model's still one click away.
    manager.keyboard.press("Escape")
    manager.wait_for_selector("dialog#review", state="detached")
    dialog = open_review(manager, report_id)
    assert dialog.locator(".review-item").count() == 2
    assert dialog.locator(".review-item[data-origin=drawn]").count() == 1
    assert dialog.locator(f".review-item[data-origin='{deposit_index}'] select").input_value() == "overflowing_bin"
    assert dialog.locator("svg rect.model").count() == 0
    dialog.locator("#review-show-model").check()
    assert dialog.locator("svg rect.model").count() == 2

    # From the keyboard: change a class with the arrow keys (the focus stays on the select), add a
    # box, move it with the arrow keys, delete it.
    select = dialog.locator(".review-item[data-origin=drawn] select")
    select.focus()
    manager.keyboard.press("ArrowDown")
    assert select.input_value() == "overflowing_bin"
    assert manager.evaluate("() => document.activeElement.id") == select.get_attribute("id")
    dialog.locator("#review-add").focus()
    manager.keyboard.press("Enter")
    assert dialog.locator(".review-item").count() == 3
    assert manager.evaluate("() => document.activeElement.classList.contains('review-stage')")
    before = dialog.locator(".review-item.selected").count()
    added = [float(v) for v in dialog.locator("svg rect.box.selected").evaluate(
        "r => ['x', 'y'].map((k) => r.getAttribute(k))")]
    manager.keyboard.press("ArrowRight")
    moved_to = [float(v) for v in dialog.locator("svg rect.box.selected").evaluate(
        "r => ['x', 'y'].map((k) => r.getAttribute(k))")]
    assert moved_to == pytest.approx([added[0] + 6.4, added[1]])  # 1 % of the photo's 640 px
    manager.keyboard.press("Delete")
    assert before == 1 and dialog.locator(".review-item").count() == 2

    # Saved again: the first review becomes history, the new one the photo's labels.
    assert dialog.locator("#review-history").is_hidden()
    dialog.locator("#review-save").click()
    manager.wait_for_selector("#review-history:has-text('Earlier reviews (1)')")
    assert [r["boxes"][-1]["label"] for r in reviews(live, report_id)] == ["dumped_waste", "overflowing_bin"]
    manager.keyboard.press("Escape")
    manager.wait_for_selector("dialog#review", state="detached")
    assert manager.evaluate("() => document.activeElement.dataset.report") == str(report_id)  # back to its opener


def test_false_alarm_on_a_phone(live: Live, browse: Browse, shots: Path) -> None:
    report = send(live, keyed_photo(51, {DEPOSIT_CELL: MAGENTA, BIN_CELL: CYAN}), moved(*LYON, east_m=6000))
    bin_index = [d["label"] for d in report["detections"]].index("bin")
    manager = browse.page(viewport=PHONE, locale="fr-FR")
    manager.goto("/manager")
    sign_in(manager, live.keys["manager"])
    open_incident(manager, report["incident"]["id"])
    dialog = open_review(manager, report["id"])
    assert dialog.locator("#review-false-alarm").inner_text() == "Pas de dépôt (fausse alerte)"

    # A finger draws a box too (touch events become pointer events); a false alarm drops it with
    # the model's deposit box, as a photo with no deposit keeps only its normal bins.
    start, end = photo_point(manager, 400, 40), photo_point(manager, 560, 200)
    touch = manager.context.new_cdp_session(manager)
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": start[0], "y": start[1]}]})
    for step in range(1, 6):
        x, y = (start[i] + (end[i] - start[i]) * step / 5 for i in range(2))
        touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert dialog.locator(".review-item[data-origin=drawn]").count() == 1
    assert not manager.evaluate("() => document.documentElement.scrollWidth > window.innerWidth")
    manager.screenshot(path=shots / "manager-phone-review.png")
    dialog.locator("#review-note").fill("une ombre")
    dialog.locator("#review-false-alarm").click()
    manager.wait_for_selector("dialog#review[data-saved]")
    assert "Marquée sans dépôt (fausse alerte)" in dialog.locator("#review-state").inner_text()

    (review,) = reviews(live, report["id"])
    assert review["deposit"] is False and review["note"] == "une ombre"
    assert review["boxes"] == [{"label": "bin", "xyxy": list(BIN_BOX), "detection": bin_index}]  # the bin stays


def test_rejection_marks_the_photos_as_negatives(live: Live, browse: Browse) -> None:
    where = moved(*LYON, north_m=-4000)
    reviewed = send(live, deposit_photo(61), where)
    unreviewed = send(live, deposit_photo(62), moved(*where, east_m=5))
    incident_id = reviewed["incident"]["id"]
    assert unreviewed["incident"]["id"] == incident_id
    with live.api() as api:
        answer = api.post(f"/v1/reports/{reviewed['id']}/review",
                          json={"deposit": True, "boxes": [{"label": "dumped_waste", "xyxy": list(DEPOSIT_BOX),
                                                            "detection": 0}]})
        assert answer.status_code == 201, answer.text
    kept = send(live, deposit_photo(63), moved(*LYON, north_m=-8000))  # rejected without negatives

    manager = browse.page(viewport=DESKTOP, locale="fr-FR")
    manager.goto("/manager")
    sign_in(manager, live.keys["manager"])
    open_incident(manager, incident_id)
    box = manager.locator("#negatives")
    assert box.is_checked()
    assert manager.inner_text("label[for=negatives]") == "Marquer les photos comme sans dépôt"
    manager.click("#detail-view button[data-to=rejected]")
    manager.wait_for_selector("#incident-state[data-state=rejected]")

    assert len(reviews(live, reviewed["id"])) == 1  # its own review stands
    (negative,) = reviews(live, unreviewed["id"])
    assert negative["deposit"] is False and negative["boxes"] == [] and negative["source"] == "rejection"
    assert "browser-manager" in negative["reviewer"]
    assert "Marquée sans dépôt au rejet" in manager.inner_text(f"#detail-view figure[data-report='{unreviewed['id']}']")

    manager.click("#detail-view button.back")
    open_incident(manager, kept["incident"]["id"])
    manager.uncheck("#negatives")
    manager.click("#detail-view button[data-to=rejected]")
    manager.wait_for_selector("#incident-state[data-state=rejected]")
    assert reviews(live, kept["id"]) == []
