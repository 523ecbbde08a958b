/**
 * The API's refusals, pure: given what the records say and the request, either the
 * refusal (an ApiError with its code and a sentence saying what to do) or nothing. The
 * actor (api.ts) reads the records, asks these, and writes only when they allow it.
 */
import { ApiError } from "../../runtime/api.js";
import type { CapChange } from "../../runtime/budget.js";
import { formatTokens, formatUsd } from "../../runtime/budget.js";
import { GraphError } from "../../runtime/errors.js";
import { checkAgents, validateGraph, type Graph } from "../../runtime/graph.js";
import { hitlTransition, mayRequest } from "../../runtime/hitl-state.js";
import type { ControlAction, HitlChoice, HitlRecord, RunRecord, TaskStatus } from "../../runtime/messages.js";
import { isLive, type RunStatusView, type Target } from "../../runtime/records.js";
import type { PolicyOverride } from "../../runtime/scaling.js";

const TASK_DONE: readonly TaskStatus[] = ["succeeded", "failed", "skipped", "cancelled"];

/** A cancel, pause or resume of an unknown or ended run or task. */
export function controlRefusal(view: RunStatusView | undefined, target: Target, action: ControlAction): ApiError | undefined {
  if (!view) return new ApiError("not_found", `no run '${target.runId}': list runs with runs.list (ado parallel status --all)`);
  const { run } = view;
  if (!isLive(run)) return new ApiError("conflict", `run ${run.runId} has already ended (${run.status}): nothing to ${action} (ado status ${run.runId})`);
  if (target.taskId === undefined) return undefined;
  const task = view.tasks.find((t) => t.id === target.taskId);
  if (!task) return new ApiError("not_found", `run '${run.runId}' has no task '${target.taskId}'`);
  if (TASK_DONE.includes(task.status)) return new ApiError("conflict", `task ${task.id} of run ${run.runId} has already ended (${task.status}): nothing to ${action}`);
  return undefined;
}

/** A budget change the run cannot take. A raise never lowers a cap (a smaller figure is a typo more often than not). */
export function budgetRefusal(run: RunRecord | undefined, runId: string, change: { usd?: CapChange; tokens?: CapChange }): ApiError | undefined {
  if (!change.usd && !change.tokens) return new ApiError("bad_request", "budget.raise: say how much: usd and/or tokens, each {set: n} (a new cap) or {add: n}");
  if (!run) return new ApiError("not_found", `no run '${runId}': list runs with runs.list (ado parallel status --all)`);
  if (!isLive(run)) return new ApiError("conflict", `run ${runId} has already ended (${run.status}): its budget cannot change any more`);
  if (run.budgetStopped) return new ApiError("conflict", `run ${runId} was stopped by its budget (onExceed: stop) and does not start anything new: ${run.budgetStopped}`);
  const lower = (c: CapChange | undefined, current: number | undefined, what: string, format: (n: number) => string, example: string) =>
    c && "set" in c && current !== undefined && c.set <= current ? new ApiError("bad_request", `the run's ${what} cap is ${format(current)} already: give a larger one, or raise it by an amount (${example})`) : undefined;
  return (
    lower(change.usd, run.budget?.maxCostUsd, "USD", formatUsd, `+${Math.max(1, Math.ceil((run.budget?.maxCostUsd ?? 0) / 2))}`) ??
    lower(change.tokens, run.budget?.maxTokens, "token", formatTokens, "+500k")
  );
}

/** What a resolution asks. */
export interface ResolveAsk {
  id: string;
  choice: HitlChoice;
  round?: number;
  resolver?: string;
  commit?: string;
}

/** A person's choice the record cannot take now. `waiting`: whether its task still waits (run live, task needs attention). */
export function resolveRefusal(record: HitlRecord | undefined, waiting: boolean, ask: ResolveAsk): ApiError | undefined {
  if (!record) return new ApiError("not_found", `no merge of '${ask.id}' waits for a person: see hitl.list (ado hitl list)`);
  if (!waiting) return new ApiError("conflict", `${ask.id} does not wait for a person any more (${record.state}${record.choice ? `: ${record.choice}` : ""}); see hitl.show (ado hitl show ${ask.id})`);
  if (ask.round !== undefined && ask.round !== record.round) {
    return new ApiError("conflict", `${ask.id} is at round ${record.round} now, not ${ask.round}: someone acted on it meanwhile; look again (ado hitl show ${ask.id})`);
  }
  if (ask.choice === "manual" && !ask.commit) return new ApiError("bad_request", "choice 'manual' needs 'commit': the resolved commit (ado hitl resolve --manual, then --continue)");
  if (ask.choice !== "manual" && ask.commit) return new ApiError("bad_request", `'commit' goes with choice 'manual' only, not '${ask.choice}'`);
  if (ask.resolver !== undefined && ask.choice !== "agent") return new ApiError("bad_request", "'resolver' goes with choice 'agent'");
  const refusal = mayRequest(record, ask.choice);
  if (refusal) return new ApiError("conflict", refusal.message);
  if (ask.choice === "agent" && !ask.resolver && !record.settings.resolver) {
    return new ApiError("bad_request", "the run has no resolver configured: pass one as 'resolver' (it runs in a worktree holding the conflict; ADO_CONFLICTS_FILE describes it)");
  }
  return undefined;
}

