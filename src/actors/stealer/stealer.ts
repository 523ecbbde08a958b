import { hostname } from "node:os";
import { JetStreamApiCodes, JetStreamApiError, type ConsumerConfig, type JetStreamManager, type StoredMsg } from "@nats-io/jetstream";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import { GitCommandError } from "../../git/index.js";
import { publishEvent } from "../../runtime/events.js";
import { LeaderLease, leaseTtlFor } from "../../runtime/lease.js";
import { SCHEMAS, type AdoEvent, type TaskWork, type WorkerRecord } from "../../runtime/messages.js";
import { consumers, workerConsumer } from "../../runtime/topology.js";
import { describeDeath, Liveness, lostResult, planRecovery, type LeftMessage, type RecoveryAction, type Suspect } from "./decide.js";
import { killLeftovers, processAlive } from "./leftovers.js";
import { keepLostWorktree } from "./lost-worktree.js";
import { agentStarted } from "./agent-started.js";
import { lostSpend } from "./lost-spend.js";
import { RECONNECT_MAX_WAIT_MS } from "../../runtime/connection.js";
import { attemptKey, msgIds } from "../../runtime/names.js";
import { planRebalance, type Move, type QueuedWork, type RebalanceWorker } from "./rebalance.js";
import type { Subscription } from "@nats-io/transport-node";
import { requeueWork } from "../../runtime/requeue.js";
import { Backoff, retry } from "../../runtime/retry.js";
import { KvWatch } from "../../runtime/kv-watch.js";
import { CheckpointStore } from "../../runtime/checkpoints.js";

export interface StealerOptions {
  /** The workers' heartbeat: a worker silent for 3 of them is suspected dead. */
  heartbeatMs: number;
  /** Leader lease time-to-live: how long a standby waits for a dead leader. Default max(1 s, 3 heartbeats). */
  leaseTtlMs?: number;
  /** How long a suspect has to answer its status endpoint. Default max(500 ms, 1 heartbeat). */
  pingTimeoutMs?: number;
  /** Live rebalancing: how often (0, the default: never) and beyond which load difference (default 0.3). */
  rebalanceIntervalMs?: number;
  rebalanceThreshold?: number;
}

/** Consumers checked per tick (see verifyConsumers). */
const VERIFY_PER_TICK = 20;
/** Work subjects are swept for orphans every this many ticks. */
const SWEEP_EVERY_TICKS = 5;
/** Most messages read from one dead worker's subject in one pass. */
const MAX_LEFT = 10_000;
/** Bound of the memories kept about recovered workers. */
const MEMORY = 1_000;

/**
 * The work stealer: a worker that dies loses nothing. It watches the worker registry (KV
 * `workers`) and, under a leader lease (duty `stealer`) so that one replica acts,
 * recovers the work of a worker that stopped heartbeating (3 heartbeats by this actor's
 * own clock) or whose record was deleted while it still had work: every attempt the
 * worker was running is reported `interrupted` (so the scheduler runs it again, without
 * using up its retries), every message it had not started goes back to the ready queue,
 * then its consumer and registry record are deleted. A suspect is pinged first (its
 * services status endpoint): one that answers is alive, e.g. draining.
 *
 * Everything it does can be redone: results and re-queued work carry msg ids, a message
 * is deleted from the worker's subject only after what replaces it is stored, and the
 * registry record (what makes a worker a suspect) goes last. A stealer that dies half-way
 * leaves the rest to its successor.
 *
 * A worker declared dead that was only cut off comes back to find its consumer gone; the
 * stealer re-creates it when the worker's records reappear, so it takes work again. What
 * it was running was re-issued meanwhile: its late result is ignored by the scheduler.
 */
