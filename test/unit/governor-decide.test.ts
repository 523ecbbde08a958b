import { describe, expect, it } from "vitest";
import {
  applyOutcome,
  availability,
  decidePermit,
  gate,
  hhmm,
  initialState,
  nextCursor,
  rotationOrder,
  type ProviderCost,
  policyOf,
  type ProviderAvailability,
  type ProviderPolicy,
} from "../../src/runtime/governor/decide.js";
import type { ProviderState } from "../../src/runtime/messages.js";
import { checkProviders, expectedTaskCost, ProvidersConfigSchema, providerEnvironment, providerAssignment } from "../../src/runtime/providers.js";
import { parseConfig } from "../../src/runtime/config.js";
import { GraphFileSchema } from "../../src/runtime/graph.js";
import { MAX_PROVIDER_FAILURES, providerFailureRule } from "../../src/actors/scheduler/run-state.js";

const T0 = Date.parse("2026-12-05T12:00:00Z");
const always = () => true;
const policy = (p: Partial<ProviderPolicy> = {}): ProviderPolicy => ({ burst: 1, circuit: { failures: 3, cooldownMs: 60_000, probes: 1, successes: 2 }, ...p });

/** Asks for permits for attempts a0, a1, ... at the given times; returns which were granted, and the state. */
function drive(p: ProviderPolicy, times: number[], start?: ProviderState) {
  let s = start;
  const granted: number[] = [];
  times.forEach((t, i) => {
    const d = decidePermit(s, p, t, "prov", `r.t.${i}`, always);
    if (d.type === "permit") {
      granted.push(t);
      s = d.state;
    } else if (d.state) s = d.state;
  });
  return { granted, state: s! };
}

describe("governor - token bucket", () => {
  it("governor - a burst is granted at once, then one per refill interval", () => {
    const p = policy({ perMinute: 60, burst: 3 });
    // 10 asks at the same instant: the burst only.
    expect(drive(p, Array(10).fill(T0)).granted).toHaveLength(3);
    // One ask every 100 ms for 10 s: the burst plus one a second.
    const times = Array.from({ length: 100 }, (_, i) => T0 + i * 100);
    const { granted } = drive(p, times);
    expect(granted.length).toBe(3 + 9);
  });

  it("governor - a refusal says when the next token comes", () => {
    const p = policy({ perMinute: 30, burst: 1 });
    const first = decidePermit(undefined, p, T0, "prov", "r.t.1", always);
    expect(first.type).toBe("permit");
    const second = decidePermit(first.type === "permit" ? first.state : undefined, p, T0 + 500, "prov", "r.t.2", always);
    expect(second).toMatchObject({ type: "refuse", until: T0 + 2_000, reason: "rate limit of 30 per minute reached" });
  });

  it("governor - a clock behind the stored refill time adds no tokens and never moves it back", () => {
    const p = policy({ perMinute: 60, burst: 1 });
    const a = decidePermit(undefined, p, T0 + 10_000, "prov", "r.t.1", always);
    if (a.type !== "permit") throw new Error("expected a permit");
    const b = decidePermit(a.state, p, T0, "prov", "r.t.2", always);
    expect(b.type).toBe("refuse");
    expect(a.state.refilledAt).toBe(T0 + 10_000);
  });

  it("governor - asking again for a granted attempt is granted without another token", () => {
    const p = policy({ perMinute: 60, burst: 1 });
    const a = decidePermit(undefined, p, T0, "prov", "r.t.1", always);
    if (a.type !== "permit") throw new Error("expected a permit");
    expect(decidePermit(a.state, p, T0, "prov", "r.t.1", always).type).toBe("permit");
    expect(decidePermit(a.state, p, T0, "prov", "r.t.2", always).type).toBe("refuse");
  });
});

