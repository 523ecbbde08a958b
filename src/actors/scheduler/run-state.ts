import { remainingPathLengths, resolveMergeSettings, validateGraph, variantAgents, variantCount, type TaskDef } from "../../runtime/graph.js";
import { GraphError } from "../../runtime/errors.js";
import { BUDGET_CONFIG_DEFAULT, resolveBudget, type RunBudget } from "../../runtime/budget.js";
import type {
  AdoEvent,
  BatchDue,
  BudgetRequest,
  BudgetWait,
  ControlRequest,
  CostHistory,
  MergeIntoRequest,
  MergeIntoResult,
  MergeRequest,
  MergeResult,
  RelatedPrompt,
  RunRecord,
  StageState,
  SubmitRun,
  TaskRecord,
  TaskResult,
  TaskStatus,
  TaskSummary,
  TaskWork,
  VariantRecord,
} from "../../runtime/messages.js";
import { attemptKey, integrationBranch, judgeBranch, msgIds, taskBranch, taskKey, variantBranch } from "../../runtime/names.js";
import { candidates, needsJudge, selectRule, selectVariant, type JudgeVerdict } from "../../runtime/variants.js";
import { backoffDelay } from "../../runtime/retry.js";
import { addSample, checkFits, committed, estimate, hasCap, NO_SPEND, samplesOfRecord, settleAttempt, variantLedgerKey, type Estimate, type Ledger, type Spend } from "./budget.js";

/**
 * The scheduler's decisions, as pure functions of (run state, message) -> effects.
 * No I/O here: the actor shell publishes and persists what these return, so every rule
 * is testable without a server and replaying a message on a state that already
 * reflects it emits nothing new.
 */

export interface TaskState {
  def: TaskDef;
  rec: TaskRecord;
  /** KV revision of `rec` (0 = not stored yet). */
  rev: number;
  /** Longest remaining dependency path through this task. */
  rank: number;
}

export interface RunState {
  run: RunRecord;
  runRev: number;
  tasks: Map<string, TaskState>;
  dependents: Map<string, string[]>;
  /** Tasks not yet terminal; kept by update(), so ending a run is O(1) to detect. */
  open: number;
  /** Tasks queued or running (the scheduler cannot tell them apart); bounded by maxParallel. */
  inFlight: number;
  /** The same per stage of the graph (`stages:`), for the stages' maxParallel; kept by update(). */
  stageInFlight: Map<string, number>;
  /**
   * Per stage with a `perMinute`: the earliest time (epoch ms) its next attempt may start.
   * Stored with the circuit (KV `stages`, see `stagesToSave`), so a restart or another
   * replica goes on from it.
   */
  stageNextStart: Map<string, number>;
  /**
   * Per stage with a `circuit`: its tasks' failed attempts in a row, and while they have
   * reached its threshold, until when it is open (epoch ms). Stored, like the rate.
   */
  stageCircuit: Map<string, { failures: number; openUntil: number }>;
  /**
   * Per stage with a `batch.waitMs`: since when its ready batchable tasks wait for more
   * to join (epoch ms). Stored with the limits, so a restart does not start the wait over.
   */
  stageBatchSince: Map<string, number>;
  /**
   * The ready tasks waiting for their stage's batch to fill, in the order they became
   * ready. Memory only: they are `pending` in their records, all their dependencies done,
   * so a reload's reconcile() finds them ready again and they wait on (from the stored
   * `batchSince`); nothing of theirs was published, so none is lost or run twice.
   */
  batchWaiting: Map<string, string[]>;
  /** Tasks whose batch wait is over (a limit may still hold them): they do not wait again. */
  batchWaited: Set<string>;
  /** The wait (its `batchSince`) whose `batch.due` timer this state has published, per stage. */
  batchDueSent: Map<string, number>;
  /**
   * Waits this decision ended (their start, per stage). Stored as over only with the
   * decision's records, after its work is out (stagesToSave `final`): a scheduler that
   * dies in between finds the wait still due and re-forms the same batches (same lead,
   * same msg ids), instead of waiting again while the published batch runs.
   */
  batchWaitsEnded: Map<string, number>;
  /** KV revision of each stage's stored limits (absent: not stored yet). */
  stageRevs: Map<string, number>;
  /**
   * Stages whose limits this decision read to start an attempt or changed: the shell
   * writes them (compare-and-set) before it publishes the decision's work. Written even
   * when unchanged: the write fails if another replica moved them meanwhile, so a
   * decision taken on a stale copy is redone, never published.
   */
  stagesDirty: Set<string>;
  /** Tasks waiting for the merge coordinator. */
  merging: number;
  /** Tasks whose merge waits for a person (HITL). */
  attention: number;
  /** A task entered or left `needs_attention` in this decision (settle() announces it). */
  attentionChanged: boolean;
  /** Ready tasks held back by maxParallel (the run's or their stage's), released as others finish. */
  held: Set<string>;
  /** Path -> merged tasks that changed it: whose prompts a resolver of a conflict there gets. */
  touched: Map<string, string[]>;
  /** The open count last stored for this run in KV `backlog` (not stored itself: unknown after a load). */
  openWritten?: number;
  /**
   * Results-stream sequence of the merge result that last moved `run.integrationCommit`,
   * once this process applied one (not stored: unknown after a load). See applyMergeResult().
   */
  integrationSeq?: number;
  /** Attempts under way with what they hold against the budget, and the run's cost history (budget.ts). */
  ledger: Ledger;
  /**
   * Set while ready tasks wait because the next one would pass the run's budget (they are
   * in `held`): why. Cleared by the next release that starts them (a raise, a cheaper
   * finish than reserved). Stored in the run record while the run waits for a person.
   */
  budgetBlocked?: BudgetWait;
}

export type Effect =
  | { type: "ready"; work: TaskWork }
  /** Write the desired state of a run or task to the control bucket (workers act on it). */
  | { type: "control"; request: ControlRequest }
  | { type: "merge"; request: MergeRequest }
  /** Ask the merge coordinator to bring `merge.into` up to the integration branch. */
  | { type: "mergeInto"; request: MergeIntoRequest }
  /**
   * `msgID` names an event that can happen more than once for the same task attempt
   * (each needs_attention stop of a run): the default id would deduplicate the second.
   */
  | { type: "event"; event: AdoEvent; msgID?: string }
  | { type: "saveTask"; taskId: string }
  | { type: "saveRun" }
  /** Publish the scheduler's own timer for a stage's batch wait (to the results stream, deduplicated by `msgID`). */
  | { type: "batchDue"; due: BatchDue; msgID: string };

/**
 * Builds the in-memory state of a run from its stored records. `history`: past runs'
 * cost history, for what a budget reserves (see budget.ts).
 */
export function buildState(
  run: RunRecord,
  runRev: number,
  records: Map<string, { rec: TaskRecord; rev: number }>,
  history?: ReadonlyMap<string, CostHistory>,
  stages?: ReadonlyMap<string, { state: StageState; rev: number }>,
): RunState {
  const tasks = new Map<string, TaskState>();
  const dependents = new Map<string, string[]>();
  const ranks = remainingPathLengths(run.graph.tasks);
  for (const def of run.graph.tasks) {
    const stored = records.get(def.id);
    tasks.set(def.id, {
      def,
      rec: stored?.rec ?? { runId: run.runId, taskId: def.id, status: "pending", attempts: 0, files: [], summary: "", costUsd: 0, tokens: 0, hitlRound: 0 },
      rev: stored?.rev ?? 0,
      rank: ranks.get(def.id) ?? 1,
    });
    dependents.set(def.id, []);
  }
  for (const def of run.graph.tasks) for (const d of def.needs) dependents.get(d)!.push(def.id);
  const state: RunState = {
    run,
    runRev,
    tasks,
    dependents,
    open: 0,
    inFlight: 0,
    stageInFlight: new Map(),
    stageNextStart: new Map(),
    stageCircuit: new Map(),
    stageBatchSince: new Map(),
    batchWaiting: new Map(),
    batchWaited: new Set(),
    batchDueSent: new Map(),
    batchWaitsEnded: new Map(),
    stageRevs: new Map(),
    stagesDirty: new Set(),
    merging: 0,
    attention: 0,
    attentionChanged: false,
    held: new Set(),
    touched: new Map(),
    ledger: { attempts: new Map(), samples: new Map(), ...(history ? { history } : {}) },
    // Stored while the run waits: the same stop, not a new one, once reloaded.
    ...(run.budgetWait && run.status === "needs_attention" ? { budgetBlocked: run.budgetWait } : {}),
  };
  for (const [stage, { state: stored, rev }] of stages ?? []) {
    state.stageRevs.set(stage, rev);
    if (stored.nextStart > 0) state.stageNextStart.set(stage, stored.nextStart);
    if (stored.failures > 0) state.stageCircuit.set(stage, { failures: stored.failures, openUntil: stored.openUntil });
    if (stored.batchSince > 0) state.stageBatchSince.set(stage, stored.batchSince);
  }
  let spent = NO_SPEND;
  for (const t of tasks.values()) {
    if (!TERMINAL.has(t.rec.status)) state.open++;
    if (t.rec.status === "queued") {
      state.inFlight++;
      countStage(state, t, 1);
    }
    if (t.rec.status === "merging") state.merging++;
    if (t.rec.status === "needs_attention") state.attention++;
    if (t.rec.status === "succeeded" && t.rec.integrationCommit) noteTouched(state, t);
    spent = { usd: spent.usd + t.rec.costUsd, tokens: spent.tokens + t.rec.tokens };
    const samples = samplesOfRecord(t.rec);
    if (samples) addSample(state.ledger, t.def, samples, samples.n);
  }
  // The task records are what was spent (written before the run record, so they are never behind it).
  state.run = { ...run, costUsd: spent.usd, tokens: spent.tokens };
  // The run record and the task records live in different streams: a server that lost
  // its last writes (nats-server 2.9 restarted after its disk filled) can bring back a
  // merged task's record with a run record from before that merge. The run's integration
  // commit only moves forward, so the newest generation any merged task saw wins;
  // otherwise a dependent released now would be based on a tree without that merge.
  for (const t of tasks.values()) {
    const gen = t.rec.integrationGeneration;
    if (t.rec.status !== "succeeded" || gen === undefined || !t.rec.integrationCommit) continue;
    if (state.run.integrationGeneration === undefined || gen > state.run.integrationGeneration) {
      state.run = { ...state.run, integrationCommit: t.rec.integrationCommit, integrationGeneration: gen };
    }
  }
  // Attempts under way hold their reservation again (what they reported so far comes with their next usage event).
  for (const t of tasks.values()) {
    if (t.rec.status !== "queued") continue;
    if (t.rec.variants) for (const v of t.rec.variants) if (v.status === "queued") reserve(state, t, v.attempt, undefined, variantCount(t.def));
    if (t.rec.judgeAttempt !== undefined && !t.rec.judgeEnded) reserve(state, t, t.rec.judgeAttempt, undefined, variantCount(t.def));
    if (!t.rec.variants) reserve(state, t, t.rec.attempts);
  }
  return state;
}

/** The run's budget when it has a cap; undefined otherwise (nothing is reserved, cost is still counted). */
const capped = (state: RunState): RunBudget | undefined => (hasCap(state.run.budget) ? state.run.budget : undefined);

/** What the run has spent on finished attempts. */
const spentOf = (state: RunState): Spend => ({ usd: state.run.costUsd, tokens: state.run.tokens });

/**
 * Notes an attempt under way and what it holds against the budget (`est`, or its
 * estimate). A variant of a best-of-N task (`variants` > 1) is held under its own ledger
 * key, since its task has several attempts under way at once.
 */
function reserve(state: RunState, t: TaskState, attempt: number, est?: Spend, variants = 1): void {
  const budget = capped(state);
  const reserved = est ?? (budget ? estimate(state.ledger, budget, t.def) : NO_SPEND);
  const key = variants > 1 ? variantLedgerKey(t.def.id, attempt) : t.def.id;
  state.ledger.attempts.set(key, { attempt, reserved: { usd: reserved.usd, tokens: reserved.tokens }, live: NO_SPEND });
}

/**
 * Re-derives what a freshly loaded run must have in flight. A crash between publishing
 * a dependent's ready work and saving its record leaves it `pending` with every
 * dependency done: queue it again (the same attempt, so the publish is deduplicated
 * and the claim stops a second run). Nothing is announced: a first attempt's `queued`
 * is never written, so every root and released dependent looks pending here, though
 * it was announced (or listed in run.accepted) when first queued and may have started
 * or finished since; announcing it again told clients 246 tasks of a 300-task run were
 * queued again after a restart. (A task first queued here, e.g. one maxParallel held
 * back before the restart, goes from pending to started with no `queued` in between.)
 */
