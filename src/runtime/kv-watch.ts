import { Bucket, type KV, type KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode, type SchemaRef } from "./codec.js";
import { errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";
import { Backoff, retry } from "./retry.js";

export interface KvWatchOptions<T> {
  kv: KV;
  /** What every value must decode as; one that does not is logged and skipped, never fatal. */
  schema: SchemaRef<T>;
  /** A new value of a key (also each current value when the watch starts or restarts). */
  onPut: (key: string, value: T, entry: KvEntry) => void;
  /** A key deleted or purged. */
  onDelete?: (key: string, entry: KvEntry) => void;
  /** Restart the watch after every reconnect of this connection (see start()). */
  nc: NatsConnection;
  log: Logger;
  /** What the values are, for logs ("control record"). */
  what: string;
}

/**
 * A typed watch of a whole KV bucket that survives reconnects. After a reconnect the
 * watch is started afresh rather than left to notice its lost consumer by missed
 * heartbeats (seconds, more under load): a fresh watch replays every key's current
 * value, so what changed while the connection was down is seen at once. Consumers must
 * therefore take a replayed value for what it is: the current state, not news (compare
 * revisions where that matters). A restart that fails (JetStream not answering yet
 * after a server restart, or a store still full) is tried again with backoff until it
 * succeeds, the watch is stopped, or a newer reconnect restarts it afresh: a watch
 * never stays closed.
 */
export class KvWatch<T> {
  private stopWatch?: () => void;
  private stopped = false;
  /** The restart still being tried, aborted by a newer reconnect or stop(). */
  private restarting?: AbortController;

  constructor(private readonly o: KvWatchOptions<T>) {}

  /** Starts watching; resolves once the watch is open (its replay then arrives in order). */
  async start(): Promise<void> {
    await this.watch();
    void (async () => {
      for await (const s of this.o.nc.status()) {
        if (this.stopped) break;
        if (s.type === "reconnect") this.restart();
      }
    })();
  }

  stop(): void {
    this.stopped = true;
    this.restarting?.abort();
    this.stopWatch?.();
  }

  private restart(): void {
    this.restarting?.abort();
    const ctl = new AbortController();
    this.restarting = ctl;
    this.stopWatch?.();
    this.stopWatch = undefined;
    const { log, what } = this.o;
    void retry(() => this.watch(ctl.signal), {
      attempts: Number.POSITIVE_INFINITY,
      backoff: Backoff.server,
      signal: ctl.signal,
      onRetry: (err, attempt, retryInMs) => log.warn({ err: errorMessage(err), what, attempt, retryInMs }, "KV watch restart failed; retrying"),
    }).catch(() => undefined);
  }

  /** Opens a watch; one that opens after `signal` aborted (superseded or stopped) is closed at once. */
  private async watch(signal?: AbortSignal): Promise<void> {
    const watch = await this.o.kv.watch();
    if (signal?.aborted || this.stopped) {
      watch.stop();
      return;
    }
    this.stopWatch = () => watch.stop();
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") {
          this.o.onDelete?.(e.key, e);
          continue;
        }
        let value: T;
        try {
          value = decode(this.o.schema, e.value);
        } catch (err) {
          this.o.log.warn({ key: e.key, err: errorMessage(err) }, `unreadable ${this.o.what} ignored`);
          continue;
        }
        this.o.onPut(e.key, value, e);
      }
    })();
  }
}

/**
 * Every key's current entry (deleted and purged keys left out), or an error; never a
 * listing that hangs or ends early. Instead of `kv.keys()`: a listing consumer ends when
 * the server's pending count says nothing is left, and on nats-server 2.9 that count can
 * be wrong (nats-server#3481; seen here reaching 0 one key short while another client
 * wrote), so `keys()` could end early, or never while the bucket is written more often
 * than every 5 s (its other way to end). Nor can a consumer's end be known from the
 * stream's last sequence: a key rewritten between that reading and the consumer's
 * creation comes after it. Here the keys are the subjects the stream holds a message
 * on (the stream's own per-subject index, one request, paged by the client), then a
 * direct get of each (`entriesOf`), which also drops deleted and purged keys.
 * `filter` limits it to the keys a KV key filter matches (`<run>.>`: one run's keys):
 * the listing is then of those keys only, and so are the gets.
 */
export async function currentEntries(kv: KV, filter = ">"): Promise<KvEntry[]> {
  return entriesOf(kv, await subjectKeys(kv, filter));
}

/** Every current key of a bucket (see currentEntries). */
export async function listKeys(kv: KV): Promise<string[]> {
  return (await currentEntries(kv)).map((e) => e.key);
}

/** The keys that have a message in the bucket's stream (deleted ones included: their marker). */
async function subjectKeys(kv: KV, filter = ">"): Promise<string[]> {
  if (!(kv instanceof Bucket)) throw new Error("listing a KV bucket needs a bucket opened with @nats-io/kv's Kvm");
  const info = await kv.jsm.streams.info(kv.stream, { subjects_filter: kv.fullKeyName(filter) });
  return Object.keys(info.state.subjects ?? {}).map((subject) => kv.decodeKey(subject.substring(kv.prefixLen)));
}

/**
 * The current entries of the given keys (missing, deleted and purged ones left out),
 * read by direct gets, at most `concurrency` at a time. For a caller that knows its
 * keys (the scheduler knows every task of a run from its graph): no listing consumer,
 * whose end rests on the server's pending count, which nats-server 2.9 can get wrong
 * for a filtered last-per-subject consumer after an unclean restart, ending the list
 * early without an error.
 */
export async function entriesOf(kv: KV, keys: readonly string[], concurrency = 32): Promise<KvEntry[]> {
  const out: KvEntry[] = [];
  let next = 0;
  const lane = async () => {
    while (next < keys.length) {
      const e = await kv.get(keys[next++]!);
      if (e && e.operation === "PUT") out.push(e);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, lane));
  return out;
}
