import type { AttemptClaim, CheckpointRecord, TaskResult, TaskWork, WorkerRecord } from "../../runtime/messages.js";
import { attemptKey, msgIds } from "../../runtime/names.js";
import { livenessWindowMs } from "../../runtime/topology.js";

/**
 * The stealer's decisions, pure: who is dead (by the stealer's own clock), and what to do
 * with each message a dead worker left on its work subject. The actor (stealer.ts) feeds
 * them what it observes and carries the decisions out.
 */

/** Why a worker is suspected dead. */
export const DeathReason = {
  /** No new registry record for 3 heartbeats, by the stealer's clock. */
  silent: "silent",
  /** Its registry record was deleted (a graceful stop deletes it last; anything it left is recovered). */
  deleted: "deleted",
} as const;
export type DeathReason = (typeof DeathReason)[keyof typeof DeathReason];

export interface Suspect {
  workerId: string;
  reason: DeathReason;
  /** How long since the stealer last saw a new record from it (ms, its own clock). */
  silentMs: number;
  /** The last record seen (absent when the stealer only saw the deletion). */
  record?: WorkerRecord;
  /** KV revision of that record: the registry key is deleted only if it is still this one. */
  revision: number;
}

interface Sighting {
  record?: WorkerRecord;
  revision: number;
  /** Local time the last new record arrived. */
  seenAt: number;
  deleted: boolean;
  /** Local time from which the worker is suspected, unless something new arrives first. */
  checkAfter: number;
}

/**
 * Which workers look dead, judged only by when records arrive here: a worker's clock is
 * never compared with ours, so hosts need not be in sync. A worker is suspected when no
 * new registry record (a new KV revision; a replay after a watch restart proves nothing)
 * came for 3 heartbeats, or when its record was deleted. A suspect is only a suspect:
 * the actor asks it (services ping) before stealing, and `alive()` puts the check off
 * again. That covers a draining worker, which stops writing records but still answers
 * until it has stopped.
 */
export class Liveness {
  private readonly workers = new Map<string, Sighting>();

  constructor(private readonly heartbeatMs: number) {}

  /** Silence after which a worker is suspected. */
  get limitMs(): number {
    return livenessWindowMs(this.heartbeatMs);
  }

  /**
   * A PUT from the workers bucket. Returns whether it was a new record (a sign of life).
   * It puts the check off 3 heartbeats, never less than a grace already granted
   * (refreshAll): a worker's first record after a server restart must not cut short the
   * time its connection gets to settle (it did: a running worker was declared dead 1.6 s
   * after the server came back, and its attempts ran twice).
   */
  put(workerId: string, record: WorkerRecord, revision: number, now: number): boolean {
    const w = this.workers.get(workerId);
    if (w && revision <= w.revision) return false;
    const checkAfter = Math.max(now + this.limitMs, w && !w.deleted ? w.checkAfter : 0);
    this.workers.set(workerId, { record, revision, seenAt: now, deleted: false, checkAfter });
    return true;
  }

  /** A DEL or PURGE of a worker's record: suspected at once (anything it left is recovered). */
  deleted(workerId: string, revision: number, now: number): void {
    const w = this.workers.get(workerId);
    if (w && revision <= w.revision) return;
    this.workers.set(workerId, { record: w?.record, revision, seenAt: w?.seenAt ?? now, deleted: true, checkAfter: now });
  }

  /** The worker answered: check again after 3 heartbeats (one, if its record is gone: it is stopping). */
  alive(workerId: string, now: number): void {
    const w = this.workers.get(workerId);
    if (w) w.checkAfter = now + (w.deleted ? this.heartbeatMs : this.limitMs);
  }

  /**
   * Nothing is suspected for `graceMs` (default 3 heartbeats) from now: after the
   * stealer's own connection was down, silence says nothing about the workers, which
   * may be still reconnecting (each with its own backoff).
   */
  refreshAll(now: number, graceMs = this.limitMs): void {
    for (const w of this.workers.values()) w.checkAfter = Math.max(w.checkAfter, now + graceMs);
  }

  /** Workers suspected dead now, the longest silent first. */
  suspects(now: number): Suspect[] {
    const out: Suspect[] = [];
    for (const [workerId, w] of this.workers) {
      if (w.checkAfter > now) continue;
      out.push({ workerId, reason: w.deleted ? "deleted" : "silent", silentMs: now - w.seenAt, record: w.record, revision: w.revision });
    }
    return out.sort((a, b) => b.silentMs - a.silentMs);
  }

  /** Workers whose last record is live (not deleted). */
  known(): string[] {
    return [...this.workers].filter(([, w]) => !w.deleted).map(([id]) => id);
  }

