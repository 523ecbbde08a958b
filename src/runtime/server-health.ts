import { JetStreamApiError, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { errors, type NatsConnection } from "@nats-io/transport-node";
import { systemClock, type Clock } from "./clock.js";
import { connectNats } from "./connection.js";
import { errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";
import type { NatsAuth } from "./nats-auth.js";

/**
 * What a client can tell about the NATS server from outside, so that a person hears
 * about a server that cannot store anything instead of watching a run that no longer
 * moves. nats-server 2.9.10 (Debian 12's) deadlocks in its file store when a write
 * fails with "no space left on device": core NATS still answers pings, but no JetStream
 * API request is answered again, even after space is freed, until the server is
 * restarted (fixed in 2.9.12, nats-io/nats-server#3832). Newer servers disable
 * JetStream instead. Both look the same from here: pings answer, JetStream does not.
 *
 * `assessServer` is the pure judgement (state + observation -> state);
 * `ServerHealthMonitor` probes on a timer and feeds it; `describeServerHealth` says it
 * to a person.
 */

/** How the server looks from here. */
export const ServerCondition = {
  ok: "ok",
  /** No answer to pings for a while: down, restarting, or the network is cut. */
  unreachable: "unreachable",
  /** Pings answer, the JetStream API does not (deadlocked file store, JetStream disabled). */
  unresponsive: "jetstream_unresponsive",
  /** Writes fail for lack of storage, or the account's storage limit is reached. */
  storeFull: "store_full",
} as const;
export type ServerCondition = (typeof ServerCondition)[keyof typeof ServerCondition];

/** One probe: a core NATS round trip, then one JetStream API request (account info). */
export interface ProbeResult {
  startedAt: number;
  at: number;
  /** The server answered a PING. */
  ping: boolean;
  jetstream:
    | { answered: true; storageBytes: number; maxStorageBytes: number }
    | { answered: false; timedOut: boolean; error: string };
}

export type ServerObservation = { type: "probe"; result: ProbeResult } | { type: "store_error"; at: number; error: string };

export interface ServerHealth {
  condition: ServerCondition;
  /** When the current condition began (ms since the epoch). */
  since: number;
  /** What was seen, for a person. */
  detail: string;
  /** Since when pings have failed (while they do). */
  unreachableSince?: number;
  /** Since when JetStream API requests have gone unanswered while pings answered. */
  unansweredSince?: number;
  /** The last write that failed for lack of storage. */
  storeError?: { at: number; error: string };
}

export interface AssessOptions {
  /** JetStream unanswered this long (pings answering) is unresponsive. A loaded server can be slow; a deadlocked one never answers. */
  unresponsiveAfterMs: number;
  /** Pings unanswered this long is unreachable (a restart takes a few seconds). */
  unreachableAfterMs: number;
  /** A failed write counts as a full store for this long after it was seen. */
  storeErrorHoldMs: number;
  /** Storage used at or beyond this share of the account's limit is full. */
  fullRatio: number;
}

export const DEFAULT_ASSESS: AssessOptions = {
  unresponsiveAfterMs: 8_000,
  unreachableAfterMs: 10_000,
  storeErrorHoldMs: 30_000,
  fullRatio: 0.98,
};

export const initialServerHealth = (now: number): ServerHealth => ({ condition: ServerCondition.ok, since: now, detail: "ok" });

/**
 * The next judgement of the server from the previous one and an observation. Pure.
 * Unreachable wins over everything (nothing else can be seen then), and a shorter
 * outage keeps the last judgement; an unresponsive JetStream wins over a full store (it
 * is the state that needs a restart).
 */
export function assessServer(prev: ServerHealth, obs: ServerObservation, opts: AssessOptions = DEFAULT_ASSESS): ServerHealth {
  const next: ServerHealth = { ...prev };
  let now: number;
  if (obs.type === "store_error") {
    now = obs.at;
    next.storeError = { at: obs.at, error: obs.error };
  } else {
    const r = obs.result;
    now = r.at;
    if (!r.ping) {
      next.unreachableSince ??= r.startedAt;
      // Nothing can be told about JetStream without the server.
      delete next.unansweredSince;
    } else {
      delete next.unreachableSince;
      if (r.jetstream.answered) {
        delete next.unansweredSince;
        const { storageBytes, maxStorageBytes } = r.jetstream;
        if (maxStorageBytes > 0 && storageBytes >= maxStorageBytes * opts.fullRatio) {
          next.storeError = { at: now, error: `the account's JetStream storage is used up (${mb(storageBytes)} of ${mb(maxStorageBytes)})` };
        } else if (next.storeError && now - next.storeError.at >= opts.storeErrorHoldMs) {
          delete next.storeError;
        }
      } else {
        next.unansweredSince ??= r.startedAt;
      }
    }
  }

  let condition: ServerCondition = ServerCondition.ok;
  let detail = "ok";
  if (next.unreachableSince !== undefined) {
    if (now - next.unreachableSince >= opts.unreachableAfterMs) {
      condition = ServerCondition.unreachable;
      detail = `no answer to pings for ${secs(now - next.unreachableSince)}`;
    } else {
      // A short outage (a restart) tells nothing new: the last judgement stands.
      condition = prev.condition;
      detail = prev.detail;
    }
  } else if (next.unansweredSince !== undefined && now - next.unansweredSince >= opts.unresponsiveAfterMs) {
    condition = ServerCondition.unresponsive;
    // A timeout says nothing the sentence does not; another error (JetStream disabled) does.
    const last = obs.type === "probe" && !obs.result.jetstream.answered && !obs.result.jetstream.timedOut ? obs.result.jetstream.error : undefined;
    detail =
      `its JetStream API has not answered for ${secs(now - next.unansweredSince)} while the server answers pings` +
      (last ? ` (${last})` : "") +
      (next.storeError ? `; a write failed before: ${next.storeError.error}` : "");
  } else if (next.storeError && now - next.storeError.at < opts.storeErrorHoldMs) {
    condition = ServerCondition.storeFull;
    detail = next.storeError.error;
  }
  // A condition that holds keeps its start; only its detail (the elapsed time) moves.
  next.since = condition === prev.condition ? prev.since : now;
  next.condition = condition;
  next.detail = detail;
  return next;
}

/**
 * Whether an error from a JetStream write says the store has no room: the server's
 * codes for exhausted resources, or the operating system's ENOSPC text, which the
 * server passes on inside an API error's description and has no code of its own.
 */
export function isStoreFullError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof JetStreamApiError && STORE_FULL_CODES.has(e.code)) return true;
    if (/no space left on device/i.test(e.message)) return true;
  }
  return false;
}

