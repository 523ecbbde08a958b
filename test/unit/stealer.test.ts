import { describe, expect, it } from "vitest";
import { acceptRun, applyTaskResult, isEarly, type Effect } from "../../src/actors/scheduler/run-state.js";
import { Liveness, lostResult, planRecovery, type LeftMessage } from "../../src/actors/stealer/decide.js";
import { decode, encode } from "../../src/runtime/codec.js";
import { GraphDefSchema } from "../../src/runtime/graph.js";
import { SCHEMAS, type TaskResult, type WorkerRecord } from "../../src/runtime/messages.js";
import { taskWork, workerRecord } from "../helpers/records.js";
import { attemptKey } from "../../src/runtime/names.js";

const HB = 1_000;
const T0 = 5_000_000;

const record = (workerId: string, over: Partial<WorkerRecord> = {}): WorkerRecord => workerRecord({ workerId, running: 1, ...over });

const ids = (l: Liveness, now: number) => l.suspects(now).map((s) => `${s.workerId}:${s.reason}`);

describe("stealer - dead worker detection, by the stealer's own clock", () => {
  it("a worker is suspected after 3 heartbeats without a new record, whatever time its records carry", () => {
    const l = new Liveness(HB);
    // Clocks of other hosts are never read: one worker says it beat in 2001, one in 2099.
    l.put("w-old", record("w-old", { heartbeatAt: "2001-01-01T00:00:00.000Z" }), 1, T0);
    l.put("w-new", record("w-new", { heartbeatAt: "2099-01-01T00:00:00.000Z" }), 2, T0);
    expect(ids(l, T0 + 3 * HB - 1)).toEqual([]);
    // w-old keeps beating (new revisions), w-new falls silent.
    for (let t = 1; t <= 5; t++) l.put("w-old", record("w-old"), 2 + t, T0 + t * HB);
    expect(ids(l, T0 + 3 * HB)).toEqual(["w-new:silent"]);
    expect(l.suspects(T0 + 4_500)[0]).toMatchObject({ workerId: "w-new", silentMs: 4_500, revision: 2 });
    expect(ids(l, T0 + 8 * HB)).toEqual(["w-new:silent", "w-old:silent"]); // longest silent first
  });

  it("a replayed record (same revision, e.g. after a watch restart) is no sign of life", () => {
    const l = new Liveness(HB);
    expect(l.put("w", record("w"), 7, T0)).toBe(true);
    expect(l.put("w", record("w"), 7, T0 + 2 * HB)).toBe(false);
    expect(l.put("w", record("w"), 6, T0 + 2 * HB)).toBe(false);
    expect(ids(l, T0 + 3 * HB)).toEqual(["w:silent"]);
    expect(l.put("w", record("w"), 8, T0 + 3 * HB)).toBe(true);
    expect(ids(l, T0 + 3 * HB)).toEqual([]);
  });

  it("a deleted record is suspected at once; one that answers is checked again later, a stopping one sooner", () => {
    const l = new Liveness(HB);
    l.put("w", record("w"), 1, T0);
    l.put("d", record("d", { state: "draining" }), 2, T0);
    l.deleted("w", 3, T0 + 100);
    expect(ids(l, T0 + 100)).toEqual(["w:deleted"]);
    // It answered its ping (still stopping): one heartbeat later it is asked again.
    l.alive("w", T0 + 100);
    expect(ids(l, T0 + 100 + HB - 1)).toEqual([]);
    expect(ids(l, T0 + 100 + HB)).toEqual(["w:deleted"]);
    // A draining worker writes no records but answers: it is never stolen from while it does.
    expect(ids(l, T0 + 3 * HB)).toContain("d:silent");
    l.alive("d", T0 + 3 * HB);
    expect(ids(l, T0 + 6 * HB - 1)).not.toContain("d:silent");
    expect(ids(l, T0 + 6 * HB)).toContain("d:silent");
  });

  it("after the stealer's own connection was down nothing is suspected for 3 heartbeats; a forgotten worker is gone", () => {
    const l = new Liveness(HB);
    l.put("w", record("w"), 1, T0);
    l.refreshAll(T0 + 10 * HB); // reconnected after a long cut
    expect(ids(l, T0 + 12 * HB)).toEqual([]);
    expect(ids(l, T0 + 13 * HB)).toEqual(["w:silent"]);
    l.forget("w");
    expect(ids(l, T0 + 20 * HB)).toEqual([]);
    expect(l.known()).toEqual([]);
  });

  it("a record arriving during the reconnect grace does not shorten it (issue 9.5: a live worker declared dead seconds after a server restart)", () => {
    const l = new Liveness(HB);
    l.put("w", record("w"), 1, T0);
    // The stealer reconnects and grants 3 heartbeats plus the workers' reconnect backoff.
    const grace = 3 * HB + 5_000;
    l.refreshAll(T0 + 10 * HB, grace);
    // The worker's first record after the restart arrives at once; then it is quiet while
    // its own connection settles.
    expect(l.put("w", record("w"), 2, T0 + 10 * HB + 100)).toBe(true);
    expect(ids(l, T0 + 10 * HB + 100 + 3 * HB)).toEqual([]);
    expect(ids(l, T0 + 10 * HB + grace - 1)).toEqual([]);
    expect(ids(l, T0 + 10 * HB + grace)).toEqual(["w:silent"]);
    // Past the grace, records count as before: each puts the check 3 heartbeats off.
    l.put("w", record("w"), 3, T0 + 10 * HB + grace + 1);
    expect(ids(l, T0 + 10 * HB + grace + 3 * HB)).toEqual([]);
    expect(ids(l, T0 + 10 * HB + grace + 1 + 3 * HB)).toEqual(["w:silent"]);
  });
});

