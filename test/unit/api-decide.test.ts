import { describe, expect, it } from "vitest";
import { budgetRefusal, controlRefusal, resolveRefusal, scaleDecision } from "../../src/actors/api/decide.js";
import { API, parseRequest } from "../../src/runtime/api.js";
import { SCHEMAS, type HitlRecord, type RunRecord } from "../../src/runtime/messages.js";
import type { RunStatusView } from "../../src/runtime/records.js";
import { SAMPLES } from "../helpers/fuzz.js";

const run = (over: Partial<RunRecord> = {}): RunRecord => ({ ...SCHEMAS.RunRecord.schema.parse(SAMPLES.RunRecord![0]), ...over });
const hitl = (over: Partial<HitlRecord> = {}): HitlRecord => ({ ...SCHEMAS.HitlRecord.schema.parse(SAMPLES.HitlRecord![0]), ...over });
const view = (r: RunRecord, status: RunStatusView["tasks"][number]["status"] = "running"): RunStatusView => ({ run: r, tasks: [{ id: "api", status, attempts: 1, needs: [] }] });

describe("api decide - control", () => {
  it("unknown run or task: not_found; ended run or task: conflict; a live one: allowed", () => {
    expect(controlRefusal(undefined, { runId: "r9" }, "cancel")?.code).toBe("not_found");
    expect(controlRefusal(view(run()), { runId: "r1", taskId: "ghost" }, "pause")?.code).toBe("not_found");
    expect(controlRefusal(view(run({ status: "succeeded" })), { runId: "r1" }, "cancel")?.message).toMatch(/already ended \(succeeded\): nothing to cancel/);
    expect(controlRefusal(view(run(), "failed"), { runId: "r1", taskId: "api" }, "resume")?.code).toBe("conflict");
    expect(controlRefusal(view(run({ status: "needs_attention" })), { runId: "r1", taskId: "api" }, "cancel")).toBeUndefined();
  });
});

describe("api decide - budget", () => {
  it("nothing asked: bad_request; unknown: not_found; ended or stopped by its budget: conflict; a lower cap: bad_request", () => {
    expect(budgetRefusal(run(), "r1", {})?.code).toBe("bad_request");
    expect(budgetRefusal(undefined, "r9", { usd: { add: 1 } })?.code).toBe("not_found");
    expect(budgetRefusal(run({ status: "failed" }), "r1", { usd: { add: 1 } })?.code).toBe("conflict");
    expect(budgetRefusal(run({ budgetStopped: "over" }), "r1", { usd: { add: 1 } })?.code).toBe("conflict");
    const capped = run({ budget: { maxCostUsd: 10, onExceed: "wait", defaultTaskCostUsd: 1, defaultTaskTokens: 1000, changes: 0 } });
    expect(budgetRefusal(capped, "r1", { usd: { set: 5 } })?.message).toMatch(/cap is \$10\.00 already/);
    expect(budgetRefusal(capped, "r1", { usd: { set: 20 } })).toBeUndefined();
  });
});

describe("api decide - hitl resolve", () => {
  it("refuses what the record cannot take, says why", () => {
    const ask = { id: "r1.api", choice: "ours" as const };
    expect(resolveRefusal(undefined, false, ask)?.code).toBe("not_found");
    expect(resolveRefusal(hitl(), false, ask)?.code).toBe("conflict");
    expect(resolveRefusal(hitl(), true, { ...ask, round: 0 })?.message).toMatch(/at round 1 now, not 0/);
    expect(resolveRefusal(hitl(), true, { ...ask, choice: "manual" })?.code).toBe("bad_request");
    expect(resolveRefusal(hitl(), true, { ...ask, resolver: "x" })?.message).toMatch(/'resolver' goes with choice 'agent'/);
    expect(resolveRefusal(hitl(), true, { ...ask, choice: "agent" })?.message).toMatch(/no resolver configured/);
    expect(resolveRefusal(hitl({ state: "resolving", choice: "theirs" }), true, ask)?.code).toBe("conflict");
    expect(resolveRefusal(hitl(), true, { ...ask, round: 1 })).toBeUndefined();
  });
});

describe("api decide - workers scale", () => {
  const at = "2026-05-01T12:00:00.000Z";
  const known = { configured: [{ name: "gpu", min: 1, max: 4 }], scaler: ["cpu"] };
  it("unknown pool: not_found naming the pools; min above max: bad_request; autoscale merges over an earlier autoscale", () => {
    const no = scaleDecision({ pool: "tpu", source: "scale", policy: { min: 1 }, by: "me", at }, known, undefined);
    expect("refusal" in no && no.refusal.message).toMatch(/no pool 'tpu': the pools are gpu, cpu/);
    const high = scaleDecision({ pool: "gpu", source: "scale", policy: { min: 9 }, by: "me", at }, known, undefined);
    expect("refusal" in high && high.refusal.code).toBe("bad_request");
    const prev = { pool: "gpu", policy: { min: 2 }, source: "autoscale" as const, by: "x", at };
    const merged = scaleDecision({ pool: "gpu", source: "autoscale", policy: { max: 3 }, by: "me", at }, known, prev);
    expect("record" in merged && merged.record.policy).toEqual({ min: 2, max: 3 });
    const pinned = scaleDecision({ pool: "gpu", source: "scale", policy: { min: 3, max: 3 }, by: "me", at }, known, prev);
    expect("record" in pinned && pinned.record.policy).toEqual({ min: 3, max: 3 });
  });
});

describe("api - request parsing", () => {
  it("empty is {}; not JSON, wrong shapes and unknown fields are bad_request naming the endpoint and the field", () => {
    expect(parseRequest("runs.list", new Uint8Array())).toEqual({ active: false });
    const bad = (e: keyof typeof API, body: string) => {
      try {
        parseRequest(e, new TextEncoder().encode(body));
      } catch (err) {
        return err as { code: string; message: string };
      }
      throw new Error("accepted");
    };
    expect(bad("runs.get", "{")).toMatchObject({ code: "bad_request", message: expect.stringMatching(/^runs\.get: the request is not JSON/) });
    expect(bad("runs.get", "{}").message).toMatch(/runId/);
    expect(bad("runs.cancel", '{"runId":"r1","extra":1}').message).toMatch(/extra/);
    expect(bad("budget.raise", '{"runId":"r1","usd":{"set":-1}}').message).toMatch(/usd/);
  });
});
