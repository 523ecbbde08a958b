import { describe, expect, it } from "vitest";
import { budgetRefusal, controlRefusal, manualDecision, resolveRefusal, scaleDecision, submitDecision } from "../../src/actors/api/decide.js";
import { GraphDefSchema } from "../../src/runtime/graph.js";
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

describe("api decide - hitl manual", () => {
  const manual = { worktree: "/w", branch: "ado/r1/_manual/api/1", host: "h" };
  const at = "2026-01-01T00:00:00.000Z";
  it("prepare moves an open record to resolving (manual) and reopen moves it back; a moved-on record is a conflict", () => {
    const found = { record: hitl({ state: "open", round: 1 }), revision: 4 };
    const prepared = manualDecision(found, true, { id: "r1.api", round: 1, action: "prepare", manual, revision: 4, by: "me" }, at);
    expect("record" in prepared && prepared.record).toMatchObject({ state: "resolving", choice: "manual", by: "me", manual });
    if (!("record" in prepared)) throw new Error("refused");
    const reopened = manualDecision({ record: prepared.record, revision: 5 }, true, { id: "r1.api", round: 1, action: "reopen", by: "me" }, at);
    expect("record" in reopened && reopened.record.state).toBe("open");
    expect("record" in reopened && reopened.record.manual).toBeUndefined();
    const code = (d: ReturnType<typeof manualDecision>) => ("refusal" in d ? d.refusal.code : "ok");
    expect(code(manualDecision(undefined, false, { id: "x.y", round: 1, action: "reopen", by: "me" }, at))).toBe("not_found");
    expect(code(manualDecision(found, true, { id: "r1.api", round: 1, action: "prepare", by: "me" }, at))).toBe("bad_request");
    expect(code(manualDecision(found, true, { id: "r1.api", round: 1, action: "reopen", manual, by: "me" }, at))).toBe("bad_request");
    expect(code(manualDecision(found, true, { id: "r1.api", round: 1, action: "prepare", manual, revision: 3, by: "me" }, at))).toBe("conflict");
    expect(code(manualDecision(found, true, { id: "r1.api", round: 2, action: "prepare", manual, by: "me" }, at))).toBe("conflict");
    expect(code(manualDecision(found, false, { id: "r1.api", round: 1, action: "prepare", manual, by: "me" }, at))).toBe("conflict");
    // Being resolved by another choice: the state machine refuses it.
    expect(code(manualDecision({ record: hitl({ state: "resolving", choice: "ours" }), revision: 4 }, true, { id: "r1.api", round: 1, action: "prepare", manual, by: "me" }, at))).toBe("conflict");
  });
});

describe("api decide - runs submit", () => {
  const graph = (tasks: unknown[]) => GraphDefSchema.parse({ tasks });
  const refusal = (d: ReturnType<typeof submitDecision>) => ("refusal" in d ? `${d.refusal.code}: ${d.refusal.message}` : "ok");
  it("the graph checks of ado run, and a repository with its base commit for every agent but noop", () => {
    const agents = ["noop", "shell", "claude"];
    expect(refusal(submitDecision({ graph: graph([{ id: "a", agent: "noop" }]) }, agents))).toBe("ok");
    expect(refusal(submitDecision({ graph: graph([{ id: "a", run: "true" }]), repo: "/r", baseCommit: "a".repeat(40) }, agents))).toBe("ok");
    expect(refusal(submitDecision({ graph: graph([{ id: "a", agent: "noop", needs: ["a"] }]) }, agents))).toMatch(/^bad_request: .*needs itself/);
    expect(refusal(submitDecision({ graph: graph([{ id: "a", agent: "noop", needs: ["b"] }, { id: "b", agent: "noop", needs: ["a"] }]) }, agents))).toMatch(/^bad_request: .*cycle/);
    expect(refusal(submitDecision({ graph: graph([{ id: "a", agent: "codex", prompt: "x" }]), repo: "/r", baseCommit: "a".repeat(40) }, agents))).toMatch(/^bad_request: .*unknown agent 'codex'/);
    expect(refusal(submitDecision({ graph: graph([{ id: "a", agent: "noop", variants: 2 }]) }, agents))).toMatch(/^bad_request: .*no rule to pick one/);
    expect(refusal(submitDecision({ graph: graph([{ id: "a", run: "true" }]) }, agents))).toMatch(/^bad_request: .*give 'repo'/);
    expect(refusal(submitDecision({ graph: graph([{ id: "a", agent: "noop" }]), repo: "/r" }, agents))).toMatch(/^bad_request: .*needs 'baseCommit'/);
    expect(refusal(submitDecision({ graph: graph([{ id: "a", agent: "noop" }]), remote: "git@x:y" }, agents))).toMatch(/^bad_request: .*'remote' needs 'repo'/);
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
