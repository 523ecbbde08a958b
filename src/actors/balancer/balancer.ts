import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import { SCHEMAS, type TaskWork } from "../../runtime/messages.js";
import { ControlView } from "../../runtime/control.js";
import { actorConsumer, consumers } from "../../runtime/topology.js";
import { dispatchPass, type Route } from "./dispatch-pass.js";
import { ReadyQueue } from "./ready-queue.js";
import { WorkerRegistry } from "./registry.js";
import { placementKey, Router, type Strategy } from "./strategy.js";
import { attemptKey, msgIds } from "../../runtime/names.js";

export interface BalancerOptions {
  heartbeatMs: number;
  /** Default strategy; a run may name its own. */
  strategy?: Strategy;
  /** Most ready tasks held in memory at once; the rest wait in the stream. */
  maxHeld?: number;
  /** Redelivery time of a held ready message; kept alive with in-progress acks. */
  ackWaitMs?: number;
}

/**
 * Ack wait of held ready messages. A balancer that dies leaves what it held unacked: this
 * long until another replica (or its restart) gets it. Held messages are kept alive with
 * an in-progress ack every third of it: with 10,000 held (maxHeld) that is 3,000 small
 * publishes a second; measured, each round blocks this event loop 12-25 ms and the
 * server uses ~1% of a core for them (0.2% at the 60 s this used to be).
 */
export const READY_ACK_WAIT_MS = 10_000;

interface Held {
  work: TaskWork;
  msg: JsMsg;
  /** How to place it, worked out once on arrival rather than on every dispatch pass. */
  route: Route;
}

/**
 * The balancer actor. It holds ready tasks in priority order (level, then longest
 * remaining path, then arrival; retries wait out their backoff) and hands one to a
 * worker only when that worker has a free slot, choosing among the eligible workers by
 * the run's or the configured strategy. So work beyond the cluster's capacity waits in
 * the ready stream, where a critical task overtakes a normal one, instead of queueing
 * behind a busy worker.
 *
 * Held messages are not acked until their work message is stored on the worker's
 * subject; in-progress acks keep them from being redelivered meanwhile. A balancer that
 * dies loses nothing: its held messages are redelivered to another replica.
 */
