import { join } from "node:path";
import type { IntegrateOptions } from "../git/index.js";
import type { MergeSettings } from "./graph.js";
import { MergeEnv } from "./names.js";

/**
 * How a task's merge is carried out, shared by the merge coordinator (every merge) and
 * `ado hitl resolve --manual/--continue` (the person's merge on their own host), so the
 * two build the same git options from the same run settings.
 */

/** Where the merge coordinator (and `ado hitl resolve --manual`) put scratch worktrees. */
export const mergeScratchDir = (worktreeDir: string) => join(worktreeDir, "_merge");

/** The message of a task's merge (or squash) commit, also when a person resolved it. */
export const mergeMessage = (taskId: string, branch: string, integrationBranch: string) => `ado: merge task '${taskId}' (${branch}) into ${integrationBranch}`;

/** A task's merge: what to fold into which branch, and from which base. */
export interface TaskMerge {
  runId: string;
  taskId: string;
  repo: string;
  integrationBranch: string;
  /** The task's branch and the commit of it to merge. */
  branch: string;
  commit: string;
  baseCommit: string;
  settings: MergeSettings;
}

/**
 * The git options of a task's merge under the run's settings: mode, per-path rules and
 * validation. The resolver agent is the caller's to add (the merge coordinator gives it
 * context; a person resolving by hand needs none).
 */
export function integrateOptionsFor(m: TaskMerge, scratchDir: string, extra: Partial<IntegrateOptions> = {}): IntegrateOptions {
  const s = m.settings;
  return {
    repo: m.repo,
    target: m.integrationBranch,
    source: m.commit,
    base: m.baseCommit,
    mode: s.mode,
    message: mergeMessage(m.taskId, m.branch, m.integrationBranch),
    rules: s.rules.map((r) => ({ paths: r.paths, strategy: r.strategy, ...(r.command ? { command: r.command } : {}) })),
    ...(s.validate ? { validate: { command: s.validate.run, timeoutMs: s.validate.timeoutMs, env: mergeEnv(m) } } : {}),
    scratchDir,
    ...extra,
  };
}

/** The environment of a task's merge commands (regenerate, resolver, validate). */
export const mergeEnv = (m: Pick<TaskMerge, "runId" | "taskId" | "branch">) => ({
  [MergeEnv.runId]: m.runId,
  [MergeEnv.taskId]: m.taskId,
  [MergeEnv.taskBranch]: m.branch,
});
