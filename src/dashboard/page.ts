/**
 * The dashboard's one page: plain HTML, CSS and script, no framework and nothing to
 * build or download (the dashboard must run wherever ado runs). The script reads the
 * server-sent events of server.ts, keeps the tasks in a Map and redraws only the rows
 * that changed, at most once per animation frame, so a run of 10,000 tasks stays
 * smooth. It records what it measures (updates applied, time per update, when each
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
    <table id="tasks"><thead><tr><th>task</th><th>state</th><th>try</th><th>worker</th><th>elapsed</th><th>needs</th><th>activity</th></tr></thead><tbody></tbody></table>
    <div id="task"></div>
  </section>
</main>
<script>
"use strict";
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&":"&amp;", "<":"&lt;", ">":"&gt;", '"':"&quot;" }[c]));
const ago = (from, to) => { if (!from) return ""; const ms = (to ? Date.parse(to) : Date.now()) - Date.parse(from); const s = Math.max(0, Math.round(ms / 1000)); return s < 60 ? s + "s" : s < 3600 ? Math.floor(s/60) + "m" + String(s%60).padStart(2,"0") + "s" : Math.floor(s/3600) + "h" + String(Math.floor(s/60)%60).padStart(2,"0") + "m"; };
const stats = window.__ado = { deltas: 0, states: 0, applyMs: [], seen: [], errors: 0, firstState: 0 };

let runId = null, runFeed = null, taskFeed = null, taskId = null;
const tasks = new Map();   // id -> task view
const rows = new Map();    // id -> <tr>
let dirty = new Set(), frame = 0, run = null;

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

function renderRunHead() {
  if (!run) return;
  const st = run.paused && run.status === "running" ? "paused" : run.status;
  const c = run.counts;
  const live = run.status === "running" || run.status === "needs_attention";
  $("#runhead").innerHTML = '<b>' + esc(run.name || run.runId) + '</b> <span id="run-status" class="s-' + esc(st) + '">' + esc(st) + '</span>' +
    '<span class="dim">' + Object.entries(c).filter(([, n]) => n).map(([k, n]) => n + " " + k).join(", ") + '</span>' +
    '<span class="dim">' + ago(run.acceptedAt, run.finishedAt) + (run.costUsd ? ", $" + run.costUsd.toFixed(2) : "") + '</span>' +
    (live ? (run.paused ? '<button data-action="resume">resume</button>' : '<button data-action="pause">pause</button>') + ' <button data-action="cancel">cancel</button>' : "") +
    (run.error ? '<div class="s-failed">' + esc(run.error) + '</div>' : "");
}
$("#runhead").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-action]"); if (!b) return;
  if (b.dataset.action === "cancel" && !confirm("cancel run " + runId + "?")) return;
  b.disabled = true;
  try { await api("/api/runs/" + runId + "/control", { action: b.dataset.action }); } catch (err) { alert(err.message); b.disabled = false; }
});

function rowHtml(t) {
  const st = t.paused && t.status === "running" ? "paused" : t.status;
  return '<td>' + esc(t.id) + '</td><td class="s-' + esc(st) + '">' + esc(st) + '</td><td>' + (t.attempts || "") + '</td><td>' + esc(t.workerId) + '</td><td>' + ago(t.startedAt, t.finishedAt) + '</td><td class="dim">' + esc((t.needs || []).join(" ")) + '</td><td class="act">' + esc(t.waiting || t.error || t.activity) + '</td>';
}

function draw() {
  frame = 0;
  const t0 = performance.now();
  const body = $("#tasks tbody");
  for (const id of dirty) {
    const t = tasks.get(id);
    let tr = rows.get(id);
    if (!tr) { tr = document.createElement("tr"); tr.dataset.task = id; rows.set(id, tr); body.appendChild(tr); }
    tr.dataset.state = t.paused && t.status === "running" ? "paused" : t.status;
    tr.className = id === taskId ? "sel" : "";
    tr.innerHTML = rowHtml(t);
  }
  dirty.clear();
  renderRunHead();
  stats.applyMs.push(performance.now() - t0);
}
const schedule = () => { if (!frame) frame = requestAnimationFrame(draw); };

function apply(msg) {
  if (msg.type === "state") { tasks.clear(); rows.clear(); $("#tasks tbody").innerHTML = ""; stats.states++; stats.firstState = stats.firstState || Date.now(); }
  else stats.deltas++;
  run = msg.run;
  const now = Date.now();
  for (const t of msg.tasks) {
    const before = tasks.get(t.id);
    if (!before || before.status !== t.status) stats.seen.push({ id: t.id, status: t.status, at: now });
    tasks.set(t.id, t); dirty.add(t.id);
  }
  schedule();
}

function openRun(id) {
  if (runFeed) runFeed.close();
  closeTask();
  runId = id; run = null; tasks.clear(); rows.clear(); $("#tasks tbody").innerHTML = "";
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
  for (const [k, tr] of rows) tr.className = k === id ? "sel" : "";
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
