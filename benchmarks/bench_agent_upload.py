"""The agent's page on a weak network: from tapping "Send" to the verdict on screen, original against resized.

A real ``vipare serve`` on 127.0.0.1 (the shipped model, a fresh data folder) and Debian's Chromium
at a phone's size, its network throttled through the DevTools protocol
(``Network.emulateNetworkConditions``: ``--uplink`` Mbit/s up, ``--downlink`` Mbit/s down,
``--latency`` ms). The same 12 MP phone JPEGs (``training.phone_photos``, 4032x3024 with EXIF GPS,
made from ``datasets/samples``) are chosen in the page and sent two ways, alternating:

* original: the page as it was, the file sent as it is (ui-config ``upload_long_side`` 0);
* resized: the page's default, resized in the browser to ``upload_long_side`` (2048 px) at JPEG
  quality ``upload_jpeg_quality`` (0.85), position and time read from the EXIF and sent as fields.

Each photo gets a new JPEG comment so that the service never answers from its duplicate check. The
time from the click on "Send" to the verdict shown is measured in the page; the time the page spent
preparing the photo (reading EXIF, resizing), before "Send" is enabled, is printed apart. The
service worker is blocked (a plain page), so throttling applies to every request.

    python -m benchmarks.bench_agent_upload --photos 3
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from benchmarks.bench_upload import distinct
from benchmarks.cli import command
from serving.launch import cli_key, start_server
from training.phone_photos import make_phone_photos
from vipare.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
METZ = {"latitude": 49.1193, "longitude": 6.1757, "accuracy": 6}
TARGET_S = 4.0


def throttle(page: Any, uplink_mbit: float, downlink_mbit: float, latency_ms: float) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False,
        "latency": latency_ms,
        "uploadThroughput": uplink_mbit * 1e6 / 8,
        "downloadThroughput": downlink_mbit * 1e6 / 8,
    })


def send_once(
    browser: Any, base: str, key: str, photo: Path, original: bool, net: tuple[float, float, float]
) -> dict[str, Any]:
    context = browser.new_context(viewport=PHONE, locale="fr-FR", is_mobile=True, has_touch=True, base_url=base,
                                  geolocation=METZ, permissions=["geolocation"], service_workers="block")
    context.add_init_script(f"localStorage.setItem('vipare.key.agent', {json.dumps(key)})")
    page = context.new_page()
    if original:
        def original_config(route: Any) -> None:
            config = route.fetch().json()
            route.fulfill(json={**config, "upload_long_side": 0})

        page.route("**/v1/ui-config", original_config)
    try:
        page.goto("/")
        page.wait_for_selector("body[data-ready=true]")
        throttle(page, *net)
        started = time.perf_counter()
        page.set_input_files("#pick", str(photo))
        page.wait_for_function("() => !document.getElementById('send').disabled", timeout=60_000)
        prepared = time.perf_counter() - started
        page.evaluate("""() => {
            window.__sent = null;
            document.getElementById('send').addEventListener('click', () => { window.__sent = performance.now(); },
                { capture: true, once: true });
        }""")
        page.click("#send")
        page.wait_for_selector("#result[data-report-id]", timeout=300_000)
        seconds = page.evaluate("() => (performance.now() - window.__sent) / 1000")
        verdict = page.inner_text("#verdict")
        report_id = page.get_attribute("#result", "data-report-id")
        sent = page.evaluate(
            "(id) => fetch(`/v1/reports/${id}`, "
            "{ headers: { Authorization: `Bearer ${localStorage.getItem('vipare.key.agent')}` } })"
            ".then((r) => r.json()).then((r) => r.image.size_bytes)", report_id)
    finally:
        context.close()
    return {"seconds": float(seconds), "prepare_s": prepared, "bytes": float(sent), "verdict": verdict}


@command(__doc__)
@click.option("--photos", default=3, show_default=True, help="12 MP photos, each sent both ways.")
@click.option("--uplink", default=1.5, show_default=True, help="Uplink, Mbit/s.")
@click.option("--downlink", default=6.0, show_default=True, help="Downlink, Mbit/s.")
@click.option("--latency", default=150.0, show_default=True, help="Round-trip latency added, ms.")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=ROOT / "weights" / "vipare-yolo11n.onnx", show_default=True)
def main(photos: int, uplink: float, downlink: float, latency: float, model: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise click.ClickException(f"needs Debian's Chromium at {CHROMIUM}")
    with tempfile.TemporaryDirectory(prefix="vipare-bench-agent-") as tmp:
        folder = Path(tmp)
        sources = sorted((ROOT / "datasets" / "samples").glob("*.jpg"))
        made = make_phone_photos(folder / "photos", photos, sources=sources, seed=7)
        data = folder / "data"
        key = cli_key(data, "agent", "bench-agent")
        settings = {"VIPARE_MODEL_PATH": str(model), "VIPARE_MAX_IMAGE_BYTES": str(20_000_000),
                    "VIPARE_TILE_URL": "none",  # nothing but the service: no base map
                    "VIPARE_INTRA_OP_THREADS": "1", "VIPARE_ANALYSIS_SLOTS": "1"}
        server = start_server(data, settings)
        results: dict[str, list[dict[str, Any]]] = {"original": [], "resized": []}
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
                for i, path in enumerate(made):
                    for mode in (("original", "resized") if i % 2 == 0 else ("resized", "original")):
                        copy = folder / f"{mode}-{i}.jpg"
                        copy.write_bytes(distinct(path.read_bytes(), f"vipare bench agent {mode} {i}"))
                        results[mode].append(
                            send_once(browser, server.url, key, copy, mode == "original", (uplink, downlink, latency)))
                browser.close()
        finally:
            server.stop()

    print(f"{platform.node()}: {cpu_name()}, {os.cpu_count()} logical cores; Chromium throttled to {uplink} Mbit/s up, "
          f"{downlink} Mbit/s down, {latency:.0f} ms latency; {photos} photos of 4032x3024, the shipped model")
    print(f"{'':10} {'sent (MB)':>10} {'send -> verdict (s)':>20} {'prepare (s)':>12}")
    medians = {}
    for mode, rows in results.items():
        medians[mode] = statistics.median(r["seconds"] for r in rows)
        print(f"{mode:10} {statistics.median(r['bytes'] for r in rows) / 1e6:10.2f} "
              f"{medians[mode]:20.2f} {statistics.median(r['prepare_s'] for r in rows):12.2f}")
    met = "met" if medians["resized"] <= TARGET_S else "NOT met"
    print(f"resized: median {medians['resized']:.2f} s from Send to the verdict (target <= {TARGET_S:.0f} s: {met}); "
          f"{medians['original'] / medians['resized']:.1f}x faster than the original")


if __name__ == "__main__":
    main()
