import { JetStreamApiError } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import {
  assessServer,
  DEFAULT_ASSESS,
  describeServerHealth,
  initialServerHealth,
  isStoreFullError,
  nextReport,
  ServerCondition,
  type ProbeResult,
  type ServerHealth,
} from "../../src/runtime/server-health.js";

const T0 = 1_700_000_000_000;

/** A probe that started at `t` and took `ms`. */
const probe = (t: number, ping: boolean, jetstream: ProbeResult["jetstream"], ms = 3_000) => ({ type: "probe" as const, result: { startedAt: T0 + t, at: T0 + t + ms, ping, jetstream } });
const answered = (storageBytes = 1_000, maxStorageBytes = -1) => ({ answered: true as const, storageBytes, maxStorageBytes });
const timedOut = { answered: false as const, timedOut: true, error: "no answer within 3 s" };

/** Feeds observations in order and returns every judgement. */
const run = (...obs: Parameters<typeof assessServer>[1][]) => {
  let h = initialServerHealth(T0);
  return obs.map((o) => (h = assessServer(h, o)));
};

describe("server health - judging what the client sees", () => {
  it("JetStream unanswered while pings answer becomes unresponsive only once it lasts, and ok again when it answers", () => {
    const [a, b, c, d] = run(probe(0, true, timedOut), probe(3_000, true, timedOut), probe(6_000, true, timedOut), probe(9_000, true, answered(), 5));
    // 3 s and 6 s unanswered: a loaded server can be that slow.
    expect(a!.condition).toBe(ServerCondition.ok);
    expect(b!.condition).toBe(ServerCondition.ok);
    // 9 s unanswered (since the first request was sent): unresponsive.
    expect(c).toMatchObject({ condition: ServerCondition.unresponsive, since: T0 + 9_000 });
    expect(c!.detail).toBe("its JetStream API has not answered for 9 s while the server answers pings");
    expect(d).toMatchObject({ condition: ServerCondition.ok });
    expect(d!.unansweredSince).toBeUndefined();
  });

  it("an answer in between starts the count again", () => {
    const hs = run(probe(0, true, timedOut), probe(3_000, true, answered(), 5), probe(4_000, true, timedOut), probe(7_000, true, timedOut));
    expect(hs.map((h) => h.condition)).toEqual(["ok", "ok", "ok", "ok"]);
    expect(hs[3]!.unansweredSince).toBe(T0 + 4_000);
  });

  it("unanswered pings become unreachable after their own, longer, wait; a shorter outage keeps the last judgement", () => {
    const down = { answered: false as const, timedOut: false, error: "server not answering" };
    const hs = run(probe(0, true, timedOut), probe(3_000, false, down), probe(9_000, false, down, 3_000), probe(13_000, false, down, 1_000));
    expect(hs.slice(0, 3).map((h) => h.condition)).toEqual(["ok", "ok", "ok"]);
    // Pings failed since the probe sent at 3 s; at 14 s that is 11 s.
    expect(hs[3]).toMatchObject({ condition: ServerCondition.unreachable, since: T0 + 14_000 });
    expect(hs[3]!.detail).toBe("no answer to pings for 11 s");
    expect(hs[3]!.unansweredSince).toBeUndefined();

    // Unresponsive, then restarted: the few seconds it is down do not read as "answers again".
    const restart = run(probe(0, true, timedOut), probe(3_000, true, timedOut), probe(6_000, true, timedOut), probe(9_000, false, down, 1_000), probe(11_000, true, answered(), 5));
    expect(restart.map((h) => h.condition)).toEqual(["ok", "ok", ServerCondition.unresponsive, ServerCondition.unresponsive, ServerCondition.ok]);
  });

  it("a write that failed for lack of storage is a full store for a while, and says what failed", () => {
    const err = "insufficient resources";
    const hs = run(probe(0, true, answered(), 5), { type: "store_error", at: T0 + 1_000, error: err }, probe(20_000, true, answered(), 5), probe(31_000, true, answered(), 5));
    expect(hs[1]).toMatchObject({ condition: ServerCondition.storeFull, detail: err, since: T0 + 1_000 });
    expect(hs[2]).toMatchObject({ condition: ServerCondition.storeFull, since: T0 + 1_000 });
    expect(hs[3]!.condition).toBe(ServerCondition.ok);
  });

  it("the account's storage used up against its limit is a full store", () => {
    const [h] = run(probe(0, true, answered(99 * 1024 * 1024, 100 * 1024 * 1024), 5));
    expect(h).toMatchObject({ condition: ServerCondition.storeFull });
    expect(h!.detail).toBe("the account's JetStream storage is used up (99.0 MB of 100.0 MB)");
    // No account limit (-1): nothing to compare with.
    expect(run(probe(0, true, answered(10 ** 12, -1), 5))[0]!.condition).toBe(ServerCondition.ok);
  });

  it("a full store that then stops answering is unresponsive, naming the failed write", () => {
    const hs = run({ type: "store_error", at: T0, error: "no space left on device" }, probe(0, true, timedOut), probe(3_000, true, timedOut), probe(6_000, true, timedOut));
    expect(hs[3]!.condition).toBe(ServerCondition.unresponsive);
    expect(hs[3]!.detail).toContain("a write failed before: no space left on device");
  });

  it("with no waiting (ado status), one unanswered request is enough", () => {
    const h = assessServer(initialServerHealth(T0), probe(0, true, timedOut), { ...DEFAULT_ASSESS, unresponsiveAfterMs: 0 });
    expect(h.condition).toBe(ServerCondition.unresponsive);
  });
});

