import { backoffDelay, Backoff } from "../../runtime/retry.js";
import type { ScalePolicy, ScalerPoolState } from "../../runtime/scaling.js";

/**
 * The scaler's decisions, pure: from what it sees of a pool (its workers, the ready work
 * it could take), the pool's policy, the scaler's memory of earlier decisions and the
 * clock, how many workers to start and which to stop. The actor (scaler.ts) gathers the
 * observation, carries the decision out through the pool's backend, and stores the
 * memory in KV so that a successor goes on from it.
 */

/** One live worker of a pool, as its registry record and its work subject show it. */
export interface PoolWorker {
  id: string;
  state: "running" | "draining";
  slots: number;
  running: number;
  /** Work on its subject that it has not started. */
  queued: number;
  agents: readonly string[];
}

/** A worker process the backend saw end since the last decision. */
export interface WorkerExit {
  id: string;
  /** Asked to stop (scale-in, drain): not a crash. */
  requested: boolean;
  /** What happened, for the log and the reason. */
  detail: string;
}

export interface PoolObservation {
  /** Tasks each of its workers runs at once. */
  slots: number;
  /** Its live workers (records that name the pool, heard from within three heartbeats). */
  workers: readonly PoolWorker[];
  /** Ready tasks given to this pool (assignBacklog). */
  backlog: number;
  exits: readonly WorkerExit[];
}

/** What the scaler remembers of a pool between decisions (the KV record without its envelope). */
export type PoolMemory = Omit<ScalerPoolState, "pool" | "backend" | "term" | "updatedAt">;

export function emptyMemory(): PoolMemory {
  return { recommendations: [], idleSince: {}, warming: [], stopping: {}, seen: [], agents: [], warmups: [], failures: 0 };
}

/** A worker to stop: `idle` ones simply go; `drain` ones finish (or checkpoint and hand back) what they run first. */
export interface StopOrder {
  id: string;
  drain: boolean;
  why: "idle" | "over_max";
}

export interface ScaleDecision {
  memory: PoolMemory;
  /** Ids of workers to start now (already in `memory.warming`). */
  launch: string[];
  stop: StopOrder[];
  /** Launches given up on (never heartbeat within the warm-up timeout, or over max): the backend stops them if it can. */
  abandon: string[];
  /** Workers seen for the first time since they were started, with their warm-up time. */
  warmedUp: Array<{ id: string; ms: number }>;
  /** The size the pool is steered to (after stabilization and bounds). */
  desired: number;
  /** Why, in words: what the scaler saw and did. */
  reason: string;
}

export interface DecideInput {
  policy: ScalePolicy;
  observation: PoolObservation;
  memory: PoolMemory;
  now: number;
  /** A fresh worker id (the actor's; deterministic in tests). */
  newId: () => string;
  /** The scaler instance deciding (recorded with each launch). */
  instance: string;
}

/** Warm-up times kept, for the median the status shows. */
const WARMUPS_KEPT = 10;
/** Ids of workers gone that are remembered as already seen (live ones always are). */
const SEEN_KEPT = 2_000;
/** Failures are forgotten after this long without a new one past the backoff. */
const FAILURE_MEMORY_MS = 60_000;

/**
 * One decision for one pool. The steps, in order:
 *
 * 1. Exits the backend reported: a worker that ended without being asked crashed; each
 *    crash (and each launch that never heartbeat) pushes the next start back
 *    (Backoff.workerRestart), so a pool whose workers die at start does not spin.
 * 2. Warm-up: a launched worker's first record ends its warm-up (by id; a worker the
 *    backend could not name, as a Kubernetes pod, ends the oldest). Workers still
 *    warming count as capacity, so no more start while the first ones boot; one silent
 *    past `warmupTimeout` is given up on.
 * 3. The recommendation: `ceil((running + waiting) / (slots + targetQueue))` within
 *    [min, max], where waiting is the ready backlog plus work queued on its workers.
 *    The utilization band adds hysteresis: above `high` with work waiting the pool grows
 *    by one even before the queue target is passed; above `low` it never shrinks (its
 *    workers are busy), so it does not flap around a target.
 * 4. Stabilization (HPA): up follows the lowest recommendation of its window, down the
 *    highest of its own; then the cooldowns (down also waits its cooldown after an up).
 * 5. Scale-in takes only workers idle for `idleTimeout`, longest idle first, never a
 *    busy one; over `max` (a lowered policy) it abandons starting workers first, then
 *    stops idle ones, then drains the least busy. At most `maxStep` per decision, except
 *    to get back within [min, max].
 */
