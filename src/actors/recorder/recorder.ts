import { DeliverPolicy, type ConsumerMessages } from "@nats-io/jetstream";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import { LeaderLease } from "../../runtime/lease.js";
import type { Metrics } from "../../runtime/metrics.js";
import { SCHEMAS, type AdoEvent } from "../../runtime/messages.js";
import { Mutex } from "../../runtime/mutex.js";
import { RunFold } from "../../runtime/run-fold.js";
import { readSnapshot, readSnapshotCursor, writeSnapshot, writeSnapshotCursor } from "../../runtime/run-snapshot.js";
import { sleep } from "../../runtime/clock.js";
import { Backoff, retry } from "../../runtime/retry.js";
import { markOf, rewrittenUnder, STALL_NOTICES, startAfter, type StreamMark } from "../../runtime/stream-resume.js";
import { countEvent, newRunTally, setGauges, type RunTally } from "./tally.js";

/**
 * The recorder: follows the whole event stream in order and keeps, per run, its fold
 * (src/runtime/run-fold.ts), written to KV `snapshots` every `everyEvents` events of the
 * run or `everyMs`, tagged with the stream sequence it reflects; and counts the fleet's
 * metrics from the same events.
 *
 * Why a follower of the stream and not the scheduler: a snapshot must be exactly "the
 * events up to sequence S", so that a reader that loads it and applies the events
 * after S gets what a full replay gives. Only a reader of the stream knows S for every
 * event (the scheduler publishes a fraction of them; workers, the balancer and the
 * merge coordinator publish the rest), and none of this may slow the scheduler down.
 *
 * One replica works at a time (lease `recorder`): a fold needs every event of its run,
 * in order, which a shared consumer would split between replicas. The place reached is
 * the cursor (`_cursor` in the bucket): every event up to it is in the stored
 * snapshots, so a successor starts after it; events of a run that its stored snapshot
 * already holds (by sequence) are skipped.
 *
 * A server restarted on a store that lost its last writes gives new events the
 * sequences of lost ones (src/runtime/stream-resume.ts). The cursor keeps the stored
 * time of its event beside the sequence, and the recorder checks, when it starts
 * following and after each reconnect, that the stream still holds that event; if not,
 * it follows every event stored after it instead, all of them new: a fold whose
 * sequence is at or past one of them dates from before the rewrite and takes it.
 */
export interface RecorderOptions {
  /** Write a run's snapshot after this many of its events (default 1,000). */
  everyEvents?: number;
  /** ... and at most this long after its last change (default 1 s). */
  everyMs?: number;
  /** The lease's time to live (default 10 s: a successor takes over within it). */
  leaseMs?: number;
  /** Where the fleet's metrics go. */
  metrics?: Metrics;
}

interface RunEntry {
  fold: RunFold;
  tally: RunTally;
  /** Events applied since the last stored snapshot. */
  unsaved: number;
  /** The run's graph has been read (agents known), or there was none to read. */
  graphRead: boolean;
}

const FINAL = new Set(["succeeded", "failed", "cancelled", "rejected"]);

