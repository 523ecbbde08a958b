import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { Svcm, type Service } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { systemClock, type Clock } from "./clock.js";
import { LifecycleError, errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";
import type { ActorName, BucketKey, Topology } from "./topology.js";
import { DeadLetters } from "./dead-letter.js";

/** created -> running -> draining -> stopped | failed */
export type ActorState = "created" | "running" | "draining" | "stopped" | "failed";

/** What every actor is given; the shell owns the connection, the actor only uses it. */
export interface ActorContext {
  nc: NatsConnection;
  topo: Topology;
  kv: Record<BucketKey, KV>;
  logger: Logger;
  clock?: Clock;
}

export interface CloseOptions {
  /** Time in-flight work gets to finish before it is abandoned (handed back). */
  graceMs?: number;
  /** Time after the grace period before close() gives up waiting. */
  forceMs?: number;
}

export const VERSION = "0.1.0";

/**
 * Base of every actor: the lifecycle, a services-framework registration (so each
 * replica answers `$SRV.PING|INFO|STATS` and `nats micro ls` lists it), and an
 * idempotent close() with a grace then a force period. Subclasses implement onStart
 * (subscribe, start loops) and onDrain (stop taking work, finish or hand back
 * in-flight work before `force` aborts).
 */
export abstract class Actor {
  private _state: ActorState = "created";
  private closing?: Promise<void>;
  /** This replica's services-framework registration, made before onStart: subclasses add their endpoints to it. */
  protected service?: Service;
  protected readonly js: JetStreamClient;
  protected readonly log: Logger;
  protected readonly clock: Clock;
  /** Where this actor records messages it cannot process (`<p>.dlq.<kind>`). */
  protected readonly deadLetters: DeadLetters;

  constructor(
    readonly kind: ActorName,
    readonly instance: string,
    protected readonly ctx: ActorContext,
  ) {
    this.js = jetstream(ctx.nc);
    this.clock = ctx.clock ?? systemClock;
    this.log = ctx.logger.child({ actor: kind, instance });
    this.deadLetters = new DeadLetters({ js: this.js, nc: ctx.nc, topo: ctx.topo, actor: kind, log: this.log });
  }

  get state(): ActorState {
    return this._state;
  }

  /** Starts the actor; only valid once, from `created`. */
  async start(): Promise<this> {
    if (this._state !== "created") {
      throw new LifecycleError(`cannot start ${this.kind} '${this.instance}': it is ${this._state}`);
    }
    this._state = "running";
    try {
      this.service = await new Svcm(this.ctx.nc).add({
        name: this.ctx.topo.service(this.kind),
        version: VERSION,
        description: `ado ${this.kind}`,
        metadata: { instance: this.instance, prefix: this.ctx.topo.prefix },
        // `$SRV.STATS` carries the actor's own counters in each endpoint's `data`.
        statsHandler: async () => ({ state: this._state, ...this.stats() }),
      });
      this.service.addEndpoint("status", {
        subject: this.ctx.topo.subjects.status(this.kind, this.instance),
        handler: (_err, msg) => msg.respond(JSON.stringify({ state: this._state, ...this.stats() })),
        metadata: { description: "actor state and counters, JSON" },
      });
      await this.onStart();
      this.log.info("actor running");
    } catch (err) {
      this._state = "failed";
      this.markStopped();
      await this.service?.stop().catch(() => undefined);
      throw err;
    }
    return this;
  }

  /**
   * Drains and stops. Idempotent: every call returns the same promise. Runs every
   * cleanup step even when one fails, and ends `stopped` (or `failed` if a step threw).
   */
  close(opts: CloseOptions = {}): Promise<void> {
    this.closing ??= this.doClose(opts);
    return this.closing;
  }

  /**
   * Ends the grace period of a close under way now, as if it had run out (a worker then
   * interrupts what it runs: checkpointed and handed back). Does nothing before close().
   */
  hurry(): void {
    this.force?.abort();
  }

  private force?: AbortController;
  private markStopped!: () => void;
  private readonly stoppedP = new Promise<void>((r) => (this.markStopped = r));

  /** Resolves once the actor has stopped (or failed), however its close was asked for (a signal, a drain request). */
  whenStopped(): Promise<void> {
    return this.stoppedP;
  }

  private async doClose({ graceMs = 10_000, forceMs = 5_000 }: CloseOptions): Promise<void> {
    if (this._state === "created") {
      this._state = "stopped";
      this.markStopped();
      return;
    }
    this._state = "draining";
    const force = new AbortController();
    this.force = force;
    const graceTimer = setTimeout(() => force.abort(), graceMs);
    let failed: unknown;
    try {
      await withDeadline(this.onDrain(force.signal), graceMs + forceMs, `${this.kind} drain`);
    } catch (err) {
      failed = err;
      this.log.error({ err: errorMessage(err) }, "drain failed");
    } finally {
      clearTimeout(graceTimer);
    }
    try {
      await this.service?.stop();
    } catch (err) {
      failed ??= err;
    }
    this._state = failed ? "failed" : "stopped";
    this.log.info({ state: this._state }, "actor stopped");
    this.markStopped();
  }

  /** Whether the actor should keep taking work. */
  protected get isRunning(): boolean {
    return this._state === "running";
  }

  /** Counters exposed on the status endpoint. */
  stats(): Record<string, unknown> {
    return {};
  }

  protected abstract onStart(): Promise<void>;
  protected abstract onDrain(force: AbortSignal): Promise<void>;
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new LifecycleError(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
