/**
 * The dashboard's one page: plain HTML, CSS and script, no framework and nothing to
 * build or download (the dashboard must run wherever ado runs). The script reads the
 * server-sent events of server.ts, keeps the tasks in a Map and draws only the rows in
 * view, at most once per animation frame, so a run of 10,000 tasks stays smooth. It records what it measures (updates applied, time per update, when each
 * task state was seen) in `window.__ado`, which the browser test reads.
 */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ado dashboard</title>
<style>
  :root { --bg:#0f1115; --panel:#171a21; --text:#d8dee9; --dim:#7b8496; --ok:#5fb97b; --bad:#e06c75; --run:#61afef; --wait:#e5c07b; --line:#262a33; }
  * { box-sizing: border-box; }
  body { margin:0; font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background:var(--bg); color:var(--text); }
  header { padding:8px 14px; border-bottom:1px solid var(--line); display:flex; gap:16px; align-items:baseline; }
  header h1 { font-size:15px; margin:0; }
  #conn { color:var(--dim); }
  main { display:grid; grid-template-columns: minmax(320px, 32%) 1fr; gap:0; height: calc(100vh - 38px); }
  section { overflow:auto; border-right:1px solid var(--line); }
  h2 { font-size:13px; margin:10px 12px 6px; color:var(--dim); text-transform:uppercase; letter-spacing:.05em; }
  table { border-collapse:collapse; width:100%; }
  /* Fixed layout: a change in one row never makes the browser measure every row again (10,000 of them). */
  #tasks { table-layout:fixed; }
  #tasks td { overflow:hidden; text-overflow:ellipsis; height:22px; }
  #taskwrap { max-height:58vh; overflow:auto; }
  #tasks tr.spacer td { height:auto; padding:0; border:0; }
  #tasks th:nth-child(1) { width:16%; } #tasks th:nth-child(2) { width:11%; } #tasks th:nth-child(3) { width:4%; }
  #tasks th:nth-child(4) { width:13%; } #tasks th:nth-child(5) { width:7%; } #tasks th:nth-child(6) { width:12%; }
  td, th { padding:3px 8px; text-align:left; white-space:nowrap; border-bottom:1px solid var(--line); }
  th { color:var(--dim); font-weight:normal; position:sticky; top:0; background:var(--bg); }
  tr.sel, tr:hover { background:var(--panel); cursor:pointer; }
  td.act { max-width: 420px; overflow:hidden; text-overflow:ellipsis; color:var(--dim); }
  .s-succeeded, .s-merged { color:var(--ok); } .s-failed, .s-cancelled, .s-rejected { color:var(--bad); }
  .s-running, .s-merging { color:var(--run); } .s-needs_attention, .s-paused, .s-queued { color:var(--wait); }
  .s-pending, .s-skipped { color:var(--dim); }
  button { font:inherit; background:var(--panel); color:var(--text); border:1px solid var(--line); padding:3px 10px; border-radius:4px; cursor:pointer; }
  button:hover { border-color:var(--run); }
  #runhead { padding:8px 12px; display:flex; gap:10px; align-items:center; flex-wrap:wrap; }
  #task { border-top:1px solid var(--line); padding:6px 12px; }
  pre { background:var(--panel); padding:8px; max-height:260px; overflow:auto; white-space:pre-wrap; margin:6px 0; }
  .hitl { border:1px solid var(--wait); margin:8px 12px; padding:8px; border-radius:4px; }
  .hitl pre { max-height:120px; }
  .dim { color:var(--dim); }
</style>
</head>
<body>
<header><h1>ado</h1><span id="conn">connecting…</span><label class="dim"><input type="checkbox" id="all"> finished runs too</label></header>
<main>
  <section>
    <h2>Runs</h2>
    <table id="runs"><thead><tr><th>run</th><th>state</th><th>done</th><th>elapsed</th><th>cost</th></tr></thead><tbody></tbody></table>
    <h2>Waiting for a person</h2>
    <div id="hitl"><p class="dim" style="margin:0 12px">nothing</p></div>
  </section>
  <section>
    <div id="runhead"><span class="dim">choose a run</span></div>
    <div id="taskwrap"><table id="tasks"><thead><tr><th>task</th><th>state</th><th>try</th><th>worker</th><th>elapsed</th><th>needs</th><th>activity</th></tr></thead><tbody></tbody></table></div>
    <div id="task"></div>
  </section>
</main>
<script>
"use strict";
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&":"&amp;", "<":"&lt;", ">":"&gt;", '"':"&quot;" }[c]));
const ago = (from, to) => { if (!from) return ""; const ms = (to ? Date.parse(to) : Date.now()) - Date.parse(from); const s = Math.max(0, Math.round(ms / 1000)); return s < 60 ? s + "s" : s < 3600 ? Math.floor(s/60) + "m" + String(s%60).padStart(2,"0") + "s" : Math.floor(s/3600) + "h" + String(Math.floor(s/60)%60).padStart(2,"0") + "m"; };
const stats = window.__ado = { deltas: 0, states: 0, applyMs: [], seen: [], errors: 0, firstState: 0, malformed: 0, longTasks: [] };
try { new PerformanceObserver((list) => { for (const e of list.getEntries()) stats.longTasks.push({ ms: Math.round(e.duration), at: Math.round(performance.timeOrigin + e.startTime) }); }).observe({ entryTypes: ["longtask"] }); } catch { /* not every browser has it */ }

let runId = null, runFeed = null, taskFeed = null, taskId = null;
const tasks = new Map();   // id -> task view
const order = [];          // task ids in graph order
let dirty = false, frame = 0, run = null;
stats.model = tasks;

async function api(path, body) {
  const res = await fetch(path, body ? { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) } : {});
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

async function loadRuns() {
  try {
    const list = await api("/api/runs" + ($("#all").checked ? "?all=1" : ""));
    $("#conn").textContent = "live";
    const body = $("#runs tbody");
    body.innerHTML = list.map((r) => {
      const done = (r.counts.succeeded || 0) + (r.counts.failed || 0) + (r.counts.skipped || 0) + (r.counts.cancelled || 0);
      return '<tr data-run="' + esc(r.runId) + '"' + (r.runId === runId ? ' class="sel"' : "") + '><td>' + esc(r.name || r.runId) + '<br><span class="dim">' + esc(r.runId) + '</span></td><td class="s-' + esc(r.status) + '">' + esc(r.status) + (r.attention ? " ⚑" : "") + '</td><td>' + done + "/" + r.tasks + '</td><td>' + ago(r.acceptedAt, r.finishedAt) + '</td><td>' + (r.costUsd ? "$" + r.costUsd.toFixed(2) : "") + '</td></tr>';
    }).join("") || '<tr><td colspan="5" class="dim">no runs</td></tr>';
  } catch (err) { $("#conn").textContent = "no answer: " + err.message; }
}

async function loadHitl() {
  try {
    const list = await api("/api/hitl");
    $("#hitl").innerHTML = list.map((h) => '<div class="hitl" data-hitl="' + esc(h.id) + '"><b>' + esc(h.runId) + " / " + esc(h.taskId) + '</b> <span class="dim">' + esc(h.state) + '</span><div>' + esc(h.message) + '</div>' +
      h.conflicts.map((c) => '<div>' + esc(c.path) + ' <span class="dim">(' + esc(c.kind) + ')</span></div><div style="display:grid;grid-template-columns:1fr 1fr;gap:6px"><pre title="ours">' + esc(c.ours) + '</pre><pre title="theirs">' + esc(c.theirs) + '</pre></div>').join("") +
      (h.state === "open" ? '<button data-choice="ours">keep ours</button> <button data-choice="theirs">take theirs</button> <button data-choice="skip">skip the task</button>' : "") + '</div>').join("") || '<p class="dim" style="margin:0 12px">nothing</p>';
  } catch { /* shown by loadRuns */ }
}

$("#hitl").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-choice]"); if (!b) return;
  const id = b.closest("[data-hitl]").dataset.hitl;
  b.disabled = true;
  try { await api("/api/hitl/" + encodeURIComponent(id) + "/resolve", { choice: b.dataset.choice }); } catch (err) { alert(err.message); }
  loadHitl();
});

