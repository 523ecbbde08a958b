import { describe, expect, it } from "vitest";
import { acceptRun, applyBatchDue, applyControl, applyTaskResult, buildState, governedStages, reconcile, stageFull, stageSlot, stagesToSave, type Effect, type RunState } from "../../src/actors/scheduler/run-state.js";
import { GraphDefSchema, parseGraph, validateGraph } from "../../src/runtime/graph.js";
import { GraphError } from "../../src/runtime/errors.js";
import type { StageState, SubmitRun, TaskRecord, TaskResult } from "../../src/runtime/messages.js";
import { taskBranch } from "../../src/runtime/names.js";
import { stageLines, stageViews } from "../../src/cli/stages.js";
import { taskReason } from "../../src/cli/task-reasons.js";
import type { RunStatusView } from "../../src/runtime/client.js";
import { Metrics } from "../../src/runtime/metrics.js";
import { ManualClock } from "../../src/runtime/clock.js";
import { countEvent, newRunTally, setGauges } from "../../src/actors/recorder/tally.js";
import { RunFold } from "../../src/runtime/run-fold.js";

const NOW = "2026-01-01T00:00:00.000Z";
const RUN = "r1";

function graphError(fn: () => unknown): GraphError {
  try {
    fn();
  } catch (err) {
    if (err instanceof GraphError) return err;
    throw err;
  }
  throw new Error("expected a GraphError");
}

describe("stages - graph files", () => {
  it("a task takes its stage's agent or providers when it names neither; its own choice stays whole; agent defaults apply after", () => {
    const g = parseGraph(`
stages:
  plan: { agent: claude, maxParallel: 1 }
  implement: { provider: main }
  test: { maxParallel: 3 }
agents: { claude: { model: opus } }
tasks:
  - { id: p, stage: plan, prompt: plan it }
  - { id: i, stage: implement, prompt: do it }
  - { id: own, stage: implement, agent: codex, prompt: mine }
  - { id: ownp, stage: plan, providers: [other], prompt: mine }
  - { id: t, stage: test, run: "npm test" }
  - { id: free, run: "true" }
`);
    const byId = Object.fromEntries(g.tasks.map((t) => [t.id, t]));
    expect(byId.p).toMatchObject({ agent: "claude", model: "opus", stage: "plan" });
    expect(byId.p!.providers).toBeUndefined();
    expect(byId.i).toMatchObject({ agent: "shell", providers: ["main"], stage: "implement" });
    expect(byId.own).toMatchObject({ agent: "codex" });
    expect(byId.own!.providers).toBeUndefined();
    expect(byId.ownp).toMatchObject({ agent: "shell", providers: ["other"] });
    expect(byId.t).toMatchObject({ agent: "shell", stage: "test" });
    expect(byId.free!.stage).toBeUndefined();
    expect(g.stages).toEqual({ plan: { agent: "claude", maxParallel: 1 }, implement: { providers: ["main"] }, test: { maxParallel: 3 } });
    // The wire form keeps the stages: what the scheduler enforces.
    expect(GraphDefSchema.parse(g).stages).toEqual(g.stages);
  });

  it("a stage's providers take the graph's rotation like a task's own", () => {
    const g = parseGraph(`rotation: round_robin\nstages:\n  impl: { providers: [a, b] }\ntasks:\n  - { id: x, stage: impl, prompt: go }\n  - { id: y, run: "true" }\n`);
    expect(g.tasks[0]).toMatchObject({ providers: ["a", "b"], rotation: "round_robin" });
    expect(g.tasks[1]!.rotation).toBeUndefined();
  });

  it("a task naming a stage the graph does not declare is a graph error that names it and what to do", () => {
    const typo = graphError(() => parseGraph(`stages: { plan: {}, review: {} }\ntasks: [{ id: a, run: "true", stage: plna }]`, "g.yaml"));
    expect(typo.message).toBe("g.yaml: task 'a' names stage 'plna', which the graph does not declare (did you mean 'plan'?): its stages are plan, review");
    expect(typo.tasks).toEqual(["a"]);
    const none = graphError(() => parseGraph(`tasks: [{ id: a, run: "true", stage: plan }]`));
    expect(none.message).toMatch(/task 'a' names stage 'plan', which the graph does not declare: declare it under 'stages:'/);
    // The scheduler checks the wire form too (services may skip the client).
    const wire = GraphDefSchema.parse({ stages: { plan: {} }, tasks: [{ id: "a", agent: "noop", stage: "test" }] });
    expect(graphError(() => validateGraph(wire)).message).toMatch(/task 'a' names stage 'test'.*its stages are plan/);
  });

  it("refuses a stage with both an agent and providers, a bad maxParallel, a bad name and unknown fields", () => {
    expect(graphError(() => parseGraph(`stages: { plan: { agent: claude, provider: p } }\ntasks: [{ id: a, run: "true" }]`)).message).toMatch(
      /stages\.plan\.agent: give the stage an agent or providers, not both/,
    );
    expect(graphError(() => parseGraph(`stages: { plan: { provider: p, providers: [q] } }\ntasks: [{ id: a, run: "true" }]`)).message).toMatch(/not both/);
    expect(graphError(() => parseGraph(`stages: { plan: { maxParallel: 0 } }\ntasks: [{ id: a, run: "true" }]`)).message).toMatch(
      /stages\.plan\.maxParallel: must be at least 1, got 0/,
    );
    expect(graphError(() => parseGraph(`stages: { "p l": {} }\ntasks: [{ id: a, run: "true" }]`)).message).toMatch(/'p l': letters, digits/);
    expect(graphError(() => parseGraph(`stages: { plan: { maxParalel: 2 } }\ntasks: [{ id: a, run: "true" }]`)).message).toMatch(/did you mean 'maxParallel'/);
  });
});

