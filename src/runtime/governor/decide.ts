/**
 * The governor's decisions, pure: a provider's shared state (token bucket, attempts
 * holding its concurrency, circuit breaker) plus the time and a request give the new
 * state and what to do. The shell (governor.ts) reads and writes the state in KV with
 * compare-and-set, so every balancer and worker on every host applies these rules to
 * the same state, one write at a time.
 *
 * No clock of its own and no I/O: every function takes `now` (epoch ms).
 */
import type { CircuitState, ProviderState, TaskFailure } from "../messages.js";
import type { ProviderDef, Rotation } from "../providers.js";

/** The rules of one provider, from its config. */
export interface ProviderPolicy {
  /** Tasks started per minute (token refill); undefined: no rate limit. */
  perMinute?: number;
  /** Bucket size: tasks that may start at once after a quiet spell. */
  burst: number;
  /** Tasks running at once; undefined: no limit. */
  concurrent?: number;
  circuit: { failures: number; cooldownMs: number; probes: number; successes: number };
  /** Adaptive concurrency (config `limits.adaptive`); `concurrent` and `perMinute` are then its ceilings. */
  adaptive?: AdaptivePolicy;
}

export interface AdaptivePolicy {
  minConcurrent: number;
  minPerMinute?: number;
  windowMs: number;
  /** Median task latency above this is unhealthy; undefined: latency is not judged. */
  latencyMs?: number;
  cooldownMs: number;
  minSamples: number;
}

/** The policy a provider's config gives. */
export function policyOf(def: Pick<ProviderDef, "limits" | "circuit">): ProviderPolicy {
  return {
    ...(def.limits.perMinute !== undefined ? { perMinute: def.limits.perMinute } : {}),
    burst: def.limits.burst ?? 1,
    ...(def.limits.concurrent !== undefined ? { concurrent: def.limits.concurrent } : {}),
    circuit: def.circuit,
    ...(def.limits.adaptive
      ? {
          adaptive: {
            minConcurrent: def.limits.adaptive.minConcurrent,
            ...(def.limits.adaptive.minPerMinute !== undefined ? { minPerMinute: def.limits.adaptive.minPerMinute } : {}),
            windowMs: def.limits.adaptive.window,
            ...(def.limits.adaptive.latency !== undefined ? { latencyMs: def.limits.adaptive.latency } : {}),
            cooldownMs: def.limits.adaptive.cooldown,
            minSamples: def.limits.adaptive.minSamples,
          },
        }
      : {}),
  };
}

/** The limits in force: what adaptive concurrency set, else the configured ones. */
export function effectivePolicy(policy: ProviderPolicy, s: Pick<ProviderState, "adapted"> | undefined): ProviderPolicy {
  const a = policy.adaptive && s?.adapted;
  if (!a) return policy;
  return { ...policy, ...(a.concurrent !== undefined ? { concurrent: a.concurrent } : {}), ...(a.perMinute !== undefined ? { perMinute: a.perMinute } : {}) };
}

/**
 * A granted attempt not seen running on any live worker is taken for finished (its
 * outcome report lost: a worker died) once it was granted this long ago. Before that it
 * may still be on its way to a worker.
 */
export const ACTIVE_GRACE_MS = 60_000;

/** Outcomes remembered per provider, so a repeated report counts once. */
const COUNTED_MAX = 64;

/**
 * Failure classes that say the provider is unusable now, not that the task is wrong:
 * refused credentials, a rate or usage limit, the CLI crashing. A task's own failure
 * (exit code, timeout, max turns, budget) says nothing about the provider.
 */
export const PROVIDER_FAILURES: ReadonlySet<TaskFailure["kind"]> = new Set(["auth", "rate_limit", "crash"]);

/** A circuit's change of state, to be announced as an event. */
export interface Transition {
  from: CircuitState["state"];
  to: CircuitState["state"];
  reason: string;
  until?: number;
}

/** A fresh provider: a full bucket, nothing running, circuit closed. */
export function initialState(provider: string, policy: ProviderPolicy, now: number): ProviderState {
  return { provider, tokens: policy.burst, refilledAt: now, active: {}, circuit: { state: "closed", failures: 0, probes: [], successes: 0, changedAt: now }, counted: [], samples: [] };
}

