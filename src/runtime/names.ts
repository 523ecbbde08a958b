/**
 * ado's vocabulary: every key, branch, ref, message id and environment variable name
 * that more than one part of ado reads or writes. Nothing else spells them (subjects,
 * streams, consumers and buckets are topology.ts's). Run, task and worker ids hold
 * letters, digits, `_` and `-` only (ids.ts), so `.` and `/` separate them safely.
 *
 * This module imports nothing: the git layer uses it as well as the actors.
 */

interface TaskRef {
  runId: string;
  taskId: string;
}
interface AttemptRef extends TaskRef {
  attempt: number;
}

// ---- keys ---------------------------------------------------------------------------

/**
 * A task's key, `<run>.<task>`: in the `tasks`, `control`, `hitl` and `worktrees`
 * buckets, and the id of the task's HITL record.
 */
export const taskKey = (runId: string, taskId: string): string => `${runId}.${taskId}`;

/** An attempt's key, `<run>.<task>.<attempt>`: its claim in `claims`, and the root of its message ids. */
export const attemptKey = (a: AttemptRef): string => `${a.runId}.${a.taskId}.${a.attempt}`;

/** A control key: the run id for the whole run, `<run>.<task>` for one task. */
export const controlKey = (runId: string, taskId?: string): string => (taskId ? taskKey(runId, taskId) : runId);

/** A KV key filter matching every task's control key of a run, `<run>.>` (not the run's own key). */
export const runTaskControlKeys = (runId: string): string => `${runId}.>`;

/** A stage's limits of a run in the `stages` bucket: `<run>.<stage>` (stage names are ids, as task ids are). */
export const stageKey = (runId: string, stage: string): string => `${runId}.${stage}`;

/** A stored agent session in the `sessions` object store: `<run>.<task>.<attempt>.<n>`, the files of checkpoint n of that attempt. */
export const sessionObject = (a: AttemptRef, n: number): string => `${attemptKey(a)}.${n}`;
/** Keys of the scaler's bucket: a pool's live policy and the scaler's memory of it. */
export const scalerKeys = {
  policy: (pool: string): string => `policy.${pool}`,
  state: (pool: string): string => `state.${pool}`,
  /** Splits a key back into its kind and pool (undefined when it is not one of ours). */
  parse(key: string): { kind: "policy" | "state"; pool: string } | undefined {
    const m = /^(policy|state)\.([A-Za-z0-9][A-Za-z0-9_-]*)$/.exec(key);
    return m ? { kind: m[1] as "policy" | "state", pool: m[2]! } : undefined;
  },
} as const;

/** A run's snapshot in the `snapshots` bucket: the run id (its head), and `<run>.p<n>` for parts of a large one. */
export const snapshotKey = (runId: string): string => runId;
export const snapshotPartKey = (runId: string, part: number): string => `${runId}.p${part}`;
/**
 * The recorder's place in the event stream (`snapshots` bucket): every event up to it is
 * in the stored snapshots. It cannot be a run id (those start with a letter or digit).
 */
export const SNAPSHOT_CURSOR_KEY = "_cursor";

// ---- branches and refs --------------------------------------------------------------

/** ado's branches, all under `ado/`: never an agent's own (the worker never deletes one as such). */
export const ADO_BRANCH_PREFIX = "ado/";
/** Every branch of a run lives under `ado/<run>/`. */
export const runBranchPrefix = (runId: string): string => `ado/${runId}/`;
/** A task's branch: `ado/<run>/<task>`. */
export const taskBranch = (runId: string, taskId: string): string => `ado/${runId}/${taskId}`;
/**
 * The branch of variant `n` of a best-of-N task: `ado/<run>/<task>.v<n>` (task ids hold
 * no `.`, so it never names another task's branch, and it is no directory of one).
 */
export const variantBranch = (runId: string, taskId: string, n: number): string => `ado/${runId}/${taskId}.v${n}`;
/** The worktree name (under the worktree directory) of a task's attempt: `<run>/<task>`, or `<run>/<task>.v<n>` for variant `n`. */
export const taskWorktreeName = (runId: string, taskId: string, variant?: number | "judge"): string =>
  variant === undefined ? `${runId}/${taskId}` : variant === "judge" ? `${runId}/${taskId}.judge` : `${runId}/${taskId}.v${variant}`;
