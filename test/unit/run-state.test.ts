import { describe, expect, it } from "vitest";
import {
  acceptRun,
  applyControl,
  applyMergeIntoResult,
  applyMergeResult,
  applyTaskResult,
  buildState,
  reconcile,
  retryDelayMs,
  type Effect,
  type RunState,
} from "../../src/actors/scheduler/run-state.js";
import { GraphDefSchema } from "../../src/runtime/graph.js";
import { SCHEMAS, type AdoEvent, type EventOf, type MergeResult, type SubmitRun, type TaskFailure, type TaskResult, type TaskWork } from "../../src/runtime/messages.js";
import { integrationBranch, taskBranch } from "../../src/runtime/names.js";

const NOW = "2026-01-01T00:00:00.000Z";
const BASE = "b".repeat(40);
const sha = (c: string) => c.repeat(40);
const RUN = "r1";

type TaskIn = { id: string; needs?: string[]; agent?: string; attempts?: number; prompt?: string };

function submit(tasks: TaskIn[], repo = true, extra: Record<string, unknown> = {}): SubmitRun {
  const graph = GraphDefSchema.parse({
    name: "g",
    ...extra,
    tasks: tasks.map(({ attempts, ...t }) => {
      const agent = t.agent ?? (repo ? "shell" : "noop");
      return { ...t, agent, ...(agent === "shell" ? { run: "true" } : {}), retry: { attempts: attempts ?? 1 } };
    }),
  });
  return {
    type: "run.submit",
    runId: RUN,
    graph,
    ...(repo ? { repo: "/repo", baseCommit: BASE } : {}),
    submittedAt: NOW,
  };
}

function accept(tasks: TaskIn[], repo = true): { state: RunState; effects: Effect[] } {
  const outcome = acceptRun(submit(tasks, repo), NOW);
  if (!outcome.ok) throw new Error(`unexpected rejection: ${outcome.reason}`);
  return outcome;
}

const readyWork = (effects: Effect[]): TaskWork[] => effects.flatMap((e) => (e.type === "ready" ? [e.work] : []));
const readyIds = (effects: Effect[]) => readyWork(effects).map((w) => w.taskId).sort();
const merges = (effects: Effect[]) => effects.flatMap((e) => (e.type === "merge" ? [e.request] : []));
const events = (effects: Effect[]): AdoEvent[] => effects.flatMap((e) => (e.type === "event" ? [e.event] : []));
function eventsOf<T extends AdoEvent["type"]>(effects: Effect[], type: T): EventOf<T>[] {
  return events(effects).filter((e): e is EventOf<T> => e.type === type);
}
const status = (state: RunState) => Object.fromEntries([...state.tasks].map(([id, t]) => [id, t.rec.status]));

function ok(taskId: string, opts: { attempt?: number; files?: string[]; commit?: string } = {}): TaskResult {
  const files = opts.files ?? [`${taskId}.txt`];
  return {
    type: "task.result",
    runId: RUN,
    taskId,
    attempt: opts.attempt ?? 1,
    workerId: "w1",
    status: "succeeded",
    branch: taskBranch(RUN, taskId),
    commit: opts.commit ?? sha("c"),
    files,
    startedAt: NOW,
    finishedAt: NOW,
    outputTail: "",
    summary: `${taskId} done`,
    costUsd: 0,
  };
}

function failed(taskId: string, failure: Partial<TaskFailure> = {}, attempt = 1): TaskResult {
  return {
    type: "task.result",
    runId: RUN,
    taskId,
    attempt,
    workerId: "w1",
    status: "failed",
    failure: { kind: "exit", retryable: true, message: "exited with code 1", exitCode: 1, ...failure },
    files: [],
    startedAt: NOW,
    finishedAt: NOW,
    outputTail: "boom",
    summary: "boom",
    costUsd: 0,
  };
}

const merged = (taskId: string, integrationCommit: string): MergeResult => ({
  type: "merge.result",
  runId: RUN,
  taskId,
  status: "merged",
  integrationCommit,
  files: [],
  message: "merged",
  round: 0,
});

const mergeError = (taskId: string, message: string): MergeResult => ({
  type: "merge.result",
  runId: RUN,
  taskId,
  status: "error",
  files: [],
  message,
  round: 0,
});

/** The merge coordinator escalated task's merge: HITL round `round`. */
const attention = (taskId: string, round = 1, files = ["shared.txt"]): MergeResult => ({
  type: "merge.result",
  runId: RUN,
  taskId,
  status: "needs_attention",
  files,
  message: `merge conflict in ${files.join(", ")}`,
  round,
  hitlId: `${RUN}.${taskId}`,
  reason: "conflict",
});

