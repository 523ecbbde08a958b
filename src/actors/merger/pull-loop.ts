import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import { sleep } from "../../runtime/clock.js";
import { decode } from "../../runtime/codec.js";
import { ACK, type Delivery, type Outcome } from "../../runtime/consume.js";
import type { DeadLetters } from "../../runtime/dead-letter.js";
import { DecodeError, errorMessage } from "../../runtime/errors.js";
import type { Logger } from "../../runtime/logger.js";
import type { SchemaRef } from "../../runtime/messages.js";
import { Backoff, backoffDelay } from "../../runtime/retry.js";

export interface PullLoopOptions<T> {
  consumer: Consumer;
  deadLetters: DeadLetters;
  schema: SchemaRef<T>;
  logger: Logger;
  /** The most messages held at once: the batch being handled and what arrives meanwhile. */
  maxHeld: number;
  /** The consumer's ack wait: every message held gets an in-progress ack each third of it. */
  ackWaitMs: number;
  /** Handles a batch in arrival order; one outcome per delivery. It must not throw. */
  handle: (batch: Delivery<T>[]) => Promise<Outcome[]>;
}

/** How long one pull request waits on the server for messages before it is renewed. */
const PULL_EXPIRES_MS = 30_000;

/**
 * The merge coordinator's consume loop: it holds only what it is merging or will merge
 * next (at most `maxHeld`, pulled as credits free up), and keeps every message it holds
 * alive with in-progress acks, so the consumer's ack wait can be a few seconds: when a
 * merge coordinator dies, what it held goes to another within that time, while a long
 * validation or resolver here is never redelivered meanwhile.
 *
 * (BatchLoop in src/runtime/consume.ts pulls ahead with `consume()` and does not keep
 * what it buffered alive, which with a short ack wait would redeliver merges in
 * progress. Once BatchLoop holds only what it works on and keeps it alive, this file
 * goes and the merge coordinator uses BatchLoop with no prefetch.)
 *
 * Malformed messages are dead-lettered with the reason and never reach the handler.
 */
export class PullLoop<T> {
  private pull?: ConsumerMessages;
  private running?: Promise<void>;
  private readonly held = new Set<JsMsg>();
  private readonly buffer: JsMsg[] = [];
  private keepAlive?: NodeJS.Timeout;
  private wake?: () => void;
  private stopped = false;
  handled = 0;

  constructor(private readonly o: PullLoopOptions<T>) {}

  start(): void {
    this.keepAlive = setInterval(() => {
      for (const m of this.held) m.working();
    }, Math.max(50, Math.floor(this.o.ackWaitMs / 3)));
    this.running = Promise.all([this.pullLoop(), this.handleLoop()]).then(() => undefined);
  }

  /** Stops pulling, lets the batch in progress finish, and hands back (nak) what it held unhandled. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.pull?.close().catch(() => undefined);
    await this.running;
    clearInterval(this.keepAlive);
    for (const m of this.buffer.splice(0)) this.settle(m).nak();
  }

  /** Messages held (delivered, not acked, nak'ed or dead-lettered yet). */
  get holding(): number {
    return this.held.size;
  }

  private async pullLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const credits = this.o.maxHeld - this.held.size;
      if (credits <= 0) {
        await this.idle();
        continue;
      }
      try {
        this.pull = await this.o.consumer.fetch({ max_messages: credits, expires: PULL_EXPIRES_MS });
        for await (const m of this.pull) {
          if (this.stopped) {
            m.nak();
            continue;
          }
          this.held.add(m);
          this.buffer.push(m);
          this.wake?.();
        }
        failures = 0;
      } catch (err) {
        if (this.stopped) break;
        const delay = backoffDelay(++failures, Backoff.server);
        this.o.logger.warn({ err: errorMessage(err), retryInMs: delay }, "pull failed; pulling again");
        await sleep(delay);
      }
    }
  }

  /** One batch at a time: everything that arrived while the previous one was handled. */
  private async handleLoop(): Promise<void> {
    while (!this.stopped) {
      if (this.buffer.length === 0) {
        await this.idle();
        continue;
      }
      const raw = this.buffer.splice(0);
      const batch: Delivery<T>[] = [];
      for (const msg of raw) {
        try {
          batch.push({ msg, data: decode(this.o.schema, msg.data, msg.headers) });
        } catch (err) {
          await this.o.deadLetters.recordAndAck(msg, err instanceof DecodeError ? err.message : errorMessage(err));
          this.settle(msg);
        }
      }
      if (batch.length === 0) continue;
      let outcomes: Outcome[];
      try {
        outcomes = await this.o.handle(batch);
      } catch (err) {
        // The handler says what to do with each; this is a defect in it, so back off and redeliver.
        this.o.logger.error({ err: errorMessage(err), size: batch.length }, "merge handler failed; will redeliver");
        outcomes = batch.map(({ msg }) => ({ kind: "nak", delayMs: backoffDelay(msg.info.deliveryCount, Backoff.redelivery) }));
      }
      this.handled += batch.length;
      for (const [i, { msg }] of batch.entries()) {
        const outcome = outcomes[i] ?? ACK;
        if (outcome.kind === "ack") this.settle(msg).ack();
        else if (outcome.kind === "nak") this.settle(msg).nak(outcome.delayMs);
        else {
          await this.o.deadLetters.recordAndAck(msg, outcome.reason);
          this.settle(msg);
        }
      }
    }
  }

  private idle(): Promise<void> {
    return new Promise<void>((resolve) => {
      const prev = this.wake;
      this.wake = () => {
        this.wake = undefined;
        prev?.();
        resolve();
      };
    });
  }

  private settle(m: JsMsg): JsMsg {
    this.held.delete(m);
    this.wake?.();
    return m;
  }
}
