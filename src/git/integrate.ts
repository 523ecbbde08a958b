/**
 * The git side of the merge coordinator: folds a task's commit into the run's
 * integration branch as a merge commit, a squash commit or a linear replay, resolves
 * what it safely can, validates the result, and moves the branch by compare-and-swap
 * only when all of that passed. This file is the entry point: the public types, the
 * modes and the attempt loop. The merge step with its conflict handling and the
 * validation are in integrate-step.ts, the --manual flow in manual.ts, --merge-into
 * in target.ts; all are exported from here.
 *
 * The clean path needs no work tree: `merge-tree --write-tree`, `commit-tree`,
 * `update-ref <new> <old>`. Conflicts go through, in order:
 *   1. per-path rules: union/ours/theirs computed from the stage blobs with a temporary
 *      index (conflicts.ts); `regenerate` runs its command in a scratch worktree;
 *   2. the resolver agent, in a scratch worktree holding the merge in progress; its
 *      result counts only if every conflicted file is free of conflict markers;
 *   3. otherwise a `conflict` outcome with every side's content, for a human.
 * Scratch worktrees (scratch.ts) are removed in every case and never touch the user's
 * checkout. The target branch is untouched unless the outcome is `merged`.
 *
 * Linear mode replays each of the task's commits without a work tree on git 2.39 (no
 * `merge-tree --merge-base`): a throwaway commit holding the current head's tree with
 * the replayed commit's parent as its only parent makes that parent the merge base, so
 * `merge-tree` computes exactly a cherry-pick (renames included). Measured against
 * `git cherry-pick` in a scratch worktree by bench/merge.ts.
 */
import { BranchNotFoundError, MergeRaceError } from "./errors.js";
import { git } from "./exec.js";
import type { PathRule } from "./conflicts.js";
import type { Conflict, IntegrateOptions, IntegrateOutcome, Merged, Resolved } from "./integrate-types.js";
import { InvalidIntegrateOptionsError } from "./integrate-errors.js";
import {
  type Candidate,
  MAX_ATTEMPTS,
  type Session,
  mergeStep,
  openSession,
  throwIfAborted,
  upToDate,
  validateCandidate,
} from "./integrate-step.js";
import { compareAndSwap } from "./merge.js";
import { gitText, treeOf } from "./plumbing.js";
import { isAncestor, readBranch } from "./repo.js";
import { sleep } from "../runtime/clock.js";
import { Backoff, backoffDelay } from "../runtime/retry.js";

export type { CommandSpec, ConflictFile, PathRule, PathStrategy } from "./conflicts.js";
export type * from "./integrate-types.js";
export { completeManualResolution, prepareManualResolution } from "./manual.js";
export { type BatchItem, type BatchOutcome, type IntegrateBatchOptions, type IntegrateBatchResult, integrateBatch } from "./integrate-batch.js";
// The end-of-run --merge-into lives in target.ts; exported here too, as the merge coordinator's one git entry point.
export { type MergeIntoTargetOptions, type MergeIntoTargetOutcome, mergeIntoTarget } from "./target.js";

/**
 * Merges `source` into `target` per mode; on conflict applies the rules, then the
 * resolver; validates; moves `target` by compare-and-swap only if everything passed.
 * `target` is untouched unless the outcome is `merged`.
 * @throws BranchNotFoundError when `target` does not exist.
 * @throws UnknownRevisionError when `source` or `base` names no commit.
 * @throws InvalidIntegrateOptionsError for a bad mode, rule or command.
 * @throws IntegrationAbortedError when `signal` fired (nothing was changed).
 * @throws MergeRaceError when other writers moved `target` during every attempt.
 */
export function integrate(opts: IntegrateOptions): Promise<IntegrateOutcome> {
  return runIntegration(opts, opts.rules ?? [], opts.resolver);
}

/**
 * For a human's HITL choice: the configured rules resolve what they can, as in the first
 * merge (a union rule's changelog stays the union of both sides); each path they leave,
 * which is what the person was asked about, takes the chosen side: `ours` the
 * integration branch's, `theirs` the task's (hunk by hunk, as `git merge -X
 * ours|theirs`; where one side deleted a file, that side's deletion or file). The
 * resolver is not used; validation is.
 */
export function integrateChoosing(opts: IntegrateOptions, choice: "ours" | "theirs"): Promise<IntegrateOutcome> {
  if (choice !== "ours" && choice !== "theirs") {
    return Promise.reject(new InvalidIntegrateOptionsError(`choice '${String(choice)}': use ours or theirs`));
  }
  return runIntegration(opts, opts.rules ?? [], undefined, choice);
}

