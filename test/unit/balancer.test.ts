import { describe, expect, it } from "vitest";
import { dispatchPass, type Route } from "../../src/actors/balancer/dispatch-pass.js";
import { compareReady, ReadyQueue, type ReadyEntry } from "../../src/actors/balancer/ready-queue.js";
import { eligible, placementKey, Router, type Candidate, type Placement, type Strategy } from "../../src/actors/balancer/strategy.js";
import { WorkerRegistry } from "../../src/actors/balancer/registry.js";
import { WAITING_AFTER_MS, WaitingTracker, whyUnplaceable } from "../../src/actors/balancer/waiting.js";
import { ManualClock } from "../../src/runtime/clock.js";
import { PRIORITIES, remainingPathLengths, type Priority } from "../../src/runtime/graph.js";

import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type WorkerRecord } from "../../src/runtime/messages.js";
import { topology } from "../../src/runtime/topology.js";
import { workerLoad, workerRecord } from "../helpers/records.js";
import { prng } from "../../bench/stats.js";

// ---------------------------------------------------------------- helpers

const NOW = 1_000_000;

let nextSeq = 1;
/** A due entry; seq grows with each call unless given, so later calls arrive later. */
function entry(key: string, opts: { priority?: Priority; runAt?: number; rank?: number; seq?: number; notBefore?: number } = {}): ReadyEntry<string> {
  return {
    key,
    priority: opts.priority ?? "normal",
    ...(opts.runAt !== undefined ? { runAt: opts.runAt } : {}),
    rank: opts.rank ?? 1,
    seq: opts.seq ?? nextSeq++,
    notBefore: opts.notBefore ?? 0,
    item: key,
  };
}

const keys = (q: ReadyQueue<string>) => [...q.ordered()].map((e) => e.key);


function worker(id: string, over: Partial<Candidate> = {}): Candidate {
  return {
    id,
    slots: 4,
    busy: 0,
    agents: ["shell"],
    labels: [],
    capabilities: [],
    accessMode: "subscription",
    costPerTask: 0,
    ...over,
  };
}

const ANY: Placement = { labels: [], requires: [] };

// ---------------------------------------------------------------- ReadyQueue

describe("ready queue - order", () => {
  it("puts a higher priority level first even when it arrived later", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("normal-1", { priority: "normal", seq: 1 }), NOW);
    q.add(entry("low", { priority: "low", seq: 2 }), NOW);
    q.add(entry("background", { priority: "background", seq: 3 }), NOW);
    q.add(entry("critical", { priority: "critical", seq: 4 }), NOW);
    q.add(entry("high", { priority: "high", seq: 5 }), NOW);
    expect(keys(q)).toEqual(["critical", "high", "normal-1", "low", "background"]);
  });

  it("within a level takes the longest remaining path first, whatever the arrival", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("short", { rank: 1, seq: 1 }), NOW);
    q.add(entry("long", { rank: 5, seq: 2 }), NOW);
    q.add(entry("mid", { rank: 3, seq: 3 }), NOW);
    expect(keys(q)).toEqual(["long", "mid", "short"]);
  });

  it("rank does not outweigh priority: a short critical task beats a long normal one", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("long-normal", { priority: "normal", rank: 100, seq: 1 }), NOW);
    q.add(entry("short-critical", { priority: "critical", rank: 1, seq: 2 }), NOW);
    expect(keys(q)).toEqual(["short-critical", "long-normal"]);
  });

  it("among equal level and rank keeps arrival order (seq), even when added out of order", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("c", { rank: 2, seq: 30 }), NOW);
    q.add(entry("a", { rank: 2, seq: 10 }), NOW);
    q.add(entry("b", { rank: 2, seq: 20 }), NOW);
    expect(keys(q)).toEqual(["a", "b", "c"]);
  });

  it("within a level the older run goes first, whatever the ranks and arrival; within a run the longest path", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("new-long", { runAt: 2_000, rank: 50, seq: 1 }), NOW);
    q.add(entry("new-short", { runAt: 2_000, rank: 1, seq: 2 }), NOW);
    q.add(entry("old-short", { runAt: 1_000, rank: 1, seq: 3 }), NOW);
    q.add(entry("old-long", { runAt: 1_000, rank: 3, seq: 4 }), NOW);
    q.add(entry("new-critical", { priority: "critical", runAt: 2_000, rank: 1, seq: 5 }), NOW);
    expect(keys(q)).toEqual(["new-critical", "old-long", "old-short", "new-long", "new-short"]);
  });

  it("matches a full sort by compareReady for many random entries", () => {
    const rnd = prng(42);
    const q = new ReadyQueue<string>();
    const all: ReadyEntry<string>[] = [];
    for (let i = 0; i < 2_000; i++) {
      const e = entry(`k${i}`, {
        priority: PRIORITIES[Math.floor(rnd() * PRIORITIES.length)]!,
        runAt: Math.floor(rnd() * 4),
        rank: 1 + Math.floor(rnd() * 6),
        seq: Math.floor(rnd() * 1_000_000),
      });
      all.push(e);
      q.add(e, NOW);
    }
    expect(keys(q)).toEqual([...all].sort(compareReady).map((e) => e.key));
  });
});

