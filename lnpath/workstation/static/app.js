// lnpath workstation. The page shows, collects edits and asks the server; it never scores.
// Every element is built with textContent / setAttribute: no data ever goes through innerHTML.
"use strict";

const TOKEN = document.querySelector('meta[name="lnpath-token"]').content;
const EXTENTS = ["", "segmental", "global"];
const CLASSES = ["", "I", "II", "III", "IV", "V", "VI", "III+V", "IV+V"];
const SEVERITY = ["", "none", "mild", "moderate", "severe"];

let META = null;          // {results, lesions, colours}
let viewer = null;        // the one OpenSeadragon viewer
let overlay = null;       // its SVG overlay
let drawing = null;       // points of the outline being drawn, or null
const work = {};          // result index -> {state, edits, selected, preview}
let current = null;       // index of the result shown

// ------------------------------------------------------------------------------------------
// small helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick" || k === "onchange" || k === "oninput") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function $(id) { return document.getElementById(id); }

async function api(path, body) {
  const options = { headers: { "X-Lnpath-Token": TOKEN }, credentials: "same-origin" };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    // no answer at all (the server was stopped, or the computer's network is down): the browser
    // only says "Failed to fetch", and a write may or may not have reached the folder
    keepUnsaved();
    const writes = body !== undefined && !path.endsWith("/preview");  // a preview writes nothing
    throw new Error(!writes
      ? "no answer from the workstation (was lnpath workstation stopped?); start it again and open the URL it prints"
      : "no answer from the workstation (was lnpath workstation stopped?): this change may not be saved; " +
        "start it again, open the URL it prints and check the revision it shows before redoing it");
  }
  if (response.status === 403) {
    // only the token is refused with 403: the workstation was started again since this page was
    // opened, with a new token this page does not have (and must not get: it is what keeps other
    // sites' pages out), so nothing was written
    keepUnsaved();
    const error = new Error("the workstation was restarted since this page was opened, so it " +
      "cannot save here (nothing was saved): open the URL it printed in this tab; your unsaved " +
      "edits are kept in this tab and come back there if nobody saved this result meanwhile");
    error.status = 403;
    throw error;
  }
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  if (!response.ok) {
    // someone saved (or scored the folder anew) since this page was opened: the reload the
    // message asks for would drop this tab's edits, so they are kept to be shown after it
    if (response.status === 409) keepUnsaved("kept when this tab could not save them");
    const error = new Error(data.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function say(text, isError) {
  const node = $("message");
  node.textContent = text || "";
  node.className = isError ? "error" : "";
}

// ------------------------------------------------------------------------------------------
// unsaved edits across a restart of the workstation, or a reload after a refused save

const KEPT = "lnpath-unsaved-edits";

// this tab's unsaved edits, by result folder, with the revision they were made on; in the
// session's storage (this tab only, gone with it), not on the server, which refuses this page now
function keepUnsaved(when = "from before the workstation was restarted") {
  if (!META) return;
  const kept = JSON.parse(sessionStorage.getItem(KEPT) || "{}");
  for (const [i, w] of Object.entries(work)) {
    if (w && dirty(w)) {
      kept[META.results[i].folder] = {
        created: w.state.created_at, revision: w.state.revision, name: w.state.name, edits: w.edits, when,
      };
    }
  }
  if (Object.keys(kept).length) sessionStorage.setItem(KEPT, JSON.stringify(kept));
}

// edits kept for this result before a restart: back on the page if it is still the scoring and the
// revision they were made on (the save then carries that revision, so the server's conflict check
// holds); otherwise someone saved since, or scored the folder anew (another result at the same
// path, its revisions counted from 1 again), and they are only shown, to redo by hand. True when
// put back.
function takeBack(index) {
  const kept = JSON.parse(sessionStorage.getItem(KEPT) || "{}");
  const folder = META.results[index].folder;
  const mine = kept[folder];
  if (!mine) return false;
  delete kept[folder];
  if (Object.keys(kept).length) sessionStorage.setItem(KEPT, JSON.stringify(kept));
  else sessionStorage.removeItem(KEPT);
  const w = W();
  const refused = locked();
  const rescored = mine.created !== w.state.created_at;
  if (mine.revision === w.state.revision && !refused && !rescored) {
    w.edits = { ...emptyEdits(), ...mine.edits };
    say(`your unsaved edits ${mine.when || "from before the workstation was restarted"} are back (on revision ${mine.revision}); ` +
      "they are not saved yet: check them and Save");
    return true;
  }
  showKept(mine, refused ? `${w.state.name} is ${refused}` : rescored
    ? `${w.state.name} was scored anew since (${w.state.created_at}): it is another result`
    : `${w.state.name} is now at revision ${w.state.revision}: someone saved it since`);
  return false;
}

// a box of its own height at most (it scrolls): the review stays in view, and × (a button, so
// Tab and Enter reach it) puts it away once they are redone; nothing else keeps them
function showKept(mine, why) {
  const node = clear($("kept"));
  node.hidden = false;
  node.append(el("div", { id: "kept-body" },
    el("p", {}, `Your unsaved edits to ${mine.name} ${mine.when || "from before the workstation was restarted"} ` +
      `were made on revision ${mine.revision}, but ${why}; they are not applied. Here they are, to redo by hand:`),
    el("pre", { id: "kept-edits" }, JSON.stringify(mine.edits, null, 1))),
  el("button", { type: "button", id: "kept-dismiss", "aria-label": "dismiss the edits not applied",
    title: "Dismiss (they are not kept anywhere else)", onclick: () => { node.hidden = true; clear(node); } }, "×"));
}

function pct(v) { return v === null || v === undefined ? "" : String(Math.round(v * 1000) / 10); }

// ------------------------------------------------------------------------------------------
// the working copy: saved state + what the pathologist changed

function W() { return work[current]; }

function emptyEdits() {
  return { glomeruli: {}, added: [], cortex: null, biopsy: null, class_override: null, comment: null };
}

function glom(gid) { return W().state.glomeruli.find((g) => g.id === gid); }

function value(g, field) {
  const e = W().edits.glomeruli[g.id];
  if (e && field in e) return e[field];
  if (field === "extent") return g.extent || "";
  if (field === "exclusion") return g.exclusion || "";
  return g.calls[field];
}

// the value of a glomerulus's field in the revision shown
function savedValue(g, field) {
  return field === "extent" ? (g.extent || "") : field === "exclusion" ? (g.exclusion || "") : g.calls[field];
}

function setValue(gid, field, v) {
  const g = glom(gid);
  const edits = W().edits.glomeruli;
  edits[gid] = edits[gid] || {};
  edits[gid][field] = v;
  if (savedValue(g, field) === v) delete edits[gid][field];
  if (Object.keys(edits[gid]).length === 0) delete edits[gid];
  changed();
}

function dirty(w) {
  const e = (w || W()).edits;
  return Object.keys(e.glomeruli).length > 0 || e.added.length > 0 || e.cortex !== null ||
    e.biopsy !== null || e.class_override !== null || e.comment !== null;
}

function payload() {
  const w = W();
  return {
    base_revision: w.state.revision,
    base_created: w.state.created_at,  // the scoring shown: a folder scored anew is refused
    pathologist: $("pathologist").value,
    note: $("note").value || null,
    ...w.edits,
  };
}

function undecided(g) {
  // an ischemic glomerulus stays in the indices' N: its lesions still need calls to sign out
  if (value(g, "exclusion") === "not_glomerulus") return false;
  return META.lesions.some((l) => value(g, l.lesion) === null);
}

function reviewOrder() {
  // the server's queue (lnpath.review_order: least certain first, then what the machine left
  // undecided), then the glomeruli it leaves out (excluded ones), by id
  const rank = new Map(W().state.review_order.map((id, i) => [id, i]));
  const at = (g) => (rank.has(g.id) ? rank.get(g.id) : Infinity);
  return [...W().state.glomeruli].sort((a, b) => at(a) - at(b) || a.id - b.id);
}

// ------------------------------------------------------------------------------------------
// live summary from the server

let previewSeq = 0;       // a newer edit or a save makes an older preview's answer stale
let previewFailed = false;
// what stops edits to the result shown: read-only, or signed out (the signature stands)
function locked() {
  const s = W().state;
  if (s.read_only) return `read-only: ${s.read_only}`;
  if (s.status === "confirmed") {
    return `revision ${s.revision} is signed out and is not changed here; add an addendum ` +
      "(Biopsy panel), or revise it with lnpath review --supersede";
  }
  return null;
}

// the same, short, beside each control it disables (its title): the page says why it is greyed
function lockedWhy() {
  const s = W().state;
  if (s.read_only) return `read-only: ${s.read_only}`;
  return s.status === "confirmed" ? "signed out: add an addendum instead (Biopsy panel)" : null;
}

// a control of the page's frame (kept across results) disabled with its reason, or given back
// its own title
function lockControl(node, why) {
  if (node.dataset.title === undefined) node.dataset.title = node.title;
  node.disabled = Boolean(why);
  node.title = why || node.dataset.title;
}

async function changed() {
  const refused = locked();
  if (refused) {
    const w = W();
    w.edits = emptyEdits();
    w.preview = null;
    renderAll();
    say(refused, true);
    return;
  }
  renderGlomerulus();
  renderList();
  drawOverlay();
  const seq = ++previewSeq;
  const w = W();
  if (!dirty()) { w.preview = null; w.previewError = null; renderSummary(); return; }
  try {
    const preview = await api(`/api/r/${current}/preview`, payload());
    if (seq !== previewSeq || w !== W()) return;
    w.preview = preview;
    w.previewError = null;
    if (previewFailed) say("");
    previewFailed = false;
  } catch (err) {
    if (seq !== previewSeq) return;
    previewFailed = true;
    w.previewError = err.message;  // the summary shown no longer matches the fields: say so
    w.previewUnscorable = err.status === 400;  // not a stale page or a stopped server
    say(err.message, true);
  }
  renderSummary();
  renderGlomerulus();
  renderList();
  drawOverlay();
}

// an incomplete index shows its lower bound, as the report does (the server's text says why)
function indexShown(index) {
  return index.total === null ? "n/c" : `${index.complete ? "" : "≥"}${index.low}/${index.max}`;
}

function indexBlock(name, index) {
  const rows = index.components.map((c) => el("tr", {},
    el("td", {}, c.label),
    // n of N counts the glomeruli called present; those not called are said, never counted as 0
    el("td", {}, c.N === null || c.N === undefined ? "" :
      `${c.n}/${c.N}${c.n_not_assessed ? ` (${c.n_not_assessed} not assessed)` : ""}`),
    // a score the unassessed glomeruli cannot change carries the scoring's note, as the report's
    el("td", { "data-component": c.name }, c.assessed ? [`${c.score} ×${c.weight}`,
      c.note ? el("div", { class: "muted component-note" }, c.note) : null] :
      `${c.not_evaluable ? "not evaluable" : "not assessed"}${c.range ? ` (${c.range[0]}–${c.range[1]})` : ""}`)));
  const shown = indexShown(index);
  const id = name === "Activity index" ? "ai" : "ci";
  return el("div", { class: "index" },
    el("h3", {}, name),
    el("span", { class: "index-value", id: `${id}-value`,
      "data-low": index.low, "data-complete": index.complete }, shown),
    // the §1.7 word the report's heading gives, from the server (the same function)
    el("div", { class: "index-text", id: `${id}-text` }, index.text,
      index.band ? el("span", { class: "band", id: `${id}-band` }, ` · ${index.band}`) : null),
    el("table", {}, el("tbody", {}, rows)));
}

// the class the report gives: the pathologist's override where set, else the machine's proposal
function classShown(w, s) {
  const override = w.edits.class_override !== null ? w.edits.class_override : w.state.class_override;
  const proposal = s.class.proposal ? `Class ${s.class.proposal}` : "class not proposed";
  if (override && override.class) return `Class ${override.class} (pathologist; machine: ${proposal})`;
  return proposal;
}

function renderSummary() {
  const w = W();
  const s = w.preview || w.state.summary;
  const node = clear($("summary"));
  node.classList.toggle("stale", Boolean(w.previewError));
  node.append(el("h2", {}, "Summary ", w.preview ? el("span", { class: "unsaved", id: "unsaved" }, "(unsaved changes)") : null));
  if (w.previewError) {
    node.append(el("p", { id: "summary-stale", class: "error-note" },
      `Not updated for the last edit${w.previewUnscorable ? ", which cannot be scored" : ""}: ${w.previewError}`));
  }
  node.append(indexBlock("Activity index", s.ai), indexBlock("Chronicity index", s.ci));
  node.append(el("h3", {}, "ISN/RPS class"),
    el("div", { id: "class-value" }, classShown(w, s)),
    el("div", { class: "muted" }, s.class.label || ""),
    el("div", { class: "muted" }, s.class.rationale || ""));
  const head = clear($("headline"));
  head.append(`AI ${indexShown(s.ai)} · CI ${indexShown(s.ci)} · ${classShown(w, s)} · N = ${s.adequacy.n_glomeruli} (${s.adequacy.status})`,
    w.preview ? el("span", { class: "unsaved" }, " · unsaved") : "",
    w.previewError ? el("span", { class: "unsaved" }, " · not updated") : "");
  node.append(el("h3", {}, "Adequacy"),
    el("div", { id: "adequacy" }, `${s.adequacy.status}: ${s.adequacy.message}`),
    el("div", { id: "n-glomeruli", "data-n": s.adequacy.n_glomeruli }, `N = ${s.adequacy.n_glomeruli} glomeruli`));
  renderNotEvaluable();
}

// ------------------------------------------------------------------------------------------
// viewer and overlay

function colourOf(g) {
  const w = W();
  const label = (w.preview && w.preview.main_calls[g.id]) || g.main_call;
  return META.colours[label] || "#ffeb3b";
}

function drawOverlay() {
  if (!overlay) return;
  clear(overlay);
  const w = W();
  for (const g of w.state.glomeruli) {
    const excl = value(g, "exclusion");
    const classes = [g.id === w.selected ? "selected" : "", excl ? "excluded" : ""].join(" ").trim();
    overlay.append(svg("path", {
      d: pathData(g.outline), "fill-rule": "evenodd",
      stroke: colourOf(g), fill: colourOf(g), class: classes, "data-gid": g.id,
    }));
  }
  w.edits.added.forEach((poly, i) => overlay.append(svg("polygon", {
    points: poly.map((p) => p.join(",")).join(" "), class: "added", fill: "#00e5ff", "data-added": i,
  })));
  if (drawing && drawing.length) {
    overlay.append(svg("polyline", { points: drawing.map((p) => p.join(",")).join(" ") }));
  }
}

// an outline is its parts, each an exterior ring then its holes: every ring one subpath, filled
// even-odd, so that a hole (a ring-shaped annotation) is drawn open and every part is drawn
function pathData(outline) {
  return outline.flat().map((ring) => `M${ring.map((p) => p.join(",")).join("L")}Z`).join("");
}

// the even-odd rule over every ring, as drawn: a click in a hole is outside the glomerulus
function inside(point, outline) {
  let hit = false;
  for (const ring of outline.flat()) {
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > point[1]) !== (yj > point[1]) &&
          point[0] < ((xj - xi) * (point[1] - yi)) / (yj - yi) + xi) hit = !hit;
    }
  }
  return hit;
}