describe("server health - store-full errors", () => {
  const apiError = (code: number, description: string) => new JetStreamApiError({ code: 503, err_code: code, description });
  it("recognises the server's resource codes and ENOSPC, also as a cause, and nothing else", () => {
    expect(isStoreFullError(apiError(10023, "insufficient resources"))).toBe(true);
    expect(isStoreFullError(apiError(10047, "insufficient storage resources available"))).toBe(true);
    expect(isStoreFullError(apiError(10002, "resource limits exceeded for account"))).toBe(true);
    expect(isStoreFullError(new Error("publish failed", { cause: apiError(10023, "insufficient resources") }))).toBe(true);
    expect(isStoreFullError(apiError(10077, "write /data/jetstream/x/msgs/1.blk: no space left on device"))).toBe(true);
    expect(isStoreFullError(apiError(10059, "stream not found"))).toBe(false);
    expect(isStoreFullError(new Error("timeout"))).toBe(false);
    expect(isStoreFullError("insufficient resources")).toBe(false);
  });
});

describe("server health - what a person reads", () => {
  const unresponsive: ServerHealth = { condition: ServerCondition.unresponsive, since: T0, detail: "its JetStream API has not answered for 9 s while the server answers pings" };
  it("says what is wrong and what to do, naming the store when it is known", () => {
    expect(describeServerHealth(initialServerHealth(T0))).toBeUndefined();
    expect(describeServerHealth(unresponsive, { url: "nats://h:4222", storeDir: "/srv/js" })).toBe(
      "nats-server at nats://h:4222 is not answering JetStream requests, its store is likely full (its JetStream API has not answered for 9 s while the server answers pings): free space on /srv/js and restart nats-server; ado resumes the run",
    );
    expect(describeServerHealth({ ...unresponsive, condition: ServerCondition.storeFull, detail: "insufficient resources" })).toBe(
      "nats-server's JetStream store is full (insufficient resources): free space on the server's JetStream store (its store_dir) and restart nats-server; ado resumes the run",
    );
    // An embedded server ends with the command: restarting it is not the user's to do.
    expect(describeServerHealth(unresponsive, { storeDir: "/r/.git/ado/runs/x/nats", embedded: true, runId: "r1" })).toMatch(
      /free space on \/r\/\.git\/ado\/runs\/x\/nats; this command's embedded server cannot recover by itself: stop it \(Ctrl-C, twice\) and go on with `ado runs resume r1`$/,
    );
    expect(describeServerHealth({ ...unresponsive, condition: ServerCondition.unreachable, detail: "no answer to pings for 12 s" })).toBe(
      "cannot reach nats-server: no answer to pings for 12 s; ado reconnects and goes on when it is back",
    );
  });

  it("a reporter says a condition when it starts, at most every repeatMs while it lasts, and the return once", () => {
    const ok = initialServerHealth(T0);
    let state = { said: ServerCondition.ok } as Parameters<typeof nextReport>[0];
    const lines: Array<[number, string]> = [];
    const feed = (t: number, h: ServerHealth) => {
      const r = nextReport(state, h, T0 + t, 10_000);
      state = r.state;
      if (r.line) lines.push([t, r.line.split(" ").slice(0, 4).join(" ")]);
    };
    feed(0, ok);
    for (let t = 3_000; t <= 27_000; t += 3_000) feed(t, unresponsive);
    feed(30_000, ok);
    feed(33_000, ok);
    expect(lines).toEqual([
      [3_000, "nats-server is not answering"],
      [15_000, "nats-server is not answering"],
      [27_000, "nats-server is not answering"],
      [30_000, "nats-server answers again; the"],
    ]);
  });
});