/** nats-server's API error codes (server/errors.json) for storage that ran out. */
const STORE_FULL_CODES = new Set([
  10002, // JSAccountResourcesExceededErr: resource limits exceeded for account
  10023, // JSInsufficientResourcesErr: insufficient resources (the server's max_file_store)
  10047, // JSStorageResourcesExceededErr: insufficient storage resources available
]);

/** Where the store is and who runs the server, so the advice names what to do. */
export interface ServerContext {
  /** The JetStream store directory, when known (an embedded server, `ado up`). */
  storeDir?: string;
  /** The server is the one this command started (it ends with the command). */
  embedded?: boolean;
  /** The run being followed, for the command that resumes it. */
  runId?: string;
  url?: string;
}

/** One line for a person: what is wrong with the server and what to do; undefined when ok. */
export function describeServerHealth(h: ServerHealth, ctx: ServerContext = {}): string | undefined {
  if (h.condition === ServerCondition.ok) return undefined;
  const where = ctx.storeDir ?? "the server's JetStream store (its store_dir)";
  const fix = ctx.embedded
    ? `free space on ${where}; this command's embedded server cannot recover by itself: stop it (Ctrl-C, twice) and go on with \`ado runs resume${ctx.runId ? ` ${ctx.runId}` : ""}\``
    : `free space on ${where} and restart nats-server; ado resumes the run`;
  const server = `nats-server${ctx.url ? ` at ${ctx.url}` : ""}`;
  switch (h.condition) {
    case ServerCondition.unreachable:
      return `cannot reach ${server}: ${h.detail}; ado reconnects and goes on when it is back`;
    case ServerCondition.unresponsive:
      return `${server} is not answering JetStream requests, its store is likely full (${h.detail}): ${fix}`;
    case ServerCondition.storeFull:
      return `${server}'s JetStream store is full (${h.detail}): ${fix}`;
  }
}

/**
 * Where the server is. The monitor opens connections of its own: on nats-server 2.9 a
 * JetStream request (or publish) that hangs in the server also stops the server from
 * reading anything else on that connection, PINGs included. So the pings go on a
 * connection that never asks JetStream anything, and the JetStream probe on another:
 * the caller's own connections, jammed by their own requests, would say nothing true.
 */
