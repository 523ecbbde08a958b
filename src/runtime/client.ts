import { hostname, userInfo } from "node:os";
import { DeliverPolicy, jetstream, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode } from "./codec.js";
import { PayloadStore } from "./payloads.js";
import { publishSubmission } from "./submit.js";
import { AdoError, errorMessage } from "./errors.js";
import { openRepo, publishRunBase, resolveCommit } from "../git/index.js";
import { formatIssues, friendlyIssue, GraphDefSchema, validateGraph, type GraphInput, type MergeSettings } from "./graph.js";
import { GraphError } from "./errors.js";
import { newRunId, type RunId } from "./ids.js";
import type { KV } from "@nats-io/kv";
import { ID_PATTERN } from "./ids.js";
import {
  SCHEMAS,
  type AdoEvent,
  type BudgetRequest,
  type BudgetWait,
  type ControlAction,
  type ControlRequest,
  type EventOf,
  type HitlRecord,
  type RunRecord,
} from "./messages.js";
import { openBuckets, type BucketKey, type Topology } from "./topology.js";
import { msgIds } from "./names.js";
import { sleep } from "./clock.js";
import { EventCursor } from "./event-cursor.js";
import { callApi, isApiError, NoApiError, type ApiResult, type HitlListItem, type RunListItem } from "./api.js";
import { hitlTransition } from "./hitl-state.js";
import type { PolicyOverride } from "./scaling.js";
import { requestDrain } from "./workers-view.js";
import { isLive, Records, runListItem, type Resolution, type RunStatusView, type Target } from "./records.js";
import { Backoff, backoffDelay, retry } from "./retry.js";
import { STALL_NOTICES } from "./stream-resume.js";
import type { CapChange, RunBudget } from "./budget.js";

export type { Target, RunStatusView } from "./records.js";
export type { TaskStatusView } from "./api.js";
export { TaskTracker, type AttentionItem, type RunOutcome } from "./task-tracker.js";
import { TaskTracker, type AttentionItem, type RunOutcome } from "./task-tracker.js";

export interface SubmitOptions {
  graph: GraphInput;
  /** When the queue is full, keep submitting again (with backoff) until accepted. */
  wait?: boolean;
  /** Repository directory; required unless every task uses an agent that needs no worktree. */
  repo?: string;
  /** The revision the run starts from (a branch, tag or commit of `repo`); default HEAD. */
  base?: string;
  runId?: RunId;
  /** Override the dedupe id (default: the run id). */
  msgID?: string;
  /** The run's effective merge settings (see resolveMergeSettings); default: the graph's. */
  merge?: MergeSettings;
  /** The run's budget (see resolveBudget: config, graph and flags); default: the graph's caps, if any. */
  budget?: RunBudget;
  /**
   * A git URL every host can reach (remote mode): the run's base commit is pushed there
   * before the run is submitted, and hosts without the repository work from clones.
   */
  remote?: string;
}

export interface Submitted {
  runId: RunId;
  repo?: string;
  baseCommit?: string;
}



export interface WatchOptions {
  onEvent?: (event: AdoEvent) => void;
  /** Replay from this time instead of the run's beginning. */
  since?: Date;
  /** Start after this events-stream sequence (see lastEventSequence): only what happens next. */
  afterSequence?: number;
  /**
   * Carry on from a state already known (a run's snapshot and deltas, run-load.ts):
   * `tracker` holds every event of the run up to `seq`, the sequence of one of its
   * events; `waiting`, the run's last run.needs_attention when the run waits. Only
   * later events reach `onEvent`; the event at `seq` is read again, so a run that waits
   * or has ended is known to without waiting for a new event.
   */
  from?: { seq: number; tracker: TaskTracker; waiting?: EventOf<"run.needs_attention"> };
  /** Stop at the first event for which this is true (outcome status `running`). */
  until?: (event: AdoEvent) => boolean;
  /** Called once if no scheduler has answered after this long (the run stays queued). */
  onNoScheduler?: () => void;
  noSchedulerAfterMs?: number;
  signal?: AbortSignal;
  /** How long without an event before the watch looks for the run's end elsewhere (the stream's stored end, the run's record); default 10 s. */
  checkEveryMs?: number;
}