$("#runs").addEventListener("click", (ev) => { const tr = ev.target.closest("tr[data-run]"); if (tr) location.hash = "run=" + tr.dataset.run; });
$("#tasks").addEventListener("click", (ev) => { const tr = ev.target.closest("tr[data-task]"); if (tr) openTask(tr.dataset.task); });
$("#all").addEventListener("change", loadRuns);
$("#taskwrap").addEventListener("scroll", () => schedule(), { passive: true });

// The head is rebuilt only when what it says changes (the elapsed time is a text of its
// own): a button replaced between a press and its release would lose the click.
let headHtml = "";
function renderRunHead() {
  if (!run) return;
  const st = run.paused && run.status === "running" ? "paused" : run.status;
  const live = run.status === "running" || run.status === "needs_attention";
  const html = '<b>' + esc(run.name || run.runId) + '</b> <span id="run-status" class="s-' + esc(st) + '">' + esc(st) + '</span>' +
    '<span class="dim">' + Object.entries(run.counts).filter(([, n]) => n).map(([k, n]) => n + " " + k).join(", ") + '</span>' +
    '<span class="dim" id="run-elapsed"></span>' +
    (live ? (run.paused ? '<button data-action="resume">resume</button>' : '<button data-action="pause">pause</button>') + ' <button data-action="cancel">cancel</button>' : "") +
    (run.error ? '<div class="s-failed">' + esc(run.error) + '</div>' : "");
  if (html !== headHtml) { $("#runhead").innerHTML = html; headHtml = html; }
  const el = ago(run.acceptedAt, run.finishedAt) + (run.costUsd ? ", $" + run.costUsd.toFixed(2) : "");
  const span = $("#run-elapsed");
  if (span && span.textContent !== el) span.textContent = el;
}
$("#runhead").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-action]"); if (!b) return;
  if (b.dataset.action === "cancel" && !confirm("cancel run " + runId + "?")) return;
  b.disabled = true;
  try { await api("/api/runs/" + runId + "/control", { action: b.dataset.action }); } catch (err) { alert(err.message); b.disabled = false; }
});

