import { describe, expect, it } from "vitest";
import { afterCommit, type BranchFacts, planAfterAgent, planBranches } from "../../src/actors/worker/decide.js";
import type { TaskFailure } from "../../src/runtime/messages.js";

const fail = (kind: TaskFailure["kind"], retryable = true): { ok: false; failure: TaskFailure } => ({ ok: false, failure: { kind, retryable, message: kind } });

describe("worker decisions - after the agent", () => {
  it("without a worktree, reports how the agent ended and does nothing else", () => {
    expect(planAfterAgent({ end: { ok: true }, worktree: false, remote: false })).toEqual({ kind: "report" });
    expect(planAfterAgent({ end: fail("interrupted"), worktree: false, remote: true })).toEqual({ kind: "report" });
  });

  it("an interrupted attempt is checkpointed on its branch (the next attempt resumes from it)", () => {
    expect(planAfterAgent({ end: fail("interrupted"), worktree: true, remote: false })).toEqual({ kind: "checkpoint" });
  });

  it("any other failure archives the attempt's work under its attempt ref", () => {
    for (const kind of ["exit", "timeout", "cancelled", "agent_missing"] as const) {
      expect(planAfterAgent({ end: fail(kind, false), worktree: true, remote: false })).toEqual({ kind: "archive", failure: fail(kind, false).failure });
    }
  });

  it("a success commits what the agent left", () => {
    expect(planAfterAgent({ end: { ok: true }, worktree: true, remote: true })).toEqual({ kind: "commit" });
  });
});

describe("worker decisions - after the commit", () => {
  it("work is kept for the merge; in remote mode it is pushed and the worktree removed; no work, removed", () => {
    expect(afterCommit({ changed: true, remote: false })).toEqual({ kind: "keepForMerge" });
    expect(afterCommit({ changed: true, remote: true })).toEqual({ kind: "pushAndRemove" });
    expect(afterCommit({ changed: false, remote: false })).toEqual({ kind: "removeUnchanged" });
    expect(afterCommit({ changed: false, remote: true })).toEqual({ kind: "removeUnchanged" });
  });
});

describe("worker decisions - what the agent did with git", () => {
  const B = "b".repeat(40);
  const H = "h".repeat(40);
  const T = "t".repeat(40);
  const facts = (over: Partial<BranchFacts> = {}): BranchFacts => ({
    branch: "ado/r/t",
    base: B,
    head: B,
    headBranch: "ado/r/t",
    taskTip: B,
    onBase: true,
    belowBase: false,
    taskInHead: true,
    strays: [],
    ...over,
  });
  const stray = (branch: string, tip: string, over: Partial<BranchFacts["strays"][number]> = {}) => ({ branch, tip, onBase: true, inHead: false, ...over });

  it("left alone, or commits on the task branch itself: as it is", () => {
    expect(planBranches(facts())).toEqual({ kind: "asIs" });
    expect(planBranches(facts({ head: H, taskTip: H }))).toEqual({ kind: "asIs" });
    // A branch of its own whose commits HEAD holds: nothing to land, the branch goes later.
    expect(planBranches(facts({ head: H, taskTip: H, strays: [stray("x", H, { inHead: true })] }))).toEqual({ kind: "asIs" });
  });

  it("HEAD on a branch of its own, or detached, descending from the base: lands there", () => {
    expect(planBranches(facts({ head: H, headBranch: "side", strays: [stray("side", H, { inHead: true })] }))).toMatchObject({ kind: "land", from: B, to: H, fastForward: false, what: expect.stringContaining("branch 'side'") });
    expect(planBranches(facts({ head: H, headBranch: undefined }))).toMatchObject({ kind: "land", from: B, to: H, what: expect.stringContaining("detached HEAD") });
  });

  it("back on an untouched task branch, clean, with one branch of its own holding commits: fast-forwards to it; not when unclean or unknown", () => {
    expect(planBranches(facts({ clean: true, strays: [stray("x", H)] }))).toMatchObject({ kind: "land", from: B, to: H, fastForward: true });
    expect(planBranches(facts({ clean: false, strays: [stray("x", H)] }))).toMatchObject({ kind: "refuse", why: expect.stringContaining("'x'") });
    expect(planBranches(facts({ strays: [stray("x", H)] }))).toMatchObject({ kind: "refuse" });
  });

  it("refuses what it cannot tell: below the base, history rewritten, work in two places, HEAD elsewhere off the base", () => {
    expect(planBranches(facts({ head: H, taskTip: H, belowBase: true, onBase: false }))).toMatchObject({ kind: "refuse", why: expect.stringContaining("below its base") });
    expect(planBranches(facts({ head: H, taskTip: H, onBase: false }))).toMatchObject({ kind: "refuse", why: expect.stringContaining("rewrote its history") });
    expect(planBranches(facts({ head: H, taskTip: H, strays: [stray("x", T)] }))).toMatchObject({ kind: "refuse", why: expect.stringContaining("besides the task branch") });
    expect(planBranches(facts({ head: H, headBranch: "side", taskTip: T, taskInHead: false }))).toMatchObject({ kind: "refuse", why: expect.stringContaining("both on the task branch") });
    expect(planBranches(facts({ head: H, headBranch: "p2", strays: [stray("p2", H, { inHead: true }), stray("p1", T)] }))).toMatchObject({ kind: "refuse", why: expect.stringContaining("'p1'") });
    expect(planBranches(facts({ head: H, headBranch: "side", onBase: false }))).toMatchObject({ kind: "refuse", why: expect.stringContaining("does not descend from the base") });
  });

  it("a refusal fails a succeeded attempt (its work archived, retryable); a failed one keeps its own failure", () => {
    const refuse = { kind: "refuse" as const, why: "the agent did x" };
    expect(planAfterAgent({ end: { ok: true }, worktree: true, remote: false, branches: refuse, attemptRef: "refs/ado/attempts/r/t/1" })).toEqual({
      kind: "archive",
      failure: { kind: "git", retryable: true, message: "the agent did x: the attempt's work is kept under refs/ado/attempts/r/t/1, not merged" },
    });
    expect(planAfterAgent({ end: fail("interrupted"), worktree: true, remote: false, branches: refuse })).toEqual({ kind: "archive", failure: fail("interrupted").failure });
  });
});