describe("ready queue - backoff (not before)", () => {
  it("holds an entry that is not due out of the order until promote(now) reaches its time", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("retry", { priority: "critical", notBefore: NOW + 500 }), NOW);
    q.add(entry("ready"), NOW);
    expect(q.size).toBe(2);
    expect(q.has("retry")).toBe(true);
    expect(keys(q)).toEqual(["ready"]);

    q.promote(NOW + 499);
    expect(keys(q)).toEqual(["ready"]);
    q.promote(NOW + 500);
    // Once due it takes its place by priority, ahead of the normal one.
    expect(keys(q)).toEqual(["retry", "ready"]);
    expect(q.nextDue()).toBeUndefined();
  });

  it("treats notBefore equal to now as due at once", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("now", { notBefore: NOW }), NOW);
    expect(keys(q)).toEqual(["now"]);
    expect(q.nextDue()).toBeUndefined();
  });

  it("nextDue reports the earliest waiting time, and moves on as entries are promoted", () => {
    const q = new ReadyQueue<string>();
    expect(q.nextDue()).toBeUndefined();
    q.add(entry("late", { notBefore: NOW + 3_000 }), NOW);
    q.add(entry("early", { notBefore: NOW + 1_000 }), NOW);
    q.add(entry("mid", { notBefore: NOW + 2_000 }), NOW);
    q.add(entry("due"), NOW);
    expect(q.nextDue()).toBe(NOW + 1_000);
    q.promote(NOW + 1_000);
    // Same level and rank: arrival (seq) decides, and "early" was made before "due".
    expect(keys(q)).toEqual(["early", "due"]);
    expect(q.nextDue()).toBe(NOW + 2_000);
    q.promote(NOW + 10_000);
    expect(q.nextDue()).toBeUndefined();
    expect(keys(q).sort()).toEqual(["due", "early", "late", "mid"]);
  });

  it("removes a waiting entry, which then never comes due", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("retry", { notBefore: NOW + 100 }), NOW);
    expect(q.remove("retry")?.key).toBe("retry");
    expect(q.size).toBe(0);
    expect(q.nextDue()).toBeUndefined();
    q.promote(NOW + 1_000);
    expect(keys(q)).toEqual([]);
  });

  it("all() lists due and waiting entries (what the balancer keeps alive with in-progress acks)", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("due"), NOW);
    q.add(entry("waiting", { notBefore: NOW + 100 }), NOW);
    expect(q.all().map((e) => e.key).sort()).toEqual(["due", "waiting"]);
  });
});

describe("ready queue - membership", () => {
  it("ignores a duplicate key, due or waiting, and keeps the first entry", () => {
    const q = new ReadyQueue<string>();
    expect(q.add(entry("a", { rank: 1 }), NOW)).toBe(true);
    expect(q.add(entry("a", { rank: 9, priority: "critical" }), NOW)).toBe(false);
    expect(q.add(entry("w", { notBefore: NOW + 10 }), NOW)).toBe(true);
    expect(q.add(entry("w", { notBefore: NOW + 10 }), NOW)).toBe(false);
    expect(q.add(entry("w"), NOW)).toBe(false);
    expect(q.size).toBe(2);
    expect([...q.ordered()]).toEqual([expect.objectContaining({ key: "a", rank: 1, priority: "normal" })]);
  });

  it("accepts a key again once it was removed", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("a", { rank: 1 }), NOW);
    q.remove("a");
    expect(q.add(entry("a", { rank: 7 }), NOW)).toBe(true);
    expect([...q.ordered()].map((e) => e.rank)).toEqual([7]);
  });

  it("remove of an unknown key returns undefined and changes nothing", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("a"), NOW);
    expect(q.remove("nope")).toBeUndefined();
    expect(q.size).toBe(1);
  });

  it("lets the yielded entry be removed while iterating, without skipping the next one", () => {
    const q = new ReadyQueue<string>();
    for (const k of ["a", "b", "c", "d", "e"]) q.add(entry(k), NOW);
    const seen: string[] = [];
    for (const e of q.ordered()) {
      seen.push(e.key);
      // Dispatch only every other one, as the balancer does when a task fits no worker.
      if (e.key !== "b" && e.key !== "d") q.remove(e.key);
    }
    expect(seen).toEqual(["a", "b", "c", "d", "e"]);
    expect(keys(q)).toEqual(["b", "d"]);
    expect(q.size).toBe(2);
  });

  it("does not yield an entry removed further down during iteration", () => {
    const q = new ReadyQueue<string>();
    for (const k of ["a", "b", "c"]) q.add(entry(k), NOW);
    const seen: string[] = [];
    for (const e of q.ordered()) {
      seen.push(e.key);
      if (e.key === "a") q.remove("c");
    }
    expect(seen).toEqual(["a", "b"]);
  });

  it("a redelivery (remove then add with the newer message) keeps the entry's place", () => {
    const q = new ReadyQueue<string>();
    q.add(entry("x", { seq: 1 }), NOW);
    q.add(entry("y", { seq: 2 }), NOW);
    const held = q.remove("x")!;
    held.item = "x-redelivered";
    q.add(held, NOW);
    expect([...q.ordered()].map((e) => e.item)).toEqual(["x-redelivered", "y"]);
  });
});

// ---------------------------------------------------------------- Router

describe("router - eligibility", () => {
  it("needs the agent", () => {
    expect(eligible(worker("w", { agents: ["noop"] }), "shell", ANY)).toBe(false);
    expect(eligible(worker("w", { agents: ["noop", "shell"] }), "shell", ANY)).toBe(true);
  });

  it("needs every placement label (a superset is fine)", () => {
    const p: Placement = { labels: ["gpu", "eu"], requires: [] };
    expect(eligible(worker("w", { labels: ["gpu"] }), "shell", p)).toBe(false);
    expect(eligible(worker("w", { labels: ["eu", "gpu"] }), "shell", p)).toBe(true);
    expect(eligible(worker("w", { labels: ["eu", "gpu", "big"] }), "shell", p)).toBe(true);
  });

  it("needs every required capability (a superset is fine)", () => {
    const p: Placement = { labels: [], requires: ["python", "docker"] };
    expect(eligible(worker("w", { capabilities: ["python"] }), "shell", p)).toBe(false);
    expect(eligible(worker("w", { capabilities: ["docker", "python", "rust"] }), "shell", p)).toBe(true);
    // Labels and capabilities are separate sets: a label does not satisfy a requirement.
    expect(eligible(worker("w", { labels: ["python", "docker"] }), "shell", p)).toBe(false);
  });

  it("affinity pins the task to one worker", () => {
    const p: Placement = { labels: [], requires: [], worker: "w2" };
    expect(eligible(worker("w1"), "shell", p)).toBe(false);
    expect(eligible(worker("w2"), "shell", p)).toBe(true);
  });

  it("affinity does not bypass the agent, labels or capabilities", () => {
    expect(eligible(worker("w2", { agents: ["noop"] }), "shell", { labels: [], requires: [], worker: "w2" })).toBe(false);
    expect(eligible(worker("w2"), "shell", { labels: ["gpu"], requires: [], worker: "w2" })).toBe(false);
  });

  it("returns undefined when no eligible worker has a free slot, for every strategy", () => {
    const ws = [worker("full", { slots: 2, busy: 2 }), worker("wrong-agent", { agents: ["noop"] }), worker("no-label", { labels: [] })];
    const p: Placement = { labels: [], requires: [] };
    for (const s of ["least_loaded", "round_robin", "random", "capability_match", "cost_optimized"] as const) {
      expect(new Router(() => 0).choose(s, ws.slice(0, 2), "shell", p), s).toBeUndefined();
      expect(new Router(() => 0).choose(s, [], "shell", p), s).toBeUndefined();
      expect(new Router(() => 0).choose(s, ws, "shell", { labels: ["gpu"], requires: [] }), s).toBeUndefined();
    }
  });

  it("skips an affine worker that is full rather than placing the task elsewhere", () => {
    const ws = [worker("w1"), worker("w2", { slots: 1, busy: 1 })];
    expect(new Router().choose("least_loaded", ws, "shell", { labels: [], requires: [], worker: "w2" })).toBeUndefined();
  });

  it("never picks an ineligible worker even when it is the least loaded", () => {
    const ws = [worker("idle-gpu", { labels: ["gpu"] }), worker("busy", { busy: 3 })];
    expect(new Router().choose("least_loaded", ws, "shell", ANY)?.id).toBe("idle-gpu");
    expect(new Router().choose("least_loaded", ws, "shell", { labels: ["cpu"], requires: [] })).toBeUndefined();
    expect(new Router().choose("least_loaded", [worker("busy", { busy: 3 }), worker("other-agent", { agents: ["noop"] })], "shell", ANY)?.id).toBe("busy");
  });
});

