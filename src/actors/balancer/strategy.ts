import type { Strategy } from "../../runtime/graph.js";

export type { Strategy };

import { eligible, type Placement } from "../../runtime/placement.js";
export { eligible, type Placement };

/** What a routing decision needs to know about a worker. */
export interface Candidate {
  id: string;
  slots: number;
  /** Tasks assigned and not finished. */
  busy: number;
  agents: readonly string[];
  labels: readonly string[];
  capabilities: readonly string[];
  /** `subscription` workers cost nothing extra per task; `api` ones cost `costPerTask`. */
  accessMode: "subscription" | "api" | "local";
  costPerTask: number;
}

const load = (w: Candidate) => w.busy / w.slots;

/** Lower is better; ties broken by id so a decision is deterministic for a given registry. */
function best<C extends Candidate>(ws: C[], score: (w: C) => number[]): C | undefined {
  let pick: C | undefined;
  let pickScore: number[] = [];
  for (const w of ws) {
    const s = score(w);
    let cmp = 0;
    for (let i = 0; i < s.length && cmp === 0; i++) cmp = s[i]! - pickScore[i]!;
    if (!pick || cmp < 0 || (cmp === 0 && w.id < pick.id)) {
      pick = w;
      pickScore = s;
    }
  }
  return pick;
}

/**
 * A key naming everything that decides which workers may take a task: agent, labels,
 * capabilities and affinity. Two tasks with the same key have the same eligible workers,
 * so when one finds no free worker in a dispatch pass, neither can the other (capacity
 * only shrinks within a pass). Labels and capabilities are sets, so they are sorted.
 * Computed once per held task, not per pass.
 */
export function placementKey(agent: string, p: Placement): string {
  const set = (xs: readonly string[]) => (xs.length < 2 ? xs : [...xs].sort());
  // JSON keeps the parts apart whatever characters an agent or worker name holds.
  return JSON.stringify([agent, set(p.labels), set(p.requires), p.worker ?? null]);
}

/**
 * Picks a worker for one task, among those eligible with a free slot. Pure apart from
 * the round-robin turns and the random source, both held here and injectable.
 */
export class Router {
  /**
   * round_robin: the turn (a counter) at which each worker was last picked. The free
   * eligible worker picked longest ago goes next, ties by id. This rotates within
   * whatever set of workers a task may use, however placements interleave: a cursor
   * shared by every set (what this replaced) indexed each set by the other sets' turns,
   * so alternating placements starved half of each set. It also needs no sort: one
   * pass over the free workers.
   */
  private readonly lastPicked = new Map<string, number>();
  private turn = 0;

  constructor(private readonly random: () => number = Math.random) {}

  choose<C extends Candidate>(strategy: Strategy, workers: readonly C[], agent: string, placement: Placement): C | undefined {
    const free: C[] = [];
    for (const w of workers) if (w.busy < w.slots && eligible(w, agent, placement)) free.push(w);
    if (free.length === 0) return undefined;
    switch (strategy) {
      case "least_loaded":
        return best(free, (w) => [load(w), -w.slots]);
      case "round_robin":
        return this.nextTurn(free, workers);
      case "random":
        return free[Math.floor(this.random() * free.length)];
      case "capability_match":
        // Best fit: the fewest capabilities beyond what the task needs keeps the
        // specialised workers free for the tasks that need them.
        return best(free, (w) => [w.capabilities.length - placement.requires.length, load(w)]);
      case "cost_optimized":
        return best(free, (w) => [w.accessMode === "api" ? 1 : 0, w.accessMode === "api" ? w.costPerTask : 0, load(w)]);
    }
  }

  /** The free worker picked longest ago (never picked counts as longest), ties by id. */
  private nextTurn<C extends Candidate>(free: C[], all: readonly C[]): C {
    let pick = free[0]!;
    let pickTurn = this.lastPicked.get(pick.id) ?? 0;
    for (let i = 1; i < free.length; i++) {
      const w = free[i]!;
      const t = this.lastPicked.get(w.id) ?? 0;
      if (t < pickTurn || (t === pickTurn && w.id < pick.id)) {
        pick = w;
        pickTurn = t;
      }
    }
    this.lastPicked.set(pick.id, ++this.turn);
    // Workers come and go (a restarted worker may get a new id): forget the ones no longer
    // offered once they outnumber the live ones, so the map stays bounded. Amortized O(1).
    if (this.lastPicked.size > 2 * all.length + 1_024) {
      const live = new Set(all.map((w) => w.id));
      for (const id of this.lastPicked.keys()) if (!live.has(id)) this.lastPicked.delete(id);
    }
    return pick;
  }
}
