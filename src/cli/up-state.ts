import { mkdir, readdir, readFile, rename, rm, rmdir, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

/**
 * How other commands on this machine find a running stack: `ado up` leaves a state file
 * per prefix in the user's state directory; an `ado run` with its own embedded stack
 * leaves one per run in its repository (`<git common dir>/ado/stacks/<run>.json`), so
 * `ado status`, `ado cancel` and `ado attach` from another terminal in the same
 * repository reach it while it runs. Each file names the process that serves the
 * stack; a file whose process is gone is stale and ignored (and removed when seen).
 */
export interface UpState {
  url: string;
  pid: number;
  prefix: string;
  startedAt: string;
  /** `up` (the default, for files written before there were others), or the stack of one `ado run`. */
  kind?: "up" | "run";
  /** For `kind: run`: the run it serves. */
  runId?: string;
  /** The JetStream store it uses, when it is a directory that outlives the stack. */
  storeDir?: string;
  /** Its server's per-role seeds (readable by this user only); absent: it takes connections without credentials. */
  roleDir?: string;
}

export function upStatePath(prefix: string, env = process.env): string {
  const base = env.XDG_STATE_HOME || join(env.HOME || homedir(), ".local", "state");
  return join(base, "ado", `up-${prefix}.json`);
}

/** Writes a state file whole (a temp file, then rename): a reader never sees half of one. */
async function writeState(path: string, state: UpState): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.${process.pid}.tmp`, JSON.stringify(state, null, 2) + "\n");
  await rename(`${path}.${process.pid}.tmp`, path);
}

export async function writeUpState(state: UpState): Promise<string> {
  const path = upStatePath(state.prefix);
  await writeState(path, { ...state, kind: "up" });
  return path;
}

/** Removes the `ado up` state file, only if it is this process's (a second `ado up` must not orphan the first). */
export async function removeUpState(prefix: string): Promise<void> {
  const path = upStatePath(prefix);
  const state = await readState(path);
  if (!state || state.pid === process.pid) await rm(path, { force: true });
}

/** Whether process `pid` exists (signal 0 checks without sending anything). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, it is someone else's.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function readState(path: string): Promise<UpState | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as UpState;
  } catch {
    return undefined;
  }
}

/** The running `ado up` stack for this prefix, if its process is still alive. */
export async function readUpState(prefix: string): Promise<UpState | undefined> {
  const state = await readState(upStatePath(prefix));
  return state && isAlive(state.pid) ? state : undefined;
}

// ------------------------------------------------------------ stacks of `ado run`

const runStacksDir = (gitCommonDir: string) => join(gitCommonDir, "ado", "stacks");

/** A published run stack: `remove()` takes it back (idempotent). */
export interface PublishedStack {
  path: string;
  remove(): Promise<void>;
}

/** Publishes the embedded stack of an `ado run` in its repository, until `remove()`. */
export async function publishRunStack(gitCommonDir: string, state: UpState & { runId: string }): Promise<PublishedStack> {
  const path = join(runStacksDir(gitCommonDir), `${state.runId}.json`);
  await writeState(path, { ...state, kind: "run" });
  let removed: Promise<void> | undefined;
  return {
    path,
    remove: () =>
      (removed ??= (async () => {
        await rm(path, { force: true });
        // Only empty directories go: ado/ also holds kept runs.
        for (let dir = dirname(path), i = 0; i < 2; dir = dirname(dir), i++) {
          if (!(await rmdir(dir).then(() => true, () => false))) break;
        }
      })()),
  };
}

/** The stacks of `ado run`s live in this repository now, oldest first. Files of dead processes are removed. */
export async function findRunStacks(gitCommonDir: string, prefix?: string): Promise<UpState[]> {
  const dir = runStacksDir(gitCommonDir);
  const out: UpState[] = [];
  for (const name of (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith(".json")).sort()) {
    const state = await readState(join(dir, name));
    if (!state || !isAlive(state.pid)) {
      await rm(join(dir, name), { force: true });
      continue;
    }
    if (prefix === undefined || state.prefix === prefix) out.push(state);
  }
  return out;
}
