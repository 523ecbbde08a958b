import { describe, expect, it } from "vitest";
import { estimate, foldHistory, sizeClass, type Ledger } from "../../src/actors/scheduler/budget.js";
import { acceptRun, applyBudget, applyControl, applyTaskResult, buildState, isEarly, reconcile, type Effect, type RunState } from "../../src/actors/scheduler/run-state.js";
import { parseCapChange, resolveBudget, type RunBudget } from "../../src/runtime/budget.js";
import { GraphDefSchema } from "../../src/runtime/graph.js";
import type { AdoEvent, BudgetRequest, CostHistory, EventOf, TaskFailure, TaskRecord, TaskResult, TaskWork } from "../../src/runtime/messages.js";
import { noteUsage } from "../../src/actors/scheduler/budget.js";
import { budgetFor } from "../../src/cli/run.js";
import { RunProgress } from "../../src/cli/progress-state.js";
import { renderFrame } from "../../src/cli/progress-frame.js";

/**
 * The scheduler's budget decisions (run-state.ts with budget.ts), pure: what is
 * reserved when a task starts, what replaces it when the task ends, when ready tasks
 * wait, what a raise does, and what stop mode does.
 */

const NOW = "2026-01-01T00:00:00.000Z";
const BASE = "b".repeat(40);
const RUN = "r1";

type TaskIn = { id: string; needs?: string[]; attempts?: number; prompt?: string; maxCost?: number; agent?: string };

function start(tasks: TaskIn[], budget: Partial<RunBudget>, extra: Record<string, unknown> = {}, history?: Map<string, CostHistory>) {
  const graph = GraphDefSchema.parse({
    name: "g",
    ...extra,
    tasks: tasks.map(({ attempts, ...t }) => ({ agent: "shell", run: "true", ...t, retry: { attempts: attempts ?? 1 } })),
  });
  const outcome = acceptRun(
    {
      type: "run.submit",
      runId: RUN,
      graph,
      repo: "/repo",
      baseCommit: BASE,
      submittedAt: NOW,
      budget: { onExceed: "wait", defaultTaskCostUsd: 0, defaultTaskTokens: 0, changes: 0, ...budget },
    },
    NOW,
    history,
  );
  if (!outcome.ok) throw new Error(outcome.reason);
  return outcome;
}

function result(taskId: string, o: { attempt?: number; costUsd?: number; tokens?: number; failure?: Partial<TaskFailure>; commit?: string } = {}): TaskResult {
  return {
    type: "task.result",
    runId: RUN,
    taskId,
    attempt: o.attempt ?? 1,
    workerId: "w1",
    status: o.failure ? "failed" : "succeeded",
    ...(o.failure ? { failure: { kind: "exit", retryable: true, message: "exited with code 1", exitCode: 1, ...o.failure } } : {}),
    // No files: a success is done at once (nothing to merge), which keeps these tests about the budget.
    files: [],
    ...(o.commit ? { commit: o.commit } : {}),
    startedAt: NOW,
    finishedAt: NOW,
    outputTail: "",
    summary: "",
    costUsd: o.costUsd ?? 0,
    ...(o.tokens !== undefined ? { tokens: o.tokens } : {}),
  };
}

const raise = (r: Partial<BudgetRequest>): BudgetRequest => ({ type: "budget", runId: RUN, by: "me@host", at: NOW, ...r });
const usage = (taskId: string, attempt: number, costUsd: number, tokens = 0): EventOf<"agent.usage"> => ({
  type: "agent.usage",
  runId: RUN,
  taskId,
  attempt,
  at: NOW,
  seq: 0,
  inputTokens: tokens,
  outputTokens: 0,
  cachedTokens: 0,
  cacheWriteTokens: 0,
  costUsd,
  costSource: "reported",
});

const readyWork = (effects: Effect[]): TaskWork[] => effects.flatMap((e) => (e.type === "ready" ? [e.work] : []));
const readyIds = (effects: Effect[]) => readyWork(effects).map((w) => w.taskId).sort();
const events = (effects: Effect[]): AdoEvent[] => effects.flatMap((e) => (e.type === "event" ? [e.event] : []));
function eventsOf<T extends AdoEvent["type"]>(effects: Effect[], type: T): EventOf<T>[] {
  return events(effects).filter((e): e is EventOf<T> => e.type === type);
}
const status = (state: RunState) => Object.fromEntries([...state.tasks].map(([id, t]) => [id, t.rec.status]));
const reservedOf = (state: RunState, id: string) => state.ledger.attempts.get(id)?.reserved;

