// A crew's round for a day: the incidents scheduled for that crew on that day, in the order that
// makes the round shortest from the depot (GET /v1/rounds), on a map and as a printable list, with
// the GPX and GeoJSON a phone's navigation app opens.

import { applyText, has, num, t } from "./i18n.js";
import { KeyStore, apiJson, downloadFile, el, loadUiConfig, makeMap, mapLibraryLoaded, showMapMissing } from "./common.js";

const keys = new KeyStore("manager");
const classLabel = (name) => (has(`class.${name}`) ? t(`class.${name}`) : name);
const stopName = (stop) => `#${stop.incident} ${classLabel(stop.class_name)}${stop.size ? ` (${stop.size})` : ""}`
  + `${stop.address ? `, ${stop.address}` : ""}`;
const $ = (id) => document.getElementById(id);
let config = null;
let map = null;
let layer = null;

function showMessage(text, kind = "error") {
  $("message").textContent = text;
  $("message").className = `message ${kind}`;
  $("message").hidden = !text;
}

function query(format = "json") {
  const params = new URLSearchParams({ day: $("day").value, depot_lat: $("depot-lat").value,
    depot_lon: $("depot-lon").value, format });
  if ($("crew").value.trim()) params.set("crew", $("crew").value.trim());
  return `/v1/rounds?${params}`;
}

async function plan(event) {
  if (event) event.preventDefault();
  let round;
  try {
    round = await apiJson(keys, query());
  } catch (error) {
    if (error.status === 401) $("sign-in").hidden = false;
    showMessage(error.message);
    return;
  }
  showMessage("", "info");
  const params = new URLSearchParams(location.search);
  params.set("day", $("day").value);
  if (round.crew) params.set("crew", round.crew);
  history.replaceState(null, "", `?${params}`);
  $("round").hidden = false;
  $("round-title").textContent = t("round.heading", { crew: round.crew || t("round.all_crews"), day: round.day });
  $("round-summary").textContent = round.stops.length
    ? t("round.summary", { n: round.stops.length, km: num(round.length_m / 1000, 1) }) : t("round.empty");
  $("stops").replaceChildren(...round.stops.map((stop) => el("li", { dataset: { incident: stop.incident } },
    el("strong", { text: stopName(stop) }),
    el("span", { class: "muted block", text: t("round.leg", { km: num(stop.leg_m / 1000, 2) }) }))));
  draw(round);
}

function draw(round) {
  const element = $("round-map");
  if (!mapLibraryLoaded()) {
    showMapMissing(element, config);
    return;
  }
  const L = window.L;
  if (!map) map = makeMap(element, config, { scrollWheelZoom: false });
  if (layer) layer.remove();
  const depot = [round.depot[1], round.depot[0]];
  const path = [depot, ...round.stops.map((s) => [s.lat, s.lon]), depot];
  layer = L.layerGroup([
    L.polyline(path, { className: "round-path" }),
    L.marker(depot, { title: t("round.depot"), alt: t("round.depot") }),
    ...round.stops.map((s) => L.marker([s.lat, s.lon], {
      title: stopName(s), alt: stopName(s),
      icon: L.divIcon({ className: "stop-marker", html: `<span>${s.order}</span>`, iconSize: [26, 26] }),
    })),
  ]).addTo(map);
  map.invalidateSize();
  map.fitBounds(L.latLngBounds(path), { padding: [30, 30], maxZoom: 17 });
}

async function download(format) {
  try {
    await downloadFile(keys, query(format), `round-${$("day").value}.${format === "gpx" ? "gpx" : "geojson"}`);
  } catch (error) {
    showMessage(error.message || t("err.network"));
  }
}

async function start() {
  applyText();
  document.title = `vipare · ${t("round.title")}`;
  config = await loadUiConfig();
  const params = new URLSearchParams(location.search);
  const tomorrow = new Date(Date.now() + 86400000);
  $("day").value = params.get("day") || tomorrow.toLocaleDateString("sv"); // YYYY-MM-DD, this zone
  $("crew").value = params.get("crew") || "";
  if (config.depot) {
    $("depot-lat").value = config.depot.lat;
    $("depot-lon").value = config.depot.lon;
  }
  $("round-form").addEventListener("submit", plan);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    keys.set($("key-input").value.trim());
    $("sign-in").hidden = true;
    plan();
  });
  $("gpx").addEventListener("click", () => download("gpx"));
  $("geojson").addEventListener("click", () => download("geojson"));
  $("print").addEventListener("click", () => window.print());
  if (!keys.get()) $("sign-in").hidden = false;
  document.body.dataset.ready = "true";
  if (keys.get() && params.get("day") && $("depot-lat").value) plan();
}

start();
