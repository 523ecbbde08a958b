import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Balancer } from "../../src/actors/balancer/balancer.js";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { EmbeddedServer } from "../../src/runtime/embedded-server.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { asRunId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { AdoEvent } from "../../src/runtime/messages.js";
import { openJetStream, WORK_QUEUE_STREAMS } from "../../src/runtime/topology.js";
import { useTestServer, eventually, uniqueTopology } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";
import { tcpProxy } from "../helpers/proxy.js";

const ts = useTestServer("ado-control-");

async function stackOn(url: string, workers: number, extra: Record<string, unknown> = {}) {
  const topo = uniqueTopology();
  const config = parseConfig({ prefix: topo.prefix, server: url, workers, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200, ...extra });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: url, name: "test-client", logger: silentLogger });
  return {
    stack,
    client: new AdoClient(nc, topo),
    close: async () => {
      await nc.drain();
      await stack.close();
    },
  };
}

const lines = async (path: string) => (await readFile(path, "utf8").catch(() => "")).split("\n").filter(Boolean);

describe("scheduling - priority", () => {
  it("under contention, a critical task that became ready later starts before normal ones that waited longer", async () => {
    const repo = await makeRepo();
    const { client, stack, close } = await stackOn(ts.url, 1);
    const order = join(ts.scratch, "order.log");
    const gate = join(ts.scratch, "priority-gate");
    try {
      // The only slot is busy until the test opens the gate; meanwhile normal tasks queue up, then a critical one.
      const blocker = await client.submit({ graph: parseGraph(`tasks:\n  - { id: block, run: "while [ ! -f ${gate} ]; do sleep 0.05; done" }\n`), repo: repo.dir });
      await eventually(async () => (await client.status(blocker.runId))?.tasks[0]?.status === "running", 10_000, "blocker running");
      const normal = await client.submit({
        graph: parseGraph(`tasks:\n${["n1", "n2", "n3"].map((id) => `  - { id: ${id}, run: "echo ${id} >> ${order}" }`).join("\n")}\n`),
        repo: repo.dir,
      });
      await new Promise((r) => setTimeout(r, 200));
      const critical = await client.submit({
        graph: parseGraph(`tasks:\n  - { id: urgent, priority: critical, run: "echo urgent >> ${order}" }\n`),
        repo: repo.dir,
      });
      // The slot frees once the balancer holds all four (a 1 s blocker ended first on a slow machine, and n1 ran first).
      const balancer = stack.actors.find((a): a is Balancer => a instanceof Balancer)!;
      const held = (priority: string) => balancer.heldCounts().filter((c) => c.priority === priority).reduce((n, c) => n + c.count, 0);
      await eventually(() => held("critical") === 1 && held("normal") === 3, 30_000, "the balancer holding urgent and n1..n3");
      await writeFile(gate, "");
      for (const r of [blocker, normal, critical]) expect((await client.watch(r.runId)).status).toBe("succeeded");
      expect((await lines(order))[0]).toBe("urgent");
      expect((await lines(order)).slice(1)).toEqual(["n1", "n2", "n3"]);
    } finally {
      await writeFile(gate, "");
      await close();
      await repo.cleanup();
    }
  });
});

describe("control - cancel, pause, resume", () => {
  it("pause suspends a running agent, resume continues it, cancel kills it and ends the run cancelled", async () => {
    const repo = await makeRepo();
    const { client, close } = await stackOn(ts.url, 1);
    const beat = join(ts.scratch, "beat.log");
    try {
      // The agent appends a line every 50 ms: its heartbeat, outside the worktree.
      const { runId } = await client.submit({
        graph: parseGraph(`tasks:\n  - { id: loop, run: "while true; do echo x >> ${beat}; sleep 0.05; done" }\n  - { id: after, needs: [loop], run: "true" }\n`),
        repo: repo.dir,
      });
      const seen: string[] = [];
      const watching = client.watch(asRunId(runId), { onEvent: (e) => seen.push(e.type) });
      watching.catch(() => undefined); // awaited below
      const count = (type: string) => seen.filter((t) => t === type).length;
      await eventually(async () => (await lines(beat)).length > 3, 10_000, "agent running");
      await client.control(await client.resolveTarget(`${runId}/loop`), "pause");
      // task.paused comes once the agent is stopped (a fixed 400 ms was too short for a loaded machine).
      await eventually(() => count("task.paused") === 1, 30_000, "the pause landed");
      const paused = (await lines(beat)).length;
      await new Promise((r) => setTimeout(r, 500));
      expect((await lines(beat)).length).toBe(paused); // suspended: no progress at all
      await client.control({ runId, taskId: "loop" }, "resume");
      await eventually(async () => (await lines(beat)).length > paused + 3, 5_000, "agent resumed");
      // A second pause is news too, not a replay of the first (its event is not deduplicated).
      await client.control({ runId, taskId: "loop" }, "pause");
      // Landed before the resume is sent, which could otherwise supersede it on a slow machine.
      await eventually(() => count("task.paused") === 2, 30_000, "the second pause landed");
      const pausedAgain = (await lines(beat)).length;
      await client.control({ runId, taskId: "loop" }, "resume");
      await eventually(async () => (await lines(beat)).length > pausedAgain + 3, 5_000, "agent resumed again");
      await client.control({ runId }, "cancel", "test over");
      const outcome = await watching;
      expect(seen.filter((t) => t === "task.paused")).toHaveLength(2);
      expect(seen.filter((t) => t === "task.resumed")).toHaveLength(2);
      expect(outcome.status).toBe("cancelled");
      const status = Object.fromEntries(outcome.tasks.map((t) => [t.id, t.status]));
      expect(status).toEqual({ loop: "cancelled", after: "skipped" });
      // Killed: the heartbeat stops for good.
      const final = (await lines(beat)).length;
      await new Promise((r) => setTimeout(r, 300));
      expect((await lines(beat)).length).toBe(final);
    } finally {
      await close();
      await repo.cleanup();
    }
  });
});

