import { createHash } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import { describe, expect, it } from "vitest";
import { Actor } from "../../src/runtime/actor.js";
import { decode, encode, packRaw, unpackRaw } from "../../src/runtime/codec.js";
import { ManualClock } from "../../src/runtime/clock.js";
import { BatchLoop, type Delivery } from "../../src/runtime/consume.js";
import { DeadLetters } from "../../src/runtime/dead-letter.js";
import { DecodeError } from "../../src/runtime/errors.js";
import { LeaderLease } from "../../src/runtime/lease.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { z } from "zod";
import { SCHEMAS, type SubmitRun } from "../../src/runtime/messages.js";
import { actorConsumer, provision } from "../../src/runtime/topology.js";
import { useTestServer, eventually, provisioned, uniqueTopology } from "../helpers/nats.js";

const ts = useTestServer();

const submit = (runId: string): z.input<typeof SubmitRun> => ({
  type: "run.submit",
  runId,
  graph: { name: "g", tasks: [{ id: "a", prompt: "", agent: "noop", needs: [], priority: "normal", retry: { attempts: 1 } }] },
  submittedAt: new Date().toISOString(),
});

describe("topology - provisioning", () => {
  it("is idempotent: provisioning twice, concurrently, converges", async () => {
    const nc = await ts.connect();
    const { topo } = await provisioned(nc);
    await Promise.all([provision(nc, topo), provision(nc, topo)]);
    const { jsm } = await provision(nc, topo);
    const names: string[] = [];
    for await (const s of jsm.streams.names()) names.push(s);
    for (const s of Object.values(topo.streams)) expect(names).toContain(s.name);
  });

  it("processes starting together on a fresh topology all provision it (the add race is converged, not reported)", async () => {
    // As the actors of `ado up` or a test's processes do: one connection each, so their
    // stream creates interleave at the server. nats-server 2.9 answered the loser of that
    // race with "subjects overlap with an existing stream" (the very stream being made).
    const conns = await Promise.all(Array.from({ length: 12 }, () => ts.connect()));
    try {
      for (let round = 0; round < 20; round++) {
        const topo = uniqueTopology();
        await Promise.all(conns.map((c) => provision(c, topo)));
        const { jsm } = await provision(conns[0]!, topo);
        for (const s of Object.values(topo.streams)) expect((await jsm.streams.info(s.name)).config.subjects).toEqual(s.subjects);
      }
    } finally {
      await Promise.all(conns.map((c) => c.close()));
    }
  }, 60_000);
});

describe("codec - boundary", () => {
  it("round-trips a payload and names the schema in a header", () => {
    const { data, headers } = encode(SCHEMAS.SubmitRun, submit("r1"));
    expect(headers.get("Ado-Schema")).toBe("run.submit/1");
    expect(decode(SCHEMAS.SubmitRun, data, headers).runId).toBe("r1");
  });

  it("rejects garbage, a wrong schema and a newer version with a DecodeError that says why", () => {
    expect(() => decode(SCHEMAS.SubmitRun, new Uint8Array([0xc1]))).toThrow(DecodeError);
    expect(() => decode(SCHEMAS.SubmitRun, packRaw({ type: "run.submit" }))).toThrow(/runId/);
    const { data, headers } = encode(SCHEMAS.SubmitRun, submit("r1"));
    headers.set("Ado-Schema", "task.work/1");
    expect(() => decode(SCHEMAS.SubmitRun, data, headers)).toThrow(/expected a 'run.submit'/);
    headers.set("Ado-Schema", "run.submit/9");
    expect(() => decode(SCHEMAS.SubmitRun, data, headers)).toThrow(/upgrade ado/);
  });

  it("a field set to undefined is left out: plain MessagePack, no extension type (0xd4) another language's decoder refuses", () => {
    const at = new Date().toISOString();
    const event = { type: "task.failed", runId: "r1", taskId: "a", attempt: 1, at, workerId: undefined, error: "e", willRetry: false, finishedAt: at, costUsd: undefined } as const;
    const { data } = encode(SCHEMAS.AdoEvent, event);
    expect([...data].includes(0xd4)).toBe(false);
    expect(Object.keys(unpackRaw(data) as object)).not.toContain("workerId");
    expect(decode(SCHEMAS.AdoEvent, data).type).toBe("task.failed");
  });

  it("rejects a schema header whose version is not a whole number, or that has none, saying what it should be", () => {
    const { data, headers } = encode(SCHEMAS.SubmitRun, submit("r1"));
    for (const bad of ["run.submit/abc", "run.submit", "run.submit/", "run.submit/1.5", "run.submit/-1", "/1", "run.submit/1/2"]) {
      headers.set("Ado-Schema", bad);
      expect(() => decode(SCHEMAS.SubmitRun, data, headers), bad).toThrow(/is not '<schema>\/<version>'.*expects 'run.submit\/1'/);
    }
    headers.set("Ado-Schema", "run.submit/1");
    expect(decode(SCHEMAS.SubmitRun, data, headers).runId).toBe("r1");
  });
});

