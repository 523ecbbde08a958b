/**
 * A live fuzz run: while a run goes, generated and mutated payloads (test/helpers/fuzz.ts)
 * are published at every subject an actor consumes (submit, ready, work, results, merge,
 * a worker's load reports) and written to every KV bucket an actor watches or reads.
 * The run must complete as if nothing happened, and every actor must still be running.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { jetstream } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { packRaw, SCHEMA_HEADER } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS } from "../../src/runtime/messages.js";
import { damage, bytesMutationArb, mutate, mutationArb, nastyValue, SAMPLES } from "../helpers/fuzz.js";
import { startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

let ts: TestServer;
let worktreeDir: string;
beforeAll(async () => {
  ts = await startTestServer();
  worktreeDir = await mkdtemp(join(tmpdir(), "ado-wt-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(worktreeDir, { recursive: true, force: true, maxRetries: 10 });
});

/** Payloads near a schema's (mutated samples, damaged encodings) and noise. */
function payloads(sampleKey: string, n: number, seed: number): Uint8Array[] {
  const samples = SAMPLES[sampleKey]!;
  const arb = fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((b) => b as Uint8Array),
    nastyValue.map((v) => packRaw(v)),
    fc.tuple(fc.constantFrom(...samples), fc.array(mutationArb, { minLength: 1, maxLength: 3 })).map(([s, m]) => packRaw(mutate(s, m))),
    fc.tuple(fc.constantFrom(...samples), bytesMutationArb).map(([s, ops]) => damage(packRaw(s), ops)),
  );
  return fc.sample(arb, { numRuns: n, seed });
}

describe("fuzz - live", () => {
  it("malformed messages at every consumed subject and bucket while a run goes: the run completes and every actor is still up", async () => {
    const topo = uniqueTopology();
    const repo = await makeRepo();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 2, worktreeDir, heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger });
    const nc = await ts.connect("fuzz-live");
    const js = jetstream(nc);
    const client = new AdoClient(nc, topo);
    try {
      const graph = parseGraph(`
tasks:
  - { id: a, run: "sleep 1; echo A > a.txt" }
  - { id: b, run: "sleep 1; echo B > b.txt" }
  - { id: c, needs: [a, b], run: "sleep 1; cat a.txt b.txt > c.txt" }
  - { id: d, needs: [c], run: "cat c.txt > d.txt" }
`);
      const running = client.run({ graph, repo: repo.dir, signal: AbortSignal.timeout(120_000) });
      const workerId = stack.workers[0]!.id;
      const targets: Array<{ subject: string; sample: string; schema: string }> = [
        { subject: topo.subjects.submit, sample: "SubmitRun", schema: SCHEMAS.SubmitRun.name },
        { subject: topo.subjects.ready("normal"), sample: "TaskWork", schema: SCHEMAS.TaskWork.name },
        { subject: topo.subjects.work(workerId), sample: "TaskWork", schema: SCHEMAS.TaskWork.name },
        { subject: topo.subjects.results("r1"), sample: "SchedulerInput", schema: SCHEMAS.SchedulerInput.name },
        { subject: topo.subjects.merge("r1"), sample: "MergeRequest", schema: SCHEMAS.MergeRequest.name },
      ];
      const buckets: Array<[keyof typeof topo.buckets, string]> = [
        ["workers", "WorkerRecord"],
        ["control", "ControlRequest"],
        ["backlog", "RunBacklog"],
        ["hitl", "HitlRecord"],
        ["worktrees", "WorktreeRecord"],
        ["leases", "LeaseRecord"],
        ["claims", "AttemptClaim"],
        ["costs", "CostHistory"],
        ["sessions", "CheckpointRecord"],
      ];
      const kvm = await import("@nats-io/kv").then((m) => new m.Kvm(nc));
      let sent = 0;
      for (let round = 0; round < 4; round++) {
        for (const [i, t] of targets.entries()) {
          for (const [j, data] of payloads(t.sample, 10, round * 100 + i).entries()) {
            const h = natsHeaders();
            if (j % 2) h.set(SCHEMA_HEADER, `${t.schema}/1`);
            await js.publish(t.subject, data, { headers: h });
            sent++;
          }
        }
        for (const data of payloads("WorkerLoad", 10, round)) nc.publish(topo.subjects.load(workerId), data);
        for (const [i, [bucket, sample]] of buckets.entries()) {
          const kv = await kvm.open(topo.buckets[bucket]);
          for (const [j, data] of payloads(sample, 5, round * 10 + i).entries()) await kv.put(`fuzz${j}`, data);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      const outcome = await running;
      expect(outcome.status).toBe("succeeded");
      for (const a of [...stack.actors, ...stack.workers]) expect(`${a.instance} ${a.state}`).toBe(`${a.instance} running`);
      // And they still work: a second run after the storm.
      const again = await client.run({ graph: parseGraph(`tasks:\n  - { id: z, run: "echo Z > z.txt" }\n`), repo: repo.dir, signal: AbortSignal.timeout(60_000) });
      expect(again.status).toBe("succeeded");
      expect(sent).toBe(200);
    } finally {
      await stack.close();
      await repo.cleanup();
    }
  }, 180_000);
});
