import { describe, expect, it } from "vitest";
import { hitlTransition, mayContinue, mayRequest, type HitlDetails, type HitlEvent } from "../../src/runtime/hitl-state.js";
import type { HitlRecord } from "../../src/runtime/messages.js";

const sha = (c: string) => c.repeat(40);

const details = (over: Partial<HitlDetails> = {}): HitlDetails => ({
  id: "r1.b",
  runId: "r1",
  taskId: "b",
  attempt: 1,
  repo: "/repo",
  integrationBranch: "ado/r1/integration",
  branch: "ado/r1/b",
  source: sha("b"),
  base: sha("0"),
  target: sha("a"),
  files: ["app.txt"],
  reason: "conflict",
  message: "merge conflict in app.txt",
  conflicts: [{ path: "app.txt", kind: "content", truncated: false }],
  prompts: { task: "add B", related: [] },
  settings: { mode: "merge", rules: [] },
  ...over,
});

const T = (n: number) => `2026-01-01T00:00:0${n}.000Z`;

/** Applies events in turn; every one must be accepted. */
function run(record: HitlRecord | undefined, ...events: HitlEvent[]): HitlRecord {
  for (const e of events) {
    const t = hitlTransition(record, e);
    if (!t.ok) throw new Error(`${e.type} refused: ${t.refusal.message}`);
    record = t.record;
  }
  return record!;
}

const escalated = () => run(undefined, { type: "escalate", at: T(0), details: details() });

describe("hitl-state - escalation", () => {
  it("hitl-state - a first escalation opens round 1 with no history", () => {
    expect(escalated()).toEqual({ ...details(), round: 1, state: "open", history: [], createdAt: T(0), updatedAt: T(0) });
  });

  it("hitl-state - escalating a merge that waits already is refused (the merge coordinator replays instead)", () => {
    const t = hitlTransition(escalated(), { type: "escalate", at: T(1), details: details() });
    expect(t).toMatchObject({ ok: false, refusal: { code: "waiting" } });
  });

  it("hitl-state - a record for another commit of the task is replaced by a fresh round 1", () => {
    const decided = run(escalated(), { type: "start", at: T(1), round: 1, choice: "skip", by: "p" }, { type: "decide", at: T(2), round: 1, outcome: "skipped", message: "skipped" });
    const fresh = run(decided, { type: "escalate", at: T(3), details: details({ source: sha("c") }) });
    expect(fresh).toMatchObject({ source: sha("c"), round: 1, state: "open", history: [], createdAt: T(3) });
  });

  it("hitl-state - a resolution that did not land opens the next round, with what was tried in the history", () => {
    const resolving = run(escalated(), { type: "start", at: T(1), round: 1, choice: "agent", by: "ada@host" });
    const next = run(resolving, {
      type: "escalate",
      at: T(2),
      details: details({ message: "still conflicted", resolverOutput: "gave up" }),
      tried: { outcome: "conflict", message: "the resolver exited with code 1" },
    });
    expect(next).toMatchObject({ round: 2, state: "open", message: "still conflicted", resolverOutput: "gave up", createdAt: T(0), updatedAt: T(2) });
    expect(next.choice).toBeUndefined();
    expect(next.history).toEqual([{ round: 1, choice: "agent", by: "ada@host", at: T(2), outcome: "conflict", message: "the resolver exited with code 1" }]);
  });
});