type TaskIn = { id: string; stage?: string; needs?: string[] };

function acceptStaged(tasks: TaskIn[], stages: Record<string, { maxParallel?: number; perMinute?: number; circuit?: { failures: number; cooldownMs?: number } }>, extra: Record<string, unknown> = {}): { state: RunState; effects: Effect[] } {
  const graph = GraphDefSchema.parse({ name: "g", stages, ...extra, tasks: tasks.map((t) => ({ ...t, agent: "noop" })) });
  const submit: SubmitRun = { type: "run.submit", runId: RUN, graph, submittedAt: NOW };
  const out = acceptRun(submit, NOW);
  if (!out.ok) throw new Error(out.reason);
  return out;
}

const readyIds = (effects: Effect[]) => effects.flatMap((e) => (e.type === "ready" ? [e.work.taskId] : [])).sort();

function done(taskId: string, status: "succeeded" | "failed" = "succeeded"): TaskResult {
  return {
    type: "task.result",
    runId: RUN,
    taskId,
    attempt: 1,
    workerId: "w1",
    status,
    branch: taskBranch(RUN, taskId),
    files: [],
    startedAt: NOW,
    finishedAt: NOW,
    outputTail: "",
    summary: "",
    costUsd: 0,
    ...(status === "failed" ? { failure: { kind: "exit" as const, message: "exit 1", retryable: false } } : {}),
  };
}

