import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { jetstream, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { Stealer } from "../../src/actors/stealer/stealer.js";
import { shellAgent } from "../../src/agents/index.js";
import { Worker } from "../../src/actors/worker/worker.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode, encode, encodeValue } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { newWorkerId, type RunId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent, type TaskWork } from "../../src/runtime/messages.js";
import { actorConsumer, consumers, openBuckets, openJetStream, type Topology } from "../../src/runtime/topology.js";
import { AdoCluster, isRunning, processesWith, awaitAgentsGone } from "../helpers/cluster.js";
import { workerRecord } from "../helpers/records.js";
import { useTestServer, eventually, uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { tcpProxy } from "../helpers/proxy.js";

/**
 * Issue 3, the worker part: a worker that dies loses nothing. The stealer (its own OS
 * process here, `ado actor stealer`) sees a worker silent for 3 heartbeats and recovers
 * what it left on its work subject: the attempt it was running is reported interrupted
 * (the scheduler runs the next one), the work it had not started goes back to the ready
 * queue. Real nats-server, real git; only the agents are shell commands.
 */

const ts = useTestServer("ado-stealer-");

const lines = async (path: string) => (await readFile(path, "utf8").catch(() => "")).split("\n").filter(Boolean);
const exists = (path: string) => stat(path).then(() => true, () => false);
const messagesIn = async (jsm: JetStreamManager, stream: string) => (await jsm.streams.info(stream)).state.messages;

/** Follows a run in the background, keeping its events (shown if the test fails). */
function follow(client: AdoClient, runId: RunId, ms: number) {
  const events: AdoEvent[] = [];
  const outcome = client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(ms) });
  outcome.catch(() => undefined);
  onTestFailed(() => {
    console.log(events.filter((e) => e.type !== "task.output").map((e) => `${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}${e.type === "task.failed" ? ` ${e.error}` : ""}`).join("\n"));
  });
  return { events, outcome };
}

