// A manager's review of one report's photo: what is really in it, kept apart from the model's
// detections (POST /v1/reports/{id}/review).
//
// Boxes live in the photo's own pixels (xyxy of the upright image, the convention of the model's
// detections) inside an SVG whose viewBox is the photo's size laid exactly over the <img>: the
// browser scales them to the displayed size, and a pointer position maps back to photo pixels with
// one division by the displayed size. A box kept from the model carries the index of its detection;
// a drawn one carries null. The review opens on the current review when there is one, else on the
// model's detections, which stay viewable as dashed outlines either way.
//
// Controls: drag on the photo (mouse, pen or finger: pointer events) to draw a box; click a box to
// select it; each box has a class select and a delete button. From the keyboard, "Add a box" puts a
// box in the middle, and with the photo focused the arrow keys move the selected box (Shift: resize
// it), Delete removes it.

import { has, pct, t, when } from "./i18n.js";
import { apiFetch, apiJson, el } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const MIN_SIDE = 4; // photo pixels: a smaller drag is a click, not a box
const KEY_STEP = 0.01; // arrow keys move or resize by this share of the photo's longer side (Alt: finer)

const classLabel = (name) => (has(`class.${name}`) ? t(`class.${name}`) : name);
const clamp = (value, low, high) => Math.min(high, Math.max(low, value));
const tenth = (value) => Math.round(value * 10) / 10;