export function reconcile(state: RunState, now: string): Effect[] {
  // Every task succeeded and merge.into was asked for, but no answer is recorded: ask
  // again (deduplicated by msg id; past the window the merger finds it up to date).
  if (state.run.finalizing && state.run.status === "running") return [mergeIntoEffect(state)];
  return [...release(state, now, state.tasks.values(), false), ...settle(state, now)];
}

/**
 * Whether a result reports on work this state has not issued yet. The scheduler publishes
 * a decision's effects before it saves the decision, so a scheduler that dies in between
 * leaves work out (a task's ready message, a merge request) that the stored state does
 * not know about, and its result can reach the next scheduler first: a task result for a
 * task still `pending` (or for a later attempt than the one queued), or a merge result
 * for a task not yet `merging`. The input behind that decision was never acked, so it is
 * redelivered and the state catches up; until then such a result must wait, not be
 * dropped as stale (dropped, the task's work is never re-issued: the republished ready
 * message or merge request is deduplicated, and the run hangs).
 */
export function isEarly(state: RunState, result: TaskResult | MergeResult): boolean {
  const t = state.tasks.get(result.taskId);
  if (!t) return false;
  // A pending task may have had attempts: a retry the budget holds back. Their results are late, not early.
  if (result.type === "task.result") return (t.rec.status === "pending" || t.rec.status === "queued") && t.rec.attempts < result.attempt;
  return t.rec.status === "pending" || t.rec.status === "queued";
}

/** Every change of a task record goes through here, to keep the counters true. */
function update(state: RunState, t: TaskState, patch: Partial<TaskRecord>): void {
  const was = t.rec.status;
  t.rec = { ...t.rec, ...patch };
  const is = t.rec.status;
  if (TERMINAL.has(was) !== TERMINAL.has(is)) state.open += TERMINAL.has(is) ? -1 : 1;
  if ((was === "queued") !== (is === "queued")) {
    state.inFlight += is === "queued" ? 1 : -1;
    countStage(state, t, is === "queued" ? 1 : -1);
  }
  if ((was === "merging") !== (is === "merging")) state.merging += is === "merging" ? 1 : -1;
  if ((was === "needs_attention") !== (is === "needs_attention")) {
    state.attention += is === "needs_attention" ? 1 : -1;
    state.attentionChanged = true;
  }
}

/** Counts a task of a stage into (1) or out of (-1) the stage's tasks in flight. */
function countStage(state: RunState, t: TaskState, by: 1 | -1): void {
  const stage = t.def.stage;
  if (stage === undefined) return;
  const n = (state.stageInFlight.get(stage) ?? 0) + by;
  if (n > 0) state.stageInFlight.set(stage, n);
  else state.stageInFlight.delete(stage);
}

/**
 * Whether the task's stage has no room for one more of its tasks in flight (its
 * `maxParallel`, per run). The scheduler enforces it, not the balancer: it alone knows
 * a run's tasks in flight (queued and running alike), stored and the same on every
 * replica, as it does for the run's own maxParallel.
 */
export function stageFull(state: Pick<RunState, "run" | "stageInFlight" | "stageCircuit">, def: Pick<TaskDef, "stage">): boolean {
  if (def.stage === undefined) return false;
  const stage = state.run.graph.stages?.[def.stage];
  // A tripped circuit (open, or half-open after its cooldown) lets one probe through at a time.
  const limit = stageTripped(state, def.stage) ? 1 : stage?.maxParallel;
  return limit !== undefined && (state.stageInFlight.get(def.stage) ?? 0) >= limit;
}

/** Whether the stage's circuit breaker has seen its threshold of failures in a row (open or half-open). */
function stageTripped(state: Pick<RunState, "run" | "stageCircuit">, stage: string): boolean {
  const threshold = state.run.graph.stages?.[stage]?.circuit?.failures;
  return threshold !== undefined && (state.stageCircuit.get(stage)?.failures ?? 0) >= threshold;
}

/**
 * Counts an attempt's outcome on its stage's circuit breaker: a success closes it, a
 * failure (but a cancel or an interruption, which say nothing of the stage) counts one
 * more in a row and, at the threshold or past it, opens it for the cooldown from `now`.
 */
export function noteStageOutcome(state: Pick<RunState, "run" | "stageCircuit" | "stagesDirty">, def: Pick<TaskDef, "stage">, result: Pick<TaskResult, "status" | "failure">, now: number): void {
  const circuit = def.stage === undefined ? undefined : state.run.graph.stages?.[def.stage]?.circuit;
  if (!circuit) return;
  const stage = def.stage!;
  if (result.status === "succeeded") {
    if (state.stageCircuit.delete(stage)) state.stagesDirty.add(stage);
    return;
  }
  const kind = result.failure?.kind;
  if (kind === "cancelled" || kind === "interrupted") return;
  const failures = (state.stageCircuit.get(stage)?.failures ?? 0) + 1;
  state.stageCircuit.set(stage, { failures, openUntil: failures >= circuit.failures ? now + circuit.cooldownMs : 0 });
  state.stagesDirty.add(stage);
}

/**
 * When an attempt of the task's stage that may start at `at` (epoch ms) does start, given
 * the stage's open circuit (not before its cooldown ends) and `perMinute` (spaced evenly,
 * 60 s / perMinute apart, per run); it takes that slot. `at` itself for a task of no
 * stage or a stage with neither.
 */
export function stageSlot(state: Pick<RunState, "run" | "stageNextStart" | "stageCircuit" | "stagesDirty">, def: Pick<TaskDef, "stage">, at: number): number {
  if (def.stage === undefined) return at;
  // What this start relied on (a closed circuit, a free slot) is checked against the stored copy when written.
  if (governed(state.run.graph.stages?.[def.stage])) state.stagesDirty.add(def.stage);
  // An open circuit holds the stage's next attempt (its probe) until the cooldown ends.
  if (stageTripped(state, def.stage)) at = Math.max(at, state.stageCircuit.get(def.stage)!.openUntil);
  const rate = state.run.graph.stages?.[def.stage]?.perMinute;
  if (rate === undefined) return at;
  const slot = Math.max(at, state.stageNextStart.get(def.stage!) ?? 0);
  state.stageNextStart.set(def.stage!, slot + Math.ceil(60_000 / rate));
  return slot;
}

/** Whether a stage has limits that are stored (KV `stages`): a rate or a circuit breaker. */
const governed = (stage: { perMinute?: number; circuit?: unknown; batch?: { waitMs?: number } } | undefined): boolean =>
  stage?.perMinute !== undefined || stage?.circuit !== undefined || stage?.batch?.waitMs !== undefined;

/** The graph's stages whose limits are stored (KV `stages`: a rate, a circuit, a batch wait): what a scheduler loads with a run. */
export function governedStages(run: Pick<RunRecord, "graph">): string[] {
  return Object.entries(run.graph.stages ?? {})
    .filter(([, def]) => governed(def))
    .map(([name]) => name);
}

/**
 * The stored limits of the stages this decision read or changed (`stagesDirty`), with the
 * revision each write must find (0: create). The shell writes them before it publishes,
 * then clears `stagesDirty` and notes the new revisions. `final`: after the decision's
 * work is out and its records are stored, the batch waits it ended (`batchWaitsEnded`),
 * stored as over; until then they are written as still running.
 */
export function stagesToSave(state: RunState, now: string, final = false): { stage: string; value: StageState; rev: number }[] {
  const stages = final ? [...state.batchWaitsEnded.keys()] : [...state.stagesDirty];
  return stages.map((stage) => {
    const circuit = state.stageCircuit.get(stage);
    return {
      stage,
      rev: state.stageRevs.get(stage) ?? 0,
      value: {
        runId: state.run.runId,
        stage,
        nextStart: state.stageNextStart.get(stage) ?? 0,
        failures: circuit?.failures ?? 0,
        openUntil: circuit?.openUntil ?? 0,
        batchSince: state.stageBatchSince.get(stage) ?? (final ? 0 : (state.batchWaitsEnded.get(stage) ?? 0)),
        updatedAt: now,
      },
    };
  });
}

/** Records the paths a merged task changed, for the resolver context of later merges. */
function noteTouched(state: RunState, t: TaskState): void {
  for (const f of t.rec.files) {
    const list = state.touched.get(f);
    if (list) list.push(t.def.id);
    else state.touched.set(f, [t.def.id]);
  }
}

/** Prompts longer than this are cut in merge requests and HITL records (NATS max_payload). */
const PROMPT_LIMIT = 16 * 1024;
/** At most this many other tasks' prompts go with one merge request. */
const RELATED_LIMIT = 20;

const cut = (text: string, limit: number) => (text.length <= limit ? text : `${text.slice(0, limit)}\n[... cut at ${limit} characters]`);

/**
 * The merge request for a task's finished work: an attempt's, or a best-of-N round's
 * winner. `releaseOnly`: nothing to merge, only the worktree to release (no prompts).
 */
function mergeRequestOf(
  state: RunState,
  t: TaskState,
  work: { commit: string; branch: string; worktree?: string; attempt: number; files: string[] },
  releaseOnly: boolean,
): Effect {
  const run = state.run;
  return {
    type: "merge",
    request: {
      type: "merge.request",
      runId: run.runId,
      taskId: t.def.id,
      repo: run.repo!,
      remote: run.remote,
      commit: work.commit,
      branch: work.branch,
      baseCommit: run.baseCommit!,
      integrationBranch: run.integrationBranch!,
      worktree: work.worktree,
      releaseOnly,
      attempt: work.attempt,
      settings: run.merge ?? resolveMergeSettings(),
      prompt: releaseOnly ? "" : cut(t.def.prompt, PROMPT_LIMIT),
      related: releaseOnly ? [] : relatedPrompts(state, t.def.id, work.files),
    },
  };
}

/**
 * The prompts of already-merged tasks that changed some of `files`: what a resolver (or
 * a person) needs to know about the other side of a conflict in them.
 */
function relatedPrompts(state: RunState, taskId: string, files: string[]): RelatedPrompt[] {
  const byTask = new Map<string, string[]>();
  const note = (other: string, f: string) => {
    if (other === taskId) return;
    const list = byTask.get(other) ?? [];
    list.push(f);
    byTask.set(other, list);
  };
  for (const f of files) for (const other of state.touched.get(f) ?? []) note(other, f);
  // Merges requested but not reported yet usually land first (merges of one run are
  // taken in order): a conflict with one of them must name it too.
  if (state.merging > 0) {
    const wanted = new Set(files);
    for (const o of state.tasks.values()) {
      if (o.rec.status === "merging") for (const f of o.rec.files) if (wanted.has(f)) note(o.def.id, f);
    }
  }
  return [...byTask]
    .slice(0, RELATED_LIMIT)
    .map(([id, shared]) => ({ taskId: id, prompt: cut(state.tasks.get(id)!.def.prompt, PROMPT_LIMIT), files: shared.slice(0, 100) }));
}

/**
 * Delay before retry `attempt` (the attempt about to run): exponential from the policy,
 * capped, with jitter. The jitter comes from a hash of the attempt's key, so the
 * decision stays a pure function and replays identically.
 */
export function retryDelayMs(retry: TaskDef["retry"], key: string, attempt: number): number {
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619);
  const unit = ((h >>> 0) % 10_000) / 10_000; // 0..1
  // Attempt 2 is the first retry.
  return backoffDelay(attempt - 1, { baseMs: retry.backoffMs, factor: retry.factor, maxMs: retry.maxBackoffMs, jitter: retry.jitter }, unit);
}

export type AcceptOutcome = { ok: true; state: RunState; effects: Effect[] } | { ok: false; reason: string; tasks: string[]; effects: Effect[] };

