/**
 * Work on hosts that share no disk with the user's checkout. Such hosts reach the
 * repository through a git remote (any URL git can fetch from and push to). Each run
 * has its own ref namespace on that remote:
 *
 *   refs/ado/runs/<runId>/base      the commit the run starts from (pushed by the submitter)
 *   refs/heads/ado/<runId>/<task>   each task's branch (pushed by the worker that ran it)
 *   refs/heads/ado/<runId>/integration   the merged result (pushed by the merge coordinator)
 *
 * A worker or merge coordinator keeps one bare clone per remote URL and fetches just the
 * run's refs when it needs a commit it lacks. Bare, because nothing is ever checked out
 * in it: tasks get worktrees of it, merges need none.
 */
import { createHash } from "node:crypto";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { AdoError } from "../runtime/errors.js";
import { silentLogger } from "../runtime/logger.js";
import { KeyedMutex } from "../runtime/mutex.js";
import { GitCommandError } from "./errors.js";
import { git, runGit } from "./exec.js";
import { runBaseRef, runBranchPrefix, runRefs } from "../runtime/names.js";

/** Every branch of a run, fetched under the same names. */
const runBranchesRefspec = (runId: string) => `+refs/heads/${runBranchPrefix(runId)}*:refs/heads/${runBranchPrefix(runId)}*`;

/** The remote could not be read or written: unreachable, no such repository, no access. */
export class RemoteGitError extends AdoError {
  constructor(
    readonly url: string,
    action: string,
    cause: unknown,
  ) {
    const detail = cause instanceof GitCommandError ? cause.message : String(cause);
    super(`could not ${action} '${url}': ${detail}. Check that the remote exists and this host can reach it (git ls-remote ${url})`, {
      cause,
      // A remote that is down now may be back on the next delivery.
      retryable: true,
    });
  }
}

/** A commit the run needs is on no ref of the run on the remote. */
export class MissingCommitError extends AdoError {
  constructor(url: string, runId: string, commit: string) {
    super(`commit ${commit} of run ${runId} is not on '${url}' (fetched ${runRefs(runId)}/* and refs/heads/${runBranchPrefix(runId)}*): was the run's base pushed?`, {
      retryable: false,
    });
  }
}

/** A push was rejected because the branch moved on the remote (a lost race). */
export class PushRejectedError extends AdoError {
  constructor(url: string, ref: string) {
    super(`the push of ${ref} to '${url}' was rejected: the branch moved there; fetch and retry`, { retryable: true });
  }
}


/** The refspecs that bring one run's refs from the remote into a clone, under the same names. */
function runRefspecs(runId: string): string[] {
  return [`+${runRefs(runId)}/*:${runRefs(runId)}/*`, runBranchesRefspec(runId)];
}

/**
 * Locks by clone directory, shared by every RemoteClones of this process: the workers
 * and the merge coordinator of one stack are separate instances over one clone
 * directory, and a fetch or HEAD fix of one must not interleave with another's.
 */
const cloneLocks = new KeyedMutex();

/** One bare clone per remote URL under `dir`, created on first use. */
export class RemoteClones {
  readonly #dir: string;
  readonly #log: Logger;

  constructor(opts: { dir: string; logger?: Logger }) {
    this.#dir = path.resolve(opts.dir);
    this.#log = (opts.logger ?? silentLogger).child({ component: "git-remote" });
  }

