import { describe, expect, it } from "vitest";
import { criticalPath, graphDepths, medianDuration, type GraphTask } from "../../src/dashboard/graph.js";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
/** A finished task that ran from `from` to `to` seconds. */
const done = (id: string, needs: string[], from: number, to: number): GraphTask => ({ id, needs, status: "succeeded", startedAt: at(from), finishedAt: at(to) });
const pending = (id: string, needs: string[] = []): GraphTask => ({ id, needs, status: "pending" });

describe("dashboard graph", () => {
  it("dashboard graph - depth is the longest chain of needs above a task; unknown needs count as met", () => {
    const d = graphDepths([pending("a"), pending("b", ["a"]), pending("c", ["a", "b"]), pending("d", ["gone"]), pending("e", ["c", "d"])]);
    expect(Object.fromEntries(d)).toEqual({ a: 0, b: 1, c: 2, d: 0, e: 3 });
  });

  it("dashboard graph - a cycle (impossible in a validated graph) ends instead of looping", () => {
    const d = graphDepths([pending("a", ["b"]), pending("b", ["a"])]);
    expect(d.size).toBe(2);
  });

  it("dashboard graph - a chain of 10,000 tasks does not overflow the stack", () => {
    const tasks = Array.from({ length: 10_000 }, (_, i) => pending(`t${i}`, i ? [`t${i - 1}`] : []));
    expect(graphDepths(tasks).get("t9999")).toBe(9999);
    const p = criticalPath(tasks, T0);
    expect(p.ids.length).toBe(10_000);
  });

  it("dashboard graph - the critical path follows durations, not the number of tasks", () => {
    // a(10s) -> b(50s) beats x(5s) -> y(5s) -> z(5s), though the second chain is longer in tasks.
    const tasks = [done("a", [], 0, 10), done("b", ["a"], 10, 60), done("x", [], 0, 5), done("y", ["x"], 5, 10), done("z", ["y"], 10, 15)];
    const p = criticalPath(tasks, T0 + 100_000);
    expect(p.ids).toEqual(["a", "b"]);
    expect(p.ms).toBe(60_000);
    expect(p.estimated).toBe(0);
  });

  it("dashboard graph - a fan-in takes its longest need", () => {
    const tasks = [done("a", [], 0, 3), done("b", [], 0, 30), done("c", [], 0, 7), done("m", ["a", "b", "c"], 30, 32)];
    expect(criticalPath(tasks, T0).ids).toEqual(["b", "m"]);
  });

  it("dashboard graph - tasks not started weigh the median of the finished ones; running ones at least that", () => {
    // Finished: 4 s and 6 s -> median 5 s. p (pending) after slow (running 20 s so far).
    const now = T0 + 30_000;
    const tasks: GraphTask[] = [
      done("f1", [], 0, 4),
      done("f2", [], 0, 6),
      { id: "slow", needs: [], status: "running", startedAt: at(10) },
      pending("p", ["slow"]),
      { id: "young", needs: [], status: "running", startedAt: at(29) },
      pending("q", ["young"]),
      pending("r", ["q"]),
    ];
    expect(medianDuration(tasks)).toBe(5_000);
    const p = criticalPath(tasks, now);
    // slow (20 s) + p (5 s estimated) = 25 s beats young (5 s, at least the estimate) + q + r = 15 s.
    expect(p.ids).toEqual(["slow", "p"]);
    expect(p.ms).toBe(25_000);
    expect(p.estimated).toBe(1);
    // Later, slow finished at 32 s and p runs: the path moves on with the clock.
    const later = tasks.map((t) => (t.id === "slow" ? done("slow", [], 10, 32) : t.id === "p" ? { ...t, status: "running", startedAt: at(32) } : t));
    expect(criticalPath(later, T0 + 60_000)).toMatchObject({ ids: ["slow", "p"], ms: 50_000, estimated: 0 });
  });

  it("dashboard graph - before anything finished, the longest chain by count (each task the fallback)", () => {
    const tasks = [pending("a"), pending("b", ["a"]), pending("c", ["b"]), pending("x")];
    expect(criticalPath(tasks, T0, 1_000)).toEqual({ ids: ["a", "b", "c"], ms: 3_000, estimated: 3, estimateMs: 1_000 });
  });

  it("dashboard graph - skipped tasks that never ran weigh nothing; a retry waiting weighs the estimate, not its last attempt", () => {
    const tasks: GraphTask[] = [
      done("a", [], 0, 10),
      { id: "s", needs: ["a"], status: "skipped" },
      { id: "r", needs: [], status: "queued", startedAt: at(0), finishedAt: at(100) },
    ];
    const p = criticalPath(tasks, T0);
    expect(medianDuration(tasks)).toBe(10_000);
    // r waits to run again: 10 s (the estimate), not the 100 s its failed attempt took. a's chain
    // is 10 s too (s adds nothing), and known rather than estimated, so it wins the tie.
    expect(p.ms).toBe(10_000);
    expect(p.ids).toEqual(["a"]);
    expect(p.estimated).toBe(0);
  });

  it("dashboard graph - no tasks, no path", () => {
    expect(criticalPath([], T0)).toEqual({ ids: [], ms: 0, estimated: 0, estimateMs: 1_000 });
  });
});