/** Tokens at `now` (continuous refill up to the burst). A clock behind `refilledAt` adds nothing. */
export function tokensAt(s: Pick<ProviderState, "tokens" | "refilledAt">, policy: ProviderPolicy, now: number): number {
  if (policy.perMinute === undefined) return Infinity;
  const elapsed = Math.max(0, now - s.refilledAt);
  return Math.min(policy.burst, s.tokens + (elapsed * policy.perMinute) / 60_000);
}

/** When the bucket holds one whole token again. */
function nextTokenAt(tokens: number, refilledAt: number, policy: ProviderPolicy): number {
  return refilledAt + Math.ceil(((1 - tokens) * 60_000) / policy.perMinute!);
}

/** Whether an attempt still holds the provider: seen running, or granted recently. */
export type StillRunning = (attempt: string, grantedAt: number) => boolean;

export type PermitDecision =
  | { type: "permit"; state: ProviderState; transitions: Transition[]; steps: AdaptiveStep[] }
  /**
   * `until`: when asking again can succeed (undefined: when something finishes).
   * `state` is set when the refusal changed it (a circuit half-opened, stale attempts
   * dropped) and is worth writing.
   */
  | { type: "refuse"; until?: number; reason: string; state?: ProviderState; transitions: Transition[]; steps: AdaptiveStep[] };

/**
 * May `attempt` start on this provider now? A permit takes a token, counts the attempt
 * against the concurrency limit and, while half-open, as a probe. Asking again for an
 * attempt already granted is granted again without another token (a permit whose
 * write's reply was lost is asked for again).
 */
export function decidePermit(
  current: ProviderState | undefined,
  policy: ProviderPolicy,
  now: number,
  provider: string,
  attempt: string,
  stillRunning: StillRunning,
): PermitDecision {
  const base = current ?? initialState(provider, policy, now);
  if (base.active[attempt] !== undefined) return { type: "permit", state: base, transitions: [], steps: [] };
  const configured = policy;
  const transitions: Transition[] = [];
  let changed = current === undefined;
  let s: ProviderState = { ...base, active: { ...base.active }, circuit: { ...base.circuit } };
  // Adaptive concurrency judges what workers reported since its last step.
  const step = policy.adaptive ? adapt(s, policy, policy.adaptive, now) : undefined;
  const steps: AdaptiveStep[] = [];
  if (step) {
    s = step.state;
    changed = true;
    if (step.step) steps.push(step.step);
  }
  policy = effectivePolicy(policy, s);
  // Attempts that ended without a report (a worker died) stop holding the provider.
  for (const [key, at] of Object.entries(s.active)) {
    if (!stillRunning(key, at)) {
      delete s.active[key];
      changed = true;
    }
  }
  const probes = s.circuit.probes.filter((p) => s.active[p] !== undefined);
  if (probes.length !== s.circuit.probes.length) {
    s.circuit.probes = probes;
    changed = true;
  }
  if (s.circuit.state === "open" && (s.circuit.until ?? 0) <= now) {
    transitions.push({ from: "open", to: "half_open", reason: `cooldown over: letting ${policy.circuit.probes} probe ${policy.circuit.probes === 1 ? "task" : "tasks"} through` });
    s.circuit = { ...s.circuit, state: "half_open", probes: [], successes: 0, changedAt: now };
    delete s.circuit.until;
    changed = true;
  }
  const refuse = (reason: string, until?: number): PermitDecision => ({
    type: "refuse",
    reason,
    ...(until !== undefined ? { until } : {}),
    ...(changed ? { state: s } : {}),
    transitions,
    steps,
  });
  if (s.circuit.state === "open") return refuse(`circuit open${s.circuit.reason ? `: ${s.circuit.reason}` : ""}`, s.circuit.until);
  if (s.circuit.state === "half_open" && s.circuit.probes.length >= policy.circuit.probes) {
    return refuse(`circuit half-open: ${s.circuit.probes.length} probe ${s.circuit.probes.length === 1 ? "task" : "tasks"} running`);
  }
  const running = Object.keys(s.active).length;
  if (policy.concurrent !== undefined && running >= policy.concurrent) return refuse(`${running} tasks running (limit ${policy.concurrent})`);
  const tokens = tokensAt(s, policy, now);
  const refilledAt = Math.max(s.refilledAt, now);
  if (tokens < 1) {
    return refuse(`rate limit of ${policy.perMinute} per minute reached`, nextTokenAt(tokens, refilledAt, policy));
  }
  s = { ...s, tokens: policy.perMinute === undefined ? s.tokens : tokens - 1, refilledAt, limits: limitsOf(configured) };
  s.active[attempt] = now;
  if (s.circuit.state === "half_open") s.circuit.probes = [...s.circuit.probes, attempt];
  return { type: "permit", state: s, transitions, steps };
}

