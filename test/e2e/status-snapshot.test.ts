/**
 * `ado status` from the run's snapshot (records.ts statusRead): the view it gives is the
 * one every task record gives, it reads no record of a task that has ended or waits for
 * its dependencies, and it still answers, the same, once those records are gone.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { Worker } from "../../src/actors/worker/worker.js";
import { builtinAgents, type Agent, type CliRunContext } from "../../src/agents/index.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { newWorkerId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { taskKey } from "../../src/runtime/names.js";
import { Records } from "../../src/runtime/records.js";
import { lastEventSequence, snapshotHead } from "../../src/runtime/run-load.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { runAdo } from "../helpers/cli.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

/** An agent that reports what it spent (an agent.usage event, as an adapter makes of a CLI's stream), then succeeds. */
const spender: Agent = {
  name: "spender",
  needsWorktree: true,
  async run(ctx) {
    (ctx as CliRunContext).onEvent?.({ type: "agent.usage", inputTokens: 9_000, outputTokens: 700, cachedTokens: 0, cacheWriteTokens: 0, costUsd: 0.05, costSource: "reported" }, 0);
    return { ok: true, costUsd: 0.05 };
  },
};

const GRAPH = `
name: status-snapshot
tasks:
  - { id: a, agent: spender, prompt: "spend" }
  - { id: b, run: "echo b > b.txt" }
  - { id: c, needs: [a, b], run: "echo c > c.txt" }
  - { id: f, run: "exit 3", retry: { attempts: 2, backoff: 0.1 } }
  - { id: s, needs: [f], run: "true" }
  - { id: n, needs: [c], run: "true" }
`;

describe("status from the run's snapshot", () => {
  let ts: TestServer;
  let scratch: string;
  let stack: Stack;
  let worker: Worker;
  let wnc: Awaited<ReturnType<typeof connectNats>>;
  let nc: Awaited<ReturnType<typeof connectNats>>;
  const topo = uniqueTopology();

  beforeAll(async () => {
    ts = await startTestServer();
    scratch = await mkdtemp(join(tmpdir(), "ado-status-snap-"));
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(scratch, "wt"), heartbeatMs: 200 });
    stack = await Stack.start({ config, logger: silentLogger, workers: 0, recorder: { everyMs: 200 } });
    const agents: Map<string, Agent> = builtinAgents();
    agents.set("spender", spender);
    wnc = await connectNats({ servers: ts.url, name: "status-snap-worker", logger: silentLogger });
    worker = await new Worker(
      { nc: wnc, topo, kv: await openBuckets(wnc, topo), logger: silentLogger },
      { workerId: newWorkerId(hostname()), slots: 3, heartbeatMs: 200, worktreeDir: join(scratch, "wt"), cloneDir: join(scratch, "clones"), agents },
    ).start();
    nc = await connectNats({ servers: ts.url, name: "status-snap-client", logger: silentLogger });
  }, 120_000);

  afterAll(async () => {
    await drainQuietly(nc);
    await worker?.close();
    await drainQuietly(wnc);
    await stack?.close();
    await ts?.stop();
    await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
  });

  it("an ended run: the snapshot's view is every record's, read without a task record, and the same once the records are deleted", async () => {
    const repo = await makeRepo();
    try {
      const client = new AdoClient(nc, topo);
      const kv = await openBuckets(nc, topo);
      const records = new Records(async () => kv, client.js, topo);
      const { runId } = await client.submit({ graph: parseGraph(GRAPH), repo: repo.dir });
      await eventually(async () => (await client.runRecord(runId))?.status === "failed", 120_000, "run ended (f failed)");
      // The recorder has stored the run up to its last event.
      const last = await lastEventSequence(client.js, topo, runId);
      await eventually(async () => ((await snapshotHead(client, runId))?.seq ?? 0) >= last, 60_000, "snapshot current");

      const byRecords = (await records.statusRead(runId, { via: "records" }))!;
      expect(byRecords.read).toMatchObject({ from: "records", taskRecords: 6 });
      const bySnapshot = (await records.statusRead(runId))!;
      expect(bySnapshot.read).toMatchObject({ from: "snapshot", taskRecords: 0, claims: 0 });
      expect(bySnapshot.view).toEqual(byRecords.view);
      // What the view holds is what the run did: the spender's cost and tokens, a retried failure, a skip, merges.
      const task = (id: string) => bySnapshot.view.tasks.find((t) => t.id === id)!;
      expect(task("a")).toMatchObject({ status: "succeeded", attempts: 1, costUsd: 0.05, tokens: 9_700 });
      expect(task("c")).toMatchObject({ status: "succeeded", needs: ["a", "b"] });
      expect(task("f")).toMatchObject({ status: "failed", attempts: 2 });
      expect(task("f").error).toMatch(/3/);
      expect(task("s")).toMatchObject({ status: "skipped", attempts: 0 });

      const env = { ...process.env, ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix };
      const before = await runAdo(["status", runId, "--json"], { env, cwd: repo.dir });
      expect(before.code, before.stderr).toBe(0);
      // Every task record gone: status is served from the snapshot, through the API and in the CLI, unchanged.
      for (const t of bySnapshot.view.tasks) await kv.tasks.delete(taskKey(runId, t.id));
      // (Read from what is left, the claims, the same run looks unfinished.)
      expect((await records.statusRead(runId, { via: "records" }))!.view.tasks.map((t) => t.status)).not.toContain("succeeded");
      expect(await client.status(runId)).toEqual(byRecords.view);
      const after = await runAdo(["status", runId, "--json"], { env, cwd: repo.dir });
      expect(after.code, after.stderr).toBe(0);
      expect(JSON.parse(after.stdout)).toEqual(JSON.parse(before.stdout));
      expect(after.stdout).toBe(before.stdout);
    } finally {
      await repo.cleanup();
    }
  }, 180_000);

  it("a live run: the running task and its claim are read, the tasks that wait for it are not, and both ways agree", async () => {
    const client = new AdoClient(nc, topo);
    const kv = await openBuckets(nc, topo);
    const records = new Records(async () => kv, client.js, topo);
    // slow is cancelled at the end: it must still run when both reads are made (60 s could pass while quick ends and the snapshot catches up).
    const tasks = [{ id: "slow", run: "sleep 600" }, { id: "quick", run: "true" }, ...Array.from({ length: 20 }, (_, i) => ({ id: `w${i}`, needs: ["slow"], run: "true" }))];
    // A repository of its own: without one the workers would take the test's own checkout.
    const repo = await makeRepo();
    const { runId } = await client.submit({ graph: { name: "live", tasks }, repo: repo.dir });
    try {
      await eventually(async () => {
        const v = await client.status(runId);
        return v?.tasks.find((t) => t.id === "slow")?.status === "running" && v.tasks.find((t) => t.id === "quick")?.status === "succeeded";
      }, 120_000, "slow running, quick done");
      const last = await lastEventSequence(client.js, topo, runId);
      await eventually(async () => ((await snapshotHead(client, runId))?.seq ?? 0) >= last, 60_000, "snapshot current");
      const byRecords = (await records.statusRead(runId, { via: "records" }))!;
      const bySnapshot = (await records.statusRead(runId))!;
      expect(bySnapshot.read).toMatchObject({ from: "snapshot", taskRecords: 1, claims: 1 });
      expect(bySnapshot.view).toEqual(byRecords.view);
    } finally {
      await client.control({ runId }, "cancel", "test over");
      await eventually(async () => (await client.runRecord(runId))?.status === "cancelled", 120_000, "run cancelled");
      await repo.cleanup();
    }
  }, 240_000);
});
