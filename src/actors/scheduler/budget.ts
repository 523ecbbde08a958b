import type { TaskDef } from "../../runtime/graph.js";
import { formatTokens, formatUsd, type RunBudget } from "../../runtime/budget.js";
import type { AdoEvent, BudgetWait, CostHistory, TaskRecord } from "../../runtime/messages.js";

/**
 * The scheduler's budget arithmetic, pure (run-state.ts calls it; no I/O here).
 *
 * A run's spend is what its finished attempts cost (the sum of its task records) plus,
 * for each attempt under way, the larger of what was reserved for it when it was queued
 * and what it has reported so far (`agent.usage` events, which are cumulative). A task
 * may start when that, plus what it is expected to cost, stays within every cap the run
 * has (dollars, tokens). What a task is expected to cost comes from, in order: this
 * run's finished attempts of the same agent and prompt size, then of the same agent;
 * past runs' (KV `costs`), the same way; the run's configured default; and never more
 * than the task's own `maxCost` (which is reserved whole when nothing else is known).
 */

export interface Spend {
  usd: number;
  tokens: number;
}

export const NO_SPEND: Spend = { usd: 0, tokens: 0 };

/** An attempt under way: what was reserved for it when queued, and what it reported so far. */
export interface AttemptSpend {
  attempt: number;
  reserved: Spend;
  live: Spend;
}

/** Finished attempts: how many, and what they cost together. */
export interface Samples extends Spend {
  n: number;
}

/** What a task is expected to cost, and where the figure comes from (said to the person). */
export interface Estimate extends Spend {
  basis: string;
}

/** The budget's part of a run's in-memory state (not stored: rebuilt from the records). */
export interface Ledger {
  /** Attempts under way, by task; also a cancelled one's until its result (its cost still counts). */
  attempts: Map<string, AttemptSpend>;
  /** This run's finished attempts, by `agent` and `agent/sizeClass`: its own cost history. */
  samples: Map<string, Samples>;
  /** Past runs' cost history (KV `costs`, key `agent.sizeClass`), as the scheduler holds it. */
  history?: ReadonlyMap<string, CostHistory>;
}

/** Most attempts a history entry stands for: older runs fade as newer ones are folded in. */
export const HISTORY_MAX_SAMPLES = 50;

/** A cap is passed only by more than this: sums of cents in floating point are not exact. */
const EPSILON = 1e-9;

/** Prompt size classes: tasks with longer prompts tend to cost more. */
const SIZE_CLASSES: readonly [string, number][] = [
  ["xs", 1_024],
  ["s", 4_096],
  ["m", 16_384],
  ["l", 65_536],
];

/** The size class of a prompt (characters): xs < 1 Ki, s < 4 Ki, m < 16 Ki, l < 64 Ki, else xl. */
export function sizeClass(prompt: string): string {
  for (const [name, below] of SIZE_CLASSES) if (prompt.length < below) return name;
  return "xl";
}

/** The KV `costs` key of an agent and size class, or undefined for an agent name a key cannot hold. */
export function historyKey(agent: string, cls: string): string | undefined {
  return /^[A-Za-z0-9_-]+$/.test(agent) ? `${agent}.${cls}` : undefined;
}

const add = (a: Spend, b: Spend): Spend => ({ usd: a.usd + b.usd, tokens: a.tokens + b.tokens });
const max = (a: Spend, b: Spend): Spend => ({ usd: Math.max(a.usd, b.usd), tokens: Math.max(a.tokens, b.tokens) });

/** Adds a finished attempt's cost to the run's own history. */
export function addSample(ledger: Ledger, def: Pick<TaskDef, "agent" | "prompt">, cost: Spend, n = 1): void {
  for (const key of [def.agent, `${def.agent}/${sizeClass(def.prompt)}`]) {
    const s = ledger.samples.get(key) ?? { n: 0, usd: 0, tokens: 0 };
    ledger.samples.set(key, { n: s.n + n, usd: s.usd + cost.usd, tokens: s.tokens + cost.tokens });
  }
}

/**
 * A stored task's finished attempts as samples (after a load): every attempt but the one
 * under way and those lost before their agent started.
 */
