import { describe, expect, it } from "vitest";
import { CONFLICTS_LIMIT, SIDE_LIMIT, batchable, capConflicts, escalationDetails, planSteps, replayed } from "../../src/actors/merger/decide.js";
import type { HitlRecord, MergeIntoRequest, MergeRequest } from "../../src/runtime/messages.js";

const sha = (c: string) => c.repeat(40);

const req = (taskId: string, over: Partial<MergeRequest> = {}): MergeRequest => ({
  type: "merge.request",
  runId: "r1",
  taskId,
  attempt: 1,
  repo: "/repo",
  commit: sha(taskId.slice(-1)),
  branch: `ado/r1/${taskId}`,
  baseCommit: sha("0"),
  integrationBranch: "ado/r1/integration",
  releaseOnly: false,
  settings: { mode: "merge", rules: [] },
  prompt: `do ${taskId}`,
  related: [],
  ...over,
});

const into = (runId: string): MergeIntoRequest => ({ type: "merge.into", runId, repo: "/repo", integrationBranch: `ado/${runId}/integration`, baseCommit: sha("0"), into: "main", updateCheckout: false });

describe("merger decide - steps of a batch", () => {
  it("merger decide - a run's first merges form one step; other runs go apart; the rest are steps of their own, in order", () => {
    const batch = [
      req("a"),
      req("b", { runId: "r2", integrationBranch: "ado/r2/integration" }),
      req("c"),
      req("d", { resolution: { round: 1, choice: "theirs", by: "p", at: "2026-01-01T00:00:00.000Z" } }),
      req("e", { releaseOnly: true }),
      into("r2"),
      req("f"),
    ];
    expect(planSteps(batch)).toEqual([
      [
        { runId: "r1", kind: "merge", indexes: [0, 2, 6] },
        { runId: "r1", kind: "resolve", index: 3 },
        { runId: "r1", kind: "release", index: 4 },
      ],
      [
        { runId: "r2", kind: "merge", indexes: [1] },
        { runId: "r2", kind: "into", index: 5 },
      ],
    ]);
  });

  it("merger decide - requests of one run with other settings (an older request) are not merged with the rest", () => {
    const steps = planSteps([req("a"), req("b", { settings: { mode: "squash", rules: [] } }), req("c")]);
    expect(steps).toEqual([
      [
        { runId: "r1", kind: "merge", indexes: [0, 2] },
        { runId: "r1", kind: "merge", indexes: [1] },
      ],
    ]);
  });

  it("merger decide - merge and squash without validation are batched; linear and validated runs merge one at a time", () => {
    expect(batchable({ mode: "merge", rules: [] })).toBe(true);
    expect(batchable({ mode: "squash", rules: [{ paths: ["*.md"], strategy: "union" }] })).toBe(true);
    expect(batchable({ mode: "linear", rules: [] })).toBe(false);
    expect(batchable({ mode: "merge", rules: [], validate: { run: "npm test", timeoutMs: 60_000 } })).toBe(false);
  });
});

describe("merger decide - what a record tells the scheduler", () => {
  const record = (over: Partial<HitlRecord> = {}): HitlRecord => ({
    id: "r1.b",
    runId: "r1",
    taskId: "b",
    attempt: 1,
    repo: "/repo",
    integrationBranch: "ado/r1/integration",
    branch: "ado/r1/b",
    source: sha("b"),
    base: sha("0"),
    files: ["app.txt"],
    reason: "conflict",
    message: "merge conflict in app.txt",
    conflicts: [],
    prompts: { task: "", related: [] },
    settings: { mode: "merge", rules: [] },
    round: 2,
    state: "open",
    history: [],
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-01T00:00:00.000Z",
    ...over,
  });

  it("merger decide - an open record replays needs_attention at its round; a resolved one its last decision", () => {
    expect(replayed(record())).toMatchObject({ status: "needs_attention", round: 2, hitlId: "r1.b", files: ["app.txt"], reason: "conflict" });
    const merged = record({
      state: "resolved",
      history: [
        { round: 1, choice: "agent", by: "p", at: "2026-01-01T00:00:01.000Z", outcome: "conflict", message: "still" },
        { round: 2, choice: "theirs", by: "p", at: "2026-01-01T00:00:02.000Z", outcome: "merged", message: "merged (merged)", commit: sha("e") },
      ],
    });
    expect(replayed(merged)).toMatchObject({ status: "merged", round: 2, integrationCommit: sha("e") });
  });
});

describe("merger decide - escalation details", () => {
  it("merger decide - a conflict names the already-merged tasks that changed the same files and keeps their prompts", () => {
    const r = req("b", { related: [{ taskId: "a", prompt: "do a", files: ["app.txt"] }, { taskId: "z", prompt: "do z", files: ["other.txt"] }] });
    const details = escalationDetails(
      r,
      { kind: "conflict", files: ["app.txt"], conflicts: [{ path: "app.txt", kind: "content", ours: "A\n", theirs: "B\n" }], messages: "", reason: "no rule matches app.txt" },
      undefined,
      { target: sha("a"), files: [] },
    );
    expect(details).toMatchObject({ id: "r1.b", reason: "conflict", files: ["app.txt"], target: sha("a"), source: sha("b") });
    expect(details.message).toBe("merge conflict in app.txt with task 'a' (already merged): no rule matches app.txt");
    expect(details.prompts).toEqual({ task: "do b", related: [{ taskId: "a", prompt: "do a", files: ["app.txt"] }] });
  });

  it("merger decide - a validation failure records the task's files and the output's last line; a failed choice keeps the previous record's", () => {
    const v = escalationDetails(req("b"), { kind: "validation_failed", candidate: sha("c"), output: "ok\nFAIL: b breaks it\n", exitCode: 1 }, undefined, { files: ["b.txt"] });
    expect(v).toMatchObject({ reason: "validation", files: ["b.txt"], validationOutput: "ok\nFAIL: b breaks it\n" });
    expect(v.message).toMatch(/validation failed \(exit 1\) .*: FAIL: b breaks it$/);
    const previous = { ...v, round: 1, state: "resolving" as const, history: [], createdAt: "x", updatedAt: "x" };
    const e = escalationDetails(req("b"), { kind: "error", message: "no resolver command" }, previous, { files: [] });
    expect(e).toMatchObject({ reason: "validation", files: ["b.txt"], message: "no resolver command", validationOutput: v.validationOutput });
  });

  it("merger decide - conflict sides are cut per side and in all, so a record fits in a KV value", () => {
    const big = "x".repeat(SIDE_LIMIT + 10);
    const many = Array.from({ length: 12 }, (_, i) => ({ path: `f${i}`, kind: "content", base: big, ours: big, theirs: big }));
    const capped = capConflicts(many);
    expect(capped[0]).toMatchObject({ path: "f0", truncated: true });
    expect(capped[0]!.ours!.length).toBe(SIDE_LIMIT);
    const kept = capped.reduce((n, c) => n + (c.base?.length ?? 0) + (c.ours?.length ?? 0) + (c.theirs?.length ?? 0), 0);
    expect(kept).toBe(CONFLICTS_LIMIT);
    expect(capped[11]).toEqual({ path: "f11", kind: "content", truncated: true });
  });
});