describe("budget - reservation and release", () => {
  it("reserves each task's expected cost when it starts, and its actual cost replaces that when it ends", () => {
    const { state, effects } = start([{ id: "a" }, { id: "b" }, { id: "c" }], { maxCostUsd: 10, defaultTaskCostUsd: 2 });
    expect(readyIds(effects)).toEqual(["a", "b", "c"]);
    expect(reservedOf(state, "a")).toEqual({ usd: 2, tokens: 0 });
    const done = applyTaskResult(state, result("a", { costUsd: 0.5, tokens: 1200 }), NOW);
    expect(state.ledger.attempts.has("a")).toBe(false);
    expect(state.tasks.get("a")!.rec).toMatchObject({ costUsd: 0.5, tokens: 1200 });
    expect(state.run).toMatchObject({ costUsd: 0.5, tokens: 1200 });
    // The cost is stored with the task and the run at once.
    expect(done).toEqual(expect.arrayContaining([{ type: "saveTask", taskId: "a" }, { type: "saveRun" }]));
    expect(eventsOf(done, "task.succeeded")[0]).toMatchObject({ costUsd: 0.5, tokens: 1200 });
  });

  it("counts failed, interrupted and cancelled attempts on the task and the run, and run.completed carries the total", () => {
    const { state } = start([{ id: "a", attempts: 2 }, { id: "b" }], { maxCostUsd: 100 });
    applyTaskResult(state, result("a", { costUsd: 1, failure: {} }), NOW); // failed, retried
    applyTaskResult(state, result("a", { attempt: 2, costUsd: 0.25, failure: { kind: "interrupted", retryable: true, agentStarted: true } }), NOW);
    expect(state.tasks.get("a")!.rec.costUsd).toBeCloseTo(1.25);
    // b is cancelled while it runs; its attempt's cost comes with its late result.
    const cancel = applyTaskResult(state, result("b", { costUsd: 0, failure: { kind: "cancelled", retryable: false, message: "cancelled" } }), NOW);
    expect(status(state).b).toBe("cancelled");
    expect(cancel.length).toBeGreaterThan(0);
    // a's third attempt (after the interruption) succeeds.
    const end = applyTaskResult(state, result("a", { attempt: 3, costUsd: 2 }), NOW);
    expect(state.run.costUsd).toBeCloseTo(3.25);
    expect(eventsOf(end, "run.completed")[0]).toMatchObject({ costUsd: 3.25 });
  });

  it("counts an attempt cancelled while it ran once its result comes, once", () => {
    const { state } = start([{ id: "a" }, { id: "b" }], {});
    // The run is cancelled by the task-level control path: a is cancelled while it runs.
    const cancelA = applyTaskResult(state, result("a", { failure: { kind: "cancelled", retryable: false, message: "by me" }, costUsd: 0.7 }), NOW);
    expect(state.run.costUsd).toBeCloseTo(0.7);
    expect(cancelA).toEqual(expect.arrayContaining([{ type: "saveRun" }]));
    // A duplicate of the same result changes nothing.
    expect(applyTaskResult(state, result("a", { failure: { kind: "cancelled", retryable: false, message: "by me" }, costUsd: 0.7 }), NOW)).toEqual([]);
    expect(state.run.costUsd).toBeCloseTo(0.7);
  });

  it("without a cap reserves nothing and writes nothing more for an attempt that cost nothing (the hot path)", () => {
    const noCap = acceptRun(
      { type: "run.submit", runId: RUN, graph: GraphDefSchema.parse({ tasks: [{ id: "a", run: "true" }, { id: "b", run: "true" }] }), repo: "/repo", baseCommit: BASE, submittedAt: NOW },
      NOW,
    );
    if (!noCap.ok) throw new Error(noCap.reason);
    expect(noCap.state.run.budget).toBeUndefined();
    expect(noCap.state.ledger.attempts.get("a")?.reserved).toEqual({ usd: 0, tokens: 0 });
    const done = applyTaskResult(noCap.state, result("a"), NOW);
    expect(done.filter((e) => e.type === "saveRun")).toEqual([]);
    expect(done.filter((e) => e.type === "saveTask")).toHaveLength(1);
    // With a cost, the run record is written too (its total), still without a cap.
    expect(applyTaskResult(noCap.state, result("b", { costUsd: 0.1 }), NOW)).toEqual(expect.arrayContaining([{ type: "saveRun" }]));
    expect(noCap.state.run.costUsd).toBeCloseTo(0.1);
  });

  it("a retry reserves again: the mean of what the task's agent cost in this run", () => {
    const { state } = start([{ id: "a", attempts: 2 }], { maxCostUsd: 10, defaultTaskCostUsd: 3 });
    expect(reservedOf(state, "a")).toEqual({ usd: 3, tokens: 0 });
    const retry = applyTaskResult(state, result("a", { costUsd: 1.5, failure: {} }), NOW);
    expect(readyWork(retry)).toEqual([expect.objectContaining({ taskId: "a", attempt: 2 })]);
    expect(state.ledger.attempts.get("a")).toMatchObject({ attempt: 2, reserved: { usd: 1.5, tokens: 0 } });
  });

  it("live usage of a running attempt counts when more than its reservation, and for an attempt lost with its worker", () => {
    const { state, effects } = start([{ id: "x" }, { id: "a" }, { id: "b", needs: ["x"] }], { maxCostUsd: 3, defaultTaskCostUsd: 0.5 });
    expect(readyIds(effects)).toEqual(["a", "x"]);
    expect(noteUsage(state.ledger, usage("a", 1, 2.95))).toBe(true);
    expect(noteUsage(state.ledger, usage("a", 1, 1))).toBe(true); // late and lower: never lowers it
    expect(noteUsage(state.ledger, usage("b", 1, 1))).toBe(false); // not running
    // x ends (0.1): b's estimate is 0.1, but 0.1 spent + 2.95 running + 0.1 passes $3.
    const xDone = applyTaskResult(state, result("x", { costUsd: 0.1 }), NOW);
    expect(readyIds(xDone)).toEqual([]);
    expect(state.budgetBlocked?.message).toMatch(/\$0\.10 spent and \$2\.95 held for 1 attempt under way of its \$3\.00 \(maxCost\), and task 'b' is expected to cost \$0\.10/);
    // a was lost with its worker: its result says nothing of cost, its usage events do.
    applyTaskResult(state, result("a", { failure: { kind: "interrupted", retryable: true, agentStarted: true, message: "worker lost" } }), NOW);
    expect(state.tasks.get("a")!.rec.costUsd).toBeCloseTo(2.95);
  });
});

