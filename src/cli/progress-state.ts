import { TaskTracker } from "../runtime/client.js";
import { formatDuration } from "../runtime/duration.js";
import type { AdoEvent, RunStatus, TaskStatus } from "../runtime/messages.js";

/**
 * What a person following a run sees, built from the run's events alone (so it is the
 * same for `ado run`, `ado attach` from another terminal, and a resumed run replaying
 * its past): each task's state, its latest activity, why it waits, what a failure
 * printed last, where a lost attempt's work went. Pure: events in, state out; the
 * views (progress.ts) and the summary (summary.ts) read it.
 *
 * Task states come from the client's TaskTracker (the same event -> status mapping
 * `ado run --json` reports); this adds only what is shown beside them.
 */

/** Lines of a failed task's output the summary and `--json` show. */
export const TAIL_LINES = 20;

export interface LiveTask {
  id: string;
  status: TaskStatus;
  /** Its agent is suspended (`ado pause`): shown as `paused`, whatever its status says. */
  paused: boolean;
  /** The attempt under way, or the last one. */
  attempt: number;
  needs: readonly string[];
  /** Epoch ms of the current attempt's start and end, by the events' clocks. */
  startedAt?: number;
  finishedAt?: number;
  workerId?: string;
  /** Its last line of output, or the latest thing that happened to it. */
  activity?: string;
  /** Why it cannot start yet (a `task.waiting` event for its current attempt). */
  waiting?: string;
  error?: string;
  /** Output of its last failed attempt (the worker's tail of stdout and stderr). */
  outputTail?: string;
  /** Refs holding the work of attempts that were lost or failed (`worker.lost`). */
  archiveRefs: string[];
  /** What its finished attempts cost (USD). */
  costUsd: number;
  /** What the attempt under way reported so far (its latest `agent.usage`); 0 once it ended. */
  liveCostUsd?: number;
}

/** A `task.waiting` event (published by the balancer when a task cannot be placed). */
interface WaitingEvent {
  type: "task.waiting";
  runId: string;
  taskId: string;
  attempt: number;
  at: string;
  reason: string;
}

/**
 * `task.waiting` is read by shape, not through the event union, so that this view works
 * with and without a balancer (and schema) that publishes it.
 */
function asWaiting(e: AdoEvent): WaitingEvent | undefined {
  const w = e as unknown as Partial<WaitingEvent> & { type: string };
  return w.type === "task.waiting" && typeof w.taskId === "string" && typeof w.reason === "string" ? (w as WaitingEvent) : undefined;
}

/** Statuses after which nothing more happens to a task in this run. */
export const FINISHED: ReadonlySet<TaskStatus> = new Set(["succeeded", "failed", "skipped", "cancelled"]);

const ms = (iso: string | undefined) => (iso ? Date.parse(iso) : undefined);

/** Removes what would move a terminal's cursor or colour it: a task's output is shown on one line. */
export function oneLine(text: string): string {
  // After a carriage return a terminal overwrites the line: keep what a person would see.
  const line = text.split("\r").filter((s) => s.trim() !== "").pop() ?? "";
  return line
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[@-Z\\-_]/g, "")
    .replace(/\t/g, "  ")
    .replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, "")
    .trim();
}

/** The last `n` lines of a text (without a trailing empty one). */
export function lastLines(text: string, n = TAIL_LINES): string[] {
  const lines = text.replace(/\n+$/, "").split("\n");
  return text.trim() === "" ? [] : lines.slice(-n);
}

export class RunProgress {
  private readonly tracker = new TaskTracker();
  private readonly extra = new Map<string, Omit<LiveTask, "id" | "status" | "attempt" | "startedAt" | "finishedAt" | "workerId" | "error">>();
  runId?: string;
  name?: string;
  /** Epoch ms the run was accepted. */
  acceptedAt?: number;
  /** Set once the run ended (or was refused), with when. */
  ended?: { status: RunStatus; at: number };
  runPaused = false;
  /** The run waits for a person: the merges, as `run.needs_attention` lists them. */
  attention?: { taskId: string; hitlId: string; message: string }[];
  /** How `--merge-into` went (one line; the summary gives the reason). */
  mergedInto?: { into: string; status: string; commit?: string; reason?: string };
  /** Events seen; lets a caller tell whether anything arrived. */
  events = 0;
  /** The run's budget caps (run.accepted, then each `ado budget raise`). */
  budget?: { maxCostUsd?: number; maxTokens?: number };
  /** The run waits for its budget to be raised: why (run.needs_attention's `budget`). */
  budgetWait?: { message: string; nextTaskId: string };
  /** Tasks merged, in order, with when (epoch ms): `ado run` says which merged while it stopped. */
  readonly merged: { taskId: string; at: number }[] = [];

