import type { JetStreamClient } from "@nats-io/jetstream";
import { encode } from "./codec.js";
import { SCHEMAS, type TaskWork } from "./messages.js";
import type { Topology } from "./topology.js";

/**
 * Puts work that was assigned to a worker back on the ready queue, without its worker, so
 * the balancer places it again: a draining worker's queued work (hand-back), a dead
 * worker's unstarted work (the stealer). `msgID` names this move (see names.ts msgIds):
 * repeating the same move is deduplicated, a new one is not.
 */
export async function requeueWork(js: JetStreamClient, topo: Topology, work: TaskWork, msgID: string): Promise<void> {
  const { workerId: _gone, ...ready } = work;
  const { data, headers } = encode(SCHEMAS.TaskWork, ready);
  await js.publish(topo.subjects.ready(work.priority), data, { headers, msgID });
}
