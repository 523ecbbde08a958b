/**
 * The dashboard's one page: plain HTML, CSS and script, no framework and nothing to
 * build or download (the dashboard must run wherever ado runs). The script reads the
 * server-sent events of server.ts, keeps the tasks in a Map and draws only the rows in
 * view, at most once per animation frame, so a run of 10,000 tasks stays smooth. The
 * graph view is SVG, laid out once per run by the layers the server sends (graph.ts)
 * and then only restyled: a state change touches one node. It records what it
 * measures (updates applied, time per update, when each task state was seen) in
 * `window.__ado`, which the browser test reads.
 */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ado dashboard</title>
<style>
  :root { --bg:#0f1115; --panel:#171a21; --text:#d8dee9; --dim:#7b8496; --ok:#5fb97b; --bad:#e06c75; --run:#61afef; --wait:#e5c07b; --line:#262a33; --crit:#d19a66; }
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
  nav { display:flex; gap:6px; }
  nav button.on, #tabs button.on { border-color:var(--run); color:var(--run); }
  #tabs { padding:0 12px 6px; display:flex; gap:6px; align-items:center; }
  #critical { color:var(--dim); overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
  #critical b { color:var(--crit); font-weight:normal; }
  #graphwrap { max-height:58vh; overflow:auto; border-top:1px solid var(--line); }
  #graph { display:block; }
  #graph g.n { cursor:pointer; }
  #graph g.n rect { fill:var(--panel); stroke:currentColor; stroke-width:1; }
  #graph g.n text { fill:currentColor; font-size:11px; }
  #graph g.n.crit rect { stroke:var(--crit); stroke-width:2.5; }
  #graph g.n.sel rect { fill:#222837; }
  #graph path.e { fill:none; stroke:#3a4150; stroke-width:1; }
  #graph path.ce { fill:none; stroke:var(--crit); stroke-width:2; }
  .view { height: calc(100vh - 38px); overflow:auto; padding:0 0 20px; }
  .bar { display:inline-block; width:60px; height:8px; background:var(--line); vertical-align:middle; margin-right:6px; }
  .bar i { display:block; height:8px; background:var(--run); }
  #diff .add { color:var(--ok); } #diff .del { color:var(--bad); } #diff .hunk { color:var(--run); }
  #attempts td.worktree, #attempts td.branch { max-width:190px; overflow:hidden; text-overflow:ellipsis; }
  .facts { display:flex; gap:14px; flex-wrap:wrap; margin:4px 0; }
</style>
</head>
<body>
<header><h1>ado</h1><nav><button data-view="runs" class="on">runs</button><button data-view="workers">workers</button><button data-view="queues">queues</button></nav><span id="conn">connecting…</span><label class="dim"><input type="checkbox" id="all"> finished runs too</label></header>
<main id="runsview">
  <section>
    <h2>Runs</h2>
    <table id="runs"><thead><tr><th>run</th><th>state</th><th>done</th><th>elapsed</th><th>cost</th></tr></thead><tbody></tbody></table>
    <h2>Waiting for a person</h2>
    <div id="hitl"><p class="dim" style="margin:0 12px">nothing</p></div>
  </section>
  <section>
    <div id="runhead"><span class="dim">choose a run</span></div>
    <div id="tabs"><button data-tab="table" class="on">tasks</button><button data-tab="graph">graph</button><span id="critical"></span></div>
    <div id="graphwrap" hidden><div id="graph-note" class="dim" style="margin:0 12px"></div><svg id="graph" xmlns="http://www.w3.org/2000/svg" width="0" height="0"><path class="e"></path><path class="ce"></path><g id="nodes"></g></svg></div>
    <div id="taskwrap"><table id="tasks"><thead><tr><th>task</th><th>state</th><th>try</th><th>worker</th><th>elapsed</th><th>needs</th><th>activity</th></tr></thead><tbody></tbody></table></div>
    <div id="task"></div>
  </section>
</main>
<section id="workersview" class="view" hidden>
  <h2>Workers</h2>
  <table id="workers"><thead><tr><th>worker</th><th>host</th><th>pool</th><th>state</th><th>slots</th><th>running</th><th>queued</th><th>load</th><th>heartbeat</th><th>labels</th><th>agents</th></tr></thead><tbody></tbody></table>
  <div id="pools"></div>
  <div id="workers-problems" class="dim"></div>
</section>
<section id="queuesview" class="view" hidden>
  <h2>Ready, by priority</h2>
  <table id="q-ready"><thead><tr><th>priority</th><th>in the ready stream</th><th>held by a balancer</th></tr></thead><tbody></tbody></table>
  <h2>Per worker</h2>
  <table id="q-workers"><thead><tr><th>worker</th><th>state</th><th>running / slots</th><th>queued on it</th></tr></thead><tbody></tbody></table>
  <h2>Held, by placement</h2>
  <table id="q-placements"><thead><tr><th>agent</th><th>labels</th><th>requires</th><th>pinned to</th><th>tasks</th></tr></thead><tbody></tbody></table>
  <h2>Per provider</h2>
  <table id="q-providers"><thead><tr><th>provider</th><th>circuit</th><th>running</th><th>concurrent</th><th>per minute</th><th>until</th></tr></thead><tbody></tbody></table>
  <h2>Held, no worker may take them</h2>
  <div id="q-unplaceable" class="dim" style="margin:0 12px"></div>
  <div id="queues-problems" class="dim" style="margin:6px 12px"></div>
</section>
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
const unshown = [];        // state changes received and not drawn yet
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
  // The critical path is named in either tab (drawn in the graph once it is laid out).
  if (graphShown) drawGraph(); else if (critDirty) paintCritical();
  renderRunHead();
  renderTaskState();
  // When the redraw that shows them ended (\`at\`: when their message arrived).
  if (unshown.length) { const t = Date.now(); for (const x of unshown) x.shown = t; unshown.length = 0; }
  stats.applyMs.push(performance.now() - t0);
}
const schedule = () => { if (!frame) frame = requestAnimationFrame(draw); };