  /** The clone's directory for `url` (a stable hash of the URL). */
  pathOf(url: string): string {
    const name = createHash("sha256").update(url).digest("hex").slice(0, 16);
    return path.join(this.#dir, `${name}.git`);
  }

  /**
   * The bare clone of `url`, created if absent. Creation happens in a temporary directory
   * renamed into place, so a crash half-way never leaves a clone that looks complete.
   */
  async open(url: string): Promise<string> {
    const dir = this.pathOf(url);
    return cloneLocks.run(`open ${dir}`, async () => {
      if (await exists(path.join(dir, "HEAD"))) return dir;
      await mkdir(this.#dir, { recursive: true });
      const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
      try {
        await git(this.#dir, ["init", "-q", "--bare", tmp]);
        await git(tmp, ["remote", "add", "origin", url]);
        // Git's gc would prune objects that no ref holds yet; the run's refs hold them.
        await git(tmp, ["config", "gc.auto", "0"]);
        await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
          // Another process created it first: use theirs.
          if (!(await exists(path.join(dir, "HEAD")))) throw err;
        });
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
      this.#log.debug({ url, dir }, "clone created");
      return dir;
    });
  }

  /**
   * Fetches every ref of the run from the remote into the clone, and gives the clone a
   * HEAD (see bornHead) from the run's base when it has none yet.
   */
  async fetchRun(url: string, runId: string): Promise<string> {
    const dir = await this.open(url);
    await cloneLocks.run(`fetch ${dir}`, () => this.#fetch(url, runId, dir));
    await bornHead(dir, runBaseRef(runId));
    return dir;
  }

  async #fetch(url: string, runId: string, dir: string): Promise<void> {
    try {
      // No --prune: a task branch a worker of this host has just created in the clone is
      // not on the remote yet, and pruning it under the worker's worktree would make its
      // commit a parentless root commit ("refusing to merge unrelated histories").
      await git(dir, ["fetch", "-q", "--no-tags", "origin", ...runRefspecs(runId)]);
    } catch (err) {
      throw new RemoteGitError(url, `fetch run ${runId} from`, err);
    }
  }

  /**
   * The clone of `url`, holding `commit`: fetched from the run's refs unless it is
   * already there (a later task of the same run usually finds it, and so does a worker
   * after the merge coordinator of the same host fetched).
   * @throws MissingCommitError when the remote has no ref of the run holding it.
   */
  async withCommit(url: string, runId: string, commit: string): Promise<string> {
    const dir = await this.open(url);
    // Known here from an earlier task (same clone directory, same commit): the clone has
    // it, and a HEAD (neither fetch nor anything else of ado takes them away).
    if (await this.#known.has(dir, commit)) return dir;
    if (!(await hasCommit(dir, commit))) {
      // Tasks of one run starting together need one fetch, not one each (ref locks).
      await cloneLocks.run(`fetch ${dir}`, async () => {
        if (!(await hasCommit(dir, commit))) await this.#fetch(url, runId, dir);
      });
      if (!(await hasCommit(dir, commit))) throw new MissingCommitError(url, runId, commit);
    }
    // Also when the commit was already there: whoever fetched it (the merge coordinator,
    // a worker of another process) may not have given the clone a HEAD.
    await bornHead(dir, commit);
    await this.#known.add(dir, commit);
    return dir;
  }

  /** Commits this process found in its clones, with a HEAD born (withCommit). */
  readonly #known = new KnownCommits();
}

/**
 * Commits a repository was found to hold, per directory (told apart from a directory
 * re-created at the same path by its device and inode), so that every task of a run
 * does not ask git again for its base commit. Only presence is remembered: a commit
 * found missing is asked again (a fetch may bring it). Bounded; the oldest go first.
 */
export class KnownCommits {
  /** Per directory and commit: found (true), or the check under way. */
  readonly #seen = new Map<string, true | Promise<boolean>>();
  constructor(private readonly max = 1_000) {}

  async has(dir: string, commit: string): Promise<boolean> {
    const key = await this.#key(dir, commit);
    return key !== undefined && this.#seen.get(key) === true;
  }

  async add(dir: string, commit: string): Promise<void> {
    const key = await this.#key(dir, commit);
    if (key !== undefined) this.#remember(key, true);
  }

  /**
   * Whether `dir` holds `commit`: true when found before, else `probe()`'s answer (one
   * probe at a time per directory and commit: tasks starting together share it).
   */
  async check(dir: string, commit: string, probe: () => Promise<boolean>): Promise<boolean> {
    const key = await this.#key(dir, commit);
    if (key === undefined) return probe();
    const seen = this.#seen.get(key);
    if (seen !== undefined) return seen;
    const p = probe().then(
      (found) => {
        if (this.#seen.get(key) === p) found ? this.#remember(key, true) : this.#seen.delete(key);
        return found;
      },
      (err: unknown) => {
        if (this.#seen.get(key) === p) this.#seen.delete(key);
        throw err;
      },
    );
    this.#remember(key, p);
    return p;
  }

  #remember(key: string, value: true | Promise<boolean>): void {
    this.#seen.delete(key);
    this.#seen.set(key, value);
    if (this.#seen.size > this.max) this.#seen.delete(this.#seen.keys().next().value!);
  }

  async #key(dir: string, commit: string): Promise<string | undefined> {
    const s = await stat(dir).catch(() => undefined);
    return s?.isDirectory() ? `${path.resolve(dir)}\0${s.dev}:${s.ino}\0${commit}` : undefined;
  }
}

/**
 * A fresh clone's HEAD names a branch with no commit, which git worktree and ado's
 * repository checks refuse; a detached HEAD at any commit of the remote will do. Safe
 * to call concurrently, also from several processes: HEAD is set only while it is
 * unborn, and a lost race on HEAD's lock leaves it born by the winner.
 */
async function bornHead(dir: string, rev: string): Promise<void> {
  const isBorn = async () => (await runGit(dir, ["rev-parse", "-q", "--verify", "HEAD^{commit}"], [0, 1])).exitCode === 0;
  await cloneLocks.run(`head ${dir}`, async () => {
    if (await isBorn()) return;
    const target = await runGit(dir, ["rev-parse", "-q", "--verify", `${rev}^{commit}`], [0, 1]);
    if (target.exitCode !== 0) return; // nothing of the run here yet: the next fetch sets it
    try {
      await git(dir, ["update-ref", "--no-deref", "HEAD", target.stdout.trim()]);
    } catch (err) {
      if (!(await isBorn())) throw err;
    }
  });
}

/** Whether the repository at `dir` has `commit`. */
export async function hasCommit(dir: string, commit: string): Promise<boolean> {
  const { exitCode } = await runGit(dir, ["cat-file", "-e", `${commit}^{commit}`], [0, 1, 128]);
  return exitCode === 0;
}

/**
 * Pushes `commit` to `ref` on the remote. With `expected` the push is a compare-and-swap
 * (`--force-with-lease`): it fails with PushRejectedError if the remote ref is not at
 * `expected` ("" = must not exist). Without it the ref is overwritten (a task branch,
 * which only the worker running the task writes).
 */
export async function pushRef(
  repo: string,
  url: string,
  commit: string,
  ref: string,
  opts: { expected?: string } = {},
): Promise<void> {
  const lease = opts.expected === undefined ? ["--force"] : [`--force-with-lease=${ref}:${opts.expected}`];
  const { exitCode } = await runGit(repo, ["push", "-q", "--porcelain", ...lease, url, `${commit}:${ref}`], [0, 1]).catch((err) => {
    throw new RemoteGitError(url, `push ${ref} to`, err);
  });
  if (exitCode !== 0) {
    // `--porcelain` exits 1 for a rejected ref; tell a lost race from an unreachable remote.
    if (opts.expected !== undefined && (await remoteRef(url, ref, repo)) !== (opts.expected || undefined)) {
      throw new PushRejectedError(url, ref);
    }
    throw new RemoteGitError(url, `push ${ref} to`, `git push exited ${exitCode}`);
  }
}

/** The commit a ref points at on the remote, or undefined when it does not exist. */
export async function remoteRef(url: string, ref: string, cwd: string): Promise<string | undefined> {
  try {
    const out = await git(cwd, ["ls-remote", url, ref]);
    const line = out.split("\n").find((l) => l.endsWith(`\t${ref}`));
    return line?.split("\t")[0];
  } catch (err) {
    throw new RemoteGitError(url, "read", err);
  }
}

/** Submitter side: makes the run's base commit available on the remote. */
export async function publishRunBase(repo: string, url: string, runId: string, commit: string): Promise<void> {
  await pushRef(repo, url, commit, runBaseRef(runId));
}

/**
 * Submitter side, at the end of a run: brings the run's branches (integration and
 * tasks) from the remote into the user's repository under the same names (refs only; no
 * checkout is touched).
 */
export async function fetchRunBranches(repo: string, url: string, runId: string): Promise<void> {
  try {
    await git(repo, ["fetch", "-q", "--no-tags", url, runBranchesRefspec(runId)]);
  } catch (err) {
    throw new RemoteGitError(url, `fetch the branches of run ${runId} from`, err);
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** How a worker or merge coordinator reaches a run's repository. */
export type GitAccess = "auto" | "shared" | "clone";
export const GIT_ACCESS = ["auto", "shared", "clone"] as const;

/** Where one task's git work happens. */
export interface RepoTarget {
  /** The repository directory to work in: the user's repository, or this host's clone. */
  dir: string;
  /** Whether `dir` is this host's clone rather than the user's repository. */
  clone: boolean;
  /**
   * The run's remote, when it has one: task branches are pushed there whichever `dir`
   * is, since the merge coordinator of such a run merges from the remote.
   */
  remote?: string;
}

/** A run's repository cannot be reached the way this host is configured to. */
export class RepoAccessError extends AdoError {
  constructor(message: string) {
    super(message, { retryable: false });
  }
}

/**
 * Chooses, per run, between the user's repository on a shared disk and a clone of the
 * run's remote:
 * - `shared`: the run's `repo` path must be on this host;
 * - `clone`: always a clone of the run's `remote` (a host with its own disk);
 * - `auto` (default): the `repo` path when it exists here and holds the commit, else a
 *   clone when the run has a remote.
 */
export class RepoAccess {
  readonly clones: RemoteClones;
  constructor(
    readonly mode: GitAccess,
    cloneDir: string,
    logger?: Logger,
  ) {
    this.clones = new RemoteClones({ dir: cloneDir, logger });
  }

  /** Commits found in the runs' own repositories (resolve). */
  readonly #known = new KnownCommits();

  /**
   * The repository to use for `commit` of run `runId`.
   * @throws RepoAccessError when neither way is open; RemoteGitError when the remote is down.
   */
  async resolve(run: { runId: string; repo?: string; remote?: string }, commit: string): Promise<RepoTarget> {
    if (this.mode !== "clone" && run.repo && (await exists(run.repo))) {
      // Every task of a run asks for the run's base commit: git is asked once per repository.
      const repo = run.repo;
      if (await this.#known.check(repo, commit, () => hasCommit(repo, commit).catch(() => false))) return { dir: repo, clone: false, remote: run.remote };
    }
    if (this.mode === "shared") {
      throw new RepoAccessError(
        `the run's repository ${run.repo ?? "(none)"} is not on this host (git access: shared): run this worker where the repository is, or set worker git access to auto or clone and submit the run with --remote <url>`,
      );
    }
    if (!run.remote) {
      throw new RepoAccessError(
        `the run's repository ${run.repo ?? "(none)"} is not on this host and the run has no remote to clone: submit it with --remote <url> (a git URL every host can reach)`,
      );
    }
    return { dir: await this.clones.withCommit(run.remote, run.runId, commit), clone: true, remote: run.remote };
  }

  /** Publishes a task branch to the run's remote (nothing for a run without one). */
  async publishBranch(target: RepoTarget, commit: string, branch: string): Promise<void> {
    if (target.remote) await pushRef(target.dir, target.remote, commit, `refs/heads/${branch}`);
  }
}
