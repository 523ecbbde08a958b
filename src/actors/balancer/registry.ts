import type { KV } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Clock } from "../../runtime/clock.js";
import { decode } from "../../runtime/codec.js";
import type { Logger } from "../../runtime/logger.js";
import { SCHEMAS, type WorkerRecord } from "../../runtime/messages.js";
import type { Topology } from "../../runtime/topology.js";

/** What the balancer knows of one worker. */
export interface WorkerView {
  record: WorkerRecord;
  /** Attempts this balancer assigned that the worker has not reported finished. */
  outstanding: Set<string>;
  /** Local time of the last registry update or load report. */
  seenAt: number;
}

/**
 * The live worker registry, kept in memory from a KV watch of the workers bucket (the
 * heartbeats) plus the core-NATS load reports workers send on every finish. A worker
 * silent for three heartbeats is treated as gone.
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
          const record = decode(SCHEMAS.WorkerRecord, e.value);
          const view = this.workers.get(e.key);
          if (view) Object.assign(view, { record, seenAt: this.clock.now() });
          else this.workers.set(e.key, { record, outstanding: new Set(), seenAt: this.clock.now() });
        } catch (err) {
          this.log.warn({ key: e.key, err: String(err) }, "unreadable worker record ignored");
        }
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
        } catch (err) {
          this.log.warn({ subject: msg.subject, err: String(err) }, "unreadable load report ignored");
        }
      },
    });
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
}