// Only the rows in view exist (a pool of <tr>, each keeping its cells), between two
// spacer rows that stand for the rest: a redraw costs the same for 10 or 10,000 tasks,
// and writes only the cells whose text changed.
const COLS = 7, ROW_H = 23, pool = [];
function cellsOf(t) {
  const st = t.paused && t.status === "running" ? "paused" : t.status;
  return [t.id, st, t.attempts ? String(t.attempts) : "", t.workerId || "", ago(t.startedAt, t.finishedAt), (t.needs || []).join(" "), t.waiting || t.error || t.activity || ""];
}
function spacer() { const tr = document.createElement("tr"); tr.className = "spacer"; tr.appendChild(document.createElement("td")).colSpan = COLS; return tr; }
const above = spacer(), below = spacer();

function draw() {
  frame = 0;
  const t0 = performance.now();
  const body = $("#tasks tbody"), wrap = $("#taskwrap");
  if (above.parentNode !== body) { body.innerHTML = ""; body.appendChild(above); body.appendChild(below); }
  const first = Math.max(0, Math.floor(wrap.scrollTop / ROW_H) - 10);
  const count = Math.min(order.length - first, Math.ceil((wrap.clientHeight || 600) / ROW_H) + 20);
  while (pool.length < count) {
    const tr = document.createElement("tr"); tr.cells_ = [];
    for (let i = 0; i < COLS; i++) { const td = document.createElement("td"); tr.appendChild(td); tr.cells_.push(td); }
    tr.cells_[5].className = "dim"; tr.cells_[6].className = "act";
    pool.push(tr); body.insertBefore(tr, below);
  }
  for (let i = 0; i < pool.length; i++) {
    const tr = pool[i];
    if (i >= count) { if (tr.style.display !== "none") { tr.style.display = "none"; delete tr.dataset.task; delete tr.dataset.state; } continue; }
    tr.style.display = "";
    const id = order[first + i], t = tasks.get(id), cells = cellsOf(t);
    if (tr.dataset.task !== id) tr.dataset.task = id;
    if (tr.dataset.state !== cells[1]) { tr.dataset.state = cells[1]; tr.cells_[1].className = "s-" + cells[1]; }
    for (let c = 0; c < COLS; c++) if (tr.cells_[c].textContent !== cells[c]) tr.cells_[c].textContent = cells[c];
    const sel = id === taskId ? "sel" : "";
    if (tr.className !== sel) tr.className = sel;
  }
  above.style.height = first * ROW_H + "px";
  below.style.height = Math.max(0, order.length - first - count) * ROW_H + "px";
  dirty = false;
  renderRunHead();
  stats.applyMs.push(performance.now() - t0);
}
const schedule = () => { if (!frame) frame = requestAnimationFrame(draw); };

