import type { AdoClient, RunStatusView, TaskStatusView } from "../runtime/client.js";
import { decode, unpackRaw } from "../runtime/codec.js";
import { SCHEMAS, type AdoEventType } from "../runtime/messages.js";
import { controlKey, runTaskControlKeys, taskKey } from "../runtime/names.js";
import { currentEntries } from "../runtime/kv-watch.js";
import { lastEventPerSubject } from "../runtime/run-load.js";
import { openBuckets } from "../runtime/topology.js";

/**
 * Why a task of `ado status` is not moving: it waits for its dependencies, for a worker
 * that can take it (the balancer's `task.waiting` event), for a person, or it is paused.
 * `taskReason` decides from facts (pure); `readReasonFacts` gathers them.
 */

/** What is known about one task besides its status view. */
export interface ReasonFacts {
  /** The latest `task.waiting` of the task: why no worker takes it. */
  waiting?: { attempt: number; reason: string };
  /** A pause request (`ado pause`) for the task or its whole run. */
  paused: boolean;
}

/** The reason shown beside a task, or undefined when it is not waiting for anything. */
export function taskReason(t: TaskStatusView, view: RunStatusView, facts: ReasonFacts): string | undefined {
  const live = view.run.status === "running" || view.run.status === "needs_attention";
  if (!live) return undefined;
  if (t.status === "needs_attention") return `needs a person: ado hitl show ${taskKey(view.run.runId, t.id)}`;
  if (t.status === "running") return facts.paused ? "paused" : undefined;
  if (t.status !== "queued" && t.status !== "pending") return undefined;
  if (facts.paused) return "paused";
  if (t.status === "pending") {
    const status = new Map(view.tasks.map((x) => [x.id, x.status]));
    const open = t.needs.filter((d) => status.get(d) !== "succeeded");
    if (open.length) return `waiting for ${open.join(", ")}`;
    const held = stageHold(t, view);
    if (held) return held;
  }
  // A waiting event of an earlier attempt says nothing about this one.
  if (facts.waiting && facts.waiting.attempt >= Math.max(1, t.attempts)) return facts.waiting.reason;
  return undefined;
}

/** Per status view: each task's stage, and each stage's tasks running or queued (worked out once per view). */
const stageFacts = new WeakMap<RunStatusView, { stageOf: Map<string, string | undefined>; inFlight: Map<string, number> }>();

/** `waiting for its stage plan (maxParallel 1, 1 in flight)` for a ready task its stage's limit holds back; else undefined. */
function stageHold(t: TaskStatusView, view: RunStatusView): string | undefined {
  const stages = view.run.graph.stages;
  if (!stages) return undefined;
  let facts = stageFacts.get(view);
  if (!facts) {
    const stageOf = new Map(view.run.graph.tasks.map((d) => [d.id, d.stage]));
    const inFlight = new Map<string, number>();
    for (const x of view.tasks) {
      const st = stageOf.get(x.id);
      if (st !== undefined && (x.status === "running" || x.status === "queued")) inFlight.set(st, (inFlight.get(st) ?? 0) + 1);
    }
    stageFacts.set(view, (facts = { stageOf, inFlight }));
  }
  const name = facts.stageOf.get(t.id);
  const limit = name === undefined ? undefined : stages[name]?.maxParallel;
  if (limit === undefined) return undefined;
  const n = facts.inFlight.get(name!) ?? 0;
  return n >= limit ? `waiting for its stage ${name} (maxParallel ${limit}, ${n} in flight)` : undefined;
}

/**
 * Reads what taskReason needs for every task of a run: the pause requests, and each
 * queued task's latest waiting event. In bulk, whatever the number of tasks: the run's
 * pause key, a listing of its tasks' control keys (`<run>.>`) with a get of each (a
 * run has few), and the latest `task.waiting` of every task of the run from one
 * ordered consumer (run-load.ts lastEventPerSubject); when that read fails or does not
 * end within its bound, each queued task's is read by a message get, as before.
 */
export async function readReasonFacts(client: AdoClient, view: RunStatusView): Promise<Map<string, ReasonFacts>> {
  const runId = view.run.runId;
  const open = (t: TaskStatusView) => t.status === "running" || t.status === "queued";
  const { control } = await openBuckets(client.nc, client.topo);
  const pauses = (e: { operation: string; value: Uint8Array } | null | undefined) => {
    if (e?.operation !== "PUT") return false;
    try {
      return decode(SCHEMAS.ControlRequest, e.value).action === "pause";
    } catch {
      return false;
    }
  };
  const pausedKey = (key: string) => control.get(key).then(pauses, () => false);
  const waitingSubject = (taskId: string) => client.topo.subjects.event({ type: "task.waiting" as AdoEventType, runId, taskId });
  const [runPaused, pausedKeys, waiting] = await Promise.all([
    view.run.paused || pausedKey(controlKey(runId)),
    // The keys of the run's tasks that say pause (undefined: the listing failed). A paused run's tasks are all paused.
    view.run.paused || !view.tasks.some(open)
      ? new Set<string>()
      : currentEntries(control, runTaskControlKeys(runId)).then(
          (entries) => new Set(entries.filter(pauses).map((e) => e.key)),
          () => undefined,
        ),
    // `task.waiting` is the balancer's (it may be newer than this client's event union): every task's latest, `<p>.evt.<run>.task.*.waiting`.
    view.tasks.some((t) => t.status === "queued") ? lastEventPerSubject(client.js, client.topo, waitingSubject("*")) : new Map<string, { data: Uint8Array }>(),
  ]);
  // The fallbacks, per task as before: a get of its pause key, a message get of its last waiting event.
  const paused = async (key: string) => (pausedKeys ? pausedKeys.has(key) : await pausedKey(key));
  const lastWaiting = async (taskId: string): Promise<Uint8Array | undefined> => {
    const subject = waitingSubject(taskId);
    if (waiting) return waiting.get(subject)?.data;
    const jsm = await client.js.jetstreamManager(false);
    return (await jsm.streams.getMessage(client.topo.streams.events.name, { last_by_subj: subject }).catch(() => null))?.data;
  };
  const out = new Map<string, ReasonFacts>();
  for (const t of view.tasks) {
    const facts: ReasonFacts = { paused: runPaused || (open(t) && (await paused(controlKey(runId, t.id)))) };
    if (t.status === "queued") {
      const data = await lastWaiting(t.id);
      // Read by shape: a balancer that publishes `task.waiting` may be newer than this client.
      const raw = data ? (safeUnpack(data) as { reason?: unknown; attempt?: unknown } | undefined) : undefined;
      if (raw && typeof raw.reason === "string") facts.waiting = { reason: raw.reason, attempt: typeof raw.attempt === "number" ? raw.attempt : 1 };
    }
    out.set(t.id, facts);
  }
  return out;
}

function safeUnpack(data: Uint8Array): unknown {
  try {
    return unpackRaw(data);
  } catch {
    return undefined;
  }
}
