// The cleansing manager's page: incidents on a clustered map coloured by state, filters, a panel
// with one incident's photos (boxes drawn by the service), reports and history, state changes with
// a comment, and CSV / GeoJSON exports. Everything goes through the API with the manager's key.
// Incidents to review (a photo an agent sent anyway, not reviewed yet) come first in the list with
// a badge; each photo opens a review (review.js) that corrects what the model saw.

import { applyText, has, pct, t, when } from "./i18n.js";
import {
  KeyStore, SignIn, apiFetch, apiJson, boxesOverlay, coords, downloadFile, el, errorOf, loadUiConfig, makeMap,
  mapLibraryLoaded, refusalMessage, showMapMissing,
} from "./common.js";
import { openReview, reviewSummary } from "./review.js";

const keys = new KeyStore("manager");
const signIn = new SignIn(keys, {
  load: () => load({ fit: true }), showMessage, onSignOut: () => { clearMap(); closeDetail(); },
});
const $ = (id) => document.getElementById(id);
const classLabel = (name) => (has(`class.${name}`) ? t(`class.${name}`) : name);
const stateLabel = (state) => t(`state.${state}`);

const PAGE = 1000; // the service's default largest page
const MAX_MARKERS = 10000;
const LIST_MAX = 300; // entries in the side list; the map shows them all
const PHOTOS_SHOWN = 6;

let config = null;
let map = null;
let cluster = null;
const markers = new Map(); // incident id -> Leaflet marker
let features = [];
let selectedId = null;
let photos = { incident: null, urls: new Map() }; // annotated photos of the incident shown: report id -> blob URL

// ------------------------------------------------------------------------------------------------
// Messages, key

let messageTimer = null;

/** A message over the page; errors stay until clicked or replaced, others go after a few seconds. */
function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
  clearTimeout(messageTimer);
  if (text && kind !== "error") messageTimer = setTimeout(() => { box.hidden = true; }, 6000);
}






// ------------------------------------------------------------------------------------------------
// Filters

function buildFilters() {
  const states = $("state-filter");
  for (const state of config.statuses) {
    const box = el("input", { type: "checkbox", name: "status", value: state,
      checked: config.open_statuses.includes(state) });
    states.append(el("label", { class: "state-choice" }, box, el("span", { class: `dot st-${state}` }),
      el("span", { text: stateLabel(state) })));
  }
  const select = $("class-filter");
  for (const name of config.deposit_classes) select.append(el("option", { value: name, text: classLabel(name) }));
}

function resetFilters() {
  for (const box of $("state-filter").querySelectorAll("input")) box.checked = config.open_statuses.includes(box.value);
  $("class-filter").value = "";
  $("size-filter").value = "";
  $("since").value = "";
  $("until").value = "";
}

/** The query of GET /v1/incidents and the exports, from the filters (dates are local days). */
function filterQuery() {
  const query = new URLSearchParams();
  const states = [...$("state-filter").querySelectorAll("input:checked")].map((box) => box.value);
  if (states.length && states.length < config.statuses.length) states.forEach((s) => query.append("status", s));
  if ($("class-filter").value) query.append("class", $("class-filter").value);
  if ($("size-filter").value) query.append("size", $("size-filter").value);
  if ($("since").value) query.append("since", new Date(`${$("since").value}T00:00:00`).toISOString());
  if ($("until").value) query.append("until", new Date(`${$("until").value}T23:59:59.999`).toISOString());
  return query;
}

