import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";
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
  /** Deliveries after which a message that keeps failing is dead-lettered. */
  maxDeliver?: number;
}

/**
 * Pulls from a durable consumer and hands decoded batches to a handler, one batch at a
 * time. Batching is what lets an actor keep up with thousands of messages a second:
 * the round trips a batch causes are shared by all of its messages. At light load a
 * batch is a single message, handled as soon as it arrives.
 *
 * Malformed messages never reach the handler: each is copied to the dead-letter stream
 * with the reason, then removed, and the loop goes on.
 */
export class BatchLoop<T> {
  private messages?: ConsumerMessages;
  private readonly buffer: JsMsg[] = [];
  private busy?: Promise<void>;
  private stopped = false;
  handled = 0;
  deadLettered = 0;

  constructor(private readonly o: BatchLoopOptions<T>) {}

  async start(): Promise<void> {
    const maxBatch = this.o.maxBatch ?? 256;
    this.messages = await this.o.consumer.consume({
      max_messages: maxBatch * 2,
      callback: (m) => {
        this.buffer.push(m);
        this.kick();
      },
    });
  }

  /** Stops pulling and waits for the batch in progress. Unhandled buffered messages are nak'ed. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.messages?.close().catch(() => undefined);
    await this.busy;
    for (const m of this.buffer.splice(0)) m.nak();
  }

  private kick(): void {
    if (this.busy || this.stopped) return;
    this.busy = this.drain().finally(() => {
      this.busy = undefined;
      if (this.buffer.length && !this.stopped) this.kick();
    });
  }

  private async drain(): Promise<void> {
    const maxBatch = this.o.maxBatch ?? 256;
    while (this.buffer.length && !this.stopped) {
      const raw = this.buffer.splice(0, maxBatch);
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
          msg.nak(backoffDelay(msg.info.deliveryCount, Backoff.redelivery));
        }
      }
      return;
    }
    this.handled += batch.length;
    for (let i = 0; i < batch.length; i++) {
      const outcome = outcomes?.[i] ?? ACK;
      const { msg } = batch[i]!;
      if (outcome.kind === "ack") msg.ack();
      else if (outcome.kind === "nak") msg.nak(outcome.delayMs);
      else await this.deadLetter(msg, outcome.reason);
    }
  }

  /** Records a message as a dead letter, then removes it (DeadLetters.recordAndAck), and tells onDeadLetter. */
  private async deadLetter(msg: JsMsg, reason: string): Promise<void> {
    if (!(await this.o.deadLetters.recordAndAck(msg, reason))) return;
    this.deadLettered++;
    await this.o.onDeadLetter?.(msg, reason).catch((err) => this.o.logger.warn({ err: errorMessage(err) }, "onDeadLetter failed"));
  }
}
