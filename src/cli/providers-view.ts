import type { KV } from "@nats-io/kv";
import { formatTokens, formatUsd } from "../runtime/budget.js";
import { decode } from "../runtime/codec.js";
import { hhmm, tokensAt, type ProviderPolicy } from "../runtime/governor/decide.js";
import { currentEntries } from "../runtime/kv-watch.js";
import { SCHEMAS, type ProviderState } from "../runtime/messages.js";

/**
 * The providers part of `ado status`: each provider's shared governor state (KV
 * `providers`) as a person reads it. `providerView` decides from a state (pure);
 * `readProviderStates` reads them.
 */

/** One provider's row, with the figures behind it (for --json). */
export interface ProviderView {
  provider: string;
  circuit: { state: ProviderState["circuit"]["state"]; until: string | null; reason: string | null };
  /** Whole tokens in the bucket now, of `burst`, refilled at `perMinute` (the rate in force); null: no rate limit. */
  permits: { available: number; burst: number; perMinute: number } | null;
  /** Attempts holding the provider (granted, not reported finished), and the limit in force (after adaptive steps). */
  running: number;
  concurrent: number | null;
  /** The configured limits, when adaptive concurrency moved the ones in force away from them. */
  configured: { concurrent: number | null; perMinute: number | null } | null;
  spendToday: { costUsd: number; tokens: number; tasks: number };
  lastAdaptive: { at: string; direction: "down" | "up" | null; reason: string | null } | null;
  /** The table's cells: provider, circuit, permits, running, spend today, notes (why the circuit is not closed; the last adaptive step). */
  cells: string[];
}

/** How `ado status` shows a provider's state at `now`. */
export function providerView(s: ProviderState, now: number): ProviderView {
  const day = new Date(now).toISOString().slice(0, 10);
  const spend = s.spend && s.spend.day === day ? { costUsd: s.spend.costUsd, tokens: s.spend.tokens, tasks: s.spend.tasks } : { costUsd: 0, tokens: 0, tasks: 0 };
  // The limits in force: what adaptive concurrency set, else the configured ones.
  const limits = s.limits;
  const inForce: ProviderPolicy | undefined = limits
    ? {
        burst: limits.burst,
        circuit: { failures: 1, cooldownMs: 1, probes: 1, successes: 1 },
        ...((s.adapted?.perMinute ?? limits.perMinute) !== undefined ? { perMinute: s.adapted?.perMinute ?? limits.perMinute! } : {}),
        ...((s.adapted?.concurrent ?? limits.concurrent) !== undefined ? { concurrent: s.adapted?.concurrent ?? limits.concurrent! } : {}),
      }
    : undefined;
  const running = Object.keys(s.active).length;
  const c = s.circuit;
  const open = c.state === "open" && c.until !== undefined && c.until > now;
  const circuitCell = c.state === "closed" ? "closed" : open ? `open until ${hhmm(c.until!)}` : c.state === "open" ? "open (cooldown over)" : `half-open (${c.probes.length} probing)`;
  const permits =
    inForce?.perMinute !== undefined ? { available: Math.floor(tokensAt(s, inForce, now)), burst: inForce.burst, perMinute: round(inForce.perMinute) } : null;
  const moved = limits !== undefined && (inForce?.concurrent !== limits.concurrent || inForce?.perMinute !== limits.perMinute);
  const a = s.adapted;
  const view: Omit<ProviderView, "cells"> = {
    provider: s.provider,
    circuit: { state: c.state, until: c.until !== undefined ? new Date(c.until).toISOString() : null, reason: c.reason ?? null },
    permits,
    running,
    concurrent: inForce?.concurrent ?? null,
    configured: moved && limits ? { concurrent: limits.concurrent ?? null, perMinute: limits.perMinute ?? null } : null,
    spendToday: spend,
    lastAdaptive: a ? { at: new Date(a.steppedAt).toISOString(), direction: a.direction ?? null, reason: a.reason ?? null } : null,
  };
  const limitsMoved = view.configured ? ` (configured ${[view.configured.concurrent !== null ? `${view.configured.concurrent} at once` : "", view.configured.perMinute !== null ? `${view.configured.perMinute}/min` : ""].filter(Boolean).join(", ")})` : "";
  // The free text last: why the circuit is not closed, and the last adaptive step.
  const notes = [
    c.state !== "closed" && c.reason ? `circuit: ${c.reason}` : "",
    a ? `stepped${a.direction ? ` ${a.direction}` : ""} at ${clock(a.steppedAt)}${a.reason ? `: ${a.reason}` : ""}` : "",
  ].filter(Boolean);
  const cells = [
    s.provider,
    circuitCell,
    permits ? `${permits.available} of ${permits.burst} permits, ${permits.perMinute}/min` : limits ? "no rate limit" : "limits not known yet (no permit granted)",
    `${running} running${view.concurrent !== null ? ` of ${view.concurrent}` : ""}${limitsMoved}`,
    `${formatUsd(spend.costUsd)} today, ${spend.tasks} ${spend.tasks === 1 ? "task" : "tasks"}${spend.tokens ? `, ${formatTokens(spend.tokens)} tokens` : ""}`,
    notes.join("; "),
  ];
  return { ...view, cells };
}

const round = (x: number) => Math.round(x * 100) / 100;
/** HH:MM:SS UTC of an epoch time (a moment past, unlike hhmm's rounded-up deadline). */
const clock = (ms: number) => `${new Date(ms).toISOString().slice(11, 19)} UTC`;

/** Every provider's state in the bucket, by name; states this version cannot read are skipped. */
export async function readProviderStates(kv: KV): Promise<ProviderState[]> {
  const out: ProviderState[] = [];
  for (const e of await currentEntries(kv)) {
    if (e.operation !== "PUT") continue;
    try {
      out.push(decode(SCHEMAS.ProviderState, e.value));
    } catch {
      // Written by another version of ado: its other fields still show in that version's status.
    }
  }
  return out.sort((x, y) => x.provider.localeCompare(y.provider));
}
