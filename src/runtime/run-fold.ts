import { TaskTracker } from "./task-tracker.js";
import type { AdoEvent, RunStatus, TaskStatus, TaskSummary } from "./messages.js";
import { cutText, lastShownLine, oneLine } from "./text.js";
import { formatDuration } from "./duration.js";
import { isJsonObjectLine, messageLine, rateLimitLine, toolLine } from "./activity.js";
import { CLI_AGENT_NAMES } from "../agents/index.js";

/**
 * Agents whose raw output is a structured stream the worker parses into `agent.*` events:
 * their `task.output` is JSON lines (or, for aider, the same text the messages carry), so
 * the events, not the raw lines, say what they do.
 */
export const PARSED_AGENTS: ReadonlySet<string> = new Set(CLI_AGENT_NAMES);

/**
 * A run's state as its events make it: each task's state, attempts, times, worker,
 * cost, latest activity, why it waits, and the run's own state. One fold for every
 * reader of events: the terminal views (`ado run`, `ado attach`), the snapshots the
 * recorder keeps in KV, and the dashboard. Pure: events in (with their stream
 * sequence), state out; a snapshot of it (run-snapshot.ts) can be loaded and the fold
 * carried on from the snapshot's sequence, which gives what a replay of every event
 * would.
 *
 * Task states come from the client's TaskTracker (the mapping `ado run --json`
 * reports); this adds what is shown beside them.
 */

/** What the fold keeps of a task besides its TaskTracker summary. */
export interface TaskNotes {
  needs: readonly string[];
  /** Its agent is suspended (`ado pause`). */
  paused: boolean;
  /** Its last line of output, or the latest thing that happened to it. */
  activity?: string;
  /** Why it cannot start yet (a `task.waiting` event for its current attempt). */
  waiting?: string;
  /** Output of its last failed attempt (the worker's tail). */
  outputTail?: string;
  /** Refs holding the work of attempts that were lost or failed (`worker.lost`). */
  archiveRefs: string[];
  /** What its finished attempts cost, as their events reported (USD). */
  costUsd: number;
  /** What the attempt under way has cost so far (its agent's latest `agent.usage`). */
  liveCostUsd: number;
  /**
   * The attempt that runs an agent CLI, when known (`task.started.agent`, or an agent
   * event of the attempt): its agent.* events, not its raw stdout (the stream they were
   * parsed from), say what it does.
   */
  agentAttempt?: number;
}

/** One task as the fold sees it. */
export type FoldTask = TaskSummary & TaskNotes;

/** Statuses after which nothing more happens to a task in this run. */
export const FINISHED: ReadonlySet<TaskStatus> = new Set(["succeeded", "failed", "skipped", "cancelled"]);

/** Where a run stands when no event has said (a snapshot of a run seen from its middle). */
export type FoldRunStatus = RunStatus | "unknown";

/** What changed since the last takeChanges(): the run's own fields, and which tasks. */
export interface FoldChanges {
  run: boolean;
  tasks: string[];
}

/** Error and activity texts are kept this long (a snapshot of 10,000 tasks must stay small). */
export const NOTE_MAX = 300;
/** A failed attempt's output tail is kept this long. */
export const TAIL_MAX = 4_000;

const emptyNotes = (needs: readonly string[] = []): TaskNotes => ({ needs, paused: false, archiveRefs: [], costUsd: 0, liveCostUsd: 0 });

export class RunFold {
  readonly tracker = new TaskTracker();
  private readonly notes = new Map<string, TaskNotes>();
  runId?: string;
  name?: string;
  status: FoldRunStatus = "unknown";
  /** ISO times from the events. */
  acceptedAt?: string;
  finishedAt?: string;
  paused = false;
  error?: string;
  /** The run waits for a person: the merges, as `run.needs_attention` lists them. */
  attention?: { taskId: string; hitlId: string; message: string }[];
  /** The run's budget caps (run.accepted, then each `ado budget raise`). */
  budget?: { maxCostUsd?: number; maxTokens?: number };
  /** The run waits for its budget to be raised: why (run.needs_attention's `budget`). */
  budgetWait?: { message: string; nextTaskId: string };
  /** How `--merge-into` went. */
  mergedInto?: { into: string; status: string; commit?: string; reason?: string };
  baseCommit?: string;
  /** The integration branch's head, as the last merge moved it. */
  integrationCommit?: string;
  /** Events applied. */
  events = 0;
  /** Events-stream sequence of the last event applied (0: none). */
  seq = 0;
  /** The fold saw the run's first event (`run.accepted` or `run.rejected`), so it knows every task. */
  complete = false;
  /** Whether any event reported a cost (schedulers that predate it do not). */
  costKnown = false;
  /**
   * The fold knows each task's tokens (and the start of failed attempts as their results
   * say): false for one loaded from a snapshot of a recorder that predates them, which
   * `ado status` cannot be served from (it reads the task records instead).
   */
  statusKnown = true;

  private changedRun = false;
  private readonly changedTasks = new Set<string>();