describe("budget - over the cap", () => {
  /** Five independent tasks of $1 each under a $2.50 cap, $1 expected each (the default). */
  function overCap(onExceed: "wait" | "stop" = "wait") {
    return start([{ id: "a" }, { id: "b" }, { id: "c" }, { id: "d" }, { id: "e" }], { maxCostUsd: 2.5, defaultTaskCostUsd: 1, onExceed });
  }

  it("nothing new starts once spend plus reservations would pass the cap; the run waits for a person with reason budget", () => {
    const { state, effects } = overCap();
    expect(readyIds(effects)).toEqual(["a", "b"]);
    expect(status(state)).toMatchObject({ c: "pending", d: "pending", e: "pending" });
    expect(eventsOf(effects, "run.needs_attention")).toEqual([]); // a and b run: not stuck yet
    const aDone = applyTaskResult(state, result("a", { costUsd: 1 }), NOW);
    expect(readyIds(aDone)).toEqual([]); // $1 spent + $1 held for b + $1 for c > $2.50
    const bDone = applyTaskResult(state, result("b", { costUsd: 1 }), NOW);
    expect(readyIds(bDone)).toEqual([]);
    const [stop] = eventsOf(bDone, "run.needs_attention");
    expect(stop).toMatchObject({ round: 1, tasks: [], budget: { spentUsd: 2, reservedUsd: 0, maxCostUsd: 2.5, next: { taskId: "c", costUsd: 1 }, waiting: 3 } });
    expect(stop!.budget!.message).toMatch(/\$2\.00 spent of its \$2\.50 \(maxCost\), and task 'c' is expected to cost \$1\.00 \(the mean of 2 attempts/);
    expect(state.run.status).toBe("needs_attention");
    expect(state.run.budgetWait).toEqual(stop!.budget);
  });

  it("a raise lets the waiting tasks start and the run continue; one that is not enough announces a new stop", () => {
    const { state } = overCap();
    applyTaskResult(state, result("a", { costUsd: 1 }), NOW);
    applyTaskResult(state, result("b", { costUsd: 1 }), NOW);
    const short = applyBudget(state, raise({ addCostUsd: 0.25 }), NOW);
    expect(eventsOf(short, "run.budget")[0]).toMatchObject({ maxCostUsd: 2.75, previousMaxCostUsd: 2.5, by: "me@host" });
    expect(readyIds(short)).toEqual([]);
    expect(eventsOf(short, "run.needs_attention")[0]).toMatchObject({ round: 2, budget: { maxCostUsd: 2.75 } });
    const enough = applyBudget(state, raise({ maxCostUsd: 4 }), NOW);
    expect(readyIds(enough)).toEqual(["c", "d"]);
    expect(eventsOf(enough, "run.continued")).toEqual([expect.objectContaining({ round: 2 })]);
    expect(state.run.status).toBe("running");
    expect(state.run.budget).toMatchObject({ maxCostUsd: 4, changes: 2 });
    applyTaskResult(state, result("c", { costUsd: 1 }), NOW);
    applyTaskResult(state, result("d", { costUsd: 1 }), NOW);
    const last = applyBudget(state, raise({ addCostUsd: 1 }), NOW);
    expect(readyIds(last)).toEqual(["e"]);
    const end = applyTaskResult(state, result("e", { costUsd: 1 }), NOW);
    expect(eventsOf(end, "run.completed")[0]).toMatchObject({ status: "succeeded", costUsd: 5 });
  });

  it("a retry over the cap waits too, and starts after a raise from the checkpoint its interrupted attempt left", () => {
    const { state } = start([{ id: "a" }], { maxCostUsd: 1, defaultTaskCostUsd: 0.5 });
    const lost = applyTaskResult(state, result("a", { costUsd: 0.9, failure: { kind: "interrupted", retryable: true, agentStarted: true }, commit: "c".repeat(40) }), NOW);
    expect(readyIds(lost)).toEqual([]);
    expect(eventsOf(lost, "task.failed")[0]).toMatchObject({ willRetry: true, costUsd: 0.9 });
    expect(state.tasks.get("a")!.rec).toMatchObject({ status: "pending", attempts: 1, resumeFrom: "c".repeat(40) });
    expect(eventsOf(lost, "run.needs_attention")[0]?.budget?.next).toMatchObject({ taskId: "a", costUsd: 0.9 });
    // A late copy of the lost attempt's result is neither early nor counted again.
    expect(isEarly(state, result("a", { costUsd: 0.9, failure: { kind: "interrupted", retryable: true } }))).toBe(false);
    const go = applyBudget(state, raise({ maxCostUsd: 3 }), NOW);
    expect(readyWork(go)).toEqual([expect.objectContaining({ taskId: "a", attempt: 2, baseCommit: "c".repeat(40) })]);
    expect(state.tasks.get("a")!.rec.resumeFrom).toBeUndefined();
    // Nothing waits for the budget any more: no stop is left to announce.
    expect(state.budgetBlocked).toBeUndefined();
  });

  it("stop mode: pending tasks are skipped, running ones finish, and the run ends failed saying why", () => {
    const { state, effects } = overCap("stop");
    expect(readyIds(effects)).toEqual(["a", "b"]);
    expect(status(state)).toMatchObject({ c: "skipped", d: "skipped", e: "skipped" });
    expect(state.run.budgetStopped).toMatch(/^stopped by its budget \(onExceed: stop\): the run's budget would be passed/);
    expect(eventsOf(effects, "task.skipped")[0]!.reason).toMatch(/not started: the run stopped by its budget/);
    applyTaskResult(state, result("a", { costUsd: 1 }), NOW);
    // A failure is not retried once the budget stopped the run.
    const end = applyTaskResult(state, result("b", { costUsd: 1, failure: {} }), NOW);
    expect(eventsOf(end, "task.failed")[0]).toMatchObject({ willRetry: false });
    const [done] = eventsOf(end, "run.completed");
    expect(done).toMatchObject({ status: "failed", costUsd: 2 });
    expect(done!.error).toMatch(/^stopped by its budget/);
    // Raising it afterwards records the cap but starts nothing.
    expect(applyBudget(state, raise({ maxCostUsd: 50 }), NOW)).toEqual([]); // the run is over
  });

  it("a run whose first tasks would pass its budget waits (or ends, in stop mode) as it is accepted: nothing hangs with nothing in flight", () => {
    const waits = start([{ id: "a" }, { id: "b" }], { maxCostUsd: 0.5, defaultTaskCostUsd: 1 });
    expect(readyIds(waits.effects)).toEqual([]);
    expect(eventsOf(waits.effects, "run.accepted")[0]).toMatchObject({ queued: [], budget: { maxCostUsd: 0.5, onExceed: "wait" } });
    expect(eventsOf(waits.effects, "run.needs_attention")[0]).toMatchObject({ round: 1, budget: { next: { taskId: "a", costUsd: 1 }, waiting: 2 } });
    expect(waits.state.run.status).toBe("needs_attention");
    const stops = start([{ id: "a" }, { id: "b" }], { maxCostUsd: 0.5, defaultTaskCostUsd: 1, onExceed: "stop" });
    expect(readyIds(stops.effects)).toEqual([]);
    expect(eventsOf(stops.effects, "run.completed")[0]).toMatchObject({ status: "failed", error: expect.stringMatching(/^stopped by its budget/), costUsd: 0 });
  });

  it("a paused run that is resumed waits for its budget as soon as nothing else moves", () => {
    const { state } = start([{ id: "a" }, { id: "b", needs: ["a"] }], { maxCostUsd: 1 });
    applyControl(state, { type: "control", runId: RUN, action: "pause", reason: "", by: "me", at: NOW }, NOW);
    applyTaskResult(state, result("a", { costUsd: 1 }), NOW);
    expect(state.run.status).toBe("running"); // b is held by the pause, not the budget
    const resumed = applyControl(state, { type: "control", runId: RUN, action: "resume", reason: "", by: "me", at: NOW }, NOW);
    expect(readyIds(resumed)).toEqual([]);
    expect(eventsOf(resumed, "run.needs_attention")[0]).toMatchObject({ budget: { spentUsd: 1, next: { taskId: "b" } } });
  });

  it("a token budget counts tokens where agents report no dollars", () => {
    const { state, effects } = start([{ id: "a" }, { id: "b" }, { id: "c", needs: ["a"] }], { maxTokens: 10_000, defaultTaskTokens: 4_000 });
    expect(readyIds(effects)).toEqual(["a", "b"]);
    applyTaskResult(state, result("a", { tokens: 7_000 }), NOW);
    // 7k spent + 4k held for b + c's 5.5k (the mean of this run's attempts) > 10k.
    expect(status(state).c).toBe("pending");
    expect(state.budgetBlocked?.message).toMatch(/7k tokens spent and 4k held for 1 attempt under way of its 10k \(maxTokens\)/);
    const done = applyTaskResult(state, result("b", { tokens: 1_000 }), NOW);
    expect(eventsOf(done, "run.needs_attention")[0]?.budget).toMatchObject({ tokens: 8_000, maxTokens: 10_000 });
    const go = applyBudget(state, raise({ addTokens: 10_000 }), NOW);
    expect(readyIds(go)).toEqual(["c"]);
  });

  it("a stop reloaded from its records is the same stop: no new round", () => {
    const { state } = overCap();
    applyTaskResult(state, result("a", { costUsd: 1 }), NOW);
    applyTaskResult(state, result("b", { costUsd: 1 }), NOW);
    const records = new Map<string, { rec: TaskRecord; rev: number }>([...state.tasks].map(([id, t]) => [id, { rec: t.rec, rev: 1 }]));
    const reloaded = buildState(state.run, 2, records);
    expect(reloaded.run.costUsd).toBe(2);
    const again = reconcile(reloaded, NOW);
    expect(readyIds(again)).toEqual([]);
    expect(eventsOf(again, "run.needs_attention")).toEqual([]);
    expect(reloaded.budgetBlocked?.next.taskId).toBe("c");
    // And a raise goes on from there.
    expect(readyIds(applyBudget(reloaded, raise({ maxCostUsd: 10 }), NOW))).toEqual(["c", "d", "e"]);
  });
});

describe("budget - what a task is expected to cost", () => {
  const budget: RunBudget = { onExceed: "wait", defaultTaskCostUsd: 0.3, defaultTaskTokens: 0, changes: 0 };
  const ledger = (history?: Map<string, CostHistory>): Ledger => ({ attempts: new Map(), samples: new Map(), ...(history ? { history } : {}) });
  const hist = (agent: string, cls: string, samples: number, costUsd: number): [string, CostHistory] => [
    `${agent}.${cls}`,
    { agent, sizeClass: cls, samples, costUsd, tokens: 0, updatedAt: NOW },
  ];

  it("this run's attempts of the agent and prompt size, then of the agent, then past runs', then the default, never above the task's maxCost", () => {
    const short = { agent: "claude", prompt: "fix it" };
    const long = { agent: "claude", prompt: "x".repeat(5_000) };
    const past = new Map([hist("claude", "xs", 10, 0.8), hist("claude", "m", 30, 2)]);
    expect(estimate(ledger(), budget, short)).toMatchObject({ usd: 0.3, basis: expect.stringMatching(/configured default/) });
    expect(estimate(ledger(past), budget, short)).toMatchObject({ usd: 0.8, basis: expect.stringMatching(/10 attempts: past runs' .* of this size/) });
    // No past runs of this size class: the agent's over all of them (10 x 0.8 + 30 x 2) / 40.
    expect(estimate(ledger(past), budget, { agent: "claude", prompt: "x".repeat(2_000) }).usd).toBeCloseTo(1.7);
    const l = ledger(past);
    l.samples.set("claude", { n: 2, usd: 3, tokens: 0 });
    l.samples.set(`claude/${sizeClass(long.prompt)}`, { n: 1, usd: 2.5, tokens: 0 });
    expect(estimate(l, budget, long)).toMatchObject({ usd: 2.5, basis: expect.stringMatching(/this run's attempts of agent 'claude' with prompts of this size/) });
    expect(estimate(l, budget, short)).toMatchObject({ usd: 1.5, basis: expect.stringMatching(/this run's attempts of agent 'claude'$/) });
    expect(estimate(l, budget, { ...long, maxCost: 1 })).toMatchObject({ usd: 1, basis: expect.stringMatching(/^its own maxCost/) });
    // Nothing known and no default: nothing reserved, unless the task has its own cap.
    const bare = { ...budget, defaultTaskCostUsd: 0 };
    expect(estimate(ledger(), bare, short)).toMatchObject({ usd: 0, basis: expect.stringMatching(/nothing reserved/) });
    expect(estimate(ledger(), bare, { ...short, maxCost: 4 }).usd).toBe(4);
  });

  it("past runs' means are folded in per attempt, standing for at most 50 attempts", () => {
    const first = foldHistory(undefined, "codex", "s", { n: 4, usd: 2, tokens: 400 }, NOW);
    expect(first).toMatchObject({ samples: 4, costUsd: 0.5, tokens: 100 });
    const second = foldHistory({ ...first, samples: 50 }, "codex", "s", { n: 10, usd: 10, tokens: 0 }, NOW);
    expect(second.samples).toBe(50);
    expect(second.costUsd).toBeCloseTo((0.5 * 50 + 10) / 60);
  });

  it("uses past runs' history from the start of a run", () => {
    const past = new Map([hist("shell", "xs", 5, 2)]);
    const { state, effects } = start([{ id: "a" }, { id: "b" }], { maxCostUsd: 3 }, {}, past);
    expect(readyIds(effects)).toEqual(["a"]);
    expect(state.budgetBlocked?.next).toMatchObject({ taskId: "b", costUsd: 2, basis: expect.stringMatching(/past runs/) });
  });
});

describe("budget - settings and input", () => {
  it("resolves config, graph and flags (later wins); no cap: no budget", () => {
    expect(resolveBudget(undefined)).toBeUndefined();
    expect(resolveBudget({ onExceed: "stop", defaultTaskCost: 0.5, defaultTaskTokens: 0, maxCost: 5 }, { maxCost: 8 }, { maxTokens: 1000 })).toEqual({
      maxCostUsd: 8,
      maxTokens: 1000,
      onExceed: "stop",
      defaultTaskCostUsd: 0.5,
      defaultTaskTokens: 0,
      changes: 0,
    });
  });

  it("parses a new cap as a person types it, and says what is allowed otherwise", () => {
    expect(parseCapChange("20", "usd")).toEqual({ set: 20 });
    expect(parseCapChange("+5", "usd")).toEqual({ add: 5 });
    expect(parseCapChange("+$2.50", "usd")).toEqual({ add: 2.5 });
    expect(parseCapChange("500k", "tokens")).toEqual({ set: 500_000 });
    expect(parseCapChange("+1.5m", "tokens")).toEqual({ add: 1_500_000 });
    expect(() => parseCapChange("lots", "usd")).toThrow(/'lots' is not an amount in USD such as 20 \(the new cap\) or \+5/);
    expect(() => parseCapChange("0", "usd")).toThrow(/must be more than 0/);
    expect(() => parseCapChange("5k", "usd")).toThrow(/is not an amount in USD/);
  });

  it("ado run's flags: --max-cost over the graph over the config, --on-budget needs a cap, bad figures say what is allowed", () => {
    const config = { budget: { onExceed: "wait" as const, defaultTaskCost: 0, defaultTaskTokens: 0, maxCost: 3 } };
    expect(budgetFor(config, {}, {})).toMatchObject({ maxCostUsd: 3, onExceed: "wait" });
    expect(budgetFor(config, { maxCost: 5 }, {})).toMatchObject({ maxCostUsd: 5 });
    expect(budgetFor(config, { maxCost: 5 }, { maxCost: "$10", maxTokens: "2m", onBudget: "stop" })).toMatchObject({ maxCostUsd: 10, maxTokens: 2_000_000, onExceed: "stop" });
    const none = { budget: { onExceed: "wait" as const, defaultTaskCost: 0, defaultTaskTokens: 0 } };
    expect(budgetFor(none, {}, {})).toBeUndefined();
    expect(() => budgetFor(none, {}, { onBudget: "stop" })).toThrow(/--on-budget needs a budget/);
    expect(() => budgetFor(none, {}, { maxCost: "ten" })).toThrow(/--max-cost 'ten' is not an amount in USD/);
    expect(() => budgetFor(none, {}, { maxCost: "0" })).toThrow(/more than 0/);
    expect(() => budgetFor(none, {}, { maxTokens: "+5k" })).toThrow(/give the cap itself/);
  });
});

describe("budget - what a person following the run sees", () => {
  const base = { runId: RUN, at: NOW };
  it("spend of running attempts counts live, finished attempts replace it; the budget and a budget stop are known", () => {
    const p = new RunProgress();
    p.apply({ type: "run.accepted", ...base, name: "g", tasks: [{ id: "a", needs: [], priority: "normal" }, { id: "b", needs: [], priority: "normal" }], queued: ["a", "b"], budget: { maxCostUsd: 1, onExceed: "wait" } });
    p.apply({ type: "task.started", ...base, taskId: "a", attempt: 1, workerId: "w1" });
    p.apply(usage("a", 1, 0.25));
    p.apply(usage("a", 1, 0.4));
    expect(p.costUsd).toBeCloseTo(0.4, 9);
    expect(renderFrame(p, { width: 100, height: 20, now: Date.parse(NOW), color: false }).join("\n")).toContain("$0.40 of $1.00");
    p.apply({ type: "task.succeeded", ...base, taskId: "a", attempt: 1, workerId: "w1", files: [], startedAt: NOW, finishedAt: NOW, costUsd: 0.45 });
    expect(p.costUsd).toBeCloseTo(0.45, 9);
    const wait = { message: "the run's budget would be passed", spentUsd: 0.45, tokens: 0, reservedUsd: 0, reservedTokens: 0, maxCostUsd: 1, next: { taskId: "b", costUsd: 0.6, tokens: 0, basis: "x" }, waiting: 1 };
    p.apply({ type: "run.needs_attention", ...base, round: 1, tasks: [], budget: wait });
    expect(p.budgetWait).toEqual({ message: wait.message, nextTaskId: "b" });
    expect(renderFrame(p, { width: 120, height: 20, now: Date.parse(NOW), color: false }).join("\n")).toContain(`budget: 'b' would pass it; ado budget raise ${RUN} <usd>`);
    p.apply({ type: "run.budget", ...base, by: "me", maxCostUsd: 2, previousMaxCostUsd: 1 });
    p.apply({ type: "run.continued", ...base, round: 1 });
    expect(p.budget).toEqual({ maxCostUsd: 2, maxTokens: undefined });
    expect(p.budgetWait).toBeUndefined();
  });
});
