/**
 * Pruning finished runs' refs: every run leaves `ado/<run>/<task>` branches and
 * `ado/<run>/integration` (and, in remote mode, `refs/ado/runs/<run>/base` and the same
 * branches on the remote). `planPrune` decides per ref (pure); `applyPrune` does it,
 * run by run, in one ref transaction each. A branch whose work is not already held by
 * something that stays is first kept under `refs/ado/archive/<run>/<name>/<time>`:
 * pruning never loses work. Which runs are finished is the caller's to say.
 */
import { ADO_REFS, archiveRef, runBranchPrefix, runRefs } from "../runtime/names.js";
import { git, runGit } from "./exec.js";
import { gitText } from "./plumbing.js";
import { hasCommit, RemoteGitError } from "./remote.js";

/** A ref and the commit it points at. */
export interface RefAt {
  ref: string;
  commit: string;
}

/** One run's refs in a repository. */
export interface RunRefs {
  runId: string;
  /** `refs/heads/ado/<run>/...` */
  branches: RefAt[];
  /** `refs/ado/runs/<run>/...` (a remote-mode base fetched here; rarely present locally). */
  runRefs: RefAt[];
}

/** What to do with one ref. */
export type RefAction =
  | { ref: string; commit: string; action: "delete" }
  | { ref: string; commit: string; action: "archive"; archive: string }
  | { ref: string; commit: string; action: "keep"; why: string };

export interface PrunePlanInput {
  run: RunRefs;
  /** Branches (full refs) whose work is held by something that stays (see mergedRunBranches). */
  merged: ReadonlySet<string>;
  /** Branches checked out in a worktree, with its path. */
  checkedOut: ReadonlyMap<string, string>;
  now: Date;
}

/** Decides each of a run's refs: deleted, archived then deleted, or kept (and why). Pure. */
export function planPrune({ run, merged, checkedOut, now }: PrunePlanInput): RefAction[] {
  const actions: RefAction[] = [];
  const prefix = `refs/heads/${runBranchPrefix(run.runId)}`;
  for (const b of run.branches) {
    const where = checkedOut.get(b.ref);
    if (where) {
      actions.push({ ...b, action: "keep", why: `checked out in ${where} (ado worktrees cleanup removes finished worktrees)` });
    } else if (merged.has(b.ref)) {
      actions.push({ ...b, action: "delete" });
    } else {
      actions.push({ ...b, action: "archive", archive: archiveRef(run.runId, b.ref.slice(prefix.length), now) });
    }
  }
  // A run's own refs hold its base, which its branches or the user's hold too.
  for (const r of run.runRefs) actions.push({ ...r, action: "delete" });
  return actions;
}

/** Every run with refs in the repository: its `ado/<run>/...` branches and `refs/ado/runs/<run>/...`. */
export async function listRunRefs(repo: string): Promise<Map<string, RunRefs>> {
  const out = await git(repo, ["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/ado/", `${ADO_REFS}/runs/`]);
  const runs = new Map<string, RunRefs>();
  const runRef = new RegExp(`^${ADO_REFS}/runs/([^/]+)/.+$`);
  for (const line of out.split("\n").filter(Boolean)) {
    const [ref = "", commit = ""] = line.split(" ");
    const m = /^refs\/heads\/ado\/([^/]+)\/.+$/.exec(ref) ?? runRef.exec(ref);
    if (!m) continue;
    const run = runs.get(m[1]!) ?? { runId: m[1]!, branches: [], runRefs: [] };
    (ref.startsWith("refs/heads/") ? run.branches : run.runRefs).push({ ref, commit });
    runs.set(run.runId, run);
  }
  return runs;
}

/**
 * The `ado/` branches whose work is held by something that stays: a branch outside
 * `ado/`, or HEAD; and, for a task branch, its run's integration branch (which is
 * itself then deleted because a branch holds it, archived, or kept).
 */