describe("run-state - accepting a run", () => {
  it("queues the roots only, from the run's base commit, and lists them in run.accepted", () => {
    const { state, effects } = accept([{ id: "a" }, { id: "b" }, { id: "c", needs: ["a", "b"] }]);
    expect(readyIds(effects)).toEqual(["a", "b"]);
    for (const w of readyWork(effects)) {
      expect(w).toMatchObject({ runId: RUN, attempt: 1, baseCommit: BASE, repo: "/repo", branch: taskBranch(RUN, w.taskId) });
    }
    expect(status(state)).toEqual({ a: "queued", b: "queued", c: "pending" });
    const [accepted] = eventsOf(effects, "run.accepted");
    expect(accepted).toMatchObject({ runId: RUN, integrationBranch: integrationBranch(RUN), baseCommit: BASE });
    expect(accepted!.tasks.map((t) => t.id)).toEqual(["a", "b", "c"]);
    // Roots are announced in run.accepted, not one event each; the shell creates the
    // run record, and a first attempt's queued state is derived, not written.
    expect(accepted!.queued).toEqual(["a", "b"]);
    expect(eventsOf(effects, "task.queued")).toEqual([]);
    expect(effects.filter((e) => e.type === "saveRun" || e.type === "saveTask")).toEqual([]);
  });

  it("rejects a cycle, an unknown dependency and repo-less shell tasks, naming the tasks", () => {
    const cycle = acceptRun(submit([{ id: "a", needs: ["b"] }, { id: "b", needs: ["a"] }]), NOW);
    expect(cycle.ok).toBe(false);
    const [rejected] = eventsOf(cycle.effects, "run.rejected");
    expect(rejected!.reason).toMatch(/a -> b -> a/);
    expect(rejected!.tasks).toContain("a");
    expect(cycle.effects.filter((e) => e.type !== "event")).toEqual([]); // nothing queued or stored

    const unknown = acceptRun(submit([{ id: "a", needs: ["ghost"] }]), NOW);
    expect(unknown.ok || unknown.tasks).toEqual(["a", "ghost"]);

    const norepo = acceptRun(submit([{ id: "a", agent: "shell" }, { id: "n", agent: "noop" }], false), NOW);
    expect(norepo.ok).toBe(false);
    expect(eventsOf(norepo.effects, "run.rejected")[0]!.reason).toMatch(/'a'.*need a git repository/);
    expect(norepo.ok || norepo.tasks).toEqual(["a"]);
  });
});

describe("run-state - dependencies", () => {
  it("releases a dependent only once every dependency is merged, from the integration commit", () => {
    const { state } = accept([{ id: "a" }, { id: "b" }, { id: "c", needs: ["a", "b"] }]);

    const aDone = applyTaskResult(state, ok("a"), NOW);
    expect(merges(aDone)).toEqual([expect.objectContaining({ taskId: "a", commit: sha("c"), baseCommit: BASE, integrationBranch: integrationBranch(RUN) })]);
    expect(status(state).a).toBe("merging");
    expect(readyIds(aDone)).toEqual([]);

    const aMerged = applyMergeResult(state, merged("a", sha("1")), NOW);
    expect(eventsOf(aMerged, "task.merged")).toHaveLength(1);
    expect(readyIds(aMerged)).toEqual([]); // b is not merged yet

    applyTaskResult(state, ok("b"), NOW);
    expect(readyIds(applyTaskResult(state, ok("b"), NOW))).toEqual([]); // duplicate: nothing
    const bMerged = applyMergeResult(state, merged("b", sha("2")), NOW);
    const [work] = readyWork(bMerged);
    expect(work).toMatchObject({ taskId: "c", attempt: 1, baseCommit: sha("2") });
    expect(work!.inputs).toEqual([
      { taskId: "a", status: "succeeded", branch: taskBranch(RUN, "a"), commit: sha("c"), summary: "a done", costUsd: 0, tokens: 0 },
      { taskId: "b", status: "succeeded", branch: taskBranch(RUN, "b"), commit: sha("c"), summary: "b done", costUsd: 0, tokens: 0 },
    ]);
    expect(state.run.integrationCommit).toBe(sha("2"));
  });

  it("moves the integration commit only forward, by generation, whatever order merge results arrive in", () => {
    const { state } = accept([{ id: "a" }, { id: "b" }, { id: "c", needs: ["a", "b"] }]);
    applyTaskResult(state, ok("a"), NOW);
    applyTaskResult(state, ok("b"), NOW);
    // Two merger replicas: b's merge landed on top of a's, but its result arrives first
    // (and later in the results stream than nothing: a's arrives after it).
    const bMerged = applyMergeResult(state, { ...merged("b", sha("2")), integrationGeneration: 12 }, NOW, 10);
    expect(readyIds(bMerged)).toEqual([]); // a is not merged yet
    const aMerged = applyMergeResult(state, { ...merged("a", sha("1")), integrationGeneration: 11 }, NOW, 11);
    expect(state.run.integrationCommit).toBe(sha("2"));
    expect(state.run.integrationGeneration).toBe(12);
    expect(readyWork(aMerged)).toEqual([expect.objectContaining({ taskId: "c", baseCommit: sha("2") })]);
  });

  it("succeeds a task of a run without a repository without asking for a merge", () => {
    const { state } = accept([{ id: "a" }, { id: "b", needs: ["a"] }], false);
    const res = { ...ok("a", { files: [] }), branch: undefined, commit: undefined };
    const effects = applyTaskResult(state, res, NOW);
    expect(merges(effects)).toEqual([]);
    expect(status(state).a).toBe("succeeded");
    expect(readyWork(effects)).toEqual([expect.objectContaining({ taskId: "b", baseCommit: undefined, repo: undefined })]);
  });

  it("skips the merge of a task that changed no files, and releases its dependents from the current integration commit", () => {
    const { state } = accept([{ id: "a" }, { id: "b", needs: ["a"] }]);
    const effects = applyTaskResult(state, ok("a", { files: [] }), NOW);
    expect(merges(effects)).toEqual([]);
    expect(status(state).a).toBe("succeeded");
    expect(readyWork(effects)).toEqual([expect.objectContaining({ taskId: "b", baseCommit: BASE })]);
  });
});

