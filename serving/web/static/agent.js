// The field agent's page: take or pick a photo, check where it was taken, send it, see the verdict
// and the agent's own reports. An installable app: a service worker (/sw.js) keeps the page for
// offline use and sends the outbox (outbox.js) by Background Sync when the connection comes back.
//
// Before sending, the page reads the photo's EXIF (GPS, time) with exifr and resizes it in the
// browser to what the model and a manager need (ui-config: upload_long_side, upload_jpeg_quality),
// so a 12 MP photo goes as a few hundred kB; the position and time go as form fields. A position is
// used only when it can be trusted: the photo's own GPS, or a fix taken within seconds of the photo.
// Otherwise the agent places a pin on a small map; a refused photo without a position can be placed
// afterwards and sent again.

import { applyText, has, lang, pct, t, when } from "./i18n.js";
import {
  KeyStore, apiFetch, boxesOverlay, coords, el, loadUiConfig, makeMap, mapLibraryLoaded, refusalMessage,
  showMapMissing,
} from "./common.js";
import { openDb, outbox, requestSync, sendOutbox, storedKey, uploadForm } from "./outbox.js";

const keys = new KeyStore("agent");
const $ = (id) => document.getElementById(id);
const classLabel = (name) => (has(`class.${name}`) ? t(`class.${name}`) : name);

let config = null;
let draft = null; // see choose()
let afterFor = null; // the incident whose place the next photo shows after cleaning
let resultMap = null;
let resultLayer = null;
let pinMap = null;
let pinMarker = null;
let retryTimer = null;
let retryDelayMs = 5000;
let hasOutbox = false;
const RETRY_MAX_MS = 60000;
const FIX_MAX_AGE_MS = 5000; // a cached fix older than this is not asked for
const FIX_TRUSTED_MS = 60 * 1000; // a fix this close in time to the photo says where it was taken
const FRESH_MS = 5 * 60 * 1000; // a photo this recent was just taken with the camera
const POSITION_OPTIONS = { enableHighAccuracy: true, timeout: 20000, maximumAge: FIX_MAX_AGE_MS };
const MINE_DAYS = 14;
const MINE_CACHE = "vipare.mine";

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ------------------------------------------------------------------------------------------------
// Messages, key

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

function renderKey() {
  const button = $("key-button");
  const label = keys.label();
  button.textContent = label ? t("key.signed_in", { prefix: label }) : t("key.none");
  button.hidden = false;
}

function showSignIn(show = true) {
  $("sign-in").hidden = !show;
  if (show) $("key-input").focus();
}

async function probeOpenMode() {
  // With no key stored: an open local service (no key exists at all) needs none.
  try {
    const response = await apiFetch(keys, "/v1/reports?limit=1");
    if (response.ok) {
      $("key-button").textContent = t("key.open_mode");
      return;
    }
  } catch {
    /* offline: the key is asked for anyway */
  }
  showSignIn(true);
}

/**
 * Check `key` with the service and keep it when it is an agent's. Returns "ok", "offline" (kept,
 * checked with the first upload), "unknown" or "role" (not kept).
 */
async function adoptKey(key) {
  const previous = keys.get();
  keys.set(key);
  let response;
  try {
    response = await apiFetch(keys, "/v1/keys/me");
  } catch {
    await storedKey.set(key);
    return "offline";
  }
  const me = response.ok ? await response.json() : null;
  if (!me || me.role !== "agent") {
    if (previous) keys.set(previous);
    else keys.clear();
    return me ? "role" : "unknown";
  }
  await storedKey.set(key);
  return "ok";
}

async function keyAdopted() {
  showSignIn(false);
  renderKey();
  for (const item of await outbox.all()) {
    if (item.status === "key") await outbox.put({ ...item, status: "waiting", message: "" });
  }
  flush();
  refreshMine();
}

async function saveKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  showMessage(t("key.checking"), "info");
  const outcome = await adoptKey(key);
  if (outcome === "unknown" || outcome === "role") {
    showMessage(t(outcome === "role" ? "key.not_agent" : "err.401"), "error");
    return;
  }
  $("key-input").value = "";
  showMessage("", "info");
  await keyAdopted();
}

