/**
 * Processes a dead worker left running on this host: its agents and what they started,
 * should its reaper (src/agents/reaper.ts) not have stopped them. Every
 * agent, and everything it starts, carries the worker's id in its environment
 * (`ADO_WORKER_ID`), which no other worker shares; that is how they are found, in
 * /proc (Linux; elsewhere nothing is found and this does nothing). This is a second
 * line of defence: the reaper should already have done it.
 */
import { readdir, readFile } from "node:fs/promises";
import { AgentEnv } from "../../runtime/names.js";

/**
 * Stops (CONT, then KILL) every process of this host whose environment names
 * `workerId` as its worker.
 * @returns the pids it killed.
 */
export async function killLeftovers(workerId: string, procDir = "/proc"): Promise<number[]> {
  const entries = await readdir(procDir).catch(() => [] as string[]);
  const needle = `\0${AgentEnv.workerId}=${workerId}\0`;
  const killed: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    // Variables are NUL-terminated; a leading NUL makes the first one match too.
    const env = await readFile(`${procDir}/${entry}/environ`, "latin1").catch(() => "");
    if (!`\0${env}`.includes(needle)) continue;
    try {
      process.kill(pid, "SIGCONT"); // a paused agent
      process.kill(pid, "SIGKILL");
      killed.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  return killed;
}

/** Whether a process of this host exists (a zombie, or a reused pid, counts: the safe side). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  return true;
}