/** A new submission: validate, create the run, queue the root tasks. `history`: see buildState(). */
export function acceptRun(submit: SubmitRun, now: string, history?: ReadonlyMap<string, CostHistory>): AcceptOutcome {
  const reject = (reason: string, tasks: string[] = []): AcceptOutcome => ({
    ok: false,
    reason,
    tasks,
    effects: [{ type: "event", event: { type: "run.rejected", runId: submit.runId, at: now, reason, code: "invalid", tasks } }],
  });
  try {
    validateGraph(submit.graph);
  } catch (err) {
    if (err instanceof GraphError) return reject(err.message, [...err.tasks]);
    throw err;
  }
  const needsRepo = submit.graph.tasks.filter((t) => t.agent !== "noop").map((t) => t.id);
  if (needsRepo.length && (!submit.repo || !submit.baseCommit)) {
    return reject(`tasks ${needsRepo.map((t) => `'${t}'`).join(", ")} need a git repository, but the run names none (repo and baseCommit)`, needsRepo);
  }
  const run: RunRecord = {
    runId: submit.runId,
    name: submit.graph.name,
    status: "running",
    // What the submitter resolved (config, graph, flags), else the graph's own settings.
    merge: submit.repo ? (submit.merge ?? resolveMergeSettings(submit.graph.merge)) : undefined,
    attentionRound: 0,
    finalizing: false,
    graph: submit.graph,
    repo: submit.repo,
    remote: submit.remote,
    baseCommit: submit.baseCommit,
    integrationBranch: submit.repo ? integrationBranch(submit.runId) : undefined,
    integrationCommit: submit.baseCommit,
    submittedAt: submit.submittedAt,
    acceptedAt: now,
    paused: false,
    cancelled: false,
    deadline: submit.graph.maxDurationMs ? Date.parse(now) + submit.graph.maxDurationMs : undefined,
    costUsd: 0,
    tokens: 0,
    // What the submitter resolved (config, graph, flags), else the graph's own caps.
    budget: submit.budget ?? resolveBudget(BUDGET_CONFIG_DEFAULT, { maxCost: submit.graph.maxCost, maxTokens: submit.graph.maxTokens }),
  };
  const state = buildState(run, 0, new Map(), history);
  // The shell creates the run record (the idempotency check). Root tasks are listed in
  // run.accepted rather than announced one by one, and a first attempt's `queued`
  // state is not written: both are re-derived from the graph after a restart.
  const released = release(state, now, state.tasks.values(), false);
  // Batch members are queued without ready work of their own (their lead's carries them).
  const queued = [...state.tasks.values()].filter((t) => t.rec.status === "queued").map((t) => t.def.id);
  const effects: Effect[] = [
    {
      type: "event",
      event: {
        type: "run.accepted",
        runId: run.runId,
        at: now,
        name: run.name,
        tasks: submit.graph.tasks.map((t) => ({ id: t.id, needs: t.needs, priority: t.priority })),
        queued,
        integrationBranch: run.integrationBranch,
        baseCommit: run.baseCommit,
        ...(hasCap(run.budget)
          ? { budget: { maxCostUsd: run.budget.maxCostUsd, maxTokens: run.budget.maxTokens, onExceed: run.budget.onExceed } }
          : {}),
      },
    },
    ...released,
    // A budget its first tasks would pass already: the run waits for a person (or stops) at once.
    ...settle(state, now),
  ];
  return { ok: true, state, effects };
}

/** A worker reported how an attempt ended. */
export function applyTaskResult(state: RunState, result: TaskResult, now: string): Effect[] {
  const t = state.tasks.get(result.taskId);
  if (!t) return [];
  if (variantCount(t.def) > 1) return applyVariantResult(state, t, result, now);
  const reported: Spend = { usd: result.costUsd, tokens: result.tokens ?? 0 };
  // Stale or duplicate: not the attempt we are waiting for. But an attempt cancelled while
  // it ran still cost what it cost: counted once, when its result comes.
  if (t.rec.status !== "queued" || t.rec.attempts !== result.attempt) {
    const late = settleAttempt(state.ledger, t.def.id, result.attempt, reported);
    return late ? [...charge(state, t, late), ...settle(state, now)] : [];
  }
  // The lead of a batch: its result is the whole batch's.
  const batch = batchOf(state, t, ["queued"]);
  if (batch.length > 1) return applyBatchResult(state, batch, result, now);
  const effects: Effect[] = [];
  noteStageOutcome(state, t.def, result, Date.parse(now));
  // What it reported while it ran counts if more than its result says (lost with its worker: nothing).
  const cost = settleAttempt(state.ledger, t.def.id, result.attempt, reported) ?? reported;
  update(state, t, {
    workerId: result.workerId,
    startedAt: result.startedAt,
    finishedAt: result.finishedAt,
    commit: result.commit,
    files: result.files,
    worktree: result.worktree,
    summary: result.summary,
    ...(result.sessionId ? { sessionId: result.sessionId } : {}),
  });
  const lostUnstarted = result.failure?.kind === "interrupted" && result.failure.agentStarted === false;
  effects.push(...charge(state, t, cost, !lostUnstarted));
  if (result.status === "failed") {
    const failure = result.failure ?? { message: "failed", retryable: true, kind: "internal" as const };
    if (failure.kind === "cancelled") {
      return [...effects, ...cancelTask(state, t, failure.message, now), ...release(state, now, []), ...settle(state, now)];
    }
    // An interrupted attempt (its worker shut down or died) is handed back without using
    // up the retry budget, a few times at most (maxInterruptions), so a crash loop still
    // ends. One lost before its agent started costs the task nothing (worker edit: 9.6).
    const interruption = interruptionRule(t, failure, state.run.graph.maxInterruptions);
    update(state, t, interruption.counts);
    const interrupted = interruption.again;
    // A provider that refused the task (auth, a rate or usage limit) says nothing about
    // the task: it goes back to the balancer, which gives it another provider of its
    // list, or holds it until one is healthy.
    const provider = providerFailureRule(t, failure);
    update(state, t, provider.counts);
    const failures = result.attempt - (t.rec.interruptions ?? 0) - (t.rec.lostUnstarted ?? 0) - (t.rec.providerFailures ?? 0);
    const requeue = interrupted || provider.again;
    let willRetry = (requeue || (failure.kind !== "interrupted" && failure.retryable && failures < t.def.retry.attempts)) && !state.run.halted;
    const capMessage = interruption.capMessage ?? provider.capMessage;
    let message = capMessage ? `${failure.message}; ${capMessage}` : failure.message;
    // A retry is a new attempt: it must fit the run's budget like any task that starts.
    let retryFits: ReturnType<typeof fitsBudget> = { ok: true };
    if (willRetry && state.run.budgetStopped) {
      willRetry = false;
      message = `${message}; not retried: ${state.run.budgetStopped}`;
    } else if (willRetry) {
      retryFits = fitsBudget(state, t);
      if (!retryFits.ok && state.run.budget?.onExceed === "stop") {
        willRetry = false;
        message = `${message}; not retried: ${retryFits.wait.message}`;
      }
    }
    effects.push({ type: "event", event: failedEvent(state, t, result, message, failure.kind, willRetry, cost, now) });
    // An interrupted attempt resumes from its checkpoint commit, if it left one, and its
    // agent from the session it ran in.
    const resume = interrupted && (result.sessionId || result.commit) ? { fromAttempt: result.attempt, ...(result.sessionId ? { sessionId: result.sessionId } : {}), ...(result.commit ? { commit: result.commit } : {}) } : undefined;
    if (willRetry && !retryFits.ok) {
      // Over the budget: the retry waits, pending, with the tasks the budget holds back; a
      // raise starts it (from the checkpoint an interrupted attempt left, in its session).
      update(state, t, { status: "pending", error: message, resumeFrom: interrupted ? result.commit : undefined });
      state.held.add(t.def.id);
      blockOnBudget(state, retryFits.wait);
      effects.push({ type: "saveTask", taskId: t.def.id });
    } else if (willRetry) {
      // A task with providers goes back at once (the balancer gives it another provider, or
      // holds it while the governor parks this one); one without waits out a rate limit:
      // its backoff, or the reset time its CLI gave (the time is the account's, any worker).
      const waitOut = failure.kind === "rate_limit" && !t.def.providers?.length;
      const effectsOfQueue = queue(state, t, now, !requeue || waitOut, true, interrupted ? result.commit : undefined, resume, retryFits.ok ? retryFits.est : undefined);
      const work = effectsOfQueue.find((e): e is Extract<Effect, { type: "ready" }> => e.type === "ready")!.work;
      const until = waitOut ? rateLimitedUntil(failure, work.notBefore) : undefined;
      if (until !== undefined) work.notBefore = until;
      effects.push(...effectsOfQueue, {
        type: "event",
        event: { type: "task.retrying", runId: state.run.runId, taskId: t.def.id, attempt: work.attempt, at: now, notBefore: work.notBefore, error: message },
      });
    } else {
      update(state, t, { status: "failed", error: message });
      effects.push({ type: "saveTask", taskId: t.def.id }, ...skipDependents(state, t.def.id, now), ...release(state, now, []));
      if (state.run.graph.failFast) {
        effects.push(...stopRun(state, `task '${t.def.id}' failed and the run is failFast: ${message}`, now, "ado (failFast)"));
      } else if (!retryFits.ok) {
        effects.push(...stopOnBudget(state, retryFits.wait, now));
      }
    }
    return [...effects, ...settle(state, now)];
  }

  effects.push({
    type: "event",
    event: {
      type: "task.succeeded",
      runId: state.run.runId,
      taskId: t.def.id,
      attempt: result.attempt,
      at: now,
      workerId: result.workerId,
      commit: result.commit,
      files: result.files,
      startedAt: result.startedAt,
      finishedAt: result.finishedAt,
      costUsd: cost.usd,
      tokens: cost.tokens,
    },
  });
  const run = state.run;
  const work = { commit: result.commit!, branch: result.branch ?? taskBranch(run.runId, t.def.id), worktree: result.worktree, attempt: result.attempt, files: result.files };
  const mergeRequest = (releaseOnly: boolean) => mergeRequestOf(state, t, work, releaseOnly);
  const hasWork = !!(run.repo && run.baseCommit && result.commit && result.files.length > 0);
  if (state.run.halted) {
    update(state, t, { status: "skipped", error: `finished on ${result.branch ?? "its branch"} but not merged: ${run.halted}` });
    effects.push({ type: "saveTask", taskId: t.def.id });
    if (hasWork && result.worktree) effects.push(mergeRequest(true));
  } else if (hasWork) {
    update(state, t, { status: "merging" });
    effects.push({ type: "saveTask", taskId: t.def.id }, mergeRequest(false), ...release(state, now, []));
  } else {
    // Nothing to merge (no repository, or the task changed nothing).
    update(state, t, { status: "succeeded" });
    effects.push({ type: "saveTask", taskId: t.def.id }, ...release(state, now, dependentsOf(state, t.def.id)));
  }
  return [...effects, ...settle(state, now)];
}

/**
 * The merge coordinator reported on a task branch: merged, escalated to a person
 * (`needs_attention`, which is not an end: the task waits and its dependents with it),
 * or, once a person chose so, skipped. A result about an older HITL round than the task
 * is in is a replay and changes nothing.
 */
