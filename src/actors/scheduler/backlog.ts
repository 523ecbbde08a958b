/**
 * The scheduler's bound on accepted work ("queue full"): the tasks of accepted runs not
 * finished yet, across runs and scheduler replicas, against `maxQueued`. Each run's
 * count lives in KV (`backlog`, key runId), written by the scheduler that changed the
 * run and deleted when the run ends; every replica watches the bucket, so the count
 * survives restarts and is shared. Pure bookkeeping here; the scheduler does the I/O.
 *
 * A run counts all its tasks from the moment it is accepted, dependents included, so
 * work released later (a fan-out after a merge) is inside the bound it was admitted
 * under and is never refused or dropped.
 */

interface Entry {
  open: number;
  /** KV revision of the value (a watch replay or a late echo with an older one is ignored). */
  rev: number;
  /** For a deletion: when it was applied (kept a while, so a late older echo is ignored). */
  deletedAt?: number;
}

/** What an admission decided. */
export type Admission = { ok: true } | { ok: false; code: "queue_full" | "invalid"; reason: string };

export class OpenTasks {
  private readonly runs = new Map<string, Entry>();
  /** Counted before their first write lands (a batch of submissions is decided at once). */
  private readonly reserved = new Map<string, number>();
  private stored = 0;
  private pending = 0;

  /** Open tasks counted now, across runs. */
  get total(): number {
    return this.stored + this.pending;
  }

  /**
   * A stored value (a watch update, or our own write): applied unless older than what we
   * have. `open` undefined: the count was deleted (the run ended) at `now`.
   */
  apply(runId: string, open: number | undefined, rev: number, now = 0): void {
    const e = this.runs.get(runId);
    if (e && e.rev >= rev) return;
    this.stored += (open ?? 0) - (e?.open ?? 0);
    // A deletion keeps its revision for a while, so an older put replayed after it is ignored.
    this.runs.set(runId, open === undefined ? { open: 0, rev, deletedAt: now } : { open, rev });
  }

  /** Forgets deletions older than `maxAgeMs`: one entry per finished run would pile up forever. */
  prune(now: number, maxAgeMs: number): void {
    for (const [runId, e] of this.runs) if (e.deletedAt !== undefined && now - e.deletedAt > maxAgeMs) this.runs.delete(runId);
  }

  /** How many tasks the run counts for now (0 if none). */
  of(runId: string): number {
    return (this.reserved.get(runId) ?? 0) + (this.runs.get(runId)?.open ?? 0);
  }

  /**
   * Whether a run of `tasks` tasks fits under `limit`; if so it is counted at once
   * (reserved until its count is stored), so the next submission of the same batch
   * sees it.
   */
  admit(runId: string, tasks: number, limit: number): Admission {
    if (tasks > limit) {
      return {
        ok: false,
        code: "invalid",
        reason: `the run has ${tasks} tasks, more than the scheduler accepts at once (maxQueued ${limit}): split it into smaller runs, or raise maxQueued in the scheduler's config`,
      };
    }
    if (this.total + tasks > limit) {
      return {
        ok: false,
        code: "queue_full",
        reason:
          `queue full: ${this.total} tasks of accepted runs have not finished and this run adds ${tasks} (maxQueued ${limit}). ` +
          "Submit it again once some have finished, or submit with --wait to resubmit until it fits.",
      };
    }
    this.reserve(runId, tasks);
    return { ok: true };
  }

  /** Counts a run's tasks until its count is stored (apply) or it is given up (release). */
  reserve(runId: string, tasks: number): void {
    this.pending += tasks - (this.reserved.get(runId) ?? 0);
    this.reserved.set(runId, tasks);
  }

  /** Drops a reservation: its stored value was applied, or the run was not accepted after all. */
  release(runId: string): void {
    this.pending -= this.reserved.get(runId) ?? 0;
    this.reserved.delete(runId);
  }

  /** Runs with a stored count, for the sweep of counts whose run is gone. */
  counted(): string[] {
    return [...this.runs].filter(([, e]) => e.open > 0).map(([id]) => id);
  }
}
