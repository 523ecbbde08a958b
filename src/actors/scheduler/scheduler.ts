import type { JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { Subscription } from "@nats-io/transport-node";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode, encodeValue, unpackRaw } from "../../runtime/codec.js";
import { publishEvent } from "../../runtime/events.js";
import { BatchLoop, type Delivery, type Outcome } from "../../runtime/consume.js";
import { errorMessage } from "../../runtime/errors.js";
import { ID_PATTERN } from "../../runtime/ids.js";
import { Mutex } from "../../runtime/mutex.js";
import { writeControl } from "../../runtime/control.js";
import { currentEntries, entriesOf, KvWatch } from "../../runtime/kv-watch.js";
import { SCHEMAS, type ControlRequest, type CostHistory, type RunBacklog, type SchedulerInput, type StageState, type SubmitRun, type TaskRecord, type TaskWork } from "../../runtime/messages.js";
import { fitWork, PayloadStore } from "../../runtime/payloads.js";
import { MAX_PADS, moveSkipped } from "../../runtime/skipped.js";
import { actorConsumer, consumers, WORK_QUEUE_STREAMS } from "../../runtime/topology.js";
import {
  acceptRun,
  applyBatchDue,
  applyBudget,
  applyControl,
  applyMergeIntoResult,
  applyMergeResult,
  applyTaskResult,
  buildState,
  governedStages,
  isEarly,
  isLive,
  reconcile,
  stagesToSave,
  type Effect,
  type RunState,
} from "./run-state.js";
import { msgIds, stageKey, taskKey } from "../../runtime/names.js";
import { OpenTasks } from "./backlog.js";
import { foldHistory, historyUpdates, noteUsage } from "./budget.js";

const MAX_TIMER_MS = 2 ** 31 - 1;

/** Most publishes or writes a scheduler has in flight at once. */
const PUBLISH_WINDOW = 512;

/**
 * How long the server waits for the scheduler's ack before it redelivers a submission or
 * a result. What a scheduler that died held unacked comes back only after this long, so
 * it bounds the stall a crash causes (30 s made every restart a 30 s pause). What the
 * loop holds (the batch being handled, also while it waits for the serial lock, and the
 * next one) is kept alive with in-progress acks by BatchLoop, so a slow batch is not
 * redelivered.
 */
const ACK_WAIT_MS = 10_000;

/** How often counts of runs that ended without their count deleted (a crash in between) are swept. */
const BACKLOG_SWEEP_MS = 5 * 60_000;

/** How often the work-queue streams are checked for messages their consumers skip (after a server crash). */
const STALE_SWEEP_MS = 60_000;
/** And this long after a reconnect (JetStream has recovered its streams by then). */
const STALE_AFTER_RECONNECT_MS = 3_000;
/** How far the server's clock may be behind this process's when telling restored messages from new ones. */
const RESTORED_CLOCK_MARGIN_MS = 2_000;
/** Looks in a row, 5 s apart, while a work queue holds messages nobody will deliver and no look could judge yet. */
const UNACCOUNTED_LOOKS = 24;
/** A sweep that left a busy consumer alone looks again after this long. */
const STALE_RETRY_MS = 5_000;

/** An early result (see isEarly()) is offered again this often, at most this many times (~2 min). */
const EARLY_RETRY_MS = 1_000;
const EARLY_MAX_DELIVERIES = 120;

/** A stored record changed under us (another replica wrote it): reload and redo. */
class StaleStateError extends Error {
  override name = "StaleStateError";
}

/**
 * The scheduler actor: accepts runs, releases tasks whose dependencies are integrated,
 * retries failed attempts, hands finished branches to the merge coordinator, and ends
 * runs. Decisions come from run-state.ts; this shell does the I/O.
 *
 * Every message is handled as: decide (in memory) -> publish (ready work, merge
 * requests, events; each with a Nats-Msg-Id so a replay is deduplicated) -> write
 * state (KV, compare-and-set on the revision) -> ack. A crash anywhere before the ack
 * redelivers the message, and replaying it converges on the same state. Replicas share
 * the durable consumers; the CAS makes a concurrent write by another replica fail
 * here, which drops the cached run and redelivers.
 */
export class Scheduler extends Actor {
  private readonly runs = new Map<string, RunState>();
  private readonly deadlines = new Map<string, NodeJS.Timeout>();
  private readonly serial = new Mutex();
  private loops: BatchLoop<unknown>[] = [];
  private accepted = 0;
  private rejected = 0;

