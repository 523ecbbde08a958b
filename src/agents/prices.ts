/**
 * What tokens cost, for the CLIs that report tokens but no cost (Codex, Gemini, Cursor)
 * and for a running estimate before a CLI's own figure arrives. The table is config
 * (`prices:`, merged over the defaults below); a model it does not know costs "unknown",
 * never a guessed number.
 */
import { z } from "zod";

/** USD per million tokens. `cachedInput`: prompt tokens read from a cache; `cacheWrite`: written to one. */
export const ModelPriceSchema = z
  .object({
    input: z.number().min(0),
    output: z.number().min(0),
    cachedInput: z.number().min(0).optional(),
    cacheWrite: z.number().min(0).optional(),
  })
  .strict();
export type ModelPrice = z.output<typeof ModelPriceSchema>;

/** Config `prices`: model name (as the CLI or the config names it) -> price. */
export const PriceTableSchema = z.record(z.string().min(1), ModelPriceSchema);
export type PriceTable = z.output<typeof PriceTableSchema>;

/**
 * Default prices, USD per million tokens, for common models.
 *
 * ASSUMPTIONS, not measured: these are the providers' public list prices (standard tier,
 * prompts up to 200k tokens, no batch discount) as the author knew them in 2025; they
 * were NOT re-checked against the providers' price pages when written (2026-12-05).
 * Override them in config `prices:` for real budgets. Cursor bills its plans its own way;
 * for its runs the underlying model's list price is only an estimate.
 */
export const DEFAULT_PRICES: PriceTable = {
  // Anthropic (cache reads 0.1x input, 5-minute cache writes 1.25x input).
  "claude-opus-4-5": { input: 5, output: 25, cachedInput: 0.5, cacheWrite: 6.25 },
  "claude-opus-4-1": { input: 15, output: 75, cachedInput: 1.5, cacheWrite: 18.75 },
  "claude-opus-4": { input: 15, output: 75, cachedInput: 1.5, cacheWrite: 18.75 },
  "claude-sonnet-4-5": { input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75 },
  "claude-sonnet-4": { input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75 },
  "claude-3-7-sonnet": { input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75 },
  "claude-haiku-4-5": { input: 1, output: 5, cachedInput: 0.1, cacheWrite: 1.25 },
  "claude-3-5-haiku": { input: 0.8, output: 4, cachedInput: 0.08, cacheWrite: 1 },
  // OpenAI (cached input 0.1x for the GPT-5 family, 0.25x for the o-series and GPT-4.1).
  "gpt-5": { input: 1.25, output: 10, cachedInput: 0.125 },
  "gpt-5-codex": { input: 1.25, output: 10, cachedInput: 0.125 },
  "gpt-5.1": { input: 1.25, output: 10, cachedInput: 0.125 },
  "gpt-5.1-codex": { input: 1.25, output: 10, cachedInput: 0.125 },
  "gpt-5-mini": { input: 0.25, output: 2, cachedInput: 0.025 },
  "gpt-5.1-codex-mini": { input: 0.25, output: 2, cachedInput: 0.025 },
  "gpt-5-nano": { input: 0.05, output: 0.4, cachedInput: 0.005 },
  "gpt-4.1": { input: 2, output: 8, cachedInput: 0.5 },
  o3: { input: 2, output: 8, cachedInput: 0.5 },
  "o4-mini": { input: 1.1, output: 4.4, cachedInput: 0.275 },
  // Google (prompts up to 200k tokens; cached input is the context-caching price).
  "gemini-2.5-pro": { input: 1.25, output: 10, cachedInput: 0.125 },
  "gemini-2.5-flash": { input: 0.3, output: 2.5, cachedInput: 0.03 },
  "gemini-2.5-flash-lite": { input: 0.1, output: 0.4, cachedInput: 0.01 },
};

/**
 * Other spellings of the same models: Cursor's display names ("Claude 4 Sonnet"),
 * short names, and dated snapshot ids are reduced to the table's keys.
 */
