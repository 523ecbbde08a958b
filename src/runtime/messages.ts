import { z } from "zod";
import { GraphDefSchema, MergeSettingsSchema, PAYLOAD_REF, PlacementSchema, PRIORITIES, STRATEGIES, TaskDefSchema } from "./graph.js";
import { ID_PATTERN } from "./ids.js";
import { RunBudgetSchema } from "./budget.js";
import { WorktreeRecord } from "../git/index.js";
import type { SchemaRef } from "./codec.js";
import { POLICY_OVERRIDE, SCALER_POOL_STATE } from "./scaling.js";
import { ProviderAssignmentSchema, ProviderNameSchema } from "./providers.js";

export type { SchemaRef };

/** Schema name and version of a worktree registry value (KV values carry no header). */
export const WORKTREE_RECORD: SchemaRef<WorktreeRecord> = { name: "worktree.record", version: 1, schema: WorktreeRecord };

/**
 * Every payload ado puts on the wire, as zod schemas. Each schema carries a name and
 * version (sent in a header by the codec) so a reader can tell what it is decoding.
 * Inside the code, use the inferred types; decode at the boundary only.
 */

const id = z.string().regex(ID_PATTERN);
const isoTime = z.string().datetime({ offset: true });
const sha = z.string().regex(/^[0-9a-f]{40}$/, "a full 40-hex commit id");

/** Run submission: a client -> scheduler, on the submit subject. */
export const SubmitRun = z.object({
  type: z.literal("run.submit"),
  runId: id,
  graph: GraphDefSchema,
  /** Absolute path of the repository; absent for runs whose agents need no worktree. */
  repo: z.string().min(1).optional(),
  /** The commit every root task starts from. Required with `repo`. */
  baseCommit: sha.optional(),
  /**
   * A git URL every host of the run can reach (remote mode). Hosts without the
   * repository on their disk work from clones of it: see src/git/remote.ts.
   */
  remote: z.string().min(1).optional(),
  submittedAt: isoTime,
  /** Who submitted (CLI user@host, a service name): for the audit trail. */
  submittedBy: z.string().optional(),
  /**
   * The run's effective merge settings, resolved by the submitter from its config, the
   * graph's `merge:` and its flags. Absent: the graph's `merge:` over the defaults.
   */
  merge: MergeSettingsSchema.optional(),
  /**
   * The run's budget, resolved by the submitter from its config, the graph's `maxCost` /
   * `maxTokens` and its flags. Absent: the graph's caps, if any, with the defaults.
   */
  budget: RunBudgetSchema.optional(),
});
export type SubmitRun = z.infer<typeof SubmitRun>;

/** A task whose dependencies are met: scheduler -> balancer -> worker. */
export const TaskWork = z.object({
  type: z.literal("task.work"),
  runId: id,
  taskId: id,
  attempt: z.number().int().min(1),
  priority: z.enum(PRIORITIES),
  task: TaskDefSchema.omit({ needs: true }),
  /** Longest remaining dependency path through the task: the balancer's tie-break within a level. */
  rank: z.number().int().min(1).default(1),
  /** Retry backoff: not to be dispatched before this time (epoch ms). */
  notBefore: z.number().int().min(0).default(0),
  /** The task's placement, or the run's default. */
  placement: PlacementSchema.default({ labels: [], requires: [] }),
  strategy: z.enum(STRATEGIES).optional(),
  repo: z.string().optional(),
  /** The run's git remote, for workers that work from clones. */
  remote: z.string().min(1).optional(),
  /** Commit to start from: the run's base, or an integration commit holding every dependency. */
  baseCommit: sha.optional(),
  branch: z.string().min(1),
  /** Results of the tasks this one needs, for fan-in tasks. */
  inputs: z
    .array(
      z.object({
        taskId: id,
        status: z.string(),
        branch: z.string().optional(),
        commit: sha.optional(),
        summary: z.string().default(""),
        costUsd: z.number().default(0),
        /** Tokens (input + output) its attempts used. */
        tokens: z.number().int().min(0).default(0),
      }),
    )
    .default([]),
  /**
   * Inputs too large for the message: they are in the object store `<prefix>-payloads`
   * under this name (JSON of the list) and `inputs` is empty. Workers read them.
   */
  inputsRef: PAYLOAD_REF.optional(),
  readyAt: isoTime,
  submittedAt: isoTime,
  /** Set by the balancer. */
  workerId: id.optional(),
  /**
   * An earlier attempt of the task left a checkpoint (`baseCommit` is it) and its agent's
   * session: an agent CLI that can resume goes on in that session (its files restored
   * from the checkpoint's copy when this is another host); one that cannot starts a new
   * session told where the work stands.
   */
  resume: z
    .object({
      /** The attempt whose work and session these are. */
      fromAttempt: z.number().int().min(1),
      sessionId: z.string().min(1).optional(),
      /** The checkpoint commit (also `baseCommit`). */
      commit: sha.optional(),
    })
    .optional(),
  /**
   * Set by the balancer for a task that names providers: the one the governor let it
   * use (its agent is then `task.agent`). The worker gives the agent that provider's
   * environment and reports the outcome to its circuit breaker.
   */
  provider: ProviderAssignmentSchema.optional(),
  /**
   * Best-of-N: this attempt is variant `n` of `of` (its branch and worktree are the
   * variant's own). Once its work is committed, the worker runs the task's select
   * command in its worktree and reports the outcome (TaskResult.variant).
   */
  variant: z.object({ n: z.number().int().min(1), of: z.number().int().min(2) }).optional(),
  /**
   * Best-of-N with `select: { judge }`: this attempt is the judge of a round. The worker
   * writes each candidate's diff (base to commit) to `$ADO_VARIANTS_DIR/<n>.diff` for the
   * judge agent and reports the number on the last line of its final message
   * (TaskResult.judged); the judge's own edits are never the task's work.
   */
  judge: z.object({ candidates: z.array(z.object({ n: z.number().int().min(1), commit: sha })).min(2) }).optional(),
});
export type TaskWork = z.infer<typeof TaskWork>;

/**
 * What a variant's select command said: `validate` passed (exit 0) or not, or the number
 * `score` printed on its last line (absent when it printed none or failed).
 */
export const VariantCheck = z.object({
  n: z.number().int().min(1),
  /** The ref keeping the variant's work (`refs/ado/variants/<run>/<task>/<n>`). */
  ref: z.string().optional(),
  passed: z.boolean().optional(),
  score: z.number().finite().optional(),
  /** The command's last lines of output, or why it did not run. */
  detail: z.string().default(""),
});
export type VariantCheck = z.infer<typeof VariantCheck>;

export const TaskFailure = z.object({
  message: z.string(),
  /** False when retrying cannot help (invalid task, agent not installed). */
  retryable: z.boolean(),
  /**
   * `cancelled`: stopped on request; `interrupted`: its worker shut down (the attempt is
   * handed back and does not count against the retry budget).
   */
  kind: z.enum([
    "exit",
    "timeout",
    "agent_missing",
    "invalid",
    "git",
    "internal",
    "cancelled",
    "interrupted",
    // Agent CLIs (src/agents): what their stream and exit code say went wrong.
    /** The provider refused the credentials (or the account's billing): not retried; the message says how to log in. */
    "auth",
    /** A rate or usage limit: retry not before `retryAt` when the CLI named a reset time, else with backoff. */
    "rate_limit",
    /** The agent used up its turns (`maxTurns`): failed, resumable from its session. */
    "max_turns",
    /** The agent used up its budget (`maxBudgetUsd`): failed, resumable from its session. */
    "budget",
    /** The CLI died or ended without a result: retried per the task's policy. */
    "crash",
    /** No output for the task's idle timeout: its group was killed; retried. */
    "hang",
  ]),
  exitCode: z.number().int().nullable().optional(),
  /** `rate_limit`: the reset time the CLI gave (epoch ms); absent when it gave none. */
  retryAt: z.number().int().min(0).optional(),
  /**
   * `interrupted` only: false when the attempt was lost before its agent started (its
   * worker died while claiming it or making its worktree). Such an attempt costs the
   * task nothing: it does not count against the task's interruption cap.
   */
  agentStarted: z.boolean().optional(),
});
export type TaskFailure = z.infer<typeof TaskFailure>;

