import { hostname } from "node:os";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { encode, encodeValue } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import type { WorkerId } from "../../runtime/ids.js";
import type { Logger } from "../../runtime/logger.js";
import { SCHEMAS, type WorkerRecord } from "../../runtime/messages.js";
import type { Topology } from "../../runtime/topology.js";

/** What the presence needs from its worker: the few members, not the worker itself. */
export interface PresenceContext {
  workerId: WorkerId;
  /** The `workers` bucket: this worker's own key. */
  workers: KV;
  nc: NatsConnection;
  topo: Topology;
  log: Logger;
  /** What the record says of the worker that does not change while it runs. */
  fixed: Pick<WorkerRecord, "slots" | "agents" | "agentVersions" | "labels" | "capabilities" | "accessMode" | "costPerTask" | "pool">;
  /** What runs now: attempt keys, and work waiting on its subject (as last seen). */
  load(): { active: string[]; pending: number };
}

/** The state a record announces; undefined: write nothing (stopped or failed). */
export type PresenceState = WorkerRecord["state"] | undefined;

/**
 * A worker's presence: its registry record (KV `workers`, which the balancer routes by and
 * the stealer watches for life), written on start and every heartbeat, and its load
 * reports (core NATS `load.<id>`), sent on every start and finish so every balancer counts
 * the slot taken or free at once. Both carry `loadSeq`, which goes up on every start and finish, so the balancer
 * can tell which of the two (sent on separate paths) is newer.
 */
export class WorkerPresence {
  private loadSeq = 0;
  private finishedSinceReport: string[] = [];
  private timer?: NodeJS.Timeout;
  private readonly startedAt = new Date().toISOString();

  constructor(private readonly ctx: PresenceContext) {}

  /** Writes the record now. */
  async register(state: WorkerRecord["state"]): Promise<void> {
    await this.ctx.workers.put(this.ctx.workerId, encodeValue(SCHEMAS.WorkerRecord, this.record(state)));
  }

  /**
   * Beats every `everyMs`: `tick` first (in-progress acks of running work), then the
   * record, in the state `stateOf` says (a draining worker keeps beating, so the stealer
   * never mistakes it for a dead one while its last tasks finish).
   */
  startHeartbeat(everyMs: number, tick: () => void, stateOf: () => PresenceState): void {
    this.timer = setInterval(() => {
      tick();
      const state = stateOf();
      if (!state) return;
      this.register(state).catch((err) => this.ctx.log.warn({ err: errorMessage(err) }, "heartbeat failed"));
    }, everyMs);
  }

  /**
   * An attempt started here: the balancers hear of it at once too. Without this a
   * balancer that did not place it (another replica, or one started since) saw the slot
   * free until the next heartbeat (longer on a loaded host) and sent work that could only
   * queue behind it, for the stealer to move again.
   */
  started(): void {
    this.loadSeq++;
    this.reportLoad();
    // Full now: the record says so at once, not at the next heartbeat, for a balancer that
    // starts meanwhile (it reads the records, not the reports it missed). Only then: a
    // record that under-counts a worker with slots left costs at most work queued briefly.
    if (this.ctx.load().active.length >= this.ctx.fixed.slots) {
      this.register("running").catch((err) => this.ctx.log.debug({ err: errorMessage(err) }, "record not written at start"));
    }
  }

  /** An attempt ended here: the balancer hears of it at once. */
  finished(key: string): void {
    this.loadSeq++;
    this.finishedSinceReport.push(key);
    this.reportLoad();
  }

  /** Stops beating and deletes the record: the worker has stopped. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.ctx.workers.delete(this.ctx.workerId).catch(() => undefined);
  }

  private record(state: WorkerRecord["state"]): WorkerRecord {
    const { active, pending } = this.ctx.load();
    return {
      workerId: this.ctx.workerId,
      host: hostname(),
      pid: process.pid,
      ...this.ctx.fixed,
      running: active.length,
      pending,
      active,
      loadSeq: this.loadSeq,
      startedAt: this.startedAt,
      heartbeatAt: new Date().toISOString(),
      state,
    };
  }

  private reportLoad(): void {
    const finished = this.finishedSinceReport.splice(0);
    try {
      const { active } = this.ctx.load();
      const { data, headers } = encode(SCHEMAS.WorkerLoad, {
        type: "worker.load",
        workerId: this.ctx.workerId,
        running: active.length,
        active,
        finished,
        loadSeq: this.loadSeq,
      });
      this.ctx.nc.publish(this.ctx.topo.subjects.load(this.ctx.workerId), data, { headers });
    } catch (err) {
      this.ctx.log.debug({ err: errorMessage(err) }, "load report not sent");
    }
  }
}
