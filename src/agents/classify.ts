/**
 * Failure classes of agent CLIs and what each means for a retry, plus the readers of
 * the reset times CLIs print ("resets 3:45pm", "try again at Sep 19th, 2026 7:10 AM",
 * "usage limit reached|1755806400"). Pure: the clock is a parameter.
 */
import type { TaskFailure } from "../runtime/messages.js";

export type FailureKind = TaskFailure["kind"];

/**
 * Whether another attempt can help, per class. auth: not with the same credentials;
 * max_turns/budget: the same limits end the same way (the task is resumable from its
 * session with larger ones); rate_limit: after the reset; crash and hang: per the task's
 * retry policy.
 */
export const RETRYABLE: Record<FailureKind, boolean> = {
  exit: true,
  timeout: true,
  agent_missing: false,
  invalid: false,
  git: true,
  internal: true,
  cancelled: false,
  interrupted: true,
  auth: false,
  rate_limit: true,
  max_turns: false,
  budget: false,
  crash: true,
  hang: true,
};

/** A TaskFailure of `kind`, retryable as RETRYABLE says. */
export function agentFailure(kind: FailureKind, message: string, extra: { exitCode?: number | null; retryAt?: number } = {}): TaskFailure {
  return {
    kind,
    retryable: RETRYABLE[kind],
    message,
    ...(extra.exitCode !== undefined ? { exitCode: extra.exitCode } : {}),
    ...(extra.retryAt !== undefined ? { retryAt: extra.retryAt } : {}),
  };
}

/** What an HTTP status from a provider's API means for the task. */
export function classOfHttpStatus(status: number): FailureKind {
  if (status === 401 || status === 403) return "auth";
  if (status === 402) return "auth"; // payment required: the account, not the task
  if (status === 429) return "rate_limit";
  if (status === 400 || status === 404) return "invalid";
  return "crash";
}

// ---- text signatures shared by several CLIs ------------------------------------------

/** Credentials refused or missing, in the words of the five CLIs and their providers. */
export const AUTH_TEXT =
  /invalid api key|authentication[_ ]failed|authentication required|not logged in|please run \/login|run '?[\w-]+ login'?|oauth token has expired|unauthorized|access token could not be refreshed|not able to authenticate|set an auth method|api key not valid|permission denied: api key|401\b|insufficient credits|billing_error|credit balance is too low/i;

/** A rate or usage limit. */
export const RATE_LIMIT_TEXT =
  /usage limit|rate[ _-]?limit|session limit|weekly limit|quota exceeded|exhausted your (daily )?quota|resource[_ ]exhausted|too many requests|\b429\b|hit your limit/i;

// ---- reset times -------------------------------------------------------------------

const MONTHS: Record<string, number> = { jan: 0, feb: 1, mar: 2, apr: 3, may: 4, jun: 5, jul: 6, aug: 7, sep: 8, oct: 9, nov: 10, dec: 11 };

/** `tz`'s UTC offset (ms, east positive) at instant `at`; the local zone when tz is undefined. */
function offsetAt(at: number, tz: string | undefined): number {
  if (!tz) return -new Date(at).getTimezoneOffset() * 60_000;
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: tz,
    hourCycle: "h23",
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "numeric",
    minute: "numeric",
    second: "numeric",
  }).formatToParts(new Date(at));
  const get = (t: string) => Number(parts.find((p) => p.type === t)?.value ?? 0);
  const wall = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second"));
  return wall - Math.floor(at / 1000) * 1000;
}

/** The instant a wall-clock time in `tz` names (two passes settle a DST edge). */
function wallToEpoch(y: number, mo: number, d: number, h: number, mi: number, tz: string | undefined): number {
  const guess = Date.UTC(y, mo, d, h, mi);
  let at = guess - offsetAt(guess, tz);
  at = guess - offsetAt(at, tz);
  return at;
}

function validZone(tz: string | undefined): string | undefined {
  if (!tz) return undefined;
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return tz;
  } catch {
    return undefined;
  }
}

function hour24(h: number, ampm: string | undefined): number {
  if (!ampm) return h;
  const pm = ampm.toLowerCase() === "pm";
  return (h % 12) + (pm ? 12 : 0);
}

/**
 * The reset time a CLI's limit message names, as epoch ms, or undefined when it names
 * none. Understands an epoch after `|` (Claude's old `usage limit reached|<epoch>`), a
 * clock time (`resets 3:45pm`, `try again at 3:05 PM`, optionally followed by an IANA
 * zone in parentheses; otherwise the worker's zone), a date and time (`Sep 19th, 2026
 * 7:10 AM`), an ISO time, and a delay (`try again in 5 minutes`, `retry in 23.5s`). A
 * clock time already past today means tomorrow.
 */
export function parseResetTime(text: string, now: number): number | undefined {
  const epoch = /\|\s*(\d{10}|\d{13})\b/.exec(text);
  if (epoch) {
    const n = Number(epoch[1]);
    return n < 1e12 ? n * 1000 : n;
  }
  const iso = /\b(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2}))/.exec(text);
  if (iso) {
    const t = Date.parse(iso[1]!);
    if (!Number.isNaN(t)) return t;
  }
  const zoneOf = (rest: string) => validZone(/^\s*\(([A-Za-z_]+(?:\/[A-Za-z0-9_+-]+)+|UTC)\)/.exec(rest)?.[1]);
  const dated = /\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? (\d{1,2})(?:st|nd|rd|th)?,? (\d{4}),?(?: at)? (\d{1,2})(?::(\d{2}))? ?([ap]m)?/i.exec(text);
  if (dated) {
    const tz = zoneOf(text.slice(dated.index + dated[0].length));
    return wallToEpoch(Number(dated[3]), MONTHS[dated[1]!.toLowerCase()]!, Number(dated[2]), hour24(Number(dated[4]), dated[6]), Number(dated[5] ?? 0), tz);
  }
  const clock = /\b(?:resets?|reset at|resets at|try again at|again at|available at|retry at)\s+(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*([ap]\.?m\.?)?/i.exec(text);
  if (clock && (clock[2] !== undefined || clock[3] !== undefined)) {
    const tz = zoneOf(text.slice(clock.index + clock[0].length));
    const ampm = clock[3]?.replace(/\./g, "");
    const h = hour24(Number(clock[1]), ampm);
    const mi = Number(clock[2] ?? 0);
    if (h > 23 || mi > 59) return undefined;
    // Today in the zone, or tomorrow when that time has passed.
    const wallNow = new Date(now + offsetAt(now, tz));
    let at = wallToEpoch(wallNow.getUTCFullYear(), wallNow.getUTCMonth(), wallNow.getUTCDate(), h, mi, tz);
    if (at <= now) at = wallToEpoch(wallNow.getUTCFullYear(), wallNow.getUTCMonth(), wallNow.getUTCDate() + 1, h, mi, tz);
    return at;
  }
  const delay = /\b(?:try again|retry|reset|resets|wait)\w*\s+(?:in|after)\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)\b/i.exec(text);
  if (delay) {
    const n = Number(delay[1]);
    const u = delay[2]!.toLowerCase();
    const unit = u.startsWith("ms") || u.startsWith("milli") ? 1 : u.startsWith("h") ? 3_600_000 : u.startsWith("m") ? 60_000 : 1_000;
    return now + Math.round(n * unit);
  }
  return undefined;
}
