// The council's statistics: incidents opened and cleaned per week, the median time to clean, by class,
// and the places of repeated deposits on a map; the weeks as CSV (for scripts, or for a French Excel).
// Everything comes from GET /v1/statistics with the manager's key, weeks cut in the browser's time zone.
//
// Hotspots are drawn as circles sized and shaded by their count, not as a canvas heat map: they are
// few (places of about 100 m with several deposits), each circle has its count in a tooltip and in
// the list read by screen readers, and a circle keeps its size and colour whatever the zoom.

import { applyText, has, num, t } from "./i18n.js";
import {
  KeyStore, SignIn, apiFetch, apiJson, downloadFile, el, loadUiConfig, makeMap, mapLibraryLoaded, showMapMissing,
} from "./common.js";

const keys = new KeyStore("manager");
const signIn = new SignIn(keys, { load: () => load(), showMessage });
const $ = (id) => document.getElementById(id);
const classLabel = (name) => (has(`class.${name}`) ? t(`class.${name}`) : name);
const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const DEFAULT_WEEKS = 12;

let config = null;
let map = null;
let layer = null;

// ------------------------------------------------------------------------------------------------
// Messages, key

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}






// ------------------------------------------------------------------------------------------------
// The period

/** A local date as yyyy-mm-dd (what <input type=date> holds). */
function isoDate(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The last 12 weeks, the current one included: from a Monday to today. */
function defaultPeriod() {
  const today = new Date();
  const monday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - ((today.getDay() + 6) % 7));
  monday.setDate(monday.getDate() - 7 * (DEFAULT_WEEKS - 1));
  $("since").value = isoDate(monday);
  $("until").value = isoDate(today);
}

/** The query of /v1/statistics: whole local days, the browser's time zone, the class. */
function query() {
  const params = new URLSearchParams();
  params.set("since", new Date(`${$("since").value}T00:00:00`).toISOString());
  const end = new Date(`${$("until").value}T23:59:59.999`);
  params.set("until", (end > new Date() ? new Date() : end).toISOString());
  params.set("tz", timeZone);
  if ($("class-filter").value) params.set("class", $("class-filter").value);
  return params;
}

