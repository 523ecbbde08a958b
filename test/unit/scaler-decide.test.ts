import { describe, expect, it } from "vitest";
import { assignBacklog, decidePool, emptyMemory, type PoolMemory, type PoolWorker, type ScaleDecision, type WorkerExit } from "../../src/actors/scaler/decide.js";
import { ScalePolicySchema, type ScalePolicyInput } from "../../src/runtime/scaling.js";

/**
 * The scaler's decision (src/actors/scaler/decide.ts) against scenarios, with a simulated
 * pool: workers appear `warmupMs` after they are started, take one task per slot from
 * the backlog, each task takes `taskMs`, and the scaler decides every `tickMs`. Nothing
 * sleeps: the clock is the simulation's.
 */

const T0 = 1_700_000_000_000;

interface SimOptions {
  policy: ScalePolicyInput;
  slots?: number;
  warmupMs: number;
  taskMs: number;
  tickMs?: number;
  /** Tasks arriving at each simulated time (ms from the start). */
  arrivals: (t: number, tickMs: number) => number;
  durationMs: number;
}

interface SimWorker {
  id: string;
  readyAt: number;
  /** End times of the tasks it runs. */
  tasks: number[];
  stopping: boolean;
}

interface Trace {
  t: number;
  ready: number;
  warming: number;
  backlog: number;
  decision: ScaleDecision;
}

function simulate(o: SimOptions) {
  const policy = ScalePolicySchema.parse(o.policy);
  const slots = o.slots ?? 1;
  const tick = o.tickMs ?? 1_000;
  let memory: PoolMemory = emptyMemory();
  let backlog = 0;
  let n = 0;
  const workers = new Map<string, SimWorker>();
  const trace: Trace[] = [];
  const killedBusy: string[] = [];
  let completed = 0;
  let launched = 0;
  let maxCapacity = 0;
  for (let t = 0; t <= o.durationMs; t += tick) {
    const now = T0 + t;
    backlog += o.arrivals(t, tick);
    // Tasks end, free workers take from the backlog.
    for (const w of workers.values()) {
      const before = w.tasks.length;
      w.tasks = w.tasks.filter((end) => end > now);
      completed += before - w.tasks.length;
      if (w.readyAt > now || w.stopping) continue;
      while (w.tasks.length < slots && backlog > 0) {
        backlog--;
        w.tasks.push(now + o.taskMs);
      }
    }
    const up = [...workers.values()].filter((w) => w.readyAt <= now);
    const obsWorkers: PoolWorker[] = up.map((w) => ({ id: w.id, state: w.stopping ? "draining" : "running", slots, running: w.tasks.length, queued: 0, agents: ["shell"] }));
    const exits: WorkerExit[] = [];
    const decision = decidePool({ policy, observation: { slots, workers: obsWorkers, backlog, exits }, memory, now, newId: () => `w${++n}`, instance: "sim" });
    memory = decision.memory;
    for (const id of decision.launch) {
      workers.set(id, { id, readyAt: now + o.warmupMs, tasks: [], stopping: false });
      launched++;
    }
    for (const s of decision.stop) {
      const w = workers.get(s.id)!;
      if (w.tasks.length > 0) killedBusy.push(s.id);
      workers.delete(s.id); // an idle worker stops at once
    }
    for (const id of decision.abandon) workers.delete(id);
    const ready = [...workers.values()].filter((w) => w.readyAt <= now).length;
    maxCapacity = Math.max(maxCapacity, workers.size);
    trace.push({ t, ready, warming: workers.size - ready, backlog, decision });
  }
  return { trace, killedBusy, completed, launched, maxCapacity, backlog, workers };
}

/** Times the pool's size went down after having gone up (a "flap"). */
function reversals(sizes: number[]): number {
  let dir = 0;
  let flips = 0;
  for (let i = 1; i < sizes.length; i++) {
    const d = Math.sign(sizes[i]! - sizes[i - 1]!);
    if (d === 0) continue;
    if (dir !== 0 && d !== dir) flips++;
    dir = d;
  }
  return flips;
}