  /** The last tasks() result, until the next event (a live view asks ten times a second). */
  private snapshot?: LiveTask[];

  apply(e: AdoEvent): void {
    this.events++;
    this.snapshot = undefined;
    this.tracker.apply(e);
    switch (e.type) {
      case "run.accepted":
        this.runId = e.runId;
        this.name = e.name;
        this.acceptedAt = Date.parse(e.at);
        for (const t of e.tasks) this.extra.set(t.id, { paused: false, needs: t.needs, archiveRefs: [], costUsd: 0 });
        if (e.budget) this.budget = { maxCostUsd: e.budget.maxCostUsd, maxTokens: e.budget.maxTokens };
        return;
      case "run.completed":
        this.ended = { status: e.status, at: Date.parse(e.at) };
        for (const x of this.extra.values()) x.paused = false;
        return;
      case "run.rejected":
        this.runId = e.runId;
        this.ended = { status: "rejected", at: Date.parse(e.at) };
        return;
      case "run.needs_attention":
        this.attention = e.tasks.map((t) => ({ taskId: t.taskId, hitlId: t.hitlId, message: t.message }));
        this.budgetWait = e.budget ? { message: e.budget.message, nextTaskId: e.budget.next.taskId } : undefined;
        return;
      case "run.continued":
        this.attention = undefined;
        this.budgetWait = undefined;
        return;
      case "run.budget":
        this.budget = { maxCostUsd: e.maxCostUsd, maxTokens: e.maxTokens };
        return;
      case "run.paused":
        this.runPaused = true;
        return;
      case "run.resumed":
        this.runPaused = false;
        return;
      case "run.merged_into":
        this.mergedInto = { into: e.into, status: e.status, ...(e.commit ? { commit: e.commit } : {}), ...(e.reason ? { reason: e.reason } : {}) };
        return;
    }
    if (!("taskId" in e)) return;
    const x = this.extra.get(e.taskId);
    if (!x) return;
    const note = (line: string | undefined) => {
      const clean = line === undefined ? "" : oneLine(line);
      if (clean) x.activity = clean;
    };
    const waiting = asWaiting(e);
    if (waiting) {
      if (waiting.attempt >= (this.tracker.tasks.get(e.taskId)?.attempts ?? 0)) x.waiting = waiting.reason;
      return;
    }
    switch (e.type) {
      case "task.queued":
        x.waiting = undefined;
        return;
      case "task.started":
        x.waiting = undefined;
        x.paused = false;
        x.activity = undefined; // a new attempt: what the last one printed is history
        return;
      case "task.output":
        // The last non-empty line of this chunk is the task's latest activity.
        note(e.data.split("\n").filter((l) => oneLine(l) !== "").pop());
        return;
      case "agent.usage":
        // Cumulative within its attempt: the latest is what it spent so far.
        if (e.attempt >= (this.tracker.tasks.get(e.taskId)?.attempts ?? 0)) {
          x.liveCostUsd = e.costUsd;
          this.costKnown = true;
        }
        return;
      case "task.succeeded":
        // Its last line of output stays its activity: the state column says the rest.
        x.paused = false;
        x.liveCostUsd = 0;
        this.addCost(x, e.costUsd);
        if (!x.activity) note(e.commit && e.files.length ? `${e.files.length} file${e.files.length === 1 ? "" : "s"} changed` : "no changes");
        return;
      case "task.merged":
        this.merged.push({ taskId: e.taskId, at: Date.parse(e.at) });
        return;
      case "task.failed":
        x.paused = false;
        x.liveCostUsd = 0;
        this.addCost(x, e.costUsd);
        if (e.outputTail) x.outputTail = e.outputTail;
        note(e.willRetry ? `${e.error} (will retry)` : e.error);
        return;
      case "task.skipped":
      case "task.cancelled":
        x.paused = false;
        note(e.reason);
        return;
      case "task.paused":
        x.paused = true;
        return;
      case "task.resumed":
        x.paused = false;
        return;
      case "task.retrying":
        note(`attempt ${e.attempt} in ${formatDuration(e.notBefore - Date.parse(e.at))}: ${e.error}`);
        return;
      case "task.checkpoint":
        note(`checkpoint ${e.commit.slice(0, 10)} (${e.reason})`);
        return;
      case "merge.conflict":
        // A conflict is escalated (merge.hitl_required follows) unless the merger predates HITL.
        note(`conflict in ${e.files.join(", ")}`);
        return;
      case "merge.resolved":
        note(`resolved ${e.paths.map((p) => `${p.path} (${p.by})`).join(", ")}`);
        return;
      case "merge.hitl_required":
        note(`${e.reason === "validation" ? "validation failed" : "conflict"}: ado hitl show ${e.hitlId}`);
        return;
      case "worker.lost":
        if (e.archiveRef && !x.archiveRefs.includes(e.archiveRef)) x.archiveRefs.push(e.archiveRef);
        note(`worker ${e.workerId} lost: ${e.outcome === "interrupted" ? "runs again" : "queued again"}`);
        return;
    }
  }

