import { describe, expect, it } from "vitest";
import { acceptRun, applyControl, applyMergeResult, applyTaskResult, buildState, reconcile, batchPrompt, type Effect, type RunState } from "../../src/actors/scheduler/run-state.js";
import { GraphDefSchema, parseGraph } from "../../src/runtime/graph.js";
import type { EventOf, MergeResult, SubmitRun, TaskRecord, TaskResult } from "../../src/runtime/messages.js";
import { taskBranch } from "../../src/runtime/names.js";

const NOW = "2026-01-01T00:00:00.000Z";
const RUN = "r1";
const BASE = "b".repeat(40);

function accept(n: number, max = 5, extraTasks: { id: string; needs?: string[]; stage?: string; agent?: string }[] = []): { state: RunState; effects: Effect[] } {
  const tasks = [...Array.from({ length: n }, (_, i) => ({ id: `t${i + 1}`, stage: "small", agent: "claude", prompt: `Fix ${i + 1}` })), ...extraTasks.map((t) => ({ agent: "claude", prompt: t.id, ...t }))];
  const graph = GraphDefSchema.parse({ name: "g", stages: { small: { batch: { max } } }, tasks });
  const submit: SubmitRun = { type: "run.submit", runId: RUN, graph, repo: "/repo", baseCommit: BASE, submittedAt: NOW };
  const out = acceptRun(submit, NOW);
  if (!out.ok) throw new Error(out.reason);
  return out;
}

const ready = (effects: Effect[]) => effects.flatMap((e) => (e.type === "ready" ? [e.work] : []));
const events = <T extends string>(effects: Effect[], type: T) => effects.flatMap((e) => (e.type === "event" && e.event.type === type ? [e.event as EventOf<T & EventOf<never>["type"]>] : [])) as never as Record<string, unknown>[];
const status = (state: RunState) => Object.fromEntries([...state.tasks].map(([id, t]) => [id, t.rec.status]));

function result(taskId: string, ok: boolean, opts: { attempt?: number; files?: string[] } = {}): TaskResult {
  return {
    type: "task.result",
    runId: RUN,
    taskId,
    attempt: opts.attempt ?? 1,
    workerId: "w1",
    status: ok ? "succeeded" : "failed",
    branch: taskBranch(RUN, taskId),
    commit: "c".repeat(40),
    files: opts.files ?? ["a.txt"],
    startedAt: NOW,
    finishedAt: NOW,
    outputTail: "",
    summary: "done",
    costUsd: 1,
    tokens: 101,
    ...(ok ? {} : { failure: { kind: "crash" as const, message: "agent crashed", retryable: true } }),
  };
}