describe("run-state - stale and duplicate results", () => {
  it("ignores a result for another attempt, a repeated result, a result for an unknown task and a stray merge result", () => {
    const { state } = accept([{ id: "a", attempts: 3 }, { id: "b" }]);
    expect(applyTaskResult(state, ok("a", { attempt: 2 }), NOW)).toEqual([]);
    expect(applyTaskResult(state, ok("ghost"), NOW)).toEqual([]);
    expect(applyMergeResult(state, merged("b", sha("1")), NOW)).toEqual([]); // b is not merging

    const first = applyTaskResult(state, failed("a"), NOW);
    expect(eventsOf(first, "task.failed")[0]!.willRetry).toBe(true);
    expect(applyTaskResult(state, failed("a"), NOW)).toEqual([]); // same attempt again
    expect(applyTaskResult(state, ok("a", { attempt: 1 }), NOW)).toEqual([]); // late result of attempt 1
    expect(state.tasks.get("a")!.rec).toMatchObject({ status: "queued", attempts: 2 });

    expect(applyTaskResult(state, ok("a", { attempt: 2 }), NOW)).not.toEqual([]);
    expect(applyTaskResult(state, ok("a", { attempt: 2 }), NOW)).toEqual([]);
    expect(applyMergeResult(state, merged("a", sha("1")), NOW)).not.toEqual([]);
    expect(applyMergeResult(state, merged("a", sha("1")), NOW)).toEqual([]);
  });
});

