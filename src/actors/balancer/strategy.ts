import type { Strategy } from "../../runtime/graph.js";

export type { Strategy };

/** Where a task may run: required worker labels and capabilities, or one pinned worker. */
export interface Placement {
  labels: readonly string[];
  requires: readonly string[];
  /** Affinity: only this worker. */
  worker?: string;
}

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

const hasAll = (have: readonly string[], want: readonly string[]) => want.every((x) => have.includes(x));

/** Whether a worker may take the task at all (ignoring its current load). */
export function eligible(w: Candidate, agent: string, p: Placement): boolean {
  if (p.worker !== undefined && w.id !== p.worker) return false;
  return w.agents.includes(agent) && hasAll(w.labels, p.labels) && hasAll(w.capabilities, p.requires);
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
 * Picks a worker for one task, among those eligible with a free slot. Pure apart from
 * the round-robin cursor and the random source, both held here and injectable.
 */
export class Router {
  private cursor = 0;

  constructor(private readonly random: () => number = Math.random) {}

  choose<C extends Candidate>(strategy: Strategy, workers: Iterable<C>, agent: string, placement: Placement): C | undefined {
    const free: C[] = [];
    for (const w of workers) if (w.busy < w.slots && eligible(w, agent, placement)) free.push(w);
    if (free.length === 0) return undefined;
    switch (strategy) {
      case "least_loaded":
        return best(free, (w) => [load(w), -w.slots]);
      case "round_robin": {
        free.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        return free[this.cursor++ % free.length];
      }
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
}