export class Recorder extends Actor {
  private readonly lease: LeaderLease;
  private readonly runs = new Map<string, RunEntry>();
  private readonly writes = new Mutex();
  private messages?: ConsumerMessages;
  private following?: Promise<void>;
  private flushTimer?: NodeJS.Timeout;
  /** Sequence (and stored time) of the last event applied (or skipped as already stored). */
  private last: { seq: number; ms?: number } = { seq: 0 };
  private cursor: { seq: number; ms?: number } = { seq: 0 };
  /**
   * Set to follow again without going back to the cursor (what is in memory stays): after
   * the last event read, by sequence (the consumer was lost: a reconnect, missed
   * heartbeats), or by time after `byTime` (the stream was rewritten under it).
   */
  private resume?: { byTime?: StreamMark };
  /** Every event this pass delivers is new (it follows on from what is in memory, or by time after a rewrite). */
  private rewound = false;
  /** A check of the stream after a reconnect or a stalled consumer is under way. */
  private checking = false;
  private rewrites = 0;
  private applied = 0;
  private malformed = 0;
  private written = 0;
  private pending = 0;
  private readonly everyEvents: number;
  private readonly everyMs: number;
  private dropGauges?: () => void;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: RecorderOptions = {},
  ) {
    super("recorder", instance, ctx);
    this.everyEvents = opts.everyEvents ?? 1_000;
    this.everyMs = opts.everyMs ?? 1_000;
    this.lease = new LeaderLease({ kv: ctx.kv.leases, name: "recorder", holder: instance, ttlMs: opts.leaseMs ?? 10_000, logger: this.log, ...(ctx.clock ? { clock: ctx.clock } : {}) });
  }

  /** Whether this replica follows the stream now (set before the loop starts, which reads it). */
  private active = false;

  /** Whether this replica follows the stream now. */
  get leading(): boolean {
    return this.active;
  }

  protected async onStart(): Promise<void> {
    const m = this.opts.metrics;
    if (m) {
      // A standby exports zeros: the leader's figures are the fleet's, and a sum over replicas stays true.
      this.dropGauges = m.onScrape(() => setGauges(m, this.leading ? this.runs.values() : []));
    }
    // A reconnect may be to a server restarted on a store that lost its last writes.
    const status = this.ctx.nc.status();
    void (async () => {
      for await (const s of status) if (s.type === "reconnect" && this.active) void this.followAgain("reconnect");
    })().catch(() => undefined);
    // The first acquisition is awaited, so a stack that starts a recorder has it following at once.
    if (await this.lease.tryAcquire()) this.lead();
    this.lease.start((leader) => {
      if (!this.isRunning) return;
      if (leader && !this.active) this.lead();
      else if (!leader && this.active) void this.unlead();
    });
  }

  protected async onDrain(): Promise<void> {
    this.lease.stop();
    this.dropGauges?.();
    await this.unlead(true);
    await this.lease.release();
  }

  override stats() {
    return { leading: this.leading, runs: this.runs.size, applied: this.applied, malformed: this.malformed, snapshotsWritten: this.written, cursor: this.cursor.seq, lastSeq: this.last.seq, pending: this.pending, rewrites: this.rewrites };
  }

  private lead(): void {
    this.log.info("recorder leads: following the event stream");
    this.active = true;
    this.resume = undefined;
    this.following = this.follow().catch((err) => {
      this.log.error({ err: errorMessage(err) }, "recorder stopped following; it starts again from its cursor");
    });
    this.flushTimer = setInterval(() => void this.flushAll(), this.everyMs);
  }

  /** Stops following; with `flush`, what it holds is written first (a clean stop). */
  private async unlead(flush = false): Promise<void> {
    clearInterval(this.flushTimer);
    this.flushTimer = undefined;
    const following = this.following;
    this.active = false;
    this.following = undefined;
    await this.messages?.close().catch(() => undefined);
    await following;
    if (flush && this.lease.isLeader) await this.flushAll(true);
    this.runs.clear();
  }

  private async follow(): Promise<void> {
    const { topo, kv } = this.ctx;
    const stream = topo.streams.events.name;
    for (let attempt = 1; this.isRunning && this.active; attempt++) {
      try {
        let start;
        const resume = this.resume;
        this.resume = undefined;
        if (resume?.byTime) {
          // Found rewritten while following: what is in memory stays, the events after it come by time.
          start = startAfter(resume.byTime);
          this.rewound = true;
        } else if (resume) {
          // The consumer was lost: on from the last event read. Every event it delivers is
          // new to what is in memory (and `rewound` stays as it was: new after a rewrite too).
          start = this.last.seq === 0 ? { deliver_policy: DeliverPolicy.All } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.last.seq + 1 };
        } else {
          this.rewound = false;
          this.cursor = await readSnapshotCursor(kv.snapshots);
          this.last = this.cursor;
          const { ms } = this.cursor;
          if (this.cursor.seq === 0) start = { deliver_policy: DeliverPolicy.All };
          else if (ms !== undefined && (await rewrittenUnder(await this.js.jetstreamManager(), stream, { seq: this.cursor.seq, ms }))) {
            this.rewrote({ seq: this.cursor.seq, ms });
            start = startAfter({ seq: this.cursor.seq, ms });
            this.rewound = true;
          } else start = { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.cursor.seq + 1 };
        }
        const consumer = await this.js.consumers.get(stream, { filter_subjects: topo.subjects.allEvents, ...start });
        // A heartbeat every 5 s (expires/2): two missed say the consumer is gone. nats.js
        // recovers a lost ordered consumer by itself too, but after a failed check it waits
        // `expires` (30 s by default) and then starts it again (seen after a server
        // restart); the recorder starts its own from the last event read instead.
        const messages = (this.messages = await consumer.consume({ expires: 10_000 }));
        void (async () => {
          for await (const n of messages.status()) if (STALL_NOTICES.has(n.type)) void this.followAgain(n.type);
        })().catch(() => undefined);
        for await (const m of messages) {
          this.pending = m.info.pending;
          await this.onMessage(markOf(m), m.data, m.headers, m.info.pending, m.subject);
        }
        if (!this.resume) return;
      } catch (err) {
        if (!this.isRunning || !this.active) return;
        this.log.warn({ err: errorMessage(err), attempt }, "recorder lost the event stream; following again from its cursor");
        // What was applied past the cursor is applied again: the folds skip it by sequence.
        this.runs.clear();
        this.resume = undefined;
        await sleep(Math.min(5_000, 200 * attempt));
      }
    }
  }

  private rewrote(mark: StreamMark): void {
    this.rewrites++;
    this.log.warn({ seq: mark.seq }, "the events stream was rewritten under the recorder (a server restarted on a store that lost its last writes); following every event stored after the last one it read");
  }

  /**
   * After a reconnect or a stalled consumer: follows again on from the last event read,
   * by its sequence, or by time after it if the stream no longer holds it (rewritten).
   */
  private async followAgain(why: string): Promise<void> {
    if (this.checking || this.resume || !this.active) return;
    this.checking = true;
    try {
      const last = this.last;
      let byTime: StreamMark | undefined;
      if (last.seq > 0 && last.ms !== undefined) {
        const mark = { seq: last.seq, ms: last.ms };
        const rewritten = await retry(async () => rewrittenUnder(await this.js.jetstreamManager(), this.ctx.topo.streams.events.name, mark), { attempts: 8, backoff: Backoff.server }).catch((err) => {
          this.log.warn({ err: errorMessage(err) }, "could not check the events stream after a reconnect; following on by sequence");
          return false;
        });
        if (rewritten) {
          this.rewrote(mark);
          byTime = mark;
        }
      }
      if (!this.active || this.resume) return;
      this.log.debug({ why, seq: last.seq, byTime: byTime !== undefined }, "recorder follows the event stream again after the last event read");
      this.resume = byTime ? { byTime } : {};
      await this.messages?.close().catch(() => undefined);
    } finally {
      this.checking = false;
    }
  }

  private async onMessage(mark: StreamMark, data: Uint8Array, headers: Parameters<typeof decode>[2], pending: number, subject: string): Promise<void> {
    const { seq } = mark;
    let e: AdoEvent;
    try {
      e = decode(SCHEMAS.AdoEvent, data, headers);
    } catch (err) {
      this.malformed++;
      this.opts.metrics?.recorderMalformed.inc();
      this.log.debug({ subject, seq, err: errorMessage(err) }, "unreadable event skipped");
      this.last = mark;
      return;
    }
    const entry = await this.entry(e.runId);
    this.last = mark;
    // After a rewrite every event delivered is new: a fold at or past its sequence holds the lost ones.
    if (this.rewound && seq <= entry.fold.seq) entry.fold.seq = seq - 1;
    if (!entry.fold.apply(e, seq)) return;
    this.applied++;
    entry.unsaved++;
    const m = this.opts.metrics;
    if (m) {
      if (e.type === "run.accepted" && !entry.graphRead) await this.readGraph(e.runId, entry);
      countEvent(m, entry.tally, e);
      m.recorderEvents.inc();
      // Only events seen as they happen measure the lag (a replay of history would not).
      if (pending === 0) {
        const lag = (Date.now() - Date.parse(e.at)) / 1000;
        if (Number.isFinite(lag)) m.eventLag.observe(Math.max(0, lag));
      }
    }
    if (entry.unsaved >= this.everyEvents || FINAL.has(entry.fold.status)) await this.flushRun(e.runId, entry);
  }

  /** The run's entry: in memory, else from its stored snapshot, else new. */
  private async entry(runId: string): Promise<RunEntry> {
    let entry = this.runs.get(runId);
    if (entry) return entry;
    const loaded = await readSnapshot(this.ctx.kv.snapshots, runId, (msg) => this.log.warn(msg)).catch((err) => {
      this.log.warn({ runId, err: errorMessage(err) }, "run snapshot unreadable; folding the run afresh");
      return undefined;
    });
    entry = { fold: loaded?.fold ?? new RunFold(), tally: newRunTally(), unsaved: 0, graphRead: false };
    if (!entry.fold.runId) entry.fold.runId = runId;
    this.runs.set(runId, entry);
    if (loaded && this.opts.metrics) await this.readGraph(runId, entry);
    return entry;
  }

  /**
   * Learns the agent and stage of each task (the metrics' labels) from the run's record. The
   * scheduler creates the record alongside run.accepted, so it may be a moment late.
   */
  private async readGraph(runId: string, entry: RunEntry): Promise<void> {
    for (let i = 0; i < 5; i++) {
      try {
        const e = await this.ctx.kv.runs.get(runId);
        if (e?.operation === "PUT") {
          const run = decode(SCHEMAS.RunRecord, e.value);
          for (const t of run.graph.tasks) {
            entry.tally.agents.set(t.id, t.agent);
            if (t.stage !== undefined) entry.tally.stages.set(t.id, t.stage);
          }
          entry.graphRead = true;
          return;
        }
      } catch (err) {
        this.log.debug({ runId, err: errorMessage(err) }, "run record not readable for the metrics' labels");
        break;
      }
      await sleep(20 * (i + 1));
    }
    entry.graphRead = true; // labelled `unknown`; not asked again
  }

  private async flushRun(runId: string, entry: RunEntry): Promise<void> {
    await this.writes.run(() => this.save(runId, entry));
    if (FINAL.has(entry.fold.status) && entry.unsaved === 0) this.runs.delete(runId);
  }

  /** Writes a run's snapshot if it changed; a failure leaves it unsaved (tried again next time). */
  private async save(runId: string, entry: RunEntry): Promise<boolean> {
    if (entry.unsaved === 0) return true;
    const unsaved = entry.unsaved;
    try {
      await writeSnapshot(this.ctx.kv.snapshots, entry.fold);
      entry.unsaved -= unsaved;
      this.written++;
      this.opts.metrics?.snapshotWrites.inc();
      return true;
    } catch (err) {
      this.log.warn({ runId, err: errorMessage(err) }, "run snapshot not written; trying again");
      return false;
    }
  }

  /**
   * Writes every changed snapshot, then the cursor: the sequence every event up to
   * which is now stored. Finished runs leave memory once stored.
   */
  private async flushAll(stopping = false): Promise<void> {
    if (!this.active && !stopping) return;
    await this.writes.run(async () => {
      const upTo = this.last;
      let all = true;
      // Snapshots are taken synchronously at the start of each write, so each holds at least every event of its run up to upTo.
      for (const [runId, entry] of [...this.runs]) {
        if (!(await this.save(runId, entry))) all = false;
        if (FINAL.has(entry.fold.status) && entry.unsaved === 0) this.runs.delete(runId);
      }
      // After a rewrite the sequence goes down: a cursor of another event is written too.
      if (all && (upTo.seq !== this.cursor.seq || upTo.ms !== this.cursor.ms) && this.lease.isLeader) {
        try {
          await writeSnapshotCursor(this.ctx.kv.snapshots, upTo);
          this.cursor = upTo;
        } catch (err) {
          this.log.warn({ err: errorMessage(err) }, "recorder cursor not written; trying again");
        }
      }
    });
  }
}
