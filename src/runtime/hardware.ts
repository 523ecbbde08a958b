/**
 * Hardware-aware slots (config `slots: auto`): how many agents this host can run at
 * once, from its cores, its free memory at a per-agent estimate (config
 * `agentMemoryMb`) and its current load. `autoSlots` decides (pure); `hostFacts` reads
 * the host.
 */
import { availableParallelism, freemem, loadavg, totalmem } from "node:os";

/** What `autoSlots` needs to know of a host. */
export interface HostFacts {
  cores: number;
  totalMemBytes: number;
  freeMemBytes: number;
  /** The 1-minute load average (runnable processes; 0 where the OS has none, e.g. Windows). */
  load1: number;
}

/**
 * Memory one agent is taken to need when the config does not say (MB). ASSUMPTION, not
 * measured here: an agent CLI (a Node or Python process with its model client), its
 * tools and a git worktree's build; set `agentMemoryMb` from what your agents use.
 */
export const AGENT_MEMORY_MB_DEFAULT = 1536;

/** This host's facts now. */
export function hostFacts(): HostFacts {
  return { cores: availableParallelism(), totalMemBytes: totalmem(), freeMemBytes: freemem(), load1: loadavg()[0] ?? 0 };
}

/**
 * Slots per worker for `workers` workers on a host: the least of its idle cores (cores
 * less the load already there, so a busy host takes fewer) and the agents its free
 * memory holds, shared among the workers; never less than 1 (a worker with no slot
 * would hold its place and run nothing). `why` says what decided, for `ado doctor` and
 * the worker's start line.
 */
export function autoSlots(h: HostFacts, o: { agentMemoryMb: number; workers: number }): { slots: number; why: string } {
  const idleCores = Math.max(0, Math.floor(h.cores - h.load1 + 0.5));
  const byMemory = Math.floor(h.freeMemBytes / (o.agentMemoryMb * 1024 * 1024));
  const total = Math.min(idleCores, byMemory);
  const workers = Math.max(1, o.workers);
  const slots = Math.max(1, Math.floor(total / workers));
  const gb = (b: number) => `${(b / 1024 ** 3).toFixed(1)} GB`;
  const limit = idleCores <= byMemory ? "idle cores" : "free memory";
  const why =
    `${h.cores} ${h.cores === 1 ? "core" : "cores"} at load ${h.load1.toFixed(1)} (${idleCores} idle), ${gb(h.freeMemBytes)} free of ${gb(h.totalMemBytes)} ` +
    `at ${o.agentMemoryMb} MB per agent (${byMemory}): ${total} ${total === 1 ? "agent" : "agents"} by ${limit}` +
    (workers > 1 ? ` over ${workers} workers` : "") +
    `, ${slots} ${slots === 1 ? "slot" : "slots"} per worker${total < workers ? " (at least 1)" : ""}`;
  return { slots, why };
}
