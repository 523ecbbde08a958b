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
  return new Unplaceable(workers, counts).explain(agent, placement)?.(taskId);
}

/** Stands for the task id in a reason worked out for a whole placement (ids never hold it). */
const TASK_MARK = "\u0000";

interface AgentPool {
  workers: readonly Candidate[];
  labels: ReadonlySet<string>;
  capabilities: ReadonlySet<string>;
  /** "N workers with agent 'x'; labels: ...; capabilities: ..." */
  summary: string;
}

/**
 * whyUnplaceable() for many held tasks at once, against one view of the workers (one
 * balancer check). Tasks of one placement share the answer, and what a reason says
 * about the workers (their agents, labels, capabilities) is listed once per agent:
 * worked out per task, 3,000 held tasks that fit nowhere took 3 s a check with 1,000
 * workers.
 */
export class Unplaceable {
  private readonly byPlacement = new Map<string, ((taskId: string) => string) | undefined>();
  private readonly pools = new Map<string, AgentPool>();
  private everyAgent?: string;
  private everyWorker?: string;

  constructor(
    private readonly workers: readonly Candidate[],
    private readonly counts: WorkerCounts = { draining: 0 },
  ) {}

  /**
   * Undefined when some worker may take tasks of this agent and placement; else the
   * reason for a given task id. `key` (a placementKey) caches the answer.
   */
  explain(agent: string, placement: Placement, key?: string): ((taskId: string) => string) | undefined {
    if (key !== undefined && this.byPlacement.has(key)) return this.byPlacement.get(key);
    let answer: ((taskId: string) => string) | undefined;
    if (!this.workers.some((w) => eligible(w, agent, placement))) {
      const text = this.reason(agent, placement);
      const parts = text.split(TASK_MARK);
      answer = parts.length === 1 ? () => text : (taskId) => parts.join(taskId);
    }
    if (key !== undefined) this.byPlacement.set(key, answer);
    return answer;
  }

  private pool(agent: string): AgentPool {
    let pool = this.pools.get(agent);
    if (!pool) {
      const workers = this.workers.filter((w) => w.agents.includes(agent));
      pool = this.describe(workers, agent);
      this.pools.set(agent, pool);
    }
    return pool;
  }

  private describe(workers: readonly Candidate[], agent: string): AgentPool {
    const labels = new Set(workers.flatMap((w) => w.labels));
    const capabilities = new Set(workers.flatMap((w) => w.capabilities));
    const summary = `${plural(workers.length, "worker")} with agent '${agent}'; labels: ${list(labels)}; capabilities: ${list(capabilities)}`;
    return { workers, labels, capabilities, summary };
  }

  private reason(agent: string, placement: Placement): string {
    const workers = this.workers;
    if (workers.length === 0) {
      const draining = this.counts.draining ? ` (${plural(this.counts.draining, "worker is", "workers are")} draining)` : "";
      return `no worker is connected${draining}: start one with 'ado worker' or 'ado up'`;
    }
    let pool: AgentPool;
    if (placement.worker !== undefined) {
      const pinned = workers.filter((w) => w.id === placement.worker);
      if (pinned.length === 0) {
        this.everyWorker ??= `${plural(workers.length, "worker")}: ${list(workers.map((w) => w.id))}`;
        return `'${TASK_MARK}' is pinned to worker '${placement.worker}', which is not connected (${this.everyWorker})`;
      }
      if (!pinned[0]!.agents.includes(agent)) {
        return `worker '${placement.worker}' (it is pinned there) does not offer agent '${agent}' (workers offer: ${list(pinned.flatMap((w) => w.agents))})`;
      }
      pool = this.describe(pinned, agent);
    } else {
      pool = this.pool(agent);
      if (pool.workers.length === 0) {
        this.everyAgent ??= list(workers.flatMap((w) => w.agents));
        return `no worker offers agent '${agent}' (workers offer: ${this.everyAgent})`;
      }
    }
    const missingLabels = placement.labels.filter((l) => !pool.labels.has(l));
    const missingCaps = placement.requires.filter((c) => !pool.capabilities.has(c));
    if (missingLabels.length || missingCaps.length) {
      const wanted = [
        ...(missingLabels.length ? [`${missingLabels.length === 1 ? "label" : "labels"} ${missingLabels.join(", ")}`] : []),
        ...(missingCaps.length ? [`${missingCaps.length === 1 ? "capability" : "capabilities"} ${missingCaps.join(", ")}`] : []),
      ];
      return `no worker can take '${TASK_MARK}': none has ${wanted.join(" or ")} (${pool.summary})`;
    }
    // Each requirement is met somewhere, but never all of them on one worker.
    const needs = [...placement.labels.map((l) => `label ${l}`), ...placement.requires.map((c) => `capability ${c}`)];
    return `no worker can take '${TASK_MARK}': none has all of ${needs.join(", ")} (${pool.summary})`;
  }
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