/** Worker -> scheduler: how an attempt ended. */
export const TaskResult = z.object({
  type: z.literal("task.result"),
  runId: id,
  taskId: id,
  attempt: z.number().int().min(1),
  workerId: id,
  status: z.enum(["succeeded", "failed"]),
  failure: TaskFailure.optional(),
  branch: z.string().optional(),
  /**
   * A succeeded attempt's commit. On a failed attempt, its checkpoint: the work so far,
   * committed (on the branch, or under the attempt's checkpoint ref by a periodic
   * checkpoint), which the next attempt starts from.
   */
  commit: sha.optional(),
  /** Paths changed by the task's commit (empty when it changed nothing). */
  files: z.array(z.string()).default([]),
  worktree: z.string().optional(),
  startedAt: isoTime,
  finishedAt: isoTime,
  /** Last lines of output, shown when the task failed. */
  outputTail: z.string().default(""),
  /** One line on what the task did (an agent CLI's final text, else its last line of output), passed to dependents. */
  summary: z.string().default(""),
  /** What the attempt cost in USD, when the agent reports it. */
  costUsd: z.number().min(0).default(0),
  /** The agent CLI's session the attempt ran in (to resume it: the next attempt, or a person with the CLI). */
  sessionId: z.string().min(1).optional(),
  /**
   * Tokens the attempt used, prompt (input, cache reads included) plus output, when the
   * agent reports them: what a token budget (`maxTokens`) counts. Absent: none reported (0).
   */
  tokens: z.number().int().min(0).optional(),
  /** A succeeded variant of a best-of-N task: what its select command said. */
  variant: VariantCheck.optional(),
  /** A judge's attempt: the variant it named (absent: its final message named none). */
  judged: z.number().finite().optional(),
});
export type TaskResult = z.infer<typeof TaskResult>;

/** What a person chose for a merge that needs attention (`ado hitl resolve`). */
export const HitlChoice = z.enum(["ours", "theirs", "agent", "manual", "skip"]);
export type HitlChoice = z.infer<typeof HitlChoice>;

/** Why a merge needs a person: a conflict nothing resolved, or a merged tree that failed validation. */
export const HitlReason = z.enum(["conflict", "validation"]);
export type HitlReason = z.infer<typeof HitlReason>;

/** A prompt of an already-merged task that touched the same files: context for resolving a conflict. */
export const RelatedPrompt = z.object({ taskId: id, prompt: z.string(), files: z.array(z.string()) });
export type RelatedPrompt = z.infer<typeof RelatedPrompt>;

/**
 * Scheduler -> merge coordinator: fold a finished task branch into the integration
 * branch with the run's merge settings. `ado hitl resolve` sends the same request with
 * `resolution` set, to carry out a person's choice for a merge that needed attention.
 */
export const MergeRequest = z.object({
  type: z.literal("merge.request"),
  runId: id,
  taskId: id,
  /** The attempt whose commit this is (events about the merge carry it). */
  attempt: z.number().int().min(1).default(1),
  repo: z.string().min(1),
  /** The run's git remote: a merger without the repository merges in a clone and pushes. */
  remote: z.string().min(1).optional(),
  commit: sha,
  branch: z.string(),
  baseCommit: sha,
  integrationBranch: z.string(),
  worktree: z.string().optional(),
  /**
   * Do not merge: only release the task's worktree (its work stays on its branch).
   * Sent for work that finished after the run stopped; no result is reported.
   */
  releaseOnly: z.boolean().default(false),
  /** The run's merge settings (mode, rules, resolver, validate). */
  settings: MergeSettingsSchema.default({ mode: "merge", rules: [] }),
  /** The task's prompt, for a resolver agent and the HITL record. */
  prompt: z.string().default(""),
  /** Prompts of already-merged tasks that changed some of the same files. */
  related: z.array(RelatedPrompt).default([]),
  /** Set by `ado hitl resolve`: carry out this choice for HITL round `round`. */
  resolution: z
    .object({
      round: z.number().int().min(1),
      choice: HitlChoice,
      /** `agent`: run this resolver command instead of the run's. */
      resolver: z.string().min(1).optional(),
      /** `manual`: the commit the person made, already on the integration branch. */
      commit: sha.optional(),
      by: z.string().default(""),
      at: isoTime,
    })
    .optional(),
});
export type MergeRequest = z.infer<typeof MergeRequest>;

/** Scheduler -> merge coordinator, once a run with `merge.into` succeeded: update that branch. */
export const MergeIntoRequest = z.object({
  type: z.literal("merge.into"),
  runId: id,
  repo: z.string().min(1),
  integrationBranch: z.string(),
  baseCommit: sha,
  /** The branch to update, e.g. `main`. */
  into: z.string().min(1),
  /** Fast-forward `into` in a clean worktree that has it checked out (MergeSettings.updateCheckout). */
  updateCheckout: z.boolean().default(false),
});
export type MergeIntoRequest = z.infer<typeof MergeIntoRequest>;

/** Everything the merge coordinator consumes, on the merge stream. */
export const MergerInput = z.discriminatedUnion("type", [MergeRequest, MergeIntoRequest]);
export type MergerInput = z.infer<typeof MergerInput>;

/** Merge coordinator -> scheduler. */
export const MergeResult = z.object({
  type: z.literal("merge.result"),
  runId: id,
  taskId: id,
  /**
   * `needs_attention`: escalated to a person (a HITL record exists; a conflict nothing
   * resolved is always this); `skipped`: the person chose to leave the task unmerged;
   * `error`: the merge could not be tried.
   */
  status: z.enum(["merged", "error", "needs_attention", "skipped"]),
  integrationCommit: sha.optional(),
  /**
   * `merged`: the first-parent commit count of `integrationCommit`. The branch only moves
   * forward and every move adds first-parent commits, so of two results the higher one
   * is the newer head, whatever order they arrive in (several merger replicas, a
   * redelivery after a crash).
   */
  integrationGeneration: z.number().int().min(0).optional(),
  files: z.array(z.string()).default([]),
  message: z.string().default(""),
  /** The HITL round this result is about (0: none); a stale round is ignored. */
  round: z.number().int().min(0).default(0),
  hitlId: z.string().optional(),
  reason: HitlReason.optional(),
});
export type MergeResult = z.infer<typeof MergeResult>;

/** How `merge.into` went: the branch updated, or left alone with the reason. */
export const MergeIntoOutcome = z.object({
  into: z.string(),
  status: z.enum(["fast-forward", "merged", "up-to-date", "refused", "error"]),
  commit: sha.optional(),
  reason: z.string().default(""),
});
export type MergeIntoOutcome = z.infer<typeof MergeIntoOutcome>;

/** Merge coordinator -> scheduler: the outcome of a `merge.into` request. */
export const MergeIntoResult = MergeIntoOutcome.extend({ type: z.literal("merge.into.result"), runId: id });
export type MergeIntoResult = z.infer<typeof MergeIntoResult>;

/** Live control of a run or one task: cancel, pause, resume. */
export const ControlAction = z.enum(["cancel", "pause", "resume"]);
export type ControlAction = z.infer<typeof ControlAction>;

