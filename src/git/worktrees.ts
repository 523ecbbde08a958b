/**
 * One git worktree and branch per task, created beside the user's checkout without
 * touching it. `git worktree` commands share files under the repository's git dir
 * (worktree registrations, ref and config locks), so in this process they run one at a
 * time per repository, and lock errors from other processes are retried.
 *
 * Beside git's own registration of each worktree (`<git common dir>/worktrees/<id>/`)
 * the manager keeps `ado.json`: who created it (pid, host), when, from which base, and
 * which paths it put there from the user's checkout (the include list). Git ignores the
 * file and deletes it with the registration. It lets cleanup work without a server and
 * keeps copied files (`.env`) out of every commit: git's `info/exclude` cannot, because
 * it is shared by all worktrees and the user's checkout.
 *
 * Cost: add is one git process when the branch is new (`worktree add --no-track --lock
 * -b`), remove is two, one of them under the repository lock: a status of the worktree
 * (the check for uncommitted work) before it, then `worktree remove --force` (the lock is
 * lifted by deleting the `locked` file, which is all `git worktree unlock` does).
 * commitAll is three (`add -A`, `diff --cached`, `commit`): the identity is asked of git
 * once per repository (exec.ts's identityOptions, again when a config file changes) and
 * the new HEAD read from disk.
 * worktreeLockStats() says how long each kind of operation held and waited for the
 * lock. Everything else is read from the file
 * system, and git runs more only on the rare paths (a leftover branch or registration,
 * a refusal to diagnose). bench/worktrees.ts compares this with raw git.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFile, lstat, mkdir, readdir, readFile, realpath, rename, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { silentLogger } from "../runtime/logger.js";
import { KeyedMutex } from "../runtime/mutex.js";
import { BranchConflictError, BranchInUseError, GitCommandError, InvalidWorktreeNameError, WorktreeDirtyError, WorktreeStateError } from "./errors.js";
import { ADO_IDENTITY, git, identityOptions, runGit } from "./exec.js";
import { isAncestor, openRepo, readBranch } from "./repo.js";
import { DEFAULT_INCLUDE, type IncludeSpec, type LocalFiles, populateWorktree } from "./worktree-include.js";
import { ADO_BRANCH_PREFIX, ADO_REFS, archiveRef, WORKTREE_ADO_DIR } from "../runtime/names.js";
import { Backoff, retry } from "../runtime/retry.js";

/** A worktree as `git worktree list` reports it. */
export interface WorktreeEntry {
  path: string;
  /** Branch name without `refs/heads/`; absent when HEAD is detached. */
  branch?: string;
  head: string;
  /** The lock reason ("" when locked without one); absent when not locked. */
  locked?: string;
  /** Why git considers the registration stale (its directory is gone); absent when it is not. */
  prunable?: string;
}

export interface WorktreeManagerOptions {
  /** Any directory inside the repository. */
  repo: string;
  /** Directory under which this manager creates, lists and removes worktrees. */
  baseDir: string;
  logger?: Logger;
  /** What new worktrees get from the user's checkout (config `worktrees`); default: node_modules linked. */
  include?: Partial<IncludeSpec>;
}

export interface AddWorktreeOptions {
  /** Path relative to baseDir, e.g. `<runId>/<taskId>`. */
  name: string;
  branch: string;
  /** Commit sha the new branch starts at. */
  base: string;
  /** Recorded by `git worktree lock`, so `git worktree prune` leaves the worktree alone. */
  lockReason?: string;
  /** Recorded in ado.json, for `ado worktrees list`, cleanup and the stealer. */
  owner?: { runId?: string; taskId?: string; workerId?: string; attempt?: number };
  /**
   * The branch belongs to this attempt (a task's next attempt owns its branch): one
   * left at another commit by an earlier attempt is moved to `base` instead of refused.
   * Commits on it that no other branch, tag or `refs/ado/*` ref keeps are kept under
   * `refs/ado/archive/<run>/<task>/<time>` first, so nothing is lost.
   */
  ownBranch?: boolean;
}

export interface AddedWorktree {
  path: string;
  branch: string;
  /** What was copied, linked or skipped from the user's checkout. */
  local: LocalFiles;
}

export interface CommitAllOptions {
  message: string;
  /** Commit even when nothing is staged (a checkpoint that must carry its trailer). */
  allowEmpty?: boolean;
  /** Author of the commit; the committer stays the configured (or ado's) identity. */
  authorName?: string;
  authorEmail?: string;
}

/** What ado keeps beside git's registration of a worktree, in `ado.json`. */
export const WorktreeMetaSchema = z.object({
  version: z.literal(1),
  /** Path relative to the base directory (`<runId>/<taskId>`). */
  name: z.string(),
  branch: z.string(),
  base: z.string(),
  createdAt: z.string(),
  host: z.string(),
  pid: z.number().int(),
  runId: z.string().optional(),
  taskId: z.string().optional(),
  workerId: z.string().optional(),
  /** The task attempt the worktree was made for. */
  attempt: z.number().int().optional(),
  /** Paths (relative, `/`-separated) put there from the user's checkout: never committed. */
  local: z.array(z.string()).default([]),
});
export type WorktreeMeta = z.infer<typeof WorktreeMetaSchema>;

/** What an agent did with git in its worktree (WorktreeManager.attemptGit). */
export interface AttemptGit {
  /** The worktree's HEAD commit. */
  head: string;
  /** The branch HEAD is on; undefined when detached. */
  headBranch?: string;
  /** The task branch's commit now (undefined: the agent deleted it). */
  taskTip?: string;
  /** Whether the base is HEAD or one of its ancestors. */
  onBase: boolean;
  /** Whether HEAD moved below the base (an ancestor of it). */
  belowBase: boolean;
  /** Whether the task branch's commit is HEAD or one of its ancestors. */
  taskInHead: boolean;
  /** Branches the agent made (new since it started; its HEAD went there, or they hold its commits). */
  strays: Array<{ branch: string; tip: string; onBase: boolean; inHead: boolean }>;
}

/** A worktree under the base directory with what cleanup needs to decide about it. */
export interface WorktreeStatus extends WorktreeEntry {
  /** Path relative to the base directory. */
  name: string;
  /** Whether the directory is still there (a registration can outlive it). */
  exists: boolean;
  meta?: WorktreeMeta;
  /** Why ado.json could not be read, when it exists but is malformed. */
  metaProblem?: string;
  /** From ado.json, else the registration's modification time. */
  createdAt?: string;
  /** Uncommitted changes (`git status --porcelain` entries), copied include files left out. */
  changes: string[];
  /**
   * Commits on HEAD that no other branch, tag or `refs/ado/*` ref holds: work that only
   * this worktree's branch keeps. 0 when merged, archived or nothing was committed;
   * undefined when git could not tell.
   */
  unmerged?: number;
}

/** A directory under the base directory that looks like a worktree git no longer knows. */
export interface OrphanDir {
  path: string;
  name: string;
  reason: string;
}

const MAX_LOCK_ATTEMPTS = 8;
/** A registration younger than this without ado.json may be an add in progress elsewhere. */
export const YOUNG_WORKTREE_MS = 60_000;
const META_FILE = "ado.json";

/** Worktree operations of this process, one at a time per repository (git common dir). */
const repoLockMutex = new KeyedMutex();

/** Per kind of operation: how often it took a repository's lock, and how long it waited for it and held it (ms). */
export type WorktreeLockStats = Record<"add" | "remove" | "prune", { n: number; waitMs: number; heldMs: number }>;
const lockStats: WorktreeLockStats = { add: { n: 0, waitMs: 0, heldMs: 0 }, remove: { n: 0, waitMs: 0, heldMs: 0 }, prune: { n: 0, waitMs: 0, heldMs: 0 } };

/**
 * The repository locks of this process, with their use counted: every task's add and
 * remove take turns under one lock per repository, so its busy time bounds the tasks
 * a second (bench/merge-load.ts reports it).
 */
