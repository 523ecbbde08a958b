import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import { sleep } from "./clock.js";
import { decode } from "./codec.js";
import type { DeadLetters } from "./dead-letter.js";
import { DecodeError, errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";
import type { SchemaRef } from "./messages.js";
import { Backoff, backoffDelay } from "./retry.js";

/** A decoded message and the JetStream message it came in. */
export interface Delivery<T> {
  msg: JsMsg;
  data: T;
}

/** What to do with one delivery after the handler ran. */
export type Outcome =
  | { kind: "ack" }
  /** Redeliver later (backpressure, transient failure). */
  | { kind: "nak"; delayMs: number }
  /** Cannot ever be processed: record it as a dead letter with the reason, then remove it. */
  | { kind: "dead"; reason: string };

export const ACK: Outcome = { kind: "ack" };

export interface BatchLoopOptions<T> {
  consumer: Consumer;
  /** Where malformed messages, and messages whose handler keeps failing, go. */
  deadLetters: DeadLetters;
  schema: SchemaRef<T>;
  logger: Logger;
  /**
   * Handles a batch in arrival order. Returns one outcome per delivery (same order);
   * `void` acks them all. A throw naks the batch with backoff; a delivery that has
   * used up its attempts is dead-lettered instead.
   */
  handle: (batch: Delivery<T>[]) => Promise<Outcome[] | void>;
  /** Called after a message was dead-lettered, e.g. to tell its sender. Must not throw. */
  onDeadLetter?: (msg: JsMsg, reason: string) => Promise<void>;
  maxBatch?: number;
  /**
   * Messages pulled ahead of the batch being handled, so that at load the next batch is
   * there when this one ends. Default `maxBatch`; 0 pulls only once a batch is done (a
   * loop of slow one-at-a-time handlers, where a prefetched message would only wait).
   */
  prefetch?: number;
  /** Deliveries after which a message that keeps failing is dead-lettered. */
  maxDeliver?: number;
}

/** How long one pull request waits on the server for messages before it is renewed. */
const PULL_EXPIRES_MS = 30_000;

/**
 * Pulls from a durable consumer and hands decoded batches to a handler, one batch at a
 * time. Batching is what lets an actor keep up with thousands of messages a second:
 * the round trips a batch causes are shared by all of its messages. At light load a
 * batch is a single message, handled as soon as it arrives.
 *
 * It pulls only what it can work on: at most `maxBatch + prefetch` messages are
 * delivered and not yet settled (acked, nak'ed or dead-lettered), and a new pull asks
 * for no more than what settling freed. Everything held is kept alive with an
 * in-progress ack every third of the consumer's ack wait, so the ack wait bounds how
 * long a dead holder's messages stay away, not how long a handler may take. (It used
 * `consume()`, which pulls again as soon as messages are delivered, not handled: under
 * a burst thousands sat in its buffer past the ack wait and were redelivered and
 * handled again.)
 *
 * Malformed messages never reach the handler: each is copied to the dead-letter stream
 * with the reason, then removed, and the loop goes on.
 */
export class BatchLoop<T> {
  private pull?: ConsumerMessages;
  private pulling?: Promise<void>;
  private readonly buffer: JsMsg[] = [];
  /** Delivered and not settled yet: the buffer plus the batch being handled. */
  private readonly held = new Set<JsMsg>();
  private freed?: () => void;
  private keepAlive?: NodeJS.Timeout;
  private busy?: Promise<void>;
  private stopped = false;
  private readonly stopping = new AbortController();
  handled = 0;
  deadLettered = 0;

  constructor(private readonly o: BatchLoopOptions<T>) {}

  private get maxBatch(): number {
    return this.o.maxBatch ?? 256;
  }

  /** The most messages held at once (see the class comment). */
  get maxHeld(): number {
    return this.maxBatch + (this.o.prefetch ?? this.maxBatch);
  }

  /** Messages delivered and not settled yet. */
  get holding(): number {
    return this.held.size;
  }

  async start(): Promise<void> {
    // The server's default when a consumer was made without one.
    const ackWaitNs = (await this.o.consumer.info()).config.ack_wait ?? 30_000_000_000;
    const ackWaitMs = Math.max(1, Math.floor(ackWaitNs / 1_000_000));
    this.keepAlive = setInterval(() => {
      for (const m of this.held) m.working();
    }, Math.max(50, Math.floor(ackWaitMs / 3)));
    this.pulling = this.pullLoop();
  }

  /** Stops pulling and waits for the batch in progress. Unhandled buffered messages are nak'ed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    this.freed?.();
    await this.pull?.close().catch(() => undefined);
    await this.pulling;
    await this.busy;
    clearInterval(this.keepAlive);
    for (const m of this.buffer.splice(0)) this.settle(m).nak();
  }

  /**
   * One pull request at a time, for what is free: `maxHeld` minus what is held. A full
   * hand waits for a batch to settle. The request ends when it is filled or expires on
   * the server; then the next one goes out.
   */
  private async pullLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const credits = this.maxHeld - this.held.size;
      if (credits <= 0) {
        await new Promise<void>((resolve) => (this.freed = resolve));
        this.freed = undefined;
        continue;
      }
      try {
        this.pull = await this.o.consumer.fetch({ max_messages: credits, expires: PULL_EXPIRES_MS });
        for await (const m of this.pull) this.receive(m);
        failures = 0;
      } catch (err) {
        if (this.stopped) break;
        const delay = backoffDelay(++failures, Backoff.server);
        this.o.logger.warn({ err: errorMessage(err), retryInMs: delay }, "pull failed; pulling again");
        await sleep(delay, this.stopping.signal);
      }
    }
  }

  private receive(m: JsMsg): void {
    if (this.stopped) {
      m.nak();
      return;
    }
    this.held.add(m);
    this.buffer.push(m);
    this.kick();
  }

  /** Forgets a message as held (it is being acked, nak'ed or dead-lettered) and frees its credit. */
  private settle(m: JsMsg): JsMsg {
    this.held.delete(m);
    this.freed?.();
    return m;
  }

  private kick(): void {
    if (this.busy || this.stopped) return;
    this.busy = this.drain().finally(() => {
      this.busy = undefined;
      if (this.buffer.length && !this.stopped) this.kick();
    });
  }

  private async drain(): Promise<void> {
    while (this.buffer.length && !this.stopped) {
      const raw = this.buffer.splice(0, this.maxBatch);
      const batch: Delivery<T>[] = [];
      for (const msg of raw) {
        try {
          batch.push({ msg, data: decode(this.o.schema, msg.data, msg.headers) });
        } catch (err) {
          await this.deadLetter(msg, err instanceof DecodeError ? err.message : errorMessage(err));
        }
      }
      if (batch.length) await this.run(batch);
    }
  }

  private async run(batch: Delivery<T>[]): Promise<void> {
    let outcomes: Outcome[] | void;
    try {
      outcomes = await this.o.handle(batch);
    } catch (err) {
      this.o.logger.error({ err: errorMessage(err), size: batch.length }, "handler failed; will redeliver");
      const maxDeliver = this.o.maxDeliver ?? 10;
      for (const { msg } of batch) {
        if (msg.info.deliveryCount >= maxDeliver) {
          await this.deadLetter(msg, `handler failed ${msg.info.deliveryCount} times, last: ${errorMessage(err)}`);
        } else {
          this.settle(msg).nak(backoffDelay(msg.info.deliveryCount, Backoff.redelivery));
        }
      }
      return;
    }
    this.handled += batch.length;
    for (let i = 0; i < batch.length; i++) {
      const outcome = outcomes?.[i] ?? ACK;
      const { msg } = batch[i]!;
      if (outcome.kind === "ack") this.settle(msg).ack();
      else if (outcome.kind === "nak") this.settle(msg).nak(outcome.delayMs);
      else await this.deadLetter(msg, outcome.reason);
    }
  }

  /** Records a message as a dead letter, then removes it (DeadLetters.recordAndAck), and tells onDeadLetter. */
  private async deadLetter(msg: JsMsg, reason: string): Promise<void> {
    const recorded = await this.o.deadLetters.recordAndAck(msg, reason);
    this.settle(msg);
    if (!recorded) return;
    this.deadLettered++;
    await this.o.onDeadLetter?.(msg, reason).catch((err) => this.o.logger.warn({ err: errorMessage(err) }, "onDeadLetter failed"));
  }
}