// ---------------------------------------------------------------- recovery plan

const SHA = "b".repeat(40);
const work = taskWork;
const claim = (workerId: string) => ({ workerId, claimedAt: "2026-01-01T00:00:01.000Z" });

describe("stealer - what to do with a dead worker's messages", () => {
  const left: LeftMessage[] = [
    { seq: 10, work: work("running"), claim: claim("w-dead") },
    { seq: 11, work: work("queued"), claim: null },
    { seq: 12, work: work("elsewhere"), claim: claim("w-other") },
    { seq: 13, error: "expected a 'task.work' payload" },
    { seq: 14, work: work("queued"), claim: null }, // a second copy (redelivered after the dedupe window)
    { seq: 15, work: work("running", 2), claim: claim("w-dead") }, // another attempt: its own key
  ];

  it("running (claimed by it) -> interrupted result; unstarted -> ready again; claimed elsewhere or a copy -> dropped", () => {
    const plan = planRecovery("w-dead", left);
    expect(plan.map((a) => `${a.seq}:${a.kind}`)).toEqual(["10:lost", "11:requeue", "12:drop", "13:deadLetter", "14:drop", "15:lost"]);
    expect(plan[0]).toMatchObject({ key: "r1.running.1", resultId: "r1.running.1.lost", claimedAt: "2026-01-01T00:00:01.000Z" });
    // The msg id names the message moved (its sequence), not only the attempt.
    expect(plan[1]).toMatchObject({ key: "r1.queued.1", msgId: "r1.queued.1.requeue.w-dead.11" });
    expect(plan[2]).toMatchObject({ kind: "drop", why: expect.stringContaining("w-other") });
    expect(plan[5]).toMatchObject({ key: "r1.running.2", resultId: "r1.running.2.lost" });
  });

  it("is a function of what is left: a successor that finds the same messages decides the same, with the same msg ids", () => {
    expect(planRecovery("w-dead", left)).toEqual(planRecovery("w-dead", structuredClone(left)));
    // A predecessor handled (and deleted) the first three: the same messages get the same
    // decisions and msg ids, so what it had already published is deduplicated. The second
    // copy of `queued`, alone now, is re-queued under its own id: a second ready copy of
    // an attempt is harmless (the claim lets one worker run it); a lost one would not be.
    const idOf = (a: ReturnType<typeof planRecovery>[number]) => (a.kind === "lost" ? a.resultId : a.kind === "requeue" ? a.msgId : a.kind);
    const full = new Map(planRecovery("w-dead", left).map((a) => [a.seq, idOf(a)]));
    const rest = planRecovery("w-dead", left.slice(3));
    expect(rest.map((a) => `${a.seq}:${a.kind}`)).toEqual(["13:deadLetter", "14:requeue", "15:lost"]);
    expect(rest.map(idOf)).toEqual(["deadLetter", "r1.queued.1.requeue.w-dead.14", full.get(15)]);
  });

  it("the lost result is a valid scheduler input: failed, interrupted, retryable, naming the dead worker", () => {
    const r = lostResult(work("running"), "w-dead", "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:09.000Z", "died (no heartbeat for 3.2 s)");
    const wire = encode(SCHEMAS.SchedulerInput, r);
    const back = decode(SCHEMAS.SchedulerInput, wire.data, wire.headers) as TaskResult;
    expect(back).toMatchObject({ type: "task.result", runId: "r1", taskId: "running", attempt: 1, workerId: "w-dead", status: "failed" });
    expect(back.failure).toMatchObject({ kind: "interrupted", retryable: true });
    expect(back.failure!.message).toBe("worker w-dead died (no heartbeat for 3.2 s): attempt 1 was lost with it");
    expect(attemptKey(back)).toBe("r1.running.1");
  });
});

