import { PRIORITIES, type Priority } from "../../runtime/graph.js";

/** A ready task held by the balancer until a worker has room for it. */
export interface ReadyEntry<T = unknown> {
  key: string;
  priority: Priority;
  /** Longest remaining dependency path through this task; longer goes first within a level. */
  rank: number;
  /** Arrival order (stream sequence): first in, first out among equals. */
  seq: number;
  /** Not to be dispatched before this time (retry backoff), epoch ms. */
  notBefore: number;
  item: T;
}

const LEVEL = new Map(PRIORITIES.map((p, i) => [p, i]));

/** Orders ready tasks: priority level, then longest remaining path, then arrival. */
export function compareReady(a: ReadyEntry, b: ReadyEntry): number {
  return LEVEL.get(a.priority)! - LEVEL.get(b.priority)! || b.rank - a.rank || a.seq - b.seq;
}

/**
 * The balancer's queue of ready tasks, in dispatch order. Tasks waiting out a retry
 * backoff sit apart until due. Pure data structure: no I/O, no clock of its own.
 */
export class ReadyQueue<T = unknown> {
  /** Due entries, kept sorted by compareReady. */
  private readonly due: ReadyEntry<T>[] = [];
  /** Entries not yet due, unsorted (few: only retries in backoff). */
  private readonly waiting = new Map<string, ReadyEntry<T>>();
  private readonly keys = new Set<string>();

  get size(): number {
    return this.keys.size;
  }

  has(key: string): boolean {
    return this.keys.has(key);
  }

  /** Adds an entry (a redelivered key already held is ignored). Returns whether it was added. */
  add(entry: ReadyEntry<T>, now: number): boolean {
    if (this.keys.has(entry.key)) return false;
    this.keys.add(entry.key);
    if (entry.notBefore > now) this.waiting.set(entry.key, entry);
    else this.insert(entry);
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

  /** Due entries in dispatch order. Safe to remove the yielded entry while iterating. */
  *ordered(): Generator<ReadyEntry<T>> {
    for (const e of [...this.due]) if (this.keys.has(e.key)) yield e;
  }

  remove(key: string): ReadyEntry<T> | undefined {
    if (!this.keys.delete(key)) return undefined;
    const waiting = this.waiting.get(key);
    if (waiting) {
      this.waiting.delete(key);
      return waiting;
    }
    const i = this.due.findIndex((e) => e.key === key);
    return i >= 0 ? this.due.splice(i, 1)[0] : undefined;
  }

  /** Every held entry (due and waiting), for in-progress acks. */
  all(): ReadyEntry<T>[] {
    return [...this.due, ...this.waiting.values()];
  }

  private insert(e: ReadyEntry<T>): void {
    // Binary search for the first element that sorts after e.
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