/** The configured limits, as `ProviderState.limits` keeps them. */
function limitsOf(policy: ProviderPolicy): NonNullable<ProviderState["limits"]> {
  return { burst: policy.burst, ...(policy.concurrent !== undefined ? { concurrent: policy.concurrent } : {}), ...(policy.perMinute !== undefined ? { perMinute: policy.perMinute } : {}) };
}

/** How an attempt on a provider ended, as its worker reports it. */
export interface Outcome {
  attempt: string;
  ok: boolean;
  kind?: TaskFailure["kind"];
  /** A rate or usage limit's reset time (epoch ms), when the CLI named one. */
  retryAt?: number;
  message?: string;
  /** How long the attempt ran (ms), for adaptive concurrency's latency. */
  latencyMs?: number;
  /** What the attempt cost (USD) and the tokens it used, for the provider's spend of the day. */
  costUsd?: number;
  tokens?: number;
}

/** Outcomes kept for adaptive concurrency (the window trims them further). */
const SAMPLES_MAX = 200;

/**
 * Applies an attempt's outcome: it stops holding the provider, and the circuit counts
 * it. Closed: consecutive provider failures open it after `failures`; a usage limit
 * with a reset time parks it until then at once. Half-open: a probe's success counts
 * toward closing, its provider failure opens it again. An open circuit's cooldown is
 * never shorter than a reset time a CLI reported. Returns undefined when nothing changes
 * (an outcome already counted).
 */
export function applyOutcome(
  current: ProviderState | undefined,
  policy: ProviderPolicy,
  now: number,
  o: Outcome,
  provider: string,
): { state: ProviderState; transitions: Transition[] } | undefined {
  const base = current ?? initialState(provider, policy, now);
  if (base.counted.includes(o.attempt)) return undefined;
  const s: ProviderState = { ...base, active: { ...base.active }, circuit: { ...base.circuit }, counted: [...base.counted, o.attempt].slice(-COUNTED_MAX) };
  delete s.active[o.attempt];
  s.spend = addSpend(s.spend, now, o);
  const wasProbe = s.circuit.probes.includes(o.attempt);
  if (wasProbe) s.circuit.probes = s.circuit.probes.filter((p) => p !== o.attempt);
  const transitions: Transition[] = [];
  const providerFailure = !o.ok && o.kind !== undefined && PROVIDER_FAILURES.has(o.kind);
  // What the provider did, for adaptive concurrency: a success or a provider failure (a
  // task's own failure says nothing about the provider).
  if (o.ok || providerFailure) s.samples = [...s.samples, [now, o.ok ? 1 : 0, Math.max(0, o.latencyMs ?? 0)] as [number, 0 | 1, number]].slice(-SAMPLES_MAX);
  const parked = providerFailure && o.kind === "rate_limit" && o.retryAt !== undefined && o.retryAt > now;
  const what = o.kind === "rate_limit" ? (parked ? "usage limit" : "rate limit") : o.kind;
  const open = (reason: string) => {
    const until = Math.max(now + policy.circuit.cooldownMs, parked ? o.retryAt! : 0);
    transitions.push({ from: s.circuit.state, to: "open", reason, until });
    s.circuit = { state: "open", failures: s.circuit.failures, until, probes: [], successes: 0, reason, changedAt: now };
  };
  switch (s.circuit.state) {
    case "closed":
      if (o.ok) s.circuit.failures = 0;
      else if (providerFailure) {
        s.circuit.failures += 1;
        if (parked) open(`usage limit reached; resets ${new Date(o.retryAt!).toISOString()}`);
        else if (s.circuit.failures >= policy.circuit.failures) open(`${s.circuit.failures} ${what} failures in a row${o.message ? ` (last: ${oneLine(o.message)})` : ""}`);
      }
      break;
    case "half_open":
      // Only a probe speaks for the provider now: an attempt granted before the circuit
      // opened says what it was like then. A usage limit with a reset time is news either way.
      if (parked || (wasProbe && providerFailure)) open(parked ? `usage limit reached; resets ${new Date(o.retryAt!).toISOString()}` : `probe failed: ${what}${o.message ? ` (${oneLine(o.message)})` : ""}`);
      else if (wasProbe && o.ok) {
        s.circuit.successes += 1;
        if (s.circuit.successes >= policy.circuit.successes) {
          transitions.push({ from: "half_open", to: "closed", reason: `${s.circuit.successes} probe ${s.circuit.successes === 1 ? "task" : "tasks"} succeeded` });
          s.circuit = { state: "closed", failures: 0, probes: [], successes: 0, changedAt: now };
        }
      }
      break;
    case "open":
      // A late report of a limit that resets later than the cooldown keeps it parked longer.
      if (parked && o.retryAt! > (s.circuit.until ?? 0)) s.circuit.until = o.retryAt!;
      break;
  }
  return { state: s, transitions };
}