describe("stages - the scheduler's maxParallel per stage", () => {
  it("a stage with maxParallel 1 queues one of its tasks at a time, while another stage's all go at once", () => {
    const { state, effects } = acceptStaged(
      [{ id: "p1", stage: "plan" }, { id: "p2", stage: "plan" }, { id: "p3", stage: "plan" }, { id: "t1", stage: "test" }, { id: "t2", stage: "test" }, { id: "free" }],
      { plan: { maxParallel: 1 }, test: {} },
    );
    expect(readyIds(effects)).toEqual(["free", "p1", "t1", "t2"]);
    expect(state.stageInFlight.get("plan")).toBe(1);
    expect(stageFull(state, { stage: "plan" })).toBe(true);
    expect(stageFull(state, { stage: "test" })).toBe(false);
    expect(stageFull(state, {})).toBe(false);
    // Another stage's task ending frees nothing in plan.
    expect(readyIds(applyTaskResult(state, done("t1"), NOW))).toEqual([]);
    // p1 ends (failed for good counts too): the next plan task goes, in order.
    expect(readyIds(applyTaskResult(state, done("p1", "failed"), NOW))).toEqual(["p2"]);
    expect(readyIds(applyTaskResult(state, done("p2"), NOW))).toEqual(["p3"]);
    expect(readyIds(applyTaskResult(state, done("p3"), NOW))).toEqual([]);
    expect(state.stageInFlight.has("plan")).toBe(false);
  });

  it("the run's maxParallel and a stage's hold together: a full stage does not keep another stage's task out", () => {
    const { state, effects } = acceptStaged(
      [{ id: "a1", stage: "a" }, { id: "a2", stage: "a" }, { id: "b1", stage: "b" }, { id: "b2", stage: "b" }],
      { a: { maxParallel: 1 }, b: { maxParallel: 1 } },
      { maxParallel: 3 },
    );
    // a2 waits for its stage; b1 is not stuck behind it.
    expect(readyIds(effects)).toEqual(["a1", "b1"]);
    expect(readyIds(applyTaskResult(state, done("a1"), NOW))).toEqual(["a2"]);
  });

  it("dependents released later respect the stage's limit; a paused run resumes within it", () => {
    const { state, effects } = acceptStaged(
      [{ id: "root" }, { id: "r1", stage: "review", needs: ["root"] }, { id: "r2", stage: "review", needs: ["root"] }, { id: "r3", stage: "review", needs: ["root"] }],
      { review: { maxParallel: 2 } },
    );
    expect(readyIds(effects)).toEqual(["root"]);
    applyControl(state, { type: "control", runId: RUN, action: "pause", reason: "", by: "me", at: NOW }, NOW);
    expect(readyIds(applyTaskResult(state, done("root"), NOW))).toEqual([]);
    const resumed = applyControl(state, { type: "control", runId: RUN, action: "resume", reason: "", by: "me", at: NOW }, NOW);
    expect(readyIds(resumed)).toEqual(["r1", "r2"]);
    expect(readyIds(applyTaskResult(state, done("r2"), NOW))).toEqual(["r3"]);
  });

  it("a state rebuilt from stored records counts the stage's tasks in flight, so a restart does not pass the limit", () => {
    const { state } = acceptStaged([{ id: "x1", stage: "s" }, { id: "x2", stage: "s" }, { id: "x3", stage: "s" }], { s: { maxParallel: 1 } });
    const records = new Map<string, { rec: TaskRecord; rev: number }>();
    for (const [id, t] of state.tasks) records.set(id, { rec: t.rec, rev: 1 });
    // x1 was queued as a retry (attempt 2): its record says queued.
    records.set("x1", { rec: { ...records.get("x1")!.rec, status: "queued", attempts: 2 }, rev: 2 });
    const again = buildState(state.run, 1, records);
    expect(again.stageInFlight.get("s")).toBe(1);
    expect(readyIds(reconcile(again, NOW))).toEqual([]);
  });
});

describe("stages - the scheduler's rate per stage", () => {
  it("a stage's perMinute spaces its attempts' starts evenly (notBefore), retries too; other stages start at once", () => {
    const t0 = Date.parse(NOW);
    const { state, effects } = acceptStaged(
      [{ id: "s1", stage: "slow" }, { id: "s2", stage: "slow" }, { id: "s3", stage: "slow" }, { id: "f1", stage: "fast" }],
      { slow: { perMinute: 60 }, fast: {} },
    );
    const notBefore = Object.fromEntries(effects.flatMap((e) => (e.type === "ready" ? [[e.work.taskId, e.work.notBefore]] : [])));
    expect(notBefore).toEqual({ s1: 0, s2: t0 + 1_000, s3: t0 + 2_000, f1: 0 });
    // Much later, the next start is due at once; the one after keeps its distance.
    const later = t0 + 60_000;
    expect(stageSlot(state, { stage: "slow" }, later)).toBe(later);
    expect(stageSlot(state, { stage: "slow" }, later)).toBe(later + 1_000);
    expect(stageSlot(state, { stage: "fast" }, later)).toBe(later);
    expect(stageSlot(state, {}, later)).toBe(later);
  });
});

