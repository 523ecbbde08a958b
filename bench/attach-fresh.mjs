// One load of a run's state in a fresh node process, as a new `ado attach` pays it:
// spawned by `bench/attach.ts --fresh N`, never run by hand. Plain JavaScript on the
// compiled code (dist/, what bin/ado.mjs runs), so nothing is compiled on the way.
//
//   node bench/attach-fresh.mjs '<json: { mode, dist, url, prefix, stream, filter, runId, snapshotSeq, lastSeq }>'
//
// mode `load`: the CLI's way (src/cli/live.ts): a client, the run's state from its
//   snapshot and the events after it (runState), timed step by step.
// mode `floor`: the least a reader can do: the raw snapshot value(s) by KV get and the
//   raw events after the snapshot by one consumer, decoding nothing (the sequences are
//   given, not looked up).
// Prints one JSON line: marks in ms since the process started (performance.now()).
import { performance } from "node:perf_hooks";

const started = performance.now();
const o = JSON.parse(process.argv[2] ?? "{}");
const marks = { started: Math.round(started) };
const mark = (k) => (marks[k] = Math.round(performance.now()));
const out = { mode: o.mode, marks };

if (o.mode === "floor") {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstream, DeliverPolicy } = await import("@nats-io/jetstream");
  const { Kvm } = await import("@nats-io/kv");
  mark("imported");
  const nc = await connect({ servers: o.url, name: "bench-attach-floor" });
  mark("connected");
  const kv = await new Kvm(nc).open(`${o.prefix}-snapshots`);
  const head = await kv.get(o.runId);
  let bytes = head?.value.length ?? 0;
  // Parts, when split: as many as the reader finds (the floor does not decode the head to know).
  for (let p = 0; ; p++) {
    const e = await kv.get(`${o.runId}.p${p}`);
    if (!e || e.operation !== "PUT") break;
    bytes += e.value.length;
  }
  mark("snapshot");
  const js = jetstream(nc);
  const consumer = await js.consumers.get(o.stream, {
    filter_subjects: o.filter,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: o.snapshotSeq + 1,
  });
  let read = 0;
  const messages = await consumer.consume({ max_messages: 1_000 });
  for await (const m of messages) {
    read++;
    bytes += m.data.length;
    if (m.seq >= o.lastSeq) break;
  }
  await messages.close().catch(() => undefined);
  mark("deltas");
  out.read = read;
  out.bytes = bytes;
  await nc.close();
} else if (o.mode === "load") {
  const { connectNats } = await import(`${o.dist}/runtime/connection.js`);
  const { topology } = await import(`${o.dist}/runtime/topology.js`);
  const { AdoClient } = await import(`${o.dist}/runtime/client.js`);
  const { runState } = await import(`${o.dist}/runtime/run-load.js`);
  const { silentLogger } = await import(`${o.dist}/runtime/logger.js`);
  mark("imported");
  const nc = await connectNats({ servers: o.url, name: "bench-attach-load", logger: silentLogger });
  mark("connected");
  const client = new AdoClient(nc, topology(o.prefix));
  await client.bucket("snapshots");
  mark("buckets");
  const loaded = await runState(client, o.runId);
  mark("loaded");
  out.from = loaded.from;
  out.read = loaded.read;
  out.ms = loaded.ms;
  await nc.close();
} else {
  throw new Error(`unknown mode '${o.mode}'`);
}
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
