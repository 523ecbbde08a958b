import { hostname } from "node:os";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Actor } from "../runtime/actor.js";
import { PRIORITIES } from "../runtime/graph.js";
import type { Metrics } from "../runtime/metrics.js";
import { consumers, type StreamKey, type Topology } from "../runtime/topology.js";
import { Balancer } from "./balancer/balancer.js";
import type { Worker } from "./worker/worker.js";

/**
 * The scrape-time metrics of a stack (metrics.ts): what its balancer holds and the ready
 * backlog, its workers' load, and the JetStream consumers its actors read. Read when
 * Prometheus scrapes, from the actors' memory and the server: nothing here runs per task.
 *
 * Each process exports the consumers of the actors it runs, so a sum over processes
 * counts each once; the ready backlog (`ado_task_queue_length`) is read from the server
 * and is the same figure from every balancer replica (aggregate it with `max`).
 */
export async function addStackMetrics(m: Metrics, nc: NatsConnection, topo: Topology, actors: readonly Actor[], workers: readonly Worker[]): Promise<() => void> {
  const jsm = await jetstreamManager(nc);
  const host = hostname();
  const balancers = actors.filter((a): a is Balancer => a instanceof Balancer);
  const read = readConsumers(actors, workers);
  return m.onScrape(async () => {
    m.consumerPending.reset();
    m.consumerAckPending.reset();
    m.consumerRedelivered.reset();
    const infos = new Map<string, { pending: number; ackPending: number } | undefined>();
    await Promise.all(
      read.map(async ({ stream, consumer }) => {
        const info = await consumerInfo(jsm, topo.streams[stream].name, consumer);
        infos.set(`${stream}/${consumer}`, info && { pending: info.num_pending, ackPending: info.num_ack_pending });
        if (!info) return;
        const labels = { stream: topo.streams[stream].name, consumer };
        m.consumerPending.set(labels, info.num_pending);
        m.consumerAckPending.set(labels, info.num_ack_pending);
        m.consumerRedelivered.set(labels, info.num_redelivered);
      }),
    );
    if (balancers.length) {
      // Held messages are delivered and unacked (ack pending): both are the backlog.
      let total = 0;
      for (const p of PRIORITIES) {
        const info = infos.get(`ready/${consumers.readyLevel(p)}`);
        const n = info ? info.pending + info.ackPending : 0;
        m.readyBacklog.set({ priority: p }, n);
        total += n;
      }
      m.queueLength.set(total);
      m.readyHeld.reset();
      const held = new Map<string, { priority: string; placement: string; count: number }>();
      for (const b of balancers) {
        for (const row of b.heldCounts()) {
          const key = `${row.priority}\u0000${row.placement}`;
          const seen = held.get(key);
          if (seen) seen.count += row.count;
          else held.set(key, { ...row });
        }
      }
      for (const r of held.values()) m.readyHeld.set({ priority: r.priority, placement: r.placement }, r.count);
    }
    m.workerRunning.reset();
    m.workerQueued.reset();
    m.workerSlots.reset();
    m.workerUtilization.reset();
    for (const w of workers) {
      if (w.state !== "running" && w.state !== "draining") continue;
      const s = w.stats();
      const labels = { worker: w.id, host };
      const queued = infos.get(`work/${consumers.work(w.id)}`)?.pending ?? s.pending;
      m.workerRunning.set(labels, s.running);
      m.workerQueued.set(labels, queued);
      m.workerSlots.set(labels, s.slots);
      m.workerUtilization.set(labels, s.slots > 0 ? s.running / s.slots : 0);
    }
  });
}

/** The durable consumers the given actors read. */
function readConsumers(actors: readonly Actor[], workers: readonly Worker[]): { stream: StreamKey; consumer: string }[] {
  const out: { stream: StreamKey; consumer: string }[] = [];
  const kinds = new Set(actors.map((a) => a.kind));
  if (kinds.has("scheduler")) out.push({ stream: "submit", consumer: consumers.submit }, { stream: "results", consumer: consumers.results });
  if (kinds.has("balancer")) for (const p of PRIORITIES) out.push({ stream: "ready", consumer: consumers.readyLevel(p) });
  if (kinds.has("merger")) out.push({ stream: "merge", consumer: consumers.merge });
  for (const w of workers) out.push({ stream: "work", consumer: consumers.work(w.id) });
  return out;
}

/** A consumer's info, or undefined when it is not there (yet, or any more). */
async function consumerInfo(jsm: JetStreamManager, stream: string, consumer: string) {
  try {
    return await jsm.consumers.info(stream, consumer);
  } catch {
    return undefined;
  }
}