/** The day's spend with one more finished attempt; a new UTC day starts from zero. */
export function addSpend(spend: ProviderState["spend"], now: number, o: Pick<Outcome, "costUsd" | "tokens">): NonNullable<ProviderState["spend"]> {
  const day = new Date(now).toISOString().slice(0, 10);
  const base = spend && spend.day === day ? spend : { day, costUsd: 0, tokens: 0, tasks: 0 };
  return { day, costUsd: base.costUsd + Math.max(0, o.costUsd ?? 0), tokens: base.tokens + Math.max(0, Math.round(o.tokens ?? 0)), tasks: base.tasks + 1 };
}

const oneLine = (text: string) => {
  const line = text.split("\n").find((l) => l.trim()) ?? "";
  return line.length > 120 ? `${line.slice(0, 117)}...` : line;
};

// ---- the balancer's gate: which provider a held task may try now ----------------------

/** What a dispatch pass knows of one provider, worked out once per pass. */
export interface ProviderAvailability {
  /** Tasks this pass may still send to it (tokens, free concurrency, probe slots). */
  room: number;
  /** When it has room again, if known. */
  until?: number;
  /** Why it has no room (circuit open, limit reached), in words. */
  reason?: string;
}

/**
 * A provider's room for this pass, from the local view of its state (the KV watch). The
 * permit itself is decided against the stored state when a task is sent; this only
 * keeps a pass from sending more than can be permitted.
 */
export function availability(s: ProviderState | undefined, policy: ProviderPolicy, now: number, stillRunning: StillRunning): ProviderAvailability {
  policy = effectivePolicy(policy, s);
  if (!s) return { room: policy.perMinute === undefined ? (policy.concurrent ?? Infinity) : Math.min(policy.burst, policy.concurrent ?? Infinity) };
  const c = s.circuit;
  if (c.state === "open" && (c.until ?? 0) > now) return { room: 0, until: c.until!, reason: `circuit open${c.reason ? `: ${c.reason}` : ""}` };
  let running = 0;
  for (const [key, at] of Object.entries(s.active)) if (stillRunning(key, at)) running++;
  let room = policy.concurrent === undefined ? Infinity : policy.concurrent - running;
  let reason = room <= 0 ? `${running} tasks running (limit ${policy.concurrent})` : undefined;
  let until: number | undefined;
  if (c.state !== "closed") {
    // Half-open (or open with its cooldown over: the next permit half-opens it).
    const probes = c.state === "half_open" ? c.probes.filter((p) => s.active[p] !== undefined && stillRunning(p, s.active[p]!)).length : 0;
    const free = policy.circuit.probes - probes;
    if (free < room) {
      room = free;
      if (room <= 0) reason = `circuit half-open: ${probes} probe ${probes === 1 ? "task" : "tasks"} running`;
    }
  }
  if (policy.perMinute !== undefined && room > 0) {
    const tokens = tokensAt(s, policy, now);
    const whole = Math.floor(tokens);
    if (whole < room) {
      room = whole;
      if (room <= 0) {
        reason = `rate limit of ${policy.perMinute} per minute reached`;
        until = nextTokenAt(tokens, Math.max(s.refilledAt, now), policy);
      }
    }
  }
  return { room: Math.max(0, room), ...(until !== undefined ? { until } : {}), ...(reason !== undefined && room <= 0 ? { reason } : {}) };
}

