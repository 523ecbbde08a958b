import { DeliverPolicy, type ConsumerMessages, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { sleep } from "./clock.js";
import { errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";
import { Backoff, backoffDelay } from "./retry.js";
import { markOf, rewrittenUnder, STALL_NOTICES, startAfter, type StreamMark } from "./stream-resume.js";

/** One consumer's messages; `byTime`: it follows on by time after a rewrite. */
interface Pass {
  messages: ConsumerMessages;
  byTime: boolean;
}

export interface FollowOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  stream: string;
  filter: string;
  /** The sequence of the last message already handled: following starts after it (0, the default: from the first). */
  after?: number;
  /**
   * Handles one message: each once, in stream order, none after close(). It may call
   * close() to stop. `rewritten`: the stream was rewritten under the follower (a server
   * restarted on a store that lost its last writes) and this message comes after that:
   * its sequence may be at or below that of one handled before. A throw is logged, and
   * the message counts as handled.
   */
  onMessage: (m: JsMsg, rewritten: boolean) => void | Promise<void>;
  log?: Logger;
  /** The pull requests' `expires` (default 10 s): a heartbeat every half of it, two missed say the consumer is gone. */
  expiresMs?: number;
}

/**
 * Follows a subject of a limits stream (the events) with ordered consumers, from a
 * sequence on, until close(), and goes on promptly after a server restart.
 *
 * nats.js recovers a lost ordered consumer by itself, but after a failed check of it (a
 * server restarted, JetStream not ready yet) it waits `expires` (30 s by default) before
 * it looks again (the recorder saw nothing for more than 40 s after a plain restart),
 * and the dashboard's feeds left to it got nothing within 20 s of one although it had
 * re-created their consumers (test/e2e/follow-restart.test.ts). This one does not wait:
 * on a reconnect of the connection, or a notice that the consumer stalled
 * (STALL_NOTICES), it closes its consumer and creates one of its own on from the last
 * message handled, retried with backoff while the server is down. A stream found
 * rewritten under the last message handled is followed on by time after it
 * (stream-resume.ts). The first consumer is created in start(), which throws when it
 * cannot be; after that it is retried for as long as the follower is open and its
 * connection not closed.
 */
export class StreamFollower {
  /** Resolves when following stopped: close(), the connection closed for good, or a failed start(). */
  readonly done: Promise<void>;
  private finish!: () => void;
  private current?: Pass;
  private closed = false;
  /** The last message handled (its time unknown for the `after` it started from). */
  private mark: { seq: number; ms?: number };
  private readonly halt = new AbortController();
  private status?: AsyncIterable<unknown> & { stop?: () => void };

  constructor(private readonly opts: FollowOptions) {
    this.mark = { seq: opts.after ?? 0 };
    this.done = new Promise((resolve) => (this.finish = resolve));
  }

  /** The sequence of the last message handled (or the `after` it started from). */
  get last(): number {
    return this.mark.seq;
  }

  /** Creates the first consumer (throws when it cannot) and follows in the background. */
  async start(): Promise<void> {
    let first: Pass | undefined;
    try {
      first = await this.open(this.bySequence(), false);
    } catch (err) {
      this.finish();
      throw err;
    }
    if (!first) return this.finish();
    // A reconnect may be to a server that restarted: its consumers are gone, and nats.js may wait long to notice.
    const status = (this.status = this.opts.nc.status() as AsyncIterable<{ type: string }> & { stop?: () => void });
    void (async () => {
      for await (const s of status) if (s.type === "reconnect") this.followAgain("reconnect");
    })().catch(() => undefined);
    void this.run(first)
      .catch((err) => this.opts.log?.warn({ filter: this.opts.filter, err: errorMessage(err) }, "stopped following the stream"))
      .finally(() => {
        this.status?.stop?.();
        this.finish();
      });
  }

  /** Stops following: no message is handled after it (but the one being handled). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.halt.abort();
    this.status?.stop?.();
    const c = this.current;
    this.current = undefined;
    void c?.messages.close().catch(() => undefined);
  }

  private bySequence() {
    return this.mark.seq > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.mark.seq + 1 } : { deliver_policy: DeliverPolicy.All };
  }

  /** A consumer and its messages from `start` (undefined once closed). */
  private async open(start: Record<string, unknown>, byTime: boolean): Promise<Pass | undefined> {
    const { js, stream, filter } = this.opts;
    const consumer = await js.consumers.get(stream, { filter_subjects: filter, ...start });
    if (this.closed) return undefined;
    const messages = await consumer.consume({ expires: this.opts.expiresMs ?? 10_000 });
    if (this.closed) {
      void messages.close().catch(() => undefined);
      return undefined;
    }
    const pass = (this.current = { messages, byTime });
    void (async () => {
      for await (const n of messages.status()) if (STALL_NOTICES.has(n.type) && this.current === pass) this.followAgain(n.type);
    })().catch(() => undefined);
    return pass;
  }

  /** Ends the current consumer: the loop follows on with one of its own. */
  private followAgain(why: string): void {
    const c = this.current;
    if (!c || this.closed) return;
    this.opts.log?.debug({ filter: this.opts.filter, why, seq: this.mark.seq }, "following the stream again after the last message handled");
    this.current = undefined;
    void c.messages.close().catch(() => undefined);
  }

  private async run(first: Pass): Promise<void> {
    let pass: Pass | undefined = first;
    /** Consumers in a row that ended within seconds: the next waits a little (a server that keeps failing is not hammered). */
    let quick = 0;
    while (!this.closed && !this.opts.nc.isClosed()) {
      const began = Date.now();
      pass ??= await this.reopen();
      if (!pass) break;
      try {
        await this.drain(pass);
      } catch (err) {
        if (!this.closed) this.opts.log?.debug({ filter: this.opts.filter, err: errorMessage(err) }, "the stream's consumer failed; following on");
      } finally {
        if (this.current === pass) this.current = undefined;
        void pass.messages.close().catch(() => undefined);
      }
      pass = undefined;
      quick = Date.now() - began < 5_000 ? quick + 1 : 0;
      if (quick > 1) await sleep(backoffDelay(Math.min(quick - 1, 6), Backoff.server), this.halt.signal);
    }
  }

  private async drain({ messages, byTime }: Pass): Promise<void> {
    // After a rewrite the first message may come at or below the last sequence handled; after it, in order.
    let floor = byTime ? 0 : this.mark.seq;
    for await (const m of messages) {
      if (this.closed) return;
      if (m.seq <= floor) continue;
      floor = m.seq;
      this.mark = markOf(m);
      try {
        await this.opts.onMessage(m, byTime);
      } catch (err) {
        this.opts.log?.warn({ filter: this.opts.filter, seq: m.seq, err: errorMessage(err) }, "a message's handler failed; it is skipped");
      }
      if (this.closed) return;
    }
  }

  /** The next consumer, on from the last message handled: retried with backoff while the server is away. */
  private async reopen(): Promise<Pass | undefined> {
    for (let attempt = 1; !this.closed && !this.opts.nc.isClosed(); attempt++) {
      try {
        const mark = this.mark;
        if (mark.seq > 0 && mark.ms !== undefined) {
          const at: StreamMark = { seq: mark.seq, ms: mark.ms };
          if (await rewrittenUnder(await this.opts.js.jetstreamManager(false), this.opts.stream, at)) {
            this.opts.log?.warn({ filter: this.opts.filter, seq: at.seq }, "the stream was rewritten under its follower (a server restarted on a store that lost its last writes): following every message stored after the last one handled");
            return await this.open(startAfter(at), true);
          }
        }
        return await this.open(this.bySequence(), false);
      } catch (err) {
        this.opts.log?.debug({ filter: this.opts.filter, attempt, err: errorMessage(err) }, "cannot follow the stream again yet (the server may be restarting)");
        await sleep(backoffDelay(Math.min(attempt, 6), Backoff.server), this.halt.signal);
      }
    }
    return undefined;
  }
}
