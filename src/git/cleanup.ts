/**
 * Cleanup of task worktrees, in two parts: `planCleanup` decides, per worktree, what to
 * do and why (pure: facts in, decisions out, tested without git), and `applyCleanup`
 * carries the decisions out (git, and the KV registry when there is one).
 *
 * The policy, in order:
 *   1. A worktree in use (its creator still runs and the registry does not say its task
 *      finished, or it was created moments ago) is kept, even with force.
 *   2. A registration whose directory is gone is cleared (nothing on disk to lose).
 *   3. A worktree with nothing of its own (no uncommitted changes, and every commit is
 *      on another branch, a tag or a `refs/ado/*` ref: merged, archived, or never
 *      committed to) is removed. This is the default: the merge coordinator does it
 *      right after merging; cleanup catches what it missed.
 *   4. A worktree with work (uncommitted changes or unmerged commits) is archived and
 *      then removed when it is older than `cleanupAfter` (since it finished), when it is
 *      among the oldest beyond `maxWorktrees`, or with `force`. Its work is committed to
 *      `refs/ado/archive/<runId>/<taskId>/<time>` first (uncommitted changes on top of
 *      its HEAD); if that fails, it is kept.
 *   5. Otherwise it is kept, and the plan says why and what would remove it.
 * Nothing with work is ever deleted without an archive, and the user's checkout and
 * directories outside the base directory are never considered.
 */
import { hostname } from "node:os";
import type { Logger } from "pino";
import { errorMessage } from "../runtime/errors.js";
import { silentLogger } from "../runtime/logger.js";
import { WorktreeDirtyError } from "./errors.js";
import type { WorktreeRecord, WorktreeState } from "./worktree-record.js";
import { type OrphanDir, ownerAlive, type WorktreeManager, type WorktreeStatus, YOUNG_WORKTREE_MS } from "./worktrees.js";
import { archiveRef } from "../runtime/names.js";

export interface CleanupPolicy {
  /** Worktrees with work, finished longer ago than this, are archived and removed. */
  cleanupAfterMs?: number;
  /** Beyond this many worktrees in the repository, the oldest with work are archived and removed. */
  maxWorktrees?: number;
  /** Archive and remove every worktree not in use. */
  force?: boolean;
}

export type CleanupAction =
  /** Nothing of its own: removed (git re-checks that it is clean). */
  | { kind: "remove"; why: string }
  /** Its work is archived under `ref`, then it is removed. */
  | { kind: "archive"; why: string; ref: string }
  /** Its directory is gone: the registration is dropped. */
  | { kind: "clear"; why: string }
  /** Left alone; `hint` says what would remove it, when anything would. */
  | { kind: "keep"; why: string; hint?: string };

export interface CleanupItem {
  path: string;
  /** Path under the base directory, `<runId>/<taskId>` for ado's worktrees. */
  name: string;
  branch?: string;
  runId?: string;
  taskId?: string;
  /** Registry state (when a registry was read), else undefined. */
  state?: WorktreeState;
  createdAt?: string;
  finishedAt?: string;
  changes: number;
  unmerged?: number;
  /** Uncommitted changes or unmerged commits: removing it needs an archive first. */
  hasWork: boolean;
  inUse: boolean;
  action: CleanupAction;
}

/** What the planner knows about the world besides the worktrees, injectable for tests. */
export interface PlanContext {
  now: Date;
  /** Whether a worktree's creator still runs (ownerAlive by default). */
  alive?: (meta: { host: string; pid: number }) => boolean | undefined;
  host?: string;
}

/** Registry records by worktree path. */
export type RecordsByPath = ReadonlyMap<string, WorktreeRecord>;


