import type { KV } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Clock } from "../../runtime/clock.js";
import { decode } from "../../runtime/codec.js";
import type { Logger } from "../../runtime/logger.js";
import { SCHEMAS, type WorkerRecord } from "../../runtime/messages.js";
import type { Topology } from "../../runtime/topology.js";
import type { Candidate } from "./strategy.js";

/** What the balancer knows of one worker. */
export interface WorkerView {
  record: WorkerRecord;
  /** Attempts this balancer assigned and has not seen finish, with when it assigned them. */
  outstanding: Map<string, number>;
  /** Local time of the last registry update or load report. */
  seenAt: number;
}

/**
 * The live worker registry, kept in memory from a KV watch of the workers bucket (the
 * heartbeats) plus the core-NATS load reports workers send on every finish. A worker
 * silent for three heartbeats is treated as gone. `onChange` fires whenever capacity
 * may have changed.
 */
export class WorkerRegistry {
  readonly workers = new Map<string, WorkerView>();
  private sub?: Subscription;
  private stopWatch?: () => void;

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
    const watch = await this.kv.watch();
    this.stopWatch = () => watch.stop();
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") {
          this.workers.delete(e.key);
          continue;
        }
        try {
          this.onRecord(decode(SCHEMAS.WorkerRecord, e.value));
        } catch (err) {
          this.log.warn({ key: e.key, err: String(err) }, "unreadable worker record ignored");
        }
        this.onChange();
      }
    })();
    this.sub = this.nc.subscribe(this.topo.subjects.loadAll, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const load = decode(SCHEMAS.WorkerLoad, msg.data, msg.headers);
          const view = this.workers.get(load.workerId);
          if (!view) return;
          for (const key of load.finished) view.outstanding.delete(key);
          view.record = { ...view.record, running: load.running };
          view.seenAt = this.clock.now();
          this.onChange();
        } catch (err) {
          this.log.warn({ subject: msg.subject, err: String(err) }, "unreadable load report ignored");
        }
      },
    });
  }

  private onRecord(record: WorkerRecord): void {
    const now = this.clock.now();
    const view = this.workers.get(record.workerId);
    if (!view) {
      this.workers.set(record.workerId, { record, outstanding: new Map(), seenAt: now });
      return;
    }
    view.record = record;
    view.seenAt = now;
    // A finish whose load report was lost: the heartbeat no longer lists the attempt,
    // and it was assigned long enough ago to have reached the worker.
    const active = new Set(record.active);
    for (const [key, at] of view.outstanding) {
      if (!active.has(key) && now - at > 3 * this.heartbeatMs) view.outstanding.delete(key);
    }
  }

  stop(): void {
    this.stopWatch?.();
    this.sub?.unsubscribe();
  }

  /** Workers that are running and heard from within three heartbeats. */
  live(): WorkerView[] {
    const cutoff = this.clock.now() - 3 * this.heartbeatMs;
    return [...this.workers.values()].filter((w) => w.record.state === "running" && w.seenAt >= cutoff);
  }

  /** Routing view of the live workers. */
  candidates(): Array<Candidate & { view: WorkerView }> {
    return this.live().map((view) => ({
      view,
      id: view.record.workerId,
      slots: view.record.slots,
      busy: Math.max(view.outstanding.size, view.record.running),
      agents: view.record.agents,
      labels: view.record.labels,
      capabilities: view.record.capabilities,
      accessMode: view.record.accessMode,
      costPerTask: view.record.costPerTask,
    }));
  }
}