/**
 * A control request: written to the control bucket (the desired state, which workers
 * and the balancer watch) and sent to the scheduler (which records it once).
 */
export const ControlRequest = z.object({
  type: z.literal("control"),
  runId: id,
  /** Absent: the whole run. */
  taskId: id.optional(),
  action: ControlAction,
  reason: z.string().default(""),
  by: z.string().default(""),
  at: isoTime,
});
export type ControlRequest = z.infer<typeof ControlRequest>;

/**
 * A change of a run's budget caps (`ado budget raise`): client -> scheduler, on the
 * results stream. `maxCostUsd`/`maxTokens` set a cap, `addCostUsd`/`addTokens` raise it
 * by that much (applied by the scheduler to the cap it holds, so two raises add up).
 */
export const BudgetRequest = z
  .object({
    type: z.literal("budget"),
    runId: id,
    maxCostUsd: z.number().finite().positive().optional(),
    addCostUsd: z.number().finite().positive().optional(),
    maxTokens: z.number().int().positive().optional(),
    addTokens: z.number().int().positive().optional(),
    by: z.string().default(""),
    at: isoTime,
  })
  .refine((r) => !(r.maxCostUsd !== undefined && r.addCostUsd !== undefined) && !(r.maxTokens !== undefined && r.addTokens !== undefined), {
    message: "set a cap or raise it, not both",
  })
  .refine((r) => r.maxCostUsd !== undefined || r.addCostUsd !== undefined || r.maxTokens !== undefined || r.addTokens !== undefined, {
    message: "a budget request changes at least one cap",
  });
export type BudgetRequest = z.infer<typeof BudgetRequest>;

/**
 * The scheduler's own timer for a stage's batch wait (`batch.waitMs`): published when the
 * stage's ready tasks start waiting for more members, taken back (nak with the delay)
 * until `due`, then handled as a release. It lives in the results stream, so a scheduler
 * that restarts or another replica still gets it.
 */
export const BatchDue = z.object({
  type: z.literal("batch.due"),
  runId: id,
  stage: id,
  /** When the wait ends (epoch ms). */
  due: z.number().int().min(0),
});
export type BatchDue = z.infer<typeof BatchDue>;

/** Everything the scheduler consumes after submission, on the results stream. */
export const SchedulerInput = z.discriminatedUnion("type", [TaskResult, MergeResult, MergeIntoResult, ControlRequest, BudgetRequest, BatchDue]);
export type SchedulerInput = z.infer<typeof SchedulerInput>;

// ---- events: typed, on per-run and per-task subjects, kept as the audit trail ----

const runEventBase = { runId: id, at: isoTime };
const taskEventBase = { ...runEventBase, taskId: id, attempt: z.number().int().min(1) };

/**
 * `merging`: the work is done and waits for the merge coordinator; `needs_attention`:
 * its merge waits for a person (`ado hitl`); `succeeded`: integrated.
 */
export const TaskStatus = z.enum(["pending", "queued", "running", "merging", "needs_attention", "succeeded", "failed", "skipped", "cancelled"]);
export type TaskStatus = z.infer<typeof TaskStatus>;
/** `needs_attention` is not an end: nothing else can move until a person resolves a merge. */
export const RunStatus = z.enum(["running", "needs_attention", "succeeded", "failed", "cancelled", "rejected"]);
export type RunStatus = z.infer<typeof RunStatus>;

/**
 * Why a run with a budget does not start its next task: what is spent and reserved
 * against which cap, and what the next task is expected to cost (and from what).
 */
export const BudgetWait = z.object({
  message: z.string(),
  /** Spent by finished attempts, USD and tokens. */
  spentUsd: z.number().min(0),
  tokens: z.number().int().min(0),
  /** Held for attempts under way: each one's reservation, or what it reported so far if more. */
  reservedUsd: z.number().min(0),
  reservedTokens: z.number().int().min(0),
  maxCostUsd: z.number().positive().optional(),
  maxTokens: z.number().int().positive().optional(),
  /** The first task that does not fit, its expected cost, and where the figure comes from. */
  next: z.object({ taskId: id, costUsd: z.number().min(0), tokens: z.number().int().min(0), basis: z.string() }),
  /** Ready tasks that wait for the budget. */
  waiting: z.number().int().min(0),
});
export type BudgetWait = z.infer<typeof BudgetWait>;

export const TaskSummary = z.object({
  id,
  status: TaskStatus,
  attempts: z.number().int().min(0),
  startedAt: isoTime.optional(),
  finishedAt: isoTime.optional(),
  workerId: id.optional(),
  commit: sha.optional(),
  error: z.string().optional(),
  /** What every attempt of the task cost, USD and tokens; absent when nothing was reported. */
  costUsd: z.number().min(0).optional(),
  tokens: z.number().int().min(0).optional(),
});
export type TaskSummary = z.infer<typeof TaskSummary>;