describe("run-state - retries", () => {
  it("re-queues a retryable failure with attempts left as the next attempt", () => {
    const { state } = accept([{ id: "a", attempts: 2 }]);
    const effects = applyTaskResult(state, failed("a"), NOW);
    const [ev] = eventsOf(effects, "task.failed");
    expect(ev).toMatchObject({ taskId: "a", attempt: 1, willRetry: true, error: "exited with code 1", outputTail: "boom" });
    expect(readyWork(effects)).toEqual([expect.objectContaining({ taskId: "a", attempt: 2, baseCommit: BASE })]);
    expect(eventsOf(effects, "task.queued")).toEqual([expect.objectContaining({ attempt: 2 })]);
    expect(eventsOf(effects, "run.completed")).toEqual([]);

    // The second attempt fails too: no attempts left.
    const last = applyTaskResult(state, failed("a", {}, 2), NOW);
    expect(eventsOf(last, "task.failed")[0]!.willRetry).toBe(false);
    expect(readyWork(last)).toEqual([]);
    const [done] = eventsOf(last, "run.completed");
    expect(done).toMatchObject({ status: "failed", counts: { failed: 1 } });
    expect(done!.tasks).toEqual([expect.objectContaining({ id: "a", status: "failed", attempts: 2 })]);
  });

  it("a rate or usage limit runs the task again at the reset time its CLI gave, without using its retry budget", () => {
    const { state } = accept([{ id: "a" }]); // one attempt: the default policy
    const reset = Date.parse(NOW) + 3_600_000;
    const effects = applyTaskResult(state, failed("a", { kind: "rate_limit", retryable: true, message: "usage limit reached", retryAt: reset }), NOW);
    expect(eventsOf(effects, "task.failed")[0]!.willRetry).toBe(true);
    expect(readyWork(effects)).toEqual([expect.objectContaining({ taskId: "a", attempt: 2, notBefore: reset })]);
    expect(eventsOf(effects, "task.retrying")[0]!.notBefore).toBe(reset);
    // Without a reset time, the retry's own backoff; a reset time already past changes nothing.
    const again = applyTaskResult(state, failed("a", { kind: "rate_limit", retryable: true, message: "429", retryAt: 0 }, 2), NOW);
    expect(readyWork(again)[0]!.notBefore).toBeLessThan(reset);
    expect(readyWork(again)[0]!.notBefore).toBeGreaterThanOrEqual(Date.parse(NOW));
  });

  it("does not retry a failure retrying cannot fix, even with attempts left", () => {
    const { state } = accept([{ id: "a", attempts: 5 }]);
    const effects = applyTaskResult(state, failed("a", { kind: "agent_missing", retryable: false, message: "agent 'x' is not available" }), NOW);
    expect(eventsOf(effects, "task.failed")[0]!.willRetry).toBe(false);
    expect(readyWork(effects)).toEqual([]);
    expect(state.tasks.get("a")!.rec).toMatchObject({ status: "failed", attempts: 1, error: "agent 'x' is not available" });
    expect(eventsOf(effects, "run.completed")[0]!.error).toMatch(/'a'.*agent 'x' is not available/);
  });

  it("skips every task that transitively needs a task that failed for good, and nothing else", () => {
    const { state } = accept([
      { id: "a" },
      { id: "b", needs: ["a"] },
      { id: "c", needs: ["b"] },
      { id: "d", needs: ["c", "e"] },
      { id: "e" },
      { id: "f", needs: ["e"] },
    ]);
    const effects = applyTaskResult(state, failed("a"), NOW);
    expect(status(state)).toEqual({ a: "failed", b: "skipped", c: "skipped", d: "skipped", e: "queued", f: "pending" });
    const skipped = eventsOf(effects, "task.skipped");
    expect(skipped.map((e) => e.taskId).sort()).toEqual(["b", "c", "d"]);
    expect(skipped.find((e) => e.taskId === "b")!.reason).toMatch(/'a'/);
    expect(eventsOf(effects, "run.completed")).toEqual([]); // e and f still to go

    // Work that does not depend on the failure goes on.
    applyTaskResult(state, ok("e"), NOW);
    expect(readyIds(applyMergeResult(state, merged("e", sha("1")), NOW))).toEqual(["f"]);
    const end = applyTaskResult(state, ok("f", { files: [] }), NOW);
    expect(eventsOf(end, "run.completed")[0]).toMatchObject({ status: "failed", counts: { failed: 1, skipped: 3, succeeded: 2 } });
  });
});

describe("run-state - merge errors", () => {
  it("fail the task and halt the run: pending tasks skipped, in-flight work finishes but is not merged", () => {
    const { state } = accept([{ id: "a" }, { id: "b" }, { id: "slow" }, { id: "c", needs: ["a", "b"] }]);
    applyTaskResult(state, ok("a", { files: ["shared.txt", "a.txt"] }), NOW);
    applyMergeResult(state, merged("a", sha("1")), NOW);
    applyTaskResult(state, ok("b", { files: ["shared.txt"] }), NOW);
    const effects = applyMergeResult(state, mergeError("b", "disk full"), NOW);

    expect(eventsOf(effects, "merge.conflict")).toEqual([]);
    expect(state.run.halted).toBe("merging task 'b' failed: disk full");
    expect(status(state)).toEqual({ a: "succeeded", b: "failed", slow: "queued", c: "skipped" });
    expect(readyWork(effects)).toEqual([]);
    expect(eventsOf(effects, "run.completed")).toEqual([]); // 'slow' is still running

    // In-flight work finishes but is neither retried nor merged once the run has stopped.
    const late = applyTaskResult(state, ok("slow"), NOW);
    expect(merges(late)).toEqual([]);
    expect(status(state).slow).toBe("skipped");
    const [done] = eventsOf(late, "run.completed");
    expect(done).toMatchObject({ status: "failed", counts: { succeeded: 1, failed: 1, skipped: 2 }, integrationCommit: sha("1") });
    expect(done!.error).toMatch(/merging task 'b' failed: disk full/);
  });

  it("a failure that arrives after the run halted is not retried", () => {
    const { state } = accept([{ id: "a" }, { id: "b" }, { id: "r", attempts: 3 }]);
    applyTaskResult(state, ok("a", { files: ["x"] }), NOW);
    applyMergeResult(state, merged("a", sha("1")), NOW);
    applyTaskResult(state, ok("b", { files: ["x"] }), NOW);
    applyMergeResult(state, mergeError("b", "disk full"), NOW);
    const effects = applyTaskResult(state, failed("r"), NOW);
    expect(eventsOf(effects, "task.failed")[0]!.willRetry).toBe(false);
    expect(readyWork(effects)).toEqual([]);
    expect(eventsOf(effects, "run.completed")[0]!.status).toBe("failed");
  });

  it("a conflict is not a result status any more: a merger escalates it (needs_attention), so the schema refuses it", () => {
    const bad = { type: "merge.result", runId: RUN, taskId: "a", status: "conflict", files: ["x"], message: "", round: 0 };
    expect(SCHEMAS.SchedulerInput.schema.safeParse(bad).success).toBe(false);
  });
});