const repoLocks = {
  run<T>(key: string, kind: keyof WorktreeLockStats, fn: () => Promise<T>): Promise<T> {
    const asked = performance.now();
    return repoLockMutex.run(key, async () => {
      const got = performance.now();
      try {
        return await fn();
      } finally {
        const s = lockStats[kind];
        s.n++;
        s.waitMs += got - asked;
        s.heldMs += performance.now() - got;
      }
    });
  },
};

/** A copy of what the repository locks of this process were used for so far (see repoLocks). */
export function worktreeLockStats(): WorktreeLockStats {
  return structuredClone(lockStats);
}

/** A removal under way (WorktreeManager: prepared, then git's removal under the lock, then finished). */
interface Removal {
  target: string;
  force: boolean;
  admin?: string;
  meta?: WorktreeMeta;
  exists: boolean;
  /** Where what the include list put there was moved aside, and what was moved. */
  aside?: string;
  moved: string[];
  lockFile?: string;
  lockReason?: string;
}

/** Creates, commits in, inspects, archives and removes the task worktrees of one repository. */
export class WorktreeManager {
  readonly #repo: string;
  readonly #baseDir: string;
  readonly #log: Logger;
  readonly #include: IncludeSpec;
  #setup: Promise<{ gitCommonDir: string; topLevel: string; baseDir: string }> | undefined;
  /** The user's `core.excludesFile` (agentGitEnv), read once. */
  #excludesFile: Promise<string> | undefined;

  constructor(opts: WorktreeManagerOptions) {
    this.#repo = path.resolve(opts.repo);
    this.#baseDir = path.resolve(opts.baseDir);
    this.#log = (opts.logger ?? silentLogger).child({ component: "git-worktrees" });
    this.#include = { ...DEFAULT_INCLUDE, ...stripUndefined(opts.include ?? {}) };
  }

