import type { KV, KvEntry } from "@nats-io/kv";
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
 * Every key's current entry (deleted and purged keys left out), read in one pass, or a
 * clear error after `timeoutMs`. Instead of `kv.keys()` followed by a `get` per key:
 * `keys()` ends only when a delivered message says nothing is pending after it, or
 * after 5 s without a message; on nats-server 2.9 the pending count of a last-per-
 * subject consumer can stay above zero when messages were removed (nats-server#3481),
 * and a bucket written more often than every 5 s (the scaler's state, heartbeats) then
 * never goes quiet, so the listing never ends. Here the end is known before reading:
 * the stream's last sequence when the listing starts. The consumer delivers in
 * sequence order, so once an entry at or past it arrives, every key that existed at
 * the start has been seen (a key rewritten meanwhile arrives with its newer value).
 */
export async function currentEntries(kv: KV, opts: { timeoutMs?: number; headersOnly?: boolean } = {}): Promise<KvEntry[]> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const status = await kv.status();
  const last = status.streamInfo.state.last_seq;
  if (status.values === 0 || last === 0) return [];
  const entries = new Map<string, KvEntry>();
  const watch = await kv.watch({ headers_only: opts.headersOnly ?? false });
  let timedOut = false;
  let complete = false;
  const timer = setTimeout(() => {
    timedOut = true;
    watch.stop();
  }, timeoutMs);
  try {
    for await (const e of watch) {
      if (e.operation === "PUT") entries.set(e.key, e);
      else entries.delete(e.key);
      if (e.revision >= last || e.delta === 0) {
        complete = true;
        break;
      }
    }
  } finally {
    clearTimeout(timer);
    watch.stop();
  }
  if (!complete) {
    throw new Error(
      timedOut
        ? `listing the keys of bucket ${status.bucket} did not finish in ${timeoutMs} ms (${entries.size} read): the NATS server is overloaded or its store is failing`
        : `listing the keys of bucket ${status.bucket} stopped early (${entries.size} read): the connection to the NATS server closed`,
    );
  }
  return [...entries.values()];
}

/** Every current key of a bucket (see currentEntries: a listing that ends). */
export async function listKeys(kv: KV, opts: { timeoutMs?: number } = {}): Promise<string[]> {
  return (await currentEntries(kv, { ...opts, headersOnly: true })).map((e) => e.key);
}
