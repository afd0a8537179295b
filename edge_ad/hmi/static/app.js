// edge-ad station HMI: polls /api/state once a second, the live frame at most twice a second; no build step.
"use strict";
const $ = (id) => document.getElementById(id);
let state = null;
let lastSeq = -1;

function fmt(v, digits = 1) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }
function when(t) { return new Date(t * 1000).toLocaleString(); }

let csrf = "";  // the session's CSRF token: every state-changing request carries it (X-CSRF-Token)
async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  if (opts.method === "POST") {
    opts.headers = Object.assign({ "content-type": "application/json", "x-csrf-token": csrf }, opts.headers || {});
  }
  const r = await fetch(path, opts);
  const body = r.headers.get("content-type") && r.headers.get("content-type").includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((body && body.error) || r.statusText);
  if (body && typeof body.csrf === "string") csrf = body.csrf;  // the login answer
  if (body && "user" in body && "station" in body) csrf = body.user ? body.user.csrf : "";  // /api/state
  return body;
}

function drawTrend(trend) {
  const c = $("trend"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const y = (s) => c.height - 10 - Math.min(1, Math.max(0, s)) * (c.height - 20);
  g.strokeStyle = "#fa4"; g.setLineDash([4, 4]); g.beginPath(); g.moveTo(0, y(0.5)); g.lineTo(c.width, y(0.5)); g.stroke();
  g.setLineDash([]);
  trend.forEach((p, i) => {
    g.fillStyle = p[2] === "OK" ? "#6c6" : "#f66";
    g.fillRect(i * c.width / Math.max(1, trend.length), y(p[1]) - 2, 3, 3);
  });
}

function drawHist(hist) {
  const c = $("hist"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const m = Math.max(1, ...hist), w = c.width / hist.length;
  hist.forEach((n, i) => {
    g.fillStyle = i < hist.length / 2 ? "#6c6" : "#f66";
    const h = n / m * (c.height - 10);
    g.fillRect(i * w + 1, c.height - h, w - 2, h);
  });
}

function render(s) {
  state = s;
  $("station").textContent = "edge-ad · " + s.station;
  $("model").textContent = `${s.model || "-"} (${s.precision || "-"}) recipe ${s.recipe}`;
  $("plc").textContent = s.plc.connected ? "PLC up" : "PLC down";
  $("plc").className = "pill " + (s.plc.connected ? "up" : "down");
  const f = s.faults, bad = [];
  if (f.source_fault) bad.push("camera fault");
  if (s.camera && s.camera.gaps) bad.push(`${s.camera.gaps} camera gaps (${s.camera.frames_lost} frames lost)`);
  if (f.record_errors) bad.push(`${f.record_errors} record errors`);
  if (f.triggers_ignored) bad.push(`${f.triggers_ignored} triggers ignored`);
  $("faults").textContent = bad.join(", ") || "no faults";
  $("faults").className = "pill " + (bad.length ? "down" : "up");
  const dr = s.drift || { level: "OFF", reasons: [] };
  $("drift").textContent = "drift " + dr.level;
  $("drift").title = (dr.reasons || []).join("\n") || "the line looks like the model's good images";
  $("drift").className = "pill " + (dr.level === "ALARM" || dr.level === "WARN" ? "down" : "up");
  const sh = s.shadow;
  $("shadow").hidden = !sh;
  if (sh) {
    const c = sh.confusion, pct = sh.agreement === null ? "-" : (100 * sh.agreement).toFixed(1) + "%";
    $("shadow").textContent = `shadow ${sh.model}: agrees on ${pct} of ${sh.judged} parts ` +
      `(production/shadow OK/OK ${c["OK/OK"]}, OK/NG ${c["OK/NG"]}, NG/OK ${c["NG/OK"]}, NG/NG ${c["NG/NG"]}), ` +
      `score correlation ${fmt(sh.score_spearman, 3)}, ${sh.skipped} skipped`;
  }
  const st = s.stats;
  $("c-total").textContent = st.total; $("c-ok").textContent = st.ok; $("c-ng").textContent = st.ng;
  $("c-failed").textContent = st.failed; $("c-late").textContent = st.late;
  $("c-yield").textContent = st.yield === null ? "-" : (100 * st.yield).toFixed(1) + "%";
  $("c-tput").textContent = fmt(st.throughput_per_min); $("c-p50").textContent = fmt(st.p50_ms);
  $("c-p99").textContent = fmt(st.p99_ms);
  drawTrend(st.trend); drawHist(st.hist);
  if (s.last) {
    $("verdict").textContent = s.last.decision; $("verdict").className = "verdict " + s.last.decision;
    $("part").textContent = `part ${s.last.part_id} · ${when(s.last.time)} · ${fmt(s.last.inspection_ms)} ms`;
    $("score").textContent = `score ${fmt(s.last.score, 3)} / threshold 0.5 (sensitivity ${fmt(s.sensitivity, 2)})`;
    $("reason").textContent = s.last.error || s.last.reason || "";
  }
  if (st.seq !== lastSeq) { lastSeq = st.seq; $("frame").src = "/api/live.jpg?seq=" + st.seq; }
  renderTiles(s.last && s.last.views ? s.last.views : []);
  $("who").textContent = s.user ? `${s.user.user} (${s.user.role})` : "not logged in";
  $("engineer-panel").hidden = !(s.user && s.user.role === "engineer");
  $("login-form").hidden = !!s.user;
  $("false-reject").hidden = !(s.user && s.user.role === "engineer");
  $("confirm-ng").hidden = !s.user;
  if (document.activeElement !== $("sens")) $("sens").value = s.sensitivity;
  const sel = $("recipe");
  if (document.activeElement !== sel) {
    sel.replaceChildren();
    Object.entries(s.recipes || {}).forEach(([k, v]) => {
      const o = document.createElement("option"); o.value = k; o.textContent = `${k}: ${v}`;
      o.selected = Number(k) === s.recipe; sel.appendChild(o);
    });
  }
  const rc = $("roi-cat");
  if (document.activeElement !== rc) {
    rc.replaceChildren(...(s.roi_categories || []).map((c) => { const o = document.createElement("option");
                                                               o.value = c; o.textContent = c; return o; }));
  }
  $("roi-form").hidden = !(s.roi_categories || []).length;
  const cap = s.capture || { on: false };
  $("capture-toggle").textContent = cap.on ? "Stop capture" : "Start capture";
  $("capture-msg").textContent = cap.on ? `capturing: kept ${cap.kept} of ${cap.considered}` : (s.dataset ? "" : "needs --ui-dataset");
}

// multi-view stations: one tile per camera with its latest frame and verdict
const tileSeq = {};
function renderTiles(views) {
  const box = $("view-tiles");
  box.hidden = views.length === 0;
  views.forEach((v) => {
    let fig = box.querySelector(`figure[data-view="${CSS.escape(v.name)}"]`);
    if (!fig) {
      fig = document.createElement("figure"); fig.dataset.view = v.name;
      const img = document.createElement("img"); img.alt = `view ${v.name}`;
      fig.append(img, document.createElement("figcaption")); box.appendChild(fig);
    }
    const cap = fig.querySelector("figcaption");
    cap.textContent = `${v.name}: ${v.decision} · score ${fmt(v.score, 3)}` + (v.error ? ` · ${v.error}` : "");
    cap.className = v.decision;
    if (v.image && tileSeq[v.name] !== v.seq) {
      tileSeq[v.name] = v.seq;
      fig.querySelector("img").src = "/api/live.jpg?view=" + encodeURIComponent(v.name) + "&seq=" + v.seq;
    }
  });
}

async function poll() {
  try { render(await api("/api/state")); } catch (e) { $("plc").textContent = "station unreachable"; }
  setTimeout(poll, 1000);
}

// a region the operator drags on the stored image, in image pixels, sent with "Confirm NG"
let drawn = null, dragFrom = null;
function showBox(a, b) {
  const box = $("region-box");
  box.style.left = Math.min(a[0], b[0]) + "px"; box.style.top = Math.min(a[1], b[1]) + "px";
  box.style.width = Math.abs(b[0] - a[0]) + "px"; box.style.height = Math.abs(b[1] - a[1]) + "px";
  box.hidden = false;
}
$("detail-img").addEventListener("mousedown", (e) => { e.preventDefault(); dragFrom = [e.offsetX, e.offsetY]; });
$("detail-img").addEventListener("mousemove", (e) => { if (dragFrom) showBox(dragFrom, [e.offsetX, e.offsetY]); });
$("detail-img").addEventListener("mouseup", (e) => {
  if (!dragFrom) return;
  const img = $("detail-img"), a = dragFrom, b = [e.offsetX, e.offsetY];
  dragFrom = null;
  const sx = img.naturalWidth / img.clientWidth, sy = img.naturalHeight / img.clientHeight;
  const w = Math.abs(b[0] - a[0]), h = Math.abs(b[1] - a[1]);
  if (w < 3 || h < 3) { drawn = null; $("region-box").hidden = true; return; }
  drawn = [Math.round(Math.min(a[0], b[0]) * sx), Math.round(Math.min(a[1], b[1]) * sy), Math.round(w * sx),
           Math.round(h * sy)];
  $("fr-msg").textContent = `region ${drawn.join(", ")} (x, y, width, height)`;
});

function showDetail(row) {
  drawn = null; $("region-box").hidden = true;
  $("detail-img").src = row.overlay_url || row.image_url || "";
  $("detail-meta").textContent = JSON.stringify(row, null, 1);
  $("false-reject").dataset.id = row.id; $("fr-msg").textContent = "";
  $("detail").showModal();
}

async function loadGallery() {
  const rows = await api("/api/ng?limit=24");
  const g = $("gallery"); g.replaceChildren();
  rows.forEach((r) => {
    const fig = document.createElement("figure");
    fig.className = "ng-item";
    const cap = document.createElement("figcaption");
    cap.textContent = `${r.decision} · part ${r.part_id} · ${when(r.time)}`;
    if (r.view_rows && r.view_rows.length) {  // every view of a multi-view part, NG or not
      const views = document.createElement("div"); views.className = "views";
      r.view_rows.forEach((v) => {
        const img = document.createElement("img"); img.alt = `part ${r.part_id} view ${v.name}`;
        img.title = `${v.name}: ${v.decision}` + (v.error ? ` (${v.error})` : "");
        if (v.overlay_url || v.image_url) img.src = v.overlay_url || v.image_url;
        views.appendChild(img);
      });
      cap.textContent += " · " + r.view_rows.map((v) => `${v.name} ${v.decision}`).join(", ");
      fig.append(views, cap);
    } else {
      const img = document.createElement("img"); img.alt = `part ${r.part_id}`;
      fig.append(img, cap);
      if (r.overlay_url || r.image_url) img.src = r.overlay_url || r.image_url;
    }
    fig.onclick = () => showDetail(r);
    g.appendChild(fig);
  });
}

async function lookup(ev) {
  ev.preventDefault();
  const q = new URLSearchParams(new FormData($("lookup-form")));
  for (const [k, v] of [...q.entries()]) if (!v) q.delete(k);
  const body = $("lookup-table").querySelector("tbody");
  body.replaceChildren();
  try {
    (await api("/api/parts?" + q)).forEach((r) => {
      const tr = document.createElement("tr");
      for (const text of [when(r.time), r.part_id, r.decision, fmt(r.normalized_score, 3), r.model || "-",
                          (r.package_digest || "-").slice(0, 12), fmt(r.inspection_ms), r.image_url ? "view" : ""]) {
        const td = document.createElement("td"); td.textContent = String(text); tr.appendChild(td);
      }
      tr.onclick = () => showDetail(r);
      body.appendChild(tr);
    });
  } catch (e) {
    const tr = document.createElement("tr"); const td = document.createElement("td");
    td.colSpan = 8; td.textContent = e.message; tr.appendChild(td); body.appendChild(tr);
  }
}

async function loadAudit() {
  const ul = $("audit"); ul.replaceChildren();
  (await api("/api/audit")).forEach((a) => {
    const li = document.createElement("li");
    li.textContent = `${when(a.time)} ${a.user}: ${a.action} ${JSON.stringify(a.detail)}`;
    ul.appendChild(li);
  });
}

function show(page) {
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== "page-" + page; });
  if (page === "gallery") loadGallery();
  if (page === "engineer" && state && state.user) { loadAudit(); loadModels(); }
}

