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
  /** What becomes of the agent's own commits and branches (planBranches); absent: it left git alone. */
  branches?: BranchPlan;
  /** Where the attempt's work is kept when it fails (`refs/ado/attempts/<run>/<task>/<n>`), for messages. */
  attemptRef?: string;
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

/**
 * Decides what becomes of an attempt's worktree when the agent has finished. An agent
 * whose commits cannot land on the task branch unambiguously fails the attempt (or, if
 * it failed anyway, keeps its own failure), and everything is archived: never "no
 * changes" when there were commits, never a guess.
 */
export function planAfterAgent(a: AfterAgent): AttemptPlan {
  if (!a.worktree) return { kind: "report" };
  if (a.branches?.kind === "refuse") {
    if (!a.end.ok) return { kind: "archive", failure: a.end.failure };
    return {
      kind: "archive",
      failure: { kind: "git", retryable: true, message: `${a.branches.why}: the attempt's work is kept under ${a.attemptRef ?? "its attempt ref"}, not merged` },
    };
  }
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

/** What the agent did with git in its worktree (from WorktreeManager.attemptGit). */
export interface BranchFacts {
  /** The task branch, and the commit the attempt started from. */
  branch: string;
  base: string;
  head: string;
  /** The branch HEAD is on; undefined when detached. */
  headBranch?: string;
  /** The task branch's commit now; undefined when the agent deleted it. */
  taskTip?: string;
  onBase: boolean;
  belowBase: boolean;
  taskInHead: boolean;
  /** Branches the agent made. */
  strays: ReadonlyArray<{ branch: string; tip: string; onBase: boolean; inHead: boolean }>;
  /** Whether the worktree holds uncommitted changes; asked only when it matters (undefined: unknown). */
  clean?: boolean;
}

/** Where the agent's commits go before the attempt's own commit. */
export type BranchPlan =
  /** The agent worked on the task branch (its own commits there count as its work). */
  | { kind: "asIs" }
  /**
   * Unambiguous: the task branch moves from `from` to `to`, where the agent's commits
   * are (HEAD on another branch or detached; or, `fastForward`, a clean worktree back on
   * an untouched task branch while one branch of the agent's holds its commits).
   */
  | { kind: "land"; from?: string; to: string; fastForward: boolean; what: string }
  /** Ambiguous: the attempt fails, naming what the agent did; its work is archived. */
  | { kind: "refuse"; why: string };

const short = (sha: string) => sha.slice(0, 12);

/**
 * Whether what an agent committed can land on the task branch. Agents (aider, Claude
 * Code) commit and branch on their own; ado must neither lose such work nor report
 * "no changes" when there were commits, nor guess when two places hold work.
 */
export function planBranches(f: BranchFacts): BranchPlan {
  // Branches of the agent's holding commits that are not in HEAD (nor the bare base).
  const outside = f.strays.filter((s) => !s.inHead && s.tip !== f.base && s.branch !== f.headBranch);
  const names = (list: typeof outside) => list.map((s) => `'${s.branch}'`).join(", ");
  if (f.headBranch === f.branch) {
    if (f.belowBase) return { kind: "refuse", why: `the agent moved the task branch below its base: it is at ${short(f.head)}, an ancestor of ${short(f.base)}` };
    if (!f.onBase) return { kind: "refuse", why: `the task branch no longer descends from its base ${short(f.base)} (the agent rewrote its history): it is at ${short(f.head)}` };
    if (outside.length === 0) return { kind: "asIs" };
    const only = outside[0]!;
    if (outside.length === 1 && f.head === f.base && f.clean === true && only.onBase) {
      return { kind: "land", from: f.head, to: only.tip, fastForward: true, what: `the agent committed on its own branch '${only.branch}' and came back to the task branch: those commits land on it` };
    }
    return { kind: "refuse", why: `the agent committed on branch ${names(outside)} besides the task branch, and ado cannot tell which work is the task's` };
  }
  const where = f.headBranch ? `branch '${f.headBranch}'` : "a detached HEAD";
  if (!f.onBase) return { kind: "refuse", why: `the agent left the task branch for ${where} at ${short(f.head)}, which does not descend from the base ${short(f.base)}` };
  if (f.taskTip !== undefined && !f.taskInHead) {
    return { kind: "refuse", why: `the agent committed both on the task branch (${short(f.taskTip)}) and on ${where} (${short(f.head)}), and ado cannot tell which work is the task's` };
  }
  if (outside.length > 0) return { kind: "refuse", why: `the agent committed on ${where} and on branch ${names(outside)}, and ado cannot tell which work is the task's` };
  return { kind: "land", from: f.taskTip, to: f.head, fastForward: false, what: `the agent left the task branch for ${where}: its commits land on the task branch` };
}
