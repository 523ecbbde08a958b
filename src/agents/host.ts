/**
 * The agents this host offers: the built-in ones (shell, noop) and every agent CLI whose
 * binary is found and answers `--version`, with the versions it printed. Found once when
 * workers start (probes are cached), so a worker advertises only what it can run and the
 * balancer never sends it a task whose CLI is missing.
 */
import type { AgentsConfig } from "./adapter.js";
import { builtinAgents } from "./builtin.js";
import { cliAgents } from "./catalog.js";
import type { CliAgent } from "./cli-agent.js";
import type { PriceTable } from "./prices.js";
import { checkLogin, type AgentProbe, type LoginCheck, probeAgents } from "./probe.js";
import type { Agent } from "./types.js";

/** What a host can run. */
export interface HostAgents {
  /** By name: the built-in agents and the agent CLIs found. */
  agents: Map<string, Agent>;
  /** Agent CLIs found, by name: the first line `--version` printed. */
  versions: Record<string, string>;
  /** Every agent CLI probed, found or not (why not in `reason`). */
  probes: AgentProbe[];
}

/** Probes the agent CLIs (config `agents`, prices `prices`) and returns what this host offers. */
export async function hostAgents(config: AgentsConfig = {}, prices?: PriceTable, opts: { timeoutMs?: number } = {}): Promise<HostAgents> {
  const clis = cliAgents(config, prices);
  const probes = await probeAgents(clis.values(), opts);
  const agents: Map<string, Agent> = builtinAgents();
  const versions: Record<string, string> = {};
  for (const p of probes) {
    if (!p.available) continue;
    agents.set(p.name, clis.get(p.name)!);
    if (p.version) versions[p.name] = p.version;
  }
  return { agents, versions, probes };
}

/** One agent CLI as `ado doctor` reports it: found or not (and why), and the offline login check. */
export interface AgentDiagnosis extends AgentProbe {
  /** Absent when the binary was not found (no point asking). */
  login?: LoginCheck;
}

/** Probes every agent CLI and checks its login offline, for `ado doctor`. */
export async function diagnoseAgents(config: AgentsConfig = {}, opts: { timeoutMs?: number } = {}): Promise<AgentDiagnosis[]> {
  const clis = cliAgents(config);
  const probes = await probeAgents(clis.values(), opts);
  return probes.map((p) => (p.available ? { ...p, login: checkLogin(clis.get(p.name) as CliAgent) } : p));
}
