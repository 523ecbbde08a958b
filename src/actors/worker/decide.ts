import type { TaskFailure } from "../../runtime/messages.js";

/**
 * The worker's decisions about one attempt, pure: what to do with the task's worktree
 * and branch once the agent has finished, from how the agent ended and what the run
 * is like. The attempt (attempt.ts) gathers the facts and carries the plan out; these
 * functions touch neither git nor NATS, so every case is unit-tested without them.
 */

/** How the agent ended. */
export type AgentEnd = { ok: true } | { ok: false; failure: TaskFailure };

/** What the attempt knows once the agent has finished. */
export interface AfterAgent {
  end: AgentEnd;
  /** Whether the attempt has a worktree (agents that need none report at once). */
  worktree: boolean;
  /** Whether the run has a git remote (remote mode: branches are pushed, worktrees removed at once). */
  remote: boolean;
}

/** What to do with the worktree after the agent. */
export type AttemptPlan =
  /** No worktree: report how the agent ended, nothing else. */
  | { kind: "report" }
  /**
   * The worker is shutting down: commit the work so far on the task branch (the next
   * attempt starts from that commit), push it in remote mode, remove the worktree.
   */
  | { kind: "checkpoint" }
  /**
   * The attempt failed: its work goes to `refs/ado/attempts/<run>/<task>/<n>` (pushed too
   * in remote mode), the worktree is removed and the branch put back at its base.
   */
  | { kind: "archive"; failure: TaskFailure }
  /** The agent succeeded: commit what it left; then `afterCommit` says what becomes of the worktree. */
  | { kind: "commit" };

/** Decides what becomes of an attempt's worktree when the agent has finished. */
export function planAfterAgent(a: AfterAgent): AttemptPlan {
  if (!a.worktree) return { kind: "report" };
  if (!a.end.ok && a.end.failure.kind === "interrupted") return { kind: "checkpoint" };
  if (!a.end.ok) return { kind: "archive", failure: a.end.failure };
  return { kind: "commit" };
}

/** What becomes of a succeeded attempt's worktree once its work is committed. */
export type AfterCommit =
  /** Work on the branch: the worktree waits for the merge coordinator, which removes it. */
  | { kind: "keepForMerge" }
  /** Remote mode: the branch goes to the remote and the worktree goes now (no merger elsewhere could remove it). */
  | { kind: "pushAndRemove" }
  /** Nothing to merge: the worktree goes now. */
  | { kind: "removeUnchanged" };

/**
 * A succeeded attempt's worktree, once committed: kept for the merge when it changed
 * something (pushed and removed at once in remote mode), removed when it did not.
 * `changed` counts every commit the attempt made on its base, the agent's own included.
 */
export function afterCommit(o: { changed: boolean; remote: boolean }): AfterCommit {
  if (!o.changed) return { kind: "removeUnchanged" };
  return o.remote ? { kind: "pushAndRemove" } : { kind: "keepForMerge" };
}
