/**
 * The merge coordinator's decisions that need no I/O: how a batch of requests is split
 * into steps, what a HITL record tells the scheduler, and what an escalation records.
 * merger.ts is the shell that does the git, KV and publishing around them.
 */
import type { IntegrateOutcome } from "../../git/index.js";
import type { HitlDetails } from "../../runtime/hitl-state.js";
import type { HitlConflict, HitlRecord, MergeRequest, MergeResult, MergerInput } from "../../runtime/messages.js";
import { taskKey } from "../../runtime/names.js";

/** Each side of a conflicted file is kept in the HITL record up to this size. */
export const SIDE_LIMIT = 32 * 1024;
/** Beyond this much conflict content in one record, further files keep their path and kind only. */
export const CONFLICTS_LIMIT = 256 * 1024;

/** What the merge coordinator made of a request: git's outcome, a person's skip, or an error it reports. */
export type Outcome = IntegrateOutcome | { kind: "skipped" } | { kind: "error"; message: string };
/** An outcome that needs a person (again). */
export type NotMerged = Exclude<Outcome, { kind: "merged" } | { kind: "skipped" }>;

/** One step of a batch: indexes into it, in arrival order, and the run it is about. */
export type Step = { runId: string } & (
  | { kind: "into"; index: number }
  | { kind: "release"; index: number }
  | { kind: "resolve"; index: number }
  /** First merges of one run's tasks: merged together (integrateBatch), each with its own result. */
  | { kind: "merge"; indexes: number[] }
);

/**
 * Splits a batch into steps, grouped by run: the steps of one run are taken in order
 * (they move the same branch), those of different runs may go at the same time (so a
 * long validation in one run holds no other run back). First merges of the same run
 * (one integration branch, one set of settings) form one step; a task whose request
 * arrives twice in it is merged once (the second copy finds it up to date). The rest
 * are steps of their own. The scheduler asks for a merge only once the task's
 * dependencies are merged, so the tasks of one step never depend on each other.
 */
export function planSteps(batch: readonly MergerInput[]): Step[][] {
  const runs = new Map<string, Step[]>();
  const merges = new Map<string, Extract<Step, { kind: "merge" }>>();
  batch.forEach((input, index) => {
    const steps = runs.get(input.runId) ?? [];
    runs.set(input.runId, steps);
    const runId = input.runId;
    if (input.type === "merge.into") steps.push({ runId, kind: "into", index });
    else if (input.releaseOnly) steps.push({ runId, kind: "release", index });
    else if (input.resolution) steps.push({ runId, kind: "resolve", index });
    else {
      const key = `${input.runId}\0${input.repo}\0${input.integrationBranch}\0${input.remote ?? ""}\0${JSON.stringify(input.settings)}`;
      const step = merges.get(key);
      if (step) step.indexes.push(index);
      else {
        const created: Extract<Step, { kind: "merge" }> = { runId, kind: "merge", indexes: [index] };
        merges.set(key, created);
        steps.push(created);
      }
    }
  });
  return [...runs.values()];
}

/**
 * Whether a run's merges can be folded together (integrateBatch): merge or squash mode
 * without validation. Linear mode replays commit by commit, and each merged tree must be
 * validated on its own, so those merge one task at a time.
 */
export function batchable(settings: MergeRequest["settings"]): settings is MergeRequest["settings"] & { mode: "merge" | "squash" } {
  return (settings.mode === "merge" || settings.mode === "squash") && !settings.validate;
}

/** The scheduler's result for a HITL record that is open: needs attention, at its round. */
export function attentionResult(record: HitlRecord): MergeResult {
  return {
    type: "merge.result",
    runId: record.runId,
    taskId: record.taskId,
    status: "needs_attention",
    round: record.round,
    files: record.files,
    message: record.message,
    hitlId: record.id,
    reason: record.reason,
  };
}

/** What a decided round of a HITL record told the scheduler, to tell it again. */
export function fromHistory(record: HitlRecord, entry: HitlRecord["history"][number]): MergeResult {
  const base = { type: "merge.result" as const, runId: record.runId, taskId: record.taskId, round: entry.round, hitlId: record.id };
  if (entry.outcome === "merged") return { ...base, status: "merged", integrationCommit: entry.commit, files: [], message: entry.message };
  if (entry.outcome === "skipped") return { ...base, status: "skipped", files: record.files, message: entry.message };
  // The round after it is the record's (or a later one, which the scheduler then ignores).
  return attentionResult(record);
}