export const AdoEvent = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("run.accepted"),
    ...runEventBase,
    name: z.string(),
    tasks: z.array(z.object({ id, needs: z.array(id), priority: z.enum(PRIORITIES) })),
    /** Tasks queued (attempt 1) on acceptance; no task.queued event is sent for them. */
    queued: z.array(id).default([]),
    integrationBranch: z.string().optional(),
    baseCommit: sha.optional(),
    /** The run's budget caps, if it has any. */
    budget: z.object({ maxCostUsd: z.number().positive().optional(), maxTokens: z.number().int().positive().optional(), onExceed: z.enum(["wait", "stop"]) }).optional(),
  }),
  z.object({
    type: z.literal("run.rejected"),
    ...runEventBase,
    reason: z.string(),
    /** `queue_full`: nothing was wrong with the run; submit it again later (`--wait` does). */
    code: z.enum(["invalid", "queue_full"]).default("invalid"),
    tasks: z.array(z.string()).default([]),
  }),
  z.object({
    type: z.literal("run.completed"),
    ...runEventBase,
    status: z.enum(["succeeded", "failed", "cancelled"]),
    integrationBranch: z.string().optional(),
    integrationCommit: sha.optional(),
    error: z.string().optional(),
    counts: z.partialRecord(TaskStatus, z.number().int()),
    /** Every task's summary; left empty for runs of more than 1,000 tasks (see the task events). */
    tasks: z.array(TaskSummary),
    /** With `merge.into`: how the target branch was updated, or why not. */
    mergeInto: MergeIntoOutcome.optional(),
    /** What every attempt of the run cost, USD and tokens (absent from schedulers that predate it). */
    costUsd: z.number().min(0).optional(),
    tokens: z.number().int().min(0).optional(),
  }),
  /**
   * Nothing can move until a person resolves the listed merges, or raises the run's
   * budget (`budget`: its next task would pass a cap); `round` counts these stops.
   */
  z.object({
    type: z.literal("run.needs_attention"),
    ...runEventBase,
    round: z.number().int().min(1),
    tasks: z.array(z.object({ taskId: id, hitlId: z.string(), reason: HitlReason.optional(), message: z.string() })),
    budget: BudgetWait.optional(),
  }),
  /** The run's budget caps changed (`ado budget raise`): the new caps, the old ones, and who. */
  z.object({
    type: z.literal("run.budget"),
    ...runEventBase,
    by: z.string(),
    maxCostUsd: z.number().positive().optional(),
    maxTokens: z.number().int().positive().optional(),
    previousMaxCostUsd: z.number().positive().optional(),
    previousMaxTokens: z.number().int().positive().optional(),
    /** Set when the raise came too late: the run had stopped on its budget already (onExceed: stop). */
    stopped: z.string().optional(),
  }),
  /** The run left `needs_attention` (a merge was resolved). */
  z.object({ type: z.literal("run.continued"), ...runEventBase, round: z.number().int().min(1) }),
  /** With `merge.into`: the target branch was updated, or left alone with the reason. */
  z.object({ type: z.literal("run.merged_into"), ...runEventBase, ...MergeIntoOutcome.shape }),
  z.object({ type: z.literal("task.queued"), ...taskEventBase, baseCommit: sha.optional() }),
  /**
   * A best-of-N task's round ended: `winner` (its variant and attempt, merged next) or
   * none (`reason` says why); every variant with its outcome and the ref keeping its work.
   */
  z.object({
    type: z.literal("task.selected"),
    ...taskEventBase,
    rule: z.enum(["validate", "score", "judge"]),
    winner: z.number().int().min(1).optional(),
    reason: z.string(),
    variants: z.array(
      z.object({
        n: z.number().int().min(1),
        attempt: z.number().int().min(1),
        status: z.string(),
        workerId: id.optional(),
        commit: sha.optional(),
        ref: z.string().optional(),
        passed: z.boolean().optional(),
        score: z.number().finite().optional(),
      }),
    ),
  }),
  /**
   * The balancer holds this attempt and no connected worker may take it (none at all,
   * none offers its agent, none has its labels or capabilities, its pinned worker is
   * gone): `reason` says which, in words, and what to do. Sent once the task has waited
   * so ~2 s, and again only when the reason changes; `task.started` ends the wait.
   * `workers`: connected workers taking work when it was sent.
   */
  z.object({ type: z.literal("task.waiting"), ...taskEventBase, reason: z.string(), workers: z.number().int().min(0) }),
  z.object({
    type: z.literal("task.started"),
    ...taskEventBase,
    workerId: id,
    branch: z.string().optional(),
    worktree: z.string().optional(),
    /** The task's agent (`claude`, `shell`, ...). */
    agent: z.string().optional(),
    /** An agent CLI resuming an earlier attempt's session. */
    resumed: z.string().optional(),
  }),
  z.object({
    type: z.literal("task.output"),
    ...taskEventBase,
    stream: z.enum(["stdout", "stderr"]),
    data: z.string(),
  }),
  z.object({
    type: z.literal("task.succeeded"),
    ...taskEventBase,
    workerId: id,
    commit: sha.optional(),
    files: z.array(z.string()),
    startedAt: isoTime,
    finishedAt: isoTime,
    /** What the attempt cost in USD, as its agent reported it (absent from schedulers that predate it). */
    costUsd: z.number().min(0).optional(),
    /** Tokens (input + output) the attempt used, as its agent reported them. */
    tokens: z.number().int().min(0).optional(),
    /** The batch (its lead task's id) the attempt ran in; `costUsd` and `tokens` are then the task's share of the batch's. */
    batch: id.optional(),
  }),
  z.object({
    type: z.literal("task.failed"),
    ...taskEventBase,
    workerId: id.optional(),
    error: z.string(),
    /** The failure's class (TaskFailure.kind): what the metrics and the dashboard group failures by (absent from schedulers that predate it). */
    kind: TaskFailure.shape.kind.optional(),
    willRetry: z.boolean(),
    outputTail: z.string().default(""),
    startedAt: isoTime.optional(),
    finishedAt: isoTime,
    /** What the attempt cost in USD, as its agent reported it (absent from schedulers that predate it). */
    costUsd: z.number().min(0).optional(),
    /** Tokens (input + output) the attempt used, as its agent reported them. */
    tokens: z.number().int().min(0).optional(),
    /** The batch (its lead task's id) the attempt ran in; `costUsd` and `tokens` are then the task's share of the batch's. */
    batch: id.optional(),
  }),
  /**
   * What an agent CLI said (src/agents parses its stream; the raw lines stay in
   * `task.output`). `raw`: a line that was not the CLI's structured format, kept as text.
   * `seq` counts the attempt's agent events from 0, in the order the agent produced them.
   */
  z.object({
    type: z.literal("agent.message"),
    ...taskEventBase,
    seq: z.number().int().min(0),
    text: z.string(),
    raw: z.boolean().default(false),
    /** The text was cut to the event's size limit (the whole of it is in `task.output`). */
    truncated: z.boolean().default(false),
  }),
  /** An agent's tool call started or completed: the tool's name and what it ran or touched (a command, a path). */
  z.object({
    type: z.literal("agent.tool"),
    ...taskEventBase,
    seq: z.number().int().min(0),
    phase: z.enum(["started", "completed"]),
    tool: z.string(),
    summary: z.string().default(""),
    /** The CLI's id of the call, pairing `started` with `completed`, when it gives one. */
    callId: z.string().optional(),
    /** `completed`: whether the tool succeeded, when the CLI says. */
    ok: z.boolean().optional(),
  }),
  /**
   * An agent's token use and cost so far in the attempt (cumulative, not a delta).
   * `inputTokens` counts every prompt token, `cachedTokens` and `cacheWriteTokens` the
   * ones among them read from or written to a prompt cache. `costSource`: `reported` by
   * the CLI, computed from the `price_table` (config `prices`, documented defaults), or
   * `unknown` (some tokens are of a model without a price: `costUsd` counts only the
   * priced ones, 0 when none is).
   */
  z.object({
    type: z.literal("agent.usage"),
    ...taskEventBase,
    seq: z.number().int().min(0),
    model: z.string().optional(),
    inputTokens: z.number().int().min(0),
    outputTokens: z.number().int().min(0),
    cachedTokens: z.number().int().min(0).default(0),
    cacheWriteTokens: z.number().int().min(0).default(0),
    costUsd: z.number().min(0),
    costSource: z.enum(["reported", "price_table", "unknown"]),
  }),
  /**
   * What an agent CLI said about its rate or usage limits: `allowed`/`warning` (near the
   * limit), `rejected` (the limit is hit), `retrying` (the CLI waits and tries again
   * itself). `resetAt`: when the limit resets, when the CLI said.
   */
  z.object({
    type: z.literal("agent.rate_limit"),
    ...taskEventBase,
    seq: z.number().int().min(0),
    status: z.enum(["allowed", "warning", "rejected", "retrying"]),
    resetAt: isoTime.optional(),
    /** The CLI's name for the limit (`five_hour`, `seven_day`, `usage`, `quota`, ...). */
    limitType: z.string().optional(),
    /** Fraction of the limit used, 0..1, when the CLI says. */
    utilization: z.number().min(0).optional(),
    /** `retrying`: how long the CLI waits before its next try. */
    retryInMs: z.number().int().min(0).optional(),
    message: z.string().default(""),
  }),
  z.object({ type: z.literal("task.merged"), ...taskEventBase, integrationCommit: sha }),
  z.object({ type: z.literal("task.skipped"), ...taskEventBase, reason: z.string() }),
  z.object({ type: z.literal("task.cancelled"), ...taskEventBase, reason: z.string() }),
  /** A failed attempt will be retried, not before `notBefore` (epoch ms). */
  z.object({ type: z.literal("task.retrying"), ...taskEventBase, notBefore: z.number().int(), error: z.string() }),
  /** A worker paused or resumed the task's processes. */
  z.object({ type: z.literal("task.paused"), ...taskEventBase, workerId: id }),
  z.object({ type: z.literal("task.resumed"), ...taskEventBase, workerId: id }),
  /**
   * A worker saved the task's work in progress: on the task branch when the attempt was
   * interrupted (shutdown, timeout, rate limit), or under the attempt's checkpoint ref
   * while its agent works (`reason` `periodic`). `sessionId`: the agent's session, stored
   * with it, which the next attempt resumes.
   */
  z.object({ type: z.literal("task.checkpoint"), ...taskEventBase, workerId: id, commit: sha, reason: z.string(), sessionId: z.string().optional(), ref: z.string().optional() }),
  /**
   * The stealer found this attempt on a worker that died: `interrupted` (it was running;
   * the stealer reported it so and the scheduler runs the next attempt) or `requeued`
   * (it had not started; it went back to the ready queue). `archiveRef` keeps the lost
   * attempt's work, when it had any and its worktree was reachable.
   */
  z.object({
    type: z.literal("worker.lost"),
    ...taskEventBase,
    workerId: id,
    outcome: z.enum(["interrupted", "requeued"]),
    reason: z.string(),
    archiveRef: z.string().optional(),
  }),
  z.object({ type: z.literal("run.paused"), ...runEventBase, by: z.string() }),
  z.object({ type: z.literal("run.resumed"), ...runEventBase, by: z.string() }),
  z.object({ type: z.literal("run.cancelling"), ...runEventBase, by: z.string(), reason: z.string() }),
  z.object({ type: z.literal("merge.conflict"), ...taskEventBase, files: z.array(z.string()), message: z.string() }),
  /** The merge coordinator resolved conflicts: each path and how (a rule's strategy, `agent`, or a person's choice). */
  z.object({
    type: z.literal("merge.resolved"),
    ...taskEventBase,
    paths: z.array(z.object({ path: z.string(), by: z.string() })),
    integrationCommit: sha,
  }),
  /** A merge was escalated to a person: a HITL record `hitlId` is open (`ado hitl show <hitlId>`). */
  z.object({
    type: z.literal("merge.hitl_required"),
    ...taskEventBase,
    hitlId: z.string(),
    round: z.number().int().min(1),
    reason: HitlReason,
    files: z.array(z.string()),
    message: z.string(),
  }),
]);
export type AdoEvent = z.infer<typeof AdoEvent>;
export type AdoEventType = AdoEvent["type"];
export type EventOf<T extends AdoEventType> = Extract<AdoEvent, { type: T }>;