function filtersValid() {
  if ($("since").value && $("until").value && $("since").value > $("until").value) {
    showMessage(`${t("mgr.from")} > ${t("mgr.to")}`, "error");
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------------------------------
// The map and the list

function setupMap() {
  const element = $("map");
  if (!mapLibraryLoaded(true)) {
    showMapMissing(element, config);
    return;
  }
  const L = window.L;
  map = makeMap(element, config, { worldCopyJump: true });
  map.setView([20, 0], 2);
  L.control.scale({ imperial: false }).addTo(map);
  cluster = L.markerClusterGroup({ showCoverageOnHover: false, maxClusterRadius: 50 });
  map.addLayer(cluster);
  const legend = L.control({ position: "bottomleft" });
  legend.onAdd = () => el("div", { class: "legend" },
    el("strong", { text: t("map.legend") }),
    ...config.statuses.map((s) => el("div", {}, el("span", { class: `dot st-${s}` }), el("span", { text: stateLabel(s) }))));
  legend.addTo(map);
  window.vipareMap = map; // for the browser tests and the console
}

function clearMap() {
  if (cluster) cluster.clearLayers();
  markers.clear();
  features = [];
  $("incident-list").replaceChildren();
  $("count").textContent = "";
}

function markerFor(feature) {
  const L = window.L;
  const { id, status, label } = feature.properties;
  const [lon, lat] = feature.geometry.coordinates;
  const icon = L.divIcon({
    className: `vp-marker st-${status}${feature.properties.to_review ? " to-review" : ""}`,
    iconSize: [18, 18], iconAnchor: [9, 9],
    html: `<span data-incident="${Number(id)}"></span>`,
  });
  const marker = L.marker([lat, lon], { icon, title: `#${id} ${classLabel(label)} · ${stateLabel(status)}${
    feature.properties.to_review ? ` · ${t("review.badge")}` : ""}`,
    riseOnHover: true });
  marker.on("click", () => select(id, { fromMap: true }));
  if (feature.properties.thumbnail) {
    // A popup-like tooltip on hover: the latest photo, fetched (with the key) when first shown.
    marker.bindTooltip(`#${id} ${classLabel(label)}`, { direction: "top", offset: [0, -10], className: "thumb-tooltip" });
    marker.on("tooltipopen", async () => {
      const url = await thumbnail(feature.properties.thumbnail);
      if (url) marker.setTooltipContent(`<img src="${url}" alt=""><span>#${Number(id)} ${classLabel(label)}</span>`);
    });
  }
  return marker;
}

const thumbnails = new Map(); // thumbnail URL -> Promise of a blob URL (or null)

/** A thumbnail's blob URL, fetched once with the key. */
function thumbnail(path) {
  if (!thumbnails.has(path)) {
    thumbnails.set(path, (async () => {
      try {
        const response = await apiFetch(keys, path);
        return response.ok ? URL.createObjectURL(await response.blob()) : null;
      } catch {
        return null;
      }
    })());
  }
  return thumbnails.get(path);
}

const thumbWatcher = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const img = entry.target;
    thumbWatcher.unobserve(img);
    thumbnail(img.dataset.src).then((url) => { if (url) img.src = url; else img.replaceWith(el("span", { class: "thumb-placeholder", text: "?" })); });
  }
}, { rootMargin: "200px" }) : null;

/** Load the incidents matching the filters; true when it worked. */
async function load({ fit = false } = {}) {
  if (!filtersValid()) return false;
  $("count").textContent = t("mgr.loading");
  const query = filterQuery();
  const found = [];
  let matched = 0;
  try {
    for (let offset = 0; offset < MAX_MARKERS; offset += PAGE) {
      query.set("limit", PAGE);
      query.set("offset", offset);
      const page = await apiJson(keys, `/v1/incidents?${query}`);
      found.push(...page.features);
      matched = page.numberMatched;
      if (!page.features.length || found.length >= matched) break;
    }
  } catch (error) {
    $("count").textContent = "";
    signIn.failed(error);
    return false;
  }
  // The service lists incidents to review first; keep them first whatever the paging did.
  features = found.map((f, i) => [f, i])
    .sort(([a, i], [b, j]) => Number(Boolean(b.properties.to_review)) - Number(Boolean(a.properties.to_review)) || i - j)
    .map(([f]) => f);
  $("count").textContent = found.length < matched ? t("mgr.count_capped", { shown: found.length, n: matched })
    : t("mgr.count", { n: matched });
  renderList();
  if (cluster) {
    cluster.clearLayers();
    markers.clear();
    for (const feature of features) markers.set(feature.properties.id, markerFor(feature));
    cluster.addLayers([...markers.values()]);
    highlight(selectedId);
    if (fit && markers.size) {
      map.fitBounds(cluster.getBounds(), { padding: [40, 40], maxZoom: 17 });
    }
  }
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  return true;
}

/** The list's order: to review first (the service's), oldest, most reports, or highest score. */
function sorted(list) {
  const by = $("sort").value;
  const key = {
    age: (p) => Date.parse(p.first_seen),
    reports: (p) => -p.report_count,
    score: (p) => -p.max_score,
  }[by];
  if (!key) return list;
  return list.map((f, i) => [f, i]).sort(([a, i], [b, j]) => key(a.properties) - key(b.properties) || i - j)
    .map(([f]) => f);
}

/** "3 d", "5 h": how long ago an incident was first seen. */
function age(iso) {
  const hours = Math.max(0, (Date.now() - Date.parse(iso)) / 3600000);
  return hours < 48 ? t("age.short_hours", { n: Math.floor(hours) }) : t("age.short_days", { n: Math.floor(hours / 24) });
}

const picked = new Set(); // incidents ticked for a bulk change

