import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { describe, expect, it, onTestFailed } from "vitest";
import { Balancer } from "../../src/actors/balancer/balancer.js";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode, encode, encodeValue } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph, type Priority } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent, type TaskWork } from "../../src/runtime/messages.js";
import { attemptKey } from "../../src/runtime/names.js";
import { consumers, openBuckets, workerConsumer } from "../../src/runtime/topology.js";
import { workerRecord } from "../helpers/records.js";
import { useTestServer, eventually, provisioned, uniqueTopology } from "../helpers/nats.js";

/**
 * The ready queue end to end: priority at any backlog (the balancer's per-level
 * windows), fairness between runs of one level, and a task no worker can take.
 */

const ts = useTestServer("ado-queue-");

const T0 = Date.parse("2026-01-01T00:00:00.000Z");

/**
 * A balancer alone on a fresh prefix, one fake worker the test drives (its registry
 * record, its load reports), and the work the balancer sends it, in order.
 */
async function balancerAlone(maxHeld?: number) {
  const nc = await ts.connect("queue-balancer");
  const { topo } = await provisioned(nc);
  const kv = await openBuckets(nc, topo);
  const js = jetstream(nc);
  // A long heartbeat: the fake worker stays live without beating.
  const balancer = (await new Balancer("b1", { nc, topo, kv, logger: silentLogger }, { heartbeatMs: 60_000, maxHeld }).start()) as Balancer;
  const workerId = "w1";
  let loadSeq = 0;
  const record = workerRecord({ workerId, host: "test", agents: ["shell", "noop"], startedAt: new Date(T0).toISOString(), heartbeatAt: new Date(T0).toISOString() });
  const assigned: TaskWork[] = [];
  const jsm = await js.jetstreamManager();
  await jsm.consumers.add(topo.streams.work.name, workerConsumer(topo, workerId));
  const work = await js.consumers.get(topo.streams.work.name, consumers.work(workerId));
  const reading = await work.consume({
    callback: (m) => {
      assigned.push(decode(SCHEMAS.TaskWork, m.data, m.headers));
      m.ack();
    },
  });
  let seq = 0;
  return {
    balancer,
    assigned,
    /** Registers the worker (one free slot). */
    join: () => kv.workers.put(workerId, encodeValue(SCHEMAS.WorkerRecord, record)),
    /** The worker finished `w`: its slot is free again. */
    finish: (w: TaskWork) => {
      const { data, headers } = encode(SCHEMAS.WorkerLoad, { type: "worker.load", workerId, running: 0, finished: [attemptKey(w)], loadSeq: ++loadSeq });
      nc.publish(topo.subjects.load(workerId), data, { headers });
    },
    ready: async (runId: string, taskId: string, priority: Priority, opts: { rank?: number; submittedAt?: number } = {}) => {
      const at = new Date(opts.submittedAt ?? T0).toISOString();
      const { data, headers } = encode(SCHEMAS.TaskWork, {
        type: "task.work",
        runId,
        taskId,
        attempt: 1,
        priority,
        task: { id: taskId, agent: "noop", priority },
        rank: opts.rank ?? 1,
        branch: `ado/${runId}/${taskId}`,
        readyAt: at,
        submittedAt: at,
      });
      await js.publish(topo.subjects.ready(priority), data, { headers, msgID: `${runId}.${taskId}.${++seq}` });
    },
    close: async () => {
      await reading.close();
      await balancer.close();
    },
  };
}

describe("queue - priority at any backlog", () => {
  it("a critical task submitted behind 200 normal ones, 10 times the balancer's window, starts next", async () => {
    const b = await balancerAlone(20);
    try {
      await b.join();
      for (let i = 0; i < 200; i++) await b.ready("r-normal", `n${String(i).padStart(3, "0")}`, "normal");
      // The one slot takes the first normal task; the window holds 20 more; 179 wait in the stream.
      await eventually(() => b.assigned.length === 1 && b.balancer.stats().held === 20, 20_000, "the slot busy and the window full");
      await b.ready("r-critical", "c", "critical");
      // Its own level's window has room, however many normal tasks wait.
      await eventually(() => b.balancer.stats().held === 21, 20_000, "the critical task held beside the full normal window");
      b.finish(b.assigned[0]!);
      await eventually(() => b.assigned.length === 2, 20_000, "the next dispatch");
      expect(b.assigned[1]).toMatchObject({ runId: "r-critical", taskId: "c", priority: "critical" });
      // Then the normal ones again, in order.
      b.finish(b.assigned[1]!);
      await eventually(() => b.assigned.length === 3, 20_000, "the dispatch after it");
      expect(b.assigned[2]).toMatchObject({ runId: "r-normal", taskId: "n001" });
    } finally {
      await b.close();
    }
  });
});