function onCanvasClick(event) {
  if (!event.quick) return;
  const p = viewer.viewport.viewportToImageCoordinates(viewer.viewport.pointFromPixel(event.position));
  const point = [Math.round(p.x * 10) / 10, Math.round(p.y * 10) / 10];
  if (drawing) {
    // the viewer shows past the slide's edges: a point there is refused now, as the server would
    const [width, height] = W().state.slide.dimensions;
    if (point[0] < 0 || point[1] < 0 || point[0] > width || point[1] > height) {
      event.preventDefaultAction = true;
      say(`point (${point[0]}, ${point[1]}) lies outside the slide (x 0 to ${width}, y 0 to ${height} px); click on the slide`, true);
      return;
    }
    drawing.push(point);
    event.preventDefaultAction = true;
    $("draw-hint").textContent = `${drawing.length} point(s); Enter or Finish to close`;
    drawOverlay();
    return;
  }
  const hits = W().state.glomeruli.filter((g) => inside(point, g.outline));
  if (hits.length) {
    hits.sort((a, b) => a.area_um2 - b.area_um2);
    event.preventDefaultAction = true;
    select(hits[0].id, false);
  }
}

function updateScaleBar() {
  const w = W();
  if (!viewer || !viewer.world.getItemAt(0)) return;
  const zoom = viewer.world.getItemAt(0).viewportToImageZoom(viewer.viewport.getZoom(true));
  const umPerPx = w.state.slide.mpp / zoom;
  const target = 120 * umPerPx;
  const power = Math.pow(10, Math.floor(Math.log10(target)));
  const nice = [1, 2, 5, 10].map((m) => m * power).filter((v) => v <= target).pop() || power;
  $("scalebar-bar").style.width = `${nice / umPerPx}px`;
  $("scalebar-label").textContent = nice >= 1000 ? `${nice / 1000} mm` : `${nice} µm`;
}

