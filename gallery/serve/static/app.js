// The gallery web page: search by photo, browse, enrol and remove, through the same /v1 API as any client.
// Every text from the server goes into the page as text (never as HTML): identity names are user data.
"use strict";

const state = { key: sessionStorage.getItem("gallery-key") || "", role: null, offset: 0, limit: 20, thumbs: new Map(), searches: 0 };
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function say(id, text, isError = false) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  const response = await fetch(`v1/${path}`, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = `${response.status}: ${(await response.json()).error}`; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const roleAtLeast = (needed) => ["search", "enrol", "admin"].indexOf(state.role) >= ["search", "enrol", "admin"].indexOf(needed);

// ---------------------------------------------------------------- the key and the gallery

async function useKey(key) {
  state.key = key;
  sessionStorage.setItem("gallery-key", key);
  try {
    const me = await (await api("auth")).json();
    state.role = me.role;
    $("whoami").textContent = me.auth ? `key ${me.key} · ${me.role}` : "authentication is off · admin";
  } catch (e) {
    state.role = null;
    $("whoami").textContent = e.message;
  }
  $("enrol").hidden = !roleAtLeast("enrol");
  if (state.role) {
    showInfo();
    listIdentities();
  }
}

async function showInfo() {
  try {
    const info = await (await api("info")).json();
    $("gallery-info").textContent =
      `${info.identities} identities · ${info.records} records · ${info.model} · threshold ${info.threshold.value.toFixed(3)} ` +
      `(${info.threshold.source}) · generation ${info.generation}`;
  } catch (e) {
    $("gallery-info").textContent = e.message;
  }
}

async function thumbnail(recordId) {
  if (!state.thumbs.has(recordId)) {
    state.thumbs.set(recordId, api(`records/${recordId}/thumbnail?size=96`)
      .then((r) => r.blob()).then((b) => URL.createObjectURL(b)).catch(() => null));
  }
  return state.thumbs.get(recordId);
}

function thumbImage(recordId, label) {
  const img = el("img", { class: "thumb", alt: label, title: `${label} (record ${recordId})` });
  img.dataset.record = recordId;
  thumbnail(recordId).then((url) => { if (url) img.src = url; else img.alt = `${label}: no thumbnail`; });
  return img;
}

// ---------------------------------------------------------------- search by photo

async function search(files) {
  if (!files.length) return;
  const body = new FormData();
  for (const f of files) body.append("photos", f, f.name);
  const k = Math.max(1, parseInt($("k").value, 10) || 3);
  say("status", `searching ${files.length} photo${files.length > 1 ? "s" : ""}...`);
  $("results").replaceChildren();
  try {
    const answer = await (await api(`search/photos?k=${k}`, { method: "POST", body })).json();
    const faces = answer.photos.reduce((n, p) => n + p.faces.length, 0);
    say("status", `${faces} face${faces === 1 ? "" : "s"} in ${answer.photos.length} photo${answer.photos.length > 1 ? "s" : ""} ` +
      `· threshold ${answer.threshold.value.toFixed(3)} (${answer.threshold.source}) · generation ${answer.generation}`);
    answer.photos.forEach((photo, i) => $("results").append(photoResult(photo, files[i])));
  } catch (e) {
    say("status", e.message, true);
  }
  $("status").dataset.searches = ++state.searches;  // lets a test (or a person) tell one search's answer from the next
}

function photoResult(photo, file) {
  const img = el("img", { alt: photo.source, src: URL.createObjectURL(file) });
  const overlay = svg("svg", { preserveAspectRatio: "none" });
  img.addEventListener("load", () => {
    overlay.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
    const size = Math.max(12, Math.round(Math.max(img.naturalWidth, img.naturalHeight) / 40));  // in photo pixels
    photo.faces.forEach((face, i) => {
      const [left, top, right, bottom] = face.box;
      overlay.append(svg("rect", { x: left, y: top, width: right - left, height: bottom - top, class: face.known ? "known" : "unknown" }));
      const label = svg("text", { x: left + 4, y: Math.max(top - size / 3, size) });
      label.style.fontSize = `${size}px`;
      label.style.strokeWidth = `${Math.max(2, size / 8)}px`;
      label.textContent = `${i + 1}. ${face.known ? face.identity : "unknown"}`;
      overlay.append(label);
    });
  });
  const list = el("ol", { class: "faces" }, ...photo.faces.map(faceResult));
  const note = photo.faces.length ? "" : "no face found";
  return el("article", { class: "photo-result" }, el("h3", {}, photo.source), el("div", { class: "figure" }, img, overlay),
    note ? el("p", { class: "muted" }, note) : "", list);
}

function faceResult(face) {
  const decision = face.known ? face.identity : "unknown";
  const rows = face.matches.map((m, rank) => {
    const above = m.score >= face.threshold;
    return el("tr", { class: above ? "above" : "" },
      el("td", {}, `${rank + 1}.`), el("td", {}, thumbImage(m.records[0], m.identity)), el("td", {}, m.identity),
      el("td", { class: "score" }, m.score.toFixed(4)), el("td", {}, `${above ? "≥" : "<"} ${face.threshold.toFixed(3)}`));
  });
  return el("li", { class: "face-result", dataset: { identity: decision } },
    el("span", { class: `decision ${face.known ? "known" : "unknown"}` }, decision),
    el("span", { class: "muted" }, ` box ${face.box.join(", ")} · threshold ${face.threshold.toFixed(3)} (${face.threshold_source})`),
    el("table", { class: "matches" }, el("tbody", {}, ...rows)));
}

// ---------------------------------------------------------------- identities

async function listIdentities() {
  const prefix = $("prefix").value.trim();
  try {
    const page = await (await api(`identities?offset=${state.offset}&limit=${state.limit}&prefix=${encodeURIComponent(prefix)}`)).json();
    const last = Math.min(page.offset + page.limit, page.total);
    $("page-info").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "none";
    $("prev").disabled = page.offset === 0;
    $("next").disabled = last >= page.total;
    $("identity-list").replaceChildren(...page.identities.map(identityRow));
    say("identity-status", "");
  } catch (e) {
    say("identity-status", e.message, true);
  }
}

function identityRow(item) {
  const row = el("li", { dataset: { identity: item.identity } }, thumbImage(item.first_record, item.identity),
    el("span", { class: "name" }, item.identity), el("span", { class: "muted" }, `${item.records} record${item.records > 1 ? "s" : ""}`));
  if (roleAtLeast("admin")) {
    row.append(el("button", { type: "button", class: "remove", onclick: () => remove(item.identity) }, "Remove"));
  }
  return row;
}

async function remove(identity) {
  if (!confirm(`Remove ${identity} and erase every record of them?`)) return;
  try {
    const done = await (await api(`identities/${encodeURIComponent(identity)}`, { method: "DELETE" })).json();
    state.thumbs.clear();
    await listIdentities();  // first: a list refresh clears the status line, so the outcome is said after it
    say("identity-status", `removed ${done.identity}: ${done.removed_records} records erased (generation ${done.generation})`);
    showInfo();
  } catch (e) {
    say("identity-status", e.message, true);
  }
}

async function enrol(event) {
  event.preventDefault();
  const identity = $("enrol-identity").value.trim();
  const files = [...$("enrol-photos").files];
  const body = new FormData();
  for (const f of files) body.append("photos", f, f.name);
  say("enrol-status", `enrolling ${files.length} photo${files.length > 1 ? "s" : ""}...`);
  try {
    const done = await (await api(`identities/${encodeURIComponent(identity)}/photos`, { method: "POST", body })).json();
    const skipped = done.photos.filter((p) => !p.enrolled).map((p) => `${p.source} (${p.reason})`);
    say("enrol-status", `enrolled ${done.records.length} face${done.records.length > 1 ? "s" : ""} for ${done.identity} ` +
      `(generation ${done.generation})${skipped.length ? "; skipped " + skipped.join(", ") : ""}`);
    listIdentities();
    showInfo();
  } catch (e) {
    say("enrol-status", e.message, true);
  }
}

// ---------------------------------------------------------------- wiring

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = state.key;
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); useKey($("key").value.trim()); });
  $("probe-input").addEventListener("change", (e) => { search([...e.target.files]); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); search([...e.dataTransfer.files]); });
  $("prefix").addEventListener("input", () => { state.offset = 0; listIdentities(); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); listIdentities(); });
  $("next").addEventListener("click", () => { state.offset += state.limit; listIdentities(); });
  $("enrol-form").addEventListener("submit", enrol);
  useKey(state.key);
});
