/**
 * `ado hitl resolve --manual`: a worktree holding the conflict for a person to resolve
 * and commit, and the completion that checks their work, validates it and lands it on
 * the integration branch by compare-and-swap. Exported through integrate.ts.
 */
import { access, readFile, realpath, writeFile } from "node:fs/promises";
import path from "node:path";
import { BranchNotFoundError, MergeRaceError } from "./errors.js";
import { git, identityOptions, runGit } from "./exec.js";
import { describeConflicts, hasLeftoverMarkers, mergeTreesDetailed } from "./conflicts.js";
import { InvalidIntegrateOptionsError, ManualResolutionExistsError, NotAManualResolutionError } from "./integrate-errors.js";
import {
  type Candidate,
  MAX_ATTEMPTS,
  type Session,
  applyResolutions,
  openSession,
  planRules,
  runRegenerate,
  throwIfAborted,
  upToDate,
  validateCandidate,
  worktreeConflicts,
} from "./integrate-step.js";
import type { Conflict, IntegrateOptions, IntegrateOutcome, Resolved } from "./integrate-types.js";
import { compareAndSwap } from "./merge.js";
import { gitText, readBlobs, treeOf } from "./plumbing.js";
import { isAncestor, readBranch } from "./repo.js";
import { addScratchWorktree, removeScratchWorktree, startMerge, unmergedPaths } from "./scratch.js";
import { sleep } from "../runtime/clock.js";
import { Backoff, backoffDelay } from "../runtime/retry.js";

/** Name of the record prepareManualResolution leaves in the manual worktree's git dir. */
const MANUAL_RECORD = "ado-manual-resolution.json";

/** What prepareManualResolution records for completeManualResolution. */
interface ManualRecord {
  version: 1;
  target: string;
  /** The target's head when the worktree was made: the user's commit must contain it. */
  targetHead: string;
  source: string;
  /** Every path that was conflicted, for the marker check at completion. */
  files: string[];
  /** The paths the rules resolved before the person got the worktree. */
  resolved: Resolved[];
}

/**
 * For `--manual`: a worktree at `<scratchDir>/manual/<name>` on a new branch `branch`
 * at the target's head, with the merge of `source` in progress (conflict markers
 * written, MERGE_HEAD set) so the user can resolve, `git add` and commit. The
 * configured union/ours/theirs/regenerate rules are applied first, so `files` is what
 * is left for the person; the resolver is not run. In linear mode too the whole task
 * is merged at once (its completion then lands as one commit).
 * @throws ManualResolutionExistsError when `branch` or the directory exists.
 */
export async function prepareManualResolution(
  opts: IntegrateOptions,
  name: string,
  branch: string,
): Promise<{ worktree: string; branch: string; files: string[] }> {
  if (typeof name !== "string" || name === "" || name.includes("/") || name.includes("\\") || name === "." || name === "..") {
    throw new InvalidIntegrateOptionsError(`manual worktree name '${name}': use a single directory name such as 'r1-t3'`);
  }
  const s = await openSession(opts, opts.rules ?? [], undefined);
  try {
    const old = await readBranch(s.repo, opts.target);
    if (old === undefined) throw new BranchNotFoundError(s.repo, opts.target);
    if ((await readBranch(s.repo, branch)) !== undefined) throw new ManualResolutionExistsError(`branch '${branch}'`);
    const dir = path.join(path.resolve(opts.scratchDir), "manual", name);
    if (await exists(dir)) throw new ManualResolutionExistsError(`directory '${dir}'`);

    const wt = await addScratchWorktree(s.repo, opts.scratchDir, old, { sub: "manual", name, branch });
    try {
      await startMerge(wt.path, s.source);
      const merged = await mergeTreesDetailed(s.repo, old, s.source);
      const conflicts = await worktreeConflicts(wt.path, merged);
      const plan = await planRules(s, conflicts);
      await applyResolutions(wt.path, plan.records, s.oidLength);
      await runRegenerate(s, wt.path, plan);
      const record: ManualRecord = {
        version: 1,
        target: opts.target,
        targetHead: old,
        source: s.source,
        files: conflicts.map((c) => c.path),
        resolved: plan.resolved,
      };
      await writeFile(await recordPath(wt.path), JSON.stringify(record, null, 2));
      return { worktree: wt.path, branch, files: await unmergedPaths(wt.path) };
    } catch (err) {
      await wt.remove();
      if ((await readBranch(s.repo, branch)) === old) await runGit(s.repo, ["update-ref", "-d", `refs/heads/${branch}`, old], [0, 1]);
      throw err;
    }
  } finally {
    await s.cleanup();
  }
}

