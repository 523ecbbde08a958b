/**
 * A run as a graph, for the dashboard's graph view: each task's layer (its depth: the
 * longest chain of `needs` above it) and the run's critical path (the chain of tasks
 * whose durations add up to the most). Pure: tasks in, figures out; the feed sends them
 * and the page only draws.
 *
 * A task's duration is what it took (finished), what it has taken so far (running: at
 * least the estimate, since it is not done), or the estimate (not started). The
 * estimate is the median duration of the run's finished tasks, or `fallbackMs` before
 * any finished: the path is then simply the longest chain. Tasks that ended without
 * running (skipped, cancelled before starting) weigh nothing.
 */

/** What the graph view needs of a task. */
export interface GraphTask {
  id: string;
  needs: readonly string[];
  status: string;
  startedAt?: string;
  finishedAt?: string;
}

/** The longest chain by duration, from a root to the task that ends it. */
export interface CriticalPath {
  /** Task ids, first to last. */
  ids: string[];
  /** Its duration: the sum of the tasks' durations (some estimated). */
  ms: number;
  /** Tasks on it whose duration is an estimate (not started, or running shorter than the estimate). */
  estimated: number;
  /** The estimate used for a task without a duration of its own. */
  estimateMs: number;
}

const ENDED_WITHOUT_RUNNING = new Set(["skipped", "cancelled"]);
/** A task in these has no duration of its own yet (a retry's times are its last attempt's). */
const WAITING_OR_RUNNING = new Set(["pending", "queued", "running"]);

/**
 * Each task's depth: 0 for a task that needs nothing, else one more than its deepest
 * need. A need that is not in the list counts as met (a run seen from its middle); a
 * cycle (not possible in a validated graph) is cut where it is found, so this never loops.
 */
export function graphDepths(tasks: readonly GraphTask[]): Map<string, number> {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const depth = new Map<string, number>();
  const onStack = new Set<string>();
  // Iterative, so a chain of 10,000 tasks does not overflow the stack.
  for (const root of tasks) {
    if (depth.has(root.id)) continue;
    const stack: { id: string; next: number }[] = [{ id: root.id, next: 0 }];
    onStack.add(root.id);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const needs = byId.get(top.id)!.needs;
      if (top.next < needs.length) {
        const n = needs[top.next++]!;
        if (byId.has(n) && !depth.has(n) && !onStack.has(n)) {
          onStack.add(n);
          stack.push({ id: n, next: 0 });
        }
        continue;
      }
      let d = 0;
      for (const n of needs) {
        const dn = depth.get(n);
        if (dn !== undefined) d = Math.max(d, dn + 1);
      }
      depth.set(top.id, d);
      onStack.delete(top.id);
      stack.pop();
    }
  }
  return depth;
}

/** The median duration of the finished tasks that ran, or undefined when none did. */
export function medianDuration(tasks: readonly GraphTask[]): number | undefined {
  const ms = tasks.filter((t) => t.startedAt && t.finishedAt && !WAITING_OR_RUNNING.has(t.status)).map((t) => Math.max(0, Date.parse(t.finishedAt!) - Date.parse(t.startedAt!)));
  if (ms.length === 0) return undefined;
  ms.sort((a, b) => a - b);
  const mid = ms.length >> 1;
  return ms.length % 2 ? ms[mid]! : Math.round((ms[mid - 1]! + ms[mid]!) / 2);
}

/** The run's critical path at `now` (epoch ms); empty for a run without tasks. */
export function criticalPath(tasks: readonly GraphTask[], now: number, fallbackMs = 1_000): CriticalPath {
  const estimateMs = medianDuration(tasks) ?? fallbackMs;
  const depths = graphDepths(tasks);
  // Dependencies before dependents: by depth (a need is always shallower).
  const order = [...tasks].sort((a, b) => depths.get(a.id)! - depths.get(b.id)!);
  const best = new Map<string, { ms: number; estimated: number; from?: string }>();
  let end: string | undefined;
  for (const t of order) {
    const own = weight(t, now, estimateMs);
    let from: string | undefined;
    let acc = { ms: 0, estimated: 0 };
    for (const n of t.needs) {
      const b = best.get(n);
      // A longer chain wins; on a tie, the one with fewer estimates (more of it is known).
      if (b && (from === undefined || b.ms > acc.ms || (b.ms === acc.ms && b.estimated < acc.estimated))) {
        acc = b;
        from = n;
      }
    }
    const mine = { ms: acc.ms + own.ms, estimated: acc.estimated + (own.estimated ? 1 : 0), ...(from !== undefined ? { from } : {}) };
    best.set(t.id, mine);
    const e = end === undefined ? undefined : best.get(end)!;
    if (!e || mine.ms > e.ms || (mine.ms === e.ms && mine.estimated < e.estimated)) end = t.id;
  }
  const ids: string[] = [];
  for (let id = end; id !== undefined; id = best.get(id)!.from) ids.push(id);
  ids.reverse();
  const last = end === undefined ? undefined : best.get(end);
  return { ids, ms: last?.ms ?? 0, estimated: last?.estimated ?? 0, estimateMs };
}

function weight(t: GraphTask, now: number, estimateMs: number): { ms: number; estimated: boolean } {
  // Waiting to run (a retry too, whatever its last attempt took): the estimate.
  if (t.status === "pending" || t.status === "queued" || !t.startedAt) return ENDED_WITHOUT_RUNNING.has(t.status) ? { ms: 0, estimated: false } : { ms: estimateMs, estimated: true };
  const start = Date.parse(t.startedAt);
  if (t.status !== "running" && t.finishedAt) return { ms: Math.max(0, Date.parse(t.finishedAt) - start), estimated: false };
  const so = Math.max(0, now - start);
  return so >= estimateMs ? { ms: so, estimated: false } : { ms: estimateMs, estimated: true };
}