describe("consume - batch loop", () => {
  it("dead-letters malformed messages with the reason and keeps handling good ones", async () => {
    const nc = await ts.connect();
    const { jsm, topo } = await provisioned(nc);
    const js = jetstream(nc);
    await jsm.consumers.add(topo.streams.submit.name, actorConsumer("scheduler", topo.subjects.submit));
    const seen: string[] = [];
    const loop = new BatchLoop({
      consumer: await js.consumers.get(topo.streams.submit.name, "scheduler"),
      deadLetters: new DeadLetters({ js, nc, topo, actor: "scheduler", log: silentLogger }),
      schema: SCHEMAS.SubmitRun,
      logger: silentLogger,
      handle: async (batch: Delivery<SubmitRun>[]) => {
        for (const d of batch) seen.push(d.data.runId);
      },
    });
    await loop.start();
    await js.publish(topo.subjects.submit, new Uint8Array([1, 2, 3]));
    await js.publish(topo.subjects.submit, packRaw({ hello: "world" }));
    // A valid payload under a header whose version is not a number.
    const odd = encode(SCHEMAS.SubmitRun, submit("odd-header"));
    odd.headers.set("Ado-Schema", "run.submit/abc");
    await js.publish(topo.subjects.submit, odd.data, { headers: odd.headers });
    const good = encode(SCHEMAS.SubmitRun, submit("good"));
    await js.publish(topo.subjects.submit, good.data, { headers: good.headers });
    await eventually(() => seen.includes("good"), 5_000, "good message");
    await eventually(() => loop.deadLettered === 3, 5_000, "three dead letters");
    expect(seen).toEqual(["good"]);
    const dlq = await js.consumers.get(topo.streams.dlq.name);
    const letters = [];
    for (let i = 0; i < 3; i++) {
      const m = await dlq.next();
      letters.push(decode(SCHEMAS.DeadLetter, m!.data, m!.headers));
      m!.ack();
    }
    const [letter] = letters;
    expect(letter!.subject).toBe(topo.subjects.submit);
    expect(letter!.reason).toMatch(/run.submit/);
    expect([...letter!.payload]).toEqual([1, 2, 3]);
    expect(letters[2]!.reason).toMatch(/header 'run.submit\/abc' is not '<schema>\/<version>'/);
    await loop.stop();
    // Work-queue stream: nothing left behind, nothing redelivered.
    expect((await jsm.streams.info(topo.streams.submit.name)).state.messages).toBe(0);
  });

  it("a malformed message near max_payload is dead-lettered once, truncated with its size and hash, and removed", async () => {
    const nc = await ts.connect();
    const { jsm, topo } = await provisioned(nc);
    const js = jetstream(nc);
    await jsm.consumers.add(topo.streams.submit.name, actorConsumer("scheduler", topo.subjects.submit));
    const loop = new BatchLoop({
      consumer: await js.consumers.get(topo.streams.submit.name, "scheduler"),
      deadLetters: new DeadLetters({ js, nc, topo, actor: "scheduler", log: silentLogger }),
      schema: SCHEMAS.SubmitRun,
      logger: silentLogger,
      handle: async () => undefined,
    });
    await loop.start();
    // As large as the server takes: its record (payload plus reason) cannot fit whole.
    const big = new Uint8Array(nc.info!.max_payload - 200).fill(7);
    await js.publish(topo.subjects.submit, big);
    await eventually(() => loop.deadLettered === 1, 10_000, "the dead letter");
    const dlq = await js.consumers.get(topo.streams.dlq.name);
    // With its headers, as every reader must: a large dead letter is compressed (Ado-Compression).
    const m = (await dlq.next())!;
    const letter = decode(SCHEMAS.DeadLetter, m.data, m.headers);
    expect(letter).toMatchObject({ truncated: true, size: big.length, sha256: createHash("sha256").update(big).digest("hex") });
    expect(letter.payload.length).toBeLessThan(big.length);
    expect([...letter.payload.subarray(0, 4)]).toEqual([7, 7, 7, 7]);
    await eventually(async () => (await jsm.streams.info(topo.streams.submit.name)).state.messages === 0, 5_000, "the original removed");
    await new Promise((r) => setTimeout(r, 1_500));
    expect(loop.deadLettered).toBe(1); // not redelivered and recorded again
    expect((await jsm.streams.info(topo.streams.dlq.name)).state.messages).toBe(1);
    await loop.stop();
  });

  it("holds only what it works on and keeps it alive: a handler slower than the ack wait handles each of many pending messages once", async () => {
    const nc = await ts.connect();
    const { jsm, topo } = await provisioned(nc);
    const js = jetstream(nc);
    await jsm.consumers.add(topo.streams.submit.name, actorConsumer("scheduler", topo.subjects.submit, { ackWaitMs: 1_000 }));
    const total = 16;
    for (let i = 0; i < total; i++) {
      const m = encode(SCHEMAS.SubmitRun, submit(`r${i}`));
      await js.publish(topo.subjects.submit, m.data, { headers: m.headers });
    }
    const seen: string[] = [];
    const pendingAcks: number[] = [];
    const loop = new BatchLoop({
      consumer: await js.consumers.get(topo.streams.submit.name, "scheduler"),
      deadLetters: new DeadLetters({ js, nc, topo, actor: "scheduler", log: silentLogger }),
      schema: SCHEMAS.SubmitRun,
      logger: silentLogger,
      maxBatch: 4,
      handle: async (batch: Delivery<SubmitRun>[]) => {
        for (const d of batch) seen.push(d.data.runId);
        pendingAcks.push((await jsm.consumers.info(topo.streams.submit.name, "scheduler")).num_ack_pending);
        // Half as long again as the ack wait: only in-progress acks keep the batch (and
        // what waits behind it) from being redelivered.
        await new Promise((r) => setTimeout(r, 1_500));
      },
    });
    await loop.start();
    await eventually(() => seen.length >= total, 60_000, "every message handled");
    await new Promise((r) => setTimeout(r, 1_500)); // room for a late redelivery to show
    await loop.stop();
    expect(seen.toSorted()).toEqual(Array.from({ length: total }, (_, i) => `r${i}`).toSorted());
    expect(Math.max(...pendingAcks)).toBeLessThanOrEqual(loop.maxHeld);
    expect(loop.maxHeld).toBe(8);
    // The last batch's acks were sent as it ended, just now; the server applies them shortly.
    await eventually(async () => (await jsm.streams.info(topo.streams.submit.name)).state.messages === 0, 10_000, "every message acked");
  });

  it("redelivers a batch whose handler throws, then succeeds", async () => {
    const nc = await ts.connect();
    const { jsm, topo } = await provisioned(nc);
    const js = jetstream(nc);
    await jsm.consumers.add(topo.streams.submit.name, actorConsumer("scheduler", topo.subjects.submit));
    let calls = 0;
    const loop = new BatchLoop({
      consumer: await js.consumers.get(topo.streams.submit.name, "scheduler"),
      deadLetters: new DeadLetters({ js, nc, topo, actor: "scheduler", log: silentLogger }),
      schema: SCHEMAS.SubmitRun,
      logger: silentLogger,
      handle: async () => {
        if (++calls === 1) throw new Error("transient");
      },
    });
    await loop.start();
    const m = encode(SCHEMAS.SubmitRun, submit("x"));
    await js.publish(topo.subjects.submit, m.data, { headers: m.headers });
    await eventually(() => loop.handled === 1, 5_000, "retried handling");
    expect(calls).toBe(2);
    await loop.stop();
  });
});