function openViewer() {
  if (!viewer) {
    viewer = OpenSeadragon({
      element: $("viewer"),
      prefixUrl: "/static/openseadragon/images/",
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",  // the top right holds the drawing toolbar
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
      loadTilesWithAjax: true,
      ajaxHeaders: { "X-Lnpath-Token": TOKEN },
      maxZoomPixelRatio: 2,
      // the 2D canvas: OpenSeadragon 5's default WebGL drawer runs in software where the browser
      // has no GPU (headless, many hospital virtual desktops) and delayed the first view by ~1.4 s
      drawer: "canvas",
    });
    viewer.addHandler("canvas-click", onCanvasClick);
    viewer.addHandler("animation", updateScaleBar);
    viewer.addHandler("open", () => {
      overlay = svg("svg", { class: "lnpath-overlay", id: "overlay", preserveAspectRatio: "none" });
      const [wd, ht] = W().state.slide.dimensions;
      overlay.setAttribute("viewBox", `0 0 ${wd} ${ht}`);
      viewer.addOverlay({ element: overlay, location: viewer.world.getItemAt(0).imageToViewportRectangle(0, 0, wd, ht) });
      drawOverlay();
      updateScaleBar();
      document.body.dataset.ready = "true";
    });
  }
  document.body.dataset.ready = "false";
  viewer.open(`/api/r/${current}/slide.dzi`);
}

function panTo(g) {
  if (!viewer || !viewer.world.getItemAt(0)) return;
  const item = viewer.world.getItemAt(0);
  const points = g.outline.flatMap((part) => part[0]);  // the exterior of every part
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), y0 = Math.min(...ys), x1 = Math.max(...xs), y1 = Math.max(...ys);
  const pad = Math.max(x1 - x0, y1 - y0);
  viewer.viewport.fitBounds(item.imageToViewportRectangle(x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad));
}

// ------------------------------------------------------------------------------------------
// glomerulus panel and list

function select(gid, pan) {
  W().selected = gid;
  const g = glom(gid);
  if (pan && g) panTo(g);
  renderGlomerulus();
  renderList();
  drawOverlay();
}