describe("governor - concurrency", () => {
  it("governor - at most `concurrent` attempts hold the provider; a finish or a lost attempt frees a place", () => {
    const p = policy({ concurrent: 2 });
    const { state } = drive(p, [T0, T0]);
    expect(Object.keys(state.active)).toEqual(["r.t.0", "r.t.1"]);
    expect(decidePermit(state, p, T0, "prov", "r.t.9", always)).toMatchObject({ type: "refuse", reason: "2 tasks running (limit 2)" });
    const done = applyOutcome(state, p, T0 + 5, { attempt: "r.t.0", ok: true }, "prov")!;
    expect(decidePermit(done.state, p, T0 + 6, "prov", "r.t.9", always).type).toBe("permit");
    // r.t.1 is no longer seen running anywhere: it stops holding its place.
    const lost = decidePermit(state, p, T0 + 7, "prov", "r.t.9", (key) => key !== "r.t.1");
    expect(lost.type).toBe("permit");
    if (lost.type === "permit") expect(Object.keys(lost.state.active).sort()).toEqual(["r.t.0", "r.t.9"]);
  });
});

describe("governor - circuit breaker", () => {
  const p = policy({ circuit: { failures: 3, cooldownMs: 60_000, probes: 1, successes: 2 } });
  const fail = (s: ProviderState | undefined, i: number, kind: "auth" | "crash" | "exit" | "rate_limit", at = T0, retryAt?: number) =>
    applyOutcome(s, p, at, { attempt: `r.t.${i}`, ok: false, kind, message: "Invalid API key", ...(retryAt ? { retryAt } : {}) }, "prov")!;

  it("governor - opens after N consecutive provider failures, not on task failures, and a success resets the count", () => {
    let s = fail(undefined, 1, "auth").state;
    s = fail(s, 2, "exit").state; // the task's own failure: neutral
    s = fail(s, 3, "auth").state;
    expect(s.circuit).toMatchObject({ state: "closed", failures: 2 });
    s = applyOutcome(s, p, T0, { attempt: "r.t.4", ok: true }, "prov")!.state;
    expect(s.circuit.failures).toBe(0);
    fail(s, 5, "auth");
    s = fail(fail(s, 5, "auth").state, 6, "crash").state;
    const third = fail(s, 7, "auth");
    expect(third.state.circuit).toMatchObject({ state: "open", until: T0 + 60_000 });
    expect(third.transitions).toEqual([{ from: "closed", to: "open", reason: "3 auth failures in a row (last: Invalid API key)", until: T0 + 60_000 }]);
  });

  it("governor - a repeated report counts once", () => {
    const s = fail(undefined, 1, "auth").state;
    expect(applyOutcome(s, p, T0, { attempt: "r.t.1", ok: false, kind: "auth" }, "prov")).toBeUndefined();
  });

  it("governor - open refuses until the cooldown, then lets K probes through; M successes close it", () => {
    let s = fail(fail(fail(undefined, 1, "auth").state, 2, "auth").state, 3, "auth").state;
    expect(decidePermit(s, p, T0 + 59_000, "prov", "r.t.10", always)).toMatchObject({ type: "refuse", until: T0 + 60_000 });
    const probe = decidePermit(s, p, T0 + 60_000, "prov", "r.t.10", always);
    expect(probe).toMatchObject({ type: "permit", transitions: [{ from: "open", to: "half_open" }] });
    if (probe.type !== "permit") return;
    s = probe.state;
    expect(s.circuit).toMatchObject({ state: "half_open", probes: ["r.t.10"] });
    // One probe at a time.
    expect(decidePermit(s, p, T0 + 60_001, "prov", "r.t.11", always)).toMatchObject({ type: "refuse", reason: "circuit half-open: 1 probe task running" });
    s = applyOutcome(s, p, T0 + 61_000, { attempt: "r.t.10", ok: true }, "prov")!.state;
    expect(s.circuit).toMatchObject({ state: "half_open", successes: 1 });
    const second = decidePermit(s, p, T0 + 61_001, "prov", "r.t.11", always);
    if (second.type !== "permit") throw new Error("expected a second probe");
    const closed = applyOutcome(second.state, p, T0 + 62_000, { attempt: "r.t.11", ok: true }, "prov")!;
    expect(closed.state.circuit).toMatchObject({ state: "closed", failures: 0 });
    expect(closed.transitions).toEqual([{ from: "half_open", to: "closed", reason: "2 probe tasks succeeded" }]);
  });

  it("governor - a failed probe opens it again; a late result of an older attempt does not count", () => {
    let s = fail(fail(fail(undefined, 1, "auth").state, 2, "auth").state, 3, "auth").state;
    const probe = decidePermit(s, p, T0 + 60_000, "prov", "r.t.10", always);
    if (probe.type !== "permit") throw new Error("expected a probe");
    s = applyOutcome(probe.state, p, T0 + 60_500, { attempt: "r.t.0", ok: true }, "prov")!.state; // granted before: not a probe
    expect(s.circuit).toMatchObject({ state: "half_open", successes: 0 });
    const again = fail(s, 10, "auth", T0 + 61_000);
    expect(again.state.circuit).toMatchObject({ state: "open", until: T0 + 121_000 });
    expect(again.transitions[0]).toMatchObject({ from: "half_open", to: "open" });
  });

  it("governor - a usage limit with a reset time parks the provider until then at once", () => {
    const reset = T0 + 3 * 3_600_000;
    const parked = fail(undefined, 1, "rate_limit", T0, reset);
    expect(parked.state.circuit).toMatchObject({ state: "open", until: reset });
    expect(parked.transitions[0]!.reason).toMatch(/^usage limit reached; resets 2026-12-05T15:00:00.000Z/);
    // Before the reset, no permit; the refusal names the reset time.
    expect(decidePermit(parked.state, p, reset - 1, "prov", "r.t.2", always)).toMatchObject({ type: "refuse", until: reset });
    // A rate limit without a time counts like any provider failure.
    expect(fail(undefined, 1, "rate_limit").state.circuit).toMatchObject({ state: "closed", failures: 1 });
  });
});