describe("scaler decide - scenarios", () => {
  it("scaler decide - a burst of 200 with min 0, max 6: grows to 6, never more, drains the backlog, back to 0 after the idle timeout, no busy worker stopped", () => {
    const sim = simulate({
      policy: { min: 0, max: 6, idleTimeout: "10s", scaleDown: { stabilization: "5s", cooldown: "5s" } },
      warmupMs: 3_000,
      taskMs: 2_000,
      arrivals: (t) => (t === 0 ? 200 : 0),
      durationMs: 180_000,
    });
    expect(sim.maxCapacity).toBe(6);
    expect(sim.launched).toBe(6);
    expect(sim.completed).toBe(200);
    expect(sim.backlog).toBe(0);
    expect(sim.workers.size).toBe(0);
    expect(sim.killedBusy).toEqual([]);
    // At most maxStep (4) per decision.
    expect(Math.max(...sim.trace.map((s) => s.decision.launch.length))).toBe(4);
    // The first decision already starts workers (scale from zero), and says why.
    expect(sim.trace[0]!.decision.launch).toHaveLength(4);
    expect(sim.trace[0]!.decision.reason).toMatch(/backlog 200.*starting 4/);
    // Warm-up was measured: decision to first sighting.
    expect(sim.trace.flatMap((s) => s.decision.warmedUp.map((w) => w.ms))).toContain(3_000);
  });

  it("scaler decide - a slow trickle (a task every 20 s): one worker, started once, kept between tasks", () => {
    const sim = simulate({
      policy: { min: 0, max: 6, idleTimeout: "60s" },
      warmupMs: 2_000,
      taskMs: 2_000,
      arrivals: (t) => (t % 20_000 === 0 ? 1 : 0),
      durationMs: 200_000,
    });
    expect(sim.launched).toBe(1);
    expect(sim.maxCapacity).toBe(1);
    expect(sim.completed).toBeGreaterThanOrEqual(9);
    expect(sim.killedBusy).toEqual([]);
  });

  it("scaler decide - flapping load (12 tasks, then nothing, every 10 s): stabilization and cooldowns keep the size steady; without them it flaps", () => {
    const flapping = (t: number) => (t % 20_000 === 0 ? 12 : 0);
    const steady = simulate({
      policy: { min: 0, max: 12, idleTimeout: "5s", scaleDown: { stabilization: "60s", cooldown: "30s" } },
      warmupMs: 1_000,
      taskMs: 9_000,
      arrivals: flapping,
      durationMs: 300_000,
    });
    const jumpy = simulate({
      policy: { min: 0, max: 12, idleTimeout: "1s", scaleDown: { stabilization: 0, cooldown: 0 }, scaleUp: { cooldown: 0 } },
      warmupMs: 1_000,
      taskMs: 9_000,
      arrivals: flapping,
      durationMs: 300_000,
    });
    const sizes = (sim: ReturnType<typeof simulate>) => sim.trace.map((s) => s.ready + s.warming);
    // The same work done both ways; the stabilized pool started its workers once.
    expect(steady.completed).toBe(jumpy.completed);
    expect(steady.launched).toBe(12);
    expect(reversals(sizes(steady).slice(0, 280))).toBe(0);
    // The unstabilized one goes up and down every cycle: what the windows prevent.
    expect(reversals(sizes(jumpy))).toBeGreaterThanOrEqual(10);
    expect(jumpy.launched).toBeGreaterThan(100);
    expect(steady.killedBusy).toEqual([]);
    expect(jumpy.killedBusy).toEqual([]);
  });

  it("scaler decide - warm-up longer than the cooldown: workers still starting count, so no more start than wanted", () => {
    const sim = simulate({
      policy: { min: 0, max: 6, maxStep: 2, scaleUp: { cooldown: "2s" } },
      warmupMs: 30_000,
      taskMs: 5_000,
      arrivals: (t) => (t === 0 ? 100 : 0),
      durationMs: 60_000,
    });
    expect(sim.launched).toBe(6);
    expect(sim.maxCapacity).toBe(6);
    // Three steps of two, a cooldown apart, all while the first ones were still booting.
    const starts = sim.trace.filter((s) => s.decision.launch.length > 0).map((s) => [s.t, s.decision.launch.length]);
    expect(starts).toEqual([
      [0, 2],
      [2_000, 2],
      [4_000, 2],
    ]);
    expect(sim.trace.find((s) => s.t === 20_000)!.decision.reason).toMatch(/6 starting/);
  });

  it("scaler decide - min 0: scales to zero after the idle timeout, and from zero on the next task", () => {
    const sim = simulate({
      policy: { min: 0, max: 4, idleTimeout: "10s", scaleDown: { stabilization: "5s", cooldown: "5s" } },
      warmupMs: 1_000,
      taskMs: 1_000,
      arrivals: (t) => (t === 0 || t === 100_000 ? 1 : 0),
      durationMs: 130_000,
    });
    const size = (t: number) => sim.trace.find((s) => s.t === t)!;
    expect(size(2_000).ready).toBe(1);
    expect(size(60_000).ready + size(60_000).warming).toBe(0);
    expect(size(100_000).decision.launch).toHaveLength(1);
    expect(sim.completed).toBe(2);
    expect(sim.workers.size).toBe(0);
  });

  it("scaler decide - min 2 is kept however idle the pool is", () => {
    const sim = simulate({ policy: { min: 2, max: 4, idleTimeout: "1s", scaleDown: { stabilization: 0, cooldown: 0 } }, warmupMs: 1_000, taskMs: 1_000, arrivals: () => 0, durationMs: 30_000 });
    expect(sim.launched).toBe(2);
    expect(sim.trace.at(-1)!.ready).toBe(2);
  });
});

