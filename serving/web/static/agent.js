// The field agent's page: take or pick a photo, send it with the phone's position, see the verdict.
//
// Every photo goes through an outbox in IndexedDB: it is stored first (bytes, position, a client id),
// then uploaded, and removed only after a 2xx answer. When the network is down the photo simply
// stays there, shown as the queue, and is sent when the browser is back online (the `online` event,
// a retry timer with back-off, the page becoming visible, or the next visit). One upload runs at a
// time (a Web Lock across tabs), and the service answers a repeated photo from the same key with its
// first report, so a photo whose answer was lost on the way still counts once.

import { applyText, has, pct, t, when } from "./i18n.js";
import {
  KeyStore, apiFetch, boxesOverlay, coords, el, errorOf, loadUiConfig, makeMap, mapLibraryLoaded,
  refusalMessage, showMapMissing,
} from "./common.js";

const keys = new KeyStore("agent");
const $ = (id) => document.getElementById(id);
const classLabel = (name) => (has(`class.${name}`) ? t(`class.${name}`) : name);

let config = null;
let draft = null; // {file, url, capturedAt, position: Promise<{lat, lon, accuracy_m}|null>}
let resultMap = null;
let resultLayer = null;
let retryTimer = null;
let retryDelayMs = 5000;
const RETRY_MAX_MS = 60000;
const POSITION_OPTIONS = { enableHighAccuracy: true, timeout: 20000, maximumAge: 30000 };
const FRESH_MS = 5 * 60 * 1000; // a file this recent was just taken with the camera

// ------------------------------------------------------------------------------------------------
// The outbox (IndexedDB). Items: {id, bytes, type, name, size, lat, lon, accuracy_m, captured_at,
// note, queued_at, status: waiting|sending|retry|key|refused, message}.