window.addEventListener("hashchange", () => show(location.hash.slice(1) || "live"));
$("lookup-form").addEventListener("submit", lookup);
$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const d = Object.fromEntries(new FormData($("login-form")));
  try { await api("/api/login", { method: "POST", body: JSON.stringify(d), headers: { "content-type": "application/json" } });
        $("login-msg").textContent = ""; render(await api("/api/state")); loadAudit(); loadModels(); }
  catch (e) { $("login-msg").textContent = e.message; }
});
$("sens-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { const r = await api("/api/sensitivity", { method: "POST", body: JSON.stringify({ value: Number($("sens").value) }),
                                                  headers: { "content-type": "application/json" } });
        $("sens-msg").textContent = `applied: sensitivity ${r.sensitivity}`; loadAudit(); }
  catch (e) { $("sens-msg").textContent = e.message; }
});
$("roi-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("roi-file").files[0];
  if (!file) { $("roi-msg").textContent = "choose a PNG first"; return; }
  const bytes = new Uint8Array(await file.arrayBuffer());
  let bin = ""; for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  try { const r = await api("/api/roi", { method: "POST", body: JSON.stringify({ category: $("roi-cat").value || null, png: btoa(bin) }),
                                          headers: { "content-type": "application/json" } });
        $("roi-msg").textContent = `applied to ${r.category} ${r.applied}`; loadAudit(); }
  catch (e) { $("roi-msg").textContent = e.message; }
});
async function loadModels() {
  const sel = $("model-pick");
  let rows = [];
  try { rows = await api("/api/models"); } catch (e) { return; }
  if (document.activeElement === sel) return;
  sel.replaceChildren(...rows.map((m) => {
    const o = document.createElement("option"); o.value = m.digest;
    const last = m.last_deployment ? `${m.last_deployment.action} ${m.last_deployment.role}` : "";
    o.textContent = `${m.name} ${m.precision} ${m.digest.slice(0, 12)} · ${m.parts} parts · ${m.signer || "unsigned"} · ${last}`;
    return o;
  }));
}
async function modelAction(path, body) {
  try {
    const r = await api(path, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    $("model-msg").textContent = path.endsWith("rollback") ? `rolling back to recipe ${r.to}` :
      path.endsWith("shadow") ? (r.shadow ? `shadow ${r.shadow.slice(0, 12)} judges the next parts` : "no shadow") :
      `promoted as recipe ${r.recipe}`;
    loadAudit(); loadModels();
  } catch (e) { $("model-msg").textContent = e.message; }
}
$("promote-pick").addEventListener("click", () => modelAction("/api/model/promote", { target: $("model-pick").value }));
$("promote-shadow").addEventListener("click", () => modelAction("/api/model/promote", { target: "shadow" }));
$("rollback").addEventListener("click", () => modelAction("/api/model/rollback", {}));
$("shadow-pick").addEventListener("click", () => modelAction("/api/model/shadow", { target: $("model-pick").value }));
$("shadow-off").addEventListener("click", () => modelAction("/api/model/shadow", { target: "off" }));

$("recipe-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { await api("/api/recipe", { method: "POST", body: JSON.stringify({ index: Number($("recipe").value) }),
                                   headers: { "content-type": "application/json" } });
        $("recipe-msg").textContent = "requested"; loadAudit(); }
  catch (e) { $("recipe-msg").textContent = e.message; }
});
$("capture-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const on = !(state && state.capture && state.capture.on);
  const category = new FormData($("capture-form")).get("category");
  try { await api("/api/capture", { method: "POST", body: JSON.stringify({ on, category }), headers: { "content-type": "application/json" } });
        render(await api("/api/state")); loadAudit(); }
  catch (e) { $("capture-msg").textContent = e.message; }
});
$("logout").addEventListener("click", async () => { await api("/api/logout", { method: "POST" }); render(await api("/api/state")); });
$("false-reject").addEventListener("click", async () => {
  try { const r = await api("/api/false-reject", { method: "POST", body: JSON.stringify({ id: Number($("false-reject").dataset.id) }),
                                                   headers: { "content-type": "application/json" } });
        $("fr-msg").textContent = "copied to " + r.copied_to; }
  catch (e) { $("fr-msg").textContent = e.message; }
});
$("confirm-ng").addEventListener("click", async () => {
  const body = { id: Number($("false-reject").dataset.id), label: "confirmed_ng" };
  if (drawn) body.region = drawn;
  try { await api("/api/feedback", { method: "POST", body: JSON.stringify(body),
                                     headers: { "content-type": "application/json" } });
        $("fr-msg").textContent = "confirmed NG: goes to the next dataset revision"; }
  catch (e) { $("fr-msg").textContent = e.message; }
});
$("detail-close").addEventListener("click", () => $("detail").close());
document.querySelectorAll("nav a").forEach((a) => a.addEventListener("click", () => show(a.dataset.page)));
show(location.hash.slice(1) || "live");
poll();