describe("stealer - a worker SIGKILLed with a task running and two more queued on its subject", () => {
  it("the running attempt is reported lost and runs again elsewhere, the queued work is re-queued; the run completes and nothing is left", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const dir = join(ts.scratch, "kill");
    await mkdir(dir, { recursive: true });
    const log = join(dir, "ran.log");
    const wt = join(dir, "wt");
    const cluster = new AdoCluster({ ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix, ADO_WORKTREE_DIR: wt, ADO_HEARTBEAT_MS: "200" });
    onTestFailed(() => {
      for (const p of cluster.all) console.log(`${p.name} pid ${p.child.pid} exit ${p.child.exitCode ?? p.child.signalCode}:\n${p.output().slice(-3_000)}`);
    });
    const nc = await ts.connect("stealer-kill");
    const client = new AdoClient(nc, topo);
    const jsm = await openJetStream(nc);
    // What a failure needs explained: every work, ready and result message (subject, attempt, msg id), the streams.
    const trace: string[] = [];
    const t0 = Date.now();
    nc.subscribe(`${topo.prefix}.>`, {
      callback: (_err, m) => {
        if (!/\.(ready|work|results)\./.test(m.subject)) return;
        const work = (() => {
          try {
            const w = decode(SCHEMAS.TaskWork, m.data, m.headers);
            return `${w.taskId}#${w.attempt}`;
          } catch {
            return "";
          }
        })();
        trace.push(`${Date.now() - t0} ms ${m.subject} ${work} id=${m.headers?.get("Nats-Msg-Id") ?? ""}`);
      },
    });
    onTestFailed(async () => {
      const counts: Record<string, number> = {};
      for (const [key, cfg] of Object.entries(topo.streams)) counts[key] = await messagesIn(jsm, cfg.name).catch(() => -1);
      console.log(`messages:\n${trace.join("\n")}\nstreams ${JSON.stringify(counts)}`);
    });
    try {
      // No balancer yet: the test places the first three tasks itself, all on the victim.
      const [, , , victim] = await Promise.all([
        cluster.actor("scheduler"),
        cluster.actor("merger"),
        cluster.actor("stealer"),
        cluster.worker("victim", 1),
        cluster.worker("survivor", 1),
      ]);
      const victimId = victim.workerIds[0]!;
      const task = (id: string, body: string, needs: string[] = []) => `  - { id: ${id}, needs: [${needs.join(", ")}], run: '${`echo "${id} $ADO_ATTEMPT" >> ${log}; ${body}`.replace(/'/g, "''")}' }`;
      const graph = parseGraph(
        [
          "tasks:",
          // Attempt 1 leaves work in progress and hangs; attempt 2 just does the job.
          task("long", `if [ "$ADO_ATTEMPT" = 1 ]; then echo wip > wip.txt; sleep 60; fi; echo long > long.txt`),
          task("q1", "echo q1 > q1.txt"),
          task("q2", "echo q2 > q2.txt"),
          // Fails (one attempt) unless its base holds all three.
          task("z", "cat long.txt q1.txt q2.txt > z.txt", ["long", "q1", "q2"]),
        ].join("\n") + "\n",
      );
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const run = follow(client, runId, 60_000);

      // Act as the balancer once: the three ready roots go to the victim's subject, `long` first.
      await jsm.consumers.add(topo.streams.ready.name, actorConsumer(consumers.ready, topo.subjects.readyAll));
      const ready = await jetstream(nc).consumers.get(topo.streams.ready.name, consumers.ready);
      const held: Array<{ work: TaskWork; ack: () => Promise<boolean> }> = [];
      while (held.length < 3) {
        for await (const m of await ready.fetch({ max_messages: 3 - held.length, expires: 2_000 })) held.push({ work: decode(SCHEMAS.TaskWork, m.data, m.headers), ack: () => m.ackAck() });
      }
      held.sort((a, b) => (a.work.taskId === "long" ? -1 : b.work.taskId === "long" ? 1 : a.work.taskId.localeCompare(b.work.taskId)));
      const js = jetstream(nc);
      for (const h of held) {
        const { data, headers } = encode(SCHEMAS.TaskWork, { ...h.work, workerId: victimId });
        await js.publish(topo.subjects.work(victimId), data, { headers, msgID: `${h.work.runId}.${h.work.taskId}.${h.work.attempt}.by-test` });
        await h.ack();
      }

      // `long` runs on the victim (its one slot), q1 and q2 wait on its subject.
      await eventually(async () => exists(join(wt, runId, "long", "wip.txt")), 15_000, "long's attempt 1 wrote its work in progress");
      expect(await lines(log)).toEqual(["long 1"]);
      expect(await messagesIn(jsm, topo.streams.work.name)).toBe(3);
      await cluster.kill("victim");
      // Its reaper stops its agent: TERM at once, KILL 2 s later (reaper.ts); the wait
      // is generous for a loaded machine. Nothing may outlive the worker, and it must be
      // the reaper that stopped it, not the stealer's second line of defence.
      expect(await awaitAgentsGone(log, 15_000)).toEqual([]);
      await cluster.actor("balancer");

      const outcome = await run.outcome;
      expect(outcome.status, outcome.error).toBe("succeeded");
      // Each task ran the attempts expected: long twice (the first was lost), the others once.
      expect((await lines(log)).sort()).toEqual(["long 1", "long 2", "q1 1", "q2 1", "z 1"]);
      const lost = run.events.filter((e): e is Extract<AdoEvent, { type: "worker.lost" }> => e.type === "worker.lost");
      expect(lost.map((e) => `${e.taskId}#${e.attempt} ${e.outcome} ${e.workerId}`).sort()).toEqual([`long#1 interrupted ${victimId}`, `q1#1 requeued ${victimId}`, `q2#1 requeued ${victimId}`]);
      // The lost attempt's work in progress is kept, out of the integration branch.
      const ref = `refs/ado/attempts/${runId}/long/1`;
      expect(lost.find((e) => e.taskId === "long")!.archiveRef).toBe(ref);
      expect(gitOut(repo.dir, "show", `${ref}:wip.txt`)).toBe("wip");
      expect(gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort()).toEqual(["README.md", "long.txt", "q1.txt", "q2.txt", "z.txt"]);
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:z.txt`)).toBe("long\nq1\nq2");
      const failed = run.events.find((e) => e.type === "task.failed" && e.taskId === "long");
      expect(failed).toMatchObject({ attempt: 1, workerId: victimId, willRetry: true, error: expect.stringContaining(`worker ${victimId} died`) });

      // Nothing left behind: no work anywhere, the victim's consumer and record gone, no worktree, no process.
      for (const key of ["ready", "work", "results", "merge"] as const) expect(await messagesIn(jsm, topo.streams[key].name), key).toBe(0);
      await expect(jsm.consumers.info(topo.streams.work.name, consumers.work(victimId))).rejects.toThrow(/consumer not found/);
      expect(await (await openBuckets(nc, topo)).workers.get(victimId).then((e) => e?.operation ?? "none")).not.toBe("PUT");
      expect(gitOut(repo.dir, "worktree", "list", "--porcelain").split("\n").filter((l) => l.startsWith("worktree "))).toEqual([`worktree ${repo.dir}`]);
      expect(cluster.get("stealer").output()).not.toContain("its reaper missed them");
      const codes = await cluster.stopAll();
      expect(Object.values(codes).every((c) => c === 0), JSON.stringify(codes)).toBe(true);
      for (const p of cluster.all) expect(await isRunning(p.child.pid!), p.name).toBe(false);
      expect(await processesWith(log)).toEqual([]);
    } finally {
      cluster.killAll();
      await repo.cleanup();
    }
    // Seven processes start before anything happens: on a loaded 2-core machine that
    // alone took 25-35 s (on main as well), so 60 s was not enough.
  }, 120_000);
});

// ---------------------------------------------------------------- in-process cases

/** A shell agent that needs no repository, so two attempts of a task never share a worktree or branch. */
const bareShell = new Map([["shell", { ...shellAgent, needsWorktree: false }]]);

async function workerOn(url: string, topo: Topology, name: string): Promise<{ worker: Worker; nc: NatsConnection }> {
  const nc = await connectNats({ servers: url, name, logger: silentLogger });
  const workerId = newWorkerId(hostname());
  const ctx = { nc, topo, kv: await openBuckets(nc, topo), logger: silentLogger };
  const worker = await new Worker(ctx, { workerId, slots: 1, heartbeatMs: 200, worktreeDir: join(ts.scratch, "wt-bare"), cloneDir: join(ts.scratch, "clones"), agents: bareShell }).start();
  return { worker, nc };
}


describe("stealer - a worker that was only cut off, declared dead, comes back", () => {
  it("its late result is ignored (the next attempt's counts) and it takes work again once it reconnects", async () => {
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(ts.scratch, "wt-bare"), heartbeatMs: 200 });
    const actors = await Stack.start({ config, logger: silentLogger });
    const proxy = await tcpProxy(new URL(ts.url));
    const nc = await ts.connect("stealer-cut");
    const client = new AdoClient(nc, topo);
    const log = join(ts.scratch, "cut.log");
    const cut = await workerOn(proxy.url, topo, "cut-worker");
    let other: Awaited<ReturnType<typeof workerOn>> | undefined;
    try {
      // Attempt 1 ends when the test opens the gate (a 2 s sleep ended before the cut when starting the other worker took longer).
      const gate = join(ts.scratch, "cut-gate");
      const graph = parseGraph(`tasks:\n  - { id: slow, run: 'echo "slow $ADO_ATTEMPT $ADO_WORKER_ID" >> ${log}; if [ "$ADO_ATTEMPT" = 1 ]; then while [ ! -f ${gate} ]; do sleep 0.05; done; fi; echo "done $ADO_ATTEMPT" >> ${log}' }\n`);
      const { runId } = await client.submit({ graph });
      const run = follow(client, runId, 30_000);
      await eventually(async () => (await lines(log)).length === 1, 10_000, "attempt 1 running on the worker to be cut off");
      other = await workerOn(ts.url, topo, "other-worker");
      await proxy.cut();

      // Declared dead: attempt 2 runs on the other worker and the run succeeds with it,
      // while attempt 1 still runs on the cut-off worker (its agent is not killed).
      const outcome = await run.outcome;
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(outcome.tasks[0]).toMatchObject({ id: "slow", status: "succeeded", attempts: 2, workerId: other.worker.id });
      expect(run.events.find((e) => e.type === "worker.lost")).toMatchObject({ taskId: "slow", attempt: 1, workerId: cut.worker.id, outcome: "interrupted" });

      // It comes back: attempt 1 finished meanwhile and its result reaches the scheduler late.
      await writeFile(gate, "");
      await eventually(async () => (await lines(log)).includes("done 1"), 10_000, "attempt 1 finished on the cut-off worker");
      await proxy.restore();
      // The stealer re-creates its consumer when its records reappear: it takes work again.
      const pinned = await client.submit({ graph: parseGraph(`tasks:\n  - { id: back, run: 'echo back >> ${log}', placement: { worker: ${cut.worker.id} } }\n`) });
      const back = await client.watch(pinned.runId, { signal: AbortSignal.timeout(20_000) });
      expect(back.status, back.error).toBe("succeeded");
      expect(back.tasks[0]).toMatchObject({ workerId: cut.worker.id, attempts: 1 });

      // The late result of attempt 1 changed nothing: still attempt 2 on the other worker,
      // and no event about attempt 1 besides its start and the failure the stealer reported.
      await eventually(async () => (await messagesIn(await openJetStream(nc), topo.streams.results.name)) === 0, 10_000, "the late result consumed");
      const status = await client.status(runId);
      expect(status!.tasks[0]).toMatchObject({ status: "succeeded", attempts: 2, workerId: other.worker.id });
      const replay: AdoEvent[] = [];
      await client.watch(runId, { onEvent: (e) => replay.push(e), signal: AbortSignal.timeout(10_000) });
      expect(replay.filter((e) => "attempt" in e && e.attempt === 1 && e.type !== "task.output").map((e) => e.type).sort()).toEqual(["task.failed", "task.started", "worker.lost"]);
      const stealer = actors.actors.find((a): a is Stealer => a instanceof Stealer)!;
      expect(stealer.stats()).toMatchObject({ leader: true, interrupted: 1, revived: 1 });
    } finally {
      await other?.worker.close();
      await cut.worker.close({ graceMs: 1_000 });
      await other?.nc.drain();
      await cut.nc.close();
      await proxy.cut();
      await actors.close();
    }
  }, 60_000);
});

describe("stealer - replicas under a leader lease", () => {
  it("one replica leads and acts; when it stops, the standby takes over and recovers a worker SIGKILLed then", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const wt = join(ts.scratch, "wt-lease");
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: wt, heartbeatMs: 200 });
    const actors = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "balancer", "merger"] });
    // Two replicas, as two processes would run them: each its own connection and instance name.
    const stealers = await Promise.all(
      ["stealer-a", "stealer-b"].map(async (instance) => {
        const snc = await connectNats({ servers: ts.url, name: instance, logger: silentLogger });
        const actor = await new Stealer(instance, { nc: snc, topo, kv: await openBuckets(snc, topo), logger: silentLogger }, { heartbeatMs: 200 }).start();
        return { actor, close: async () => (await actor.close(), await snc.drain()) };
      }),
    );
    const cluster = new AdoCluster({ ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix, ADO_WORKTREE_DIR: wt, ADO_HEARTBEAT_MS: "200" });
    const nc = await ts.connect("stealer-lease");
    const client = new AdoClient(nc, topo);
    const log = join(ts.scratch, "lease.log");
    const replicas = () => stealers.map((s) => s.actor);
    try {
      await eventually(() => replicas().filter((s) => s.stats().leader).length === 1, 5_000, "one leader");
      const leader = replicas().findIndex((s) => s.stats().leader);
      const standby = replicas()[1 - leader]!;
      await stealers[leader]!.close(); // releases the lease
      await eventually(() => standby.stats().leader, 5_000, "the standby leads");

      const doomed = await cluster.worker("doomed", 1);
      const graph = parseGraph(`tasks:\n  - { id: t, run: 'echo "t $ADO_ATTEMPT" >> ${log}; if [ "$ADO_ATTEMPT" = 1 ]; then sleep 30; fi; echo t > t.txt' }\n`);
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const run = follow(client, runId, 30_000);
      await eventually(async () => (await lines(log)).length === 1, 10_000, "attempt 1 running");
      // Killed before the other worker starts: a process start can outlast attempt 1's 30 s on a loaded machine.
      await cluster.kill("doomed");
      // Nothing of the dead worker outlives it (its reaper).
      expect(await awaitAgentsGone(log, 15_000)).toEqual([]);
      await cluster.worker("other", 1);
      const outcome = await run.outcome;
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(await lines(log)).toEqual(["t 1", "t 2"]);
      expect(run.events.find((e) => e.type === "worker.lost")).toMatchObject({ workerId: doomed.workerIds[0], outcome: "interrupted" });
      expect(standby.stats()).toMatchObject({ leader: true, interrupted: 1 });
      const codes = await cluster.stopAll();
      expect(Object.values(codes).every((c) => c === 0), JSON.stringify(codes)).toBe(true);
      expect(await processesWith(log)).toEqual([]);
    } finally {
      cluster.killAll();
      for (const s of stealers) await s.close().catch(() => undefined); // the leader's is closed already
      await actors.close();
      await repo.cleanup();
    }
  }, 60_000);
});

describe("stealer - a draining worker", () => {
  it("is not stolen from while it finishes its task, though it writes no record for longer than 3 heartbeats; its consumer goes after it stopped", async () => {
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(ts.scratch, "wt-bare"), heartbeatMs: 200 });
    const actors = await Stack.start({ config, logger: silentLogger });
    const nc = await ts.connect("stealer-drain");
    const client = new AdoClient(nc, topo);
    const jsm = await openJetStream(nc);
    const log = join(ts.scratch, "drain.log");
    const w = await workerOn(ts.url, topo, "draining-worker");
    try {
      const gate = join(ts.scratch, "drain-gate");
      const { runId } = await client.submit({ graph: parseGraph(`tasks:\n  - { id: d, run: 'echo "d $ADO_ATTEMPT" >> ${log}; while [ ! -f ${gate} ]; do sleep 0.05; done; echo "done $ADO_ATTEMPT" >> ${log}' }\n`) });
      const run = follow(client, runId, 20_000);
      await eventually(async () => (await lines(log)).length === 1, 10_000, "d running");
      // Draining for 2 s (10 heartbeats) without a record: it answers the stealer's ping.
      // (d ends on a gate 2 s after the drain began: a 2 s sleep from d's start could end before it.)
      const closed = w.worker.close({ graceMs: 10_000 });
      await new Promise((r) => setTimeout(r, 2_000));
      await writeFile(gate, "");
      const outcome = await run.outcome;
      await closed;
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(await lines(log)).toEqual(["d 1", "done 1"]);
      expect(run.events.filter((e) => e.type === "worker.lost")).toEqual([]);
      // Once it has stopped (record deleted, nothing answers), its consumer is cleaned up.
      await eventually(
        () => jsm.consumers.info(topo.streams.work.name, consumers.work(w.worker.id)).then(() => false, () => true),
        5_000,
        "the stopped worker's consumer deleted",
      );
      expect((actors.actors.find((a): a is Stealer => a instanceof Stealer)!).stats()).toMatchObject({ interrupted: 0, requeued: 0 });
    } finally {
      await w.worker.close();
      await w.nc.drain();
      await actors.close();
    }
  }, 30_000);
});

describe("stealer - work on the subject of a worker nobody knows", () => {
  it("is re-queued by the sweep, each time it is sent there (by a balancer that has not seen the worker die)", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir: join(ts.scratch, "wt-orphan"), heartbeatMs: 200 });
    // No balancer at first: the test sends the task to a worker that does not exist.
    const actors = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "merger", "stealer"] });
    const stealer = actors.actors.find((a): a is Stealer => a instanceof Stealer)!;
    let balancer: Stack | undefined;
    const nc = await ts.connect("stealer-orphan");
    const client = new AdoClient(nc, topo);
    const jsm = await openJetStream(nc);
    const js = jetstream(nc);
    try {
      const { runId } = await client.submit({ graph: parseGraph("tasks:\n  - { id: t, run: 'echo t > t.txt' }\n"), repo: repo.dir });
      const run = follow(client, runId, 20_000);
      await jsm.consumers.add(topo.streams.ready.name, actorConsumer(consumers.ready, topo.subjects.readyAll));
      const ready = await js.consumers.get(topo.streams.ready.name, consumers.ready);
      // Takes the task from the ready queue and sends it to the ghost, as a stale balancer would.
      const sendToGhost = async (copy: string) => {
        for (;;) {
          for await (const m of await ready.fetch({ max_messages: 1, expires: 2_000 })) {
            const work = decode(SCHEMAS.TaskWork, m.data, m.headers);
            const { data, headers } = encode(SCHEMAS.TaskWork, { ...work, workerId: "w-ghost" });
            await js.publish(topo.subjects.work("w-ghost"), data, { headers, msgID: `${runId}.t.1.${copy}` });
            await m.ackAck();
            return;
          }
        }
      };
      await sendToGhost("first");
      await eventually(() => stealer.stats().requeued === 1, 10_000, "the first copy re-queued");
      // Sent there again within the dedupe window: re-queued again (a move keyed by the
      // attempt alone would be dropped as a duplicate of the first, and the task lost).
      await sendToGhost("second");
      await eventually(() => stealer.stats().requeued === 2, 10_000, "the second copy re-queued");
      balancer = await Stack.start({ config, logger: silentLogger, actors: ["balancer"], workers: 0 });
      const outcome = await run.outcome;
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(outcome.tasks[0]).toMatchObject({ attempts: 1, workerId: actors.workers[0]!.id });
      expect(run.events.filter((e) => e.type === "worker.lost")).toMatchObject([{ taskId: "t", attempt: 1, workerId: "w-ghost", outcome: "requeued" }]);
      await eventually(async () => (await messagesIn(jsm, topo.streams.work.name)) === 0, 5_000, "the ghost's subject emptied");
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:t.txt`)).toBe("t");
    } finally {
      await balancer?.close();
      await actors.close();
      await repo.cleanup();
    }
  }, 30_000);
});

