/**
 * `ado doctor`: what this host can run. Every agent CLI is probed the way a worker does
 * at start (binary found through config `agents.<name>.bin` or PATH, answering
 * `--version`), and, when found, its login is checked as far as that can be told
 * offline. A worker started here offers exactly the agents listed as available.
 */
import { builtinAgents, diagnoseAgents, type AgentDiagnosis } from "../agents/index.js";
import { describeSlots } from "../runtime/config.js";
import { autoSlots, hostFacts } from "../runtime/hardware.js";
import { configFrom, type CommonFlags } from "./common.js";

export interface DoctorFlags extends CommonFlags {
  json?: boolean;
}

/** One line per agent: name, state, and what to do when it is not usable. */
export function formatDiagnosis(builtin: string[], agents: AgentDiagnosis[]): string {
  const width = Math.max(...[...builtin, ...agents.map((a) => a.name)].map((n) => n.length));
  const pad = (n: string) => n.padEnd(width);
  const lines = [`Agents this host can run (a worker started here offers the available ones):`];
  for (const b of builtin) lines.push(`  ${pad(b)}  available  built in`);
  for (const a of agents) {
    if (!a.available) {
      lines.push(`  ${pad(a.name)}  missing    ${a.reason}`);
      continue;
    }
    lines.push(`  ${pad(a.name)}  available  ${a.version ?? "(no version printed)"} at ${a.path}`);
    const login = a.login!;
    lines.push(`  ${pad("")}             login (access ${login.access}): ${login.state}: ${login.detail}`);
  }
  return lines.join("\n");
}

export async function doctorCommand(flags: DoctorFlags): Promise<number> {
  const { config } = await configFrom(flags);
  const builtin = [...builtinAgents().keys()];
  const agents = await diagnoseAgents(config.agents);
  // The slots the config gives (what set them, and auto's reasons where it decided), and what `slots: auto` gives one worker on this host now.
  const facts = hostFacts();
  const auto = autoSlots(facts, { agentMemoryMb: config.agentMemoryMb, workers: 1 });
  const hardware = {
    ...facts,
    agentMemoryMb: config.agentMemoryMb,
    autoSlots: auto.slots,
    why: auto.why,
    slots: config.slots,
    slotsAuto: config.slotsAuto !== undefined,
    slotsFrom: config.slotsFrom,
    workers: config.workers,
    ...(config.slotsAuto !== undefined ? { slotsWhy: config.slotsAuto } : {}),
    slotsLine: describeSlots(config),
  };
  if (flags.json) {
    process.stdout.write(JSON.stringify({ builtin, agents, hardware }, null, 2) + "\n");
  } else {
    process.stdout.write(formatDiagnosis(builtin, agents) + "\n");
    process.stdout.write(`Hardware: ${describeSlots(config)}\n`);
    process.stdout.write(`  slots: auto gives ${auto.slots} per worker here for one worker: ${auto.why}\n`);
  }
  return 0;
}
