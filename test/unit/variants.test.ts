import { describe, expect, it } from "vitest";
import { acceptRun, applyTaskResult, buildState, reconcile, type Effect, type RunState } from "../../src/actors/scheduler/run-state.js";
import { GraphError } from "../../src/runtime/errors.js";
import { checkAgents, GraphDefSchema, parseGraph, SelectSchema } from "../../src/runtime/graph.js";
import { SCHEMAS, type AdoEvent, type EventOf, type TaskFailure, type TaskResult, type TaskWork, type VariantRecord } from "../../src/runtime/messages.js";
import { judgeBranch, variantBranch, variantRef } from "../../src/runtime/names.js";
import { needsJudge, parseScore, selectVariant } from "../../src/runtime/variants.js";

const NOW = "2026-01-01T00:00:00.000Z";
const BASE = "b".repeat(40);
const RUN = "r1";
const sha = (c: string) => c.repeat(40);

const variant = (n: number, patch: Partial<VariantRecord> = {}): VariantRecord => ({ n, attempt: n, status: "succeeded", files: [], costUsd: 0, tokens: 0, order: n, ...patch });
const validate = SelectSchema.parse({ validate: "npm test" });
const score = SelectSchema.parse({ score: "./score.sh" });

describe("variants - selectVariant", () => {
  it("validate - the first to pass, in the order they ended, wins", () => {
    const pick = selectVariant(validate, [variant(1, { passed: true, order: 3 }), variant(2, { passed: false, order: 1 }), variant(3, { passed: true, order: 2 })]);
    expect(pick.winner?.n).toBe(3);
    expect(pick.reason).toContain("variant 3 of 3 was the first to pass `npm test`");
  });

  it("validate - failed attempts never win; none passing says what each did", () => {
    const pick = selectVariant(validate, [variant(1, { status: "failed", error: "exit 1\nmore" }), variant(2, { passed: false, detail: "1 test failed" })]);
    expect(pick.winner).toBeUndefined();
    expect(pick.reason).toBe("no variant passed `npm test` (variant 1: its attempt failed: exit 1; variant 2: did not pass: 1 test failed)");
  });

  it("score - the highest wins, ties go to the one that ended first; no score does not compete", () => {
    const pick = selectVariant(score, [variant(1, { score: 5, order: 2 }), variant(2, { order: 1 }), variant(3, { score: 7, order: 3 }), variant(4, { score: 7, order: 1 })]);
    expect(pick.winner?.n).toBe(4);
    expect(pick.reason).toContain("variant 4 of 4 scored highest (7)");
    expect(selectVariant(score, [variant(1, { score: -2 }), variant(2, { score: -1 })]).winner?.n).toBe(2);
    expect(selectVariant(score, [variant(1), variant(2, { status: "failed" })]).winner).toBeUndefined();
  });

  it("judge - the variant the judge named wins; one candidate needs no judge; a verdict naming none says so", () => {
    const judge = SelectSchema.parse({ judge: "claude" });
    const vs = [variant(1), variant(2), variant(3, { status: "failed" })];
    expect(needsJudge(judge, vs, undefined)).toBe(true);
    expect(needsJudge(judge, vs, { n: 2 })).toBe(false);
    expect(needsJudge(validate, vs, undefined)).toBe(false);
    expect(selectVariant(judge, vs, { n: 2 })).toMatchObject({ winner: { n: 2 }, reason: "the judge (claude) chose variant 2 of 3" });
    expect(selectVariant(judge, vs, { n: 3 }).reason).toBe("the judge (claude) named no variant that succeeded (it said 3; candidates: 1, 2)");
    expect(selectVariant(judge, vs, {}).reason).toContain("no number on the last line of its answer");
    expect(selectVariant(judge, vs, { error: "auth failed\nlogin" }).reason).toBe("the judge (claude) failed: auth failed");
    const one = [variant(1, { status: "failed" }), variant(2)];
    expect(needsJudge(judge, one, undefined)).toBe(false);
    expect(selectVariant(judge, one, undefined).winner?.n).toBe(2);
    expect(selectVariant(judge, [variant(1, { status: "failed" })], undefined).winner).toBeUndefined();
  });

  it("parseScore - the last number on the last non-empty line", () => {
    expect(parseScore("building\n0.87\n")).toBe(0.87);
    expect(parseScore("score: 42 (of 100)\n\n")).toBe(100);
    expect(parseScore("score: 42")).toBe(42);
    expect(parseScore("-3")).toBe(-3);
    expect(parseScore("1e3")).toBe(1000);
    expect(parseScore("42\nno number here")).toBeUndefined();
    expect(parseScore("")).toBeUndefined();
  });
});

