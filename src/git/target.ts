/**
 * The end of a run with `--merge-into <branch>`: bring the user's branch (e.g. main) up
 * to the integration branch without checking anything out in the user's tree. The ref
 * moves by compare-and-swap: a fast-forward when the branch has not moved since the
 * run's base (or is otherwise behind the integration branch), a clean merge commit when
 * it moved and merges cleanly, and a refusal otherwise. A branch that is checked out in
 * some worktree is never moved behind that checkout's back (its index and files would
 * silently disagree with its HEAD): ado refuses and names the command to run there,
 * or, only when allowed and safe, runs `git merge --ff-only` in it.
 */
import { stat } from "node:fs/promises";
import path from "node:path";
import { BranchNotFoundError, MergeRaceError } from "./errors.js";
import { git, identityOptions, runGit } from "./exec.js";
import { mergeTreesDetailed } from "./conflicts.js";
import { compareAndSwap } from "./merge.js";
import { gitText } from "./plumbing.js";
import { isAncestor, readBranch } from "./repo.js";
import { sleep } from "../runtime/clock.js";
import { Backoff, backoffDelay } from "../runtime/retry.js";

export interface MergeIntoTargetOptions {
  /** Any directory in the repository. */
  repo: string;
  /** The run's integration branch (no refs/heads/). */
  integration: string;
  /** The branch to update, e.g. `main`. */
  into: string;
  /** The run's base commit. */
  base: string;
  /** Message of the merge commit, when one is needed. */
  message: string;
  /**
   * When `into` is checked out in a clean worktree and the update is a fast-forward,
   * run `git merge --ff-only` there. Off by default: the user's checkout is theirs.
   */
  updateCheckedOut?: boolean;
}

export type MergeIntoTargetOutcome =
  | { kind: "fast-forward" | "merged" | "up-to-date"; commit: string }
  | { kind: "refused"; reason: string };

const MAX_ATTEMPTS = 8;

/**
 * Updates `into` to contain `integration`; see the file's header for the rules.
 * @throws BranchNotFoundError when the integration branch does not exist.
 * @throws MergeRaceError when other writers moved `into` during every attempt.
 */
export async function mergeIntoTarget(opts: MergeIntoTargetOptions): Promise<MergeIntoTargetOutcome> {
  const repo = path.resolve(opts.repo);
  const integration = await readBranch(repo, opts.integration);
  if (integration === undefined) throw new BranchNotFoundError(repo, opts.integration);
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const into = await readBranch(repo, opts.into);
    if (into === undefined) {
      return {
        kind: "refused",
        reason: `branch '${opts.into}' does not exist: create it (git branch ${opts.into} ${opts.base.slice(0, 12)}) or name an existing branch to merge into`,
      };
    }
    if (await isAncestor(repo, integration, into)) return { kind: "up-to-date", commit: into };

    const fastForward = await isAncestor(repo, into, integration);
    let tree: string | undefined;
    if (!fastForward) {
      const merged = await mergeTreesDetailed(repo, into, integration);
      if (merged.kind === "conflict") {
        const moved = into === opts.base ? "" : ` has moved since the run's base ${opts.base.slice(0, 12)} (now ${into.slice(0, 12)}) and`;
        return {
          kind: "refused",
          reason:
            `'${opts.into}'${moved} does not merge cleanly with '${opts.integration}' ` +
            `(conflicts in ${merged.paths.map((p) => p.path).join(", ")}): ` +
            `merge it yourself: git switch ${opts.into} && git merge ${opts.integration}`,
        };
      }
      tree = merged.tree;
    }

    const checkout = await checkedOutIn(repo, opts.into);
    if (checkout !== undefined) {
      return updateCheckout(checkout, opts, integration, fastForward);
    }

    const commit =
      tree === undefined
        ? integration
        : await gitText(repo, [...(await identityOptions(repo)), "commit-tree", tree, "-p", into, "-p", integration, "-F", "-"], {
            input: opts.message,
          });
    if (await compareAndSwap(repo, opts.into, commit, into)) {
      return { kind: fastForward ? "fast-forward" : "merged", commit };
    }
    await sleep(backoffDelay(attempt, Backoff.gitLock));
  }
  throw new MergeRaceError(opts.into, MAX_ATTEMPTS);
}

/** Refuses, or (allowed, clean, fast-forward) updates the checkout where `into` is checked out. */
async function updateCheckout(
  worktree: string,
  opts: MergeIntoTargetOptions,
  integration: string,
  fastForward: boolean,
): Promise<MergeIntoTargetOutcome> {
  const command = fastForward
    ? `git -C ${shellQuote(worktree)} merge --ff-only ${opts.integration}`
    : `git -C ${shellQuote(worktree)} merge ${opts.integration}`;
  const checkedOut = `'${opts.into}' is checked out in ${worktree}, and ado does not change a checkout behind its back`;
  if (!fastForward) return { kind: "refused", reason: `${checkedOut}: to merge, run ${command}` };
  if (!opts.updateCheckedOut) return { kind: "refused", reason: `${checkedOut}: to fast-forward it, run ${command}` };
  // Probe without taking the index lock; untracked files are left to merge --ff-only, which refuses to overwrite them.
  const changes = await git(worktree, ["--no-optional-locks", "status", "--porcelain=v1", "--untracked-files=no"]);
  if (changes.trim() !== "") {
    return { kind: "refused", reason: `${checkedOut}, and it has uncommitted changes: commit or stash them, then run ${command}` };
  }
  const { exitCode } = await runGit(worktree, ["merge", "--ff-only", "--quiet", integration], [0, 1, 128]);
  if (exitCode !== 0) {
    return { kind: "refused", reason: `git merge --ff-only in ${worktree} failed (untracked files in the way?): look there, then run ${command}` };
  }
  return { kind: "fast-forward", commit: integration };
}

/** The path of the worktree that has `branch` checked out, if one does (and still exists on disk). */
async function checkedOutIn(repo: string, branch: string): Promise<string | undefined> {
  const out = await git(repo, ["worktree", "list", "--porcelain", "-z"]);
  let current: string | undefined;
  for (const field of out.split("\0")) {
    if (field.startsWith("worktree ")) current = field.slice("worktree ".length);
    else if (field === `branch refs/heads/${branch}` && current !== undefined) {
      // A registration whose directory is gone checks nothing out.
      if (await stat(current).then(() => true, () => false)) return current;
    }
  }
  return undefined;
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./@:-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
