/**
 * settledView (records.ts): which tasks `ado status` takes from the run's fold instead of
 * their records, and what it says of them. The e2e side (test/e2e/status-snapshot) checks
 * the same against a real run's records.
 */
import { describe, expect, it } from "vitest";
import { parseGraphObject } from "../../src/runtime/graph.js";
import { SCHEMAS, type AdoEvent, type RunRecord } from "../../src/runtime/messages.js";
import { settledView } from "../../src/runtime/records.js";
import { RunFold } from "../../src/runtime/run-fold.js";

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
const sha = (n: number) => n.toString(16).padStart(40, "0");

function runOf(graph: unknown, over: Partial<RunRecord> = {}): RunRecord {
  return { ...SCHEMAS.RunRecord.schema.parse({ runId: "r1", name: "g", status: "running", graph: parseGraphObject(graph), submittedAt: at(0), acceptedAt: at(0) }), ...over };
}

function foldOf(events: AdoEvent[]): RunFold {
  const fold = new RunFold();
  events.forEach((e, i) => fold.apply(e, i + 1));
  return fold;
}

const GRAPH = {
  tasks: [
    { id: "m", run: "true" },
    { id: "f", run: "false" },
    { id: "d", needs: ["m"], run: "true" },
    { id: "q", run: "true" },
    { id: "s", needs: ["f"], run: "true" },
    { id: "v", run: "true", variants: 2 },
  ],
};

/** m merged after a failed attempt, f failed for good after a retry, s skipped, d waits for m's merge... */
const EVENTS: AdoEvent[] = [
  { type: "run.accepted", runId: "r1", at: at(0), name: "g", tasks: GRAPH.tasks.map((t) => ({ id: t.id, needs: t.needs ?? [], priority: "normal" as const })), queued: ["m", "f", "q", "v"] },
  { type: "task.started", runId: "r1", taskId: "m", attempt: 1, at: at(1), workerId: "w1" },
  { type: "task.failed", runId: "r1", taskId: "m", attempt: 1, at: at(3), workerId: "w1", error: "exit 1", willRetry: true, outputTail: "", startedAt: at(1), finishedAt: at(3), costUsd: 0.01, tokens: 100 },
  { type: "task.queued", runId: "r1", taskId: "m", attempt: 2, at: at(3) },
  { type: "task.started", runId: "r1", taskId: "m", attempt: 2, at: at(5), workerId: "w2" },
  { type: "task.succeeded", runId: "r1", taskId: "m", attempt: 2, at: at(8), workerId: "w2", commit: sha(1), files: ["a"], startedAt: at(4), finishedAt: at(8), costUsd: 0.02, tokens: 200 },
  { type: "task.started", runId: "r1", taskId: "f", attempt: 1, at: at(2), workerId: "w3" },
  { type: "task.failed", runId: "r1", taskId: "f", attempt: 1, at: at(6), workerId: "w3", error: "exit 2", willRetry: false, outputTail: "", startedAt: at(1.5), finishedAt: at(6) },
  { type: "task.skipped", runId: "r1", taskId: "s", attempt: 1, at: at(6), reason: "its dependency 'f' failed" },
  { type: "task.started", runId: "r1", taskId: "q", attempt: 1, at: at(2), workerId: "w4" },
];

describe("status view from the fold", () => {
  it("status view - ended tasks as their records say; the rest undefined (their records are read)", () => {
    const run = runOf(GRAPH);
    let fold = foldOf(EVENTS);
    // m is merging: its record may know more (a merge error has no event of its own).
    expect(settledView(fold, run.graph.tasks[0]!, run)).toBeUndefined();
    fold = foldOf([...EVENTS, { type: "task.merged", runId: "r1", taskId: "m", attempt: 2, at: at(9), integrationCommit: sha(2) }]);
    const [m, f, d, q, s, v] = run.graph.tasks.map((def) => settledView(fold, def, run));
    // The last attempt's start and worker as its result says; its error cleared; every attempt's cost and tokens.
    expect(m).toEqual({ id: "m", status: "succeeded", attempts: 2, workerId: "w2", startedAt: at(4), finishedAt: at(8), needs: [], costUsd: 0.03, tokens: 300 });
    expect(f).toEqual({ id: "f", status: "failed", attempts: 1, workerId: "w3", startedAt: at(1.5), finishedAt: at(6), error: "exit 2", needs: [], costUsd: 0, tokens: 0 });
    expect(s).toEqual({ id: "s", status: "skipped", attempts: 0, error: "its dependency 'f' failed", needs: ["f"], costUsd: 0, tokens: 0 });
    // Waiting for its dependency, never run: pending, as its (missing) record says.
    expect(d).toEqual({ id: "d", status: "pending", attempts: 0, needs: ["m"], costUsd: 0, tokens: 0 });
    // Running (its claim says by whom), and a best-of-N task (its variants are in its record).
    expect(q).toBeUndefined();
    expect(v).toBeUndefined();
  });

  it("status view - a halted run's successes, a batched stage's tasks and a root not yet queued are read from their records", () => {
    const merged: AdoEvent = { type: "task.merged", runId: "r1", taskId: "m", attempt: 2, at: at(9), integrationCommit: sha(2) };
    const fold = foldOf([...EVENTS, merged]);
    const halted = runOf(GRAPH, { halted: "cancelled by a person" });
    expect(settledView(fold, halted.graph.tasks[0]!, halted)).toBeUndefined();
    // Failures and skips stay final in a halted run.
    expect(settledView(fold, halted.graph.tasks[1]!, halted)?.status).toBe("failed");
    const batched = runOf({ stages: { docs: { batch: { max: 4 } } }, tasks: GRAPH.tasks.map((t) => ({ ...t, stage: "docs" })).filter((t) => t.id !== "v") });
    expect(settledView(fold, batched.graph.tasks[0]!, batched)).toBeUndefined();
    // A root held back (a stage's maxParallel): pending in the fold, but its record path says how.
    const held = foldOf([{ ...(EVENTS[0] as Extract<AdoEvent, { type: "run.accepted" }>), queued: [] }]);
    expect(settledView(held, runOf(GRAPH).graph.tasks[0]!, runOf(GRAPH))).toBeUndefined();
  });
});
