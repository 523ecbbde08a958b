/**
 * The followers of the events stream after a server restart that rewrote it: a 2.9.10
 * server restarted on a store that lost its last writes gives new events the sequences
 * of lost ones, which a follower that resumes after its last sequence never sees.
 * Staged as in test/runtime/runtime.test.ts: the events stream's messages restored from
 * an older copy of the store, everything else (consumers, KV) kept newer.
 */
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { Notifier } from "../../src/actors/notifier/notifier.js";
import { Recorder } from "../../src/actors/recorder/recorder.js";
import { publishEvent } from "../../src/runtime/events.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { AdoEvent } from "../../src/runtime/messages.js";
import { readSnapshot } from "../../src/runtime/run-snapshot.js";
import { consumers, type Topology } from "../../src/runtime/topology.js";
import { stagedServer } from "../helpers/chaos.js";
import { eventually } from "../helpers/nats.js";

const completed = (runId: string, status: "succeeded" | "failed" = "succeeded"): AdoEvent => ({ type: "run.completed", runId, at: new Date().toISOString(), status, counts: {}, tasks: [] });

/** A restartable server with the events stream's messages kept aside (`keep`) and put back (`rewrite`). */
async function staged() {
  const dir = await mkdtemp(join(tmpdir(), "ado-evgap-"));
  const base = await stagedServer(dir);
  const { nats, topo, connect } = base;
  return {
    ...base,
    /** A client on the server as it is now. */
    async client() {
      const nc = await connect("test");
      return { js: jetstream(nc), jsm: await jetstreamManager(nc) };
    },
    /** Restarts the server, its store copied aside first. */
    keep: () => nats.keepCopy(),
    /** Restarts the server with the events stream's messages as they were at `keep`. */
    rewrite: () => nats.restoreMessages(topo.streams.events.name),
    async close() {
      await base.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const publish = async (s: Awaited<ReturnType<typeof staged>>, topo: Topology, e: AdoEvent) => (await publishEvent((await s.client()).js, topo, e)).seq;

describe("event gap - followers of the events stream after a restart that rewrote it", () => {
  it("the notifier posts a run's end published at a sequence it had passed, under a delivery id of its own", async () => {
    const received: { headers: IncomingMessage["headers"]; body: string }[] = [];
    const http = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        received.push({ headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", () => r()));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/hook`;
    const s = await staged();
    const { topo, kv } = s;
    const notifier = new Notifier("n1", { nc: await s.connect("notifier"), topo, kv, logger: silentLogger }, { webhooks: [{ url, events: ["run.completed"] }], attempts: 2, timeoutMs: 5_000 });
    const runOf = (i: number) => JSON.parse(received[i]!.body).runId;
    try {
      await notifier.start();
      expect(await publish(s, topo, completed("r1"))).toBe(1);
      await eventually(() => received.length === 1, 20_000, "r1's webhook");
      await s.keep();
      for (const r of ["r2", "r3", "r4"]) await publish(s, topo, completed(r));
      await eventually(() => received.length === 4, 20_000, "r2-r4's webhooks");
      const { jsm } = await s.client();
      // (Its ack of r1 may be lost with the first restart: the durable's delivered sequence is what counts.)
      await eventually(async () => (await jsm.consumers.info(topo.streams.events.name, consumers.notifier)).delivered.stream_seq === 4, 10_000, "r2-r4 delivered");
      const r2 = received[1]!;
      expect(JSON.parse(r2.body).runId).toBe("r2");
      await s.rewrite();
      // r5 takes sequence 2, which the notifier's durable delivered before: lost to it without the mend.
      expect(await publish(s, topo, completed("r5"))).toBe(2);
      await eventually(() => received.length === 5, 30_000, "r5's webhook");
      expect(runOf(4)).toBe("r5");
      expect(received[4]!.headers["ado-delivery"]).toMatch(new RegExp(`^${topo.streams.events.name}\\.2\\.`));
      expect(received[4]!.headers["ado-delivery"]).not.toBe(r2.headers["ado-delivery"]);
      // And on: the next one once, nothing handled before the restart posted again.
      await publish(s, topo, completed("r6"));
      await eventually(() => received.length === 6, 20_000, "r6's webhook");
      expect(runOf(5)).toBe("r6");
      await new Promise((r) => setTimeout(r, 1_000));
      expect(received.map((_, i) => runOf(i))).toEqual(["r1", "r2", "r3", "r4", "r5", "r6"]);
    } finally {
      await notifier.close({ graceMs: 1_000, forceMs: 1_000 });
      await new Promise<void>((r) => http.close(() => r()));
      await s.close();
    }
  }, 120_000);

  it("the recorder folds events published at sequences it had passed: while it follows, and when it starts again from its cursor", async () => {
    const s = await staged();
    const { topo, kv } = s;
    const ctx = async () => ({ nc: await s.connect("recorder"), topo, kv, logger: silentLogger });
    // A lease longer than the test: losing it across the restart (its renewal may time out)
    // and taking it again would start the recorder afresh from its cursor, which hid that
    // it did not follow on after a plain restart (nats.js waits 30 s after a failed check).
    let recorder = await new Recorder("rec1", await ctx(), { everyMs: 100, leaseMs: 120_000 }).start();
    const status = async (runId: string) => (await readSnapshot(kv.snapshots, runId))?.fold.status;
    const cursorAt = (seq: number) => eventually(() => recorder.stats().cursor === seq, 40_000, `cursor at ${seq}`);
    try {
      await publish(s, topo, completed("a"));
      await cursorAt(1);
      await s.keep();
      // Run x ends (failed) at sequence 4: its snapshot holds sequence 4.
      for (const r of ["b", "c"]) await publish(s, topo, completed(r));
      expect(await publish(s, topo, completed("x", "failed"))).toBe(4);
      await cursorAt(4);
      expect(await status("x")).toBe("failed");
      await s.rewrite();
      // While it follows: x's end published again (succeeded) at sequence 2, a new run at 3.
      expect(await publish(s, topo, completed("x"))).toBe(2);
      expect(await publish(s, topo, completed("y"))).toBe(3);
      await eventually(async () => (await status("y")) === "succeeded", 20_000, "y folded");
      expect(await status("x")).toBe("succeeded");
      await cursorAt(3);
      // Started again from its cursor (sequence 3, stored with its time) after another rewrite.
      await recorder.close();
      await s.rewrite();
      expect(await publish(s, topo, completed("z"))).toBe(2);
      recorder = await new Recorder("rec2", await ctx(), { everyMs: 100 }).start();
      await eventually(async () => (await status("z")) === "succeeded", 20_000, "z folded");
      expect(recorder.stats().rewrites).toBe(1);
    } finally {
      await recorder.close({ graceMs: 1_000, forceMs: 1_000 });
      await s.close();
    }
  }, 120_000);
});
