/**
 * Scratch worktrees for the merge coordinator: detached checkouts under
 * `<scratchDir>/scratch/` where a regenerate command, a resolver agent or a validation
 * runs, and which are removed when the work is done, whether it succeeded, threw or
 * timed out. They never touch the user's checkout: git writes only the new directory
 * and the worktree's own admin files under `.git/worktrees/`.
 *
 * Within this process, add and remove run one at a time per repository (like the
 * WorktreeManager's, whose lock is private to it), and lock errors from other git
 * processes are retried. A scratch directory is named after its host and process, so
 * one left by a process that died (SIGKILL, power loss) is swept by the next one.
 */
import { mkdir, readdir, realpath, rm } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import { KeyedMutex } from "../runtime/mutex.js";
import { GitCommandError } from "./errors.js";
import { git, identityOptions, runGit } from "./exec.js";
import { gitCommonDir } from "./plumbing.js";
import { Backoff, retry } from "../runtime/retry.js";

/**
 * Options for every git command run in a scratch worktree: the user's hooks must not run
 * (a post-checkout hook would run on every scratch checkout) and rerere must neither
 * resolve from nor write to the user's rr-cache.
 */
export const SCRATCH_GIT_OPTIONS = ["-c", "core.hooksPath=/dev/null", "-c", "rerere.enabled=false"] as const;

const MAX_LOCK_ATTEMPTS = 6;
const locks = new KeyedMutex();
let counter = 0;
/** Host part of scratch names; dashes are the separator, so they are replaced. */
const HOST = hostname().replace(/[^A-Za-z0-9.]/g, "_");

/** A worktree made for one step; `remove()` is idempotent and never throws. */
export interface ScratchWorktree {
  path: string;
  remove(): Promise<void>;
}

/**
 * Adds a detached worktree at `commit` under `<scratchDir>/<sub>/`.
 * @param name the directory name; default a unique `<host>-<pid>-<n>-<random>`
 */
export async function addScratchWorktree(
  repo: string,
  scratchDir: string,
  commit: string,
  opts: { sub?: string; name?: string; branch?: string } = {},
): Promise<ScratchWorktree> {
  const parent = path.join(path.resolve(scratchDir), opts.sub ?? "scratch");
  await mkdir(parent, { recursive: true });
  const dir = path.join(await realpath(parent), opts.name ?? `${HOST}-${process.pid}-${++counter}-${Math.random().toString(36).slice(2, 8)}`);
  const common = await gitCommonDir(repo);
  if (opts.sub === undefined) await sweepStale(repo, common, path.dirname(dir));
  const where = opts.branch === undefined ? ["--detach", dir, commit] : ["-b", opts.branch, dir, commit];
  await locks.run(common, () =>
    retryOnLock(
      () => git(repo, [...SCRATCH_GIT_OPTIONS, "worktree", "add", "--quiet", ...where]),
      () => forceRemove(repo, dir),
    ),
  );
  let removed: Promise<void> | undefined;
  return { path: dir, remove: () => (removed ??= locks.run(common, () => forceRemove(repo, dir))) };
}

/**
 * A plain temp directory among the scratch worktrees (temp indexes, merge-file inputs,
 * the resolver's conflicts file), so that one left by a dead process is swept likewise.
 */
export async function addScratchTempDir(scratchDir: string): Promise<{ path: string; remove(): Promise<void> }> {
  const parent = path.join(path.resolve(scratchDir), "scratch");
  await mkdir(parent, { recursive: true });
  const dir = path.join(await realpath(parent), `${HOST}-${process.pid}-${++counter}-${Math.random().toString(36).slice(2, 8)}-tmp`);
  await mkdir(dir);
  let removed: Promise<void> | undefined;
  return { path: dir, remove: () => (removed ??= rm(dir, { recursive: true, force: true }).catch(() => undefined)) };
}

/** Removes the worktree at `dir` made by addScratchWorktree (any sub), even dirty; never throws. */
export async function removeScratchWorktree(repo: string, dir: string): Promise<void> {
  const common = await gitCommonDir(repo);
  await locks.run(common, () => forceRemove(repo, dir));
}

/** Runs `fn` in a fresh detached worktree at `commit`, removing the worktree afterwards in every case. */
export async function withScratchWorktree<T>(
  repo: string,
  scratchDir: string,
  commit: string,
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const wt = await addScratchWorktree(repo, scratchDir, commit);
  try {
    return await fn(wt.path);
  } finally {
    await wt.remove();
  }
}

/**
 * In the worktree `dir` (at `ours`), starts a merge of `theirs` and stops before
 * committing: conflict markers are written and MERGE_HEAD is set, as a user would see
 * it after `git merge`. Returns the paths left unmerged.
 */
export async function startMerge(dir: string, theirs: string, opts: { allowUnrelated?: boolean } = {}): Promise<string[]> {
  const identity = await identityOptions(dir);
  const unrelated = opts.allowUnrelated ? ["--allow-unrelated-histories"] : [];
  await runGit(
    dir,
    [...SCRATCH_GIT_OPTIONS, ...identity, "merge", "--no-ff", "--no-commit", "--no-edit", ...unrelated, theirs],
    [0, 1],
  );
  return unmergedPaths(dir);
}

/** Paths with conflict stages in the worktree's index. */
export async function unmergedPaths(dir: string): Promise<string[]> {
  const out = await git(dir, ["ls-files", "-u", "-z"]);
  const paths = new Set<string>();
  for (const entry of out.split("\0")) {
    const tab = entry.indexOf("\t");
    if (tab >= 0) paths.add(entry.slice(tab + 1));
  }
  return [...paths];
}

/**
 * Removes a worktree directory and its registration; a locked or dirty worktree too
 * (`--force --force`), since what is in a scratch worktree is never the only copy.
 * Falls back to deleting the directory and pruning when git cannot remove it.
 */
async function forceRemove(repo: string, dir: string): Promise<void> {
  try {
    await retryOnLock(() => git(repo, ["worktree", "remove", "--force", "--force", dir]));
    return;
  } catch {
    // Not registered (a half-made add), or git refused: remove by hand below.
  }
  await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  await runGit(repo, ["worktree", "prune"], [0, 1, 128]).catch(() => undefined);
}

/**
 * Removes scratch worktrees left under `parent` by processes of this host that no
 * longer exist. A live process's are left alone; so are other hosts' (the pid means
 * nothing here).
 */
async function sweepStale(repo: string, common: string, parent: string): Promise<void> {
  const names = await readdir(parent).catch(() => [] as string[]);
  const stale = names.filter((name) => {
    const [host, pid] = name.split("-");
    return host === HOST && pid !== undefined && Number(pid) !== process.pid && !isAlive(Number(pid));
  });
  if (stale.length === 0) return;
  await locks.run(common, async () => {
    for (const name of stale) await forceRemove(repo, path.join(parent, name));
  });
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return true; // not ours to judge
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function retryOnLock<T>(op: () => Promise<T>, undo?: () => Promise<void>): Promise<T> {
  return retry(op, {
    attempts: MAX_LOCK_ATTEMPTS,
    backoff: Backoff.gitLock,
    retryIf: (err) => err instanceof GitCommandError && err.retryable,
    onRetry: () => undo?.(),
  });
}
