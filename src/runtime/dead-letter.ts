import { createHash } from "node:crypto";
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import { encode } from "./codec.js";
import { errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";
import { SCHEMAS, type DeadLetter } from "./messages.js";
import type { Topology } from "./topology.js";

/** Room left in a dead-letter record for its fields and headers besides the payload. */
const ENVELOPE_BYTES = 8 * 1024;
/** A reason longer than this is cut (an error's text can repeat what it read). */
const REASON_LIMIT = 4 * 1024;

/**
 * Where an actor puts what it cannot process: `<p>.dlq.<actor>`, one record per message
 * with the reason, the original headers and payload, and only then is the original
 * removed. Nothing is dropped: a payload too large to fit beside the reason under the
 * server's max_payload is kept truncated, with its full size and SHA-256, and the
 * original still goes (kept, it would be redelivered and rejected forever).
 */
export class DeadLetters {
  count = 0;

  constructor(
    private readonly o: { js: JetStreamClient; nc: NatsConnection; topo: Topology; actor: string; log: Logger },
  ) {}

  /** Stores a record of a message (the caller removes the original after this resolves). */
  async record(subject: string, payload: Uint8Array, reason: string, headers?: MsgHdrs): Promise<void> {
    const kept: Record<string, string> = {};
    if (headers) for (const [k, v] of headers) kept[k] = v.join(", ").slice(0, 1024);
    const maxPayload = this.o.nc.info?.max_payload ?? 1024 * 1024;
    const room = Math.max(0, maxPayload - ENVELOPE_BYTES);
    const letter: DeadLetter = {
      type: "dead.letter",
      actor: this.o.actor,
      subject,
      reason: reason.length > REASON_LIMIT ? `${reason.slice(0, REASON_LIMIT)} [...]` : reason,
      payload: payload.length > room ? payload.subarray(0, room) : payload,
      headers: kept,
      at: new Date().toISOString(),
      ...(payload.length > room ? { truncated: true, size: payload.length, sha256: createHash("sha256").update(payload).digest("hex") } : {}),
    };
    const { data, headers: h } = encode(SCHEMAS.DeadLetter, letter);
    await this.o.js.publish(this.o.topo.subjects.deadLetter(this.o.actor), data, { headers: h });
    this.count++;
    this.o.log.warn({ subject, reason: letter.reason, ...(letter.truncated ? { size: payload.length } : {}) }, "message dead-lettered");
  }

  /**
   * Records a JetStream message, then acks it (acked, not terminated: on server 2.9 a
   * terminated message stays in a work-queue stream forever). When the dead-letter stream
   * cannot be written, the message is kept for a later try (nak).
   * @returns whether it was dead-lettered.
   */
  async recordAndAck(msg: JsMsg, reason: string): Promise<boolean> {
    try {
      await this.record(msg.subject, msg.data, reason, msg.headers);
      await msg.ackAck();
      return true;
    } catch (err) {
      this.o.log.error({ subject: msg.subject, err: errorMessage(err) }, "dead-letter publish failed; message kept for redelivery");
      msg.nak(1_000);
      return false;
    }
  }
}