export function applyMergeResult(state: RunState, result: MergeResult, now: string, seq?: number): Effect[] {
  const t = state.tasks.get(result.taskId);
  if (!t) return [];
  const waiting = t.rec.status === "needs_attention";
  if (t.rec.status !== "merging" && !waiting) return [];
  if (waiting) {
    const current = result.status === "needs_attention" ? result.round > t.rec.hitlRound : result.round === t.rec.hitlRound;
    // While a person decides, only the outcome of their decision (or a new escalation) counts.
    if (!current || (result.status !== "merged" && result.status !== "skipped" && result.status !== "needs_attention")) return [];
  }
  const effects: Effect[] = [];
  const runId = state.run.runId;
  switch (result.status) {
    case "merged": {
      update(state, t, { status: "succeeded", integrationCommit: result.integrationCommit, integrationGeneration: result.integrationGeneration, error: undefined });
      noteTouched(state, t);
      // The run's integration commit (the base of every dependent released from now on)
      // only moves forward. The merge coordinator publishes results in the order it moved
      // the branch, so `seq` (the result's place in the results stream) orders them; a
      // result redelivered after a scheduler died, or held back as early, arrives after
      // newer ones, and taking its older commit would base a dependent on a tree without
      // some of its dependencies' work.
      // Results that carry the commit's generation are ordered by it, which holds with
      // any number of merger replicas and survives restarts (it is stored in the run).
      const gen = result.integrationGeneration;
      const newer =
        gen !== undefined
          ? state.run.integrationGeneration === undefined || gen > state.run.integrationGeneration
          : seq === undefined || state.integrationSeq === undefined || seq > state.integrationSeq;
      if (newer) {
        state.run = { ...state.run, integrationCommit: result.integrationCommit, ...(gen !== undefined ? { integrationGeneration: gen } : {}) };
        if (seq !== undefined) state.integrationSeq = seq;
      }
      effects.push(
        { type: "event", event: { type: "task.merged", runId, taskId: t.def.id, attempt: winnerOf(t.rec)?.attempt ?? t.rec.attempts, at: now, integrationCommit: result.integrationCommit! } },
        { type: "saveTask", taskId: t.def.id },
        { type: "saveRun" },
        ...release(state, now, dependentsOf(state, t.def.id)),
      );
      break;
    }
    case "needs_attention": {
      // The merge coordinator wrote the HITL record and announced it (merge.hitl_required).
      update(state, t, { status: "needs_attention", error: result.message, hitlId: result.hitlId, hitlRound: result.round });
      // Also when it needed attention before (a resolution failed): a new round to announce.
      state.attentionChanged = true;
      effects.push({ type: "saveTask", taskId: t.def.id });
      break;
    }
    case "skipped": {
      const reason = `not merged (its work stays on ${taskBranch(runId, t.def.id)}): ${result.message || "skipped at the merge by a person"}`;
      update(state, t, { status: "skipped", error: reason });
      effects.push(
        { type: "saveTask", taskId: t.def.id },
        { type: "event", event: { type: "task.skipped", runId, taskId: t.def.id, attempt: Math.max(1, t.rec.attempts), at: now, reason } },
        ...skipDependents(state, t.def.id, now),
      );
      break;
    }
    case "error": {
      // The merge could not be tried (git failed, the repository is gone): the task ends
      // and the run halts; a conflict is never this, it needs a person (needs_attention).
      const message = `merging task '${t.def.id}' failed: ${result.message}`;
      update(state, t, { status: "failed", error: message });
      effects.push({ type: "saveTask", taskId: t.def.id }, ...halt(state, message, now));
      break;
    }
  }
  // A batch's members landed (or not) with its lead's merge.
  effects.push(...followLead(state, t, now));
  return [...effects, ...settle(state, now)];
}

/** The merge coordinator answered the run's `merge.into` request: record it and end the run. */
export function applyMergeIntoResult(state: RunState, result: MergeIntoResult, now: string): Effect[] {
  if (!state.run.finalizing || state.run.status !== "running") return [];
  const { type: _, runId, ...outcome } = result;
  state.run = { ...state.run, finalizing: false, mergeInto: outcome };
  return [{ type: "event", event: { type: "run.merged_into", runId, at: now, ...outcome } }, ...settle(state, now)];
}

/**
 * A cancel, pause or resume of the run or one task. The scheduler records it; workers
 * and the balancer act on the same request through the control bucket.
 */
export function applyControl(state: RunState, req: ControlRequest, now: string): Effect[] {
  // Nothing left to stop once every task is done and only merge.into is outstanding.
  if (!isLive(state.run) || state.run.finalizing) return [];
  const runId = state.run.runId;
  if (req.taskId) {
    const t = state.tasks.get(req.taskId);
    if (!t || TERMINAL.has(t.rec.status)) return [];
    // Pausing one task is the worker's and the balancer's business; nothing to record.
    if (req.action !== "cancel") return [];
    return [...cancelTask(state, t, req.reason || `cancelled by ${req.by || "a user"}`, now), ...release(state, now, []), ...settle(state, now)];
  }
  switch (req.action) {
    case "cancel":
      state.run = { ...state.run, cancelled: true };
      return stopRun(state, req.reason || `cancelled by ${req.by || "a user"}`, now, req.by);
    case "pause":
      if (state.run.paused) return [];
      state.run = { ...state.run, paused: true };
      return [{ type: "saveRun" }, { type: "event", event: { type: "run.paused", runId, at: now, by: req.by } }];
    case "resume": {
      if (!state.run.paused) return [];
      state.run = { ...state.run, paused: false };
      const held = [...state.held].map((id) => state.tasks.get(id)!);
      return [{ type: "saveRun" }, { type: "event", event: { type: "run.resumed", runId, at: now, by: req.by } }, ...release(state, now, held), ...settle(state, now)];
    }
  }
}

/**
 * A person changed the run's budget caps (`ado budget raise`): set, or raised by an
 * amount (a raise of a run without that cap counts from what it has spent and holds).
 * Ready tasks that waited for the budget start if they fit now, and the run goes on; if
 * they still do not, the stop is announced again with the new figures. A run the budget
 * already stopped (onExceed: stop) records the new caps and stays stopped: its tasks
 * that had not started were skipped.
 */
export function applyBudget(state: RunState, req: BudgetRequest, now: string): Effect[] {
  if (!isLive(state.run) || state.run.finalizing) return [];
  const runId = state.run.runId;
  const prev = state.run.budget;
  const c = committed(state.ledger, spentOf(state));
  const usedUsd = c.spent.usd + c.held.usd;
  const usedTokens = c.spent.tokens + c.held.tokens;
  const maxCostUsd = req.maxCostUsd ?? (req.addCostUsd !== undefined ? (prev?.maxCostUsd ?? usedUsd) + req.addCostUsd : prev?.maxCostUsd);
  const maxTokens = req.maxTokens ?? (req.addTokens !== undefined ? (prev?.maxTokens ?? usedTokens) + req.addTokens : prev?.maxTokens);
  const changes = (prev?.changes ?? 0) + 1;
  state.run = {
    ...state.run,
    budget: {
      onExceed: "wait",
      defaultTaskCostUsd: 0,
      defaultTaskTokens: 0,
      ...prev,
      ...(maxCostUsd !== undefined ? { maxCostUsd } : {}),
      ...(maxTokens !== undefined ? { maxTokens } : {}),
      changes,
    },
  };
  const effects: Effect[] = [
    { type: "saveRun" },
    {
      type: "event",
      event: {
        type: "run.budget",
        runId,
        at: now,
        by: req.by || "a user",
        ...(maxCostUsd !== undefined ? { maxCostUsd } : {}),
        ...(maxTokens !== undefined ? { maxTokens } : {}),
        ...(prev?.maxCostUsd !== undefined ? { previousMaxCostUsd: prev.maxCostUsd } : {}),
        ...(prev?.maxTokens !== undefined ? { previousMaxTokens: prev.maxTokens } : {}),
        ...(state.run.budgetStopped ? { stopped: state.run.budgetStopped } : {}),
      },
      msgID: msgIds.runBudget(runId, changes),
    },
  ];
  if (state.run.budgetStopped) return effects;
  const wasBlocked = !!state.budgetBlocked;
  effects.push(...release(state, now, []));
  // Still short: the person hears so (a new round, with the new figures).
  if (wasBlocked && state.budgetBlocked) state.attentionChanged = true;
  return [...effects, ...settle(state, now)];
}

/**
 * Stops a whole run: pending tasks are skipped, queued and running ones cancelled (the
 * control request makes workers kill them and the balancer drop them). In-flight
 * merges finish. The run ends once nothing is in flight.
 */
function stopRun(state: RunState, reason: string, now: string, by = "ado"): Effect[] {
  const runId = state.run.runId;
  const effects: Effect[] = [
    { type: "control", request: { type: "control", runId, action: "cancel", reason, by, at: now } },
    { type: "event", event: { type: "run.cancelling", runId, at: now, by, reason } },
    ...halt(state, reason, now),
  ];
  for (const t of state.tasks.values()) {
    // A merge waiting for a person is dropped too: its work stays on the task branch.
    if (t.rec.status === "queued" || t.rec.status === "needs_attention") effects.push(...cancelTask(state, t, reason, now, false));
  }
  return [...effects, ...settle(state, now)];
}

/** Cancels one task (terminal) and skips what depends on it. */
function cancelTask(state: RunState, t: TaskState, reason: string, now: string, tellWorkers = true): Effect[] {
  const runId = state.run.runId;
  const wasInFlight = t.rec.status === "queued";
  update(state, t, { status: "cancelled", error: reason });
  const effects: Effect[] = [
    { type: "saveTask", taskId: t.def.id },
    { type: "event", event: { type: "task.cancelled", runId, taskId: t.def.id, attempt: Math.max(1, t.rec.attempts), at: now, reason } },
    ...skipDependents(state, t.def.id, now),
  ];
  if (tellWorkers && wasInFlight) {
    effects.unshift({ type: "control", request: { type: "control", runId, taskId: t.def.id, action: "cancel", reason, by: "ado", at: now } });
  }
  // A cancelled lead takes its batch's attempt with it: its members run alone (or, the
  // run stopping, are cancelled too).
  if (wasInFlight && t.rec.batch === t.def.id) {
    for (const m of state.tasks.values()) {
      if (m === t || m.rec.batch !== t.def.id || m.rec.status !== "queued") continue;
      update(state, m, { batch: undefined, unbatched: true });
      if (state.run.halted) effects.push(...cancelTask(state, m, reason, now, false));
      else effects.push(...queue(state, m, now), { type: "saveTask", taskId: m.def.id });
    }
  }
  return effects;
}

/** Stops dispatching: pending tasks are skipped; tasks in flight finish but are not merged. */
function halt(state: RunState, reason: string, now: string): Effect[] {
  if (state.run.halted) return [];
  state.run = { ...state.run, halted: reason };
  state.budgetBlocked = undefined;
  const effects: Effect[] = [{ type: "saveRun" }];
  for (const t of state.tasks.values()) {
    if (t.rec.status === "pending") effects.push(...skip(state, t, "the run stopped: " + reason, now));
  }
  return effects;
}

function skip(state: RunState, t: TaskState, reason: string, now: string): Effect[] {
  update(state, t, { status: "skipped", error: reason });
  return [
    { type: "saveTask", taskId: t.def.id },
    { type: "event", event: { type: "task.skipped", runId: state.run.runId, taskId: t.def.id, attempt: Math.max(1, t.rec.attempts), at: now, reason } },
  ];
}

/** Skips every task that (transitively) needs a task that failed for good. */
function skipDependents(state: RunState, failed: string, now: string): Effect[] {
  const effects: Effect[] = [];
  const stack = [...(state.dependents.get(failed) ?? [])];
  while (stack.length) {
    const id = stack.pop()!;
    const t = state.tasks.get(id)!;
    if (t.rec.status !== "pending") continue;
    effects.push(...skip(state, t, `needs '${failed}', which did not succeed`, now));
    stack.push(...(state.dependents.get(id) ?? []));
  }
  return effects;
}

const dependentsOf = (state: RunState, id: string) => (state.dependents.get(id) ?? []).map((d) => state.tasks.get(d)!);

/**
 * Queues the candidates that are pending with every dependency succeeded (integrated).
 * Candidates are the dependents of the task that just succeeded, so each result costs
 * time in its fan-out, not in the size of the run.
 */
function release(state: RunState, now: string, candidates: Iterable<TaskState>, announce = true): Effect[] {
  if (state.run.halted || state.run.paused || state.run.budgetStopped) {
    // Remember what became ready meanwhile; resume() releases it.
    if (state.run.paused && !state.run.halted && !state.run.budgetStopped) for (const t of candidates) if (t.rec.status === "pending") state.held.add(t.def.id);
    return [];
  }
  const limit = state.run.graph.maxParallel ?? Infinity;
  // Tasks held back by maxParallel or the budget go first: they were ready before these candidates.
  const ready = [...state.held].map((id) => state.tasks.get(id)!);
  for (const t of candidates) {
    if (t.rec.status !== "pending" || state.held.has(t.def.id)) continue;
    if (t.def.needs.every((d) => state.tasks.get(d)!.rec.status === "succeeded")) ready.push(t);
  }
  const waited = waitForBatches(state, ready, now);
  const effects: Effect[] = waited.effects;
  // Once a task does not fit the budget, nothing after it starts either (it would take
  // what the first one waits for): they wait in order.
  let blocked: BudgetWait | undefined;
  for (const t of waited.go) {
    if (t.rec.status !== "pending") {
      state.held.delete(t.def.id);
      continue;
    }
    // A full stage holds its own tasks only: the next stage's may still start.
    if (state.inFlight >= limit || blocked || stageFull(state, t.def)) {
      state.held.add(t.def.id);
      continue;
    }
    const fit = fitsBudget(state, t);
    if (!fit.ok) {
      if (state.run.budget?.onExceed === "stop") return [...effects, ...stopOnBudget(state, fit.wait, now)];
      blocked = fit.wait;
      state.held.add(t.def.id);
      continue;
    }
    state.held.delete(t.def.id);
    state.batchWaited.delete(t.def.id);
    effects.push(...queue(state, t, now, false, announce, t.rec.resumeFrom, heldResume(t), fit.est));
  }
  if (blocked) blockOnBudget(state, blocked);
  else state.budgetBlocked = undefined;
  return formBatches(state, effects);
}

