import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ApiError, isNoResponders } from "./api.js";
import { decode, encode } from "./codec.js";
import { errorMessage } from "./errors.js";
import { currentEntries } from "./kv-watch.js";
import { SCHEMAS, type WorkerDrain, type WorkerRecord } from "./messages.js";
import { scalerKeys } from "./names.js";
import type { PolicyOverride, ScalerPoolState } from "./scaling.js";
import { livenessWindowMs, openBuckets, openJetStream, type Topology } from "./topology.js";

/**
 * The pool of workers as `ado workers list` and the dashboard's workers view show it:
 * the registry (KV `workers`), the scaler's state and policies (KV `scaler`: workers
 * started and not heartbeating yet) and the work stream (what waits for each worker).
 */

/** One row of `ado workers list`. */
export interface WorkerRow {
  id: string;
  host: string;
  pool: string;
  labels: string[];
  agents: string[];
  slots: number;
  running: number;
  queued: number;
  state: "warming" | "ready" | "draining" | "silent";
  /** Seconds since its last heartbeat (since its start, while warming). */
  heartbeatAgeS: number;
}

/**
 * The rows of `ado workers list`, from the registry (records heard from within three
 * heartbeats are `ready` or `draining`; older ones `silent`: the stealer will judge
 * them) and the scaler's state (workers started and not heartbeating yet: `warming`).
 */
export function workerRows(records: readonly WorkerRecord[], states: readonly ScalerPoolState[], now: number, heartbeatMs: number): WorkerRow[] {
  const rows: WorkerRow[] = records.map((r) => {
    const age = Math.max(0, now - Date.parse(r.heartbeatAt));
    return {
      id: r.workerId,
      host: r.host,
      pool: r.pool ?? "",
      labels: r.labels,
      agents: r.agents,
      slots: r.slots,
      running: r.running,
      queued: r.pending,
      state: age > livenessWindowMs(heartbeatMs) ? "silent" : r.state === "draining" ? "draining" : "ready",
      heartbeatAgeS: Math.round(age / 100) / 10,
    };
  });
  const known = new Set(rows.map((r) => r.id));
  for (const s of states) {
    for (const l of s.warming) {
      if (known.has(l.id)) continue;
      rows.push({ id: l.id, host: l.host ?? "", pool: s.pool, labels: [], agents: [], slots: 0, running: 0, queued: 0, state: "warming", heartbeatAgeS: Math.round((now - l.at) / 100) / 10 });
    }
  }
  return rows.sort((a, b) => a.pool.localeCompare(b.pool) || a.id.localeCompare(b.id));
}

/** What `readWorkers` found: the rows, the scaler's pools and live policies, and what it could not read. */
export interface WorkersView {
  rows: WorkerRow[];
  states: ScalerPoolState[];
  policies: PolicyOverride[];
  /** Records skipped as unreadable, or a source that did not answer (said, not thrown: the rest is still shown). */
  problems: string[];
}

/**
 * The worker registry's records and the scaler's pool states and live policies, as
 * stored; an unreadable entry is skipped and said in `problems` (the rest still counts).
 * One reading for `ado workers list`, the dashboard and the API.
 */
export async function readFleetRecords(workers: KV, scaler: KV): Promise<{ records: WorkerRecord[]; states: ScalerPoolState[]; policies: PolicyOverride[]; problems: string[] }> {
  const problems: string[] = [];
  const records: WorkerRecord[] = [];
  for (const e of await currentEntries(workers)) {
    try {
      records.push(decode(SCHEMAS.WorkerRecord, e.value));
    } catch (err) {
      problems.push(`worker record '${e.key}' is unreadable, skipped: ${errorMessage(err)}`);
    }
  }
  const states: ScalerPoolState[] = [];
  const policies: PolicyOverride[] = [];
  for (const e of await currentEntries(scaler)) {
    const k = scalerKeys.parse(e.key);
    try {
      if (k?.kind === "state") states.push(decode(SCHEMAS.ScalerState, e.value));
      else if (k?.kind === "policy") policies.push(decode(SCHEMAS.ScalerPolicy, e.value));
    } catch (err) {
      problems.push(`scaler record '${e.key}' is unreadable, skipped: ${errorMessage(err)}`);
    }
  }
  return { records, states, policies, problems };
}

/** Reads the workers' rows from the registry, the scaler's bucket and the work stream. */
export async function readWorkers(nc: NatsConnection, topo: Topology, heartbeatMs: number, now = Date.now()): Promise<WorkersView> {
  const kv = await openBuckets(nc, topo);
  const { records, states, policies, problems } = await readFleetRecords(kv.workers, kv.scaler);
  const rows = workerRows(records, states, now, heartbeatMs);
  // Queued as the work stream holds it (a worker's own count is as of its last fetch); messages of what runs are still there.
  try {
    const on = await workOnSubjects(nc, topo);
    for (const r of rows) if (r.state !== "warming") r.queued = Math.max(0, (on[topo.subjects.work(r.id)] ?? 0) - r.running);
  } catch (err) {
    problems.push(`queued work is as the workers last saw it (the work stream was not read: ${errorMessage(err)})`);
  }
  return { rows, states, policies, problems };
}

/** Messages on each worker's work subject (subject -> count), in one request. */
export async function workOnSubjects(nc: NatsConnection, topo: Topology): Promise<Record<string, number>> {
  const info = await (await openJetStream(nc)).streams.info(topo.streams.work.name, { subjects_filter: topo.subjects.work("*") });
  return info.state.subjects ?? {};
}

/** How long a worker gets to answer a drain (it answers at once, then drains). */
const DRAIN_TIMEOUT_MS = 5_000;

/**
 * Asks one worker to drain (stop taking work, finish or hand back what it runs, stop),
 * on its own subject. Throws ApiError: `not_found` when no worker of that id listens,
 * `unavailable` when it did not answer or refused. The API's `workers.drain` is this.
 */
export async function requestDrain(nc: NatsConnection, topo: Topology, workerId: string, req: Omit<WorkerDrain, "type">): Promise<{ workerId: string; state: string }> {
  const { data, headers } = encode(SCHEMAS.WorkerDrain, { type: "worker.drain", ...req });
  let reply;
  try {
    reply = await nc.request(topo.subjects.drain(workerId), data, { headers, timeout: DRAIN_TIMEOUT_MS });
  } catch (err) {
    if (isNoResponders(err)) throw new ApiError("not_found", `worker '${workerId}' did not answer (no worker of that id runs): is it running? \`ado workers list\` (workers.list) shows the workers`, { cause: err });
    throw new ApiError("unavailable", `worker '${workerId}' did not answer the drain (${errorMessage(err)}): is it running? \`ado workers list\` (workers.list) shows the workers`, { cause: err });
  }
  let answer: { ok?: unknown; state?: unknown; error?: unknown };
  try {
    answer = JSON.parse(new TextDecoder().decode(reply.data)) as typeof answer;
  } catch (err) {
    throw new ApiError("unavailable", `worker '${workerId}' answered the drain with something unreadable: ${errorMessage(err)}`, { cause: err });
  }
  if (answer.ok !== true) throw new ApiError("unavailable", `worker '${workerId}' refused the drain: ${String(answer.error ?? "no reason given")}`);
  return { workerId, state: typeof answer.state === "string" ? answer.state : "unknown" };
}
