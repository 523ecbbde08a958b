import { describe, expect, it } from "vitest";
import { planRebalance, type QueuedWork, type RebalanceWorker } from "../../src/actors/stealer/rebalance.js";

/** The stealer's rebalancing decision (src/actors/stealer/rebalance.ts). */

const q = (seq: number, over: Partial<QueuedWork> = {}): QueuedWork => ({ seq, key: `r.t${seq}.1`, agent: "shell", placement: { labels: [], requires: [] }, claimed: false, ...over });
const w = (id: string, slots: number, running: number, queued: QueuedWork[], over: Partial<RebalanceWorker> = {}): RebalanceWorker => ({
  id,
  slots,
  running,
  queued,
  state: "running",
  agents: ["shell"],
  labels: [],
  capabilities: [],
  ...over,
});

describe("stealer rebalance - plan", () => {
  it("rebalance - an over-filled worker's queued work moves to idle workers, newest first, never more than they have free", () => {
    const moves = planRebalance([w("busy", 1, 1, [q(1), q(2), q(3)]), w("idle-a", 1, 0, []), w("idle-b", 1, 0, [])], 0.3);
    expect(moves).toEqual([
      { seq: 3, key: "r.t3.1", from: "busy", to: "idle-a" },
      { seq: 2, key: "r.t2.1", from: "busy", to: "idle-b" },
    ]);
  });

  it("rebalance - nothing moves within the threshold, onto a busy or draining worker, or when it could start where it is", () => {
    // busy: load 2/2 = 1; other: 1/2 = 0.5, difference 0.5 > 0.3, but its one queued task can start (2 slots, 1 running).
    expect(planRebalance([w("a", 2, 1, [q(1)]), w("b", 2, 1, [])], 0.3)).toEqual([]);
    // a: (2 + 1) / 2 = 1.5, b: (1 + 0) / 2 = 0.5: over the threshold, b has a slot.
    expect(planRebalance([w("a", 2, 2, [q(1)]), w("b", 2, 1, [])], 0.3)).toEqual([{ seq: 1, key: "r.t1.1", from: "a", to: "b" }]);
    // The same difference under a threshold of 1: stays.
    expect(planRebalance([w("a", 2, 2, [q(1)]), w("b", 2, 1, [])], 1)).toEqual([]);
    expect(planRebalance([w("a", 1, 1, [q(1)]), w("b", 1, 1, [])], 0.3)).toEqual([]);
    expect(planRebalance([w("a", 1, 1, [q(1)]), w("b", 1, 0, [], { state: "draining" })], 0.3)).toEqual([]);
  });

  it("rebalance - claimed, pinned and ineligible work stays", () => {
    const moves = planRebalance(
      [
        w("a", 1, 1, [q(1), q(2, { claimed: true }), q(3, { placement: { labels: [], requires: [], worker: "a" } }), q(4, { placement: { labels: ["gpu"], requires: [] } }), q(5, { agent: "claude" })]),
        w("b", 4, 0, []),
      ],
      0.3,
    );
    expect(moves).toEqual([{ seq: 1, key: "r.t1.1", from: "a", to: "b" }]);
    // With a worker that carries gpu and offers claude, those go too.
    expect(planRebalance([w("a", 1, 1, [q(4, { placement: { labels: ["gpu"], requires: [] } }), q(5, { agent: "claude" })]), w("g", 4, 0, [], { labels: ["gpu"], agents: ["shell", "claude"] })], 0.3).map((m) => m.seq)).toEqual([5, 4]);
  });
});
