/**
 * Which failures are worth trying again: the one place that knows the error classes of
 * nats.js and node, so a handler asks `isTransient(err)` instead of testing classes and
 * codes at every call site (as nats.js's own `isMessageNotFound(err)` does).
 *
 * Transient: the server is slow or away for a moment, or another writer got there first.
 * Not transient: input that is wrong, a setting that is wrong, a git error that will
 * happen again. ado's own errors say which they are (`AdoError.retryable`); a library
 * error is judged by its class, then by its cause.
 */
import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import { errors } from "@nats-io/nats-core";
import { AdoError } from "./errors.js";

/**
 * JetStream API error codes that pass: a compare-and-set that lost a race (KV update,
 * expected last sequence), and a stream (a KV bucket) that is not there for the moment:
 * deleted and being provisioned again by a process that starts, or restored by a
 * cluster. The retries are bounded (the caller dead-letters or fails after them), so a
 * bucket that stays gone still ends in an error that says so.
 */
const PASSING_CODES = new Set([10071, 10164, 10059]);
/** HTTP-like statuses of JetStream responses that pass: request timeout, no responders / temporarily unavailable. */
const PASSING_STATUS = new Set([408, 503]);
/** Node system errors that pass: resources busy or exhausted for a moment, or a connection cut. */
const PASSING_ERRNO = new Set(["EAGAIN", "EBUSY", "EMFILE", "ENFILE", "ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT"]);

/**
 * Whether retrying the operation that threw `err` can succeed: a NATS timeout, no
 * responders (a server or stream leader that is not there yet), a closed, draining or
 * reconnecting connection, a JetStream API 503, a compare-and-set race, a git lock
 * held by another process (an ado error marked retryable).
 */
export function isTransient(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof AdoError) return e.retryable;
    if (
      e instanceof errors.TimeoutError ||
      e instanceof errors.NoRespondersError ||
      e instanceof errors.ClosedConnectionError ||
      e instanceof errors.DrainingConnectionError ||
      e instanceof errors.ConnectionError
    ) {
      return true;
    }
    if (e instanceof errors.RequestError && e.isNoResponders()) return true;
    if (e instanceof JetStreamApiError) return PASSING_STATUS.has(e.status) || PASSING_CODES.has(e.code);
    const code = (e as { code?: unknown }).code;
    // A pull's status (JetStreamStatusError: 408 request timeout, 503 no responders).
    if (e instanceof JetStreamError && typeof code === "number" && PASSING_STATUS.has(code)) return true;
    if (typeof code === "string" && PASSING_ERRNO.has(code)) return true;
    // Anything else is judged by what it wraps: a JetStream request nobody answered is
    // reported as "jetstream is not enabled", but a stream leader being elected or a
    // server restarting looks the same, and its cause (no responders) says so.
  }
  return false;
}
