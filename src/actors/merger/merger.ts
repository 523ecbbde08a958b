import { hostname } from "node:os";
import type { KV } from "@nats-io/kv";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode, encodeValue } from "../../runtime/codec.js";
import { ACK, BatchLoop, type Delivery, type Outcome as Settle } from "../../runtime/consume.js";
import { AdoError, errorMessage } from "../../runtime/errors.js";
import {
  createBranchIfAbsent,
  filesChangedSinceFork,
  firstParentCount,
  integrate,
  integrateBatch,
  integrateChoosing,
  isAncestor,
  mergeIntoTarget,
  pushRef,
  readBranch,
  RemoteClones,
  WorktreeManager,
  type WorktreeRecord,
} from "../../git/index.js";
import { hitlTransition, type HitlEvent } from "../../runtime/hitl-state.js";
import { WorktreeRegistry } from "../../runtime/worktree-registry.js";
import { SCHEMAS, type AdoEvent, type HitlRecord, type MergeIntoOutcome, type MergeIntoRequest, type MergeRequest, type MergeResult, type MergerInput } from "../../runtime/messages.js";
import { actorConsumer, consumers } from "../../runtime/topology.js";
import { msgIds, taskKey } from "../../runtime/names.js";
import { integrateOptionsFor, mergeMessage, mergeScratchDir, resolverCommand, type ResolverChoice } from "../../runtime/merging.js";
import { Backoff, backoffDelay } from "../../runtime/retry.js";
import { isTransient } from "../../runtime/transient.js";
import { attentionResult, batchable, errorResult, escalationDetails, fromHistory, planSteps, replayed, summary, type NotMerged, type Outcome, type Step } from "./decide.js";

/**
 * How long the server waits for the ack of a merge request before another merge
 * coordinator gets it: a few seconds, since every request held is kept alive with an
 * in-progress ack each third of it however long its merge (a validation, a resolver)
 * takes. So a merge coordinator that dies holds the merge queue for this long at most.
 */
export const MERGE_ACK_WAIT_MS = 6_000;
/** The most merge requests one merge coordinator holds: the batch it merges, and what arrives meanwhile. */
export const MERGE_MAX_BATCH = 64;
/** Deliveries of a request that keeps failing for a transient reason before its merge is reported failed. */
export const MERGE_MAX_DELIVERIES = 10;

export interface MergerOptions {
  /** Worktree base directory, to remove task worktrees once merged. */
  worktreeDir: string;
  /** Scratch worktrees for conflict resolution and validation; default `<worktreeDir>/_merge`. */
  scratchDir?: string;
  /** Clones of runs' git remotes (remote mode); default: defaultCloneDir(). */
  cloneDir: string;
  /** The merge consumer's ack wait; default MERGE_ACK_WAIT_MS (tests shorten it). */
  ackWaitMs?: number;
}

/**
 * Worktree removals waiting behind the merges before a new batch waits for them. Merges
 * go first (dependents wait for them; nobody waits for a removal), but every registered
 * worktree makes each `git worktree` command (the workers' adds too) a little slower
 * (300 more: an add + remove pair 191 -> 336 ms on a loaded 2-core machine), so on an
 * overloaded machine the backlog must not grow without bound.
 */
const MAX_PENDING_RELEASES = 128;
/**
 * Removals under way at once. Git's worktree commands of one repository take turns (a
 * mutex per repository in this process, shared with the workers' adds); a few in the
 * queue get more of those turns, and their other work (the registry's round trips)
 * overlaps.
 */
const RELEASES_AT_ONCE = 4;

/** Commits' first-parent counts kept, to order merge results without asking git each time. */
const GENERATIONS_KEPT = 4_096;