  /** Open tasks of accepted runs, across runs and replicas (KV `backlog`): the "queue full" bound. */
  private readonly openTasks = new OpenTasks();
  private readonly payloads: PayloadStore;
  private backlogWatch?: KvWatch<RunBacklog>;
  private backlogSweep?: NodeJS.Timeout;
  private staleSweep?: NodeJS.Timeout;
  private staleRetry?: NodeJS.Timeout;
  /** Skipped messages published again, restored acked ones removed, pads published (see moveSkipped). */
  private readonly stale = { moved: 0, removed: 0, padded: 0 };
  /** When this replica's connection last went away (cleared after a sweep with nothing left to do). */
  private disconnectedAt?: number;
  /** Looks in a row that left messages nobody will deliver (see UNACCOUNTED_LOOKS). */
  private unaccountedLooks = 0;

  /** What tasks cost in past runs (KV `costs`, watched): what budgets reserve for tasks with no history in their run. */
  private readonly costHistory = new Map<string, CostHistory>();
  private costWatch?: KvWatch<CostHistory>;
  /** Attempts' `agent.usage` events (core NATS): what running attempts have spent so far. */
  private usageSub?: Subscription;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: { maxQueued?: number } = {},
  ) {
    super("scheduler", instance, ctx);
    this.payloads = new PayloadStore(ctx.nc, ctx.topo);
  }

  protected async onStart(): Promise<void> {
    const { topo } = this.ctx;
    await this.startBacklog();
    await this.startCosts();
    const jsm = await this.js.jetstreamManager();
    // Adding a durable that exists updates it: a consumer made with an older ack_wait converges.
    await jsm.consumers.add(topo.streams.submit.name, actorConsumer(consumers.submit, topo.subjects.submit, { ackWaitMs: ACK_WAIT_MS }));
    await jsm.consumers.add(topo.streams.results.name, actorConsumer(consumers.results, topo.subjects.resultsAll, { ackWaitMs: ACK_WAIT_MS }));
    const submitLoop = new BatchLoop<SubmitRun>({
      consumer: await this.js.consumers.get(topo.streams.submit.name, consumers.submit),
      deadLetters: this.deadLetters,
      schema: SCHEMAS.SubmitRun,
      logger: this.log,
      handle: (batch) => this.serial.run(() => this.onSubmissions(batch)),
      onDeadLetter: (msg, reason) => this.rejectMalformed(msg, reason),
    });
    const resultLoop = new BatchLoop<SchedulerInput>({
      consumer: await this.js.consumers.get(topo.streams.results.name, consumers.results),
      deadLetters: this.deadLetters,
      schema: SCHEMAS.SchedulerInput,
      logger: this.log,
      handle: (batch) => this.serial.run(() => this.onInputs(batch)),
    });
    this.loops = [submitLoop as BatchLoop<unknown>, resultLoop as BatchLoop<unknown>];
    await Promise.all(this.loops.map((l) => l.start()));
    await this.armStoredDeadlines();
    void this.sweepSkipped();
    this.staleSweep = setInterval(() => void this.sweepSkipped(), STALE_SWEEP_MS);
    // What a crashed server restores shows after it is back: sweep soon after a reconnect.
    void (async () => {
      for await (const s of this.ctx.nc.status()) {
        if (!this.isRunning) break;
        if (s.type === "disconnect") this.disconnectedAt ??= Date.now();
        if (s.type === "reconnect") {
          setTimeout(() => void this.sweepSkipped(), STALE_AFTER_RECONNECT_MS).unref();
          // The cached runs go (between two batches): their revisions were read from the
          // server before it went away, and one restarted on a store that lost its last
          // writes gives new writes the revisions of lost ones, so a compare-and-set on a
          // cached revision could pass on a state another replica has changed since. Read
          // again, they carry revisions of the server as it is now.
          void this.serial.run(async () => this.runs.clear());
        }
      }
    })();
  }

  /**
   * Gets every message of the work queues delivered that a server restart left where its
   * consumer never delivers it (see moveSkipped): restored acked ones removed, new ones
   * at reused sequences published again. Every replica may do it; it is idempotent.
   */
  private async sweepSkipped(): Promise<void> {
    // Runs from timers (void): a rejection here would be unhandled and end the process,
    // as it did when a JetStream that had just come back (or not yet) left this unanswered.
    let jsm: JetStreamManager;
    try {
      jsm = await this.js.jetstreamManager();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, "could not check the work queues for skipped messages (JetStream did not answer); will try again");
      return;
    }
    // A skipped message stored before this replica lost the server (less a margin for the
    // server's clock) was acked before the crash and restored.
    const restoredBefore = this.disconnectedAt === undefined ? undefined : this.disconnectedAt - RESTORED_CLOCK_MARGIN_MS;
    let again = false;
    let unaccounted = false;
    for (const key of WORK_QUEUE_STREAMS) {
      const stream = this.ctx.topo.streams[key].name;
      try {
        const r = await moveSkipped(jsm, stream, { restoredBefore });
        if (r.deferred > 0 || r.moved > 0 || r.padded > 0) again = true;
        if (r.unaccounted > 0) unaccounted = true;
        if (r.deferred + r.moved + r.removed + r.padded + r.unaccounted > 0) this.log.info({ sweep: key, ...r, restoredBefore }, "work queue looked at for skipped messages");
        if (r.tooFarBehind > 0) this.log.error({ stream, maxPads: MAX_PADS }, "a work queue's consumers are further past its end than the sweep pads (a server restarted on a store that lost more than that): messages published to it are not delivered until its consumers are re-created by hand (nats consumer rm / ado up)");
        if (r.padded > 0) this.log.warn({ stream, padded: r.padded }, "a server restart left this work queue shorter than its consumers had read: its sequence was brought up to theirs, so new messages are delivered");
        if (r.moved > 0) this.log.warn({ stream, moved: r.moved }, "published again messages a server restart left where their consumers never deliver them (they are handled again; handling is idempotent)");
        if (r.removed > 0) this.log.warn({ stream, removed: r.removed }, "removed acked messages a server restart had restored");
        this.stale.moved += r.moved;
        this.stale.removed += r.removed;
        this.stale.padded += r.padded;
      } catch (err) {
        this.log.warn({ stream, err: errorMessage(err) }, "could not check a work queue for skipped messages; will try again");
        again = true;
      }
    }
    // Something outstanding was left alone, or something was mended: look again soon, not
    // in a minute (one retry armed at a time; it stops when a look finds nothing to do).
    // Messages nobody will deliver that no look could judge yet keep the looks going for
    // a while (two minutes), then the minute's sweep carries on.
    this.unaccountedLooks = unaccounted ? this.unaccountedLooks + 1 : 0;
    if (unaccounted && this.unaccountedLooks <= UNACCOUNTED_LOOKS) again = true;
    // Nothing left: the next disconnect starts a new account of what was restored.
    if (!again) this.disconnectedAt = undefined;
    if (again && this.isRunning && !this.staleRetry) {
      this.staleRetry = setTimeout(() => {
        this.staleRetry = undefined;
        void this.sweepSkipped();
      }, STALE_RETRY_MS);
      this.staleRetry.unref();
    }
  }

  /** Runs with a maxDuration accepted before this replica started still get cancelled on time. */
  private async armStoredDeadlines(): Promise<void> {
    for (const e of await currentEntries(this.ctx.kv.runs)) {
      try {
        const run = decode(SCHEMAS.RunRecord, e.value);
        // A run waiting for a person still has its deadline.
        if (isLive(run) && run.deadline) this.armDeadline(run.runId, run.deadline);
      } catch (err) {
        this.log.warn({ key: e.key, err: errorMessage(err) }, "unreadable run record");
      }
    }
  }

  /**
   * At the deadline, cancel the run through the normal path: a control request to
   * ourselves (deduplicated by msg id, so replicas arming the same deadline are harmless).
   */
  private armDeadline(runId: string, deadline: number): void {
    if (this.deadlines.has(runId)) return;
    const fire = async () => {
      this.deadlines.delete(runId);
      const request: ControlRequest = {
        type: "control",
        runId,
        action: "cancel",
        reason: "the run exceeded its maxDuration",
        by: "ado (maxDuration)",
        at: new Date(this.clock.now()).toISOString(),
      };
      try {
        await writeControl(this.ctx.kv.control, request);
        const { data, headers } = encode(SCHEMAS.SchedulerInput, request);
        await this.js.publish(this.ctx.topo.subjects.results(runId), data, { headers, msgID: msgIds.deadline(runId) });
      } catch (err) {
        this.log.error({ runId, err: errorMessage(err) }, "could not cancel a run past its deadline; retrying");
        this.deadlines.set(runId, setTimeout(() => void fire(), 1_000));
      }
    };
    const remaining = deadline - this.clock.now();
    if (remaining > MAX_TIMER_MS) {
      // setTimeout holds at most ~24.8 days: wait that long, then arm again.
      this.deadlines.set(runId, setTimeout(() => {
        this.deadlines.delete(runId);
        this.armDeadline(runId, deadline);
      }, MAX_TIMER_MS));
      return;
    }
    this.deadlines.set(runId, setTimeout(() => void fire(), Math.max(0, remaining)));
  }

  protected async onDrain(): Promise<void> {
    for (const t of this.deadlines.values()) clearTimeout(t);
    this.deadlines.clear();
    clearInterval(this.backlogSweep);
    clearInterval(this.staleSweep);
    clearTimeout(this.staleRetry);
    await Promise.all(this.loops.map((l) => l.stop()));
    this.backlogWatch?.stop();
    this.costWatch?.stop();
    this.usageSub?.unsubscribe();
  }

  /**
   * Cost history and live spend, for budgets. The history bucket is watched (replicas
   * and past runs share it); usage events are taken on a plain subscription, as they
   * come: each is cumulative for its attempt, so one missed (a reconnect) is made good
   * by the next, and an attempt's reservation counts meanwhile. Neither costs the hot
   * path a round trip: runs read both from memory.
   */
  private async startCosts(): Promise<void> {
    this.costWatch = new KvWatch({
      kv: this.ctx.kv.costs,
      nc: this.ctx.nc,
      log: this.log,
      schema: SCHEMAS.CostHistory,
      what: "cost history",
      onPut: (key, value) => this.costHistory.set(key, value),
      onDelete: (key) => this.costHistory.delete(key),
    });
    await this.costWatch.start();
    this.usageSub = this.ctx.nc.subscribe(this.ctx.topo.subjects.usageAll, {
      callback: (err, m) => {
        if (err) return;
        try {
          const e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
          const state = e.type === "agent.usage" ? this.runs.get(e.runId) : undefined;
          if (state && e.type === "agent.usage") noteUsage(state.ledger, e);
        } catch (err) {
          this.log.debug({ subject: m.subject, err: errorMessage(err) }, "unreadable usage event ignored");
        }
      },
    });
  }

  /**
   * Folds a run that ended into the cost history: one compare-and-set per agent and
   * prompt size its tasks used, once per run (never per task). Best effort: a lost race
   * is tried again a few times, a failure is logged (the history only guides reservations).
   */
  private async recordCosts(state: RunState): Promise<void> {
    const now = new Date(this.clock.now()).toISOString();
    const kv = this.ctx.kv.costs;
    for (const u of historyUpdates(state.ledger)) {
      for (let attempt = 1; attempt <= 5; attempt++) {
        try {
          const e = await kv.get(u.key);
          const prev = e?.operation === "PUT" ? decode(SCHEMAS.CostHistory, e.value) : undefined;
          const next = encodeValue(SCHEMAS.CostHistory, foldHistory(prev, u.agent, u.cls, u.run, now));
          if (e?.operation === "PUT") await kv.update(u.key, next, e.revision);
          else await kv.create(u.key, next);
          break;
        } catch (err) {
          if (attempt === 5) this.log.warn({ key: u.key, err: errorMessage(err) }, "could not record the run's costs in the history");
        }
      }
    }
  }

  override stats() {
    return { runsCached: this.runs.size, accepted: this.accepted, rejected: this.rejected, openTasks: this.openTasks.total, maxQueued: this.opts.maxQueued ?? null, staleMoved: this.stale.moved, staleRemoved: this.stale.removed, stalePadded: this.stale.padded };
  }

  /**
   * The open-task counts of every accepted run: read once (so the first submissions are
   * judged on all of them), then kept by a watch (other replicas' runs, and after a
   * reconnect), and swept of counts whose run has ended.
   */
  private async startBacklog(): Promise<void> {
    const kv = this.ctx.kv.backlog;
    for (const e of await currentEntries(kv)) this.applyBacklog(e.key, e.value, e.revision);
    this.backlogWatch = new KvWatch({
      kv,
      nc: this.ctx.nc,
      log: this.log,
      schema: SCHEMAS.RunBacklog,
      what: "run backlog",
      onPut: (key, value, e) => this.openTasks.apply(key, value.open, e.revision),
      onDelete: (key, e) => this.openTasks.apply(key, undefined, e.revision, this.clock.now()),
    });
    await this.backlogWatch.start();
    await this.sweepBacklog();
    this.backlogSweep = setInterval(() => void this.sweepBacklog(), BACKLOG_SWEEP_MS);
  }

  private applyBacklog(key: string, value: Uint8Array, revision: number): void {
    try {
      this.openTasks.apply(key, decode(SCHEMAS.RunBacklog, value).open, revision);
    } catch (err) {
      this.log.warn({ key, err: errorMessage(err) }, "unreadable run backlog ignored");
    }
  }

  /**
   * Deletes counts of runs that have ended (or are gone): a scheduler that died between
   * storing a run's end and deleting its count leaves it, and its successor may never
   * load that run again.
   */
  private async sweepBacklog(): Promise<void> {
    this.openTasks.prune(this.clock.now(), BACKLOG_SWEEP_MS);
    for (const runId of this.openTasks.counted()) {
      if (this.runs.has(runId)) continue;
      try {
        const e = await this.ctx.kv.runs.get(runId);
        const live = e?.operation === "PUT" && isLive(decode(SCHEMAS.RunRecord, e.value));
        if (!live) await this.ctx.kv.backlog.delete(runId);
      } catch (err) {
        this.log.warn({ runId, err: errorMessage(err) }, "run backlog sweep failed; will try again");
      }
    }
  }

  /**
   * Stores a run's open tasks when they changed (deleted once the run has ended), after
   * its state is stored: what other submissions are judged against.
   */
  private async noteOpen(state: RunState): Promise<void> {
    const runId = state.run.runId;
    const open = isLive(state.run) ? state.open : 0;
    if (state.openWritten === open) return;
    const kv = this.ctx.kv.backlog;
    if (open === 0) {
      await kv.delete(runId);
      // Final: a run id is never reused, so nothing newer can come for it.
      this.openTasks.apply(runId, undefined, Number.MAX_SAFE_INTEGER, this.clock.now());
    } else {
      const rev = await kv.put(runId, encodeValue(SCHEMAS.RunBacklog, { runId, open, updatedAt: new Date(this.clock.now()).toISOString() }));
      this.openTasks.apply(runId, open, rev);
    }
    this.openTasks.release(runId);
    state.openWritten = open;
  }

  private async onSubmissions(batch: Delivery<SubmitRun>[]): Promise<Outcome[]> {
    const now = new Date(this.clock.now()).toISOString();
    return Promise.all(
      batch.map(async ({ data, msg }): Promise<Outcome> => {
        const outcome = acceptRun(data, now, this.costHistory);
        if (!outcome.ok) {
          this.rejected++;
          await this.execute(undefined, outcome.effects);
          return { kind: "ack" };
        }
        // Every task of the run counts from now until it finishes, dependents included:
        // what it releases later is inside the bound it was admitted under.
        const admission = this.openTasks.admit(data.runId, outcome.state.tasks.size, this.opts.maxQueued ?? Infinity);
        if (!admission.ok) {
          if ((await this.ctx.kv.runs.get(data.runId))?.operation === "PUT") {
            // Accepted before (a redelivery): replay it; its tasks are counted already.
            await this.replay(data.runId, now);
            return { kind: "ack" };
          }
          this.rejected++;
          await publishEvent(
            this.js,
            this.ctx.topo,
            { type: "run.rejected", runId: data.runId, at: now, code: admission.code, reason: admission.reason, tasks: [] },
            msgIds.refused(data.runId, msg.seq),
          );
          return { kind: "ack" };
        }
        const state = outcome.state;
        try {
          // Creating the run record is the idempotency check, done alongside the first
          // publishes so it costs no round trip of its own on the way to the first task.
          const created = this.ctx.kv.runs.create(data.runId, encodeValue(SCHEMAS.RunRecord, state.run)).then(
            (rev) => rev,
            () => 0,
          );
          const published = this.publishAll(outcome.effects);
          const rev = await created;
          await published;
          if (rev === 0) {
            // Accepted before (a redelivery, or a crash mid-way): the publishes above were
            // deduplicated; make sure everything the stored state implies is in flight.
            this.openTasks.release(data.runId);
            await this.replay(data.runId, now);
            return { kind: "ack" };
          }
          state.runRev = rev;
          this.accepted++;
          this.runs.set(data.runId, state);
          if (state.run.deadline) this.armDeadline(data.runId, state.run.deadline);
          await this.persist(state, outcome.effects);
          await this.noteOpen(state);
          // Ended as it was accepted (its budget stopped it before any task started).
          if (!isLive(state.run)) this.endRun(state);
          return { kind: "ack" };
        } catch (err) {
          this.runs.delete(data.runId);
          this.openTasks.release(data.runId);
          throw err;
        }
      }),
    );
  }

  /** Forgets a run that ended (its records stay). */
  private dropRun(runId: string): void {
    this.runs.delete(runId);
    clearTimeout(this.deadlines.get(runId));
    this.deadlines.delete(runId);
  }

  /**
   * Forgets a run that ended and deletes its stages' stored limits (nothing starts in it
   * any more). Best effort: a record left behind expires with the bucket's TTL.
   */
  private endRun(state: RunState): void {
    const runId = state.run.runId;
    this.dropRun(runId);
    for (const stage of governedStages(state.run)) {
      this.ctx.kv.stages.delete(stageKey(runId, stage)).catch((err: unknown) => this.log.debug({ runId, stage, err: errorMessage(err) }, "could not delete a stage's limits of an ended run; they expire"));
    }
  }

  /** Loads a run from KV and re-derives what must be in flight (see reconcile()). */
  private async replay(runId: string, now: string): Promise<void> {
    this.runs.delete(runId);
    const state = await this.load(runId);
    if (state) await this.execute(state, reconcile(state, now));
  }


  private async onInputs(batch: Delivery<SchedulerInput>[]): Promise<Outcome[]> {
    const now = new Date(this.clock.now()).toISOString();
    const byRun = new Map<string, number[]>();
    batch.forEach((d, i) => {
      const list = byRun.get(d.data.runId) ?? [];
      list.push(i);
      byRun.set(d.data.runId, list);
    });
    const outcomes: Outcome[] = batch.map(() => ({ kind: "ack" }));
    await Promise.all(
      [...byRun].map(async ([runId, indexes]) => {
        try {
          const cached = this.runs.has(runId);
          const state = await this.load(runId);
          if (!state) {
            for (const i of indexes) outcomes[i] = { kind: "dead", reason: `no run '${runId}' is known to the scheduler` };
            return;
          }
          // Loaded from KV (a restart, or another replica's run): first re-derive what
          // must be in flight, in case a crash left something unpublished.
          const effects: Effect[] = cached ? [] : reconcile(state, now);
          for (const i of indexes) {
            const { data: input, msg } = batch[i]!;
            if ((input.type === "task.result" || input.type === "merge.result") && isEarly(state, input)) {
              // A predecessor issued this work and died before saving that it did: wait
              // for its redelivered input to catch the state up, rather than drop this.
              outcomes[i] =
                msg.info.deliveryCount < EARLY_MAX_DELIVERIES
                  ? { kind: "nak", delayMs: EARLY_RETRY_MS }
                  : { kind: "dead", reason: `a ${input.type} for work of task '${input.taskId}' that the stored run never issued` };
              continue;
            }
            if (input.type === "batch.due" && input.due > this.clock.now()) {
              // The scheduler's own timer for a batch wait: back to the stream until it is due.
              outcomes[i] = { kind: "nak", delayMs: input.due - this.clock.now() };
              continue;
            }
            effects.push(
              ...(input.type === "task.result"
                ? applyTaskResult(state, input, now)
                : input.type === "merge.result"
                  ? applyMergeResult(state, input, now, msg.seq)
                  : input.type === "merge.into.result"
                    ? applyMergeIntoResult(state, input, now)
                    : input.type === "budget"
                      ? applyBudget(state, input, now)
                      : input.type === "batch.due"
                        ? applyBatchDue(state, input, now)
                        : applyControl(state, input, now)),
            );
          }
          await this.execute(state, effects);
          if (!isLive(state.run)) {
            // By the decision that ended it (a crash before its record was stored can fold it twice: a guide, not a ledger).
            if (effects.some((e) => e.type === "event" && e.event.type === "run.completed")) void this.recordCosts(state);
            this.endRun(state);
          }
        } catch (err) {
          this.runs.delete(runId);
          const delayMs = err instanceof StaleStateError ? 10 : 500;
          if (!(err instanceof StaleStateError)) this.log.error({ runId, err: errorMessage(err) }, "run update failed; will redeliver");
          for (const i of indexes) outcomes[i] = { kind: "nak", delayMs };
        }
      }),
    );
    return outcomes;
  }

  /** Returns the cached state of a run, or loads it from KV (after a restart or takeover). */
  private async load(runId: string): Promise<RunState | undefined> {
    const cached = this.runs.get(runId);
    if (cached) return cached;
    const entry = await this.ctx.kv.runs.get(runId);
    if (!entry || entry.operation !== "PUT") return undefined;
    const run = decode(SCHEMAS.RunRecord, entry.value);
    const records = new Map<string, { rec: TaskRecord; rev: number }>();
    // Each task's record by its key (the graph names them all), not by listing the
    // bucket: after nats-server 2.9.10 restarted on a store that had filled up, a
    // filtered key listing ended early without an error, and a run loaded without some
    // finished tasks' records never released their dependents (it stalled for good).
    const keys = run.graph.tasks.map((t) => taskKey(runId, t.id));
    for (const e of await entriesOf(this.ctx.kv.tasks, keys)) {
      const rec = decode(SCHEMAS.TaskRecord, e.value);
      records.set(rec.taskId, { rec, rev: e.revision });
    }
    // Its stages' rate windows and circuits, as the last scheduler of the run left them.
    const stages = new Map<string, { state: StageState; rev: number }>();
    for (const e of await entriesOf(this.ctx.kv.stages, governedStages(run).map((s) => stageKey(runId, s)))) {
      const stored = decode(SCHEMAS.StageState, e.value);
      stages.set(stored.stage, { state: stored, rev: e.revision });
    }
    const state = buildState(run, entry.revision, records, this.costHistory, stages);
    this.runs.set(runId, state);
    return state;
  }

  /**
   * Publishes, then persists, what a decision produced; then the run's open count.
   * The run's end is the exception: `run.completed` is published after the task records
   * of the decision that ended the run are stored and before the run record is, so a
   * client that sees it reads final records. A crash before it is published leaves the
   * run record `running` with every task terminal: the redelivered input reloads the
   * run and reconcile ends it again (the end is published then, once). A crash after it
   * is published ends it again too; its msg id (once per run) drops that repeat within
   * the dedupe window.
   */
  private async execute(state: RunState | undefined, effects: Effect[]): Promise<void> {
    // The stages' limits first: a slot is taken (or a circuit found closed) before the
    // work that uses it is out, so a copy another replica moved meanwhile fails here and
    // the decision is redone on the stored state instead of being published.
    if (state) await this.saveStages(state);
    const end = effects.filter(isRunEnd);
    await this.publishAll(end.length ? effects.filter((e) => !isRunEnd(e)) : effects);
    if (!state) {
      await this.publishAll(end);
      return;
    }
    await this.persist(state, effects, end.length ? () => this.publishAll(end) : undefined);
    await this.noteOpen(state);
  }

  /**
   * Publishes the ready work, merge requests and events of a decision, each with a
   * Nats-Msg-Id so a replay is deduplicated, through a bounded window: a 10,000-task
   * run must not put 20,000 PubAcks in flight at once (they would time out).
   */
  private async publishAll(effects: Effect[]): Promise<void> {
    const { topo } = this.ctx;
    const inflight = new Set<Promise<unknown>>();
    for (const e of effects) {
      let p: Promise<unknown> | undefined;
      if (e.type === "ready") {
        p = this.publishReady(e.work);
      } else if (e.type === "merge") {
        const { data, headers } = encode(SCHEMAS.MergeRequest, e.request);
        p = this.js.publish(topo.subjects.merge(e.request.runId), data, { headers, msgID: msgIds.merge(e.request) });
      } else if (e.type === "mergeInto") {
        const { data, headers } = encode(SCHEMAS.MergeRequest, e.request);
        p = this.js.publish(topo.subjects.merge(e.request.runId), data, { headers, msgID: msgIds.mergeInto(e.request.runId) });
      } else if (e.type === "event" && e.msgID) {
        const { data, headers } = encode(SCHEMAS.AdoEvent, e.event);
        const taskId = "taskId" in e.event ? e.event.taskId : undefined;
        p = this.js.publish(topo.subjects.event({ type: e.event.type, runId: e.event.runId, taskId }), data, { headers, msgID: e.msgID });
      } else if (e.type === "event") {
        p = publishEvent(this.js, topo, e.event);
      } else if (e.type === "control") {
        p = writeControl(this.ctx.kv.control, e.request);
      } else if (e.type === "batchDue") {
        const { data, headers } = encode(SCHEMAS.SchedulerInput, e.due);
        p = this.js.publish(topo.subjects.results(e.due.runId), data, { headers, msgID: e.msgID });
      }
      if (!p) continue;
      const tracked = p.finally(() => inflight.delete(tracked));
      inflight.add(tracked);
      if (inflight.size >= PUBLISH_WINDOW) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  }

  /** Publishes ready work; a fan-in whose inputs would not fit a message gets them from the object store. */
  private async publishReady(work: TaskWork): Promise<unknown> {
    let m = encode(SCHEMAS.TaskWork, work);
    if (m.data.length > this.payloads.maxInline) m = encode(SCHEMAS.TaskWork, await fitWork(work, this.payloads));
    return this.js.publish(this.ctx.topo.subjects.ready(work.priority), m.data, { headers: m.headers, msgID: msgIds.ready(work) });
  }

  /**
   * Writes the records a decision changed: one write per key, however many transitions
   * touched it; the task records first, then `beforeRun` (see execute), then the run's.
   */
  private async persist(state: RunState, effects: Effect[], beforeRun?: () => Promise<void>): Promise<void> {
    // A run just accepted: its roots' slots, once its record exists (execute() wrote them already otherwise).
    await this.saveStages(state);
    const saveTasks = new Set<string>();
    let saveRun = false;
    for (const e of effects) {
      if (e.type === "saveTask") saveTasks.add(e.taskId);
      else if (e.type === "saveRun") saveRun = true;
    }
    const ids = [...saveTasks];
    for (let i = 0; i < ids.length; i += PUBLISH_WINDOW) {
      await Promise.all(ids.slice(i, i + PUBLISH_WINDOW).map((id) => this.saveTask(state, id)));
    }
    await beforeRun?.();
    if (saveRun) await this.saveRun(state);
    // The batch waits this decision ended are over only now that their batches' work and records are stored.
    await this.saveStages(state, true);
  }

  private async saveTask(state: RunState, taskId: string): Promise<void> {
    const t = state.tasks.get(taskId)!;
    const key = taskKey(state.run.runId, taskId);
    t.rev = await cas(this.ctx.kv.tasks, key, encodeValue(SCHEMAS.TaskRecord, t.rec), t.rev);
  }

  /**
   * Writes the stage limits the decision read or changed (KV `stages`), compare-and-set on
   * each one's revision. A crash after this and before the decision is acked wastes a
   * slot or counts a failure twice when the input is redone: the limits err on the strict
   * side, never let more through.
   */
  private async saveStages(state: RunState, final = false): Promise<void> {
    if ((final ? state.batchWaitsEnded : state.stagesDirty).size === 0) return;
    const now = new Date(this.clock.now()).toISOString();
    const writes = stagesToSave(state, now, final);
    if (final) state.batchWaitsEnded.clear();
    else state.stagesDirty.clear();
    await Promise.all(
      writes.map(async (w) => {
        state.stageRevs.set(w.stage, await cas(this.ctx.kv.stages, stageKey(state.run.runId, w.stage), encodeValue(SCHEMAS.StageState, w.value), w.rev));
      }),
    );
  }

  private async saveRun(state: RunState): Promise<void> {
    state.runRev = await cas(this.ctx.kv.runs, state.run.runId, encodeValue(SCHEMAS.RunRecord, state.run), state.runRev);
  }

  /** A submission that cannot be decoded: tell its sender, if it named a run id. */
  private async rejectMalformed(msg: JsMsg, reason: string): Promise<void> {
    let runId: unknown;
    try {
      runId = (unpackRaw(msg.data, msg.headers) as { runId?: unknown } | undefined)?.runId;
    } catch {
      return;
    }
    if (typeof runId !== "string" || !ID_PATTERN.test(runId)) return;
    // Someone reused the id of a real run: that run is fine; the dead letter says enough.
    if ((await this.ctx.kv.runs.get(runId))?.operation === "PUT") return;
    this.rejected++;
    await publishEvent(this.js, this.ctx.topo, {
      type: "run.rejected",
      runId,
      at: new Date(this.clock.now()).toISOString(),
      reason: `the submission could not be read: ${reason}`,
      code: "invalid",
      tasks: [],
    });
  }
}

/** The event that ends a run (see execute for why it is published last). */
function isRunEnd(e: Effect): boolean {
  return e.type === "event" && e.event.type === "run.completed";
}

/** Create (revision 0) or compare-and-set update; a lost race becomes StaleStateError. */
async function cas(kv: KV, key: string, value: Uint8Array, rev: number): Promise<number> {
  try {
    return rev === 0 ? await kv.create(key, value) : await kv.update(key, value, rev);
  } catch (err) {
    throw new StaleStateError(`'${key}' changed concurrently (expected revision ${rev}): ${errorMessage(err)}`);
  }
}
