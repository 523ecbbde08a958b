import type { RunId } from "./ids.js";
import type { AdoEvent, BudgetWait, EventOf, MergeIntoOutcome, TaskStatus, TaskSummary } from "./messages.js";

/**
 * A run's tasks as its events make them (TaskTracker), and how a run ended as a client
 * sees it (RunOutcome). Apart from the client (client.ts re-exports both) so the run
 * fold (run-fold.ts) and what reads it (run-load.ts, records.ts) need not import the
 * client.
 */

/** A merge waiting for a person, as run.needs_attention lists it. */
export interface AttentionItem {
  taskId: string;
  hitlId: string;
  message: string;
}

/**
 * How a run ended, or where it stopped, as seen by the client. `needs_attention`: it
 * waits for a person (`ado hitl`); `running`: the watch's `until` stopped it early.
 */
export interface RunOutcome {
  runId: RunId;
  status: "succeeded" | "failed" | "cancelled" | "rejected" | "needs_attention" | "running";
  integrationBranch?: string;
  integrationCommit?: string;
  error?: string;
  /** For a rejected run: why (`queue_full` means: try again later). */
  code?: "invalid" | "queue_full";
  tasks: TaskSummary[];
  /** For `needs_attention`: the merges waiting. */
  attention?: AttentionItem[];
  /** With `merge.into`: how the target branch was updated, or why not. */
  mergeInto?: MergeIntoOutcome;
  /** What every attempt of the run cost, USD and tokens (a finished run; a scheduler that predates it says nothing). */
  costUsd?: number;
  tokens?: number;
  /** For `needs_attention` with a budget: the run's next task would pass its budget (`ado budget raise`). */
  budget?: BudgetWait;
}

/** Builds per-task summaries from the event stream (for runs too large to list in run.completed). */
export class TaskTracker {
  readonly tasks = new Map<string, TaskSummary>();
  integrationBranch?: string;

  /** A tracker with the same tasks, each copied (one side's events then leave the other's alone). */
  copy(): TaskTracker {
    const t = new TaskTracker();
    for (const [id, s] of this.tasks) t.tasks.set(id, { ...s });
    if (this.integrationBranch !== undefined) t.integrationBranch = this.integrationBranch;
    return t;
  }

  apply(e: AdoEvent): void {
    if (e.type === "run.accepted") {
      this.integrationBranch = e.integrationBranch;
      for (const t of e.tasks) this.tasks.set(t.id, { id: t.id, status: "pending", attempts: 0 });
      for (const id of e.queued) this.tasks.set(id, { id, status: "queued", attempts: 1 });
      return;
    }
    if (e.type === "run.completed") {
      // The scheduler's final word: some ends have no task event of their own (a task
      // that finished after the run halted is skipped without one).
      for (const s of e.tasks) if (this.tasks.has(s.id)) this.tasks.set(s.id, { ...this.tasks.get(s.id)!, ...s });
      return;
    }
    if (!("taskId" in e)) return;
    const t = this.tasks.get(e.taskId);
    if (!t) return;
    const set = (status: TaskStatus) => (t.status = status);
    switch (e.type) {
      case "task.queued":
        set("queued");
        t.attempts = e.attempt;
        break;
      case "task.started":
        set("running");
        t.startedAt = e.at;
        t.finishedAt = undefined; // a new attempt: its clock starts again
        t.workerId = e.workerId;
        break;
      case "task.succeeded":
        addCost(t, e);
        // Only work with changes goes to the merge coordinator (and ends with task.merged);
        // a task that changed nothing is done now, and no other event will say so.
        set(e.commit && e.files.length > 0 ? "merging" : "succeeded");
        t.startedAt = e.startedAt;
        t.finishedAt = e.finishedAt;
        t.workerId = e.workerId;
        t.commit = e.commit;
        break;
      case "task.merged":
        set("succeeded");
        break;
      case "task.failed":
        addCost(t, e);
        set(e.willRetry ? "queued" : "failed");
        // The attempt as its result says (what the scheduler's record of the task keeps too).
        t.startedAt = e.startedAt;
        t.workerId = e.workerId;
        t.finishedAt = e.finishedAt;
        t.error = e.error;
        break;
      case "task.skipped":
        set("skipped");
        t.error = e.reason;
        break;
      case "merge.conflict":
        // Escalated to a person next (merge.hitl_required), unless the merger predates HITL.
        t.error = e.message;
        break;
      case "merge.hitl_required":
        set("needs_attention");
        t.error = e.message;
        break;
      case "task.cancelled":
        set("cancelled");
        t.error = e.reason;
        break;
    }
  }

  outcome(done: EventOf<"run.completed">): RunOutcome {
    return {
      runId: done.runId as RunId,
      status: done.status,
      integrationBranch: done.integrationBranch,
      integrationCommit: done.integrationCommit,
      error: done.error,
      tasks: done.tasks.length ? done.tasks : [...this.tasks.values()],
      ...(done.mergeInto ? { mergeInto: done.mergeInto } : {}),
      ...(done.costUsd !== undefined ? { costUsd: done.costUsd } : {}),
      ...(done.tokens !== undefined ? { tokens: done.tokens } : {}),
    };
  }
}

/** Adds what an attempt cost to its task's summary. */
function addCost(t: TaskSummary, e: { costUsd?: number; tokens?: number }): void {
  if (e.costUsd) t.costUsd = (t.costUsd ?? 0) + e.costUsd;
  if (e.tokens) t.tokens = (t.tokens ?? 0) + e.tokens;
}
