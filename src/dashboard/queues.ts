import { jetstreamManager } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { errorMessage } from "../runtime/errors.js";
import { PRIORITIES } from "../runtime/graph.js";
import { consumers, type Topology } from "../runtime/topology.js";
import { readWorkers } from "../runtime/workers-view.js";

/**
 * The queues view: the ready work by priority (the balancer's consumers on the ready
 * stream: what it has not fetched yet, and what it holds), by placement and by provider
 * (each balancer replica's stats, the ones the scaler reads), and the work waiting on
 * each worker (the work stream, as `ado workers list` counts it).
 */

/** One provider as the balancers see it (their shared KV state). */
export interface ProviderQueue {
  name: string;
  circuit: string;
  running: number;
  concurrent?: number;
  perMinute?: number;
  until?: string;
}

/** Held work of one placement (an agent, labels, capabilities, a pinned worker). */
export interface PlacementQueue {
  agent: string;
  labels: string[];
  requires: string[];
  worker?: string;
  count: number;
}

export interface QueuesView {
  /** Per priority: in the ready stream not fetched yet (`waiting`), and delivered to a balancer that holds it (`held`). */
  ready: { priority: string; waiting: number; held: number }[];
  workers: { id: string; state: string; slots: number; running: number; queued: number }[];
  placements: PlacementQueue[];
  providers: ProviderQueue[];
  /** Balancer replicas that answered; held attempts no worker may take, and why (the first few). */
  balancers: number;
  unplaceable: { attempt: string; reason: string; since: string }[];
  problems: string[];
}

/** What one balancer replica's stats say (actors' `stats()`, the balancer's fields this view reads). */
export interface BalancerStats {
  backlog?: PlacementQueue[];
  providers?: Record<string, { circuit?: string; running?: number; concurrent?: number; perMinute?: number; until?: string }>;
  waitingReasons?: { attempt: string; reason: string; since: string }[];
}

/**
 * Several balancer replicas' stats as one: held work adds up per placement; a provider's
 * state is shared (KV), so each replica reports the same circuit and its own running
 * count, which add up.
 */
export function mergeBalancerStats(replicas: readonly BalancerStats[]): Pick<QueuesView, "placements" | "providers" | "unplaceable"> {
  const placements = new Map<string, PlacementQueue>();
  const providers = new Map<string, ProviderQueue>();
  const unplaceable: QueuesView["unplaceable"] = [];
  for (const r of replicas) {
    for (const b of r.backlog ?? []) {
      const key = JSON.stringify([b.agent, b.labels, b.requires, b.worker ?? ""]);
      const seen = placements.get(key);
      if (seen) seen.count += b.count;
      else placements.set(key, { agent: b.agent, labels: [...b.labels], requires: [...b.requires], ...(b.worker ? { worker: b.worker } : {}), count: b.count });
    }
    for (const [name, p] of Object.entries(r.providers ?? {})) {
      const seen = providers.get(name);
      if (seen) seen.running += p.running ?? 0;
      else
        providers.set(name, {
          name,
          circuit: p.circuit ?? "closed",
          running: p.running ?? 0,
          ...(p.concurrent !== undefined ? { concurrent: p.concurrent } : {}),
          ...(p.perMinute !== undefined ? { perMinute: p.perMinute } : {}),
          ...(p.until ? { until: p.until } : {}),
        });
    }
    unplaceable.push(...(r.waitingReasons ?? []));
  }
  return {
    placements: [...placements.values()].sort((a, b) => b.count - a.count),
    providers: [...providers.values()].sort((a, b) => a.name.localeCompare(b.name)),
    unplaceable: unplaceable.slice(0, 20),
  };
}

/** How long the balancers get to answer (the scaler's figures: a view must not hang on a missing replica). */
const STATS_WAIT_MS = 1_000;
const STATS_STALL_MS = 250;

export async function readQueues(nc: NatsConnection, topo: Topology, heartbeatMs: number): Promise<QueuesView> {
  const problems: string[] = [];
  const jsm = await jetstreamManager(nc);
  const ready = await Promise.all(
    PRIORITIES.map(async (priority) => {
      const info = await jsm.consumers.info(topo.streams.ready.name, consumers.readyLevel(priority)).catch(() => undefined);
      return { priority, waiting: info?.num_pending ?? 0, held: info?.num_ack_pending ?? 0 };
    }),
  );
  const { rows, problems: workerProblems } = await readWorkers(nc, topo, heartbeatMs);
  problems.push(...workerProblems);
  const replicas: BalancerStats[] = [];
  try {
    const client = new Svcm(nc).client({ maxWait: STATS_WAIT_MS, strategy: "stall", stall: STATS_STALL_MS });
    for await (const st of await client.stats(topo.service("balancer"))) replicas.push((st.endpoints?.[0]?.data ?? {}) as BalancerStats);
  } catch (err) {
    problems.push(`no balancer answered (${errorMessage(err)}): placements and providers are not shown`);
  }
  return {
    ready,
    workers: rows.map((r) => ({ id: r.id, state: r.state, slots: r.slots, running: r.running, queued: r.queued })),
    ...mergeBalancerStats(replicas),
    balancers: replicas.length,
    problems,
  };
}
