/** The stealer reads whether a lost attempt's agent had started from the task's last `task.started` event. */
import { describe, expect, it } from "vitest";
import { agentStarted } from "../../src/actors/stealer/agent-started.js";
import { publishEvent } from "../../src/runtime/events.js";
import { openJetStream } from "../../src/runtime/topology.js";
import { jetstream } from "@nats-io/jetstream";
import { useTestServer, provisioned } from "../helpers/nats.js";

const ts = useTestServer();

describe("stealer - did the lost attempt's agent start", () => {
  it("yes for the attempt whose task.started is stored (or an earlier attempt); no for a later attempt or a task with none", async () => {
    const nc = await ts.connect("agent-started");
    try {
      const { topo } = await provisioned(nc);
      const jsm = await openJetStream(nc);
      const at = new Date().toISOString();
      await publishEvent(jetstream(nc), topo, { type: "task.started", runId: "r1", taskId: "t", attempt: 2, at, workerId: "w1" });
      // Another task's and another kind's events on neighbouring subjects change nothing.
      await publishEvent(jetstream(nc), topo, { type: "task.started", runId: "r1", taskId: "u", attempt: 7, at, workerId: "w1" });
      await publishEvent(jetstream(nc), topo, { type: "task.queued", runId: "r1", taskId: "t", attempt: 3, at });
      expect(await agentStarted(jsm, topo, { runId: "r1", taskId: "t", attempt: 2 })).toBe(true);
      expect(await agentStarted(jsm, topo, { runId: "r1", taskId: "t", attempt: 1 })).toBe(true);
      expect(await agentStarted(jsm, topo, { runId: "r1", taskId: "t", attempt: 3 })).toBe(false);
      expect(await agentStarted(jsm, topo, { runId: "r1", taskId: "v", attempt: 1 })).toBe(false);
      // A best-of-N variant: another variant's later start says nothing of this one (safe answer: started);
      // no start of the task at all still says no.
      expect(await agentStarted(jsm, topo, { runId: "r1", taskId: "t", attempt: 3, variant: { n: 3, of: 3 } })).toBe(true);
      expect(await agentStarted(jsm, topo, { runId: "r1", taskId: "v", attempt: 1, variant: { n: 1, of: 2 } })).toBe(false);
    } finally {
      await nc.close();
    }
  });
});
