/**
 * The reads and writes behind the seeds' queries and mutations (runs, task status,
 * control, HITL, workers, budget), over the KV buckets and the work streams. The `api`
 * actor serves them (src/actors/api/); AdoClient falls back to them only when no API
 * answers on the server (a stack started without the `api` actor).
 */
import type { JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { decode, encode, encodeValue } from "./codec.js";
import { writeControl } from "./control.js";
import { errorMessage } from "./errors.js";
import { ID_PATTERN } from "./ids.js";
import { entriesOf, listKeys } from "./kv-watch.js";
import { SCHEMAS, type AttemptClaim, type TaskRecord, type BudgetRequest, type ControlAction, type ControlRequest, type HitlRecord, type MergeRequest, type RunRecord, type TaskStatus, type WorkerRecord } from "./messages.js";
import { attemptKey, msgIds, scalerKeys, taskKey } from "./names.js";
import type { PolicyOverride, ScalerPoolState } from "./scaling.js";
import type { BucketKey, Topology } from "./topology.js";
import type { CapChange } from "./budget.js";
import type { HitlListItem, RunListItem, TaskStatusView } from "./api.js";
import type { Logger } from "./logger.js";
import { readFleetRecords } from "./workers-view.js";
import { loadRunFromSnapshot } from "./run-load.js";
import type { RunFold } from "./run-fold.js";
import { variantCount } from "./graph.js";

/** A run, or one task of a run. */
export interface Target {
  runId: string;
  taskId?: string;
}

export interface RunStatusView {
  run: RunRecord;
  tasks: TaskStatusView[];
}

/** A person's choice on a HITL record, as the merge coordinator carries it out. */
export type Resolution = Omit<NonNullable<MergeRequest["resolution"]>, "round" | "at" | "by">;

/** Whether a run still goes on (running, or waiting for a person). */
export const isLive = (run: Pick<RunRecord, "status">) => run.status === "running" || run.status === "needs_attention";

/** The run and task records, the HITL records, the worker registry: read and changed as the API's endpoints do. */
export class Records {
  constructor(
    private readonly kv: () => Promise<Record<BucketKey, KV>>,
    private readonly js: JetStreamClient,
    private readonly topo: Topology,
    private readonly log?: Logger,
  ) {}

  /** The scheduler's record of a run, if it knows the run. */
  async run(runId: string): Promise<RunRecord | undefined> {
    if (!ID_PATTERN.test(runId)) return undefined;
    const e = await (await this.kv()).runs.get(runId);
    return e?.operation === "PUT" ? decode(SCHEMAS.RunRecord, e.value) : undefined;
  }

  /** Runs known to the scheduler, newest first; `active` keeps the running ones (and those waiting for a person). */
  async runs(opts: { active?: boolean; task?: string } = {}): Promise<RunRecord[]> {
    const kv = (await this.kv()).runs;
    const out: RunRecord[] = [];
    for (const key of await listKeys(kv)) {
      const run = await this.run(key).catch((err) => {
        // One unreadable record must not hide every other run.
        this.log?.warn({ runId: key, err: errorMessage(err) }, "unreadable run record skipped");
        return undefined;
      });
      if (!run || (opts.active && !isLive(run))) continue;
      if (opts.task !== undefined && !run.graph.tasks.some((t) => t.id === opts.task)) continue;
      out.push(run);
    }
    return out.sort((a, b) => (a.acceptedAt < b.acceptedAt ? 1 : -1));
  }

  /** One run's record and every task's state, including which worker runs what now (see statusRead). */
  async status(runId: string): Promise<RunStatusView | undefined> {
    return (await this.statusRead(runId))?.view;
  }

  /**
   * One run's status view, and how it was read. The run's snapshot and the events after
   * it (run-load.ts, as `ado attach` loads a run) give every task that has ended, and
   * every task that waits for its dependencies, without reading its record: a run of
   * 10,000 tasks costs one snapshot read and its latest events, not 10,000 KV gets. The
   * other tasks (queued, running, merging, waiting for a person, cancelled), those of
   * best-of-N tasks and batches, and every task of a run without a usable snapshot are
   * read from their records and claims, which say more than the events (a claim before
   * its task.started; what a late result of a cancelled attempt cost). `via: "records"`
   * reads every record (the benchmark's baseline, and the test that both agree).
   */
  async statusRead(runId: string, opts: { via?: "auto" | "records" } = {}): Promise<{ view: RunStatusView; read: StatusRead } | undefined> {
    const run = await this.run(runId);
    if (!run) return undefined;
    const kv = await this.kv();
    const read: StatusRead = { from: "records", taskRecords: 0, claims: 0, events: 0 };
    let fold: RunFold | undefined;
    if (opts.via !== "records") {
      const loaded = await loadRunFromSnapshot({ js: this.js, snapshots: kv.snapshots, topo: this.topo, runId, ...(this.log ? { log: this.log } : {}) }).catch((err: unknown) => ({
        why: `its snapshot could not be loaded (${errorMessage(err)})`,
      }));
      if ("fold" in loaded && loaded.fold.statusKnown) {
        fold = loaded.fold;
        Object.assign(read, { from: "snapshot", events: loaded.read, loadMs: loaded.ms });
      } else read.why = "fold" in loaded ? "its snapshot predates per-task tokens" : loaded.why;
      if (read.why) this.log?.debug({ runId, why: read.why }, "status: reading every task record instead of the run's snapshot");
    }
    const tasks: TaskStatusView[] = [];
    /** Roots taken as queued for want of a record (first attempts' `queued` is not written). */
    const guessed = new Set<TaskStatusView>();
    const known = new Map<string, TaskStatusView>();
    if (fold) {
      for (const def of run.graph.tasks) {
        const view = settledView(fold, def, run);
        if (view) known.set(def.id, view);
      }
    }
    // The records of the other tasks, then the claims of those the records say wait, 32 gets at a time.
    const unknown = run.graph.tasks.filter((def) => !known.has(def.id));
    read.taskRecords = unknown.length;
    const recs = new Map<string, TaskRecord>();
    for (const e of await entriesOf(kv.tasks, unknown.map((def) => taskKey(runId, def.id)))) {
      const rec = decode(SCHEMAS.TaskRecord, e.value);
      recs.set(rec.taskId, rec);
    }
    // The scheduler's record says "queued" until the result; a claim says it runs.
    const claimed = (rec: TaskRecord | undefined) => (rec?.status ?? "pending") === "pending" || rec?.status === "queued";
    const claimKeys = new Map(unknown.filter((def) => claimed(recs.get(def.id))).map((def) => [attemptKey({ runId, taskId: def.id, attempt: Math.max(1, recs.get(def.id)?.attempts ?? 0) }), def.id]));
    read.claims = claimKeys.size;
    const claims = new Map<string, AttemptClaim>();
    for (const e of await entriesOf(kv.claims, [...claimKeys.keys()])) claims.set(claimKeys.get(e.key)!, decode(SCHEMAS.AttemptClaim, e.value));
    for (const def of run.graph.tasks) {
      const settled = known.get(def.id);
      if (settled) {
        tasks.push(settled);
        continue;
      }
      const rec = recs.get(def.id);
      let status: TaskStatus = rec?.status ?? "pending";
      let attempts = rec?.attempts ?? 0;
      let workerId = rec?.workerId;
      let startedAt = rec?.startedAt;
      let guessing = false;
      if (status === "pending" || status === "queued") {
        const attempt = Math.max(1, attempts);
        const c = claims.get(def.id);
        if (c) {
          status = "running";
          attempts = attempt;
          workerId = c.workerId;
          startedAt = c.claimedAt;
        } else if (status === "pending" && run.status === "running" && def.needs.length === 0) {
          status = "queued";
          attempts = 1;
          guessing = true;
        }
      }
      const view: TaskStatusView = {
        id: def.id,
        status,
        attempts,
        ...(workerId !== undefined ? { workerId } : {}),
        ...(startedAt !== undefined ? { startedAt } : {}),
        ...(rec?.finishedAt !== undefined ? { finishedAt: rec.finishedAt } : {}),
        ...(rec?.error !== undefined ? { error: rec.error } : {}),
        needs: def.needs,
        costUsd: rec?.costUsd ?? 0,
        tokens: rec?.tokens ?? 0,
        ...(rec?.batch ? { batch: rec.batch } : {}),
        ...(rec?.variants ? { variants: rec.variants } : {}),
      };
      tasks.push(view);
      if (guessing) guessed.add(view);
    }
    heldByStages(run, tasks, guessed);
    // A batch's members run when its lead runs (one attempt, the lead's claim).
    const byId = new Map(tasks.map((t) => [t.id, t]));
    for (const t of tasks) {
      const lead = t.batch && t.batch !== t.id ? byId.get(t.batch) : undefined;
      if (lead?.status === "running" && t.status === "queued") Object.assign(t, { status: "running", workerId: lead.workerId, startedAt: lead.startedAt });
    }
    return { view: { run, tasks }, read };
  }

  /** Writes a control request to the bucket (workers and the balancer act on it) and sends it to the scheduler, which records it. */
  async control(target: Target, action: ControlAction, reason: string, by: string): Promise<ControlRequest> {
    const request: ControlRequest = {
      type: "control",
      runId: target.runId,
      ...(target.taskId ? { taskId: target.taskId } : {}),
      action,
      reason,
      by,
      at: new Date().toISOString(),
    };
    await writeControl((await this.kv()).control, request);
    const { data, headers } = encode(SCHEMAS.SchedulerInput, request);
    await this.js.publish(this.topo.subjects.results(target.runId), data, { headers });
    return request;
  }

  /** Sends a budget change to the run's scheduler (it applies it to the caps it holds). */
  async budget(runId: string, change: { usd?: CapChange; tokens?: CapChange }, by: string): Promise<BudgetRequest> {
    const request: BudgetRequest = {
      type: "budget",
      runId,
      ...(change.usd ? ("set" in change.usd ? { maxCostUsd: change.usd.set } : { addCostUsd: change.usd.add }) : {}),
      ...(change.tokens ? ("set" in change.tokens ? { maxTokens: change.tokens.set } : { addTokens: change.tokens.add }) : {}),
      by,
      at: new Date().toISOString(),
    };
    const { data, headers } = encode(SCHEMAS.SchedulerInput, request);
    await this.js.publish(this.topo.subjects.results(runId), data, { headers, timeout: 10_000 });
    return request;
  }

  /** Every HITL record with its KV revision, oldest first. */
  async hitlRecords(): Promise<{ record: HitlRecord; revision: number }[]> {
    const kv = (await this.kv()).hitl;
    const out: { record: HitlRecord; revision: number }[] = [];
    for (const key of await listKeys(kv)) {
      const found = await this.hitlRecord(key);
      if (found) out.push(found);
    }
    return out.sort((a, b) => (a.record.createdAt < b.record.createdAt ? -1 : 1));
  }

  /** One HITL record by id (`<runId>.<taskId>`) with its revision. */
  async hitlRecord(id: string): Promise<{ record: HitlRecord; revision: number } | undefined> {
    const e = await (await this.kv()).hitl.get(id).catch(() => null);
    return e?.operation === "PUT" ? { record: decode(SCHEMAS.HitlRecord, e.value), revision: e.revision } : undefined;
  }

  /** Whether the record's task still waits (its run is live and the task needs attention). */
  async isWaiting(record: HitlRecord): Promise<boolean> {
    if (record.state === "resolved") return false;
    const view = await this.status(record.runId);
    return !!view && isLive(view.run) && view.tasks.find((t) => t.id === record.taskId)?.status === "needs_attention";
  }

  /** The HITL records as `ado hitl list` shows them: those whose task waits (`all`: every one). */
  async hitlList(all: boolean): Promise<HitlListItem[]> {
    const out: HitlListItem[] = [];
    for (const { record: r } of await this.hitlRecords()) {
      const waiting = await this.isWaiting(r);
      if (!waiting && !all) continue;
      out.push({ id: r.id, runId: r.runId, taskId: r.taskId, state: r.state, waiting, reason: r.reason, files: r.files, message: r.message, round: r.round, createdAt: r.createdAt });
    }
    return out;
  }

  /**
   * Asks the merge coordinator to carry out a person's choice for the record's current
   * round. Deduplicated per round: sending the same round twice carries it out once.
   */
  async requestResolution(record: HitlRecord, resolution: Resolution, by: string): Promise<void> {
    const request: MergeRequest = {
      type: "merge.request",
      runId: record.runId,
      taskId: record.taskId,
      attempt: record.attempt,
      repo: record.repo,
      commit: record.source,
      branch: record.branch,
      baseCommit: record.base,
      integrationBranch: record.integrationBranch,
      releaseOnly: false,
      settings: record.settings,
      prompt: record.prompts.task,
      related: record.prompts.related,
      resolution: { ...resolution, round: record.round, by, at: new Date().toISOString() },
    };
    const { data, headers } = encode(SCHEMAS.MergeRequest, request);
    await this.js.publish(this.topo.subjects.merge(record.runId), data, { headers, msgID: msgIds.resolve(record, record.round), timeout: 10_000 });
  }

  /**
   * The worker registry, the scaler's pools (state, live policy) and what waits on each
   * worker's work subject (left out when the work stream cannot be read: a worker's own
   * count is then as of its last fetch); unreadable entries are skipped and logged.
   */
  async workers(): Promise<{ workers: WorkerRecord[]; pools: { state: ScalerPoolState; policy?: PolicyOverride }[]; queued?: Record<string, number> }> {
    const kv = await this.kv();
    const { records: workers, states, policies, problems } = await readFleetRecords(kv.workers, kv.scaler);
    for (const problem of problems) this.log?.warn(problem);
    let queued: Record<string, number> | undefined;
    try {
      const on = (await (await this.js.jetstreamManager()).streams.info(this.topo.streams.work.name, { subjects_filter: this.topo.subjects.work("*") })).state.subjects ?? {};
      const head = this.topo.subjects.work("");
      queued = Object.fromEntries(Object.entries(on).map(([subject, n]) => [subject.slice(head.length), n]));
    } catch (err) {
      this.log?.warn({ err: errorMessage(err) }, "the work stream was not read: queued work left out of the workers' listing");
    }
    return { workers, pools: states.map((state) => ({ state, ...withPolicy(policies.find((p) => p.pool === state.pool)) })), ...(queued ? { queued } : {}) };
  }

  /**
   * Stores a HITL record only if it is still at `revision` (compare-and-set: the merge
   * coordinator writes the same record); returns the new revision, or throws if someone
   * changed it.
   */
  async writeHitl(record: HitlRecord, revision: number): Promise<number> {
    return (await this.kv()).hitl.update(record.id, encodeValue(SCHEMAS.HitlRecord, record), revision);
  }

  /** The pools the scaler has state for. */
  async scalerPools(): Promise<string[]> {
    const out: string[] = [];
    for (const key of await listKeys((await this.kv()).scaler)) {
      const k = scalerKeys.parse(key);
      if (k?.kind === "state") out.push(k.pool);
    }
    return out;
  }

  /** A pool's live policy, if one was set. */
  async policy(pool: string): Promise<PolicyOverride | undefined> {
    const e = await (await this.kv()).scaler.get(scalerKeys.policy(pool));
    return e?.operation === "PUT" ? decode(SCHEMAS.ScalerPolicy, e.value) : undefined;
  }

  /** Stores a pool's live policy (the scaler applies it at its next decision). */
  async setPolicy(record: PolicyOverride): Promise<void> {
    await (await this.kv()).scaler.put(scalerKeys.policy(record.pool), encodeValue(SCHEMAS.ScalerPolicy, record));
  }
}

/** How a status view was read (Records.statusRead): what the benchmark and the tests look at. */
export interface StatusRead {
  /** `snapshot`: the run's snapshot and the events after it, records only for the tasks it cannot vouch for. */
  from: "snapshot" | "records";
  /** Why the snapshot was not used. */
  why?: string;
  /** Task records and claims read (KV gets), and events read after the snapshot. */
  taskRecords: number;
  claims: number;
  events: number;
  /** From the snapshot: ms reading it, then the events after it (run-load.ts). */
  loadMs?: { snapshot: number; events: number };
}

/**
 * A task's status view from the run's fold, when the fold says what its record says:
 * it ended succeeded (the run not halted: a task that finished after a halt is skipped
 * by the scheduler without an event of its own), failed or skipped, or it waits for
 * its dependencies and never ran. Undefined for any other task (read its record): its
 * record or claim may know more than the events (see Records.statusRead), and so may
 * a best-of-N task's (its variants) and a batched one's (its batch).
 */
export function settledView(fold: RunFold, def: RunRecord["graph"]["tasks"][number], run: Pick<RunRecord, "halted" | "graph">): TaskStatusView | undefined {
  const t = fold.tracker.tasks.get(def.id);
  if (!t || variantCount(def) > 1 || (def.stage !== undefined && run.graph.stages?.[def.stage]?.batch)) return undefined;
  switch (t.status) {
    case "pending":
      // A root is queued at once (its record is not written); a retry held back has attempts.
      if (t.attempts > 0 || def.needs.length === 0) return undefined;
      return { id: def.id, status: "pending", attempts: 0, needs: def.needs, costUsd: 0, tokens: 0 };
    case "succeeded":
      if (run.halted) return undefined;
      break;
    case "failed":
    case "skipped":
      break;
    default:
      return undefined;
  }
  // The keys in the order the record path writes them: `ado status --json` prints them so.
  return {
    id: def.id,
    status: t.status,
    attempts: t.attempts,
    ...(t.workerId !== undefined ? { workerId: t.workerId } : {}),
    ...(t.startedAt !== undefined ? { startedAt: t.startedAt } : {}),
    ...(t.finishedAt !== undefined ? { finishedAt: t.finishedAt } : {}),
    // A success clears the error of an earlier attempt or merge conflict (the scheduler's record does).
    ...(t.status !== "succeeded" && t.error !== undefined ? { error: t.error } : {}),
    needs: def.needs,
    costUsd: fold.parts(def.id)!.notes.costUsd,
    tokens: t.tokens ?? 0,
  };
}

/**
 * Roots a stage's maxParallel holds back are pending, not queued: of the roots taken as
 * queued for want of a record, a stage keeps as many as its limit leaves room for beside
 * its tasks known to be running or queued, in the graph's order (the scheduler's order).
 */
function heldByStages(run: RunRecord, tasks: TaskStatusView[], guessed: ReadonlySet<TaskStatusView>): void {
  const stages = run.graph.stages;
  if (!stages || guessed.size === 0) return;
  const stageOf = new Map(run.graph.tasks.map((t) => [t.id, t.stage]));
  const inFlight = new Map<string, number>();
  for (const t of tasks) {
    const stage = stageOf.get(t.id);
    if (stage !== undefined && !guessed.has(t) && (t.status === "running" || t.status === "queued")) inFlight.set(stage, (inFlight.get(stage) ?? 0) + 1);
  }
  for (const t of guessed) {
    const stage = stageOf.get(t.id);
    const limit = stage === undefined ? undefined : stages[stage]?.maxParallel;
    if (limit === undefined) continue;
    const n = inFlight.get(stage!) ?? 0;
    if (n < limit) inFlight.set(stage!, n + 1);
    else {
      t.status = "pending";
      t.attempts = 0;
    }
  }
}

const withPolicy = (policy: PolicyOverride | undefined) => (policy ? { policy } : {});

/** A run as a listing shows it: its record without the graph. */
export function runListItem(run: RunRecord): RunListItem {
  return {
    runId: run.runId,
    name: run.name,
    status: run.status,
    paused: run.paused,
    submittedAt: run.submittedAt,
    acceptedAt: run.acceptedAt,
    ...(run.finishedAt !== undefined ? { finishedAt: run.finishedAt } : {}),
    ...(run.error !== undefined ? { error: run.error } : {}),
    tasks: run.graph.tasks.length,
    costUsd: run.costUsd,
    tokens: run.tokens,
  };
}
