/**
 * Balancer routing benchmark: the cost of the balancer's in-memory decisions, with no
 * server. The issue's aim: a routing decision under 1 ms at p99 with 1,000 workers.
 *
 *   npx tsx bench/routing.ts                  # full (~15 s)
 *   npx tsx bench/routing.ts --quick          # smoke (~3 s)
 *   npx tsx bench/routing.ts --json           # one JSON object on stdout
 *   npx tsx bench/routing.ts --workers 5000 --decisions 200000 --held 50000
 *   npx tsx bench/routing.ts --wait-quiet 60  # wait for other processes to go quiet first
 *
 * Measures:
 *   decisions   Router.choose() over N Candidates (a seeded mix of agents, labels,
 *               capabilities, access modes and loads), per strategy; tasks cycle through
 *               a mix of placements (any worker, labels, capabilities, affinity). Between
 *               decisions (untimed) the chosen worker gets busier and a random one frees a
 *               slot, so the load stays near its starting level.
 *   registry    WorkerRegistry.candidates(): the routing view rebuilt at each dispatch pass.
 *   queue       ReadyQueue add / remove / ordered / promote with H held entries.
 *   dispatch    One dispatch pass as Balancer.dispatch() does it (promote, candidates,
 *               dispatchPass(): walk the queue in order, choose, remove), for a queue that
 *               fits and for ones whose tasks fit no free worker (the pass then walks the
 *               whole queue, scanning the workers once per distinct placement), with one
 *               placement or 200, and with one task that fits at the very end.
 *   waiting     The balancer's task.waiting check over the held queue (once a second):
 *               the reason per placement, the announcement decision per task.
 *
 * Every figure is timed with performance.now() around each call, in microseconds;
 * `mean` is the total time / count. Figures are printed, never asserted.
 */
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { dispatchPass, type Route } from "../src/actors/balancer/dispatch-pass.js";
import { ReadyQueue, type ReadyEntry } from "../src/actors/balancer/ready-queue.js";
import { WorkerRegistry, type WorkerView } from "../src/actors/balancer/registry.js";
import { placementKey, Router, type Candidate, type Placement, type Strategy } from "../src/actors/balancer/strategy.js";
import { Unplaceable, WaitingTracker } from "../src/actors/balancer/waiting.js";
import type { Clock } from "../src/runtime/clock.js";
import { PRIORITIES, STRATEGIES, type Priority } from "../src/runtime/graph.js";
import { silentLogger } from "../src/runtime/logger.js";
import type { WorkerRecord } from "../src/runtime/messages.js";
import { topology } from "../src/runtime/topology.js";
import { CpuMeter, type CpuUse } from "./procstat.js";
import { r1, summarize, table, type Summary, prng } from "./stats.js";
import { runMain, waitQuietOn, flagValues, parseFlags, type Log } from "./harness.js";

// ---------------------------------------------------------------- options

interface Options {
  workers: number;
  decisions: number;
  held: number;
  /** Timed repetitions of each queue operation and dispatch pass. */
  reps: number;
  json: boolean;
  quick: boolean;
  waitQuietMs: number;
  seed: number;
}