// ---------------------------------------------------------------- the scheduler's side

describe("stealer - the scheduler's handling of a lost attempt and of the late result of a worker that was only cut off", () => {
  const NOW = "2026-01-01T00:00:00.000Z";
  const LATER = "2026-01-01T00:01:00.000Z";
  const accept = () => {
    const graph = GraphDefSchema.parse({ tasks: [{ id: "a", run: "true" }, { id: "b", run: "true", needs: ["a"] }] });
    const outcome = acceptRun({ type: "run.submit", runId: "r1", graph, repo: "/repo", baseCommit: SHA, submittedAt: NOW }, NOW);
    if (!outcome.ok) throw new Error(outcome.reason);
    const first = outcome.effects.find((e): e is Extract<Effect, { type: "ready" }> => e.type === "ready")!.work;
    return { state: outcome.state, first };
  };
  const done = (attempt: number, workerId: string, status: "succeeded" | "failed" = "succeeded"): TaskResult => ({
    type: "task.result",
    runId: "r1",
    taskId: "a",
    attempt,
    workerId,
    status,
    ...(status === "failed" ? { failure: { kind: "exit" as const, retryable: true, message: "exit 1" } } : {}),
    commit: "c".repeat(40),
    files: ["a.txt"],
    startedAt: NOW,
    finishedAt: LATER,
    outputTail: "",
    summary: "",
    costUsd: 0,
  });
  const readyOf = (effects: Effect[]) => effects.flatMap((e) => (e.type === "ready" ? [e.work] : []));

  it("the lost attempt runs again at once, from the same base, without using up the retry budget (attempts: 1)", () => {
    const { state, first } = accept();
    const effects = applyTaskResult(state, lostResult(first, "w-dead", NOW, LATER, "died (no heartbeat for 3.0 s)"), LATER);
    const [next] = readyOf(effects);
    expect(next).toMatchObject({ taskId: "a", attempt: 2, notBefore: 0, baseCommit: SHA });
    const failed = effects.find((e) => e.type === "event" && e.event.type === "task.failed");
    expect(failed).toMatchObject({ event: { willRetry: true, workerId: "w-dead", error: expect.stringContaining("w-dead") } });
    // A second copy of the lost result (a successor stealer after the dedupe window): ignored.
    expect(applyTaskResult(state, lostResult(first, "w-dead", NOW, LATER, "died"), LATER)).toEqual([]);
  });

  it("a lost attempt that left a checkpoint: the next attempt starts from its commit and resumes its agent's session", () => {
    const { state, first } = accept();
    const CP = "d".repeat(40);
    const checkpoint = { attempt: 1, commit: CP, sessionId: "sess-1" };
    const lost = lostResult(first, "w-dead", NOW, LATER, "died", true, { checkpoint });
    expect(lost).toMatchObject({ commit: CP, sessionId: "sess-1" });
    const [next] = readyOf(applyTaskResult(state, lost, LATER));
    expect(next).toMatchObject({ taskId: "a", attempt: 2, baseCommit: CP, resume: { fromAttempt: 1, sessionId: "sess-1", commit: CP } });
    expect(state.tasks.get("a")!.rec.sessionId).toBe("sess-1");
  });

  it("a checkpoint of an earlier attempt, or an attempt lost before its agent started, resumes nothing", () => {
    const { first } = accept();
    const older = { attempt: 1, commit: "d".repeat(40), sessionId: "old" };
    const second = { ...first, attempt: 2 };
    expect(lostResult(second, "w-dead", NOW, LATER, "died", true, { checkpoint: older })).not.toHaveProperty("commit");
    expect(lostResult(first, "w-dead", NOW, LATER, "died", false, { checkpoint: older })).not.toHaveProperty("sessionId");
    const { state, first: again } = accept();
    const [next] = readyOf(applyTaskResult(state, lostResult(again, "w-dead", NOW, LATER, "died"), LATER));
    expect(next).not.toHaveProperty("resume");
  });

  it("the cut-off worker's late result for the lost attempt is ignored, before and after the next attempt ends", () => {
    const { state, first } = accept();
    applyTaskResult(state, lostResult(first, "w-cut", NOW, LATER, "died"), LATER);
    // It comes back and reports attempt 1 (success or failure): not the attempt waited for.
    expect(isEarly(state, done(1, "w-cut"))).toBe(false); // not held back either: dropped
    expect(applyTaskResult(state, done(1, "w-cut"), LATER)).toEqual([]);
    expect(applyTaskResult(state, done(1, "w-cut", "failed"), LATER)).toEqual([]);
    expect(state.tasks.get("a")!.rec).toMatchObject({ status: "queued", attempts: 2 });
    // Attempt 2 succeeds on another worker; a still later attempt-1 result changes nothing.
    expect(applyTaskResult(state, done(2, "w-other"), LATER).length).toBeGreaterThan(0);
    expect(state.tasks.get("a")!.rec).toMatchObject({ status: "merging", attempts: 2, workerId: "w-other" });
    expect(applyTaskResult(state, done(1, "w-cut"), LATER)).toEqual([]);
    expect(state.tasks.get("a")!.rec).toMatchObject({ status: "merging", attempts: 2, workerId: "w-other" });
  });

  it("a result the dead worker did send before dying wins over the lost one that follows it", () => {
    const { state, first } = accept();
    expect(applyTaskResult(state, done(1, "w-dead"), LATER).length).toBeGreaterThan(0);
    expect(applyTaskResult(state, lostResult(first, "w-dead", NOW, LATER, "died"), LATER)).toEqual([]);
    expect(state.tasks.get("a")!.rec).toMatchObject({ status: "merging", attempts: 1 });
  });

  it("a task lost again and again ends failed after the interruption allowance, so a crash loop ends", () => {
    const { state, first } = accept();
    let attempt = first;
    for (let i = 1; i < 6; i++) {
      const [next] = readyOf(applyTaskResult(state, lostResult(attempt, `w-${i}`, NOW, LATER, "died"), LATER));
      expect(next?.attempt).toBe(i + 1);
      attempt = next!;
    }
    applyTaskResult(state, lostResult(attempt, "w-6", NOW, LATER, "died"), LATER);
    expect(state.tasks.get("a")!.rec.status).toBe("failed");
  });
});

