import type { WorkerView } from "./registry.js";

/** Load of a worker as a fraction of its slots: what it runs or holds, over what it can run. */
export function loadOf(w: WorkerView): number {
  const busy = Math.max(w.outstanding.size, w.record.running + w.record.pending);
  return busy / w.record.slots;
}

/**
 * Least-loaded choice among the workers that can run the agent. Ties go to the worker
 * with more slots, then by id, so the choice is deterministic for a given registry.
 */
export function leastLoaded(workers: readonly WorkerView[], agent: string): WorkerView | undefined {
  let best: WorkerView | undefined;
  let bestLoad = Infinity;
  for (const w of workers) {
    if (!w.record.agents.includes(agent)) continue;
    const load = loadOf(w);
    if (
      load < bestLoad ||
      (load === bestLoad && best && (w.record.slots > best.record.slots || (w.record.slots === best.record.slots && w.record.workerId < best.record.workerId)))
    ) {
      best = w;
      bestLoad = load;
    }
  }
  return best;
}