export async function mergedRunBranches(repo: string, runs: Iterable<RunRefs>): Promise<Set<string>> {
  const merged = new Set<string>();
  const keepers = (await git(repo, ["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/"]))
    .split("\n")
    .filter((l) => l && !l.startsWith("refs/heads/ado/"))
    .map((l) => l.split(" ")[1]!);
  const head = await runGit(repo, ["rev-parse", "-q", "--verify", "HEAD^{commit}"], [0, 1]);
  if (head.exitCode === 0) keepers.push(head.stdout.trim());
  for (const tip of new Set(keepers)) {
    for (const ref of (await git(repo, ["for-each-ref", "--format=%(refname)", `--merged=${tip}`, "refs/heads/ado/"])).split("\n")) {
      if (ref) merged.add(ref);
    }
  }
  for (const run of runs) {
    const integration = run.branches.find((b) => b.ref === `refs/heads/${runBranchPrefix(run.runId)}integration`);
    if (!integration) continue;
    const inIt = await git(repo, ["for-each-ref", "--format=%(refname)", `--merged=${integration.commit}`, `refs/heads/${runBranchPrefix(run.runId)}`]);
    for (const ref of inIt.split("\n")) if (ref && ref !== integration.ref) merged.add(ref);
  }
  return merged;
}

/** Branches checked out in a worktree of the repository, with the worktree's path. */
export async function checkedOutBranches(repo: string): Promise<Map<string, string>> {
  const out = await git(repo, ["worktree", "list", "--porcelain", "-z"]);
  const map = new Map<string, string>();
  let path = "";
  for (const field of out.split("\0")) {
    if (field.startsWith("worktree ")) path = field.slice("worktree ".length);
    else if (field.startsWith("branch ")) map.set(field.slice("branch ".length), path);
  }
  return map;
}

/**
 * Carries out a run's plan in one ref transaction: archives are created (never
 * replacing one), then refs deleted only if they still point where the plan saw them.
 * Nothing happens if any step would fail.
 */
export async function applyPrune(repo: string, actions: readonly RefAction[]): Promise<void> {
  const lines: string[] = ["start"];
  for (const a of actions) if (a.action === "archive") lines.push(`create ${a.archive} ${a.commit}`);
  for (const a of actions) if (a.action !== "keep") lines.push(`delete ${a.ref} ${a.commit}`);
  if (lines.length === 1) return;
  lines.push("prepare", "commit");
  await gitText(repo, ["update-ref", "--stdin", "-m", "ado prune"], { input: lines.join("\n") + "\n" });
}

/** The run's refs on a remote: its branches and `refs/ado/runs/<run>/...`. */
export async function listRemoteRunRefs(repo: string, url: string, runId: string): Promise<RefAt[]> {
  let out: string;
  try {
    out = await git(repo, ["ls-remote", url, `refs/heads/${runBranchPrefix(runId)}*`, `${runRefs(runId)}/*`]);
  } catch (err) {
    throw new RemoteGitError(url, "read", err);
  }
  return out
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [commit = "", ref = ""] = l.split("\t");
      return { ref, commit };
    });
}

/**
 * Deletes a run's refs on its remote whose commits this repository has (the run's
 * branches were fetched home at its end, then pruned or archived here); a ref whose
 * work exists only on the remote stays. Each deletion is leased on the commit seen.
 */
export async function pruneRemoteRun(repo: string, url: string, refs: readonly RefAt[], dryRun: boolean): Promise<{ deleted: RefAt[]; kept: RefAt[] }> {
  const deleted: RefAt[] = [];
  const kept: RefAt[] = [];
  for (const r of refs) ((await hasCommit(repo, r.commit)) ? deleted : kept).push(r);
  if (deleted.length && !dryRun) {
    try {
      await git(repo, ["push", "-q", url, ...deleted.map((r) => `--force-with-lease=${r.ref}:${r.commit}`), ...deleted.map((r) => `:${r.ref}`)]);
    } catch (err) {
      throw new RemoteGitError(url, "delete the run's refs on", err);
    }
  }
  return { deleted, kept };
}