/**
 * After the user committed in the manual worktree (or left resolved files uncommitted:
 * they are committed here, `git add -A`): checks that no conflict markers remain and
 * that the commit contains the target's old head and `source`, validates, moves the
 * target by compare-and-swap, and removes the worktree (its branch stays). In merge
 * mode the user's commit itself lands; in squash and linear mode one commit with its
 * tree and the target as parent. If the target moved meanwhile, the resolution is
 * merged into its new head when that merges cleanly.
 * A state still in conflict, or a failed validation, keeps the worktree for another try.
 * @throws NotAManualResolutionError when `worktree` was not made by prepareManualResolution.
 */
export async function completeManualResolution(opts: IntegrateOptions, worktree: string): Promise<IntegrateOutcome> {
  const s = await openSession(opts, [], undefined);
  try {
    // Compared with symlinks resolved: the worktree's path was made from the real scratch directory.
    const real = (p: string) => realpath(p).catch(() => path.resolve(p));
    const dir = await real(worktree);
    const manualRoot = await real(path.join(opts.scratchDir, "manual"));
    if (path.dirname(dir) !== manualRoot) throw new NotAManualResolutionError(dir, `it is not directly under ${manualRoot}`);
    const record = await readRecord(dir);
    if (record.target !== opts.target || record.source !== s.source) {
      throw new NotAManualResolutionError(dir, `it resolves ${record.source.slice(0, 12)} into '${record.target}', not this merge`);
    }

    const still = await manualProblems(s, dir, record);
    if (still) return still;
    const head = await commitLeftovers(s, dir);
    for (const [what, commit] of [
      [`the target's head ${record.targetHead.slice(0, 12)}`, record.targetHead],
      [`the task's commit ${s.source.slice(0, 12)}`, s.source],
    ] as const) {
      if (!(await isAncestor(s.repo, commit, head))) {
        return manualConflict(s, [], `the commit in ${dir} does not contain ${what}: run 'git merge ${commit}' there, resolve, commit, then complete again`);
      }
    }

    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      throwIfAborted(s);
      const current = await readBranch(s.repo, opts.target);
      if (current === undefined) throw new BranchNotFoundError(s.repo, opts.target);
      if (await isAncestor(s.repo, head, current)) {
        await removeScratchWorktree(s.repo, dir);
        return upToDate(current);
      }
      const candidate = await manualCandidate(s, head, current);
      if (candidate.kind === "conflict") return candidate;
      if (opts.validate) {
        const failed = await validateCandidate(s, candidate.commit);
        if (failed) return failed;
      }
      throwIfAborted(s);
      if (await compareAndSwap(s.repo, opts.target, candidate.commit, current)) {
        await removeScratchWorktree(s.repo, dir);
        const byRule = new Set(record.resolved.map((r) => r.path));
        const byHand = record.files.filter((p) => !byRule.has(p)).map((p) => ({ path: p, by: "manual" as const }));
        return { kind: "merged", commit: candidate.commit, how: candidate.how, resolved: [...record.resolved, ...byHand] };
      }
      await sleep(backoffDelay(attempt, Backoff.gitLock));
    }
    throw new MergeRaceError(opts.target, MAX_ATTEMPTS);
  } finally {
    await s.cleanup();
  }
}

async function recordPath(dir: string): Promise<string> {
  const p = (await git(dir, ["rev-parse", "--path-format=absolute", "--git-path", MANUAL_RECORD])).trim();
  return p;
}