/** The branch of a best-of-N task's judge (`select: { judge }`): `ado/<run>/<task>.judge`, never merged. */
export const judgeBranch = (runId: string, taskId: string): string => `ado/${runId}/${taskId}.judge`;
/** The run's integration branch: `ado/<run>/integration`. */
export const integrationBranch = (runId: string): string => `ado/${runId}/integration`;
/** The branch of a person's manual resolution of a task's merge, per HITL round. */
export const manualBranch = (runId: string, taskId: string, round: number): string => `ado/${runId}/_manual/${taskId}-r${round}`;

/** ado's own refs, outside `refs/heads`: never shown as branches, never garbage. */
export const ADO_REFS = "refs/ado";
/** Where a failed or lost attempt's work is kept: `refs/ado/attempts/<run>/<task>/<attempt>`. */
export const attemptRef = (runId: string, taskId: string, attempt: number): string => `${ADO_REFS}/attempts/${runId}/${taskId}/${attempt}`;
/**
 * Where a best-of-N task's variant `n` keeps its work once it succeeded, winner or not:
 * `refs/ado/variants/<run>/<task>/<n>` (the winner is also merged; the others stay here).
 */
export const variantRef = (runId: string, taskId: string, n: number): string => `${ADO_REFS}/variants/${runId}/${taskId}/${n}`;
/** Every variant ref of a run (a `git for-each-ref` pattern): `refs/ado/variants/<run>/`. */
export const runVariantRefs = (runId: string): string => `${ADO_REFS}/variants/${runId}/`;
/** Every attempt ref of a run (a `git for-each-ref` pattern): `refs/ado/attempts/<run>/`. */
export const runAttemptRefs = (runId: string): string => `${ADO_REFS}/attempts/${runId}/`;
/**
 * Where a branch an agent made on its own during an attempt is kept before ado deletes
 * it, when its commits did not land on the task branch:
 * `refs/ado/attempts/<run>/<task>/<attempt>-branches/<branch>`.
 */
export const strayBranchRef = (runId: string, taskId: string, attempt: number, branch: string): string =>
  `${attemptRef(runId, taskId, attempt)}-branches/${branch}`;
/** Where cleanup keeps a worktree's work before removing it: `refs/ado/archive/<run>/<task>/<UTC time>`. */
export const archiveRef = (runId: string, taskId: string, at: Date): string =>
  `${ADO_REFS}/archive/${runId}/${taskId}/${at.toISOString().replace(/[:.]/g, "-")}`;
/** A run's refs on a remote: `refs/ado/runs/<run>/...`. */
export const runRefs = (runId: string): string => `${ADO_REFS}/runs/${runId}`;
/** The commit a run starts from, pushed to the remote before it is submitted. */
export const runBaseRef = (runId: string): string => `${runRefs(runId)}/base`;
/**
 * An attempt's periodic checkpoint, `refs/ado/runs/<run>/checkpoints/<task>/<attempt>`:
 * the worktree's state committed while its agent works (moved by each checkpoint). Under
 * the run's refs so a clone of the run's remote fetches it and `ado prune` removes it
 * with the run.
 */
export const checkpointRef = (runId: string, taskId: string, attempt: number): string => `${runRefs(runId)}/checkpoints/${taskId}/${attempt}`;

// ---- message ids (JetStream deduplication) --------------------------------------------

/**
 * Nats-Msg-Id of each message that must be stored once. A replay of the same step
 * produces the same id (and is dropped by the server within the duplicate window); a
 * new step that must not be mistaken for an old one gets a new id.
 */