/** Whether a ready task waits for its stage's batch to fill (`batch.waitMs`): a first attempt that could run in a batch. */
function waitsForBatch(state: RunState, t: TaskState): boolean {
  const stage = t.def.stage === undefined ? undefined : state.run.graph.stages?.[t.def.stage];
  if (!stage?.batch?.waitMs || t.rec.status !== "pending" || state.batchWaited.has(t.def.id)) return false;
  // What formBatches() runs alone never waits for company.
  return t.rec.attempts === 0 && !t.rec.unbatched && !t.rec.resumeFrom && !t.def.promptRef && !t.def.run && variantCount(t.def) <= 1;
}

/**
 * Batching with a wait (`batch: { max, waitMs }`): the stage's ready batchable tasks wait
 * (in `batchWaiting`, still `pending`) from the first of them (`batchSince`, stored with
 * the stage's limits) until `max` of them wait or `waitMs` has passed; then all go on to
 * the limits and the queue together, and formBatches() makes them batches. Returns the
 * tasks that go on, and the `batch.due` timer of a wait that started (the scheduler's own
 * input, taken back until due: nothing else may come to end the wait).
 */
function waitForBatches(state: RunState, ready: TaskState[], now: string): { go: TaskState[]; effects: Effect[] } {
  const stages = state.run.graph.stages;
  if (!stages || (state.batchWaiting.size === 0 && !ready.some((t) => waitsForBatch(state, t)))) return { go: ready, effects: [] };
  const at = Date.parse(now);
  const go: TaskState[] = [];
  for (const t of ready) {
    if (!waitsForBatch(state, t)) {
      go.push(t);
      continue;
    }
    const list = state.batchWaiting.get(t.def.stage!) ?? [];
    if (!list.includes(t.def.id)) list.push(t.def.id);
    state.batchWaiting.set(t.def.stage!, list);
    state.held.delete(t.def.id);
  }
  const effects: Effect[] = [];
  for (const [stage, ids] of [...state.batchWaiting]) {
    // Cancelled or skipped meanwhile: no longer waiting.
    const live = ids.filter((id) => state.tasks.get(id)!.rec.status === "pending");
    const batch = stages[stage]!.batch!;
    let since = state.stageBatchSince.get(stage);
    if (live.length > 0 && since === undefined) {
      since = at;
      state.stageBatchSince.set(stage, at);
      state.stagesDirty.add(stage);
    }
    if (live.length === 0 || live.length >= batch.max || at >= since! + batch.waitMs!) {
      // In the graph's order, not the order they became ready: a scheduler redoing this
      // after a crash (the tasks found ready in another order) forms the same batches.
      const order = new Map(state.run.graph.tasks.map((d, i) => [d.id, i]));
      for (const id of live.sort((a, b) => order.get(a)! - order.get(b)!)) {
        state.batchWaited.add(id);
        go.push(state.tasks.get(id)!);
      }
      state.batchWaiting.delete(stage);
      state.batchDueSent.delete(stage);
      if (since !== undefined) {
        state.stageBatchSince.delete(stage);
        state.batchWaitsEnded.set(stage, since);
        state.stagesDirty.add(stage);
      }
      continue;
    }
    state.batchWaiting.set(stage, live);
    if (state.batchDueSent.get(stage) !== since) {
      state.batchDueSent.set(stage, since!);
      const runId = state.run.runId;
      effects.push({ type: "batchDue", due: { type: "batch.due", runId, stage, due: since! + batch.waitMs! }, msgID: msgIds.batchDue(runId, stage, since!) });
    }
  }
  return { go, effects };
}

/**
 * A stage's batch wait may be over (its `batch.due` timer, taken once due): the tasks
 * waiting go on, within the limits, as batches.
 */
export function applyBatchDue(state: RunState, _due: BatchDue, now: string): Effect[] {
  return [...release(state, now, []), ...settle(state, now)];
}

/**
 * Folds the ready work of a batching stage's tasks queued together into batches (up to
 * its `batch.max`, same agent and providers): the first task of each is the lead, whose
 * attempt carries every member's prompt as a numbered list; the members' own ready
 * messages are dropped, and every task of the batch records it (`batch`: the lead's id),
 * so they stay the scheduler's, queued, until the lead's result. Tasks queued together
 * need none of each other (a task is ready only once all it needs has succeeded). A task
 * that ran in a failed batch, resumes a checkpoint or has a prompt in the object store
 * runs alone, and so does a best-of-N task.
 */
function formBatches(state: RunState, effects: Effect[]): Effect[] {
  const stages = state.run.graph.stages;
  if (!stages) return effects;
  const groups = new Map<string, Extract<Effect, { type: "ready" }>[]>();
  for (const e of effects) {
    if (e.type !== "ready") continue;
    const t = state.tasks.get(e.work.taskId)!;
    const max = t.def.stage === undefined ? undefined : stages[t.def.stage]?.batch?.max;
    // A best-of-N task runs its variants as attempts of its own: never in a batch.
    if (max === undefined || t.rec.unbatched || t.def.promptRef || e.work.resume || e.work.task.run || variantCount(t.def) > 1) continue;
    const key = `${t.def.stage}\u0000${t.def.agent}\u0000${(t.def.providers ?? []).join(",")}`;
    const list = groups.get(key) ?? [];
    list.push(e);
    groups.set(key, list);
  }
  const dropped = new Set<Effect>();
  const saves: Effect[] = [];
  for (const list of groups.values()) {
    const max = stages[state.tasks.get(list[0]!.work.taskId)!.def.stage!]!.batch!.max;
    for (let i = 0; i < list.length; i += max) {
      const chunk = list.slice(i, i + max);
      if (chunk.length < 2) continue;
      const lead = chunk[0]!.work;
      const members = chunk.map((e) => state.tasks.get(e.work.taskId)!);
      lead.task = { ...lead.task, prompt: batchPrompt(members.map((m) => ({ id: m.def.id, prompt: m.def.prompt }))) };
      for (const [n, m] of members.entries()) {
        update(state, m, { batch: lead.taskId });
        if (n > 0) dropped.add(chunk[n]!);
        saves.push({ type: "saveTask", taskId: m.def.id });
      }
    }
  }
  return dropped.size || saves.length ? [...effects.filter((e) => !dropped.has(e)), ...saves] : effects;
}

/**
 * The result of a batch's attempt (its lead's), for every task of it: each gets its
 * share of the cost. A success is one commit: the lead's merge request carries it and the
 * members follow the lead's merge (followLead). A failure runs every task again alone
 * (without using its retries: the batch failed, not yet the task); a cancel cancels them.
 */
function applyBatchResult(state: RunState, batch: TaskState[], result: TaskResult, now: string): Effect[] {
  const lead = batch[0]!;
  const runId = state.run.runId;
  noteStageOutcome(state, lead.def, result, Date.parse(now));
  const reported: Spend = { usd: result.costUsd, tokens: result.tokens ?? 0 };
  const cost = settleAttempt(state.ledger, lead.def.id, result.attempt, reported) ?? reported;
  const n = batch.length;
  const tokenShare = Math.floor(cost.tokens / n);
  const shareOf = (i: number): Spend => ({ usd: cost.usd / n, tokens: tokenShare + (i === 0 ? cost.tokens - tokenShare * n : 0) });
  const effects: Effect[] = [];
  for (const [i, t] of batch.entries()) {
    if (i > 0) settleAttempt(state.ledger, t.def.id, t.rec.attempts, NO_SPEND);
    update(state, t, {
      workerId: result.workerId,
      startedAt: result.startedAt,
      finishedAt: result.finishedAt,
      commit: result.commit,
      files: result.files,
      summary: result.summary,
      ...(i === 0 ? { worktree: result.worktree } : {}),
    });
    effects.push(...charge(state, t, shareOf(i), result.failure?.kind !== "interrupted"));
  }
  if (result.status === "failed") {
    const failure = result.failure ?? { message: "failed", retryable: true, kind: "internal" as const };
    if (failure.kind === "cancelled") {
      for (const t of batch) effects.push(...cancelTask(state, t, failure.message, now, false));
      return [...effects, ...release(state, now, []), ...settle(state, now)];
    }
    const again = !state.run.halted && !state.run.budgetStopped;
    for (const [i, t] of batch.entries()) {
      const share = shareOf(i);
      const error = `${failure.message} (in batch '${lead.def.id}' of ${n} tasks${again ? "; each runs again alone" : ""})`;
      effects.push({
        type: "event",
        event: { type: "task.failed", runId, taskId: t.def.id, attempt: t.rec.attempts, at: now, workerId: result.workerId, error, kind: failure.kind, willRetry: again, outputTail: result.outputTail, startedAt: result.startedAt, finishedAt: result.finishedAt, costUsd: share.usd, tokens: share.tokens, batch: lead.def.id },
      });
      update(state, t, { batch: undefined, unbatched: true });
      if (again) {
        const queued = queue(state, t, now, false, true);
        effects.push(...queued, { type: "saveTask", taskId: t.def.id });
        const work = queued.find((e): e is Extract<Effect, { type: "ready" }> => e.type === "ready")!.work;
        effects.push({ type: "event", event: { type: "task.retrying", runId, taskId: t.def.id, attempt: work.attempt, at: now, notBefore: work.notBefore, error } });
      } else {
        update(state, t, { status: "failed", error });
        effects.push({ type: "saveTask", taskId: t.def.id }, ...skipDependents(state, t.def.id, now));
      }
    }
    return [...effects, ...settle(state, now)];
  }
  const run = state.run;
  const hasWork = !!(run.repo && run.baseCommit && result.commit && result.files.length > 0);
  for (const [i, t] of batch.entries()) {
    const share = shareOf(i);
    effects.push({
      type: "event",
      event: { type: "task.succeeded", runId, taskId: t.def.id, attempt: t.rec.attempts, at: now, workerId: result.workerId, commit: result.commit, files: result.files, startedAt: result.startedAt, finishedAt: result.finishedAt, costUsd: share.usd, tokens: share.tokens, batch: lead.def.id },
    });
  }
  if (run.halted || !hasWork) {
    // The lead's own path decides (skipped, or done without changes); the members follow it.
    const leadEffects = applyLeadAlone(state, lead, result, now);
    return [...effects, ...leadEffects, ...followLead(state, lead, now), ...release(state, now, []), ...settle(state, now)];
  }
  for (const t of batch) {
    update(state, t, { status: "merging" });
    effects.push({ type: "saveTask", taskId: t.def.id });
  }
  effects.push({
    type: "merge",
    request: {
      type: "merge.request",
      runId,
      taskId: lead.def.id,
      repo: run.repo!,
      remote: run.remote,
      commit: result.commit!,
      branch: result.branch ?? taskBranch(runId, lead.def.id),
      baseCommit: run.baseCommit!,
      integrationBranch: run.integrationBranch!,
      worktree: result.worktree,
      releaseOnly: false,
      attempt: result.attempt,
      settings: run.merge ?? resolveMergeSettings(),
      prompt: cut(batchPrompt(batch.map((t) => ({ id: t.def.id, prompt: t.def.prompt }))), PROMPT_LIMIT),
      related: relatedPrompts(state, lead.def.id, result.files),
    },
  });
  return [...effects, ...release(state, now, []), ...settle(state, now)];
}

/** A batch's lead that merges nothing (the run halted, or no changes): skipped or done, without a merge. */
function applyLeadAlone(state: RunState, lead: TaskState, result: TaskResult, now: string): Effect[] {
  const run = state.run;
  if (run.halted) {
    update(state, lead, { status: "skipped", error: `finished on ${result.branch ?? "its branch"} but not merged: ${run.halted}` });
    return [{ type: "saveTask", taskId: lead.def.id }];
  }
  update(state, lead, { status: "succeeded" });
  return [{ type: "saveTask", taskId: lead.def.id }, ...release(state, now, dependentsOf(state, lead.def.id))];
}

/**
 * The members of a batch take the state its lead's merge (or end) left it in: merged
 * (their dependents are released), waiting for a person (the lead's HITL record),
 * skipped or failed.
 */