function step(delta) {
  const gl = W().state.glomeruli;
  if (!gl.length) return;
  const i = gl.findIndex((g) => g.id === W().selected);
  const next = gl[(i + delta + gl.length) % gl.length] || gl[0];
  select(next.id, true);
}

function nextUndecided() {
  const order = reviewOrder();
  const start = order.findIndex((g) => g.id === W().selected);
  for (let k = 1; k <= order.length; k++) {
    const g = order[(start + k + order.length) % order.length];
    if (undecided(g)) { select(g.id, true); return; }
  }
  say("every glomerulus has a call for each lesion (or is excluded)");
}

function callButtons(g, lesion, why) {
  const v = value(g, lesion);
  const options = [[true, "present", "present"], [false, "absent", "absent"], [null, "n/a", "na"]];
  return el("span", { class: "calls", "data-lesion": lesion },
    options.map(([val, text, cls]) => el("button", {
      type: "button", class: `${cls}${v === val ? " on" : ""}`, "data-value": cls, disabled: Boolean(why),
      onclick: () => setValue(g.id, lesion, val), title: why || (text === "n/a" ? "not assessed" : text),
    }, text)));
}

// a control pressed from the keyboard is rebuilt with its panel: the selector of its successor,
// so that focus stays there instead of falling back to the page (Tab would start over)
function focusedControl(node) {
  const active = document.activeElement;
  if (!active || active === node || !node.contains(active)) return null;
  const calls = active.closest("[data-lesion]");
  if (calls && active.dataset.value) {
    return `[data-lesion="${CSS.escape(calls.dataset.lesion)}"] [data-value="${CSS.escape(active.dataset.value)}"]`;
  }
  return active.id ? `#${CSS.escape(active.id)}` : null;
}

function renderGlomerulus() {
  const refocus = focusedControl($("glomerulus"));
  buildGlomerulus();
  const successor = refocus && $("glomerulus").querySelector(refocus);
  if (successor) successor.focus();
}

function buildGlomerulus() {
  const w = W();
  const node = clear($("glomerulus"));
  const g = w.selected !== null ? glom(w.selected) : null;
  if (!g) {
    node.append(el("h2", {}, "Glomerulus"), el("p", { class: "muted" },
      "Click a glomerulus on the slide, or press u for the next undecided one (least certain first)."));
    return;
  }
  const label = (w.preview && w.preview.main_calls[g.id]) || g.main_call;
  const excl = value(g, "exclusion");
  node.append(el("h2", { id: "glomerulus-title" }, `G${g.id}: `, label,
    excl ? ` — excluded (${excl === "ischemic" ? "ischemic/obsolescent" : "not a glomerulus"})` : ""));
  if (g.crop) node.append(el("img", { class: "crop", alt: `G${g.id}`, src: `/api/r/${current}/crop/${g.id}.jpg` }));
  const machine = [];
  if (g.probability !== null) machine.push(`detection p = ${g.probability.toFixed(2)}`);
  for (const [lesion, p] of Object.entries(g.p)) machine.push(`${lesion.replace(/_/g, " ")} p = ${p.toFixed(2)}`);
  node.append(el("div", { class: "muted" },
    `Machine: ${g.main_call} (${g.source || "?"})`, machine.length ? `; ${machine.join("; ")}` : "",
    // the outline's area, the one area shown (the measuring mask's differs a little)
    `; area ${Math.round(g.area_um2 || 0).toLocaleString("en-US")} µm²`));
  // signed out (or read-only): the calls are shown as they stand, their controls greyed with why
  const why = lockedWhy();
  if (why) node.append(el("p", { class: "error-note", id: "glomerulus-locked" }, locked()));
  const rows = META.lesions.map((l) => el("tr", {},
    el("td", {}, el("span", { class: "key" }, l.key), " ", l.label), el("td", {}, callButtons(g, l.lesion, why))));
  node.append(el("table", {}, el("tbody", {}, rows)));
  const extent = value(g, "extent");
  node.append(el("label", { class: "row" }, "Extent of LN lesions (e)",
    el("select", { id: "extent", disabled: Boolean(why), title: why, onchange: (e) => setValue(g.id, "extent", e.target.value || null) },
      EXTENTS.map((x) => el("option", { value: x, selected: (extent || "") === x }, x || "not recorded")))));
  node.append(el("div", {},
    el("button", { type: "button", id: "exclude-not", disabled: Boolean(why), title: why, onclick: () => setValue(g.id, "exclusion", excl === "not_glomerulus" ? "" : "not_glomerulus") },
      excl === "not_glomerulus" ? "Include again" : "Exclude: not a glomerulus (x)"), " ",
    el("button", { type: "button", id: "exclude-ischemic", disabled: Boolean(why), title: why, onclick: () => setValue(g.id, "exclusion", excl === "ischemic" ? "" : "ischemic") },
      excl === "ischemic" ? "Include again" : "Exclude: ischemic/obsolescent (i)")));
  if (g.measurements.length) {
    node.append(el("h3", {}, "Measurements"), el("table", {}, el("tbody", {}, g.measurements.map((m) =>
      // rounded as read (the server's words, thresholds in the same unit); the stored value on hover
      el("tr", {}, el("td", {}, m.name), el("td", { class: "measure", title: String(m.value) }, m.shown),
        el("td", { class: "muted" }, m.rules.join("; ")))))));
  }
}

function renderList() {
  const w = W();
  const node = clear($("glomeruli-list"));
  node.append(el("h2", {}, `Glomeruli (${w.state.glomeruli.length}${w.edits.added.length ? ` + ${w.edits.added.length} drawn` : ""})`));
  const rows = w.state.glomeruli.map((g) => el("tr", {
    class: g.id === w.selected ? "selected" : "", "data-gid": g.id, onclick: () => select(g.id, true),
  },
    el("td", { class: value(g, "exclusion") ? "excluded" : "" }, `G${g.id}`),
    el("td", {}, (w.preview && w.preview.main_calls[g.id]) || g.main_call),
    el("td", { class: "muted" }, undecided(g) ? "undecided" : "all called")));  // by the machine or a person: not "decided"
  node.append(el("table", {}, el("tbody", {}, rows)));
}

// ------------------------------------------------------------------------------------------
// biopsy panel

function biopsyValue(path) {
  const w = W();
  let obj = w.edits.biopsy || w.state.biopsy || {};
  for (const k of path) obj = obj && typeof obj === "object" ? obj[k] : undefined;
  return obj === undefined ? null : obj;
}

