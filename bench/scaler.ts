/**
 * Scaler decision benchmark: the time of one pure decision (decidePool) and one backlog
 * placement (assignBacklog) for a pool of N workers, without a server.
 *
 *   npx tsx bench/scaler.ts                 # N = 10, 100, 1000, 5000
 *   npx tsx bench/scaler.ts --workers 1000  # one size
 *   npx tsx bench/scaler.ts --json
 *
 * Each size: a pool of N ready workers (2 slots, half busy, some idle for a while), a
 * backlog of 4 N tasks in 20 placements over 5 pools, the memory carried from one
 * decision to the next (as the actor does), 200 decisions after 20 untimed ones.
 * Reported: median and p95 per decision and per placement, in microseconds. The time
 * to start a worker (burst to first task) is measured by test/e2e/scaler.test.ts, which
 * prints it.
 */
import { performance } from "node:perf_hooks";
import { assignBacklog, decidePool, emptyMemory, type BacklogEntry, type PoolMemory, type PoolOffer, type PoolWorker } from "../src/actors/scaler/decide.js";
import { ScalePolicySchema } from "../src/runtime/scaling.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const only = args.includes("--workers") ? Number(args[args.indexOf("--workers") + 1]) : undefined;
const sizes = only ? [only] : [10, 100, 1_000, 5_000];
const ROUNDS = 200;
const WARMUP = 20;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};

const results: Array<Record<string, number>> = [];
for (const n of sizes) {
  const policy = ScalePolicySchema.parse({ min: 0, max: n * 2, idleTimeout: "30s", scaleDown: { cooldown: 0, stabilization: "10s" } });
  const workers: PoolWorker[] = Array.from({ length: n }, (_, i) => ({ id: `w-${i}`, state: "running", slots: 2, running: i % 2 === 0 ? 2 : 0, queued: i % 7 === 0 ? 1 : 0, agents: ["shell", "claude"] }));
  const entries: BacklogEntry[] = Array.from({ length: 20 }, (_, i) => ({ agent: i % 2 ? "shell" : "claude", labels: i % 3 ? ["local"] : ["gpu"], requires: [], count: Math.ceil((4 * n) / 20) }));
  const pools: PoolOffer[] = Array.from({ length: 5 }, (_, i) => ({ name: `p${i}`, labels: i === 4 ? ["gpu", "local"] : ["local"], capabilities: [], room: i % 2 === 0 }));
  let memory: PoolMemory = emptyMemory();
  let now = 1_700_000_000_000;
  let id = 0;
  const decide: number[] = [];
  const place: number[] = [];
  for (let r = 0; r < WARMUP + ROUNDS; r++) {
    now += 2_000;
    const t0 = performance.now();
    const { perPool } = assignBacklog(entries, pools);
    const t1 = performance.now();
    const d = decidePool({ policy, observation: { slots: 2, workers, backlog: perPool.get("p0") ?? 0, exits: [] }, memory, now, newId: () => `n-${id++}`, instance: "bench" });
    const t2 = performance.now();
    // Launches never come up here: forget them so the pool stays at N.
    memory = { ...d.memory, warming: [] };
    if (r >= WARMUP) {
      place.push((t1 - t0) * 1_000);
      decide.push((t2 - t1) * 1_000);
    }
  }
  results.push({ workers: n, decideMedianUs: Math.round(pct(decide, 0.5)), decideP95Us: Math.round(pct(decide, 0.95)), placeMedianUs: Math.round(pct(place, 0.5)), placeP95Us: Math.round(pct(place, 0.95)) });
}

if (json) process.stdout.write(JSON.stringify({ rounds: ROUNDS, results }) + "\n");
else {
  process.stdout.write(`scaler decision, ${ROUNDS} rounds each (microseconds)\n`);
  process.stdout.write("workers  decide p50  decide p95  place p50  place p95\n");
  for (const r of results) process.stdout.write(`${String(r.workers).padStart(7)}  ${String(r.decideMedianUs).padStart(10)}  ${String(r.decideP95Us).padStart(10)}  ${String(r.placeMedianUs).padStart(9)}  ${String(r.placeP95Us).padStart(9)}\n`);
}