export function decidePool(input: DecideInput): ScaleDecision {
  const { policy, observation: obs, now } = input;
  const m: PoolMemory = structuredClone(input.memory);
  const notes: string[] = [];
  const abandon: string[] = [];
  const warmedUp: Array<{ id: string; ms: number }> = [];

  // 1. Exits.
  for (const e of obs.exits) {
    const wasLaunch = m.warming.some((l) => l.id === e.id);
    m.warming = m.warming.filter((l) => l.id !== e.id);
    delete m.stopping[e.id];
    delete m.idleSince[e.id];
    if (!e.requested) {
      fail(m, now);
      notes.push(`worker ${e.id} ${wasLaunch ? "failed to start" : "crashed"} (${e.detail}); the next start waits until ${Math.round((m.retryAt! - now) / 1000)} s from now`);
    }
  }
  if (m.failures > 0 && m.retryAt !== undefined && now > m.retryAt + FAILURE_MEMORY_MS) {
    m.failures = 0;
    m.retryAt = undefined;
  }

  // 2. Warm-up.
  const seen = new Set(m.seen);
  const live = new Set(obs.workers.map((w) => w.id));
  for (const w of obs.workers) {
    let launch = m.warming.find((l) => l.id === w.id);
    if (!launch && !seen.has(w.id)) launch = m.warming.find((l) => !live.has(l.id));
    if (launch) {
      m.warming = m.warming.filter((l) => l !== launch);
      warmedUp.push({ id: w.id, ms: now - launch.at });
      m.warmups = [...m.warmups, now - launch.at].slice(-WARMUPS_KEPT);
    }
    for (const a of w.agents) if (!m.agents.includes(a)) m.agents.push(a);
  }
  // Every live worker stays known (a pool may be larger than SEEN_KEPT), plus the last SEEN_KEPT gone ones.
  m.seen = [...m.seen.filter((id) => !live.has(id)).slice(-SEEN_KEPT), ...live];
  for (const l of [...m.warming]) {
    if (now - l.at < policy.warmupTimeout) continue;
    m.warming = m.warming.filter((x) => x !== l);
    abandon.push(l.id);
    fail(m, now);
    notes.push(`worker ${l.id} did not heartbeat within ${Math.round(policy.warmupTimeout / 1000)} s of its start: given up`);
  }

  // Workers asked to stop are no capacity; they are forgotten once gone.
  for (const id of Object.keys(m.stopping)) if (!live.has(id)) delete m.stopping[id];
  const active = obs.workers.filter((w) => w.state === "running" && m.stopping[w.id] === undefined);
  const activeIds = new Set(active.map((w) => w.id));
  for (const id of Object.keys(m.idleSince)) if (!activeIds.has(id)) delete m.idleSince[id];
  for (const w of active) {
    if (w.running === 0 && w.queued === 0) m.idleSince[w.id] ??= now;
    else delete m.idleSince[w.id];
  }

  // 3. The recommendation.
  const ready = active.length;
  const warming = m.warming.length;
  const capacity = ready + warming;
  const running = sum(active, (w) => w.running);
  const queued = sum(active, (w) => w.queued);
  const waiting = obs.backlog + queued;
  const readySlots = sum(active, (w) => w.slots);
  const util = readySlots > 0 ? running / readySlots : 0;
  let raw = Math.ceil((running + waiting) / (obs.slots + policy.targetQueue));
  if (ready > 0 && raw <= capacity && waiting > 0 && util > policy.utilization.high) {
    raw = capacity + 1; // hot, and work waits: one more, before the queue target is reached
  } else if (ready > 0 && raw < ready && util > policy.utilization.low) {
    raw = ready; // busy enough to keep what it has
  }
  raw = clamp(raw, policy.min, policy.max);
  m.recommendations = [...m.recommendations, { at: now, desired: raw }];
  const window = Math.max(policy.scaleUp.stabilization, policy.scaleDown.stabilization);
  m.recommendations = m.recommendations.filter((r) => r.at > now - window || r.at === now);

  // 4. Stabilization.
  const within = (ms: number) => m.recommendations.filter((r) => r.at > now - ms || r.at === now).map((r) => r.desired);
  const upTo = Math.min(...within(policy.scaleUp.stabilization));
  const downTo = Math.max(...within(policy.scaleDown.stabilization));
  const seenLine = `backlog ${obs.backlog}, queued ${queued}, running ${running} on ${ready} ready worker(s) (${Math.round(util * 100)}% busy), ${warming} starting`;

  const launch: string[] = [];
  const stop: StopOrder[] = [];
  const start = (n: number, why: string) => {
    if (n <= 0) return;
    if (m.retryAt !== undefined && now < m.retryAt) {
      notes.push(`would start ${n} (${why}) but waits for the crash backoff (${Math.round((m.retryAt - now) / 1000)} s more)`);
      return;
    }
    for (let i = 0; i < n; i++) {
      const id = input.newId();
      launch.push(id);
      m.warming.push({ id, at: now, by: input.instance });
    }
    m.lastUpAt = now;
    notes.push(`starting ${n}: ${why}`);
  };
  const idleFor = (w: PoolWorker) => (m.idleSince[w.id] === undefined ? -1 : now - m.idleSince[w.id]!);
  const byIdle = (a: PoolWorker, b: PoolWorker) => idleFor(b) - idleFor(a) || a.id.localeCompare(b.id);
  const halt = (w: PoolWorker, why: StopOrder["why"]) => {
    const drain = w.running > 0 || w.queued > 0;
    stop.push({ id: w.id, drain, why });
    m.stopping[w.id] = now;
    delete m.idleSince[w.id];
  };

  let desired = capacity;
  if (capacity > policy.max) {
    // Over max (the policy was lowered): back within it now, whatever the cooldowns.
    let over = capacity - policy.max;
    desired = policy.max;
    const newest = [...m.warming].sort((a, b) => b.at - a.at);
    for (const l of newest.slice(0, over)) {
      abandon.push(l.id);
      m.warming = m.warming.filter((x) => x !== l);
    }
    over -= Math.min(over, newest.length);
    const idle = active.filter((w) => w.running === 0 && w.queued === 0).sort(byIdle);
    const busy = active.filter((w) => w.running > 0 || w.queued > 0).sort((a, b) => a.running + a.queued - (b.running + b.queued) || a.id.localeCompare(b.id));
    for (const w of [...idle, ...busy].slice(0, over)) halt(w, "over_max");
    notes.push(`over max ${policy.max}: ${stop.length} stopping (${stop.filter((s) => s.drain).length} drained), ${abandon.length} starts given up`);
  } else if (capacity < policy.min) {
    desired = policy.min;
    start(Math.min(policy.min - capacity, policy.maxStep), `below min ${policy.min}`);
  } else if (upTo > capacity) {
    desired = upTo;
    const since = m.lastUpAt === undefined ? Infinity : now - m.lastUpAt;
    if (since < policy.scaleUp.cooldown) {
      notes.push(`wants ${upTo}, has ${capacity}; scale-up cooldown (${Math.round((policy.scaleUp.cooldown - since) / 1000)} s left)`);
    } else {
      const n = Math.min(upTo - capacity, policy.maxStep);
      start(n, `wants ${upTo} (max ${policy.max}), has ${capacity}${n < upTo - capacity ? `; at most ${policy.maxStep} per step` : ""}`);
    }
  } else if (downTo < capacity) {
    desired = downTo;
    const since = Math.min(m.lastDownAt === undefined ? Infinity : now - m.lastDownAt, m.lastUpAt === undefined ? Infinity : now - m.lastUpAt);
    const idle = active.filter((w) => idleFor(w) >= policy.idleTimeout).sort(byIdle);
    if (since < policy.scaleDown.cooldown) {
      notes.push(`wants ${downTo}, has ${capacity}; scale-down cooldown (${Math.round((policy.scaleDown.cooldown - since) / 1000)} s left)`);
    } else if (idle.length === 0) {
      notes.push(`wants ${downTo}, has ${capacity}; no worker idle for ${Math.round(policy.idleTimeout / 1000)} s yet`);
    } else {
      const n = Math.min(capacity - downTo, policy.maxStep, idle.length);
      for (const w of idle.slice(0, n)) halt(w, "idle");
      m.lastDownAt = now;
      notes.push(`stopping ${n} idle for ${Math.round(policy.idleTimeout / 1000)} s or more: wants ${downTo}, has ${capacity}`);
    }
  }

  const reason = `${seenLine}; ${notes.length ? notes.join("; ") : `steady at ${capacity}`}`;
  m.last = { at: now, desired, ready, warming: m.warming.length, backlog: obs.backlog, running, reason };
  return { memory: m, launch, stop, abandon, warmedUp, desired, reason };
}

