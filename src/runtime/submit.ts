/**
 * Publishing a run's submission, as every submitter does it: AdoClient (`ado run`, over
 * JetStream) and the API's `runs.submit`. One path, so both move long prompts to the
 * object store, refuse a submission the server would not take in one message with the
 * same sentence, and deduplicate by the same message id.
 */
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import { encode } from "./codec.js";
import { GraphError } from "./errors.js";
import type { Graph } from "./graph.js";
import { SCHEMAS, type SubmitRun } from "./messages.js";
import { msgIds } from "./names.js";
import { offloadPrompts, type PayloadStore } from "./payloads.js";
import type { Topology } from "./topology.js";

/** A submission before its prompts are moved out: the graph already validated. */
export type Submission = Omit<SubmitRun, "type" | "graph"> & { graph: Graph };

/**
 * Publishes a run to the submit stream and returns the stream's acknowledgement (the run
 * is durably accepted then; the scheduler decides on it next). `msgID` defaults to the
 * run id: a retried submission is deduplicated (`duplicate` in the ack). Throws
 * GraphError when the graph, with every long prompt moved out, is still over the
 * server's max payload.
 */
export async function publishSubmission(js: JetStreamClient, topo: Topology, payloads: PayloadStore, submission: Submission, opts: { msgID?: string; maxPayload?: number } = {}): Promise<PubAck> {
  // Prompts too long for a message go to the object store (the task keeps their beginning).
  const graph = await offloadPrompts(submission.graph, payloads);
  const { data, headers } = encode(SCHEMAS.SubmitRun, { ...submission, type: "run.submit", graph });
  if (data.length > payloads.maxInline) {
    throw new GraphError(
      `the run's graph is ${(data.length / 1024 / 1024).toFixed(1)} MB compressed, with every long prompt moved out, more than the server takes in one message ` +
        `(max_payload ${opts.maxPayload ?? "?"} bytes): split it into several runs, or raise max_payload in the server's config`,
    );
  }
  return js.publish(topo.subjects.submit, data, { headers, msgID: opts.msgID ?? msgIds.submit(submission.runId), timeout: 10_000 });
}