// ---- KV records ----

/** A worker's registry record, refreshed by its heartbeat. */
export const WorkerRecord = z.object({
  workerId: id,
  host: z.string(),
  pid: z.number().int(),
  slots: z.number().int().min(1),
  running: z.number().int().min(0),
  /** Work waiting in the worker's own queue, as last seen by the worker. */
  pending: z.number().int().min(0),
  agents: z.array(z.string()),
  /** Versions of the agent CLIs it offers, as `<bin> --version` printed them at its start. */
  agentVersions: z.record(z.string(), z.string()).optional(),
  labels: z.array(z.string()).default([]),
  /** What the worker can do beyond running agents (e.g. `docker`, `gpu`, `node20`). */
  capabilities: z.array(z.string()).default([]),
  /** How its agents are paid for: a subscription login, an API key (per task), or local models. */
  accessMode: z.enum(["subscription", "api", "local"]).default("local"),
  /** Estimated cost of one task in USD, for cost_optimized balancing. */
  costPerTask: z.number().min(0).default(0),
  /** Attempt keys it is running now; lets the balancer correct a lost load report. */
  active: z.array(z.string()).default([]),
  /**
   * The worker's load sequence when `running` was read: it goes up on every start and
   * finish, and load reports carry it too. The KV record and the core-NATS report travel
   * apart, so the balancer keeps the `running` with the highest sequence (0: a worker
   * that does not send it).
   */
  loadSeq: z.number().int().min(0).default(0),
  startedAt: isoTime,
  heartbeatAt: isoTime,
  state: z.enum(["running", "draining"]),
  /** The scaler's pool it belongs to (`ado worker --pool`); absent for a worker started by hand. */
  pool: id.optional(),
});
export type WorkerRecord = z.infer<typeof WorkerRecord>;

/** Core-NATS load report a worker sends whenever its running count changes. */
export const WorkerLoad = z.object({
  type: z.literal("worker.load"),
  workerId: id,
  running: z.number().int().min(0),
  /** Keys (`runId.taskId.attempt`) of attempts the worker has finished since the last report. */
  finished: z.array(z.string()).default([]),
  /** Load sequence after the start or finish (see WorkerRecord.loadSeq): orders this report against heartbeats. */
  loadSeq: z.number().int().min(0).default(0),
  /**
   * Keys of the attempts it runs after this change (absent from workers that report
   * finishes only): with `running`, what the balancer counts a worker busy with.
   */
  active: z.array(z.string()).optional(),
});
export type WorkerLoad = z.infer<typeof WorkerLoad>;

/** Anyone -> one worker (`<p>.svc.worker.<id>.drain`, request/reply): stop taking work, finish or hand back what it has, stop. */
export const WorkerDrain = z.object({
  type: z.literal("worker.drain"),
  /** Who asks (`ado workers drain` user@host, the scaler instance), for the worker's log. */
  by: z.string(),
  reason: z.string().default(""),
  /** Time running tasks get to finish before they are checkpointed and handed back; default the worker's shutdown grace. */
  graceMs: z.number().int().min(0).optional(),
});
export type WorkerDrain = z.infer<typeof WorkerDrain>;

/** A provider's circuit breaker (see src/runtime/governor/decide.ts). */
export const CircuitState = z.object({
  state: z.enum(["closed", "open", "half_open"]),
  /** Consecutive provider failures while closed. */
  failures: z.number().int().min(0),
  /** Open: when it half-opens (epoch ms; the cooldown, or the reset time a CLI reported if later). */
  until: z.number().int().min(0).optional(),
  /** Half-open: the attempts let through as probes. */
  probes: z.array(z.string()).default([]),
  /** Half-open: probes that succeeded. */
  successes: z.number().int().min(0).default(0),
  /** Why it last opened, in words. */
  reason: z.string().optional(),
  changedAt: z.number().int().min(0),
});
export type CircuitState = z.infer<typeof CircuitState>;

/**
 * One provider's governor state (KV `providers`, key = provider name), shared by every
 * balancer and worker: its token bucket, the attempts holding its concurrency, its
 * circuit. Written only with compare-and-set on the revision.
 */
export const ProviderState = z.object({
  provider: ProviderNameSchema,
  /** Tokens in the bucket at `refilledAt` (fractional: it refills continuously). */
  tokens: z.number().min(0),
  /** Epoch ms of the last refill; never goes back, whatever a writer's clock says. */
  refilledAt: z.number().int().min(0),
  /** Attempts granted and not finished: attempt key -> when granted (epoch ms). */
  active: z.record(z.string(), z.number().int().min(0)),
  circuit: CircuitState,
  /** Attempt keys whose outcome was applied (the latest few): a repeated report counts once. */
  counted: z.array(z.string()).default([]),
  /**
   * Recent outcomes for adaptive concurrency, oldest first: [finished at (epoch ms), 1 ok
   * or 0 a provider failure, task latency ms]. Task failures of their own are not kept.
   */
  samples: z.array(z.tuple([z.number().int().min(0), z.union([z.literal(0), z.literal(1)]), z.number().min(0)])).default([]),
  /** The limits adaptive concurrency set (within the config's bounds), when it last stepped, which way and why. */
  adapted: z
    .object({
      concurrent: z.number().int().min(1).optional(),
      perMinute: z.number().positive().optional(),
      steppedAt: z.number().int().min(0),
      direction: z.enum(["down", "up"]).optional(),
      reason: z.string().optional(),
    })
    .optional(),
  /**
   * The configured limits of the balancer that last granted a permit (before adaptive
   * steps): what `ado status` shows the state against.
   */
  limits: z.object({ concurrent: z.number().int().min(1).optional(), perMinute: z.number().positive().optional(), burst: z.number().int().min(1) }).optional(),
  /** What the provider's finished attempts cost on one UTC day (`day`: YYYY-MM-DD); a new day starts at zero. */
  spend: z.object({ day: z.string(), costUsd: z.number().min(0), tokens: z.number().int().min(0), tasks: z.number().int().min(0) }).optional(),
});
export type ProviderState = z.infer<typeof ProviderState>;