describe("run-state - completion", () => {
  it("emits run.completed exactly once, when the last task is terminal, with status and counts", () => {
    const { state, effects: first } = accept([{ id: "a" }, { id: "b", needs: ["a"] }, { id: "n", agent: "noop" }]);
    const all: Effect[] = [...first];
    all.push(...applyTaskResult(state, ok("n", { files: [] }), NOW));
    all.push(...applyTaskResult(state, ok("a"), NOW));
    expect(eventsOf(all, "run.completed")).toEqual([]);
    all.push(...applyMergeResult(state, merged("a", sha("1")), NOW));
    all.push(...applyTaskResult(state, ok("b"), NOW));
    expect(eventsOf(all, "run.completed")).toEqual([]); // b is merging, not done
    all.push(...applyMergeResult(state, merged("b", sha("2")), NOW));
    // Replays after the end change nothing.
    all.push(...applyTaskResult(state, ok("b"), NOW), ...applyMergeResult(state, merged("b", sha("2")), NOW));

    const done = eventsOf(all, "run.completed");
    expect(done).toHaveLength(1);
    expect(done[0]).toMatchObject({ status: "succeeded", counts: { succeeded: 3 }, integrationBranch: integrationBranch(RUN), integrationCommit: sha("2") });
    expect(done[0]!.error).toBeUndefined();
    expect(done[0]!.tasks.map((t) => [t.id, t.status, t.attempts])).toEqual([
      ["a", "succeeded", 1],
      ["b", "succeeded", 1],
      ["n", "succeeded", 1],
    ]);
    expect(state.run).toMatchObject({ status: "succeeded", finishedAt: NOW });
  });
});