const USAGE = `usage: tsx bench/routing.ts [--quick] [--json] [--workers N] [--decisions N] [--held N] [--reps N] [--seed N] [--wait-quiet SEC]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = {
    workers: 1_000,
    decisions: quick ? 10_000 : 100_000,
    held: 10_000,
    reps: quick ? 500 : 5_000,
    json: false,
    quick,
    waitQuietMs: 0,
    seed: 1,
  };
  const { int } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--workers": (v, f) => (o.workers = int(v, f, 1)),
    "--decisions": (v, f) => (o.decisions = int(v, f, 1)),
    "--held": (v, f) => (o.held = int(v, f, 1)),
    "--reps": (v, f) => (o.reps = int(v, f, 1)),
    "--seed": (v, f) => (o.seed = int(v, f)),
  });
  return o;
}

// ---------------------------------------------------------------- synthetic cluster


const REGIONS = ["eu", "us", "ap"];
const CAPS = ["python", "node20", "rust", "docker", "go", "java"];
const SLOT_SIZES = [1, 2, 4, 8];

function makeWorkers(n: number, rnd: () => number): Candidate[] {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  return Array.from({ length: n }, (_, i) => {
    const slots = pick(SLOT_SIZES);
    const mode = rnd();
    const accessMode = mode < 0.5 ? "subscription" : mode < 0.8 ? "api" : "local";
    return {
      id: `w-host${String(i % 50).padStart(2, "0")}-${i.toString(36).padStart(4, "0")}`,
      slots,
      // Uniform 0..slots: about a fifth of the workers start full.
      busy: Math.floor(rnd() * (slots + 1)),
      agents: ["shell", "noop", ...(rnd() < 0.6 ? ["claude"] : []), ...(rnd() < 0.3 ? ["codex"] : [])],
      labels: [pick(REGIONS), ...(rnd() < 0.2 ? ["gpu"] : []), ...(rnd() < 0.3 ? ["big"] : [])],
      capabilities: CAPS.filter(() => rnd() < 0.4),
      accessMode,
      costPerTask: accessMode === "api" ? Math.round((0.01 + rnd() * 0.5) * 100) / 100 : 0,
    };
  });
}

interface TaskShape {
  kind: string;
  agent: string;
  placement: Placement;
}

/** The placement mix tasks cycle through: mostly anywhere, some constrained, a few pinned. */
function makeTasks(n: number, workers: Candidate[], rnd: () => number): TaskShape[] {
  const none: string[] = [];
  return Array.from({ length: n }, () => {
    const r = rnd();
    if (r < 0.4) return { kind: "any", agent: "shell", placement: { labels: none, requires: none } };
    if (r < 0.6) return { kind: "region", agent: "claude", placement: { labels: [REGIONS[Math.floor(rnd() * 3)]!], requires: none } };
    if (r < 0.75) return { kind: "caps", agent: "shell", placement: { labels: none, requires: rnd() < 0.5 ? ["python"] : ["python", "docker"] } };
    if (r < 0.85) return { kind: "gpu", agent: "shell", placement: { labels: ["gpu"], requires: ["python"] } };
    if (r < 0.95) return { kind: "eu-big", agent: "codex", placement: { labels: ["eu", "big"], requires: none } };
    const w = workers[Math.floor(rnd() * workers.length)]!;
    return { kind: "affinity", agent: "shell", placement: { labels: none, requires: none, worker: w.id } };
  });
}

// ---------------------------------------------------------------- measurements

/** Microseconds, from performance.now() milliseconds. */
const US = 1000;

interface DecisionResult {
  strategy: Strategy;
  decisions: number;
  /** Decisions that found no eligible worker with a free slot. */
  none: number;
  us: Summary;
  /** Total time / decisions. */
  meanUs: number;
  totalMs: number;
}

function decisions(strategy: Strategy, workers: Candidate[], tasks: TaskShape[], n: number, seed: number): DecisionResult {
  // Each strategy starts from the same loads, and routes over objects built the way the
  // balancer builds them (registry.candidates()), so V8 sees the production object shape.
  const ws = makeRegistry(workers, { now: () => 1_700_000_000_000 }).candidates();
  const rnd = prng(seed);
  const router = new Router(Math.random);
  const times = new Float64Array(n);
  let none = 0;
  const step = (i: number, timed: boolean) => {
    const t = tasks[i % tasks.length]!;
    const t0 = performance.now();
    const pick = router.choose(strategy, ws, t.agent, t.placement);
    const dt = performance.now() - t0;
    if (timed) times[i] = dt * US;
    if (!pick) {
      if (timed) none++;
    } else pick.busy++;
    // Churn: some worker finishes a task, so load stays about level.
    const w = ws[Math.floor(rnd() * ws.length)]!;
    if (w.busy > 0) w.busy--;
  };
  // Untimed warm-up: JIT and inline caches settle before measuring.
  for (let i = 0; i < Math.min(20_000, n); i++) step(i, false);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) step(i, true);
  const totalMs = performance.now() - t0;
  const sum = times.reduce((a, b) => a + b, 0);
  return { strategy, decisions: n, none, us: summarize(Array.from(times)), meanUs: r3us(sum / n), totalMs: r1(totalMs) };
}

const r3us = (x: number) => Math.round(x * 1000) / 1000;

/** Times `op` `reps` times after a warm-up; `before`/`after` run untimed around each call. */
function timeOp(reps: number, op: (i: number) => void, around: { before?: (i: number) => void; after?: (i: number) => void } = {}): Summary {
  const times = new Float64Array(reps);
  const warm = Math.min(200, reps);
  for (let i = -warm; i < reps; i++) {
    around.before?.(i);
    const t0 = performance.now();
    op(i);
    const dt = performance.now() - t0;
    around.after?.(i);
    if (i >= 0) times[i] = dt * US;
  }
  return summarize(Array.from(times));
}

/** A registry view of the synthetic workers, as the KV watch would have filled it. */
function makeRegistry(workers: Candidate[], clock: Clock): WorkerRegistry {
  // candidates() reads only the in-memory map and the clock; the connection and bucket
  // are never touched unless start() is called, which this benchmark does not.
  const registry = new WorkerRegistry(undefined as unknown as NatsConnection, undefined as unknown as KV, topology("bench"), clock, 1_000, silentLogger, () => undefined);
  const at = new Date(clock.now()).toISOString();
  for (const w of workers) {
    const record: WorkerRecord = {
      workerId: w.id,
      host: "bench",
      pid: 1,
      slots: w.slots,
      running: w.busy,
      pending: 0,
      agents: [...w.agents],
      labels: [...w.labels],
      capabilities: [...w.capabilities],
      accessMode: w.accessMode,
      costPerTask: w.costPerTask,
      active: [],
      loadSeq: 0,
      startedAt: at,
      heartbeatAt: at,
      state: "running",
    };
    const view: WorkerView = { record, outstanding: new Map(), seenAt: clock.now(), loadSeq: 0 };
    registry.workers.set(w.id, view);
  }
  return registry;
}

interface Held {
  task: TaskShape;
}

/** A held task with its route, as the balancer keeps it. */
interface Routed extends Held {
  route: Route;
}

function heldEntries(n: number, tasks: TaskShape[], rnd: () => number, seq0 = 0): ReadyEntry<Held>[] {
  return Array.from({ length: n }, (_, i) => ({
    key: `r1.t${seq0 + i}.1`,
    priority: PRIORITIES[Math.floor(rnd() * PRIORITIES.length)] as Priority,
    rank: 1 + Math.floor(rnd() * 8),
    seq: seq0 + i + 1,
    notBefore: 0,
    item: { task: tasks[i % tasks.length]! },
  }));
}

interface QueueRow {
  op: string;
  us: Summary;
}

function queueOps(o: Options, tasks: TaskShape[]): { rows: QueueRow[]; fillMs: number } {
  const rnd = prng(o.seed + 7);
  const now = 1_700_000_000_000;
  const q = new ReadyQueue<Held>();
  const base = heldEntries(o.held, tasks, rnd);
  const t0 = performance.now();
  for (const e of base) q.add(e, now);
  const fillMs = performance.now() - t0;
  const extra = heldEntries(o.reps + 200, tasks, rnd, o.held);
  const rows: QueueRow[] = [];
  const reps = o.reps;
  const ext = (i: number) => extra[i + 200]!;

  rows.push({ op: `add (due) to ${o.held} held`, us: timeOp(reps, (i) => void q.add(ext(i), now), { after: (i) => void q.remove(ext(i).key) }) });
  let head: ReadyEntry<Held> | undefined;
  rows.push({
    op: `remove the head (a dispatch)`,
    us: timeOp(reps, () => void q.remove(head!.key), {
      before: () => {
        for (const e of q.ordered()) {
          head = e;
          break;
        }
      },
      after: () => void q.add(head!, now),
    }),
  });
  let victim: ReadyEntry<Held> | undefined;
  rows.push({
    op: `remove a random held entry`,
    us: timeOp(reps, () => void q.remove(victim!.key), {
      before: () => (victim = base[Math.floor(rnd() * base.length)]!),
      after: () => void q.add(victim!, now),
    }),
  });
  rows.push({
    op: `ordered(): first entry only`,
    us: timeOp(reps, () => {
      for (const e of q.ordered()) {
        head = e;
        break;
      }
    }),
  });
  let count = 0;
  rows.push({
    op: `ordered(): walk all ${o.held}`,
    us: timeOp(Math.max(1, Math.floor(reps / 10)), () => {
      for (const _ of q.ordered()) count++;
    }),
  });
  // Retries in backoff: the waiting map is scanned by promote() and nextDue() on every pass.
  const waiting = heldEntries(100, tasks, rnd, o.held + reps + 1_000).map((e) => ({ ...e, notBefore: now + 60_000 }));
  for (const e of waiting) q.add(e, now);
  rows.push({ op: `promote(now), 100 waiting, none due`, us: timeOp(reps, () => q.promote(now)) });
  rows.push({ op: `nextDue(), 100 waiting`, us: timeOp(reps, () => void q.nextDue()) });
  if (count < 0) console.log(count); // keeps the walk from being optimised away
  return { rows, fillMs: r1(fillMs) };
}

interface DispatchRow {
  scenario: string;
  held: number;
  freeSlots: number;
  dispatched: number;
  chooseCalls: number;
  us: Summary;
}

/**
 * One dispatch pass as Balancer.dispatch() (src/actors/balancer/balancer.ts) runs it,
 * without the publish: promote, rebuild candidates, then the same `dispatchPass()`
 * (walk the ready queue in order, choose a worker per entry, remove what was placed).
 * Routes are worked out before timing, as the balancer does when a task arrives. State
 * is restored untimed.
 */
function dispatchScenario(
  scenario: string,
  workers: Candidate[],
  entries: ReadyEntry<Held>[],
  freeSlots: number,
  strategy: Strategy,
  reps: number,
): DispatchRow {
  const clock: Clock = { now: () => 1_700_000_000_000 };
  // Fill every worker but `freeSlots` slots, spread one per worker over the first ones.
  const ws = workers.map((w, i) => ({ ...w, busy: i < freeSlots ? w.slots - 1 : w.slots }));
  const registry = makeRegistry(ws, clock);
  const router = new Router();
  const q = new ReadyQueue<Routed>();
  for (const e of entries) {
    const { agent, placement } = e.item.task;
    q.add({ ...e, item: { ...e.item, route: { agent, placement, strategy, placementKey: placementKey(agent, placement) } } }, clock.now());
  }
  let dispatched = 0;
  let calls = 0;
  let placed: ReadyEntry<Routed>[] = [];
  const pass = () => {
    q.promote(clock.now());
    const candidates = registry.candidates();
    const r = dispatchPass(
      q,
      candidates,
      router,
      (e) => e.item.route,
      (e) => void placed.push(e),
    );
    calls = r.chooseCalls;
    q.nextDue();
  };
  const us = timeOp(
    reps,
    () => pass(),
    {
      before: () => {
        placed = [];
      },
      after: (i) => {
        if (i === 0) dispatched = placed.length;
        // Put back what the pass placed; the registry view is rebuilt by the next pass.
        for (const e of placed) q.add(e, clock.now());
      },
    },
  );
  return { scenario, held: entries.length, freeSlots, dispatched, chooseCalls: calls, us };
}

// ---------------------------------------------------------------- quiet machine


/** CPU of other processes (% of one core): the machine's busy share minus this process. */
function otherCpu(meter: CpuMeter, use: CpuUse): number | undefined {
  if (use.machine === undefined || use.node === undefined) return undefined;
  return r1(Math.max(0, use.machine * meter.cores - use.node));
}

/** Waits (up to maxMs) for a quiet machine (see harness.ts), sampling this benchmark's meter. */
const waitQuiet = (meter: CpuMeter, maxMs: number, log: Log) => waitQuietOn(meter, (x, y) => otherCpu(meter, meter.use(x, y)), maxMs, log);

// ---------------------------------------------------------------- report

interface WaitingRow {
  scenario: string;
  held: number;
  /** Held tasks no live worker may take (announced as task.waiting). */
  unplaceable: number;
  us: Summary;
}

/**
 * One task.waiting check as Balancer.checkWaiting() does it: candidates() is already
 * there (the dispatch pass measures it); then, per held task, the reason of its placement
 * (worked out once per placement and check) and the tracker's decision. The tracker
 * lives across checks, as in the balancer; the clock moves a second per check, so past
 * the second check every unplaceable task is announced once (the publish is not timed).
 */
function waitingScenario(scenario: string, workers: Candidate[], entries: ReadyEntry<Held>[], reps: number): WaitingRow {
  const routed = entries.map((e) => ({ key: e.key, taskId: e.key, agent: e.item.task.agent, placement: e.item.task.placement, pk: placementKey(e.item.task.agent, e.item.task.placement) }));
  const tracker = new WaitingTracker();
  let unplaceable = 0;
  let now = 0;
  const us = timeOp(reps, () => {
    const why = new Unplaceable(workers);
    unplaceable = 0;
    now += 1_000;
    for (const r of routed) {
      const reason = why.explain(r.agent, r.placement, r.pk)?.(r.taskId);
      if (reason !== undefined) unplaceable++;
      tracker.observe(r.key, reason, now);
    }
    tracker.retain(() => true);
  });
  return { scenario, held: entries.length, unplaceable, us };
}

interface Report {
  bench: "ado-routing";
  at: string;
  host: { node: string; cpus: number; cpuModel?: string; backgroundCpu?: number };
  options: Omit<Options, "json">;
  cluster: { workers: number; slots: number; freeSlots: number; full: number; taskKinds: Record<string, number> };
  decisions: DecisionResult[];
  registry: Summary;
  queue: QueueRow[];
  queueFillMs: number;
  dispatch: DispatchRow[];
  /** The balancer's task.waiting check over the held queue (one per second), per scenario. */
  waiting: WaitingRow[];
  /** CPU during the measurements (% of one core). */
  cpu: { node?: number; other?: number };
  target: { p99Us: number; met: boolean };
  totalMs: number;
}

function render(rep: Report): string {
  const out: string[] = [];
  out.push(`ado routing benchmark  ${rep.at}  node ${rep.host.node}, ${rep.host.cpus} cpus${rep.host.cpuModel ? ` (${rep.host.cpuModel})` : ""}`);
  out.push(`other processes: ${rep.host.backgroundCpu ?? "?"}% of a core before, ${rep.cpu.other ?? "?"}% during; this process ${rep.cpu.node ?? "?"}%`);
  if ((rep.cpu.other ?? 0) > 20 || (rep.host.backgroundCpu ?? 0) > 20) out.push("WARNING: other processes used > 20% of a core: tail figures are skewed; rerun on a quiet machine.");
  const c = rep.cluster;
  out.push(
    `cluster: ${c.workers} workers, ${c.slots} slots (${c.freeSlots} free at start, ${c.full} workers full); task mix: ${Object.entries(c.taskKinds)
      .map(([k, v]) => `${k} ${v}%`)
      .join(", ")}`,
  );
  out.push("", `1. Router.choose(), one decision over ${c.workers} workers (µs; mean = total / count)`);
  out.push(
    table(
      ["strategy", "decisions", "no fit", "p50", "p90", "p99", "max", "mean", "total ms"],
      rep.decisions.map((d) => [d.strategy, d.decisions, d.none, d.us.p50, d.us.p90, d.us.p99, d.us.max, d.meanUs, d.totalMs]),
    ),
  );
  const r = rep.registry;
  out.push("", `2. WorkerRegistry.candidates(), ${c.workers} live workers (µs): p50 ${r.p50}, p90 ${r.p90}, p99 ${r.p99}, max ${r.max}, mean ${r.mean}`);
  out.push("", `3. ReadyQueue with ${rep.options.held} held entries (µs); filling it from empty took ${rep.queueFillMs} ms`);
  out.push(table(["operation", "n", "p50", "p90", "p99", "max", "mean"], rep.queue.map((q) => [q.op, q.us.n, q.us.p50, q.us.p90, q.us.p99, q.us.max, q.us.mean])));
  out.push("", `4. One balancer dispatch pass (promote + candidates() + ordered walk + choose + remove; least_loaded; µs)`);
  out.push(
    table(
      ["scenario", "held", "free slots", "placed", "choose calls", "n", "p50", "p99", "max", "mean"],
      rep.dispatch.map((d) => [d.scenario, d.held, d.freeSlots, d.dispatched, d.chooseCalls, d.us.n, d.us.p50, d.us.p99, d.us.max, d.us.mean]),
    ),
  );
  out.push("", `5. The task.waiting check (once a second): why each held task has no eligible worker, and whether to announce it (µs)`);
  out.push(table(["scenario", "held", "no eligible worker", "n", "p50", "p99", "max", "mean"], rep.waiting.map((w) => [w.scenario, w.held, w.unplaceable, w.us.n, w.us.p50, w.us.p99, w.us.max, w.us.mean])));
  const worst = rep.decisions.reduce((a, b) => (b.us.p99 > a.us.p99 ? b : a));
  out.push("", `Target (issue): routing decision p99 < ${rep.target.p99Us} µs with 1,000 workers -> worst strategy ${worst.strategy} p99 ${worst.us.p99} µs: ${rep.target.met ? "meets" : "MISSES"} target`);
  out.push(`total ${(rep.totalMs / 1000).toFixed(1)} s`);
  return out.join("\n");
}

// ---------------------------------------------------------------- main

function cpuModel(): string | undefined {
  try {
    return /model name\s*:\s*(.+)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim();
  } catch {
    return undefined;
  }
}

async function main(o: Options, log: Log): Promise<number> {
  const started = performance.now();
  const meter = new CpuMeter({ node: `/proc/${process.pid}/stat` });
  const backgroundCpu = await waitQuiet(meter, o.waitQuietMs, log);
  const cpu0 = meter.snapshot();

  const rnd = prng(o.seed);
  const workers = makeWorkers(o.workers, rnd);
  const tasks = makeTasks(1_024, workers, rnd);
  const kinds: Record<string, number> = {};
  for (const t of tasks) kinds[t.kind] = (kinds[t.kind] ?? 0) + 1;
  for (const k of Object.keys(kinds)) kinds[k] = Math.round((kinds[k]! / tasks.length) * 100);

  const results: DecisionResult[] = [];
  for (const s of STRATEGIES) {
    log(`${s}: ${o.decisions} decisions over ${o.workers} workers`);
    results.push(decisions(s, workers, tasks, o.decisions, o.seed + 1));
  }

  log(`registry.candidates() over ${o.workers} workers`);
  const clock: Clock = { now: () => 1_700_000_000_000 };
  const registry = makeRegistry(workers, clock);
  let sink = 0;
  const registryUs = timeOp(o.reps, () => void (sink += registry.candidates().length));

  log(`ready queue with ${o.held} held entries`);
  const q = queueOps(o, tasks);

  log(`dispatch passes`);
  const dispRnd = prng(o.seed + 11);
  const fitting = heldEntries(o.held, tasks.filter((t) => t.kind === "any"), dispRnd);
  // Tasks whose labels no worker has: they never fit, so every pass walks past them all.
  const stuckTask: TaskShape = { kind: "unplaceable", agent: "shell", placement: { labels: ["nowhere"], requires: [] } };
  const stuck = heldEntries(o.held, [stuckTask], dispRnd);
  // Tasks pinned (affinity) to 200 different workers, all of them full (only the first 10
  // workers have a free slot): 200 distinct placements that fit nowhere.
  const pinned = Array.from({ length: Math.min(200, Math.max(0, o.workers - 10)) }, (_, i): TaskShape => ({
    kind: "pinned-full",
    agent: "shell",
    placement: { labels: [], requires: [], worker: workers[10 + i]!.id },
  }));
  const stuckPinned = pinned.length ? heldEntries(o.held, pinned, dispRnd) : stuck;
  // One task that fits, last in priority order, behind every task that fits nowhere.
  const last: ReadyEntry<Held> = { ...heldEntries(1, [{ kind: "any", agent: "shell", placement: { labels: [], requires: [] } }], dispRnd, o.held)[0]!, priority: "background", rank: 1 };
  const passReps = Math.max(5, Math.floor(o.reps / 50));
  const dispatch = [
    dispatchScenario("fits, 10 free slots", workers, fitting, 10, "least_loaded", Math.max(50, Math.floor(o.reps / 10))),
    dispatchScenario("fits, 1000 free slots", workers, fitting, Math.min(1_000, o.workers), "least_loaded", passReps),
    dispatchScenario("fits no free worker", workers, stuck, 10, "least_loaded", passReps),
    dispatchScenario(`pinned to ${pinned.length} full workers`, workers, stuckPinned, 10, "least_loaded", passReps),
    dispatchScenario("1 fits, behind all that don't", workers, [...stuck, last], 10, "least_loaded", passReps),
  ];

  log(`task.waiting checks`);
  const waiting = [
    waitingScenario("fits", workers, fitting, passReps),
    waitingScenario("fits no worker (labels)", workers, stuck, passReps),
    waitingScenario(`pinned to ${pinned.length} workers`, workers, stuckPinned, passReps),
    waitingScenario("task mix", workers, heldEntries(o.held, tasks, dispRnd), passReps),
  ];

  const use = meter.use(cpu0, meter.snapshot());
  const freeSlots = workers.reduce((a, w) => a + Math.max(0, w.slots - w.busy), 0);
  const report: Report = {
    bench: "ado-routing",
    at: new Date().toISOString(),
    host: { node: process.version, cpus: meter.cores, cpuModel: cpuModel(), backgroundCpu },
    options: { workers: o.workers, decisions: o.decisions, held: o.held, reps: o.reps, quick: o.quick, waitQuietMs: o.waitQuietMs, seed: o.seed },
    cluster: {
      workers: workers.length,
      slots: workers.reduce((a, w) => a + w.slots, 0),
      freeSlots,
      full: workers.filter((w) => w.busy >= w.slots).length,
      taskKinds: kinds,
    },
    decisions: results,
    registry: registryUs,
    queue: q.rows,
    queueFillMs: q.fillMs,
    dispatch,
    waiting,
    cpu: { node: use.node, other: otherCpu(meter, use) },
    target: { p99Us: 1_000, met: results.every((d) => d.us.p99 < 1_000) },
    totalMs: Math.round(performance.now() - started),
  };
  if (sink < 0) console.log(sink);
  if (o.json) process.stdout.write(JSON.stringify(report) + "\n");
  else process.stdout.write(render(report) + "\n");
  return 0;
}

runMain("routing", parseArgs, main);