  /**
   * Applies one event. `seq` is its events-stream sequence when known: an event at or
   * below the fold's sequence is already in it and is skipped (returns false).
   */
  apply(e: AdoEvent, seq?: number): boolean {
    if (seq !== undefined) {
      if (seq <= this.seq) return false;
      this.seq = seq;
    }
    this.events++;
    this.tracker.apply(e);
    switch (e.type) {
      case "run.accepted":
        this.runId = e.runId;
        this.name = e.name;
        this.acceptedAt = e.at;
        this.status = "running";
        this.complete = true;
        this.baseCommit = e.baseCommit;
        if (e.budget) this.budget = { maxCostUsd: e.budget.maxCostUsd, maxTokens: e.budget.maxTokens };
        for (const t of e.tasks) this.notes.set(t.id, emptyNotes(t.needs));
        this.changedRun = true;
        for (const t of e.tasks) this.changedTasks.add(t.id);
        return true;
      case "run.completed":
        this.status = e.status;
        this.finishedAt = e.at;
        this.paused = false;
        if (e.error) this.error = e.error;
        if (e.integrationCommit) this.integrationCommit = e.integrationCommit;
        for (const [id, x] of this.notes) {
          if (x.paused) this.changedTasks.add(id);
          x.paused = false;
        }
        for (const s of e.tasks) this.changedTasks.add(s.id);
        this.changedRun = true;
        return true;
      case "run.rejected":
        this.runId = e.runId;
        this.status = "rejected";
        this.finishedAt = e.at;
        this.error = e.reason;
        this.complete = true;
        this.changedRun = true;
        return true;
      case "run.needs_attention":
        this.status = "needs_attention";
        this.attention = e.tasks.map((t) => ({ taskId: t.taskId, hitlId: t.hitlId, message: t.message }));
        this.budgetWait = e.budget ? { message: e.budget.message, nextTaskId: e.budget.next.taskId } : undefined;
        this.changedRun = true;
        return true;
      case "run.continued":
        this.status = "running";
        this.attention = undefined;
        this.budgetWait = undefined;
        this.changedRun = true;
        return true;
      case "run.budget":
        this.budget = { maxCostUsd: e.maxCostUsd, maxTokens: e.maxTokens };
        this.changedRun = true;
        return true;
      case "run.paused":
        this.paused = true;
        this.changedRun = true;
        return true;
      case "run.resumed":
        this.paused = false;
        this.changedRun = true;
        return true;
      case "run.cancelling":
        this.changedRun = true;
        return true;
      case "run.merged_into":
        this.mergedInto = { into: e.into, status: e.status, ...(e.commit ? { commit: e.commit } : {}), ...(e.reason ? { reason: e.reason } : {}) };
        this.changedRun = true;
        return true;
    }
    if (!("taskId" in e)) return true;
    const x = this.notes.get(e.taskId);
    if (!x) return true;
    this.changedTasks.add(e.taskId);
    // The attempt under way, or the last one (task.queued and task.started have set it).
    const attempt = this.tracker.tasks.get(e.taskId)?.attempts ?? 0;
    const note = (line: string | undefined) => {
      const clean = line === undefined ? "" : oneLine(line);
      if (clean) x.activity = cutText(clean, NOTE_MAX);
    };
    switch (e.type) {
      case "task.waiting":
        if (e.attempt >= (this.tracker.tasks.get(e.taskId)?.attempts ?? 0)) x.waiting = cutText(e.reason, NOTE_MAX);
        return true;
      case "task.queued":
        x.waiting = undefined;
        return true;
      case "task.started":
        x.agentAttempt = e.agent !== undefined && PARSED_AGENTS.has(e.agent) ? attempt : undefined;
        x.waiting = undefined;
        x.paused = false;
        x.activity = undefined; // a new attempt: what the last one printed is history
        x.liveCostUsd = 0;
        return true;
      case "task.output": {
        // A shell command's last non-empty line is its latest activity. An agent CLI's
        // stdout is the raw stream its agent.* events were parsed from: they say what it
        // does, and a JSON line (a stream whose start this fold did not see) never does.
        const line = e.stream === "stdout" && x.agentAttempt === attempt ? "" : lastShownLine(e.data);
        if (line && !isJsonObjectLine(line)) x.activity = cutText(line, NOTE_MAX);
        else this.changedTasks.delete(e.taskId);
        return true;
      }
      case "agent.tool":
      case "agent.message":
      case "agent.rate_limit":
        // A late event of an attempt that ended is not what the task does now.
        if (e.attempt < attempt) {
          this.changedTasks.delete(e.taskId);
          return true;
        }
        x.agentAttempt = attempt;
        if (e.type === "agent.tool") note(toolLine(e));
        else if (e.type === "agent.message") note(messageLine(e.text));
        else if (e.status === "rejected" || e.status === "retrying") note(rateLimitLine(e));
        else this.changedTasks.delete(e.taskId);
        return true;
      case "agent.usage":
        x.liveCostUsd = e.costUsd;
        return true;
      case "task.succeeded":
        // Its last line of output stays its activity: the state says the rest.
        x.paused = false;
        this.settle(x, e.costUsd);
        if (!x.activity) note(e.commit && e.files.length ? `${e.files.length} file${e.files.length === 1 ? "" : "s"} changed` : "no changes");
        return true;
      case "task.merged":
        this.integrationCommit = e.integrationCommit;
        this.changedRun = true;
        return true;
      case "task.failed":
        x.paused = false;
        this.settle(x, e.costUsd);
        if (e.outputTail) x.outputTail = e.outputTail.length > TAIL_MAX ? e.outputTail.slice(-TAIL_MAX) : e.outputTail;
        note(e.willRetry ? `${e.error} (will retry)` : e.error);
        return true;
      case "task.skipped":
      case "task.cancelled":
        x.paused = false;
        note(e.reason);
        return true;
      case "task.paused":
        x.paused = true;
        return true;
      case "task.resumed":
        x.paused = false;
        return true;
      case "task.retrying":
        note(`attempt ${e.attempt} in ${formatDuration(e.notBefore - Date.parse(e.at))}: ${e.error}`);
        return true;
      case "task.checkpoint":
        note(`checkpoint ${e.commit.slice(0, 10)} (${e.reason})`);
        return true;
      case "merge.conflict":
        // A conflict is escalated (merge.hitl_required follows) unless the merger predates HITL.
        note(`conflict in ${e.files.join(", ")}`);
        return true;
      case "merge.resolved":
        this.integrationCommit = e.integrationCommit;
        this.changedRun = true;
        note(`resolved ${e.paths.map((p) => `${p.path} (${p.by})`).join(", ")}`);
        return true;
      case "merge.hitl_required":
        note(`${e.reason === "validation" ? "validation failed" : "conflict"}: ado hitl show ${e.hitlId}`);
        return true;
      case "worker.lost":
        if (e.archiveRef && !x.archiveRefs.includes(e.archiveRef)) x.archiveRefs.push(e.archiveRef);
        note(`worker ${e.workerId} lost: ${e.outcome === "interrupted" ? "runs again" : "queued again"}`);
        return true;
    }
    return true;
  }

