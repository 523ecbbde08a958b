import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

/** What `ado up` leaves behind so other commands on this machine find its stack. */
export interface UpState {
  url: string;
  pid: number;
  prefix: string;
  startedAt: string;
}

export function upStatePath(prefix: string, env = process.env): string {
  const base = env.XDG_STATE_HOME || join(env.HOME || homedir(), ".local", "state");
  return join(base, "ado", `up-${prefix}.json`);
}

export async function writeUpState(state: UpState): Promise<string> {
  const path = upStatePath(state.prefix);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, JSON.stringify(state, null, 2) + "\n");
  return path;
}

export async function removeUpState(prefix: string): Promise<void> {
  await rm(upStatePath(prefix), { force: true });
}

/** The running `ado up` stack for this prefix, if its process is still alive. */
export async function readUpState(prefix: string): Promise<UpState | undefined> {
  try {
    const state = JSON.parse(await readFile(upStatePath(prefix), "utf8")) as UpState;
    process.kill(state.pid, 0); // throws if the process is gone
    return state;
  } catch {
    return undefined;
  }
}
