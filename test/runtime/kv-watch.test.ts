import { randomBytes } from "node:crypto";
import { Kvm } from "@nats-io/kv";
import { describe, expect, it } from "vitest";
import { encodeValue } from "../../src/runtime/codec.js";
import { KvWatch } from "../../src/runtime/kv-watch.js";
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