function setBiopsy(path, v) {
  const w = W();
  const b = structuredClone(w.edits.biopsy || w.state.biopsy || {});
  let obj = b;
  for (const k of path.slice(0, -1)) { obj[k] = obj[k] || {}; obj = obj[k]; }
  obj[path[path.length - 1]] = v;
  w.edits.biopsy = b;
  changed();
}

function triSelect(id, v, onchange, words = ["not assessed", "yes", "no"]) {
  const current = v === true ? "yes" : v === false ? "no" : "";
  return el("select", { id, onchange: (e) => onchange(e.target.value === "" ? null : e.target.value === "yes") },
    [["", words[0]], ["yes", words[1]], ["no", words[2]]].map(([val, text]) => el("option", { value: val, selected: current === val }, text)));
}

function choice(id, options, v, onchange, blank = "not recorded", attrs) {
  return el("select", { id, ...attrs, onchange: (e) => onchange(e.target.value || null) },
    options.map((o) => el("option", { value: o, selected: (v || "") === o }, o || blank)));
}

// a fraction in [0, 1] entered as % (as the cortex fields are); out of range is said, not sent
function percentInput(id, path) {
  return numberInput(id, pct(biopsyValue(path)), (v) => {
    if (v !== null && !(v >= 0 && v <= 100)) { say(`${path.join(" ").replace(/_/g, " ")}: give a % from 0 to 100`, true); return; }
    setBiopsy(path, v === null ? null : v / 100);
  }, { min: 0, max: 100, step: 1 });
}

function numberInput(id, v, onchange, attrs) {
  return el("input", { id, type: "number", value: v === null || v === undefined ? "" : v, ...attrs,
    onchange: (e) => onchange(e.target.value === "" ? null : Number(e.target.value)) });
}

// a reason per index component the summary shows as not assessed (and any marked earlier, so the
// mark can be cleared): what sign-out of an incomplete index asks for. An empty reason clears it.
function notEvaluableNames() {
  const w = W();
  const s = w.preview || w.state.summary;
  const marks = biopsyValue(["not_evaluable"]) || {};
  return [...s.ai.components, ...s.ci.components].filter((c) => !c.assessed || marks[c.name]);
}

function renderNotEvaluable() {
  const node = $("not-evaluable");
  if (!node) return;
  const components = notEvaluableNames();
  const key = components.map((c) => `${c.name}:${c.assessed}`).join(",");
  if (node.dataset.key === key && node.dataset.result === String(current)) return;  // keep focus and typing
  const focused = document.activeElement && node.contains(document.activeElement) ? document.activeElement.id : null;
  node.dataset.key = key;
  node.dataset.result = String(current);
  clear(node).append(el("legend", {}, "Not evaluable (reason, for sign-out)"));
  if (!components.length) node.append(el("p", { class: "muted" }, "Every index component is assessed."));
  for (const c of components) {
    const reason = biopsyValue(["not_evaluable", c.name]);
    node.append(el("label", { class: "row" }, c.assessed ? `${c.label} (now assessed: clear the mark)` : c.label,
      el("input", { id: `not-evaluable-${c.name}`, "data-component": c.name, "data-marked": Boolean(reason) ? "true" : "false",
        value: reason || "", placeholder: "not assessed: why not evaluable?", "aria-label": `${c.label}: reason not evaluable`,
        onchange: (e) => {
          const text = e.target.value.trim();
          e.target.dataset.marked = text ? "true" : "false";
          setBiopsy(["not_evaluable", c.name], text || null);
        } })));
  }
  if (focused && $(focused)) $(focused).focus();
}