describe("variants - graph", () => {
  const graph = (task: Record<string, unknown>) => `tasks:\n  - ${JSON.stringify({ id: "t", run: "true", ...task })}\n`;
  const refused = (task: Record<string, unknown>) => {
    try {
      parseGraph(graph(task), "g.yaml");
    } catch (err) {
      expect(err).toBeInstanceOf(GraphError);
      return (err as Error).message;
    }
    throw new Error("accepted");
  };

  it("graph - variants and select in a graph file", () => {
    const g = parseGraph(graph({ variants: 3, select: { validate: "npm test", timeout: "2m" } }));
    expect(g.tasks[0]!.variants).toBe(3);
    expect(g.tasks[0]!.select).toEqual({ validate: "npm test", timeoutMs: 120_000 });
    expect(parseGraph(graph({ agent: "claude", variants: ["claude", "codex"], select: { score: "./s" } })).tasks[0]!.select!.timeoutMs).toBe(600_000);
  });

  it("graph - bad variants and select say what to do", () => {
    expect(refused({ variants: 1, select: { validate: "x" } })).toBe("g.yaml: task 't': variants must be a whole number from 2 to 10 (or a list of 2 to 10 agents), got 1");
    expect(refused({ variants: 11, select: { validate: "x" } })).toContain("from 2 to 10");
    expect(refused({ variants: 2.5, select: { validate: "x" } })).toContain("got 2.5");
    expect(refused({ variants: ["claude"], select: { validate: "x" } })).toContain("lists 1 agent(s): list 2 to 10");
    expect(refused({ variants: 3 })).toContain("runs 3 variants but has no rule to pick one: add select:");
    expect(refused({ select: { validate: "x" } })).toContain("'select' picks one of the task's variants, but it has none");
    expect(refused({ variants: 2, select: {} })).toContain("select needs exactly one rule, validate, score or judge");
    expect(refused({ variants: 2, select: { validate: "a", score: "b" } })).toContain("it has validate and score");
    expect(refused({ variants: 2, select: { valdate: "x" } })).toContain("unknown field 'valdate'");
    expect(refused({ variants: ["shell", "claude"], run: undefined, agent: "claude", select: { validate: "x" } })).toContain("uses the shell agent but has no 'run' command");
  });

  it("graph - each listed variant's agent must exist", () => {
    const g = parseGraph(graph({ agent: "claude", variants: ["claude", "cdex"], select: { validate: "x" } }));
    expect(() => checkAgents(g, ["claude", "codex", "shell"])).toThrow(/unknown agent 'cdex' \(did you mean 'codex'\?\)/);
  });
});

type Ready = Extract<Effect, { type: "ready" }>;
const readyWork = (effects: Effect[]): TaskWork[] => effects.flatMap((e) => (e.type === "ready" ? [(e as Ready).work] : []));
const events = (effects: Effect[]): AdoEvent[] => effects.flatMap((e) => (e.type === "event" ? [e.event] : []));
function eventsOf<T extends AdoEvent["type"]>(effects: Effect[], type: T): EventOf<T>[] {
  return events(effects).filter((e): e is EventOf<T> => e.type === type);
}
const merges = (effects: Effect[]) => effects.flatMap((e) => (e.type === "merge" ? [e.request] : []));

function start(select: Record<string, unknown>, extra: { attempts?: number; variants?: number | string[]; providers?: string[]; model?: string } = {}) {
  const graph = GraphDefSchema.parse({
    name: "g",
    tasks: [
      {
        id: "t",
        agent: "shell",
        run: "true",
        variants: extra.variants ?? 3,
        select,
        retry: { attempts: extra.attempts ?? 1 },
        ...(extra.providers ? { providers: extra.providers } : {}),
        ...(extra.model ? { model: extra.model } : {}),
      },
      { id: "d", agent: "shell", run: "true", needs: ["t"] },
    ],
  });
  const outcome = acceptRun({ type: "run.submit", runId: RUN, graph, repo: "/repo", baseCommit: BASE, submittedAt: NOW }, NOW);
  if (!outcome.ok) throw new Error(outcome.reason);
  return outcome;
}