/**
 * A provider's circuit changed state (`<p>.provider.<name>.circuit`, stream `<P>_PROVIDERS`):
 * from, to, why, and until when an open circuit stays open.
 */
export const ProviderEvent = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("provider.circuit"),
    provider: ProviderNameSchema,
    at: isoTime,
    from: CircuitState.shape.state,
    to: CircuitState.shape.state,
    reason: z.string(),
    until: isoTime.optional(),
  }),
  /** Adaptive concurrency stepped a provider's limits down (errors, latency) or back up. */
  z.object({
    type: z.literal("provider.adaptive"),
    provider: ProviderNameSchema,
    at: isoTime,
    direction: z.enum(["down", "up"]),
    from: z.object({ concurrent: z.number().int().optional(), perMinute: z.number().optional() }),
    to: z.object({ concurrent: z.number().int().optional(), perMinute: z.number().optional() }),
    reason: z.string(),
  }),
]);
export type ProviderEvent = z.infer<typeof ProviderEvent>;

/** The claim on one attempt, created (never overwritten) by the worker that runs it. */
export const AttemptClaim = z.object({ workerId: id, claimedAt: isoTime });
export type AttemptClaim = z.infer<typeof AttemptClaim>;

/** The scheduler's record of a run (KV `runs`, key = runId). */
export const RunRecord = z.object({
  runId: id,
  name: z.string(),
  status: RunStatus,
  graph: GraphDefSchema,
  repo: z.string().optional(),
  /** The run's git remote (remote mode). */
  remote: z.string().min(1).optional(),
  baseCommit: sha.optional(),
  integrationBranch: z.string().optional(),
  integrationCommit: sha.optional(),
  /** First-parent commit count of integrationCommit, when a merge result gave it (see MergeResult). */
  integrationGeneration: z.number().int().min(0).optional(),
  /** Set once the run stops dispatching (failure, conflict); in-flight tasks still finish. */
  halted: z.string().optional(),
  paused: z.boolean().default(false),
  cancelled: z.boolean().default(false),
  /** Epoch ms after which the run is cancelled (maxDuration). */
  deadline: z.number().int().optional(),
  submittedAt: isoTime,
  acceptedAt: isoTime,
  finishedAt: isoTime.optional(),
  error: z.string().optional(),
  /** The run's merge settings (absent in records written before they existed: the defaults). */
  merge: MergeSettingsSchema.optional(),
  /** Times the run has stopped in `needs_attention` (names the events of each stop). */
  attentionRound: z.number().int().min(0).default(0),
  /** Every task succeeded and `merge.into` was asked of the merge coordinator: waiting for its answer. */
  finalizing: z.boolean().default(false),
  mergeInto: MergeIntoOutcome.optional(),
  /** What every attempt cost so far (finished ones: the sum of the task records), USD and tokens. */
  costUsd: z.number().min(0).default(0),
  tokens: z.number().int().min(0).default(0),
  /** The run's budget (src/runtime/budget.ts); absent: no caps. */
  budget: RunBudgetSchema.optional(),
  /** While the run waits for its budget to be raised: why (also in `run.needs_attention`). */
  budgetWait: BudgetWait.optional(),
  /** Set when the budget stopped the run (onExceed: stop): nothing new starts, the run ends failed with this. */
  budgetStopped: z.string().optional(),
});
export type RunRecord = z.infer<typeof RunRecord>;

/**
 * The tasks of an accepted run not finished yet (KV `backlog`, key = runId), written by
 * the scheduler as they change and deleted when the run ends: what "queue full" counts.
 */
export const RunBacklog = z.object({ runId: id, open: z.number().int().min(0), updatedAt: isoTime });
export type RunBacklog = z.infer<typeof RunBacklog>;

/**
 * A stage's limits of one run as they stand (KV `stages`, key `<run>.<stage>`, see
 * names.ts `stageKey`): its `perMinute` rate window and its circuit breaker. Written only
 * by the scheduler, with compare-and-set on the revision, before the work that takes a
 * slot is published: a restarted scheduler or another replica goes on from here, so a
 * restart lets no burst past the rate or through an open circuit.
 */
export const StageState = z.object({
  runId: id,
  stage: id,
  /** The earliest time (epoch ms) the stage's next attempt may start (`perMinute`); 0: now. */
  nextStart: z.number().int().min(0).default(0),
  /** Its tasks' failed attempts in a row (`circuit`). */
  failures: z.number().int().min(0).default(0),
  /** While `failures` has reached the threshold: until when the circuit is open (epoch ms). */
  openUntil: z.number().int().min(0).default(0),
  /**
   * `batch.waitMs`: since when (epoch ms) the stage's ready batchable tasks wait for more
   * to join (0: none waits). The tasks themselves stay `pending` in their records.
   */
  batchSince: z.number().int().min(0).default(0),
  updatedAt: isoTime,
});
export type StageState = z.infer<typeof StageState>;

/** One variant of a best-of-N task, as the scheduler records it. */
export const VariantRecord = z.object({
  n: z.number().int().min(1),
  /** The attempt running (or that ran) it: a real attempt, with its own key and claim. */
  attempt: z.number().int().min(1),
  status: z.enum(["queued", "succeeded", "failed", "won", "lost"]),
  workerId: id.optional(),
  agent: z.string().optional(),
  branch: z.string().optional(),
  commit: sha.optional(),
  files: z.array(z.string()).default([]),
  worktree: z.string().optional(),
  ref: z.string().optional(),
  passed: z.boolean().optional(),
  score: z.number().finite().optional(),
  detail: z.string().optional(),
  error: z.string().optional(),
  /** A failed variant: its failure's kind and whether trying again may help. */
  kind: z.string().optional(),
  retryable: z.boolean().optional(),
  startedAt: isoTime.optional(),
  finishedAt: isoTime.optional(),
  summary: z.string().optional(),
  /** The order in which the round's variants ended (1 = first): "the first to pass" reads it. */
  order: z.number().int().min(1).optional(),
  costUsd: z.number().min(0).default(0),
  tokens: z.number().int().min(0).default(0),
});
export type VariantRecord = z.infer<typeof VariantRecord>;