function renderList() {
  const list = $("incident-list");
  $("list-hint").textContent = features.length ? t("mgr.choose") : t("mgr.none");
  const shown = new Set(features.map((f) => f.properties.id));
  for (const id of [...picked]) if (!shown.has(id)) picked.delete(id);
  list.replaceChildren(...sorted(features).slice(0, LIST_MAX).map((feature) => {
    const p = feature.properties;
    const tick = el("input", { type: "checkbox", class: "pick", dataset: { id: p.id },
      "aria-label": t("bulk.pick", { id: p.id }), checked: picked.has(p.id),
      onchange: (event) => {
        if (event.target.checked) picked.add(p.id);
        else picked.delete(p.id);
        renderBulk();
      } });
    let thumb = null;
    if (p.thumbnail) {
      thumb = el("img", { class: "thumb", alt: "", dataset: { src: p.thumbnail }, width: 56, height: 42 });
      if (thumbWatcher) thumbWatcher.observe(thumb);
      else thumbnail(p.thumbnail).then((url) => { if (url) thumb.src = url; });
    }
    return el("li", { class: "entry-row" }, tick,
      el("button", { type: "button", class: `incident-entry${p.to_review ? " to-review" : ""}`,
        dataset: { id: p.id, toReview: String(Boolean(p.to_review)) },
        onclick: () => select(p.id, { fromMap: false }) },
        thumb,
        el("span", { class: `dot st-${p.status}` }),
        el("span", { class: "grow" },
          el("strong", { text: `#${p.id} ${classLabel(p.label)}` }),
          el("span", { class: "badge age", title: t("age.first_seen"), text: age(p.first_seen) }),
          p.size ? el("span", { class: `badge size${p.size_source === "estimate" ? " estimate" : ""}`,
            title: t(p.size_source === "estimate" ? "size.estimated" : "size.by_manager"), text: p.size }) : null,
          p.to_review ? el("span", { class: "badge review", text: t("review.badge") }) : null,
          el("span", { class: "muted", text: ` · ${stateLabel(p.status)} · ${t("mgr.ago_reports", { n: p.report_count })}` }),
          p.crew ? el("span", { class: "muted block", text: t("schedule.line", { crew: p.crew, when: when(p.scheduled_for) }) }) : null,
          p.address ? el("span", { class: "muted block address", text: p.address.label }) : null,
          el("span", { class: "muted block", text: when(p.last_seen) }))));
  }));
  renderBulk();
}

function renderBulk() {
  $("bulk").hidden = picked.size === 0;
  $("bulk-count").textContent = t("bulk.count", { n: picked.size });
}

/** The datetime-local input's value as ISO 8601 with this browser's offset, or null. */
function localIso(value) {
  if (!value) return null;
  const at = new Date(value);
  return Number.isNaN(at.getTime()) ? null : at.toISOString();
}