  private settle(x: TaskNotes, cost: number | undefined): void {
    if (cost !== undefined) {
      this.costKnown = true;
      x.costUsd += cost;
    } else if (x.liveCostUsd > 0) {
      // A scheduler that predates costs in results: what the agent said it spent.
      this.costKnown = true;
      x.costUsd += x.liveCostUsd;
    }
    x.liveCostUsd = 0;
  }

  /** What changed since the last call (for live views that send only what changed). */
  takeChanges(): FoldChanges {
    const out = { run: this.changedRun, tasks: [...this.changedTasks] };
    this.changedRun = false;
    this.changedTasks.clear();
    return out;
  }

  /** Task ids in the graph's order. */
  ids(): string[] {
    return [...this.tracker.tasks.keys()];
  }

  get size(): number {
    return this.tracker.tasks.size;
  }

  /** One task, if the run has it. */
  task(id: string): FoldTask | undefined {
    const t = this.tracker.tasks.get(id);
    if (!t) return undefined;
    return { ...t, ...(this.notes.get(id) ?? emptyNotes()) };
  }

  /** The summary and the notes of a task, unmerged and uncopied (for loops over 10,000 tasks). */
  parts(id: string): { summary: TaskSummary; notes: TaskNotes } | undefined {
    const summary = this.tracker.tasks.get(id);
    if (!summary) return undefined;
    let notes = this.notes.get(id);
    if (!notes) this.notes.set(id, (notes = emptyNotes()));
    return { summary, notes };
  }

  /** Sets the dependencies of tasks (a fold loaded from a snapshot learns them from the run's graph). */
  setNeeds(needs: ReadonlyMap<string, readonly string[]>): void {
    for (const [id, list] of needs) {
      const x = this.notes.get(id);
      if (x) x.needs = list;
    }
  }

  /** Counts of the tasks by status. */
  counts(): Partial<Record<TaskStatus, number>> {
    const c: Partial<Record<TaskStatus, number>> = {};
    for (const t of this.tracker.tasks.values()) c[t.status] = (c[t.status] ?? 0) + 1;
    return c;
  }

  /** Total cost so far, in USD: finished attempts, plus what running ones have reported. */
  get costUsd(): number {
    let sum = 0;
    for (const x of this.notes.values()) sum += x.costUsd + x.liveCostUsd;
    return sum;
  }

  /** Total cost of finished attempts, in USD (what the run's summary reports). */
  get settledCostUsd(): number {
    let sum = 0;
    for (const x of this.notes.values()) sum += x.costUsd;
    return sum;
  }

  /** Restores a task as a snapshot kept it (run-snapshot.ts). */
  restoreTask(summary: TaskSummary, notes: TaskNotes): void {
    this.tracker.tasks.set(summary.id, summary);
    this.notes.set(summary.id, notes);
  }
}
