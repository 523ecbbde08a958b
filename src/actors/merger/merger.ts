import { hostname } from "node:os";
import type { KV } from "@nats-io/kv";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode, encodeValue } from "../../runtime/codec.js";
import { BatchLoop, type Delivery } from "../../runtime/consume.js";
import { AdoError, errorMessage } from "../../runtime/errors.js";
import {
  createBranchIfAbsent,
  filesChangedSinceFork,
  firstParentCount,
  integrate,
  integrateChoosing,
  type IntegrateOptions,
  type IntegrateOutcome,
  isAncestor,
  mergeIntoTarget,
  pushRef,
  readBranch,
  RemoteClones,
  WorktreeManager,
  type WorktreeRecord,
} from "../../git/index.js";
import { WorktreeRegistry } from "../../runtime/worktree-registry.js";
import { DEFAULT_MERGE_COMMAND_TIMEOUT_MS } from "../../runtime/graph.js";
import {
  SCHEMAS,
  type AdoEvent,
  type HitlConflict,
  type HitlRecord,
  type MergeIntoOutcome,
  type MergeIntoRequest,
  type MergeRequest,
  type MergeResult,
  type MergerInput,
} from "../../runtime/messages.js";
import { actorConsumer, consumers } from "../../runtime/topology.js";
import { msgIds, taskKey } from "../../runtime/names.js";
import { integrateOptionsFor, mergeEnv, mergeScratchDir } from "../../runtime/merging.js";

export interface MergerOptions {
  /** Worktree base directory, to remove task worktrees once merged. */
  worktreeDir: string;
  /** Scratch worktrees for conflict resolution and validation; default `<worktreeDir>/_merge`. */
  scratchDir?: string;
  /** Clones of runs' git remotes (remote mode); default: defaultCloneDir(). */
  cloneDir: string;
}

/** Each side of a conflicted file is kept in the HITL record up to this size. */
const SIDE_LIMIT = 32 * 1024;
/** Beyond this much conflict content in one record, further files keep their path and kind only. */
const CONFLICTS_LIMIT = 256 * 1024;

type Outcome = IntegrateOutcome | { kind: "skipped" } | { kind: "error"; message: string };

/**
 * The merge coordinator: folds each finished task branch into the run's integration
 * branch with the run's own merge settings (mode; per-path rules, then a resolver agent
 * for conflicts; validation of the merged tree), through src/git/integrate.ts,
 * which never touches the user's checkout and moves the branch only by compare-and-swap.
 *
 * What it cannot resolve it escalates: it writes a HITL record (KV `hitl`), announces
 * `merge.hitl_required`, and reports `needs_attention`; `ado hitl resolve` later sends
 * the same request with a person's choice, carried out here. The scheduler asks for a
 * merge only once the task's dependencies are merged, so merges land in dependency order.
 *
 * Nothing is lost in a crash: a request is acked only after its result is published
 * (each with a Nats-Msg-Id); a redelivered request finds its merge done (up to date) or
 * its HITL record written, and replays the same result instead of acting twice.
 */
