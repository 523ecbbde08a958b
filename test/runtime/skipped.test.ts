import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { connectNats } from "../../src/runtime/connection.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { MOVED_FROM_HEADER, moveSkipped, PAD_HEADER, subjectMatches } from "../../src/runtime/skipped.js";
import { actorConsumer, provision } from "../../src/runtime/topology.js";
import { RestartableNats } from "../helpers/chaos.js";
import { eventually, provisioned, uniqueTopology, useTestServer } from "../helpers/nats.js";

const ts = useTestServer();
/** Past the sweep's settling time: what is found is acted on. */
const later = () => Date.now() + 60_000;
const none = { moved: 0, removed: 0, padded: 0, deferred: 0, tooFarBehind: 0, unaccounted: 0 };

describe("work queues - messages a server restart leaves where their consumer never delivers them", () => {
  it("a consumer's filter is matched as NATS matches it (the by-sequence look judges each message for its consumer)", () => {
    expect(subjectMatches("p.results.*", "p.results.r1")).toBe(true);
    expect(subjectMatches("p.results.*", "p.results.r1.x")).toBe(false);
    expect(subjectMatches("p.results.*", "p.results")).toBe(false);
    expect(subjectMatches("p.evt.>", "p.evt.a.b")).toBe(true);
    expect(subjectMatches("p.evt.>", "p.evt")).toBe(false);
    expect(subjectMatches("p.work.w1", "p.work.w1")).toBe(true);
    expect(subjectMatches("p.work.w1", "p.work.w2")).toBe(false);
  });

  it("restored acked messages (stored before the sweeper lost the server) are removed per consumer subject; outstanding ones and other subjects' are kept", async () => {
    const nc = await ts.connect();
    const { jsm, topo } = await provisioned(nc);
    const js = jetstream(nc);
    // A work-queue stream deletes on ack, so what a crash restores cannot be staged on
    // one: a limits stream keeps acked messages the same way a restored stream does.
    const stream = `${topo.prefix}_STALE`;
    await jsm.streams.add({ name: stream, subjects: [`${topo.prefix}.stale.*`], retention: RetentionPolicy.Limits, storage: StorageType.File });
    await jsm.consumers.add(stream, actorConsumer("reader-a", `${topo.prefix}.stale.a`));
    await jsm.consumers.add(stream, actorConsumer("reader-b", `${topo.prefix}.stale.b`));
    for (const s of ["a", "a", "b", "a", "b"]) await js.publish(`${topo.prefix}.stale.${s}`, new Uint8Array([s.charCodeAt(0)]));
    // reader-a acks its first two; its third stays outstanding. reader-b takes nothing.
    const taken = [];
    for await (const m of await (await js.consumers.get(stream, "reader-a")).fetch({ max_messages: 3, expires: 2_000 })) taken.push(m);
    expect(taken.map((m) => m.seq)).toEqual([1, 2, 4]);
    await taken[0]!.ackAck();
    await taken[1]!.ackAck();
    const left = async () => {
      const subjects = [];
      for (let seq = 1; seq <= 5; seq++) subjects.push(await jsm.streams.getMessage(stream, { seq }).then((m) => m?.subject.split(".").pop() ?? "-", () => "-"));
      return subjects;
    };
    await eventually(async () => (await jsm.consumers.info(stream, "reader-a")).ack_floor.stream_seq >= 2, 5_000, "ack floor past 2");
    const lostAt = Date.now() + 1_000;
    // At or below the floor: acked before the "crash", removed. Message 4 is outstanding
    // (above the floor): kept, and the consumer is looked at again later.
    expect(await moveSkipped(jsm, stream, { restoredBefore: lostAt })).toEqual({ ...none, removed: 2, deferred: 1 });
    expect(await left()).toEqual(["-", "-", "b", "a", "b"]);
    await taken[2]!.ackAck();
    await eventually(async () => (await jsm.consumers.info(stream, "reader-a")).num_ack_pending === 0, 5_000, "nothing outstanding");
    expect(await moveSkipped(jsm, stream, { restoredBefore: lostAt })).toEqual({ ...none, removed: 1 });
    // reader-b's messages 3 and 5 are ahead of it, not skipped: kept.
    expect(await left()).toEqual(["-", "-", "b", "-", "b"]);
    expect(await moveSkipped(jsm, stream, { restoredBefore: lostAt })).toEqual(none);
  });

  it("a skipped message not known to be restored is published again (payload and headers kept, no dedupe id) and its consumer delivers it; a young one waits for the next look", async () => {
    const nc = await ts.connect();
    const { jsm, topo } = await provisioned(nc);
    const js = jetstream(nc);
    const stream = `${topo.prefix}_MOVE`;
    const subject = `${topo.prefix}.move.a`;
    await jsm.streams.add({ name: stream, subjects: [`${topo.prefix}.move.*`], retention: RetentionPolicy.Limits, storage: StorageType.File });
    await jsm.consumers.add(stream, actorConsumer("reader", subject));
    const h = natsHeaders();
    h.set("Ado-Schema", "test/1");
    await js.publish(subject, new Uint8Array([7]), { headers: h, msgID: "once" });
    for await (const m of await (await js.consumers.get(stream, "reader")).fetch({ max_messages: 1, expires: 2_000 })) await m.ackAck();
    await eventually(async () => (await jsm.consumers.info(stream, "reader")).num_ack_pending === 0, 5_000, "nothing outstanding");
    // Just stored: a clustered stream may still be removing it after the ack. Left for later.
    expect(await moveSkipped(jsm, stream)).toEqual({ ...none, deferred: 1, unaccounted: 1 });
    expect(await moveSkipped(jsm, stream, { now: later() })).toEqual({ ...none, moved: 1 });
    const again = await (await js.consumers.get(stream, "reader")).next({ expires: 5_000 });
    expect(again?.seq).toBe(2);
    expect([...(again?.data ?? [])]).toEqual([7]);
    expect(again?.headers?.get("Ado-Schema")).toBe("test/1");
    expect(again?.headers?.get(MOVED_FROM_HEADER)).toBe("1");
    expect(again?.headers?.get("Nats-Msg-Id")).toBe("");
    await again!.ackAck();
    expect((await jsm.streams.info(stream)).state.messages).toBe(1);
  });

  it("a work-queue stream in good order has nothing to do", async () => {
    const nc = await ts.connect();
    const { jsm, topo } = await provisioned(nc);
    const js = jetstream(nc);
    await jsm.consumers.add(topo.streams.submit.name, actorConsumer("scheduler", topo.subjects.submit));
    for (let i = 0; i < 3; i++) await js.publish(topo.subjects.submit, new Uint8Array([i]));
    const m = await (await js.consumers.get(topo.streams.submit.name, "scheduler")).next();
    await m!.ackAck();
    expect(await moveSkipped(jsm, topo.streams.submit.name, { restoredBefore: Date.now() + 1_000, now: later() })).toEqual(none);
    expect((await jsm.streams.info(topo.streams.submit.name)).state.messages).toBe(2);
  });

  it.each([
    ["alone", false],
    ["while others publish", true],
  ])("a stream that came back shorter than its consumer had read (a store that lost its last writes): new messages at reused sequences are delivered, and so is everything after (padded), %s", async (_, busy) => {
    // What a 2.9.10 server restarted after its store filled up did to a run: the stream
    // came back with its last sequence below what its consumer had delivered, the next
    // messages reused those sequences, and the consumer never delivered them (the purge
    // that was here took them for acked ones). Staged by restoring the stream's messages
    // from an older copy of the store while the consumer's state stays the newer one.
    const dir = await mkdtemp(join(tmpdir(), "ado-seq-reuse-"));
    const store = join(dir, "store");
    const nats = await RestartableNats.start(store);
    const conns: NatsConnection[] = [];
    const connect = async () => {
      const nc = await connectNats({ servers: nats.url, name: "seq-reuse", logger: silentLogger });
      conns.push(nc);
      return { js: jetstream(nc), jsm: await jetstreamManager(nc) };
    };
    try {
      const topo = uniqueTopology();
      const stream = topo.streams.merge.name;
      let { js, jsm } = await connect();
      await provision(conns[0]!, topo);
      await jsm.consumers.add(stream, actorConsumer("merger", topo.subjects.mergeAll));
      // Up to n messages, acked, with their payloads: pulls until it has n or `ms` passed (a loaded machine is slow to deliver).
      const take = async (n: number, ms = 10_000) => {
        const got: string[] = [];
        for (const until = Date.now() + ms; got.length < n && Date.now() < until; ) {
          for await (const m of await (await js.consumers.get(stream, "merger")).fetch({ max_messages: n - got.length, expires: 1_500 })) {
            expect(m.headers?.has(PAD_HEADER) ?? false).toBe(false);
            got.push(`${m.seq}:${m.data[0]}`);
            await m.ackAck();
          }
        }
        return got;
      };
      const subject = topo.subjects.merge("r1");
      await js.publish(subject, new Uint8Array([1]));
      expect(await take(1)).toEqual(["1:1"]);
      await nats.keepCopy();
      ({ js, jsm } = await connect());
      // A wider gap when others publish, so the sweep is still padding when they do.
      const lost = busy ? 200 : 6;
      for (let i = 0; i < lost; i++) await js.publish(subject, new Uint8Array([2]));
      expect(await take(lost)).toHaveLength(lost);
      const lostAt = Date.now();
      await nats.restoreMessages(stream);
      ({ js, jsm } = await connect());
      expect((await jsm.streams.info(stream)).state.last_seq).toBe(1);
      // (The consumer's state as the SIGKILLed server had last written it: all of it for 6, some of 200.)
      const passed = (await jsm.consumers.info(stream, "merger")).delivered.stream_seq;
      if (!busy) expect(passed).toBe(7);
      else expect(passed).toBeGreaterThan(3);
      // Two new requests take sequences 2 and 3, which the consumer delivered before: lost to it.
      await js.publish(subject, new Uint8Array([3]));
      await js.publish(subject, new Uint8Array([4]));
      expect(await take(2, 3_000)).toEqual([]);
      if (!busy) {
        // The sweep brings the stream up to the consumer (pads 4-7) and moves the two after it.
        const swept = await moveSkipped(jsm, stream, { restoredBefore: lostAt - 2_000, now: later() });
        expect(swept).toEqual({ ...none, padded: 4, moved: 2 });
        expect(await take(2)).toEqual(["8:3", "9:4"]);
        // What is published next is delivered: its sequence is past the consumer's.
        await js.publish(subject, new Uint8Array([5]));
        expect(await take(1)).toEqual(["10:5"]);
      } else {
        // Others publish while the sweep pads: each pad goes right after the stream's last
        // message (never past the consumer, which would deliver it), and whatever lands at a
        // passed sequence is moved by this look or the next.
        // The consumer pulls all along, as a live one does: a pad past its position would be delivered at once.
        const taking = take(22, 30_000);
        const publishing = (async () => {
          for (let i = 10; i < 30; i++) await js.publish(subject, new Uint8Array([i]));
        })();
        const first = await moveSkipped(jsm, stream, { restoredBefore: lostAt - 2_000, now: later() });
        await publishing;
        expect(first.padded + first.moved).toBeGreaterThan(0);
        await moveSkipped(jsm, stream, { restoredBefore: lostAt - 2_000, now: later() });
        const got = await taking;
        expect(got.map((x) => Number(x.split(":")[1])).sort((a, b) => a - b)).toEqual([3, 4, ...Array.from({ length: 20 }, (_, i) => i + 10)]);
      }
      expect((await jsm.streams.info(stream)).state.messages).toBe(0);
      expect(await moveSkipped(jsm, stream, { restoredBefore: lostAt - 2_000, now: later() })).toEqual(none);
    } finally {
      await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
      await nats.stop(1_000);
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
