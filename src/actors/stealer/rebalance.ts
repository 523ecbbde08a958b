import { eligible, type Placement, type PlacementTarget } from "../../runtime/placement.js";

/**
 * The stealer's second duty, pure: which work queued on a worker's subject should go
 * back to the ready queue because another worker could start it now. Work lands queued
 * behind a busy worker when several balancer replicas, each knowing only its own
 * assignments, fill the same worker, or when a worker slows down; the balancer then
 * places what is moved on a worker with a free slot.
 */

/** One message waiting on a worker's subject, in subject order. */
export interface QueuedWork {
  seq: number;
  /** The attempt key. */
  key: string;
  agent: string;
  placement: Placement;
  /** Someone claimed the attempt: it is running (or ran), never moved. */
  claimed: boolean;
}

export interface RebalanceWorker extends PlacementTarget {
  slots: number;
  running: number;
  state: "running" | "draining";
  queued: readonly QueuedWork[];
}

export interface Move {
  seq: number;
  key: string;
  from: string;
  /** The worker that made the move worth it (the balancer may pick another free one). */
  to: string;
}

const load = (running: number, queued: number, slots: number) => (running + queued) / slots;

/**
 * Moves, newest queued work first: a message queued on worker F goes back when it
 * cannot start on F now (F's running plus the work ahead of it fill its slots), it is
 * not claimed and not pinned to F, and a running worker T that could take it has a free
 * slot with F's load (running plus queued over slots) above T's by more than
 * `threshold` (0.3: 30%). Each move counts against both sides before the next is
 * weighed, so one pass never over-fills T or empties F below what it can run.
 */
export function planRebalance(workers: readonly RebalanceWorker[], threshold: number): Move[] {
  const st = new Map(workers.map((w) => [w.id, { running: w.running, queued: w.queued.length }]));
  const targets = workers.filter((w) => w.state === "running");
  const moves: Move[] = [];
  const byLoad = [...workers].sort((a, b) => load(b.running, b.queued.length, b.slots) - load(a.running, a.queued.length, a.slots) || a.id.localeCompare(b.id));
  for (const f of byLoad) {
    const fs = st.get(f.id)!;
    // Newest first: what waits longest for F is what another worker gains most from.
    for (let i = f.queued.length - 1; i >= 0; i--) {
      const q = f.queued[i]!;
      // It could start on F now (the work ahead of it and what runs leave a slot free).
      if (fs.running + i < f.slots) break;
      if (q.claimed || q.placement.worker !== undefined) continue;
      const fLoad = load(fs.running, fs.queued, f.slots);
      let best: { w: RebalanceWorker; load: number } | undefined;
      for (const t of targets) {
        if (t.id === f.id) continue;
        const ts = st.get(t.id)!;
        if (ts.running + ts.queued >= t.slots) continue;
        if (!eligible(t, q.agent, q.placement)) continue;
        const tLoad = load(ts.running, ts.queued, t.slots);
        if (fLoad - tLoad <= threshold) continue;
        if (!best || tLoad < best.load || (tLoad === best.load && t.id < best.w.id)) best = { w: t, load: tLoad };
      }
      if (!best) continue;
      moves.push({ seq: q.seq, key: q.key, from: f.id, to: best.w.id });
      fs.queued--;
      st.get(best.w.id)!.queued++;
    }
  }
  return moves;
}