/** The scheduler's record of one task (KV `tasks`, key = runId.taskId). */
export const TaskRecord = z.object({
  runId: id,
  taskId: id,
  status: TaskStatus,
  attempts: z.number().int().min(0),
  workerId: id.optional(),
  startedAt: isoTime.optional(),
  finishedAt: isoTime.optional(),
  commit: sha.optional(),
  files: z.array(z.string()).default([]),
  worktree: z.string().optional(),
  error: z.string().optional(),
  integrationCommit: sha.optional(),
  /**
   * The generation of `integrationCommit` (the merge result's): a run reloaded from a
   * store that kept this record but lost the run record's last write takes its newest
   * integration commit from here (see buildState).
   */
  integrationGeneration: z.number().int().min(0).optional(),
  summary: z.string().default(""),
  /** What every attempt of the task cost (failed, interrupted and cancelled ones too), USD and tokens. */
  costUsd: z.number().min(0).default(0),
  tokens: z.number().int().min(0).default(0),
  /**
   * A retry the run's budget holds back (the task is `pending` meanwhile): the checkpoint
   * commit its interrupted attempt left, where the next attempt starts.
   */
  resumeFrom: sha.optional(),
  /** The HITL record of a merge that needed attention, and its latest round. */
  hitlId: z.string().optional(),
  hitlRound: z.number().int().min(0).default(0),
  /** Attempts interrupted after their agent started (they count against the interruption cap). */
  interruptions: z.number().int().min(0).optional(),
  /** Attempts lost before their agent started (they cost the task nothing). */
  lostUnstarted: z.number().int().min(0).optional(),
  /** Attempts that hit an agent's rate or usage limit (run again after the reset, without using the retry budget). */
  rateLimited: z.number().int().min(0).optional(),
  /** The agent CLI's session of the last attempt. */
  sessionId: z.string().min(1).optional(),
  /**
   * Attempts on a provider that failed for the provider's sake (auth, rate or usage
   * limit): the task goes back to the balancer for another provider, without using its
   * retry budget, up to a cap.
   */
  providerFailures: z.number().int().min(0).optional(),
  /**
   * The batch the task's attempt runs (or ran) in: the id of the batch's lead task, whose
   * attempt carries every member's prompt (a stage's `batch:`). Its members follow the
   * lead's result and merge.
   */
  batch: id.optional(),
  /** A batch it ran in failed: the task runs alone from then on. */
  unbatched: z.boolean().optional(),
  /** A best-of-N task: its variants of the current round, and the round (all failing starts the next, per its retry policy). */
  variants: z.array(VariantRecord).optional(),
  variantRound: z.number().int().min(0).optional(),
  /** `select: { judge }`: the judge's attempt of this round, and what it named (or why it named none). */
  judgeAttempt: z.number().int().min(1).optional(),
  judged: z.number().finite().optional(),
  judgeError: z.string().optional(),
  /** The judge's attempt ended (its verdict is `judged`, or `judgeError`, or neither: it named none). */
  judgeEnded: z.boolean().optional(),
});
export type TaskRecord = z.infer<typeof TaskRecord>;



/**
 * A task's latest checkpoint (KV `sessions`, key `<run>.<task>`): the commit of its work
 * so far, the ref holding it, and the agent's session, with the object of the `sessions`
 * object store holding a copy of the session's files when the CLI's are portable.
 * Written by the worker running the attempt (only over a record of the same or an
 * earlier attempt); read by the stealer (a lost attempt resumes from it) and by the
 * worker of the next attempt (which restores the session's files from the object).
 */
export const CheckpointRecord = z.object({
  runId: id,
  taskId: id,
  attempt: z.number().int().min(1),
  /** The checkpoint's number within the attempt (periodic ones from 1; the interruption's is the last). */
  n: z.number().int().min(0),
  workerId: id,
  agent: z.string(),
  /** Where the session's files are: `<hostname>:<home>` of the worker that ran it. */
  sessionHost: z.string(),
  at: isoTime,
  /** The checkpoint commit, and the ref holding it (the attempt's checkpoint ref, or the task branch). */
  commit: sha,
  ref: z.string(),
  sessionId: z.string().min(1).optional(),
  /** The packed session files: an object of the `sessions` object store. */
  session: z.object({ object: z.string().min(1), bytes: z.number().int().min(0) }).optional(),
});
export type CheckpointRecord = z.infer<typeof CheckpointRecord>;

/**
 * What tasks of one agent and prompt size cost in past runs (KV `costs`, key
 * `<agent>.<size class>`): a running mean per attempt, folded in by the scheduler when a
 * run ends. What a budget reserves for a task with no history in its own run.
 */
export const CostHistory = z.object({
  agent: z.string(),
  /** Prompt size class (see src/actors/scheduler/budget.ts sizeClass). */
  sizeClass: z.string(),
  /** Attempts the means stand for (capped, so recent runs weigh more than old ones). */
  samples: z.number().int().min(1),
  costUsd: z.number().min(0),
  tokens: z.number().min(0),
  updatedAt: isoTime,
});
export type CostHistory = z.infer<typeof CostHistory>;

/** One conflicted path as a person sees it in `ado hitl show`; sides cut to a size limit. */
export const HitlConflict = z.object({
  path: z.string(),
  /** From git: `content`, `add/add`, `modify/delete`, `rename`, `binary`, ... */
  kind: z.string(),
  base: z.string().optional(),
  ours: z.string().optional(),
  theirs: z.string().optional(),
  /** Some side was longer than the record keeps (see the task branch for all of it). */
  truncated: z.boolean().default(false),
});
export type HitlConflict = z.infer<typeof HitlConflict>;

/**
 * A merge that needs a person (KV `hitl`, key `<runId>.<taskId>`): everything
 * `ado hitl show` prints and `ado hitl resolve` needs to carry out a choice.
 */
export const HitlRecord = z.object({
  id: z.string(),
  runId: id,
  taskId: id,
  attempt: z.number().int().min(1),
  repo: z.string(),
  integrationBranch: z.string(),
  /** The task's branch and commit (the side called "theirs"). */
  branch: z.string(),
  source: sha,
  /** The run's base commit. */
  base: sha,
  /** The integration head the merge was tried on (the side called "ours"). */
  target: sha.optional(),
  files: z.array(z.string()),
  reason: HitlReason,
  /** Why, in a sentence. */
  message: z.string(),
  conflicts: z.array(HitlConflict).default([]),
  /** The failing validation's output (last 8 KB). */
  validationOutput: z.string().optional(),
  /** What the resolver agent printed, when one was tried. */
  resolverOutput: z.string().optional(),
  prompts: z.object({ task: z.string().default(""), related: z.array(RelatedPrompt).default([]) }),
  /** The run's merge settings, so a resolution applies the same mode, rules and validation. */
  settings: MergeSettingsSchema,
  /** 1 at escalation; +1 each time a resolution failed and the merge needs attention again. */
  round: z.number().int().min(1),
  state: z.enum(["open", "resolving", "resolved"]),
  choice: HitlChoice.optional(),
  by: z.string().optional(),
  /** `--manual`: the worktree holding the conflict, on the host of the person resolving it. */
  manual: z.object({ worktree: z.string(), branch: z.string(), host: z.string() }).optional(),
  /** Every resolution tried, in order: a redelivered request replays its entry instead of acting twice. */
  history: z
    .array(
      z.object({
        round: z.number().int().min(1),
        choice: HitlChoice,
        by: z.string(),
        at: isoTime,
        outcome: z.enum(["merged", "conflict", "validation_failed", "skipped"]),
        commit: sha.optional(),
        message: z.string(),
      }),
    )
    .default([]),
  createdAt: isoTime,
  updatedAt: isoTime,
  resolvedAt: isoTime.optional(),
});
export type HitlRecord = z.infer<typeof HitlRecord>;

// ---- run snapshots (KV `snapshots`, written by the recorder) ----

/**
 * The tasks of a run snapshot, as columns (one entry per task in each array, in the
 * graph's order): 10,000 tasks fit in a few hundred KB. Times are milliseconds after the
 * snapshot's `base` (epoch ms), null when unknown; `status` indexes TaskStatus's values
 * in their declared order; `worker` indexes `workers` (-1: none).
 */