/** A key brought by a link or a QR code (/#key=vpr_...): taken out of the address at once. */
async function keyFromLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  if (!key) return false;
  history.replaceState(null, "", location.pathname + location.search); // not in the history, not shared
  const outcome = await adoptKey(key.trim());
  if (outcome === "unknown" || outcome === "role") {
    showMessage(t(outcome === "role" ? "key.link_not_agent" : "key.link_unknown"), "error");
    return false;
  }
  showMessage(t("key.link_ok"), "ok");
  await keyAdopted();
  return true;
}

// ------------------------------------------------------------------------------------------------
// The photo being prepared: its EXIF, the phone's fix, the resized copy

function setPosition(text, retry = false) {
  $("position").textContent = text;
  $("position-retry").hidden = !retry;
}

/** The phone's position now: {lat, lon, accuracy_m, at (ms)} or null, with the reason shown. */
function locate() {
  if (!window.isSecureContext) return Promise.resolve({ error: "pos.insecure" });
  if (!navigator.geolocation) return Promise.resolve({ error: "pos.unsupported" });
  return new Promise((resolve) => {
    navigator.geolocation.getCurrentPosition(
      (p) => resolve({ lat: p.coords.latitude, lon: p.coords.longitude, accuracy_m: p.coords.accuracy,
        at: p.timestamp || Date.now() }),
      (error) => resolve({ error: { 1: "pos.denied", 2: "pos.unavailable", 3: "pos.timeout" }[error.code]
        || "pos.unavailable" }),
      POSITION_OPTIONS,
    );
  });
}

