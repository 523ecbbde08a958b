import type { KV } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Clock } from "../../runtime/clock.js";
import { decode } from "../../runtime/codec.js";
import type { Logger } from "../../runtime/logger.js";
import { SCHEMAS, type WorkerLoad, type WorkerRecord } from "../../runtime/messages.js";
import { livenessWindowMs, type Topology } from "../../runtime/topology.js";
import type { Candidate } from "./strategy.js";
import { KvWatch } from "../../runtime/kv-watch.js";

/**
 * Slots a worker has taken, as this balancer knows: what it runs (its latest figure),
 * plus what this balancer placed there that it has not started yet (not among its
 * active attempts). Not the larger of the two: work another balancer placed may be what
 * runs, and then this balancer's own queues behind it (seen as work placed on a full
 * worker, which the stealer then had to move).
 */
export function busyOf(view: Pick<WorkerView, "record" | "outstanding">): number {
  let notStarted = 0;
  if (view.outstanding.size) {
    const active = new Set(view.record.active);
    for (const key of view.outstanding.keys()) if (!active.has(key)) notStarted++;
  }
  return view.record.running + notStarted;
}

/** What the balancer knows of one worker. */
export interface WorkerView {
  record: WorkerRecord;
  /** Attempts this balancer assigned and has not seen finish, with when it assigned them. */
  outstanding: Map<string, number>;
  /** Local time of the last registry update or load report. */
  seenAt: number;
  /**
   * Load sequence of the `running` figure in `record` (the highest applied so far, from
   * a heartbeat record or a load report). Anything older does not overwrite it.
   */
  loadSeq: number;
}

const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * The live worker registry, kept in memory from a KV watch of the workers bucket (the
 * heartbeats) plus the core-NATS load reports workers send on every finish. A worker
 * silent for three heartbeats is treated as gone. `onChange` fires whenever capacity
 * may have grown (not on every heartbeat: one that changes nothing needs no dispatch).
 *
 * The two feeds travel apart, so a heartbeat written before a finish can arrive after
 * that finish's load report. Both carry the worker's load sequence, and the `running`
 * count kept is the one with the highest sequence; otherwise the late heartbeat would
 * make an idle worker look busy until the next one.
 */
export class WorkerRegistry {
  readonly workers = new Map<string, WorkerView>();
  private sub?: Subscription;
  private watch?: KvWatch<WorkerRecord>;

  constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly topo: Topology,
    private readonly clock: Clock,
    private readonly heartbeatMs: number,
    private readonly log: Logger,
    private readonly onChange: () => void,
  ) {}

  async start(): Promise<void> {
    // Restarted after a reconnect, so a registry that missed records while the
    // connection was down catches up at once.
    this.watch = new KvWatch({
      kv: this.kv,
      nc: this.nc,
      log: this.log,
      schema: SCHEMAS.WorkerRecord,
      what: "worker record",
      onPut: (_key, record) => {
        if (this.applyRecord(record)) this.onChange();
      },
      onDelete: (key) => this.workers.delete(key),
    });
    await this.watch.start();
    this.sub = this.nc.subscribe(this.topo.subjects.loadAll, {
      callback: (err, msg) => {
        if (err) return;
        try {
          if (this.applyLoad(decode(SCHEMAS.WorkerLoad, msg.data, msg.headers))) this.onChange();
        } catch (err) {
          this.log.warn({ subject: msg.subject, err: String(err) }, "unreadable load report ignored");
        }
      },
    });
  }

  /**
   * Applies a heartbeat record from the KV watch. Returns whether the worker's capacity
   * may have grown (new or revived worker, fewer running, new slots, agents, labels or
   * capabilities, back to `running`), i.e. whether a dispatch pass could place more.
   */
  applyRecord(incoming: WorkerRecord): boolean {
    const now = this.clock.now();
    const view = this.workers.get(incoming.workerId);
    if (!view) {
      this.workers.set(incoming.workerId, { record: incoming, outstanding: new Map(), seenAt: now, loadSeq: incoming.loadSeq });
      return true;
    }
    const prev = view.record;
    const wasLive = view.seenAt >= now - livenessWindowMs(this.heartbeatMs);
    // A restarted worker (same id) counts its sequence from 0 again.
    const restarted = incoming.startedAt !== prev.startedAt;
    const stale = !restarted && incoming.loadSeq < view.loadSeq;
    // A stale record still proves the worker alive and says what it is (state, labels):
    // only its load is older than what we hold.
    const record = stale ? { ...incoming, running: prev.running, active: prev.active } : incoming;
    if (!stale) view.loadSeq = incoming.loadSeq;
    view.record = record;
    view.seenAt = now;
    let freed = false;
    if (!stale) {
      // A finish whose load report was lost: the heartbeat no longer lists the attempt,
      // and it was assigned long enough ago to have reached the worker.
      const active = new Set(record.active);
      for (const [key, at] of view.outstanding) {
        if (!active.has(key) && now - at > livenessWindowMs(this.heartbeatMs)) freed = view.outstanding.delete(key) || freed;
      }
    }
    return (
      freed ||
      restarted ||
      !wasLive ||
      record.running < prev.running ||
      record.slots > prev.slots ||
      record.state !== prev.state ||
      !sameList(record.agents, prev.agents) ||
      !sameList(record.labels, prev.labels) ||
      !sameList(record.capabilities, prev.capabilities)
    );
  }

  /**
   * Applies a load report (sent by a worker on every start and finish). Its finished
   * attempts are forgotten whatever the order; its `running` (and `active`) only when no
   * newer figure was applied. Returns whether capacity may have grown (a task ended, or
   * fewer run): a start alone needs no dispatch pass.
   */
  applyLoad(load: WorkerLoad): boolean {
    const view = this.workers.get(load.workerId);
    if (!view) return false;
    let freed = false;
    for (const key of load.finished) freed = view.outstanding.delete(key) || freed;
    if (load.loadSeq >= view.loadSeq) {
      freed ||= load.running < view.record.running;
      view.loadSeq = load.loadSeq;
      view.record = { ...view.record, running: load.running, ...(load.active ? { active: load.active } : {}) };
    }
    view.seenAt = this.clock.now();
    return freed || load.finished.length > 0;
  }

  stop(): void {
    this.watch?.stop();
    this.sub?.unsubscribe();
  }

  /** Workers that are running and heard from within three heartbeats. */
  live(): WorkerView[] {
    const cutoff = this.clock.now() - livenessWindowMs(this.heartbeatMs);
    return [...this.workers.values()].filter((w) => w.record.state === "running" && w.seenAt >= cutoff);
  }

  /** Routing view of the live workers. */
  candidates(): Array<Candidate & { view: WorkerView }> {
    return this.live().map((view) => ({
      view,
      id: view.record.workerId,
      slots: view.record.slots,
      busy: busyOf(view),
      agents: view.record.agents,
      labels: view.record.labels,
      capabilities: view.record.capabilities,
      accessMode: view.record.accessMode,
      costPerTask: view.record.costPerTask,
    }));
  }
}