/** A pool as configured: its bounds. */
export interface PoolBounds {
  name: string;
  min: number;
  max: number;
}

/**
 * The live policy a `workers.scale` request sets, or its refusal. `autoscale` adds to
 * what was set live before by autoscale (a new max keeps an earlier min); `scale`
 * replaces it.
 */
export function scaleDecision(
  ask: { pool: string; source: PolicyOverride["source"]; policy: PolicyOverride["policy"]; by: string; at: string },
  known: { configured: readonly PoolBounds[]; scaler: readonly string[] },
  previous: PolicyOverride | undefined,
): { record: PolicyOverride } | { refusal: ApiError } {
  const names = new Set([...known.configured.map((p) => p.name), ...known.scaler]);
  if (!names.has(ask.pool)) {
    return { refusal: new ApiError("not_found", `there is no pool '${ask.pool}'${names.size ? `: the pools are ${[...names].join(", ")}` : ": no pool is configured (add scaler.pools to ado.config.yaml)"}`) };
  }
  const merged = ask.source === "autoscale" && previous?.source === "autoscale" ? { ...previous.policy, ...ask.policy } : ask.policy;
  const base = known.configured.find((p) => p.name === ask.pool);
  const min = merged.min ?? base?.min ?? 0;
  const max = merged.max ?? base?.max ?? min;
  if (min > max) return { refusal: new ApiError("bad_request", `min ${min} is above max ${max}${merged.max === undefined ? " (the pool's configured max): give max too" : ""}`) };
  return { record: { pool: ask.pool, policy: merged, source: ask.source, by: ask.by, at: ask.at } };
}

/** What a `hitl.manual` request asks. */
export interface ManualAsk {
  id: string;
  round: number;
  action: "prepare" | "reopen";
  manual?: NonNullable<HitlRecord["manual"]>;
  revision?: number;
  by: string;
}

/**
 * The record a `--manual` step leaves (hitl-state.ts decides the move), or its refusal:
 * a record that moved on since the person read it (another round, another revision) is
 * a conflict, as is one whose task no longer waits.
 */
export function manualDecision(found: { record: HitlRecord; revision: number } | undefined, waiting: boolean, ask: ManualAsk, at: string): { record: HitlRecord } | { refusal: ApiError } {
  const refuse = (code: "not_found" | "conflict" | "bad_request", message: string) => ({ refusal: new ApiError(code, message) });
  if (!found) return refuse("not_found", `no merge of '${ask.id}' waits for a person: see hitl.list (ado hitl list)`);
  const { record, revision } = found;
  if (ask.action === "prepare" && !ask.manual) return refuse("bad_request", "hitl.manual: 'prepare' needs 'manual': the worktree, branch and host holding the conflict");
  if (ask.action === "reopen" && ask.manual) return refuse("bad_request", "hitl.manual: 'manual' goes with 'prepare' only");
  if (ask.revision !== undefined && ask.revision !== revision) {
    return refuse("conflict", `${ask.id} changed since it was read (revision ${ask.revision}, now ${revision}): someone acted on it meanwhile; look again (ado hitl show ${ask.id})`);
  }
  if (ask.round !== record.round) return refuse("conflict", `${ask.id} is at round ${record.round} now, not ${ask.round}: look again (ado hitl show ${ask.id})`);
  if (ask.action === "prepare" && !waiting) return refuse("conflict", `${ask.id} does not wait for a person any more (${record.state}); see hitl.show (ado hitl show ${ask.id})`);
  const t = hitlTransition(record, ask.action === "prepare" ? { type: "prepare_manual", at, by: ask.by, manual: ask.manual! } : { type: "reopen", at });
  return t.ok ? { record: t.record } : refuse("conflict", t.refusal.message);
}

/** What a `runs.submit` request carries that the checks look at. */
export interface SubmitAsk {
  graph: Graph;
  repo?: string;
  baseCommit?: string;
  remote?: string;
}

/**
 * The checks `ado run` makes on a graph before anything starts (task ids, needs,
 * cycles, stages, variants, agents), and what a submission needs beside it: a
 * repository and its base commit for every agent but noop. The graph as validated, or
 * the refusal saying what is wrong.
 */
export function submitDecision(ask: SubmitAsk, agents: readonly string[]): { graph: Graph } | { refusal: ApiError } {
  let graph: Graph;
  try {
    graph = validateGraph(ask.graph);
    checkAgents(graph, agents);
  } catch (err) {
    if (err instanceof GraphError) return { refusal: new ApiError("bad_request", `runs.submit: invalid graph: ${err.message}`) };
    throw err;
  }
  const needsRepo = graph.tasks.filter((t) => t.agent !== "noop");
  if (needsRepo.length && ask.repo === undefined) {
    return { refusal: new ApiError("bad_request", `runs.submit: task '${needsRepo[0]!.id}' (agent ${needsRepo[0]!.agent}) works in a repository: give 'repo' (its path on the workers' hosts) and 'baseCommit'`) };
  }
  if (ask.repo !== undefined && ask.baseCommit === undefined) return { refusal: new ApiError("bad_request", "runs.submit: 'repo' needs 'baseCommit': the full id of the commit the run starts from") };
  if (ask.remote !== undefined && ask.repo === undefined) return { refusal: new ApiError("bad_request", "runs.submit: 'remote' needs 'repo' and 'baseCommit' (pushed to the remote before the submission)") };
  return { graph };
}
