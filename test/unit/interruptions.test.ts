/**
 * The scheduler's rule for interrupted attempts (issue 9.6): an attempt lost before its
 * agent started costs the task nothing; one interrupted after counts against a cap that
 * the graph or the task can set (default 5), and the failure says so and how to raise it.
 */
import { describe, expect, it } from "vitest";
import { acceptRun, applyTaskResult, interruptionRule, MAX_INTERRUPTIONS, type Effect, type RunState } from "../../src/actors/scheduler/run-state.js";
import { GraphDefSchema } from "../../src/runtime/graph.js";
import { parseGraph } from "../../src/runtime/graph.js";
import type { TaskFailure, TaskResult } from "../../src/runtime/messages.js";

const NOW = "2026-01-01T00:00:00.000Z";

function accept(graph: Record<string, unknown>): RunState {
  const outcome = acceptRun({ type: "run.submit", runId: "r1", graph: GraphDefSchema.parse(graph), repo: "/repo", baseCommit: "b".repeat(40), submittedAt: NOW }, NOW);
  if (!outcome.ok) throw new Error(outcome.reason);
  return outcome.state;
}

function lost(attempt: number, agentStarted: boolean | undefined, kind: TaskFailure["kind"] = "interrupted"): TaskResult {
  return {
    type: "task.result",
    runId: "r1",
    taskId: "t",
    attempt,
    workerId: "w1",
    status: "failed",
    failure: { kind, retryable: true, message: "worker w1 died", ...(agentStarted === undefined ? {} : { agentStarted }) },
    files: [],
    startedAt: NOW,
    finishedAt: NOW,
    outputTail: "",
    summary: "",
    costUsd: 0,
  };
}

const requeued = (effects: Effect[]) => effects.some((e) => e.type === "ready");
const failedEvent = (effects: Effect[]) => effects.flatMap((e) => (e.type === "event" && e.event.type === "task.failed" ? [e.event] : []))[0];

/** Feeds `results` (attempt n gets the nth) and returns the effects of the last. */
function feed(state: RunState, results: Array<(attempt: number) => TaskResult>): Effect[] {
  let effects: Effect[] = [];
  results.forEach((r, i) => (effects = applyTaskResult(state, r(i + 1), NOW)));
  return effects;
}

describe("interruptions - the rule", () => {
  const t = (max?: number) => ({ def: { id: "t", retry: { attempts: 1, backoffMs: 0, factor: 2, maxBackoffMs: 0, jitter: 0, ...(max === undefined ? {} : { maxInterruptions: max }) } }, rec: {} });

  it("an attempt lost before its agent started is free; other failures are not interruptions", () => {
    expect(interruptionRule(t(0), { kind: "interrupted", agentStarted: false }, 0)).toEqual({ again: true, counts: { lostUnstarted: 1 } });
    expect(interruptionRule(t(), { kind: "exit" }, undefined)).toEqual({ again: false, counts: {} });
  });

  it("an interruption after the start counts; the task's cap wins over the graph's, the graph's over the default", () => {
    expect(interruptionRule(t(), { kind: "interrupted" }, undefined)).toEqual({ again: true, counts: { interruptions: 1 } });
    expect(interruptionRule({ ...t(), rec: { interruptions: MAX_INTERRUPTIONS } }, { kind: "interrupted", agentStarted: true }, undefined).again).toBe(false);
    expect(interruptionRule({ ...t(), rec: { interruptions: 5 } }, { kind: "interrupted" }, 8).again).toBe(true);
    expect(interruptionRule({ ...t(1), rec: { interruptions: 1 } }, { kind: "interrupted" }, 8)).toMatchObject({
      again: false,
      counts: { interruptions: 2 },
      capMessage: expect.stringMatching(/interrupted 2 times .* cap of 1: not run again\. Raise the cap with the task's retry\.maxInterruptions or the graph's maxInterruptions/),
    });
  });
});

describe("interruptions - the scheduler", () => {
  it("20 attempts lost before their agent started do not fail the task; the next one runs", () => {
    const state = accept({ name: "g", tasks: [{ id: "t", run: "true" }] });
    const effects = feed(state, Array.from({ length: 20 }, () => (n: number) => lost(n, false)));
    expect(requeued(effects)).toBe(true);
    expect(state.tasks.get("t")!.rec).toMatchObject({ status: "queued", attempts: 21, lostUnstarted: 20 });
  });

  it("by default the 6th interruption after the start fails the task, saying why and how to raise the cap; free losses in between do not count", () => {
    const state = accept({ name: "g", tasks: [{ id: "t", run: "true" }] });
    const results = [true, false, true, true, false, true, true, true].map((started) => (n: number) => lost(n, started));
    const before = feed(state, results.slice(0, 7));
    expect(requeued(before)).toBe(true); // 5 counted so far
    const last = applyTaskResult(state, lost(8, true), NOW);
    expect(requeued(last)).toBe(false);
    expect(state.tasks.get("t")!.rec).toMatchObject({ status: "failed", interruptions: 6, lostUnstarted: 2 });
    expect(failedEvent(last)).toMatchObject({ willRetry: false, error: expect.stringContaining("over its cap of 5") });
    expect(state.tasks.get("t")!.rec.error).toContain("maxInterruptions");
  });

  it("a graph's maxInterruptions and a task's retry.maxInterruptions (graph file form) set the cap", () => {
    const graph = parseGraph("maxInterruptions: 1\ntasks:\n  - { id: t, run: 'true' }\n  - { id: u, run: 'true', retry: { attempts: 1, maxInterruptions: 3 } }\n");
    const outcome = acceptRun({ type: "run.submit", runId: "r1", graph, repo: "/repo", baseCommit: "b".repeat(40), submittedAt: NOW }, NOW);
    if (!outcome.ok) throw new Error(outcome.reason);
    const state = outcome.state;
    expect(requeued(applyTaskResult(state, lost(1, true), NOW))).toBe(true);
    expect(requeued(applyTaskResult(state, lost(2, true), NOW))).toBe(false);
    const u = (n: number): TaskResult => ({ ...lost(n, true), taskId: "u" });
    for (let n = 1; n <= 3; n++) expect(requeued(applyTaskResult(state, u(n), NOW)), `u#${n}`).toBe(true);
    expect(requeued(applyTaskResult(state, u(4), NOW))).toBe(false);
  });

  it("interruptions do not use up the retry budget of real failures", () => {
    const state = accept({ name: "g", tasks: [{ id: "t", run: "true", retry: { attempts: 2, backoffMs: 0 } }] });
    applyTaskResult(state, lost(1, true), NOW);
    applyTaskResult(state, lost(2, false), NOW);
    // Attempt 3 is the first real failure: one retry is left.
    expect(requeued(applyTaskResult(state, lost(3, undefined, "exit"), NOW))).toBe(true);
    expect(requeued(applyTaskResult(state, lost(4, undefined, "exit"), NOW))).toBe(false);
  });
});