function result(attempt: number, n: number, patch: Partial<TaskResult> = {}): TaskResult {
  return {
    type: "task.result",
    runId: RUN,
    taskId: "t",
    attempt,
    workerId: `w${n}`,
    status: "succeeded",
    branch: variantBranch(RUN, "t", n),
    commit: sha(String(n)),
    files: [`v${n}.txt`],
    startedAt: NOW,
    finishedAt: NOW,
    outputTail: "",
    summary: `variant ${n}`,
    costUsd: 0.5,
    ...patch,
  };
}
const fail = (attempt: number, n: number, failure: Partial<TaskFailure> = {}): TaskResult =>
  result(attempt, n, { status: "failed", commit: undefined, files: [], failure: { message: "exit 1", retryable: true, kind: "exit", ...failure } });
const checked = (n: number, c: { passed?: boolean; score?: number }) => ({ variant: { n, ref: variantRef(RUN, "t", n), detail: "", ...c } });

describe("variants - scheduler", () => {
  it("scheduler - a best-of-3 task queues three attempts, each a variant on its own branch", () => {
    const { state, effects } = start({ validate: "npm test" });
    const work = readyWork(effects);
    expect(work.map((w) => [w.attempt, w.variant, w.branch])).toEqual([
      [1, { n: 1, of: 3 }, variantBranch(RUN, "t", 1)],
      [2, { n: 2, of: 3 }, variantBranch(RUN, "t", 2)],
      [3, { n: 3, of: 3 }, variantBranch(RUN, "t", 3)],
    ]);
    for (const w of work) SCHEMAS.TaskWork.schema.parse(w);
    expect(state.tasks.get("t")!.rec).toMatchObject({ status: "queued", attempts: 3, variantRound: 1 });
    // Written at once: which attempt is which variant is not derivable after a restart.
    expect(effects).toContainEqual({ type: "saveTask", taskId: "t" });
    expect(state.inFlight).toBe(1);
  });

  it("scheduler - validate: only the first to pass is merged, after every variant ended; the cost counts them all", () => {
    const { state } = start({ validate: "npm test" });
    const e1 = applyTaskResult(state, result(2, 2, { ...checked(2, { passed: true }) }), NOW);
    expect(merges(e1)).toEqual([]);
    const e2 = applyTaskResult(state, result(1, 1, { ...checked(1, { passed: true }) }), NOW);
    expect(merges(e2)).toEqual([]);
    const e3 = applyTaskResult(state, fail(3, 3), NOW);
    const [merge] = merges(e3);
    expect(merge).toMatchObject({ taskId: "t", commit: sha("2"), branch: variantBranch(RUN, "t", 2), attempt: 2 });
    expect(merges(e3)).toHaveLength(1);
    const [sel] = eventsOf(e3, "task.selected");
    expect(sel).toMatchObject({ winner: 2, rule: "validate", attempt: 2 });
    expect(sel!.variants.map((v) => [v.n, v.status])).toEqual([[1, "lost"], [2, "won"], [3, "failed"]]);
    expect(sel!.variants[0]!.ref).toBe(variantRef(RUN, "t", 1));
    expect(eventsOf(e3, "task.succeeded")[0]).toMatchObject({ attempt: 2, commit: sha("2") });
    const t = state.tasks.get("t")!;
    expect(t.rec).toMatchObject({ status: "merging", commit: sha("2"), files: ["v2.txt"] });
    expect(t.rec.costUsd).toBeCloseTo(1.5);
    expect(state.run.costUsd).toBeCloseTo(1.5);
    SCHEMAS.TaskRecord.schema.parse(t.rec);
  });

  it("scheduler - dependents see only the winner", async () => {
    const { state } = start({ score: "./score.sh" });
    applyTaskResult(state, result(1, 1, checked(1, { score: 3 })), NOW);
    applyTaskResult(state, result(2, 2, checked(2, { score: 9 })), NOW);
    const e = applyTaskResult(state, result(3, 3, checked(3, { score: 4 })), NOW);
    expect(merges(e)[0]).toMatchObject({ commit: sha("2") });
    const { applyMergeResult } = await import("../../src/actors/scheduler/run-state.js");
    const merged = applyMergeResult(state, { type: "merge.result", runId: RUN, taskId: "t", status: "merged", integrationCommit: sha("e"), round: 0, message: "" } as never, NOW);
    const [dep] = readyWork(merged);
    expect(dep!.taskId).toBe("d");
    expect(dep!.inputs[0]).toMatchObject({ taskId: "t", commit: sha("2"), branch: variantBranch(RUN, "t", 2) });
    expect(dep!.baseCommit).toBe(sha("e"));
  });

  it("scheduler - all variants failing fails the task, and its dependents are skipped", () => {
    const { state } = start({ validate: "npm test" });
    applyTaskResult(state, fail(1, 1), NOW);
    applyTaskResult(state, result(2, 2, checked(2, { passed: false })), NOW);
    const e = applyTaskResult(state, fail(3, 3, { retryable: false, kind: "agent_missing" }), NOW);
    expect(merges(e)).toEqual([]);
    const [f] = eventsOf(e, "task.failed");
    expect(f).toMatchObject({ willRetry: false, kind: "exit" });
    expect(f!.error).toContain("3 variants, round 1: no variant passed `npm test`");
    expect(state.tasks.get("t")!.rec.status).toBe("failed");
    expect(state.tasks.get("d")!.rec.status).toBe("skipped");
    expect(eventsOf(e, "task.selected")[0]!.winner).toBeUndefined();
  });

  it("scheduler - a failed round is retried as a new round per the retry policy (attempts count rounds)", () => {
    const { state } = start({ validate: "npm test" }, { attempts: 2 });
    applyTaskResult(state, fail(1, 1), NOW);
    applyTaskResult(state, fail(2, 2), NOW);
    const e = applyTaskResult(state, result(3, 3, checked(3, { passed: false })), NOW);
    expect(eventsOf(e, "task.failed")[0]!.willRetry).toBe(true);
    const again = readyWork(e);
    expect(again.map((w) => [w.attempt, w.variant!.n])).toEqual([[4, 1], [5, 2], [6, 3]]);
    expect(again.every((w) => w.notBefore > Date.parse(NOW))).toBe(true);
    expect(state.tasks.get("t")!.rec).toMatchObject({ status: "queued", variantRound: 2, attempts: 6 });
    // A late result of the first round changes nothing.
    expect(merges(applyTaskResult(state, result(3, 3, checked(3, { passed: true })), NOW))).toEqual([]);
    applyTaskResult(state, fail(4, 1), NOW);
    applyTaskResult(state, fail(5, 2), NOW);
    const last = applyTaskResult(state, fail(6, 3), NOW);
    expect(eventsOf(last, "task.failed")[0]).toMatchObject({ willRetry: false, kind: "exit" });
    expect(state.tasks.get("t")!.rec.status).toBe("failed");
  });

  it("scheduler - a variant whose worker died runs again as a new attempt; the others keep theirs", () => {
    const { state } = start({ validate: "npm test" });
    const e = applyTaskResult(state, fail(2, 2, { kind: "interrupted", agentStarted: true }), NOW);
    const [again] = readyWork(e);
    expect(again).toMatchObject({ attempt: 4, variant: { n: 2, of: 3 }, branch: variantBranch(RUN, "t", 2) });
    expect(again!.resume).toBeUndefined();
    expect(state.tasks.get("t")!.rec.variants!.map((v) => [v.n, v.attempt, v.status])).toEqual([[1, 1, "queued"], [2, 4, "queued"], [3, 3, "queued"]]);
    // The lost attempt's duplicate result is stale.
    expect(applyTaskResult(state, fail(2, 2, { kind: "interrupted" }), NOW)).toEqual([]);
    applyTaskResult(state, result(1, 1, checked(1, { passed: false })), NOW);
    applyTaskResult(state, result(3, 3, checked(3, { passed: false })), NOW);
    const end = applyTaskResult(state, result(4, 2, checked(2, { passed: true })), NOW);
    expect(merges(end)[0]).toMatchObject({ attempt: 4, commit: sha("2") });
  });

  it("scheduler - a restart before the round was stored queues the same three attempts again; a stored round is kept", () => {
    const { state } = start({ validate: "npm test" });
    const fresh = buildState(state.run, 1, new Map());
    expect(readyWork(reconcile(fresh, NOW)).map((w) => [w.attempt, w.variant!.n])).toEqual([[1, 1], [2, 2], [3, 3]]);
    const rec = state.tasks.get("t")!.rec;
    const stored = buildState(state.run, 1, new Map([["t", { rec, rev: 1 }]]));
    expect(readyWork(reconcile(stored, NOW))).toEqual([]);
    applyTaskResult(stored, result(1, 1, checked(1, { passed: true })), NOW);
    applyTaskResult(stored, result(2, 2, checked(2, { passed: true })), NOW);
    expect(merges(applyTaskResult(stored, result(3, 3, checked(3, { passed: true })), NOW))[0]).toMatchObject({ attempt: 1 });
  });

  it("scheduler - variants: [agents] runs each variant on its agent; with providers each starts at the next one", () => {
    const listed = start({ validate: "x" }, { variants: ["shell", "noop"] });
    expect(readyWork(listed.effects).filter((w) => w.taskId === "t").map((w) => w.task.agent)).toEqual(["shell", "noop"]);
    const prov = start({ validate: "x" }, { variants: 3, providers: ["a", "b"] });
    expect(readyWork(prov.effects).map((w) => w.task.providers)).toEqual([["a", "b"], ["b", "a"], ["a", "b"]]);
  });

  it("scheduler - judge: once every variant ended, the candidates go to the judge as one more attempt; its verdict picks the winner", () => {
    const { state } = start({ judge: "claude" });
    applyTaskResult(state, result(1, 1), NOW);
    applyTaskResult(state, fail(2, 2), NOW);
    const e = applyTaskResult(state, result(3, 3), NOW);
    const [judge] = readyWork(e);
    expect(judge).toMatchObject({ attempt: 4, branch: judgeBranch(RUN, "t"), judge: { candidates: [{ n: 1, commit: sha("1") }, { n: 3, commit: sha("3") }] } });
    expect(judge!.task.agent).toBe("claude");
    expect(judge!.task.prompt).toContain("1.diff, 3.diff");
    expect(judge!.variant).toBeUndefined();
    SCHEMAS.TaskWork.schema.parse(judge);
    expect(merges(e)).toEqual([]);
    // Its worker died: the judge runs again as the next attempt.
    const again = readyWork(applyTaskResult(state, fail(4, 9, { kind: "interrupted" }), NOW));
    expect(again.map((w) => [w.attempt, !!w.judge])).toEqual([[5, true]]);
    const end = applyTaskResult(state, result(5, 9, { judged: 3, costUsd: 0.25 }), NOW);
    expect(merges(end)[0]).toMatchObject({ commit: sha("3"), attempt: 3 });
    expect(eventsOf(end, "task.selected")[0]).toMatchObject({ rule: "judge", winner: 3, reason: "the judge (claude) chose variant 3 of 3" });
    // Every variant and both judge attempts count.
    expect(state.run.costUsd).toBeCloseTo(0.5 * 4 + 0.25);
  });

  it("scheduler - judge: the task's settings for its own agent are not given to another judge agent", () => {
    const { state } = start({ judge: "claude" }, { variants: 2, model: "the-task-model" });
    applyTaskResult(state, result(1, 1), NOW);
    const [judge] = readyWork(applyTaskResult(state, result(2, 2), NOW));
    expect(judge!.task.agent).toBe("claude");
    expect(judge!.task.model).toBeUndefined();
    expect("run" in judge!.task).toBe(false);
  });

  it("scheduler - judge: a verdict naming no candidate fails the round", () => {
    const { state } = start({ judge: "claude" }, { variants: 2 });
    applyTaskResult(state, result(1, 1), NOW);
    applyTaskResult(state, result(2, 2), NOW);
    const end = applyTaskResult(state, result(3, 9, { judged: 7 }), NOW);
    expect(eventsOf(end, "task.failed")[0]!.error).toContain("the judge (claude) named no variant that succeeded (it said 7; candidates: 1, 2)");
    expect(state.tasks.get("t")!.rec.status).toBe("failed");
  });

  it("scheduler - cancelling the task while variants run counts what they cost when their results come", () => {
    const { state } = start({ validate: "x" });
    applyTaskResult(state, result(1, 1, checked(1, { passed: true })), NOW);
    const e = applyTaskResult(state, fail(2, 2, { kind: "cancelled", retryable: false, message: "cancelled" }), NOW);
    expect(eventsOf(e, "task.cancelled")).toHaveLength(1);
    expect(state.tasks.get("t")!.rec.status).toBe("cancelled");
    applyTaskResult(state, fail(3, 3, { kind: "cancelled" }), NOW);
    expect(state.run.costUsd).toBeCloseTo(1.5);
  });
});

// Keep the helper types used (noUnusedLocals covers tests too).
export type { RunState };
