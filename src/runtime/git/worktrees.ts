/**
 * One git worktree and branch per task, created beside the user's checkout without
 * touching it. `git worktree` commands share files under the repository's git dir
 * (worktree registrations, ref and config locks), so in this process they run one at a
 * time per repository, and lock errors from other processes are retried.
 */
import { mkdir, realpath, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { silentLogger } from "../logger.js";
import { KeyedMutex } from "../mutex.js";
import { BranchConflictError, GitCommandError, InvalidWorktreeNameError, WorktreeDirtyError } from "./errors.js";
import { ADO_IDENTITY, backoff, git, identityOptions, sleep } from "./exec.js";
import { openRepo, readBranch } from "./repo.js";

/** A worktree as `git worktree list` reports it. */
export interface WorktreeEntry {
  path: string;
  /** Branch name without `refs/heads/`; absent when HEAD is detached. */
  branch?: string;
  head: string;
  /** The lock reason ("" when locked without one); absent when not locked. */
  locked?: string;
}

export interface WorktreeManagerOptions {
  /** Any directory inside the repository. */
  repo: string;
  /** Directory under which this manager creates, lists and removes worktrees. */
  baseDir: string;
  logger?: Logger;
}

export interface AddWorktreeOptions {
  /** Path relative to baseDir, e.g. `<runId>/<taskId>`. */
  name: string;
  branch: string;
  /** Commit sha the new branch starts at. */
  base: string;
  /** Recorded by `git worktree lock`, so `git worktree prune` leaves the worktree alone. */
  lockReason?: string;
}

export interface CommitAllOptions {
  message: string;
  /** Author of the commit; the committer stays the configured (or ado's) identity. */
  authorName?: string;
  authorEmail?: string;
}

const MAX_LOCK_ATTEMPTS = 6;

/** Worktree operations of this process, one at a time per repository (git common dir). */
const repoLocks = new KeyedMutex();

/** Creates, commits in, lists and removes the task worktrees of one repository. */
export class WorktreeManager {
  readonly #repo: string;
  readonly #baseDir: string;
  readonly #log: Logger;
  #setup: Promise<{ gitCommonDir: string; baseDir: string }> | undefined;

  constructor(opts: WorktreeManagerOptions) {
    this.#repo = path.resolve(opts.repo);
    this.#baseDir = path.resolve(opts.baseDir);
    this.#log = (opts.logger ?? silentLogger).child({ component: "git-worktrees" });
  }

  /**
   * Creates a worktree at `<baseDir>/<name>` on a new branch `branch` starting at
   * `base`, locked so that pruning cannot drop it. A branch left by an earlier attempt
   * is reused if it still points at `base`.
   * @throws BranchConflictError when `branch` exists at another commit.
   * @throws WorktreeDirtyError when a worktree left at that path holds uncommitted work.
   */
  async add(opts: AddWorktreeOptions): Promise<{ path: string; branch: string }> {
    const { gitCommonDir, baseDir } = await this.#init();
    const target = path.resolve(baseDir, opts.name);
    const relative = path.relative(baseDir, target);
    if (relative === "" || relative.startsWith("..") || path.isAbsolute(relative)) {
      throw new InvalidWorktreeNameError(opts.name, baseDir);
    }
    const lock = ["--lock", "--reason", opts.lockReason ?? "ado: task worktree in use"];
    return repoLocks.run(gitCommonDir, async () => {
      await this.#retryOnLock("prune", () => git(this.#repo, ["worktree", "prune"]));
      const existing = await readBranch(this.#repo, opts.branch);
      if (existing !== undefined) {
        if (existing !== opts.base) throw new BranchConflictError(opts.branch, opts.base, existing);
        if ((await this.#listAll()).some((w) => w.path === target)) await this.#removeLocked(target, false);
      }
      const created = existing === undefined;
      const args = created
        ? // --no-track: writing upstream config races on .git/config.lock.
          ["worktree", "add", "--no-track", ...lock, "-b", opts.branch, target, opts.base]
        : ["worktree", "add", ...lock, target, opts.branch];
      const dirExisted = await pathExists(target);
      await this.#retryOnLock(
        "add",
        () => git(this.#repo, args),
        () => this.#undoHalfAdd(target, dirExisted, created ? opts.branch : undefined, opts.base),
      );
      this.#log.debug({ path: target, branch: opts.branch, base: opts.base }, "worktree added");
      return { path: target, branch: opts.branch };
    });
  }

  /**
   * Stages everything in the worktree at `worktreePath` and commits it, skipping hooks
   * (`--no-verify`) so a user's hooks cannot block an agent's commit.
   * @returns the worktree's HEAD afterwards, whether a commit was made, and the paths it changed.
   */
  async commitAll(
    worktreePath: string,
    opts: CommitAllOptions,
  ): Promise<{ commit: string; changed: boolean; files: string[] }> {
    await git(worktreePath, ["add", "-A"]);
    // --no-renames lists both sides of a rename, so callers see every touched path.
    const staged = await git(worktreePath, ["diff", "--cached", "--name-only", "--no-renames", "-z"]);
    const files = staged.split("\0").filter((f) => f !== "");
    if (files.length > 0) {
      const author =
        opts.authorName !== undefined || opts.authorEmail !== undefined
          ? [`--author=${opts.authorName ?? ADO_IDENTITY.name} <${opts.authorEmail ?? ADO_IDENTITY.email}>`]
          : [];
      const identity = await identityOptions(worktreePath);
      await git(worktreePath, [...identity, "commit", "--no-verify", "-q", ...author, "-m", opts.message]);
    }
    const commit = (await git(worktreePath, ["rev-parse", "HEAD"])).trim();
    return { commit, changed: files.length > 0, files };
  }

  /**
   * Unlocks and removes the worktree at `worktreePath`, leaving its branch in place.
   * Without `force` it refuses while the worktree holds uncommitted or untracked files.
   * @throws WorktreeDirtyError naming the uncommitted paths.
   */
  async remove(worktreePath: string, opts: { force?: boolean } = {}): Promise<void> {
    const { gitCommonDir } = await this.#init();
    const target = await realpath(worktreePath).catch(() => path.resolve(worktreePath));
    await repoLocks.run(gitCommonDir, () => this.#removeLocked(target, opts.force ?? false));
  }

  /** The worktrees under baseDir. */
  async list(): Promise<WorktreeEntry[]> {
    const { baseDir } = await this.#init();
    return (await this.#listAll()).filter((w) => w.path.startsWith(baseDir + path.sep));
  }

  async #init(): Promise<{ gitCommonDir: string; baseDir: string }> {
    this.#setup ??= (async () => {
      const { gitCommonDir } = await openRepo(this.#repo);
      // Git records worktree paths with symlinks resolved, so baseDir must be too.
      await mkdir(this.#baseDir, { recursive: true });
      return { gitCommonDir, baseDir: await realpath(this.#baseDir) };
    })();
    return this.#setup;
  }

  /** Removal proper; the caller holds the repository lock. */
  async #removeLocked(target: string, force: boolean): Promise<void> {
    if (!force && (await pathExists(target))) {
      const status = await git(target, ["--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all"]);
      const changes = status.split("\0").filter((e) => e !== "");
      if (changes.length > 0) throw new WorktreeDirtyError(target, changes);
    }
    const entry = (await this.#listAll()).find((w) => w.path === target);
    if (entry?.locked !== undefined) {
      await this.#retryOnLock("unlock", () => git(this.#repo, ["worktree", "unlock", target]));
    }
    // Without force git re-checks cleanliness itself, closing the gap after our status.
    const forceArgs = force ? ["--force"] : [];
    await this.#retryOnLock("remove", () => git(this.#repo, ["worktree", "remove", ...forceArgs, target]));
    this.#log.debug({ path: target, force }, "worktree removed");
  }

  async #listAll(): Promise<WorktreeEntry[]> {
    const out = await git(this.#repo, ["worktree", "list", "--porcelain", "-z"]);
    const entries: WorktreeEntry[] = [];
    let current: WorktreeEntry | undefined;
    // Each attribute ends in NUL and each worktree's block ends in one more NUL.
    for (const field of out.split("\0")) {
      const space = field.indexOf(" ");
      const key = space < 0 ? field : field.slice(0, space);
      const value = space < 0 ? "" : field.slice(space + 1);
      if (key === "worktree") {
        current = { path: value, head: "" };
        entries.push(current);
      } else if (current && key === "HEAD") current.head = value;
      else if (current && key === "branch") current.branch = value.replace(/^refs\/heads\//, "");
      else if (current && key === "locked") current.locked = value;
    }
    return entries;
  }

  /** Runs `op`, retrying with backoff while git reports a lock held by another process. */
  async #retryOnLock<T>(what: string, op: () => Promise<T>, undo?: () => Promise<void>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!(err instanceof GitCommandError && err.retryable) || attempt >= MAX_LOCK_ATTEMPTS) throw err;
        this.#log.warn({ err, attempt, op: what }, "git lock busy, retrying");
        await undo?.();
        await sleep(backoff(attempt));
      }
    }
  }

  /**
   * Clears what a failed `worktree add` may have left, so the retry starts clean: the
   * registration (locked, so prune would keep it), the directory if this add created
   * it, and the branch if this add created it and it still points at base. Nothing in
   * them is work yet: they were created moments ago from base.
   */
  async #undoHalfAdd(target: string, dirExisted: boolean, createdBranch: string | undefined, base: string): Promise<void> {
    if ((await this.#listAll()).some((w) => w.path === target)) {
      await git(this.#repo, ["worktree", "remove", "--force", "--force", target]);
    }
    if (!dirExisted) await rm(target, { recursive: true, force: true });
    if (createdBranch !== undefined && (await readBranch(this.#repo, createdBranch)) === base) {
      await git(this.#repo, ["update-ref", "-d", `refs/heads/${createdBranch}`, base]);
    }
  }
}

async function pathExists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}
