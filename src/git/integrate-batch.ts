/**
 * Several finished task branches folded into an integration branch in one step: each
 * task's merge (or squash) commit chained on the previous one, and the branch moved
 * once, by compare-and-swap, at the end. What one merge costs in git processes is then
 * two (`merge-tree --write-tree`, `commit-tree`) plus three per batch (one `cat-file
 * --batch-check` for the head and every source, one `rev-list` for what is merged
 * already, one `update-ref`), two when the caller gives the head its previous batch
 * left (`head`: the merge coordinator does), where integrate() spends eight or more on each.
 *
 * Only what needs nothing but objects is done here: clean merges and conflicts the
 * union/ours/theirs rules settle. A task whose merge needs a command (a regenerate rule,
 * the resolver agent), a person (a conflict the rules leave), or that the caller wants
 * validated, is `deferred`: the caller merges it alone with integrate(), after this
 * batch has landed. The tasks of a batch are independent of each other (a task's merge
 * is asked for only once its dependencies are merged), so the order they land in is
 * theirs to choose; this keeps the order given.
 *
 * Whether a source is merged already (a redelivered request) or can be fast-forwarded
 * to is read from one `rev-list --parents <sources> ^<head>`: a source it does not
 * list is in the head; the commits it lists, with the commits the batch makes, form the
 * graph the head moves along.
 */
import path from "node:path";
import { BranchNotFoundError, MergeRaceError, UnknownRevisionError } from "./errors.js";
import { git, identityOptions, runGit } from "./exec.js";
import { compileRules, mergeTreesDetailed, type PathRule } from "./conflicts.js";
import { IntegrationAbortedError, InvalidIntegrateOptionsError } from "./integrate-errors.js";
import { MAX_ATTEMPTS, planRules, treeWithResolutions, type RuleContext } from "./integrate-step.js";
import type { Merged } from "./integrate-types.js";
import { compareAndSwap } from "./merge.js";
import { gitBytes, gitText } from "./plumbing.js";
import { readBranch } from "./repo.js";
import { addScratchTempDir } from "./scratch.js";
import { sleep } from "../runtime/clock.js";
import { Backoff, backoffDelay } from "../runtime/retry.js";

export interface BatchItem {
  /** The task's commit. */
  source: string;
  /** Its merge (or squash) commit's message. */
  message: string;
}

export interface IntegrateBatchOptions {
  /** Any directory in the repository. */
  repo: string;
  /** Integration branch name (no refs/heads/). */
  target: string;
  /** Created at this commit when it does not exist yet (else BranchNotFoundError). */
  createAt?: string;
  /** `linear` replays commit by commit: integrate() it, one task at a time. */
  mode: "merge" | "squash";
  /** Per-path conflict strategies; union/ours/theirs are applied here, the rest defer. */
  rules?: PathRule[];
  /** Base directory for the temp files the rules need (`scratch/`). */
  scratchDir: string;
  items: readonly BatchItem[];
  signal?: AbortSignal;
  /**
   * The target's head as the caller last left it (the `head` of its previous batch),
   * to start from without reading it: the compare-and-swap at the end catches one that
   * moved since (the batch is then recomputed on the head read then), and a source that
   * names no commit sends the batch back to reading the names. Saves a git process per
   * batch; only full object ids are taken as sources on this path.
   */
  head?: string;
}

export type BatchOutcome =
  | (Merged & {
      /**
       * First-parent commits between the batch's start head and this item's commit
       * (MergeResult.integrationGeneration = the start's count + this); undefined when
       * the chain does not tell (a fast-forward reaching the head through a second parent).
       */
      depth?: number;
    })
  /** Needs a command, a person or a validation: merge it alone (integrate()). */
  | { kind: "deferred"; why: string }
  /** The source names no commit: it can never merge. */
  | { kind: "invalid"; error: UnknownRevisionError };

export interface IntegrateBatchResult {
  /** The target's head the batch started from (after creating it, if it had to). */
  start: string;
  /** The target's head now: `start` when nothing moved it. */
  head: string;
  /** One per item, in order. */
  outcomes: BatchOutcome[];
}

/** A full object id (SHA-1 or SHA-256). */
const OBJECT_ID = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

/** Identity options per repository: read once a while, not once per merge. */
const identities = new Map<string, { at: number; options: Promise<string[]> }>();
const IDENTITY_TTL_MS = 30_000;

function cachedIdentity(repo: string): Promise<string[]> {
  const hit = identities.get(repo);
  if (hit && Date.now() - hit.at < IDENTITY_TTL_MS) return hit.options;
  const options = identityOptions(repo);
  identities.set(repo, { at: Date.now(), options });
  options.catch(() => identities.delete(repo));
  return options;
}

/**
 * Merges `items` into `target` in order, one commit each, and moves `target` once. See
 * the file's header. The target is untouched unless some outcome is `merged` with a new
 * commit; a lost race (another writer moved it) recomputes the whole batch on its new
 * head, at most MAX_ATTEMPTS times.
 * @throws BranchNotFoundError when `target` does not exist and no `createAt` is given.
 * @throws InvalidIntegrateOptionsError for a bad mode or rule.
 * @throws IntegrationAbortedError when `signal` fired (nothing was changed).
 * @throws MergeRaceError when other writers moved `target` during every attempt.
 */
