/** The stealer reads what a lost attempt's agent had spent from the task's last `agent.usage` event. */
import { describe, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import { lostResult } from "../../src/actors/stealer/decide.js";
import { lostSpend } from "../../src/actors/stealer/lost-spend.js";
import { publishEvent } from "../../src/runtime/events.js";
import type { AdoEvent, TaskWork } from "../../src/runtime/messages.js";
import { openJetStream } from "../../src/runtime/topology.js";
import { provisioned, useTestServer } from "../helpers/nats.js";

const ts = useTestServer();

const usage = (taskId: string, attempt: number, seq: number, costUsd: number, tokens: number): AdoEvent => ({
  type: "agent.usage",
  runId: "r1",
  taskId,
  attempt,
  at: new Date().toISOString(),
  seq,
  inputTokens: tokens,
  outputTokens: 100,
  cachedTokens: 0,
  cacheWriteTokens: 0,
  costUsd,
  costSource: "reported",
});

describe("stealer - what the lost attempt had spent", () => {
  it("the attempt's latest usage (cumulative); nothing when the latest is another attempt's or there is none", async () => {
    const nc = await ts.connect("lost-spend");
    try {
      const { topo } = await provisioned(nc);
      const jsm = await openJetStream(nc);
      const js = jetstream(nc);
      await publishEvent(js, topo, usage("t", 2, 0, 0.1, 1_000));
      await publishEvent(js, topo, usage("t", 2, 5, 0.37, 9_000));
      // Another task's usage and another kind of event of this one change nothing.
      await publishEvent(js, topo, usage("u", 2, 0, 5, 1));
      await publishEvent(js, topo, { type: "task.queued", runId: "r1", taskId: "t", attempt: 2, at: new Date().toISOString() });
      expect(await lostSpend(jsm, topo, { runId: "r1", taskId: "t", attempt: 2 })).toEqual({ usd: 0.37, tokens: 9_100 });
      expect(await lostSpend(jsm, topo, { runId: "r1", taskId: "t", attempt: 3 })).toBeUndefined();
      expect(await lostSpend(jsm, topo, { runId: "r1", taskId: "v", attempt: 1 })).toBeUndefined();
      // The result the stealer reports for it carries that spend.
      const work = { runId: "r1", taskId: "t", attempt: 2 } as TaskWork;
      expect(lostResult(work, "w1", "2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z", "died", true, { spent: { usd: 0.37, tokens: 9_100 } })).toMatchObject({ costUsd: 0.37, tokens: 9_100 });
      expect(lostResult(work, "w1", "2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z", "died", true)).toMatchObject({ costUsd: 0 });
    } finally {
      await nc.close();
    }
  });
});