function renderBiopsy() {
  const w = W();
  const node = clear($("biopsy"));
  const supports = new Set(w.state.supports);
  node.append(el("h2", {}, "Biopsy"));
  const cortex = { ...w.state.cortex, ...(w.edits.cortex || {}) };
  const fields = [["interstitial_inflammation", "Interstitial inflammation (% of cortex)"],
    ["interstitial_fibrosis", "Interstitial fibrosis (% of cortex)"],
    ["tubular_atrophy", "Tubular atrophy (% of cortical tubules)"]];
  node.append(el("fieldset", { disabled: !supports.has("cortex") }, el("legend", {}, "Cortex"),
    fields.map(([name, text]) => el("label", { class: "row" }, text, numberInput(`cortex-${name}`, pct(cortex[name]), (v) => {
      w.edits.cortex = { ...(w.edits.cortex || {}), [name]: v === null ? null : v / 100 };
      changed();
    }, { min: 0, max: 100, step: 1 })))));
  const later = supports.has("biopsy") ? null : el("p", { class: "muted" },
    "This lnpath's review cannot record IF/EM, vessels, class override or comment yet.");
  node.append(later || "");
  // the light-microscopy panel a response endpoint needs (spec §3.3: PAS and trichrome or silver)
  node.append(el("fieldset", { id: "stains-examined", disabled: !supports.has("biopsy") }, el("legend", {}, "Stains examined"),
    META.stains.map(({ key, label }) => el("label", { class: "row" }, label,
      triSelect(`stain-${key}`, biopsyValue(["stains_examined", key]), (v) => setBiopsy(["stains_examined", key], v),
        ["not recorded", "examined", "not examined"]))),
    el("p", { class: "muted" }, "A response endpoint needs PAS and trichrome or silver on both biopsies.")));
  node.append(el("fieldset", { disabled: !supports.has("biopsy") }, el("legend", {}, "IF/EM"),
    el("label", { class: "row" }, "Membranous component", triSelect("membranous", biopsyValue(["membranous", "present"]), (v) => setBiopsy(["membranous", "present"], v))),
    el("label", { class: "row" }, "Membranous extent", choice("membranous-extent", EXTENTS, biopsyValue(["membranous", "extent"]), (v) => setBiopsy(["membranous", "extent"], v))),
    el("label", { class: "row" }, "Membranous: % of capillary surface", percentInput("membranous-capillary", ["membranous", "capillary_surface_fraction"])),
    el("label", { class: "row" }, "Membranous: % of glomeruli", percentInput("membranous-glomeruli", ["membranous", "glomeruli_fraction"])),
    el("label", { class: "row" }, "Mesangial deposits", triSelect("deposits-mesangial", biopsyValue(["deposits", "mesangial"]), (v) => setBiopsy(["deposits", "mesangial"], v))),
    el("label", { class: "row" }, "Subendothelial deposits", triSelect("deposits-subendothelial", biopsyValue(["deposits", "subendothelial"]), (v) => setBiopsy(["deposits", "subendothelial"], v))),
    el("label", { class: "row" }, "Subepithelial deposits", triSelect("deposits-subepithelial", biopsyValue(["deposits", "subepithelial"]), (v) => setBiopsy(["deposits", "subepithelial"], v))),
    el("label", { class: "row" }, "Mesangial hypercellularity", triSelect("mesangial-hypercellularity", biopsyValue(["mesangial_hypercellularity"]), (v) => setBiopsy(["mesangial_hypercellularity"], v)))));
  // one select per stain, the intensities the server takes (META), "not stated" for none
  node.append(el("fieldset", { disabled: !supports.has("biopsy") }, el("legend", {}, "Immunofluorescence"),
    META.if_stains.map(({ key, label }) => el("label", { class: "row" }, label,
      choice(`if-${key}`, ["", ...META.if_intensities], biopsyValue(["if_panel", key]), (v) => setBiopsy(["if_panel", key], v),
        "not stated", { "aria-label": `immunofluorescence ${key}` })))));
  node.append(el("fieldset", { disabled: !supports.has("biopsy") }, el("legend", {}, "Vessels"),
    el("label", { class: "row" }, "Arteries sampled", numberInput("arteries", biopsyValue(["vessels", "arteries_sampled"]), (v) => setBiopsy(["vessels", "arteries_sampled"], v), { min: 0, step: 1 })),
    el("label", { class: "row" }, "Intimal fibrosis", choice("intimal-fibrosis", SEVERITY, biopsyValue(["vessels", "intimal_fibrosis"]), (v) => setBiopsy(["vessels", "intimal_fibrosis"], v))),
    [["arteriolar_hyalinosis", "Arteriolar hyalinosis"], ["lupus_vasculopathy", "Lupus vasculopathy"],
      ["tma", "Thrombotic microangiopathy"], ["vasculitis", "Vasculitis"]].map(([k, text]) =>
      el("label", { class: "row" }, text, triSelect(`vessels-${k}`, biopsyValue(["vessels", k]), (v) => setBiopsy(["vessels", k], v))))));
  node.append(el("fieldset", { id: "not-evaluable", disabled: !supports.has("biopsy") }));
  renderNotEvaluable();
  const override = w.edits.class_override !== null ? w.edits.class_override : (w.state.class_override || {});
  node.append(el("fieldset", { disabled: !supports.has("class_override") }, el("legend", {}, "Class override"),
    el("label", { class: "row" }, "Class", choice("class-override", CLASSES, override.class, (v) => {
      w.edits.class_override = v ? { class: v, reason: $("class-reason").value } : {};
      changed();
    })),
    el("label", { class: "row" }, "Reason", el("input", { id: "class-reason", value: override.reason || "", onchange: (e) => {
      w.edits.class_override = { class: $("class-override").value, reason: e.target.value };
      changed();
    } }))));
  const comment = w.edits.comment !== null ? w.edits.comment : (w.state.comment || "");
  node.append(el("fieldset", { disabled: !supports.has("comment") }, el("legend", {}, "Comment"),
    el("textarea", { id: "comment", rows: 3, cols: 40, onchange: (e) => { w.edits.comment = e.target.value; changed(); } }, comment)));
  if (w.state.status === "confirmed" || w.state.addenda.length) {
    node.append(el("fieldset", { id: "addenda" }, el("legend", {}, "Addenda (after sign-out)"),
      el("ol", { id: "addenda-list" }, w.state.addenda.map((a) => el("li", { "data-signed": a.signed ? "true" : "false" },
        el("bdi", { class: "addendum-text" }, a.text), " — ", el("bdi", {}, a.by), ` at ${a.at}`,
        // beside a key-signed sign-out an addendum without a signature must not read as signed
        a.signed ? " (signed with a key)" : w.state.confirmation_signed ? " (not signed with a key)" : ""))),
      w.state.status === "confirmed" && !w.state.read_only ? [
        el("textarea", { id: "addendum-text", rows: 2, cols: 40, "aria-label": "addendum text" }),
        el("button", { type: "button", id: "addendum-add", onclick: addAddendum }, "Add addendum"),
      ] : ""));
  }
  // a signed-out result shows its fields as signed; edits go into an addendum
  const why = lockedWhy();
  if (why) {
    for (const f of node.querySelectorAll("fieldset:not(#addenda)")) { f.disabled = true; f.title = why; }
  }
}

// ------------------------------------------------------------------------------------------
// results, saving, signing out

function renderBanner() {
  const s = W().state;
  const node = $("banner");
  const last = s.last_event;
  // free text (names, notes, the patient id) each in a <bdi>: right-to-left text in one of
  // them cannot reorder the text beside it, such as the time of a sign-out
  const who = last && last.by ? [" — last ", last.event, " by ", el("bdi", {}, last.by), " at ", last.at,
    ...(last.note ? [" (note: ", el("bdi", {}, last.note), ")"] : [])] : [];
  const patient = s.patient_id ? [" [patient ", el("bdi", {}, s.patient_id), s.biopsy_date ? `, ${s.biopsy_date}` : "", "]"] : [];
  clear(node);
  if (s.read_only) {
    node.className = "readonly";
    node.append(`READ-ONLY: ${s.read_only}`);
  } else if (s.status === "confirmed") {
    node.className = "confirmed";
    node.append(el("bdi", {}, s.name), ...patient, `: revision ${s.revision} CONFIRMED by `,
      el("bdi", {}, s.confirmation.pathologist), ` at ${s.confirmation.confirmed_at}`);
  } else {
    node.className = "";
    node.append(el("bdi", {}, s.name), ...patient,
      `: revision ${s.revision}, PROVISIONAL — pending pathologist review`, ...who);
  }
  // what a signed-out (or read-only) result cannot take: greyed, saying why; the pathologist's
  // name stays, for an addendum
  const why = lockedWhy();
  for (const id of ["save", "signout", "note", "draw"]) lockControl($(id), why);
  if (why) {
    if (drawing) endDrawing();  // begun on another tab's result
    $("draw-hint").textContent = why;
  } else if (!drawing) $("draw-hint").textContent = "";
}

function renderAll() {
  renderBanner();
  renderSummary();
  renderGlomerulus();
  renderBiopsy();
  renderList();
  drawOverlay();
}

