import { createHmac } from "node:crypto";
import { AckPolicy, DeliverPolicy, type ConsumerConfig, type ConsumerMessages, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import { SCHEMAS, type AdoEvent, type WebhookBody } from "../../runtime/messages.js";
import { Backoff, retry } from "../../runtime/retry.js";
import { markOf, rewrittenUnder, startAfter, type StreamMark } from "../../runtime/stream-resume.js";
import { consumers, ns } from "../../runtime/topology.js";

/** One configured webhook (config `notifications.webhooks`). */
export interface Webhook {
  url: string;
  secret?: string;
  events: readonly string[];
}

export interface NotifierOptions {
  webhooks: readonly Webhook[];
  /** Tries per delivery, the first included (config `notifications.attempts`). */
  attempts: number;
  /** Per try (default 10 s). */
  timeoutMs?: number;
}

/** The webhook body of an event, or undefined for events no webhook is told of. */
export function webhookBody(e: AdoEvent, delivery: string): WebhookBody | undefined {
  if (e.type === "run.completed") {
    return { type: e.type, delivery, runId: e.runId, at: e.at, status: e.status, ...(e.error ? { error: e.error } : {}), ...(e.integrationBranch ? { integrationBranch: e.integrationBranch } : {}), counts: e.counts };
  }
  if (e.type === "run.needs_attention") {
    return { type: e.type, delivery, runId: e.runId, at: e.at, status: "needs_attention", attention: e.tasks.map((t) => ({ taskId: t.taskId, hitlId: t.hitlId, message: t.message })) };
  }
  return undefined;
}

/** `Ado-Signature`: HMAC-SHA256 of the exact body bytes with the webhook's secret. */
export const signature = (secret: string, body: string) => `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;

/**
 * The notifier: posts run-level events (a run ended, a run waits for a person) to the
 * configured webhooks. Its replicas share one durable consumer on every run's run-level
 * events, created to start at new events (a new notifier does not post a history), so
 * each event is delivered by one replica; a message is acked once every webhook has had
 * it or has used up its tries (then it is dead-lettered, with the reason). Without
 * webhooks it reads nothing. After a server restart that rewrote the events stream
 * (see mend) the durable is re-created to start after the last event handled.
 */
export class Notifier extends Actor {
  private messages?: ConsumerMessages;
  private loop?: Promise<void>;
  private delivered = 0;
  private failed = 0;
  /** Times the durable was re-created after a rewritten stream (see mend). */
  private mended = 0;
  /** The event handled last: the one stored latest. */
  private mark?: StreamMark;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: NotifierOptions,
  ) {
    super("notifier", instance, ctx);
  }

  protected async onStart(): Promise<void> {
    if (this.opts.webhooks.length === 0) return;
    const jsm = await this.js.jetstreamManager();
    if (!(await this.mend(jsm))) {
      await jsm.consumers.add(this.ctx.topo.streams.events.name, this.durable({ deliver_policy: DeliverPolicy.New })).catch(async (err) => {
        // Another replica created it first.
        if (!(await this.durableInfo(jsm))) throw err;
      });
    }
    await this.follow();
    // A reconnect may be to a server restarted on a store that lost its last writes.
    const status = this.ctx.nc.status();
    void (async () => {
      for await (const s of status) if (s.type === "reconnect" && this.isRunning) void this.mendAfterReconnect();
    })().catch(() => undefined);
  }

  /** The durable's config: from new events on, or from a time (see mend). */
  private durable(start: Pick<ConsumerConfig, "deliver_policy" | "opt_start_time">): Partial<ConsumerConfig> {
    return {
      durable_name: consumers.notifier,
      filter_subject: this.ctx.topo.subjects.allRunEvents,
      ack_policy: AckPolicy.Explicit,
      ...start,
      // Longer than a delivery's every try: the server must not hand it to another replica meanwhile.
      ack_wait: ns(this.ackWaitMs()),
      max_ack_pending: 100,
    };
  }

  private durableInfo(jsm: JetStreamManager) {
    return jsm.consumers.info(this.ctx.topo.streams.events.name, consumers.notifier).catch(() => undefined);
  }

  /** (Re)starts reading from the durable. */
  private async follow(): Promise<void> {
    await this.messages?.close().catch(() => undefined);
    await this.loop;
    const consumer = await this.js.consumers.get(this.ctx.topo.streams.events.name, consumers.notifier);
    const messages = (this.messages = await consumer.consume({ max_messages: 16 }));
    this.loop = (async () => {
      for await (const m of messages) await this.onMessage(m);
    })().catch((err) => this.log.error({ err: errorMessage(err) }, "notifier stopped reading events"));
  }

  /**
   * A server restarted on a store that lost its last writes gives new events sequences
   * the durable has passed: it would never deliver them (see src/runtime/stream-resume.ts).
   * Told by the event this replica handled last (its sequence and stored time) or, with
   * none, by the durable having delivered past the stream's end; then the durable is
   * re-created to deliver every event stored after that one. Every replica may do it:
   * one whose durable already starts there (or later) leaves it. False when there is no
   * durable yet.
   */
  private async mend(jsm: JetStreamManager): Promise<boolean> {
    const info = await this.durableInfo(jsm);
    if (!info) return false;
    const stream = this.ctx.topo.streams.events.name;
    let mark = this.mark;
    if (!mark || !(await rewrittenUnder(jsm, stream, mark))) {
      const { last_seq, last_ts } = (await jsm.streams.info(stream)).state;
      if (info.delivered.stream_seq <= last_seq) return true;
      // Everything the stream still holds was delivered: start after its last event.
      mark = { seq: last_seq, ms: last_seq > 0 ? Date.parse(last_ts) : 0 };
    }
    const start = startAfter(mark);
    if (info.config.opt_start_time && Date.parse(info.config.opt_start_time) >= Date.parse(start.opt_start_time)) return true;
    this.log.warn({ stream, seq: mark.seq, from: start.opt_start_time }, "the events stream was rewritten under the notifier (a server restarted on a store that lost its last writes); its durable is re-created to deliver every event stored after the last one handled");
    await jsm.consumers.delete(stream, consumers.notifier).catch(() => undefined);
    await jsm.consumers.add(stream, this.durable(start)).catch(async (err) => {
      // Another replica re-created it at the same time.
      if (!(await this.durableInfo(jsm))) throw err;
    });
    this.mended++;
    return true;
  }

  private async mendAfterReconnect(): Promise<void> {
    try {
      const before = this.mended;
      await retry(async () => this.mend(await this.js.jetstreamManager()), { attempts: 8, backoff: Backoff.server });
      if (this.mended > before && this.isRunning) await this.follow();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, "could not check the events stream after a reconnect");
    }
  }

  protected async onDrain(): Promise<void> {
    await this.messages?.close().catch(() => undefined);
    await this.loop;
  }

  override stats() {
    return { webhooks: this.opts.webhooks.length, delivered: this.delivered, failed: this.failed, mended: this.mended };
  }

  private ackWaitMs(): number {
    const timeout = this.opts.timeoutMs ?? 10_000;
    let total = 0;
    for (let n = 1; n < this.opts.attempts; n++) total += Backoff.webhook.maxMs * 1.2;
    return Math.min(30 * 60_000, this.opts.attempts * timeout + total + 30_000);
  }

  private async onMessage(m: JsMsg): Promise<void> {
    const mark = markOf(m);
    if (!this.mark || mark.ms >= this.mark.ms) this.mark = mark;
    let e: AdoEvent;
    try {
      e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
    } catch (err) {
      await this.deadLetters.recordAndAck(m, `unreadable event: ${errorMessage(err)}`);
      return;
    }
    const failures: string[] = [];
    for (const [i, hook] of this.opts.webhooks.entries()) {
      if (!hook.events.includes(e.type)) continue;
      // One id per event and webhook: the receiver drops a redelivered one by it. The
      // stored time keeps it unique when a server restart gives a new event an old sequence.
      const body = webhookBody(e, `${m.info.stream}.${m.seq}.${mark.ms}.${i}`);
      if (!body) continue;
      try {
        await this.post(hook, body);
        this.delivered++;
      } catch (err) {
        this.failed++;
        failures.push(`${hook.url}: ${errorMessage(err)}`);
      }
    }
    if (failures.length) {
      this.log.warn({ runId: e.runId, type: e.type, failures }, "webhook not delivered after every try");
      await this.deadLetters.recordAndAck(m, `webhook not delivered after ${this.opts.attempts} tries: ${failures.join("; ")}`);
    } else m.ack();
  }

  private async post(hook: Webhook, body: WebhookBody): Promise<void> {
    const text = JSON.stringify(body);
    const headers: Record<string, string> = { "content-type": "application/json", "user-agent": "ado-notifier", "ado-event": body.type, "ado-delivery": body.delivery };
    if (hook.secret) headers["ado-signature"] = signature(hook.secret, text);
    await retry(
      async () => {
        const res = await fetch(hook.url, { method: "POST", headers, body: text, signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10_000) });
        await res.body?.cancel().catch(() => undefined);
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
      },
      {
        attempts: this.opts.attempts,
        backoff: Backoff.webhook,
        onRetry: (err, attempt, delayMs) => this.log.info({ url: hook.url, attempt, delayMs, err: errorMessage(err) }, "webhook failed; trying again"),
      },
    );
  }
}
