import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import { encode } from "./codec.js";
import { SCHEMAS, type AdoEvent } from "./messages.js";
import type { Topology } from "./topology.js";
import { msgIds } from "./names.js";

/**
 * Publishes an event to its per-run, per-task subject (kept in the events stream). Every
 * event but output carries a Nats-Msg-Id naming what it is about, so an actor that
 * replays a message after a crash does not write the event twice. An event that can
 * happen again for the same run and attempt passes a `msgID` of its own.
 */
export function publishEvent(js: JetStreamClient, topo: Topology, event: AdoEvent, msgID?: string): Promise<PubAck> {
  const { data, headers } = encode(SCHEMAS.AdoEvent, event);
  const taskId = "taskId" in event ? event.taskId : undefined;
  const attempt = "attempt" in event ? event.attempt : 0;
  const subject = topo.subjects.event({ type: event.type, runId: event.runId, taskId });
  if (event.type === "task.output") return js.publish(subject, data, { headers });
  // Agents' events recur within an attempt: each is named by its place in it.
  const seq = "seq" in event && taskId !== undefined ? event.seq : undefined;
  const id = msgID ?? (seq !== undefined ? msgIds.agentEvent({ runId: event.runId, taskId: taskId!, attempt }, event.type, seq) : msgIds.event(event, taskId, attempt));
  return js.publish(subject, data, { headers, msgID: id });
}