async function openResult(index) {
  $("compare").hidden = true;
  $("review").hidden = false;
  current = index;
  let restored = false;
  if (!work[index]) {
    const state = await api(`/api/r/${index}/state`);
    work[index] = { state, edits: emptyEdits(), selected: null, preview: null };
    restored = takeBack(index);
  }
  for (const b of $("tabs").children) b.classList.toggle("active", b.dataset.index === String(index));
  renderAll();
  openViewer();
  if (restored) changed();  // the summary with them
}

// what was edited while a save was on its way (the save sent `sent`, made on `before`, the
// revision then shown): kept, for the next save
function editsSince(now, sent, before) {
  const left = emptyEdits();
  for (const [gid, fields] of Object.entries(sent.glomeruli)) {
    // set back to the earlier revision's value meanwhile (which drops the edit): the save stored
    // the value sent, so going back is an edit of its own now
    const g = before.glomeruli.find((x) => x.id === Number(gid));
    for (const field of Object.keys(fields)) {
      if (g && !(now.glomeruli[gid] && field in now.glomeruli[gid])) {
        left.glomeruli[gid] = left.glomeruli[gid] || {};
        left.glomeruli[gid][field] = savedValue(g, field);
      }
    }
  }
  for (const [gid, fields] of Object.entries(now.glomeruli)) {
    for (const [field, v] of Object.entries(fields)) {
      const was = sent.glomeruli[gid];
      if (was && field in was && was[field] === v) continue;
      left.glomeruli[gid] = left.glomeruli[gid] || {};
      left.glomeruli[gid][field] = v;
    }
  }
  left.added = now.added.slice(sent.added.length);  // outlines are only ever appended
  for (const key of ["cortex", "biopsy", "class_override", "comment"]) {
    if (JSON.stringify(now[key]) !== JSON.stringify(sent[key])) left[key] = now[key];
  }
  return left;
}

async function save() {
  const w = W();
  if (w.saving) return;  // one save at a time: a second would be refused as stale by the first
  // a field being typed in (comment, reason, a %) reports its value on change, which Ctrl+S
  // does not cause: leave it first, so that what is on the screen is what is saved
  const field = document.activeElement;
  if (field && ["INPUT", "TEXTAREA", "SELECT"].includes(field.tagName)) field.blur();
  if (locked()) { say(locked(), true); return; }  // Ctrl+S: the button is greyed
  if (!dirty()) { say("nothing to save"); return; }
  if (!$("pathologist").value.trim()) { say("enter your name first (it goes into the audit trail)", true); $("pathologist").focus(); return; }
  localStorage.setItem("lnpath-pathologist", $("pathologist").value);
  say("saving…");  // a drawn glomerulus is measured from the slide first: the first can take a while
  const body = payload();
  const sent = structuredClone(w.edits);
  w.saving = true;
  try {
    const state = await api(`/api/r/${current}/save`, body);
    previewSeq++;
    const before = w.state;
    w.state = state;
    w.edits = editsSince(w.edits, sent, before);
    w.preview = null;
    w.previewError = null;  // a preview refused while the save was writing is of no matter now
    previewFailed = false;
    if ($("note").value === (body.note || "")) $("note").value = "";
    renderAll();
    const kept = state.revision === before.revision;  // review writes nothing for no change
    say((kept ? `nothing changed: revision ${state.revision} kept` : `saved revision ${state.revision}`) +
      (dirty(w) ? "; edits made while it saved are not saved yet" : ""));
    if (W() === w && dirty(w)) changed();
  } catch (err) {
    say(err.status === 409 ? `Not saved: ${err.message}` : err.message, true);
  } finally {
    w.saving = false;
  }
}

function askSignOut() {
  const w = W();
  if (dirty()) { say("save your changes before signing out", true); return; }
  if (!$("pathologist").value.trim()) { say("enter your name first", true); return; }
  $("signout-text").textContent = `Confirm revision ${w.state.revision} of ${w.state.name} as ${$("pathologist").value.trim()}? A confirmed revision is sealed and immutable.`;
  $("signout-panel").hidden = false;
  $("signout-confirm").focus();  // Enter confirms, Tab reaches Cancel
}

// Cancel or Esc: nothing signed, focus back where the sign-out was asked for
function closeSignOut() {
  $("signout-panel").hidden = true;
  $("signout").focus();
}

async function signOut() {
  const w = W();
  $("signout-panel").hidden = true;
  try {
    w.state = await api(`/api/r/${current}/confirm`, {
      base_revision: w.state.revision, base_created: w.state.created_at, pathologist: $("pathologist").value, note: $("note").value || null,
    });
    say(`revision ${w.state.revision} confirmed`);
    renderAll();
  } catch (err) {
    say(err.message, true);
    const gap = err.message.includes("incomplete index") && document.querySelector('#not-evaluable input[data-marked="false"]');
    if (gap) gap.focus();
  }
}

async function addAddendum() {
  const w = W();
  const text = $("addendum-text").value;
  if (!text.trim()) { say("type the addendum first", true); return; }
  if (!$("pathologist").value.trim()) { say("enter your name first", true); $("pathologist").focus(); return; }
  try {
    w.state = await api(`/api/r/${current}/addendum`, {
      base_revision: w.state.revision, base_created: w.state.created_at, pathologist: $("pathologist").value, text,
    });
    // the page holds no key: after a key-signed sign-out, say that this addendum is not signed
    const unsigned = w.state.confirmation_signed ?
      " (not signed with a key, as the sign-out is: lnpath addendum --key signs one)" : "";
    say(`addendum ${w.state.addenda.length} added${unsigned}; the signed revision is unchanged`);
    renderAll();
  } catch (err) {
    say(err.message, true);
  }
}

// ------------------------------------------------------------------------------------------
// drawing a missed glomerulus

function startDrawing() {
  drawing = [];
  $("draw-finish").hidden = false;
  $("draw-hint").textContent = "click the outline's points";
}

function stopDrawing(keep) {
  if (keep && drawing && drawing.length >= 3) W().edits.added.push(drawing);
  else if (keep) say("an outline needs at least three points", true);
  endDrawing();
  changed();
}

function endDrawing() {
  drawing = null;
  $("draw-finish").hidden = true;
  $("draw-hint").textContent = "";
}

// ------------------------------------------------------------------------------------------
// compare view

