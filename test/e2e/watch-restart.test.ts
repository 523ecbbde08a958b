import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { z } from "zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdoClient, type RunOutcome } from "../../src/runtime/client.js";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { encodeValue } from "../../src/runtime/codec.js";
import { publishEvent } from "../../src/runtime/events.js";
import { newRunId, type RunId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { openBuckets, provision, type Topology } from "../../src/runtime/topology.js";
import { RestartableNats } from "../helpers/chaos.js";
import { tcpProxy } from "../helpers/proxy.js";
import { eventually, uniqueTopology } from "../helpers/nats.js";

/**
 * Issue 9 (the full-disk scenario): `ado run`'s live view stopped at a nats-server
 * restart and the run's end was never seen. The client's watch of a run must survive
 * the server being SIGKILLed and started again, also on a store that lost the stream's
 * tail (what a server whose last writes failed recovers: sequences go backwards and the
 * next events reuse them). Here the events are published by the test, as the scheduler
 * and workers would, so each restart happens exactly between two known events.
 */

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "ado-watch-restart-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

type RunRecordInput = z.input<typeof SCHEMAS.RunRecord.schema>;
const at = () => new Date().toISOString();
const output = (runId: RunId, n: string): AdoEvent => ({ type: "task.output", runId, taskId: "a", attempt: 1, at: at(), stream: "stdout", data: `${n}\n` });

/** A publisher on a connection of its own (the scheduler's and workers' side), reconnecting like theirs. */
async function publisher(url: string, topo: Topology) {
  const nc: NatsConnection = await connectNats({ servers: url, name: "watch-restart-publisher", logger: silentLogger });
  const js = jetstream(nc);
  return {
    nc,
    /** Publishes, retrying while the server restarts or JetStream recovers. */
    publish: (e: AdoEvent) => eventually(() => publishEvent(js, topo, e).then(() => true), 60_000, `publishing ${e.type}`),
  };
}

describe("watch - a nats-server restart", () => {
  it(
    "a watch goes on across two SIGKILLs of nats-server, the second onto a copy of the store without the stream's last events: every event shown once, the run's end seen",
    async () => {
      const nats = await RestartableNats.start(join(scratch, "store"));
      const topo = uniqueTopology();
      // The client reaches the server through a proxy: cut, it is away while the run goes on.
      const proxy = await tcpProxy(new URL(nats.url));
      const nc = await connectNats({ servers: proxy.url, name: "watch-restart-client", logger: silentLogger });
      const pub = await publisher(nats.url, topo);
      try {
        await provision(nc, topo);
        const client = new AdoClient(nc, topo);
        const runId = newRunId();
        await pub.publish({ type: "run.accepted", runId, at: at(), name: "restart", tasks: [{ id: "a", needs: [], priority: "normal" }], queued: ["a"] });
        await pub.publish({ type: "task.started", runId, taskId: "a", attempt: 1, at: at(), workerId: "w1" });
        const seen: AdoEvent[] = [];
        const shown = () => seen.filter((e) => e.type === "task.output").map((e) => (e as { data: string }).data.trim());
        let ended: RunOutcome | Error | undefined;
        const watching = client.watch(runId, { onEvent: (e) => seen.push(e) }).then(
          (o) => (ended = o),
          (err: Error) => (ended = err),
        );
        for (const n of ["1", "2", "3"]) await pub.publish(output(runId, n));
        await eventually(() => shown().length === 3, 30_000, "the first outputs shown");

        // A store as it was here: what the second restart goes back to.
        await nats.kill();
        const early = join(scratch, "store-early");
        await cp(nats.storeDir, early, { recursive: true });
        await nats.restart();
        for (const n of ["4", "5", "6", "7"]) await pub.publish(output(runId, n));
        await eventually(() => shown().length === 7, 60_000, "the outputs after the first restart shown");

        // The second restart loses the stream's tail (4..7), and the run goes on to its end
        // while the client is away: its last events reuse the lost sequences.
        await proxy.cut();
        await nats.kill();
        await rm(nats.storeDir, { recursive: true, force: true });
        await cp(early, nats.storeDir, { recursive: true });
        await nats.restart();
        for (const n of ["8", "9"]) await pub.publish(output(runId, n));
        await pub.publish({ type: "task.merged", runId, taskId: "a", attempt: 1, at: at(), integrationCommit: "c".repeat(40) });
        await pub.publish({ type: "run.completed", runId, at: at(), status: "succeeded", counts: { succeeded: 1 }, tasks: [{ id: "a", status: "succeeded", attempts: 1 }] });
        await proxy.restore();

        await eventually(() => ended !== undefined, 120_000, "the watch to end").catch((err: Error) => {
          throw new Error(`${err.message}; shown: ${shown().join(" ")}; events: ${seen.map((e) => e.type).join(", ")}`);
        });
        await watching;
        if (ended instanceof Error) throw ended;
        expect(ended!.status).toBe("succeeded");
        expect(shown()).toEqual(["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        expect(seen.filter((e) => e.type === "run.completed")).toHaveLength(1);
      } finally {
        await drainQuietly(pub.nc);
        await drainQuietly(nc);
        await proxy.close().catch(() => undefined);
        await nats.stop(1_000);
      }
    },
    180_000,
  );

  it(
    "a run whose end the stream lost (its record says it succeeded, no run.completed after the restart): the watch ends with the record's outcome instead of waiting forever",
    async () => {
      const nats = await RestartableNats.start(join(scratch, "store-lost-end"));
      const topo = uniqueTopology();
      const nc = await connectNats({ servers: nats.url, name: "watch-lost-end-client", logger: silentLogger });
      const pub = await publisher(nats.url, topo);
      try {
        await provision(nc, topo);
        const client = new AdoClient(nc, topo);
        const runId = newRunId();
        const now = at();
        await pub.publish({ type: "run.accepted", runId, at: now, name: "lost-end", tasks: [{ id: "a", needs: [], priority: "normal" }], queued: ["a"] });
        const seen: AdoEvent[] = [];
        const watching = client.watch(runId, { onEvent: (e) => seen.push(e), checkEveryMs: 1_000 });
        await eventually(() => seen.length === 1, 30_000, "run.accepted shown");
        await nats.kill();
        await nats.restart();
        // The scheduler's record of the run, ended; its run.completed never made it to the stream.
        const { runs } = await eventually(() => openBuckets(nc, topo), 60_000, "the buckets after the restart");
        const record: RunRecordInput = {
          runId,
          name: "lost-end",
          status: "succeeded",
          graph: { name: "lost-end", tasks: [{ id: "a", run: "true", agent: "shell" }] },
          submittedAt: now,
          acceptedAt: now,
          finishedAt: at(),
          integrationBranch: `ado/${runId}/integration`,
        };
        await eventually(() => runs.put(runId, encodeValue(SCHEMAS.RunRecord, record)).then(() => true), 60_000, "the run record written");
        const outcome = await watching;
        expect(outcome.status).toBe("succeeded");
        expect(outcome.integrationBranch).toBe(`ado/${runId}/integration`);
      } finally {
        await drainQuietly(pub.nc);
        await drainQuietly(nc);
        await nats.stop(1_000);
      }
    },
    180_000,
  );
});
