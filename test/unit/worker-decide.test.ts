import { describe, expect, it } from "vitest";
import { afterCommit, planAfterAgent } from "../../src/actors/worker/decide.js";
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
