import { hostname } from "node:os";
import type { KV } from "@nats-io/kv";
import { applyCleanup, planCleanup, WorktreeManager, type WorktreeRecord, type WorktreesConfig } from "../../git/index.js";
import { errorMessage } from "../../runtime/errors.js";
import type { Logger } from "../../runtime/logger.js";
import type { TaskWork } from "../../runtime/messages.js";
import { WorktreeRegistry } from "../../runtime/worktree-registry.js";

/** What became of a task's worktree, for its registry record. */
export type WorktreeUpdate = Pick<WorktreeRecord, "state"> & Partial<Pick<WorktreeRecord, "commit" | "archiveRef" | "reason">>;

/**
 * A worker's task worktrees across repositories: one WorktreeManager per repository,
 * the worktree registry records (KV `worktrees`) the worker writes, and the cleanup
 * policy it applies in the background.
 */
export class TaskWorktrees {
  private readonly managers = new Map<string, WorktreeManager>();
  /** When the cleanup policy last ran, per repository's manager (cleanupSoon). */
  private readonly lastCleanup = new Map<WorktreeManager, number>();
  /** The cleanup pass under way, if any; awaited on shutdown. */
  private cleaning: Promise<void> = Promise.resolve();

  constructor(
    private readonly opts: { workerId: string; baseDir: string; policy?: WorktreesConfig; kv: KV; log: Logger },
  ) {}

  /** The manager of `repo`'s task worktrees. */
  manager(repo: string): WorktreeManager {
    let m = this.managers.get(repo);
    if (!m) {
      m = new WorktreeManager({ repo, baseDir: this.opts.baseDir, logger: this.opts.log, include: this.opts.policy });
      this.managers.set(repo, m);
    }
    return m;
  }

  /**
   * Writes the task's worktree record in the registry. Never fails the task: the
   * registry is for people and tools; git holds the truth.
   */
  async record(work: TaskWork, path: string, update: WorktreeUpdate & { createdAt?: string }): Promise<void> {
    const now = new Date().toISOString();
    const { workerId, log } = this.opts;
    try {
      await new WorktreeRegistry(this.opts.kv, log).update(
        work.runId,
        work.taskId,
        { ...update, attempt: work.attempt, workerId, updatedBy: `worker ${workerId}`, ...(update.state === "active" ? {} : { finishedAt: now }) },
        { runId: work.runId, taskId: work.taskId, repo: work.repo!, path, branch: work.branch, host: hostname(), createdAt: update.createdAt ?? now },
      );
    } catch (err) {
      log.warn({ task: work.taskId, err: errorMessage(err) }, "worktree registry not updated");
    }
  }

  /**
   * Applies the cleanup policy (worktrees.cleanupAfter / maxWorktrees) to the
   * repository's worktrees in the background, at most once a minute per repository:
   * finished worktrees past the policy are archived and removed; merged ones removed.
   * Never with force, never touching a worktree in use (see src/git/cleanup.ts).
   */
  cleanupSoon(wt: WorktreeManager, repo: string): void {
    const policy = this.opts.policy;
    if (policy?.cleanupAfter === undefined && policy?.maxWorktrees === undefined) return;
    const last = this.lastCleanup.get(wt) ?? 0;
    if (Date.now() - last < 60_000) return;
    this.lastCleanup.set(wt, Date.now());
    const { log, workerId } = this.opts;
    const pass = (async () => {
      const registry = new WorktreeRegistry(this.opts.kv, log);
      const { records } = await registry.list().catch(() => ({ records: [] as WorktreeRecord[] }));
      const byPath = new Map(records.map((r) => [r.path, r]));
      const plan = planCleanup(await wt.inspect(), byPath, { cleanupAfterMs: policy.cleanupAfter, maxWorktrees: policy.maxWorktrees }, { now: new Date() });
      const done = await applyCleanup(wt, plan.filter((i) => i.action.kind !== "keep"), { registry, actor: `worker ${workerId} (cleanup policy)`, repo, logger: log });
      for (const d of done) if (d.result === "archived") log.info({ path: d.path, ref: d.archive?.ref }, "worktree past the cleanup policy archived and removed");
    })().catch((err) => log.warn({ err: errorMessage(err) }, "worktree cleanup policy not applied"));
    this.cleaning = Promise.all([this.cleaning, pass]).then(() => undefined);
  }

  /** Resolves when the cleanup passes under way have finished (each step is safe to interrupt, but a finished pass leaves nothing half-reported). */
  settled(): Promise<void> {
    return this.cleaning;
  }
}