/** A first merge request seen again after its escalation: what the record says now. */
export function replayed(record: HitlRecord): MergeResult {
  const last = record.history[record.history.length - 1];
  if (record.state === "resolved" && last) return fromHistory(record, last);
  return attentionResult(record);
}

/** The error result of a request that cannot be merged (or kept failing). */
export function errorResult(req: MergeRequest, message: string): MergeResult {
  return { type: "merge.result", runId: req.runId, taskId: req.taskId, status: "error", files: [], message, round: req.resolution?.round ?? 0 };
}

/** A line for the HITL history. */
export function summary(outcome: NotMerged): string {
  if (outcome.kind === "error") return outcome.message;
  return outcome.kind === "conflict"
    ? `still conflicted: ${outcome.reason}`
    : `validation failed (${outcome.exitCode === null ? "killed" : `exit ${outcome.exitCode}`})`;
}

/**
 * What a HITL record says about an outcome a person must decide on. `files` are the
 * task's changed files, read by the caller for a validation failure or an error
 * without a previous record (a conflict names its own); `target` is the integration head.
 */
export function escalationDetails(req: MergeRequest, outcome: NotMerged, previous: HitlRecord | undefined, facts: { target?: string; files: string[] }): HitlDetails {
  let files: string[];
  let reason: HitlRecord["reason"];
  let message: string;
  let conflicts: HitlConflict[] = [];
  let validationOutput: string | undefined;
  let resolverOutput: string | undefined;
  if (outcome.kind === "conflict") {
    reason = "conflict";
    files = outcome.files;
    conflicts = capConflicts(outcome.conflicts);
    resolverOutput = outcome.resolverOutput;
    const others = req.related.filter((r) => r.files.some((f) => files.includes(f))).map((r) => `'${r.taskId}'`);
    message = `merge conflict in ${files.join(", ")} with ${others.length ? `task ${others.join(", ")} (already merged)` : "the integration branch"}: ${outcome.reason}`;
  } else if (outcome.kind === "validation_failed") {
    reason = "validation";
    files = facts.files;
    validationOutput = outcome.output;
    const last = outcome.output.trim().split("\n").pop() ?? "";
    message = `validation failed (${outcome.exitCode === null ? "killed" : `exit ${outcome.exitCode}`}) on the merged tree; the merge was backed out${last ? `: ${last}` : ""}`;
  } else {
    // The choice could not be carried out (no resolver, a bad manual commit, a git error).
    reason = previous?.reason ?? "conflict";
    files = previous?.files ?? facts.files;
    conflicts = previous?.conflicts ?? [];
    validationOutput = previous?.validationOutput;
    message = outcome.message;
  }
  const related = req.related.filter((r) => r.files.some((f) => files.includes(f)));
  return {
    id: taskKey(req.runId, req.taskId),
    runId: req.runId,
    taskId: req.taskId,
    attempt: req.attempt,
    repo: req.repo,
    integrationBranch: req.integrationBranch,
    branch: req.branch,
    source: req.commit,
    base: req.baseCommit,
    ...(facts.target ? { target: facts.target } : {}),
    files,
    reason,
    message,
    conflicts,
    ...(validationOutput !== undefined ? { validationOutput } : {}),
    ...(resolverOutput !== undefined ? { resolverOutput } : {}),
    prompts: { task: req.prompt, related: related.length ? related : req.related },
    settings: req.settings,
  };
}

/**
 * Conflict sides as a HITL record keeps them: each side cut to SIDE_LIMIT, and past
 * CONFLICTS_LIMIT in all, later files keep only their path and kind (the branches
 * hold everything; a KV value must stay under the server's max_payload).
 */
export function capConflicts(conflicts: readonly { path: string; kind: string; base?: string; ours?: string; theirs?: string }[]): HitlConflict[] {
  let budget = CONFLICTS_LIMIT;
  return conflicts.map((c) => {
    const out: HitlConflict = { path: c.path, kind: c.kind, truncated: false };
    for (const side of ["base", "ours", "theirs"] as const) {
      const text = c[side];
      if (text === undefined) continue;
      const kept = Math.min(text.length, SIDE_LIMIT, budget);
      if (kept < text.length) out.truncated = true;
      if (kept > 0) out[side] = text.slice(0, kept);
      budget -= kept;
    }
    return out;
  });
}
