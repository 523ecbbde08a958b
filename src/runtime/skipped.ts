import { JetStreamApiCodes, JetStreamApiError, type ConsumerInfo, type JetStreamManager, type MsgRequest, type StoredMsg } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";

/**
 * Messages of a work-queue stream that its consumer will never deliver, and what the
 * scheduler's sweep does with them (`moveSkipped`).
 *
 * A consumer delivers only messages after the last one it delivered (its `delivered`
 * stream sequence). A restart of nats-server can leave messages at or below that point:
 *
 * - acked messages restored by a SIGKILLed server: the stream lost the delete of an
 *   acked message, the consumer's state did not lose the ack;
 * - NEW messages at reused sequences: a 2.9.10 server restarted on a store that lost
 *   its last writes (a full disk) comes back with streams shorter than their consumers'
 *   positions ("regressed"), and the next messages get sequences the consumers have
 *   passed. A run stalled on 8 merge requests in that state; the purge this replaces
 *   took them for acked ones and removed them.
 *
 * A message at or below its consumer's position that is not outstanding (the consumer
 * has nothing outstanding, or it sits at or below the ack floor) is one of the two. One
 * stored before the sweeper lost the server (`restoredBefore`) was acked before the
 * crash and is removed. Any other is MOVED: published again (same subject, payload and
 * headers, a fresh sequence the consumer will deliver) and then removed. Handling a
 * restored acked message again is safe by design (a finished attempt's work is not
 * claimed again, a merged task's request finds its merge done, a decided result is
 * dropped); losing a new one is not.
 *
 * A regressed stream is first padded: messages published and removed at once until its
 * last sequence reaches its consumers' positions, so what is published next is
 * delivered. A pad has the `Ado-Pad` header and no payload; it sits at a sequence its
 * consumer has passed, so none is delivered, and one left behind (a sweeper that died
 * in between) is removed by the next sweep.
 *
 * Consumers are never re-created: a re-created consumer under clients that hold its
 * earlier deliveries lost work in chaos runs (messages of attempts in flight at the
 * crash stayed in the stream, the new consumer past them with nothing outstanding).
 */

/** Header of a pad message. */
export const PAD_HEADER = "Ado-Pad";
/** Header a moved message carries: the sequence it had. */
export const MOVED_FROM_HEADER = "Ado-Moved-From";

/** Headers a copy must not carry: a dedupe id would make the server drop the copy as a duplicate of the original. */
const NOT_COPIED = new Set(["nats-msg-id", "nats-expected-stream", "nats-expected-last-msg-id", "nats-expected-last-sequence", "nats-expected-last-subject-sequence"]);

/** Bounds a look's reading of a stream by sequence (see moveSkipped). */
const MAX_SCANNED = 2_000;
/** Bounds one sweep's work per stream (the rest goes in the next look). */
const MAX_HANDLED_PER_SWEEP = 1_000;
/** A regressed stream further behind its consumers than this is not padded (logged instead). */
export const MAX_PADS = 100_000;
/** A message younger than this is left to the next look (a clustered stream removes an acked message a moment after the ack). */
const SETTLE_MS = 10_000;

export interface SkippedSweep {
  /** Messages published again (and their originals removed). */
  moved: number;
  /** Restored acked messages (and left-over pads) removed. */
  removed: number;
  /** Pads published to bring a regressed stream's last sequence up to its consumers'. */
  padded: number;
  /** Consumers left for a later look (messages outstanding). */
  deferred: number;
  /** Regressed further than MAX_PADS: not padded. */
  tooFarBehind: number;
  /**
   * Messages in the stream, after the look, beyond what its consumers will deliver or have
   * outstanding: skipped ones it could not judge yet. 0 in good order.
   */
  unaccounted: number;
}

export interface SkippedOptions {
  /** When the sweeper lost the server (less a margin for clocks): a skipped message stored before it was acked before the crash. */
  restoredBefore?: number;
  /** Now, in ms (tests). */
  now?: number;
}

