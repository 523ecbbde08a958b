import { pino, type Logger } from "pino";

export type { Logger };

/**
 * The root logger. Logs go to stderr so that stdout stays clean for `--json` output
 * and progress. Level from ADO_LOG_LEVEL, default "warn" on the CLI (actors log their
 * lifecycle at info, which an operator running `ado actor` turns on).
 */
export function createLogger(level = process.env.ADO_LOG_LEVEL ?? "warn"): Logger {
  // Synchronous: log volume is low, and nothing may be lost when the CLI exits with a code.
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

/** A logger that discards everything; for benchmarks and tests that do not need logs. */
export const silentLogger: Logger = pino({ level: "silent" });