export const msgIds = {
  /** A run submission (a `--wait` resubmission adds its try). */
  submit: (runId: string, attempt?: number) => (attempt === undefined ? runId : `${runId}.wait${attempt}`),
  /** The scheduler's ready message for an attempt. */
  ready: (a: AttemptRef) => attemptKey(a),
  /**
   * The balancer's work message: it names the ready message it came from (stream
   * sequence), so a redelivery of that message is deduplicated but work handed back or
   * re-queued (a new ready message) is sent again.
   */
  work: (a: AttemptRef, readySeq: number) => `${attemptKey(a)}.${readySeq}`,
  /**
   * A provider's circuit transition: one per state change (the state's `changedAt`), so
   * a writer that retries its publish does not announce it twice.
   */
  providerCircuit: (provider: string, to: string, changedAt: number) => `_provider.${provider}.${to}.${changedAt}`,
  /** A provider's adaptive-concurrency step, one per step (its time). */
  providerAdaptive: (provider: string, at: number) => `_provider.${provider}.adaptive.${at}`,
  /** A worker's result for an attempt. */
  result: (a: AttemptRef) => `${attemptKey(a)}.result`,
  /** Queued work a draining worker puts back on the ready queue. */
  handBack: (a: AttemptRef, workerId: string) => `${attemptKey(a)}.handback.${workerId}`,
  /** The stealer's `interrupted` result for an attempt lost with its worker. */
  lost: (a: AttemptRef) => `${attemptKey(a)}.lost`,
  /**
   * Unstarted work the stealer puts back on the ready queue: it names the message moved
   * (its work-stream sequence), so a successor moving it again is deduplicated but the
   * same attempt sent to the dead worker once more is moved too.
   */
  requeue: (a: AttemptRef, workerId: string, workSeq: number) => `${attemptKey(a)}.requeue.${workerId}.${workSeq}`,
  /**
   * Queued work the stealer puts back on the ready queue from an over-filled worker
   * (rebalancing): it names the message moved, like `requeue`, so a successor redoing
   * the move is deduplicated.
   */
  move: (a: AttemptRef, fromWorker: string, workSeq: number) => `${attemptKey(a)}.move.${fromWorker}.${workSeq}`,
  /** The scheduler's merge request for a task. */
  merge: (t: TaskRef) => taskKey(t.runId, t.taskId),
  /** A person's HITL resolution, per round. */
  resolve: (t: TaskRef, round: number) => `${taskKey(t.runId, t.taskId)}.resolve.${round}`,
  /** The merger's result of a task's first merge (round 0) or of a HITL round. */
  mergeResult: (t: TaskRef, round: number) => `${taskKey(t.runId, t.taskId)}.merge${round ? `.r${round}` : ""}`,
  /** The scheduler's `merge.into` request of a run, and the merger's answer. */
  mergeInto: (runId: string) => `${runId}._.into`,
  mergeIntoResult: (runId: string) => `${runId}._.into.result`,
  /** The scheduler's timer for a stage's batch wait that started at `since` (epoch ms). */
  batchDue: (runId: string, stage: string, since: number) => `${runId}._.batch.${stage}.${since}`,
  /** The scheduler's cancel of a run past its maxDuration. */
  deadline: (runId: string) => `${runId}.deadline`,
  /** An event, by default once per run/task, attempt and type. */
  event: (e: { runId: string; type: string }, taskId: string | undefined, attempt: number) => `${e.runId}.${taskId ?? "_"}.${attempt}.${e.type}`,
  /**
   * A submission refused at admission (queue full, too large): one per submission message (its
   * submit-stream sequence), since `--wait` submits the same run again and each refusal
   * must reach it (keyed by run alone, the second was dropped and the client waited forever).
   */
  refused: (runId: string, submitSeq: number) => `${runId}._.rejected.${submitSeq}`,
  /** A worker's `task.checkpoint` of an attempt: each periodic one has its number, the interruption's is `final`. */
  checkpoint: (a: AttemptRef, n: number | "final") => `${attemptKey(a)}.checkpoint.${n}`,
  /** The balancer's `task.waiting` for an attempt, once per reason (`reasonDigest`: a hash of its text). */
  waiting: (a: AttemptRef, reasonDigest: string) => `${attemptKey(a)}.waiting.${reasonDigest}`,
  /** The n-th pause of an attempt, and its resume: a second pause is not a replay of the first. */
  suspension: (e: { runId: string; type: string }, taskId: string, attempt: number, n: number) => `${e.runId}.${taskId}.${attempt}.${e.type}.${n}`,
  /** Events that recur within an attempt: each stop of a run for a person, and its end. */
  runAttention: (runId: string, round: number) => `${runId}._.attention.${round}`,
  runContinued: (runId: string, round: number) => `${runId}._.continued.${round}`,
  /** Each change of a run's budget caps (`ado budget raise`), numbered by the run's budget. */
  runBudget: (runId: string, change: number) => `${runId}._.budget.${change}`,
  /**
   * An agent's event (`agent.usage`, ...): many per attempt, told apart by their place in
   * it (`seq`), so a worker that publishes one again after a reconnect stores it once.
   */
  agentEvent: (a: AttemptRef, type: string, seq: number) => `${attemptKey(a)}.${type}.${seq}`,
  /** Merge events of a HITL round. */
  mergeResolved: (t: TaskRef, round: number) => `${taskKey(t.runId, t.taskId)}.${round}.merge.resolved`,
  mergeConflict: (t: TaskRef, round: number) => `${taskKey(t.runId, t.taskId)}.${round}.merge.conflict`,
  hitlRequired: (t: TaskRef, round: number) => `${taskKey(t.runId, t.taskId)}.${round}.hitl`,
} as const;