function followLead(state: RunState, lead: TaskState, now: string): Effect[] {
  if (lead.rec.batch !== lead.def.id) return [];
  const runId = state.run.runId;
  const effects: Effect[] = [];
  for (const m of batchOf(state, lead, ["queued", "merging", "needs_attention"]).slice(1)) {
    const r = lead.rec;
    switch (r.status) {
      case "succeeded":
        update(state, m, { status: "succeeded", integrationCommit: r.integrationCommit, integrationGeneration: r.integrationGeneration, error: undefined });
        effects.push({ type: "saveTask", taskId: m.def.id });
        if (r.integrationCommit) effects.push({ type: "event", event: { type: "task.merged", runId, taskId: m.def.id, attempt: m.rec.attempts, at: now, integrationCommit: r.integrationCommit } });
        effects.push(...release(state, now, dependentsOf(state, m.def.id)));
        break;
      case "needs_attention":
        update(state, m, { status: "needs_attention", error: r.error, hitlId: r.hitlId, hitlRound: r.hitlRound });
        effects.push({ type: "saveTask", taskId: m.def.id });
        break;
      case "skipped":
      case "failed":
      case "cancelled": {
        const reason = `batch '${lead.def.id}' it ran in: ${r.error ?? r.status}`;
        update(state, m, { status: r.status, error: reason });
        effects.push({ type: "saveTask", taskId: m.def.id });
        if (r.status === "skipped") effects.push({ type: "event", event: { type: "task.skipped", runId, taskId: m.def.id, attempt: Math.max(1, m.rec.attempts), at: now, reason } });
        effects.push(...skipDependents(state, m.def.id, now));
        break;
      }
      default:
        break;
    }
  }
  return effects;
}

/** The prompt of a batch: its tasks' prompts as a numbered list. */
export function batchPrompt(tasks: readonly { id: string; prompt: string }[]): string {
  const items = tasks.map((t, i) => `${i + 1}. (task ${t.id})\n${t.prompt.trim()}`);
  return `Do each of these ${tasks.length} tasks, in order, in this one session; they are independent of each other.\n\n${items.join("\n\n")}\n`;
}

/** The tasks of the batch `lead` leads that still wait for its result or merge, the lead first (empty for a task that leads none). */
function batchOf(state: RunState, lead: TaskState, statuses: readonly TaskStatus[]): TaskState[] {
  if (lead.rec.batch !== lead.def.id) return [];
  const out = [lead];
  for (const t of state.tasks.values()) if (t !== lead && t.rec.batch === lead.def.id && statuses.includes(t.rec.status)) out.push(t);
  return out;
}

/**
 * Counts what an attempt cost on its task and the run (with the run's own history of
 * what its agent costs, unless it never started). A cost is stored at once: the run
 * record is written only for a result that reported one, so runs without cost (noop,
 * shell) write nothing more per task.
 */
function charge(state: RunState, t: TaskState, cost: Spend, sample = true): Effect[] {
  if (sample) addSample(state.ledger, t.def, cost);
  if (cost.usd <= 0 && cost.tokens <= 0) return [];
  update(state, t, { costUsd: t.rec.costUsd + cost.usd, tokens: t.rec.tokens + cost.tokens });
  state.run = { ...state.run, costUsd: state.run.costUsd + cost.usd, tokens: state.run.tokens + cost.tokens };
  return [{ type: "saveTask", taskId: t.def.id }, { type: "saveRun" }];
}

/** Whether the task's next attempt fits the run's budget (always, without a cap), with what it is expected to cost. */
function fitsBudget(state: RunState, t: TaskState): { ok: true; est?: Estimate } | { ok: false; wait: BudgetWait } {
  const budget = capped(state);
  if (!budget) return { ok: true };
  const one = estimate(state.ledger, budget, t.def);
  // A best-of-N task's round runs all its variants at once: it must fit whole.
  const n = variantCount(t.def);
  const est = n > 1 ? { usd: one.usd * n, tokens: one.tokens * n, basis: `${n} variants, each ${one.basis}` } : one;
  const fit = checkFits(state.ledger, budget, spentOf(state), t.def.id, est);
  return fit.ok ? { ok: true, est } : fit;
}

/** Ready tasks wait for the budget (wait mode): noted, and announced by settle() once nothing else can move. */
function blockOnBudget(state: RunState, wait: BudgetWait): void {
  if (!state.budgetBlocked) state.attentionChanged = true;
  state.budgetBlocked = { ...wait, waiting: state.held.size };
}

/**
 * The budget stops the run (onExceed: stop): nothing new starts, tasks not started are
 * skipped; attempts under way finish and are merged (their work is paid for). The run
 * ends failed, saying so.
 */
function stopOnBudget(state: RunState, wait: BudgetWait, now: string): Effect[] {
  if (state.run.budgetStopped) return [];
  const reason = `stopped by its budget (onExceed: stop): ${wait.message}`;
  state.run = { ...state.run, budgetStopped: reason };
  state.held.clear();
  state.budgetBlocked = undefined;
  const effects: Effect[] = [{ type: "saveRun" }];
  for (const t of state.tasks.values()) if (t.rec.status === "pending") effects.push(...skip(state, t, `not started: the run ${reason}`, now));
  return effects;
}

/** The session a held retry resumes in: the checkpoint it keeps, and the session its last attempt ran in. */
function heldResume(t: TaskState): TaskWork["resume"] {
  if (!t.rec.resumeFrom) return undefined;
  return { fromAttempt: t.rec.attempts, commit: t.rec.resumeFrom, ...(t.rec.sessionId ? { sessionId: t.rec.sessionId } : {}) };
}

/**
 * Publishes the next attempt of a task to the ready queue (after its backoff, for a
 * retry), holding `reserve` (its expected cost) against the run's budget until it ends.
 */
function queue(state: RunState, t: TaskState, now: string, retry = false, announce = true, checkpoint?: string, resume?: TaskWork["resume"], reserved?: Spend): Effect[] {
  if (variantCount(t.def) > 1) return queueVariants(state, t, now, retry, announce, reserved);
  const attempt = t.rec.attempts + 1;
  update(state, t, { status: "queued", attempts: attempt, error: undefined, resumeFrom: undefined });
  reserve(state, t, attempt, reserved);
  const work = workOf(state, t, attempt, now, retry, checkpoint, resume);
  const effects: Effect[] = [{ type: "ready", work }];
  // A first attempt's `queued` record is not written: after a restart, reconcile()
  // derives it from the graph (and the republish is deduplicated). Retries are written,
  // since their attempt number cannot be derived.
  if (attempt > 1) effects.push({ type: "saveTask", taskId: t.def.id });
  if (announce) {
    effects.push({ type: "event", event: { type: "task.queued", runId: state.run.runId, taskId: t.def.id, attempt, at: now, baseCommit: work.baseCommit } });
  }
  return effects;
}

/** The ready message of one attempt of a task. */
function workOf(state: RunState, t: TaskState, attempt: number, now: string, retry: boolean, checkpoint?: string, resume?: TaskWork["resume"]): TaskWork {
  const { needs: _needs, ...task } = t.def;
  const run = state.run;
  const work: TaskWork = {
    type: "task.work",
    runId: run.runId,
    taskId: t.def.id,
    attempt,
    priority: t.def.priority,
    task,
    rank: t.rank,
    notBefore: retry ? Date.parse(now) + retryDelayMs(t.def.retry, attemptKey({ runId: state.run.runId, taskId: t.def.id, attempt }), attempt) : 0,
    placement: t.def.placement ?? state.run.graph.placement ?? { labels: [], requires: [] },
    strategy: state.run.graph.strategy,
    repo: run.repo,
    remote: run.remote,
    // Dependents start from the integration head, which by now holds every dependency.
    baseCommit: checkpoint ?? (t.def.needs.length ? run.integrationCommit : run.baseCommit),
    branch: taskBranch(run.runId, t.def.id),
    inputs: t.def.needs.map((d) => {
      const dep = state.tasks.get(d)!.rec;
      // A best-of-N dependency: its winner's branch (its commit is the winner's too).
      return { taskId: d, status: dep.status, branch: winnerOf(dep)?.branch ?? taskBranch(run.runId, d), commit: dep.commit, summary: dep.summary, costUsd: dep.costUsd, tokens: dep.tokens };
    }),
    readyAt: now,
    submittedAt: run.submittedAt,
    ...(resume ? { resume } : {}),
  };
  // The stage's rate: a start later than the retry's own backoff holds the attempt until its slot.
  const slot = stageSlot(state, t.def, Math.max(work.notBefore, Date.parse(now)));
  if (slot > Date.parse(now)) work.notBefore = Math.max(work.notBefore, slot);
  return work;
}

// ---- best-of-N ----------------------------------------------------------------------

/** The winning variant of a best-of-N task's record, once one was picked. */
const winnerOf = (rec: TaskRecord): VariantRecord | undefined => rec.variants?.find((v) => v.status === "won");

/**
 * Queues a round of a best-of-N task: one attempt per variant, each a real attempt (its
 * own number, so its own claim, msg ids and result), on its own branch. The record is
 * always written (unlike a plain first attempt): which attempt is which variant cannot
 * be derived after a restart once a variant was run again.
 */
function queueVariants(state: RunState, t: TaskState, now: string, retry: boolean, announce: boolean, reserved?: Spend): Effect[] {
  const count = variantCount(t.def);
  const first = t.rec.attempts + 1;
  const agents = variantAgents(t.def);
  const variants: VariantRecord[] = Array.from({ length: count }, (_, i) => ({
    n: i + 1,
    attempt: first + i,
    status: "queued",
    files: [],
    costUsd: 0,
    tokens: 0,
    ...(agents ? { agent: agents[i]! } : {}),
  }));
  update(state, t, {
    status: "queued",
    attempts: first + count - 1,
    error: undefined,
    resumeFrom: undefined,
    variants,
    variantRound: (t.rec.variantRound ?? 0) + 1,
    judgeAttempt: undefined,
    judged: undefined,
    judgeError: undefined,
    judgeEnded: undefined,
  });
  // fitsBudget() checked the whole round; each variant holds its share.
  const share = reserved ? { usd: reserved.usd / count, tokens: reserved.tokens / count } : undefined;
  const effects: Effect[] = [];
  for (const v of variants) effects.push(...queueVariant(state, t, v, now, retry, announce, share));
  effects.push({ type: "saveTask", taskId: t.def.id });
  return effects;
}

/** The ready message of one variant's attempt (`v.attempt`), and its reservation. */
function queueVariant(state: RunState, t: TaskState, v: VariantRecord, now: string, retry: boolean, announce: boolean, reserved?: Spend): Effect[] {
  const count = variantCount(t.def);
  reserve(state, t, v.attempt, reserved, count);
  // A variant starts from the task's base, never from a checkpoint: checkpoints are kept
  // per task, and another variant's would not be this one's work.
  const work = workOf(state, t, v.attempt, now, retry);
  work.branch = variantBranch(state.run.runId, t.def.id, v.n);
  work.variant = { n: v.n, of: count };
  const agents = variantAgents(t.def);
  if (agents) work.task = { ...work.task, agent: agents[v.n - 1]! };
  // Variants of a task with providers start at different ones, so they spread over them
  // when several are healthy (the balancer still falls back along the list).
  const providers = t.def.providers;
  if (providers && providers.length > 1) {
    const k = (v.n - 1) % providers.length;
    work.task = { ...work.task, providers: [...providers.slice(k), ...providers.slice(0, k)] };
  }
  const effects: Effect[] = [{ type: "ready", work }];
  if (announce) effects.push({ type: "event", event: { type: "task.queued", runId: state.run.runId, taskId: t.def.id, attempt: v.attempt, at: now, baseCommit: work.baseCommit } });
  return effects;
}

/**
 * A variant's attempt ended. Its cost counts at once. An attempt that failed for its
 * worker's or its provider's sake (interrupted, lost, a rate limit) runs that variant
 * again as a new attempt, as for any task (the same caps); any other end is the variant's
 * outcome. Once every variant of the round has one, the select rule picks the winner
 * (endRound).
 */
