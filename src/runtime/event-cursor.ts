import { createHash } from "node:crypto";

/** How many of the latest events a cursor remembers (sequence and digest) to tell a rewritten stream from the one it read. */
export const EVENT_CURSOR_WINDOW = 20_000;

/**
 * Where a watch of a run's events stands in the events stream, so that it can start a
 * fresh consumer after a reset, a stall or a server restart without showing an event
 * twice or missing one (pure: the watch does the I/O).
 *
 * Normally a resumed watch starts after the last sequence it read. A nats-server that
 * restarts on a store whose last writes failed can recover the stream shorter: the
 * events written after the restart reuse the sequences of the lost ones, and a watch
 * that starts after its old last sequence would skip them (or wait forever for a
 * sequence that now lies in the future). So the cursor remembers each recent event's
 * digest by sequence; `resumeFrom` is told whether the stream still holds the event read
 * at the last sequence (`holdsLast`), and when it does not, the stream was rewritten:
 * the watch goes back to the oldest sequence remembered and shows only events whose
 * content it has not shown (an event published again after the restart, identical to
 * one already shown, is the same event).
 */
export class EventCursor {
  /** Sequence -> digest of the latest events read, oldest first. */
  private readonly window = new Map<number, string>();
  /** Digests of events shown before the stream was found rewritten (none until then). */
  private before?: Set<string>;
  /** The last sequence read (0: none yet). */
  lastSeq = 0;
  /** Times the stream was found rewritten under the watch. */
  rewrites = 0;

  constructor(private readonly size = EVENT_CURSOR_WINDOW) {}

  /**
   * Takes note of a delivered message; false when it is one the watch has already
   * shown (at or below the last sequence read, or, after a rewrite, the same content).
   */
  accept(seq: number, data: Uint8Array): boolean {
    if (seq <= this.lastSeq) return false;
    const digest = digestOf(data);
    this.lastSeq = seq;
    this.window.set(seq, digest);
    if (this.window.size > this.size) this.window.delete(this.window.keys().next().value!);
    return !this.before?.has(digest);
  }

  /** Whether `data` is what the cursor read at its last sequence. */
  holdsLast(data: Uint8Array | undefined): boolean {
    return data !== undefined && this.window.get(this.lastSeq) === digestOf(data);
  }

  /**
   * The sequence a fresh consumer starts at, given whether the stream still holds the
   * event read at `lastSeq` (see `holdsLast`). Undefined when nothing was read yet: the
   * watch's own start applies. A stream that no longer holds it was rewritten: start
   * again at the oldest sequence remembered.
   */
  resumeFrom(holdsLast: boolean): number | undefined {
    if (this.lastSeq === 0) return undefined;
    if (holdsLast) return this.lastSeq + 1;
    this.rewrites++;
    const oldest = this.window.keys().next().value ?? this.lastSeq + 1;
    const before = this.before ?? new Set<string>();
    for (const d of this.window.values()) before.add(d);
    // Bounded like the window: the oldest digests go first.
    while (before.size > 2 * this.size) before.delete(before.values().next().value!);
    this.before = before;
    this.window.clear();
    this.lastSeq = oldest - 1;
    return oldest;
  }
}

function digestOf(data: Uint8Array): string {
  return createHash("sha1").update(data).digest("base64");
}