// ---- environment given to agents and merge commands ---------------------------------

/**
 * The variables an agent's process gets (and everything it starts inherits). The
 * stealer finds a dead worker's leftover processes by `workerId`.
 */
export const AgentEnv = {
  runId: "ADO_RUN_ID",
  taskId: "ADO_TASK_ID",
  attempt: "ADO_ATTEMPT",
  workerId: "ADO_WORKER_ID",
  branch: "ADO_BRANCH",
  /** A best-of-N task's variant number (1..N), for its agent and its select command; unset otherwise. */
  variant: "ADO_VARIANT",
  /** The number of variants of a best-of-N task. */
  variants: "ADO_VARIANTS",
  /** For a best-of-N judge: the directory holding each candidate's diff, `<n>.diff`. */
  variantsDir: "ADO_VARIANTS_DIR",
  /** The prompt itself, only when it is small (PROMPT_ENV_MAX_BYTES); else only the file has it. */
  prompt: "ADO_PROMPT",
  /** The prompt as a file: always set (the prompt may be too large for the environment). */
  promptFile: "ADO_PROMPT_FILE",
  inputs: "ADO_INPUTS",
  inputsFile: "ADO_INPUTS_FILE",
} as const;

/** The variables merge commands get (rules' `regenerate`, the resolver agent, `validate`). */
export const MergeEnv = {
  runId: "ADO_RUN_ID",
  taskId: "ADO_TASK_ID",
  taskBranch: "ADO_TASK_BRANCH",
  /** The resolver's JSON file of conflicts and context. */
  conflictsFile: "ADO_CONFLICTS_FILE",
  /** The paths a `regenerate` rule matched, one a line. */
  regeneratePaths: "ADO_REGENERATE_PATHS",
  /** The candidate commit `validate` runs on. */
  candidate: "ADO_CANDIDATE",
} as const;

/**
 * The trailer of a checkpoint commit (an interrupted attempt's work, committed on its
 * task branch) naming the commit the task started from: the next attempt, which starts
 * at the checkpoint, measures its changes from there, so the checkpoint's own work is
 * never taken for "no changes".
 */
export const CHECKPOINT_TRAILER = "Ado-Checkpoint-Base";

/** The directory ado writes into a task's worktree for its agent (never committed). */
export const WORKTREE_ADO_DIR = ".ado";
/** The fan-in inputs file in it. */
export const INPUTS_FILE = "inputs.json";
/** The prompt file in it (or in a temporary directory for an agent without a worktree). */
export const PROMPT_FILE = "prompt.md";
/**
 * Prompts up to this size (UTF-8 bytes) are also given in `ADO_PROMPT`. Linux refuses
 * one environment string over 128 KiB (spawn fails with E2BIG), and the whole
 * environment and arguments share a limit; the file has every prompt.
 */
export const PROMPT_ENV_MAX_BYTES = 32 * 1024;

// ---- test hooks ---------------------------------------------------------------------

/**
 * TEST ONLY. A worker whose environment sets this variable to one of `CrashPoint` SIGKILLs
 * itself at that step of an attempt, so the end-to-end tests can kill a worker exactly
 * in a window that matters (test/e2e/worker-crash.test.ts). Never set it otherwise.
 */
export const TEST_CRASH_ENV = "ADO_TEST_CRASH_AT";
/** The steps TEST_CRASH_ENV can name. */
export const CrashPoint = {
  /** The attempt's worktree is added, not yet recorded in the registry. */
  afterAdd: "after-add",
  /** The attempt's work is committed and recorded `committed`; its result not yet published. */
  afterCommit: "after-commit",
} as const;
export type CrashPoint = (typeof CrashPoint)[keyof typeof CrashPoint];