describe("lease - leader election on KV", () => {
  it("one holder at a time; renewal; takeover only after expiry; release hands over", async () => {
    const nc = await ts.connect();
    const { kv } = await provisioned(nc);
    const clock = new ManualClock();
    const a = new LeaderLease({ kv: kv.leases, name: "duty", holder: "a", ttlMs: 1_000, clock });
    const b = new LeaderLease({ kv: kv.leases, name: "duty", holder: "b", ttlMs: 1_000, clock });
    const both = await Promise.all([a.tryAcquire(), b.tryAcquire()]);
    expect(both.filter(Boolean)).toHaveLength(1);
    const [leader, standby] = both[0] ? [a, b] : [b, a];
    clock.advance(600);
    expect(await leader.tryAcquire()).toBe(true); // renewal
    clock.advance(600);
    expect(await standby.tryAcquire()).toBe(false); // renewed, so not lapsed yet
    const term = leader.term!;
    clock.advance(1_100);
    expect(leader.isLeader).toBe(false);
    expect(await standby.tryAcquire()).toBe(true); // lapsed: taken over
    expect(standby.term).toBe(term + 1);
    expect(await leader.tryAcquire()).toBe(false);
    await standby.release();
    expect(await leader.tryAcquire()).toBe(true);
  });
});

describe("actor - lifecycle and discovery", () => {
  class Probe extends Actor {
    drained = 0;
    protected async onStart() {}
    protected async onDrain() {
      this.drained++;
    }
    override stats() {
      return { drained: this.drained };
    }
  }

  it("registers with the services framework, answers status, and closes idempotently", async () => {
    const nc = await ts.connect();
    const { kv, topo } = await provisioned(nc);
    const actor = await new Probe("scheduler", "s1", { nc, topo, kv, logger: silentLogger }).start();
    expect(actor.state).toBe("running");
    const client = new Svcm(nc).client();
    const pings: unknown[] = [];
    for await (const p of await client.ping(topo.service("scheduler"))) pings.push(p);
    expect(pings).toHaveLength(1);
    const stats: unknown[] = [];
    for await (const st of await client.stats(topo.service("scheduler"))) stats.push(st.endpoints?.[0]?.data);
    expect(stats).toEqual([{ state: "running", drained: 0 }]);
    const reply = await nc.request(`${topo.prefix}.svc.scheduler.s1.status`);
    expect(JSON.parse(reply.string())).toEqual({ state: "running", drained: 0 });
    const [p1, p2] = [actor.close(), actor.close()];
    expect(p1).toBe(p2);
    await p1;
    expect(actor.state).toBe("stopped");
    expect(actor.drained).toBe(1);
    await expect(actor.start()).rejects.toThrow(/it is stopped/);
  });
});