async function bulkChange(to) {
  const body = { ids: [...picked], to };
  if (to === "scheduled") {
    body.scheduled_for = localIso($("bulk-when").value);
    body.crew = $("bulk-crew").value.trim() || null;
    if (!body.scheduled_for || !body.crew) {
      showMessage(t("schedule.needed"), "error");
      return;
    }
  }
  let outcomes;
  try {
    outcomes = await apiJson(keys, "/v1/incidents/transitions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (error) {
    signIn.failed(error);
    return;
  }
  const refused = outcomes.filter((o) => !o.done);
  picked.clear();
  showMessage(refused.length
    ? t("bulk.partly", { done: outcomes.length - refused.length, list: refused.map((o) => `#${o.id}: ${o.error}`).join(" ") })
    : t("bulk.done", { n: outcomes.length, state: stateLabel(to) }), refused.length ? "error" : "ok");
  await load();
  if (selectedId) await select(selectedId, { fromMap: true });
}

function highlight(id) {
  for (const [markerId, marker] of markers) {
    const element = marker.getElement();
    if (element) element.classList.toggle("selected", markerId === id);
  }
}

// ------------------------------------------------------------------------------------------------
// One incident

function dropPhotos() {
  photos.urls.forEach((url) => URL.revokeObjectURL(url));
  photos = { incident: null, urls: new Map() };
}

async function select(id, { fromMap = false } = {}) {
  selectedId = id;
  if (photos.incident !== id) {
    dropPhotos();
    photos.incident = id;
  }
  let detail;
  try {
    detail = await apiJson(keys, `/v1/incidents/${id}`);
  } catch (error) {
    signIn.failed(error);
    return;
  }
  renderDetail(detail);
  if (window.matchMedia("(max-width: 899px)").matches) $("panel").scrollIntoView({ behavior: "smooth" });
  const marker = markers.get(id);
  if (marker && !fromMap) {
    cluster.zoomToShowLayer(marker, () => {
      map.setView(marker.getLatLng(), Math.max(map.getZoom(), 16));
      highlight(id);
    });
  }
  highlight(id);
}

function closeDetail() {
  selectedId = null;
  dropPhotos();
  $("detail-view").hidden = true;
  $("detail-view").replaceChildren();
  $("list-view").hidden = false;
  highlight(null);
}

function actionLabel(from, to) {
  if (to === "confirmed" && from === "rejected") return t("action.reopen");
  if (to === "confirmed" && from === "scheduled") return t("action.unschedule");
  return t(`action.${to}`);
}

function renderDetail(detail) {
  const p = detail.properties;
  const [lon, lat] = detail.geometry.coordinates;

  const facts = [
    [t("mgr.class"), classLabel(p.label)],
    [t("mgr.first_seen"), when(p.first_seen)],
    [t("mgr.last_seen"), when(p.last_seen)],
    [t("mgr.reports"), String(p.report_count)],
    [t("mgr.position"), coords(lat, lon)],
  ];
  if (p.address) facts.push([t("mgr.address"), `${p.address.label} (${Math.round(p.address.distance_m)} m)`]);
  if (p.recurrence_count) facts.push([t("mgr.recurrence"), String(p.recurrence_count)]);
  if (p.merged_into) facts.push([t("mgr.merged_into"), `#${p.merged_into}`]);
  if (p.crew) facts.push([t("schedule.title"), t("schedule.line", { crew: p.crew, when: when(p.scheduled_for) })]);
  facts.push([t("age.first_seen"), age(p.first_seen)]);
  if (p.size) facts.push([t("size.label"), `${t(`size.${p.size}`)}${p.size_source === "estimate" ? ` (${t("size.estimated")})` : ""}`]);

  const view = $("detail-view");
  view.replaceChildren(
    el("button", { type: "button", class: "link back", text: `← ${t("mgr.back")}`, onclick: closeDetail }),
    el("h2", { class: "incident-title" }, el("span", { text: t("mgr.incident", { id: p.id }) }),
      el("span", { class: `badge st-${p.status}`, id: "incident-state", dataset: { state: p.status },
        text: stateLabel(p.status) }),
      p.to_review ? el("span", { class: "badge review", id: "incident-to-review", text: t("review.badge") }) : null),
    photosSection(detail),
    el("dl", { class: "facts" }, ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
    afterSection(detail),
    actionsSection(detail),
    timelineSection(detail),
    historySection(detail),
  );
  view.dataset.id = p.id;
  view.hidden = false;
  $("list-view").hidden = true;
  view.scrollTop = 0;
}

function actionsSection(detail) {
  const p = detail.properties;
  const allowed = config.statuses.filter((s) => (config.transitions[p.status] || []).includes(s)); // workflow order
  const section = el("section", { class: "actions" }, el("h3", { text: t("mgr.actions") }));
  if (p.status === "duplicate" && p.merged_into) {
    section.append(el("p", { class: "muted", text: t("merge.is_duplicate", { id: p.merged_into }) }),
      el("button", { type: "button", class: "small act", id: "unmerge", text: t("merge.undo"),
        onclick: () => unmergeIncident(p.id) }));
    return section;
  }
  if (!allowed.length) {
    section.append(el("p", { class: "muted", text: t("mgr.final") }));
    return section;
  }
  const comment = el("textarea", { id: "comment", rows: 2, maxlength: 2000, placeholder: t("mgr.comment_placeholder") });
  section.append(el("label", { for: "comment", text: t("mgr.comment") }), comment);
  const buttons = el("div", { class: "row wrap" });
  for (const to of allowed.filter((s) => s !== "duplicate" && s !== "scheduled")) {
    buttons.append(el("button", { type: "button", class: `small act st-${to}`, dataset: { to },
      text: actionLabel(p.status, to), onclick: () => change(p.id, to, comment.value) }));
  }
  section.append(buttons);
  if (allowed.includes("scheduled")) {
    const whenInput = el("input", { id: "schedule-when", type: "datetime-local" });
    const crewInput = el("input", { id: "schedule-crew", type: "text", maxlength: 100, class: "narrow",
      value: p.crew || "" });
    section.append(el("div", { class: "row wrap schedule-fields" },
      el("label", { class: "inline", for: "schedule-when", text: t("schedule.when") }), whenInput,
      el("label", { class: "inline", for: "schedule-crew", text: t("schedule.crew") }), crewInput,
      el("button", { type: "button", class: "small act st-scheduled", dataset: { to: "scheduled" },
        text: t("action.scheduled"), onclick: () => {
          const at = localIso(whenInput.value);
          const crew = crewInput.value.trim();
          if (!at || !crew) showMessage(t("schedule.needed"), "error");
          else change(p.id, "scheduled", comment.value, null, { scheduled_for: at, crew });
        } })));
  }
  if (allowed.includes("rejected")) {
    // A rejected incident is a false alarm: its photos teach the model what is not a deposit.
    section.append(el("label", { class: "check", for: "negatives" },
      el("input", { type: "checkbox", id: "negatives", checked: true }),
      el("span", { text: t("mgr.negatives") })));
  }
  if (allowed.includes("duplicate")) section.append(mergeSection(detail, comment));
  const sizeSelect = el("select", { id: "size-set", class: "narrow" },
    el("option", { value: "", text: t("size.estimate_option") }),
    ...["S", "M", "L"].map((size) => el("option", { value: size, text: t(`size.${size}`),
      selected: p.size_source === "manager" && p.size === size })));
  section.append(el("div", { class: "row wrap" },
    el("label", { class: "inline", for: "size-set", text: t("size.set") }), sizeSelect,
    el("button", { type: "button", class: "small", id: "size-save", text: t("key.save"), onclick: () => setSize(p.id, sizeSelect.value) })));
  return section;
}

const MERGE_SEARCH_M = 300; // nearby open incidents offered as merge targets

/**
 * Merging safely: the target is picked among the open incidents nearby (or typed), both photos shown
 * side by side, then confirmed; a target beyond the service's limit needs an explicit override.
 */
function mergeSection(detail, comment) {
  const p = detail.properties;
  const [lon, lat] = detail.geometry.coordinates;
  const box = el("div", { class: "merge", id: "merge" });
  const candidates = el("ul", { class: "candidates", id: "merge-candidates" });
  const preview = el("div", { class: "merge-preview", id: "merge-preview", hidden: true });
  const typed = el("input", { id: "merge-target", type: "number", min: 1, inputmode: "numeric", class: "narrow" });
  box.append(
    el("h3", { text: t("merge.title") }),
    el("button", { type: "button", class: "small", id: "merge-search", text: t("merge.search"), onclick: async () => {
      const dLat = MERGE_SEARCH_M / 111320;
      const dLon = dLat / Math.max(0.1, Math.cos((lat * Math.PI) / 180));
      const query = new URLSearchParams({ bbox: [lon - dLon, lat - dLat, lon + dLon, lat + dLat].join(","), limit: "50" });
      for (const status of config.open_statuses) query.append("status", status);
      let found;
      try {
        found = await apiJson(keys, `/v1/incidents?${query}`);
      } catch (error) {
        signIn.failed(error);
        return;
      }
      const others = found.features.filter((f) => f.properties.id !== p.id)
        .map((f) => ({ f, d: metres(lat, lon, f.geometry.coordinates[1], f.geometry.coordinates[0]) }))
        .sort((a, b) => a.d - b.d);
      candidates.replaceChildren(...(others.length ? others.map(({ f, d }) => el("li", {},
        el("button", { type: "button", class: "small candidate", dataset: { id: f.properties.id },
          text: t("merge.candidate", { id: f.properties.id, label: classLabel(f.properties.label), m: Math.round(d),
            state: stateLabel(f.properties.status) }),
          onclick: () => showMergePreview(detail, f.properties.id, preview, comment) })))
        : [el("li", { class: "muted", text: t("merge.none_near", { m: MERGE_SEARCH_M }) })]));
    } }),
    candidates,
    el("div", { class: "row wrap" }, el("label", { class: "inline", for: "merge-target", text: t("mgr.duplicate_of") }),
      typed, el("button", { type: "button", class: "small", text: t("merge.preview"), onclick: () => {
        const into = Number(typed.value);
        if (!Number.isInteger(into) || into < 1) showMessage(t("mgr.merge_target"), "error");
        else showMergePreview(detail, into, preview, comment);
      } })),
    preview,
  );
  return box;
}

function metres(lat1, lon1, lat2, lon2) {
  const r = 6371008.8;
  const f1 = (lat1 * Math.PI) / 180;
  const f2 = (lat2 * Math.PI) / 180;
  const a = Math.sin((f2 - f1) / 2) ** 2 + Math.cos(f1) * Math.cos(f2) * Math.sin(((lon2 - lon1) * Math.PI) / 360) ** 2;
  return 2 * r * Math.asin(Math.sqrt(a));
}

async function showMergePreview(detail, into, preview, comment) {
  let target;
  try {
    target = await apiJson(keys, `/v1/incidents/${into}`);
  } catch (error) {
    signIn.failed(error);
    return;
  }
  const p = detail.properties;
  const [lon, lat] = detail.geometry.coordinates;
  const [tLon, tLat] = target.geometry.coordinates;
  const distance = Math.round(metres(lat, lon, tLat, tLon));
  const latest = (d) => [...d.reports].sort((a, b) => b.observed_at.localeCompare(a.observed_at))[0];
  const figure = (d, caption) => {
    const node = el("figure", { class: "photo" }, el("figcaption", { class: "muted" },
      el("strong", { class: "block", text: caption }),
      el("span", { class: "block", text: `${stateLabel(d.properties.status)} · ${t("mgr.ago_reports", { n: d.properties.report_count })}` })));
    const report = latest(d);
    if (report) loadPhoto(node, report);
    return node;
  };
  const closed = !config.open_statuses.includes(target.properties.status);
  const override = el("input", { type: "checkbox", id: "merge-force" });
  preview.hidden = false;
  preview.dataset.target = String(into);
  preview.replaceChildren(
    el("div", { class: "photos before-after" }, figure(detail, t("merge.this", { id: p.id })),
      figure(target, t("merge.into", { id: into, m: distance }))),
    closed ? el("p", { class: "message error", text: t("merge.closed", { id: into, state: stateLabel(target.properties.status) }) }) : null,
    el("label", { class: "check", for: "merge-force", hidden: true, id: "merge-force-row" }, override,
      el("span", { text: t("merge.force") })),
    el("div", { class: "row wrap" },
      el("button", { type: "button", class: "small act", id: "merge-confirm", dataset: { to: "duplicate" },
        disabled: closed, text: t("merge.confirm", { id: p.id, into }),
        onclick: async () => {
          const outcome = await change(p.id, "duplicate", comment.value, into, override.checked ? { force: true } : {});
          if (outcome && outcome.code === "merge_too_far") $("merge-force-row").hidden = false;
        } }),
      el("button", { type: "button", class: "small", text: t("agent.cancel"), onclick: () => { preview.hidden = true; } })),
  );
}

async function setSize(id, size) {
  let detail;
  try {
    detail = await apiJson(keys, `/v1/incidents/${id}/size`, { method: "PUT",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ size: size || null }) });
  } catch (error) {
    signIn.failed(error);
    return;
  }
  showMessage(t("size.saved", { id }), "ok");
  renderDetail(detail);
  await load();
}