/**
 * The merge coordinator: folds each finished task branch into the run's integration
 * branch with the run's own merge settings (mode; per-path rules, then a resolver agent
 * for conflicts; validation of the merged tree), through the git layer, which never
 * touches the user's checkout and moves the branch only by compare-and-swap.
 *
 * Throughput: it takes every request that is waiting, and merges a run's tasks in one
 * step where it can (integrateBatch: each task's commit chained, the branch moved once);
 * a task whose merge needs a command or a person is merged alone after that step, and a
 * conflict nothing resolves is escalated without holding the others back. Task
 * worktrees are removed after the results are out, in the background.
 *
 * What it cannot resolve it escalates: it writes a HITL record (KV `hitl`; every change
 * through src/runtime/hitl-state.ts), announces `merge.hitl_required`, and reports
 * `needs_attention`; `ado hitl resolve` later sends the same request with a person's
 * choice, carried out here. The scheduler asks for a merge only once the task's
 * dependencies are merged, so merges land in dependency order.
 *
 * Nothing is lost in a crash: a request is acked only after its result is published
 * (each with a Nats-Msg-Id); a redelivered request finds its merge done (up to date) or
 * its HITL record written, and replays the same result instead of acting twice. A
 * transient failure (src/runtime/transient.ts) is retried by redelivery with backoff;
 * only a merge that cannot succeed is reported as an `error`.
 */