/** Decides what cleanup does with each worktree (and orphan directory), and why. */
export function planCleanup(
  worktrees: readonly WorktreeStatus[],
  records: RecordsByPath,
  policy: CleanupPolicy,
  ctx: PlanContext,
  orphans: readonly OrphanDir[] = [],
): CleanupItem[] {
  const alive = ctx.alive ?? ((m) => ownerAlive(m, ctx.host ?? hostname()));
  const now = ctx.now.getTime();
  const items = worktrees.map((w) => {
    const record = records.get(w.path);
    const [nameRun, nameTask] = w.name.split("/");
    const runId = w.meta?.runId ?? record?.runId ?? (w.name.split("/").length === 2 ? nameRun : undefined);
    const taskId = w.meta?.taskId ?? record?.taskId ?? (w.name.split("/").length === 2 ? nameTask : undefined);
    const item: CleanupItem = {
      path: w.path,
      name: w.name,
      branch: w.branch,
      runId,
      taskId,
      state: record?.state,
      createdAt: w.createdAt ?? record?.createdAt,
      finishedAt: record?.finishedAt,
      changes: w.changes.length,
      unmerged: w.unmerged,
      hasWork: w.changes.length > 0 || (w.unmerged ?? 0) > 0,
      inUse: false,
      action: { kind: "keep", why: "" },
    };
    const busy = inUse(w, record, alive, now);
    if (busy) {
      item.inUse = true;
      item.action = { kind: "keep", why: busy, hint: "it is never removed while in use; stop its worker first if it is stuck" };
      return item;
    }
    if (!w.exists) {
      item.action = { kind: "clear", why: "its directory is gone: dropping git's registration (its branch keeps its commits)" };
      return item;
    }
    if (w.changes.length === 0 && w.unmerged === 0) {
      const nothing = w.meta && w.head === w.meta.base;
      item.action = { kind: "remove", why: nothing ? "no changes and no commits of its own" : "merged: its commits are on another branch or ref" };
      return item;
    }
    const work = describeWork(w);
    if (w.unmerged === undefined && w.changes.length === 0 && !policy.force) {
      item.action = { kind: "keep", why: "git could not tell whether its commits are merged", hint: "check it with git log; --force archives it and removes it" };
      return item;
    }
    const ref = archiveRef(runId ?? "unknown", taskId ?? w.name.replace(/[^A-Za-z0-9_-]+/g, "-"), ctx.now);
    const since = Date.parse(item.finishedAt ?? item.createdAt ?? "");
    if (policy.force) item.action = { kind: "archive", why: `${work}; --force`, ref };
    else if (policy.cleanupAfterMs !== undefined && Number.isFinite(since) && now - since > policy.cleanupAfterMs) {
      item.action = { kind: "archive", why: `${work}; ${item.finishedAt ? "finished" : "created"} ${age(now - since)} ago, over cleanupAfter (${age(policy.cleanupAfterMs)})`, ref };
    } else {
      const hints = ["--force archives it and removes it"];
      if (policy.cleanupAfterMs === undefined) hints.push("or set worktrees.cleanupAfter");
      item.action = {
        kind: "keep",
        why: policy.cleanupAfterMs !== undefined && Number.isFinite(since) ? `${work}; ${age(now - since)} old, under cleanupAfter (${age(policy.cleanupAfterMs)})` : work,
        hint: hints.join(", "),
      };
    }
    return item;
  });

  // maxWorktrees: count what stays, then archive the oldest kept ones with work until under it.
  if (policy.maxWorktrees !== undefined) {
    const staying = items.filter((i) => i.action.kind === "keep");
    let excess = staying.length - policy.maxWorktrees;
    const oldestFirst = staying
      .filter((i) => !i.inUse && i.hasWork)
      .sort((a, b) => (Date.parse(a.finishedAt ?? a.createdAt ?? "") || 0) - (Date.parse(b.finishedAt ?? b.createdAt ?? "") || 0));
    for (const i of oldestFirst) {
      if (excess <= 0) break;
      const w = worktrees.find((x) => x.path === i.path)!;
      i.action = {
        kind: "archive",
        why: `${describeWork(w)}; among the oldest beyond maxWorktrees (${policy.maxWorktrees}; ${staying.length} would stay)`,
        ref: archiveRef(i.runId ?? "unknown", i.taskId ?? i.name.replace(/[^A-Za-z0-9_-]+/g, "-"), ctx.now),
      };
      excess--;
    }
  }

  for (const o of orphans) {
    items.push({
      path: o.path,
      name: o.name,
      changes: 0,
      hasWork: false,
      inUse: false,
      action: { kind: "keep", why: `not a registered worktree: ${o.reason}`, hint: "it may hold work: look inside, then delete it by hand" },
    });
  }
  return items;
}

/** Why a worktree counts as in use, or undefined when it does not. */
function inUse(
  w: WorktreeStatus,
  record: WorktreeRecord | undefined,
  alive: (meta: { host: string; pid: number }) => boolean | undefined,
  now: number,
): string | undefined {
  // The registry says the task finished with it: the worker process may live on, the task does not.
  const finished = record !== undefined && record.state !== "active";
  if (w.meta) {
    const owner = alive(w.meta);
    if (owner === true && !finished) return `in use: its creator (pid ${w.meta.pid}) still runs${record ? " and its task is active" : ""}`;
    if (owner === undefined && !finished) return `created on host ${w.meta.host}: whether its task still runs cannot be checked from here`;
    return undefined;
  }
  if (record?.state === "active") return `in use: the registry says task ${record.runId}/${record.taskId} runs in it (on ${record.host})`;
  const created = Date.parse(w.createdAt ?? "");
  if (Number.isFinite(created) && now - created < YOUNG_WORKTREE_MS && !finished) return "just created (its add may still be running)";
  return undefined;
}