describe("stages - the scheduler's circuit breaker per stage", () => {
  it("N failures in a row hold the stage's next attempt for the cooldown, then one probe at a time; a success closes it", () => {
    const t0 = Date.parse(NOW);
    const { state, effects } = acceptStaged(
      [{ id: "a", stage: "s" }, { id: "b", stage: "s" }, { id: "c", stage: "s" }, { id: "d", stage: "s" }, { id: "e", stage: "s" }, { id: "o", stage: "other" }],
      { s: { maxParallel: 2, circuit: { failures: 2, cooldownMs: 30_000 } }, other: {} },
    );
    expect(readyIds(effects)).toEqual(["a", "b", "o"]);
    // One failure: not yet; c takes a's place at once.
    const afterA = applyTaskResult(state, done("a", "failed"), NOW);
    expect(afterA.flatMap((e) => (e.type === "ready" ? [[e.work.taskId, e.work.notBefore]] : []))).toEqual([["c", 0]]);
    // Two in a row: open. c is still out, so d waits (one probe at a time), held by the scheduler.
    expect(readyIds(applyTaskResult(state, done("b", "failed"), NOW))).toEqual([]);
    expect(stageFull(state, { stage: "s" })).toBe(true);
    // Another stage is not affected.
    expect(stageFull(state, { stage: "other" })).toBe(false);
    // c fails too: d goes as the probe, not before the cooldown from this failure ends.
    const later = new Date(t0 + 5_000).toISOString();
    const probe = applyTaskResult(state, done("c", "failed"), later);
    expect(probe.flatMap((e) => (e.type === "ready" ? [[e.work.taskId, e.work.notBefore]] : []))).toEqual([["d", t0 + 35_000]]);
    // The probe succeeds: closed, e goes at once.
    const closed = applyTaskResult(state, done("d"), new Date(t0 + 40_000).toISOString());
    expect(closed.flatMap((e) => (e.type === "ready" ? [[e.work.taskId, e.work.notBefore]] : []))).toEqual([["e", 0]]);
    expect(state.stageCircuit.has("s")).toBe(false);
  });

  it("a cancelled or interrupted attempt does not count; a graph file writes the cooldown as a duration", () => {
    const { state } = acceptStaged([{ id: "a", stage: "s" }, { id: "b", stage: "s" }], { s: { circuit: { failures: 1 } } });
    const interrupted = { ...done("a", "failed"), failure: { kind: "interrupted" as const, message: "worker stopped", retryable: true } };
    applyTaskResult(state, interrupted, NOW);
    expect(state.stageCircuit.get("s")).toBeUndefined();
    expect(state.run.graph.stages!.s!.circuit).toEqual({ failures: 1, cooldownMs: 60_000 });
    const g = parseGraph(`stages: { review: { circuit: { failures: 3, cooldown: 2m } } }\ntasks: [{ id: a, run: "true", stage: review }]`);
    expect(g.stages!.review!.circuit).toEqual({ failures: 3, cooldownMs: 120_000 });
    expect(graphError(() => parseGraph(`stages: { review: { circuit: { failures: 0 } } }\ntasks: [{ id: a, run: "true" }]`)).message).toMatch(/circuit\.failures: must be at least 1/);
  });
});

/**
 * What a restarted scheduler (or another replica) loads: the run's records, and the
 * stages' limits as stagesToSave() gave them to the shell (revision 1 each).
 */
function reload(state: RunState, stored: { stage: string; value: StageState }[]): RunState {
  const records = new Map<string, { rec: TaskRecord; rev: number }>();
  for (const [id, t] of state.tasks) records.set(id, { rec: t.rec, rev: 1 });
  return buildState(state.run, 1, records, undefined, new Map(stored.map((w) => [w.stage, { state: w.value, rev: 1 }])));
}

const notBefores = (effects: Effect[]) => effects.flatMap((e) => (e.type === "ready" ? [[e.work.taskId, e.work.notBefore]] : []));