describe("attach - replay and follow", () => {
  it("a client that attaches after another detached sees the whole history exactly once", async () => {
    const { client, close } = await stackOn(ts.url, 2);
    try {
      const graph = parseGraph("tasks:\n" + Array.from({ length: 8 }, (_, i) => `  - { id: t${i}, agent: noop${i ? `, needs: [t${i - 1}]` : ""} }`).join("\n") + "\n");
      const { runId } = await client.submit({ graph });
      // First client: watches a little, then is told to detach.
      const first: AdoEvent[] = [];
      const firstWatch = client.watch(runId, { onEvent: (e) => first.push(e) }).catch((e: Error) => e);
      await eventually(() => first.length > 0, 5_000, "first client saw events");
      client.detach(runId);
      expect(await firstWatch).toBeInstanceOf(Error);
      // Second client: from the start, to the end.
      const seen: AdoEvent[] = [];
      const outcome = await client.watch(runId, { onEvent: (e) => seen.push(e) });
      expect(outcome.status).toBe("succeeded");
      const ids = seen.map((e) => `${e.type}:${"taskId" in e ? e.taskId : ""}:${"attempt" in e ? e.attempt : ""}`);
      expect(new Set(ids).size).toBe(ids.length); // no duplicate
      expect(seen[0]!.type).toBe("run.accepted");
      expect(seen.filter((e) => e.type === "task.succeeded")).toHaveLength(8);
      expect(seen.at(-1)!.type).toBe("run.completed");
    } finally {
      await close();
    }
  });
});

describe("resilience - the NATS server dies mid-run", () => {
  it("nats-server killed and restarted on the same store: the run completes, no task lost or run twice", async () => {
    const store = await mkdtemp(join(tmpdir(), "ado-store-"));
    const probe = await EmbeddedServer.start({});
    const port = Number(new URL(probe.url).port);
    await probe.stop();
    let server = await EmbeddedServer.start({ storeDir: store, port });
    const repo = await makeRepo();
    const log = join(ts.scratch, "ran.log");
    const { client, close } = await stackOn(server.url, 2);
    try {
      const graph = parseGraph(
        "tasks:\n" +
          Array.from({ length: 6 }, (_, i) => `  - { id: t${i}, run: "echo t${i} >> ${log}; sleep 0.4; echo ${i} > f${i}.txt"${i >= 4 ? `, needs: [t${i - 4}]` : ""} }`).join("\n") +
          "\n",
      );
      const { runId } = await client.submit({ graph, repo: repo.dir });
      await eventually(async () => (await lines(log)).length >= 1, 10_000, "first task running");
      process.kill(-server.pid, "SIGKILL"); // the whole watchdog group: nats-server dies hard
      await new Promise((r) => setTimeout(r, 700));
      server = await EmbeddedServer.start({ storeDir: store, port });
      const outcome = await client.watch(runId);
      expect(outcome.status).toBe("succeeded");
      const ran = await lines(log);
      expect([...ran].sort()).toEqual(["t0", "t1", "t2", "t3", "t4", "t5"]); // each exactly once
      // Nothing is left in the work queues: acked messages the restore brought back where
      // their consumers never deliver them are removed (or moved) by the scheduler.
      const jsm = await openJetStream(client.nc);
      const left = async () => {
        const counts: Record<string, number> = {};
        for (const key of WORK_QUEUE_STREAMS) counts[key] = (await jsm.streams.info(client.topo.streams[key].name)).state.messages;
        return counts;
      };
      await eventually(async () => Object.values(await left()).every((n) => n === 0), 30_000, "empty work queues").catch(async (err) => {
        const cs = [];
        for await (const c of jsm.consumers.list(client.topo.streams.ready.name)) cs.push({ name: c.name, delivered: c.delivered.stream_seq, floor: c.ack_floor.stream_seq, pending: c.num_pending, ackPending: c.num_ack_pending, waiting: c.num_waiting });
        const info = await jsm.streams.info(client.topo.streams.ready.name);
        throw new Error(`${(err as Error).message}: ${JSON.stringify(await left())}; ready consumers ${JSON.stringify(cs)}; ready stream ${JSON.stringify(info.state)}`);
      });
    } finally {
      await close();
      await server.stop();
      await repo.cleanup();
      await rm(store, { recursive: true, force: true, maxRetries: 10 });
    }
  }, 120_000);
});


