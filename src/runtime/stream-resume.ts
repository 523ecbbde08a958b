import { DeliverPolicy, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";

/**
 * Where a follower of a limits stream (the events) stands: the sequence of the last
 * message it handled and the time the server stored it (milliseconds since the epoch).
 *
 * A nats-server 2.9 restarted on a store that lost its last writes (a full disk) comes
 * back with the stream shorter, and the next messages reuse the lost ones' sequences:
 * a follower that resumes after its last sequence misses them. The stored time tells
 * the two apart: the stream still holds, at the mark's sequence, a message stored at the
 * mark's time, or it was rewritten, and then the follower resumes by time: every message
 * stored after the mark's (which every message published after the restart is).
 */
export interface StreamMark {
  seq: number;
  ms: number;
}

/** The mark of a delivered message (its time read from the delivery, to the millisecond). */
export const markOf = (m: Pick<JsMsg, "seq" | "info">): StreamMark => ({ seq: m.seq, ms: Math.floor(m.info.timestampNanos / 1e6) });

/**
 * Whether `stream` was rewritten under the mark: it holds at the mark's sequence a
 * message stored at another time, or none while its last sequence is below the mark's.
 * (One gone below the stream's end aged out: nothing was rewritten.) The delivery's time
 * is a float of nanoseconds and may round up a millisecond: a difference of 1 ms is the
 * same message; a message stored again at that sequence came after a restart.
 */
export async function rewrittenUnder(jsm: JetStreamManager, stream: string, mark: StreamMark): Promise<boolean> {
  if (mark.seq <= 0) return false;
  const m = await jsm.streams.getMessage(stream, { seq: mark.seq });
  if (m) return Math.abs(m.time.getTime() - mark.ms) > 1;
  return (await jsm.streams.info(stream)).state.last_seq < mark.seq;
}

/**
 * The start of a consumer that resumes after a rewrite: every message stored after the
 * mark's. `by_start_time` delivers messages stored at or after it, so it starts 2 ms on
 * (the mark's time may be a millisecond short, see rewrittenUnder): none of what the
 * follower handled comes again; a restart takes far longer than that.
 */
export const startAfter = (mark: StreamMark) => ({ deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(mark.ms + 2).toISOString() }) as const;

/**
 * The notices of a consumer's status stream (nats.js `ConsumerMessages.status()`) that
 * say it stalled: its consumer is gone or was re-created, or its heartbeats stopped. A
 * follower that must not wait for nats.js to recover it (which may take `expires`
 * after a failed check) closes it and starts one of its own on from the last message read.
 */
export const STALL_NOTICES: ReadonlySet<string> = new Set(["heartbeats_missed", "reset", "consumer_not_found", "consumer_deleted", "stream_not_found", "no_responders", "ordered_consumer_recreated"]);
