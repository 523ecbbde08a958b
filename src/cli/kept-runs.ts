import { mkdir, readdir, readFile, rename, rm, rmdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

/**
 * JetStream stores of `ado run`s with the embedded stack, kept next to the repository
 * they belong to so a run that stopped in `needs_attention` can be resumed later by
 * `ado hitl` (which starts an embedded stack on the same store).
 *
 * Layout: `<git common dir>/ado/runs/<runId>/nats` (the store) and `.../run.json` (who
 * uses it, and in what state). `ado run` uses this store from its start rather than
 * moving a temporary one at the end: a move from /tmp is a copy across file systems of
 * a store that can be large, and an `ado run` killed before it could move anything
 * would lose exactly the state the person needs. The git common dir is shared by every
 * worktree of the repository (so `ado hitl` finds the run from any of them), git never
 * looks inside `ado/`, and the user's checkout (HEAD, index, files) is not touched.
 * The directory is deleted as soon as the run ends; it stays while the run waits for a
 * person, after Ctrl-C stopped `ado run`, and when `ado run` was killed (its marker then
 * names a process that is gone). `ado runs list|resume|remove` work on them.
 */

/** What a kept run's `run.json` says. */
export interface KeptMarker {
  runId: string;
  /** The prefix the run used: its streams and buckets are named with it. */
  prefix: string;
  repo: string;
  /**
   * `running`: an `ado run` (or `ado hitl`, `ado runs resume`) uses it now, if `pid`
   * lives (if not, it was killed: the run is orphaned); `needs_attention`: waiting for
   * `ado hitl`; `interrupted`: stopped by Ctrl-C before its end, to be resumed.
   */
  state: "running" | "needs_attention" | "interrupted";
  /** The process of the `ado` client that runs (or last ran) the embedded stack. */
  pid: number;
  updatedAt: string;
}

export interface KeptRun {
  runId: string;
  /** `<git common dir>/ado/runs/<runId>`: deleted as a whole when the run is over. */
  dir: string;
  /** The JetStream store inside it. */
  storeDir: string;
  marker?: KeptMarker;
}

export const keptRunsDir = (gitCommonDir: string) => join(gitCommonDir, "ado", "runs");

function keptRun(gitCommonDir: string, runId: string, marker?: KeptMarker): KeptRun {
  const dir = join(keptRunsDir(gitCommonDir), runId);
  return { runId, dir, storeDir: join(dir, "nats"), ...(marker ? { marker } : {}) };
}

/** Creates a run's store directory and marks it in use by this process. */
export async function createKeptRun(gitCommonDir: string, runId: string, prefix: string, repo: string): Promise<KeptRun> {
  const run = keptRun(gitCommonDir, runId);
  await mkdir(run.storeDir, { recursive: true });
  await markKeptRun(run, { runId, prefix, repo, state: "running", pid: process.pid, updatedAt: new Date().toISOString() });
  return run;
}

/** Writes the marker (atomically enough for one writer: a temp file, then rename). */
export async function markKeptRun(run: KeptRun, marker: KeptMarker): Promise<void> {
  const path = join(run.dir, "run.json");
  await writeFile(`${path}.tmp`, JSON.stringify(marker, null, 2) + "\n");
  await rename(`${path}.tmp`, path);
  run.marker = marker;
}

/** Deletes a finished run's store, and the `ado/runs` directories if nothing else is left in them. */
export async function dropKeptRun(run: KeptRun): Promise<void> {
  await rm(run.dir, { recursive: true, force: true });
  for (let dir = dirname(run.dir), i = 0; i < 2; dir = dirname(dir), i++) {
    // Only empty directories: whatever else lives under ado/ stays.
    if (!(await rmdir(dir).then(() => true, () => false))) break;
  }
}

/** Every kept run of the repository whose git common dir is given, oldest first. */
export async function findKeptRuns(gitCommonDir: string): Promise<KeptRun[]> {
  const root = keptRunsDir(gitCommonDir);
  const names = await readdir(root).catch(() => [] as string[]);
  const out: KeptRun[] = [];
  for (const name of names.sort()) {
    let marker: KeptMarker | undefined;
    try {
      marker = JSON.parse(await readFile(join(root, name, "run.json"), "utf8")) as KeptMarker;
    } catch {
      marker = undefined; // no marker: a store being created, or left half-made; still listed
    }
    out.push(keptRun(gitCommonDir, name, marker));
  }
  return out;
}

/** The process using a kept run now, if it is alive and is not this one. */
export function keptRunOwner(run: KeptRun): number | undefined {
  const m = run.marker;
  if (!m || m.state !== "running" || m.pid === process.pid) return undefined;
  try {
    process.kill(m.pid, 0);
    return m.pid;
  } catch {
    return undefined;
  }
}

/** A kept run's situation, as `ado runs list` shows it. */
export type KeptRunState = "running" | "orphaned" | "interrupted" | "needs_attention" | "unknown";

/**
 * `running` (its process lives), `orphaned` (marked running by a process that is gone:
 * killed), `interrupted`, `needs_attention`, or `unknown` (no readable marker).
 */
export function keptRunState(run: KeptRun): KeptRunState {
  const m = run.marker;
  if (!m) return "unknown";
  if (m.state === "running") return keptRunOwner(run) !== undefined || m.pid === process.pid ? "running" : "orphaned";
  return m.state;
}

/** One kept run of the repository, by id. */
export async function findKeptRun(gitCommonDir: string, runId: string): Promise<KeptRun | undefined> {
  return (await findKeptRuns(gitCommonDir)).find((k) => k.runId === runId);
}