describe("control - a worker that was disconnected", () => {
  it("acts on a pause sent while it was cut off from NATS, once it reconnects", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200 });
    const actors = await Stack.start({ config, logger: silentLogger });
    const proxy = await tcpProxy(new URL(ts.url));
    const worker = await Stack.start({ config, logger: silentLogger, actors: [], workers: 1, server: proxy.url });
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const beat = join(ts.scratch, "cut-beat.log");
    try {
      const { runId } = await client.submit({
        graph: parseGraph(`tasks:\n  - { id: loop, run: "while true; do echo x >> ${beat}; sleep 0.05; done" }\n`),
        repo: repo.dir,
      });
      await eventually(async () => (await lines(beat)).length > 3, 10_000, "agent running");
      await proxy.cut();
      await client.control({ runId }, "pause");
      await new Promise((r) => setTimeout(r, 600));
      const during = (await lines(beat)).length;
      // It cannot know yet: still running (waited for, not a fixed 300 ms a starved agent may not get).
      await eventually(async () => (await lines(beat)).length > during, 10_000, "the agent still running while cut off");
      await proxy.restore();
      // Reconnected: the control watch catches up and the agent is suspended.
      await eventually(
        async () => {
          const a = (await lines(beat)).length;
          await new Promise((r) => setTimeout(r, 300));
          return (await lines(beat)).length === a;
        },
        20_000,
        "agent paused after reconnect",
      );
      await client.control({ runId }, "cancel");
      expect((await client.watch(asRunId(runId))).status).toBe("cancelled");
    } finally {
      await nc.drain();
      await worker.close();
      await proxy.close();
      await actors.close();
      await repo.cleanup();
    }
  }, 60_000);
});

describe("scheduling - fan-in, placement, retry backoff", () => {
  it("a fan-in task gets its dependencies' results as a file and in its environment; the file is never committed", async () => {
    const repo = await makeRepo();
    const { client, close } = await stackOn(ts.url, 2);
    try {
      const graph = parseGraph(`
tasks:
  - { id: a, run: "echo A > a.txt; echo made a" }
  - { id: b, run: "echo B > b.txt; echo made b" }
  - { id: join, needs: [a, b], run: "cp \\"$ADO_INPUTS_FILE\\" seen.json; test -n \\"$ADO_INPUTS\\"" }
`);
      const outcome = await client.run({ graph, repo: repo.dir });
      expect(outcome.status).toBe("succeeded");
      const { execFileSync } = await import("node:child_process");
      const show = (path: string) => execFileSync("git", ["show", `ado/${outcome.runId}/join:${path}`], { cwd: repo.dir, encoding: "utf8" });
      const inputs = JSON.parse(show("seen.json")) as Array<{ taskId: string; status: string; summary: string; branch: string }>;
      expect(inputs.map((i) => [i.taskId, i.status, i.summary])).toEqual([
        ["a", "succeeded", "made a"],
        ["b", "succeeded", "made b"],
      ]);
      expect(inputs[0]!.branch).toBe(`ado/${outcome.runId}/a`);
      expect(() => show(".ado/inputs.json")).toThrow(); // not in the commit
    } finally {
      await close();
      await repo.cleanup();
    }
  });

  it("placement: a task that needs the gpu label runs only on the gpu worker", async () => {
    const { client, close } = await stackOn(ts.url, 2);
    const topo = client.topo;
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200, worker: { labels: ["gpu"] } });
    const gpu = await Stack.start({ config, logger: silentLogger, actors: [] });
    try {
      const graph = parseGraph("tasks:\n" + Array.from({ length: 6 }, (_, i) => `  - { id: g${i}, agent: noop, placement: { labels: [gpu] } }`).join("\n") + "\n");
      const outcome = await client.run({ graph });
      expect(outcome.status).toBe("succeeded");
      expect(new Set(outcome.tasks.map((t) => t.workerId))).toEqual(new Set([gpu.workers[0]!.id]));
    } finally {
      await gpu.close();
      await close();
    }
  });

  it("a failed attempt is retried after its backoff, then succeeds", async () => {
    const repo = await makeRepo();
    const { client, close } = await stackOn(ts.url, 1);
    try {
      const graph = parseGraph(`
tasks:
  - id: flaky
    run: '[ "$ADO_ATTEMPT" = 3 ] || exit 1'
    retry: { attempts: 3, backoff: 400ms, factor: 2, jitter: 0 }
`);
      const events: AdoEvent[] = [];
      const outcome = await client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status).toBe("succeeded");
      expect(outcome.tasks[0]!.attempts).toBe(3);
      const failedAt = events.filter((e) => e.type === "task.failed").map((e) => Date.parse(e.at));
      const startedAt = events.filter((e) => e.type === "task.started").map((e) => Date.parse(e.at));
      expect(startedAt).toHaveLength(3);
      // Attempt 2 waits 400 ms, attempt 3 waits 800 ms (factor 2, no jitter).
      expect(startedAt[1]! - failedAt[0]!).toBeGreaterThanOrEqual(390);
      expect(startedAt[2]! - failedAt[1]!).toBeGreaterThanOrEqual(790);
    } finally {
      await close();
      await repo.cleanup();
    }
  });
});

