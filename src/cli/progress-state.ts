import { FINISHED, RunFold } from "../runtime/run-fold.js";
import type { AdoEvent, RunStatus, TaskStatus } from "../runtime/messages.js";

/**
 * What a person following a run sees, built from the run's events alone (so it is the
 * same for `ado run`, `ado attach` from another terminal, and a resumed run replaying
 * its past): each task's state, its latest activity, why it waits, what a failure
 * printed last, where a lost attempt's work went. Pure: events in, state out; the
 * views (progress.ts) and the summary (summary.ts) read it.
 *
 * The state itself is the run's fold (src/runtime/run-fold.ts); this is how the
 * terminal reads it.
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
  /**
   * What it is doing now: an agent CLI's last tool call or message (`agent.tool`,
   * `agent.message`), a shell command's last line of output, or the latest thing that
   * happened to it.
   */
  activity?: string;
  /** Why it cannot start yet (a `task.waiting` event for its current attempt). */
  waiting?: string;
  error?: string;
  /** Output of its last failed attempt (the worker's tail of stdout and stderr). */
  outputTail?: string;
  /** Refs holding the work of attempts that were lost or failed (`worker.lost`). */
  archiveRefs: string[];
  costUsd: number;
}

export { oneLine } from "../runtime/text.js";
export { FINISHED };

const ms = (iso: string | undefined) => (iso ? Date.parse(iso) : undefined);

export { PARSED_AGENTS } from "../runtime/run-fold.js";
export { messageLine, rateLimitLine, toolLine } from "../runtime/activity.js";

/** The last `n` lines of a text (without a trailing empty one). */
export function lastLines(text: string, n = TAIL_LINES): string[] {
  const lines = text.replace(/\n+$/, "").split("\n");
  return text.trim() === "" ? [] : lines.slice(-n);
}

/**
 * A followed run as the terminal shows it: the run's fold (src/runtime/run-fold.ts, the
 * same one snapshots and the dashboard use) and the few things only a follower needs.
 */
export class RunProgress {
  /** Seeded from a snapshot (`ado attach`), or empty: the run's first event then fills it. */
  constructor(private fold_: RunFold = new RunFold()) {}

  get fold(): RunFold {
    return this.fold_;
  }

  /** Starts from a state already known (`ado attach`: the run's snapshot and the events after it) instead of the run's first event. */
  seed(fold: RunFold): void {
    this.fold_ = fold;
    this.snapshot = undefined;
  }

  /** Tasks merged while this client followed, in order, with when (epoch ms): `ado run` says which merged while it stopped. */
  readonly merged: { taskId: string; at: number }[] = [];

  /** The last tasks() result, until the next event (a live view asks ten times a second). */
  private snapshot?: LiveTask[];

  get runId(): string | undefined {
    return this.fold.runId;
  }
  get name(): string | undefined {
    return this.fold.name;
  }
  /** Epoch ms the run was accepted. */
  get acceptedAt(): number | undefined {
    return ms(this.fold.acceptedAt);
  }
  /** Set once the run ended (or was refused), with when. */
  get ended(): { status: RunStatus; at: number } | undefined {
    const f = this.fold;
    return f.finishedAt && f.status !== "unknown" && f.status !== "running" && f.status !== "needs_attention" ? { status: f.status, at: Date.parse(f.finishedAt) } : undefined;
  }
  get runPaused(): boolean {
    return this.fold.paused;
  }
  /** The run waits for a person: the merges, as `run.needs_attention` lists them. */
  get attention(): { taskId: string; hitlId: string; message: string }[] | undefined {
    return this.fold.attention;
  }
  /** How `--merge-into` went (one line; the summary gives the reason). */
  get mergedInto(): RunFold["mergedInto"] {
    return this.fold.mergedInto;
  }
  /** Events seen; lets a caller tell whether anything arrived. */
  get events(): number {
    return this.fold.events;
  }
  /** Whether any event reported a cost (schedulers that predate it do not). */
  get costKnown(): boolean {
    return this.fold.costKnown;
  }
  /** Total cost reported so far, in USD: finished attempts, and what those under way reported. */
  get costUsd(): number {
    return this.fold.costUsd;
  }
  /** The run's budget caps (run.accepted, then each `ado budget raise`). */
  get budget(): RunFold["budget"] {
    return this.fold.budget;
  }
  /** The run waits for its budget to be raised: why. */
  get budgetWait(): RunFold["budgetWait"] {
    return this.fold.budgetWait;
  }

  /**
   * Applies one event. What an agent CLI does (its `agent.tool` and `agent.message`, not
   * the raw stream they were parsed from) is the fold's own rule, so a snapshot, the
   * dashboard and this view say the same.
   */
  apply(e: AdoEvent): void {
    this.snapshot = undefined;
    this.fold.apply(e);
    if (e.type === "task.merged") this.merged.push({ taskId: e.taskId, at: Date.parse(e.at) });
  }

  /** Every task, in the graph's order (the same array until the next event: do not change it). */
  tasks(): readonly LiveTask[] {
    this.snapshot ??= this.fold.ids().map((id) => this.task(id)!);
    return this.snapshot;
  }

  /** One task, if the run has it. */
  task(id: string): LiveTask | undefined {
    const p = this.fold.parts(id);
    if (!p) return undefined;
    const { summary: t, notes: x } = p;
    return {
      id,
      status: t.status,
      attempt: t.attempts,
      needs: x.needs,
      archiveRefs: x.archiveRefs,
      costUsd: x.costUsd,
      ...(x.activity !== undefined ? { activity: x.activity } : {}),
      ...(x.outputTail !== undefined ? { outputTail: x.outputTail } : {}),
      ...(t.startedAt ? { startedAt: ms(t.startedAt) } : {}),
      ...(t.finishedAt ? { finishedAt: ms(t.finishedAt) } : {}),
      ...(t.workerId ? { workerId: t.workerId } : {}),
      ...(t.error ? { error: t.error } : {}),
      // Paused only while it runs: a paused task that ended is what it ended as.
      paused: x.paused && t.status === "running",
      // A reason to wait is current only while it waits.
      ...(x.waiting !== undefined && (t.status === "queued" || t.status === "pending") ? { waiting: x.waiting } : {}),
    };
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