function apply(msg) {
  if (msg.type === "state") { tasks.clear(); order.length = 0; stats.states++; stats.firstState = stats.firstState || Date.now(); }
  else stats.deltas++;
  run = msg.run;
  stats.malformed = run.malformed;
  const now = Date.now();
  for (const t of msg.tasks) {
    const before = tasks.get(t.id);
    if (!before || before.status !== t.status) stats.seen.push({ id: t.id, status: t.status, at: now });
    if (!before) order.push(t.id);
    tasks.set(t.id, t); dirty = true;
  }
  schedule();
}

function openRun(id) {
  if (runFeed) runFeed.close();
  closeTask();
  runId = id; run = null; headHtml = ""; $("#runhead").innerHTML = ""; tasks.clear(); order.length = 0; schedule();
  if (!id) return;
  runFeed = new EventSource("/api/runs/" + encodeURIComponent(id) + "/feed");
  runFeed.onmessage = (ev) => { try { apply(JSON.parse(ev.data)); } catch { stats.errors++; } };
  runFeed.onerror = () => { $("#conn").textContent = "reconnecting…"; };
  runFeed.onopen = () => { $("#conn").textContent = "live"; };
  loadRuns();
}

function closeTask() { if (taskFeed) taskFeed.close(); taskFeed = null; taskId = null; $("#task").innerHTML = ""; }
function openTask(id) {
  closeTask();
  taskId = id;
  schedule();
  $("#task").innerHTML = '<h2>task ' + esc(id) + ' <button data-task-action="pause">pause</button> <button data-task-action="resume">resume</button> <button data-task-action="cancel">cancel</button></h2><div class="dim">output</div><pre id="output"></pre><div class="dim">activity</div><pre id="activity"></pre>';
  let attempt = 0;
  taskFeed = new EventSource("/api/runs/" + encodeURIComponent(runId) + "/tasks/" + encodeURIComponent(id) + "/feed");
  taskFeed.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    const out = m.type === "output" ? $("#output") : $("#activity");
    if (m.type === "output" && m.attempt !== attempt) { if (attempt) out.textContent += "\\n── attempt " + m.attempt + " ──\\n"; attempt = m.attempt; }
    out.textContent += m.type === "output" ? m.data : m.line + "\\n";
    if (out.textContent.length > 200000) out.textContent = out.textContent.slice(-150000);
    out.scrollTop = out.scrollHeight;
  };
}
$("#task").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-task-action]"); if (!b) return;
  try { await api("/api/runs/" + runId + "/control", { action: b.dataset.taskAction, taskId }); } catch (err) { alert(err.message); }
});

const fromHash = () => { const m = /run=([^&]+)/.exec(location.hash); openRun(m ? decodeURIComponent(m[1]) : null); };
window.addEventListener("hashchange", fromHash);
fromHash();
loadRuns(); loadHitl();
setInterval(loadRuns, 2000);
setInterval(loadHitl, 1000);
setInterval(() => { if (run && (run.status === "running" || run.status === "needs_attention")) renderRunHead(); }, 1000);
</script>
</body>
</html>
`;
