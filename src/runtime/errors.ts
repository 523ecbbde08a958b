/**
 * Error classes of the runtime layer. Each names itself, keeps the library error it
 * wraps as `cause`, and says whether retrying the same operation could succeed, so
 * callers branch on type and `retryable`, never on message text.
 */

export interface AdoErrorOptions {
  cause?: unknown;
  retryable?: boolean;
}

/** Base of every ado error: a message a person can act on, plus retryability. */
export class AdoError extends Error {
  readonly retryable: boolean;
  constructor(message: string, opts: AdoErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.retryable = opts.retryable ?? false;
  }
}

/** Configuration (file, environment or flags) is invalid. */
export class ConfigError extends AdoError {}

/** A payload failed to decode or did not match its schema. Never retryable. */
export class DecodeError extends AdoError {
  constructor(
    message: string,
    readonly schema: string,
    opts: AdoErrorOptions = {},
  ) {
    super(message, { ...opts, retryable: false });
  }
}

/** The NATS server cannot be used as ado needs it (unreachable, no JetStream, ...). */
export class ServerError extends AdoError {}

/** The `nats-server` binary is missing or failed to start. */
export class EmbeddedServerError extends AdoError {}

/** A task graph is invalid: unknown dependency, duplicate id, cycle, bad field. */
export class GraphError extends AdoError {
  constructor(
    message: string,
    readonly tasks: readonly string[] = [],
  ) {
    super(message, { retryable: false });
  }
}

/** A payload named in a message (a prompt, a fan-in's inputs) is not in the object store, or not what its name says. */
export class PayloadMissingError extends AdoError {}

/** An actor method was called in a lifecycle state that does not allow it. */
export class LifecycleError extends AdoError {}

/** Returns the message of any thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
