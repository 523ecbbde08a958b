import { connect, type NatsConnection } from "@nats-io/transport-node";
import { natsAuthFromEnv } from "./config.js";
import { ServerError } from "./errors.js";
import { authForRole, connectionAuth, type NatsAuth } from "./nats-auth.js";
import type { Logger } from "./logger.js";
import { Backoff, backoffDelay, maxBackoffDelay } from "./retry.js";

export interface ConnectOptions {
  servers: string | string[];
  /** Connection name, shown by `nats server report connections`: e.g. `ado-worker-w-host-1`. */
  name: string;
  logger: Logger;
  /** How long the first connection attempt may take before failing. */
  timeoutMs?: number;
  /** Credentials and TLS; absent: from the environment (ADO_NATS_*, as the client role), else none. */
  auth?: NatsAuth;
}

/** Every URL of `servers`, a comma-separated string or a list of them. */
export function serverList(servers: string | string[]): string[] {
  return [servers]
    .flat()
    .flatMap((s) => s.split(","))
    .map((s) => s.trim())
    .filter(Boolean);
}

/** The longest a client waits between reconnect attempts: after an outage, every client is back within about this long. */
export const RECONNECT_MAX_WAIT_MS = maxBackoffDelay(Backoff.reconnect);

/**
 * Connects with the settings every ado process uses: a name, reconnection without
 * limit with exponential backoff and jitter, and status changes logged.
 */
export async function connectNats(opts: ConnectOptions): Promise<NatsConnection> {
  const log = opts.logger.child({ conn: opts.name });
  let attempt = 0;
  let nc: NatsConnection;
  // Without settings of its own, a connection is a client's (CLI commands).
  const auth = connectionAuth(opts.auth ?? authForRole(natsAuthFromEnv(), "client"));
  try {
    nc = await connect({
      ...auth,
      // "nats://a:4222,nats://b:4222" (ADO_SERVER, --server) is every node of a cluster:
      // nats.js takes one string for one URL.
      servers: serverList(opts.servers),
      name: opts.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: Backoff.reconnect.baseMs,
      // Exponential backoff with jitter; the attempt count resets on reconnect below.
      reconnectDelayHandler: () => backoffDelay(++attempt, Backoff.reconnect),
      timeout: opts.timeoutMs ?? 5_000,
      pingInterval: 10_000,
      // Otherwise every request (each JetStream publish, each KV write) builds an Error
      // with a stack trace up front, just in case it times out: 16% of the pipeline's
      // CPU in the profile. Our errors carry their own context.
      noAsyncTraces: true,
    });
  } catch (err) {
    throw new ServerError(
      `cannot connect to NATS at ${[opts.servers].flat().join(", ")}: ${(err as Error).message}. ` +
        "Check the URL (--server / ADO_SERVER), or omit it to let ado start its own embedded server.",
      { cause: err, retryable: true },
    );
  }
  void (async () => {
    for await (const s of nc.status()) {
      switch (s.type) {
        case "disconnect":
          log.warn({ server: s.server }, "nats disconnected");
          break;
        case "reconnecting":
          log.debug("nats reconnecting");
          break;
        case "reconnect":
          attempt = 0;
          log.info({ server: s.server }, "nats reconnected");
          break;
        case "error":
          log.error({ err: s.error }, "nats error");
          break;
        case "slowConsumer":
          log.warn({ sub: s.sub.getSubject(), pending: s.pending }, "nats slow consumer");
          break;
        default:
          log.trace({ status: s.type }, "nats status");
      }
    }
  })().catch(() => undefined);
  return nc;
}

/**
 * Drains a connection (flushes pending publishes, lets subscriptions finish); never
 * throws, and never waits more than `timeoutMs`: a drain waits on the server (a flush,
 * each subscription's unsubscribe), and a CLI that has its answer must not hang on an
 * overloaded or vanished server. After the timeout the connection is closed.
 */
export async function drainQuietly(nc: NatsConnection | undefined, logger?: Logger, timeoutMs = 5_000): Promise<void> {
  if (!nc || nc.isClosed()) return;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), timeoutMs);
    timer.unref();
  });
  try {
    const r = await Promise.race([nc.drain().then(() => "drained" as const), late]);
    if (r === "late") {
      logger?.debug({ timeoutMs }, "drain did not finish in time; closing");
      await nc.close().catch(() => undefined);
    }
  } catch (err) {
    logger?.debug({ err }, "drain failed; closing");
    await nc.close().catch(() => undefined);
  } finally {
    clearTimeout(timer);
  }
}