export class Balancer extends Actor {
  private registry!: WorkerRegistry;
  private control!: ControlView;
  private messages?: ConsumerMessages;
  private readonly queue = new ReadyQueue<Held>();
  private readonly router = new Router();
  private scheduled = false;
  /** Set by a control change: the next dispatch pass drops held work of cancelled runs. */
  private purgeCancelled = false;
  private dueTimer?: NodeJS.Timeout;
  private keepAlive?: NodeJS.Timeout;
  private assigned = 0;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: BalancerOptions,
  ) {
    super("balancer", instance, ctx);
  }

  protected async onStart(): Promise<void> {
    const { topo, nc, kv } = this.ctx;
    this.registry = new WorkerRegistry(nc, kv.workers, topo, this.clock, this.opts.heartbeatMs, this.log, () => this.kick());
    await this.registry.start();
    this.control = new ControlView(
      kv.control,
      this.log,
      () => {
        this.purgeCancelled = true;
        this.kick();
      },
      nc,
    );
    await this.control.start();
    const jsm = await this.js.jetstreamManager();
    const ackWaitMs = this.opts.ackWaitMs ?? READY_ACK_WAIT_MS;
    await jsm.consumers.add(topo.streams.ready.name, {
      ...actorConsumer(consumers.ready, topo.subjects.readyAll, { ackWaitMs }),
      // The server stops delivering past this many unacked: the bound of what we hold.
      max_ack_pending: this.opts.maxHeld ?? 10_000,
    });
    const consumer = await this.js.consumers.get(topo.streams.ready.name, consumers.ready);
    this.messages = await consumer.consume({ max_messages: 1_000, callback: (m) => this.onReady(m) });
    this.keepAlive = setInterval(() => {
      for (const e of this.queue.all()) e.item.msg.working();
    }, ackWaitMs / 3);
  }

  protected async onDrain(): Promise<void> {
    clearInterval(this.keepAlive);
    clearTimeout(this.dueTimer);
    await this.messages?.close().catch(() => undefined);
    this.registry?.stop();
    this.control?.stop();
    // Hand back what we hold, so another replica takes it now rather than after ack_wait.
    for (const e of this.queue.all()) e.item.msg.nak();
  }

  override stats() {
    return { held: this.queue.size, assigned: this.assigned, deadLettered: this.deadLetters.count, workers: this.registry?.live().length ?? 0 };
  }

  private onReady(m: JsMsg): void {
    let work: TaskWork;
    try {
      work = decode(SCHEMAS.TaskWork, m.data, m.headers);
    } catch (err) {
      void this.deadLetters.recordAndAck(m, errorMessage(err));
      return;
    }
    const key = attemptKey(work);
    const route: Route = {
      agent: work.task.agent,
      placement: work.placement,
      strategy: work.strategy ?? this.opts.strategy ?? "least_loaded",
      placementKey: placementKey(work.task.agent, work.placement),
    };
    const entry = { key, priority: work.priority, rank: work.rank, seq: m.seq, notBefore: work.notBefore, item: { work, msg: m, route } };
    if (!this.queue.add(entry, this.clock.now())) {
      // A redelivery of a message we hold: ack through the newest delivery from now on.
      const held = this.queue.remove(key)!;
      held.item.msg = m;
      this.queue.add(held, this.clock.now());
    }
    this.kick();
  }

  /** Coalesces dispatch requests into one pass per event-loop turn. */
  private kick(): void {
    if (this.scheduled || !this.isRunning) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.dispatch();
    });
  }

  private dispatch(): void {
    const now = this.clock.now();
    this.queue.promote(now);
    const candidates = this.registry.candidates();
    if (this.purgeCancelled) {
      this.purgeCancelled = false;
      for (const e of this.queue.all()) {
        if (this.control.stateOf(e.item.work.runId, e.item.work.taskId) !== "cancelled") continue;
        // The scheduler already counts it cancelled: drop it.
        this.queue.remove(e.key);
        e.item.msg.ack();
      }
    }
    dispatchPass(
      this.queue,
      candidates,
      this.router,
      (entry) => {
        const { work } = entry.item;
        const control = this.control.stateOf(work.runId, work.taskId);
        if (control === "paused") return undefined; // held until resumed
        if (control === "cancelled") {
          this.queue.remove(entry.key); // arrived after the purge
          entry.item.msg.ack();
          return undefined;
        }
        return entry.item.route;
      },
      (entry, pick) => {
        pick.view.outstanding.set(entry.key, now);
        this.send(entry.key, entry.item, pick.id);
      },
    );
    this.armDueTimer();
  }

  private send(key: string, held: Held, workerId: string): void {
    const { data, headers } = encode(SCHEMAS.TaskWork, { ...held.work, workerId });
    // The msg id names the ready message (its stream sequence), not just the attempt: a
    // send of the same ready message again (its redelivery) is deduplicated, but work
    // handed back by a draining worker or re-queued by the stealer is a new ready message
    // and must be sent again within the dedupe window. Keyed by attempt alone, that send
    // was dropped as a duplicate of the first (long gone) and the task lost.
    this.js
      .publish(this.ctx.topo.subjects.work(workerId), data, { headers, msgID: msgIds.work(held.work, held.msg.seq) })
      .then(() => {
        held.msg.ack();
        this.assigned++;
      })
      .catch((err) => {
        // Not stored: forget the assignment and let the ready message come back.
        this.registry.workers.get(workerId)?.outstanding.delete(key);
        this.log.warn({ key, err: errorMessage(err) }, "work not stored; the task stays ready");
        held.msg.nak(1_000);
      });
  }

  private armDueTimer(): void {
    clearTimeout(this.dueTimer);
    const due = this.queue.nextDue();
    if (due === undefined) return;
    this.dueTimer = setTimeout(() => this.kick(), Math.max(0, due - this.clock.now()) + 1);
  }
}
