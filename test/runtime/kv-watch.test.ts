import { randomBytes } from "node:crypto";
import { Kvm } from "@nats-io/kv";
import { describe, expect, it } from "vitest";
import { encodeValue } from "../../src/runtime/codec.js";
import { currentEntries, entriesOf, KvWatch, listKeys } from "../../src/runtime/kv-watch.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS } from "../../src/runtime/messages.js";
import { eventually, useTestServer } from "../helpers/nats.js";

const ts = useTestServer("ado-kv-watch-");

const backlog = (open: number) => encodeValue(SCHEMAS.RunBacklog, { runId: "r1", open, updatedAt: new Date().toISOString() });

describe("KvWatch - a restart after a reconnect that fails", () => {
  // In the disk-full chaos run the restarts after reconnects timed out (JetStream not
  // answering) and were only logged: the watch stayed closed until some later reconnect,
  // and a connection that does not reconnect again never watches again. The server here is
  // real and so is the reconnect; only the restart's first request is made to time out,
  // as JetStream's did (a frozen server cannot be timed to fail just that one request).
  it("is tried again until it opens: values put afterwards are seen", async () => {
    const nc = await ts.connect("kv-watch-restart");
    const bucket = `kvw-${randomBytes(4).toString("hex")}`;
    const kv = await new Kvm(nc).create(bucket);
    let failNext = 0;
    const flaky = new Proxy(kv, {
      get(target, prop, receiver) {
        if (prop !== "watch") return Reflect.get(target, prop, receiver) as unknown;
        return (...args: Parameters<typeof kv.watch>) => {
          if (failNext > 0) {
            failNext--;
            return Promise.reject(new Error("timeout"));
          }
          return target.watch(...args);
        };
      },
    });
    const seen: number[] = [];
    const watch = new KvWatch({ kv: flaky, nc, log: silentLogger, schema: SCHEMAS.RunBacklog, what: "test value", onPut: (_k, v) => seen.push(v.open) });
    await watch.start();
    try {
      await kv.put("k", backlog(1));
      await eventually(() => seen.includes(1), 10_000, "the first value");
      failNext = 1;
      await nc.reconnect();
      await eventually(() => failNext === 0, 20_000, "the restart tried");
      await kv.put("k", backlog(2));
      await eventually(() => seen.includes(2), 20_000, "the value put after the failed restart");
      expect(seen).toContain(2);
    } finally {
      watch.stop();
    }
  }, 60_000);
});

describe("currentEntries / listKeys - a listing that ends", () => {
  // `kv.keys()` ends on a zero pending count or 5 s of quiet; in CI a CLI listing the
  // scaler's bucket (its state rewritten every 250 ms) printed nothing for 60 s. These
  // listings read the stream's subjects, then get each key: no pending count involved.
  // (A first version that stopped at the stream's last sequence missed a key rewritten
  // between that reading and its consumer's creation: the busy test below caught it.)
  it("an empty bucket lists nothing; deleted and purged keys are left out; each key once with its newest value", async () => {
    const nc = await ts.connect("kv-list");
    const kv = await new Kvm(nc).create(`kvl-${randomBytes(4).toString("hex")}`, { history: 1 });
    try {
      expect(await listKeys(kv)).toEqual([]);
      await kv.put("a", backlog(1));
      await kv.put("b", backlog(1));
      await kv.put("gone", backlog(1));
      await kv.put("purged", backlog(1));
      await kv.delete("gone");
      await kv.purge("purged");
      await kv.put("a", backlog(2));
      expect((await listKeys(kv)).sort()).toEqual(["a", "b"]);
      const entries = await currentEntries(kv);
      expect(entries.map((e) => [e.key, e.revision]).sort()).toEqual([
        ["a", (await kv.get("a"))!.revision],
        ["b", (await kv.get("b"))!.revision],
      ]);
      // Only deletes left: the stream still holds their markers; the listing is empty.
      await kv.delete("a");
      await kv.delete("b");
      expect(await listKeys(kv)).toEqual([]);
    } finally {
      await nc.close();
    }
  });

  it("entriesOf: the named keys' current entries, missing and deleted ones left out, more keys than lanes", async () => {
    const nc = await ts.connect("kv-entries-of");
    const kv = await new Kvm(nc).create(`kvl-${randomBytes(4).toString("hex")}`, { history: 1 });
    try {
      for (let i = 0; i < 50; i++) await kv.put(`r.t${i}`, backlog(i));
      await kv.delete("r.t3");
      await kv.purge("r.t4");
      const keys = [...Array.from({ length: 50 }, (_, i) => `r.t${i}`), "r.never"];
      const entries = await entriesOf(kv, keys, 4);
      expect(entries.map((e) => e.key).sort()).toEqual(keys.filter((k) => k !== "r.t3" && k !== "r.t4" && k !== "r.never").sort());
      expect(await entriesOf(kv, [])).toEqual([]);
    } finally {
      await nc.close();
    }
  });

  it("ends while another client rewrites a key every few milliseconds, with every key that existed", async () => {
    const nc = await ts.connect("kv-list-busy");
    const kv = await new Kvm(nc).create(`kvl-${randomBytes(4).toString("hex")}`, { history: 1 });
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        await kv.put("state", backlog(i));
        await new Promise((r) => setTimeout(r, 3));
      }
    })();
    try {
      for (let i = 0; i < 20; i++) await kv.put(`k${i}`, backlog(i));
      for (let round = 0; round < 50; round++) {
        const keys = await listKeys(kv);
        expect(new Set(keys).size).toBe(keys.length);
        expect(keys.sort()).toEqual([...Array.from({ length: 20 }, (_, i) => `k${i}`), "state"].sort());
      }
    } finally {
      writing = false;
      await writer;
      await nc.close();
    }
  });
});