export type Gate = { type: "use"; provider: string } | { type: "wait"; provider: string; until?: number; reason: string };

/**
 * The first provider of a task's list with room in this pass (its room is taken), or
 * why the task waits: for the provider with room soonest (the first of the list among
 * those whose time is unknown). `rooms` is the pass's table, updated in place.
 */
export function gate(providers: readonly string[], rooms: Map<string, ProviderAvailability>, unknown: (name: string) => ProviderAvailability): Gate {
  let wait: { provider: string; a: ProviderAvailability } | undefined;
  for (const name of providers) {
    let a = rooms.get(name);
    if (!a) {
      a = unknown(name);
      rooms.set(name, a);
    }
    if (a.room > 0) {
      a.room -= 1;
      return { type: "use", provider: name };
    }
    if (!wait || (a.until !== undefined && (wait.a.until === undefined || a.until < wait.a.until))) wait = { provider: name, a };
  }
  const w = wait!;
  return { type: "wait", provider: w.provider, ...(w.a.until !== undefined ? { until: w.a.until } : {}), reason: waitReason(w.provider, w.a, providers.length) };
}

/**
 * "waiting for provider X until 14:05 UTC: circuit open: ...": what a person sees. The
 * time is given for an open circuit (a wait of minutes or hours) and not for a rate
 * limit (seconds, and a reason that changed every second would be announced again
 * every second).
 */
export function waitReason(provider: string, a: ProviderAvailability, listed: number): string {
  const others = listed > 1 ? ` (none of the task's ${listed} providers has room)` : "";
  const until = a.until !== undefined && a.reason?.startsWith("circuit open") ? ` until ${hhmm(a.until)}` : "";
  return `waiting for provider ${provider}${until}: ${a.reason ?? "no room"}${others}`;
}

/** HH:MM UTC of an epoch time, rounded up to the minute (never earlier than the time itself). */
export function hhmm(ms: number): string {
  const d = new Date(Math.ceil(ms / 60_000) * 60_000);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
}

// ---- rotation: the order a task's providers are tried in --------------------------------

/** What rotation knows of one provider: how it is paid for and, when priced, what a task is expected to cost (USD). */
export interface ProviderCost {
  access: "subscription" | "api";
  perTask?: number;
}

/**
 * The order in which `gate` tries a task's providers. `cursor`: for `round_robin`, the
 * index of the list to start at (what `nextCursor` returned after the last use of this
 * list). `cost`: a provider's cost facts (undefined: unknown, e.g. not in this config).
 * Ties keep the written order, so equal providers are tried as the task lists them.
 */
export function rotationOrder(providers: readonly string[], rotation: Rotation | undefined, cursor: number | undefined, cost: (name: string) => ProviderCost | undefined): readonly string[] {
  if (providers.length < 2 || rotation === undefined || rotation === "fallback") return providers;
  if (rotation === "round_robin") {
    const start = (cursor ?? 0) % providers.length;
    return start === 0 ? providers : [...providers.slice(start), ...providers.slice(0, start)];
  }
  // Subscription (0), then priced pay-per-use by price (1), then unpriced (2).
  const rank = (name: string): [number, number] => {
    const c = cost(name);
    if (c?.access === "subscription") return [0, 0];
    if (c?.perTask !== undefined) return [1, c.perTask];
    return [2, 0];
  };
  return providers
    .map((name, i) => ({ name, i, r: rank(name) }))
    .sort((a, b) => a.r[0] - b.r[0] || a.r[1] - b.r[1] || a.i - b.i)
    .map((x) => x.name);
}