describe("stealer - a worker that took work from the real balancer and died before it pulled it", () => {
  it("the work goes back to the ready queue and the balancer sends the same attempt again, to a live worker", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(ts.scratch, "wt-ghost"), heartbeatMs: 200 });
    const actors = await Stack.start({ config, logger: silentLogger });
    let workers: Stack | undefined;
    const nc = await ts.connect("stealer-ghost");
    const client = new AdoClient(nc, topo);
    const jsm = await openJetStream(nc);
    const kv = await openBuckets(nc, topo);
    // A worker as the balancer sees one (consumer, then heartbeats), which never pulls.
    const ghost = "w-ghost";
    await jsm.consumers.add(topo.streams.work.name, actorConsumer(consumers.work(ghost), topo.subjects.work(ghost), { ackWaitMs: 30_000 }));
    const now = () => new Date().toISOString();
    const beat = () =>
      kv.workers.put(
        ghost,
        encodeValue(SCHEMAS.WorkerRecord, workerRecord({ workerId: ghost, host: "elsewhere", startedAt: now(), heartbeatAt: now() })),
      );
    await beat();
    const heartbeat = setInterval(() => void beat(), 200);
    try {
      const { runId } = await client.submit({ graph: parseGraph("tasks:\n  - { id: t, run: 'echo t > t.txt' }\n"), repo: repo.dir });
      const run = follow(client, runId, 20_000);
      // The real balancer sends it to the ghost, the only worker.
      await eventually(async () => (await messagesIn(jsm, topo.streams.work.name)) === 1, 10_000, "t sent to the ghost");
      // The ghost dies; a real worker joins. Within the dedupe window, the balancer must
      // send the re-queued attempt again (keyed by attempt alone, it was dropped).
      clearInterval(heartbeat);
      workers = await Stack.start({ config, logger: silentLogger, actors: [], workers: 1 });
      const outcome = await run.outcome;
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(outcome.tasks[0]).toMatchObject({ attempts: 1, workerId: workers.workers[0]!.id });
      expect(run.events.filter((e) => e.type === "worker.lost")).toMatchObject([{ taskId: "t", attempt: 1, workerId: ghost, outcome: "requeued" }]);
      await expect(jsm.consumers.info(topo.streams.work.name, consumers.work(ghost))).rejects.toThrow(/consumer not found/);
      expect((await kv.workers.get(ghost))?.operation).not.toBe("PUT");
    } finally {
      clearInterval(heartbeat);
      await workers?.close();
      await actors.close();
      await repo.cleanup();
    }
  }, 30_000);
});
