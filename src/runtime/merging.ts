import { join } from "node:path";
import type { IntegrateOptions } from "../git/index.js";
import { withPrompt } from "./commit-message.js";
import { DEFAULT_MERGE_COMMAND_TIMEOUT_MS, type MergeSettings } from "./graph.js";
import type { HitlRecord, RelatedPrompt } from "./messages.js";
import { MergeEnv } from "./names.js";

/**
 * How a task's merge is carried out, shared by the merge coordinator (every merge) and
 * `ado hitl resolve --manual/--continue` (the person's merge on their own host), so the
 * two build the same git options from the same run settings, and nobody else builds them.
 */

/** Where the merge coordinator (and `ado hitl resolve --manual`) put scratch worktrees. */
export const mergeScratchDir = (worktreeDir: string) => join(worktreeDir, "_merge");

/**
 * The message of a task's merge (or squash) commit, also when a person resolved it: which
 * task, and its prompt as the body (cut when long), as the task's own commit carries it.
 * A squash commit is all the integration branch keeps of the task, so without the prompt
 * its history would say only a task id.
 */
export const mergeMessage = (m: Pick<TaskMerge, "taskId" | "branch" | "integrationBranch" | "prompt">) =>
  withPrompt(`ado: merge task '${m.taskId}' (${m.branch}) into ${m.integrationBranch}`, m.prompt);

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
  /** The task's prompt and those of already-merged tasks that changed the same files: a resolver's context. */
  prompt?: string;
  related?: RelatedPrompt[];
}

/** The merge a HITL record is about (the record keeps the run's settings and the prompts). */
export function taskMergeOf(record: HitlRecord): TaskMerge {
  return {
    runId: record.runId,
    taskId: record.taskId,
    repo: record.repo,
    integrationBranch: record.integrationBranch,
    branch: record.branch,
    commit: record.source,
    baseCommit: record.base,
    settings: record.settings,
    prompt: record.prompts.task,
    related: record.prompts.related,
  };
}

/** How the resolver agent is run for a merge: the run's, or another command (`ado hitl resolve --choose agent --resolver`). */
export type ResolverChoice = "configured" | { command: string };

export interface MergeRun {
  /** Run the resolver agent on conflicts the rules leave (when the run configures one, or a command is given). */
  resolver?: ResolverChoice;
  signal?: AbortSignal;
  onOutput?: IntegrateOptions["onOutput"];
}

/**
 * The git options of a task's merge under the run's settings: mode, per-path rules,
 * validation, and (when asked for) the resolver agent with its context.
 */
export function integrateOptionsFor(m: TaskMerge, scratchDir: string, run: MergeRun = {}): IntegrateOptions {
  const s = m.settings;
  const resolver = resolverFor(m, run.resolver);
  return {
    repo: m.repo,
    target: m.integrationBranch,
    source: m.commit,
    base: m.baseCommit,
    mode: s.mode,
    message: mergeMessage(m),
    rules: s.rules.map((r) => ({ paths: r.paths, strategy: r.strategy, ...(r.command ? { command: r.command } : {}) })),
    ...(s.validate ? { validate: { command: s.validate.run, timeoutMs: s.validate.timeoutMs, env: mergeEnv(m) } } : {}),
    ...(resolver ? { resolver } : {}),
    scratchDir,
    ...(run.signal ? { signal: run.signal } : {}),
    ...(run.onOutput ? { onOutput: run.onOutput } : {}),
  };
}

/** The resolver's command, or undefined when there is none to run. */
export function resolverCommand(m: TaskMerge, choice: ResolverChoice | undefined): string | undefined {
  if (choice === undefined) return undefined;
  return choice === "configured" ? m.settings.resolver?.run : choice.command;
}

function resolverFor(m: TaskMerge, choice: ResolverChoice | undefined): IntegrateOptions["resolver"] {
  const command = resolverCommand(m, choice);
  if (!command) return undefined;
  return {
    command,
    timeoutMs: m.settings.resolver?.timeoutMs ?? DEFAULT_MERGE_COMMAND_TIMEOUT_MS,
    env: mergeEnv(m),
    context: resolverContext(m),
  };
}

/** What a resolver agent is told besides the conflicts: the prompts behind both sides. */
export function resolverContext(m: TaskMerge): unknown {
  return {
    runId: m.runId,
    task: { id: m.taskId, branch: m.branch, prompt: m.prompt ?? "" },
    // Already-merged tasks that changed the same files: the other side of the conflict.
    merged: m.related ?? [],
  };
}

/** The environment of a task's merge commands (regenerate, resolver, validate). */
export const mergeEnv = (m: Pick<TaskMerge, "runId" | "taskId" | "branch">) => ({
  [MergeEnv.runId]: m.runId,
  [MergeEnv.taskId]: m.taskId,
  [MergeEnv.taskBranch]: m.branch,
});
