/**
 * Where a task may run, as one rule shared by the balancer (which places ready tasks)
 * and the stealer (which moves queued work to a worker that could have taken it): the
 * worker offers the task's agent and carries every label and capability it asks for,
 * and is the pinned worker when the task names one. A leaf module.
 */

/** Where a task may run: required worker labels and capabilities, or one pinned worker. */
export interface Placement {
  labels: readonly string[];
  requires: readonly string[];
  /** Affinity: only this worker. */
  worker?: string;
}

/** What the rule needs of a worker. */
export interface PlacementTarget {
  id: string;
  agents: readonly string[];
  labels: readonly string[];
  capabilities: readonly string[];
}

const hasAll = (have: readonly string[], want: readonly string[]) => want.every((x) => have.includes(x));

/** Whether a worker may take the task at all (ignoring its current load). */
export function eligible(w: PlacementTarget, agent: string, p: Placement): boolean {
  if (p.worker !== undefined && w.id !== p.worker) return false;
  return w.agents.includes(agent) && hasAll(w.labels, p.labels) && hasAll(w.capabilities, p.requires);
}
