/**
 * Issue 13, live rebalancing with real processes: worker A (`ado worker`, one slot) is
 * held by a slow task while two more tasks queue on its subject (put there by the test
 * acting as a balancer replica that over-filled it); worker B (another `ado worker`
 * process) is idle. An `ado actor stealer` process (rebalance every 500 ms) moves A's
 * unstarted work back to the ready queue and the `ado actor balancer` process places it
 * on B, while A's task still runs. Measured: the time from the moment B is idle beside
 * A's queued work with every actor up (the stealer's ready line) to B running each moved
 * task. Every task runs once (each writes its worker to a file outside the repository).
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { jetstream } from "@nats-io/jetstream";
import { describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode, encode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent, type TaskWork } from "../../src/runtime/messages.js";
import { actorConsumer, consumers, openBuckets, openJetStream } from "../../src/runtime/topology.js";
import { startAdo, stopProcess } from "../helpers/cli.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

const ts = useTestServer("ado-rebalance-slow-");

describe("stealer - a slow agent's queued work moves", () => {
  it(
    "rebalance - worker A busy with a slow task and two more queued on its subject, worker B idle (all separate processes): the stealer moves the queued two, B runs them while A's task still runs, each task runs once",
    { timeout: 180_000 },
    async () => {
      const repo = await makeRepo();
      const topo = uniqueTopology();
      const file = join(ts.scratch, "ado.yaml");
      await writeFile(
        file,
        [`prefix: ${topo.prefix}`, `server: ${ts.url}`, `worktreeDir: ${join(ts.scratch, "worktrees")}`, "heartbeatMs: 500", "stealer: { rebalanceInterval: 500ms, rebalanceThreshold: 0.3 }", ""].join("\n"),
      );
      const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(ts.scratch, "here"), heartbeatMs: 500 });
      const stack = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "merger"] });
      const procs: Array<Awaited<ReturnType<typeof startAdo>>> = [];
      procs.push(...(await Promise.all([startAdo(["worker", "--config", file, "--id", "w-slow", "--slots", "1"], /worker\(s\)/), startAdo(["worker", "--config", file, "--id", "w-idle", "--slots", "1"], /worker\(s\)/)])));
      const nc = await connectNats({ servers: ts.url, name: "rebalance-slow-test", logger: silentLogger });
      const kv = await openBuckets(nc, topo);
      const client = new AdoClient(nc, topo);
      const events: AdoEvent[] = [];
      const at = new Map<string, number>(); // `${type} ${task}` -> when the test saw it
      const ran = join(ts.scratch, `ran-${topo.prefix}.log`);
      const gate = join(ts.scratch, `gate-${topo.prefix}`);
      await writeFile(ran, "");
      onTestFailed(async () => {
        console.log(events.filter((e) => e.type !== "task.output").map((e) => `${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}${"workerId" in e ? ` on ${e.workerId}` : ""}`).join("\n"));
        console.log(await readFile(ran, "utf8").catch(() => ""));
        for (const p of procs) console.log(p.output().slice(-2_000));
      });
      try {
        const graph = parseGraph(
          [
            "tasks:",
            // The slow agent: runs until the test opens its gate (outside the worktree), at most 150 s.
            `  - { id: long, run: 'echo "long $ADO_WORKER_ID" >> ${ran}; for i in $(seq 1500); do [ -f ${gate} ] && break; sleep 0.1; done' }`,
            `  - { id: q1, run: 'echo "q1 $ADO_WORKER_ID" >> ${ran}' }`,
            `  - { id: q2, run: 'echo "q2 $ADO_WORKER_ID" >> ${ran}' }`,
          ].join("\n") + "\n",
        );
        const { runId } = await client.submit({ graph, repo: repo.dir });
        const done = client.watch(runId, {
          onEvent: (e) => {
            events.push(e);
            if ("taskId" in e) at.set(`${e.type} ${e.taskId}`, performance.now());
          },
          signal: AbortSignal.timeout(170_000),
        });
        // The over-filling replica: all three ready tasks onto w-slow's subject, `long` first (no balancer runs yet).
        const jsm = await openJetStream(nc);
        await jsm.consumers.add(topo.streams.ready.name, actorConsumer(consumers.ready, topo.subjects.readyAll));
        const ready = await jetstream(nc).consumers.get(topo.streams.ready.name, consumers.ready);
        const held: Array<{ work: TaskWork; ack: () => Promise<boolean> }> = [];
        while (held.length < 3) {
          for await (const m of await ready.fetch({ max_messages: 3 - held.length, expires: 2_000 })) held.push({ work: decode(SCHEMAS.TaskWork, m.data, m.headers), ack: () => m.ackAck() });
        }
        held.sort((a, b) => (a.work.taskId === "long" ? -1 : b.work.taskId === "long" ? 1 : a.work.taskId.localeCompare(b.work.taskId)));
        for (const h of held) {
          const { data, headers } = encode(SCHEMAS.TaskWork, { ...h.work, workerId: "w-slow" });
          await jetstream(nc).publish(topo.subjects.work("w-slow"), data, { headers, msgID: `${h.work.runId}.${h.work.taskId}.${h.work.attempt}.by-test` });
          await h.ack();
        }
        await eventually(() => at.has("task.started long"), 60_000, "long started on w-slow");
        // The balancer (it deletes the test's consumer at start, as it does an old version's), then the stealer.
        procs.push(await startAdo(["actor", "balancer", "--config", file], /balancer running/));
        // B is idle now, beside A's queued work.
        const idle = decode(SCHEMAS.WorkerRecord, (await kv.workers.get("w-idle"))!.value);
        expect(idle.running).toBe(0);
        expect(events.some((e) => e.type === "task.started" && e.taskId !== "long")).toBe(false);
        procs.push(await startAdo(["actor", "stealer", "--config", file], /stealer running/));
        const t0 = performance.now();
        await eventually(() => at.has("task.succeeded q1") && at.has("task.succeeded q2"), 90_000, "q1 and q2 ran");
        const startedOn = (task: string) => events.find((e): e is Extract<AdoEvent, { type: "task.started" }> => e.type === "task.started" && e.taskId === task)?.workerId;
        expect(startedOn("long")).toBe("w-slow");
        expect(startedOn("q1")).toBe("w-idle");
        expect(startedOn("q2")).toBe("w-idle");
        // ... while the slow task still ran.
        expect(at.has("task.succeeded long")).toBe(false);
        const moved = ["q1", "q2"].map((q) => Math.round(at.get(`task.started ${q}`)! - t0));
        console.log(`rebalance-slow: from B idle beside A's queued work (every actor up) to B running the moved tasks: ${moved.join(" ms, ")} ms (rebalanceInterval 500 ms, 1 slot on B)`);
        await writeFile(gate, "");
        const outcome = await done;
        expect(outcome.status).toBe("succeeded");
        // Nothing lost, nothing twice: each command ran once, where it started.
        expect((await readFile(ran, "utf8")).split("\n").filter(Boolean).sort()).toEqual(["long w-slow", "q1 w-idle", "q2 w-idle"]);
        expect(events.filter((e) => e.type === "task.started").map((e) => ("taskId" in e ? `${e.taskId}#${e.attempt}` : "")).sort()).toEqual(["long#1", "q1#1", "q2#1"]);
      } finally {
        await writeFile(gate, "");
        const codes = await Promise.all(procs.map((p) => stopProcess(p.child)));
        await nc.drain();
        await stack.close();
        await repo.cleanup();
        expect(codes.every((c) => c === 0)).toBe(true);
      }
    },
  );
});