export async function integrateBatch(opts: IntegrateBatchOptions): Promise<IntegrateBatchResult> {
  if (opts.mode !== "merge" && opts.mode !== "squash") {
    throw new InvalidIntegrateOptionsError(`mode '${String(opts.mode)}' cannot be batched: use merge or squash (linear merges one task at a time)`);
  }
  if (!opts.target) throw new InvalidIntegrateOptionsError("'target' is empty");
  const ruleFor = compileRules(opts.rules ?? []);
  const repo = path.resolve(opts.repo);
  // The head and every source in one git process (none when the caller knows the head
  // and gives full object ids); the identity is cached.
  const read = () => resolveNames(repo, [`refs/heads/${opts.target}`, ...opts.items.map((i) => i.source)]);
  let trusted = opts.head !== undefined && OBJECT_ID.test(opts.head) && opts.items.every((i) => OBJECT_ID.test(i.source));
  const [identity, names] = await Promise.all([cachedIdentity(repo), trusted ? [opts.head!, ...opts.items.map((i) => i.source)] : read()]);
  let [firstHead, ...resolved] = names;
  let tmp: Promise<{ path: string; remove(): Promise<void> }> | undefined;
  const rules: RuleContext = {
    repo,
    ruleFor,
    oidLength: resolved.find((r) => r !== undefined)?.length ?? 40,
    tmp: async () => (await (tmp ??= addScratchTempDir(opts.scratchDir))).path,
  };
  try {
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      throwIfAborted(opts);
      const start = attempt === 1 && firstHead !== undefined ? firstHead : await headOf(repo, opts);
      let chain: { head: string; outcomes: BatchOutcome[] };
      try {
        chain = await buildChain(repo, opts, identity, rules, start, resolved);
      } catch (err) {
        if (!trusted) throw err;
        // A source (or the head given) that names no commit: read the names, and start again from the head as it is.
        trusted = false;
        [firstHead, ...resolved] = await read();
        attempt--;
        continue;
      }
      throwIfAborted(opts);
      // Nothing to move: `start` must be the head as it is, which a head given (not read) needs checked.
      const moved = chain.head !== start;
      if (!moved && trusted && attempt === 1 && (await readBranch(repo, opts.target)) !== start) {
        trusted = false;
        [firstHead, ...resolved] = await read();
        attempt--;
        continue;
      }
      if (!moved || (await compareAndSwap(repo, opts.target, chain.head, start))) {
        return { start, head: chain.head, outcomes: chain.outcomes };
      }
      await sleep(backoffDelay(attempt, Backoff.gitLock));
    }
    throw new MergeRaceError(opts.target, MAX_ATTEMPTS);
  } finally {
    if (tmp) await (await tmp.catch(() => undefined))?.remove();
  }
}

function throwIfAborted(opts: IntegrateBatchOptions): void {
  if (opts.signal?.aborted) throw new IntegrationAbortedError(opts.target, { cause: opts.signal.reason });
}

/** The target's head, creating the branch at `createAt` when it is absent (atomic: an empty old value). */
async function headOf(repo: string, opts: IntegrateBatchOptions): Promise<string> {
  const head = await readBranch(repo, opts.target);
  if (head !== undefined) return head;
  if (opts.createAt === undefined) throw new BranchNotFoundError(repo, opts.target);
  const { exitCode } = await runGit(repo, ["update-ref", "-m", "ado: create branch", `refs/heads/${opts.target}`, opts.createAt, ""], [0, 128]);
  if (exitCode === 0) return (await readBranch(repo, opts.target)) ?? opts.createAt;
  const now = await readBranch(repo, opts.target);
  if (now === undefined) throw new UnknownRevisionError(repo, opts.createAt);
  return now;
}

/**
 * Each name as a full commit id, with one `git cat-file --batch-check` (which, unlike
 * rev-parse, answers for every name even when one is missing); undefined for a name
 * that is no commit (missing, ambiguous, another kind of object).
 */
async function resolveNames(repo: string, names: readonly string[]): Promise<(string | undefined)[]> {
  // A name holding a newline would desynchronise the batch: it names no commit anyway.
  const specs = names.map((n) => (n.includes("\n") ? "" : `${n}^{commit}`));
  const { stdout } = await gitBytes(repo, ["cat-file", "--batch-check"], { input: specs.map((s) => `${s}\n`).join("") });
  const lines = stdout.toString("utf8").split("\n");
  return specs.map((_, i) => {
    const [id, type] = (lines[i] ?? "").split(" ");
    return type === "commit" && id && OBJECT_ID.test(id) ? id : undefined;
  });
}

/**
 * The commits reachable from the sources but not from `start`, with their parents, and
 * the commits this batch makes: the part of history the chain moves through. A commit
 * outside it is reachable from `start`, hence from every head the chain reaches.
 */
