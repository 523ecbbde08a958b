import type { AdoClient, RunStatusView, TaskStatusView } from "../runtime/client.js";
import { decode, unpackRaw } from "../runtime/codec.js";
import { SCHEMAS, type AdoEventType } from "../runtime/messages.js";
import { controlKey, taskKey } from "../runtime/names.js";
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

/** Reads what taskReason needs for every task of a run: the pause requests, and each queued task's latest waiting event. */
export async function readReasonFacts(client: AdoClient, view: RunStatusView): Promise<Map<string, ReasonFacts>> {
  const { control } = await openBuckets(client.nc, client.topo);
  const pausedKey = async (key: string) => {
    const e = await control.get(key).catch(() => null);
    if (e?.operation !== "PUT") return false;
    try {
      return decode(SCHEMAS.ControlRequest, e.value).action === "pause";
    } catch {
      return false;
    }
  };
  const runPaused = view.run.paused || (await pausedKey(controlKey(view.run.runId)));
  const jsm = await client.js.jetstreamManager();
  const out = new Map<string, ReasonFacts>();
  for (const t of view.tasks) {
    const facts: ReasonFacts = { paused: runPaused || ((t.status === "running" || t.status === "queued") && (await pausedKey(controlKey(view.run.runId, t.id)))) };
    if (t.status === "queued") {
      // `task.waiting` is the balancer's (it may be newer than this client's event union).
      const subject = client.topo.subjects.event({ type: "task.waiting" as AdoEventType, runId: view.run.runId, taskId: t.id });
      const m = await jsm.streams.getMessage(client.topo.streams.events.name, { last_by_subj: subject }).catch(() => null);
      // Read by shape: a balancer that publishes `task.waiting` may be newer than this client.
      const raw = m ? (safeUnpack(m.data) as { reason?: unknown; attempt?: unknown } | undefined) : undefined;
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