describe("stages - the limits are stored, for a restart and for other replicas", () => {
  it("a stage's rate window survives a reload: a task released after it waits for the slot, not the fresh start a memory-only window gave", () => {
    const t0 = Date.parse(NOW);
    const { state } = acceptStaged(
      [{ id: "s1", stage: "slow" }, { id: "s2", stage: "slow" }, { id: "gate" }, { id: "s3", stage: "slow", needs: ["gate"] }, { id: "f", stage: "fast" }],
      { slow: { perMinute: 60 }, fast: { maxParallel: 5 } },
    );
    // Only the governed stage is stored, with the next free slot (s1 now, s2 a second later).
    expect(governedStages(state.run)).toEqual(["slow"]);
    const saved = stagesToSave(state, NOW);
    expect(saved).toEqual([{ stage: "slow", rev: 0, value: { runId: RUN, stage: "slow", nextStart: t0 + 2_000, failures: 0, openUntil: 0, batchSince: 0, updatedAt: NOW } }]);
    // Restarted; gate finishes: s3 takes the stored window's next slot.
    const again = reload(state, saved);
    const released = applyTaskResult(again, { ...done("gate") }, NOW);
    expect(notBefores(released)).toEqual([["s3", t0 + 2_000]]);
    // The start was checked against the stored copy: written again, on the revision loaded.
    expect(stagesToSave(again, NOW)).toEqual([{ stage: "slow", rev: 1, value: expect.objectContaining({ nextStart: t0 + 3_000 }) }]);
    // What a reload without the stored window did (the defect): s3 at once.
    const fresh = reload(state, []);
    expect(notBefores(applyTaskResult(fresh, { ...done("gate") }, NOW))).toEqual([["s3", 0]]);
  });

  it("an open circuit survives a reload: the stage's next attempt waits for the cooldown and goes alone", () => {
    const t0 = Date.parse(NOW);
    const { state } = acceptStaged(
      [{ id: "a", stage: "s" }, { id: "gate" }, { id: "b", stage: "s", needs: ["gate"] }, { id: "c", stage: "s", needs: ["gate"] }],
      { s: { maxParallel: 3, circuit: { failures: 1, cooldownMs: 30_000 } } },
    );
    stagesToSave(state, NOW);
    state.stagesDirty.clear();
    applyTaskResult(state, done("a", "failed"), NOW);
    const saved = stagesToSave(state, NOW);
    expect(saved.map((w) => w.value)).toEqual([{ runId: RUN, stage: "s", nextStart: 0, failures: 1, openUntil: t0 + 30_000, batchSince: 0, updatedAt: NOW }]);
    const again = reload(state, saved);
    expect(stageFull(again, { stage: "s" })).toBe(false);
    // gate finishes: one probe (b), after the cooldown; c waits for it.
    const released = applyTaskResult(again, done("gate"), new Date(t0 + 1_000).toISOString());
    expect(notBefores(released)).toEqual([["b", t0 + 30_000]]);
    expect(stageFull(again, { stage: "s" })).toBe(true);
    // The probe succeeds: closed and stored so; c goes at once.
    const closed = applyTaskResult(again, done("b"), new Date(t0 + 31_000).toISOString());
    expect(notBefores(closed)).toEqual([["c", 0]]);
    expect(stagesToSave(again, NOW).map((w) => [w.value.failures, w.value.openUntil])).toEqual([[0, 0]]);
    // A reload without it (the defect) let both through at once.
    expect(notBefores(applyTaskResult(reload(state, []), done("gate"), NOW))).toEqual([["b", 0], ["c", 0]]);
  });
});