describe("run-state - recovery and policies", () => {
  it("reconcile re-queues a dependent whose dependencies are done but whose own record was never written", () => {
    const { state } = accept([{ id: "a" }, { id: "b", needs: ["a"] }, { id: "c" }]);
    // What KV holds after a crash: a succeeded, nothing stored for b and c.
    const stored = new Map([["a", { rec: { ...state.tasks.get("a")!.rec, status: "succeeded" as const, attempts: 1 }, rev: 3 }]]);
    const reloaded = buildState({ ...state.run, integrationCommit: sha("i") }, 7, stored);
    const effects = reconcile(reloaded, NOW);
    // b (its dependency is done) and c (a root) go out again as attempt 1: deduplicated
    // by msg id if they were published before, claimed once if they run.
    expect(readyWork(effects).map((w) => [w.taskId, w.attempt, w.baseCommit])).toEqual([
      ["b", 1, sha("i")],
      ["c", 1, BASE],
    ]);
    expect(status(reloaded)).toEqual({ a: "succeeded", b: "queued", c: "queued" });
    // Reconciling again changes nothing.
    expect(readyWork(reconcile(reloaded, NOW))).toEqual([]);
  });

  it("reconcile ends a run whose task records are all terminal but whose run record was not stored as ended (the scheduler died before publishing run.completed)", () => {
    const { state } = accept([{ id: "a" }, { id: "b", needs: ["a"] }]);
    // The scheduler stores a decision's task records, then publishes run.completed, then
    // stores the run record: what KV holds after a crash between the first two.
    const stored = new Map([
      ["a", { rec: { ...state.tasks.get("a")!.rec, status: "succeeded" as const, attempts: 1 }, rev: 3 }],
      ["b", { rec: { ...state.tasks.get("b")!.rec, status: "failed" as const, attempts: 1, error: "exited with code 1" }, rev: 4 }],
    ]);
    const reloaded = buildState({ ...state.run, integrationCommit: sha("i") }, 7, stored);
    const effects = reconcile(reloaded, NOW);
    const done = eventsOf(effects, "run.completed");
    expect(done).toHaveLength(1);
    expect(done[0]).toMatchObject({ status: "failed", counts: { succeeded: 1, failed: 1 } });
    expect(effects.some((e) => e.type === "saveRun")).toBe(true);
    expect(reloaded.run.status).toBe("failed");
  });

  it("a run reloaded with a merged task's record newer than the run record (a store that lost the run's last write) bases dependents on that merge", () => {
    const { state } = accept([{ id: "a" }, { id: "b" }, { id: "c", needs: ["a", "b"] }]);
    // a merged at generation 1, then b at generation 2; the server came back with both
    // task records but the run record from after a's merge only.
    const stored = new Map([
      ["a", { rec: { ...state.tasks.get("a")!.rec, status: "succeeded" as const, attempts: 1, integrationCommit: sha("1"), integrationGeneration: 1 }, rev: 3 }],
      ["b", { rec: { ...state.tasks.get("b")!.rec, status: "succeeded" as const, attempts: 1, integrationCommit: sha("2"), integrationGeneration: 2 }, rev: 4 }],
    ]);
    const reloaded = buildState({ ...state.run, integrationCommit: sha("1"), integrationGeneration: 1 }, 7, stored);
    expect(readyWork(reconcile(reloaded, NOW)).map((w) => [w.taskId, w.baseCommit])).toEqual([["c", sha("2")]]);
    // An older task record never moves it back.
    const newerRun = buildState({ ...state.run, integrationCommit: sha("3"), integrationGeneration: 3 }, 7, stored);
    expect(readyWork(reconcile(newerRun, NOW)).map((w) => [w.taskId, w.baseCommit])).toEqual([["c", sha("3")]]);
  });

  it("a merge result's generation is kept on the task's record", () => {
    const { state } = accept([{ id: "a" }]);
    applyTaskResult(state, ok("a"), NOW);
    applyMergeResult(state, { ...merged("a", sha("1")), integrationGeneration: 5 }, NOW);
    expect(state.tasks.get("a")!.rec).toMatchObject({ status: "succeeded", integrationCommit: sha("1"), integrationGeneration: 5 });
  });

  it("reconcile does not announce task.queued again: what it re-queues was announced (or listed in run.accepted) when first queued", () => {
    // A 300-task run reloaded after a restart: the roots' first attempts were never
    // written (they may have started or finished since), so all come out as pending.
    const { state } = accept(Array.from({ length: 300 }, (_, i) => ({ id: `t${i}` })));
    const reloaded = buildState(state.run, 2, new Map());
    const effects = reconcile(reloaded, NOW);
    expect(readyWork(effects)).toHaveLength(300);
    expect(eventsOf(effects, "task.queued")).toEqual([]);
  });

  it("retry backoff grows by the factor, is capped, and stays within the jitter", () => {
    const policy = { attempts: 10, backoffMs: 1_000, factor: 2, maxBackoffMs: 5_000, jitter: 0.2 };
    const delays = [2, 3, 4, 5, 6].map((attempt) => retryDelayMs(policy, `r.t.${attempt}`, attempt));
    const bases = [1_000, 2_000, 4_000, 5_000, 5_000];
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(bases[i]! * 0.8);
      expect(d).toBeLessThanOrEqual(bases[i]! * 1.2);
    });
    expect(retryDelayMs({ ...policy, jitter: 0 }, "k", 2)).toBe(1_000);
    // Deterministic: a replayed decision gets the same delay.
    expect(retryDelayMs(policy, "same", 3)).toBe(retryDelayMs(policy, "same", 3));
  });

  it("a retry carries its not-before time; maxParallel holds ready tasks back until others finish", () => {
    const { state, effects } = accept([{ id: "a", attempts: 2 }, { id: "b" }, { id: "c" }], false);
    // Without maxParallel all three go at once.
    expect(readyIds(effects)).toEqual(["a", "b", "c"]);
    const retry = applyTaskResult(state, failed("a"), NOW);
    const [work] = readyWork(retry);
    expect(work!.attempt).toBe(2);
    expect(work!.notBefore).toBeGreaterThanOrEqual(Date.parse(NOW) + 800);

    const limited = acceptRun({ ...submit([{ id: "x" }, { id: "y" }, { id: "z" }], false), graph: GraphDefSchema.parse({ name: "g", maxParallel: 2, tasks: ["x", "y", "z"].map((id) => ({ id, agent: "noop" })) }) }, NOW);
    if (!limited.ok) throw new Error(limited.reason);
    expect(readyIds(limited.effects)).toEqual(["x", "y"]);
    const next = applyTaskResult(limited.state, { ...ok("x"), files: [] }, NOW);
    expect(readyIds(next)).toEqual(["z"]);
  });
});


