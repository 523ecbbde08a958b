import { describe, expect, it } from "vitest";
import { providerView } from "../../src/cli/providers-view.js";
import { adapt, applyOutcome, decidePermit, policyOf } from "../../src/runtime/governor/decide.js";
import type { ProviderState } from "../../src/runtime/messages.js";
import { ProvidersConfigSchema } from "../../src/runtime/providers.js";

const T0 = Date.parse("2026-12-05T12:00:00Z");
const always = () => true;

describe("status - the providers view", () => {
  it("status - a provider's permits, running of its limit and spend today come from the shared state the governor wrote", () => {
    const def = ProvidersConfigSchema.parse({ p: { agent: "claude", access: "api", limits: { concurrent: 4, perMinute: 6, burst: 3 } } }).p!;
    const policy = policyOf(def);
    let s: ProviderState | undefined;
    for (const a of ["r.a.1", "r.b.1"]) {
      const d = decidePermit(s, policy, T0, "p", a, always);
      expect(d.type).toBe("permit");
      s = d.state!;
    }
    s = applyOutcome(s, policy, T0 + 1_000, { attempt: "r.a.1", ok: true, costUsd: 0.25, tokens: 12_000 }, "p")!.state;
    const v = providerView(s, T0 + 1_000);
    // 3 - 2 permits + 0.1 refilled in a second (6 a minute): one whole permit.
    expect(v.permits).toEqual({ available: 1, burst: 3, perMinute: 6 });
    expect(v.running).toBe(1);
    expect(v.concurrent).toBe(4);
    expect(v.spendToday).toEqual({ costUsd: 0.25, tokens: 12_000, tasks: 1 });
    expect(v.circuit).toEqual({ state: "closed", until: null, reason: null });
    expect(v.cells).toEqual(["p", "closed", "1 of 3 permits, 6/min", "1 running of 4", "$0.25 today, 1 task, 12k tokens", ""]);
    // Yesterday's spend is not today's.
    expect(providerView(s, T0 + 86_400_000).spendToday).toEqual({ costUsd: 0, tokens: 0, tasks: 0 });
  });

  it("status - an open circuit shows until when and why; an adaptive step shows the limits in force against the configured ones and its reason", () => {
    const def = ProvidersConfigSchema.parse({
      p: { agent: "claude", access: "api", limits: { concurrent: 8, perMinute: 40, adaptive: { minSamples: 10 } }, circuit: { failures: 1, cooldown: "10m" } },
    }).p!;
    const policy = policyOf(def);
    let s = (decidePermit(undefined, policy, T0, "p", "r.x.1", always) as { state: ProviderState }).state;
    // 10 outcomes, 3 of them provider failures: the next permit steps the limits down.
    s = { ...s, samples: Array.from({ length: 10 }, (_, i) => [T0, i < 3 ? 0 : 1, 1_000] as [number, 0 | 1, number]) };
    const stepped = adapt(s, policy, policy.adaptive!, T0 + 1)!;
    s = stepped.state;
    s = applyOutcome(s, policy, T0 + 2, { attempt: "r.x.1", ok: false, kind: "auth", message: "invalid api key" }, "p")!.state;
    const v = providerView(s, T0 + 3);
    expect(v.circuit.state).toBe("open");
    expect(v.cells[1]).toMatch(/^open until 12:1[01] UTC$/);
    expect(v.concurrent).toBe(6);
    expect(v.permits?.perMinute).toBe(20);
    expect(v.configured).toEqual({ concurrent: 8, perMinute: 40 });
    expect(v.cells[3]).toBe("0 running of 6 (configured 8 at once, 40/min)");
    expect(v.lastAdaptive).toEqual({ at: new Date(T0 + 1).toISOString(), direction: "down", reason: "error rate 30% over the last 10 tasks (above 20%)" });
    expect(v.cells[5]).toBe("circuit: 1 auth failures in a row (last: invalid api key); stepped down at 12:00:00 UTC: error rate 30% over the last 10 tasks (above 20%)");
  });

  it("status - a state no permit was granted on yet (only outcomes reported) says its limits are not known", () => {
    const s = applyOutcome(undefined, { burst: 1, circuit: { failures: 3, cooldownMs: 60_000, probes: 1, successes: 2 } }, T0, { attempt: "r.a.1", ok: true }, "q")!.state;
    expect(providerView(s, T0).cells.slice(2, 4)).toEqual(["limits not known yet (no permit granted)", "0 running"]);
  });
});