export class Stealer extends Actor {
  private readonly liveness: Liveness;
  private lease!: LeaderLease;
  private jsm!: JetStreamManager;
  private watch?: KvWatch<WorkerRecord>;
  private ticker?: NodeJS.Timeout;
  private ticking?: Promise<void>;
  private ticks = 0;
  /** Workers whose consumer this leader has seen exist (see verifyConsumers). */
  private readonly verified = new Set<string>();
  /** Consumer configs of recovered workers, to re-create one that comes back. */
  private readonly savedConsumers = new Map<string, Partial<ConsumerConfig>>();
  /** Recovered workers: the deletion of their record is our own. */
  private readonly recovered = new Set<string>();
  /** Subjects with work but no worker known, at the last sweep. */
  private orphans = new Set<string>();
  private readonly counts = { workersRecovered: 0, interrupted: 0, requeued: 0, dropped: 0, deadLettered: 0, revived: 0, rebalanced: 0 };
  private lastRebalance = 0;
  private rebalanceSub?: Subscription;

  /** Attempts' checkpoints: a lost one resumes from its last. */
  private readonly checkpoints: CheckpointStore;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: StealerOptions,
  ) {
    super("stealer", instance, ctx);
    this.liveness = new Liveness(opts.heartbeatMs);
    this.checkpoints = new CheckpointStore(ctx.nc, ctx.kv.sessions, ctx.topo, this.log);
  }

  protected async onStart(): Promise<void> {
    const { kv, nc } = this.ctx;
    this.jsm = await this.js.jetstreamManager();
    // The watch restarts after a reconnect, replaying every record (Liveness ignores
    // revisions it has seen: a replay proves nothing).
    this.watch = new KvWatch({
      kv: kv.workers,
      nc,
      log: this.log,
      schema: SCHEMAS.WorkerRecord,
      what: "worker record",
      onPut: (key, record, e) => this.liveness.put(key, record, e.revision, this.clock.now()),
      onDelete: (key, e) => {
        if (!this.recovered.has(key)) this.liveness.deleted(key, e.revision, this.clock.now());
      },
    });
    await this.watch.start();
    // After our own connection was down, the silence we saw says nothing about the workers.
    void (async () => {
      for await (const s of nc.status()) {
        if (!this.isRunning) break;
        if (s.type !== "reconnect") continue;
        // The server was away for everyone: the workers reconnect too, each after up to
        // RECONNECT_MAX_WAIT_MS of backoff, and only then write and answer again.
        this.liveness.refreshAll(this.clock.now(), this.liveness.limitMs + RECONNECT_MAX_WAIT_MS);
      }
    })();
    this.lease = new LeaderLease({
      kv: kv.leases,
      name: "stealer",
      holder: this.instance,
      ttlMs: this.opts.leaseTtlMs ?? leaseTtlFor(this.opts.heartbeatMs),
      clock: this.clock,
      logger: this.log,
    });
    this.lease.start((leader) => {
      // A new term checks every worker's consumer again.
      if (leader) this.verified.clear();
      this.log.info({ leader }, leader ? "stealer leads" : "stealer stands by");
    });
    // `ado workers rebalance`: a pass now. Only the leader answers (the others stay silent, so the asker hears the one that acts).
    this.rebalanceSub = this.ctx.nc.subscribe(this.ctx.topo.subjects.rebalance, {
      callback: (_err, m) => {
        if (!this.lease.isLeader || !this.isRunning) return;
        void this.rebalance().then(
          (moved) => m.respond(JSON.stringify({ ok: true, instance: this.instance, moved })),
          (err) => m.respond(JSON.stringify({ ok: false, instance: this.instance, error: errorMessage(err) })),
        );
      },
    });
    this.ticker = setInterval(() => {
      this.ticking ??= this.tick().finally(() => (this.ticking = undefined));
    }, this.opts.heartbeatMs);
  }

  protected async onDrain(): Promise<void> {
    clearInterval(this.ticker);
    this.rebalanceSub?.unsubscribe();
    this.watch?.stop();
    // A recovery in progress finishes (each step is short); a successor would redo it anyway.
    await this.ticking;
    await this.lease?.release();
  }

  override stats() {
    return { leader: this.lease?.isLeader ?? false, workers: this.liveness.known().length, ...this.counts };
  }

  private async tick(): Promise<void> {
    if (!this.isRunning || !this.lease.isLeader) return;
    this.ticks++;
    try {
      for (const s of this.liveness.suspects(this.clock.now())) {
        if (!this.isRunning || !this.lease.isLeader) return;
        await this.judge(s);
      }
      await this.verifyConsumers();
      if (this.ticks % SWEEP_EVERY_TICKS === 0) await this.sweepOrphans();
      const every = this.opts.rebalanceIntervalMs ?? 0;
      if (every > 0 && this.clock.now() - this.lastRebalance >= every) {
        this.lastRebalance = this.clock.now();
        await this.rebalance();
      }
    } catch (err) {
      // Whatever was not finished is found again on the next tick (or by a successor).
      this.log.warn({ err: errorMessage(err) }, "stealer pass failed; retrying");
    }
  }

  /**
   * Live rebalancing: work queued behind a busy worker goes back to the ready queue when
   * another worker could start it now (rebalance.ts decides), and the balancer places it
   * on a free one. Only subjects of live workers with messages are read.
   * Each message is deleted only after its copy is on the ready queue, under a msg id
   * naming the move, so a successor redoing it is deduplicated; a worker that had
   * already been handed the message and claims it first runs it, and the copy is dropped
   * by whoever loses the claim.
   */
  private async rebalance(): Promise<Move[]> {
    const now = this.clock.now();
    const { topo } = this.ctx;
    // What waits on each subject, in one request (a worker's own `pending` is as of its last fetch: stale while it is busy).
    const info = await this.jsm.streams.info(topo.streams.work.name, { subjects_filter: topo.subjects.work("*") });
    const waiting = new Map(Object.entries(info.state.subjects ?? {}).map(([subject, n]) => [subject, n]));
    const workers: RebalanceWorker[] = [];
    const works = new Map<number, TaskWork>();
    for (const id of this.liveness.known()) {
      const s = this.liveness.get(id);
      const r = s?.record;
      if (!s || !r || s.deleted || now - s.seenAt > this.liveness.limitMs) continue;
      const queued: QueuedWork[] = [];
      if ((waiting.get(topo.subjects.work(id)) ?? 0) > 0 && r.state === "running") {
        for (const m of await this.readSubject(this.ctx.topo.subjects.work(id))) {
          let work: TaskWork;
          try {
            work = decode(SCHEMAS.TaskWork, m.data, m.header);
          } catch {
            continue; // the worker dead-letters it
          }
          const key = attemptKey(work);
          // A claimed one runs (a worker acks its work only after the result): it is counted in `running`, not queued.
          if ((await this.claimOf(key)) !== null) continue;
          queued.push({ seq: m.seq, key, agent: work.task.agent, placement: work.placement, claimed: false });
          works.set(m.seq, work);
        }
      }
      workers.push({ id, slots: r.slots, running: r.running, state: r.state, agents: r.agents, labels: r.labels, capabilities: r.capabilities, queued });
    }
    const moves = planRebalance(workers, this.opts.rebalanceThreshold ?? 0.3);
    const done: Move[] = [];
    for (const mv of moves) {
      if (!this.lease.isLeader) break;
      const work = works.get(mv.seq)!;
      await requeueWork(this.js, this.ctx.topo, work, msgIds.move(work, mv.from, mv.seq));
      await this.jsm.streams.deleteMessage(this.ctx.topo.streams.work.name, mv.seq, false).catch((err) => {
        if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound)) throw err;
      });
      this.counts.rebalanced++;
      done.push(mv);
      this.log.info({ attempt: mv.key, from: mv.from, freeOn: mv.to }, "queued work moved back to the ready queue: another worker can start it now");
    }
    return done;
  }

  /** A suspect that answers is alive (draining, or just slow to write its record); else it is recovered. */
  private async judge(s: Suspect): Promise<void> {
    if (await this.answers(s.workerId)) {
      this.liveness.alive(s.workerId, this.clock.now());
      return;
    }
    await this.recover(s);
  }

  private async answers(workerId: string): Promise<boolean> {
    const timeout = this.opts.pingTimeoutMs ?? Math.max(500, this.opts.heartbeatMs);
    try {
      await this.ctx.nc.request(this.ctx.topo.subjects.status("worker", workerId), undefined, { timeout });
      return true;
    } catch {
      return false; // no responders (its connection is gone) or no answer in time
    }
  }

  /** Recovers a dead worker's work, then forgets it (see the class comment for the order). */
  private async recover(s: Suspect): Promise<void> {
    const { workerId } = s;
    const why = describeDeath(s);
    const subject = this.ctx.topo.subjects.work(workerId);
    // Before its work is re-issued (and its worktree archived): nothing of a worker whose
    // process is gone from this host still runs here. A worker only cut off (its process
    // alive) keeps its agents: what they finish is ignored, as for a worker elsewhere.
    const rec = s.record;
    const gone = rec !== undefined && rec.host === hostname() && !processAlive(rec.pid);
    const leftovers = gone ? await killLeftovers(workerId) : [];
    if (leftovers.length > 0) {
      this.log.warn({ worker: workerId, pids: leftovers }, "processes of the lost worker still ran on this host (its reaper missed them): killed");
    }
    const outcome = await this.recoverSubject(s, why);
    if (outcome.actions > 0) this.log.warn({ worker: workerId, reason: why, ...outcome }, "worker lost: its work was recovered");
    await this.deleteConsumer(workerId);
    this.recovered.add(workerId);
    bound(this.recovered);
    if (s.reason === "silent") {
      try {
        // Only the record judged dead: a worker that came back meanwhile keeps its new one.
        await this.ctx.kv.workers.delete(workerId, { previousSeq: s.revision });
      } catch (err) {
        if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence)) throw err;
        // It came back (cut off, not dead) while we recovered: it stays known, and
        // verifyConsumers gives it its consumer back.
        this.recovered.delete(workerId);
        this.verified.delete(workerId);
        this.log.warn({ worker: workerId }, "worker wrote its record again while its work was recovered; its consumer is re-created");
        return;
      }
    }
    this.liveness.forget(workerId);
    this.verified.delete(workerId);
    // Work the balancer sent just before it saw the worker gone lands after the first pass.
    const late = await this.recoverSubject(s, why);
    if (late.actions > 0) this.log.warn({ worker: workerId, ...late }, "work sent to the lost worker after it died was recovered too");
    if (outcome.actions + late.actions > 0 || s.reason === "silent") this.counts.workersRecovered++;
    this.log.info({ worker: workerId, subject }, "lost worker forgotten: consumer and registry record deleted");
  }

  /** One pass over the worker's subject: every message in it handled and deleted. */
  private async recoverSubject(s: Suspect, why: string): Promise<{ actions: number; interrupted: string[]; requeued: string[]; dropped: number }> {
    const subject = this.ctx.topo.subjects.work(s.workerId);
    const stored = await this.readSubject(subject);
    const left: LeftMessage[] = [];
    for (const m of stored) {
      let work: TaskWork | undefined;
      let error: string | undefined;
      try {
        work = decode(SCHEMAS.TaskWork, m.data, m.header);
      } catch (err) {
        error = errorMessage(err);
      }
      const claim = work ? await this.claimOf(attemptKey(work)) : undefined;
      left.push({ seq: m.seq, work, error, claim });
    }
    const bySeq = new Map(stored.map((m) => [m.seq, m]));
    const summary = { actions: 0, interrupted: [] as string[], requeued: [] as string[], dropped: 0 };
    for (const action of planRecovery(s.workerId, left)) {
      // Leadership lost mid-way: stop; the new leader redoes what is left.
      if (!this.lease.isLeader) throw new Error("stealer lease lost during a recovery");
      await this.apply(action, s, why, bySeq.get(action.seq)!);
      summary.actions++;
      if (action.kind === "lost") summary.interrupted.push(action.key);
      else if (action.kind === "requeue") summary.requeued.push(action.key);
      else summary.dropped++;
    }
    return summary;
  }

  private async apply(a: RecoveryAction, s: Suspect, why: string, m: StoredMsg): Promise<void> {
    const { topo } = this.ctx;
    const at = () => new Date(this.clock.now()).toISOString();
    switch (a.kind) {
      case "lost": {
        // Its worktree first: the next attempt uses the same path and branch.
        const kept = await retryOnLock(() =>
          keepLostWorktree({
            kv: this.ctx.kv.worktrees,
            work: a.work,
            worker: s.record,
            deadWorkerId: s.workerId,
            by: `stealer ${this.instance}`,
            logger: this.log,
          }),
        ).catch((err) => {
          this.log.warn({ key: a.key, err: errorMessage(err) }, "the lost attempt's worktree could not be archived; it is left as it is");
          return { kind: "untouched" as const, why: errorMessage(err) };
        });
        if (kept.kind === "untouched") this.log.info({ key: a.key, why: kept.why }, "lost attempt's worktree left alone");
        // Lost before its agent started: it costs the task nothing (agent-started.ts).
        const started = await agentStarted(this.jsm, topo, a.work);
        // Its last checkpoint, if its agent made any: the next attempt resumes from there.
        const checkpoint = started
          ? await this.checkpoints.get(a.work.runId, a.work.taskId).catch((err) => {
              this.log.warn({ key: a.key, err: errorMessage(err) }, "checkpoint record not read; the next attempt starts from the base");
              return undefined;
            })
          : undefined;
        const spent = started ? await lostSpend(this.jsm, topo, a.work) : undefined;
        const { data, headers } = encode(SCHEMAS.SchedulerInput, lostResult(a.work, s.workerId, a.claimedAt, at(), why, started, { checkpoint, spent }));
        await this.js.publish(topo.subjects.results(a.work.runId), data, { headers, msgID: a.resultId });
        await this.emit(a.work, s.workerId, "interrupted", `worker ${s.workerId} ${why} while running attempt ${a.work.attempt}: reported interrupted, so that the scheduler runs it again`, kept.kind === "archived" ? kept.ref : undefined, at());
        this.counts.interrupted++;
        break;
      }
      case "requeue": {
        await requeueWork(this.js, topo, a.work, a.msgId);
        await this.emit(a.work, s.workerId, "requeued", `worker ${s.workerId} ${why} before it started this attempt; it is ready again`, undefined, at());
        this.counts.requeued++;
        break;
      }
      case "drop":
        this.log.debug({ key: a.key, why: a.why }, "message on a lost worker's subject dropped");
        this.counts.dropped++;
        break;
      case "deadLetter":
        await this.deadLetters.record(m.subject, m.data, a.why, m.header);
        this.counts.deadLettered++;
        break;
    }
    await this.jsm.streams.deleteMessage(topo.streams.work.name, a.seq, false).catch((err) => {
      // Deleted already (by a predecessor, or a stealer that had not noticed it lost the lease).
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound)) throw err;
    });
  }

  private async emit(work: TaskWork, workerId: string, outcome: "interrupted" | "requeued", reason: string, archiveRef: string | undefined, at: string): Promise<void> {
    const event: AdoEvent = { type: "worker.lost", runId: work.runId, taskId: work.taskId, attempt: work.attempt, at, workerId, outcome, reason, ...(archiveRef ? { archiveRef } : {}) };
    // The event is for people; what it reports is done whether or not it is stored.
    await publishEvent(this.js, this.ctx.topo, event).catch((err) => this.log.warn({ task: work.taskId, err: errorMessage(err) }, "worker.lost event not stored"));
  }

  /** Every message still on a subject, read without consuming it (the worker's consumer may hold some). */
  private async readSubject(subject: string): Promise<StoredMsg[]> {
    const out: StoredMsg[] = [];
    let seq = 1;
    while (out.length < MAX_LEFT) {
      // STREAM.MSG.GET with next_by_subj (server 2.9+): the first message of the subject at
      // or after seq. The client types it for direct get only, which the stream does not allow.
      const query = { seq, next_by_subj: subject } as Parameters<JetStreamManager["streams"]["getMessage"]>[1];
      const m = await this.jsm.streams.getMessage(this.ctx.topo.streams.work.name, query);
      if (!m) break;
      out.push(m);
      seq = m.seq + 1;
    }
    return out;
  }

  private async claimOf(key: string) {
    const e = await this.ctx.kv.claims.get(key);
    if (!e || e.operation !== "PUT") return null;
    try {
      return decode(SCHEMAS.AttemptClaim, e.value);
    } catch {
      return null; // unreadable: treated as unclaimed, so the attempt is not lost
    }
  }

  /** Deletes a worker's consumer, keeping its config in case the worker comes back. */
  private async deleteConsumer(workerId: string): Promise<void> {
    const stream = this.ctx.topo.streams.work.name;
    const name = consumers.work(workerId);
    try {
      const info = await this.jsm.consumers.info(stream, name);
      this.savedConsumers.set(workerId, info.config);
      bound(this.savedConsumers);
      await this.jsm.consumers.delete(stream, name);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
    }
  }

  /**
   * A running worker without a consumer was declared dead while it was only cut off: it
   * heartbeats again but could never pull the work the balancer sends it. Its consumer is
   * re-created (the worker's pulls simply start working again). Checked once per worker
   * per leader term, a few per tick; a new worker creates its consumer before its record,
   * so a missing one is always one a stealer deleted.
   */
  private async verifyConsumers(): Promise<void> {
    const stream = this.ctx.topo.streams.work.name;
    const now = this.clock.now();
    let checked = 0;
    for (const workerId of this.liveness.known()) {
      if (checked >= VERIFY_PER_TICK || !this.lease.isLeader) return;
      const seen = this.liveness.get(workerId);
      if (this.verified.has(workerId) || !seen?.record || seen.record.state !== "running" || seen.checkAfter <= now) continue;
      checked++;
      const name = consumers.work(workerId);
      try {
        await this.jsm.consumers.info(stream, name);
      } catch (err) {
        if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
        const config = this.savedConsumers.get(workerId) ?? workerConsumer(this.ctx.topo, workerId);
        await this.jsm.consumers.add(stream, config);
        this.recovered.delete(workerId);
        this.counts.revived++;
        this.log.warn(
          { worker: workerId },
          "a worker declared dead came back (it was cut off, not dead): its consumer is re-created and it takes work again; what it was running was re-issued, and its late results are ignored",
        );
      }
      this.verified.add(workerId);
    }
  }

  /**
   * Work on the subject of a worker nobody knows (its record deleted before this stealer
   * started, or work sent after it was recovered): recovered once it is seen at two
   * sweeps in a row and the worker does not answer.
   */
  private async sweepOrphans(): Promise<void> {
    const { topo } = this.ctx;
    const info = await this.jsm.streams.info(topo.streams.work.name, { subjects_filter: topo.subjects.work("*") });
    const prefix = topo.subjects.work("");
    const now = new Set<string>();
    for (const [subject, count] of Object.entries(info.state.subjects ?? {})) {
      const workerId = subject.slice(prefix.length);
      if (count === 0 || this.liveness.get(workerId)) continue;
      now.add(workerId);
      if (!this.orphans.has(workerId) || !this.lease.isLeader) continue;
      await this.judge({ workerId, reason: "deleted", silentMs: 0, revision: 0 });
    }
    this.orphans = now;
  }
}

/**
 * Git work on the user's repository competes for its locks with workers and mergers:
 * what git reports as lock contention is tried again a few times.
 */
function retryOnLock<T>(fn: () => Promise<T>): Promise<T> {
  return retry(fn, { attempts: 5, backoff: Backoff.gitLock, retryIf: (err) => err instanceof GitCommandError && err.retryable });
}

/** Keeps a memory to its last MEMORY entries (insertion order). */
function bound(m: Set<string> | Map<string, unknown>): void {
  while (m.size > MEMORY) m.delete(m.keys().next().value!);
}
