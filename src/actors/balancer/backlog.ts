import type { Placement } from "./strategy.js";

/** Held tasks of one placement, as the balancer reports them in its stats (the scaler reads them). */
export interface PlacementBacklog {
  agent: string;
  labels: readonly string[];
  requires: readonly string[];
  /** Pinned to one worker. */
  worker?: string;
  count: number;
}

/**
 * The held tasks waiting for a worker, counted by placement (agent, labels,
 * capabilities, pinned worker): the scaler grows the pools whose workers would take
 * them. One pass over the held tasks, one map entry per distinct placement key.
 */
export function backlogByPlacement(held: Iterable<{ placementKey: string; agent: string; placement: Placement }>): PlacementBacklog[] {
  const out = new Map<string, PlacementBacklog>();
  for (const h of held) {
    const e = out.get(h.placementKey);
    if (e) {
      e.count++;
      continue;
    }
    const { labels, requires, worker } = h.placement;
    out.set(h.placementKey, { agent: h.agent, labels, requires, ...(worker !== undefined ? { worker } : {}), count: 1 });
  }
  return [...out.values()];
}