describe("hitl-state - resolving and deciding", () => {
  it("hitl-state - start, then decide merged: resolved, with the round's entry and commit", () => {
    const resolving = run(escalated(), { type: "start", at: T(1), round: 1, choice: "theirs", by: "ada@host" });
    expect(resolving).toMatchObject({ state: "resolving", choice: "theirs", by: "ada@host", updatedAt: T(1) });
    const done = run(resolving, { type: "decide", at: T(2), round: 1, outcome: "merged", message: "merged (merged)", commit: sha("d") });
    expect(done).toMatchObject({ state: "resolved", resolvedAt: T(2), updatedAt: T(2) });
    expect(done.history).toEqual([{ round: 1, choice: "theirs", by: "ada@host", at: T(2), outcome: "merged", message: "merged (merged)", commit: sha("d") }]);
  });

  it("hitl-state - a start again while resolving is allowed (the merge coordinator died carrying it out)", () => {
    const resolving = run(escalated(), { type: "start", at: T(1), round: 1, choice: "ours", by: "p" });
    expect(run(resolving, { type: "start", at: T(2), round: 1, choice: "ours", by: "p" })).toMatchObject({ state: "resolving", updatedAt: T(2) });
  });

  it("hitl-state - a start for a decided round is refused with the entry to replay; one for another round is stale", () => {
    const done = run(escalated(), { type: "start", at: T(1), round: 1, choice: "ours", by: "p" }, { type: "decide", at: T(2), round: 1, outcome: "merged", message: "m", commit: sha("d") });
    const again = hitlTransition(done, { type: "start", at: T(3), round: 1, choice: "theirs", by: "q" });
    expect(again).toMatchObject({ ok: false, refusal: { code: "decided", entry: { round: 1, choice: "ours", outcome: "merged" } } });
    expect(hitlTransition(escalated(), { type: "start", at: T(3), round: 2, choice: "ours", by: "q" })).toMatchObject({ ok: false, refusal: { code: "stale" } });
    expect(hitlTransition(undefined, { type: "start", at: T(3), round: 1, choice: "ours", by: "q" })).toMatchObject({ ok: false, refusal: { code: "missing" } });
  });

  it("hitl-state - deciding a round that is not being resolved is refused", () => {
    expect(hitlTransition(escalated(), { type: "decide", at: T(1), round: 1, outcome: "merged", message: "m" })).toMatchObject({ ok: false, refusal: { code: "not_resolving" } });
  });
});

describe("hitl-state - the person's side (ado hitl resolve)", () => {
  const manual = { worktree: "/wt/_merge/manual/r1-b-r1", branch: "ado/r1/_manual/b/1", host: "h1" };

  it("hitl-state - --manual takes an open merge; a second --manual, or a --choose meanwhile, is refused as busy... except over a manual one", () => {
    const prepared = run(escalated(), { type: "prepare_manual", at: T(1), by: "ada@h1", manual });
    expect(prepared).toMatchObject({ state: "resolving", choice: "manual", by: "ada@h1", manual });
    const twice = hitlTransition(prepared, { type: "prepare_manual", at: T(2), by: "bob@h2", manual });
    expect(twice).toMatchObject({ ok: false, refusal: { code: "busy", message: expect.stringContaining(manual.worktree) } });
    // A person may still choose over their own manual resolution; not over the merge coordinator's work.
    expect(mayRequest(prepared, "theirs")).toBeUndefined();
    const busy = run(escalated(), { type: "start", at: T(1), round: 1, choice: "agent", by: "p" });
    expect(mayRequest(busy, "theirs")).toMatchObject({ code: "busy" });
    expect(mayRequest(escalated(), "skip")).toBeUndefined();
  });

  it("hitl-state - --continue needs a prepared manual resolution; reopen puts an abandoned one back to open", () => {
    expect(mayContinue(escalated())).toMatchObject({ code: "not_resolving" });
    const prepared = run(escalated(), { type: "prepare_manual", at: T(1), by: "ada@h1", manual });
    expect(mayContinue(prepared)).toBeUndefined();
    const reopened = run(prepared, { type: "reopen", at: T(2) });
    expect(reopened).toMatchObject({ state: "open", updatedAt: T(2) });
    expect(reopened.manual).toBeUndefined();
    expect(hitlTransition(reopened, { type: "reopen", at: T(3) })).toMatchObject({ ok: false, refusal: { code: "not_resolving" } });
  });

  it("hitl-state - a manual resolution is decided like any other: merged, with the person's commit", () => {
    const prepared = run(escalated(), { type: "prepare_manual", at: T(1), by: "ada@h1", manual });
    const done = run(prepared, { type: "start", at: T(2), round: 1, choice: "manual", by: "ada@h1" }, { type: "decide", at: T(3), round: 1, outcome: "merged", message: "merged", commit: sha("e") });
    expect(done).toMatchObject({ state: "resolved", manual, history: [{ round: 1, choice: "manual", outcome: "merged", commit: sha("e") }] });
  });
});
