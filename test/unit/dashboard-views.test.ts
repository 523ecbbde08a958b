import { describe, expect, it } from "vitest";
import { AttemptLog } from "../../src/dashboard/attempts.js";
import { mergeBalancerStats } from "../../src/dashboard/queues.js";
import type { AdoEvent } from "../../src/runtime/messages.js";

const runId = "r20260101t000000-views1";
const at = "2026-01-01T00:00:00.000Z";
const BASE = "a".repeat(40);
const FANIN_BASE = "b".repeat(40);
const C1 = "c".repeat(40);
const ev = (e: Record<string, unknown>) => ({ runId, taskId: "t", at, ...e }) as AdoEvent;

describe("dashboard task view - attempts", () => {
  it("dashboard attempts - where each attempt ran, how it ended, what it cost", () => {
    const log = new AttemptLog();
    log.apply(ev({ type: "task.started", attempt: 1, workerId: "w1", branch: "ado/r/t", worktree: "/wt/t", agent: "claude" }));
    log.apply(ev({ type: "agent.usage", attempt: 1, seq: 0, inputTokens: 10, outputTokens: 5, costUsd: 0.02, costSource: "reported" }));
    log.apply(ev({ type: "task.failed", attempt: 1, workerId: "w1", error: "boom", willRetry: true, finishedAt: at, costUsd: 0.03 }));
    log.apply(ev({ type: "task.queued", attempt: 2 }));
    log.apply(ev({ type: "task.started", attempt: 2, workerId: "w2", branch: "ado/r/t", worktree: "/wt/t2" }));
    log.apply(ev({ type: "task.succeeded", attempt: 2, workerId: "w2", commit: C1, files: ["a", "b"], startedAt: at, finishedAt: at, costUsd: 0.1 }));
    log.apply(ev({ type: "task.merged", attempt: 2, integrationCommit: C1 }));
    expect(log.all()).toEqual([
      { attempt: 1, status: "retrying", workerId: "w1", agent: "claude", branch: "ado/r/t", worktree: "/wt/t", startedAt: at, finishedAt: at, costUsd: 0.03, tokens: 15, error: "boom" },
      { attempt: 2, status: "merged", workerId: "w2", branch: "ado/r/t", worktree: "/wt/t2", startedAt: at, finishedAt: at, costUsd: 0.1, commit: C1, files: 2 },
    ]);
    // Its diff: from the run's base (a root: no task.queued for attempt 1) to its commit.
    expect(log.diffRange(BASE)).toEqual({ base: BASE, head: C1 });
  });

  it("dashboard attempts - a fan-in's base is its first queued event's; a running attempt is diffed in its worktree", () => {
    const log = new AttemptLog();
    expect(log.diffRange(BASE)).toBeUndefined();
    log.apply(ev({ type: "task.queued", attempt: 1, baseCommit: FANIN_BASE }));
    expect(log.diffRange(BASE)).toBeUndefined();
    log.apply(ev({ type: "task.started", attempt: 1, workerId: "w1", worktree: "/wt/t" }));
    expect(log.diffRange(BASE)).toEqual({ base: FANIN_BASE, worktree: "/wt/t" });
  });

  it("dashboard attempts - events of the run, or without an attempt's facts, change nothing", () => {
    const log = new AttemptLog();
    expect(log.apply({ type: "run.paused", runId, at, by: "me" })).toBeUndefined();
    expect(log.apply(ev({ type: "task.output", attempt: 1, stream: "stdout", data: "x" }))).toBeUndefined();
  });
});

describe("dashboard queues view", () => {
  it("dashboard queues - replicas' held work adds up per placement; a provider's running counts add up, its circuit is the shared one", () => {
    const merged = mergeBalancerStats([
      {
        backlog: [
          { agent: "claude", labels: ["gpu"], requires: [], count: 2 },
          { agent: "shell", labels: [], requires: [], worker: "w1", count: 1 },
        ],
        providers: { anthropic: { circuit: "open", running: 1, concurrent: 4, until: at } },
        waitingReasons: [{ attempt: "r.t.1", reason: "no worker offers agent 'codex'", since: at }],
      },
      { backlog: [{ agent: "claude", labels: ["gpu"], requires: [], count: 3 }], providers: { anthropic: { circuit: "open", running: 2, concurrent: 4 }, openai: { running: 0 } } },
    ]);
    expect(merged.placements).toEqual([
      { agent: "claude", labels: ["gpu"], requires: [], count: 5 },
      { agent: "shell", labels: [], requires: [], worker: "w1", count: 1 },
    ]);
    expect(merged.providers).toEqual([
      { name: "anthropic", circuit: "open", running: 3, concurrent: 4, until: at },
      { name: "openai", circuit: "closed", running: 0 },
    ]);
    expect(merged.unplaceable).toHaveLength(1);
  });

  it("dashboard queues - no balancer answered: nothing held, no providers", () => {
    expect(mergeBalancerStats([])).toEqual({ placements: [], providers: [], unplaceable: [] });
  });
});
