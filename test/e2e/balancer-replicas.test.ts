/**
 * Issue 13: two balancer replicas (separate `ado actor balancer` processes, both live)
 * feed workers with small slot counts from a burst of ready tasks. Each replica counts a
 * worker busy with what it runs plus what *this* replica placed there, so both may send
 * work to the same free slot; the surplus queues on the worker's subject, and the worker
 * pulls only as many as it has free slots. What must hold, measured from the tasks
 * themselves (each writes its worker, a start and an end time to a file outside the
 * repository): no worker ever runs more tasks at once than its slots, and every task runs
 * exactly once, also when one replica is SIGKILLed mid-burst (the balancers share their
 * ready consumers and hold no lease: what the dead one held comes back to the other
 * within the ready messages' ack wait).
 */
import { readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { startAdo, stopProcess } from "../helpers/cli.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

const ts = useTestServer("ado-balancer-replicas-");

interface Span {
  worker: string;
  task: string;
  start: bigint;
  end?: bigint;
}

/** Reads the tasks' own log: `<worker> s|e <ns> <task>` lines, one span per start. */
function spans(log: string): Span[] {
  const out: Span[] = [];
  for (const line of log.split("\n").filter(Boolean)) {
    const [worker, kind, at, task] = line.split(" ");
    if (kind === "s") out.push({ worker: worker!, task: task!, start: BigInt(at!) });
    else {
      const open = out.find((s) => s.task === task && s.worker === worker && s.end === undefined);
      if (open) open.end = BigInt(at!);
    }
  }
  return out;
}

/** The most spans of one worker open at the same instant (an end before a start at the same ns counts as before). */
function maxConcurrent(list: Span[]): number {
  const edges = list.flatMap((s) => [
    { at: s.start, d: 1 },
    { at: s.end ?? BigInt(Number.MAX_SAFE_INTEGER) * 1_000_000n, d: -1 },
  ]);
  edges.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.d - b.d));
  let now = 0;
  let max = 0;
  for (const e of edges) max = Math.max(max, (now += e.d));
  return max;
}