export class Merger extends Actor {
  private loop?: BatchLoop<MergerInput>;
  private merged = 0;
  private conflicts = 0;
  private escalated = 0;
  private retried = 0;
  private batches = 0;
  private readonly abort = new AbortController();
  private readonly scratchDir: string;
  private readonly clones: RemoteClones;
  /** Time spent per step, for stats() (and bench/merge-load.ts): where a merge's time goes. */
  private readonly steps: Record<string, { n: number; ms: number }> = {};
  /** `<repo>\0<commit>` -> first-parent count (MergeResult.integrationGeneration). */
  private readonly generations = new Map<string, number>();
  /**
   * `<repo>\0<branch>` -> the head this merger's last batch left the integration branch
   * at: the next batch starts there without reading it (integrateBatch's `head`; a
   * compare-and-swap catches one that moved). Forgotten when anything else may move it
   * here (a merge alone, a failure); never kept in remote mode (the clone is fetched).
   */
  private readonly heads = new Map<string, string>();
  /** Worktree removals after the merge, one at a time, off the merge path. */
  /** Removals waiting, and those under way (at most RELEASES_AT_ONCE). */
  private readonly releaseQueue: Array<{ req: MergeRequest; merged: boolean }> = [];
  private releasing = 0;
  private readonly worktreeManagers = new Map<string, WorktreeManager>();
  private readonly releaseWaiters: Array<() => void> = [];
  private pendingReleases = 0;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: MergerOptions,
  ) {
    super("merger", instance, ctx);
    this.scratchDir = opts.scratchDir ?? mergeScratchDir(opts.worktreeDir);
    this.clones = new RemoteClones({ dir: opts.cloneDir, logger: this.log });
  }

  protected async onStart(): Promise<void> {
    const { topo } = this.ctx;
    const jsm = await this.js.jetstreamManager();
    const ackWaitMs = this.opts.ackWaitMs ?? MERGE_ACK_WAIT_MS;
    // Adding a durable that exists updates it: one made with the old 300 s ack wait converges.
    await jsm.consumers.add(topo.streams.merge.name, actorConsumer(consumers.merge, topo.subjects.mergeAll, { ackWaitMs }));
    this.loop = new BatchLoop<MergerInput>({
      consumer: await this.js.consumers.get(topo.streams.merge.name, consumers.merge),
      deadLetters: this.deadLetters,
      schema: SCHEMAS.MergeRequest,
      logger: this.log,
      // A batch is every request waiting (up to this many); nothing is pulled ahead of it
      // but what arrives while it is merged, kept alive until the next batch takes it.
      maxBatch: MERGE_MAX_BATCH,
      prefetch: 0,
      handle: (batch) => this.handle(batch),
    });
    await this.loop.start();
  }

  protected async onDrain(force: AbortSignal): Promise<void> {
    // Past the grace period, stop a long resolver or validation: the request is not
    // acked, so it is redelivered (to this replica after a restart, or another one).
    force.addEventListener("abort", () => this.abort.abort(), { once: true });
    await this.loop?.stop();
    await this.releaseRoom(0);
  }

  override stats() {
    return {
      merged: this.merged,
      conflicts: this.conflicts,
      escalated: this.escalated,
      retried: this.retried,
      batches: this.batches,
      holding: this.loop?.holding ?? 0,
      pendingReleases: this.pendingReleases,
      steps: this.steps,
    };
  }

  private get hitl(): KV {
    return this.ctx.kv.hitl;
  }

  private async timed<T>(step: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      const s = (this.steps[step] ??= { n: 0, ms: 0 });
      s.n++;
      s.ms += performance.now() - t0;
    }
  }

  // ------------------------------------------------------------ a batch

  /**
   * Handles what the loop pulled: per run, its steps in order (first merges together, the
   * rest one by one); different runs at the same time. Never throws: each request gets
   * its outcome (ack, or nak to retry a transient failure).
   */
  private async handle(batch: Delivery<MergerInput>[]): Promise<Settle[]> {
    this.batches++;
    // How long each request waited in the stream before a batch took it ("queued"), and how many there were.
    const now = Date.now();
    const queued = (this.steps["queued"] ??= { n: 0, ms: 0 });
    const requests = (this.steps["requests"] ??= { n: 0, ms: 0 });
    for (const d of batch) {
      queued.n++;
      queued.ms += Math.max(0, now - d.msg.info.timestampNanos / 1e6);
      if (d.data.type === "merge.request" && !d.data.releaseOnly && !d.data.resolution) requests.n++;
    }
    if (this.pendingReleases > MAX_PENDING_RELEASES) await this.timed("release-backlog", () => this.releaseRoom(MAX_PENDING_RELEASES));
    const settled: Settle[] = batch.map(() => ACK);
    await Promise.all(
      planSteps(batch.map((d) => d.data)).map(async (steps) => {
        for (const step of steps) await this.runStep(step, batch, settled);
      }),
    );
    return settled;
  }

  private async runStep(step: Step, batch: Delivery<MergerInput>[], settled: Settle[]): Promise<void> {
    const indexes = step.kind === "merge" ? step.indexes : [step.index];
    try {
      if (step.kind === "into") await this.mergeInto(batch[step.index]!.data as MergeIntoRequest);
      else if (step.kind === "release") this.releaseWorktree(batch[step.index]!.data as MergeRequest, false);
      else if (step.kind === "resolve") await this.timed("resolve", () => this.resolve(batch[step.index]!.data as MergeRequest));
      else {
        const failures = await this.timed("merge-step", () => this.mergeStep(indexes.map((i) => batch[i]!.data as MergeRequest)));
        for (const [k, err] of failures.entries()) if (err !== undefined) settled[indexes[k]!] = await this.failed(batch[indexes[k]!]!, err);
      }
    } catch (err) {
      for (const i of indexes) settled[i] = await this.failed(batch[i]!, err);
    }
  }

  /**
   * A request whose handling threw: a transient failure is retried (redelivered with
   * backoff) up to MERGE_MAX_DELIVERIES; anything else, or one that keeps failing, is
   * reported to the scheduler as the merge's `error`, so the run does not wait forever.
   */
  private async failed(d: Delivery<MergerInput>, err: unknown): Promise<Settle> {
    const deliveries = d.msg.info.deliveryCount;
    const data = d.data;
    const what = data.type === "merge.into" ? `merge into ${data.into}` : `merge of ${taskKey(data.runId, data.taskId)}`;
    if (isTransient(err) && deliveries < MERGE_MAX_DELIVERIES) {
      this.retried++;
      const delayMs = backoffDelay(deliveries, Backoff.redelivery);
      this.log.warn({ err: errorMessage(err), deliveries, retryInMs: delayMs }, `${what} failed for a passing reason; retrying`);
      return { kind: "nak", delayMs };
    }
    const message = isTransient(err) ? `failed ${deliveries} times, last: ${errorMessage(err)}` : errorMessage(err);
    this.log.error({ err: message }, `${what} failed`);
    try {
      if (data.type === "merge.into") await this.reportInto(data, { into: data.into, status: "error", reason: message });
      else if (!data.releaseOnly) await this.report(errorResult(data, message), msgIds.mergeResult(data, data.resolution?.round ?? 0));
      return ACK;
    } catch (reportErr) {
      this.log.warn({ err: errorMessage(reportErr) }, "the failure could not be reported; retrying the request");
      return { kind: "nak", delayMs: backoffDelay(deliveries, Backoff.redelivery) };
    }
  }

  /**
   * First merges of one run's tasks. Those whose merge was escalated already replay
   * their HITL record; the rest are merged in one step (integrateBatch) when the run's
   * settings allow, and reported at once; what that defers (a command or a person
   * needed), and every merge of a run that validates or replays commits, one by one
   * after it, each reported as it lands. Returns, per request, the error that stopped
   * it (undefined: done).
   */
  private async mergeStep(reqs: MergeRequest[]): Promise<(unknown | undefined)[]> {
    const failures: (unknown | undefined)[] = reqs.map(() => undefined);
    /** The requests whose task is on the integration branch now (for its worktree's record). */
    const merged = new Set<number>();
    const first = reqs[0]!;
    try {
      // Remote mode: the branch of record is the remote's; merge in this host's clone, freshly fetched.
      const repo = first.remote ? await this.timed("fetch", () => this.clones.fetchRun(first.remote!, first.runId)) : first.repo;
      let remoteHead = first.remote ? ((await readBranch(repo, first.integrationBranch)) ?? "") : "";
      /** Remote mode: what this step merged goes to the remote before anyone hears of it (a lost race redelivers). */
      const push = async () => {
        if (!first.remote) return;
        const head = await readBranch(repo, first.integrationBranch);
        if (!head || head === remoteHead) return;
        await this.timed("push", () => pushRef(repo, first.remote!, head, `refs/heads/${first.integrationBranch}`, { expected: remoteHead }));
        remoteHead = head;
      };
      const rs = reqs.map((r) => (first.remote ? { ...r, repo } : r));
      const settle = async (i: number, outcome: Outcome, generation?: number) => {
        if (outcome.kind === "merged") merged.add(i);
        const result = await this.timed("conclude", () => this.conclude(rs[i]!, outcome, 0, existing[i], generation));
        await this.timed("report", () => this.report(result, msgIds.mergeResult(rs[i]!, 0)));
      };

      // Every record of the step in one round trip.
      const existing = await this.timed("hitl-read", () => Promise.all(rs.map((r) => this.readHitl(taskKey(r.runId, r.taskId)))));
      const replays: Promise<void>[] = [];
      const todo: number[] = [];
      for (const [i, r] of rs.entries()) {
        const found = existing[i];
        if (found && found.record.source === r.commit) {
          // Redelivered after it was escalated: never reopen (or redo) what a person owns.
          const result = replayed(found.record);
          if (result.status === "merged") merged.add(i);
          replays.push(
            (async () => {
              if (found.record.state !== "resolved") await this.announce(found.record);
              await this.report(result, msgIds.mergeResult(r, 0));
            })(),
          );
        } else todo.push(i);
      }
      await Promise.all(replays);

      let alone = todo;
      const headKey = `${repo}\0${first.integrationBranch}`;
      const knownHead = first.remote ? undefined : this.heads.get(headKey);
      this.heads.delete(headKey);
      if (todo.length && batchable(first.settings)) {
        const batch = await this.timed("integrate-batch", () =>
          integrateBatch({
            ...(knownHead ? { head: knownHead } : {}),
            repo,
            target: first.integrationBranch,
            createAt: first.baseCommit,
            mode: first.settings.mode as "merge" | "squash",
            rules: integrateOptionsFor(first, this.scratchDir).rules!,
            scratchDir: this.scratchDir,
            signal: this.abort.signal,
            items: todo.map((i) => ({ source: rs[i]!.commit, message: mergeMessage(rs[i]!) })),
          }),
        );
        await push();
        if (!first.remote) this.heads.set(headKey, batch.head);
        const known = batch.outcomes.some((o) => o.kind === "merged" && o.depth !== undefined);
        const startGeneration = known ? await this.generation(repo, batch.start) : undefined;
        alone = [];
        const landed: Promise<void>[] = [];
        for (const [k, o] of batch.outcomes.entries()) {
          const i = todo[k]!;
          if (o.kind === "merged") {
            const generation = startGeneration !== undefined && o.depth !== undefined ? startGeneration + o.depth : undefined;
            if (generation !== undefined) this.remember(repo, o.commit, generation);
            landed.push(settle(i, { kind: "merged", commit: o.commit, how: o.how, resolved: o.resolved }, generation));
          } else if (o.kind === "invalid") failures[i] = o.error;
          else alone.push(i);
        }
        // Reported before any deferred merge runs: those may take long (a resolver), and dependents wait on these.
        await Promise.all(landed);
      } else if (todo.length) {
        await this.timed("create-branch", () => createBranchIfAbsent(repo, first.integrationBranch, first.baseCommit));
      }
      // A merge alone moves the branch too: the next batch reads it.
      if (alone.length) this.heads.delete(headKey);
      for (const i of alone) {
        let outcome: Outcome;
        try {
          outcome = await this.timed("integrate", () => integrate(this.integrateOptions(rs[i]!, "configured")));
          await push();
        } catch (err) {
          // This one only: retried (transient) or reported failed; the others go on.
          failures[i] = err;
          continue;
        }
        await settle(i, outcome);
      }
      return failures;
    } finally {
      // The task's work is committed on its branch, which stays: its worktree can go, after the merge.
      for (const [i, r] of reqs.entries()) if (r.worktree) this.releaseWorktree(r, merged.has(i));
    }
  }

  /**
   * Carries out a person's choice for HITL round `resolution.round`. A request for a
   * round already decided replays that decision (a redelivery, or the CLI sending
   * twice); one for a round that is not the record's current one is stale and dropped.
   */
  private async resolve(data: MergeRequest): Promise<void> {
    const res = data.resolution!;
    const id = taskKey(data.runId, data.taskId);
    // It may move the branch: the next batch reads it.
    this.heads.delete(`${data.repo}\0${data.integrationBranch}`);
    const found = await this.readHitl(id);
    const started = hitlTransition(found?.record, { type: "start", at: this.now(), round: res.round, choice: res.choice, by: res.by });
    if (!started.ok) {
      const refusal = started.refusal;
      if (refusal.code === "decided" && found) await this.report(fromHistory(found.record, refusal.entry), msgIds.mergeResult(data, res.round));
      else this.log.warn({ id, round: res.round, why: refusal.message }, "a resolution that does not apply: dropped");
      return;
    }
    const hitl = { record: started.record, revision: await this.hitl.update(id, encodeValue(SCHEMAS.HitlRecord, started.record), found!.revision) };

    let req: MergeRequest = data;
    let outcome: Outcome;
    try {
      let remoteHead = "";
      if (data.remote) ({ req, remoteHead } = await this.inClone(data));
      outcome = await this.carryOut(req, hitl.record);
      if (req.remote && outcome.kind === "merged" && outcome.how !== "up-to-date") {
        await pushRef(req.repo, req.remote, outcome.commit, `refs/heads/${req.integrationBranch}`, { expected: remoteHead });
      }
    } catch (err) {
      if (isTransient(err)) throw err;
      // The choice could not be carried out: the person hears why, in the next round.
      outcome = { kind: "error", message: errorMessage(err) };
    }
    const result = await this.conclude(req, outcome, res.round, hitl);
    await this.report(result, msgIds.mergeResult(req, res.round));
  }

  /** Remote mode: the request in the run's clone, freshly fetched, and the remote's head the push must still find. */
  private async inClone(data: MergeRequest): Promise<{ req: MergeRequest; remoteHead: string }> {
    const dir = await this.clones.fetchRun(data.remote!, data.runId);
    return { req: { ...data, repo: dir }, remoteHead: (await readBranch(dir, data.integrationBranch)) ?? "" };
  }

  /** What each choice does; see `ado hitl resolve`. */
  private async carryOut(req: MergeRequest, record: HitlRecord): Promise<Outcome> {
    const res = req.resolution!;
    switch (res.choice) {
      case "skip":
        return { kind: "skipped" };
      case "ours":
      case "theirs":
        return integrateChoosing(this.integrateOptions(req), res.choice);
      case "agent": {
        const choice: ResolverChoice = res.resolver ? { command: res.resolver } : "configured";
        if (!resolverCommand(req, choice)) {
          return { kind: "error", message: "no resolver command: the run configures none; pass one with `ado hitl resolve <id> --choose agent --resolver <cmd>`" };
        }
        return integrate(this.integrateOptions(req, choice));
      }
      case "manual": {
        // The person's commit was put on the integration branch on their host
        // (completeManualResolution); check it really holds the task's work.
        const head = await readBranch(req.repo, req.integrationBranch);
        const ok = !!head && !!res.commit && (await isAncestor(req.repo, res.commit, head)) && (await isAncestor(req.repo, req.commit, head));
        if (!ok) {
          return { kind: "error", message: `the manual resolution ${res.commit?.slice(0, 12) ?? "(none)"} is not on ${req.integrationBranch}: run \`ado hitl resolve ${record.id} --continue\` again` };
        }
        return { kind: "merged", commit: head!, how: "merged", resolved: record.files.map((path) => ({ path, by: "manual" as const })) };
      }
    }
  }

  /**
   * Turns an outcome into the scheduler's result: announces resolutions, and writes (or
   * updates) the HITL record for anything that needs a person. `round` is the HITL round
   * this outcome settles (0 for a first merge); `hitl` the record being resolved, or for
   * a first merge the one found (another commit of the task), if any.
   */
  private async conclude(
    req: MergeRequest,
    outcome: Outcome,
    round: number,
    hitl: { record: HitlRecord; revision: number } | undefined,
    generation?: number,
  ): Promise<MergeResult> {
    const id = taskKey(req.runId, req.taskId);
    const base = { type: "merge.result" as const, runId: req.runId, taskId: req.taskId, round };
    const at = this.now();
    const resolving = round > 0 ? hitl : undefined;

    if (outcome.kind === "merged") {
      this.merged++;
      if (resolving) await this.writeHitl(id, resolving, { type: "decide", at, round, outcome: "merged", message: `merged (${outcome.how})`, commit: outcome.commit });
      if (outcome.resolved.length > 0) {
        await this.emit(
          { type: "merge.resolved", runId: req.runId, taskId: req.taskId, attempt: req.attempt, at, paths: outcome.resolved, integrationCommit: outcome.commit },
          msgIds.mergeResolved(req, round),
        );
      }
      // How the scheduler orders merge results (MergeResult.integrationGeneration); undefined: by arrival.
      const integrationGeneration = generation ?? (await this.timed("generation", () => this.generation(req.repo, outcome.commit)));
      return { ...base, status: "merged", integrationCommit: outcome.commit, ...(integrationGeneration !== undefined ? { integrationGeneration } : {}), files: [], message: outcome.how };
    }
    if (outcome.kind === "skipped") {
      const message = `skipped by ${req.resolution?.by || "a person"}`;
      const record = await this.writeHitl(id, resolving, { type: "decide", at, round, outcome: "skipped", message });
      return { ...base, status: "skipped", files: record.files, message, hitlId: id };
    }
    // Everything else needs a person (again): a new record, or round `round + 1` with what was tried in its history.
    const notMerged: NotMerged = outcome;
    const files = notMerged.kind === "conflict" || (notMerged.kind === "error" && resolving) ? [] : await changedFiles(req);
    const details = escalationDetails(req, notMerged, resolving?.record, { target: await readBranch(req.repo, req.integrationBranch), files });
    const tried = resolving ? { outcome: notMerged.kind === "validation_failed" ? ("validation_failed" as const) : ("conflict" as const), message: summary(notMerged) } : undefined;
    const record = await this.writeHitl(id, hitl, { type: "escalate", at, details, ...(tried ? { tried } : {}) });
    this.escalated++;
    if (record.reason === "conflict") this.conflicts++;
    await this.announce(record);
    return attentionResult(record);
  }

  /**
   * Applies a HITL event to the record (src/runtime/hitl-state.ts) and stores it with
   * compare-and-set (create when there is none). A refusal is a state this merge
   * coordinator did not expect: reported as an error, not written.
   */
  private async writeHitl(id: string, current: { record: HitlRecord; revision: number } | undefined, event: HitlEvent): Promise<HitlRecord> {
    const t = hitlTransition(current?.record, event);
    if (!t.ok) throw new AdoError(`the HITL record ${id} cannot take '${event.type}': ${t.refusal.message}`);
    const value = encodeValue(SCHEMAS.HitlRecord, t.record);
    if (current) current.revision = await this.hitl.update(id, value, current.revision);
    else await this.hitl.create(id, value);
    if (current) current.record = t.record;
    return t.record;
  }

  /** Events of an escalation (the record is written first): merge.conflict, then merge.hitl_required. */
  private async announce(record: HitlRecord): Promise<void> {
    const at = record.updatedAt;
    const task = { runId: record.runId, taskId: record.taskId, attempt: record.attempt, at };
    if (record.reason === "conflict") {
      await this.emit({ type: "merge.conflict", ...task, files: record.files, message: record.message }, msgIds.mergeConflict(record, record.round));
    }
    await this.emit(
      { type: "merge.hitl_required", ...task, hitlId: record.id, round: record.round, reason: record.reason, files: record.files, message: record.message },
      msgIds.hitlRequired(record, record.round),
    );
  }

  /** `--merge-into`: bring the target branch up to the integration branch, when that is safe. */
  private async mergeInto(req: MergeIntoRequest): Promise<void> {
    let outcome: MergeIntoOutcome;
    try {
      const r = await mergeIntoTarget({
        repo: req.repo,
        integration: req.integrationBranch,
        into: req.into,
        base: req.baseCommit,
        message: `ado: merge run ${req.runId} (${req.integrationBranch}) into ${req.into}`,
        updateCheckedOut: req.updateCheckout,
      });
      outcome = r.kind === "refused" ? { into: req.into, status: "refused", reason: r.reason } : { into: req.into, status: r.kind, commit: r.commit, reason: "" };
    } catch (err) {
      if (isTransient(err)) throw err;
      outcome = { into: req.into, status: "error", reason: errorMessage(err) };
    }
    await this.reportInto(req, outcome);
  }

  private async reportInto(req: MergeIntoRequest, outcome: MergeIntoOutcome): Promise<void> {
    const { data, headers } = encode(SCHEMAS.SchedulerInput, { type: "merge.into.result", runId: req.runId, ...outcome });
    await this.js.publish(this.ctx.topo.subjects.results(req.runId), data, { headers, msgID: msgIds.mergeIntoResult(req.runId) });
  }

  private integrateOptions(req: MergeRequest, resolver?: ResolverChoice) {
    return integrateOptionsFor(req, this.scratchDir, {
      ...(resolver ? { resolver } : {}),
      signal: this.abort.signal,
      onOutput: (stream, chunk, phase) => this.log.debug({ runId: req.runId, taskId: req.taskId, phase, stream }, chunk.trimEnd()),
    });
  }

  /** The first-parent count of a commit, from what this merger made or read before, else from git. */
  private async generation(repo: string, commit: string): Promise<number | undefined> {
    const known = this.generations.get(`${repo}\0${commit}`);
    if (known !== undefined) return known;
    const n = await firstParentCount(repo, commit);
    if (n !== undefined) this.remember(repo, commit, n);
    return n;
  }

  private remember(repo: string, commit: string, generation: number): void {
    this.generations.set(`${repo}\0${commit}`, generation);
    if (this.generations.size > GENERATIONS_KEPT) this.generations.delete(this.generations.keys().next().value!);
  }

  private async readHitl(id: string): Promise<{ record: HitlRecord; revision: number } | undefined> {
    const e = await this.hitl.get(id);
    if (!e || e.operation !== "PUT") return undefined;
    return { record: decode(SCHEMAS.HitlRecord, e.value), revision: e.revision };
  }

  /** Publishes a result for the scheduler; the caller acks the request only after this. */
  private async report(result: MergeResult, msgID: string): Promise<void> {
    const { data, headers } = encode(SCHEMAS.SchedulerInput, result);
    await this.js.publish(this.ctx.topo.subjects.results(result.runId), data, { headers, msgID });
  }

  /**
   * Publishes an event with an id of our own: a task's merge can need attention several
   * times (one round each), which the default event id would deduplicate.
   */
  private async emit(event: AdoEvent, msgID: string): Promise<void> {
    const { data, headers } = encode(SCHEMAS.AdoEvent, event);
    const taskId = "taskId" in event ? event.taskId : undefined;
    await this.js.publish(this.ctx.topo.subjects.event({ type: event.type, runId: event.runId, taskId }), data, { headers, msgID });
  }

  private now(): string {
    return new Date(this.clock.now()).toISOString();
  }

  // ------------------------------------------------------------ worktrees

  /**
   * Queues the removal of a task's worktree, off the merge path: removals run in the
   * background, a few at a time, and drain() waits for them. One lost in a crash leaves a
   * worktree whose work is on its branch, which a cleanup pass removes. `merged`: the
   * task's commit is on the integration branch (its record says `merged`, else `removed`).
   */
  private releaseWorktree(req: MergeRequest, merged: boolean): void {
    this.pendingReleases++;
    this.releaseQueue.push({ req, merged });
    this.nextRelease();
  }

  private nextRelease(): void {
    while (this.releasing < RELEASES_AT_ONCE && this.releaseQueue.length) {
      const { req, merged } = this.releaseQueue.shift()!;
      this.releasing++;
      void this.timed("worktree-release", () => this.removeWorktree(req, merged))
        .catch((err) => this.log.warn({ worktree: req.worktree, err: errorMessage(err) }, "worktree not released"))
        .finally(() => {
          this.releasing--;
          this.pendingReleases--;
          for (const wake of this.releaseWaiters.splice(0)) wake();
          this.nextRelease();
        });
    }
  }

  /** Resolves once no more than `max` removals wait or run. */
  private async releaseRoom(max: number): Promise<void> {
    while (this.pendingReleases > max) await new Promise<void>((resolve) => this.releaseWaiters.push(resolve));
  }

  /** One manager per repository: it resolves the repository once, not at every removal. */
  private worktreeManager(repo: string): WorktreeManager {
    let wt = this.worktreeManagers.get(repo);
    if (!wt) this.worktreeManagers.set(repo, (wt = new WorktreeManager({ repo, baseDir: this.opts.worktreeDir, logger: this.log })));
    return wt;
  }

  /**
   * Removes the task's worktree (its branch stays) and records what became of it in the
   * worktree registry: `merged` when the task's commit is on the integration branch,
   * `removed` otherwise (a conflict, work released unmerged), `kept` with the reason
   * when it cannot be removed (uncommitted work appeared in it). Never fatal.
   */
  private async removeWorktree(req: MergeRequest, merged: boolean): Promise<void> {
    const path = req.worktree!;
    const registry = new WorktreeRegistry(this.ctx.kv.worktrees, this.log);
    const record = (update: Pick<WorktreeRecord, "state"> & Partial<WorktreeRecord>) => {
      const now = new Date().toISOString();
      const fallback = { runId: req.runId, taskId: req.taskId, repo: req.repo, path, branch: req.branch, host: hostname(), createdAt: now, finishedAt: now };
      return registry
        .update(req.runId, req.taskId, { ...update, updatedBy: `merger ${this.instance}` }, fallback)
        .catch((err) => this.log.warn({ worktree: path, err: errorMessage(err) }, "worktree registry not updated"));
    };
    try {
      // Already gone (cleanup took it, or it lives on another host's disk): nothing to record.
      if (!(await this.worktreeManager(req.repo).remove(path))) return;
      await record(merged ? { state: "merged", commit: req.commit } : { state: "removed", commit: req.commit, reason: "not merged; its work stays on its branch" });
    } catch (err) {
      // Never fatal: the branch is merged; a worktree we cannot remove cleanly is kept and reported.
      this.log.warn({ worktree: path, err: errorMessage(err) }, "merged, but the worktree was kept");
      await record({ state: "kept", reason: `the merge coordinator could not remove it: ${errorMessage(err)}` });
    }
  }
}

/** The files the task itself changed (since it forked from the integration branch). */
async function changedFiles(req: MergeRequest): Promise<string[]> {
  try {
    const head = (await readBranch(req.repo, req.integrationBranch)) ?? req.baseCommit;
    return await filesChangedSinceFork(req.repo, head, req.commit, req.baseCommit);
  } catch {
    return [];
  }
}
