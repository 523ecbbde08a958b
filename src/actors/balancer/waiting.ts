import { eligible, type Candidate, type Placement } from "./strategy.js";

/**
 * Why a held task cannot be placed on any connected worker, in words a person acts on,
 * and when to say so. Pure: the balancer feeds it its registry and held tasks and
 * publishes `task.waiting` for what `WaitingTracker.observe` returns.
 *
 * Only eligibility counts here, never load: a task waiting for a busy worker that could
 * take it is backpressure, not a problem to report.
 */

/** A held task is reported once it has had no eligible worker for this long. */
export const WAITING_AFTER_MS = 2_000;

/** Lists at most this many names in a reason, then "and N more". */
const LIST_LIMIT = 8;

function list(xs: Iterable<string>): string {
  const all = [...new Set(xs)].sort();
  if (all.length === 0) return "none";
  const shown = all.slice(0, LIST_LIMIT).join(", ");
  return all.length > LIST_LIMIT ? `${shown} and ${all.length - LIST_LIMIT} more` : shown;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** What a reason needs to know about the workers beyond the routing view. */
export interface WorkerCounts {
  /** Workers alive but draining (they take no new work). */
  draining: number;
}

/**
 * Why no connected worker may take a task with this agent and placement, or undefined
 * when one may (whether or not it has a free slot now). `workers` are the live workers
 * that take work (running, heard from within the liveness window).
 */
export function whyUnplaceable(
  taskId: string,
  agent: string,
  placement: Placement,
  workers: readonly Candidate[],
  counts: WorkerCounts = { draining: 0 },
): string | undefined {
  return unplaceable(agent, placement, workers, counts)?.(taskId);
}

/**
 * whyUnplaceable() for every task of one placement: undefined when a worker may take
 * them, else the reason for a given task id. Tasks sharing a placement share the
 * answer, so a check of many held tasks works it out once per placement.
 */
export function unplaceable(
  agent: string,
  placement: Placement,
  workers: readonly Candidate[],
  counts: WorkerCounts = { draining: 0 },
): ((taskId: string) => string) | undefined {
  if (workers.some((w) => eligible(w, agent, placement))) return undefined;
  return (taskId) => reasonFor(taskId, agent, placement, workers, counts);
}

function reasonFor(taskId: string, agent: string, placement: Placement, workers: readonly Candidate[], counts: WorkerCounts): string {
  if (workers.length === 0) {
    const draining = counts.draining ? ` (${plural(counts.draining, "worker is", "workers are")} draining)` : "";
    return `no worker is connected${draining}: start one with 'ado worker' or 'ado up'`;
  }
  const summary = `${plural(workers.length, "worker")}: ${list(workers.map((w) => w.id))}`;
  let pool = workers;
  if (placement.worker !== undefined) {
    pool = workers.filter((w) => w.id === placement.worker);
    if (pool.length === 0) return `'${taskId}' is pinned to worker '${placement.worker}', which is not connected (${summary})`;
  }
  const withAgent = pool.filter((w) => w.agents.includes(agent));
  if (withAgent.length === 0) {
    const whom = placement.worker !== undefined ? `worker '${placement.worker}' (it is pinned there) does not offer` : "no worker offers";
    return `${whom} agent '${agent}' (workers offer: ${list(pool.flatMap((w) => w.agents))})`;
  }
  const missingLabels = placement.labels.filter((l) => !withAgent.some((w) => w.labels.includes(l)));
  const missingCaps = placement.requires.filter((c) => !withAgent.some((w) => w.capabilities.includes(c)));
  const offering = `${plural(withAgent.length, "worker")} with agent '${agent}'`;
  const theirs = `labels: ${list(withAgent.flatMap((w) => w.labels))}; capabilities: ${list(withAgent.flatMap((w) => w.capabilities))}`;
  if (missingLabels.length || missingCaps.length) {
    const wanted = [
      ...(missingLabels.length ? [`${missingLabels.length === 1 ? "label" : "labels"} ${missingLabels.join(", ")}`] : []),
      ...(missingCaps.length ? [`${missingCaps.length === 1 ? "capability" : "capabilities"} ${missingCaps.join(", ")}`] : []),
    ];
    return `no worker can take '${taskId}': none has ${wanted.join(" or ")} (${offering}; ${theirs})`;
  }
  // Each requirement is met somewhere, but never all of them on one worker.
  const needs = [...placement.labels.map((l) => `label ${l}`), ...placement.requires.map((c) => `capability ${c}`)];
  return `no worker can take '${taskId}': none has all of ${needs.join(", ")} (${offering}; ${theirs})`;
}

interface Watch {
  /** Since when the task has had no eligible worker (undefined: it has one now). */
  since?: number;
  /** The reason last announced for this attempt. */
  announced?: string;
  /** The current reason, while it has no eligible worker. */
  reason?: string;
}

/**
 * Tracks held attempts that have no eligible worker. A task is announced once it has
 * had none for `WAITING_AFTER_MS`, and again only when the reason changes (a worker
 * with the agent came, but without the label): `task.started` ends the wait, so no
 * "placed" announcement is needed.
 */
export class WaitingTracker {
  private readonly watches = new Map<string, Watch>();

  constructor(private readonly afterMs = WAITING_AFTER_MS) {}

  /**
   * Notes the current reason (undefined: a worker may take it) for a held attempt.
   * Returns the reason to announce now, if any.
   */
  observe(key: string, reason: string | undefined, now: number): string | undefined {
    let w = this.watches.get(key);
    if (!w) {
      if (reason === undefined) return undefined;
      w = {};
      this.watches.set(key, w);
    }
    if (reason === undefined) {
      w.since = undefined;
      w.reason = undefined;
      return undefined;
    }
    w.since ??= now;
    w.reason = reason;
    if (now - w.since < this.afterMs || w.announced === reason) return undefined;
    w.announced = reason;
    return reason;
  }

  /** Forgets attempts no longer held (placed, cancelled, taken by another replica). */
  retain(held: (key: string) => boolean): void {
    for (const key of this.watches.keys()) if (!held(key)) this.watches.delete(key);
  }

  /** Held attempts without an eligible worker now, with their reason (for status). */
  current(): Array<{ key: string; reason: string; since: number }> {
    const out: Array<{ key: string; reason: string; since: number }> = [];
    for (const [key, w] of this.watches) if (w.reason !== undefined && w.since !== undefined) out.push({ key, reason: w.reason, since: w.since });
    return out;
  }
}

/** A short stable digest of a reason (FNV-1a, hex), for the msg id of its announcement. */
export function digest(text: string): string {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return (h >>> 0).toString(16).padStart(8, "0");
}