function apply(msg) {
  if (msg.type === "state") { tasks.clear(); order.length = 0; stats.states++; stats.firstState = stats.firstState || Date.now(); }
  else stats.deltas++;
  if (msg.type === "state") layoutDirty = true;
  const crit = msg.run.critical ? msg.run.critical.ids.join(" ") : "";
  if (!run || crit !== (run.critical ? run.critical.ids.join(" ") : "")) critDirty = true;
  run = msg.run;
  stats.malformed = run.malformed; stats.lastSeq = run.seq;
  const now = Date.now();
  for (const t of msg.tasks) {
    const before = tasks.get(t.id);
    if (!before || before.status !== t.status) { const seen = { id: t.id, status: t.status, at: now, shown: 0 }; stats.seen.push(seen); unshown.push(seen); }
    if (!before) order.push(t.id);
    if (!before || before.depth !== t.depth) layoutDirty = true;
    tasks.set(t.id, t); dirty = true; restyle.add(t.id);
  }
  schedule();
}

// ---- the graph view: layers left to right (a layer taller than MAX_ROWS wraps into more columns) ----
const NODE_W = 132, NODE_H = 20, GAP_X = 46, GAP_Y = 6, MAX_ROWS = 40, GRAPH_MAX = 2000, SVGNS = "http://www.w3.org/2000/svg";
let layoutDirty = false, critDirty = false, graphShown = false;
const restyle = new Set();   // task ids whose node needs its class set again
const nodes = new Map();     // id -> { g, x, y }
function nodeClass(t) {
  const st = t.paused && t.status === "running" ? "paused" : t.status;
  const crit = run && run.critical && critSet.has(t.id);
  return "n s-" + st + (crit ? " crit" : "") + (t.id === taskId ? " sel" : "");
}
let critSet = new Set();
function layoutGraph() {
  const t0 = performance.now();
  const layers = [];
  for (const id of order) { const d = tasks.get(id).depth || 0; (layers[d] = layers[d] || []).push(id); }
  // Past GRAPH_MAX nodes a graph is no longer read, and laying it out costs seconds: the
  // shallowest GRAPH_MAX are drawn (the table has every task), and the page says so.
  let room = GRAPH_MAX;
  for (let d = 0; d < layers.length; d++) { if (!layers[d]) continue; if (room <= 0) layers[d] = null; else if (layers[d].length > room) layers[d] = layers[d].slice(0, room); if (layers[d]) room -= layers[d].length; }
  $("#graph-note").textContent = order.length > GRAPH_MAX ? GRAPH_MAX + " of " + order.length + " tasks drawn (the shallowest layers); the tasks tab lists them all" : "";
  const g = $("#nodes"); g.textContent = ""; nodes.clear();
  let x = 8, height = 0;
  for (const layer of layers) {
    if (!layer) continue;
    const cols = Math.ceil(layer.length / MAX_ROWS);
    layer.forEach((id, i) => {
      const nx = x + Math.floor(i / MAX_ROWS) * (NODE_W + 12), ny = 8 + (i % MAX_ROWS) * (NODE_H + GAP_Y);
      const el = document.createElementNS(SVGNS, "g");
      el.setAttribute("transform", "translate(" + nx + "," + ny + ")");
      el.dataset.task = id;
      const r = document.createElementNS(SVGNS, "rect"); r.setAttribute("width", NODE_W); r.setAttribute("height", NODE_H); r.setAttribute("rx", 3);
      const tx = document.createElementNS(SVGNS, "text"); tx.setAttribute("x", 6); tx.setAttribute("y", 14); tx.textContent = id.length > 19 ? id.slice(0, 18) + "…" : id;
      const title = document.createElementNS(SVGNS, "title"); title.textContent = id;
      el.append(r, tx, title); g.appendChild(el);
      nodes.set(id, { g: el, x: nx, y: ny });
      height = Math.max(height, ny + NODE_H + 8);
    });
    x += cols * (NODE_W + 12) - 12 + GAP_X;
  }
  const svg = $("#graph"); svg.setAttribute("width", x); svg.setAttribute("height", height);
  let d = "";
  for (const id of order) { const n = nodes.get(id); for (const need of tasks.get(id).needs || []) { const m = nodes.get(need); if (m) d += edge(m, n); } }
  svg.querySelector("path.e").setAttribute("d", d);
  layoutDirty = false; critDirty = true;
  for (const id of order) restyle.add(id);
  stats.layoutMs = performance.now() - t0;
}
function edge(from, to) {
  const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2, x2 = to.x, y2 = to.y + NODE_H / 2, mx = (x1 + x2) / 2;
  return "M" + x1 + " " + y1 + "C" + mx + " " + y1 + " " + mx + " " + y2 + " " + x2 + " " + y2;
}
function paintCritical() {
  const ids = run && run.critical ? run.critical.ids : [];
  const before = critSet; critSet = new Set(ids);
  for (const id of before) if (!critSet.has(id)) restyle.add(id);
  for (const id of critSet) restyle.add(id);
  let d = "";
  for (let i = 1; i < ids.length; i++) { const a = nodes.get(ids[i - 1]), b = nodes.get(ids[i]); if (a && b) d += edge(a, b); }
  $("#graph path.ce").setAttribute("d", d);
  const c = run && run.critical;
  const text = c && c.ids.length ? 'critical path: <b>' + c.ids.map(esc).join(" → ") + '</b> ' + ago(new Date(0).toISOString(), new Date(c.ms).toISOString()) + (c.estimated ? " (" + c.estimated + " estimated)" : "") : "";
  if ($("#critical").innerHTML !== text) $("#critical").innerHTML = text;
  critDirty = false;
}
function drawGraph() {
  if (layoutDirty) layoutGraph();
  if (critDirty) paintCritical();
  for (const id of restyle) { const n = nodes.get(id), t = tasks.get(id); if (n && t) { const c = nodeClass(t); if (n.g.getAttribute("class") !== c) { n.g.setAttribute("class", c); n.g.dataset.state = t.paused && t.status === "running" ? "paused" : t.status; } } }
  restyle.clear();
}
function showTab(tab) {
  graphShown = tab === "graph";
  $("#graphwrap").hidden = !graphShown; $("#taskwrap").hidden = graphShown;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === tab);
  dirty = true; schedule();
}
$("#tabs").addEventListener("click", (ev) => { const b = ev.target.closest("button[data-tab]"); if (b) showTab(b.dataset.tab); });
$("#graph").addEventListener("click", (ev) => { const g = ev.target.closest("g[data-task]"); if (g) openTask(g.dataset.task); });

