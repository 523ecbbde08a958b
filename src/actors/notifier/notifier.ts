import { createHmac } from "node:crypto";
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import { SCHEMAS, type AdoEvent, type WebhookBody } from "../../runtime/messages.js";
import { Backoff, retry } from "../../runtime/retry.js";
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
 * webhooks it reads nothing.
 */
export class Notifier extends Actor {
  private messages?: ConsumerMessages;
  private loop?: Promise<void>;
  private delivered = 0;
  private failed = 0;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: NotifierOptions,
  ) {
    super("notifier", instance, ctx);
  }

  protected async onStart(): Promise<void> {
    if (this.opts.webhooks.length === 0) return;
    const { topo } = this.ctx;
    const jsm = await this.js.jetstreamManager();
    const stream = topo.streams.events.name;
    const exists = await jsm.consumers.info(stream, consumers.notifier).catch(() => undefined);
    if (!exists) {
      await jsm.consumers
        .add(stream, {
          durable_name: consumers.notifier,
          filter_subject: topo.subjects.allRunEvents,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.New,
          // Longer than a delivery's every try: the server must not hand it to another replica meanwhile.
          ack_wait: ns(this.ackWaitMs()),
          max_ack_pending: 100,
        })
        .catch(async (err) => {
          // Another replica created it first.
          if (!(await jsm.consumers.info(stream, consumers.notifier).catch(() => undefined))) throw err;
        });
    }
    const consumer = await this.js.consumers.get(stream, consumers.notifier);
    this.messages = await consumer.consume({ max_messages: 16 });
    this.loop = (async () => {
      for await (const m of this.messages!) await this.onMessage(m);
    })().catch((err) => this.log.error({ err: errorMessage(err) }, "notifier stopped reading events"));
  }

  protected async onDrain(): Promise<void> {
    await this.messages?.close().catch(() => undefined);
    await this.loop;
  }

  override stats() {
    return { webhooks: this.opts.webhooks.length, delivered: this.delivered, failed: this.failed };
  }

  private ackWaitMs(): number {
    const timeout = this.opts.timeoutMs ?? 10_000;
    let total = 0;
    for (let n = 1; n < this.opts.attempts; n++) total += Backoff.webhook.maxMs * 1.2;
    return Math.min(30 * 60_000, this.opts.attempts * timeout + total + 30_000);
  }

  private async onMessage(m: JsMsg): Promise<void> {
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
      // One id per event and webhook: the receiver drops a redelivered one by it.
      const body = webhookBody(e, `${m.info.stream}.${m.seq}.${i}`);
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