/** The watch of a run was stopped by the caller's signal (`by: "signal"`) or by `ado detach` (`by: "detach"`); the run goes on. */
export class WatchAbortedError extends AdoError {
  constructor(
    message: string,
    readonly by: "signal" | "detach" = "signal",
  ) {
    super(message);
  }
}

/** The watch lost track of a run it cannot follow any more (the connection closed for good); the run may still go on. */
export class WatchLostError extends AdoError {}

/**
 * The client side of ado, as used by the CLI, the tests and the benchmarks: submit a
 * run (durably: the PubAck means accepted) and follow its events to the end. Anything
 * that speaks NATS can do the same with the documented subjects and schemas.
 */
export class AdoClient {
  readonly js: JetStreamClient;
  private readonly payloads: PayloadStore;
  /** Direct KV access: what the client falls back to when no API answers. */
  private readonly records: Records;

  constructor(
    readonly nc: NatsConnection,
    readonly topo: Topology,
  ) {
    this.js = jetstream(nc);
    this.payloads = new PayloadStore(nc, topo);
    this.records = new Records(() => this.kv(), this.js, topo);
  }

  /** Validates the graph, resolves the base commit, and publishes the run. */
  async submit(opts: SubmitOptions): Promise<Submitted> {
    const parsed = GraphDefSchema.safeParse(opts.graph, { error: friendlyIssue });
    if (!parsed.success) throw new GraphError(`invalid graph: ${formatIssues(parsed.error, { input: opts.graph, schema: GraphDefSchema })}`);
    const graph = validateGraph(parsed.data);
    const runId = opts.runId ?? newRunId();
    let repo: string | undefined;
    let baseCommit: string | undefined;
    const needsRepo = graph.tasks.some((t) => t.agent !== "noop");
    if (opts.repo !== undefined || needsRepo) {
      const info = await openRepo(opts.repo ?? process.cwd());
      repo = info.topLevel;
      baseCommit = await resolveCommit(repo, opts.base ?? "HEAD");
    }
    if (opts.remote) {
      if (!repo || !baseCommit) throw new AdoError("--remote needs a repository to take the run's base commit from: pass --repo");
      // Before the submission: a worker may take the first task the moment it is accepted.
      await publishRunBase(repo, opts.remote, runId, baseCommit);
    }
    // The run id doubles as the message id: a retried submission is deduplicated.
    await publishSubmission(
      this.js,
      this.topo,
      this.payloads,
      {
        runId,
        graph,
        repo,
        baseCommit,
        ...(opts.remote ? { remote: opts.remote } : {}),
        submittedAt: new Date().toISOString(),
        submittedBy: `${safeUser()}@${hostname()}`,
        ...(repo && opts.merge ? { merge: opts.merge } : {}),
        ...(opts.budget ? { budget: opts.budget } : {}),
      },
      { msgID: opts.msgID ?? msgIds.submit(runId), ...(this.nc.info ? { maxPayload: this.nc.info.max_payload } : {}) },
    );
    return { runId, repo, baseCommit };
  }

