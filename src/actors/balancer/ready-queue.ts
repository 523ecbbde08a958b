import { PRIORITIES, type Priority } from "../../runtime/graph.js";

/** A ready task held by the balancer until a worker has room for it. */
export interface ReadyEntry<T = unknown> {
  key: string;
  priority: Priority;
  /**
   * When the task's run was submitted (epoch ms): within a level the older run goes
   * first, so a newer run never starves an older one however long its paths. Absent: 0.
   */
  runAt?: number;
  /** Longest remaining dependency path through this task; longer goes first within a level and run. */
  rank: number;
  /** Arrival order (stream sequence): first in, first out among equals. */
  seq: number;
  /** Not to be dispatched before this time (retry backoff), epoch ms. */
  notBefore: number;
  item: T;
}

const LEVEL = new Map(PRIORITIES.map((p, i) => [p, i]));

/**
 * Orders ready tasks: priority level, then the older run, then (within a run) the longest
 * remaining path, then arrival. Ranks are compared within a run only: a path length
 * says what to start first for that run's end, not whose run matters more. Ordered by
 * rank across runs, a newer run with long paths kept an older run's tasks waiting for
 * as long as it released long-path tasks.
 */
export function compareReady(a: ReadyEntry, b: ReadyEntry): number {
  return LEVEL.get(a.priority)! - LEVEL.get(b.priority)! || (a.runAt ?? 0) - (b.runAt ?? 0) || b.rank - a.rank || a.seq - b.seq;
}

/**
 * The balancer's queue of ready tasks, in dispatch order. Tasks waiting out a retry
 * backoff sit apart until due. Pure data structure: no I/O, no clock of its own.
 */
export class ReadyQueue<T = unknown> {
  /**
   * Due entries, sorted by compareReady. Removal is lazy: an entry is live only while
   * `live` maps its key to that very entry, so removing costs O(1) and a dispatch pass
   * costs what it visits, not the size of the queue.
   */
  private due: ReadyEntry<T>[] = [];
  private dead = 0;
  /** Entries not yet due, unsorted (few: only retries in backoff). */
  private readonly waiting = new Map<string, ReadyEntry<T>>();
  private readonly live = new Map<string, ReadyEntry<T>>();

  get size(): number {
    return this.live.size;
  }

  has(key: string): boolean {
    return this.live.has(key);
  }

  /** Adds an entry (a key already held is ignored). Returns whether it was added. */
  add(entry: ReadyEntry<T>, now: number): boolean {
    if (this.live.has(entry.key)) return false;
    // Stored as a copy: liveness is identity, and a caller re-adding an entry object it
    // removed must not revive the stale slot that object still occupies.
    const stored = { ...entry };
    this.live.set(stored.key, stored);
    if (stored.notBefore > now) this.waiting.set(stored.key, stored);
    else this.insert(stored);
    return true;
  }

  /** Moves entries whose backoff is over into the due list. */
  promote(now: number): void {
    for (const [key, e] of this.waiting) {
      if (e.notBefore <= now) {
        this.waiting.delete(key);
        this.insert(e);
      }
    }
  }

  /** Earliest time a waiting entry becomes due, if any. */
  nextDue(): number | undefined {
    let min: number | undefined;
    for (const e of this.waiting.values()) if (min === undefined || e.notBefore < min) min = e.notBefore;
    return min;
  }

  /** Due entries in dispatch order. Removing the yielded entry while iterating is safe. */
  *ordered(): Generator<ReadyEntry<T>> {
    const due = this.due;
    for (let i = 0; i < due.length; i++) {
      const e = due[i]!;
      if (this.live.get(e.key) === e) yield e;
    }
  }

  remove(key: string): ReadyEntry<T> | undefined {
    const e = this.live.get(key);
    if (!e) return undefined;
    this.live.delete(key);
    if (this.waiting.delete(key)) return e;
    // Compact once dead entries outnumber live ones: amortized O(1) per removal.
    if (++this.dead > 64 && this.dead > this.due.length / 2) {
      this.due = this.due.filter((d) => this.live.get(d.key) === d);
      this.dead = 0;
    }
    return e;
  }

  /** Every held entry (due and waiting), for in-progress acks. */
  all(): ReadyEntry<T>[] {
    return [...this.live.values()];
  }

  private insert(e: ReadyEntry<T>): void {
    // Binary search for the first element that sorts after e (dead entries keep their
    // place in the order, so the search stays valid).
    let lo = 0;
    let hi = this.due.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareReady(this.due[mid]!, e) <= 0) lo = mid + 1;
      else hi = mid;
    }
    this.due.splice(lo, 0, e);
  }
}
