/**
 * Scaler decision benchmark: the time of one pure decision (decidePool) and one backlog
 * placement (assignBacklog) for a pool of N workers, without a server.
 *
 *   npx tsx bench/scaler.ts                 # N = 10, 100, 1000, 5000
 *   npx tsx bench/scaler.ts --workers 1000  # one size
 *   npx tsx bench/scaler.ts --json
 *   npx tsx bench/scaler.ts --burst         # also: a burst to the first new worker's first task (local backend)
 *   npx tsx bench/scaler.ts --burst --rounds 3 --tasks 20 --workers 1000
 *
 * Each size: a pool of N ready workers (2 slots, half busy, some idle for a while), a
 * backlog of 4 N tasks in 20 placements over 5 pools, the memory carried from one
 * decision to the next (as the actor does), 200 decisions after 20 untimed ones.
 * Reported: median and p95 per decision and per placement, in microseconds.
 *
 * With --burst, then: an embedded nats-server and a stack whose only workers are a
 * `local` pool (min 0, max 4, 1 slot, idle timeout 2 s, scaler interval 250 ms), and a
 * scratch git repository. Each round submits a burst of tiny shell tasks with no worker
 * up, and measures, as the client sees them: the submission to the first pool worker's
 * registry record (the scaler's decision plus the worker process's start-up) and to the
 * first task started on it, and to all tasks succeeded; then it waits until the pool is
 * back to zero before the next round. Printed, never asserted.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Stack } from "../src/actors/stack.js";
import { AdoClient } from "../src/runtime/client.js";
import { decode } from "../src/runtime/codec.js";
import { parseConfig } from "../src/runtime/config.js";
import { connectNats, drainQuietly } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { parseGraph } from "../src/runtime/graph.js";
import { silentLogger } from "../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../src/runtime/messages.js";
import { openBuckets, topology } from "../src/runtime/topology.js";
import { assignBacklog, decidePool, emptyMemory, type BacklogEntry, type PoolMemory, type PoolOffer, type PoolWorker } from "../src/actors/scaler/decide.js";
import { ScalePolicySchema } from "../src/runtime/scaling.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const only = args.includes("--workers") ? Number(args[args.indexOf("--workers") + 1]) : undefined;
const sizes = only ? [only] : [10, 100, 1_000, 5_000];
const numberFlag = (name: string, dflt: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
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

if (args.includes("--burst")) {
  const burst = await burstToFirstTask(numberFlag("--rounds", 3), numberFlag("--tasks", 20));
  if (json) process.stdout.write(JSON.stringify({ burst }) + "\n");
  else {
    process.stdout.write(`\nburst to the first new worker's first task, local backend (${burst.length} rounds, ms from the submission)\n`);
    process.stdout.write("round  tasks  first worker up  first task started  all succeeded  workers\n");
    for (const [i, b] of burst.entries()) process.stdout.write(`${String(i + 1).padStart(5)}  ${String(b.tasks).padStart(5)}  ${String(b.firstWorkerMs).padStart(15)}  ${String(b.firstTaskMs).padStart(18)}  ${String(b.allMs).padStart(13)}  ${String(b.workers).padStart(7)}\n`);
  }
}

/** Rounds of a burst on an empty local pool: submission to first worker up, first task started, all done. */
async function burstToFirstTask(rounds: number, tasks: number) {
  const dir = await mkdtemp(join(tmpdir(), "ado-bench-burst-"));
  const repo = join(dir, "repo");
  const git = (...a: string[]) => execFileSync("git", a, { cwd: repo, stdio: "pipe" });
  execFileSync("mkdir", ["-p", repo]);
  git("init", "-q", "-b", "main");
  git("config", "user.email", "bench@example.com");
  git("config", "user.name", "bench");
  await writeFile(join(repo, "README"), "bench\n");
  git("add", "-A");
  git("commit", "-q", "-m", "initial");
  const server = await EmbeddedServer.start({});
  const topo = topology("benchburst");
  const config = parseConfig({
    prefix: topo.prefix,
    server: server.url,
    workers: 0,
    worktreeDir: join(dir, "wt"),
    scaler: {
      interval: "250ms",
      pools: [{ name: "bench", backend: "local", min: 0, max: 4, idleTimeout: "2s", scaleUp: { cooldown: 0, stabilization: 0 }, scaleDown: { cooldown: "1s", stabilization: "1s" }, local: { logDir: join(dir, "logs") } }],
    },
  });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: server.url, name: "bench-burst", logger: silentLogger });
  const kv = await openBuckets(nc, topo);
  const live = new Map<string, number>(); // worker id -> when its first record was seen
  const ups: number[] = [];
  const watch = await kv.workers.watch();
  void (async () => {
    for await (const e of watch) {
      if (e.operation !== "PUT") live.delete(e.key);
      else if (!live.has(e.key) && decode(SCHEMAS.WorkerRecord, e.value).pool === "bench") {
        live.set(e.key, performance.now());
        ups.push(performance.now());
      }
    }
  })();
  const until = async (check: () => boolean, ms: number, what: string) => {
    const end = Date.now() + ms;
    while (!check()) {
      if (Date.now() > end) throw new Error(`bench: ${what} not within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const out: Array<{ tasks: number; firstWorkerMs: number; firstTaskMs: number; allMs: number; workers: number }> = [];
  try {
    const client = new AdoClient(nc, topo);
    for (let r = 0; r < rounds; r++) {
      await until(() => live.size === 0, 120_000, "the pool back to zero");
      const graph = parseGraph(["tasks:", ...Array.from({ length: tasks }, (_, i) => `  - { id: b${r}-${i}, run: 'true' }`)].join("\n") + "\n");
      let firstTask: number | undefined;
      let done = 0;
      const used = new Set<string>();
      const t0 = performance.now();
      const { runId } = await client.submit({ graph, repo });
      client
        .watch(runId, {
          onEvent: (e: AdoEvent) => {
            if (e.type === "task.started") {
              firstTask ??= performance.now();
              used.add(e.workerId);
            }
            if (e.type === "task.succeeded") done++;
          },
          signal: AbortSignal.timeout(300_000),
        })
        .catch(() => undefined);
      await until(() => done === tasks, 300_000, `the burst's ${tasks} tasks`);
      const firstWorker = ups.find((t) => t >= t0)!;
      out.push({ tasks, firstWorkerMs: Math.round(firstWorker - t0), firstTaskMs: Math.round(firstTask! - t0), allMs: Math.round(performance.now() - t0), workers: used.size });
    }
  } finally {
    watch.stop();
    await drainQuietly(nc);
    await stack.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true, maxRetries: 10 });
  }
  return out;
}
