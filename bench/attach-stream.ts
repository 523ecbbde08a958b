/**
 * A large run's event stream, built by raw JetStream publishes of valid events (no
 * scheduler, no workers): what bench/attach.ts measures attaching to, and what
 * test/runtime/run-load.test.ts checks a snapshot and its deltas against.
 *
 * The run: `tasks` tasks, each run by claude on one of 16 workers: started, then agent
 * activity (raw stdout JSON, tool calls, messages, usage) until the run has about
 * `events` events; every 7th task fails its first attempt and runs again; finished tasks
 * succeed and merge. The last `running` tasks are still under way at the end, so the
 * run is live, as one being attached to is.
 */
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { encode } from "../src/runtime/codec.js";
import { SCHEMAS, type AdoEvent } from "../src/runtime/messages.js";
import { RunFold } from "../src/runtime/run-fold.js";
import { writeSnapshot } from "../src/runtime/run-snapshot.js";
import type { Topology } from "../src/runtime/topology.js";

export interface StreamShape {
  runId: string;
  tasks: number;
  /** About this many events in all (at least a few per task). */
  events: number;
  /** Tasks still running at the end. */
  running?: number;
  t0?: number;
}

const sha = (n: number) => n.toString(16).padStart(40, "0");

/** The run's events, in order. */
export function* runEvents(s: StreamShape): Generator<AdoEvent> {
  const t0 = s.t0 ?? Date.UTC(2026, 0, 1);
  let clock = 0;
  const at = () => new Date(t0 + clock++ * 10).toISOString();
  const runId = s.runId;
  const ids = Array.from({ length: s.tasks }, (_, i) => `t${i}`);
  yield {
    type: "run.accepted",
    runId,
    at: at(),
    name: "attach-bench",
    tasks: ids.map((id, i) => ({ id, needs: i % 10 === 9 ? [ids[i - 1]!] : [], priority: "normal" as const })),
    queued: ids.filter((_, i) => i % 10 !== 9),
    integrationBranch: `ado/${runId}/integration`,
    baseCommit: sha(1),
  };
  // Fixed events per task: started, succeeded, merged (+ failed, queued, started for a retry).
  const running = Math.min(s.running ?? Math.ceil(s.tasks / 100), s.tasks);
  const perTask = Math.max(0, Math.floor((s.events - 1) / s.tasks) - 3);
  let head = 1;
  for (let i = 0; i < s.tasks; i++) {
    const taskId = ids[i]!;
    const workerId = `w${i % 16}`;
    const retry = i % 7 === 3;
    const attempts = retry ? 2 : 1;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) yield { type: "task.queued", runId, taskId, attempt, at: at() };
      const startedAt = at();
      yield { type: "task.started", runId, taskId, attempt, at: startedAt, workerId, agent: "claude", branch: `ado/${runId}/${taskId}` };
      const activity = attempt === attempts ? perTask : Math.min(perTask, 6);
      let cost = 0;
      for (let k = 0, seq = 0; k < activity; k++) {
        switch (k % 5) {
          case 0:
            yield { type: "task.output", runId, taskId, attempt, at: at(), stream: "stdout", data: `${JSON.stringify({ type: "assistant", message: { content: [{ type: "tool_use", name: "Bash", input: { command: `npm test -- ${taskId}` } }] } })}\n` };
            break;
          case 1:
            yield { type: "agent.tool", runId, taskId, attempt, at: at(), seq: seq++, phase: "started", tool: "Bash", summary: `npm test -- ${taskId}`, callId: `c${k}` };
            break;
          case 2:
            yield { type: "agent.tool", runId, taskId, attempt, at: at(), seq: seq++, phase: "completed", tool: "Bash", summary: `npm test -- ${taskId}`, callId: `c${k - 1}`, ok: k % 3 !== 0 };
            break;
          case 3:
            yield { type: "agent.message", runId, taskId, attempt, at: at(), seq: seq++, text: `Editing src/${taskId}.ts: step ${k}`, raw: false, truncated: false };
            break;
          default:
            cost += 0.001;
            yield { type: "agent.usage", runId, taskId, attempt, at: at(), seq: seq++, inputTokens: 100 * k, outputTokens: 10 * k, cachedTokens: 0, cacheWriteTokens: 0, costUsd: cost, costSource: "reported" };
        }
      }
      if (i >= s.tasks - running) continue; // still under way
      const finishedAt = at();
      if (attempt < attempts) {
        yield { type: "task.failed", runId, taskId, attempt, at: finishedAt, workerId, error: "exit 1: tests failed", willRetry: true, outputTail: "FAIL src/x.test.ts\n", startedAt, finishedAt, costUsd: cost };
        continue;
      }
      yield { type: "task.succeeded", runId, taskId, attempt, at: finishedAt, workerId, commit: sha(i + 2), files: [`src/${taskId}.ts`], startedAt, finishedAt, costUsd: cost, tokens: 1000 };
      yield { type: "task.merged", runId, taskId, attempt, at: at(), integrationCommit: sha(i + 1_000_000 + head++) };
    }
  }
}