export function samplesOfRecord(rec: Pick<TaskRecord, "attempts" | "status" | "lostUnstarted" | "costUsd" | "tokens">): Samples | undefined {
  const n = rec.attempts - (rec.status === "queued" ? 1 : 0) - (rec.lostUnstarted ?? 0);
  return n > 0 ? { n, usd: rec.costUsd, tokens: rec.tokens } : undefined;
}

/** Past runs' history of an agent: one size class, or all its classes together. */
function pastOf(history: ReadonlyMap<string, CostHistory> | undefined, agent: string, cls?: string): Samples | undefined {
  if (!history) return undefined;
  if (cls !== undefined) {
    const key = historyKey(agent, cls);
    const h = key ? history.get(key) : undefined;
    return h ? { n: h.samples, usd: h.costUsd * h.samples, tokens: h.tokens * h.samples } : undefined;
  }
  let all: Samples | undefined;
  for (const h of history.values()) {
    if (h.agent !== agent) continue;
    all = { n: (all?.n ?? 0) + h.samples, usd: (all?.usd ?? 0) + h.costUsd * h.samples, tokens: (all?.tokens ?? 0) + h.tokens * h.samples };
  }
  return all;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** What `def` is expected to cost per attempt under `budget` (see the module comment). */
export function estimate(ledger: Ledger, budget: RunBudget, def: Pick<TaskDef, "agent" | "prompt" | "maxCost">): Estimate {
  const cls = sizeClass(def.prompt);
  const found: [Samples | undefined, string][] = [
    [ledger.samples.get(`${def.agent}/${cls}`), `this run's attempts of agent '${def.agent}' with prompts of this size`],
    [ledger.samples.get(def.agent), `this run's attempts of agent '${def.agent}'`],
    [pastOf(ledger.history, def.agent, cls), `past runs' attempts of agent '${def.agent}' with prompts of this size`],
    [pastOf(ledger.history, def.agent), `past runs' attempts of agent '${def.agent}'`],
  ];
  let usd: number | undefined;
  let tokens: number | undefined;
  let basis = "";
  for (const [s, what] of found) {
    if (!s || s.n <= 0) continue;
    usd = s.usd / s.n;
    tokens = s.tokens / s.n;
    basis = `the mean of ${plural(s.n, "attempt")}: ${what}`;
    break;
  }
  if (usd === undefined) {
    const def0 = budget.defaultTaskCostUsd > 0 || budget.defaultTaskTokens > 0;
    usd = budget.defaultTaskCostUsd > 0 ? budget.defaultTaskCostUsd : undefined;
    tokens = budget.defaultTaskTokens > 0 ? budget.defaultTaskTokens : undefined;
    basis = def0 ? "no cost history: the configured default (budget.defaultTaskCost/defaultTaskTokens)" : "no cost history and no default (budget.defaultTaskCost): nothing reserved";
  }
  if (def.maxCost !== undefined && (usd === undefined || usd > def.maxCost)) {
    usd = def.maxCost;
    basis = `its own maxCost (${basis})`;
  }
  return { usd: usd ?? 0, tokens: Math.ceil(tokens ?? 0), basis };
}

/** What the run has spent (finished attempts) and holds for attempts under way. */
export function committed(ledger: Ledger, spent: Spend): { spent: Spend; held: Spend; running: number } {
  let held = NO_SPEND;
  for (const a of ledger.attempts.values()) held = add(held, max(a.reserved, a.live));
  return { spent, held, running: ledger.attempts.size };
}

/** Whether the run has a cap at all. */
export const hasCap = (budget: RunBudget | undefined): budget is RunBudget => budget?.maxCostUsd !== undefined || budget?.maxTokens !== undefined;

/**
 * Whether a task expected to cost `next` may start: spend, plus what attempts under way
 * hold, plus `next`, within every cap, and something left under each. Otherwise why,
 * for the person (BudgetWait; `waiting` is filled in by the caller).
 */
export function checkFits(ledger: Ledger, budget: RunBudget, spent: Spend, taskId: string, next: Estimate): { ok: true } | { ok: false; wait: BudgetWait } {
  const c = committed(ledger, spent);
  const total = add(c.spent, c.held);
  const over: string[] = [];
  const held = c.running ? ` and ${formatUsd(c.held.usd)} held for ${plural(c.running, "attempt")} under way` : "";
  if (budget.maxCostUsd !== undefined && (total.usd + next.usd > budget.maxCostUsd + EPSILON || total.usd >= budget.maxCostUsd - EPSILON)) {
    over.push(`${formatUsd(c.spent.usd)} spent${held} of its ${formatUsd(budget.maxCostUsd)} (maxCost), and task '${taskId}' is expected to cost ${formatUsd(next.usd)}`);
  }
  const heldTokens = c.running ? ` and ${formatTokens(c.held.tokens)} held for ${plural(c.running, "attempt")} under way` : "";
  if (budget.maxTokens !== undefined && (total.tokens + next.tokens > budget.maxTokens || total.tokens >= budget.maxTokens)) {
    over.push(`${formatTokens(c.spent.tokens)} tokens spent${heldTokens} of its ${formatTokens(budget.maxTokens)} (maxTokens), and task '${taskId}' is expected to use ${formatTokens(next.tokens)}`);
  }
  if (!over.length) return { ok: true };
  return {
    ok: false,
    wait: {
      message: `the run's budget would be passed: ${over.join("; ")} (${next.basis})`,
      spentUsd: c.spent.usd,
      tokens: c.spent.tokens,
      reservedUsd: c.held.usd,
      reservedTokens: c.held.tokens,
      ...(budget.maxCostUsd !== undefined ? { maxCostUsd: budget.maxCostUsd } : {}),
      ...(budget.maxTokens !== undefined ? { maxTokens: budget.maxTokens } : {}),
      next: { taskId, costUsd: next.usd, tokens: next.tokens, basis: next.basis },
      waiting: 1,
    },
  };
}

/**
 * An `agent.usage` event of an attempt under way: what it has spent so far (events are
 * cumulative; one arriving late never lowers the figure). False when it is not about
 * the attempt the run waits for (an older attempt, a task that is not running).
 */
export function noteUsage(ledger: Ledger, e: Extract<AdoEvent, { type: "agent.usage" }>): boolean {
  const a = ledger.attempts.get(e.taskId) ?? ledger.attempts.get(variantLedgerKey(e.taskId, e.attempt));
  if (!a || a.attempt !== e.attempt) return false;
  a.live = max(a.live, { usd: e.costUsd, tokens: e.inputTokens + e.outputTokens });
  return true;
}

/**
 * The ledger key of one variant attempt of a best-of-N task: its task has several
 * attempts under way at once, each holding its own reservation. Task ids hold no `#`.
 */
export const variantLedgerKey = (taskId: string, attempt: number): string => `${taskId}#${attempt}`;

/**
 * The cost of an attempt that ended: what its result says, or what it reported while it
 * ran if more (an attempt lost with its worker reports nothing in its result). Drops the
 * attempt from those under way. Undefined when the attempt is not the one under way.
 */
export function settleAttempt(ledger: Ledger, taskId: string, attempt: number, reported: Spend): Spend | undefined {
  const a = ledger.attempts.get(taskId);
  if (!a || a.attempt !== attempt) return undefined;
  ledger.attempts.delete(taskId);
  return max(reported, a.live);
}

/**
 * Past runs' history with this run's attempts folded in: a running mean per attempt,
 * standing for at most HISTORY_MAX_SAMPLES attempts, so what tasks cost lately counts
 * most.
 */
export function foldHistory(prev: CostHistory | undefined, agent: string, cls: string, run: Samples, now: string): CostHistory {
  const prevN = prev?.samples ?? 0;
  const n = prevN + run.n;
  return {
    agent,
    sizeClass: cls,
    samples: Math.min(n, HISTORY_MAX_SAMPLES),
    costUsd: ((prev?.costUsd ?? 0) * prevN + run.usd) / n,
    tokens: ((prev?.tokens ?? 0) * prevN + run.tokens) / n,
    updatedAt: now,
  };
}

/** This run's samples per `agent.sizeClass` key, for the history (agents a key cannot name are left out). */
export function historyUpdates(ledger: Ledger): { key: string; agent: string; cls: string; run: Samples }[] {
  const out: { key: string; agent: string; cls: string; run: Samples }[] = [];
  for (const [k, s] of ledger.samples) {
    const slash = k.indexOf("/");
    if (slash < 0 || s.n <= 0 || (s.usd <= 0 && s.tokens <= 0)) continue;
    const agent = k.slice(0, slash);
    const cls = k.slice(slash + 1);
    const key = historyKey(agent, cls);
    if (key) out.push({ key, agent, cls, run: s });
  }
  return out;
}