describe("batching - the scheduler's decisions", () => {
  it("ready tasks of a batching stage go as one attempt of the first, prompts numbered; the rest stay queued, recorded in its batch", () => {
    const { state, effects } = accept(7, 5, [{ id: "other", agent: "codex", stage: "small" }, { id: "free" }]);
    const works = ready(effects);
    // 7 claude tasks: a batch of 5 and one of 2; codex alone in its group; 'free' has no stage.
    expect(works.map((w) => w.taskId)).toEqual(["t1", "t6", "other", "free"]);
    expect(works[0]!.task.prompt).toBe(batchPrompt([1, 2, 3, 4, 5].map((i) => ({ id: `t${i}`, prompt: `Fix ${i}` }))));
    expect(works[0]!.task.prompt).toMatch(/^Do each of these 5 tasks[\s\S]*\n1\. \(task t1\)\nFix 1\n\n2\. \(task t2\)\nFix 2[\s\S]*5\. \(task t5\)\nFix 5\n$/);
    expect(works[2]!.task.prompt).toBe("other");
    expect(Object.values(status(state)).every((s) => s === "queued")).toBe(true);
    expect(["t1", "t2", "t3", "t4", "t5"].map((id) => state.tasks.get(id)!.rec.batch)).toEqual(["t1", "t1", "t1", "t1", "t1"]);
    expect(state.tasks.get("t7")!.rec.batch).toBe("t6");
    // Every member's record is written: a restart finds them queued in their batch, not pending.
    const saved = effects.flatMap((e) => (e.type === "saveTask" ? [e.taskId] : []));
    expect(saved.sort()).toEqual(["t1", "t2", "t3", "t4", "t5", "t6", "t7"]);
  });

  it("a batch that succeeds is one merge; each task gets its share of the cost and the batch it ran in; the members land with the lead's merge", () => {
    const { state } = accept(3);
    const done = applyTaskResult(state, result("t1", true), NOW);
    const merges = done.flatMap((e) => (e.type === "merge" ? [e.request] : []));
    expect(merges.map((m) => m.taskId)).toEqual(["t1"]);
    const succeeded = events(done, "task.succeeded");
    expect(succeeded.map((e) => [e.taskId, e.batch, e.tokens])).toEqual([["t1", "t1", 35], ["t2", "t1", 33], ["t3", "t1", 33]]);
    expect(succeeded.reduce((n, e) => n + (e.costUsd as number), 0)).toBeCloseTo(1);
    expect(state.run.costUsd).toBeCloseTo(1);
    expect(state.run.tokens).toBe(101);
    expect(status(state)).toEqual({ t1: "merging", t2: "merging", t3: "merging" });
    const merged: MergeResult = { type: "merge.result", runId: RUN, taskId: "t1", status: "merged", integrationCommit: "d".repeat(40), message: "", round: 0, files: [] } as never;
    const after = applyMergeResult(state, merged, NOW);
    expect(status(state)).toEqual({ t1: "succeeded", t2: "succeeded", t3: "succeeded" });
    expect(events(after, "task.merged").map((e) => e.taskId)).toEqual(["t1", "t2", "t3"]);
    expect(events(after, "run.completed")).toHaveLength(1);
  });

  it("a failed batch runs each of its tasks again alone, without using their retries; they never batch again", () => {
    const { state } = accept(3);
    const failed = applyTaskResult(state, result("t1", false), NOW);
    expect(events(failed, "task.failed").map((e) => [e.taskId, e.willRetry, e.batch])).toEqual([["t1", true, "t1"], ["t2", true, "t1"], ["t3", true, "t1"]]);
    const works = ready(failed);
    expect(works.map((w) => [w.taskId, w.attempt, w.task.prompt])).toEqual([["t1", 2, "Fix 1"], ["t2", 2, "Fix 2"], ["t3", 2, "Fix 3"]]);
    expect([...state.tasks.values()].map((t) => [t.rec.batch, t.rec.unbatched])).toEqual([[undefined, true], [undefined, true], [undefined, true]]);
    // Each alone: t2's result is its own.
    applyTaskResult(state, result("t2", true, { attempt: 2, files: [] }), NOW);
    expect(status(state)).toEqual({ t1: "queued", t2: "succeeded", t3: "queued" });
  });

  it("a batch lost with its worker (interrupted) reruns alone too; a cancelled lead's members run alone; nothing stays queued", () => {
    const { state } = accept(2);
    const lost = applyTaskResult(state, { ...result("t1", false), failure: { kind: "interrupted", message: "worker lost", retryable: true, agentStarted: true } }, NOW);
    expect(ready(lost).map((w) => w.taskId)).toEqual(["t1", "t2"]);

    const other = accept(3).state;
    const cancelled = applyControl(other, { type: "control", runId: RUN, taskId: "t1", action: "cancel", reason: "no", by: "me", at: NOW }, NOW);
    expect(ready(cancelled).map((w) => [w.taskId, w.task.prompt])).toEqual([["t2", "Fix 2"], ["t3", "Fix 3"]]);
    expect(status(other)).toEqual({ t1: "cancelled", t2: "queued", t3: "queued" });
  });

  it("a restart rebuilds the batch from the records: the lead's result still settles every member", () => {
    const { state } = accept(3);
    const records = new Map<string, { rec: TaskRecord; rev: number }>();
    for (const [id, t] of state.tasks) records.set(id, { rec: t.rec, rev: 1 });
    const again = buildState(state.run, 1, records);
    expect(ready(reconcile(again, NOW))).toEqual([]);
    applyTaskResult(again, result("t1", true, { files: [] }), NOW);
    expect(status(again)).toEqual({ t1: "succeeded", t2: "succeeded", t3: "succeeded" });
  });

  it("a graph file writes batch: { max }; a shell task is never batched", () => {
    const g = parseGraph(`stages: { s: { batch: { max: 5 } } }\ntasks:\n  - { id: a, stage: s, run: "true" }\n  - { id: b, stage: s, run: "true" }\n`);
    expect(g.stages!.s!.batch).toEqual({ max: 5 });
    const out = acceptRun({ type: "run.submit", runId: RUN, graph: g, repo: "/repo", baseCommit: BASE, submittedAt: NOW }, NOW);
    if (!out.ok) throw new Error(out.reason);
    expect(ready(out.effects).map((w) => w.taskId)).toEqual(["a", "b"]);
  });
});
