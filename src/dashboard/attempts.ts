import type { AdoEvent } from "../runtime/messages.js";

/**
 * One task's attempts as its events tell them, for the dashboard's task view: where each
 * ran (worker, worktree, branch, agent), how it ended, what it cost, and which commits
 * its diff goes between. Pure: events in, attempts out.
 */

/** One attempt of a task as the page shows it. */
export interface AttemptView {
  attempt: number;
  status: "queued" | "running" | "succeeded" | "merged" | "failed" | "retrying" | "cancelled" | "skipped" | "needs_attention";
  workerId?: string;
  agent?: string;
  branch?: string;
  worktree?: string;
  /** The commit it started from, when an event said (a root's first attempt starts from the run's base). */
  baseCommit?: string;
  startedAt?: string;
  finishedAt?: string;
  /** What it cost (USD): its end's figure, or its agent's latest report while it runs. */
  costUsd: number;
  tokens?: number;
  commit?: string;
  files?: number;
  error?: string;
}

export class AttemptLog {
  private readonly byNumber = new Map<number, AttemptView>();

  /** Applies one of the task's events; returns the attempt it changed, if any. */
  apply(e: AdoEvent): AttemptView | undefined {
    if (!("taskId" in e)) return undefined;
    const a = this.byNumber.get(e.attempt) ?? { attempt: e.attempt, status: "queued", costUsd: 0 };
    this.byNumber.set(e.attempt, a);
    switch (e.type) {
      case "task.queued":
        if (e.baseCommit) a.baseCommit = e.baseCommit;
        return a;
      case "task.started":
        a.status = "running";
        a.workerId = e.workerId;
        a.startedAt = e.at;
        if (e.branch) a.branch = e.branch;
        if (e.worktree) a.worktree = e.worktree;
        if (e.agent) a.agent = e.agent;
        return a;
      case "agent.usage":
        a.costUsd = e.costUsd;
        a.tokens = e.inputTokens + e.outputTokens;
        return a;
      case "task.succeeded":
        a.status = "succeeded";
        a.finishedAt = e.finishedAt;
        a.startedAt ??= e.startedAt;
        if (e.costUsd !== undefined) a.costUsd = e.costUsd;
        if (e.tokens !== undefined) a.tokens = e.tokens;
        if (e.commit) a.commit = e.commit;
        a.files = e.files.length;
        return a;
      case "task.failed":
        a.status = e.willRetry ? "retrying" : "failed";
        a.finishedAt = e.finishedAt;
        a.error = e.error;
        if (e.costUsd !== undefined) a.costUsd = e.costUsd;
        if (e.tokens !== undefined) a.tokens = e.tokens;
        return a;
      case "task.merged":
        a.status = "merged";
        return a;
      case "merge.hitl_required":
        a.status = "needs_attention";
        a.error = e.message;
        return a;
      case "task.cancelled":
      case "task.skipped":
        a.status = e.type === "task.cancelled" ? "cancelled" : "skipped";
        a.error = e.reason;
        return a;
      default:
        return undefined;
    }
  }

  all(): AttemptView[] {
    return [...this.byNumber.values()].sort((a, b) => a.attempt - b.attempt);
  }

  /**
   * What the task's diff compares: from the commit its first attempt started from (the
   * run's base when no event named one) to its last commit, or, while an attempt runs
   * without one, to that attempt's worktree. Undefined when there is nothing to compare yet.
   */
  diffRange(runBase: string | undefined): { base: string; head?: string; worktree?: string } | undefined {
    const all = this.all();
    // A root's first attempt was queued with the run (no task.queued event): the run's base.
    const base = this.byNumber.get(1)?.baseCommit ?? runBase;
    if (!base) return undefined;
    const last = all[all.length - 1];
    if (last?.status === "running" && last.worktree) return { base, worktree: last.worktree };
    const committed = [...all].reverse().find((a) => a.commit);
    if (committed) return { base, head: committed.commit };
    if (last?.worktree) return { base, worktree: last.worktree };
    return undefined;
  }
}
