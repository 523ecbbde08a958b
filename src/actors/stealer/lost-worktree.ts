import { hostname } from "node:os";
import { dirname } from "node:path";
import type { KV } from "@nats-io/kv";
import { errorMessage } from "../../runtime/errors.js";
import { WorktreeManager, worktreesOnBranch, type WorktreeRecord } from "../../git/index.js";
import { WorktreeRegistry } from "../../runtime/worktree-registry.js";
import type { Logger } from "../../runtime/logger.js";
import type { TaskWork, WorkerRecord } from "../../runtime/messages.js";
import { attemptRef } from "../../runtime/names.js";
import { processAlive } from "./leftovers.js";

/** What became of a lost attempt's worktree. */
export type LostWorktree =
  /** Its work (uncommitted changes, or commits of the agent's own) kept under `ref`; the worktree removed. */
  | { kind: "archived"; ref: string; commit: string }
  /** Nothing of its own: removed. */
  | { kind: "removed" }
  /** Left as it is; `why` says why (another host, its worker's process still runs, none found). */
  | { kind: "untouched"; why: string };

/**
 * The worktree of an attempt lost with its worker, if it is on this host and that
 * worker's process is gone: its work is kept under `refs/ado/attempts/<run>/<task>/<n>`
 * (as a worker keeps a failed attempt's), the worktree is removed and the task branch is
 * put back at the attempt's base. Otherwise the next attempt, which uses the same path
 * and branch, would find them taken (a worktree with uncommitted files, a branch that
 * moved) and fail.
 *
 * What decides is the attempt, its worker and whether that worker's process lives, not
 * what the registry recorded: a worker killed between adding the worktree and recording
 * it left no record, one killed after recording `committed` and before its result was
 * stored left a record that no longer says `active`. The worktree is found in git (the
 * task branch checked out, ado.json naming the dead worker); the record, when there is
 * one for this attempt, only says where else to look and is updated.
 * A `committed` attempt may have succeeded (its result stored, the kill came before the
 * ack): its branch is left at its commit (archived all the same), for the merge.
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
  const alive = opts.processAlive ?? processAlive;
  const here = hostname();
  const registry = new WorktreeRegistry(opts.kv, opts.logger);
  const stored = await registry.get(work.runId, work.taskId).catch(() => undefined);
  // The record speaks of this attempt only if it names it and its worker.
  const rec = stored && stored.workerId === deadWorkerId && stored.attempt === work.attempt ? stored : undefined;
  if (rec && rec.host !== here) return { kind: "untouched", why: `it is on host ${rec.host}, and this stealer runs on ${here}` };
  // Its agent may still be writing in it if the worker process lives on (cut off from
  // NATS, not dead): never touch it then. The reaper stops a dead worker's agents.
  if (!worker || worker.host !== here) return { kind: "untouched", why: "the worker's process cannot be checked from this host" };
  if (alive(worker.pid)) return { kind: "untouched", why: `the worker's process (pid ${worker.pid}) still runs` };
  if (!work.baseCommit) return { kind: "untouched", why: "the attempt has no base commit" };

  const repo = rec?.repo ?? work.repo;
  if (!repo) return { kind: "untouched", why: "the run has no repository" };
  const onBranch = await worktreesOnBranch(repo, work.branch).catch(() => []);
  // The dead worker's worktree of this task: ado.json names the worker (and, from
  // workers that record it, the attempt); its creator process is gone.
  const found = onBranch.find(
    (w) => w.meta?.workerId === deadWorkerId && w.meta.host === here && (w.meta.attempt === undefined || w.meta.attempt === work.attempt) && !alive(w.meta.pid),
  );
  // Not in git: a registration whose directory is gone is still worth clearing, if the
  // record says the attempt had not finished with it (a record saying it was archived or
  // removed is a predecessor's pass: nothing to redo).
  const path = found?.path ?? (rec && (rec.state === "active" || rec.state === "committed") ? rec.path : undefined);
  if (!path) return { kind: "untouched", why: "no worktree of this attempt was found (or it was cleared already)" };

  const wt = new WorktreeManager({ repo, baseDir: dirname(dirname(path)), logger: opts.logger });
  const ref = attemptRef(work.runId, work.taskId, work.attempt);
  const reason = `attempt ${work.attempt} lost: worker ${deadWorkerId} died`;
  const { commit: head, archived: hasWork } = await wt.archiveAttempt(path, {
    ref,
    branch: work.branch,
    base: work.baseCommit,
    message: `ado: ${work.taskId} ${reason} (work in progress)`,
    resetBranch: rec?.state !== "committed",
  });
  const fallback: Pick<WorktreeRecord, "runId" | "taskId" | "repo" | "path" | "branch" | "host" | "createdAt"> = {
    runId: work.runId,
    taskId: work.taskId,
    repo,
    path,
    branch: work.branch,
    host: here,
    createdAt: found?.meta?.createdAt ?? new Date().toISOString(),
  };
  await registry
    .update(
      work.runId,
      work.taskId,
      hasWork
        ? { state: "archived", archiveRef: ref, commit: head, reason, attempt: work.attempt, workerId: deadWorkerId, updatedBy: opts.by, finishedAt: new Date().toISOString() }
        : { state: "removed", reason: `${reason}, with no changes`, attempt: work.attempt, workerId: deadWorkerId, updatedBy: opts.by, finishedAt: new Date().toISOString() },
      rec ?? fallback,
    )
    .catch((err) => opts.logger.warn({ task: work.taskId, err: errorMessage(err) }, "worktree registry not updated"));
  return hasWork ? { kind: "archived", ref, commit: head! } : { kind: "removed" };
}