function periodValid() {
  if (!$("since").value || !$("until").value) defaultPeriod();
  if ($("since").value > $("until").value) {
    showMessage(`${t("mgr.from")} > ${t("mgr.to")}`, "error");
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------------------------------
// Figures

const hours = (value) => (value === null || value === undefined ? "–" : num(value, 1));

function figureCells(figures) {
  return [
    el("td", { class: "number", dataset: { field: "opened" }, text: num(figures.opened) }),
    el("td", { class: "number", dataset: { field: "cleaned" }, text: num(figures.cleaned) }),
    el("td", { class: "number", dataset: { field: "median" }, text: hours(figures.median_hours_to_clean) }),
  ];
}

function renderTotals(body) {
  $("total-opened").textContent = num(body.totals.opened);
  $("total-cleaned").textContent = num(body.totals.cleaned);
  const median = body.totals.median_hours_to_clean;
  $("total-median").textContent = median === null ? "–" : t("stats.hours", { h: num(median, 1) });
  $("definitions").textContent = t("stats.definitions", { tz: body.tz });
}

function renderWeeks(body) {
  const date = new Intl.DateTimeFormat(document.documentElement.lang, { day: "numeric", month: "short" });
  const rows = [...body.weeks].reverse().map((week) => el("tr", { dataset: { week: week.week } },
    el("th", { scope: "row", text: t("stats.week_of", { week: week.week,
      date: date.format(new Date(`${week.start}T00:00:00`)) }) }),
    ...figureCells(week)));
  $("weeks").tBodies[0].replaceChildren(...rows);
}

function renderClasses(body) {
  const rows = Object.entries(body.by_class).map(([name, figures]) => el("tr", { dataset: { class: name } },
    el("th", { scope: "row", text: classLabel(name) }), ...figureCells(figures)));
  $("classes").tBodies[0].replaceChildren(...rows);
}

function renderSizes(body) {
  const rows = Object.entries(body.by_size || {}).map(([name, figures]) => el("tr", { dataset: { size: name } },
    el("th", { scope: "row", text: t(`size.${name}`) }), ...figureCells(figures)));
  $("sizes").tBodies[0].replaceChildren(...rows);
}

// ------------------------------------------------------------------------------------------------
// Hotspots: circles sized and shaded by their count

function setupMap() {
  const element = $("map");
  if (!mapLibraryLoaded()) {
    showMapMissing(element, config);
    return;
  }
  map = makeMap(element, config);
  map.setView([46.6, 2.4], 5); // France, until there are hotspots to show
  layer = window.L.layerGroup().addTo(map);
  const legend = window.L.control({ position: "bottomright" });
  legend.onAdd = () => el("div", { class: "legend heat-legend" }, el("strong", { text: t("stats.legend") }),
    el("div", {}, el("span", { class: "heat-swatch low" }), "2"),
    el("div", {}, el("span", { class: "heat-swatch high" }), "10+"));
  legend.addTo(map);
  window.vipareMap = map;
}

/** Colour from light orange (2 deposits) to dark red (10 or more). */
function heatColour(count) {
  const share = Math.min(1, Math.max(0, (count - 2) / 8));
  const mix = (a, b) => Math.round(a + (b - a) * share);
  return `rgb(${mix(253, 153)}, ${mix(141, 0)}, ${mix(60, 13)})`;
}

function renderHotspots(body) {
  $("hotspots-help").textContent = t("stats.hotspots_help", { m: num(body.hotspot_cell_m) });
  $("hotspots-count").textContent = body.hotspots.length ? "" : t("stats.no_hotspot");
  if (!layer) return;
  layer.clearLayers();
  const points = [];
  for (const spot of body.hotspots) {
    const text = t("stats.hotspot", { n: num(spot.count), r: num(spot.recurrences) });
    const colour = heatColour(spot.count);
    const circle = window.L.circleMarker([spot.lat, spot.lon], {
      radius: 6 + 4 * Math.sqrt(spot.count), color: colour, weight: 1, fillColor: colour, fillOpacity: 0.6,
      className: "hotspot",
    }).bindTooltip(text);
    layer.addLayer(circle);
    circle.getElement()?.setAttribute("data-count", String(spot.count));
    points.push([spot.lat, spot.lon]);
  }
  if (points.length) map.fitBounds(points, { padding: [30, 30], maxZoom: 16 });
}

// ------------------------------------------------------------------------------------------------

/** Load and show the period's figures; true when the API answered. */
async function load() {
  if (!periodValid()) return false;
  let body;
  try {
    body = await apiJson(keys, `/v1/statistics?${query()}`);
  } catch (error) {
    signIn.failed(error);
    return false;
  }
  renderTotals(body);
  renderWeeks(body);
  renderClasses(body);
  renderSizes(body);
  renderHotspots(body);
  document.body.dataset.loaded = body.until;
  return true;
}

async function download(kind) {
  if (!periodValid()) return;
  const params = query();
  if (kind === "excel") params.set("excel", "fr");
  const name = `statistics-${$("since").value}-${$("until").value}.csv`;
  try {
    await downloadFile(keys, `/v1/statistics.csv?${params}`, name);
  } catch (error) {
    signIn.failed(error);
    return;
  }
  showMessage(t("mgr.exported", { name }), "ok");
}

async function start() {
  applyText();
  document.title = `vipare · ${t("stats.title")}`;
  config = await loadUiConfig();
  for (const name of config.deposit_classes) $("class-filter").append(el("option", { value: name, text: classLabel(name) }));
  defaultPeriod();
  setupMap();
  $("key-form").addEventListener("submit", (event) => signIn.save(event));
  $("message").addEventListener("click", () => { $("message").hidden = true; });
  $("key-button").addEventListener("click",
    () => (keys.get() ? signIn.signOut() : signIn.show($("sign-in").hidden)));
  $("filters").addEventListener("change", () => load());
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  for (const button of document.querySelectorAll("[data-csv]")) {
    button.addEventListener("click", () => download(button.dataset.csv));
  }
  signIn.render();
  if (keys.get()) {
    await load();
  } else {
    // No key stored: an open local service (no key exists at all) answers without one.
    try {
      const response = await apiFetch(keys, "/v1/statistics");
      if (response.ok) {
        signIn.render(true);
        await load();
      } else {
        signIn.show(true);
      }
    } catch {
      showMessage(t("err.network"), "error");
    }
  }
  document.body.dataset.ready = "true";
}

start();
