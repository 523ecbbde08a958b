import type { KV } from "@nats-io/kv";
import { z } from "zod";
import { decode, encodeValue } from "./codec.js";
import { systemClock, type Clock } from "./clock.js";
import { errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";

const LeaseRecord = z.object({
  holder: z.string(),
  /** Epoch ms after which anyone may take the lease (KV per-key TTL needs NATS 2.11). */
  expiresAt: z.number(),
  /** Increases on every change of holder; a fencing token for the leader's writes. */
  term: z.number().int(),
});
export type LeaseRecord = z.infer<typeof LeaseRecord>;
/** Schema name and version of a lease value (KV values carry no header). */
export const LEASE = { name: "lease.record", version: 1, schema: LeaseRecord };

export interface LeaseOptions {
  kv: KV;
  /** Duty name: one leader per name, e.g. `stealer`, `timeouts`. */
  name: string;
  /** This replica's id. */
  holder: string;
  ttlMs: number;
  clock?: Clock;
  logger?: Logger;
}

/**
 * The lease time of an actor whose replicas heartbeat every `heartbeatMs`: three
 * heartbeats (the liveness rule), at least a second. A standby takes over within it.
 */
export const leaseTtlFor = (heartbeatMs: number): number => Math.max(1_000, 3 * heartbeatMs);

/**
 * A leader lease on a KV key, held by compare-and-set. Whoever holds an unexpired lease
 * leads; the holder renews before expiry; anyone may take a lapsed lease. Every change
 * goes through the key's revision, so two replicas can never both succeed.
 *
 * Clocks: expiry is judged by each replica's own clock, so hosts must be roughly in
 * sync (well under ttlMs); the `term` lets a duty fence writes of a stale leader.
 */
export class LeaderLease {
  private revision = 0;
  private held?: LeaseRecord;
  private timer?: NodeJS.Timeout;
  private readonly clock: Clock;

  constructor(private readonly o: LeaseOptions) {
    this.clock = o.clock ?? systemClock;
  }

  /** True while this replica holds an unexpired lease (by its own clock). */
  get isLeader(): boolean {
    return !!this.held && this.held.holder === this.o.holder && this.held.expiresAt > this.clock.now();
  }

  get term(): number | undefined {
    return this.isLeader ? this.held!.term : undefined;
  }

  /**
   * One attempt to acquire or renew. Returns whether this replica leads afterwards.
   * Never throws for a lost race; a server error is reported as not leading.
   */
  async tryAcquire(): Promise<boolean> {
    const now = this.clock.now();
    try {
      const entry = await this.o.kv.get(this.o.name);
      if (!entry || entry.operation !== "PUT") {
        const next = { holder: this.o.holder, expiresAt: now + this.o.ttlMs, term: 1 };
        // A deleted key has a revision: update over it so the CAS still holds.
        this.revision = entry
          ? await this.o.kv.update(this.o.name, encodeValue(LEASE, next), entry.revision)
          : await this.o.kv.create(this.o.name, encodeValue(LEASE, next));
        this.held = next;
        return true;
      }
      // An unreadable record (written by something else) is treated as lapsed.
      let rec: LeaseRecord | undefined;
      try {
        rec = decode(LEASE, entry.value);
      } catch {
        rec = undefined;
      }
      const mine = rec?.holder === this.o.holder;
      if (rec && !mine && rec.expiresAt > now) {
        this.held = rec;
        this.revision = entry.revision;
        return false;
      }
      const next = {
        holder: this.o.holder,
        expiresAt: now + this.o.ttlMs,
        term: mine ? rec!.term : (rec?.term ?? 0) + 1,
      };
      this.revision = await this.o.kv.update(this.o.name, encodeValue(LEASE, next), entry.revision);
      if (!mine) this.o.logger?.info({ lease: this.o.name, term: next.term }, "lease taken over");
      this.held = next;
      return true;
    } catch (err) {
      this.o.logger?.debug({ lease: this.o.name, err: errorMessage(err) }, "lease attempt lost");
      this.held = undefined;
      return false;
    }
  }

  /** Gives the lease up (if held) so a standby takes over without waiting for expiry. */
  async release(): Promise<void> {
    this.stop();
    if (!this.isLeader) return;
    const released = { ...this.held!, expiresAt: 0 };
    await this.o.kv.update(this.o.name, encodeValue(LEASE, released), this.revision).catch(() => undefined);
    this.held = undefined;
  }

  /** Tries to acquire/renew every ttl/3; calls onChange when leadership flips. */
  start(onChange?: (leader: boolean) => void): void {
    let was = false;
    const tick = async () => {
      const is = await this.tryAcquire();
      if (is !== was) onChange?.(is);
      was = is;
    };
    void tick();
    this.timer = setInterval(() => void tick(), Math.max(50, Math.floor(this.o.ttlMs / 3)));
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