describe("scaler decide - single decisions", () => {
  const policy = ScalePolicySchema.parse({ min: 0, max: 4 });
  const worker = (id: string, running: number, queued = 0): PoolWorker => ({ id, state: "running", slots: 1, running, queued, agents: ["shell"] });
  const decide = (over: Partial<Parameters<typeof decidePool>[0]> & { workers?: PoolWorker[]; backlog?: number; exits?: WorkerExit[] }) =>
    decidePool({
      policy: over.policy ?? policy,
      observation: { slots: 1, workers: over.workers ?? [], backlog: over.backlog ?? 0, exits: over.exits ?? [] },
      memory: over.memory ?? emptyMemory(),
      now: over.now ?? T0,
      newId: (() => {
        let i = 0;
        return () => `n${++i}`;
      })(),
      instance: "test",
    });

  it("scaler decide - a crashed worker is replaced with backoff: the next start waits 1 s, then 2 s after a second crash", () => {
    let d = decide({ backlog: 1 });
    expect(d.launch).toEqual(["n1"]);
    d = decide({ memory: d.memory, now: T0 + 500, exits: [{ id: "n1", requested: false, detail: "exit code 1" }], backlog: 1 });
    expect(d.launch).toEqual([]);
    expect(d.reason).toMatch(/n1 failed to start \(exit code 1\); the next start waits/);
    d = decide({ memory: d.memory, now: T0 + 1_600, backlog: 1, policy: ScalePolicySchema.parse({ max: 4, scaleUp: { cooldown: 0 } }) });
    expect(d.launch).toEqual(["n1"]);
    d = decide({ memory: d.memory, now: T0 + 1_700, exits: [{ id: "n1", requested: false, detail: "signal SIGKILL" }], backlog: 1 });
    expect(d.memory.failures).toBe(2);
    expect(d.memory.retryAt).toBe(T0 + 1_700 + 2_000);
  });

  it("scaler decide - a worker asked to stop that exits is no crash", () => {
    const d = decide({ memory: { ...emptyMemory(), stopping: { w1: T0 } }, exits: [{ id: "w1", requested: true, detail: "exit code 0" }] });
    expect(d.memory.failures).toBe(0);
    expect(d.memory.stopping).toEqual({});
  });

  it("scaler decide - a start that never heartbeats is given up after the warm-up timeout, and counts as a failure", () => {
    const memory = { ...emptyMemory(), warming: [{ id: "slow", at: T0, by: "test" }] };
    expect(decide({ memory, now: T0 + 60_000, backlog: 1 }).launch).toEqual([]);
    const d = decide({ memory, now: T0 + 120_001, backlog: 1 });
    expect(d.abandon).toEqual(["slow"]);
    expect(d.memory.failures).toBe(1);
    expect(d.launch).toEqual([]); // the backoff
  });

  it("scaler decide - a worker without a known id (a pod) ends the oldest warm-up", () => {
    const memory = { ...emptyMemory(), warming: [{ id: "k-1", at: T0, by: "test" }, { id: "k-2", at: T0 + 1_000, by: "test" }] };
    const d = decide({ memory, now: T0 + 5_000, workers: [worker("pod-abc", 0)] });
    expect(d.warmedUp).toEqual([{ id: "pod-abc", ms: 5_000 }]);
    expect(d.memory.warming.map((l) => l.id)).toEqual(["k-2"]);
  });

  it("scaler decide - over max after the policy was lowered: starting workers go first, then idle ones, then the least busy is drained", () => {
    // The workers were seen before: none of them is the one starting.
    const memory = { ...emptyMemory(), warming: [{ id: "s1", at: T0 - 1_000, by: "test" }], seen: ["busy2", "idle", "busy1"] };
    const d = decide({ memory, policy: ScalePolicySchema.parse({ max: 1 }), workers: [worker("busy2", 1, 1), worker("idle", 0), worker("busy1", 1)] });
    expect(d.abandon).toEqual(["s1"]);
    expect(d.stop).toEqual([
      { id: "idle", drain: false, why: "over_max" },
      { id: "busy1", drain: true, why: "over_max" },
    ]);
    expect(d.desired).toBe(1);
  });

  it("scaler decide - scale-in never takes a busy worker, only ones idle for the idle timeout", () => {
    const p = ScalePolicySchema.parse({ max: 4, idleTimeout: "10s", scaleDown: { stabilization: 0, cooldown: 0 } });
    const workers = [worker("a", 1), worker("b", 0), worker("c", 0)];
    let d = decide({ policy: p, workers });
    expect(d.stop).toEqual([]);
    d = decide({ policy: p, workers, memory: d.memory, now: T0 + 10_000 });
    expect(d.stop.map((s) => s.id).sort()).toEqual(["b", "c"]);
    expect(d.stop.every((s) => !s.drain)).toBe(true);
  });

  it("scaler decide - a pool busier than the band's low mark keeps its idle worker", () => {
    const p = ScalePolicySchema.parse({ max: 4, idleTimeout: "1s", scaleDown: { stabilization: 0, cooldown: 0 }, utilization: { low: 0.5, high: 0.9 } });
    const workers = [worker("a", 1), worker("b", 1), worker("c", 0)];
    const d = decide({ policy: p, workers, memory: { ...emptyMemory(), idleSince: { c: T0 - 60_000 } } });
    expect(d.stop).toEqual([]);
  });

  it("scaler decide - hot (over the band's high mark) with work waiting: one more before the queue target is reached", () => {
    const p = ScalePolicySchema.parse({ max: 8, targetQueue: 2, utilization: { low: 0.3, high: 0.8 } });
    const d = decide({ policy: p, workers: [worker("a", 1), worker("b", 1)], backlog: 1 });
    expect(d.launch).toHaveLength(1);
  });
});