describe("run-state - merges that need a person (HITL)", () => {
  it("a task needing attention holds its dependents; independent work goes on; the run stops in needs_attention only when nothing else can move", () => {
    const { state } = accept([{ id: "a" }, { id: "b" }, { id: "after-b", needs: ["b"] }, { id: "slow" }]);
    applyTaskResult(state, ok("a", { files: ["shared.txt"] }), NOW);
    applyMergeResult(state, merged("a", sha("1")), NOW);
    applyTaskResult(state, ok("b", { files: ["shared.txt"] }), NOW);
    const escalated = applyMergeResult(state, attention("b"), NOW);
    expect(status(state)).toEqual({ a: "succeeded", b: "needs_attention", "after-b": "pending", slow: "queued" });
    expect(state.tasks.get("b")!.rec).toMatchObject({ hitlId: `${RUN}.b`, hitlRound: 1 });
    // 'slow' is still running: the run is not stuck yet.
    expect(eventsOf(escalated, "run.needs_attention")).toEqual([]);
    expect(state.run.status).toBe("running");

    const stopped = applyTaskResult(state, ok("slow", { files: [] }), NOW);
    const [stop] = eventsOf(stopped, "run.needs_attention");
    expect(stop).toMatchObject({ round: 1, tasks: [{ taskId: "b", hitlId: `${RUN}.b` }] });
    expect(stopped.find((e) => e.type === "event" && e.event.type === "run.needs_attention")).toMatchObject({ msgID: `${RUN}._.attention.1` });
    expect(state.run).toMatchObject({ status: "needs_attention", attentionRound: 1 });
    expect(eventsOf(stopped, "run.completed")).toEqual([]); // not an end

    // The person resolved it: merged, the run continues, the dependent is released.
    const resolved = applyMergeResult(state, { ...merged("b", sha("2")), round: 1 }, NOW);
    expect(eventsOf(resolved, "task.merged")).toHaveLength(1);
    expect(eventsOf(resolved, "run.continued")).toEqual([expect.objectContaining({ round: 1 })]);
    expect(readyWork(resolved)).toEqual([expect.objectContaining({ taskId: "after-b", baseCommit: sha("2") })]);
    expect(state.run.status).toBe("running");
    applyTaskResult(state, ok("after-b", { files: [] }), NOW);
    expect(state.run.status).toBe("succeeded");
  });

  it("a failed resolution is a new round (announced again); replays of older rounds change nothing", () => {
    const { state } = accept([{ id: "a" }]);
    applyTaskResult(state, ok("a"), NOW);
    expect(eventsOf(applyMergeResult(state, attention("a", 1), NOW), "run.needs_attention")[0]).toMatchObject({ round: 1 });
    // The original merge result delivered again: ignored.
    expect(applyMergeResult(state, attention("a", 1), NOW)).toEqual([]);
    // A merged result for a round the task is not in (a stale one) is ignored too.
    expect(applyMergeResult(state, { ...merged("a", sha("9")), round: 0 }, NOW)).toEqual([]);
    // Round 1's resolution failed: round 2, and the run announces the stop again.
    const again = applyMergeResult(state, attention("a", 2), NOW);
    const [stop] = eventsOf(again, "run.needs_attention");
    expect(stop).toMatchObject({ round: 2 });
    expect(again.find((e) => e.type === "event" && e.event.type === "run.needs_attention")).toMatchObject({ msgID: `${RUN}._.attention.2` });
    expect(state.tasks.get("a")!.rec.hitlRound).toBe(2);
    expect(applyMergeResult(state, { ...merged("a", sha("3")), round: 1 }, NOW)).toEqual([]);
    const done = applyMergeResult(state, { ...merged("a", sha("3")), round: 2 }, NOW);
    expect(eventsOf(done, "run.completed")[0]).toMatchObject({ status: "succeeded", integrationCommit: sha("3") });
  });

  it("skipping at the merge skips the task and what needs it, and the run ends failed saying so", () => {
    const { state } = accept([{ id: "a" }, { id: "b", needs: ["a"] }, { id: "c" }]);
    applyTaskResult(state, ok("c", { files: [] }), NOW);
    applyTaskResult(state, ok("a"), NOW);
    applyMergeResult(state, attention("a"), NOW);
    expect(state.run.status).toBe("needs_attention");
    const effects = applyMergeResult(state, { ...attention("a"), status: "skipped", message: "skipped by me@host" }, NOW);
    expect(status(state)).toEqual({ a: "skipped", b: "skipped", c: "succeeded" });
    expect(eventsOf(effects, "task.skipped").map((e) => e.taskId).sort()).toEqual(["a", "b"]);
    const [done] = eventsOf(effects, "run.completed");
    expect(done!.status).toBe("failed");
    expect(done!.error).toMatch(/'a' was not merged/);
  });

  it("cancelling a run that waits for a person ends it cancelled", () => {
    const { state } = accept([{ id: "a" }, { id: "b", needs: ["a"] }]);
    applyTaskResult(state, ok("a"), NOW);
    applyMergeResult(state, attention("a"), NOW);
    const effects = applyControl(state, { type: "control", runId: RUN, action: "cancel", reason: "enough", by: "me", at: NOW }, NOW);
    expect(status(state)).toEqual({ a: "cancelled", b: "skipped" });
    expect(eventsOf(effects, "run.completed")[0]!.status).toBe("cancelled");
  });

  it("after a restart, a run waiting for a person stays waiting without announcing again", () => {
    const { state } = accept([{ id: "a" }, { id: "b", needs: ["a"] }]);
    applyTaskResult(state, ok("a"), NOW);
    applyMergeResult(state, attention("a"), NOW);
    const stored = new Map([...state.tasks].map(([id, t]) => [id, { rec: t.rec, rev: 1 }]));
    const reloaded = buildState(state.run, 5, stored);
    expect(reconcile(reloaded, NOW)).toEqual([]);
    expect(reloaded.attention).toBe(1);
    const resolved = applyMergeResult(reloaded, { ...merged("a", sha("4")), round: 1 }, NOW);
    expect(readyIds(resolved)).toEqual(["b"]);
    expect(reloaded.run.status).toBe("running");
  });
});