describe("router - least_loaded", () => {
  it("picks the lowest busy/slots, not the lowest busy count", () => {
    const ws = [worker("a", { slots: 2, busy: 1 }), worker("b", { slots: 8, busy: 2 }), worker("c", { slots: 4, busy: 3 })];
    // a: 0.5, b: 0.25, c: 0.75
    expect(new Router().choose("least_loaded", ws, "shell", ANY)?.id).toBe("b");
  });

  it("on equal load prefers more slots, then the lower id", () => {
    expect(new Router().choose("least_loaded", [worker("a", { slots: 2 }), worker("b", { slots: 8 })], "shell", ANY)?.id).toBe("b");
    expect(new Router().choose("least_loaded", [worker("b"), worker("a")], "shell", ANY)?.id).toBe("a");
  });

  it("spreads a burst over the workers as their busy counts grow", () => {
    const ws = [worker("a", { slots: 2 }), worker("b", { slots: 2 }), worker("c", { slots: 2 })];
    const router = new Router();
    const picks: string[] = [];
    for (;;) {
      const w = router.choose("least_loaded", ws, "shell", ANY);
      if (!w) break;
      w.busy++;
      picks.push(w.id);
    }
    expect(picks).toEqual(["a", "b", "c", "a", "b", "c"]);
  });
});

describe("router - round_robin", () => {
  it("rotates over the eligible workers in id order", () => {
    const ws = [worker("c"), worker("a"), worker("b"), worker("x", { agents: ["noop"] })];
    const router = new Router();
    const picks = Array.from({ length: 7 }, () => router.choose("round_robin", ws, "shell", ANY)?.id);
    expect(picks).toEqual(["a", "b", "c", "a", "b", "c", "a"]);
  });

  it("leaves out a full worker and keeps rotating over the others", () => {
    const ws = [worker("a"), worker("b", { slots: 1, busy: 1 }), worker("c")];
    const router = new Router();
    const picks = Array.from({ length: 4 }, () => router.choose("round_robin", ws, "shell", ANY)?.id);
    expect(picks).toEqual(["a", "c", "a", "c"]);
  });

  it("gives every worker a turn in one dispatch pass of single-slot workers", () => {
    const ws = [worker("a", { slots: 1 }), worker("b", { slots: 1 }), worker("c", { slots: 1 })];
    const router = new Router();
    const picks: string[] = [];
    for (let w = router.choose("round_robin", ws, "shell", ANY); w; w = router.choose("round_robin", ws, "shell", ANY)) {
      w.busy++;
      picks.push(w.id);
    }
    expect(picks.sort()).toEqual(["a", "b", "c"]);
  });

  // Was a defect: one cursor shared by every eligible set, so when tasks with different
  // placements alternated, each set was indexed by every other cursor value and half of
  // its workers never got a task. The router now rotates by when each worker was last
  // picked, which holds within any set however placements interleave.
  it("rotates within each eligible set when placements alternate", () => {
    const ws = [
      worker("a", { labels: ["x"] }),
      worker("b", { labels: ["x"] }),
      worker("c", { labels: ["y"] }),
      worker("d", { labels: ["y"] }),
    ];
    const router = new Router();
    const picks: string[] = [];
    for (let i = 0; i < 4; i++) {
      picks.push(router.choose("round_robin", ws, "shell", { labels: ["x"], requires: [] })!.id);
      picks.push(router.choose("round_robin", ws, "shell", { labels: ["y"], requires: [] })!.id);
    }
    expect(picks).toEqual(["a", "c", "b", "d", "a", "c", "b", "d"]);
  });

  it("shares the turns fairly between overlapping sets (a worker in both takes its turn in each)", () => {
    const ws = [worker("a", { labels: ["x"] }), worker("b", { labels: ["x", "y"] }), worker("c", { labels: ["y"] }), worker("d", { agents: ["noop"] })];
    const router = new Router();
    const counts = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      for (const label of ["x", "y"]) {
        const id = router.choose("round_robin", ws, "shell", { labels: [label], requires: [] })!.id;
        counts.set(id, (counts.get(id) ?? 0) + 1);
      }
    }
    // 600 decisions over 3 eligible workers: each within a few of 200, never starved.
    expect([...counts.keys()].sort()).toEqual(["a", "b", "c"]);
    for (const n of counts.values()) expect(Math.abs(n - 200)).toBeLessThanOrEqual(2);
  });

  it("gives a worker that joins mid-rotation the next turn, then rotates it in", () => {
    const router = new Router();
    const ws = [worker("a"), worker("b")];
    expect(router.choose("round_robin", ws, "shell", ANY)?.id).toBe("a");
    expect(router.choose("round_robin", ws, "shell", ANY)?.id).toBe("b");
    ws.push(worker("c"));
    const picks = Array.from({ length: 6 }, () => router.choose("round_robin", ws, "shell", ANY)?.id);
    expect(picks).toEqual(["c", "a", "b", "c", "a", "b"]);
  });

  it("a full worker keeps its place: it is next once it has a free slot again", () => {
    const ws = [worker("a"), worker("b"), worker("c")];
    const router = new Router();
    expect(router.choose("round_robin", ws, "shell", ANY)?.id).toBe("a");
    ws[1]!.busy = ws[1]!.slots; // b is full when its turn comes
    expect(router.choose("round_robin", ws, "shell", ANY)?.id).toBe("c");
    ws[1]!.busy = 0;
    expect(router.choose("round_robin", ws, "shell", ANY)?.id).toBe("b");
    expect(router.choose("round_robin", ws, "shell", ANY)?.id).toBe("a");
  });

  it("keeps rotating correctly across many workers that come and go", () => {
    const router = new Router();
    // 3,000 generations of 2 workers each: the router forgets the gone ones, and within
    // each generation still alternates.
    for (let g = 0; g < 3_000; g++) {
      const ws = [worker(`g${g}-a`), worker(`g${g}-b`)];
      expect([router.choose("round_robin", ws, "shell", ANY)?.id, router.choose("round_robin", ws, "shell", ANY)?.id]).toEqual([`g${g}-a`, `g${g}-b`]);
    }
  });
});

