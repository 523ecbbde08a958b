/** The balancer's worker registry over a real nats-server. */
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { WorkerRegistry } from "../../src/actors/balancer/registry.js";
import { Worker } from "../../src/actors/worker/worker.js";
import { ManualClock } from "../../src/runtime/clock.js";
import { decode, encode, encodeValue } from "../../src/runtime/codec.js";
import type { WorkerId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type WorkerRecord } from "../../src/runtime/messages.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { useTestServer, eventually, provisioned } from "../helpers/nats.js";
import { workerLoad, workerRecord } from "../helpers/records.js";
import { gitOut, makeRepo } from "../helpers/repo.js";


const record = (over: Partial<WorkerRecord> = {}): WorkerRecord => workerRecord({ slots: 2, ...over });
const load = workerLoad;
describe("registry - over a real nats-server", () => {
  const ts = useTestServer("ado-balancer-");

  it("a KV heartbeat delivered after the load report of a later finish leaves the worker idle", async () => {
    const nc = await ts.connect("registry");
    const { kv, topo } = await provisioned(nc);
    let changes = 0;
    const reg = new WorkerRegistry(nc, kv.workers, topo, new ManualClock(), 1_000, silentLogger, () => changes++);
    await reg.start();
    try {
      const put = (r: WorkerRecord) => kv.workers.put(r.workerId, encodeValue(SCHEMAS.WorkerRecord, r));
      await put(record({ running: 1, loadSeq: 1, active: ["r.a.1"] }));
      await eventually(() => reg.workers.get("w1")?.record.running === 1, 5_000, "first heartbeat");
      // The finish: the report goes straight to the balancer over core NATS.
      const { data, headers } = encode(SCHEMAS.WorkerLoad, load({ running: 0, loadSeq: 2, finished: ["r.a.1"] }));
      nc.publish(topo.subjects.load("w1"), data, { headers });
      await eventually(() => reg.workers.get("w1")?.record.running === 0, 5_000, "load report");
      // The heartbeat written just before the finish lands afterwards (through the KV stream).
      await put(record({ running: 1, loadSeq: 1, active: ["r.a.1"], pending: 5 }));
      await eventually(() => reg.workers.get("w1")?.record.pending === 5, 5_000, "late heartbeat");
      expect(reg.candidates().map((c) => [c.id, c.busy])).toEqual([["w1", 0]]);
      // The next heartbeat (after the finish) agrees, and a start after it counts again.
      await put(record({ running: 1, loadSeq: 3, active: ["r.b.1"], pending: 6 }));
      await eventually(() => reg.workers.get("w1")?.record.pending === 6, 5_000, "next heartbeat");
      expect(reg.candidates()[0]!.busy).toBe(1);
      expect(changes).toBeGreaterThanOrEqual(2); // new worker, load report
    } finally {
      reg.stop();
    }
  });

  it("a worker numbers its heartbeats and load reports so that running and loadSeq agree", async () => {
    const repo = await makeRepo();
    const nc = await ts.connect("worker");
    const { topo } = await provisioned(nc);
    const workerId = "w-loadseq";
    const ctx = { nc, topo, kv: await openBuckets(nc, topo), logger: silentLogger };
    const seen: Array<{ via: "kv" | "load"; running: number; loadSeq: number; finished?: string[]; active?: string[] }> = [];
    const watch = await ctx.kv.workers.watch({ key: workerId });
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") continue;
        const r = decode(SCHEMAS.WorkerRecord, e.value);
        seen.push({ via: "kv", running: r.running, loadSeq: r.loadSeq });
      }
    })();
    const sub = nc.subscribe(topo.subjects.load(workerId), {
      callback: (_err, m) => {
        const l = decode(SCHEMAS.WorkerLoad, m.data, m.headers);
        seen.push({ via: "load", running: l.running, loadSeq: l.loadSeq, finished: l.finished, ...(l.active ? { active: l.active } : {}) });
      },
    });
    const worker = await new Worker(ctx, { workerId: workerId as WorkerId, slots: 2, heartbeatMs: 100, worktreeDir: join(ts.scratch, "wt"), cloneDir: join(ts.scratch, "clones") }).start();
    try {
      const base = gitOut(repo.dir, "rev-parse", "HEAD");
      const at = new Date().toISOString();
      const work = (taskId: string, run: string) =>
        encode(SCHEMAS.TaskWork, {
          type: "task.work",
          runId: "rseq",
          taskId,
          attempt: 1,
          priority: "normal",
          task: { id: taskId, run },
          repo: repo.dir,
          baseCommit: base,
          branch: `ado/rseq/${taskId}`,
          readyAt: at,
          submittedAt: at,
          workerId,
        });
      const js = jetstream(nc);
      for (const [id, run] of [["slow", "sleep 0.6"], ["quick", "sleep 0.2"]] as const) {
        const { data, headers } = work(id, run);
        await js.publish(topo.subjects.work(workerId), data, { headers });
      }
      await eventually(() => seen.filter((s) => s.via === "load").length === 4, 20_000, "four load reports");
      await eventually(() => seen.some((s) => s.via === "kv" && s.loadSeq === 4), 5_000, "a heartbeat after both finishes");
      // Two starts and two finishes: the sequence counts all four, and whatever the
      // interleaving, a message's running count is starts minus finishes at its sequence,
      // which only works if each message carries the sequence of the count it reports.
      // Each start is reported too (before, only finishes were: a balancer that had not
      // placed the task saw the slot free until the next heartbeat).
      const reports = seen.filter((s) => s.via === "load");
      expect(reports.map((r) => [r.running, r.loadSeq])).toEqual([
        [1, 1],
        [2, 2],
        [1, 3],
        [0, 4],
      ]);
      expect(reports.map((r) => r.active?.length)).toEqual([1, 2, 1, 0]);
      expect(reports.flatMap((r) => r.finished ?? []).sort()).toEqual(["rseq.quick.1", "rseq.slow.1"]);
      // Heartbeats while both ran say running 2 at sequence 2.
      expect(seen.some((s) => s.via === "kv" && s.running === 2 && s.loadSeq === 2)).toBe(true);
      for (const s of seen) {
        const expected = { 0: 0, 1: 1, 2: 2, 3: 1, 4: 0 }[s.loadSeq];
        expect(s.running, JSON.stringify(s)).toBe(expected);
      }
    } finally {
      sub.unsubscribe();
      watch.stop();
      await worker.close({ graceMs: 1_000, forceMs: 1_000 });
      await repo.cleanup();
    }
  });
});
