import type { ReadyEntry, ReadyQueue } from "./ready-queue.js";
import type { Candidate, Placement, Router, Strategy } from "./strategy.js";

/** What a dispatch pass needs to place one held task. */
export interface Route {
  agent: string;
  placement: Placement;
  strategy: Strategy;
  /** `placementKey(agent, placement)`, computed once when the task is first held. */
  placementKey: string;
}

/** What one pass did, for stats and benchmarks. */
export interface PassResult {
  placed: number;
  /** Router.choose() calls: each scans every worker. */
  chooseCalls: number;
  /** Tasks passed over without a scan: a task with the same placement found no free worker. */
  skipped: number;
}

/**
 * One dispatch pass: walks the due entries of the queue in priority order and places
 * each on a free eligible worker chosen by its strategy, until no slot is free. Pure:
 * the caller's callbacks do the I/O.
 *
 * `routeOf` returns how to place an entry, or undefined to leave it held this pass (it
 * may remove the entry, e.g. a cancelled one). `place` is called after the entry was
 * removed from the queue and the worker's `busy` counted up.
 *
 * A task that fits no free worker does not stop the walk (a lower one may fit another
 * worker), but its placement is remembered: within a pass capacity only shrinks, so any
 * later task with the same placement key cannot fit either and is passed over without
 * scanning the workers again. The order of what is placed is exactly the order without
 * this shortcut; only the cost changes (10,000 held tasks that fit nowhere, 1,000
 * workers: one scan per distinct placement instead of one per task).
 */
export function dispatchPass<T, C extends Candidate>(
  queue: ReadyQueue<T>,
  candidates: C[],
  router: Router,
  routeOf: (entry: ReadyEntry<T>) => Route | undefined,
  place: (entry: ReadyEntry<T>, worker: C) => void,
): PassResult {
  const result: PassResult = { placed: 0, chooseCalls: 0, skipped: 0 };
  let free = 0;
  for (const c of candidates) free += Math.max(0, c.slots - c.busy);
  if (free <= 0) return result;
  const unplaceable = new Set<string>();
  for (const entry of queue.ordered()) {
    const route = routeOf(entry);
    if (!route) continue;
    if (unplaceable.has(route.placementKey)) {
      result.skipped++;
      continue;
    }
    result.chooseCalls++;
    const pick = router.choose(route.strategy, candidates, route.agent, route.placement);
    if (!pick) {
      unplaceable.add(route.placementKey);
      continue;
    }
    queue.remove(entry.key);
    pick.busy++;
    result.placed++;
    place(entry, pick);
    if (--free <= 0) break;
  }
  return result;
}
