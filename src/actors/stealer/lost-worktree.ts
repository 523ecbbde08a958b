import { hostname } from "node:os";
import { dirname } from "node:path";
import type { KV } from "@nats-io/kv";
import { errorMessage } from "../../runtime/errors.js";
import { WorktreeManager } from "../../git/index.js";
import { WorktreeRegistry } from "../../runtime/worktree-registry.js";
import type { Logger } from "../../runtime/logger.js";
import type { TaskWork, WorkerRecord } from "../../runtime/messages.js";
import { attemptRef } from "../../runtime/names.js";

/** What became of a lost attempt's worktree. */
export type LostWorktree =
  /** Its work (uncommitted changes, or commits of the agent's own) kept under `ref`; the worktree removed. */
  | { kind: "archived"; ref: string; commit: string }
  /** Nothing of its own: removed. */
  | { kind: "removed" }
  /** Left as it is; `why` says why (another host, its worker's process still runs, no record). */
  | { kind: "untouched"; why: string };

/**
 * The worktree of an attempt lost with its worker, if it is on this host and that
 * worker's process is gone: its work is kept under `refs/ado/attempts/<run>/<task>/<n>`
 * (as a worker keeps a failed attempt's), the worktree is removed and the task branch is
 * put back at the attempt's base. Otherwise the next attempt, which uses the same path
 * and branch, would find them taken (a worktree with uncommitted files, a branch that
 * moved) and fail.
 *
 * Done before the lost result is sent, so the next attempt cannot race it; every step is
 * safe to repeat, so a successor redoes it after a stealer that died half-way.
 */
export async function keepLostWorktree(opts: {
  kv: KV;
  work: TaskWork;
  /** The dead worker's last registry record: its host and pid. */
  worker: WorkerRecord | undefined;
  deadWorkerId: string;
  by: string;
  logger: Logger;
  /** Whether a process of this host still runs (injectable for tests). */
  processAlive?: (pid: number) => boolean;
}): Promise<LostWorktree> {
  const { work, worker, deadWorkerId } = opts;
  const registry = new WorktreeRegistry(opts.kv, opts.logger);
  const rec = await registry.get(work.runId, work.taskId).catch(() => undefined);
  if (!rec || rec.state !== "active" || rec.workerId !== deadWorkerId || rec.attempt !== work.attempt) {
    return { kind: "untouched", why: "no active worktree of this attempt is registered" };
  }
  const here = hostname();
  if (rec.host !== here) return { kind: "untouched", why: `it is on host ${rec.host}, and this stealer runs on ${here}` };
  // Its agent may still be writing in it if the worker process lives on (cut off from
  // NATS, not dead): never touch it then. The reaper stops a dead worker's agents.
  if (!worker || worker.host !== here) return { kind: "untouched", why: "the worker's process cannot be checked from this host" };
  if ((opts.processAlive ?? processAlive)(worker.pid)) return { kind: "untouched", why: `the worker's process (pid ${worker.pid}) still runs` };
  if (!work.baseCommit) return { kind: "untouched", why: "the attempt has no base commit" };

  const wt = new WorktreeManager({ repo: rec.repo, baseDir: dirname(dirname(rec.path)), logger: opts.logger });
  const ref = attemptRef(work.runId, work.taskId, work.attempt);
  const reason = `attempt ${work.attempt} lost: worker ${deadWorkerId} died`;
  const { commit: head, archived: hasWork } = await wt.archiveAttempt(rec.path, {
    ref,
    branch: work.branch,
    base: work.baseCommit,
    message: `ado: ${work.taskId} ${reason} (work in progress)`,
  });
  await registry
    .update(
      work.runId,
      work.taskId,
      hasWork
        ? { state: "archived", archiveRef: ref, commit: head, reason, updatedBy: opts.by, finishedAt: new Date().toISOString() }
        : { state: "removed", reason: `${reason}, with no changes`, updatedBy: opts.by, finishedAt: new Date().toISOString() },
      rec,
    )
    .catch((err) => opts.logger.warn({ task: work.taskId, err: errorMessage(err) }, "worktree registry not updated"));
  return hasWork ? { kind: "archived", ref, commit: head! } : { kind: "removed" };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
