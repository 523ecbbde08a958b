import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import type { Stealer } from "../../src/actors/stealer/stealer.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode, encode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent, type TaskWork } from "../../src/runtime/messages.js";
import { actorConsumer, consumers, openBuckets, openJetStream } from "../../src/runtime/topology.js";
import { Worker } from "../../src/actors/worker/worker.js";
import type { WorkerId } from "../../src/runtime/ids.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";
import { runAdo } from "../helpers/cli.js";

/**
 * Issue 13, live rebalancing: work queued behind a busy worker (here put there by the
 * test acting as a second balancer replica that over-filled it) goes back to the ready
 * queue when another worker could start it now, and runs there while the busy worker is
 * still busy. Every task runs once.
 */

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-rebalance-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

describe("stealer - live rebalancing", () => {
  it.each(["every 500 ms", "on demand (ado workers rebalance)"])("rebalance - a worker over-filled by another balancer: its queued work runs on the idle worker while it is still busy; every task runs once (%s)", async (how) => {
    const onDemand = how.startsWith("on demand");
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      heartbeatMs: 1_000,
      slots: 1,
      worktreeDir: join(scratch, "wt"),
      stealer: { rebalanceInterval: onDemand ? 0 : "500ms", rebalanceThreshold: 0.3 },
    });
    const core = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "merger", "stealer"], workerIds: ["w-busy", "w-free"] });
    let balancer: Stack | undefined;
    const nc = await ts.connect("rebalance");
    const client = new AdoClient(nc, topo);
    const events: AdoEvent[] = [];
    onTestFailed(() => console.log(events.filter((e) => e.type !== "task.output").map((e) => `${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}${"workerId" in e ? ` on ${e.workerId}` : ""}`).join("\n")));
    try {
      const gate = join(scratch, `gate-${topo.prefix}`);
      const graph = parseGraph(
        [
          "tasks:",
          // Runs until the test opens its gate (outside the worktree): still running when
          // the moved work has run elsewhere, however slow the machine (at most 150 s).
          `  - { id: long, run: 'for i in $(seq 1500); do [ -f ${gate} ] && break; sleep 0.1; done; echo long > long.txt' }`,
          "  - { id: q1, run: 'echo q1 > q1.txt' }",
          "  - { id: q2, run: 'echo q2 > q2.txt' }",
        ].join("\n") + "\n",
      );
      const { runId } = await client.submit({ graph, repo: repo.dir });
      client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(170_000) }).catch(() => undefined);

      // The other balancer: all three ready tasks onto w-busy's subject, `long` first.
      const jsm = await openJetStream(nc);
      await jsm.consumers.add(topo.streams.ready.name, actorConsumer(consumers.ready, topo.subjects.readyAll));
      const ready = await jetstream(nc).consumers.get(topo.streams.ready.name, consumers.ready);
      const held: Array<{ work: TaskWork; ack: () => Promise<boolean> }> = [];
      while (held.length < 3) {
        for await (const m of await ready.fetch({ max_messages: 3 - held.length, expires: 2_000 })) held.push({ work: decode(SCHEMAS.TaskWork, m.data, m.headers), ack: () => m.ackAck() });
      }
      held.sort((a, b) => (a.work.taskId === "long" ? -1 : b.work.taskId === "long" ? 1 : a.work.taskId.localeCompare(b.work.taskId)));
      const js = jetstream(nc);
      for (const h of held) {
        const { data, headers } = encode(SCHEMAS.TaskWork, { ...h.work, workerId: "w-busy" });
        await js.publish(topo.subjects.work("w-busy"), data, { headers, msgID: `${h.work.runId}.${h.work.taskId}.${h.work.attempt}.by-test` });
        await h.ack();
      }
      await eventually(() => events.some((e) => e.type === "task.started" && e.taskId === "long"), 30_000, "long started on w-busy");
      // Now a balancer of our own, which places what the stealer moves back.
      balancer = await Stack.start({ config, logger: silentLogger, actors: ["balancer"], workers: 0 });
      if (onDemand) {
        // Once the stealer leads and w-busy's record is known; then one pass, asked for.
        await eventually(() => (core.actors.find((a) => a.kind === "stealer") as Stealer).stats().leader, 20_000, "the stealer leads");
        // w-free has one slot: one task moves per pass; asked again once it is free, the other.
        const outputs: string[] = [];
        await eventually(async () => {
          const out = await runAdo(["workers", "rebalance"], { env: { ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix }, cwd: scratch });
          expect(out.code, out.stderr).toBe(0);
          outputs.push(out.stderr.trim());
          return (core.actors.find((a) => a.kind === "stealer") as Stealer).stats().rebalanced === 2;
        }, 120_000, "ado workers rebalance moved the two queued tasks");
        expect(outputs.filter((o) => /1 queued task\(s\) moved back to the ready queue: .*\(from w-busy\)/.test(o))).toHaveLength(2);
      }

      const startedOn = (task: string) => events.find((e): e is Extract<AdoEvent, { type: "task.started" }> => e.type === "task.started" && e.taskId === task)?.workerId;
      await eventually(() => startedOn("q1") && startedOn("q2") && events.filter((e) => e.type === "task.succeeded" && e.taskId !== "long").length === 2, 60_000, "q1 and q2 ran");
      expect(startedOn("long")).toBe("w-busy");
      expect(startedOn("q1")).toBe("w-free");
      expect(startedOn("q2")).toBe("w-free");
      // ... while long still ran.
      expect(events.some((e) => e.type === "task.succeeded" && e.taskId === "long")).toBe(false);
      const stealer = core.actors.find((a) => a.kind === "stealer") as Stealer;
      // Exactly two moves (q1, q2). A third was seen under load: the balancer, started
      // after long had, read w-busy's record from before that start (running 0) and put a
      // moved task back there. Workers now report a start at once, and write their record
      // when it fills them.
      expect(stealer.stats()).toMatchObject({ rebalanced: 2, interrupted: 0, requeued: 0 });
      await writeFile(gate, "");
      await eventually(() => events.some((e) => e.type === "run.completed"), 90_000, "the run completed");
      // Every task started once, on attempt 1.
      const starts = events.filter((e) => e.type === "task.started");
      expect(starts.map((e) => ("taskId" in e ? `${e.taskId}#${e.attempt}` : "")).sort()).toEqual(["long#1", "q1#1", "q2#1"]);
    } finally {
      await balancer?.close();
      await core.close();
      await repo.cleanup();
    }
  }, 200_000);
});