/** The EXIF time as an ISO string: with its offset when the photo has one, else the phone's zone. */
function exifTime(tags) {
  const raw = tags.DateTimeOriginal || tags.CreateDate;
  const match = typeof raw === "string" && /^(\d{4}):(\d\d):(\d\d)[ T](\d\d):(\d\d):(\d\d)/.exec(raw);
  if (!match) return null;
  const [, y, mo, d, h, mi, s] = match;
  const offset = tags.OffsetTimeOriginal || tags.OffsetTime;
  if (typeof offset === "string" && /^[+-]\d\d:\d\d$/.test(offset)) {
    const parsed = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}${offset}`);
    return Number.isNaN(parsed.getTime()) ? null : parsed.toISOString();
  }
  const local = new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  return Number.isNaN(local.getTime()) ? null : local.toISOString();
}

/** What the photo itself says: {gps: {lat, lon} | null, time: ISO | null}. */
async function readExif(file) {
  try {
    // Imported when needed: without the pages' libraries (npm ci not run) the page still works.
    const { default: exifr } = await import("/vendor/exifr/lite.esm.js");
    // Raw values: the time as written ("2024:05:01 09:30:00") with its own offset, not revived in this zone.
    const tags = await exifr.parse(file, { tiff: true, exif: true, gps: true, reviveValues: false,
      translateValues: false });
    const position = tags;
    const lat = Number(position && position.latitude);
    const lon = Number(position && position.longitude);
    const gps = Number.isFinite(lat) && Number.isFinite(lon) && !(lat === 0 && lon === 0) ? { lat, lon } : null;
    return { gps, time: tags ? exifTime(tags) : null };
  } catch {
    return { gps: null, time: null }; // no EXIF, or a format exifr does not read
  }
}

/**
 * The photo as it will be sent: resized to upload_long_side as JPEG, or null to send the original
 * (a setting of 0, a format the browser cannot decode such as HEIC, or a file already smaller).
 */
async function resized(file) {
  const longSide = config.upload_long_side;
  if (!longSide || typeof createImageBitmap !== "function") return null;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    return null;
  }
  const scale = longSide / Math.max(bitmap.width, bitmap.height);
  if (scale >= 1) { // small enough already: the original, EXIF and all
    bitmap.close();
    return null;
  }
  const width = Math.round(bitmap.width * scale);
  const height = Math.round(bitmap.height * scale);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", config.upload_jpeg_quality));
  canvas.width = 0; // let the browser free the pixels at once
  if (!blob || blob.size >= file.size) return null;
  return { blob, width, height };
}

function ageText(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 90) return t("age.seconds", { n: seconds });
  const minutes = Math.round(seconds / 60);
  if (minutes < 90) return t("age.minutes", { n: minutes });
  const hours = Math.round(minutes / 60);
  if (hours < 36) return t("age.hours", { n: hours });
  return t("age.days", { n: Math.round(hours / 24) });
}

/**
 * Where the draft was taken, and whether the agent must place it: the pin the agent placed; else the
 * photo's own GPS; else the phone's fix when the photo was just taken and the fix is from then.
 * Returns {lat, lon, accuracy_m, position, text} or {needsPin: true, text}.
 */
function draftPosition(d) {
  if (d.placed) return { ...d.placed, position: "placed", text: t("pos.placed", { where: coords(d.placed.lat, d.placed.lon) }) };
  if (!d.exifRead) return { needsPin: false, pending: true, text: t("pos.locating") };
  if (d.exif.gps) {
    return { ...d.exif.gps, accuracy_m: null, position: "photo",
      text: t("pos.photo", { where: coords(d.exif.gps.lat, d.exif.gps.lon) }) };
  }
  const takenAt = d.takenAt ? Date.parse(d.takenAt) : null;
  if (takenAt === null) return { needsPin: true, text: t("pos.pin_unknown_time") };
  if (Date.now() - takenAt > FRESH_MS) {
    return { needsPin: true, text: t("pos.pin_old", { age: ageText(Date.now() - takenAt) }) };
  }
  const fix = d.fix;
  if (!fix) return { needsPin: false, pending: true, text: t("pos.locating") };
  if (fix.error) return { needsPin: true, text: `${t(fix.error)} ${t("pos.pin_place")}` };
  if (Math.abs(fix.at - takenAt) > FIX_TRUSTED_MS) {
    return { needsPin: true, text: t("pos.pin_stale", { age: ageText(Math.abs(fix.at - takenAt)) }) };
  }
  return { lat: fix.lat, lon: fix.lon, accuracy_m: fix.accuracy_m, position: "device",
    text: t("pos.ok", { where: coords(fix.lat, fix.lon), acc: Math.round(fix.accuracy_m),
      age: ageText(Date.now() - fix.at) }) };
}

function renderDraftPosition() {
  if (!draft) return;
  const where = draftPosition(draft);
  setPosition(where.text, !where.pending && Boolean(draft.fix && draft.fix.error));
  $("position").dataset.state = where.needsPin ? "needs-pin" : where.pending ? "pending" : where.position;
  if (where.needsPin && $("pin").hidden) {
    openPin(t("pin.must"));
    draft.pinAuto = true;
  } else if (!where.needsPin && !where.pending && draft.pinAuto && !draft.placed) {
    $("pin").hidden = true; // asked for while the fix was missing; the fix came
    draft.pinAuto = false;
  }
  $("send").disabled = Boolean(where.pending) || draft.preparing;
}

async function choose(input) {
  const file = input.files && input.files[0];
  input.value = ""; // choosing the same file again fires `change` again
  if (!file) return;
  clearDraft();
  if (config.max_image_bytes && file.size > config.max_image_bytes && !config.upload_long_side) {
    showMessage(refusalMessage(413, "", "", { maxBytes: config.max_image_bytes }));
    return;
  }
  const afterOf = afterFor;
  afterFor = null;
  showMessage(afterOf ? t("agent.after_for", { id: afterOf }) : "", "info");
  // A photo just taken was taken when its file was written; an older one keeps its own EXIF time.
  const fresh = file.lastModified && Date.now() - file.lastModified < FRESH_MS;
  const current = { file, url: URL.createObjectURL(file), exif: { gps: null, time: null }, takenAt: null,
    afterOf,
    fix: null, placed: null, prepared: null, preparing: true, exifRead: false, pinAuto: false };
  draft = current;
  const img = $("draft-photo");
  img.hidden = false;
  img.onerror = () => { img.hidden = true; }; // e.g. HEIC, which most browsers cannot show
  img.src = current.url;
  $("draft").hidden = false;
  $("capture").classList.add("drafting");
  $("send").disabled = true;
  $("prepared").textContent = t("agent.preparing");
  setPosition(t("pos.locating"));
  $("capture").scrollIntoView({ block: "start" });
  const fixing = locate().then((fix) => { if (draft === current) { current.fix = fix; renderDraftPosition(); } });
  current.exif = await readExif(file);
  current.takenAt = current.exif.time || (fresh ? new Date(file.lastModified).toISOString() : null);
  current.exifRead = true;
  if (draft !== current) return;
  renderDraftPosition();
  current.prepared = await resized(file);
  current.preparing = false;
  if (draft !== current) return;
  const bytes = current.prepared ? current.prepared.blob.size : file.size;
  if (config.max_image_bytes && bytes > config.max_image_bytes) {
    clearDraft();
    showMessage(refusalMessage(413, "", "", { maxBytes: config.max_image_bytes }));
    return;
  }
  $("prepared").textContent = current.prepared
    ? t("agent.prepared", { kb: Math.round(bytes / 1024), w: current.prepared.width, h: current.prepared.height })
    : t("agent.original", { kb: Math.round(bytes / 1024) });
  renderDraftPosition();
  await fixing;
}

function clearDraft() {
  if (draft) URL.revokeObjectURL(draft.url);
  draft = null;
  $("draft").hidden = true;
  $("pin").hidden = true;
  $("capture").classList.remove("drafting");
  $("draft-photo").removeAttribute("src");
  $("note").value = "";
  $("prepared").textContent = "";
}

// ------------------------------------------------------------------------------------------------
// Placing a pin: for the draft, or for a queued photo refused without a position

let pinTarget = null; // {kind: "draft"} or {kind: "item", id}

function openPin(help, target = { kind: "draft" }, start = null) {
  pinTarget = target;
  $("pin-help").textContent = help;
  $("pin").hidden = false;
  if (target.kind === "item") {
    $("capture").classList.add("drafting");
    $("draft").hidden = false;
    $("pin").scrollIntoView({ block: "center" });
  }
  const element = $("pin-map");
  if (!mapLibraryLoaded()) {
    showMapMissing(element, config);
    return;
  }
  const L = window.L;
  if (!pinMap) {
    pinMap = makeMap(element, config, { scrollWheelZoom: false });
    pinMap.on("click", (e) => movePin(e.latlng));
  }
  pinMap.invalidateSize();
  const guess = start || (draft && draft.fix && !draft.fix.error ? draft.fix : null) || lastPlace();
  const centre = guess ? [guess.lat, guess.lon] : [46.6, 2.4];
  pinMap.setView(centre, guess ? 17 : 5);
  if (pinMarker) pinMarker.remove();
  pinMarker = null;
  $("pin-done").disabled = true;
  if (guess) movePin(L.latLng(centre), false);
}

function movePin(latlng, moved = true) {
  const L = window.L;
  if (!pinMarker) {
    pinMarker = L.marker(latlng, { draggable: true, autoPan: true, keyboard: true, title: t("pin.marker"),
      alt: t("pin.marker") }).addTo(pinMap);
    pinMarker.on("dragend", () => { $("pin-done").disabled = false; });
  } else {
    pinMarker.setLatLng(latlng);
  }
  if (moved) $("pin-done").disabled = false;
}

function lastPlace() {
  try {
    return JSON.parse(localStorage.getItem("vipare.last_place") || "null");
  } catch {
    return null;
  }
}

async function pinDone() {
  if (!pinMarker) return;
  const { lat, lng } = pinMarker.getLatLng();
  const placed = { lat, lon: lng, accuracy_m: null };
  localStorage.setItem("vipare.last_place", JSON.stringify(placed));
  $("pin").hidden = true;
  if (pinTarget && pinTarget.kind === "item") {
    const item = (await outbox.all()).find((i) => i.id === pinTarget.id);
    if (!draft) {
      $("draft").hidden = true;
      $("capture").classList.remove("drafting");
    }
    if (item) {
      await outbox.put({ ...item, lat, lon: lng, accuracy_m: null, position: "placed", status: "waiting", message: "" });
      await renderQueue();
      flush();
    }
    return;
  }
  if (draft) {
    draft.placed = placed;
    renderDraftPosition();
  }
}

// ------------------------------------------------------------------------------------------------
// Sending

async function send() {
  if (!draft || draft.preparing) return;
  const where = draftPosition(draft);
  if (where.needsPin || where.pending) {
    openPin(t("pin.must"));
    return;
  }
  const current = draft;
  $("send").disabled = true;
  const photo = current.prepared ? current.prepared.blob : current.file;
  const item = {
    id: newId(),
    bytes: await photo.arrayBuffer(), // the bytes themselves: a File handle may not survive a reload
    type: current.prepared ? "image/jpeg" : current.file.type || "application/octet-stream",
    name: current.prepared ? (current.file.name || "photo").replace(/\.[^.]*$/, "") + ".jpg" : current.file.name || "photo.jpg",
    size: photo.size,
    lat: where.lat,
    lon: where.lon,
    accuracy_m: where.accuracy_m,
    position: where.position,
    captured_at: current.takenAt,
    note: $("note").value.trim(),
    after_of: current.afterOf,
    queued_at: new Date().toISOString(),
    status: "waiting",
    message: "",
    fromQueue: !navigator.onLine, // say so when it is sent later
  };
  clearDraft();
  await queue(item);
}

async function queue(item) {
  if (!hasOutbox) {
    await uploadDirect(item);
    return;
  }
  await outbox.put(item);
  await renderQueue();
  if (!navigator.onLine) {
    showMessage(t("queue.offline"), "info");
    requestSync();
    return;
  }
  await flush();
}

/** POST with XMLHttpRequest, for its upload progress; answers like fetch's Response where it matters. */
function xhrUpload(item, key) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/reports");
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.responseType = "text";
    showProgress(0, item.size);
    xhr.upload.onprogress = (e) => showProgress(e.loaded, e.lengthComputable ? e.total : item.size);
    xhr.upload.onload = () => showProgress(-1);
    xhr.onload = () => {
      $("progress").hidden = true;
      const body = xhr.responseText;
      resolve({
        ok: xhr.status >= 200 && xhr.status < 300,
        status: xhr.status,
        statusText: xhr.statusText,
        headers: { get: (name) => xhr.getResponseHeader(name) },
        json: async () => JSON.parse(body),
      });
    };
    xhr.onerror = () => { $("progress").hidden = true; reject(new TypeError("network")); };
    xhr.ontimeout = xhr.onerror;
    xhr.send(uploadForm(item));
  });
}

function showProgress(loaded, total = 0) {
  const box = $("progress");
  box.hidden = false;
  const bar = $("progress-bar");
  if (loaded < 0) { // all sent: the service analyses it
    bar.removeAttribute("value");
    $("progress-label").textContent = t("agent.analysing");
    return;
  }
  const share = total ? Math.min(1, loaded / total) : 0;
  bar.value = Math.round(share * 100);
  $("progress-label").textContent = t("agent.uploading", { pct: pct(share), kb: Math.round(total / 1024) });
}

let flushing = null;
let flushAgain = false;

/** Upload what waits in the outbox, oldest first, one at a time. */
function flush() {
  if (!hasOutbox) return Promise.resolve();
  if (flushing) {
    flushAgain = true;
    return flushing;
  }
  flushing = (async () => {
    try {
      do {
        flushAgain = false;
        await flushOnce();
      } while (flushAgain);
    } finally {
      flushing = null;
    }
  })();
  return flushing;
}

async function flushOnce() {
  clearTimeout(retryTimer);
  if (!navigator.onLine) return;
  let sent = 0;
  const result = await sendOutbox({
    key: keys.get(),
    upload: xhrUpload,
    maxBytes: config.max_image_bytes,
    onChange: renderQueue,
    onSent: (item, report, status) => {
      sent += 1;
      retryDelayMs = 5000;
      showMessage(item.fromQueue ? t("queue.sent") : "", "info");
      showResult(item, report, status);
      rememberSent(report);
    },
  });
  if (result.outcome === "offline" || result.outcome === "retry") {
    showMessage(result.message || t("err.network"), result.outcome === "offline" ? "info" : "error");
    scheduleRetry(result.after ? result.after * 1000 : 0);
    requestSync();
  } else if (result.outcome === "key") {
    showMessage(result.message, "error");
    showSignIn(true);
  } else {
    const held = (await outbox.all()).filter((i) => i.status === "refused" || i.status === "place");
    if (held.length) showMessage(held[held.length - 1].message, "error");
  }
  await renderQueue();
  if (sent) refreshMine();
}

function scheduleRetry(afterMs = 0) {
  clearTimeout(retryTimer);
  const delay = Math.max(afterMs, retryDelayMs);
  retryDelayMs = Math.min(RETRY_MAX_MS, retryDelayMs * 2);
  retryTimer = setTimeout(flush, delay);
}

async function uploadDirect(item) {
  // No IndexedDB (a private window of an old browser): send now, keep nothing.
  showMessage(t("agent.analysing"), "info");
  let response;
  try {
    response = await xhrUpload(item, keys.get());
  } catch {
    showMessage(t("queue.unavailable"), "error");
    return;
  }
  if (response.ok) {
    showMessage("", "info");
    showResult(item, await response.json(), response.status);
  } else {
    showMessage(refusalMessage(response.status, "", "", { maxBytes: config.max_image_bytes }), "error");
  }
}

// ------------------------------------------------------------------------------------------------
// The queue, shown

async function renderQueue() {
  const items = hasOutbox ? await outbox.all() : [];
  $("queue").hidden = items.length === 0;
  $("queue-title").textContent = t("queue.title", { n: items.length });
  const list = $("queue-list");
  for (const img of list.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  list.replaceChildren(...items.map((item) => {
    const thumb = el("img", { alt: "", src: URL.createObjectURL(new Blob([item.bytes], { type: item.type })) });
    thumb.onerror = () => { thumb.replaceWith(el("span", { class: "thumb-placeholder", text: "?" })); };
    const status = {
      waiting: t("queue.waiting"), sending: t("queue.sending"), retry: t("queue.retry"),
      key: t("queue.key"), refused: t("queue.refused"), place: t("queue.place"),
    }[item.status] || item.status;
    const actions = el("div", { class: "row" });
    if (item.status !== "sending") {
      if (item.status === "place") {
        actions.append(el("button", { type: "button", class: "small primary", text: t("queue.place_now"),
          onclick: () => openPin(t("pin.for_queued"), { kind: "item", id: item.id },
            item.lat !== null && item.lat !== undefined ? { lat: item.lat, lon: item.lon } : null) }));
      } else if (item.status !== "refused") {
        actions.append(el("button", { type: "button", class: "small", text: t("queue.send_now"),
          onclick: async () => { await outbox.put({ ...item, status: "waiting" }); flush(); } }));
      }
      actions.append(el("button", { type: "button", class: "small", text: t("queue.remove"),
        onclick: async () => { await outbox.remove(item.id); renderQueue(); } }));
    }
    return el("li", { class: `queue-item ${item.status}`, dataset: { id: item.id, status: item.status } },
      thumb,
      el("div", { class: "grow" },
        el("strong", { text: status }),
        item.anyway ? el("div", { class: "muted", text: t("queue.anyway") }) : null,
        el("div", { class: "muted", text: when(item.queued_at) }),
        item.message && item.status !== "waiting" ? el("div", { class: "item-message", text: item.message }) : null),
      actions);
  }));
}

// ------------------------------------------------------------------------------------------------
// The result

/**
 * Send the photo of a "no deposit" verdict again as a deposit the model missed. It goes through the
 * outbox like any photo, so it waits while offline; the service recognises the same bytes from the
 * same key and upgrades the first report in place instead of storing a second one.
 */
async function reportAnyway(item) {
  const again = { ...item, id: newId(), anyway: true, queued_at: new Date().toISOString(), status: "waiting",
    message: "", fromQueue: !navigator.onLine };
  const button = $("report-anyway");
  if (button) button.disabled = true;
  showMessage(t("agent.sending"), "info");
  await queue(again);
}

/** "2 dépôts sauvages, 1 poubelle": the detections counted by class, deposits first. */
function summary(detections) {
  const counts = new Map();
  for (const d of [...detections].sort((a, b) => Number(b.deposit) - Number(a.deposit))) {
    counts.set(d.label, (counts.get(d.label) || 0) + 1);
  }
  return [...counts].map(([label, n]) => {
    const key = `classes.${label}`;
    return has(key) ? t(key, { n }).split("|")[n > 1 ? 1 : 0] : `${n} ${classLabel(label)}`;
  }).join(", ");
}

function showResult(item, report, status) {
  const dumping = report.verdict.dumping;
  const anyway = Boolean(report.agent_says_deposit);
  const verdict = $("verdict");
  verdict.className = `verdict ${dumping ? "dumping" : anyway ? "anyway" : "clean"}`;
  verdict.replaceChildren(el("strong", { text: t(dumping ? "result.dumping" : anyway ? "result.anyway" : "result.clean") }));
  if (dumping) verdict.append(el("span", { text: ` · ${t("result.score", { pct: pct(report.verdict.score) })}` }));
  const offer = $("anyway-offer");
  offer.hidden = dumping || anyway || !item.bytes || Boolean(report.after_of);
  offer.replaceChildren();
  if (!offer.hidden) {
    offer.append(
      el("p", { class: "help", text: t("result.anyway_help") }),
      el("button", { type: "button", id: "report-anyway", class: "big", text: t("result.report_anyway"),
        onclick: () => reportAnyway(item) }),
    );
  }

  const frame = $("result-frame");
  for (const img of frame.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  const photo = el("img", { alt: t("result.photo_alt"),
    src: item.bytes ? URL.createObjectURL(new Blob([item.bytes], { type: item.type })) : "" });
  photo.onerror = () => showAnnotated(frame, report);
  frame.replaceChildren(photo, boxesOverlay(report.image.width, report.image.height, report.detections, classLabel));

  const details = [];
  if (status === 200 && !item.anyway) details.push(t("result.duplicate"));
  if (report.after_of) {
    details.push(t(dumping ? "result.after_still" : "result.after_clean", { id: report.after_of }));
  } else if (report.incident) {
    details.push(t(`result.${report.incident.action}`, { id: report.incident.id }));
  } else {
    details.push(t("result.no_incident"));
  }
  if (anyway && !dumping) details.push(t("result.to_review"));
  if (report.detections.length) details.push(t("result.found", { list: summary(report.detections) }));
  const loc = report.location;
  details.push(t("result.where", { lat: loc.lat.toFixed(5), lon: loc.lon.toFixed(5),
    acc: loc.accuracy_m ? ` (± ${Math.round(loc.accuracy_m)} m)` : "", source: t(`source.${loc.source}`) }));
  $("result-details").replaceChildren(...details.map((text) => el("li", { text })));
  $("result").hidden = false;
  $("result").dataset.reportId = report.id;
  showPlace(loc);
}

async function showAnnotated(frame, report) {
  // The browser cannot show this format (HEIC): the service's JPEG, boxes already drawn.
  try {
    const response = await apiFetch(keys, report.links.annotated_image);
    if (!response.ok) throw new Error(String(response.status));
    const url = URL.createObjectURL(await response.blob());
    frame.replaceChildren(el("img", { alt: t("result.photo_alt"), src: url }));
  } catch {
    frame.replaceChildren(el("p", { class: "muted", text: t("result.no_preview") }));
  }
}

function showPlace(loc) {
  const element = $("result-map");
  if (!mapLibraryLoaded()) {
    showMapMissing(element, config);
    return;
  }
  const L = window.L;
  if (!resultMap) {
    resultMap = makeMap(element, config, { scrollWheelZoom: false });
    L.control.scale({ imperial: false }).addTo(resultMap);
  }
  resultMap.invalidateSize();
  if (resultLayer) resultLayer.remove();
  const where = [loc.lat, loc.lon];
  resultLayer = L.layerGroup([
    L.circle(where, { radius: loc.accuracy_m || 5, className: "accuracy", interactive: false }),
    L.circleMarker(where, { radius: 8, className: "place" }),
  ]).addTo(resultMap);
  resultMap.setView(where, 17);
}

// ------------------------------------------------------------------------------------------------
// "My reports": the agent's own reports of the last days, with the state of their incident

function rememberSent(report) {
  const cached = cachedMine();
  const items = [report, ...cached.filter((r) => r.id !== report.id)];
  localStorage.setItem(MINE_CACHE, JSON.stringify(items.slice(0, 50).map(slim)));
  renderMine(items);
}

function slim(report) {
  const { id, received_at: receivedAt, verdict, incident, agent_says_deposit: anyway, detections } = report;
  return { id, received_at: receivedAt, verdict, incident, agent_says_deposit: anyway, after_of: report.after_of,
    detections: (detections || []).map((d) => ({ label: d.label, deposit: d.deposit })) };
}

function cachedMine() {
  try {
    return JSON.parse(localStorage.getItem(MINE_CACHE) || "[]");
  } catch {
    return [];
  }
}

async function refreshMine() {
  if (!navigator.onLine) {
    renderMine(cachedMine(), t("mine.offline"));
    return;
  }
  try {
    const response = await apiFetch(keys, "/v1/reports?limit=50");
    if (!response.ok) {
      renderMine(cachedMine());
      return;
    }
    const since = Date.now() - MINE_DAYS * 86400 * 1000;
    const items = (await response.json()).items.filter((r) => Date.parse(r.received_at) >= since);
    localStorage.setItem(MINE_CACHE, JSON.stringify(items.map(slim)));
    renderMine(items, t("mine.updated", { when: when(new Date().toISOString()) }));
  } catch {
    renderMine(cachedMine(), t("mine.offline"));
  }
}

const thumbs = new Map(); // report id -> object URL of its photo

async function thumbnail(img, id) {
  if (thumbs.has(id)) {
    img.src = thumbs.get(id);
    return;
  }
  try {
    const response = await apiFetch(keys, `/v1/reports/${id}/image`);
    if (!response.ok) throw new Error(String(response.status));
    const url = URL.createObjectURL(await response.blob());
    thumbs.set(id, url);
    img.src = url;
  } catch {
    img.replaceWith(el("span", { class: "thumb-placeholder", text: "?" }));
  }
}

function renderMine(items, status = "") {
  $("mine").hidden = items.length === 0;
  $("mine-status").textContent = status;
  $("mine-list").replaceChildren(...items.map((report) => {
    const img = el("img", { alt: "", loading: "lazy" });
    if (navigator.onLine) thumbnail(img, report.id);
    const verdict = report.verdict.dumping ? t("mine.dumping") : report.agent_says_deposit ? t("mine.anyway")
      : t("mine.clean");
    let state = t("mine.no_incident");
    if (report.after_of) state = t("mine.after_of", { id: report.after_of });
    else if (report.incident) state = t("mine.incident", { id: report.incident.id, state: t(`state.${report.incident.status}`) });
    const open = report.incident && (config.open_statuses || []).includes(report.incident.status);
    return el("li", { class: "mine-item", dataset: { report: report.id, state: report.incident?.status || "none" } },
      img,
      el("div", { class: "grow" },
        el("strong", { text: verdict }),
        el("div", { text: state, class: `state st-${report.incident?.status || "none"}` }),
        el("div", { class: "muted", text: when(report.received_at) }),
        open ? el("button", { type: "button", class: "small after-photo", dataset: { incident: report.incident.id },
          text: t("mine.after"), onclick: () => { afterFor = report.incident.id; $("take").click(); } }) : null));
  }));
}

// ------------------------------------------------------------------------------------------------

async function installWorker() {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return;
  try {
    await navigator.serviceWorker.register("/sw.js", { type: "module", scope: "/" });
  } catch {
    return; // the page works without it, online only
  }
  navigator.serviceWorker.addEventListener("message", (event) => {
    const message = event.data || {};
    if (message.type === "outbox") renderQueue();
    if (message.type === "sent") {
      showResult(message.item, message.report, message.status);
      rememberSent(message.report);
    }
  });
  // A new release took over (not the first install): reload, unless the agent is preparing a photo.
  let updated = Boolean(navigator.serviceWorker.controller);
  navigator.serviceWorker.addEventListener("controllerchange", () => {
    if (updated && !draft) location.reload();
    updated = true;
  });
}

async function start() {
  applyText();
  document.title = `vipare · ${t("app.agent_title")}`;
  config = await loadUiConfig();
  renderKey();
  $("key-button").addEventListener("click", () => showSignIn($("sign-in").hidden));
  $("key-form").addEventListener("submit", saveKey);
  $("take").addEventListener("change", (e) => choose(e.target));
  $("pick").addEventListener("change", (e) => choose(e.target));
  $("take").addEventListener("cancel", () => { afterFor = null; }); // no photo after cleaning after all
  $("send").addEventListener("click", send);
  $("cancel").addEventListener("click", clearDraft);
  $("position-retry").addEventListener("click", () => {
    if (!draft) return;
    const current = draft;
    current.fix = null;
    renderDraftPosition();
    locate().then((fix) => { if (draft === current) { current.fix = fix; renderDraftPosition(); } });
  });
  $("position-edit").addEventListener("click", () => {
    openPin(t("pin.correct"));
    if (draft) draft.pinAuto = false;
  });
  $("pin-done").addEventListener("click", pinDone);
  hasOutbox = Boolean(await openDb());
  if (!hasOutbox) showMessage(t("queue.unavailable"), "info");
  if (keys.get()) await storedKey.set(keys.get());
  window.addEventListener("online", () => { retryDelayMs = 5000; flush(); refreshMine(); });
  window.addEventListener("offline", () => renderMine(cachedMine(), t("mine.offline")));
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") flush(); });
  installWorker();
  const linked = await keyFromLink();
  if (!keys.get() && !linked) await probeOpenMode();
  await renderQueue();
  renderMine(cachedMine());
  document.body.dataset.ready = "true";
  document.body.dataset.lang = lang;
  flush();
  if (keys.get() || $("sign-in").hidden) refreshMine();
}

start();