export interface ServerEndpoint {
  servers: string | string[];
  /** Base of the connections' names (`<name>-ping`, `<name>-js`). */
  name: string;
  logger: Logger;
  /** Credentials; absent: from the environment, as connectNats does. */
  auth?: NatsAuth;
}

export interface MonitorOptions {
  /** Between the end of one probe and the start of the next. Default 3 s. */
  intervalMs?: number;
  /** How long a ping or a JetStream request may take. Default 3 s. */
  timeoutMs?: number;
  assess?: Partial<AssessOptions>;
  clock?: Clock;
  /** Called after every observation with the judgement it led to. */
  onUpdate?: (h: ServerHealth) => void;
}

/**
 * Probes the server on a timer (a PING and a JetStream account-info request, both
 * bounded, each on its own connection) and keeps the latest judgement. Callers that see
 * a write fail for lack of storage pass the error to `noteError`. Never throws;
 * `stop()` is idempotent.
 */
export class ServerHealthMonitor {
  private health: ServerHealth;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private pingConn?: Promise<NatsConnection | undefined>;
  private jsConn?: Promise<NatsConnection | undefined>;
  private jsm?: JetStreamManager;
  private readonly o: Required<Omit<MonitorOptions, "onUpdate" | "assess">> & Pick<MonitorOptions, "onUpdate"> & { assess: AssessOptions };

  constructor(
    private readonly endpoint: ServerEndpoint,
    opts: MonitorOptions = {},
  ) {
    this.o = {
      intervalMs: opts.intervalMs ?? 3_000,
      timeoutMs: opts.timeoutMs ?? 3_000,
      clock: opts.clock ?? systemClock,
      onUpdate: opts.onUpdate,
      assess: { ...DEFAULT_ASSESS, ...opts.assess },
    };
    this.health = initialServerHealth(this.o.clock.now());
  }

  /** The latest judgement. */
  get current(): ServerHealth {
    return this.health;
  }

  /** Starts probing (the first probe at once). */
  start(): this {
    const loop = async () => {
      if (this.stopped) return;
      await this.probe();
      if (this.stopped) return;
      this.timer = setTimeout(() => void loop(), this.o.intervalMs);
      this.timer.unref();
    };
    void loop();
    return this;
  }

  /** Stops probing and closes the monitor's connections. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    // close(), not drain(): a drain waits for the server, which may never answer.
    await Promise.all([this.pingConn, this.jsConn].map(async (c) => (await c)?.close().catch(() => undefined)));
  }

  /** Takes note of an error from a JetStream write; returns whether it said the store is full. */
  noteError(err: unknown): boolean {
    if (!isStoreFullError(err)) return false;
    this.update({ type: "store_error", at: this.o.clock.now(), error: errorMessage(err) });
    return true;
  }

  /** Probes once and returns the judgement. */
  async probe(): Promise<ServerHealth> {
    const startedAt = this.o.clock.now();
    this.pingConn ??= this.connect("ping");
    const ping = await pingOnce(await this.pingConn, this.o.timeoutMs);
    let jetstream: ProbeResult["jetstream"] = { answered: false, timedOut: false, error: "server not answering" };
    if (ping) {
      this.jsConn ??= this.connect("js");
      const nc = await this.jsConn;
      if (nc) {
        // checkAPI off: creating it must not itself wait on the API this probes.
        this.jsm ??= await jetstreamManager(nc, { timeout: this.o.timeoutMs, checkAPI: false });
        jetstream = await accountInfo(this.jsm, this.o.timeoutMs);
      }
    }
    if (!this.stopped) this.update({ type: "probe", result: { startedAt, at: this.o.clock.now(), ping, jetstream } });
    return this.health;
  }

  private update(obs: ServerObservation): void {
    this.health = assessServer(this.health, obs, this.o.assess);
    try {
      this.o.onUpdate?.(this.health);
    } catch {
      // a reporter's failure must not stop the probing
    }
  }

  /** A connection of the monitor's own; undefined (and tried again next probe) when the server cannot be reached. */
  private connect(role: "ping" | "js"): Promise<NatsConnection | undefined> {
    // Its disconnects (a jammed connection going stale) are the monitor's to judge, not log lines.
    const logger = this.endpoint.logger.child({ component: "server-health" }, { level: "error" });
    const conn = connectNats({ ...this.endpoint, logger, name: `${this.endpoint.name}-${role}`, timeoutMs: this.o.timeoutMs }).catch(() => {
      if (role === "ping") this.pingConn = undefined;
      else this.jsConn = undefined;
      return undefined;
    });
    return conn;
  }
}

