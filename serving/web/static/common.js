// What both pages share: the API key kept in localStorage, calls to the API with it, the refusal
// messages, the service's ui-config and Leaflet maps (with or without a tile layer).

import { num, pct, t } from "./i18n.js";

/**
 * The key form of a manager's page (#key-button, #sign-in, #key-input): the button's label, the form
 * shown when a key is missing or refused, a new key tried on the page's data before it is kept.
 *
 * load: resolves true when the page's data came with the key in `keys`; showMessage(text, kind):
 * the page's message line; onSignOut: clears what the page showed with the key.
 */
export class SignIn {
  constructor(keys, { load, showMessage, onSignOut = () => {} }) {
    Object.assign(this, { keys, load, showMessage, onSignOut });
  }

  render(openMode = false) {
    const label = this.keys.label();
    document.getElementById("key-button").textContent = openMode ? t("key.open_mode")
      : label ? `${t("key.signed_in", { prefix: label })} · ${t("key.sign_out")}` : t("key.none");
  }

  show(show) {
    document.getElementById("sign-in").hidden = !show;
    if (show) document.getElementById("key-input").focus();
  }

  async save(event) {
    event.preventDefault();
    const input = document.getElementById("key-input");
    const key = input.value.trim();
    if (!key) return;
    const previous = this.keys.get();
    this.keys.set(key);
    input.value = "";
    this.showMessage(t("key.checking"), "info");
    if (await this.load()) {
      this.show(false);
      this.showMessage("", "info");
    } else if (previous) {
      this.keys.set(previous);
    } else {
      this.keys.clear();
    }
    this.render();
  }

  signOut() {
    this.keys.clear();
    this.onSignOut();
    this.render();
    this.show(true);
  }

  /** A failed call: a key problem asks for a key, anything else is shown. */
  failed(error) {
    if (error instanceof ApiError) {
      this.showMessage(error.message, "error");
      if (error.status === 401 || error.status === 403) this.show(true);
    } else {
      this.showMessage(t("err.network"), "error");
    }
  }
}

/** The API key of one page ("agent" or "manager"), kept in this browser's localStorage. */
export class KeyStore {
  constructor(page) {
    this.name = `vipare.key.${page}`;
  }
  get() {
    try {
      return localStorage.getItem(this.name) || "";
    } catch {
      return "";
    }
  }
  set(key) {
    localStorage.setItem(this.name, key.trim());
  }
  clear() {
    localStorage.removeItem(this.name);
  }
  /** The public part of a key (vpr_<prefix>), shown to say which key is in use. */
  label() {
    const match = /^(vpr_[0-9a-f]{4})/.exec(this.get());
    return match ? match[1] : "";
  }
}

/** An answer the API refused; `message` is already in the page's language. */
export class ApiError extends Error {
  constructor(status, code, detail, message) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** fetch() with the key header; throws TypeError when the network is down (fetch's own error). */
export function apiFetch(keyStore, url, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = keyStore.get();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return fetch(url, { ...options, headers, cache: "no-store" });
}

/** The body of an error answer: {detail, code}, or FastAPI's list of field errors. */
export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body && typeof body.detail === "string") return { code: body.code || "", detail: body.detail };
  if (body && Array.isArray(body.detail)) {
    const detail = body.detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
    return { code: "validation", detail };
  }
  return { code: "", detail: response.statusText || "" };
}

/** The message for a refused answer, in the page's language. `role` says which key the page needs. */
export function refusalMessage(status, code, detail, { role = "agent", maxBytes = 0 } = {}) {
  if (status === 401) return t("err.401");
  if (status === 403) return t(role === "agent" ? "err.403_agent" : "err.403_manager");
  if (status === 413) return t("err.413", { mb: maxBytes ? num(maxBytes / 1e6, maxBytes % 1e6 ? 1 : 0) : "?" });
  if (status === 415) return t("err.415");
  if (status === 422 && code === "location_missing") return t("err.location_missing");
  if (status === 422 && code === "invalid_location") return t("err.invalid_location");
  if (status === 422 && (code === "corrupt_image" || code === "empty_image")) return t("err.unreadable");
  if (status === 422) return t("err.422", { detail });
  if (status === 409) return t("err.409", { detail });
  if (status === 404) return t("err.404", { detail });
  if (status === 503) return t("err.503");
  if (status >= 500) return t("err.server", { status });
  return t("err.other", { status, detail });
}

/** fetch JSON from the API; refusals become an ApiError with a message in the page's language. */
export async function apiJson(keyStore, url, options = {}, role = "manager") {
  const response = await apiFetch(keyStore, url, options);
  if (!response.ok) {
    const { code, detail } = await errorOf(response);
    throw new ApiError(response.status, code, detail, refusalMessage(response.status, code, detail, { role }));
  }
  return response.json();
}

/**
 * Fetch `url` with the key and save the answer as the file `name` (a CSV, a GPX...). Refusals throw
 * an ApiError with a message in the page's language; a network failure throws fetch's TypeError.
 */
