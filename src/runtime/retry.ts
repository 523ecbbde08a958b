/**
 * Backoff and retry, as one unit for all of ado (after BullMQ's backoffs.ts): named
 * policies for each kind of wait, one delay formula, one retry loop. Nothing else
 * writes `2 ** attempt`.
 *
 * A leaf module: it imports only the clock's sleep, so the git layer uses it too.
 */
import { sleep } from "./clock.js";

/** Delay before retry `n` (1 = the first retry): `baseMs * factor^(n-1)`, at most `maxMs`, then jittered. */
export interface BackoffPolicy {
  baseMs: number;
  /** Growth per retry; 1 keeps the delay constant. Default 2. */
  factor?: number;
  maxMs: number;
  /** Spread, as a fraction of the delay: 0.5 draws from [0.5d, 1.5d]. Default 0. */
  jitter?: number;
}

/** The waits ado uses, by what they wait for. */
export const Backoff = {
  /** Git's own locks and compare-and-swap races with other writers of a repository (milliseconds apart). */
  gitLock: { baseMs: 25, factor: 1.5, maxMs: 1_000, jitter: 0.5 },
  /** A NATS operation while the server is away or JetStream recovers after a restart (seconds). */
  server: { baseMs: 200, factor: 2, maxMs: 5_000, jitter: 0.2 },
  /** Reconnecting to the NATS server: 50-100 ms at first, at most 5 s (2.5-5 s). */
  reconnect: { baseMs: 75, factor: 2, maxMs: 3_750, jitter: 1 / 3 },
  /** A KV compare-and-set that lost a race: read again at once, then spread out. */
  cas: { baseMs: 5, factor: 2, maxMs: 200, jitter: 0.5 },
  /** A message whose handler failed, redelivered by the server (nak delay). */
  redelivery: { baseMs: 250, factor: 2, maxMs: 30_000, jitter: 0 },
  /** A webhook whose receiver failed or did not answer, posted again (seconds to half a minute). */
  webhook: { baseMs: 500, factor: 2, maxMs: 30_000, jitter: 0.2 },
  /** A run refused because the queue was full, submitted again (`ado run --wait`). */
  queueFull: { baseMs: 500, factor: 2, maxMs: 10_000, jitter: 0.2 },
  /** A pool's worker that crashed (or never came up), started again by the scaler: 1 s doubling to 1 min. */
  workerRestart: { baseMs: 1_000, factor: 2, maxMs: 60_000, jitter: 0 },
  /** An SSH host that failed to connect, tried again once its circuit half-opens: 5 s doubling to 5 min. */
  hostCircuit: { baseMs: 5_000, factor: 2, maxMs: 300_000, jitter: 0.2 },
} as const satisfies Record<string, BackoffPolicy>;

/** The longest delay a policy can give (its cap, jittered up). */
export const maxBackoffDelay = (policy: BackoffPolicy) => Math.round(policy.maxMs * (1 + (policy.jitter ?? 0)));

/**
 * The delay before retry `retry` (1-based) under `policy`. `unit` is the random draw in
 * [0, 1) that places it within the jitter; pass a hash for a delay that replays the same.
 */
export function backoffDelay(retry: number, policy: BackoffPolicy, unit = Math.random()): number {
  const base = Math.min(policy.maxMs, policy.baseMs * (policy.factor ?? 2) ** Math.max(0, retry - 1));
  const jitter = policy.jitter ?? 0;
  return Math.max(0, Math.round(base * (1 + jitter * (2 * unit - 1))));
}

export interface RetryOptions {
  /** Tries in all, the first included. */
  attempts: number;
  backoff: BackoffPolicy;
  /** Whether an error is worth another try; default: every error. */
  retryIf?: (err: unknown, attempt: number) => boolean;
  /** Called before each wait (to log, or to undo a half-done step). */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void | Promise<void>;
  /** Stops waiting: the last error is thrown at once. */
  signal?: AbortSignal;
}

/**
 * Runs `op` until it succeeds, an error is not worth retrying, `attempts` are used up or
 * `signal` aborts; then throws the last error. `op` gets the attempt number (1-based).
 */
export async function retry<T>(op: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (err) {
      if (attempt >= opts.attempts || opts.signal?.aborted || (opts.retryIf && !opts.retryIf(err, attempt))) throw err;
      const delay = backoffDelay(attempt, opts.backoff);
      await opts.onRetry?.(err, attempt, delay);
      await sleep(delay, opts.signal);
    }
  }
}