const outbox = {
  db: null,
  async open() {
    if (!("indexedDB" in window)) return false;
    try {
      this.db = await new Promise((resolve, reject) => {
        const request = indexedDB.open("vipare-agent", 1);
        request.onupgradeneeded = () => request.result.createObjectStore("outbox", { keyPath: "id" });
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
      return true;
    } catch {
      return false;
    }
  },
  run(mode, action) {
    return new Promise((resolve, reject) => {
      const tx = this.db.transaction("outbox", mode);
      const request = action(tx.objectStore("outbox"));
      tx.oncomplete = () => resolve(request ? request.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  },
  async all() {
    if (!this.db) return [];
    const items = await this.run("readonly", (store) => store.getAll());
    return items.sort((a, b) => a.queued_at.localeCompare(b.queued_at));
  },
  put(item) {
    return this.run("readwrite", (store) => store.put(item));
  },
  remove(id) {
    return this.run("readwrite", (store) => store.delete(id));
  },
};

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

async function saveKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  const previous = keys.get();
  keys.set(key);
  showMessage(t("key.checking"), "info");
  try {
    const response = await apiFetch(keys, "/v1/reports?limit=1");
    if (response.status === 401) {
      if (previous) keys.set(previous);
      else keys.clear();
      showMessage(t("err.401"), "error");
      return;
    }
  } catch {
    /* offline: keep the key, it is checked with the first upload */
  }
  $("key-input").value = "";
  showSignIn(false);
  showMessage("", "info");
  renderKey();
  for (const item of await outbox.all()) {
    if (item.status === "key") await outbox.put({ ...item, status: "waiting", message: "" });
  }
  flush();
}

// ------------------------------------------------------------------------------------------------
// The photo being prepared, and the phone's position

function setPosition(text, retry = false) {
  $("position").textContent = text;
  $("position-retry").hidden = !retry;
}

function locate() {
  if (!window.isSecureContext) {
    setPosition(t("pos.insecure"));
    return Promise.resolve(null);
  }
  if (!navigator.geolocation) {
    setPosition(t("pos.unsupported"));
    return Promise.resolve(null);
  }
  setPosition(t("pos.locating"));
  return new Promise((resolve) => {
    navigator.geolocation.getCurrentPosition(
      (p) => {
        const found = { lat: p.coords.latitude, lon: p.coords.longitude, accuracy_m: p.coords.accuracy };
        setPosition(t("pos.ok", { lat: found.lat.toFixed(5), lon: found.lon.toFixed(5),
          acc: Math.round(found.accuracy_m) }));
        resolve(found);
      },
      (error) => {
        const key = { 1: "pos.denied", 2: "pos.unavailable", 3: "pos.timeout" }[error.code] || "pos.unavailable";
        setPosition(`${t(key)} ${t("pos.none_send")}`, true);
        resolve(null);
      },
      POSITION_OPTIONS,
    );
  });
}

function choose(input) {
  const file = input.files && input.files[0];
  input.value = ""; // choosing the same file again fires `change` again
  if (!file) return;
  clearDraft();
  if (config.max_image_bytes && file.size > config.max_image_bytes) {
    showMessage(refusalMessage(413, "", "", { maxBytes: config.max_image_bytes }));
    return;
  }
  showMessage("", "info");
  // A photo just taken was taken when its file was written: say so, as it may be sent hours later
  // from the queue and browsers often strip EXIF. An older photo keeps its own EXIF time.
  const fresh = file.lastModified && Date.now() - file.lastModified < FRESH_MS;
  const capturedAt = fresh ? new Date(file.lastModified).toISOString() : null;
  draft = { file, url: URL.createObjectURL(file), capturedAt };
  const img = $("draft-photo");
  img.hidden = false;
  img.onerror = () => { img.hidden = true; }; // e.g. HEIC, which most browsers cannot show
  img.src = draft.url;
  $("draft").hidden = false;
  $("capture").classList.add("drafting");
  $("send").disabled = false;
  draft.position = locate();
  $("capture").scrollIntoView({ block: "start" });
}

function clearDraft() {
  if (draft) URL.revokeObjectURL(draft.url);
  draft = null;
  $("draft").hidden = true;
  $("capture").classList.remove("drafting");
  $("draft-photo").removeAttribute("src");
  $("note").value = "";
}

async function send() {
  if (!draft) return;
  const current = draft;
  $("send").disabled = true;
  const position = await current.position;
  const item = {
    id: newId(),
    bytes: await current.file.arrayBuffer(), // the bytes themselves: a File handle may not survive a reload
    type: current.file.type || "application/octet-stream",
    name: current.file.name || "photo.jpg",
    size: current.file.size,
    lat: position ? position.lat : null,
    lon: position ? position.lon : null,
    accuracy_m: position ? position.accuracy_m : null,
    captured_at: current.capturedAt,
    note: $("note").value.trim(),
    queued_at: new Date().toISOString(),
    status: "waiting",
    message: "",
    fromQueue: !navigator.onLine, // say so when it is sent later
  };
  clearDraft();
  if (!outbox.db) {
    await uploadDirect(item);
    return;
  }
  await outbox.put(item);
  await renderQueue();
  if (!navigator.onLine) {
    showMessage(t("queue.offline"), "info");
    return;
  }
  showMessage(t("agent.analysing"), "info");
  await flush();
}

// ------------------------------------------------------------------------------------------------
// Uploading

function upload(item) {
  const form = new FormData();
  form.append("photo", new Blob([item.bytes], { type: item.type }), item.name);
  for (const name of ["lat", "lon", "accuracy_m", "captured_at", "note"]) {
    if (item[name] !== null && item[name] !== undefined && item[name] !== "") form.append(name, String(item[name]));
  }
  if (item.anyway) form.append("agent_says_deposit", "true");
  return apiFetch(keys, "/v1/reports", { method: "POST", body: form });
}

/** Send one item: "sent", "offline" (keep, retry), "retry" (keep, later), "key" (keep, new key) or "refused". */
async function sendItem(item) {
  let response;
  let report;
  try {
    response = await upload(item);
    if (response.ok) report = await response.json();
  } catch {
    return { outcome: "offline" };
  }
  if (response.ok) return { outcome: "sent", report, status: response.status };
  const { code, detail } = await errorOf(response);
  const message = refusalMessage(response.status, code, detail, { maxBytes: config.max_image_bytes });
  if (response.status === 401 || response.status === 403) return { outcome: "key", message };
  if (response.status >= 500 || response.status === 408 || response.status === 429) {
    return { outcome: "retry", message, after: Number(response.headers.get("Retry-After")) || 0 };
  }
  return { outcome: "refused", message };
}

let flushing = null;
let flushAgain = false;

/** Upload what waits in the outbox, oldest first, one at a time. */
function flush() {
  if (flushing) {
    flushAgain = true;
    return flushing;
  }
  flushing = (async () => {
    try {
      do {
        flushAgain = false;
        if (navigator.locks) await navigator.locks.request("vipare-outbox", flushOnce);
        else await flushOnce();
      } while (flushAgain);
    } finally {
      flushing = null;
    }
  })();
  return flushing;
}

async function flushOnce() {
  clearTimeout(retryTimer);
  for (const item of await outbox.all()) {
    if (item.status === "refused" || item.status === "key") continue;
    if (!navigator.onLine) break;
    await outbox.put({ ...item, status: "sending" });
    await renderQueue();
    const result = await sendItem(item);
    if (result.outcome === "sent") {
      await outbox.remove(item.id); // only now: the service has the photo
      retryDelayMs = 5000;
      showMessage(item.fromQueue ? t("queue.sent") : "", "info");
      showResult(item, result.report, result.status);
      continue;
    }
    if (result.outcome === "offline" || result.outcome === "retry") {
      await outbox.put({ ...item, status: result.outcome === "offline" ? "waiting" : "retry",
        message: result.message || "", fromQueue: true });
      showMessage(result.message || t("err.network"), result.outcome === "offline" ? "info" : "error");
      scheduleRetry(result.after ? result.after * 1000 : 0);
      break;
    }
    await outbox.put({ ...item, status: result.outcome, message: result.message });
    showMessage(result.message, "error");
    if (result.outcome === "key") {
      showSignIn(true);
      break;
    }
  }
  await renderQueue();
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
  const result = await sendItem(item);
  if (result.outcome === "sent") {
    showMessage("", "info");
    showResult(item, result.report, result.status);
  } else {
    showMessage(result.outcome === "offline" ? t("queue.unavailable") : result.message, "error");
  }
}

// ------------------------------------------------------------------------------------------------
// The queue, shown

async function renderQueue() {
  const items = await outbox.all();
  $("queue").hidden = items.length === 0;
  $("queue-title").textContent = t("queue.title", { n: items.length });
  const list = $("queue-list");
  for (const img of list.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  list.replaceChildren(...items.map((item) => {
    const thumb = el("img", { alt: "", src: URL.createObjectURL(new Blob([item.bytes], { type: item.type })) });
    thumb.onerror = () => { thumb.replaceWith(el("span", { class: "thumb-placeholder", text: "?" })); };
    const status = {
      waiting: t("queue.waiting"), sending: t("queue.sending"), retry: t("queue.retry"),
      key: t("queue.key"), refused: t("queue.refused"),
    }[item.status] || item.status;
    const actions = el("div", { class: "row" });
    if (item.status !== "sending") {
      if (item.status !== "refused") {
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
  if (!outbox.db) {
    await uploadDirect(again);
    return;
  }
  await outbox.put(again);
  await renderQueue();
  if (!navigator.onLine) {
    showMessage(t("queue.offline"), "info");
    return;
  }
  showMessage(t("agent.sending"), "info");
  await flush();
}

function showResult(item, report, status) {
  const dumping = report.verdict.dumping;
  const anyway = Boolean(report.agent_says_deposit);
  const verdict = $("verdict");
  verdict.className = `verdict ${dumping ? "dumping" : anyway ? "anyway" : "clean"}`;
  // replaceChildren writes a null argument as the text "null": pass only real nodes.
  verdict.replaceChildren(el("strong", { text: t(dumping ? "result.dumping" : anyway ? "result.anyway" : "result.clean") }));
  if (dumping) verdict.append(el("span", { text: ` · ${t("result.score", { pct: pct(report.verdict.score) })}` }));
  const offer = $("anyway-offer");
  offer.hidden = dumping || anyway;
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
  const photo = el("img", { alt: "", src: URL.createObjectURL(new Blob([item.bytes], { type: item.type })) });
  photo.onerror = () => showAnnotated(frame, report);
  frame.replaceChildren(photo, boxesOverlay(report.image.width, report.image.height, report.detections, classLabel));

  const details = [];
  if (status === 200 && !item.anyway) details.push(t("result.duplicate"));
  if (report.incident) details.push(t(`result.${report.incident.action}`, { id: report.incident.id }));
  else details.push(t("result.no_incident"));
  if (anyway && !dumping) details.push(t("result.to_review"));
  const found = report.detections.map((d) => `${classLabel(d.label)} ${pct(d.score)}`);
  if (found.length) details.push(t("result.detections", { n: found.length, list: found.join(", ") }));
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
    frame.replaceChildren(el("img", { alt: "", src: url }));
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

async function start() {
  applyText();
  document.title = `vipare · ${t("app.agent_title")}`;
  config = await loadUiConfig();
  renderKey();
  $("key-button").addEventListener("click", () => showSignIn($("sign-in").hidden));
  $("key-form").addEventListener("submit", saveKey);
  $("take").addEventListener("change", (e) => choose(e.target));
  $("pick").addEventListener("change", (e) => choose(e.target));
  $("send").addEventListener("click", send);
  $("cancel").addEventListener("click", clearDraft);
  $("position-retry").addEventListener("click", () => { if (draft) draft.position = locate(); });
  if (!(await outbox.open())) showMessage(t("queue.unavailable"), "info");
  window.addEventListener("online", () => { retryDelayMs = 5000; flush(); });
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") flush(); });
  if (!keys.get()) await probeOpenMode();
  await renderQueue();
  document.body.dataset.ready = "true";
  flush();
}

start();