export async function downloadFile(keyStore, url, name) {
  const response = await apiFetch(keyStore, url);
  if (!response.ok) {
    const { code, detail } = await errorOf(response);
    throw new ApiError(response.status, code, detail,
      refusalMessage(response.status, code, detail, { role: "manager" }));
  }
  const href = URL.createObjectURL(await response.blob());
  const link = el("a", { href, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

/** The service's ui-config (no key needed); defaults when it cannot be read. */
export async function loadUiConfig() {
  const fallback = {
    tile_url: null, tile_attribution: "", map_library: true, map_library_install: "npm ci --prefix serving/web",
    max_image_bytes: 0, classes: [], deposit_classes: [], statuses: [], open_statuses: [], transitions: {},
  };
  try {
    const response = await fetch("/v1/ui-config", { cache: "no-store" });
    return response.ok ? { ...fallback, ...(await response.json()) } : fallback;
  } catch {
    return fallback;
  }
}

/** True when Leaflet (and, with `cluster`, Leaflet.markercluster) loaded from /vendor. */
export function mapLibraryLoaded(cluster = false) {
  return typeof window.L !== "undefined" && (!cluster || typeof window.L.markerClusterGroup === "function");
}

/** Show, in `element`, that the map library is missing, with the command that installs it. */
export function showMapMissing(element, config) {
  element.classList.add("map-missing");
  element.textContent = t("map.missing", { cmd: config.map_library_install });
}

/**
 * A Leaflet map in `element`: the service's tiles (VIPARE_TILE_URL, Plan IGN by default; a notice
 * on the map when they cannot load), or with none a plain background and no tile request at all.
 */
export function makeMap(element, config, options = {}) {
  const L = window.L;
  const map = L.map(element, { maxZoom: 19, zoomControl: true, attributionControl: true, ...options });
  map.attributionControl.setPrefix("Leaflet");
  if (config.tile_url) {
    const tiles = L.tileLayer(config.tile_url, { attribution: config.tile_attribution || "", maxZoom: 19 });
    let notice = null;
    tiles.on("tileerror", () => {
      // Say so once, on the map: markers still work on a plain background.
      element.dataset.tiles = "failed";
      if (notice) return;
      notice = document.createElement("p");
      notice.className = "tile-notice";
      notice.setAttribute("role", "status");
      notice.textContent = t("map.tiles_failed");
      element.append(notice);
    });
    tiles.on("tileload", () => {
      if (element.dataset.tiles !== "failed") element.dataset.tiles = "ok";
    });
    tiles.addTo(map);
  } else {
    element.classList.add("map-plain");
  }
  return map;
}

/** Latitude and longitude as text, five decimals (about a metre), dot decimals as GPS apps show them. */
export function coords(lat, lon) {
  return `${Number(lat).toFixed(5)}, ${Number(lon).toFixed(5)}`;
}

/** A DOM element: el("p", {class: "x", text: "..."}, child, ...). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/**
 * Where to write each box's label: inside the photo, never over another label. Tries above the box,
 * inside its top, below it, then further down; a label with no free place is left out (its box stays).
 * Returns, per detection, {x, y, w, h} of the label's background (y: top), or null.
 */
export function placeLabels(width, height, boxes, texts, fontSize) {
  const h = Math.round(fontSize * 1.35);
  const pad = Math.round(fontSize * 0.3);
  const taken = [];
  const overlaps = (a) => taken.some((b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h);
  return boxes.map(([x1, y1, , y2], i) => {
    const w = Math.min(width, Math.round(texts[i].length * fontSize * 0.6) + 2 * pad);
    const x = Math.max(0, Math.min(x1, width - w));
    const tries = [y1 - h, y1, y2];
    for (let k = 1; k <= 6; k += 1) tries.push(y1 + k * h);
    for (const y of tries) {
      const spot = { x, y, w, h };
      if (y < 0 || y + h > height || overlaps(spot)) continue;
      taken.push(spot);
      return spot;
    }
    return null;
  });
}

/**
 * An SVG overlay drawing detection boxes over a photo of `width` x `height` pixels (the
 * orientation-corrected size the service reports; boxes are xyxy in those pixels). Labels (class and
 * score, in the page's language) stay inside the photo and apart, deposits placed first.
 */
export function boxesOverlay(width, height, detections, labelOf) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "boxes");
  svg.setAttribute("aria-hidden", "true");
  const make = (tag, attributes) => {
    const node = document.createElementNS(ns, tag);
    Object.entries(attributes).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  };
  // Sized to the photo, so they read the same on a phone whatever its resolution.
  const stroke = Math.max(2, Math.round(Math.max(width, height) / 160));
  const fontSize = Math.max(12, Math.round(Math.max(width, height) / 28));
  const ordered = [...detections].sort((a, b) => Number(b.deposit) - Number(a.deposit) || b.score - a.score);
  const texts = ordered.map((d) => `${labelOf(d.label)} ${pct(d.score)}`);
  const spots = placeLabels(width, height, ordered.map((d) => d.box), texts, fontSize);
  const labels = [];
  ordered.forEach((d, i) => {
    const [x1, y1, x2, y2] = d.box;
    const kind = d.deposit ? "deposit" : "context";
    svg.append(make("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, "stroke-width": stroke, class: `box ${kind}` }));
    const spot = spots[i];
    if (!spot) return;
    const tag = make("text", { x: spot.x + Math.round(fontSize * 0.3), y: spot.y + Math.round(fontSize * 1.05),
      "font-size": fontSize, class: `box-label ${kind}` });
    tag.textContent = texts[i];
    labels.push(make("rect", { x: spot.x, y: spot.y, width: spot.w, height: spot.h, rx: Math.round(fontSize * 0.2),
      class: "label-back" }), tag);
  });
  svg.append(...labels); // over every box
  return svg;
}
