import { describe, expect, it } from "vitest";
import { compareReady, ReadyQueue, type ReadyEntry } from "../../src/actors/balancer/ready-queue.js";
import { eligible, Router, type Candidate, type Placement } from "../../src/actors/balancer/strategy.js";
import { PRIORITIES, remainingPathLengths, type Priority } from "../../src/runtime/graph.js";

// ---------------------------------------------------------------- helpers

const NOW = 1_000_000;

let nextSeq = 1;
/** A due entry; seq grows with each call unless given, so later calls arrive later. */
function entry(key: string, opts: { priority?: Priority; rank?: number; seq?: number; notBefore?: number } = {}): ReadyEntry<string> {
  return {
    key,
    priority: opts.priority ?? "normal",
    rank: opts.rank ?? 1,
    seq: opts.seq ?? nextSeq++,
    notBefore: opts.notBefore ?? 0,
    item: key,
  };
}

const keys = (q: ReadyQueue<string>) => [...q.ordered()].map((e) => e.key);

/** Deterministic PRNG (mulberry32), so a failing randomized case can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

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

  it("matches a full sort by compareReady for many random entries", () => {
    const rnd = prng(42);
    const q = new ReadyQueue<string>();
    const all: ReadyEntry<string>[] = [];
    for (let i = 0; i < 2_000; i++) {
      const e = entry(`k${i}`, {
        priority: PRIORITIES[Math.floor(rnd() * PRIORITIES.length)]!,
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

  // KNOWN DEFECT (reported, not fixed here): the cursor is one counter shared by every
  // eligible set. When tasks with different placements alternate (two runs with
  // different labels, or two agents), each set is indexed by every other cursor value,
  // so half the workers of each set never get a task. Expected: every worker of each set
  // is used. `it.fails` keeps the suite green while the defect stands; drop `.fails`
  // once the router rotates per eligible set (e.g. remembers the last id per set).
  it.fails("rotates within each eligible set when placements alternate (KNOWN DEFECT: shared cursor)", () => {
    const ws = [
      worker("a", { labels: ["x"] }),
      worker("b", { labels: ["x"] }),
      worker("c", { labels: ["y"] }),
      worker("d", { labels: ["y"] }),
    ];
    const router = new Router();
    const used = new Set<string>();
    for (let i = 0; i < 8; i++) {
      used.add(router.choose("round_robin", ws, "shell", { labels: ["x"], requires: [] })!.id);
      used.add(router.choose("round_robin", ws, "shell", { labels: ["y"], requires: [] })!.id);
    }
    expect([...used].sort()).toEqual(["a", "b", "c", "d"]);
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