describe("scaler decide - backlog per placement", () => {
  const pools = [
    { name: "local", labels: ["local", "process"], capabilities: [], agents: ["shell", "noop"], room: true },
    { name: "gpu", labels: ["ssh", "gpu"], capabilities: ["cuda"], room: true },
  ];

  it("scaler decide - a backlog of gpu tasks goes to the pool whose workers carry gpu; pinned and unservable tasks grow nothing", () => {
    const out = assignBacklog(
      [
        { agent: "shell", labels: [], requires: [], count: 5 },
        { agent: "shell", labels: ["gpu"], requires: [], count: 3 },
        { agent: "shell", labels: ["gpu"], requires: ["cuda"], count: 2 },
        { agent: "shell", labels: [], requires: [], worker: "w-1", count: 4 },
        { agent: "shell", labels: ["arm"], requires: [], count: 7 },
        { agent: "codex", labels: ["local"], requires: [], count: 1 },
      ],
      pools,
    );
    expect(Object.fromEntries(out.perPool)).toEqual({ local: 5, gpu: 5 });
    expect(out.pinned).toBe(4);
    expect(out.unserved).toBe(8);
  });

  it("scaler decide - a full pool passes its backlog to the next that serves it", () => {
    const out = assignBacklog([{ agent: "shell", labels: [], requires: [], count: 9 }], [{ ...pools[0]!, room: false }, { ...pools[1]!, room: true }]);
    expect(Object.fromEntries(out.perPool)).toEqual({ local: 0, gpu: 9 });
  });
});

describe("scaler decide - large pools", () => {
  it("decide - in a pool larger than the ids it remembers of gone workers, a worker seen before never ends another's warm-up", () => {
    const policy = ScalePolicySchema.parse({ min: 0, max: 5_000, scaleUp: { cooldown: 0 } });
    const workers: PoolWorker[] = Array.from({ length: 2_500 }, (_, i) => ({ id: `w-${i}`, state: "running", slots: 1, running: 1, queued: 0, agents: ["shell"] }));
    let id = 0;
    const input = (memory: PoolMemory, now: number, backlog: number) => ({ policy, observation: { slots: 1, workers, backlog, exits: [] }, memory, now, newId: () => `n-${id++}`, instance: "t" });
    const first = decidePool(input(emptyMemory(), T0, 1));
    expect(first.launch).toEqual(["n-0"]);
    // The same 2,500 workers again, the new one not up yet: it is still warming.
    const second = decidePool(input(first.memory, T0 + 1_000, 0));
    expect(second.warmedUp).toEqual([]);
    expect(second.memory.warming.map((l) => l.id)).toEqual(["n-0"]);
  });
});