function describeWork(w: WorktreeStatus): string {
  const parts: string[] = [];
  if (w.changes.length) parts.push(`${w.changes.length} uncommitted change(s)`);
  if (w.unmerged) parts.push(`${w.unmerged} unmerged commit(s)`);
  return parts.length ? `has ${parts.join(" and ")}` : "has work";
}

function age(ms: number): string {
  const units: Array<[string, number]> = [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1_000],
  ];
  for (const [u, n] of units) if (ms >= n) return `${Math.floor(ms / n)}${u}`;
  return `${Math.max(0, Math.round(ms))}ms`;
}

/** Where cleanup records what became of a task's worktree (the KV registry in src/runtime implements it). */
export interface CleanupRegistry {
  update(
    runId: string,
    taskId: string,
    patch: Partial<WorktreeRecord> & Pick<WorktreeRecord, "state" | "updatedBy">,
    fallback: Omit<WorktreeRecord, "state" | "updatedBy" | "updatedAt">,
  ): Promise<unknown>;
}

/** What applying one decision did. */
export interface CleanupOutcome extends CleanupItem {
  /** removed, archived (and removed), cleared, kept (as planned), or failed (kept, with `error`). */
  result: "removed" | "archived" | "cleared" | "kept" | "failed" | "planned";
  archive?: { ref: string; commit: string; withChanges: boolean };
  error?: string;
}

export interface ApplyOptions {
  /** Only report what would happen. */
  dryRun?: boolean;
  registry?: CleanupRegistry;
  /** Written to the registry as `updatedBy`. */
  actor?: string;
  /** The repository, for registry records created here. */
  repo: string;
  logger?: Logger;
}

/**
 * Carries out a plan, one worktree at a time (removal holds the repository's lock
 * anyway). Failures are reported per worktree, never thrown: the worktree is kept.
 */
export async function applyCleanup(manager: WorktreeManager, items: readonly CleanupItem[], opts: ApplyOptions): Promise<CleanupOutcome[]> {
  const log = opts.logger ?? silentLogger;
  const out: CleanupOutcome[] = [];
  for (const item of items) {
    const a = item.action;
    if (opts.dryRun) {
      out.push({ ...item, result: a.kind === "keep" ? "kept" : "planned" });
      continue;
    }
    try {
      if (a.kind === "keep") {
        out.push({ ...item, result: "kept" });
        continue;
      }
      if (a.kind === "archive") {
        const archive = await manager.archive(item.path, a.ref, `ado: archive of worktree ${item.name} (${a.why})`);
        log.info({ path: item.path, ref: a.ref, commit: archive.commit }, "worktree work archived");
        await manager.remove(item.path, { force: true });
        out.push({ ...item, result: "archived", archive: { ref: a.ref, ...archive } });
        await record(opts, item, { state: "archived", archiveRef: a.ref, commit: archive.commit, reason: a.why });
        continue;
      }
      await manager.remove(item.path, { force: a.kind === "clear" });
      out.push({ ...item, result: a.kind === "clear" ? "cleared" : "removed" });
      const merged = a.kind === "remove" && a.why.startsWith("merged");
      await record(opts, item, { state: merged ? "merged" : "removed", reason: a.why });
    } catch (err) {
      const error = err instanceof WorktreeDirtyError ? `changed since it was inspected: ${err.message}` : errorMessage(err);
      log.warn({ path: item.path, err: error }, "worktree cleanup failed; kept");
      out.push({ ...item, result: "failed", error });
      await record(opts, item, { state: "kept", reason: `cleanup failed: ${error}` });
    }
  }
  return out;
}

async function record(opts: ApplyOptions, item: CleanupItem, patch: Partial<WorktreeRecord> & { state: WorktreeState }): Promise<void> {
  if (!opts.registry || !item.runId || !item.taskId) return;
  const now = new Date().toISOString();
  try {
    await opts.registry.update(
      item.runId,
      item.taskId,
      { ...patch, finishedAt: item.finishedAt ?? now, updatedBy: opts.actor ?? "ado worktrees cleanup" },
      { runId: item.runId, taskId: item.taskId, repo: opts.repo, path: item.path, branch: item.branch ?? "(detached)", host: hostname(), createdAt: item.createdAt ?? now },
    );
  } catch (err) {
    (opts.logger ?? silentLogger).warn({ path: item.path, err: errorMessage(err) }, "worktree registry not updated");
  }
}