export class Merger extends Actor {
  private loop?: BatchLoop<MergerInput>;
  private merged = 0;
  private conflicts = 0;
  private escalated = 0;
  private readonly abort = new AbortController();
  private readonly scratchDir: string;
  private readonly clones: RemoteClones;
  /** Remote mode: the remote's integration head when a request's merge began (the push's lease). */
  private readonly remoteHeads = new WeakMap<MergeRequest, string>();

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
    // A merge can take a while on a big repository (and a validation longer): give it minutes.
    await jsm.consumers.add(topo.streams.merge.name, actorConsumer(consumers.merge, topo.subjects.mergeAll, { ackWaitMs: 300_000 }));
    this.loop = new BatchLoop<MergerInput>({
      consumer: await this.js.consumers.get(topo.streams.merge.name, consumers.merge),
      deadLetters: this.deadLetters,
      schema: SCHEMAS.MergeRequest,
      logger: this.log,
      // One merge at a time per replica: merges into one branch are sequential anyway.
      maxBatch: 1,
      handle: async (batch) => {
        for (const d of batch) await this.handleOne(d);
      },
    });
    await this.loop.start();
  }

  protected async onDrain(force: AbortSignal): Promise<void> {
    // Past the grace period, stop a long resolver or validation: the request is not
    // acked, so it is redelivered (to this replica after a restart, or another one).
    force.addEventListener("abort", () => this.abort.abort(), { once: true });
    await this.loop?.stop();
  }

  override stats() {
    return { merged: this.merged, conflicts: this.conflicts, escalated: this.escalated };
  }

  private get hitl(): KV {
    return this.ctx.kv.hitl;
  }

  private async handleOne({ data, msg }: Delivery<MergerInput>): Promise<void> {
    if (data.type === "merge.into") return this.mergeInto(data);
    if (data.releaseOnly) {
      if (data.worktree) await this.removeWorktree(data);
      return;
    }
    // In-progress acks keep a long resolver or validation from being redelivered meanwhile.
    const keepAlive = setInterval(() => msg.working(), 60_000);
    try {
      const req = data.remote ? await this.inClone(data) : data;
      if (req.resolution) await this.resolve(req);
      else await this.mergeOne(req);
    } finally {
      clearInterval(keepAlive);
    }
  }

  /**
   * Remote mode: the integration branch of record is the remote's. The merge happens in
   * this host's clone, freshly fetched (which resets the clone's branches to the
   * remote's), and a merged result is pushed with a lease on the head it started from
   * (see publish). A push that loses a race throws a retryable error: the request is
   * redelivered and merged again on top of the new head.
   */
  private async inClone(data: MergeRequest): Promise<MergeRequest> {
    const dir = await this.clones.fetchRun(data.remote!, data.runId);
    const req = { ...data, repo: dir };
    this.remoteHeads.set(req, (await readBranch(dir, data.integrationBranch)) ?? "");
    return req;
  }

  /** Remote mode: pushes a merged integration head (a no-op for runs without a remote). */
  private async publish(req: MergeRequest, outcome: Outcome): Promise<void> {
    if (!req.remote || outcome.kind !== "merged") return;
    await pushRef(req.repo, req.remote, outcome.commit, `refs/heads/${req.integrationBranch}`, { expected: this.remoteHeads.get(req) ?? "" });
  }

  /** A task's first merge: integrate, and escalate what cannot be merged. */
  private async mergeOne(req: MergeRequest): Promise<void> {
    const id = taskKey(req.runId, req.taskId);
    let result: MergeResult;
    try {
      const existing = await this.readHitl(id);
      if (existing && existing.record.source === req.commit) {
        // Redelivered after it was escalated: never reopen (or redo) what a person owns.
        if (existing.record.state !== "resolved") await this.announce(existing.record);
        result = replayed(existing.record);
      } else {
        await createBranchIfAbsent(req.repo, req.integrationBranch, req.baseCommit);
        const outcome = await integrate(this.integrateOptions(req));
        await this.publish(req, outcome);
        result = await this.conclude(req, outcome, 0, undefined);
      }
    } catch (err) {
      // Transient (a lock, a race, an abort on shutdown): let the message be redelivered.
      if (err instanceof AdoError && err.retryable) throw err;
      result = { type: "merge.result", runId: req.runId, taskId: req.taskId, status: "error", files: [], message: errorMessage(err), round: 0 };
    }
    // The task's work is committed on its branch, which stays: its worktree can go.
    if (req.worktree) await this.removeWorktree(req);
    await this.report(result, msgIds.mergeResult(req, 0));
  }

  /**
   * Carries out a person's choice for HITL round `resolution.round`. A request for a
   * round already decided replays that decision (a redelivery, or the CLI sending
   * twice); one for a round that is not the record's current one is stale and dropped.
   */
  private async resolve(req: MergeRequest): Promise<void> {
    const res = req.resolution!;
    const id = taskKey(req.runId, req.taskId);
    const found = await this.readHitl(id);
    if (!found) {
      this.log.warn({ id }, "a resolution for a merge that needs no attention: dropped");
      return;
    }
    let { record, revision } = found;
    const decided = record.history.find((h) => h.round === res.round);
    if (decided) {
      await this.report(fromHistory(record, decided), msgIds.mergeResult(req, res.round));
      return;
    }
    if (record.round !== res.round || record.state === "resolved") {
      this.log.warn({ id, round: res.round, current: record.round }, "a resolution for an earlier round: dropped");
      return;
    }
    const now = new Date(this.clock.now()).toISOString();
    record = { ...record, state: "resolving", choice: res.choice, by: res.by, updatedAt: now };
    revision = await this.hitl.update(id, encodeValue(SCHEMAS.HitlRecord, record), revision);

    let outcome: Outcome;
    try {
      outcome = await this.carryOut(req, record);
      await this.publish(req, outcome);
    } catch (err) {
      if (err instanceof AdoError && err.retryable) throw err;
      outcome = { kind: "error", message: errorMessage(err) };
    }
    const result = await this.conclude(req, outcome, res.round, { record, revision });
    await this.report(result, msgIds.mergeResult(req, res.round));
  }

  /** What each choice does; see `ado hitl resolve`. */
  private async carryOut(req: MergeRequest, record: HitlRecord): Promise<Outcome> {
    const res = req.resolution!;
    const opts = this.integrateOptions(req);
    switch (res.choice) {
      case "skip":
        return { kind: "skipped" };
      case "ours":
      case "theirs":
        return integrateChoosing(opts, res.choice);
      case "agent": {
        const command = res.resolver ?? req.settings.resolver?.run;
        if (!command) {
          return { kind: "error", message: "no resolver command: the run configures none; pass one with `ado hitl resolve <id> --choose agent --resolver <cmd>`" };
        }
        const timeoutMs = req.settings.resolver?.timeoutMs ?? DEFAULT_MERGE_COMMAND_TIMEOUT_MS;
        return integrate({ ...opts, resolver: { ...opts.resolver, command, timeoutMs, context: resolverContext(req, record) } });
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
   * this outcome settles (0 for a first merge).
   */
  private async conclude(
    req: MergeRequest,
    outcome: Outcome,
    round: number,
    hitl: { record: HitlRecord; revision: number } | undefined,
  ): Promise<MergeResult> {
    const id = taskKey(req.runId, req.taskId);
    const base = { type: "merge.result" as const, runId: req.runId, taskId: req.taskId, round };
    const now = new Date(this.clock.now()).toISOString();
    const choice = req.resolution?.choice;
    const noteDecision = async (entry: HitlRecord["history"][number], state: HitlRecord["state"]) => {
      const record: HitlRecord = {
        ...hitl!.record,
        state,
        history: [...hitl!.record.history, entry],
        updatedAt: now,
        ...(state === "resolved" ? { resolvedAt: now } : {}),
      };
      hitl!.revision = await this.hitl.update(id, encodeValue(SCHEMAS.HitlRecord, record), hitl!.revision);
      hitl!.record = record;
    };
    const decision = (outcomeName: HitlRecord["history"][number]["outcome"], message: string, commit?: string) => ({
      round,
      choice: choice!,
      by: req.resolution?.by ?? "",
      at: now,
      outcome: outcomeName,
      message,
      ...(commit ? { commit } : {}),
    });

    if (outcome.kind === "merged") {
      this.merged++;
      if (hitl) await noteDecision(decision("merged", `merged (${outcome.how})`, outcome.commit), "resolved");
      if (outcome.resolved.length > 0) {
        await this.emit(
          { type: "merge.resolved", runId: req.runId, taskId: req.taskId, attempt: req.attempt, at: now, paths: outcome.resolved, integrationCommit: outcome.commit },
          msgIds.mergeResolved(req, round),
        );
      }
      // How the scheduler orders merge results (MergeResult.integrationGeneration); undefined: by arrival.
      const integrationGeneration = await firstParentCount(req.repo, outcome.commit);
      return { ...base, status: "merged", integrationCommit: outcome.commit, integrationGeneration, files: [], message: outcome.how };
    }
    if (outcome.kind === "skipped") {
      const message = `skipped by ${req.resolution?.by || "a person"}`;
      await noteDecision(decision("skipped", message), "resolved");
      return { ...base, status: "skipped", files: hitl!.record.files, message, hitlId: id };
    }
    // Everything else needs a person (again): round `round + 1`, with what was tried in its history.
    const tried = hitl
      ? decision(outcome.kind === "validation_failed" ? "validation_failed" : "conflict", outcome.kind === "error" ? outcome.message : summary(outcome))
      : undefined;
    const record = await this.escalate(req, outcome, round + 1, hitl?.record, now, tried);
    if (hitl) hitl.revision = await this.hitl.update(id, encodeValue(SCHEMAS.HitlRecord, record), hitl.revision);
    else await this.hitl.put(id, encodeValue(SCHEMAS.HitlRecord, record));
    this.escalated++;
    if (record.reason === "conflict") this.conflicts++;
    await this.announce(record);
    return attentionResult(record);
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

  /** The HITL record of round `round` for an outcome a person must decide on. */
  private async escalate(
    req: MergeRequest,
    outcome: Exclude<Outcome, { kind: "merged" } | { kind: "skipped" }>,
    round: number,
    previous: HitlRecord | undefined,
    now: string,
    tried: HitlRecord["history"][number] | undefined,
  ): Promise<HitlRecord> {
    const target = await readBranch(req.repo, req.integrationBranch);
    let files: string[];
    let reason: HitlRecord["reason"];
    let message: string;
    let conflicts: HitlConflict[] = [];
    let validationOutput: string | undefined;
    let resolverOutput: string | undefined;
    if (outcome.kind === "conflict") {
      reason = "conflict";
      files = outcome.files;
      conflicts = capConflicts(outcome.conflicts);
      resolverOutput = outcome.resolverOutput;
      const others = req.related.filter((r) => r.files.some((f) => files.includes(f))).map((r) => `'${r.taskId}'`);
      message = `merge conflict in ${files.join(", ")} with ${others.length ? `task ${others.join(", ")} (already merged)` : "the integration branch"}: ${outcome.reason}`;
    } else if (outcome.kind === "validation_failed") {
      reason = "validation";
      files = await changedFiles(req);
      validationOutput = outcome.output;
      const last = outcome.output.trim().split("\n").pop() ?? "";
      message = `validation failed (${outcome.exitCode === null ? "killed" : `exit ${outcome.exitCode}`}) on the merged tree; the merge was backed out${last ? `: ${last}` : ""}`;
    } else {
      // The choice could not be carried out (no resolver, a bad manual commit, a git error).
      reason = previous?.reason ?? "conflict";
      files = previous?.files ?? (await changedFiles(req));
      conflicts = previous?.conflicts ?? [];
      validationOutput = previous?.validationOutput;
      message = outcome.message;
    }
    const related = req.related.filter((r) => r.files.some((f) => files.includes(f)));
    return {
      id: taskKey(req.runId, req.taskId),
      runId: req.runId,
      taskId: req.taskId,
      attempt: req.attempt,
      repo: req.repo,
      integrationBranch: req.integrationBranch,
      branch: req.branch,
      source: req.commit,
      base: req.baseCommit,
      ...(target ? { target } : {}),
      files,
      reason,
      message,
      conflicts,
      ...(validationOutput !== undefined ? { validationOutput } : {}),
      ...(resolverOutput !== undefined ? { resolverOutput } : {}),
      prompts: { task: req.prompt, related: related.length ? related : req.related },
      settings: req.settings,
      round,
      state: "open",
      history: [...(previous?.history ?? []), ...(tried ? [tried] : [])],
      createdAt: previous?.createdAt ?? now,
      updatedAt: now,
    };
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
      if (err instanceof AdoError && err.retryable) throw err;
      outcome = { into: req.into, status: "error", reason: errorMessage(err) };
    }
    const { data, headers } = encode(SCHEMAS.SchedulerInput, { type: "merge.into.result", runId: req.runId, ...outcome });
    await this.js.publish(this.ctx.topo.subjects.results(req.runId), data, { headers, msgID: msgIds.mergeIntoResult(req.runId) });
  }

  private integrateOptions(req: MergeRequest): IntegrateOptions {
    const s = req.settings;
    return integrateOptionsFor(req, this.scratchDir, {
      ...(s.resolver ? { resolver: { command: s.resolver.run, timeoutMs: s.resolver.timeoutMs, env: mergeEnv(req), context: resolverContext(req) } } : {}),
      signal: this.abort.signal,
      onOutput: (stream, chunk, phase) => this.log.debug({ runId: req.runId, taskId: req.taskId, phase, stream }, chunk.trimEnd()),
    });
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

  /**
   * Removes the task's worktree (its branch stays) and records what became of it in the
   * worktree registry: `merged` when the task's commit is on the integration branch,
   * `removed` otherwise (a conflict, work released unmerged), `kept` with the reason
   * when it cannot be removed (uncommitted work appeared in it). Never fatal.
   */
  private async removeWorktree(req: MergeRequest): Promise<void> {
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
      const removed = await new WorktreeManager({ repo: req.repo, baseDir: this.opts.worktreeDir, logger: this.log }).remove(path);
      // Already gone (cleanup took it, or it lives on another host's disk): nothing to record.
      if (!removed) return;
      const merged = await isAncestor(req.repo, req.commit, `refs/heads/${req.integrationBranch}`).catch(() => false);
      await record(merged ? { state: "merged", commit: req.commit } : { state: "removed", commit: req.commit, reason: "not merged; its work stays on its branch" });
    } catch (err) {
      // Never fatal: the branch is merged; a worktree we cannot remove cleanly is kept and reported.
      this.log.warn({ worktree: path, err: errorMessage(err) }, "merged, but the worktree was kept");
      await record({ state: "kept", reason: `the merge coordinator could not remove it: ${errorMessage(err)}` });
    }
  }
}

/** The scheduler's result for a HITL record that is open: needs attention, at its round. */
function attentionResult(record: HitlRecord): MergeResult {
  return {
    type: "merge.result",
    runId: record.runId,
    taskId: record.taskId,
    status: "needs_attention",
    round: record.round,
    files: record.files,
    message: record.message,
    hitlId: record.id,
    reason: record.reason,
  };
}

/** What a decided round of a HITL record told the scheduler, to tell it again. */
function fromHistory(record: HitlRecord, entry: HitlRecord["history"][number]): MergeResult {
  const base = { type: "merge.result" as const, runId: record.runId, taskId: record.taskId, round: entry.round, hitlId: record.id };
  if (entry.outcome === "merged") return { ...base, status: "merged", integrationCommit: entry.commit, files: [], message: entry.message };
  if (entry.outcome === "skipped") return { ...base, status: "skipped", files: record.files, message: entry.message };
  // The round after it is the record's (or a later one, which the scheduler then ignores).
  return attentionResult(record);
}

/** A first merge request seen again after its escalation: what the record says now. */
function replayed(record: HitlRecord): MergeResult {
  const last = record.history[record.history.length - 1];
  if (record.state === "resolved" && last) return fromHistory(record, last);
  return attentionResult(record);
}

/** What a resolver agent is told besides the conflicts: the prompts behind both sides. */
function resolverContext(req: MergeRequest, record?: HitlRecord): unknown {
  return {
    runId: req.runId,
    task: { id: req.taskId, branch: req.branch, prompt: req.prompt },
    // Already-merged tasks that changed the same files: the other side of the conflict.
    merged: record?.prompts.related ?? req.related,
  };
}

/** A line for the HITL history. */
function summary(outcome: Extract<IntegrateOutcome, { kind: "conflict" | "validation_failed" }>): string {
  return outcome.kind === "conflict"
    ? `still conflicted: ${outcome.reason}`
    : `validation failed (${outcome.exitCode === null ? "killed" : `exit ${outcome.exitCode}`})`;
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

/**
 * Conflict sides as a HITL record keeps them: each side cut to SIDE_LIMIT, and past
 * CONFLICTS_LIMIT in all, later files keep only their path and kind (the branches
 * hold everything; a KV value must stay under the server's max_payload).
 */
function capConflicts(conflicts: readonly { path: string; kind: string; base?: string; ours?: string; theirs?: string }[]): HitlConflict[] {
  let budget = CONFLICTS_LIMIT;
  return conflicts.map((c) => {
    const out: HitlConflict = { path: c.path, kind: c.kind, truncated: false };
    for (const side of ["base", "ours", "theirs"] as const) {
      const text = c[side];
      if (text === undefined) continue;
      const kept = Math.min(text.length, SIDE_LIMIT, budget);
      if (kept < text.length) out.truncated = true;
      if (kept > 0) out[side] = text.slice(0, kept);
      budget -= kept;
    }
    return out;
  });
}