describe("limits and shutdown", () => {
  it("maxDuration cancels a run that outlives it, killing what runs", async () => {
    const repo = await makeRepo();
    const { client, close } = await stackOn(ts.url, 1);
    try {
      const graph = parseGraph('maxDuration: 1s\ntasks:\n  - { id: slow, run: "sleep 30" }\n  - { id: next, needs: [slow], run: "true" }\n');
      const started = Date.now();
      const outcome = await client.run({ graph, repo: repo.dir });
      expect(outcome.status).toBe("cancelled");
      expect(outcome.error).toMatch(/maxDuration/);
      expect(Date.now() - started).toBeLessThan(15_000); // not the 30 s of the sleep
      expect(Object.fromEntries(outcome.tasks.map((t) => [t.id, t.status]))).toEqual({ slow: "cancelled", next: "skipped" });
    } finally {
      await close();
      await repo.cleanup();
    }
  });

  it("a worker that stops mid-task checkpoints it; another worker finishes it from the checkpoint", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const base = { prefix: topo.prefix, server: ts.url, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200 };
    const actors = await Stack.start({ config: parseConfig({ ...base, workers: 0 }), logger: silentLogger });
    // Grace of 300 ms: the task outlives it and is interrupted.
    const first = await Stack.start({ config: parseConfig({ ...base, shutdown: { graceMs: 300, forceMs: 5_000 } }), logger: silentLogger, actors: [], workers: 1 });
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    let second: Stack | undefined;
    try {
      // Attempt 1 writes part1 then hangs; a later attempt (from the checkpoint) finds part1 and finishes.
      const wrote = join(ts.scratch, "checkpoint-part1-written");
      const graph = parseGraph(`tasks:\n  - { id: long, run: 'if [ -f part1.txt ]; then echo done > part2.txt; else echo one > part1.txt; touch ${wrote}; sleep 30; fi' }\n`);
      const events: AdoEvent[] = [];
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const watching = client.watch(runId, { onEvent: (e) => events.push(e) });
      await eventually(() => events.some((e) => e.type === "task.started"), 10_000, "task started");
      // Until part1 is written (not a fixed 300 ms, which a slow agent start outlasted: no part1 in the checkpoint).
      await eventually(() => existsSync(wrote), 30_000, "part1 written");
      await first.close();
      second = await Stack.start({ config: parseConfig({ ...base, workers: 1 }), logger: silentLogger, actors: [] });
      const outcome = await watching;
      expect(outcome.status).toBe("succeeded");
      expect(events.some((e) => e.type === "task.checkpoint")).toBe(true);
      const { execFileSync } = await import("node:child_process");
      const files = execFileSync("git", ["ls-tree", "--name-only", outcome.integrationBranch!], { cwd: repo.dir, encoding: "utf8" });
      expect(files).toContain("part1.txt");
      expect(files).toContain("part2.txt");
      expect(outcome.tasks[0]!.attempts).toBe(2); // interrupted, not counted against retry.attempts (1)
    } finally {
      await nc.drain();
      await second?.close();
      await first.close();
      await actors.close();
      await repo.cleanup();
    }
  }, 60_000);
});
