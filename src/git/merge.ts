/**
 * Merging a commit into a branch without any work tree: `merge-tree --write-tree`
 * computes the result from objects alone, `commit-tree` records it, and `update-ref`
 * moves the branch only if it still points where the merge started (compare-and-swap),
 * so concurrent mergers never lose one another's merges and no checkout is touched.
 */
import { BranchNotFoundError, GitCommandError, MergeRaceError } from "./errors.js";
import { git, identityOptions, runGit } from "./exec.js";
import { isAncestor, readBranch, resolveCommit } from "./repo.js";
import { sleep } from "../runtime/clock.js";
import { Backoff, backoffDelay } from "../runtime/retry.js";

/** What `mergeIntoBranch` did. Only a conflict leaves the target branch where it was. */
export type MergeOutcome =
  | { kind: "up-to-date"; commit: string }
  | { kind: "fast-forward"; commit: string }
  | { kind: "merged"; commit: string; tree: string }
  | {
      kind: "conflict";
      /** Paths with conflicts, each once. */
      files: string[];
      /** Git's informational and CONFLICT messages, one per line. */
      messages: string;
    };

export interface MergeIntoBranchOptions {
  /** Branch name without `refs/heads/`, e.g. `ado/r1/integration`. It must exist. */
  target: string;
  /** Commit sha or branch to merge. */
  source: string;
  /** Message of the merge commit. */
  message: string;
}

const MAX_MERGE_ATTEMPTS = 8;

/**
 * Merges `source` into the branch `target`, fast-forwarding when possible.
 * @param repo any directory inside the repository (a bare repository works too)
 * @throws BranchNotFoundError when `target` does not exist.
 * @throws UnknownRevisionError when `source` names no commit.
 * @throws MergeRaceError when other writers moved `target` during every attempt.
 */
export async function mergeIntoBranch(repo: string, opts: MergeIntoBranchOptions): Promise<MergeOutcome> {
  const source = await resolveCommit(repo, opts.source);
  for (let attempt = 1; attempt <= MAX_MERGE_ATTEMPTS; attempt++) {
    const old = await readBranch(repo, opts.target);
    if (old === undefined) throw new BranchNotFoundError(repo, opts.target);
    if (await isAncestor(repo, source, old)) return { kind: "up-to-date", commit: old };

    let outcome: MergeOutcome;
    if (await isAncestor(repo, old, source)) {
      outcome = { kind: "fast-forward", commit: source };
    } else {
      const result = await mergeTrees(repo, old, source);
      if (result.kind === "conflict") return result;
      const identity = await identityOptions(repo);
      const commit = (
        await git(repo, [...identity, "commit-tree", result.tree, "-p", old, "-p", source, "-m", opts.message])
      ).trim();
      outcome = { kind: "merged", commit, tree: result.tree };
    }
    if (await compareAndSwap(repo, opts.target, outcome.commit, old)) return outcome;
    await sleep(backoffDelay(attempt, Backoff.gitLock));
  }
  throw new MergeRaceError(opts.target, MAX_MERGE_ATTEMPTS);
}

/**
 * Points `branch` at `next` if it is still at `expected`.
 * @returns false when another writer got there first (or held the ref's lock).
 */
export async function compareAndSwap(repo: string, branch: string, next: string, expected: string): Promise<boolean> {
  try {
    await git(repo, ["update-ref", "-m", "ado: merge", `refs/heads/${branch}`, next, expected]);
    return true;
  } catch (err) {
    // A lost race is told apart from a real failure by re-reading the ref, not by parsing git's message.
    const lostRace = (await readBranch(repo, branch)) !== expected;
    if (lostRace || (err instanceof GitCommandError && err.retryable)) return false;
    throw err;
  }
}

/**
 * Runs `git merge-tree --write-tree -z --name-only`. Its output is NUL-separated: the
 * result tree; on conflict, each conflicted path, then an empty field; then per message
 * a path count, that many paths, a conflict type and the message text.
 */
async function mergeTrees(
  repo: string,
  ours: string,
  theirs: string,
): Promise<{ kind: "clean"; tree: string } | Extract<MergeOutcome, { kind: "conflict" }>> {
  const { stdout, exitCode } = await runGit(
    repo,
    ["merge-tree", "--write-tree", "-z", "--name-only", ours, theirs],
    [0, 1],
  );
  const fields = stdout.split("\0");
  if (exitCode === 0) return { kind: "clean", tree: fields[0] ?? "" };

  let i = 1;
  const files = new Set<string>();
  for (; i < fields.length && fields[i] !== ""; i++) files.add(fields[i] ?? "");
  i++;
  const messages: string[] = [];
  while (i < fields.length && fields[i] !== "") {
    const pathCount = Number(fields[i]);
    i += 1 + pathCount + 1; // skip the count, the paths and the conflict type
    messages.push((fields[i] ?? "").trimEnd());
    i++;
  }
  return { kind: "conflict", files: [...files], messages: messages.join("\n") };
}