function openRun(id) {
  if (runFeed) runFeed.close();
  closeTask();
  runId = id; run = null; headHtml = ""; $("#runhead").innerHTML = ""; tasks.clear(); order.length = 0;
  layoutDirty = true; critSet = new Set(); restyle.clear(); $("#critical").textContent = ""; schedule();
  if (!id) return;
  runFeed = new EventSource("/api/runs/" + encodeURIComponent(id) + "/feed");
  runFeed.onmessage = (ev) => { try { apply(JSON.parse(ev.data)); } catch { stats.errors++; } };
  runFeed.onerror = () => { $("#conn").textContent = "reconnecting…"; };
  runFeed.onopen = () => { $("#conn").textContent = "live"; };
  loadRuns();
}

function closeTask() { if (taskFeed) taskFeed.close(); if (taskId) restyle.add(taskId); taskFeed = null; taskId = null; taskHtml = ""; $("#task").innerHTML = ""; }
// The task view: its live state (from the run's feed), its attempts, output and agent
// activity (its own feed, from its first event), and its diff against its base.
let taskHtml = "", attempts = new Map(), diffTimer = 0;
const usd = (n) => n ? "$" + (n < 0.01 ? n.toFixed(4) : n.toFixed(2)) : "";
function renderTaskState() {
  if (!taskId) return;
  const t = tasks.get(taskId); if (!t) return;
  const st = t.paused && t.status === "running" ? "paused" : t.status;
  const html = '<span id="task-status" class="s-' + esc(st) + '">' + esc(st) + '</span><span>attempt ' + (t.attempts || 0) + '</span><span>' + esc(t.workerId || "") + '</span><span id="task-elapsed">' + ago(t.startedAt, t.finishedAt) + '</span><span id="task-cost">' + usd(t.costUsd) + '</span>' + (t.needs && t.needs.length ? '<span class="dim">needs ' + t.needs.map(esc).join(", ") + '</span>' : "") + (t.waiting || t.error ? '<span class="dim">' + esc(t.waiting || t.error) + '</span>' : "");
  if (html !== taskHtml) { const el = $("#task-facts"); if (el) { el.innerHTML = html; taskHtml = html; } }
}
function renderAttempts() {
  const rows = [...attempts.values()].sort((a, b) => a.attempt - b.attempt).map((a) =>
    '<tr data-attempt="' + a.attempt + '"><td>' + a.attempt + '</td><td class="s-' + esc(a.status) + '">' + esc(a.status) + '</td><td>' + esc(a.workerId || "") + '</td><td>' + esc(a.agent || "") + '</td><td class="branch">' + esc(a.branch || "") + '</td><td class="worktree" title="' + esc(a.worktree || "") + '">' + esc(a.worktree || "") + '</td><td>' + ago(a.startedAt, a.finishedAt) + '</td><td>' + usd(a.costUsd) + (a.tokens ? ' <span class="dim">' + a.tokens + ' tok</span>' : "") + '</td><td>' + esc(a.commit ? a.commit.slice(0, 10) + (a.files !== undefined ? " (" + a.files + " files)" : "") : "") + '</td><td class="act">' + esc(a.error || "") + '</td></tr>').join("");
  $("#attempts tbody").innerHTML = rows || '<tr><td colspan="10" class="dim">not started</td></tr>';
}
async function loadDiff() {
  const id = taskId, box = $("#diff"); if (!id || !box) return;
  try {
    const d = await api("/api/runs/" + encodeURIComponent(runId) + "/tasks/" + encodeURIComponent(id) + "/diff");
    if (id !== taskId) return;
    $("#diff-files").innerHTML = '<span class="dim">' + esc(d.base.slice(0, 10)) + ' → ' + esc(d.head === "worktree" ? "its worktree now" : d.head.slice(0, 10)) + ':</span> ' +
      (d.files.map((f) => esc(f.path) + ' <span class="add">+' + (f.added ?? "bin") + '</span> <span class="del">-' + (f.deleted ?? "bin") + '</span>').join(", ") || "no changes") +
      (d.untracked.length ? ' <span class="dim">new, not added yet: ' + d.untracked.map(esc).join(", ") + '</span>' : "") + (d.truncated ? ' <span class="s-needs_attention">(cut: the diff is larger than the page is sent)</span>' : "");
    box.innerHTML = d.patch.split("\\n").map((l) => { const c = l.startsWith("@@") ? "hunk" : l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : ""; return c ? '<span class="' + c + '">' + esc(l) + '</span>' : esc(l); }).join("\\n");
  } catch (err) { if (id === taskId) { $("#diff-files").textContent = err.message; box.textContent = ""; } }
}
function openTask(id) {
  closeTask();
  taskId = id; attempts = new Map();
  restyle.add(id); dirty = true;
  schedule();
  $("#task").innerHTML = '<h2>task ' + esc(id) + ' <button data-task-action="pause">pause</button> <button data-task-action="resume">resume</button> <button data-task-action="cancel">cancel</button> <button id="task-close" title="close the task view">×</button></h2>' +
    '<div class="facts" id="task-facts"></div>' +
    '<table id="attempts"><thead><tr><th>try</th><th>state</th><th>worker</th><th>agent</th><th>branch</th><th>worktree</th><th>took</th><th>cost</th><th>commit</th><th>error</th></tr></thead><tbody></tbody></table>' +
    '<div class="dim">output (tail)</div><pre id="output"></pre><div class="dim">agent activity</div><pre id="activity"></pre>' +
    '<div class="dim">diff against its base <button id="diff-load">refresh</button></div><div id="diff-files" class="dim"></div><pre id="diff"></pre>';
  renderTaskState(); renderAttempts();
  let attempt = 0;
  taskFeed = new EventSource("/api/runs/" + encodeURIComponent(runId) + "/tasks/" + encodeURIComponent(id) + "/feed");
  taskFeed.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch { stats.errors++; return; }
    // A new stream (the browser reconnected): it starts from the task's first event again.
    if (m.type === "start") { $("#output").textContent = ""; $("#activity").textContent = ""; attempts = new Map(); attempt = 0; renderAttempts(); return; }
    if (m.type === "attempt") {
      const before = attempts.get(m.attempt.attempt);
      attempts.set(m.attempt.attempt, m.attempt); renderAttempts();
      // Its work changed hands (a commit, an end): the diff is read again, once things settle.
      if (!before || before.status !== m.attempt.status || before.commit !== m.attempt.commit) { clearTimeout(diffTimer); diffTimer = setTimeout(loadDiff, 300); }
      return;
    }
    const out = m.type === "output" ? $("#output") : $("#activity");
    if (m.type === "output" && m.attempt !== attempt) { if (attempt) out.textContent += "\\n── attempt " + m.attempt + " ──\\n"; attempt = m.attempt; }
    out.textContent += m.type === "output" ? m.data : m.line + "\\n";
    if (out.textContent.length > 200000) out.textContent = out.textContent.slice(-150000);
    out.scrollTop = out.scrollHeight;
  };
}
$("#task").addEventListener("click", (ev) => { if (ev.target.id === "diff-load") loadDiff(); if (ev.target.id === "task-close") { closeTask(); dirty = true; schedule(); } });
$("#task").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-task-action]"); if (!b) return;
  try { await api("/api/runs/" + runId + "/control", { action: b.dataset.taskAction, taskId }); } catch (err) { alert(err.message); }
});