describe("stages - a batch waits for more members (batch.wait)", () => {
  // m1..m3 (stage small) each wait for their own gate g1..g3, which finish at different moments.
  function waitingRun(clock: ManualClock, max = 3) {
    const out = acceptRun(
      {
        type: "run.submit",
        runId: RUN,
        graph: GraphDefSchema.parse({
          name: "g",
          stages: { small: { batch: { max, waitMs: 5_000 } } },
          tasks: [
            ...["g1", "g2", "g3"].map((id) => ({ id, agent: "noop" })),
            ...[1, 2, 3].map((n) => ({ id: `m${n}`, agent: "claude", prompt: `fix ${n}`, stage: "small", needs: [`g${n}`] })),
          ],
        }),
        repo: "/repo",
        baseCommit: "a".repeat(40),
        submittedAt: new Date(clock.now()).toISOString(),
      },
      new Date(clock.now()).toISOString(),
    );
    if (!out.ok) throw new Error(out.reason);
    return out.state;
  }
  const iso = (clock: ManualClock) => new Date(clock.now()).toISOString();
  const dues = (effects: Effect[]) => effects.flatMap((e) => (e.type === "batchDue" ? [e.due.due] : []));
  const work = (effects: Effect[]) => effects.flatMap((e) => (e.type === "ready" ? [e.work] : []));

  it("tasks that become ready at different moments wait for each other and go as one batch as soon as it is full", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const state = waitingRun(clock);
    // m1 ready: it waits (nothing published) and the wait's timer is set for t0 + 5 s.
    const first = applyTaskResult(state, done("g1"), iso(clock));
    expect(work(first)).toEqual([]);
    expect(dues(first)).toEqual([t0 + 5_000]);
    expect(state.tasks.get("m1")!.rec.status).toBe("pending");
    expect(stagesToSave(state, iso(clock)).map((w) => w.value.batchSince)).toEqual([t0]);
    clock.advance(1_000);
    const second = applyTaskResult(state, done("g2"), iso(clock));
    expect(work(second)).toEqual([]);
    expect(dues(second)).toEqual([]); // the same wait: no second timer
    clock.advance(1_000);
    // The third member fills it: one attempt (m1's) carries all three prompts, before the wait ends.
    const full = applyTaskResult(state, done("g3"), iso(clock));
    expect(work(full).map((w) => w.taskId)).toEqual(["m1"]);
    expect(work(full)[0]!.task.prompt).toMatch(/1\. \(task m1\)[\s\S]*2\. \(task m2\)[\s\S]*3\. \(task m3\)/);
    expect(["m1", "m2", "m3"].map((id) => [state.tasks.get(id)!.rec.status, state.tasks.get(id)!.rec.batch])).toEqual([["queued", "m1"], ["queued", "m1"], ["queued", "m1"]]);
    // The wait is over, and stored so once the batch's work and records are: before, it is written as running.
    expect(stagesToSave(state, iso(clock)).map((w) => w.value.batchSince)).toEqual([t0]);
    expect(stagesToSave(state, iso(clock), true).map((w) => w.value.batchSince)).toEqual([0]);
    // The timer, when it comes, finds nothing waiting.
    clock.advance(3_000);
    expect(work(applyBatchDue(state, { type: "batch.due", runId: RUN, stage: "small", due: t0 + 5_000 }, iso(clock)))).toEqual([]);
  });

  it("a batch not full when the wait ends goes as it is; the timer taken early changes nothing", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const state = waitingRun(clock);
    applyTaskResult(state, done("g1"), iso(clock));
    clock.advance(2_000);
    applyTaskResult(state, done("g2"), iso(clock));
    clock.advance(1_000);
    expect(work(applyBatchDue(state, { type: "batch.due", runId: RUN, stage: "small", due: t0 + 5_000 }, iso(clock)))).toEqual([]);
    clock.advance(2_000);
    // The task records as stored before the wait ends (for the crash below).
    const before = new Map([...state.tasks].map(([id, t]) => [id, { rec: { ...t.rec }, rev: 1 }]));
    const due = applyBatchDue(state, { type: "batch.due", runId: RUN, stage: "small", due: t0 + 5_000 }, iso(clock));
    expect(work(due).map((w) => w.taskId)).toEqual(["m1"]);
    expect(state.tasks.get("m2")!.rec.batch).toBe("m1");
    // A scheduler that died after publishing the batch (its stage written before that, the wait
    // still running), before storing the records: the next one re-forms the same batch at once
    // (same lead, attempt and prompt, so the publish is deduplicated), rather than waiting again
    // while the published one runs.
    const prePublish = stagesToSave(state, iso(clock));
    const redo = buildState(state.run, 1, before, undefined, new Map(prePublish.map((w) => [w.stage, { state: w.value, rev: 1 }])));
    const again = reconcile(redo, iso(clock));
    expect(work(again).map((w) => [w.taskId, w.attempt, w.task.prompt])).toEqual(work(due).map((w) => [w.taskId, w.attempt, w.task.prompt]));
    // Once stored, the wait is over.
    expect(stagesToSave(state, iso(clock), true).map((w) => w.value.batchSince)).toEqual([0]);
    // m3, ready later, starts a wait of its own; alone at its end, it runs alone (no batch).
    clock.advance(1_000);
    const t1 = clock.now();
    expect(dues(applyTaskResult(state, done("g3"), iso(clock)))).toEqual([t1 + 5_000]);
    clock.advance(5_000);
    const alone = applyBatchDue(state, { type: "batch.due", runId: RUN, stage: "small", due: t1 + 5_000 }, iso(clock));
    expect(work(alone).map((w) => [w.taskId, w.task.prompt])).toEqual([["m3", "fix 3"]]);
    expect(state.tasks.get("m3")!.rec.batch).toBeUndefined();
  });

  it("a restart during the wait loses nothing and does not start the wait over: the waiting tasks are pending, the wait's start is stored", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const state = waitingRun(clock);
    applyTaskResult(state, done("g1"), iso(clock));
    const saved = stagesToSave(state, iso(clock));
    clock.advance(2_000);
    // The scheduler restarts: m1 is pending with g1 done; the stored wait began at t0.
    const again = reload(state, saved);
    const reconciled = reconcile(again, iso(clock));
    expect(work(reconciled)).toEqual([]);
    expect(reconciled.flatMap((e) => (e.type === "batchDue" ? [[e.due.due, e.msgID]] : []))).toEqual([[t0 + 5_000, `${RUN}._.batch.small.${t0}`]]);
    clock.advance(1_000);
    applyTaskResult(again, done("g2"), iso(clock));
    clock.advance(2_000);
    const due = applyBatchDue(again, { type: "batch.due", runId: RUN, stage: "small", due: t0 + 5_000 }, iso(clock));
    expect(work(due).map((w) => w.taskId)).toEqual(["m1"]);
    expect(again.tasks.get("m2")!.rec.batch).toBe("m1");
  });

  it("graph files: batch: { size, wait } with a duration; clear errors for what is wrong", () => {
    const g = parseGraph(`stages: { small: { agent: claude, batch: { size: 4, wait: 10s } } }\ntasks: [{ id: a, prompt: x, stage: small }]`);
    expect(g.stages!.small!.batch).toEqual({ max: 4, waitMs: 10_000 });
    expect(parseGraph(`stages: { small: { agent: claude, batch: { max: 4 } } }\ntasks: [{ id: a, prompt: x, stage: small }]`).stages!.small!.batch).toEqual({ max: 4 });
    const bad = (batch: string) => graphError(() => parseGraph(`stages: { small: { agent: claude, batch: ${batch} } }\ntasks: [{ id: a, prompt: x, stage: small }]`)).message;
    expect(bad("{ size: 4, max: 4 }")).toMatch(/not both/);
    expect(bad("{ wait: 5s }")).toMatch(/how many tasks a batch holds at most: batch: \{ size: 5, wait: 10s \}/);
    expect(bad("{ size: 4, wait: 0 }")).toMatch(/more than zero/);
    expect(bad("{ size: 4, wait: 2d }")).toMatch(/at most 24h/);
    expect(bad('{ size: 4, wait: "soon" }')).toMatch(/a duration like/);
  });
});

