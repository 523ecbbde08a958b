/**
 * The adapters by agent name, and the CLI agents a worker offers (phase 2 adds them to
 * the built-in shell and noop agents when it wires the config in).
 */
import type { AgentsConfig, CliAdapter } from "./adapter.js";
import type { CliAgentName } from "./agent-names.js";
import { aider } from "./aider.js";
import { claude } from "./claude.js";
import { CliAgent } from "./cli-agent.js";
import { codex } from "./codex.js";
import { cursor } from "./cursor.js";
import { gemini } from "./gemini.js";
import { mergePrices, type PriceTable } from "./prices.js";

/** Every agent CLI adapter, by the name a task's `agent:` gives. */
export const ADAPTERS: Readonly<Record<CliAgentName, CliAdapter>> = { claude, codex, gemini, cursor, aider };

/** The price table in force: config `prices` over the defaults (see mergePrices). */
export function priceTable(overrides: PriceTable = {}): PriceTable {
  return mergePrices(overrides);
}

/** One CliAgent per adapter, with its `agents.<name>` config and the price table. */
export function cliAgents(config: AgentsConfig = {}, prices?: PriceTable): Map<string, CliAgent> {
  const table = priceTable(prices);
  return new Map(
    Object.values(ADAPTERS).map((a) => {
      const c = config[a.name];
      return [a.name, new CliAgent(a, { ...(c ? { config: c } : {}), prices: table })];
    }),
  );
}