describe("balancer - a balancer that starts after a worker filled up", () => {
  it("balancer - it reads the worker's record as full (written at the start that filled it, not at the next heartbeat) and sends the next task to a free worker", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    // Heartbeats a minute apart: a record written only on heartbeats stays as it was before the start.
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, heartbeatMs: 60_000, slots: 1, worktreeDir: join(scratch, "wt-stale") });
    const core = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "merger"], workers: 0 });
    const nc = await ts.connect("stale-record");
    const ctx = { nc, topo, kv: await openBuckets(nc, topo), logger: silentLogger };
    const worker = (id: string) => new Worker(ctx, { workerId: id as WorkerId, slots: 1, heartbeatMs: 60_000, ackWaitMs: 300_000, worktreeDir: join(scratch, "wt-stale"), cloneDir: join(scratch, "clones-stale") }).start();
    const workers = [await worker("w-full")];
    let balancer: Stack | undefined;
    const client = new AdoClient(nc, topo);
    const events: AdoEvent[] = [];
    const gate = join(scratch, `gate-stale-${topo.prefix}`);
    try {
      const submit = async (id: string, run: string) => {
        const { runId } = await client.submit({ graph: parseGraph(`tasks:\n  - { id: ${id}, run: '${run}' }\n`), repo: repo.dir });
        client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(170_000) }).catch(() => undefined);
      };
      // long goes to w-full by hand (a balancer that is then gone), and starts there.
      await submit("long", `for i in $(seq 1500); do [ -f ${gate} ] && break; sleep 0.1; done; echo long > long.txt`);
      const jsm = await openJetStream(nc);
      await jsm.consumers.add(topo.streams.ready.name, actorConsumer(consumers.ready, topo.subjects.readyAll));
      const ready = await jetstream(nc).consumers.get(topo.streams.ready.name, consumers.ready);
      let moved = false;
      while (!moved) {
        for await (const m of await ready.fetch({ max_messages: 1, expires: 2_000 })) {
          const w = decode(SCHEMAS.TaskWork, m.data, m.headers);
          const { data, headers } = encode(SCHEMAS.TaskWork, { ...w, workerId: "w-full" });
          await jetstream(nc).publish(topo.subjects.work("w-full"), data, { headers, msgID: `${w.runId}.${w.taskId}.${w.attempt}.by-test` });
          await m.ackAck();
          moved = true;
        }
      }
      await eventually(() => events.some((e) => e.type === "task.started" && e.taskId === "long"), 30_000, "long started on w-full");
      // A balancer starts now: all it knows of w-full is its record.
      balancer = await Stack.start({ config, logger: silentLogger, actors: ["balancer"], workers: 0 });
      await submit("next", "echo next > next.txt");
      workers.push(await worker("w-free"));
      const startedOn = (task: string) => events.find((e): e is Extract<AdoEvent, { type: "task.started" }> => e.type === "task.started" && e.taskId === task)?.workerId;
      // On the free worker while long still runs (before the fix: queued behind long on w-full, from a record saying it ran nothing).
      await eventually(() => startedOn("next"), 60_000, "next started");
      expect(startedOn("next")).toBe("w-free");
      expect(events.some((e) => e.type === "task.succeeded" && e.taskId === "long")).toBe(false);
    } finally {
      await writeFile(gate, "");
      await balancer?.close();
      await Promise.all(workers.map((w) => w.close({ graceMs: 5_000, forceMs: 2_000 })));
      await core.close();
      await repo.cleanup();
    }
  }, 150_000);
});