  get(workerId: string): Readonly<Sighting> | undefined {
    return this.workers.get(workerId);
  }

  /** Recovered: forgotten, so its own deletion of the record is not news. */
  forget(workerId: string): void {
    this.workers.delete(workerId);
  }
}

/** A message found on a dead worker's subject, with the claim of its attempt (null: none). */
export interface LeftMessage {
  seq: number;
  /** Undefined when it did not decode. */
  work?: TaskWork;
  error?: string;
  claim?: AttemptClaim | null;
}

export type RecoveryAction =
  /** It was running there: report it `interrupted`, so the scheduler issues the next attempt. */
  | { kind: "lost"; seq: number; key: string; work: TaskWork; claimedAt: string; resultId: string }
  /** It never started: back to the ready queue, without its worker. */
  | { kind: "requeue"; seq: number; key: string; work: TaskWork; msgId: string }
  /** Another worker claimed it (it runs there), or a second copy of an attempt handled above. */
  | { kind: "drop"; seq: number; key: string; why: string }
  /** Unreadable: to the dead-letter stream, untouched. */
  | { kind: "deadLetter"; seq: number; why: string };

/**
 * What to do with every message a dead worker left on its work subject. The worker acks
 * its work message only after its result is stored, so a message still there whose
 * attempt the dead worker claimed is an attempt that never reported: it was running.
 * No claim: it never started. The plan depends only on the messages and claims, so a
 * successor that finds the same messages (its predecessor died half-way) decides the
 * same, with the same msg ids.
 */
export function planRecovery(deadWorkerId: string, left: readonly LeftMessage[]): RecoveryAction[] {
  const seen = new Set<string>();
  return left.map((m): RecoveryAction => {
    if (!m.work) return { kind: "deadLetter", seq: m.seq, why: m.error ?? "undecodable work message" };
    const key = attemptKey(m.work);
    if (seen.has(key)) return { kind: "drop", seq: m.seq, key, why: "a second copy of an attempt already handled" };
    seen.add(key);
    if (m.claim && m.claim.workerId !== deadWorkerId) {
      return { kind: "drop", seq: m.seq, key, why: `attempt claimed by worker ${m.claim.workerId}, which runs it` };
    }
    if (m.claim) return { kind: "lost", seq: m.seq, key, work: m.work, claimedAt: m.claim.claimedAt, resultId: msgIds.lost(m.work) };
    return { kind: "requeue", seq: m.seq, key, work: m.work, msgId: msgIds.requeue(m.work, deadWorkerId, m.seq) };
  });
}

/**
 * The result a worker would have sent had it been stopped rather than killed: failed,
 * `interrupted`, retryable. The scheduler then issues the next attempt without using up
 * the retry budget (run-state.ts applyTaskResult), and ignores it if it already settled
 * the attempt (a result the worker did send gets there first).
 */
export function lostResult(
  work: TaskWork,
  deadWorkerId: string,
  claimedAt: string,
  now: string,
  why: string,
  agentStarted = true,
  left: {
    /** Its last checkpoint (only the attempt's own counts): the next attempt starts from its commit, in its session. */
    checkpoint?: Pick<CheckpointRecord, "attempt" | "commit" | "sessionId">;
    /** What its agent reported it had spent (its last `agent.usage` event); absent: nothing reported. */
    spent?: { usd: number; tokens: number };
  } = {},
): TaskResult {
  const { spent } = left;
  const cp = agentStarted && left.checkpoint?.attempt === work.attempt ? left.checkpoint : undefined;
  return {
    type: "task.result",
    runId: work.runId,
    taskId: work.taskId,
    attempt: work.attempt,
    workerId: deadWorkerId,
    status: "failed",
    // agentStarted: false (its agent had not started) makes the loss free for the task.
    failure: {
      kind: "interrupted",
      retryable: true,
      message: `worker ${deadWorkerId} ${why}: attempt ${work.attempt} was lost with it${agentStarted ? "" : " before its agent started"}`,
      ...(agentStarted ? {} : { agentStarted: false }),
    },
    files: [],
    startedAt: claimedAt,
    finishedAt: now,
    outputTail: "",
    summary: "",
    costUsd: spent?.usd ?? 0,
    ...(spent && spent.tokens > 0 ? { tokens: spent.tokens } : {}),
    ...(cp ? { commit: cp.commit, ...(cp.sessionId ? { sessionId: cp.sessionId } : {}) } : {}),
  };
}

/** Why, in words, for results, events and logs. */
export function describeDeath(s: Pick<Suspect, "reason" | "silentMs">): string {
  return s.reason === "deleted" ? "stopped (its registry record was deleted) and left work behind" : `died (no heartbeat for ${(s.silentMs / 1_000).toFixed(1)} s)`;
}