/**
 * One probe, judged at once (no waiting for a condition to last), on a connection of
 * its own that is closed afterwards: for a command that asks once (`ado status`).
 */
export async function checkServer(endpoint: ServerEndpoint, timeoutMs = 3_000, clock: Clock = systemClock): Promise<ServerHealth> {
  const startedAt = clock.now();
  const nc = await connectNats({ ...endpoint, logger: endpoint.logger.child({ component: "server-health" }, { level: "error" }), timeoutMs }).catch(() => undefined);
  try {
    const ping = await pingOnce(nc, timeoutMs);
    const jetstream: ProbeResult["jetstream"] =
      ping && nc ? await accountInfo(await jetstreamManager(nc, { timeout: timeoutMs, checkAPI: false }), timeoutMs) : { answered: false, timedOut: false, error: "server not answering" };
    const result = { startedAt, at: clock.now(), ping, jetstream };
    return assessServer(initialServerHealth(startedAt), { type: "probe", result }, { ...DEFAULT_ASSESS, unresponsiveAfterMs: 0, unreachableAfterMs: 0 });
  } finally {
    await nc?.close().catch(() => undefined);
  }
}

async function pingOnce(nc: NatsConnection | undefined, timeoutMs: number): Promise<boolean> {
  if (!nc || nc.isClosed()) return false;
  return bounded(nc.rtt(), timeoutMs).then(
    () => true,
    () => false,
  );
}

async function accountInfo(jsm: JetStreamManager, timeoutMs: number): Promise<ProbeResult["jetstream"]> {
  try {
    const info = await bounded(jsm.getAccountInfo(), timeoutMs + 500);
    return { answered: true, storageBytes: info.storage, maxStorageBytes: info.limits?.max_storage ?? -1 };
  } catch (err) {
    const timedOut = isTimeout(err);
    return { answered: false, timedOut, error: timedOut ? `no answer within ${secs(timeoutMs)}` : errorMessage(err) };
  }
}

/** Whether an error (or one of its causes) is a request that got no answer in time. */
export function isTimeout(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof errors.TimeoutError || e instanceof BoundExceeded) return true;
  }
  return false;
}

class BoundExceeded extends Error {}

/** A promise that rejects after `ms` if `p` has not settled (the library's own timeout may not apply while reconnecting). */
function bounded<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  p.catch(() => undefined);
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new BoundExceeded(`no answer within ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

export interface HealthReportOptions extends MonitorOptions, ServerContext {
  /** Writes one line for a person (e.g. to stderr). */
  say: (line: string) => void;
  /** While a condition lasts, its line is repeated at most this often. Default 10 s. */
  repeatMs?: number;
}

/** What a reporter has said so far. */
export interface ReportState {
  said: ServerCondition;
  saidAt?: number;
}

/**
 * Whether to say something about a new judgement, and what. Pure. A condition is said
 * when it starts or changes, then again at most every `repeatMs` while it lasts; the
 * return to ok is said once.
 */
export function nextReport(prev: ReportState, h: ServerHealth, now: number, repeatMs: number, ctx: ServerContext = {}): { state: ReportState; line?: string } {
  if (h.condition === ServerCondition.ok) {
    if (prev.said === ServerCondition.ok) return { state: prev };
    return { state: { said: ServerCondition.ok }, line: `nats-server${ctx.url ? ` at ${ctx.url}` : ""} answers again; the run goes on` };
  }
  if (h.condition === prev.said && prev.saidAt !== undefined && now - prev.saidAt < repeatMs) return { state: prev };
  return { state: { said: h.condition, saidAt: now }, line: describeServerHealth(h, ctx) };
}

/**
 * Watches the server for a command that follows a run (`ado run`): one line when it
 * is unreachable, unresponsive or full, repeated at most every `repeatMs` (default
 * 10 s) while that lasts, and one line when it answers again.
 */
export function reportServerHealth(endpoint: ServerEndpoint, opts: HealthReportOptions): ServerHealthMonitor {
  const repeatMs = opts.repeatMs ?? 10_000;
  const clock = opts.clock ?? systemClock;
  let state: ReportState = { said: ServerCondition.ok };
  const monitor = new ServerHealthMonitor(endpoint, {
    ...opts,
    onUpdate: (h) => {
      opts.onUpdate?.(h);
      const next = nextReport(state, h, clock.now(), repeatMs, opts);
      state = next.state;
      if (next.line) opts.say(next.line);
    },
  });
  return monitor.start();
}

const secs = (ms: number) => `${Math.round(ms / 1000)} s`;
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