describe("router - random", () => {
  it("indexes the free eligible workers with the injected random source", () => {
    const ws = [worker("a"), worker("b", { slots: 1, busy: 1 }), worker("c"), worker("d")];
    // Free: a, c, d (in registry order).
    const at = (r: number) => new Router(() => r).choose("random", ws, "shell", ANY)?.id;
    expect(at(0)).toBe("a");
    expect(at(0.34)).toBe("c");
    expect(at(0.999_999)).toBe("d");
  });

  it("calls the random source once per decision", () => {
    let calls = 0;
    const router = new Router(() => {
      calls++;
      return 0.5;
    });
    router.choose("random", [worker("a"), worker("b")], "shell", ANY);
    router.choose("random", [worker("a"), worker("b")], "shell", ANY);
    expect(calls).toBe(2);
  });

  it("reaches every worker over many decisions with a uniform source", () => {
    const ws = Array.from({ length: 5 }, (_, i) => worker(`w${i}`));
    const router = new Router(prng(7));
    const counts = new Map<string, number>();
    for (let i = 0; i < 5_000; i++) {
      const id = router.choose("random", ws, "shell", ANY)!.id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect(counts.size).toBe(5);
    for (const n of counts.values()) expect(n).toBeGreaterThan(800);
  });
});

describe("router - capability_match", () => {
  it("prefers the worker with the fewest capabilities beyond what the task requires", () => {
    const ws = [
      worker("generalist", { capabilities: ["python", "rust", "docker", "gpu"] }),
      worker("exact", { capabilities: ["python"] }),
      worker("plus-one", { capabilities: ["python", "docker"] }),
      worker("lacking", { capabilities: [] }),
    ];
    const p: Placement = { labels: [], requires: ["python"] };
    expect(new Router().choose("capability_match", ws, "shell", p)?.id).toBe("exact");
  });

  it("keeps the specialised worker free for a task with no requirement", () => {
    const ws = [worker("special", { capabilities: ["gpu"] }), worker("plain", { busy: 3 })];
    expect(new Router().choose("capability_match", ws, "shell", ANY)?.id).toBe("plain");
  });

  it("falls back to a broader worker when the best fit is full, then breaks ties by load", () => {
    const ws = [
      worker("exact", { capabilities: ["python"], slots: 1, busy: 1 }),
      worker("broad-busy", { capabilities: ["python", "go"], busy: 2 }),
      worker("broad-idle", { capabilities: ["python", "rust"], busy: 0 }),
    ];
    expect(new Router().choose("capability_match", ws, "shell", { labels: [], requires: ["python"] })?.id).toBe("broad-idle");
  });
});

describe("router - cost_optimized", () => {
  it("prefers subscription and local workers over api ones, even when those are busier", () => {
    const ws = [
      worker("api-cheap", { accessMode: "api", costPerTask: 0.01 }),
      worker("sub", { accessMode: "subscription", busy: 3 }),
    ];
    expect(new Router().choose("cost_optimized", ws, "shell", ANY)?.id).toBe("sub");
    const local = [worker("api", { accessMode: "api", costPerTask: 0 }), worker("local", { accessMode: "local", busy: 2 })];
    expect(new Router().choose("cost_optimized", local, "shell", ANY)?.id).toBe("local");
  });

  it("treats subscription and local alike and breaks the tie by load", () => {
    const ws = [worker("sub", { accessMode: "subscription", busy: 2 }), worker("local", { accessMode: "local", busy: 1 })];
    expect(new Router().choose("cost_optimized", ws, "shell", ANY)?.id).toBe("local");
  });

  it("among api workers picks the cheaper per task, then the less loaded", () => {
    const ws = [
      worker("api-dear", { accessMode: "api", costPerTask: 0.5 }),
      worker("api-cheap-busy", { accessMode: "api", costPerTask: 0.1, busy: 3 }),
      worker("api-cheap-idle", { accessMode: "api", costPerTask: 0.1, busy: 1 }),
    ];
    expect(new Router().choose("cost_optimized", ws, "shell", ANY)?.id).toBe("api-cheap-idle");
  });

  it("uses an api worker once every free-of-charge worker is full", () => {
    const ws = [worker("sub", { slots: 1, busy: 1 }), worker("api", { accessMode: "api", costPerTask: 2 })];
    expect(new Router().choose("cost_optimized", ws, "shell", ANY)?.id).toBe("api");
  });
});

// ---------------------------------------------------------------- dispatch pass

describe("router - placementKey", () => {
  it("is the same for the same agent, label set, capability set and affinity, in any order", () => {
    expect(placementKey("shell", { labels: ["eu", "gpu"], requires: ["python", "docker"] })).toBe(
      placementKey("shell", { labels: ["gpu", "eu"], requires: ["docker", "python"] }),
    );
  });

  it("differs whenever the eligible workers could differ", () => {
    const keys = [
      placementKey("shell", ANY),
      placementKey("noop", ANY),
      placementKey("shell", { labels: ["gpu"], requires: [] }),
      placementKey("shell", { labels: [], requires: ["gpu"] }),
      placementKey("shell", { labels: [], requires: [], worker: "w1" }),
      placementKey("shell", { labels: [], requires: [], worker: "w2" }),
      placementKey("shell", { labels: ["a", "b"], requires: [] }),
      placementKey("shell", { labels: ["a,b"], requires: [] }),
    ];
    expect(new Set(keys).size).toBe(keys.length);
  });
});

interface Task {
  agent: string;
  placement: Placement;
  strategy: Strategy;
}

/** A held task with its route, as the balancer keeps it. */
function held(key: string, task: Task, opts: { priority?: Priority; rank?: number; seq?: number } = {}): ReadyEntry<Route> {
  return { ...entry(key, opts), item: { ...task, placementKey: placementKey(task.agent, task.placement) } };
}

/** Runs one pass; returns what was placed, in order, as `key@worker`. */
function pass(q: ReadyQueue<Route>, ws: Candidate[], router = new Router(), routeOf = (e: ReadyEntry<Route>): Route | undefined => e.item) {
  const placed: string[] = [];
  const { chooseCalls, skipped } = dispatchPass(q, ws, router, routeOf, (e, w) => placed.push(`${e.key}@${w.id}`));
  return { placed, chooseCalls, skipped };
}

/**
 * The dispatch loop as it was before the unplaceable-placement shortcut: every held task
 * is offered to the router. The reference the shortcut must agree with.
 */
function referencePass(q: ReadyQueue<Route>, ws: Candidate[], router: Router): string[] {
  const placed: string[] = [];
  let free = 0;
  for (const c of ws) free += Math.max(0, c.slots - c.busy);
  for (const e of q.ordered()) {
    if (free <= 0) break;
    const pick = router.choose(e.item.strategy, ws, e.item.agent, e.item.placement);
    if (!pick) continue;
    q.remove(e.key);
    pick.busy++;
    free--;
    placed.push(`${e.key}@${pick.id}`);
  }
  return placed;
}

const anywhere: Task = { agent: "shell", placement: ANY, strategy: "least_loaded" };
const nowhere: Task = { agent: "shell", placement: { labels: ["nowhere"], requires: [] }, strategy: "least_loaded" };

describe("waiting - why no worker can take a task", () => {
  const w = (id: string, over: Partial<Candidate> = {}) => worker(id, { agents: ["shell", "noop"], ...over });
  const gpu: Placement = { labels: ["gpu"], requires: [] };

  it("none when some worker may take it, busy or not", () => {
    expect(whyUnplaceable("t", "shell", ANY, [w("a", { busy: 4 })])).toBeUndefined();
    expect(whyUnplaceable("t", "shell", gpu, [w("a"), w("b", { labels: ["gpu"], busy: 4 })])).toBeUndefined();
  });

  it("no worker at all: says how to start one, and mentions draining ones", () => {
    expect(whyUnplaceable("t", "shell", ANY, [])).toBe("no worker is connected: start one with 'ado worker' or 'ado up'");
    expect(whyUnplaceable("t", "shell", ANY, [], { draining: 2 })).toBe("no worker is connected (2 workers are draining): start one with 'ado worker' or 'ado up'");
  });

  it("no worker offers the agent: names the agents offered", () => {
    expect(whyUnplaceable("t", "codex", ANY, [w("a"), w("b")])).toBe("no worker offers agent 'codex' (workers offer: noop, shell)");
  });

  it("a label or capability no worker with the agent has: names it and what the workers have", () => {
    expect(whyUnplaceable("train", "shell", gpu, [w("a", { labels: ["local"] }), w("b", { labels: ["local"] })])).toBe(
      "no worker can take 'train': none has label gpu (2 workers with agent 'shell'; labels: local; capabilities: none)",
    );
    // A worker with the label but without the agent does not count.
    expect(whyUnplaceable("train", "shell", { labels: ["gpu"], requires: ["cuda", "docker"] }, [w("a", { labels: ["local"], capabilities: ["docker"] }), w("g", { agents: ["noop"], labels: ["gpu"] })])).toBe(
      "no worker can take 'train': none has label gpu or capability cuda (1 worker with agent 'shell'; labels: local; capabilities: docker)",
    );
  });

  it("every requirement somewhere but never all on one worker", () => {
    expect(whyUnplaceable("t", "shell", { labels: ["gpu", "big"], requires: [] }, [w("a", { labels: ["gpu"] }), w("b", { labels: ["big"] })])).toBe(
      "no worker can take 't': none has all of label gpu, label big (2 workers with agent 'shell'; labels: big, gpu; capabilities: none)",
    );
  });

  it("a pinned task: its worker gone, or there without the agent", () => {
    expect(whyUnplaceable("t", "shell", { labels: [], requires: [], worker: "w-x" }, [w("a"), w("b")])).toBe(
      "'t' is pinned to worker 'w-x', which is not connected (2 workers: a, b)",
    );
    expect(whyUnplaceable("t", "codex", { labels: [], requires: [], worker: "a" }, [w("a"), w("b", { agents: ["codex"] })])).toBe(
      "worker 'a' (it is pinned there) does not offer agent 'codex' (workers offer: noop, shell)",
    );
  });

  it("long lists are cut", () => {
    const many = Array.from({ length: 12 }, (_, i) => w(`w${String(i).padStart(2, "0")}`));
    expect(whyUnplaceable("t", "shell", { labels: [], requires: [], worker: "x" }, many)).toBe(
      "'t' is pinned to worker 'x', which is not connected (12 workers: w00, w01, w02, w03, w04, w05, w06, w07 and 4 more)",
    );
  });
});

describe("waiting - when to announce", () => {
  it("after 2 s without an eligible worker, once; again only when the reason changes; not after it found one", () => {
    const t = new WaitingTracker();
    expect(t.observe("k", "no worker", 0)).toBeUndefined();
    expect(t.observe("k", "no worker", WAITING_AFTER_MS - 1)).toBeUndefined();
    expect(t.observe("k", "no worker", WAITING_AFTER_MS)).toBe("no worker");
    expect(t.observe("k", "no worker", WAITING_AFTER_MS + 5_000)).toBeUndefined();
    expect(t.observe("k", "no label", WAITING_AFTER_MS + 6_000)).toBe("no label");
    expect(t.current()).toEqual([{ key: "k", reason: "no label", since: 0 }]);
    // A worker that may take it came (it waits for a slot now): nothing to say, and the clock restarts.
    expect(t.observe("k", undefined, WAITING_AFTER_MS + 7_000)).toBeUndefined();
    expect(t.current()).toEqual([]);
    expect(t.observe("k", "no worker", WAITING_AFTER_MS + 8_000)).toBeUndefined();
    expect(t.observe("k", "no worker", 2 * WAITING_AFTER_MS + 8_000)).toBe("no worker");
  });

  it("a task that always had a worker is never tracked; one no longer held is forgotten", () => {
    const t = new WaitingTracker();
    expect(t.observe("ok", undefined, 0)).toBeUndefined();
    t.observe("gone", "no worker", 0);
    t.retain((key) => key !== "gone");
    expect(t.current()).toEqual([]);
    expect(t.observe("gone", "no worker", WAITING_AFTER_MS)).toBeUndefined(); // a new wait, from now
  });
});

describe("dispatch pass - tasks that fit no free worker", () => {
  it("dispatches a task held behind 5,000 that fit nowhere, scanning the workers once for all of them", () => {
    const q = new ReadyQueue<Route>();
    for (let i = 0; i < 5_000; i++) q.add(held(`stuck${i}`, nowhere, { priority: PRIORITIES[i % 3]! }), NOW);
    q.add(held("last", anywhere, { priority: "background" }), NOW);
    const ws = Array.from({ length: 1_000 }, (_, i) => worker(`w${String(i).padStart(4, "0")}`, { busy: i < 3 ? 3 : 4 }));
    const r = pass(q, ws);
    expect(r.placed).toEqual(["last@w0000"]);
    // One scan for the stuck placement, one for the task that fits; 4,999 passed over.
    expect(r.chooseCalls).toBe(2);
    expect(r.skipped).toBe(4_999);
    expect(q.size).toBe(5_000);
    expect(q.has("last")).toBe(false);
  });

  it("keeps priority order: tasks that fit are placed in queue order around the ones that do not", () => {
    const q = new ReadyQueue<Route>();
    const gpu: Task = { agent: "shell", placement: { labels: ["gpu"], requires: [] }, strategy: "least_loaded" };
    q.add(held("n-stuck1", nowhere, { priority: "critical" }), NOW);
    q.add(held("gpu1", gpu, { priority: "critical" }), NOW);
    q.add(held("any-high", anywhere, { priority: "high" }), NOW);
    q.add(held("n-stuck2", nowhere, { priority: "high" }), NOW);
    q.add(held("gpu2", gpu, { priority: "normal", rank: 5 }), NOW);
    q.add(held("any-normal", anywhere, { priority: "normal", rank: 1 }), NOW);
    q.add(held("gpu3", gpu, { priority: "low" }), NOW);
    q.add(held("any-low", anywhere, { priority: "low" }), NOW);
    // One gpu slot, two plain slots.
    const ws = [worker("gpu", { labels: ["gpu"], slots: 1 }), worker("plain", { slots: 2 })];
    const r = pass(q, ws);
    // gpu1 takes the only gpu slot, so gpu2 and then gpu3 (without a scan) fit nowhere;
    // the plain slots go to any-high and any-normal in order; any-low finds none left.
    expect(r.placed).toEqual(["gpu1@gpu", "any-high@plain", "any-normal@plain"]);
    expect([...q.ordered()].map((e) => e.key)).toEqual(["n-stuck1", "n-stuck2", "gpu2", "gpu3", "any-low"]);
  });

  it("a task left held by the caller (paused) does not mark its placement as unplaceable", () => {
    const q = new ReadyQueue<Route>();
    q.add(held("paused", anywhere, { priority: "critical" }), NOW);
    q.add(held("next", anywhere), NOW);
    const r = pass(q, [worker("a")], new Router(), (e) => (e.key === "paused" ? undefined : e.item));
    expect(r.placed).toEqual(["next@a"]);
    expect(q.has("paused")).toBe(true);
  });

  it("pinned tasks: a full pinned worker blocks only the tasks pinned to it", () => {
    const q = new ReadyQueue<Route>();
    const pin = (w: string): Task => ({ agent: "shell", placement: { labels: [], requires: [], worker: w }, strategy: "least_loaded" });
    for (let i = 0; i < 50; i++) q.add(held(`to-full${i}`, pin("full")), NOW);
    q.add(held("to-free", pin("free")), NOW);
    const r = pass(q, [worker("full", { busy: 4 }), worker("free")]);
    expect(r.placed).toEqual(["to-free@free"]);
    expect(r.chooseCalls).toBe(2);
  });

  it("stops walking once the last free slot is taken", () => {
    const q = new ReadyQueue<Route>();
    for (let i = 0; i < 100; i++) q.add(held(`t${i}`, anywhere), NOW);
    const r = pass(q, [worker("a", { slots: 2 })]);
    expect(r.placed).toEqual(["t0@a", "t1@a"]);
    expect(r.chooseCalls).toBe(2);
  });

  it("places exactly what the pass without the shortcut places, in the same order, for random clusters", () => {
    const strategies: Strategy[] = ["least_loaded", "round_robin", "random", "capability_match", "cost_optimized"];
    for (let seed = 1; seed <= 60; seed++) {
      const rnd = prng(seed);
      const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
      const ws = Array.from({ length: 3 + Math.floor(rnd() * 12) }, (_, i) => {
        const slots = 1 + Math.floor(rnd() * 3);
        return worker(`w${i}`, {
          slots,
          busy: Math.floor(rnd() * (slots + 1)),
          agents: rnd() < 0.8 ? ["shell"] : ["noop"],
          labels: ["eu", "us", "gpu"].filter(() => rnd() < 0.4),
          capabilities: ["python", "docker"].filter(() => rnd() < 0.5),
          accessMode: pick(["subscription", "api", "local"] as const),
          costPerTask: Math.floor(rnd() * 4),
        });
      });
      const strategy = pick(strategies);
      const tasks: Task[] = [
        anywhere,
        nowhere,
        { agent: "noop", placement: ANY, strategy },
        { agent: "shell", placement: { labels: ["eu"], requires: [] }, strategy },
        { agent: "shell", placement: { labels: ["gpu"], requires: ["python"] }, strategy },
        { agent: "shell", placement: { labels: [], requires: ["docker"] }, strategy },
        { agent: "shell", placement: { labels: [], requires: [], worker: pick(ws).id }, strategy },
      ];
      const entries = Array.from({ length: 40 + Math.floor(rnd() * 200) }, (_, i) =>
        held(`t${i}`, pick(tasks), { priority: pick(PRIORITIES), rank: 1 + Math.floor(rnd() * 4), seq: i }),
      );
      const fill = () => {
        const q = new ReadyQueue<Route>();
        for (const e of entries) q.add(e, NOW);
        return q;
      };
      const copy = () => ws.map((w) => ({ ...w }));
      const q1 = fill();
      const q2 = fill();
      const expected = referencePass(q1, copy(), new Router(prng(seed + 1000)));
      const got = pass(q2, copy(), new Router(prng(seed + 1000)));
      expect(got.placed, `seed ${seed}`).toEqual(expected);
      expect([...q2.ordered()].map((e) => e.key), `seed ${seed}`).toEqual([...q1.ordered()].map((e) => e.key));
    }
  });
});

// ---------------------------------------------------------------- registry: load order


/** A heartbeat record as a worker writes it (two slots). */
const record = (over: Partial<WorkerRecord> = {}): WorkerRecord => workerRecord({ slots: 2, ...over });
const load = workerLoad;

/**
 * A registry fed by hand. applyRecord/applyLoad never touch the connection or the
 * bucket (only start() does, and it is not called), so none is given.
 */
function offlineRegistry(clock = new ManualClock()) {
  return new WorkerRegistry(undefined as never, undefined as never, topology("t"), clock, 1_000, silentLogger, () => undefined);
}

describe("registry - what a worker is busy with, as this balancer sees it", () => {
  it("registry - work this balancer placed and the worker has not started yet counts on top of what the worker runs (a second balancer's task): a full worker gets no more", () => {
    const clock = new ManualClock();
    const reg = offlineRegistry(clock);
    // Two slots: the worker runs y, which another balancer replica placed.
    reg.applyRecord(record({ running: 1, loadSeq: 1, active: ["r.y.1"] }));
    // This balancer placed x there: on its way, queued on the worker's subject.
    reg.workers.get("w1")!.outstanding.set("r.x.1", clock.now());
    expect(reg.candidates()[0]!.busy).toBe(2);
    expect(new Router().choose("least_loaded", reg.candidates(), "shell", { labels: [], requires: [] })).toBeUndefined();
    // x starts: the worker's report says so (running 2, x among the active), still 2, not 3.
    reg.applyLoad(load({ running: 2, loadSeq: 2, finished: [], active: ["r.y.1", "r.x.1"] }));
    expect(reg.candidates()[0]!.busy).toBe(2);
    // y ends: one free slot.
    reg.applyLoad(load({ running: 1, loadSeq: 3, finished: ["r.y.1"], active: ["r.x.1"] }));
    expect(reg.candidates()[0]!.busy).toBe(1);
  });

  it("registry - a start reported by the worker (load report, before its next heartbeat) makes a one-slot worker busy for every balancer, not only the one that placed it", () => {
    const reg = offlineRegistry();
    reg.applyRecord(record({ slots: 1, running: 0, loadSeq: 0 }));
    expect(reg.applyLoad(load({ running: 1, loadSeq: 1, finished: [], active: ["r.a.1"] }))).toBe(false);
    expect(reg.candidates()[0]!.busy).toBe(1);
    expect(new Router().choose("least_loaded", reg.candidates(), "shell", { labels: [], requires: [] })).toBeUndefined();
  });
});

describe("registry - heartbeat and load report out of order", () => {
  it("a heartbeat written before a finish but delivered after its load report does not bring back the old load", () => {
    const reg = offlineRegistry();
    reg.applyRecord(record({ running: 0, loadSeq: 0 }));
    // Two tasks start (seq 1, 2); the heartbeat then says running 2 at seq 2...
    reg.applyRecord(record({ running: 2, loadSeq: 2, active: ["r.a.1", "r.b.1"] }));
    // ...a third heartbeat is written at seq 2 too, but is still on its way (KV) when both
    // tasks finish and their load reports (core NATS, seq 3 and 4) arrive first.
    expect(reg.applyLoad(load({ running: 1, loadSeq: 3, finished: ["r.a.1"] }))).toBe(true);
    expect(reg.applyLoad(load({ running: 0, loadSeq: 4, finished: ["r.b.1"] }))).toBe(true);
    expect(reg.candidates()[0]!.busy).toBe(0);
    const late = record({ running: 2, loadSeq: 2, active: ["r.a.1", "r.b.1"], heartbeatAt: "2026-01-01T00:00:01.000Z", pending: 3 });
    // Nothing that could free capacity: no dispatch pass needed for it.
    expect(reg.applyRecord(late)).toBe(false);
    const view = reg.workers.get("w1")!;
    expect(view.record.running).toBe(0);
    expect(view.loadSeq).toBe(4);
    // The rest of the late record still counts: it is alive and says what it is.
    expect(view.record.heartbeatAt).toBe(late.heartbeatAt);
    expect(view.record.pending).toBe(3);
    expect(reg.candidates()[0]!.busy).toBe(0);
  });

  it("a load report older than the heartbeat already applied does not overwrite running, but its finished attempts are forgotten", () => {
    const clock = new ManualClock();
    const reg = offlineRegistry(clock);
    reg.applyRecord(record());
    const view = reg.workers.get("w1")!;
    // This balancer assigned two attempts.
    view.outstanding.set("r.a.1", clock.now());
    view.outstanding.set("r.b.1", clock.now());
    // On the worker: a starts (seq 1), b starts (2), a finishes (3), c starts (4). The
    // heartbeat at seq 4 (running b and c) arrives before the report of a's finish (seq 3).
    reg.applyRecord(record({ running: 2, loadSeq: 4, active: ["r.b.1", "r.c.1"] }));
    reg.applyLoad(load({ running: 1, loadSeq: 3, finished: ["r.a.1"] }));
    expect(view.record.running).toBe(2);
    expect(view.loadSeq).toBe(4);
    expect([...view.outstanding.keys()]).toEqual(["r.b.1"]);
  });

  it("applies records and reports in order as before, and an equal sequence (workers that send none: 0) still applies", () => {
    const reg = offlineRegistry();
    reg.applyRecord(record({ running: 1 }));
    reg.applyLoad(load({ running: 0 }));
    expect(reg.workers.get("w1")!.record.running).toBe(0);
    reg.applyRecord(record({ running: 2 }));
    expect(reg.workers.get("w1")!.record.running).toBe(2);
    // Messages from a worker without the field decode with sequence 0.
    expect(SCHEMAS.WorkerLoad.schema.parse({ type: "worker.load", workerId: "w1", running: 1 }).loadSeq).toBe(0);
    const { loadSeq: _omitted, ...old } = record();
    expect(SCHEMAS.WorkerRecord.schema.parse(old).loadSeq).toBe(0);
  });

  it("a restarted worker (same id, new startedAt) starts its sequence again", () => {
    const reg = offlineRegistry();
    reg.applyRecord(record({ running: 1, loadSeq: 41 }));
    expect(reg.applyRecord(record({ running: 0, loadSeq: 0, startedAt: "2026-01-01T01:00:00.000Z" }))).toBe(true);
    expect(reg.workers.get("w1")!.record.running).toBe(0);
    reg.applyLoad(load({ running: 0, loadSeq: 2 }));
    reg.applyRecord(record({ running: 1, loadSeq: 3, startedAt: "2026-01-01T01:00:00.000Z" }));
    expect(reg.workers.get("w1")!.record.running).toBe(1);
  });

  it("asks for a dispatch pass only when a heartbeat may add capacity", () => {
    const clock = new ManualClock();
    const reg = offlineRegistry(clock);
    expect(reg.applyRecord(record({ running: 2, loadSeq: 2 }))).toBe(true); // new worker
    expect(reg.applyRecord(record({ running: 2, loadSeq: 2 }))).toBe(false); // nothing new
    expect(reg.applyRecord(record({ running: 1, loadSeq: 3 }))).toBe(true); // a slot freed
    expect(reg.applyRecord(record({ running: 2, loadSeq: 4 }))).toBe(false); // busier
    expect(reg.applyRecord(record({ running: 2, loadSeq: 4, state: "draining" }))).toBe(true); // state changed
    expect(reg.applyRecord(record({ running: 2, loadSeq: 4 }))).toBe(true); // back to running
    expect(reg.applyRecord(record({ running: 2, loadSeq: 4, slots: 3 }))).toBe(true);
    expect(reg.applyRecord(record({ running: 2, loadSeq: 4, slots: 3, labels: ["gpu"] }))).toBe(true);
    expect(reg.applyRecord(record({ running: 2, loadSeq: 4, slots: 3, labels: ["gpu"] }))).toBe(false);
    // Silent for more than three heartbeats (gone), then heard again: revived.
    clock.advance(3_001);
    expect(reg.candidates()).toEqual([]);
    expect(reg.applyRecord(record({ running: 2, loadSeq: 4, slots: 3, labels: ["gpu"] }))).toBe(true);
    // An assignment whose finish report was lost, corrected by the heartbeat.
    const view = reg.workers.get("w1")!;
    view.outstanding.set("r.lost.1", clock.now());
    clock.advance(3_001);
    expect(reg.applyRecord(record({ running: 2, loadSeq: 4, slots: 3, labels: ["gpu"] }))).toBe(true);
    expect(view.outstanding.size).toBe(0);
  });

  it("a load report for an unknown worker is ignored", () => {
    const reg = offlineRegistry();
    expect(reg.applyLoad(load({ workerId: "nobody" }))).toBe(false);
    expect(reg.workers.size).toBe(0);
  });
});


// ---------------------------------------------------------------- remainingPathLengths

const ranks = (tasks: Array<{ id: string; needs?: string[] }>) =>
  Object.fromEntries(remainingPathLengths(tasks.map((t) => ({ id: t.id, needs: t.needs ?? [] }))));

describe("graph - remainingPathLengths", () => {
  it("a lone task has length 1", () => {
    expect(ranks([{ id: "a" }])).toEqual({ a: 1 });
  });

  it("chain: counts the tasks left to the end, in any listing order", () => {
    expect(ranks([{ id: "c", needs: ["b"] }, { id: "a" }, { id: "b", needs: ["a"] }])).toEqual({ a: 3, b: 2, c: 1 });
  });

  it("fan-in: every producer is two from the end", () => {
    expect(ranks([{ id: "a" }, { id: "b" }, { id: "c" }, { id: "join", needs: ["a", "b", "c"] }])).toEqual({ a: 2, b: 2, c: 2, join: 1 });
  });

  it("fan-out: the root is one more than its longest branch", () => {
    expect(ranks([{ id: "root" }, { id: "x", needs: ["root"] }, { id: "y", needs: ["root"] }, { id: "z", needs: ["y"] }])).toEqual({
      root: 3,
      x: 1,
      y: 2,
      z: 1,
    });
  });

  it("diamond: the longest of the two paths counts", () => {
    expect(ranks([{ id: "a" }, { id: "b", needs: ["a"] }, { id: "c", needs: ["a"] }, { id: "d", needs: ["b", "c"] }])).toEqual({
      a: 3,
      b: 2,
      c: 2,
      d: 1,
    });
    // An uneven diamond: a -> b -> b2 -> d and a -> c -> d.
    expect(
      ranks([
        { id: "a" },
        { id: "b", needs: ["a"] },
        { id: "b2", needs: ["b"] },
        { id: "c", needs: ["a"] },
        { id: "d", needs: ["b2", "c"] },
      ]),
    ).toEqual({ a: 4, b: 3, b2: 2, c: 2, d: 1 });
  });

  it("independent components are ranked on their own", () => {
    expect(ranks([{ id: "a" }, { id: "b", needs: ["a"] }, { id: "solo" }])).toEqual({ a: 2, b: 1, solo: 1 });
  });

  it("handles a 20,000-task chain without recursion limits", () => {
    const n = 20_000;
    const tasks = Array.from({ length: n }, (_, i) => ({ id: `t${i}`, needs: i ? [`t${i - 1}`] : [] }));
    const r = remainingPathLengths(tasks);
    expect(r.get("t0")).toBe(n);
    expect(r.get(`t${n - 1}`)).toBe(1);
  });
});