describe("queue - fairness between runs of one level", () => {
  it("an older run's tasks go first, even when a newer run's tasks have longer paths and arrived earlier", async () => {
    const b = await balancerAlone();
    try {
      // The newer run (submitted a second later) has long remaining paths and is ready first.
      for (const id of ["n1", "n2", "n3"]) await b.ready("r-newer", id, "normal", { rank: 10, submittedAt: T0 + 1_000 });
      for (const id of ["o1", "o2", "o3"]) await b.ready("r-older", id, "normal", { rank: 1, submittedAt: T0 });
      await eventually(() => b.balancer.stats().held === 6, 20_000, "all six held");
      await b.join();
      for (let i = 1; i <= 6; i++) {
        await eventually(() => b.assigned.length === i, 20_000, `dispatch ${i}`);
        b.finish(b.assigned[i - 1]!);
      }
      expect(b.assigned.map((w) => w.taskId)).toEqual(["o1", "o2", "o3", "n1", "n2", "n3"]);
    } finally {
      await b.close();
    }
  });

  it("within one run the longest remaining path still goes first", async () => {
    const b = await balancerAlone();
    try {
      await b.ready("r", "short", "normal", { rank: 1 });
      await b.ready("r", "long", "normal", { rank: 5 });
      await eventually(() => b.balancer.stats().held === 2, 20_000, "both held");
      await b.join();
      await eventually(() => b.assigned.length === 1, 20_000, "first dispatch");
      expect(b.assigned[0]!.taskId).toBe("long");
    } finally {
      await b.close();
    }
  });
});

async function stackOn(workers: number, extra: Record<string, unknown> = {}) {
  const topo = uniqueTopology();
  const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200, ...extra });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
  return {
    stack,
    client: new AdoClient(nc, topo),
    close: async () => {
      await nc.drain();
      await stack.close();
    },
  };
}

describe("queue - a task no worker can take", () => {
  it("is announced within seconds as task.waiting, with a reason that says what is missing; other tasks run", async () => {
    const { client, stack, close } = await stackOn(1, { worker: { labels: ["local"] } });
    try {
      const graph = parseGraph(["tasks:", "  - { id: train, agent: noop, placement: { labels: [gpu] } }", "  - { id: ok, agent: noop }"].join("\n") + "\n");
      const { runId } = await client.submit({ graph });
      const events: AdoEvent[] = [];
      const submittedAt = Date.now();
      const run = client.watch(runId, { onEvent: (e) => events.push(e), until: (e) => e.type === "task.waiting" });
      const outcome = await Promise.race([run, new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000))]);
      expect(outcome, "no task.waiting within 20 s").toBeDefined();
      const waiting = events.find((e): e is Extract<AdoEvent, { type: "task.waiting" }> => e.type === "task.waiting")!;
      expect(waiting).toMatchObject({ taskId: "train", attempt: 1, workers: 1 });
      expect(waiting.reason).toBe("no worker can take 'train': none has label gpu (1 worker with agent 'noop'; labels: local; capabilities: none)");
      // About two seconds after it was held, not at once and not much later (generous for a loaded machine).
      expect(Date.parse(waiting.at) - submittedAt).toBeGreaterThanOrEqual(1_500);
      const status = await eventually(async () => {
        const s = await client.status(runId);
        return s?.tasks.find((t) => t.id === "ok")?.status === "succeeded" ? s : undefined;
      }, 20_000, "the other task done");
      expect(status.tasks.find((t) => t.id === "train")?.status).toBe("queued");
      // The balancer's status says the same.
      const balancer = stack.actors.find((a): a is Balancer => a instanceof Balancer)!;
      expect(balancer.stats().waitingReasons).toMatchObject([{ reason: waiting.reason }]);
    } finally {
      await close();
    }
  });

  it("with no worker at all, says so and how to start one", async () => {
    const { client, close } = await stackOn(0);
    try {
      const { runId } = await client.submit({ graph: parseGraph("tasks:\n  - { id: t, agent: noop }\n") });
      const events: AdoEvent[] = [];
      const run = client.watch(runId, { onEvent: (e) => events.push(e), until: (e) => e.type === "task.waiting" });
      await Promise.race([run, new Promise((r) => setTimeout(r, 20_000))]);
      expect(events.find((e) => e.type === "task.waiting")).toMatchObject({
        taskId: "t",
        workers: 0,
        reason: "no worker is connected: start one with 'ado worker' or 'ado up'",
      });
    } finally {
      await close();
    }
  });
});