function fail(m: PoolMemory, now: number): void {
  m.failures += 1;
  // No jitter (unit 0.5): the decision replays the same.
  m.retryAt = now + backoffDelay(m.failures, Backoff.workerRestart, 0.5);
}

const clamp = (n: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, n));
const sum = <T>(xs: readonly T[], f: (x: T) => number) => xs.reduce((s, x) => s + f(x), 0);

// ---- placement: which pool a ready task's backlog goes to -----------------------------

/** Ready tasks of one placement, as the balancers hold them. */
export interface BacklogEntry {
  /** Unknown for ready work no balancer holds yet (beyond its window, or no balancer runs). */
  agent?: string;
  labels: readonly string[];
  requires: readonly string[];
  /** Pinned to one worker: a new worker cannot take it. */
  worker?: string;
  count: number;
}

/** What a pool offers, for placing backlog. */
export interface PoolOffer {
  name: string;
  labels: readonly string[];
  capabilities: readonly string[];
  /** Agents its workers offer; undefined when not known yet (none started): it is assumed to offer any. */
  agents?: readonly string[];
  /** Whether it may still grow (below max). */
  room: boolean;
}

const hasAll = (have: readonly string[], want: readonly string[]) => want.every((x) => have.includes(x));

/** Whether a pool's workers could take tasks of this placement. */
export function serves(p: PoolOffer, e: BacklogEntry): boolean {
  if (!hasAll(p.labels, e.labels) || !hasAll(p.capabilities, e.requires)) return false;
  return e.agent === undefined || p.agents === undefined || p.agents.includes(e.agent);
}

/**
 * Gives each placement's backlog to one pool: the first (in config order) that serves
 * it and may still grow, else the first that serves it. So a backlog of `gpu` tasks
 * grows a pool whose workers carry `gpu`, and nothing else. Pinned tasks and tasks no
 * pool serves grow nothing (they are counted, for the status).
 */
export function assignBacklog(entries: readonly BacklogEntry[], pools: readonly PoolOffer[]): { perPool: Map<string, number>; pinned: number; unserved: number } {
  const perPool = new Map(pools.map((p) => [p.name, 0]));
  let pinned = 0;
  let unserved = 0;
  for (const e of entries) {
    if (e.count <= 0) continue;
    if (e.worker !== undefined) {
      pinned += e.count;
      continue;
    }
    const eligible = pools.filter((p) => serves(p, e));
    const pick = eligible.find((p) => p.room) ?? eligible[0];
    if (!pick) {
      unserved += e.count;
      continue;
    }
    perPool.set(pick.name, perPool.get(pick.name)! + e.count);
  }
  return { perPool, pinned, unserved };
}
