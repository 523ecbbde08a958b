import type { JetStreamManager } from "@nats-io/jetstream";
import { decode } from "../../runtime/codec.js";
import { SCHEMAS, type TaskWork } from "../../runtime/messages.js";
import type { Topology } from "../../runtime/topology.js";

/** What a lost attempt spent: USD, and tokens (prompt plus output). */
export interface LostSpend {
  usd: number;
  tokens: number;
}

/**
 * What the agent of a lost attempt had spent when its worker died: its last
 * `agent.usage` event (they are cumulative), read by one stream get (last by subject),
 * so the result the stealer reports for it carries its cost like any other. Nothing when
 * the last usage event on the task's subject is another attempt's (this one reported
 * none), or when the read fails (the scheduler also counts what it saw the attempt report).
 */
export async function lostSpend(jsm: JetStreamManager, topo: Topology, work: Pick<TaskWork, "runId" | "taskId" | "attempt">): Promise<LostSpend | undefined> {
  try {
    // STREAM.MSG.GET with last_by_subj; the client types it for direct get only.
    const query = { last_by_subj: topo.subjects.taskUsage(work.runId, work.taskId) } as Parameters<JetStreamManager["streams"]["getMessage"]>[1];
    const m = await jsm.streams.getMessage(topo.streams.events.name, query);
    if (!m) return undefined;
    const e = decode(SCHEMAS.AdoEvent, m.data, m.header);
    if (e.type !== "agent.usage" || e.attempt !== work.attempt) return undefined;
    return { usd: e.costUsd, tokens: e.inputTokens + e.outputTokens };
  } catch {
    return undefined;
  }
}