describe("queue - queue full", () => {
  it("refuses a run past maxQueued saying what to do, keeps counting across a restart, lets --wait in once there is room, and runs every accepted task", async () => {
    const topo = uniqueTopology();
    const base = { prefix: topo.prefix, server: ts.url, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200, maxQueued: 5 };
    // Actors only: without a worker, accepted tasks stay open.
    let actors = await Stack.start({ config: parseConfig({ ...base, workers: 0 }), logger: silentLogger, actors: ["scheduler", "balancer"] });
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const graph = (prefix: string, n: number, chain = false) =>
      parseGraph(`tasks:\n${Array.from({ length: n }, (_, i) => `  - { id: ${prefix}${i}, agent: noop${chain && i ? `, needs: [${prefix}${i - 1}]` : ""} }`).join("\n")}\n`);
    const rejection = async (runId: string) => {
      const outcome = await client.watch(runId as never);
      expect(outcome.status).toBe("rejected");
      return outcome;
    };
    let workers: Stack | undefined;
    // Where it got to, and the runs' events as the watches saw them: said if it fails (a
    // suite run once timed out here at 180 s with nothing to tell where).
    const steps: string[] = [];
    const step = (s: string) => steps.push(`${new Date().toISOString().slice(11, 23)} ${s}`);
    const seen: string[] = [];
    onTestFailed(() => console.log(`[queue-full] steps:\n${steps.join("\n")}\nevents: ${seen.slice(-80).join(", ")}`));
    const onEvent = (e: AdoEvent) => seen.push(`${e.at.slice(17, 23)} ${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ` ${e.runId.slice(-4)}`}`);
    try {
      // A chain of 4: one task ready, three released later. All four count from acceptance.
      const a = await client.submit({ graph: graph("a", 4, true) });
      await eventually(async () => (await client.status(a.runId))?.run.status === "running", 20_000, "run a accepted");

      // 4 open + 2 > 5, though only one task is ready: refused, and told what to do.
      step("a accepted");
      const b = await client.submit({ graph: graph("b", 2) });
      const refused = await rejection(b.runId);
      expect(refused.code).toBe("queue_full");
      expect(refused.error).toBe(
        "queue full: 4 tasks of accepted runs have not finished and this run adds 2 (maxQueued 5). Submit it again once some have finished, or submit with --wait to resubmit until it fits.",
      );
      // One more task fits exactly.
      const c = await client.submit({ graph: graph("c", 1) });
      await eventually(async () => (await client.status(c.runId))?.run.status === "running", 20_000, "run c accepted");
      // A run larger than the bound can never fit: refused as such, and --wait does not loop on it.
      const tooBig = await client.run({ graph: graph("x", 6), wait: true });
      expect(tooBig).toMatchObject({ status: "rejected", code: "invalid" });
      expect(tooBig.error).toMatch(/the run has 6 tasks, more than the scheduler accepts at once \(maxQueued 5\): split it/);

      step("c accepted, x refused");
      // The count is stored: a restarted scheduler refuses the same run.
      await actors.close();
      actors = await Stack.start({ config: parseConfig({ ...base, workers: 0 }), logger: silentLogger, actors: ["scheduler", "balancer"] });
      const b2 = await client.submit({ graph: graph("b", 2) });
      expect((await rejection(b2.runId)).code).toBe("queue_full");

      step("restarted; b refused again");
      // --wait resubmits until it fits: a worker comes, a and c finish, and b gets in.
      const waiting = client.run({ graph: graph("b", 2), wait: true, onEvent });
      await new Promise((r) => setTimeout(r, 1_000));
      workers = await Stack.start({ config: parseConfig({ ...base, workers: 1 }), logger: silentLogger, actors: [] });
      step("worker up");
      const [outA, outB, outC] = await Promise.all([client.watch(a.runId, { onEvent }), waiting, client.watch(c.runId, { onEvent })]);
      step("a, b and c ended");
      // Nothing accepted is lost: every task of every accepted run ran.
      for (const out of [outA, outB, outC]) {
        expect(out.status, out.error).toBe("succeeded");
        expect(out.tasks.every((t) => t.status === "succeeded" && t.attempts === 1)).toBe(true);
      }
      expect(outA.tasks).toHaveLength(4);
      expect(outB.tasks).toHaveLength(2);
      // Finished runs no longer count.
      const scheduler = actors.actors.find((x) => x.kind === "scheduler")!;
      await eventually(() => (scheduler.stats() as { openTasks: number }).openTasks === 0, 10_000, "nothing counted once every run ended");
    } finally {
      await workers?.close();
      await actors.close();
      await nc.drain();
    }
  }, 180_000);
});