async function readRecord(dir: string): Promise<ManualRecord> {
  if (!(await exists(dir))) throw new NotAManualResolutionError(dir, "it does not exist");
  let text: string;
  try {
    text = await readFile(await recordPath(dir), "utf8");
  } catch (cause) {
    throw new NotAManualResolutionError(dir, `it has no ${MANUAL_RECORD}: ${String((cause as Error).message ?? cause)}`);
  }
  const record = JSON.parse(text) as ManualRecord;
  if (record.version !== 1) throw new NotAManualResolutionError(dir, `its record has version ${String(record.version)}`);
  return record;
}

/** A conflict outcome when markers remain in the manual worktree, else undefined. */
async function manualProblems(s: Session, dir: string, record: ManualRecord): Promise<Conflict | undefined> {
  const files = [...new Set([...record.files, ...(await unmergedPaths(dir))])];
  const mergeBase = (await runGit(s.repo, ["merge-base", record.targetHead, s.source], [0, 1])).stdout.trim();
  const specs = files.flatMap((f) => [`${record.targetHead}:${f}`, `${s.source}:${f}`, ...(mergeBase ? [`${mergeBase}:${f}`] : [])]);
  const sides = await readBlobs(s.repo, specs);
  const marked: string[] = [];
  for (const f of files) {
    const content = await readFile(path.join(dir, f)).catch(() => undefined);
    const own = [`${record.targetHead}:${f}`, `${s.source}:${f}`, `${mergeBase}:${f}`].map((k) => sides.get(k));
    if (content !== undefined && hasLeftoverMarkers(content, own)) marked.push(f);
  }
  if (marked.length === 0) return undefined;
  return manualConflict(s, marked, `conflict markers remain in ${marked.join(", ")} in ${dir}: resolve them, git add, git commit, then complete again`);
}

async function manualConflict(s: Session, files: string[], reason: string): Promise<Conflict> {
  const merged = await mergeTreesDetailed(s.repo, (await readBranch(s.repo, s.opts.target)) ?? s.base, s.source);
  const paths = merged.kind === "conflict" ? merged.paths.filter((p) => files.includes(p.path)) : [];
  return { kind: "conflict", files, conflicts: await describeConflicts(s.repo, paths), messages: merged.kind === "conflict" ? merged.messages : "", reason };
}

/** Commits whatever the user left staged or not (the merge's second parent included); returns HEAD. */
async function commitLeftovers(s: Session, dir: string): Promise<string> {
  const merging = (await runGit(dir, ["rev-parse", "-q", "--verify", "MERGE_HEAD"], [0, 1])).exitCode === 0;
  const status = await git(dir, ["status", "--porcelain=v1", "-z", "--untracked-files=all"]);
  if (merging || status !== "") {
    await git(dir, ["add", "-A"]);
    const identity = await identityOptions(dir);
    await git(dir, [...identity, "commit", "--no-verify", "-q", "--allow-empty", "-m", s.opts.message]);
  }
  return (await git(dir, ["rev-parse", "HEAD"])).trim();
}

/** The commit the target moves to for a manual resolution at `head`, given the target's `current` head. */
async function manualCandidate(s: Session, head: string, current: string): Promise<Candidate | Conflict> {
  const squashing = s.opts.mode !== "merge";
  let tree: string;
  if (await isAncestor(s.repo, current, head)) {
    if (!squashing) return { kind: "candidate", commit: head, how: "merged", resolved: [] };
    tree = await treeOf(s.repo, head);
  } else {
    const merged = await mergeTreesDetailed(s.repo, current, head);
    if (merged.kind === "conflict") {
      return {
        kind: "conflict",
        files: merged.paths.map((p) => p.path),
        conflicts: await describeConflicts(s.repo, merged.paths),
        messages: merged.messages,
        reason: `'${s.opts.target}' moved while the conflict was resolved by hand, and the resolution does not merge cleanly into it: run 'git merge ${s.opts.target}' in the manual worktree, resolve, commit, then complete again`,
      };
    }
    tree = merged.tree;
  }
  const parents = squashing ? ["-p", current] : ["-p", current, "-p", head];
  const commit = await gitText(s.repo, [...s.identity, "commit-tree", tree, ...parents, "-F", "-"], { input: s.opts.message });
  return { kind: "candidate", commit, how: squashing ? "squashed" : "merged", resolved: [] };
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}
