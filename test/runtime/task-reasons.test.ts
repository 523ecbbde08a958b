import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { readReasonFacts, taskReason } from "../../src/cli/task-reasons.js";
import { AdoClient } from "../../src/runtime/client.js";
import { encodeValue } from "../../src/runtime/codec.js";
import { publishEvent } from "../../src/runtime/events.js";
import { parseGraphObject } from "../../src/runtime/graph.js";
import { SCHEMAS, type ControlAction } from "../../src/runtime/messages.js";
import { controlKey } from "../../src/runtime/names.js";
import type { RunStatusView } from "../../src/runtime/records.js";
import { openBuckets, type Topology } from "../../src/runtime/topology.js";
import { provisioned, useTestServer } from "../helpers/nats.js";

const ts = useTestServer("ado-task-reasons-");

type Task = RunStatusView["tasks"][number];

/** A run record and status view of these tasks (each task's needs in the graph as in the view). */
function viewOf(runId: string, tasks: Task[], paused = false): RunStatusView {
  const graph = parseGraphObject({ name: "reasons", tasks: tasks.map((t) => ({ id: t.id, run: "true", ...(t.needs.length ? { needs: t.needs } : {}) })) });
  const at = new Date().toISOString();
  const run = SCHEMAS.RunRecord.schema.parse({ runId, name: "reasons", status: "running", graph, submittedAt: at, acceptedAt: at, costUsd: 0, ...(paused ? { paused: true } : {}) });
  return { run, tasks } as RunStatusView;
}

/** Each task's reason as `ado status` gives it, read on a fresh connection; and the requests (request() calls) the read made. */
async function reasons(topo: Topology, view: RunStatusView, name: string): Promise<{ reasons: Record<string, string | undefined>; requests: number }> {
  const conn: NatsConnection = await ts.connect(name);
  const client = new AdoClient(conn, topo);
  // What `ado status` has done on its connection by then: JetStream's account info, the buckets opened.
  await openBuckets(conn, topo);
  await client.js.jetstreamManager();
  let requests = 0;
  const request = conn.request.bind(conn);
  conn.request = ((...a: Parameters<NatsConnection["request"]>) => {
    requests++;
    return request(...a);
  }) as NatsConnection["request"];
  const facts = await readReasonFacts(client, view);
  return { reasons: Object.fromEntries(view.tasks.map((t) => [t.id, taskReason(t, view, facts.get(t.id) ?? { paused: false })])), requests };
}

describe("ado status: why each open task is not moving", () => {
  it("task reasons - pause requests and each queued task's latest task.waiting, read in bulk for many tasks, give the reasons a read per task gave", { timeout: 120_000 }, async () => {
    const nc = await ts.connect("task-reasons");
    const { kv, topo } = await provisioned(nc);
    const js = jetstream(nc);
    const at = new Date().toISOString();
    const control = (runId: string, taskId: string | undefined, action: ControlAction) =>
      kv.control.put(controlKey(runId, taskId), encodeValue(SCHEMAS.ControlRequest, { type: "control", runId, ...(taskId ? { taskId } : {}), action, reason: "", by: "test", at }));
    let n = 0;
    const waiting = (runId: string, taskId: string, attempt: number, reason: string) =>
      publishEvent(js, topo, { type: "task.waiting", runId, taskId, attempt, at, reason, workers: 2 }, `w${n++}`);

    const q = (id: string, attempts = 1): Task => ({ id, status: "queued", attempts, needs: [] });
    const many = Array.from({ length: 300 }, (_, i) => q(`m${i}`));
    const tasks: Task[] = [
      q("gpu"), // two waiting events: the later one's reason
      q("retry", 2), // waiting only in its first attempt: no reason now
      q("retry2", 2), // waiting in both attempts: the second one's reason
      q("held"), // paused by a task key
      { id: "busy", status: "running", attempts: 1, needs: [] }, // paused by a task key
      { id: "resumed", status: "running", attempts: 1, needs: [] }, // paused, then resumed
      { id: "later", status: "pending", attempts: 0, needs: ["gpu"] },
      q("quiet"), // no event, no key
      { id: "merge", status: "needs_attention", attempts: 1, needs: [] },
      { id: "done", status: "succeeded", attempts: 1, needs: [] },
      ...many,
    ];
    // Another run on the same server, with the same task ids: its keys and events are not this run's.
    await waiting("r2", "quiet", 1, "other run");
    await control("r2", "quiet", "pause");
    await control("r2", "gpu", "pause");
    await waiting("r1", "gpu", 1, "no worker has label gpu");
    await waiting("r1", "retry", 1, "no worker has label a");
    await waiting("r1", "retry2", 1, "no worker has label b");
    for (const [i, t] of many.entries()) await waiting("r1", t.id, 1, `no worker for m${i}`);
    await waiting("r1", "retry2", 2, "no worker has label c");
    await waiting("r1", "gpu", 1, "no worker has label gpu (2 workers busy)");
    await control("r1", "held", "pause");
    await control("r1", "busy", "pause");
    await control("r1", "resumed", "pause");
    await control("r1", "resumed", "resume");

    const expected: Record<string, string | undefined> = {
      gpu: "no worker has label gpu (2 workers busy)",
      retry: undefined,
      retry2: "no worker has label c",
      held: "paused",
      busy: "paused",
      resumed: undefined,
      later: "waiting for gpu",
      quiet: undefined,
      merge: "needs a person: ado hitl show r1.merge",
      done: undefined,
      ...Object.fromEntries(many.map((t, i) => [t.id, `no worker for m${i}`])),
    };
    const view = viewOf("r1", tasks);
    const read = await reasons(topo, view, "status-1");
    expect(read.reasons).toEqual(expected);
    // In bulk: a handful of requests for 300 queued tasks (one per task, and one per open task's pause key, before).
    expect(read.requests).toBeLessThan(20);

    // A paused run (its key, before the scheduler's record says so; then the record): every open task is paused.
    await control("r1", undefined, "pause");
    const pausedRun: Record<string, string | undefined> = { ...Object.fromEntries(tasks.map((t) => [t.id, "paused"])), merge: expected.merge, done: undefined };
    expect((await reasons(topo, view, "status-2")).reasons).toEqual(pausedRun);
    expect((await reasons(topo, viewOf("r1", tasks, true), "status-3")).reasons).toEqual(pausedRun);

    // Resumed: as before the pause.
    await control("r1", undefined, "resume");
    expect((await reasons(topo, view, "status-4")).reasons).toEqual(expected);
  });
});
