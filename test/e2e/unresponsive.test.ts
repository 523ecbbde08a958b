import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

const ts = useTestServer("ado-unresponsive-");

/** Freezes the test's nats-server (its whole process group) while `during` runs: it answers nothing, as a deadlocked JetStream. */
async function frozen<T>(during: () => Promise<T>): Promise<T> {
  process.kill(-ts.server.pid, "SIGSTOP");
  try {
    return await during();
  } finally {
    process.kill(-ts.server.pid, "SIGCONT");
  }
}

describe("scheduler - JetStream does not answer when a sweep runs", () => {
  // The disk-full chaos run stalled for good: the scheduler swept acked messages on a timer
  // (and 3 s after a reconnect) while JetStream did not answer, the sweep's first request
  // timed out outside its try, and the unhandled rejection ended the scheduler's process.
  it("the sweep of the work queues gives up for this round instead of rejecting; the scheduler still accepts runs afterwards", async () => {
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(ts.scratch, "wt") });
    const stack = await Stack.start({ config, logger: silentLogger, actors: ["scheduler"], workers: 0 });
    const repo = await makeRepo();
    try {
      // The timers call this with `void`: it must never reject.
      const scheduler = stack.actors[0] as unknown as { sweepSkipped(): Promise<void> };
      await frozen(async () => {
        await expect(scheduler.sweepSkipped()).resolves.toBeUndefined();
      });
      const nc = await ts.connect("unresponsive-client");
      const client = new AdoClient(nc, topo);
      const kv = await openBuckets(nc, topo);
      const { runId } = await client.submit({ graph: parseGraph("tasks:\n  - { id: a, run: 'true' }\n"), repo: repo.dir });
      await eventually(async () => (await kv.runs.get(runId))?.operation === "PUT", 30_000, "the run accepted after the server answers again");
    } finally {
      await stack.close();
      await repo.cleanup();
    }
  }, 60_000);
});