describe("stages - ado status and the metrics by stage", () => {
  it("ado status counts each stage's tasks by state, in the graph's order of stages", () => {
    const graph = parseGraph(`
stages:
  plan: { agent: claude, maxParallel: 1 }
  review: { provider: main, perMinute: 6 }
  test: { circuit: { failures: 3, cooldown: 2m } }
tasks:
  - { id: p1, stage: plan, prompt: a }
  - { id: p2, stage: plan, prompt: b }
  - { id: p3, stage: plan, prompt: c }
  - { id: r1, stage: review, prompt: d }
  - { id: free, run: "true" }
`);
    const views = stageViews(graph, [
      { id: "p1", status: "running" },
      { id: "p2", status: "pending" },
      { id: "p3", status: "pending" },
      { id: "r1", status: "succeeded" },
      { id: "free", status: "running" },
    ]);
    expect(views).toEqual([
      { name: "plan", maxParallel: 1, perMinute: null, circuit: null, agent: "claude", providers: null, tasks: { running: 1, pending: 2 } },
      { name: "review", maxParallel: null, perMinute: 6, circuit: null, agent: null, providers: ["main"], tasks: { succeeded: 1 } },
      { name: "test", maxParallel: null, perMinute: null, circuit: { failures: 3, cooldownMs: 120_000 }, agent: null, providers: null, tasks: {} },
    ]);
    expect(stageLines(views)).toEqual([
      "  stage plan (claude, maxParallel 1): 1 running, 2 pending",
      "  stage review (providers main, 6/min): 1 succeeded",
      "  stage test (circuit 3 failures/2m00s): no tasks",
    ]);
    expect(stageViews(parseGraph(`tasks: [{ id: a, run: "true" }]`), [{ id: "a", status: "running" }])).toEqual([]);

    // Why a pending task waits: its stage is full.
    const tasks = [
      { id: "p1", status: "running" as const, attempts: 1, needs: [] },
      { id: "p2", status: "pending" as const, attempts: 0, needs: [] },
      { id: "r1", status: "pending" as const, attempts: 0, needs: [] },
    ];
    const view = { run: { runId: RUN, status: "running", graph }, tasks } as unknown as RunStatusView;
    expect(taskReason(tasks[1]!, view, { paused: false })).toBe("waiting for its stage plan (maxParallel 1, 1 in flight)");
    expect(taskReason(tasks[2]!, view, { paused: false })).toBeUndefined();
  });

  it("the recorder's gauges count tasks by stage and state; ends and cost count by stage", async () => {
    const m = new Metrics({ processMetrics: false });
    const tally = newRunTally();
    tally.agents.set("p1", "shell").set("p2", "shell").set("free", "shell");
    tally.stages.set("p1", "plan").set("p2", "plan");
    const fold = new RunFold();
    const at = NOW;
    const evs = [
      { type: "run.accepted", runId: RUN, at, name: "g", tasks: [{ id: "p1", needs: [], priority: "normal" }, { id: "p2", needs: [], priority: "normal" }, { id: "free", needs: [], priority: "normal" }], queued: ["p1", "free"] },
      { type: "task.started", runId: RUN, taskId: "p1", attempt: 1, at, workerId: "w1" },
      { type: "task.started", runId: RUN, taskId: "free", attempt: 1, at, workerId: "w1" },
    ] as const;
    for (const e of evs) {
      fold.apply(e as never);
      countEvent(m, tally, e as never);
    }
    setGauges(m, [{ fold, tally }]);
    const text = await m.text();
    expect(text).toMatch(/ado_stage_tasks\{stage="plan",state="running"\} 1/);
    expect(text).toMatch(/ado_stage_tasks\{stage="plan",state="pending"\} 1/);
    expect(text).not.toMatch(/ado_stage_tasks\{[^}]*stage=""/);
    const ended = { type: "task.succeeded", runId: RUN, taskId: "p1", attempt: 1, at, workerId: "w1", files: [], startedAt: at, finishedAt: at, costUsd: 0.25, tokens: 10 };
    fold.apply(ended as never);
    countEvent(m, tally, ended as never);
    const after = await m.text();
    expect(after).toMatch(/ado_stage_tasks_finished_total\{stage="plan",state="succeeded"\} 1/);
    expect(after).toMatch(/ado_stage_cost_usd_total\{stage="plan"\} 0.25/);
    expect(after).toMatch(/ado_stage_task_duration_seconds_count\{stage="plan",outcome="succeeded"\} 1/);
    const failed = { type: "task.failed", runId: RUN, taskId: "p2", attempt: 1, at, workerId: "w1", error: "x", kind: "exit", willRetry: true, outputTail: "", startedAt: at, finishedAt: at, costUsd: 0, tokens: 0 };
    const retrying = { type: "task.retrying", runId: RUN, taskId: "p2", attempt: 2, at, notBefore: 0, error: "x" };
    for (const e of [failed, retrying]) countEvent(m, tally, e as never);
    const last = await m.text();
    expect(last).toMatch(/ado_stage_task_failures_total\{stage="plan",class="exit"\} 1/);
    expect(last).toMatch(/ado_stage_task_retries_total\{stage="plan"\} 1/);
    // Not finished: it will be retried.
    expect(last).not.toMatch(/ado_stage_tasks_finished_total\{stage="plan",state="failed"\}/);
  });
});