function svgNode(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

/** The text saying who reviewed the photo and when, or that nobody has yet. */
export function reviewSummary(review) {
  if (!review) return t("review.none");
  const key = review.source === "rejection" ? "review.by_rejection" : review.deposit ? "review.by" : "review.by_false_alarm";
  return t(key, { who: review.reviewer, when: when(review.reviewed_at), n: review.boxes.length });
}

/**
 * Open the review of `report` (a ReportOut) in a modal dialog.
 *
 * @param {object} options
 * @param {KeyStore} options.keys the manager's key
 * @param {object} options.report the report, with `review` (the current review or null)
 * @param {string[]} options.classes every class of the project, in the model's order
 * @param {string[]} options.depositClasses the classes that count as a deposit
 * @param {(review: object) => void} options.onSaved called with the saved review
 */
export function openReview({ keys, report, classes, depositClasses, onSaved }) {
  const width = report.image.width;
  const height = report.image.height;
  const isDeposit = (label) => depositClasses.includes(label);
  const fromModel = () => report.detections.map((d, i) => ({ label: d.label, xyxy: [...d.box], detection: i }));
  const state = {
    boxes: report.review ? report.review.boxes.map((b) => ({ ...b, xyxy: [...b.xyxy] })) : fromModel(),
    selected: -1,
    review: report.review || null,
    drawing: null,
    url: null,
  };
  const defaultLabel = depositClasses[0] || classes[0];

  // ----------------------------------------------------------------------------------------------
  // The dialog

  const title = el("h2", { id: "review-title", text: t("review.title", { id: report.id }) });
  const close = el("button", { type: "button", class: "icon", "aria-label": t("review.close"), title: t("review.close"),
    text: "×", onclick: () => dialog.close() });
  const img = el("img", { alt: t("review.photo_alt", { id: report.id }) });
  const overlay = svgNode("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "review-boxes" });
  const stage = el("div", { class: "review-stage", tabindex: "0", role: "group",
    "aria-label": t("review.stage_label"), "aria-describedby": "review-help" }, img, overlay);
  const status = el("p", { id: "review-state", class: "review-state", role: "status" });
  const earlier = el("details", { id: "review-history", class: "review-history", hidden: true });
  const showModel = el("input", { type: "checkbox", id: "review-show-model" });
  const list = el("ol", { class: "review-list", id: "review-list" });
  const note = el("textarea", { id: "review-note", rows: 2, maxlength: 2000, placeholder: t("review.note_placeholder") });
  const error = el("p", { id: "review-error", class: "message error", role: "alert", hidden: true });
  const save = el("button", { type: "button", id: "review-save", class: "primary", text: t("review.save"),
    onclick: () => submit(true) });
  const falseAlarm = el("button", { type: "button", id: "review-false-alarm", text: t("review.false_alarm"),
    onclick: () => submit(false) });

  const dialog = el("dialog", { id: "review", class: "review-dialog", "aria-labelledby": "review-title",
    dataset: { report: report.id } },
    el("header", { class: "review-head" }, title, close),
    el("p", { id: "review-help", class: "help", text: t("review.help") }),
    el("div", { class: "review-body" },
      el("div", { class: "review-photo" }, stage),
      el("div", { class: "review-side" },
        status,
        earlier,
        el("label", { class: "check", for: "review-show-model" }, showModel,
          el("span", { text: t("review.show_model", { n: report.detections.length }) })),
        el("h3", { text: t("review.boxes") }),
        list,
        el("div", { class: "row wrap" },
          el("button", { type: "button", id: "review-add", class: "small", text: t("review.add"), onclick: addBox }),
          el("button", { type: "button", id: "review-reset", class: "small", text: t("review.reset"),
            onclick: () => { state.boxes = fromModel(); state.selected = -1; render(); } })),
        el("label", { for: "review-note", text: t("review.note") }), note,
        error,
        el("div", { class: "row wrap review-buttons" }, save, falseAlarm))));

  // ----------------------------------------------------------------------------------------------
  // Drawing

  function render() {
    renderOverlay();
    renderList();
  }

  function renderOverlay() {
    overlay.replaceChildren();
    const font = Math.max(12, Math.round(Math.max(width, height) / 28));
    if (showModel.checked) {
      report.detections.forEach((d, i) => {
        const [x1, y1, x2, y2] = d.box;
        overlay.append(svgNode("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: "model",
          "data-detection": i }));
        const tag = svgNode("text", { x: x2, y: y2 - font * 0.3, "font-size": font * 0.8, class: "box-label model",
          "text-anchor": "end" });
        tag.textContent = `${classLabel(d.label)} ${pct(d.score)}`;
        overlay.append(tag);
      });
    }
    state.boxes.forEach((box, i) => {
      const [x1, y1, x2, y2] = box.xyxy;
      const kind = isDeposit(box.label) ? "deposit" : "context";
      overlay.append(svgNode("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, "data-index": i,
        class: `box ${kind}${i === state.selected ? " selected" : ""}` }));
      const above = y1 > font * 1.1;
      const tag = svgNode("text", { x: x1 + 3, y: above ? y1 - font * 0.25 : y1 + font, "font-size": font,
        class: `box-label ${kind}` });
      tag.textContent = `${i + 1} ${classLabel(box.label)}`;
      overlay.append(tag);
    });
    if (state.drawing && state.drawing.rect) overlay.append(state.drawing.rect);
  }

  /** Mark the selected box in the list without rebuilding it (which would take the focus away). */
  function markSelected() {
    for (const item of list.querySelectorAll(".review-item")) {
      const selected = Number(item.dataset.index) === state.selected;
      item.classList.toggle("selected", selected);
      item.querySelector(".num").setAttribute("aria-pressed", String(selected));
    }
  }

  function renderList() {
    list.replaceChildren(...state.boxes.map((box, i) => {
      const select = el("select", { id: `review-label-${i}`, "aria-label": t("review.class_of", { n: i + 1 }),
        onchange: (event) => {
          // Arrow keys on a closed select fire change: keep the list, and the focus, as they are.
          box.label = event.target.value;
          event.target.closest(".review-item").dataset.label = box.label;
          state.selected = i;
          renderOverlay();
          markSelected();
        } },
        ...classes.map((name) => el("option", { value: name, text: classLabel(name), selected: name === box.label })));
      const origin = box.detection === null || box.detection === undefined ? t("review.drawn")
        : t("review.from_model", { score: pct(report.detections[box.detection]?.score ?? 0) });
      return el("li", { class: `review-item${i === state.selected ? " selected" : ""}`,
        dataset: { index: i, label: box.label, origin: box.detection ?? "drawn" } },
        el("button", { type: "button", class: "small num", text: String(i + 1),
          "aria-label": t("review.select", { n: i + 1 }), "aria-pressed": String(i === state.selected),
          onclick: () => { state.selected = i; render(); stage.focus(); } }),
        el("span", { class: "grow" }, select, el("span", { class: "muted block", text: origin })),
        el("button", { type: "button", class: "small review-delete", text: t("review.delete"),
          "aria-label": t("review.delete_n", { n: i + 1 }), onclick: () => removeBox(i, { fromList: true }) }));
    }));
    if (!state.boxes.length) list.append(el("li", { class: "muted", text: t("review.no_boxes") }));
    status.textContent = reviewSummary(state.review);
    dialog.dataset.boxes = String(state.boxes.length);
  }

  function removeBox(i, { fromList = false } = {}) {
    state.boxes.splice(i, 1);
    state.selected = -1;
    render();
    if (!fromList) return;
    // The button pressed is gone: the focus goes to the next box's, or to "Add a box".
    const buttons = list.querySelectorAll(".review-delete");
    (buttons[Math.min(i, buttons.length - 1)] || dialog.querySelector("#review-add")).focus();
  }

  function addBox() {
    const w = width / 4;
    const h = height / 4;
    state.boxes.push({ label: defaultLabel, xyxy: [tenth(width / 2 - w / 2), tenth(height / 2 - h / 2),
      tenth(width / 2 + w / 2), tenth(height / 2 + h / 2)], detection: null });
    state.selected = state.boxes.length - 1;
    render();
    stage.focus();
  }

  /** A pointer's position in photo pixels, inside the photo. */
  function toPhoto(event) {
    const frame = overlay.getBoundingClientRect();
    return [clamp((event.clientX - frame.left) / frame.width * width, 0, width),
      clamp((event.clientY - frame.top) / frame.height * height, 0, height)];
  }

  function dragged(from, to) {
    return [Math.min(from[0], to[0]), Math.min(from[1], to[1]), Math.max(from[0], to[0]), Math.max(from[1], to[1])]
      .map(tenth);
  }

  overlay.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    const index = event.target.dataset ? event.target.dataset.index : undefined;
    if (index !== undefined) {
      state.selected = Number(index);
      render();
      return;
    }
    event.preventDefault();
    overlay.setPointerCapture(event.pointerId);
    state.drawing = { from: toPhoto(event), pointer: event.pointerId,
      rect: svgNode("rect", { class: "box drawing", x: 0, y: 0, width: 0, height: 0 }) };
  });
  overlay.addEventListener("pointermove", (event) => {
    if (!state.drawing || event.pointerId !== state.drawing.pointer) return;
    const [x1, y1, x2, y2] = dragged(state.drawing.from, toPhoto(event));
    Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1 }).forEach(([k, v]) => state.drawing.rect.setAttribute(k, v));
    if (!state.drawing.rect.isConnected) overlay.append(state.drawing.rect);
  });
  overlay.addEventListener("pointerup", (event) => {
    if (!state.drawing || event.pointerId !== state.drawing.pointer) return;
    const xyxy = dragged(state.drawing.from, toPhoto(event));
    state.drawing = null;
    if (xyxy[2] - xyxy[0] >= MIN_SIDE && xyxy[3] - xyxy[1] >= MIN_SIDE) {
      state.boxes.push({ label: defaultLabel, xyxy, detection: null });
      state.selected = state.boxes.length - 1;
    } else {
      state.selected = -1;
    }
    render();
  });
  overlay.addEventListener("pointercancel", () => { state.drawing = null; render(); });

  stage.addEventListener("keydown", (event) => {
    const box = state.boxes[state.selected];
    if (!box) return;
    if (event.key === "Delete" || event.key === "Backspace") {
      event.preventDefault();
      removeBox(state.selected);
      return;
    }
    const move = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[event.key];
    if (!move) return;
    event.preventDefault();
    const step = Math.max(1, Math.max(width, height) * KEY_STEP * (event.altKey ? 0.2 : 1));
    let [x1, y1, x2, y2] = box.xyxy;
    const [dx, dy] = [move[0] * step, move[1] * step];
    if (event.shiftKey) { // resize from the bottom-right corner
      x2 = clamp(x2 + dx, x1 + MIN_SIDE, width);
      y2 = clamp(y2 + dy, y1 + MIN_SIDE, height);
    } else { // move, staying inside the photo
      const mx = clamp(dx, -x1, width - x2);
      const my = clamp(dy, -y1, height - y2);
      [x1, x2, y1, y2] = [x1 + mx, x2 + mx, y1 + my, y2 + my];
    }
    box.xyxy = [x1, y1, x2, y2].map(tenth);
    render();
  });
  showModel.addEventListener("change", render);

  // ----------------------------------------------------------------------------------------------
  // Saving

  async function submit(deposit) {
    error.hidden = true;
    // No deposit in the photo: only context boxes (a normal bin) stay with it.
    const boxes = deposit ? state.boxes : state.boxes.filter((b) => !isDeposit(b.label));
    if (deposit && !boxes.some((b) => isDeposit(b.label))) {
      error.textContent = t("review.need_deposit");
      error.hidden = false;
      return;
    }
    const body = {
      deposit,
      boxes: boxes.map((b) => ({ label: b.label, xyxy: b.xyxy.map(Number),
        detection: b.detection === undefined ? null : b.detection })),
      note: note.value.trim() || null,
    };
    save.disabled = true;
    falseAlarm.disabled = true;
    try {
      const review = await apiJson(keys, `/v1/reports/${report.id}/review`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      state.review = review;
      state.boxes = review.boxes.map((b) => ({ ...b, xyxy: [...b.xyxy] }));
      state.selected = -1;
      render();
      status.textContent = `${t("review.saved")} ${reviewSummary(review)}`;
      dialog.dataset.saved = String(review.id ?? "true");
      loadHistory();
      onSaved(review);
    } catch (failure) {
      error.textContent = failure.message || t("err.network");
      error.hidden = false;
    } finally {
      save.disabled = false;
      falseAlarm.disabled = false;
    }
  }

  /** The photo's reviews before the current one (GET /v1/reports/{id}/reviews, oldest first). */
  async function loadHistory() {
    if (!state.review) return;
    let all;
    try {
      all = await apiJson(keys, `/v1/reports/${report.id}/reviews`);
    } catch {
      return; // the current review is shown anyway
    }
    const before = all.filter((r) => r.id !== state.review.id).reverse();
    earlier.hidden = !before.length;
    earlier.replaceChildren(el("summary", { text: t("review.earlier", { n: before.length }) }),
      el("ol", {}, ...before.map((r) => el("li", { text: reviewSummary(r) }, r.note ? el("blockquote", { text: r.note }) : null))));
  }

  // ----------------------------------------------------------------------------------------------
  // The photo: the stored file (upright in the browser, like the boxes); a format the browser cannot
  // show (HEIC) falls back to the service's annotated JPEG, which has the model's boxes drawn in it.

  async function loadPhoto() {
    try {
      const response = await apiFetch(keys, report.links.image);
      if (!response.ok) throw new Error(String(response.status));
      state.url = URL.createObjectURL(await response.blob());
      img.onerror = loadAnnotated;
      img.src = state.url;
    } catch {
      loadAnnotated();
    }
  }

  async function loadAnnotated() {
    img.onerror = null;
    try {
      const response = await apiFetch(keys, report.links.annotated_image);
      if (!response.ok) throw new Error(String(response.status));
      if (state.url) URL.revokeObjectURL(state.url);
      state.url = URL.createObjectURL(await response.blob());
      img.src = state.url;
      stage.after(el("p", { class: "muted", text: t("review.annotated_fallback") }));
    } catch {
      stage.replaceWith(el("p", { class: "muted", text: t("err.network") }));
    }
  }

  dialog.addEventListener("close", () => {
    if (state.url) URL.revokeObjectURL(state.url);
    dialog.remove();
    // A save re-renders the incident, so the button that opened the dialog may be a new one.
    const opener = document.querySelector(`button.review-open[data-report="${report.id}"]`);
    if (opener) opener.focus();
  });
  const previous = document.getElementById("review");
  if (previous) previous.close();
  document.body.append(dialog);
  render();
  loadPhoto();
  loadHistory();
  dialog.showModal();
  stage.focus();
  return dialog;
}