describe("run-state - merge settings and context", () => {
  it("a merge request carries the run's settings, the task's prompt and the prompts of merged tasks that changed the same files", () => {
    const outcome = acceptRun(
      submit([{ id: "a", prompt: "add x to the list" }, { id: "b", prompt: "add y to the list" }, { id: "c", prompt: "unrelated" }], true, {
        merge: { mode: "squash", rules: [{ paths: ["CHANGELOG.md"], strategy: "union" }], validate: { run: "npm test", timeoutMs: 60_000 } },
      }),
      NOW,
    );
    if (!outcome.ok) throw new Error(outcome.reason);
    const { state } = outcome;
    expect(state.run.merge).toEqual({
      mode: "squash",
      rules: [{ paths: ["CHANGELOG.md"], strategy: "union" }],
      validate: { run: "npm test", timeoutMs: 60_000 },
    });
    applyTaskResult(state, ok("a", { files: ["list.txt", "a.txt"] }), NOW);
    applyMergeResult(state, merged("a", sha("1")), NOW);
    applyTaskResult(state, ok("c", { files: ["c.txt"] }), NOW);
    applyMergeResult(state, merged("c", sha("2")), NOW);
    const [request] = merges(applyTaskResult(state, ok("b", { files: ["list.txt"] }), NOW));
    expect(request).toMatchObject({ prompt: "add y to the list", attempt: 1, settings: state.run.merge });
    expect(request!.related).toEqual([{ taskId: "a", prompt: "add x to the list", files: ["list.txt"] }]);
  });

  it("the submitter's resolved settings win over the graph's; without either, the defaults", () => {
    const own = acceptRun({ ...submit([{ id: "a" }], true, { merge: { mode: "linear" } }), merge: { mode: "merge", rules: [], into: "main" } }, NOW);
    expect(own.ok && own.state.run.merge).toEqual({ mode: "merge", rules: [], into: "main" });
    const none = acceptRun(submit([{ id: "a" }]), NOW);
    expect(none.ok && none.state.run.merge).toEqual({ mode: "merge", rules: [] });
  });

  it("with merge.into, a successful run asks the merge coordinator first and ends when it answers, refused or not", () => {
    const outcome = acceptRun({ ...submit([{ id: "a" }]), merge: { mode: "merge", rules: [], into: "main" } }, NOW);
    if (!outcome.ok) throw new Error(outcome.reason);
    const { state } = outcome;
    applyTaskResult(state, ok("a"), NOW);
    const last = applyMergeResult(state, merged("a", sha("1")), NOW);
    expect(eventsOf(last, "run.completed")).toEqual([]);
    expect(last.filter((e) => e.type === "mergeInto")).toEqual([
      { type: "mergeInto", request: { type: "merge.into", runId: RUN, repo: "/repo", integrationBranch: integrationBranch(RUN), baseCommit: BASE, into: "main", updateCheckout: false } },
    ]);
    expect(state.run).toMatchObject({ status: "running", finalizing: true });
    // A restart meanwhile asks again (deduplicated), and nothing else.
    const reloaded = buildState(state.run, 3, new Map([...state.tasks].map(([id, t]) => [id, { rec: t.rec, rev: 1 }])));
    expect(reconcile(reloaded, NOW).map((e) => e.type)).toEqual(["mergeInto"]);

    const refused = applyMergeIntoResult(state, { type: "merge.into.result", runId: RUN, into: "main", status: "refused", reason: "main moved and does not merge cleanly" }, NOW);
    expect(eventsOf(refused, "run.merged_into")[0]).toMatchObject({ into: "main", status: "refused" });
    const [done] = eventsOf(refused, "run.completed");
    expect(done).toMatchObject({ status: "succeeded", mergeInto: { into: "main", status: "refused", reason: "main moved and does not merge cleanly" } });
    // Answered once: a repeated answer changes nothing.
    expect(applyMergeIntoResult(state, { type: "merge.into.result", runId: RUN, into: "main", status: "fast-forward", commit: sha("1"), reason: "" }, NOW)).toEqual([]);
  });
});