async function runIntegration(
  opts: IntegrateOptions,
  rules: readonly PathRule[],
  resolver: IntegrateOptions["resolver"],
  choice?: "ours" | "theirs",
): Promise<IntegrateOutcome> {
  const s = await openSession(opts, rules, resolver, choice);
  try {
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      throwIfAborted(s);
      const old = await readBranch(s.repo, opts.target);
      if (old === undefined) throw new BranchNotFoundError(s.repo, opts.target);
      const built = await buildCandidate(s, old);
      if (built.kind !== "candidate") return built;
      if (opts.validate) {
        const failed = await validateCandidate(s, built.commit);
        if (failed) return failed;
      }
      throwIfAborted(s);
      if (await compareAndSwap(s.repo, opts.target, built.commit, old)) {
        return { kind: "merged", commit: built.commit, how: built.how, resolved: built.resolved };
      }
      // Another writer moved the target: everything is recomputed against its new head.
      await sleep(backoffDelay(attempt, Backoff.gitLock));
    }
    throw new MergeRaceError(opts.target, MAX_ATTEMPTS);
  } finally {
    await s.cleanup();
  }
}

/** The commit `target` would move to, per mode; or a conflict; or up-to-date. */
async function buildCandidate(s: Session, old: string): Promise<Candidate | Merged | Conflict> {
  const { repo, source, opts } = s;
  if (await isAncestor(repo, source, old)) return upToDate(old);
  switch (opts.mode) {
    case "merge": {
      if (await isAncestor(repo, old, source)) return { kind: "candidate", commit: source, how: "fast-forward", resolved: [] };
      const step = await mergeStep(s, old, source);
      if (step.kind === "conflict") return step;
      const commit = await gitText(repo, [...s.identity, "commit-tree", step.tree, "-p", old, "-p", source, "-F", "-"], {
        input: opts.message,
      });
      return { kind: "candidate", commit, how: "merged", resolved: step.resolved };
    }
    case "squash": {
      const step = await mergeStep(s, old, source);
      if (step.kind === "conflict") return step;
      if (step.tree === (await treeOf(repo, old))) return upToDate(old);
      const commit = await gitText(repo, [...s.identity, "commit-tree", step.tree, "-p", old, "-F", "-"], { input: opts.message });
      return { kind: "candidate", commit, how: "squashed", resolved: step.resolved };
    }
    case "linear":
      if (await isAncestor(repo, old, source)) return { kind: "candidate", commit: source, how: "fast-forward", resolved: [] };
      return replay(s, old);
  }
}

interface TaskCommit {
  sha: string;
  parents: string[];
  authorName: string;
  authorEmail: string;
  /** Raw `<seconds> <zone>`. */
  authorDate: string;
  message: string;
}

/**
 * The task's own non-merge commits, oldest first: in base..source, and not already in
 * the target (a task started from an integration commit carries earlier tasks' commits).
 */
async function taskCommits(s: Session, old: string): Promise<TaskCommit[]> {
  const out = await git(s.repo, [
    "log",
    "--reverse",
    "--no-merges",
    "-z",
    "--date=raw",
    "--format=%H%x01%P%x01%an%x01%ae%x01%ad%x01%B",
    s.source,
    `^${s.base}`,
    `^${old}`,
    "--",
  ]);
  return out
    .split("\0")
    .filter((entry) => entry !== "")
    .map((entry) => {
      const [sha = "", parents = "", authorName = "", authorEmail = "", authorDate = "", ...rest] = entry.split("\x01");
      return { sha, parents: parents.split(" ").filter(Boolean), authorName, authorEmail, authorDate, message: rest.join("\x01") };
    });
}

/** Linear mode: replays the task's commits onto `old`, keeping authors and messages. */
async function replay(s: Session, old: string): Promise<Candidate | Merged | Conflict> {
  const { repo } = s;
  const resolved: Resolved[] = [];
  let head = old;
  let headTree = await treeOf(repo, old);
  for (const c of await taskCommits(s, old)) {
    throwIfAborted(s);
    const parent = c.parents[0];
    if (parent === head) {
      // As rebase does: a commit already on top of the head is kept as it is.
      head = c.sha;
      headTree = await treeOf(repo, head);
      continue;
    }
    // A throwaway commit with the head's tree and c's parent: merging c into it is a cherry-pick of c.
    const ours = await gitText(repo, [...s.identity, "commit-tree", headTree, ...(parent ? ["-p", parent] : []), "-m", "ado: replay base"]);
    const step = await mergeStep(s, ours, c.sha, { allowUnrelated: parent === undefined });
    if (step.kind === "conflict") {
      const subject = c.message.split("\n", 1)[0] ?? "";
      const where = `replaying ${c.sha.slice(0, 12)} (${subject}) onto '${s.opts.target}'`;
      return { ...step, messages: `${where}:\n${step.messages}`, reason: `${where}: ${step.reason}` };
    }
    resolved.push(...step.resolved);
    if (step.tree === headTree) continue; // its changes are in the target already
    const env = {
      GIT_AUTHOR_NAME: c.authorName,
      GIT_AUTHOR_EMAIL: c.authorEmail,
      GIT_AUTHOR_DATE: `@${c.authorDate}`,
    };
    head = await gitText(repo, [...s.identity, "commit-tree", step.tree, "-p", head, "-F", "-"], { input: c.message, env });
    headTree = step.tree;
  }
  if (head === old) return upToDate(old);
  return { kind: "candidate", commit: head, how: "rebased", resolved };
}