export interface Published {
  /** Events published. */
  count: number;
  /** Stream sequence of the last event. */
  lastSeq: number;
  /** The sequences of the run's events, in order. */
  seqs: number[];
}

/**
 * Publishes the events (raw, as the actors do: schema-checked, encoded, on the event's
 * subject), `window` in flight at a time. `onAck` gets each event with its stream
 * sequence, in order.
 */
export async function publishRun(
  js: JetStreamClient,
  topo: Topology,
  events: Iterable<AdoEvent>,
  opts: { window?: number; onAck?: (e: AdoEvent, seq: number) => void | Promise<void>; progress?: (n: number) => void } = {},
): Promise<Published> {
  const window = opts.window ?? 2_000;
  const seqs: number[] = [];
  let batch: { e: AdoEvent; ack: Promise<PubAck> }[] = [];
  let count = 0;
  let lastSeq = 0;
  const drain = async () => {
    for (const { e, ack } of batch) {
      const seq = (await ack).seq;
      seqs.push(seq);
      lastSeq = seq;
      await opts.onAck?.(e, seq);
    }
    batch = [];
    opts.progress?.(count);
  };
  for (const e of events) {
    const { data, headers } = encode(SCHEMAS.AdoEvent, e);
    const subject = topo.subjects.event({ type: e.type, runId: e.runId, ...("taskId" in e ? { taskId: e.taskId } : {}) });
    batch.push({ e, ack: js.publish(subject, data, { headers, timeout: 60_000 }) });
    count++;
    if (batch.length >= window) await drain();
  }
  await drain();
  return { count, lastSeq, seqs };
}

/**
 * Publishes a run and stores its snapshot as the recorder would (its fold, by the
 * events' stream sequences, written to KV `snapshots`) after all but the last `deltas`
 * events. Returns the publish and the snapshot's sequence.
 */
export async function publishWithSnapshot(
  js: JetStreamClient,
  topo: Topology,
  snapshots: KV,
  shape: StreamShape,
  deltas: number,
  opts: { window?: number } = {},
  progress?: (n: number) => void,
): Promise<Published & { snapshotSeq: number }> {
  // Counted first, so a million events are generated as they are published, never held.
  let total = 0;
  for (const _ of runEvents(shape)) total++;
  const events = runEvents(shape);
  const fold = new RunFold();
  const cut = Math.max(0, total - deltas);
  let applied = 0;
  let snapshotSeq = 0;
  const published = await publishRun(js, topo, events, {
    ...(opts.window ? { window: opts.window } : {}),
    ...(progress ? { progress } : {}),
    onAck: async (e, seq) => {
      fold.apply(e, seq);
      if (++applied === cut) {
        await writeSnapshot(snapshots, fold);
        snapshotSeq = seq;
      }
    },
  });
  return { ...published, snapshotSeq };
}
