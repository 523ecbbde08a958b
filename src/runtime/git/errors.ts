/**
 * Error classes of the git layer. They extend the runtime's `AdoError`, so each names
 * itself, keeps the error it wraps as `cause` and says whether retrying can succeed.
 */
import { AdoError, type AdoErrorOptions } from "../errors.js";

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
 */
function isLockContention(stderr: string): boolean {
  return /\.lock\b|File exists|could not lock/i.test(stderr);
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
