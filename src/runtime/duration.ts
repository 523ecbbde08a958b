/**
 * Durations, one dialect for every file and flag: a number with a unit (`250ms`, `30s`,
 * `5m`, `1.5h`, `7d`, `2w`) or a bare number of seconds; shown by formatDuration. A leaf
 * module (the git layer's config uses it too).
 */
import { z } from "zod";

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;

/**
 * The longest duration any field takes (100 years). Longer ones (`1e300`) are surely
 * mistakes, and a graph holding one parsed but could not be submitted: its
 * milliseconds were beyond a safe integer, which the wire schemas refuse.
 */
export const MAX_DURATION_MS = 100 * 365 * 86_400_000;

export const DURATION_HINT = 'a duration like "250ms", "30s", "5m", "1h" or "7d", or a number of seconds';

/**
 * Milliseconds, or undefined when `v` is not a duration: a bare number is seconds; a
 * string needs its unit (a bare "100" would be ambiguous).
 */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === "number") return Number.isFinite(v) ? Math.round(v * 1000) : undefined;
  if (typeof v !== "string") return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(v.trim());
  return m ? Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]) : undefined;
}

/** A duration field: must be more than zero. Says what is allowed when it is not. */
export const DurationSchema = z
  .union([z.number(), z.string()], { error: (iss) => `expected ${DURATION_HINT}, got ${JSON.stringify(iss.input) ?? "nothing"}` })
  .transform((v, ctx) => {
    const value = parseDuration(v);
    if (value === undefined) {
      // "30" in quotes: the number is fine, the quotes make it ambiguous.
      const quotedNumber = typeof v === "string" && /^\s*-?\d+(\.\d+)?\s*$/.test(v);
      ctx.addIssue({
        code: "custom",
        message: quotedNumber
          ? `got "${v.trim()}": a duration in quotes needs a unit ("${v.trim()}s"); a bare number (no quotes) is seconds`
          : `expected ${DURATION_HINT}, got ${JSON.stringify(v)}`,
      });
      return z.NEVER;
    }
    if (value <= 0) {
      ctx.addIssue({ code: "custom", message: `must be more than zero (e.g. "30s" or "5m"), got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    if (value > MAX_DURATION_MS) {
      ctx.addIssue({ code: "custom", message: `must be at most 100 years, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return value;
  });

/** A duration for people: `850ms`, `12.3s`, `4m05s`, `1h02m`, `3d04h`. */
export function formatDuration(millis: number): string {
  const t = Math.max(0, millis);
  if (t < 1_000) return `${Math.round(t)}ms`;
  if (t < 60_000) return `${(t / 1_000).toFixed(1)}s`;
  const s = Math.floor(t / 1_000);
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 3_600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3_600)}h${pad(Math.floor((s % 3_600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d${pad(Math.floor((s % 86_400) / 3_600))}h`;
}