const ALIASES: Record<string, string> = {
  "claude-4-sonnet": "claude-sonnet-4",
  "claude-4-5-sonnet": "claude-sonnet-4-5",
  "claude-4-opus": "claude-opus-4",
  "claude-4-1-opus": "claude-opus-4-1",
  "claude-4-5-opus": "claude-opus-4-5",
  "claude-4-5-haiku": "claude-haiku-4-5",
  "sonnet-4": "claude-sonnet-4",
  "sonnet-4-5": "claude-sonnet-4-5",
  "opus-4-1": "claude-opus-4-1",
  "opus-4-5": "claude-opus-4-5",
  sonnet: "claude-sonnet-4-5",
  opus: "claude-opus-4-5",
  haiku: "claude-haiku-4-5",
};

/**
 * A model name reduced for lookup: lower case, a provider prefix dropped, every run of
 * other characters as one `-` (so `gpt-5.1` and `GPT 5.1` meet), a trailing snapshot
 * date or `-latest` dropped.
 */
export function normalizeModel(model: string): string {
  return model
    .trim()
    .toLowerCase()
    .replace(/^(anthropic|openai|google|gemini|models)\//, "")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/-(\d{8}|\d{4}-\d{2}-\d{2}|latest|preview)$/, "")
    .replace(/^-+|-+$/g, "");
}

/**
 * The price table in force: config `prices` over the defaults. A configured model
 * replaces the default of the same model under any spelling (`GPT-5` replaces `gpt-5`).
 */
export function mergePrices(overrides: PriceTable = {}, defaults: PriceTable = DEFAULT_PRICES): PriceTable {
  const replaced = new Set(Object.keys(overrides).map(normalizeModel));
  const kept = Object.entries(defaults).filter(([k]) => !replaced.has(normalizeModel(k)));
  return { ...Object.fromEntries(kept), ...overrides };
}

/** The price of `model`: the table's entry of that exact name, else of its normalized name or alias, else undefined. */
export function priceOf(model: string | undefined, table: PriceTable = DEFAULT_PRICES): ModelPrice | undefined {
  if (!model) return undefined;
  if (table[model]) return table[model];
  const n = normalizeModel(model);
  const key = ALIASES[n] ?? n;
  const normalized = normalizedTable(table);
  return normalized.get(key) ?? normalized.get(n);
}

/** Each table's keys normalized once: a parser prices every usage event it makes. */
const NORMALIZED = new WeakMap<PriceTable, Map<string, ModelPrice>>();
function normalizedTable(table: PriceTable): Map<string, ModelPrice> {
  let m = NORMALIZED.get(table);
  if (!m) {
    m = new Map(Object.entries(table).map(([k, v]) => [normalizeModel(k), v]));
    NORMALIZED.set(table, m);
  }
  return m;
}

/** Tokens of one model. `input` counts every prompt token; `cached` and `cacheWrite` are among them. */
export interface TokenCounts {
  input: number;
  output: number;
  cached: number;
  cacheWrite: number;
}

export const NO_TOKENS: TokenCounts = { input: 0, output: 0, cached: 0, cacheWrite: 0 };

export function addTokens(a: TokenCounts, b: TokenCounts): TokenCounts {
  return { input: a.input + b.input, output: a.output + b.output, cached: a.cached + b.cached, cacheWrite: a.cacheWrite + b.cacheWrite };
}

/**
 * USD for `t` at `price`. Cache reads without a cache price, and cache writes without
 * a write price, are charged as plain input (the dearer reading: a budget errs high).
 */
export function costOf(t: TokenCounts, price: ModelPrice): number {
  const cachedPrice = price.cachedInput ?? price.input;
  const writePrice = price.cacheWrite ?? price.input;
  const plain = Math.max(0, t.input - t.cached - t.cacheWrite);
  return (plain * price.input + t.cached * cachedPrice + t.cacheWrite * writePrice + t.output * price.output) / 1_000_000;
}