class Graph {
  private readonly parents = new Map<string, string[]>();

  constructor(revList: string) {
    for (const line of revList.split("\n")) {
      const [commit, ...parents] = line.trim().split(" ");
      if (commit) this.parents.set(commit, parents);
    }
  }

  add(commit: string, parents: string[]): void {
    this.parents.set(commit, parents);
  }

  /** Whether `commit` is `head` or one of its ancestors. */
  contains(head: string, commit: string): boolean {
    return !this.parents.has(commit) || this.reaches(head, commit);
  }

  /** Whether `to` is `from` or one of its ancestors, walking the known part of history. */
  reaches(from: string, to: string): boolean {
    const seen = new Set<string>();
    const stack = [from];
    while (stack.length) {
      const c = stack.pop()!;
      if (c === to) return true;
      if (seen.has(c)) continue;
      seen.add(c);
      for (const p of this.parents.get(c) ?? []) stack.push(p);
    }
    return false;
  }

  /** First-parent steps from `from` down to `to`, or undefined when the first-parent line does not pass through it. */
  firstParentSteps(from: string, to: string): number | undefined {
    let n = 0;
    for (let c: string | undefined = from; c !== undefined; c = this.parents.get(c)?.[0], n++) {
      if (c === to) return n;
      if (!this.parents.has(c)) return undefined;
    }
    return undefined;
  }
}

async function buildChain(
  repo: string,
  opts: IntegrateBatchOptions,
  identity: string[],
  rules: RuleContext,
  start: string,
  sources: readonly (string | undefined)[],
): Promise<{ head: string; outcomes: BatchOutcome[] }> {
  const valid = [...new Set(sources.filter((s): s is string => s !== undefined))];
  const graph = new Graph(valid.length ? await git(repo, ["rev-list", "--parents", ...valid, `^${start}`, "--"]) : "");
  const outcomes: BatchOutcome[] = [];
  let head = start;
  /** First-parent depth of `head` below `start`; undefined once unknown. */
  let depth: number | undefined = 0;
  const trees = new Map<string, string>();
  const treeOfHead = async () => trees.get(head) ?? (await gitText(repo, ["rev-parse", `${head}^{tree}`]));
  for (const [i, item] of opts.items.entries()) {
    throwIfAborted(opts);
    const source = sources[i];
    if (source === undefined) {
      outcomes.push({ kind: "invalid", error: new UnknownRevisionError(repo, item.source) });
      continue;
    }
    if (graph.contains(head, source)) {
      outcomes.push({ kind: "merged", commit: head, how: "up-to-date", resolved: [], ...(depth !== undefined ? { depth } : {}) });
      continue;
    }
    if (opts.mode === "merge" && graph.reaches(source, head)) {
      const steps = graph.firstParentSteps(source, head);
      depth = depth !== undefined && steps !== undefined ? depth + steps : undefined;
      head = source;
      outcomes.push({ kind: "merged", commit: head, how: "fast-forward", resolved: [], ...(depth !== undefined ? { depth } : {}) });
      continue;
    }
    const step = await mergeOneStep(rules, head, source);
    if (step.kind === "deferred") {
      outcomes.push(step);
      continue;
    }
    if (opts.mode === "squash" && step.tree === (await treeOfHead())) {
      outcomes.push({ kind: "merged", commit: head, how: "up-to-date", resolved: [], ...(depth !== undefined ? { depth } : {}) });
      continue;
    }
    const parents = opts.mode === "merge" ? [head, source] : [head];
    const commit = await gitText(repo, [...identity, "commit-tree", step.tree, ...parents.flatMap((p) => ["-p", p]), "-F", "-"], { input: item.message });
    graph.add(commit, parents);
    trees.set(commit, step.tree);
    head = commit;
    depth = depth === undefined ? undefined : depth + 1;
    outcomes.push({ kind: "merged", commit, how: opts.mode === "merge" ? "merged" : "squashed", resolved: step.resolved, ...(depth !== undefined ? { depth } : {}) });
  }
  return { head, outcomes };
}

/** merge-tree of `theirs` into `ours`; conflicts the union/ours/theirs rules settle are settled, anything else defers. */
async function mergeOneStep(
  rules: RuleContext,
  ours: string,
  theirs: string,
): Promise<{ kind: "tree"; tree: string; resolved: Merged["resolved"] } | { kind: "deferred"; why: string }> {
  const merged = await mergeTreesDetailed(rules.repo, ours, theirs);
  if (merged.kind === "clean") return { kind: "tree", tree: merged.tree, resolved: [] };
  const plan = await planRules(rules, merged.paths);
  if (plan.pending.length > 0 || plan.regenerate.length > 0) {
    const left = [...plan.pending.map((p) => p.path), ...plan.regenerate.map((r) => r.conflict.path)];
    return { kind: "deferred", why: `conflicts the rules alone do not settle: ${[...new Set(left)].join(", ")}` };
  }
  return { kind: "tree", tree: await treeWithResolutions(rules, merged.tree, plan.records), resolved: plan.resolved };
}
