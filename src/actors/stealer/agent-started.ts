import type { JetStreamManager } from "@nats-io/jetstream";
import { decode } from "../../runtime/codec.js";
import { SCHEMAS, type TaskWork } from "../../runtime/messages.js";
import type { Topology } from "../../runtime/topology.js";

/**
 * Whether the agent of a lost attempt had started. A worker publishes `task.started`
 * (and waits until it is stored) just before it runs the agent, so the last message on
 * the task's started-event subject says it: an event of this attempt (or a later one)
 * means the agent may have run; none means the attempt was lost while it was claimed,
 * its worktree made, its files written. Read by one stream get (last by subject): no
 * write per task. When the read fails, the answer is the safe one: started (the lost
 * attempt then counts as an interruption, as every lost attempt did before); so for a
 * variant of a best-of-N task, unless no attempt of the task started at all.
 */
export async function agentStarted(jsm: JetStreamManager, topo: Topology, work: Pick<TaskWork, "runId" | "taskId" | "attempt" | "variant">): Promise<boolean> {
  const subject = topo.subjects.event({ type: "task.started", runId: work.runId, taskId: work.taskId });
  try {
    // STREAM.MSG.GET with last_by_subj; the client types it for direct get only.
    const query = { last_by_subj: subject } as Parameters<JetStreamManager["streams"]["getMessage"]>[1];
    const m = await jsm.streams.getMessage(topo.streams.events.name, query);
    if (!m) return false; // none on the subject: no attempt of the task ever started
    const event = decode(SCHEMAS.AdoEvent, m.data, m.header);
    // A best-of-N variant shares the subject with its task's other variants, which start
    // at the same time in any order: another's event says nothing of this one, so the safe answer.
    return event.type === "task.started" && (event.attempt >= work.attempt || work.variant !== undefined);
  } catch {
    return true;
  }
}