describe("governor - the balancer's gate", () => {
  it("governor - a task takes the first provider of its list with room; the next falls back", () => {
    const p = policy({ perMinute: 60, burst: 2 });
    const rooms = new Map<string, ProviderAvailability>();
    const states = new Map<string, ProviderState>([["a", initialState("a", p, T0)]]);
    const unknown = (name: string) => availability(states.get(name), p, T0, always);
    expect(gate(["a", "b"], rooms, unknown)).toEqual({ type: "use", provider: "a" });
    expect(gate(["a", "b"], rooms, unknown)).toEqual({ type: "use", provider: "a" });
    expect(gate(["a", "b"], rooms, unknown)).toEqual({ type: "use", provider: "b" });
  });

  it("governor - a task whose providers all have open circuits waits for the one that opens soonest, with the time", () => {
    const p = policy();
    const open = (name: string, until: number): ProviderState => ({ ...initialState(name, p, T0), circuit: { state: "open", failures: 3, until, probes: [], successes: 0, reason: "3 auth failures in a row", changedAt: T0 } });
    const states = new Map([
      ["a", open("a", T0 + 3_600_000)],
      ["b", open("b", T0 + 300_000)],
    ]);
    const g = gate(["a", "b"], new Map(), (name) => availability(states.get(name), p, T0, always));
    expect(g).toEqual({
      type: "wait",
      provider: "b",
      until: T0 + 300_000,
      reason: "waiting for provider b until 12:05 UTC: circuit open: 3 auth failures in a row (none of the task's 2 providers has room)",
    });
    expect(hhmm(T0 + 300_001)).toBe("12:06 UTC");
  });
});

