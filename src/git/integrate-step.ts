/**
 * The machinery behind integrate.ts and manual.ts: one call's session (resolved
 * commits, identity, rules, temp dir), one merge step (`merge-tree`, then the rules,
 * then the resolver agent, in a scratch worktree only when a command must run), and the
 * validation of a candidate commit. Internal to the git layer; index.ts does not export it.
 */
import { readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { git, identityOptions, runGit } from "./exec.js";
import { runShell, type ShellResult } from "./command.js";
import {
  type ConflictedPath,
  type PathRule,
  type Resolution,
  type TreeMerge,
  REGENERATE_TIMEOUT_MS,
  compileRules,
  describeConflicts,
  hasLeftoverMarkers,
  mergeTreesDetailed,
  resolveByStrategy,
  stageContents,
} from "./conflicts.js";
import { IntegrationAbortedError, InvalidIntegrateOptionsError } from "./integrate-errors.js";
import type { Conflict, IntegrateOptions, Merged, Resolved, ValidationFailed } from "./integrate-types.js";
import { gitBytes, gitText, indexInfoRecord } from "./plumbing.js";
import { isAncestor, resolveCommit } from "./repo.js";
import { addScratchTempDir, startMerge, unmergedPaths, withScratchWorktree } from "./scratch.js";
import { MergeEnv } from "../runtime/names.js";

/** Attempts at moving the target before giving up to other writers (MergeRaceError). */
export const MAX_ATTEMPTS = 8;

/** What one call knows and owns; `cleanup()` removes what it created. */
export interface Session {
  opts: IntegrateOptions;
  repo: string;
  source: string;
  base: string;
  identity: string[];
  ruleFor: (file: string) => PathRule | undefined;
  resolver: IntegrateOptions["resolver"];
  /**
   * A person's choice (integrateChoosing): the side taken for every path the rules leave
   * unresolved. What the rules resolve stays resolved.
   */
  choice?: "ours" | "theirs";
  oidLength: number;
  tmp(): Promise<string>;
  cleanup(): Promise<void>;
}

export async function openSession(
  opts: IntegrateOptions,
  rules: readonly PathRule[],
  resolver: IntegrateOptions["resolver"],
  choice?: "ours" | "theirs",
): Promise<Session> {
  checkOptions(opts, resolver);
  const ruleFor = compileRules(rules);
  const repo = path.resolve(opts.repo);
  const [[source, base], identity] = await Promise.all([resolveBoth(repo, opts.source, opts.base), identityOptions(repo)]);
  let tmp: Promise<{ path: string; remove(): Promise<void> }> | undefined;
  return {
    opts,
    repo,
    source,
    base,
    identity,
    ruleFor,
    resolver,
    ...(choice ? { choice } : {}),
    oidLength: source.length,
    tmp: async () => (await (tmp ??= addScratchTempDir(opts.scratchDir))).path,
    cleanup: async () => {
      if (tmp) await (await tmp.catch(() => undefined))?.remove();
    },
  };
}

/** Resolves two revisions with one git process; a bad one is named by resolveCommit's error. */
async function resolveBoth(repo: string, a: string, b: string): Promise<[string, string]> {
  // Without --verify, git 2.39 echoes --end-of-options and any option-like argument: only object ids count.
  const { stdout, exitCode } = await runGit(repo, ["rev-parse", "--end-of-options", `${a}^{commit}`, `${b}^{commit}`], [0, 128]);
  const ids = stdout.split("\n").filter((line) => /^[0-9a-f]{40}([0-9a-f]{24})?$/.test(line));
  if (exitCode === 0 && ids.length === 2) return [ids[0]!, ids[1]!];
  return [await resolveCommit(repo, a), await resolveCommit(repo, b)];
}

function checkOptions(opts: IntegrateOptions, resolver: IntegrateOptions["resolver"]): void {
  if (!["merge", "squash", "linear"].includes(opts.mode)) {
    throw new InvalidIntegrateOptionsError(`mode '${String(opts.mode)}': use merge, squash or linear`);
  }
  for (const [what, field] of [
    ["target", opts.target],
    ["source", opts.source],
    ["base", opts.base],
    ["scratchDir", opts.scratchDir],
  ] as const) {
    if (typeof field !== "string" || field === "") throw new InvalidIntegrateOptionsError(`'${what}' is empty`);
  }
  for (const [what, spec] of [
    ["resolver", resolver],
    ["validate", opts.validate],
  ] as const) {
    if (spec === undefined) continue;
    if (typeof spec.command !== "string" || spec.command.trim() === "") {
      throw new InvalidIntegrateOptionsError(`${what} has no command: give a shell command, or leave ${what} out`);
    }
    if (!(spec.timeoutMs > 0)) {
      throw new InvalidIntegrateOptionsError(`${what} timeoutMs ${spec.timeoutMs}: give a positive number of milliseconds`);
    }
  }
}

export function throwIfAborted(s: Session): void {
  if (s.opts.signal?.aborted) throw new IntegrationAbortedError(s.opts.target, { cause: s.opts.signal.reason });
}

export type Candidate = { kind: "candidate"; commit: string; how: Merged["how"]; resolved: Resolved[] };

export function upToDate(commit: string): Merged {
  return { kind: "merged", commit, how: "up-to-date", resolved: [] };
}

// ---------------------------------------------------------------- one merge step

type StepResult = { kind: "tree"; tree: string; resolved: Resolved[] } | Conflict;

/** Merges `theirs` into `ours` into a tree, resolving conflicts by rules, then the resolver. */
export async function mergeStep(s: Session, ours: string, theirs: string, opts: { allowUnrelated?: boolean } = {}): Promise<StepResult> {
  const merged = await mergeTreesDetailed(s.repo, ours, theirs, opts);
  if (merged.kind === "clean") return { kind: "tree", tree: merged.tree, resolved: [] };

  const plan = await planRules(s, merged.paths);
  if (plan.regenerate.length === 0) await choosePending(s, plan);
  if (plan.pending.length === 0 && plan.regenerate.length === 0) {
    return { kind: "tree", tree: await treeWithResolutions(s, merged.tree, plan.records), resolved: plan.resolved };
  }
  if (plan.regenerate.length === 0 && !s.resolver) return conflictOutcome(s, merged, plan.pending, plan);

  // Regenerate rules and the resolver need files on disk: a scratch worktree with the merge in progress.
  return withScratchWorktree(s.repo, s.opts.scratchDir, ours, async (dir) => {
    await startMerge(dir, theirs, opts);
    const inTree = await worktreeConflicts(dir, merged);
    // Git's merge in the worktree may read attributes merge-tree did not: its conflicts are the truth.
    const wtPlan = sameConflicts(inTree, merged.paths) ? plan : await planRules(s, inTree);
    await applyResolutions(dir, wtPlan.records, s.oidLength);
    await runRegenerate(s, dir, wtPlan);
    const ruled = wtPlan.records.length;
    await choosePending(s, wtPlan);
    await applyResolutions(dir, wtPlan.records.slice(ruled), s.oidLength);
    if (wtPlan.pending.length > 0) {
      if (!s.resolver) return conflictOutcome(s, merged, wtPlan.pending, wtPlan);
      const rejected = await runResolver(s, dir, ours, theirs, wtPlan.pending);
      if (rejected) return conflictOutcome(s, merged, wtPlan.pending, wtPlan, rejected);
      wtPlan.resolved.push(...wtPlan.pending.map((p) => ({ path: p.path, by: "agent" as const })));
    }
    const left = await unmergedPaths(dir);
    if (left.length > 0) {
      const stillConflicted = inTree.filter((c) => left.includes(c.path));
      return conflictOutcome(s, merged, stillConflicted, { ...wtPlan, notes: [...wtPlan.notes, `still unmerged in the index: ${left.join(", ")}`] });
    }
    return { kind: "tree", tree: await git(dir, ["write-tree"]), resolved: wtPlan.resolved };
  });
}

/** What the rules make of a step's conflicts before any command runs. */
export interface RulePlan {
  /** Index records (path, resolution) from union/ours/theirs. */
  records: [string, Resolution][];
  resolved: Resolved[];
  /** Conflicts for a regenerate rule, with the rule. */
  regenerate: { conflict: ConflictedPath; rule: PathRule }[];
  /** Conflicts no rule resolves (yet). */
  pending: ConflictedPath[];
  /** Why rules left some unresolved, for the conflict's reason. */
  notes: string[];
}

/** What rule planning needs of a session (integrateBatch has no single source). */
export type RuleContext = Pick<Session, "repo" | "ruleFor" | "tmp" | "oidLength">;

export async function planRules(s: RuleContext, conflicts: readonly ConflictedPath[]): Promise<RulePlan> {
  const plan: RulePlan = { records: [], resolved: [], regenerate: [], pending: [], notes: [] };
  const simple: { conflict: ConflictedPath; strategy: "union" | "ours" | "theirs" }[] = [];
  for (const conflict of conflicts) {
    const rule = s.ruleFor(conflict.path);
    if (!rule) plan.pending.push(conflict);
    else if (rule.strategy === "regenerate") plan.regenerate.push({ conflict, rule });
    else simple.push({ conflict, strategy: rule.strategy });
  }
  if (simple.length === 0) return plan;
  const outcomes = await resolveByStrategy(s.repo, await s.tmp(), simple);
  for (const { conflict, strategy } of simple) {
    const outcome = outcomes.get(conflict.path);
    if (outcome === undefined || (typeof outcome === "object" && "unresolved" in outcome)) {
      plan.pending.push(conflict);
      if (outcome) plan.notes.push(outcome.unresolved);
      continue;
    }
    plan.records.push([conflict.path, outcome]);
    plan.resolved.push({ path: conflict.path, by: strategy });
  }
  return plan;
}

/**
 * A person's choice (Session.choice) for the paths the rules left pending: each takes that
 * side, hunk by hunk (see resolveByStrategy). Without a choice, nothing changes.
 */
async function choosePending(s: Session, plan: RulePlan): Promise<void> {
  if (!s.choice || plan.pending.length === 0) return;
  const strategy = s.choice;
  const outcomes = await resolveByStrategy(s.repo, await s.tmp(), plan.pending.map((conflict) => ({ conflict, strategy })));
  const left: ConflictedPath[] = [];
  for (const conflict of plan.pending) {
    const outcome = outcomes.get(conflict.path);
    if (outcome === undefined || (typeof outcome === "object" && "unresolved" in outcome)) {
      left.push(conflict);
      continue;
    }
    plan.records.push([conflict.path, outcome]);
    plan.resolved.push({ path: conflict.path, by: strategy });
  }
  plan.pending = left;
}

/** The conflicted merge tree with resolved paths replaced, built in a temporary index. */
export async function treeWithResolutions(s: RuleContext, conflictedTree: string, records: readonly [string, Resolution][]): Promise<string> {
  const env = { GIT_INDEX_FILE: path.join(await s.tmp(), `index-${Math.random().toString(36).slice(2)}`) };
  await gitBytes(s.repo, ["read-tree", conflictedTree], { env });
  await gitBytes(s.repo, ["update-index", "-z", "--index-info"], {
    input: records.map(([p, r]) => indexInfoRecord(p, r, s.oidLength)).join(""),
    env,
  });
  return gitText(s.repo, ["write-tree"], { env });
}

/** Puts resolutions into a worktree's index and files (stage 0 replaces the conflict stages). */
export async function applyResolutions(dir: string, records: readonly [string, Resolution][], oidLength: number): Promise<void> {
  if (records.length === 0) return;
  await gitBytes(dir, ["update-index", "-z", "--index-info"], {
    input: records.map(([p, r]) => indexInfoRecord(p, r, oidLength)).join(""),
  });
  const kept = records.filter(([, r]) => r !== "delete").map(([p]) => p);
  if (kept.length > 0) await gitBytes(dir, ["checkout-index", "-f", "-z", "--stdin"], { input: kept.map((p) => `${p}\0`).join("") });
  for (const [p, r] of records) if (r === "delete") await rm(path.join(dir, p), { force: true });
}

/** The worktree's conflicts (from its index), with kinds from merge-tree's messages where it had them. */
export async function worktreeConflicts(dir: string, merged: TreeMerge): Promise<ConflictedPath[]> {
  const kinds = new Map(merged.kind === "conflict" ? merged.paths.map((p) => [p.path, p.kind]) : []);
  const byPath = new Map<string, ConflictedPath>();
  for (const entry of (await git(dir, ["ls-files", "-u", "-z"])).split("\0")) {
    const tab = entry.indexOf("\t");
    if (tab < 0) continue;
    const [mode = "", oid = "", stage = ""] = entry.slice(0, tab).split(" ");
    const file = entry.slice(tab + 1);
    let c = byPath.get(file);
    if (!c) byPath.set(file, (c = { path: file, kind: kinds.get(file) ?? "", stages: {} }));
    if (stage === "1" || stage === "2" || stage === "3") c.stages[stage] = { mode, oid };
  }
  const all = [...byPath.values()];
  for (const c of all) if (c.kind === "") c.kind = c.stages[2] && c.stages[3] ? (c.stages[1] ? "content" : "add/add") : "modify/delete";
  return all;
}

function sameConflicts(a: readonly ConflictedPath[], b: readonly ConflictedPath[]): boolean {
  const key = (list: readonly ConflictedPath[]) =>
    list
      .map((c) => `${c.path}\0${c.stages[1]?.oid}\0${c.stages[2]?.oid}\0${c.stages[3]?.oid}`)
      .sort()
      .join("\n");
  return key(a) === key(b);
}

/**
 * Runs each regenerate command once (in rule order) and takes its matched files as
 * they are afterwards, unless conflict markers remain in one: that path stays pending.
 * A failed command leaves its paths pending, for the resolver or a person.
 */
export async function runRegenerate(s: Session, dir: string, plan: RulePlan): Promise<void> {
  const groups = new Map<PathRule, ConflictedPath[]>();
  for (const { conflict, rule } of plan.regenerate) groups.set(rule, [...(groups.get(rule) ?? []), conflict]);
  const sides = await stageContents(s.repo, plan.regenerate.map((r) => r.conflict));
  for (const [rule, conflicts] of groups) {
    throwIfAborted(s);
    const result = await runShell(rule.command ?? "", {
      cwd: dir,
      timeoutMs: rule.timeoutMs ?? REGENERATE_TIMEOUT_MS,
      env: { [MergeEnv.regeneratePaths]: conflicts.map((c) => c.path).join("\n") },
      onOutput: (stream, chunk) => s.opts.onOutput?.(stream, chunk, "regenerate"),
      ...(s.opts.signal ? { signal: s.opts.signal } : {}),
    });
    if (result.aborted) throw new IntegrationAbortedError(s.opts.target);
    if (result.exitCode !== 0) {
      plan.pending.push(...conflicts);
      plan.notes.push(`regenerate command '${rule.command}' ${failureText(result)}; last output:\n${result.output.slice(-2000)}`);
      continue;
    }
    const taken: string[] = [];
    for (const c of conflicts) {
      const content = await readFile(path.join(dir, c.path)).catch(() => undefined);
      if (content !== undefined && hasLeftoverMarkers(content, sides.get(c.path) ?? [])) {
        plan.pending.push(c);
        plan.notes.push(`regenerate command '${rule.command}' left conflict markers in ${c.path}`);
        continue;
      }
      taken.push(c.path);
    }
    if (taken.length > 0) {
      await git(dir, ["--literal-pathspecs", "add", "-A", "--", ...taken]);
      plan.resolved.push(...taken.map((p) => ({ path: p, by: "regenerate" as const })));
    }
  }
}

/**
 * Runs the resolver agent in `dir` and checks its work.
 * @returns undefined when accepted, else why it was rejected and its output
 */
async function runResolver(
  s: Session,
  dir: string,
  ours: string,
  theirs: string,
  pending: readonly ConflictedPath[],
): Promise<{ why: string; output: string } | undefined> {
  const resolver = s.resolver!;
  const conflictsFile = path.join(await s.tmp(), `conflicts-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(conflictsFile, JSON.stringify({ conflicts: await describeConflicts(s.repo, pending), context: resolver.context ?? null }, null, 2));
  throwIfAborted(s);
  const result = await runShell(resolver.command, {
    cwd: dir,
    timeoutMs: resolver.timeoutMs,
    env: { ...resolver.env, [MergeEnv.conflictsFile]: conflictsFile },
    onOutput: (stream, chunk) => s.opts.onOutput?.(stream, chunk, "resolver"),
    ...(s.opts.signal ? { signal: s.opts.signal } : {}),
  });
  if (result.aborted) throw new IntegrationAbortedError(s.opts.target);
  if (result.exitCode !== 0) return { why: `the resolver ${failureText(result)}`, output: result.output };

  // The merge must still be the one it was given, or the resolver's commit of it.
  const mergeHead = await runGit(dir, ["rev-parse", "-q", "--verify", "MERGE_HEAD"], [0, 1]);
  if (mergeHead.exitCode !== 0) {
    const head = (await git(dir, ["rev-parse", "HEAD"])).trim();
    if (head === ours || !(await isAncestor(dir, theirs, head))) {
      return { why: "the resolver abandoned the merge (MERGE_HEAD is gone and the task's commit is not in HEAD)", output: result.output };
    }
  }
  const sides = await stageContents(s.repo, pending);
  const problems: string[] = [];
  for (const c of pending) {
    const content = await readFile(path.join(dir, c.path)).catch(() => undefined);
    if (content === undefined) {
      // Deleting is a resolution only where one side deleted the file.
      if (c.stages[2] && c.stages[3]) problems.push(`${c.path} was deleted, but both sides have it`);
    } else if (hasLeftoverMarkers(content, sides.get(c.path) ?? [])) {
      problems.push(`${c.path} still has conflict markers`);
    }
  }
  if (problems.length > 0) return { why: `the resolver's result was rejected: ${problems.join("; ")}`, output: result.output };
  await git(dir, ["add", "-A"]);
  return undefined;
}

function failureText(r: ShellResult): string {
  if (r.timedOut) return "timed out and was killed";
  return r.exitCode === null ? "was killed" : `exited with code ${r.exitCode}`;
}

async function conflictOutcome(
  s: Session,
  merged: Extract<TreeMerge, { kind: "conflict" }>,
  pending: readonly ConflictedPath[],
  plan: RulePlan,
  rejected?: { why: string; output: string },
): Promise<Conflict> {
  const files = [...new Set(pending.map((p) => p.path))];
  const parts = [`${files.length} conflicted path${files.length === 1 ? "" : "s"} left unresolved: ${files.join(", ")}`];
  const unruled = pending.filter((p) => !s.ruleFor(p.path)).map((p) => p.path);
  if (unruled.length > 0) parts.push(`no rule matches ${unruled.join(", ")}`);
  parts.push(...plan.notes);
  if (rejected) parts.push(rejected.why);
  else if (!s.resolver) parts.push("no resolver is configured");
  if (plan.resolved.length > 0) parts.push(`resolved by rules: ${plan.resolved.map((r) => `${r.path} (${r.by})`).join(", ")}`);
  const outcome: Conflict = {
    kind: "conflict",
    files,
    conflicts: await describeConflicts(s.repo, pending),
    messages: merged.messages,
    reason: parts.join("; "),
  };
  if (rejected) outcome.resolverOutput = rejected.output;
  return outcome;
}

// ---------------------------------------------------------------- validation

/** Runs `validate` on a checkout of `candidate`; undefined when it passed. */
export async function validateCandidate(s: Session, candidate: string): Promise<ValidationFailed | undefined> {
  const spec = s.opts.validate!;
  throwIfAborted(s);
  const result = await withScratchWorktree(s.repo, s.opts.scratchDir, candidate, (dir) =>
    runShell(spec.command, {
      cwd: dir,
      timeoutMs: spec.timeoutMs,
      env: { ...spec.env, [MergeEnv.candidate]: candidate },
      onOutput: (stream, chunk) => s.opts.onOutput?.(stream, chunk, "validate"),
      ...(s.opts.signal ? { signal: s.opts.signal } : {}),
    }),
  );
  if (result.aborted) throw new IntegrationAbortedError(s.opts.target);
  if (result.exitCode === 0) return undefined;
  return { kind: "validation_failed", candidate, output: result.output, exitCode: result.exitCode };
}