  /**
   * Replays a run's events from the start, then follows live, until it completes, is
   * rejected, or waits for a person (needs_attention).
   *
   * A run that waited for a person before and went on has a run.needs_attention in its
   * past: that one is history, not a stop. A stop is a run.needs_attention not followed
   * by run.continued by the time the replay has caught up with the stream.
   *
   * Following survives the server: an ordered consumer that ends, errs, is reset, misses
   * its heartbeats, or a reconnect (the server may have restarted, its memory consumers
   * gone) starts a fresh consumer after the last event read; a stream found rewritten
   * under it (a server restarted on a store that lost its last writes) is read again
   * from before the loss, and an event already shown is not shown again (EventCursor).
   * While no event comes, the watch looks every `checkEveryMs` for the run's end: a
   * `run.completed` in the stream that the consumer did not deliver is taken as it is,
   * and a run whose record has ended but whose end is not in the stream ends the watch
   * with the record's outcome. Throws WatchAbortedError only when the caller stopped it
   * (signal) or `ado detach` did, and WatchLostError when the connection closed for good.
   */
  async watch(runId: RunId, opts: WatchOptions = {}): Promise<RunOutcome> {
    const from = opts.from && opts.from.seq > 0 ? opts.from : undefined;
    const firstStart = from
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from.seq }
      : opts.afterSequence !== undefined
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: opts.afterSequence + 1 }
        : opts.since
          ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: opts.since.toISOString() }
          : { deliver_policy: DeliverPolicy.All };
    const stream = this.topo.streams.events.name;
    const filter = this.topo.subjects.runEvents(runId);
    const cursor = new EventCursor();
    const tracker = from?.tracker ?? new TaskTracker();
    let waiting: EventOf<"run.needs_attention"> | undefined = from?.waiting;
    let heard = false;
    /** Why following stops: the caller or `ado detach`, or an end the checks found. */
    let stop: { by: "signal" | "detach" } | { outcome: RunOutcome } | undefined;
    let current: Awaited<ReturnType<Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>["consume"]>> | undefined;
    /** Wakes the loop from a backoff once following stops. */
    const halt = new AbortController();
    /** Ends the current consumer; the loop starts a fresh one (or stops, with `stop` set). */
    const restart = () => void current?.close().catch(() => undefined);
    const stopWith = (s: NonNullable<typeof stop>) => {
      stop ??= s;
      restart();
      halt.abort();
    };
    // `ado detach <run>` from anywhere ends this watch (the run goes on).
    const detach = this.nc.subscribe(this.topo.subjects.detach(runId), { callback: (err) => void (err ? undefined : stopWith({ by: "detach" })) });
    const onAbort = () => stopWith({ by: "signal" });
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    if (opts.signal?.aborted) onAbort();
    const timer = setTimeout(() => {
      if (!heard) opts.onNoScheduler?.();
    }, opts.noSchedulerAfterMs ?? 10_000);
    // A reconnect may be to a server that restarted: its memory consumers are gone and
    // its stream may be shorter than what was read. Start afresh (cheap, and checked).
    const status = this.nc.status();
    void (async () => {
      for await (const s of status) if (s.type === "reconnect") restart();
    })().catch(() => undefined);

    /** Shows one event, unless already shown (`taken`: the run's end, read from the stream directly); the outcome when it ends the watch. */
    const handle = (seq: number, data: Uint8Array, headers: Parameters<typeof decode>[2], subject: string, pending: number, taken = false): RunOutcome | undefined => {
      if (!cursor.accept(seq, data) && !taken) return undefined;
      let event: AdoEvent;
      try {
        event = decode(SCHEMAS.AdoEvent, data, headers);
      } catch (err) {
        // An event we cannot read is skipped, not fatal: say so once on the caller's channel.
        opts.onEvent?.({ type: "task.output", runId, taskId: "_", attempt: 1, at: new Date().toISOString(), stream: "stderr", data: `ado: unreadable event on ${subject}: ${errorMessage(err)}\n` });
        return undefined;
      }
      heard = true;
      // Already in the state the watch started from: only its ends count.
      const known = from !== undefined && cursor.rewrites === 0 && seq <= from.seq;
      if (!known) {
        tracker.apply(event);
        opts.onEvent?.(event);
      }
      if (event.type === "run.completed") return tracker.outcome(event);
      if (event.type === "run.rejected") return { runId, status: "rejected", error: event.reason, code: event.code, tasks: [] };
      if (!known && opts.until?.(event)) return { runId, status: "running", tasks: [...tracker.tasks.values()] };
      if (event.type === "run.needs_attention") waiting = event;
      else if (event.type === "run.continued") waiting = undefined;
      // Caught up with the stream while the run waits: that is where it stands now.
      if (waiting && pending === 0) {
        return {
          runId,
          status: "needs_attention",
          ...(tracker.integrationBranch ? { integrationBranch: tracker.integrationBranch } : {}),
          tasks: [...tracker.tasks.values()],
          attention: waiting.tasks,
          ...(waiting.budget ? { budget: waiting.budget } : {}),
          error: attentionText(waiting.tasks, waiting.budget),
        };
      }
      return undefined;
    };

    // While nothing comes: is the consumer stuck, or did the run end out of its sight?
    // Cheap reads first (the record, one message by sequence); the stream's stored end is
    // looked up only once the record says the run ended.
    let lastDelivery = Date.now();
    let lastCheck = 0;
    let checking = false;
    const sightings = { stream: 0, record: 0 };
    const checkEveryMs = opts.checkEveryMs ?? 10_000;
    const check = async () => {
      const now = Date.now();
      if (checking || stop || now - lastDelivery < checkEveryMs || now - lastCheck < checkEveryMs) return;
      checking = true;
      lastCheck = now;
      try {
        if (cursor.lastSeq > 0 && !(await this.holdsLastRead(cursor))) return restart();
        const record = await this.runRecord(runId);
        if (!record || isLive(record)) return void (sightings.stream = sightings.record = 0);
        const end = await this.endInStream(runId);
        if (end) {
          // The consumer should deliver it: give a fresh one a chance, then take it as it is.
          if (++sightings.stream < 2) return restart();
          const outcome = handle(end.seq, end.data, end.header, end.subject, 0, true);
          if (outcome) stopWith({ outcome });
          return;
        }
        // The record says the run ended, and its end is not in the stream (lost with the store's tail).
        if (++sightings.record < 2) return restart();
        const outcome = await this.finishedOutcome(runId);
        if (outcome) stopWith({ outcome });
      } catch {
        // The server does not answer (restarting, or its store is full): look again later.
      } finally {
        checking = false;
      }
    };
    const checks = setInterval(() => void check(), Math.max(250, Math.floor(checkEveryMs / 4)));

    let followed = false;
    /** Consumers in a row that ended within seconds: the next waits longer (a server that keeps failing is not hammered). */
    let quick = 0;
    try {
      for (;;) {
        if (stop) break;
        if (this.nc.isClosed()) {
          throw new WatchLostError(`lost the connection to NATS while following run ${runId}, which may still be going on: see where it stands with \`ado status ${runId}\`, follow it again with \`ado attach ${runId}\``);
        }
        const began = Date.now();
        try {
          let start: Record<string, unknown> = firstStart;
          if (cursor.lastSeq > 0) {
            const resumeAt = cursor.resumeFrom(await this.holdsLastRead(cursor));
            if (resumeAt !== undefined) start = { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: resumeAt };
          }
          // The first consumer fails like any request (about 30 s of retries); later ones
          // are retried for as long as the run may go on (the server may be restarting).
          const consumer = followed ? await this.js.consumers.get(stream, { filter_subjects: filter, ...start }) : await retrying(() => this.js.consumers.get(stream, { filter_subjects: filter, ...start }), opts.signal);
          followed = true;
          if (stop) break;
          // A heartbeat every 5 s: two missed (about 10 s) say the consumer is gone.
          current = await consumer.consume({ max_messages: 100, expires: 10_000 });
          const messages = current;
          void (async () => {
            for await (const n of messages.status()) if (STALL_NOTICES.has(n.type)) restart();
          })().catch(() => undefined);
          for await (const m of messages) {
            lastDelivery = Date.now();
            sightings.stream = sightings.record = 0;
            const outcome = handle(m.seq, m.data, m.headers, m.subject, m.info.pending);
            if (outcome) return outcome;
          }
        } catch (err) {
          // Not even a first consumer: fail as any request does.
          if (!followed && !stop) throw err;
        } finally {
          const ending = current;
          current = undefined;
          if (ending) {
            await ending.close().catch(() => undefined);
          }
        }
        if (stop) break;
        quick = Date.now() - began < 5_000 ? quick + 1 : 0;
        if (quick > 0) await sleep(backoffDelay(Math.min(quick, 6), Backoff.server), halt.signal);
      }
      const s = stop as NonNullable<typeof stop>;
      if ("outcome" in s) return s.outcome;
      throw new WatchAbortedError(`stopped watching run ${runId}; it goes on (ado attach ${runId})`, s.by);
    } finally {
      clearTimeout(timer);
      clearInterval(checks);
      detach.unsubscribe();
      opts.signal?.removeEventListener("abort", onAbort);
      (status as { stop?: () => void }).stop?.();
    }
  }

  /** The run's end (run.completed or run.rejected) as stored in the events stream, if it is there. */
  private async endInStream(runId: RunId): Promise<{ seq: number; data: Uint8Array; header: Parameters<typeof decode>[2]; subject: string } | undefined> {
    const jsm = await this.jsm();
    for (const type of ["run.completed", "run.rejected"] as const) {
      const m = await jsm.streams.getMessage(this.topo.streams.events.name, { last_by_subj: this.topo.subjects.event({ type, runId }) });
      if (m) return { seq: m.seq, data: m.data, header: m.header, subject: m.subject };
    }
    return undefined;
  }

  /**
   * Whether the events stream still holds, at the cursor's last sequence, the event read
   * there. A sequence past the stream's end means a rewritten stream (a server restarted
   * on a store that lost its last writes); one below it but gone aged out (`max_age`),
   * which rewrites nothing.
   */
  private async holdsLastRead(cursor: EventCursor): Promise<boolean> {
    const jsm = await this.jsm();
    const stream = this.topo.streams.events.name;
    const m = await jsm.streams.getMessage(stream, { seq: cursor.lastSeq });
    if (m) return cursor.holdsLast(m.data);
    return (await jsm.streams.info(stream)).state.last_seq >= cursor.lastSeq;
  }

  private jsmOnce?: Promise<JetStreamManager>;
  /** A JetStream manager, made once (without the account check each new one makes: the watch asks often). */
  private jsm(): Promise<JetStreamManager> {
    this.jsmOnce ??= this.js.jetstreamManager(false);
    this.jsmOnce.catch(() => (this.jsmOnce = undefined));
    return this.jsmOnce;
  }

  /** Tells every client attached to the run to detach; the run goes on. */
  detach(runId: string): void {
    this.nc.publish(this.topo.subjects.detach(runId));
  }

  /**
   * Cancels, pauses or resumes a run or one of its tasks, through the API (`runs.cancel`
   * and so on). The request is durable: written to the control bucket (workers and the
   * balancer act on it, also after a reconnect) and sent to the scheduler, which records it.
   */
  async control(target: Target, action: ControlAction, reason = ""): Promise<ControlRequest> {
    const endpoint = ({ cancel: "runs.cancel", pause: "runs.pause", resume: "runs.resume" } as const)[action];
    return this.viaApi(
      async () => (await callApi(this.nc, this.topo, endpoint, { runId: target.runId, ...(target.taskId ? { taskId: target.taskId } : {}), reason, by: whoAmI() })).request,
      () => this.records.control(target, action, reason, whoAmI()),
    );
  }

  /**
   * Resolves what a user typed: a run id, `run/task`, or a task id that exactly one
   * active run has. Errors say what matched.
   */
  async resolveTarget(spec: string): Promise<Target> {
    const [first, second] = spec.split(/[/.]/, 2) as [string, string | undefined];
    if (second !== undefined) {
      const run = await this.runRecord(first);
      if (!run) throw new AdoError(`no run '${first}': list runs with \`ado parallel status\``);
      if (!run.graph.tasks.some((t) => t.id === second)) throw new AdoError(`run '${first}' has no task '${second}'`);
      return { runId: first, taskId: second };
    }
    if (await this.runRecord(first)) return { runId: first };
    const matches = ID_PATTERN.test(first) ? await this.listRuns({ active: true, task: first }) : [];
    if (matches.length === 1) return { runId: matches[0]!.runId, taskId: first };
    if (matches.length > 1) {
      throw new AdoError(`task '${first}' is in ${matches.length} active runs (${matches.map((r) => r.runId).join(", ")}): say which, as <run>/${first}`);
    }
    throw new AdoError(`'${spec}' is neither a run nor a task of an active run: list them with \`ado parallel status\``);
  }

  /**
   * Runs known to the scheduler, newest first, with their graphs, read from KV (the
   * dashboard's listing; the API lists runs without graphs: listRuns).
   */
  runs(opts: { active?: boolean } = {}): Promise<RunRecord[]> {
    return this.records.runs(opts);
  }

  /** Runs known to the scheduler, newest first, without their graphs (API `runs.list`); `task`: only runs with that task. */
  async listRuns(opts: { active?: boolean; task?: string } = {}): Promise<RunListItem[]> {
    return this.viaApi(
      async () => (await callApi(this.nc, this.topo, "runs.list", { active: opts.active ?? false, ...(opts.task !== undefined ? { task: opts.task } : {}) })).runs,
      async () => (await this.records.runs(opts)).map(runListItem),
    );
  }

  /** One run's record and every task's state, including which worker runs what now (API `tasks.status`). */
  async status(runId: string): Promise<RunStatusView | undefined> {
    if (!ID_PATTERN.test(runId)) return undefined;
    return this.viaApi(
      () => orUndefined(callApi(this.nc, this.topo, "tasks.status", { runId })),
      () => this.records.status(runId),
    );
  }

  /**
   * How a run ended, read from the records (no event replay): undefined while it is
   * still going on (running or waiting for a person) or when the run is unknown.
   */
  async finishedOutcome(runId: string): Promise<RunOutcome | undefined> {
    const view = await this.status(runId);
    if (!view || view.run.status === "running" || view.run.status === "needs_attention") return undefined;
    const { run, tasks } = view;
    return {
      runId: run.runId as RunId,
      status: run.status,
      ...(run.integrationBranch ? { integrationBranch: run.integrationBranch } : {}),
      ...(run.integrationCommit ? { integrationCommit: run.integrationCommit } : {}),
      ...(run.error ? { error: run.error } : {}),
      ...(run.mergeInto ? { mergeInto: run.mergeInto } : {}),
      costUsd: run.costUsd,
      tokens: run.tokens,
      tasks: tasks.map(({ needs: _needs, costUsd, tokens, ...t }) => ({ ...t, ...(costUsd ? { costUsd } : {}), ...(tokens ? { tokens } : {}) })),
    };
  }

  /**
   * Changes a run's budget caps (`ado budget raise`, API `budget.raise`): `usd`/`tokens`
   * set a cap or raise it by an amount. The scheduler applies it to the caps it holds
   * (two raises add up) and starts what waited for the budget. Throws when the run is
   * unknown or over.
   */
  async budget(runId: string, change: { usd?: CapChange; tokens?: CapChange }, by = whoAmI()): Promise<BudgetRequest> {
    return this.viaApi(
      async () => (await callApi(this.nc, this.topo, "budget.raise", { runId, ...change, by })).request,
      async () => {
        const run = await this.records.run(runId);
        if (!run) throw new AdoError(`no run '${runId}': list runs with \`ado status\``);
        if (!isLive(run)) throw new AdoError(`run '${runId}' has ended (${run.status}): its budget cannot change any more`);
        return this.records.budget(runId, change, by);
      },
    );
  }

  /** One of the KV buckets (bound once, on first use). */
  async bucket(key: BucketKey): Promise<KV> {
    return (await this.kv())[key];
  }

  /** The scheduler's record of a run, if it knows the run (API `runs.get`). */
  async runRecord(runId: string): Promise<RunRecord | undefined> {
    if (!ID_PATTERN.test(runId)) return undefined;
    return this.viaApi(
      async () => (await orUndefined(callApi(this.nc, this.topo, "runs.get", { runId })))?.run,
      () => this.records.run(runId),
    );
  }

  /** Sequence of the newest message in the events stream: pass it as `afterSequence` to follow only what comes next. */
  async lastEventSequence(): Promise<number> {
    const jsm = await this.js.jetstreamManager();
    return (await jsm.streams.info(this.topo.streams.events.name)).state.last_seq;
  }

  /** Every HITL record with its revision, oldest first, read from KV (the dashboard's; the API's listing is hitlList). */
  hitlRecords(): Promise<{ record: HitlRecord; revision: number }[]> {
    return this.records.hitlRecords();
  }

  /** The merges that wait for a person (`all`: every HITL record), oldest first (API `hitl.list`). */
  async hitlList(all: boolean): Promise<HitlListItem[]> {
    return this.viaApi(
      async () => (await callApi(this.nc, this.topo, "hitl.list", { all })).records,
      () => this.records.hitlList(all),
    );
  }

  /** One HITL record by id (`<runId>.<taskId>`) with its revision, for a compare-and-set update (API `hitl.show`). */
  async hitlRecord(id: string): Promise<{ record: HitlRecord; revision: number } | undefined> {
    return this.viaApi(
      async () => {
        const found = await orUndefined(callApi(this.nc, this.topo, "hitl.show", { id }));
        return found ? { record: found.record, revision: found.revision } : undefined;
      },
      () => this.records.hitlRecord(id),
    );
  }

  /**
   * Asks the merge coordinator to carry out a person's choice for the record's current
   * round (API `hitl.resolve`, which refuses a round that moved on). Deduplicated per
   * round: sending the same round twice carries it out once.
   */
  async requestResolution(record: HitlRecord, resolution: Resolution): Promise<void> {
    await this.viaApi(
      async () => void (await callApi(this.nc, this.topo, "hitl.resolve", { id: record.id, round: record.round, ...resolution, by: whoAmI() })),
      () => this.records.requestResolution(record, resolution, whoAmI()),
    );
  }

  /**
   * Records a `--manual` step on a HITL record (API `hitl.manual`): `prepare` (the
   * worktree holding the conflict, made on this host) or `reopen` (that worktree is gone,
   * nothing landed). Only if the record is still at `revision`; returns the new revision,
   * or throws if someone changed it or the move does not apply.
   */
  async recordManual(record: HitlRecord, revision: number, step: { action: "prepare"; manual: NonNullable<HitlRecord["manual"]> } | { action: "reopen" }): Promise<number> {
    return this.viaApi(
      async () => (await callApi(this.nc, this.topo, "hitl.manual", { id: record.id, round: record.round, revision, ...step, by: whoAmI() })).revision,
      async () => {
        const at = new Date().toISOString();
        const t = hitlTransition(record, step.action === "prepare" ? { type: "prepare_manual", at, by: whoAmI(), manual: step.manual } : { type: "reopen", at });
        if (!t.ok) throw new AdoError(t.refusal.message);
        return this.records.writeHitl(t.record, revision);
      },
    );
  }

  /** The worker registry, the scaler's pools and what waits on each worker (API `workers.list`). */
  async workers(): Promise<ApiResult<"workers.list">> {
    return this.viaApi(
      () => callApi(this.nc, this.topo, "workers.list", {}),
      () => this.records.workers(),
    );
  }

  /**
   * Sets a pool's live policy (API `workers.scale`; the scaler applies it at its next
   * decision). The API checks the pool and its bounds against its own configuration.
   */
  async setPoolPolicy(record: PolicyOverride): Promise<PolicyOverride> {
    return this.viaApi(
      async () => (await callApi(this.nc, this.topo, "workers.scale", { pool: record.pool, source: record.source, policy: record.policy, by: record.by })).record,
      async () => {
        await this.records.setPolicy(record);
        return record;
      },
    );
  }

  /** Asks one worker to drain (API `workers.drain`): it stops taking work, finishes or hands back what it runs, and stops. */
  async drainWorker(workerId: string, opts: { graceMs?: number; reason?: string } = {}): Promise<{ workerId: string; state: string }> {
    const reason = opts.reason ?? "ado workers drain";
    return this.viaApi(
      () => callApi(this.nc, this.topo, "workers.drain", { workerId, reason, by: whoAmI(), ...(opts.graceMs !== undefined ? { graceMs: opts.graceMs } : {}) }),
      () => requestDrain(this.nc, this.topo, workerId, { by: whoAmI(), reason, ...(opts.graceMs !== undefined ? { graceMs: opts.graceMs } : {}) }),
    );
  }

  /**
   * Asks the API; when no `api` actor answers on this server (a stack started without
   * it, or an older one), reads and writes the records itself, as clients did before.
   */
  private async viaApi<T>(api: () => Promise<T>, direct: () => Promise<T>): Promise<T> {
    try {
      return await api();
    } catch (err) {
      if (err instanceof NoApiError) return direct();
      throw err;
    }
  }

  private buckets?: Promise<Record<BucketKey, KV>>;
  /** The KV buckets, bound once on first use. */
  private kv(): Promise<Record<BucketKey, KV>> {
    this.buckets ??= openBuckets(this.nc, this.topo);
    return this.buckets;
  }

  /** Submits and follows a run to its end (resubmitting while the queue is full, with `wait`). */
  async run(opts: SubmitOptions & WatchOptions): Promise<RunOutcome> {
    const { runId } = await this.submit(opts);
    return this.watchWaiting(runId, opts);
  }

  /**
   * Follows a run; if it was refused because the queue was full and `wait` is set,
   * submits it again after a backoff (a new msg id: the first is still in the dedupe
   * window) until it is accepted.
   */
  async watchWaiting(runId: RunId, opts: SubmitOptions & WatchOptions): Promise<RunOutcome> {
    for (let attempt = 1; ; attempt++) {
      const since = new Date();
      const outcome = await this.watch(runId, attempt === 1 ? opts : { ...opts, since });
      if (!(opts.wait && outcome.status === "rejected" && outcome.code === "queue_full")) return outcome;
      await sleep(backoffDelay(attempt, Backoff.queueFull));
      if (opts.signal?.aborted) return outcome;
      await this.submit({ ...opts, runId, msgID: msgIds.submit(runId, attempt) });
    }
  }
}


/**
 * Retries an operation that fails while the server is away or JetStream is still
 * recovering after a restart (timeouts, no responders), for up to about 30 s.
 */
function retrying<T>(op: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  return retry(op, { attempts: 12, backoff: Backoff.server, ...(signal ? { signal } : {}) });
}

/** What a run waits for: each merge, with why (the tasks and files of a conflict), and its budget. */
function attentionText(items: readonly AttentionItem[], budget?: BudgetWait): string {
  const parts: string[] = [];
  if (items.length) parts.push(`waiting for a person (ado hitl list): ${items.map((i) => `'${i.taskId}': ${i.message}`).join("; ")}`);
  if (budget) parts.push(`waiting for its budget to be raised (ado budget raise <run> <usd>, or ado cancel <run>): ${budget.message}`);
  return parts.join("; ");
}

/** Who a request is from: `<user>@<host>`. */
function whoAmI(): string {
  return `${safeUser()}@${hostname()}`;
}

/** The result, or undefined when the endpoint answered not_found. */
async function orUndefined<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (isApiError(err, "not_found")) return undefined;
    throw err;
  }
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return "unknown";
  }
}