function applyVariantResult(state: RunState, t: TaskState, result: TaskResult, now: string): Effect[] {
  const reported: Spend = { usd: result.costUsd, tokens: result.tokens ?? 0 };
  const count = variantCount(t.def);
  const key = variantLedgerKey(t.def.id, result.attempt);
  if (result.attempt === t.rec.judgeAttempt) return applyJudgeResult(state, t, result, now);
  const v = t.rec.variants?.find((x) => x.attempt === result.attempt);
  if (!v || v.status !== "queued" || t.rec.status !== "queued") {
    // Stale, a duplicate, or a variant still running when its task was cancelled: its cost, once.
    const late = settleAttempt(state.ledger, key, result.attempt, reported);
    return late ? [...charge(state, t, late), ...settle(state, now)] : [];
  }
  const effects: Effect[] = [];
  const cost = settleAttempt(state.ledger, key, result.attempt, reported) ?? reported;
  const lostUnstarted = result.failure?.kind === "interrupted" && result.failure.agentStarted === false;
  effects.push(...charge(state, t, cost, !lostUnstarted));
  const ended = (t.rec.variants ?? []).filter((x) => x.status !== "queued").length;
  const base: Partial<VariantRecord> = {
    workerId: result.workerId,
    startedAt: result.startedAt,
    finishedAt: result.finishedAt,
    costUsd: v.costUsd + cost.usd,
    tokens: v.tokens + cost.tokens,
  };
  let patch: Partial<VariantRecord>;
  if (result.status === "failed") {
    const failure = result.failure ?? { message: "failed", retryable: true, kind: "internal" as const };
    if (failure.kind === "cancelled") {
      setVariant(state, t, v, { ...base, status: "failed", error: failure.message });
      return [...effects, ...cancelTask(state, t, failure.message, now), ...release(state, now, []), ...settle(state, now)];
    }
    const interruption = interruptionRule(t, failure, state.run.graph.maxInterruptions);
    update(state, t, interruption.counts);
    const provider = providerFailureRule(t, failure);
    update(state, t, provider.counts);
    const capMessage = interruption.capMessage ?? provider.capMessage;
    const message = capMessage ? `${failure.message}; ${capMessage}` : failure.message;
    if ((interruption.again || provider.again) && !state.run.halted) {
      // The same variant again, as the task's next attempt.
      const attempt = t.rec.attempts + 1;
      update(state, t, { attempts: attempt });
      const again: VariantRecord = { ...v, ...base, attempt, status: "queued" };
      setVariant(state, t, v, again);
      const queued = queueVariant(state, t, again, now, false, true);
      const work = queued.find((e): e is Extract<Effect, { type: "ready" }> => e.type === "ready")!.work;
      const waitOut = failure.kind === "rate_limit" && !t.def.providers?.length;
      const until = waitOut ? rateLimitedUntil(failure, work.notBefore) : undefined;
      if (until !== undefined) work.notBefore = until;
      effects.push(
        { type: "event", event: failedEvent(state, t, result, message, failure.kind, true, cost, now) },
        ...queued,
        { type: "event", event: { type: "task.retrying", runId: state.run.runId, taskId: t.def.id, attempt, at: now, notBefore: work.notBefore, error: `variant ${v.n} of ${count}: ${message}` } },
        { type: "saveTask", taskId: t.def.id },
      );
      return [...effects, ...settle(state, now)];
    }
    patch = { ...base, status: "failed", error: message, kind: failure.kind, retryable: failure.retryable, order: ended + 1 };
  } else {
    const check = result.variant;
    patch = {
      ...base,
      status: "succeeded",
      branch: result.branch,
      commit: result.commit,
      files: result.files,
      worktree: result.worktree,
      summary: result.summary,
      order: ended + 1,
      ...(check?.ref ? { ref: check.ref } : {}),
      ...(check?.passed !== undefined ? { passed: check.passed } : {}),
      ...(check?.score !== undefined ? { score: check.score } : {}),
      ...(check?.detail ? { detail: check.detail } : {}),
    };
  }
  setVariant(state, t, v, patch);
  if (t.rec.variants!.some((x) => x.status === "queued")) {
    effects.push({ type: "saveTask", taskId: t.def.id });
    return [...effects, ...settle(state, now)];
  }
  return [...effects, ...endRound(state, t, result, now), ...settle(state, now)];
}

/**
 * `select: { judge }`: the round's candidates go to the judge agent, as one more attempt
 * of the task (its own key, claim and result; lost with its worker, it runs again). Its
 * worker gives it each candidate's diff and reports the number its answer ends with.
 */
function queueJudge(state: RunState, t: TaskState, now: string): Effect[] {
  const select = t.def.select!;
  const cands = candidates(t.rec.variants!).sort((a, b) => a.n - b.n);
  const attempt = t.rec.attempts + 1;
  update(state, t, { attempts: attempt, judgeAttempt: attempt, judged: undefined, judgeError: undefined, judgeEnded: undefined });
  reserve(state, t, attempt, undefined, variantCount(t.def));
  const work = workOf(state, t, attempt, now, false);
  const { providers: _p, variants: _v, select: _s, run: _r, model, maxTurns, args, access, ...task } = work.task;
  // The task's settings for its own agent (model, turns, arguments) are not the judge's, unless it is the same CLI.
  const own = select.judge === t.def.agent ? { model, maxTurns, args, access } : {};
  const settings = Object.fromEntries(Object.entries(own).filter(([, v]) => v !== undefined));
  work.task = { ...task, ...settings, agent: select.judge!, prompt: judgePrompt(t.def.prompt, cands.map((v) => v.n), variantCount(t.def)) };
  work.branch = judgeBranch(state.run.runId, t.def.id);
  work.judge = { candidates: cands.map((v) => ({ n: v.n, commit: v.commit! })) };
  return [
    { type: "ready", work },
    { type: "saveTask", taskId: t.def.id },
    { type: "event", event: { type: "task.queued", runId: state.run.runId, taskId: t.def.id, attempt, at: now, baseCommit: work.baseCommit } },
  ];
}

/** What the judge agent is asked. */
export function judgePrompt(prompt: string, ns: readonly number[], of: number): string {
  return (
    `[ado] You are the judge of ${of} attempts (variants) at the task below. The change each made is a diff in the directory named by ` +
    `the ADO_VARIANTS_DIR environment variable: ${ns.map((n) => `${n}.diff`).join(", ")}. Read them and decide which variant does the task best. ` +
    `Do not change any file. End your answer with the number of the best variant alone on its last line.\n\nThe task:\n\n${prompt}`
  );
}

/**
 * The judge's attempt ended: its verdict (or its failure) decides the round. Lost with
 * its worker, interrupted, or stopped by its provider, it runs again like any attempt.
 */
function applyJudgeResult(state: RunState, t: TaskState, result: TaskResult, now: string): Effect[] {
  const reported: Spend = { usd: result.costUsd, tokens: result.tokens ?? 0 };
  const key = variantLedgerKey(t.def.id, result.attempt);
  if (t.rec.status !== "queued" || t.rec.judgeEnded) {
    const late = settleAttempt(state.ledger, key, result.attempt, reported);
    return late ? [...charge(state, t, late), ...settle(state, now)] : [];
  }
  const cost = settleAttempt(state.ledger, key, result.attempt, reported) ?? reported;
  const effects: Effect[] = [...charge(state, t, cost, false)];
  if (result.status === "failed") {
    const failure = result.failure ?? { message: "failed", retryable: true, kind: "internal" as const };
    if (failure.kind === "cancelled") return [...effects, ...cancelTask(state, t, failure.message, now), ...release(state, now, []), ...settle(state, now)];
    const interruption = interruptionRule(t, failure, state.run.graph.maxInterruptions);
    update(state, t, interruption.counts);
    const provider = providerFailureRule(t, failure);
    update(state, t, provider.counts);
    if ((interruption.again || provider.again) && !state.run.halted) {
      const queued = queueJudge(state, t, now);
      const work = queued.find((e): e is Extract<Effect, { type: "ready" }> => e.type === "ready")!.work;
      effects.push(
        { type: "event", event: failedEvent(state, t, result, `the judge: ${failure.message}`, failure.kind, true, cost, now) },
        ...queued,
        { type: "event", event: { type: "task.retrying", runId: state.run.runId, taskId: t.def.id, attempt: work.attempt, at: now, notBefore: work.notBefore, error: `the judge: ${failure.message}` } },
      );
      return [...effects, ...settle(state, now)];
    }
    update(state, t, { judgeEnded: true, judgeError: interruption.capMessage ?? provider.capMessage ?? failure.message });
  } else {
    update(state, t, { judgeEnded: true, judged: result.judged });
  }
  return [...effects, ...endRound(state, t, result, now), ...settle(state, now)];
}

/** Replaces variant `v` of the task's record with `v` patched. */
function setVariant(state: RunState, t: TaskState, v: VariantRecord, patch: Partial<VariantRecord>): void {
  update(state, t, { variants: t.rec.variants!.map((x) => (x === v ? { ...x, ...patch } : x)) });
}

/** A `task.failed` event of one attempt. */
function failedEvent(state: RunState, t: TaskState, result: TaskResult, error: string, kind: NonNullable<TaskResult["failure"]>["kind"], willRetry: boolean, cost: Spend, now: string): AdoEvent {
  return {
    type: "task.failed",
    runId: state.run.runId,
    taskId: t.def.id,
    attempt: result.attempt,
    at: now,
    workerId: result.workerId,
    error,
    kind,
    willRetry,
    outputTail: result.outputTail,
    startedAt: result.startedAt,
    finishedAt: result.finishedAt,
    costUsd: cost.usd,
    tokens: cost.tokens,
  };
}

/**
 * Every variant of the round has ended: the select rule picks the winner, which goes on
 * as the task's one success (merged, its dependents released); the others are kept, not
 * merged. No winner: the round failed, and the task's retry policy counts rounds (a new
 * round after the backoff, else the task fails).
 */
function endRound(state: RunState, t: TaskState, last: TaskResult, now: string): Effect[] {
  const select = t.def.select!;
  const variants = t.rec.variants!;
  const verdict: JudgeVerdict | undefined = t.rec.judgeEnded ? { n: t.rec.judged, error: t.rec.judgeError } : undefined;
  if (needsJudge(select, variants, verdict) && !state.run.halted) {
    if (candidates(variants).every((v) => v.commit)) return queueJudge(state, t, now);
    update(state, t, { judgeEnded: true, judgeError: "the variants left no commits to compare" });
    return endRound(state, t, last, now);
  }
  const pick = selectVariant(select, variants, verdict);
  const run = state.run;
  const effects: Effect[] = [];
  const winner = pick.winner;
  const marked = variants.map((v) => (winner && v.n === winner.n ? { ...v, status: "won" as const } : v.status === "succeeded" ? { ...v, status: "lost" as const } : v));
  update(state, t, { variants: marked });
  effects.push({
    type: "event",
    event: {
      type: "task.selected",
      runId: run.runId,
      taskId: t.def.id,
      attempt: winner?.attempt ?? last.attempt,
      at: now,
      rule: selectRule(select),
      ...(winner ? { winner: winner.n } : {}),
      reason: pick.reason,
      variants: marked.map((v) => ({
        n: v.n,
        attempt: v.attempt,
        status: v.status,
        ...(v.workerId ? { workerId: v.workerId } : {}),
        ...(v.commit ? { commit: v.commit } : {}),
        ...(v.ref ? { ref: v.ref } : {}),
        ...(v.passed !== undefined ? { passed: v.passed } : {}),
        ...(v.score !== undefined ? { score: v.score } : {}),
      })),
    },
  });
  if (!winner) return [...effects, ...roundFailed(state, t, last, pick.reason, now)];
  update(state, t, {
    workerId: winner.workerId,
    startedAt: winner.startedAt,
    finishedAt: winner.finishedAt,
    commit: winner.commit,
    files: winner.files,
    worktree: winner.worktree,
    summary: winner.summary ?? "",
  });
  effects.push({
    type: "event",
    event: {
      type: "task.succeeded",
      runId: run.runId,
      taskId: t.def.id,
      attempt: winner.attempt,
      at: now,
      workerId: winner.workerId ?? last.workerId,
      commit: winner.commit,
      files: winner.files,
      startedAt: winner.startedAt ?? last.startedAt,
      finishedAt: winner.finishedAt ?? last.finishedAt,
      costUsd: winner.costUsd,
      tokens: winner.tokens,
    },
  });
  const hasWork = !!(run.repo && run.baseCommit && winner.commit && winner.files.length > 0);
  const work = { commit: winner.commit!, branch: winner.branch ?? variantBranch(run.runId, t.def.id, winner.n), worktree: winner.worktree, attempt: winner.attempt, files: winner.files };
  const mergeRequest = (releaseOnly: boolean) => mergeRequestOf(state, t, work, releaseOnly);
  if (run.halted) {
    update(state, t, { status: "skipped", error: `finished on ${winner.branch ?? "its branch"} but not merged: ${run.halted}` });
    effects.push({ type: "saveTask", taskId: t.def.id });
  } else if (hasWork) {
    update(state, t, { status: "merging" });
    effects.push({ type: "saveTask", taskId: t.def.id }, mergeRequest(false), ...release(state, now, []));
  } else {
    update(state, t, { status: "succeeded" });
    effects.push({ type: "saveTask", taskId: t.def.id }, ...release(state, now, dependentsOf(state, t.def.id)));
  }
  return effects;
}