  /** Every task, in the graph's order (the same array until the next event: do not change it). */
  tasks(): readonly LiveTask[] {
    this.snapshot ??= [...this.tracker.tasks.keys()].map((id) => this.task(id)!);
    return this.snapshot;
  }

  /** One task, if the run has it. */
  task(id: string): LiveTask | undefined {
    const t = this.tracker.tasks.get(id);
    if (!t) return undefined;
    const x = this.extra.get(id) ?? { paused: false, needs: [], archiveRefs: [], costUsd: 0 };
    return {
      id,
      status: t.status,
      attempt: t.attempts,
      ...x,
      ...(t.startedAt ? { startedAt: ms(t.startedAt) } : {}),
      ...(t.finishedAt ? { finishedAt: ms(t.finishedAt) } : {}),
      ...(t.workerId ? { workerId: t.workerId } : {}),
      ...(t.error ? { error: t.error } : {}),
      // Paused only while it runs: a paused task that ended is what it ended as.
      paused: x.paused && t.status === "running",
      // A reason to wait is current only while it waits.
      ...(t.status === "queued" || t.status === "pending" ? {} : { waiting: undefined }),
    };
  }

  /** Whether any event reported a cost (schedulers that predate it do not). */
  costKnown = false;

  private addCost(x: { costUsd: number }, cost: number | undefined): void {
    if (cost === undefined) return;
    this.costKnown = true;
    x.costUsd += cost;
  }

  /** Total cost reported so far, in USD: finished attempts, and what those under way reported. */
  get costUsd(): number {
    let sum = 0;
    for (const x of this.extra.values()) sum += x.costUsd + (x.liveCostUsd ?? 0);
    return sum;
  }
}

/** How a task's state reads: its status, or `paused`, or `waiting` when a reason is known. */
export function stateWord(t: LiveTask): string {
  if (t.paused) return "paused";
  if (t.status === "needs_attention") return "attention";
  return t.status;
}

/** Counts of a run's tasks by status, with `paused` apart from `running`. */
export function countTasks(tasks: readonly LiveTask[]): Record<TaskStatus | "paused" | "finished", number> {
  const c = { pending: 0, queued: 0, running: 0, paused: 0, merging: 0, needs_attention: 0, succeeded: 0, failed: 0, skipped: 0, cancelled: 0, finished: 0 };
  for (const t of tasks) {
    if (t.paused) c.paused++;
    else c[t.status]++;
    if (FINISHED.has(t.status)) c.finished++;
  }
  return c;
}

/** "1 task", "2 tasks". */
export const plural = (n: number, word: string, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;