async function unmergeIncident(id) {
  let detail;
  try {
    detail = await apiJson(keys, `/v1/incidents/${id}/unmerge`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ comment: null }) });
  } catch (error) {
    signIn.failed(error);
    return;
  }
  showMessage(t("merge.undone", { id, state: stateLabel(detail.properties.status) }), "ok");
  renderDetail(detail);
  await load();
}

async function change(id, to, comment, mergedInto = null, extra = {}) {
  const body = { to, comment: comment.trim() || null, ...extra };
  if (mergedInto) body.merged_into = mergedInto;
  if (to === "rejected" && $("negatives")) body.negatives = $("negatives").checked;
  for (const button of document.querySelectorAll("#detail-view button.act")) button.disabled = true;
  let detail;
  try {
    detail = await apiJson(keys, `/v1/incidents/${id}/transitions`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (error) {
    for (const button of document.querySelectorAll("#detail-view button.act")) button.disabled = false;
    signIn.failed(error);
    return error;
  }
  showMessage(t("mgr.done", { id, state: stateLabel(detail.properties.status) }), "ok");
  renderDetail(detail);
  await load();
  return null;
}

function photosSection(detail) {
  const reports = [...detail.reports].sort((a, b) => b.observed_at.localeCompare(a.observed_at));
  const grid = el("div", { class: "photos" });
  const figures = reports.map((report, index) => {
    const figure = el("figure", { class: "photo", dataset: { report: report.id }, hidden: index >= PHOTOS_SHOWN },
      el("figcaption", { class: "muted" },
        el("span", { class: "block", text: when(report.observed_at) }),
        report.agent_says_deposit ? el("span", { class: "block anyway", text: t("review.sent_anyway") }) : null,
        el("span", { class: `block review-summary${report.review ? " reviewed" : ""}`,
          text: reviewSummary(report.review) })),
      el("button", { type: "button", class: "small review-open", dataset: { report: report.id },
        text: t("review.open"), onclick: (event) => {
          event.stopPropagation(); // the figure's own click opens the lightbox
          openReview({ keys, report, classes: config.classes.length ? config.classes : config.deposit_classes,
            depositClasses: config.deposit_classes, onSaved: () => reviewed(detail.properties.id) });
        } }));
    figure.addEventListener("click", () => openLightbox(reports, index));
    grid.append(figure);
    loadPhoto(figure, report);
    return figure;
  });
  const section = el("section", { class: "incident-photos" }, el("h3", { text: t("mgr.photos") }), grid);
  if (reports.length > PHOTOS_SHOWN) {
    const more = el("button", { type: "button", class: "small", id: "more-photos",
      text: t("mgr.more_photos", { n: reports.length - PHOTOS_SHOWN }), onclick: () => {
        for (const figure of figures) figure.hidden = false;
        more.remove();
      } });
    section.append(more);
  }
  return section;
}

/** A photo full size, boxes labelled in the page's language, and every photo of the incident in turn. */
function openLightbox(reports, start) {
  let index = start;
  const dialog = el("dialog", { class: "lightbox", id: "lightbox", "aria-label": t("mgr.photos") });
  const frame = el("div", { class: "lightbox-frame" });
  const caption = el("p", { class: "lightbox-caption" });
  const show = () => {
    const report = reports[index];
    const holder = el("figure", { class: "photo-frame" });
    frame.replaceChildren(holder);
    loadPhoto(holder, report);
    caption.textContent = t("lightbox.caption", { n: index + 1, of: reports.length, when: when(report.observed_at),
      who: report.submitted_by });
  };
  const step = (by) => { index = (index + by + reports.length) % reports.length; show(); };
  dialog.append(
    frame, caption,
    el("div", { class: "row wrap lightbox-nav" },
      el("button", { type: "button", class: "small", text: `← ${t("lightbox.previous")}`, disabled: reports.length < 2,
        onclick: () => step(-1) }),
      el("button", { type: "button", class: "small", text: `${t("lightbox.next")} →`, disabled: reports.length < 2,
        onclick: () => step(1) }),
      el("button", { type: "button", class: "small primary", id: "lightbox-close", text: t("lightbox.close"),
        onclick: () => dialog.close() })),
  );
  dialog.addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") step(-1);
    if (event.key === "ArrowRight") step(1);
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  show();
  dialog.showModal();
}

/**
 * Photos of the place taken after a cleaning, beside the latest "before" photo, and "cleaned"
 * proposed when the model sees no deposit in the latest of them.
 */
function afterSection(detail) {
  const after = detail.after_photos || [];
  if (!after.length) return null;
  const before = [...detail.reports].sort((a, b) => b.observed_at.localeCompare(a.observed_at))[0];
  const latest = after[after.length - 1];
  const figure = (report, caption, isAfter = true) => {
    const node = el("figure", { class: "photo", dataset: { report: report.id } },
      el("figcaption", { class: "muted" }, el("strong", { class: "block", text: caption }),
        el("span", { class: "block", text: when(report.observed_at) }),
        el("span", { class: "block", text: report.verdict.dumping
          ? t(isAfter ? "after.still" : "after.seen", { pct: pct(report.verdict.score) }) : t("after.none") })));
    node.addEventListener("click", () => node.classList.toggle("enlarged"));
    loadPhoto(node, report);
    return node;
  };
  const grid = el("div", { class: "photos before-after" });
  if (before) grid.append(figure(before, t("after.before"), false));
  grid.append(figure(latest, t("after.after", { who: latest.submitted_by })));
  const section = el("section", { class: "after", id: "after-photos" }, el("h3", { text: t("after.title") }), grid);
  if (after.length > 1) section.append(el("p", { class: "muted", text: t("after.more", { n: after.length - 1 }) }));
  if (detail.cleaned_proposed && (config.transitions[detail.properties.status] || []).includes("cleaned")) {
    section.append(el("div", { class: "proposal", id: "cleaned-proposal" },
      el("p", { text: t("after.propose") }),
      el("button", { type: "button", class: "small act st-cleaned primary", dataset: { to: "cleaned" },
        text: t("after.mark_cleaned"),
        onclick: () => change(detail.properties.id, "cleaned", t("after.comment", { id: latest.id })) })));
  }
  return section;
}

/** After a review: the incident's history and photos again, and the list (to review first). */
async function reviewed(id) {
  if (selectedId === id) await select(id, { fromMap: true });
  await load();
}

/** The photo (blurred as stored) with the model's boxes drawn over it, labelled in the page's language. */
async function loadPhoto(figure, report) {
  const incident = photos.incident;
  const alt = t("mgr.photo_alt", { id: incident, when: when(report.observed_at) });
  const put = (url) => {
    const frame = el("div", { class: "photo-frame" }, el("img", { src: url, alt }),
      boxesOverlay(report.image.width, report.image.height, report.detections, classLabel));
    figure.prepend(frame);
  };
  if (photos.urls.has(report.id)) {
    put(photos.urls.get(report.id));
    return;
  }
  try {
    const response = await apiFetch(keys, report.links.image);
    if (!response.ok) {
      const { code, detail } = await errorOf(response);
      throw new Error(refusalMessage(response.status, code, detail, { role: "manager" }));
    }
    const url = URL.createObjectURL(await response.blob());
    if (photos.incident !== incident) {
      URL.revokeObjectURL(url); // another incident was chosen meanwhile
      return;
    }
    photos.urls.set(report.id, url);
    put(url);
  } catch (error) {
    figure.prepend(el("p", { class: "muted", text: error.message || t("err.network") }));
  }
}

function timelineSection(detail) {
  const reports = [...detail.reports].sort((a, b) => b.observed_at.localeCompare(a.observed_at));
  const list = el("ol", { class: "timeline" }, ...reports.map((r) => {
    const loc = r.location;
    const verdict = r.verdict.dumping ? `${t("result.dumping")} ${pct(r.verdict.score)}` : t("result.clean");
    const source = `${t(`source.${loc.source}`)}${loc.accuracy_m ? ` ± ${Math.round(loc.accuracy_m)} m` : ""}`;
    return el("li", {},
      el("time", { datetime: r.observed_at, text: when(r.observed_at) }),
      el("div", { text: t("mgr.report_line", { who: r.submitted_by, verdict, source }) }),
      r.agent_says_deposit ? el("div", { class: "anyway", text: t("review.sent_anyway") }) : null,
      r.incident ? el("div", { class: "muted", text: t(`incident_action.${r.incident.action}`) }) : null,
      r.note ? el("blockquote", { text: r.note }) : null);
  }));
  return el("section", {}, el("h3", { text: t("mgr.timeline") }), list);
}

function historySection(detail) {
  const list = el("ol", { class: "history" }, ...[...detail.history].reverse().map((h) => el("li", {},
    el("time", { datetime: h.at, text: when(h.at) }),
    el("div", {},
      // A row whose state does not change is a note on the incident (a photo's review): one badge.
      h.from_status && h.from_status !== h.to_status
        ? el("span", { class: `badge st-${h.from_status}`, text: stateLabel(h.from_status) }) : null,
      h.from_status && h.from_status !== h.to_status ? " → " : null,
      el("span", { class: `badge st-${h.to_status}`, text: stateLabel(h.to_status) }),
      h.merged_into ? ` #${h.merged_into}` : null,
      el("span", { class: "muted", text: ` ${t("mgr.by", { who: h.actor })}` })),
    h.comment ? el("blockquote", { class: "comment", text: h.comment }) : null)));
  return el("section", {}, el("h3", { text: t("mgr.history") }), list);
}

// ------------------------------------------------------------------------------------------------
// Exports: fetched with the key header, then saved from a blob

async function exportAs(format) {
  if (!filtersValid()) return;
  const name = `incidents-${new Date().toISOString().slice(0, 10)}.${format}`;
  try {
    await downloadFile(keys, `/v1/exports/incidents.${format}?${filterQuery()}`, name);
  } catch (error) {
    signIn.failed(error);
    return;
  }
  showMessage(t("mgr.exported", { name }), "ok");
}

// ------------------------------------------------------------------------------------------------

async function start() {
  applyText();
  document.title = `vipare · ${t("app.manager_title")}`;
  config = await loadUiConfig();
  buildFilters();
  setupMap();
  if (window.matchMedia("(max-width: 700px)").matches) $("filters-box").open = false; // the map first
  window.matchMedia("(min-width: 900px)").addEventListener("change", (e) => { if (e.matches) $("filters-box").open = true; });
  $("key-form").addEventListener("submit", (event) => signIn.save(event));
  $("message").addEventListener("click", () => { $("message").hidden = true; });
  $("key-button").addEventListener("click",
    () => (keys.get() ? signIn.signOut() : signIn.show($("sign-in").hidden)));
  // Filters apply as soon as they change.
  $("filters").addEventListener("change", () => load({ fit: true }));
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); load({ fit: true }); });
  $("reset").addEventListener("click", () => { resetFilters(); load({ fit: true }); });
  $("refresh").addEventListener("click", () => load());
  $("sort").addEventListener("change", renderList);
  for (const button of document.querySelectorAll("[data-bulk]")) {
    button.addEventListener("click", () => bulkChange(button.dataset.bulk));
  }
  for (const button of document.querySelectorAll("[data-export]")) {
    button.addEventListener("click", () => exportAs(button.dataset.export));
  }
  signIn.render();
  if (keys.get()) {
    await load({ fit: true });
  } else {
    // No key stored: an open local service (no key exists at all) answers without one.
    try {
      const response = await apiFetch(keys, "/v1/incidents?limit=1");
      if (response.ok) {
        signIn.render(true);
        await load({ fit: true });
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