describe("balancer - two replicas", () => {
  it(
    "balancer - two balancer processes feeding workers of 1 and 2 slots from a burst: no worker ever runs more than its slots, every task runs once, and when one balancer is SIGKILLed mid-burst the other finishes the burst",
    { timeout: 180_000 },
    async () => {
      const TASKS = 30;
      const repo = await makeRepo();
      const topo = uniqueTopology();
      const log = join(ts.scratch, `spans-${topo.prefix}.log`);
      await writeFile(log, "");
      const configFile = async (name: string) => {
        const file = join(ts.scratch, `${name}.yaml`);
        await writeFile(
          file,
          [
            `prefix: ${topo.prefix}`,
            `server: ${ts.url}`,
            `worktreeDir: ${join(ts.scratch, name, "worktrees")}`,
            "heartbeatMs: 500",
            // A small window each, so both replicas hold part of the burst at once.
            "balancer: { maxHeld: 3 }",
            "",
          ].join("\n"),
        );
        return file;
      };
      const [a, b, w] = [await configFile("bal-a"), await configFile("bal-b"), await configFile("workers")];
      // The scheduler and merger in this process; the balancers and workers are what the test is about.
      const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(ts.scratch, "here"), heartbeatMs: 500 });
      const stack = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "merger"] });
      const procs = await Promise.all([
        startAdo(["actor", "balancer", "--config", a], /balancer running/),
        startAdo(["actor", "balancer", "--config", b], /balancer running/),
        startAdo(["worker", "--config", w, "--count", "2", "--slots", "1"], /worker\(s\)/),
        startAdo(["worker", "--config", w, "--id", "w-two", "--slots", "2"], /worker\(s\)/),
      ]);
      const [balA, balB] = procs;
      const nc = await connectNats({ servers: ts.url, name: "balancer-replicas-test", logger: silentLogger });
      const kv = await openBuckets(nc, topo);
      const slotsOf = new Map<string, number>();
      const watch = await kv.workers.watch();
      void (async () => {
        for await (const e of watch) if (e.operation === "PUT") slotsOf.set(e.key, decode(SCHEMAS.WorkerRecord, e.value).slots);
      })();
      // Which replica stored each work message (a core subscription sees every publish).
      const placements: Array<{ task: string; worker: string; at: number }> = [];
      const sub = nc.subscribe(topo.subjects.work("*"), {
        callback: (_e, m) => {
          const work = decode(SCHEMAS.TaskWork, m.data, m.headers);
          placements.push({ task: work.taskId, worker: work.workerId!, at: Date.now() });
        },
      });
      const events: AdoEvent[] = [];
      onTestFailed(async () => {
        console.log(events.filter((e) => e.type !== "task.output").map((e) => `${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}${"workerId" in e ? ` on ${e.workerId}` : ""}`).join("\n"));
        console.log(await readFile(log, "utf8").catch(() => ""));
        for (const p of procs) console.log(p.output().slice(-2_000));
      });
      let killed = false;
      try {
        await eventually(() => slotsOf.size === 3, 30_000, "three workers registered");
        const client = new AdoClient(nc, topo);
        // Each task logs its worker and its start and end (ns) outside the repository; long enough to overlap.
        const graph = parseGraph(
          "tasks:\n" +
            Array.from({ length: TASKS }, (_, i) => `  - { id: t${i}, run: 'echo "$ADO_WORKER_ID s $(date +%s%N) t${i}" >> ${log}; sleep 0.4; echo "$ADO_WORKER_ID e $(date +%s%N) t${i}" >> ${log}' }`).join("\n") +
            "\n",
        );
        const { runId } = await client.submit({ graph, repo: repo.dir });
        const done = client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(170_000) });
        // Both replicas placed work before one dies.
        const assigned = async (p: (typeof procs)[number]) => {
          const r = await nc.request(topo.subjects.status("balancer", `balancer-${hostname()}-${p.child.pid}`), undefined, { timeout: 10_000 });
          return (r.json() as { assigned: number }).assigned;
        };
        const started = () => events.filter((e) => e.type === "task.started").length;
        await eventually(async () => started() >= 4 && (await assigned(balA!)) > 0 && (await assigned(balB!)) > 0, 60_000, "both balancers placed work and four tasks started");
        const startedBeforeKill = started();
        // Mid-burst: balancer A is SIGKILLed with work still held or unplaced.
        expect(startedBeforeKill).toBeLessThan(TASKS);
        const gone = new Promise((r) => balA!.child.once("exit", r));
        balA!.child.kill("SIGKILL");
        await gone;
        killed = true;
        const outcome = await done;
        expect(outcome.status).toBe("succeeded");

        const all = spans(await readFile(log, "utf8"));
        // Every task ran exactly once, and finished.
        expect(all.map((s) => s.task).sort()).toEqual(Array.from({ length: TASKS }, (_, i) => `t${i}`).sort());
        expect(all.every((s) => s.end !== undefined)).toBe(true);
        expect(events.filter((e) => e.type === "task.started")).toHaveLength(TASKS);
        // No worker ever ran more than its slots at once.
        const byWorker = new Map<string, Span[]>();
        for (const s of all) byWorker.set(s.worker, [...(byWorker.get(s.worker) ?? []), s]);
        expect([...byWorker.keys()].every((id) => slotsOf.has(id))).toBe(true);
        const peaks = Object.fromEntries([...byWorker].map(([id, list]) => [id, maxConcurrent(list)]));
        for (const [id, peak] of Object.entries(peaks)) expect(peak, `${id} ran ${peak} at once with ${slotsOf.get(id)} slot(s)`).toBeLessThanOrEqual(slotsOf.get(id)!);
        // The measure can see concurrency: the two-slot worker did run two at once.
        expect(peaks["w-two"]).toBe(2);
        // The surviving replica finished the burst (it placed work after the kill).
        expect(await assigned(balB!)).toBeGreaterThan(0);
        // How far the replicas over-filled (printed, not asserted: a race the test cannot force): the most work
        // messages a worker had been sent and not finished at once, beyond its slots, by the tasks' own end times.
        const overfill = Object.fromEntries(
          [...slotsOf.keys()].map((id) => {
            const sent = placements.filter((p) => p.worker === id).map((p) => ({ at: BigInt(p.at) * 1_000_000n, d: 1 }));
            const ended = all.filter((s) => s.worker === id).map((s) => ({ at: s.end!, d: -1 }));
            let open = 0;
            let most = 0;
            for (const e of [...sent, ...ended].sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : x.d - y.d))) most = Math.max(most, (open += e.d));
            return [id, Math.max(0, most - slotsOf.get(id)!)];
          }),
        );
        console.log(`balancer-replicas: ${TASKS} tasks, ${startedBeforeKill} started before the SIGKILL; work messages stored: ${placements.length}; most queued beyond the slots per worker ${JSON.stringify(overfill)}; peaks running ${JSON.stringify(peaks)}`);
      } finally {
        watch.stop();
        sub.unsubscribe();
        // A SIGKILLed child has no exit code (its signalCode is set): stopProcess would wait for an exit that came already.
        const codes = await Promise.all(procs.slice(killed ? 1 : 0).map((p) => stopProcess(p.child)));
        await nc.drain();
        await stack.close();
        await repo.cleanup();
        expect(codes).toEqual(killed ? [0, 0, 0] : [0, 0, 0, 0]);
      }
    },
  );
});