describe("governor - rotation", () => {
  const none = () => undefined;

  it("governor - fallback (and no rotation) tries the providers as written", () => {
    expect(rotationOrder(["a", "b", "c"], undefined, 2, none)).toEqual(["a", "b", "c"]);
    expect(rotationOrder(["a", "b", "c"], "fallback", 2, none)).toEqual(["a", "b", "c"]);
  });

  it("governor - round_robin: each placement moves the turn to the next provider, so equal providers alternate", () => {
    const list = ["a", "b", "c"];
    let cursor: number | undefined;
    const used: string[] = [];
    // Every provider has room: each task takes the first of the rotated list.
    for (let i = 0; i < 7; i++) {
      const g = gate(rotationOrder(list, "round_robin", cursor, none), new Map(), () => ({ room: 5 }));
      expect(g.type).toBe("use");
      const p = (g as { provider: string }).provider;
      used.push(p);
      cursor = nextCursor(list, p);
    }
    expect(used).toEqual(["a", "b", "c", "a", "b", "c", "a"]);
  });

  it("governor - round_robin skips a provider without room and the turn goes on after the one used", () => {
    const list = ["a", "b", "c"];
    const rooms = new Map<string, ProviderAvailability>([["b", { room: 0, reason: "circuit open" }]]);
    const order = rotationOrder(list, "round_robin", nextCursor(list, "a"), none);
    expect(order).toEqual(["b", "c", "a"]);
    const g = gate(order, rooms, () => ({ room: 1 }));
    expect(g).toEqual({ type: "use", provider: "c" });
    expect(nextCursor(list, "c")).toBe(0);
  });

  it("governor - cost_optimized: subscriptions first (as written), then the cheapest expected task, unpriced last", () => {
    const costs: Record<string, ProviderCost> = {
      dear: { access: "api", perTask: 0.9 },
      cheap: { access: "api", perTask: 0.1 },
      sub1: { access: "subscription" },
      unpriced: { access: "api" },
      sub2: { access: "subscription", perTask: 5 },
    };
    const order = rotationOrder(["unpriced", "dear", "sub1", "cheap", "sub2"], "cost_optimized", undefined, (n) => costs[n]);
    expect(order).toEqual(["sub1", "sub2", "cheap", "dear", "unpriced"]);
    // A subscription with no room falls back to the cheapest pay-per-use account.
    const g = gate(order, new Map([["sub1", { room: 0 }], ["sub2", { room: 0 }]]), () => ({ room: 1 }));
    expect(g).toEqual({ type: "use", provider: "cheap" });
  });

  it("providers - a task's expected cost is its tokens at its model's price; unknown without a price", () => {
    const price = (m: string) => (m === "m" ? { input: 3, output: 15 } : undefined);
    expect(expectedTaskCost({ prices: "m", taskTokens: { input: 1_000_000, output: 100_000 } }, price)).toBeCloseTo(4.5);
    expect(expectedTaskCost({ prices: "m" }, price)).toBeCloseTo(0.3 + 0.15);
    expect(expectedTaskCost({ prices: "other" }, price)).toBeUndefined();
    expect(expectedTaskCost({}, price)).toBeUndefined();
  });

  it("graph - rotation per task or for the whole graph; a rotation without providers is refused", () => {
    const g = GraphFileSchema.parse({
      rotation: "round_robin",
      tasks: [
        { id: "a", prompt: "x", providers: ["p", "q"] },
        { id: "b", prompt: "x", providers: ["p", "q"], rotation: "cost_optimized" },
        { id: "c", run: "true" },
      ],
    });
    expect(g.tasks.map((t) => t.rotation)).toEqual(["round_robin", "cost_optimized", undefined]);
    const bad = GraphFileSchema.safeParse({ tasks: [{ id: "a", run: "true", rotation: "round_robin" }] });
    expect(bad.success).toBe(false);
    expect(JSON.stringify(bad.error?.issues)).toMatch(/give the task 'providers/);
    expect(GraphFileSchema.safeParse({ tasks: [{ id: "a", provider: "p", rotation: "sideways" }] }).success).toBe(false);
  });
});

describe("providers - config and tasks", () => {
  it("providers - config parses limits, credentials and circuit with defaults", () => {
    const c = parseConfig({
      providers: {
        "claude-max": { agent: "claude", access: "subscription", limits: { concurrent: 4, perMinute: 10, burst: 3 } },
        "claude-api": { agent: "claude", access: "api", credentials: { env: "ANTHROPIC_API_KEY", from: "TEAM_KEY" }, circuit: { failures: 5, cooldown: "2m" }, prices: "claude-sonnet-4" },
      },
    });
    expect(c.providers["claude-max"]!.circuit).toEqual({ failures: 3, cooldownMs: 60_000, probes: 1, successes: 2 });
    expect(c.providers["claude-api"]!.circuit.cooldownMs).toBe(120_000);
    expect(policyOf(c.providers["claude-max"]!)).toMatchObject({ perMinute: 10, burst: 3, concurrent: 4 });
    expect(() => parseConfig({ providers: { x: { agent: "claude", access: "free" } } } as never)).toThrow(/access/);
    expect(() => parseConfig({ providers: { "bad name": { agent: "claude", access: "api" } } })).toThrow(/provider name/);
  });

  it("providers - the credential reaches the child under the CLI's name, from the worker's variable", () => {
    const c = parseConfig({ providers: { a: { agent: "claude", access: "api", credentials: { env: "ANTHROPIC_API_KEY", from: "TEAM_KEY" }, env: { CLAUDE_CONFIG_DIR: "/x" } } } });
    const assignment = providerAssignment("a", c.providers.a!);
    expect(providerEnvironment(assignment, { TEAM_KEY: "sk-1", ANTHROPIC_API_KEY: "other" })).toEqual({ env: { CLAUDE_CONFIG_DIR: "/x", ANTHROPIC_API_KEY: "sk-1" } });
    expect(providerEnvironment(assignment, {})).toEqual({ env: { CLAUDE_CONFIG_DIR: "/x" }, missing: "TEAM_KEY" });
  });

  it("providers - a graph file's provider/providers, and unknown providers named with a suggestion", () => {
    const g = GraphFileSchema.parse({ tasks: [{ id: "a", prompt: "x", provider: "claude-max" }, { id: "b", prompt: "y", providers: ["claude-max", "claude-api"] }] });
    expect(g.tasks.map((t) => t.providers)).toEqual([["claude-max"], ["claude-max", "claude-api"]]);
    expect(() => GraphFileSchema.parse({ tasks: [{ id: "a", provider: "x", providers: ["y"] }] })).toThrow(/not both/);
    const providers = ProvidersConfigSchema.parse({ "claude-max": { agent: "claude", access: "subscription" } });
    expect(() => checkProviders(g, providers)).toThrow("task 'b': unknown provider 'claude-api' (did you mean 'claude-max'?); the providers are: claude-max");
    expect(() => checkProviders({ tasks: [{ id: "a", providers: ["claude-mx"] }] }, providers)).toThrow(/did you mean 'claude-max'/);
  });
});

describe("scheduler - failures on a provider", () => {
  const task = (providers?: string[], providerFailures?: number) => ({ def: { id: "t", ...(providers ? { providers } : {}) }, rec: { ...(providerFailures !== undefined ? { providerFailures } : {}) } });

  it("scheduler - auth and rate limits of a task with providers requeue it without its retry budget, up to a cap", () => {
    expect(providerFailureRule(task(["a", "b"]), { kind: "auth" })).toEqual({ again: true, counts: { providerFailures: 1 } });
    expect(providerFailureRule(task(["a"], 3), { kind: "rate_limit" })).toEqual({ again: true, counts: { providerFailures: 4 } });
    // The task's own failures, and tasks without providers, keep their retry policy.
    expect(providerFailureRule(task(["a"]), { kind: "exit" })).toEqual({ again: false, counts: {} });
    expect(providerFailureRule(task(), { kind: "auth" })).toEqual({ again: false, counts: {} });
    // A rate or usage limit requeues any task, providers or not: the limit is the account's, not the task's.
    expect(providerFailureRule(task(), { kind: "rate_limit" })).toEqual({ again: true, counts: { providerFailures: 1 } });
    expect(providerFailureRule(task(undefined, MAX_PROVIDER_FAILURES), { kind: "rate_limit" }).capMessage).toMatch(/^task 't' hit its agent's rate or usage limit 11 times: not run again/);
    const capped = providerFailureRule(task(["a", "b"], MAX_PROVIDER_FAILURES), { kind: "auth" });
    expect(capped).toMatchObject({ again: false, counts: { providerFailures: MAX_PROVIDER_FAILURES + 1 } });
    expect(capped.capMessage).toMatch(/^task 't' failed 11 times on its providers \(a, b\)/);
  });
});

describe("governor - adaptive concurrency", () => {
  const adaptive = { minConcurrent: 2, windowMs: 300_000, latencyMs: 60_000, cooldownMs: 60_000, minSamples: 10 };
  const p = policy({ concurrent: 12, perMinute: 40, burst: 5, adaptive });
  /** Reports n outcomes, `errors` of them provider failures, each `ms` long, at t. */
  const report = (s: ProviderState | undefined, from: number, n: number, errors: number, t: number, ms = 1_000) => {
    for (let i = 0; i < n; i++) {
      s = applyOutcome(s, p, t, { attempt: `r.t${from + i}.1`, ok: i >= errors, ...(i < errors ? { kind: "rate_limit" as const } : {}), latencyMs: ms }, "prov")!.state;
    }
    return s!;
  };
  const permit = (s: ProviderState, t: number, i = 999) => decidePermit(s, p, t, "prov", `r.x${i}.1`, always);

  it("governor - a 30% error rate cuts concurrency by a quarter and the rate by half; clear errors raise them back within bounds, one step per cooldown", () => {
    let s = report(undefined, 0, 10, 3, T0); // 30% provider failures
    const down = permit(s, T0 + 1);
    expect(down.steps).toEqual([{ direction: "down", from: { concurrent: 12, perMinute: 40 }, to: { concurrent: 9, perMinute: 20 }, reason: "error rate 30% over the last 10 tasks (above 20%)" }]);
    s = down.state!;
    expect(s.adapted).toEqual({ concurrent: 9, perMinute: 20, steppedAt: T0 + 1, direction: "down", reason: "error rate 30% over the last 10 tasks (above 20%)" });
    // The new limits are in force (the rate refills at 20 a minute now).
    expect(availability(s, p, T0 + 2, always).room).toBeLessThanOrEqual(9);
    // Within the cooldown no step, whatever the outcomes.
    s = report(s, 100, 10, 0, T0 + 10_000);
    expect(permit(s, T0 + 20_000, 1).steps).toEqual([]);
    // After it, clear errors raise them by a third and a quarter...
    const up = permit(s, T0 + 61_002, 2);
    expect(up.steps[0]).toMatchObject({ direction: "up", from: { concurrent: 9, perMinute: 20 }, to: { concurrent: 12, perMinute: 25 } });
    s = up.state!;
    // ...never above the configured limits, and a step at the ceiling is no step.
    s = report(s, 200, 10, 0, T0 + 130_000);
    const upAgain = permit(s, T0 + 130_001, 3);
    expect(upAgain.steps[0]).toMatchObject({ to: { concurrent: 12, perMinute: 31.25 } });
    s = report(upAgain.state!, 300, 10, 0, T0 + 200_000);
    s = report(s, 400, 10, 0, T0 + 270_000);
    const top = permit(s, T0 + 270_001, 4);
    expect(top.steps[0]?.to).toEqual({ concurrent: 12, perMinute: 39.0625 });
  });

  it("governor - slow tasks cut the limits too; too few outcomes, or the task's own failures, take no step; never below the minimum", () => {
    const slow = report(undefined, 0, 10, 0, T0, 120_000);
    expect(permit(slow, T0 + 1).steps[0]).toMatchObject({ direction: "down", reason: "median latency 120000 ms over the last 10 tasks (above 60000 ms)" });
    expect(permit(report(undefined, 0, 9, 9, T0), T0 + 1).steps).toEqual([]);
    let own: ProviderState | undefined;
    for (let i = 0; i < 20; i++) own = applyOutcome(own, p, T0, { attempt: `r.o${i}.1`, ok: false, kind: "exit" }, "prov")!.state;
    expect(own!.samples).toEqual([]);
    let s: ProviderState = { ...initialState("prov", p, T0), adapted: { concurrent: 2, perMinute: 1, steppedAt: 0 } };
    s = report(s, 0, 10, 10, T0);
    expect(permit(s, T0 + 1).steps).toEqual([]);
  });

  it("providers - adaptive needs a limit to adjust", () => {
    expect(() => parseConfig({ providers: { a: { agent: "claude", access: "api", limits: { adaptive: {} } } } })).toThrow(/adaptive needs a limit to adjust/);
    const c = parseConfig({ providers: { a: { agent: "claude", access: "api", limits: { concurrent: 8, adaptive: { latency: "10m" } } } } });
    expect(policyOf(c.providers.a!).adaptive).toEqual({ minConcurrent: 1, windowMs: 300_000, latencyMs: 600_000, cooldownMs: 60_000, minSamples: 10 });
  });
});
