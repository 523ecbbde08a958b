import { writeSync } from "node:fs";
import { pino, type Logger } from "pino";

export type { Logger };

/** Where log lines go instead of stderr while something else owns the terminal (a live view). */
let diverted: ((line: string) => void) | undefined;

/**
 * Sends log lines to `to` instead of stderr until called with nothing. A live view that
 * redraws a frame on the terminal takes them, and prints them above its frame: written
 * straight to the terminal, a line would be drawn over by the next frame, or break it.
 */
export function divertLogs(to?: (line: string) => void): void {
  diverted = to;
}

const LEVEL_NAMES: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };

/** A log line (pino's JSON) as one line a person reads: `warn: message (key=value, ...)`. */
export function formatLogLine(json: string): string {
  try {
    const { level, msg, time: _t, pid: _p, hostname: _h, ...rest } = JSON.parse(json) as Record<string, unknown>;
    const fields = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(", ");
    return `${LEVEL_NAMES[level as number] ?? "log"}: ${String(msg ?? "")}${fields ? ` (${fields})` : ""}`;
  } catch {
    return json.trimEnd();
  }
}

const sink = {
  write(line: string): void {
    if (diverted) diverted(line);
    else writeSync(2, line);
  },
};

/**
 * The root logger. Logs go to stderr so that stdout stays clean for `--json` output
 * and progress. Level from ADO_LOG_LEVEL, default "warn" on the CLI (actors log their
 * lifecycle at info, which an operator running `ado actor` turns on).
 */
export function createLogger(level = process.env.ADO_LOG_LEVEL ?? "warn"): Logger {
  // Synchronous: log volume is low, and nothing may be lost when the CLI exits with a code.
  return pino({ level, base: { pid: process.pid } }, sink);
}

/** A logger that discards everything; for benchmarks and tests that do not need logs. */
export const silentLogger: Logger = pino({ level: "silent" });