export async function moveSkipped(jsm: JetStreamManager, stream: string, opts: SkippedOptions = {}): Promise<SkippedSweep> {
  const out: SkippedSweep = { moved: 0, removed: 0, padded: 0, deferred: 0, tooFarBehind: 0, unaccounted: 0 };
  let info = await jsm.streams.info(stream);
  const lastBefore = info.state.last_seq;
  const list: ConsumerInfo[] = [];
  for await (const c of jsm.consumers.list(stream)) list.push(c);
  if (list.length === 0) return out;

  // A regressed stream: pad it up to the furthest consumer first, or every message
  // published from now on lands where some consumer has passed.
  const ahead = list.reduce((a, c) => (c.delivered.stream_seq > a.delivered.stream_seq ? c : a));
  const gap = ahead.delivered.stream_seq - info.state.last_seq;
  if (gap > MAX_PADS) out.tooFarBehind++;
  else if (gap > 0) {
    out.padded = await pad(jsm, stream, padSubject(ahead, info.config.subjects), info.state.last_seq, ahead.delivered.stream_seq);
    info = await jsm.streams.info(stream);
  }
  if (info.state.messages === 0) return out;

  const now = opts.now ?? Date.now();
  const js = jsm.jetstream();
  /** Removes or moves a skipped message; false when it is to wait for a later look. */
  const handle = async (m: StoredMsg, c: ConsumerInfo): Promise<boolean> => {
    const stored = m.time.getTime();
    const restored = opts.restoredBefore !== undefined && stored < opts.restoredBefore;
    const floor = c.ack_floor.stream_seq;
    // Above the floor of a consumer with messages outstanding, only what it cannot have
    // delivered since the restart: at a sequence published after this look began (the
    // stream was regressed) or stored after the sweeper lost the server.
    if (c.num_ack_pending > 0 && m.seq > floor && !(m.seq > lastBefore || (opts.restoredBefore !== undefined && !restored))) return false;
    const isPad = m.header?.has(PAD_HEADER) ?? false;
    if (!isPad && !restored && now - stored < SETTLE_MS) return false;
    if (!isPad && !restored) {
      const h = natsHeaders();
      for (const [k, v] of m.header ?? []) if (!NOT_COPIED.has(k.toLowerCase())) for (const x of v) h.append(k, x);
      h.set(MOVED_FROM_HEADER, String(m.seq));
      await js.publish(m.subject, m.data, { headers: h });
      out.moved++;
    } else out.removed++;
    await deleteQuietly(jsm, stream, m.seq);
    return true;
  };
  const full = () => out.moved + out.removed >= MAX_HANDLED_PER_SWEEP;
  /** Consumers with something left for a later look. */
  const deferred = new Set<string>();

  for (const c of list) {
    const delivered = c.delivered.stream_seq;
    if (delivered < info.state.first_seq) continue;
    // Outstanding messages (delivered, not acked) sit below `delivered` too; only those at
    // or below the ack floor are certainly not outstanding. Above it, a consumer that was
    // past the stream's end (regressed) cannot have delivered, since the restart, anything
    // at or below where it stood (see handle). Any other waits for a look when the
    // consumer has nothing outstanding.
    const regressed = delivered > lastBefore;
    const upTo = c.num_ack_pending > 0 && !regressed ? c.ack_floor.stream_seq : delivered;
    let later = c.num_ack_pending > 0 && upTo < delivered;
    for await (const m of messagesAtOrBelow(jsm, stream, filtersOf(c), info.state.first_seq, upTo)) {
      if (full()) {
        later = true;
        break;
      }
      if (!(await handle(m, c))) later = true;
    }
    if (later) deferred.add(c.name);
  }
  out.deferred = deferred.size;

  // What is left that nobody will deliver or has outstanding (consumers read after the
  // stream, so a message published in between is counted on their side, not as left).
  // A look that changed nothing counts from what it read first (the consumers after the stream).
  out.unaccounted = out.padded + out.moved + out.removed === 0 ? unaccountedOf(info.state.messages, list) : await unaccounted(jsm, stream);
  if (out.unaccounted === 0 || full()) return out;
  // Still some: messages that the lookups by subject above do not find. Seen after a
  // full disk on 2.9.10: a result below its consumer's position that a lookup by its
  // own subject finds, and one by the consumer's wildcard filter does not (the consumer
  // never delivers it either). The stream is read by sequence, each message judged for
  // the consumer whose filter takes its subject: at or below where that consumer stands,
  // or above it while the consumer sees nothing pending there.
  const now2 = await jsm.streams.info(stream);
  const fresh: ConsumerInfo[] = [];
  for await (const c of jsm.consumers.list(stream)) fresh.push(c);
  const last = Math.min(now2.state.last_seq, now2.state.first_seq + MAX_SCANNED - 1);
  for (let seq = now2.state.first_seq; seq <= last && !full(); seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch((err: unknown) => {
      if (isNotFound(err)) return null;
      throw err;
    });
    if (!m) continue;
    const c = fresh.find((x) => filtersOf(x).some((f) => f === undefined || subjectMatches(f, m.subject)));
    if (!c) continue;
    const upTo = c.num_ack_pending > 0 ? c.ack_floor.stream_seq : c.delivered.stream_seq;
    const skipped = m.seq <= upTo || (m.seq > c.delivered.stream_seq && c.num_pending === 0 && c.num_ack_pending === 0);
    if (skipped && !(await handle(m, c))) deferred.add(c.name);
  }
  out.deferred = deferred.size;
  out.unaccounted = await unaccounted(jsm, stream);
  return out;
}