/** The round-robin cursor after a task of this list was sent to `used`: the provider after it goes first next time. */
export function nextCursor(providers: readonly string[], used: string): number {
  const i = providers.indexOf(used);
  return i < 0 ? 0 : (i + 1) % providers.length;
}

// ---- adaptive concurrency ----------------------------------------------------------

/** A step of adaptive concurrency, to be announced as a `provider.adaptive` event. */
export interface AdaptiveStep {
  direction: "down" | "up";
  from: { concurrent?: number; perMinute?: number };
  to: { concurrent?: number; perMinute?: number };
  reason: string;
}

/** Error rate above which limits are cut, and below which (with healthy latency) they are raised. */
export const ADAPTIVE_CUT_ABOVE = 0.2;
export const ADAPTIVE_RAISE_BELOW = 0.05;

/**
 * The backpressure controller: over the samples in the window (at least `minSamples`,
 * and not within `cooldownMs` of the last step), an error rate above 20% or a median
 * latency above the threshold cuts concurrency by a quarter and the rate by half (not
 * below the minimums); an error rate under 5% with healthy latency raises them by a third
 * and a quarter (not above the configured limits). A step starts a fresh window: the
 * new level is judged on its own outcomes. Returns undefined when nothing changes.
 */
export function adapt(
  s: ProviderState,
  policy: ProviderPolicy,
  a: AdaptivePolicy,
  now: number,
): { state: ProviderState; step?: AdaptiveStep } | undefined {
  const samples = s.samples.filter(([at]) => now - at <= a.windowMs);
  const trimmed = samples.length !== s.samples.length;
  const last = s.adapted?.steppedAt ?? 0;
  const keep = () => (trimmed ? { state: { ...s, samples } } : undefined);
  if (samples.length < a.minSamples || now - last < a.cooldownMs) return keep();
  const errors = samples.filter(([, ok]) => ok === 0).length;
  const rate = errors / samples.length;
  const latencies = samples.filter(([, ok]) => ok === 1).map(([, , ms]) => ms).sort((x, y) => x - y);
  const median = latencies.length ? latencies[Math.floor((latencies.length - 1) / 2)]! : undefined;
  const slow = a.latencyMs !== undefined && median !== undefined && median > a.latencyMs;
  const cur = { concurrent: s.adapted?.concurrent ?? policy.concurrent, perMinute: s.adapted?.perMinute ?? policy.perMinute };
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  const over = `over the last ${samples.length} tasks`;
  let direction: AdaptiveStep["direction"];
  let next: { concurrent?: number; perMinute?: number };
  let reason: string;
  if (rate > ADAPTIVE_CUT_ABOVE || slow) {
    direction = "down";
    next = {
      ...(cur.concurrent !== undefined ? { concurrent: Math.max(a.minConcurrent, Math.floor(cur.concurrent * 0.75)) } : {}),
      ...(cur.perMinute !== undefined ? { perMinute: Math.max(a.minPerMinute ?? Math.min(1, policy.perMinute!), cur.perMinute * 0.5) } : {}),
    };
    reason = rate > ADAPTIVE_CUT_ABOVE ? `error rate ${pct(rate)} ${over} (above ${pct(ADAPTIVE_CUT_ABOVE)})` : `median latency ${Math.round(median!)} ms ${over} (above ${a.latencyMs} ms)`;
  } else if (rate < ADAPTIVE_RAISE_BELOW) {
    direction = "up";
    next = {
      ...(cur.concurrent !== undefined ? { concurrent: Math.min(policy.concurrent!, Math.max(cur.concurrent + 1, Math.ceil((cur.concurrent * 4) / 3))) } : {}),
      ...(cur.perMinute !== undefined ? { perMinute: Math.min(policy.perMinute!, cur.perMinute * 1.25) } : {}),
    };
    reason = `error rate ${pct(rate)} ${over} (under ${pct(ADAPTIVE_RAISE_BELOW)})${median !== undefined ? `, median latency ${Math.round(median)} ms` : ""}`;
  } else return keep();
  if (next.concurrent === cur.concurrent && next.perMinute === cur.perMinute) return keep();
  const adapted = { ...next, steppedAt: now, direction, reason };
  return { state: { ...s, samples: [], adapted }, step: { direction, from: cur, to: next, reason } };
}
