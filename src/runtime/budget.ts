/**
 * A run's budget as it travels and is stored: its caps (dollars, tokens), what happens
 * when the next task would pass them, and what a task with no cost history is expected
 * to cost. The submitter resolves it once (config `budget:`, the graph's `maxCost` /
 * `maxTokens`, `ado run --max-cost ...`: later layers win), so every scheduler replica
 * applies the run's own budget whatever its local config says. The scheduler's
 * decisions are src/actors/scheduler/budget.ts; this module is only the vocabulary the
 * client, the CLI and the scheduler share.
 */
import { z } from "zod";

/** What a run does when its next task would pass a cap: wait for a person (`ado budget raise`), or stop. */
export const BUDGET_ON_EXCEED = ["wait", "stop"] as const;
export type BudgetOnExceed = (typeof BUDGET_ON_EXCEED)[number];

const usd = z.number().finite().positive("must be more than 0 (USD)");
const tokens = z.number().int().positive("must be a whole number of tokens, more than 0");

/**
 * A run's effective budget (RunRecord.budget, SubmitRun.budget). Tokens are what agents
 * report as prompt (input, cache reads included) plus output tokens: what a
 * subscription run that reports no dollars is capped on.
 */
export const RunBudgetSchema = z
  .object({
    /** Cap on the run's spend in USD, every attempt counted (failed, interrupted, cancelled ones too). */
    maxCostUsd: usd.optional(),
    /** Cap on the run's tokens (input + output), for runs whose agents report no dollars. */
    maxTokens: tokens.optional(),
    onExceed: z.enum(BUDGET_ON_EXCEED).default("wait"),
    /** Reserved for a task whose agent has no cost history (in this run or past ones): USD. 0: nothing. */
    defaultTaskCostUsd: z.number().min(0).default(0),
    /** The same in tokens. */
    defaultTaskTokens: z.number().int().min(0).default(0),
    /** Times the caps were changed (`ado budget raise`): names each change's event. */
    changes: z.number().int().min(0).default(0),
  })
  .strict();
export type RunBudget = z.output<typeof RunBudgetSchema>;

/** Config `budget:`: defaults for the runs this machine submits. */
export const BudgetConfigSchema = z
  .object({
    /** A cap for every run submitted from here that sets none (USD). */
    maxCost: usd.optional(),
    maxTokens: tokens.optional(),
    onExceed: z.enum(BUDGET_ON_EXCEED).default("wait"),
    /** USD reserved for a task with no cost history; 0 reserves nothing (the task starts while spend is under the cap). */
    defaultTaskCost: z.number().min(0).default(0),
    defaultTaskTokens: z.number().int().min(0).default(0),
  })
  .strict();
export type BudgetConfig = z.output<typeof BudgetConfigSchema>;
export const BUDGET_CONFIG_DEFAULT: BudgetConfig = { onExceed: "wait", defaultTaskCost: 0, defaultTaskTokens: 0 };

/** One layer of budget settings (the graph's, the command line's): every field optional. */
export interface BudgetLayer {
  maxCost?: number;
  maxTokens?: number;
  onExceed?: BudgetOnExceed;
}

/**
 * The run's budget from the submitter's config, the graph and the flags (later layers
 * win); undefined when no layer sets a cap (a run without a budget reserves nothing,
 * though its cost is still counted).
 */
export function resolveBudget(config: BudgetConfig = BUDGET_CONFIG_DEFAULT, ...layers: (BudgetLayer | undefined)[]): RunBudget | undefined {
  let maxCostUsd = config.maxCost;
  let maxTokens = config.maxTokens;
  let onExceed = config.onExceed;
  for (const l of layers) {
    if (!l) continue;
    if (l.maxCost !== undefined) maxCostUsd = l.maxCost;
    if (l.maxTokens !== undefined) maxTokens = l.maxTokens;
    if (l.onExceed !== undefined) onExceed = l.onExceed;
  }
  if (maxCostUsd === undefined && maxTokens === undefined) return undefined;
  return {
    ...(maxCostUsd !== undefined ? { maxCostUsd } : {}),
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    onExceed,
    defaultTaskCostUsd: config.defaultTaskCost,
    defaultTaskTokens: config.defaultTaskTokens,
    changes: 0,
  };
}

/** A new cap as a person types it: `20` (set it to 20), `+5` (raise it by 5). */
export type CapChange = { set: number } | { add: number };

/**
 * Parses `20`, `$20`, `+5`, `+$5` (dollars) or `200000`, `+50k`, `1.5m` (tokens).
 * Throws an Error that says what is allowed.
 */
export function parseCapChange(text: string, unit: "usd" | "tokens"): CapChange {
  const m = /^\s*(\+)?\s*(\$)?\s*(\d+(?:\.\d+)?)\s*([kKmM])?\s*$/.exec(text);
  const what = unit === "usd" ? "an amount in USD such as 20 (the new cap) or +5 (raise it by 5)" : "a number of tokens such as 2000000, 500k, 2m (the new cap) or +500k";
  if (!m || (unit === "usd" && m[4]) || (unit === "tokens" && m[2])) throw new Error(`'${text}' is not ${what}`);
  const scale = m[4] ? (m[4].toLowerCase() === "k" ? 1_000 : 1_000_000) : 1;
  const n = Number(m[3]) * scale;
  if (!(n > 0)) throw new Error(`'${text}' must be more than 0: ${what}`);
  if (unit === "tokens" && !Number.isInteger(n)) throw new Error(`'${text}' is not a whole number of tokens`);
  return m[1] ? { add: n } : { set: n };
}

/** `$1.23` (cents; below a cent, `$0.0042`). */
export function formatUsd(v: number): string {
  if (v > 0 && v < 0.01) return `$${v.toPrecision(2)}`;
  return `$${v.toFixed(2)}`;
}

/** `950`, `12.3k`, `4.56M` tokens. */
export function formatTokens(n: number): string {
  if (n < 1_000) return String(Math.round(n));
  if (n < 1_000_000) return `${(n / 1_000).toFixed(n < 10_000 ? 2 : 1).replace(/\.?0+$/, "")}k`;
  return `${(n / 1_000_000).toFixed(2).replace(/\.?0+$/, "")}M`;
}
