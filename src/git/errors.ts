/**
 * Error classes of the git layer. They extend the runtime's `AdoError`, so each names
 * itself, keeps the error it wraps as `cause` and says whether retrying can succeed.
 */
import { AdoError, type AdoErrorOptions } from "../runtime/errors.js";

/** What a git process left behind when it exited non-zero. */
export interface GitExit {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Git reports a held lock file (`index.lock`, `config.lock`, a ref's `.lock`) only in
 * stderr text, with no distinct exit code, so this is the one place that reads git's
 * wording. The holder is another git process that finishes soon, hence retryable.
 *
 * The same holds for a worktree another process is creating or removing at that
 * moment: every worktree command reads all registrations (`<common>/worktrees/<id>`),
 * and git dies on one whose `commondir` file is not written yet ("failed to read
 * .git/worktrees/<id>/commondir: Success") or whose directory just went away ("Invalid
 * path '.../.git/worktrees/<id>'"). Both seen with 10 processes adding and removing 5
 * worktrees each (test/git/worktrees-concurrency.test.ts). A task worktree's own path
 * (`<base>/<runId>/<taskId>`) has two segments there, so it does not match.
 */
function isLockContention(stderr: string): boolean {
  return (
    /\.lock\b|File exists|could not lock/i.test(stderr) ||
    /failed to read \S*worktrees\/[^/\s]+\/commondir|Invalid path '[^']*\/worktrees\/[^/']+'/.test(stderr)
  );
}

/** A git command failed. Retryable when git says another process holds a lock. */
export class GitCommandError extends AdoError {
  constructor(
    readonly args: readonly string[],
    readonly exit: GitExit | undefined,
    opts: AdoErrorOptions = {},
  ) {
    const stderr = exit?.stderr.trim() ?? "";
    const retryable = isLockContention(stderr);
    const advice = retryable ? ": another git process holds a lock here; retry when it has finished" : "";
    const message = exit
      ? `git ${args.join(" ")} exited with ${exit.exitCode}: ${stderr || "(no message)"}${advice}`
      : `git ${args.join(" ")} could not be run: is git installed and on PATH? (apt-get install -y git)`;
    super(message, {
      ...opts,
      retryable,
    });
  }
}

/** The directory is missing or not inside a git work tree. */
export class NotAGitRepositoryError extends AdoError {
  constructor(
    readonly dir: string,
    opts: AdoErrorOptions = {},
  ) {
    super(`'${dir}' is not a git repository: pass --repo pointing at a git checkout`, {
      ...opts,
      retryable: false,
    });
  }
}

/** The repository has no commit for worktrees and merges to start from. */
export class EmptyRepositoryError extends AdoError {
  constructor(readonly dir: string) {
    super(
      `'${dir}' has no commits yet: make a first commit (e.g. git commit --allow-empty -m init) and retry`,
      { retryable: false },
    );
  }
}

/** A revision does not resolve to a commit. */
export class UnknownRevisionError extends AdoError {
  constructor(
    readonly repo: string,
    readonly rev: string,
  ) {
    super(`'${rev}' does not name a commit in '${repo}': pass a branch, tag or commit sha that exists`, {
      retryable: false,
    });
  }
}

/** A branch that must exist does not. */
export class BranchNotFoundError extends AdoError {
  constructor(
    readonly repo: string,
    readonly branch: string,
  ) {
    super(`branch '${branch}' does not exist in '${repo}': create it before merging into it`, {
      retryable: false,
    });
  }
}

/** A branch to be (re)used for a worktree already points somewhere other than its base. */
export class BranchConflictError extends AdoError {
  constructor(
    readonly branch: string,
    readonly base: string,
    readonly actual: string,
  ) {
    super(
      `branch '${branch}' already exists at ${actual}, not at the requested base ${base}: ` +
        `merge or delete that branch, or use another branch name`,
      { retryable: false },
    );
  }
}

/**
 * A task's branch is checked out in another worktree whose process still runs (or runs
 * on another host): an earlier attempt of the task, still at work. Retryable: it ends,
 * or its worker is declared dead and its worktree cleared.
 */
export class BranchInUseError extends AdoError {
  constructor(
    readonly branch: string,
    readonly path: string,
    why: string,
  ) {
    super(`branch '${branch}' is checked out in the worktree '${path}', ${why}: the attempt there must end (or its worker be declared dead) first`, {
      retryable: true,
    });
  }
}

/** A worktree name would place the worktree outside the manager's base directory. */
export class InvalidWorktreeNameError extends AdoError {
  constructor(
    readonly worktreeName: string,
    readonly baseDir: string,
  ) {
    super(
      `worktree name '${worktreeName}' does not stay under '${baseDir}': use a relative path without '..'`,
      { retryable: false },
    );
  }
}

/** Removing a worktree would lose uncommitted work. */
export class WorktreeDirtyError extends AdoError {
  constructor(
    readonly path: string,
    /** `git status --porcelain` entries, e.g. `?? notes.txt`, ` M src/a.ts`. */
    readonly changes: readonly string[],
  ) {
    const shown = changes.slice(0, 10).join(", ") + (changes.length > 10 ? `, and ${changes.length - 10} more` : "");
    super(
      `worktree '${path}' has uncommitted changes (${shown}): commit them first, or remove with force to discard them`,
      { retryable: false },
    );
  }
}

/** Concurrent writers kept moving a branch while a merge into it was being computed. */
export class MergeRaceError extends AdoError {
  constructor(
    readonly target: string,
    readonly attempts: number,
  ) {
    super(`branch '${target}' moved under ${attempts} merge attempts in a row: retry the merge`, {
      retryable: true,
    });
  }
}

/** The include list would copy more into a new worktree than the configured budget allows. */
export class IncludeTooLargeError extends AdoError {
  constructor(
    /** The include pattern whose matches pushed the copy over the budget. */
    readonly pattern: string,
    readonly bytes: number,
    readonly maxBytes: number,
  ) {
    super(
      `worktrees.include '${pattern}' would copy ${mib(bytes)} into each worktree (limit ${mib(maxBytes)}): ` +
        `list large directories under worktrees.dependencies (shared by a symlink, or skipped) instead, ` +
        `narrow the pattern, or raise worktrees.maxCopyBytes`,
      { retryable: false },
    );
  }
}

/** A worktree (or its owner) is in a state that forbids the operation; the message says which and what to do. */
export class WorktreeStateError extends AdoError {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message, { retryable: false });
  }
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}