export const SnapshotTasks = z.object({
  ids: z.array(id),
  status: z.array(z.number().int().min(0).max(TaskStatus.options.length - 1)),
  attempts: z.array(z.number().int().min(0)),
  started: z.array(z.number().int().nullable()),
  finished: z.array(z.number().int().nullable()),
  worker: z.array(z.number().int().min(-1)),
  workers: z.array(z.string()),
  /** What each task's finished attempts cost (USD). */
  cost: z.array(z.number().min(0)),
  /**
   * Tokens each task's finished attempts used (what `ado status` shows beside the cost).
   * Absent from snapshots of recorders that predate it: status then reads the task records.
   */
  tokens: z.array(z.number().int().min(0)).optional(),
  /** Each task's latest activity, error and reason to wait, as indexes into `texts` (-1: none): such lines repeat a lot. */
  activity: z.array(z.number().int().min(-1)),
  error: z.array(z.number().int().min(-1)),
  waiting: z.array(z.number().int().min(-1)),
  texts: z.array(z.string()),
  /** What else is known of some tasks, by index: only tasks that have something. */
  notes: z.array(
    z.object({
      i: z.number().int().min(0),
      outputTail: z.string().optional(),
      paused: z.boolean().optional(),
      archiveRefs: z.array(z.string()).optional(),
      /** What the attempt under way has cost so far (USD). */
      live: z.number().min(0).optional(),
      /** This attempt runs an agent CLI: its agent.* events, not its raw output, say what it does. */
      agent: z.number().int().min(0).optional(),
    }),
  ),
});
export type SnapshotTasks = z.infer<typeof SnapshotTasks>;

/**
 * A run's state at one point of its event stream (KV `snapshots`, key `<runId>`):
 * load it, then apply the run's events after `seq`, and you have what a replay of every
 * event gives. Written by the recorder every N events or seconds while the run changes.
 * When the task columns are too large for one value they are in `parts` further keys
 * (`<runId>.p<n>`, each tagged with the same `seq`), and `tasks` here is empty.
 */
export const RunSnapshot = z.object({
  runId: id,
  name: z.string().default(""),
  /** `unknown`: the recorder saw the run from its middle (then `complete` is false). */
  status: z.enum([...RunStatus.options, "unknown"]),
  paused: z.boolean().default(false),
  /** Events-stream sequence of the last event this snapshot reflects. */
  seq: z.number().int().min(0),
  /** Events of the run applied. */
  events: z.number().int().min(0),
  /** The snapshot holds the run from its first event: false means read the run's events from the start instead. */
  complete: z.boolean(),
  /** Epoch ms the task columns' times are relative to. */
  base: z.number().int(),
  acceptedAt: isoTime.optional(),
  finishedAt: isoTime.optional(),
  updatedAt: isoTime,
  integrationBranch: z.string().optional(),
  /** The integration branch's head, as the last merge moved it. */
  integrationCommit: sha.optional(),
  baseCommit: sha.optional(),
  error: z.string().optional(),
  attention: z.array(z.object({ taskId: id, hitlId: z.string(), message: z.string() })).optional(),
  mergedInto: z.object({ into: z.string(), status: z.string(), commit: z.string().optional(), reason: z.string().optional() }).optional(),
  budget: z.object({ maxCostUsd: z.number().min(0).optional(), maxTokens: z.number().min(0).optional() }).optional(),
  budgetWait: z.object({ message: z.string(), nextTaskId: z.string() }).optional(),
  counts: z.partialRecord(TaskStatus, z.number().int().min(0)),
  /** Total cost so far (USD): finished attempts, and what running ones reported. */
  costUsd: z.number().min(0),
  costKnown: z.boolean().default(false),
  tasks: SnapshotTasks,
  parts: z.number().int().min(0).default(0),
});
export type RunSnapshot = z.infer<typeof RunSnapshot>;

/** One part of a snapshot's task columns (KV `snapshots`, key `<runId>.p<n>`). */
export const RunSnapshotPart = z.object({ runId: id, seq: z.number().int().min(0), part: z.number().int().min(0), tasks: SnapshotTasks });
export type RunSnapshotPart = z.infer<typeof RunSnapshotPart>;

/**
 * The JSON body of a webhook the notifier posts (HTTP, `content-type: application/json`):
 * a run ended, or it waits for a person. `Ado-Signature: sha256=<hex>` is the HMAC-SHA256
 * of the body with the webhook's secret; `Ado-Delivery` is the same on every retry of one
 * delivery (a receiver drops a repeat by it).
 */
export const WebhookBody = z.object({
  type: z.enum(["run.completed", "run.needs_attention"]),
  /** Unique per delivery (event and webhook), the same on its retries. */
  delivery: z.string(),
  runId: id,
  at: isoTime,
  status: z.enum([...RunStatus.options]),
  error: z.string().optional(),
  integrationBranch: z.string().optional(),
  counts: z.partialRecord(TaskStatus, z.number().int()).optional(),
  /** `run.needs_attention`: the merges waiting, with `ado hitl show <hitlId>`. */
  attention: z.array(z.object({ taskId: id, hitlId: z.string(), message: z.string() })).optional(),
});
export type WebhookBody = z.infer<typeof WebhookBody>;

/** Written to the dead-letter stream for any message an actor could not accept. */
export const DeadLetter = z.object({
  type: z.literal("dead.letter"),
  actor: z.string(),
  subject: z.string(),
  stream: z.string().optional(),
  reason: z.string(),
  /** The original payload, untouched, so nothing is lost. */
  payload: z.custom<Uint8Array>((v) => v instanceof Uint8Array, "bytes"),
  headers: z.record(z.string(), z.string()).default({}),
  at: isoTime,
  /**
   * Set when the payload was too large to keep beside the reason under the server's
   * max_payload: `payload` is its beginning, `size` and `sha256` describe the whole.
   */
  truncated: z.boolean().optional(),
  size: z.number().int().min(0).optional(),
  sha256: z.string().optional(),
});
export type DeadLetter = z.infer<typeof DeadLetter>;

/** Name and version of each schema, sent in the `Ado-Schema` header. */
export const SCHEMAS = {
  SubmitRun: { name: "run.submit", version: 1, schema: SubmitRun },
  TaskWork: { name: "task.work", version: 1, schema: TaskWork },
  SchedulerInput: { name: "scheduler.input", version: 1, schema: SchedulerInput },
  /** Everything on the merge stream (task merges, resolutions, merge.into); the key predates the union. */
  MergeRequest: { name: "merge.request", version: 1, schema: MergerInput },
  AdoEvent: { name: "event", version: 1, schema: AdoEvent },
  WorkerRecord: { name: "worker.record", version: 1, schema: WorkerRecord },
  WorkerLoad: { name: "worker.load", version: 1, schema: WorkerLoad },
  AttemptClaim: { name: "attempt.claim", version: 1, schema: AttemptClaim },
  ControlRequest: { name: "control", version: 1, schema: ControlRequest },
  RunRecord: { name: "run.record", version: 1, schema: RunRecord },
  TaskRecord: { name: "task.record", version: 1, schema: TaskRecord },
  RunBacklog: { name: "run.backlog", version: 1, schema: RunBacklog },
  StageState: { name: "stage.state", version: 1, schema: StageState },
  CostHistory: { name: "cost.history", version: 1, schema: CostHistory },
  HitlRecord: { name: "hitl.record", version: 1, schema: HitlRecord },
  WorktreeRecord: WORKTREE_RECORD,
  CheckpointRecord: { name: "checkpoint.record", version: 1, schema: CheckpointRecord },
  WorkerDrain: { name: "worker.drain", version: 1, schema: WorkerDrain },
  ScalerPolicy: POLICY_OVERRIDE,
  ScalerState: SCALER_POOL_STATE,
  DeadLetter: { name: "dead.letter", version: 1, schema: DeadLetter },
  RunSnapshot: { name: "run.snapshot", version: 1, schema: RunSnapshot },
  RunSnapshotPart: { name: "run.snapshot.part", version: 1, schema: RunSnapshotPart },
  WebhookBody: { name: "webhook", version: 1, schema: WebhookBody },
  ProviderState: { name: "provider.state", version: 1, schema: ProviderState },
  ProviderEvent: { name: "provider.event", version: 1, schema: ProviderEvent },
} as const;