// ---- workers and queues: polled while shown (their sources are KV and stream state, not events) ----
let view = "runs";
const bar = (f) => '<span class="bar"><i style="width:' + Math.round(Math.min(1, f) * 100) + '%"></i></span>' + Math.round(f * 100) + "%";
const cell = (v) => "<td>" + esc(v) + "</td>";
async function loadWorkers() {
  try {
    const d = await api("/api/workers");
    $("#workers tbody").innerHTML = d.workers.map((w) => '<tr data-worker="' + esc(w.id) + '" data-state="' + esc(w.state) + '">' + cell(w.id) + cell(w.host) + cell(w.pool || "-") + '<td class="s-' + (w.state === "ready" ? "succeeded" : w.state === "silent" ? "failed" : "queued") + '">' + esc(w.state) + '</td>' + cell(w.slots) + cell(w.running) + cell(w.queued) + '<td>' + (w.slots ? bar(w.running / w.slots) : "") + '</td>' + cell(w.heartbeatAgeS.toFixed(1) + "s ago") + cell(w.labels.join(", ") || "-") + cell(w.agents.join(", ") || "-") + '</tr>').join("") || '<tr><td colspan="11" class="dim">no workers</td></tr>';
    $("#pools").innerHTML = d.pools.map((p) => '<p style="margin:4px 12px">pool <b>' + esc(p.pool) + '</b> (' + esc(p.backend) + '): ' + esc(p.reason || "no decision yet") + (p.policy ? ' <span class="dim">' + esc(JSON.stringify(p.policy)) + '</span>' : "") + '</p>').join("");
    $("#workers-problems").textContent = d.problems.join("; ");
    stats.workersLoaded = (stats.workersLoaded || 0) + 1;
  } catch (err) { $("#workers-problems").textContent = err.message; }
}
async function loadQueues() {
  try {
    const d = await api("/api/queues");
    $("#q-ready tbody").innerHTML = d.ready.map((r) => '<tr data-priority="' + esc(r.priority) + '">' + cell(r.priority) + cell(r.waiting) + cell(r.held) + '</tr>').join("");
    $("#q-workers tbody").innerHTML = d.workers.map((w) => '<tr data-worker="' + esc(w.id) + '">' + cell(w.id) + cell(w.state) + '<td>' + w.running + " / " + w.slots + " " + (w.slots ? bar(w.running / w.slots) : "") + '</td>' + cell(w.queued) + '</tr>').join("") || '<tr><td colspan="4" class="dim">no workers</td></tr>';
    $("#q-placements tbody").innerHTML = d.placements.map((p) => '<tr>' + cell(p.agent) + cell(p.labels.join(", ") || "-") + cell(p.requires.join(", ") || "-") + cell(p.worker || "-") + cell(p.count) + '</tr>').join("") || '<tr><td colspan="5" class="dim">nothing held</td></tr>';
    $("#q-providers tbody").innerHTML = d.providers.map((p) => '<tr data-provider="' + esc(p.name) + '">' + cell(p.name) + '<td class="s-' + (p.circuit === "closed" ? "succeeded" : p.circuit === "open" ? "failed" : "queued") + '">' + esc(p.circuit) + '</td>' + cell(p.running) + cell(p.concurrent ?? "") + cell(p.perMinute ?? "") + cell(p.until || "") + '</tr>').join("") || '<tr><td colspan="6" class="dim">' + (d.balancers ? "no providers configured" : "no balancer answered") + '</td></tr>';
    $("#q-unplaceable").innerHTML = d.unplaceable.map((u) => esc(u.attempt) + ": " + esc(u.reason)).join("<br>") || "none";
    $("#queues-problems").textContent = (d.balancers ? d.balancers + " balancer(s) answered. " : "") + d.problems.join("; ");
    stats.queuesLoaded = (stats.queuesLoaded || 0) + 1;
  } catch (err) { $("#queues-problems").textContent = err.message; }
}
function showView(v) {
  view = v;
  $("#runsview").hidden = v !== "runs"; $("#workersview").hidden = v !== "workers"; $("#queuesview").hidden = v !== "queues";
  $("#runsview").style.display = v === "runs" ? "" : "none";
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("on", b.dataset.view === v);
  if (v === "workers") loadWorkers();
  if (v === "queues") loadQueues();
}
$("nav").addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-view]"); if (!b) return;
  location.hash = b.dataset.view === "runs" ? (runId ? "run=" + runId : "") : "view=" + b.dataset.view;
});
setInterval(() => { if (view === "workers") loadWorkers(); if (view === "queues") loadQueues(); }, 2000);

const fromHash = () => {
  const h = location.hash;
  const v = /view=(workers|queues)/.exec(h);
  showView(v ? v[1] : "runs");
  const m = /run=([^&]+)/.exec(h);
  const id = m ? decodeURIComponent(m[1]) : null;
  if (id !== runId || (!id && !runFeed)) { if (id || !v) openRun(id); }
  if (/tab=graph/.test(h)) showTab("graph");
  const t = /task=([^&]+)/.exec(h);
  if (t && decodeURIComponent(t[1]) !== taskId) openTask(decodeURIComponent(t[1]));
};
window.addEventListener("hashchange", fromHash);
fromHash();
loadRuns(); loadHitl();
setInterval(loadRuns, 2000);
setInterval(loadHitl, 1000);
setInterval(() => { if (run && (run.status === "running" || run.status === "needs_attention")) { renderRunHead(); renderTaskState(); } }, 1000);
</script>
</body>
</html>
`;