  /** The base directory, with symlinks resolved (as git records worktree paths). */
  async baseDir(): Promise<string> {
    return (await this.#init()).baseDir;
  }

  /**
   * Creates a worktree at `<baseDir>/<name>` on a new branch `branch` starting at
   * `base`, locked so that pruning cannot drop it, and populates it from the user's
   * checkout (the include list). A branch left by an earlier attempt is reused if it
   * still points at `base`.
   * @throws BranchConflictError when `branch` exists at another commit.
   * @throws WorktreeDirtyError when a worktree left at that path holds uncommitted work.
   * @throws IncludeTooLargeError when the include list would copy too much (nothing is left behind).
   */
  async add(opts: AddWorktreeOptions): Promise<AddedWorktree> {
    const { gitCommonDir, baseDir, topLevel } = await this.#init();
    const target = path.resolve(baseDir, opts.name);
    const relative = path.relative(baseDir, target);
    if (relative === "" || relative.startsWith("..") || path.isAbsolute(relative)) {
      throw new InvalidWorktreeNameError(opts.name, baseDir);
    }
    const lockReason = opts.lockReason ?? "ado: task worktree in use";
    const meta: WorktreeMeta = {
      version: 1,
      name: relative.split(path.sep).join("/"),
      branch: opts.branch,
      base: opts.base,
      createdAt: new Date().toISOString(),
      host: hostname(),
      pid: process.pid,
      ...opts.owner,
      local: [],
    };
    await repoLocks.run(gitCommonDir, "add", () => this.#addLocked(target, opts, lockReason));
    this.#log.debug({ path: target, branch: opts.branch, base: opts.base }, "worktree added");
    // The rest runs outside the repository lock, at once: it touches only the new
    // worktree and its registration. Until ado.json is written, cleanup (here or in
    // another process) treats the registration as in use for its first minute.
    const none: LocalFiles = { copied: [], linked: [], skipped: [], bytes: 0 };
    const [admin, local] = await Promise.all([
      this.#adminDirOf(target, gitCommonDir),
      topLevel === gitCommonDir
        ? none // a bare repository (remote mode's clones): no checkout to copy from
        : populateWorktree(topLevel, target, this.#include).catch(async (err: unknown) => {
            // Leave nothing half-populated behind: the worktree is fresh, nothing in it is work.
            await this.remove(target, { force: true }).catch(() => undefined);
            throw err;
          }),
    ]);
    if (admin) await writeMeta(admin, { ...meta, local: [...local.copied, ...local.linked] });
    return { path: target, branch: opts.branch, local };
  }

  /**
   * Stages everything in the worktree at `worktreePath` and commits it, skipping hooks
   * (`--no-verify`) so a user's hooks cannot block an agent's commit. Paths the include
   * list put there are never staged, even if the agent staged them itself.
   * ado's own directory in the worktree (`.ado/`: the inputs file, the prompt file) is
   * never staged either.
   * @returns the worktree's HEAD afterwards, whether a commit was made, and the paths it changed.
   */
  async commitAll(
    worktreePath: string,
    opts: CommitAllOptions,
  ): Promise<{ commit: string; changed: boolean; files: string[] }> {
    const { gitCommonDir } = await this.#init();
    const admin = await this.#adminDirOf(path.resolve(worktreePath), gitCommonDir);
    const local = adoOwn(admin ? await readMeta(admin).catch(() => undefined) : undefined);
    // Not `add -A -- . :(exclude)<local>`: git refuses to name a path it ignores, and a
    // copied .env usually is. Copies that got staged are unstaged after.
    await git(worktreePath, [...(await this.#agentExcludes(worktreePath)), "add", "-A"]);
    // --no-renames lists both sides of a rename, so callers see every touched path.
    const diff = ["diff", "--cached", "--name-only", "--no-renames", "-z"];
    let files = splitZ(await git(worktreePath, diff));
    const staged = files.filter((f) => local.some((l) => f === l || f.startsWith(l + "/")));
    if (staged.length > 0) {
      // Untracked-but-not-ignored copies and links, or ones the agent staged itself: out
      // of the index again (they stay on disk).
      await git(worktreePath, ["rm", "--cached", "-r", "-q", "--ignore-unmatch", "--", ...staged.map(literal)]);
      files = splitZ(await git(worktreePath, diff));
    }
    if (files.length > 0 || opts.allowEmpty) {
      const author =
        opts.authorName !== undefined || opts.authorEmail !== undefined
          ? [`--author=${opts.authorName ?? ADO_IDENTITY.name} <${opts.authorEmail ?? ADO_IDENTITY.email}>`]
          : [];
      const identity = await identityOptions(worktreePath, { commonDir: gitCommonDir, gitDir: admin });
      await git(worktreePath, [...identity, "commit", "--no-verify", "-q", ...(opts.allowEmpty ? ["--allow-empty"] : []), ...author, "-m", opts.message]);
    }
    const commit = (admin && (await readHead(admin, gitCommonDir))) || (await git(worktreePath, ["rev-parse", "HEAD"])).trim();
    return { commit, changed: files.length > 0 || !!opts.allowEmpty, files };
  }

  /** The value of trailer `key` in `commit`'s message (the last one), or undefined. */
  async trailer(commit: string, key: string): Promise<string | undefined> {
    const out = await runGit(this.#repo, ["log", "-1", `--format=%(trailers:key=${key},valueonly)`, commit], [0, 128]);
    const value = out.stdout.trim().split("\n").pop()?.trim();
    return out.exitCode === 0 && value ? value : undefined;
  }

  /**
   * Environment for an agent working in the worktree: git run by the agent itself
   * ignores ado's own directory (`.ado/`) and what the include list put there (`core.excludesFile` pointing at
   * a file that holds the user's global excludes plus those paths), so an agent that
   * commits on its own does not commit a copied `.env` either.
   */
  async agentGitEnv(worktreePath: string, env: NodeJS.ProcessEnv = process.env): Promise<Record<string, string>> {
    const { gitCommonDir } = await this.#init();
    const admin = await this.#adminDirOf(path.resolve(worktreePath), gitCommonDir);
    const meta = admin ? await readMeta(admin).catch(() => undefined) : undefined;
    if (!admin) return {};
    // Asked of git once per repository (a process per task added up under load).
    this.#excludesFile ??= runGit(worktreePath, ["config", "--path", "--get", "core.excludesFile"], [0, 1]).then(
      (r) => r.stdout.trim(),
      () => "",
    );
    const globalFile = await this.#excludesFile;
    const fallback = path.join(env.XDG_CONFIG_HOME || path.join(env.HOME || "/", ".config"), "git", "ignore");
    const global = await readFile(globalFile || fallback, "utf8").catch(() => "");
    const file = path.join(admin, "ado-exclude");
    const ours = (meta?.local ?? []).map((l) => "/" + l.replace(/([\\*?[\]!#])/g, "\\$1").replace(/ $/, "\\ "));
    await writeFile(
      file,
      `${global}\n# ado: its own files for the agent\n/${WORKTREE_ADO_DIR}/\n# ado: aider's files (repo-map cache, histories), never the task's work\n${AIDER_FILES}\n# ado: copied or linked from the user's checkout (worktrees.include)\n${ours.join("\n")}\n`,
    );
    const n = Number(env.GIT_CONFIG_COUNT ?? 0) || 0;
    return {
      GIT_CONFIG_COUNT: String(n + 2),
      [`GIT_CONFIG_KEY_${n}`]: "core.excludesFile",
      [`GIT_CONFIG_VALUE_${n}`]: file,
      // The worktree's HEAD reflog tells which branches the agent went to and which
      // commits it made (attemptGit); bare clones (remote mode) keep none by default.
      [`GIT_CONFIG_KEY_${n + 1}`]: "core.logAllRefUpdates",
      [`GIT_CONFIG_VALUE_${n + 1}`]: "true",
    };
  }

  /**
   * The excludes file agentGitEnv wrote for the worktree's agent, as options of ado's own
   * `git add` there: what the agent's git ignores (aider's cache, ado's files) is not
   * committed by ado either. None when no agent was given one.
   */
  async #agentExcludes(worktreePath: string): Promise<string[]> {
    const { gitCommonDir } = await this.#init();
    const admin = await this.#adminDirOf(path.resolve(worktreePath), gitCommonDir);
    const file = admin ? path.join(admin, "ado-exclude") : undefined;
    return file && (await isFile(file)) ? ["-c", `core.excludesFile=${file}`] : [];
  }

  /**
   * The repository's local branches: from the ref store on disk (loose refs listed, in
   * parallel, over `packed-refs`; a tip read only when asked), or, for a repository that
   * keeps refs another way (reftable), from git.
   */
  async #branchView(): Promise<{ names: ReadonlySet<string>; tip(name: string): Promise<string | undefined> }> {
    const { gitCommonDir } = await this.#init();
    if (!(await pathExists(path.join(gitCommonDir, "reftable")))) {
      const packed = new Map<string, string>();
      for (const line of (await readFile(path.join(gitCommonDir, "packed-refs"), "utf8").catch(() => "")).split("\n")) {
        const m = /^([0-9a-f]{40,64}) refs\/heads\/(.+)$/.exec(line);
        if (m) packed.set(m[2]!, m[1]!);
      }
      const names = new Set(packed.keys());
      const heads = path.join(gitCommonDir, "refs", "heads");
      const walk = async (dir: string, prefix: string): Promise<void> => {
        const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
        await Promise.all(
          entries.map(async (e) => {
            if (e.isDirectory()) await walk(path.join(dir, e.name), `${prefix}${e.name}/`);
            else if (e.isFile() && !e.name.endsWith(".lock")) names.add(prefix + e.name);
          }),
        );
      };
      await walk(heads, "");
      const tip = async (name: string): Promise<string | undefined> => {
        const loose = (await readFile(path.join(heads, name), "utf8").catch(() => "")).trim();
        return /^[0-9a-f]{40,64}$/.test(loose) ? loose : packed.get(name);
      };
      return { names, tip };
    }
    const out = await git(this.#repo, ["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/"]);
    const tips = new Map(
      out
        .split("\n")
        .filter(Boolean)
        .map((l) => [l.slice(l.indexOf(" ") + 1).replace(/^refs\/heads\//, ""), l.slice(0, l.indexOf(" "))] as [string, string]),
    );
    return { names: new Set(tips.keys()), tip: async (name) => tips.get(name) };
  }

  /** Paths that differ between two commits (both sides of a rename). */
  async filesBetween(from: string, to: string): Promise<string[]> {
    return splitZ(await git(this.#repo, ["diff", "--name-only", "--no-renames", "-z", from, to]));
  }

  /** The patch from `from` to `to` (a best-of-N judge reads the variants' as files). */
  async diff(from: string, to: string): Promise<string> {
    return git(this.#repo, ["diff", "--no-color", "--no-ext-diff", from, to]);
  }

  /** Whether the worktree holds uncommitted changes (ado's own files and copies from the checkout left out). */
  async hasChanges(worktreePath: string): Promise<boolean> {
    return (await this.#changes(path.resolve(worktreePath), adoOwn(await this.#metaOf(worktreePath)))).length > 0;
  }

  /**
   * The names of every local branch: taken before an agent runs, to tell the branches it
   * makes. Read from the ref store on disk (directory listings, no git process) unless
   * the repository keeps its refs another way.
   */
  async branchNames(): Promise<Set<string>> {
    return new Set((await this.#branchView()).names);
  }

  /** A branch's commit (undefined when there is no such branch). */
  async branchTip(name: string): Promise<string | undefined> {
    return (await this.#branchView()).tip(name);
  }

  /**
   * What an agent did with git in its worktree, for the worker to decide whether its
   * commits can land on the task branch (see the worker's decide.ts). Cheap when the
   * agent left git alone (refs and the worktree's HEAD are read from disk); git runs
   * only to check ancestry when HEAD moved, and to read the worktree's HEAD reflog when
   * new branches appeared.
   * @param before the names of the repository's branches before the agent ran (`branchNames()`).
   */
  async attemptGit(worktreePath: string, opts: { branch: string; base: string; before: ReadonlySet<string> }): Promise<AttemptGit> {
    const { gitCommonDir } = await this.#init();
    const view = await this.#branchView();
    const admin = await this.#adminDirOf(path.resolve(worktreePath), gitCommonDir);
    const headFile = admin ? (await readFile(path.join(admin, "HEAD"), "utf8").catch(() => "")).trim() : "";
    const symbolic = /^ref: refs\/heads\/(.+)$/.exec(headFile)?.[1];
    const symbolicTip = symbolic !== undefined ? await view.tip(symbolic) : undefined;
    const headBranch = symbolicTip !== undefined ? symbolic : undefined;
    const taskTip = await view.tip(opts.branch);
    // A HEAD on a branch with no commit yet (`checkout --orphan`) reads as the task branch's.
    const head =
      symbolicTip ??
      (/^[0-9a-f]{40,64}$/.test(headFile)
        ? headFile
        : (await runGit(worktreePath, ["rev-parse", "-q", "--verify", "HEAD"], [0, 1, 128])).stdout.trim() || (taskTip ?? opts.base));
    const fresh: Array<[string, string]> = [];
    for (const name of view.names) {
      // ado's own branches (other tasks' made meanwhile, on every attempt of a busy run)
      // are never the agent's: no reflog read for them.
      if (name === opts.branch || opts.before.has(name) || name.startsWith(ADO_BRANCH_PREFIX)) continue;
      const tip = await view.tip(name);
      if (tip) fresh.push([name, tip]);
    }
    const ancestor = (a: string, b: string) => (a === b ? Promise.resolve(true) : isAncestor(this.#repo, a, b));
    const onBase = await ancestor(opts.base, head);
    const state: AttemptGit = {
      head,
      headBranch,
      taskTip,
      onBase,
      belowBase: !onBase && (await ancestor(head, opts.base)),
      taskInHead: taskTip !== undefined && (headBranch === opts.branch || (await ancestor(taskTip, head))),
      strays: [],
    };
    if (fresh.length === 0) return state;
    // New branches are the agent's when its HEAD went there (the worktree's own reflog)
    // or they point at a commit made in this worktree; others (the user's, another
    // agent's) are none of this attempt's business.
    const reflog = await runGit(worktreePath, ["reflog", "show", "--format=%H%x09%gs", "HEAD"], [0, 128]);
    const ours = new Set<string>();
    const visited = new Set<string>();
    for (const line of reflog.stdout.split("\n").filter(Boolean)) {
      const [sha, subject = ""] = line.split("\t");
      if (sha && sha !== opts.base) ours.add(sha);
      const moved = /^checkout: moving from .* to (.+)$/.exec(subject);
      if (moved) visited.add(moved[1]!);
    }
    for (const [name, tip] of fresh) {
      if (!visited.has(name) && !ours.has(tip) && name !== headBranch) continue;
      state.strays.push({ branch: name, tip, onBase: await ancestor(opts.base, tip), inHead: await ancestor(tip, head) });
    }
    return state;
  }

  /**
   * Lands what an agent committed on another branch (or a detached HEAD) on the task
   * branch: the task branch moves from `from` to `to` (compare-and-set), and HEAD is
   * attached to it again, so what is left uncommitted is committed there. The worktree's
   * files and index stay as they are (HEAD already is `to`), unless `fastForward`: then
   * HEAD is on the task branch at `from` with a clean tree, and the tree moves to `to`.
   */
  async landOnTaskBranch(worktreePath: string, opts: { branch: string; from: string | undefined; to: string; fastForward?: boolean }): Promise<void> {
    if (opts.fastForward) {
      await git(worktreePath, ["merge", "--ff-only", "-q", opts.to]);
      return;
    }
    await git(this.#repo, ["update-ref", "-m", "ado: the agent's commits land on the task branch", `refs/heads/${opts.branch}`, opts.to, opts.from ?? ""]);
    await git(worktreePath, ["symbolic-ref", "-m", "ado: back on the task branch", "HEAD", `refs/heads/${opts.branch}`]);
  }

  /**
   * Deletes branches an agent made, each only if it still points where it was seen; one
   * whose commits are not on `keptBy` (a commit) is first kept under `archiveRef(name)`.
   * @returns the branches deleted, and the archive refs written.
   */
  async dropStrayBranches(strays: readonly { branch: string; tip: string }[], opts: { keptBy?: string; archiveRef: (branch: string) => string }): Promise<{ deleted: string[]; archived: string[] }> {
    const deleted: string[] = [];
    const archived: string[] = [];
    for (const s of strays) {
      const safe = opts.keptBy !== undefined && (s.tip === opts.keptBy || (await isAncestor(this.#repo, s.tip, opts.keptBy)));
      if (!safe) {
        const ref = opts.archiveRef(s.branch);
        await git(this.#repo, ["update-ref", "-m", `ado: branch ${s.branch} an agent made, kept`, ref, s.tip]);
        archived.push(ref);
      }
      // Compare-and-set: a branch someone moved since is not ours to delete.
      const r = await runGit(this.#repo, ["update-ref", "-d", `refs/heads/${s.branch}`, s.tip], [0, 1, 128]);
      if (r.exitCode === 0) deleted.push(s.branch);
    }
    return { deleted, archived };
  }

  /**
   * Unlocks and removes the worktree at `worktreePath`, leaving its branch in place.
   * Without `force` it refuses while the worktree holds uncommitted or untracked files
   * (other than what the include list put there). Removing a worktree that is already
   * gone (directory and registration) does nothing.
   * @returns whether there was a worktree to remove (false: it was already gone).
   * @throws WorktreeDirtyError naming the uncommitted paths.
   */
  async remove(worktreePath: string, opts: { force?: boolean } = {}): Promise<boolean> {
    const { gitCommonDir } = await this.#init();
    const target = await realpath(worktreePath).catch(() => path.resolve(worktreePath));
    // Every task's add and remove take turns under the repository lock, so what a removal
    // holds it for bounds the tasks a second (bench/merge-load.ts: the lock was busy 95% of
    // a loaded run). So only git's removal runs under it: without force, the check for
    // uncommitted work (a status of the whole worktree, most of what git's own unforced
    // removal does) runs before, and git's removal is then the forced one; the unlocking
    // and the include list's copies are seen to before and after.
    if (!opts.force) {
      const admin = await this.#cleanBeforeRemoval(target, gitCommonDir);
      if (admin) return this.#removeChecked(target, admin, gitCommonDir);
    }
    const removal = await this.#prepareRemoval(target, opts.force ?? false, gitCommonDir);
    if (!removal) return false;
    return this.#finishRemoval(removal, await repoLocks.run(gitCommonDir, "remove", () => this.#gitRemove(removal)));
  }

  /**
   * The worktree at `target` checked for uncommitted or untracked files (other than
   * what the include list put there) before its removal: its registration's directory
   * when clean. Undefined when git is left to check under the lock, as it always did:
   * no registration or no directory (gone, half made), submodules (git refuses those
   * unforced), a status that failed. The check reads only this worktree; whatever is
   * written there after it (nothing should be: its task has ended) goes with it.
   * @throws WorktreeDirtyError naming the uncommitted paths.
   */
  async #cleanBeforeRemoval(target: string, gitCommonDir: string): Promise<string | undefined> {
    const admin = await this.#adminDirOf(target, gitCommonDir);
    if (!admin || !(await isDir(target))) return undefined;
    if ((await pathExists(path.join(target, ".gitmodules"))) || (await isDir(path.join(admin, "modules")))) return undefined;
    const meta = await readMeta(admin).catch(() => undefined);
    let changes: string[];
    try {
      changes = await this.#changes(target, adoOwn(meta));
    } catch {
      return undefined;
    }
    if (changes.length > 0) throw new WorktreeDirtyError(target, changes);
    return admin;
  }

  /** Removes a worktree found clean (#cleanBeforeRemoval): unlocked, then git's forced removal under the lock. */
  async #removeChecked(target: string, admin: string, gitCommonDir: string): Promise<boolean> {
    // Unlock by deleting the lock file: all `git worktree unlock` does, without a process.
    const lockFile = path.join(admin, "locked");
    const lockReason = await readFile(lockFile, "utf8").catch(() => undefined);
    if (lockReason !== undefined) await rm(lockFile, { force: true });
    try {
      await repoLocks.run(gitCommonDir, "remove", () => this.#retryOnLock("remove", () => git(this.#repo, ["worktree", "remove", "--force", target])));
    } catch (err) {
      // Removed meanwhile (a cleanup pass): nothing was left to remove.
      if (!(await isDir(admin)) && !(await pathExists(target))) return false;
      // Kept: lock it again so that prune cannot drop it.
      if (lockReason !== undefined && (await isDir(admin))) await writeFile(lockFile, lockReason);
      throw err;
    }
    this.#log.debug({ path: target }, "worktree removed");
    return true;
  }

  /**
   * The task worktrees under baseDir, as git lists them. Directories whose first segment
   * starts with `_` belong to other parts of ado (the merge coordinator's `_merge/`
   * scratch and `--manual` worktrees) and are left out; run ids never start with `_`.
   */
  async list(): Promise<WorktreeEntry[]> {
    const { baseDir } = await this.#init();
    return (await this.#listAll()).filter((w) => w.path.startsWith(baseDir + path.sep) && !path.relative(baseDir, w.path).startsWith("_"));
  }

  /** `git worktree prune`: drops registrations whose directory is gone (never locked ones). */
  async prune(): Promise<void> {
    const { gitCommonDir } = await this.#init();
    await repoLocks.run(gitCommonDir, "prune", () => this.#retryOnLock("prune", () => git(this.#repo, ["worktree", "prune"])));
  }

  /**
   * Every worktree under baseDir with what cleanup decides on: its ado.json, whether
   * its directory is there, its uncommitted changes and its unmerged commits. Git lists
   * the worktrees once; the rest is two git reads per worktree, a few at a time.
   */
  async inspect(): Promise<WorktreeStatus[]> {
    const { gitCommonDir, baseDir } = await this.#init();
    const entries = await this.list();
    const admins = await this.#adminDirs(gitCommonDir);
    return mapLimit(entries, 4, async (e) => {
      const status: WorktreeStatus = { ...e, name: path.relative(baseDir, e.path).split(path.sep).join("/"), exists: await isDir(e.path), changes: [] };
      const admin = admins.get(e.path);
      if (admin) {
        try {
          status.meta = await readMeta(admin);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") status.metaProblem = `${path.join(admin, META_FILE)}: ${(err as Error).message}`;
        }
        status.createdAt = status.meta?.createdAt ?? (await stat(admin).then((s) => s.mtime.toISOString(), () => undefined));
      }
      if (status.exists) {
        const out = await runGit(
          e.path,
          ["--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all", ...excludeSpec(adoOwn(status.meta))],
          [0, 128],
        );
        status.changes = out.exitCode === 0 ? statusEntries(out.stdout) : ["?? (git status failed: the worktree is damaged)"];
      }
      status.unmerged = await this.#unmergedCount(e);
      return status;
    });
  }

  /**
   * Directories under baseDir (at the `<runId>/<taskId>` depth) that are not registered
   * worktrees of this repository and whose `.git` file points at no registration of any
   * repository: left by a crash or a deleted registration. Never removed automatically:
   * they may hold work.
   */
  async orphans(): Promise<OrphanDir[]> {
    const { baseDir } = await this.#init();
    const known = new Set((await this.#listAll()).map((w) => w.path));
    const out: OrphanDir[] = [];
    for (const run of await readdir(baseDir, { withFileTypes: true }).catch(() => [])) {
      if (!run.isDirectory() || run.name.startsWith("_")) continue;
      for (const task of await readdir(path.join(baseDir, run.name), { withFileTypes: true }).catch(() => [])) {
        const dir = path.join(baseDir, run.name, task.name);
        if (!task.isDirectory() || known.has(dir)) continue;
        const dotGit = await readFile(path.join(dir, ".git"), "utf8").catch(() => undefined);
        if (dotGit === undefined) continue; // not a worktree at all (maybe a run directory of another layout)
        const gitdir = /^gitdir: (.*)$/m.exec(dotGit)?.[1]?.trim();
        if (gitdir && (await isDir(gitdir))) continue; // another repository's worktree
        out.push({ path: dir, name: `${run.name}/${task.name}`, reason: `its registration (${gitdir ?? "unknown"}) is gone` });
      }
    }
    return out;
  }

  /**
   * Ends an attempt's worktree and keeps its work. What it holds (uncommitted changes,
   * and commits the agent made itself) is committed and kept under `ref`; the worktree is
   * removed (a registration whose directory is already gone too); and `branch` goes back
   * to `base` when it still points at that work, so the next attempt starts clean on the
   * same path and branch. Every step is safe to repeat (a successor redoing it).
   * @returns the attempt's last commit (undefined when neither worktree nor branch is
   *   left), and whether it held work of its own (then `ref` points at it).
   */
  async archiveAttempt(
    worktreePath: string,
    opts: {
      ref: string;
      branch: string;
      base: string;
      message: string;
      /**
       * Put the branch back at `base` (default). False for an attempt that may have
       * succeeded (its result stored before its worker died): its branch stays at its
       * work, which the next attempt, owning the branch, moves if it must.
       */
      resetBranch?: boolean;
    },
  ): Promise<{ commit: string | undefined; archived: boolean }> {
    let head: string | undefined;
    if (await isDir(worktreePath)) {
      // The inputs file ado wrote for the agent is never part of its work.
      await rm(path.join(worktreePath, ".ado"), { recursive: true, force: true });
      head = (await this.commitAll(worktreePath, { message: opts.message })).commit;
    } else {
      head = await readBranch(this.#repo, opts.branch); // removed already (a predecessor's pass)
    }
    const archived = head !== undefined && head !== opts.base;
    if (archived) await git(this.#repo, ["update-ref", "-m", opts.message, opts.ref, head!]);
    await this.remove(worktreePath, { force: true }).catch(async (err: unknown) => {
      // Registered but its directory gone: drop the registration (locked, so prune keeps it).
      if (await isDir(worktreePath)) throw err;
      await runGit(this.#repo, ["worktree", "remove", "--force", "--force", worktreePath], [0, 128]);
    });
    if (archived && opts.resetBranch !== false && (await readBranch(this.#repo, opts.branch)) === head) {
      await git(this.#repo, ["update-ref", "-m", opts.message, `refs/heads/${opts.branch}`, opts.base, head!]);
    }
    return { commit: head, archived };
  }

  /**
   * Keeps a worktree's work under `ref` (created, never overwritten): its uncommitted
   * changes are committed on top of HEAD through a temporary index (the worktree's own
   * index and its branch are left as they are), or, when it has none, HEAD itself.
   * Copied include files are never archived.
   * @returns the commit the ref points at, and whether it holds uncommitted changes.
   */
  async archive(worktreePath: string, ref: string, message: string): Promise<{ commit: string; withChanges: boolean }> {
    const { commit, head } = await this.#stateCommit(worktreePath, message, false);
    // An empty old value: the ref is created, or the update fails; an archive is never replaced.
    await this.#retryOnLock("archive", () => git(this.#repo, ["update-ref", "-m", message, ref, commit, ""]));
    return { commit, withChanges: commit !== head };
  }

  /**
   * A checkpoint of a worktree an agent is working in: its state (HEAD, changes and
   * untracked files, never what the include list copied in nor ado's own files) as a
   * commit on top of HEAD, made through a temporary index, and `ref` moved to it. The
   * worktree's index, HEAD and branch are not touched, so the agent notices nothing.
   * Always a commit of its own (its message carries the caller's trailer), unless
   * `unless` gives the tree and HEAD of the previous snapshot and neither changed.
   * @returns the commit (undefined when skipped), its tree, and HEAD.
   */
  async snapshot(
    worktreePath: string,
    opts: { ref: string; message: string; unless?: { tree: string; head: string } },
  ): Promise<{ commit?: string; tree: string; head: string }> {
    const state = await this.#stateCommit(worktreePath, opts.message, true, opts.unless);
    if (!state.commit) return { tree: state.tree, head: state.head };
    await this.#retryOnLock("checkpoint", () => git(this.#repo, ["update-ref", "-m", opts.message, opts.ref, state.commit!]));
    return state;
  }

  /** Points one of ado's refs (a best-of-N variant's) at `commit`, creating or moving it. */
  async setRef(ref: string, commit: string, message: string): Promise<void> {
    await this.#retryOnLock("set ref", () => git(this.#repo, ["update-ref", "-m", message, ref, commit]));
  }

  /** Deletes one of ado's refs (a checkpoint); nothing when it is not there. */
  async deleteRef(ref: string): Promise<void> {
    await this.#retryOnLock("delete ref", () => runGit(this.#repo, ["update-ref", "-d", ref], [0, 1]));
  }

  /**
   * The worktree's state as a commit on HEAD, through a temporary index. `always`: a
   * commit even when nothing changed (same tree as HEAD); `unless`: none when tree and
   * HEAD are those given.
   */
  async #stateCommit(worktreePath: string, message: string, always: true, unless?: { tree: string; head: string }): Promise<{ commit?: string; tree: string; head: string }>;
  async #stateCommit(worktreePath: string, message: string, always: false): Promise<{ commit: string; tree: string; head: string }>;
  async #stateCommit(worktreePath: string, message: string, always: boolean, unless?: { tree: string; head: string }): Promise<{ commit?: string; tree: string; head: string }> {
    const { gitCommonDir } = await this.#init();
    const target = await realpath(worktreePath).catch(() => path.resolve(worktreePath));
    const admin = await this.#adminDirOf(target, gitCommonDir);
    const meta = admin ? await readMeta(admin).catch(() => undefined) : undefined;
    const head = (admin && (await readHead(admin, gitCommonDir))) || (await git(target, ["rev-parse", "HEAD"])).trim();
    const headTree = () => git(target, ["rev-parse", `${head}^{tree}`]).then((t) => t.trim());
    const excludes = await this.#agentExcludes(target);
    const status = await git(target, [...excludes, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all", ...excludeSpec(adoOwn(meta))]);
    let tree: string;
    if (statusEntries(status).length === 0) {
      if (!always) return { commit: head, tree: await headTree(), head };
      tree = await headTree();
    } else {
      const index = path.join(admin ?? gitCommonDir, `ado-archive-index-${randomBytes(4).toString("hex")}`);
      // Start from a copy of the worktree's index, so git re-hashes only what changed.
      const own = admin ? path.join(admin, "index") : undefined;
      if (own) await copyFile(own, index).catch(() => undefined);
      const env = { GIT_INDEX_FILE: index };
      try {
        if (!(await isFile(index))) await gitEnv(target, ["read-tree", head], env);
        await gitEnv(target, [...excludes, "add", "-A"], env);
        const local = adoOwn(meta);
        // Copies from the user's checkout (a .env) and ado's own files are never archived.
        if (local.length) await gitEnv(target, ["rm", "--cached", "-r", "-q", "--ignore-unmatch", "--", ...local.map(literal)], env);
        tree = (await gitEnv(target, ["write-tree"], env)).trim();
      } finally {
        await rm(index, { force: true });
      }
    }
    if (unless && unless.tree === tree && unless.head === head) return { tree, head };
    const identity = await identityOptions(target, { commonDir: gitCommonDir, gitDir: admin });
    const commit = (await git(target, [...identity, "commit-tree", tree, "-p", head, "-m", message])).trim();
    return { commit, tree, head };
  }

  async #init(): Promise<{ gitCommonDir: string; topLevel: string; baseDir: string }> {
    this.#setup ??= (async () => {
      const { gitCommonDir, topLevel } = await openRepo(this.#repo);
      // Git records worktree paths with symlinks resolved, so baseDir must be too.
      await mkdir(this.#baseDir, { recursive: true });
      const baseDir = await realpath(this.#baseDir);
      // Inside the user's checkout, task worktrees would show in their `git status`
      // (and be swept up by their `git add -A`) unless git ignores the directory.
      if (topLevel !== gitCommonDir && (baseDir === topLevel || baseDir.startsWith(topLevel + path.sep))) {
        const ignored = await runGit(topLevel, ["check-ignore", "-q", baseDir], [0, 1]);
        if (ignored.exitCode !== 0) {
          throw new WorktreeStateError(
            baseDir,
            `the worktree directory '${baseDir}' is inside the checkout '${topLevel}' and git does not ignore it: ` +
              `add '${path.relative(topLevel, baseDir) || "."}/' to .gitignore (or .git/info/exclude), or set worktreeDir outside the checkout`,
          );
        }
      }
      return { gitCommonDir, topLevel, baseDir };
    })().catch((err: unknown) => {
      this.#setup = undefined; // fixed (.gitignore, a commit) and called again: check again
      throw err;
    });
    return this.#setup;
  }

  /** add proper; the caller holds the repository lock. */
  async #addLocked(target: string, opts: AddWorktreeOptions, lockReason: string): Promise<void> {
    const lock = ["--lock", "--reason", lockReason];
    // What was at the path before: an undo must never touch a directory git refused.
    const entriesBefore = await entryCount(target);
    try {
      // The common case, a new branch, in one git process. --no-track: writing upstream
      // config races on .git/config.lock.
      await this.#retryOnLock(
        "add",
        () => git(this.#repo, ["worktree", "add", "--no-track", ...lock, "-b", opts.branch, target, opts.base]),
        () => this.#undoHalfAdd(target, entriesBefore, opts.branch, opts.base),
      );
      return;
    } catch (err) {
      if (err instanceof GitCommandError && err.retryable) throw err;
      // Not a lock: find out from the repository's state (not git's wording) what is in the way.
      await this.#clearWay(target, opts, err);
    }
    const entriesNow = await entryCount(target); // clearWay may have cleared the path
    await this.#retryOnLock(
      "add",
      () => git(this.#repo, ["worktree", "add", ...lock, target, opts.branch]),
      () => this.#undoHalfAdd(target, entriesNow, undefined, opts.base),
    );
  }

  /**
   * After a failed add of a new branch: makes way for reusing the branch, or rethrows.
   * A branch left at `base` by an earlier attempt is reused; one that moved is refused,
   * unless the attempt owns its branch (`ownBranch`): then it is moved to `base`, its
   * commits archived first when no other ref keeps them.
   * A worktree left at the target path (or with the branch checked out elsewhere) by a
   * dead process of this host is archived and removed; one with a live owner refuses.
   * A registration left at the target path is removed if it holds no uncommitted work;
   * an unregistered directory there is moved aside, never deleted.
   */
  async #clearWay(target: string, opts: AddWorktreeOptions, cause: unknown): Promise<void> {
    const existing = await readBranch(this.#repo, opts.branch);
    if (existing === undefined) throw cause;
    if (existing !== opts.base && !opts.ownBranch) throw new BranchConflictError(opts.branch, opts.base, existing);
    const { gitCommonDir } = await this.#init();
    let all = await this.#listAll();
    // Prune only when git itself calls something stale: a prune racing another
    // process's add could drop its registration in the instant before git locks it.
    if (all.some((w) => w.prunable !== undefined && w.locked === undefined)) {
      await this.#retryOnLock("prune", () => git(this.#repo, ["worktree", "prune"]));
      all = await this.#listAll();
    }
    const here = all.find((w) => w.path === target);
    if (here) {
      if (!(await this.#clearDeadOwners(target, gitCommonDir))) await this.#removeLocked(target, false, gitCommonDir);
    }
    const elsewhere = all.find((w) => w.branch === opts.branch && w.path !== target);
    if (elsewhere && !(await isDir(elsewhere.path))) {
      // Locked, so prune kept it, but its directory is gone: nothing there to lose.
      await this.#removeLocked(elsewhere.path, true, gitCommonDir);
    } else if (elsewhere && !(await this.#clearDeadOwners(elsewhere.path, gitCommonDir))) {
      const meta = await this.#metaOf(elsewhere.path);
      throw new BranchInUseError(opts.branch, elsewhere.path, meta ? `made by pid ${meta.pid} on ${meta.host}, which still runs or cannot be checked from here` : "not made by ado");
    }
    if (!here && (await pathExists(target))) {
      const entries = await readdir(target).catch(() => ["?"]);
      if (entries.length === 0) await rmdir(target);
      else {
        const aside = `${target}.orphaned-${new Date().toISOString().replace(/[:.]/g, "-")}`;
        await rename(target, aside);
        this.#log.warn({ path: target, movedTo: aside }, "an unregistered directory was in the way of a worktree; moved aside, not deleted");
      }
    }
    const now = await readBranch(this.#repo, opts.branch);
    if (now !== undefined && now !== opts.base) await this.#moveOwnBranch(opts, now);
  }

  /**
   * A worktree made by a process of this host that died mid-task (a SIGKILLed worker,
   * whose work nobody else could take care of) is archived, then removed, whatever the
   * registry said of it (active, committed, or nothing yet).
   * @returns whether it was (false: its owner lives, is elsewhere, or is unknown).
   */
  async #clearDeadOwners(target: string, gitCommonDir: string): Promise<boolean> {
    const admin = await this.#adminDirOf(target, gitCommonDir);
    const meta = admin ? await readMeta(admin).catch(() => undefined) : undefined;
    if (!meta || meta.pid === process.pid || ownerAlive(meta) !== false) return false;
    const ref = archiveRef(meta.runId ?? "run", meta.taskId ?? path.basename(target), new Date());
    if (await isDir(target)) {
      await this.archive(target, ref, `ado: work left by pid ${meta.pid} on ${meta.host}, which died; kept before the path was reused`);
      this.#log.warn({ path: target, pid: meta.pid, ref }, "worktree of a dead process archived and removed");
    }
    await this.#removeLocked(target, true, gitCommonDir);
    return true;
  }

  /**
   * Moves an attempt's own branch from `from` (where an earlier attempt left it) to
   * `opts.base`. Commits only that branch holds are kept under an archive ref first.
   */
  async #moveOwnBranch(opts: AddWorktreeOptions, from: string): Promise<void> {
    const unkept = await runGit(
      this.#repo,
      ["rev-list", "--count", from, "--not", `--exclude=${opts.branch}`, "--branches", "--tags", "--remotes", `--glob=${ADO_REFS}/*`],
      [0, 128],
    );
    if (unkept.exitCode !== 0 || Number(unkept.stdout.trim()) > 0) {
      const ref = archiveRef(opts.owner?.runId ?? "run", opts.owner?.taskId ?? path.basename(opts.branch), new Date());
      await this.#retryOnLock("archive", () => git(this.#repo, ["update-ref", "-m", `ado: ${opts.branch} moved to a new base; its commits kept`, ref, from, ""]));
      this.#log.warn({ branch: opts.branch, from, ref }, "task branch held commits no ref kept: archived before it was moved to the new base");
    }
    await this.#retryOnLock("move branch", () =>
      git(this.#repo, ["update-ref", "-m", `ado: next attempt of the task starts at ${opts.base}`, `refs/heads/${opts.branch}`, opts.base, from]),
    );
    this.#log.info({ branch: opts.branch, from, to: opts.base }, "task branch moved to the next attempt's base");
  }

  /** Removal proper; the caller holds the repository lock. */
  async #removeLocked(target: string, force: boolean, gitCommonDir: string): Promise<boolean> {
    const removal = await this.#prepareRemoval(target, force, gitCommonDir);
    if (!removal) return false;
    return this.#finishRemoval(removal, await this.#gitRemove(removal));
  }

  /**
   * What a removal does before git's: finds the registration, moves aside what the
   * include list put there, unlocks. Touches only this worktree and its registration, so
   * remove() runs it before taking the repository lock. Undefined: already gone.
   */
  async #prepareRemoval(target: string, force: boolean, gitCommonDir: string): Promise<Removal | undefined> {
    const admin = await this.#adminDirOf(target, gitCommonDir);
    const meta = admin ? await readMeta(admin).catch(() => undefined) : undefined;
    const exists = await pathExists(target);
    // Already gone (removed by cleanup, or a retry of a removal that went through).
    if (!admin && !exists) return undefined;
    // Without force, what the include list put there (an untracked .env copy, a
    // node_modules link) must not count as uncommitted work in git's own check, so it
    // is moved aside first (a rename, beside the worktree: same file system) and moved
    // back if the worktree stays. One status, git's, instead of ours and git's.
    const local = !force && exists ? adoOwn(meta) : [];
    const aside = local.length ? `${target}.ado-local-${randomBytes(4).toString("hex")}` : undefined;
    const moved: string[] = [];
    if (aside) {
      for (const rel of local) {
        if (!(await pathExists(path.join(target, rel)))) continue;
        await mkdir(path.dirname(path.join(aside, rel)), { recursive: true });
        await rename(path.join(target, rel), path.join(aside, rel));
        moved.push(rel);
      }
    }
    // Unlock by deleting the lock file: all `git worktree unlock` does, without a process.
    const lockFile = admin ? path.join(admin, "locked") : undefined;
    const lockReason = lockFile ? await readFile(lockFile, "utf8").catch(() => undefined) : undefined;
    if (lockFile && lockReason !== undefined) await rm(lockFile, { force: true });
    return { target, force, admin, meta, exists, aside, moved, lockFile, lockReason };
  }

  /**
   * git's removal, the part that needs the repository lock. Without force git checks
   * cleanliness itself: no status of ours on the common path. With force it deletes the
   * directory as it is (a link is removed, never followed). Returns the error, if any.
   */
  async #gitRemove(r: Removal): Promise<unknown> {
    try {
      await this.#retryOnLock("remove", () => git(this.#repo, ["worktree", "remove", ...(r.force ? ["--force"] : []), r.target]));
      return undefined;
    } catch (err) {
      return err ?? new Error("git worktree remove failed");
    }
  }

  /** After git's removal: the copies moved aside go; or, when it failed, the worktree is put back as it was (locked) and the error thrown. */
  async #finishRemoval(r: Removal, err: unknown): Promise<boolean> {
    if (err !== undefined) {
      // Kept: lock it again so that prune cannot drop it, and put the copies back.
      if (r.lockFile && r.lockReason !== undefined && (await isDir(r.admin!))) await writeFile(r.lockFile, r.lockReason);
      for (const rel of r.moved) await rename(path.join(r.aside!, rel), path.join(r.target, rel)).catch(() => undefined);
      if (r.aside) await rm(r.aside, { recursive: true, force: true });
      if (!r.force && r.exists) {
        const changes = await this.#changes(r.target, adoOwn(r.meta));
        if (changes.length > 0) throw new WorktreeDirtyError(r.target, changes);
      }
      throw err;
    }
    // Copies and links only; rm removes a link, never what it points at.
    if (r.aside) await rm(r.aside, { recursive: true, force: true });
    this.#log.debug({ path: r.target, force: r.force }, "worktree removed");
    return true;
  }

  async #changes(target: string, local: readonly string[]): Promise<string[]> {
    const out = await git(target, ["--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all", ...excludeSpec(local)]);
    return statusEntries(out);
  }

  /** Commits on the worktree's HEAD held by no other branch, tag or ado ref. */
  async #unmergedCount(e: WorktreeEntry): Promise<number | undefined> {
    if (!/^[0-9a-f]{40,64}$/.test(e.head)) return undefined;
    const exclude = e.branch ? [`--exclude=${e.branch}`] : [];
    const out = await runGit(this.#repo, ["rev-list", "--count", e.head, "--not", ...exclude, "--branches", "--tags", "--remotes", `--glob=${ADO_REFS}/*`], [0, 128]);
    return out.exitCode === 0 ? Number(out.stdout.trim()) : undefined;
  }

  async #listAll(): Promise<WorktreeEntry[]> {
    const out = await this.#retryOnLock("list", () => git(this.#repo, ["worktree", "list", "--porcelain", "-z"]));
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
      else if (current && key === "prunable") current.prunable = value;
    }
    return entries;
  }

  /**
   * The registration directory (`<common>/worktrees/<id>`) of the worktree at `target`:
   * from its `.git` file, or, when the directory is gone, by reading every
   * registration's `gitdir` file.
   */
  async #adminDirOf(target: string, gitCommonDir: string): Promise<string | undefined> {
    const root = path.join(gitCommonDir, "worktrees") + path.sep;
    const dotGit = await readFile(path.join(target, ".git"), "utf8").catch(() => undefined);
    const gitdir = dotGit ? /^gitdir: (.*)$/m.exec(dotGit)?.[1]?.trim() : undefined;
    if (gitdir && path.resolve(gitdir).startsWith(root)) return path.resolve(gitdir);
    return (await this.#adminDirs(gitCommonDir)).get(target);
  }

  /** Worktree path -> registration directory, for every registration of the repository. */
  async #adminDirs(gitCommonDir: string): Promise<Map<string, string>> {
    const root = path.join(gitCommonDir, "worktrees");
    const map = new Map<string, string>();
    for (const id of await readdir(root).catch(() => [] as string[])) {
      const gitdir = await readFile(path.join(root, id, "gitdir"), "utf8").catch(() => undefined);
      if (gitdir) map.set(path.dirname(gitdir.trim()), path.join(root, id));
    }
    return map;
  }

  async #metaOf(worktreePath: string): Promise<WorktreeMeta | undefined> {
    const { gitCommonDir } = await this.#init();
    const admin = await this.#adminDirOf(path.resolve(worktreePath), gitCommonDir);
    return admin ? readMeta(admin).catch(() => undefined) : undefined;
  }

  /** Runs `op`, retrying with backoff while git reports a lock held by another process. */
  async #retryOnLock<T>(what: string, op: () => Promise<T>, undo?: () => Promise<void>): Promise<T> {
    return retry(op, {
      attempts: MAX_LOCK_ATTEMPTS,
      backoff: Backoff.gitLock,
      retryIf: (err) => err instanceof GitCommandError && err.retryable,
      onRetry: async (err, attempt) => {
        this.#log.warn({ err, attempt, op: what }, "git lock busy, retrying");
        // The undo meets the same contention (a branch delete takes packed-refs.lock).
        if (undo) await this.#retryOnLock(`undo ${what}`, undo);
      },
    });
  }


  /**
   * Clears what a failed `worktree add` may have left, so the retry starts clean: the
   * registration (locked, so prune would keep it), the directory's content, and the
   * branch if this add created it and it still points at base. Nothing in them is work
   * yet: they were created moments ago from base. The registration is deleted on the
   * file system (what `worktree remove --force --force` does): git's own commands can
   * fail the same transient way the add just did.
   */
  async #undoHalfAdd(target: string, entriesBefore: number, createdBranch: string | undefined, base: string): Promise<void> {
    // Git registers and fills only an absent or empty directory; a non-empty one it
    // refuses (a lock error came before that check), so that one is not ours to clear.
    if (entriesBefore <= 0) {
      const { gitCommonDir } = await this.#init();
      const admin = (await this.#adminDirs(gitCommonDir)).get(target);
      if (admin) await rm(admin, { recursive: true, force: true });
      await rm(target, { recursive: true, force: true });
      if (entriesBefore === 0) await mkdir(target, { recursive: true });
    }
    if (createdBranch !== undefined && (await readBranch(this.#repo, createdBranch)) === base) {
      await git(this.#repo, ["update-ref", "-d", `refs/heads/${createdBranch}`, base]);
    }
  }
}


/**
 * The worktrees of `repo` that have `branch` checked out, with their ado.json (absent
 * when there is none, or it is unreadable). What the stealer looks for when an attempt
 * was lost with its worker, whatever the registry recorded of it.
 */
export async function worktreesOnBranch(repo: string, branch: string): Promise<Array<{ path: string; exists: boolean; meta?: WorktreeMeta }>> {
  const { gitCommonDir } = await openRepo(repo);
  const out = await git(repo, ["worktree", "list", "--porcelain", "-z"]);
  const found: Array<{ path: string; exists: boolean; meta?: WorktreeMeta }> = [];
  let current: string | undefined;
  for (const field of out.split("\0")) {
    if (field.startsWith("worktree ")) current = field.slice("worktree ".length);
    else if (current && field === `branch refs/heads/${branch}`) found.push({ path: current, exists: await isDir(current) });
  }
  const root = path.join(gitCommonDir, "worktrees");
  for (const id of found.length ? await readdir(root).catch(() => [] as string[]) : []) {
    const gitdir = await readFile(path.join(root, id, "gitdir"), "utf8").catch(() => undefined);
    const hit = gitdir ? found.find((f) => f.path === path.dirname(gitdir.trim())) : undefined;
    if (hit) hit.meta = await readMeta(path.join(root, id)).catch(() => undefined);
  }
  return found;
}

/** Whether the process that created a worktree still runs: undefined when it ran on another host. */
export function ownerAlive(meta: Pick<WorktreeMeta, "host" | "pid">, host = hostname()): boolean | undefined {
  if (meta.host !== host) return undefined;
  try {
    process.kill(meta.pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * The commit a worktree's HEAD points at, read from the ref store on disk (its `HEAD`
 * file, then the branch's loose ref or `packed-refs`): undefined when that does not tell
 * (refs kept another way, a symbolic ref to a symbolic ref, an unborn branch), for the
 * caller to ask git.
 */
async function readHead(admin: string, gitCommonDir: string): Promise<string | undefined> {
  if (await pathExists(path.join(gitCommonDir, "reftable"))) return undefined;
  const head = (await readFile(path.join(admin, "HEAD"), "utf8").catch(() => "")).trim();
  if (OBJECT_ID.test(head)) return head;
  const ref = /^ref: (refs\/heads\/.+)$/.exec(head)?.[1];
  if (!ref) return undefined;
  const loose = (await readFile(path.join(gitCommonDir, ref), "utf8").catch(() => "")).trim();
  if (OBJECT_ID.test(loose)) return loose;
  if (loose) return undefined;
  for (const line of (await readFile(path.join(gitCommonDir, "packed-refs"), "utf8").catch(() => "")).split("\n")) {
    const m = /^([0-9a-f]{40}|[0-9a-f]{64}) (.+)$/.exec(line);
    if (m && m[2] === ref) return m[1];
  }
  return undefined;
}

const OBJECT_ID = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

async function readMeta(admin: string): Promise<WorktreeMeta> {
  const text = await readFile(path.join(admin, META_FILE), "utf8");
  const parsed = WorktreeMetaSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`not an ado worktree record: ${parsed.error.issues[0]?.message ?? "invalid"}`);
  return parsed.data;
}

async function writeMeta(admin: string, meta: WorktreeMeta): Promise<void> {
  await writeFile(path.join(admin, META_FILE), JSON.stringify(meta) + "\n");
}

/**
 * What ado put in a worktree and never counts as the agent's work: its own directory
 * (`.ado/`: inputs and prompt files) and what the include list copied or linked there.
 * (A repository that tracks a `.ado/` directory of its own would see changes there
 * ignored too.)
 */
/** aider's own files in a repository (`.aider.tags.cache.v3/`, histories, `.aider.conf.yml` when untracked): never an agent's work. */
const AIDER_FILES = ".aider*";

function adoOwn(meta: Pick<WorktreeMeta, "local"> | undefined): string[] {
  return [WORKTREE_ADO_DIR, ...(meta?.local ?? [])];
}

/**
 * Pathspec for everything except `local` (literal paths: no glob surprises). For
 * status only: `git add` refuses such a pathspec when it names an ignored path.
 */
function excludeSpec(local: readonly string[]): string[] {
  return local.length ? ["--", ".", ...local.map((l) => `:(exclude,literal)${l}`)] : [];
}

const literal = (p: string) => `:(literal)${p}`;

function splitZ(out: string): string[] {
  return out.split("\0").filter((f) => f !== "");
}

/** `status --porcelain=v1 -z` entries, a rename's source path folded into its entry. */
function statusEntries(out: string): string[] {
  const fields = out.split("\0");
  const entries: string[] = [];
  for (let i = 0; i < fields.length; i++) {
    const e = fields[i]!;
    if (e === "") continue;
    entries.push(/[RC]/.test(e.slice(0, 2)) ? `${e} <- ${fields[++i] ?? ""}` : e);
  }
  return entries;
}

/** `git <args>` in `cwd` with extra environment (here: a temporary index). */
function gitEnv(cwd: string, args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("git", args, { cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, GIT_TERMINAL_PROMPT: "0", LC_ALL: "C", ...env } }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout.replace(/\n$/, ""));
      const exit = typeof error.code === "number" ? { exitCode: error.code, stdout, stderr } : undefined;
      reject(new GitCommandError(args, exit, { cause: error }));
    });
  });
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Entries in directory `p`: -1 when there is no directory. */
async function entryCount(p: string): Promise<number> {
  return readdir(p).then(
    (e) => e.length,
    () => -1,
  );
}

async function pathExists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

async function isDir(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}