/**
 * A round with no winner. Its failure is retryable when some variant's work was there
 * but not good enough (the select command may pass next time) or some attempt failed in
 * a way worth another try; the retry policy's `attempts` counts rounds.
 */
function roundFailed(state: RunState, t: TaskState, last: TaskResult, reason: string, now: string): Effect[] {
  const variants = t.rec.variants!;
  const failures = variants.filter((v) => v.status === "failed");
  const kind = (failures.length === variants.length ? (failures[0]!.kind as NonNullable<TaskResult["failure"]>["kind"] | undefined) : undefined) ?? "exit";
  const retryable = variants.some((v) => v.status !== "failed" || v.retryable !== false);
  const rounds = t.rec.variantRound ?? 1;
  let willRetry = retryable && rounds < t.def.retry.attempts && !state.run.halted && !state.run.budgetStopped;
  let message = `${variantCount(t.def)} variants, round ${rounds}: ${reason}`;
  let fits: ReturnType<typeof fitsBudget> = { ok: true };
  if (willRetry) {
    fits = fitsBudget(state, t);
    if (!fits.ok && state.run.budget?.onExceed === "stop") {
      willRetry = false;
      message = `${message}; not retried: ${fits.wait.message}`;
    }
  }
  const effects: Effect[] = [{ type: "event", event: failedEvent(state, t, last, message, kind, willRetry, NO_SPEND, now) }];
  if (willRetry && !fits.ok) {
    update(state, t, { status: "pending", error: message });
    state.held.add(t.def.id);
    blockOnBudget(state, fits.wait);
    effects.push({ type: "saveTask", taskId: t.def.id });
  } else if (willRetry) {
    const queued = queue(state, t, now, true, true, undefined, undefined, fits.ok ? fits.est : undefined);
    const first = queued.find((e): e is Extract<Effect, { type: "ready" }> => e.type === "ready")!.work;
    effects.push(...queued, { type: "event", event: { type: "task.retrying", runId: state.run.runId, taskId: t.def.id, attempt: first.attempt, at: now, notBefore: first.notBefore, error: message } });
  } else {
    update(state, t, { status: "failed", error: message });
    effects.push({ type: "saveTask", taskId: t.def.id }, ...skipDependents(state, t.def.id, now), ...release(state, now, []));
    if (state.run.graph.failFast) effects.push(...stopRun(state, `task '${t.def.id}' failed and the run is failFast: ${message}`, now, "ado (failFast)"));
    else if (!fits.ok) effects.push(...stopOnBudget(state, fits.wait, now));
  }
  return effects;
}

const TERMINAL: ReadonlySet<TaskStatus> = new Set<TaskStatus>(["succeeded", "failed", "skipped", "cancelled"]);
/** Times a task may be interrupted (its agent started) and still run again, unless the graph or task says otherwise. */
export const MAX_INTERRUPTIONS = 5;

/**
 * How an attempt's failure counts against the task's interruptions: an `interrupted`
 * attempt whose agent had started counts (up to the cap: the task's
 * `retry.maxInterruptions`, else the graph's `maxInterruptions`, else 5); one lost before
 * its agent started (`agentStarted: false`) costs nothing. Other failures are not
 * interruptions. `again`: run the task again for this interruption; `capMessage` says,
 * when the cap stops it, why and how to raise it.
 */
export function interruptionRule(
  t: { def: Pick<TaskState["def"], "id" | "retry">; rec: Pick<TaskState["rec"], "interruptions" | "lostUnstarted"> },
  failure: Pick<NonNullable<TaskResult["failure"]>, "kind" | "agentStarted">,
  graphCap: number | undefined,
): { again: boolean; counts: { interruptions?: number; lostUnstarted?: number }; capMessage?: string } {
  if (failure.kind !== "interrupted") return { again: false, counts: {} };
  if (failure.agentStarted === false) return { again: true, counts: { lostUnstarted: (t.rec.lostUnstarted ?? 0) + 1 } };
  const interruptions = (t.rec.interruptions ?? 0) + 1;
  const cap = t.def.retry.maxInterruptions ?? graphCap ?? MAX_INTERRUPTIONS;
  if (interruptions <= cap) return { again: true, counts: { interruptions } };
  return {
    again: false,
    counts: { interruptions },
    capMessage:
      `task '${t.def.id}' was interrupted ${interruptions} times while its agent ran (its workers stopped or died), over its cap of ${cap}: not run again. ` +
      `Raise the cap with the task's retry.maxInterruptions or the graph's maxInterruptions`,
  };
}
/** Times a task that names providers may fail for its provider's sake and go back for another. */
export const MAX_PROVIDER_FAILURES = 10;

/**
 * How a failure counts for a task that names providers: auth and rate or usage limits
 * are the provider's (its circuit breaker counts them), so the task is queued again at
 * once, without using its retry budget, for the balancer to give it a healthy provider
 * or hold it until one is (up to MAX_PROVIDER_FAILURES times, so a task no provider can
 * serve still ends). Tasks without providers keep their retry policy.
 */
export function providerFailureRule(
  t: { def: Pick<TaskState["def"], "id" | "providers">; rec: Pick<TaskState["rec"], "providerFailures"> },
  failure: Pick<NonNullable<TaskResult["failure"]>, "kind">,
): { again: boolean; counts: { providerFailures?: number }; capMessage?: string } {
  const providers = t.def.providers ?? [];
  // A rate or usage limit says nothing of the task, providers or not: it runs again once
  // the limit resets (the CLI's reset time, see rateLimitedUntil). Auth only moves a task
  // that has another provider to go to.
  if (failure.kind !== "rate_limit" && !(failure.kind === "auth" && providers.length)) return { again: false, counts: {} };
  const providerFailures = (t.rec.providerFailures ?? 0) + 1;
  if (providerFailures <= MAX_PROVIDER_FAILURES) return { again: true, counts: { providerFailures } };
  return {
    again: false,
    counts: { providerFailures },
    capMessage: providers.length
      ? `task '${t.def.id}' failed ${providerFailures} times on its providers (${providers.join(", ")}) for the providers' sake: not run again. Check their credentials and limits (their provider.circuit events say what failed)`
      : `task '${t.def.id}' hit its agent's rate or usage limit ${providerFailures} times: not run again. Check the account's limits, or give the task providers to fall back on`,
  };
}

/**
 * When a rate-limited attempt's next one may start: the reset time its CLI reported, if
 * later than the retry's own backoff (epoch ms), else undefined (the backoff stands).
 */
export function rateLimitedUntil(failure: Pick<NonNullable<TaskResult["failure"]>, "kind" | "retryAt">, notBefore: number): number | undefined {
  return failure.kind === "rate_limit" && failure.retryAt !== undefined && failure.retryAt > notBefore ? failure.retryAt : undefined;
}

/** Past this many tasks, run.completed carries counts only, to stay under NATS max_payload. */
export const SUMMARY_LIMIT = 1_000;

function countBy(all: TaskState[]): Partial<Record<TaskStatus, number>> {
  const counts: Partial<Record<TaskStatus, number>> = {};
  for (const t of all) counts[t.rec.status] = (counts[t.rec.status] ?? 0) + 1;
  return counts;
}

/** A run that can still change: running, or waiting for a person. */
export const isLive = (run: RunRecord) => run.status === "running" || run.status === "needs_attention";

/**
 * After every decision: ends the run once every task is terminal; otherwise moves it
 * into `needs_attention` when nothing can move until a person resolves a merge or
 * raises the budget (nothing queued, running or merging; nothing held back but for the
 * budget), and back to `running` once something can. Each stop is a new round: its event
 * is announced once, and again when another merge joins the ones waiting (or a raise
 * was not enough), so clients following the run see every stop.
 */
function settle(state: RunState, now: string): Effect[] {
  if (!isLive(state.run) || state.run.finalizing) return [];
  if (state.open === 0) return finish(state, now);
  const changed = state.attentionChanged;
  state.attentionChanged = false;
  const budget = state.budgetBlocked;
  const stuck = (state.attention > 0 || !!budget) && state.inFlight === 0 && state.merging === 0 && (state.held.size === 0 || !!budget);
  const runId = state.run.runId;
  if (stuck && (state.run.status === "running" || changed)) {
    const round = state.run.attentionRound + 1;
    state.run = { ...state.run, status: "needs_attention", attentionRound: round, budgetWait: budget };
    const tasks = [...state.tasks.values()]
      .filter((t) => t.rec.status === "needs_attention")
      .map((t) => ({ taskId: t.def.id, hitlId: t.rec.hitlId ?? taskKey(runId, t.def.id), message: t.rec.error ?? "" }));
    return [
      { type: "saveRun" },
      { type: "event", event: { type: "run.needs_attention", runId, at: now, round, tasks, ...(budget ? { budget } : {}) }, msgID: msgIds.runAttention(runId, round) },
    ];
  }
  if (!stuck && state.run.status === "needs_attention") {
    state.run = { ...state.run, status: "running", budgetWait: undefined };
    const round = state.run.attentionRound;
    return [{ type: "saveRun" }, { type: "event", event: { type: "run.continued", runId, at: now, round }, msgID: msgIds.runContinued(runId, round) }];
  }
  return [];
}

function mergeIntoEffect(state: RunState): Effect {
  const run = state.run;
  return {
    type: "mergeInto",
    request: { type: "merge.into", runId: run.runId, repo: run.repo!, integrationBranch: run.integrationBranch!, baseCommit: run.baseCommit!, into: run.merge!.into!, updateCheckout: run.merge!.updateCheckout ?? false },
  };
}

/**
 * Ends the run: every task is terminal. A successful run with `merge.into` first asks
 * the merge coordinator to update that branch, and ends when it answers (whether it
 * updated it or refused: a refusal is reported, not a failure of the run's work).
 */
function finish(state: RunState, now: string): Effect[] {
  const all = [...state.tasks.values()];
  const ok = all.every((t) => t.rec.status === "succeeded");
  if (ok && state.run.merge?.into && state.run.repo && !state.run.mergeInto) {
    state.run = { ...state.run, status: "running", finalizing: true };
    return [{ type: "saveRun" }, mergeIntoEffect(state)];
  }
  const cancelled = state.run.cancelled;
  const stopped = state.run.halted ?? state.run.budgetStopped;
  const firstError = stopped ?? all.find((t) => t.rec.status === "failed")?.rec.error;
  const failedIds = all.filter((t) => t.rec.status === "failed").map((t) => `'${t.def.id}'`);
  const skippedAtMerge = all.filter((t) => t.rec.status === "skipped" && t.rec.hitlRound > 0).map((t) => `'${t.def.id}'`);
  const status = ok ? "succeeded" : cancelled ? "cancelled" : "failed";
  const error = ok
    ? undefined
    : (stopped ??
      (failedIds.length
        ? `task ${failedIds.join(", ")} failed: ${firstError ?? "see its output"}`
        : skippedAtMerge.length
          ? `task ${skippedAtMerge.join(", ")} was not merged (skipped at the merge); its dependents were skipped`
          : "not every task succeeded"));
  state.run = { ...state.run, status, finishedAt: now, error };
  return [
    { type: "saveRun" },
    {
      type: "event",
      event: {
        type: "run.completed",
        runId: state.run.runId,
        at: now,
        status,
        integrationBranch: state.run.integrationBranch,
        integrationCommit: state.run.integrationCommit,
        error: state.run.error,
        counts: countBy(all),
        tasks: all.length <= SUMMARY_LIMIT ? all.map(summary) : [],
        ...(state.run.mergeInto ? { mergeInto: state.run.mergeInto } : {}),
        costUsd: state.run.costUsd,
        tokens: state.run.tokens,
      },
    },
  ];
}

export function summary(t: TaskState): TaskSummary {
  return {
    id: t.def.id,
    status: t.rec.status,
    attempts: t.rec.attempts,
    startedAt: t.rec.startedAt,
    finishedAt: t.rec.finishedAt,
    workerId: t.rec.workerId,
    commit: t.rec.commit,
    error: t.rec.error,
    ...(t.rec.costUsd > 0 ? { costUsd: t.rec.costUsd } : {}),
    ...(t.rec.tokens > 0 ? { tokens: t.rec.tokens } : {}),
  };
}