async function openCompare() {
  $("review").hidden = true;
  const node = clear($("compare"));
  node.hidden = false;
  for (const b of $("tabs").children) b.classList.toggle("active", b.dataset.index === "compare");
  const pick = (id, selected) => el("select", { id }, META.results.map((r) => el("option", { value: r.index, selected: r.index === selected }, r.name)));
  node.append(el("h2", {}, "Compare"), el("label", {}, "Baseline ", pick("baseline", 0)), " ",
    el("label", {}, "Follow-up ", pick("followup", 1)), " ",
    el("button", { type: "button", id: "compare-run", onclick: runCompare }, "Compare"));
  const columns = el("div", { class: "columns" });
  for (const r of META.results) {
    const state = work[r.index] ? work[r.index].state : await api(`/api/r/${r.index}/state`);
    const s = state.summary;
    columns.append(el("div", { class: "card" }, el("h3", {}, state.name),
      el("div", {}, `revision ${state.revision}, ${state.status}`),
      el("div", {}, `AI ${s.ai.text}`), el("div", {}, `CI ${s.ci.text}`),
      el("div", {}, `Class: ${s.class.proposal || "not proposed"}`),
      el("div", {}, `Adequacy: ${s.adequacy.message}`)));
  }
  node.append(columns, el("div", { id: "compare-result" }));
  await runCompare();
}

async function runCompare() {
  const out = clear($("compare-result"));
  try {
    const r = await api(`/api/compare?baseline=${$("baseline").value}&followup=${$("followup").value}`);
    const e = r.endpoint || {};
    out.append(el("h3", {}, `Endpoint: ${e.name || ""} — ${r.status}`),
      el("div", { id: "endpoint-value" }, e.value === null || e.value === undefined ? (e.reason || "not evaluable") : `${e.value}${e.holds === true ? " (holds)" : e.holds === false ? " (does not hold)" : ""}`),
      el("div", { class: "muted" }, e.rule || ""),
      el("ul", {}, (r.reasons || []).map((x) => el("li", {}, x))),
      el("ul", { class: "muted" }, (r.caveats || []).map((x) => el("li", {}, x))));
  } catch (err) {
    out.append(el("div", { class: "error" }, err.message));
  }
}

// ------------------------------------------------------------------------------------------
// keyboard

const HELP = [
  ["1–9", "lesion present (again: absent)"], ["Shift+1–9", "lesion not assessed"],
  ["n", "no (other) lesion: every not-assessed lesion absent"], ["e", "cycle extent"],
  ["x", "exclude: not a glomerulus"], ["i", "exclude: ischemic/obsolescent"],
  ["j / →", "next glomerulus"], ["k / ←", "previous glomerulus"],
  ["u", "next undecided (least certain first)"], ["d", "draw a missed glomerulus"],
  ["Enter / Esc", "finish / cancel the outline; Esc also closes the sign-out question"], ["Ctrl+S", "save"], ["?", "this help"],
];

// the keys that edit (with 1–9): on a signed-out or read-only result they only say why not
const EDIT_KEYS = ["n", "e", "x", "i", "d"];

function onKey(event) {
  const target = event.target;
  if (target && ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) {
    if (event.key === "s" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); save(); }
    return;
  }
  if (current === null || !W()) return;
  const w = W();
  const g = w.selected !== null ? glom(w.selected) : null;
  const digit = /^Digit([1-9])$/.exec(event.code);
  let handled = true;
  if (event.key === "s" && (event.ctrlKey || event.metaKey)) save();
  else if (drawing && event.key === "Enter") stopDrawing(true);
  else if (drawing && event.key === "Escape") stopDrawing(false);
  else if (event.key === "Escape" && !$("signout-panel").hidden) closeSignOut();
  else if (event.ctrlKey || event.metaKey || event.altKey) handled = false;
  else if ((digit || EDIT_KEYS.includes(event.key)) && locked()) say(locked(), true);  // nothing else
  else if (digit && g) {
    const lesion = META.lesions[Number(digit[1]) - 1].lesion;
    if (event.shiftKey) setValue(g.id, lesion, null);
    else setValue(g.id, lesion, value(g, lesion) === true ? false : true);
  } else if (event.key === "n" && g) {
    const edits = w.edits.glomeruli;
    for (const l of META.lesions) {
      if (value(g, l.lesion) === null) { edits[g.id] = edits[g.id] || {}; edits[g.id][l.lesion] = false; }
    }
    changed();
  } else if (event.key === "e" && g) {
    const i = EXTENTS.indexOf(value(g, "extent") || "");
    setValue(g.id, "extent", EXTENTS[(i + 1) % EXTENTS.length] || null);
  } else if (event.key === "x" && g) setValue(g.id, "exclusion", value(g, "exclusion") === "not_glomerulus" ? "" : "not_glomerulus");
  else if (event.key === "i" && g) setValue(g.id, "exclusion", value(g, "exclusion") === "ischemic" ? "" : "ischemic");
  else if (event.key === "j" || event.key === "ArrowRight") step(1);
  else if (event.key === "k" || event.key === "ArrowLeft") step(-1);
  else if (event.key === "u") nextUndecided();
  else if (event.key === "d") startDrawing();
  else if (event.key === "?") $("help").showModal();
  else handled = false;
  if (handled) event.preventDefault();
}

// ------------------------------------------------------------------------------------------

async function main() {
  META = await api("/api/results");
  const tabs = $("tabs");
  META.results.forEach((r) => tabs.append(el("button", { type: "button", "data-index": r.index,
    title: r.read_only || r.folder, onclick: () => openResult(r.index) }, r.name, r.read_only ? " (read-only)" : "")));
  if (META.results.length > 1) tabs.append(el("button", { type: "button", "data-index": "compare", onclick: openCompare }, "Compare"));
  $("help-keys").append(...HELP.map(([k, t]) => el("tr", {}, el("td", { class: "key" }, k), el("td", {}, t))));
  $("pathologist").value = localStorage.getItem("lnpath-pathologist") || "";
  $("save").onclick = save;
  $("signout").onclick = askSignOut;
  $("signout-confirm").onclick = signOut;
  $("signout-cancel").onclick = closeSignOut;
  $("draw").onclick = startDrawing;
  $("draw-finish").onclick = () => stopDrawing(true);
  $("help-button").onclick = () => $("help").showModal();
  $("help-close").onclick = () => $("help").close();
  document.addEventListener("keydown", onKey);
  window.addEventListener("beforeunload", (e) => {
    // any unsaved edit, a typed comment or reason as much as a lesion call
    if (Object.values(work).some((w) => w && dirty(w))) e.preventDefault();
  });
  await openResult(0);
}

window.addEventListener("DOMContentLoaded", () => main().catch((err) => say(err.message, true)));