/**
 * Publishes pads on `subject` (removing each at once) until the stream's last sequence
 * reaches `target`; returns how many. Each is published expecting the stream's last
 * sequence, so it lands exactly after it and never past `target` (where its consumer
 * would deliver it): a message someone else published in between makes the publish
 * fail, and the pad goes after that one.
 */
async function pad(jsm: JetStreamManager, stream: string, subject: string, from: number, target: number): Promise<number> {
  const js = jsm.jetstream();
  let n = 0;
  for (let last = from; last < target; ) {
    const h = natsHeaders();
    h.set(PAD_HEADER, "1");
    try {
      const ack = await js.publish(subject, new Uint8Array(0), { headers: h, expect: { lastSequence: last } });
      n++;
      await deleteQuietly(jsm, stream, ack.seq);
      last = ack.seq;
    } catch (err) {
      if (!(err instanceof JetStreamApiError) || err.code !== JetStreamApiCodes.StreamWrongLastSequence) throw err;
      last = (await jsm.streams.info(stream)).state.last_seq;
    }
  }
  return n;
}

/** A literal subject the consumer's filter matches (its own subjects, so the pads sit where it has passed). */
function padSubject(c: ConsumerInfo, streamSubjects: string[] | undefined): string {
  const filter = filtersOf(c)[0] ?? streamSubjects?.[0] ?? c.stream_name;
  return filter
    .split(".")
    .map((t) => (t === "*" || t === ">" ? "_pad" : t))
    .join(".");
}

/** Messages in the stream beyond what its consumers will deliver or have outstanding. */
async function unaccounted(jsm: JetStreamManager, stream: string): Promise<number> {
  const messages = (await jsm.streams.info(stream)).state.messages;
  if (messages === 0) return 0;
  const list: ConsumerInfo[] = [];
  for await (const c of jsm.consumers.list(stream)) list.push(c);
  return unaccountedOf(messages, list);
}

function unaccountedOf(messages: number, consumers: readonly ConsumerInfo[]): number {
  return Math.max(0, messages - consumers.reduce((n, c) => n + c.num_pending + c.num_ack_pending, 0));
}

/** Whether a NATS subject filter (`*` one token, `>` the rest) takes `subject`. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const s = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return s.length > i;
    if (i >= s.length || (f[i] !== "*" && f[i] !== s[i])) return false;
  }
  return f.length === s.length;
}

function filtersOf(c: ConsumerInfo): Array<string | undefined> {
  const list = c.config.filter_subject ? [c.config.filter_subject] : (c.config.filter_subjects ?? []);
  // A consumer without a filter reads the whole stream.
  return list.length ? list : [undefined];
}

/** The stream's messages of one of `filters` with a sequence in [from, to], in order per filter. */
async function* messagesAtOrBelow(jsm: JetStreamManager, stream: string, filters: Array<string | undefined>, from: number, to: number): AsyncGenerator<StoredMsg> {
  for (const filter of filters) {
    for (let seq = from; seq <= to; ) {
      // STREAM.MSG.GET's next_by_subj (nats-server 2.9+): the client types it for direct gets only.
      const query = { seq, next_by_subj: filter ?? ">" } as unknown as MsgRequest;
      const m = await jsm.streams.getMessage(stream, query).catch((err: unknown) => {
        if (isNotFound(err)) return null;
        throw err;
      });
      if (!m || m.seq > to) break;
      yield m;
      seq = m.seq + 1;
    }
  }
}

async function deleteQuietly(jsm: JetStreamManager, stream: string, seq: number): Promise<void> {
  await jsm.streams.deleteMessage(stream, seq, false).catch((err: unknown) => {
    if (!isNotFound(err)) throw err;
  });
}

function isNotFound(err: unknown): boolean {
  return err instanceof Error && /not found/i.test(err.message);
}
