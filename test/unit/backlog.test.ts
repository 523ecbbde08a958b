import { describe, expect, it } from "vitest";
import { OpenTasks } from "../../src/actors/scheduler/backlog.js";

describe("backlog - what queue full counts", () => {
  it("admits while the open tasks of accepted runs and the new run fit; counts it at once, so one batch cannot overshoot", () => {
    const o = new OpenTasks();
    o.apply("a", 4, 1);
    expect(o.admit("b", 1, 6)).toEqual({ ok: true });
    expect(o.total).toBe(5);
    // Decided in the same batch, before b's count is stored: b is counted already.
    expect(o.admit("c", 2, 6)).toMatchObject({ ok: false, code: "queue_full" });
    expect(o.admit("c", 1, 6)).toEqual({ ok: true });
    expect(o.total).toBe(6);
  });

  it("says what to do: wait or --wait when it may fit later; split or raise maxQueued when it never can", () => {
    const o = new OpenTasks();
    o.apply("a", 3, 1);
    const full = o.admit("b", 3, 5);
    expect(full).toEqual({
      ok: false,
      code: "queue_full",
      reason: "queue full: 3 tasks of accepted runs have not finished and this run adds 3 (maxQueued 5). Submit it again once some have finished, or submit with --wait to resubmit until it fits.",
    });
    const never = o.admit("x", 6, 5);
    expect(never).toMatchObject({ ok: false, code: "invalid" });
    expect(never.ok ? "" : never.reason).toMatch(/more than the scheduler accepts at once \(maxQueued 5\): split it into smaller runs, or raise maxQueued/);
  });

  it("a stored count replaces the reservation; a run that was not accepted after all gives it back", () => {
    const o = new OpenTasks();
    o.admit("a", 4, 10);
    o.apply("a", 4, 7);
    o.release("a");
    expect(o.total).toBe(4);
    o.admit("b", 3, 10);
    o.release("b"); // its creation failed, or it was a redelivery of an accepted run
    expect(o.total).toBe(4);
  });

  it("applies values by revision: a replayed or late older value never overwrites a newer one, nor revives a deleted run", () => {
    const o = new OpenTasks();
    o.apply("a", 10, 5);
    o.apply("a", 7, 9);
    o.apply("a", 10, 5); // the watch replays after a reconnect
    expect(o.of("a")).toBe(7);
    o.apply("a", undefined, 12, 1_000); // the run ended
    o.apply("a", 7, 9);
    expect(o.total).toBe(0);
    expect(o.counted()).toEqual([]);
  });

  it("forgets deletions after a while, so finished runs do not pile up", () => {
    const o = new OpenTasks();
    o.apply("a", 2, 1);
    o.apply("a", undefined, 2, 1_000);
    o.apply("b", 3, 3);
    o.prune(1_000 + 60_000, 60_000);
    o.apply("a", 2, 1); // a late echo within the while: still ignored
    expect(o.of("a")).toBe(0);
    o.prune(1_000 + 60_001, 60_000);
    // Forgotten (an echo this late is not expected: the sweep runs every 5 minutes).
    o.apply("a", 2, 1);
    expect(o.of("a")).toBe(2);
    expect(o.of("b")).toBe(3);
  });
});
