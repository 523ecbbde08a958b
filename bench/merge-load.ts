/**
 * Merge throughput under real load: a graph of tasks with fan-ins, each sleeping 0.2 to
 * 1.0 s and writing a file of its own, run by a whole stack (scheduler, balancer, merge
 * coordinator, W workers x S slots) on one embedded nats-server in a scratch repository.
 * Every task's branch is merged into the run's integration branch, so the merge
 * coordinator sees the load of a real run; a fan-in task waits for its dependencies'
 * merges, so slow merges hold the graph back.
 *
 *   npx tsx bench/merge-load.ts                  # full: 300 tasks, 3 workers x 4 slots (~1-4 min)
 *   npx tsx bench/merge-load.ts --quick          # smoke: 60 tasks (~30 s)
 *   npx tsx bench/merge-load.ts --json           # one JSON object on stdout
 *   npx tsx bench/merge-load.ts --tasks 150 --workers 2 --slots 4 --seed 7
 *   npx tsx bench/merge-load.ts --wait-quiet 60  # wait for other processes to go quiet first
 *
 * The graph (seeded, so every run gets the same one): task i sleeps a uniform 0.2-1.0 s
 * (--min-sleep, --max-sleep) and writes `t<i>.txt`; every fifth task after the tenth is a
 * fan-in that needs 2 to 4 of the 20 tasks before it.
 *
 * Reported:
 *   wall      submit -> run.completed seen by the client
 *   ideal     total task time / slots (the sleeping alone, perfectly packed), and the
 *             critical path (the longest chain of sleeps through the needs); the run
 *             cannot beat the larger of the two
 *   merges/s  tasks merged / wall, and over the span from the first merge to the last
 *   lag       a task's finish (its worker's finishedAt) to its task.merged event: p50/p90/max
 *   floor     the same task commits, in the order they were merged, folded into a fresh
 *             branch with raw `git merge-tree --write-tree`, `commit-tree`, `update-ref`
 *             (one after another, after the run): the git work alone, in merges/s
 *   steps     where the merge coordinator's time went (its stats().steps, when it has them;
 *             `queued`: a request's wait in the merge stream before a batch took it), merge
 *             requests per merge step (its batches),
 *             the worktree removals it still had queued at the end, and the stack's close time
 *   path      where a task's time goes, from its events: ready (queued, or the submit for a
 *             root) -> attempt start (balancer, worker) -> task.started seen (worktree add)
 *             -> finished (the sleep, the commit; the sleep is shown apart) -> the scheduler's
 *             task.succeeded (the result's way back) -> task.merged (the whole merge path);
 *             for fan-ins, their last need's task.merged -> queued; and how busy the slots
 *             were (attempt time / (wall x slots))
 *   lock      the repository's worktree lock (src/git/worktrees.ts): how long each add and
 *             remove waited for it and held it, and how much of the wall it was held
 *   CPU       node (every actor and the client), git and sh children, nats-server, other
 *   git       the git processes the stack started, from its start to its close (workers,
 *             merge coordinator, scheduler; not git's own children, not the floor's), per
 *             task and by command (bench/git-spawns.ts)
 * Figures are printed, never asserted.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { NatsConnection } from "@nats-io/transport-node";
import { Stack } from "../src/actors/stack.js";
import { AdoClient } from "../src/runtime/client.js";
import { parseConfig } from "../src/runtime/config.js";
import { connectNats, drainQuietly } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { GraphDefSchema, type Graph } from "../src/runtime/graph.js";
import { silentLogger } from "../src/runtime/logger.js";
import type { AdoEvent } from "../src/runtime/messages.js";
import { git, gitText, worktreeLockStats, type WorktreeLockStats } from "../src/git/internal.js";
import { GitSpawnCounter } from "./git-spawns.js";
import { CpuMeter, findChild, ProcessMeter as Meter, type ProcessCpu as Cpu } from "./procstat.js";
import { percentile, r1, r2, table, prng, summarize, type Summary } from "./stats.js";
import { flagValues, orAbort, parseFlags, printReport, runMain, waitQuietOn, type Log } from "./harness.js";

// ---------------------------------------------------------------- options

interface Options {
  tasks: number;
  workers: number;
  slots: number;
  minSleep: number;
  maxSleep: number;
  seed: number;
  json: boolean;
  quick: boolean;
  waitQuietMs: number;
  timeoutMs: number;
}

const USAGE = `usage: tsx bench/merge-load.ts [--quick] [--json] [--tasks N] [--workers N] [--slots N] [--min-sleep SEC] [--max-sleep SEC]
       [--seed N] [--wait-quiet SEC] [--timeout SEC]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = {
    tasks: quick ? 60 : 300,
    workers: 3,
    slots: 4,
    minSleep: 0.2,
    maxSleep: 1.0,
    seed: 1,
    json: false,
    quick,
    waitQuietMs: 0,
    timeoutMs: (quick ? 120 : 600) * 1000,
  };
  const { int } = flagValues(USAGE);
  const seconds = (v: string, f: string) => {
    const s = Number(v);
    if (!Number.isFinite(s) || s < 0 || s > 60) throw new Error(`${f} takes seconds from 0 to 60\n${USAGE}`);
    return s;
  };
  parseFlags(argv, USAGE, o, {
    "--tasks": (v, f) => (o.tasks = int(v, f, 1)),
    "--workers": (v, f) => (o.workers = int(v, f, 1)),
    "--slots": (v, f) => (o.slots = int(v, f, 1)),
    "--min-sleep": (v, f) => (o.minSleep = seconds(v, f)),
    "--max-sleep": (v, f) => (o.maxSleep = seconds(v, f)),
    "--seed": (v, f) => (o.seed = int(v, f)),
    "--timeout": (v, f) => (o.timeoutMs = int(v, f, 10) * 1000),
  });
  if (o.maxSleep < o.minSleep) throw new Error(`--max-sleep must not be below --min-sleep\n${USAGE}`);
  return o;
}

// ---------------------------------------------------------------- the graph

const seeded = prng;

interface Shape {
  graph: Graph;
  /** Seconds each task sleeps, by id. */
  sleeps: Map<string, number>;
  totalSleep: number;
  /** Longest chain of sleeps through the needs (s). */
  criticalPath: number;
  fanIns: number;
}

function makeGraph(o: Options): Shape {
  const rand = seeded(o.seed);
  const width = String(o.tasks).length;
  const ids = Array.from({ length: o.tasks }, (_, i) => `t${String(i + 1).padStart(width, "0")}`);
  const sleeps = new Map<string, number>();
  const finish = new Map<string, number>();
  let fanIns = 0;
  const tasks = ids.map((id, i) => {
    const sleep = Math.round((o.minSleep + rand() * (o.maxSleep - o.minSleep)) * 100) / 100;
    sleeps.set(id, sleep);
    const needs: string[] = [];
    if (i >= 10 && i % 5 === 0) {
      const k = 2 + Math.floor(rand() * 3);
      const window = ids.slice(Math.max(0, i - 20), i);
      while (needs.length < k && needs.length < window.length) {
        const pick = window[Math.floor(rand() * window.length)]!;
        if (!needs.includes(pick)) needs.push(pick);
      }
      fanIns++;
    }
    finish.set(id, Math.max(0, ...needs.map((n) => finish.get(n)!)) + sleep);
    return { id, agent: "shell", run: `sleep ${sleep} && echo "$ADO_TASK_ID" > "$ADO_TASK_ID.txt"`, needs, retry: { attempts: 1 } };
  });
  const totalSleep = [...sleeps.values()].reduce((a, b) => a + b, 0);
  return { graph: GraphDefSchema.parse({ name: "merge-load", tasks }), sleeps, totalSleep, criticalPath: Math.max(...finish.values()), fanIns };
}

// ---------------------------------------------------------------- helpers

async function makeRepo(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ado-bench-mload-"));
  const g = (...args: string[]) => execFileSync("git", args, { cwd: dir, stdio: "pipe" });
  g("init", "-q", "-b", "main");
  g("config", "user.email", "bench@example.com");
  g("config", "user.name", "bench");
  await writeFile(join(dir, "README.md"), "# merge load bench\n");
  g("add", "-A");
  g("commit", "-q", "-m", "initial");
  return dir;
}

// ---------------------------------------------------------------- the floor

/**
 * The same task commits folded into a fresh branch at the base, in merge order, with raw
 * git: merge-tree --write-tree, commit-tree, update-ref with the old value. No checks,
 * no events, no rules: what the git work alone costs.
 */
async function rawFloor(repo: string, base: string, commits: string[]): Promise<{ merges: number; ms: number; perSec: number; ok: boolean }> {
  const branch = `refs/heads/bench-floor-${randomBytes(3).toString("hex")}`;
  await git(repo, ["update-ref", branch, base]);
  const t0 = performance.now();
  let head = base;
  for (const c of commits) {
    const tree = (await git(repo, ["merge-tree", "--write-tree", head, c])).split("\n")[0]!;
    const next = await gitText(repo, ["commit-tree", tree, "-p", head, "-p", c, "-m", "floor"]);
    await git(repo, ["update-ref", branch, next, head]);
    head = next;
  }
  const ms = performance.now() - t0;
  const files = (await git(repo, ["ls-tree", "--name-only", head])).split("\n").filter((f) => /^t\d+\.txt$/.test(f)).length;
  await git(repo, ["update-ref", "-d", branch]);
  return { merges: commits.length, ms: r1(ms), perSec: r2(commits.length / (ms / 1000)), ok: files === commits.length };
}

// ---------------------------------------------------------------- the run

interface Report {
  bench: "ado-merge-load";
  at: string;
  host: { node: string; cpus: number; backgroundCpu?: number };
  options: Omit<Options, "json">;
  graph: { tasks: number; fanIns: number; totalSleepSec: number; criticalPathSec: number };
  status?: string;
  wallMs?: number;
  /** totalSleep / slots. */
  idealMs?: number;
  /** wall / max(ideal, critical path). */
  overIdeal?: number;
  merged?: number;
  mergesPerSec?: number;
  /** First task.merged to the last. */
  mergeSpanMs?: number;
  mergesPerSecInSpan?: number;
  lagMs?: { p50: number; p90: number; max: number };
  floor?: { merges: number; ms: number; perSec: number; ok: boolean };
  /** The merge coordinator's own step timings, when it reports them. */
  steps?: Record<string, { n: number; ms: number }>;
  /** Where a task's time went (ms per stage; see the file's header), and how busy the slots were. */
  path?: Record<string, Summary>;
  slotsBusy?: number;
  /** The repository's worktree lock over the run: what each kind of operation waited for it and held it (ms). */
  worktreeLock?: WorktreeLockStats;
  /** Merge requests per merge step (the coordinator's batches). */
  perStep?: number;
  /** Worktree removals the merge coordinator still had queued when the run ended (done while the stack closes). */
  releasesLeft?: number;
  /** Stopping the stack after the run (workers, actors: the merge coordinator finishes its removals). */
  closeMs?: number;
  cpu?: Cpu;
  /** Git processes the stack started (its start to its close), per task and by command. */
  gitSpawns?: { total: number; perTask: number; byCommand: Record<string, number> };
  errors: string[];
  totalMs: number;
}

async function measure(o: Options, server: EmbeddedServer, meter: Meter, repo: string, shape: Shape, report: Report, signal: AbortSignal, log: Log): Promise<void> {
  const prefix = `bml-${randomBytes(3).toString("hex")}`;
  const worktreeDir = await mkdtemp(join(tmpdir(), "ado-bench-mload-wt-"));
  const config = parseConfig({ prefix, server: server.url, workers: o.workers, slots: o.slots, heartbeatMs: 1000, worktreeDir });
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  const spawns = new GitSpawnCounter().start();
  try {
    stack = await Stack.start({ config, logger: silentLogger, server: server.url });
    nc = await connectNats({ servers: server.url, name: `${prefix}-client`, logger: silentLogger });
    const client = new AdoClient(nc, stack.topo);
    const finished = new Map<string, number>();
    const commits = new Map<string, string>();
    /** Per task: when it became ready, its attempt started, task.started was seen, task.succeeded came (ms). */
    const queued = new Map<string, number>();
    const started = new Map<string, number>();
    const startSeen = new Map<string, number>();
    const succeeded = new Map<string, number>();
    const attemptStart = new Map<string, number>();
    const merged: Array<{ taskId: string; at: number }> = [];
    const cpu0 = meter.snapshot();
    const lock0 = worktreeLockStats();
    const t0 = performance.now();
    const wall0 = Date.now();
    try {
      const outcome = await orAbort(
        client.run({
          graph: shape.graph,
          repo,
          signal,
          onEvent: (e: AdoEvent) => {
            if (e.type === "task.queued") queued.set(e.taskId, Date.parse(e.at));
            else if (e.type === "task.started") {
              started.set(e.taskId, Date.parse(e.at));
              startSeen.set(e.taskId, Date.now());
            } else if (e.type === "task.succeeded") {
              finished.set(e.taskId, Date.parse(e.finishedAt));
              attemptStart.set(e.taskId, Date.parse(e.startedAt));
              succeeded.set(e.taskId, Date.parse(e.at));
              if (e.commit) commits.set(e.taskId, e.commit);
            } else if (e.type === "task.merged") {
              merged.push({ taskId: e.taskId, at: Date.parse(e.at) });
              if (merged.length % 50 === 0) log(`${merged.length} merged (${((Date.now() - wall0) / 1000).toFixed(1)} s)`);
            }
          },
        }),
        signal,
      );
      report.status = outcome.status;
      if (outcome.status !== "succeeded") report.errors.push(`run ended ${outcome.status}: ${outcome.error ?? ""}`);
    } catch (err) {
      // Stopped (time budget, Ctrl-C): report what was measured so far.
      report.status = "stopped";
      report.errors.push(signal.aborted ? `stopped: ${String(signal.reason)}` : ((err as Error).stack ?? String(err)));
    }
    const wallMs = performance.now() - t0;
    report.cpu = meter.use(cpu0, meter.snapshot());
    const lock1 = worktreeLockStats();
    report.worktreeLock = Object.fromEntries(
      Object.entries(lock1).map(([k, v]) => {
        const a = lock0[k as keyof WorktreeLockStats];
        return [k, { n: v.n - a.n, waitMs: r1(v.waitMs - a.waitMs), heldMs: r1(v.heldMs - a.heldMs) }];
      }),
    ) as WorktreeLockStats;
    const merger = stack.actors.find((a) => a.kind === "merger");
    const stats = merger?.stats() as { steps?: Record<string, { n: number; ms: number }>; pendingReleases?: number; batches?: number } | undefined;
    if (stats?.steps) report.steps = structuredClone(stats.steps);
    if (stats?.pendingReleases !== undefined) report.releasesLeft = stats.pendingReleases;

    const idealMs = (shape.totalSleep / (o.workers * o.slots)) * 1000;
    report.wallMs = r1(wallMs);
    report.idealMs = r1(idealMs);
    report.overIdeal = r2(wallMs / Math.max(idealMs, shape.criticalPath * 1000));
    report.merged = merged.length;
    report.mergesPerSec = r2(merged.length / (wallMs / 1000));
    if (merged.length > 1) {
      const span = merged[merged.length - 1]!.at - merged[0]!.at;
      report.mergeSpanMs = span;
      report.mergesPerSecInSpan = span > 0 ? r2((merged.length - 1) / (span / 1000)) : undefined;
    }
    const lags = merged.flatMap((m) => (finished.has(m.taskId) ? [m.at - finished.get(m.taskId)!] : [])).sort((a, b) => a - b);
    if (lags.length) report.lagMs = { p50: percentile(lags, 50), p90: percentile(lags, 90), max: lags[lags.length - 1]! };
    report.path = taskPath(shape, wall0, { queued, started, startSeen, finished, succeeded, merged: new Map(merged.map((m) => [m.taskId, m.at])) });
    const busy = [...finished].reduce((sum, [id, f]) => sum + (f - (attemptStart.get(id) ?? f)), 0);
    report.slotsBusy = r2(busy / (wallMs * o.workers * o.slots));
    if (stats?.steps?.["merge-step"]?.n) report.perStep = r2((stats.steps["requests"]?.n ?? 0) / stats.steps["merge-step"].n);

    // The stack stops first (the merge coordinator finishes the removals it queued), so
    // the floor is measured with nothing of the run in the background.
    await drainQuietly(nc);
    const c0 = performance.now();
    await stack.close();
    report.closeMs = r1(performance.now() - c0);
    spawns.stop();
    const byCommand = Object.fromEntries([...spawns.counts].sort((a, b) => b[1] - a[1]));
    report.gitSpawns = { total: spawns.total(), perTask: r2(spawns.total() / o.tasks), byCommand };
    const base = await gitText(repo, ["rev-parse", "main"]);
    const order = merged.map((m) => commits.get(m.taskId)).filter((c): c is string => !!c);
    if (report.status === "succeeded") {
      log(`floor: ${order.length} raw merges`);
      report.floor = await rawFloor(repo, base, order);
    }
  } finally {
    spawns.stop();
    await drainQuietly(nc);
    await stack?.close();
    await rm(worktreeDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Each task's time per stage of its way (ms), from the events (see the file's header). */
function taskPath(
  shape: Shape,
  submitted: number,
  t: Record<"queued" | "started" | "startSeen" | "finished" | "succeeded" | "merged", Map<string, number>>,
): Record<string, Summary> {
  const stages: Record<string, number[]> = { "ready -> attempt start": [], "attempt start -> task.started seen": [], "task.started seen -> finished, less the sleep": [], "finished -> task.succeeded": [], "task.succeeded -> task.merged": [], "fan-in: last need merged -> queued": [] };
  for (const def of shape.graph.tasks) {
    const id = def.id;
    const ready = t.queued.get(id) ?? (def.needs.length === 0 ? submitted : undefined);
    const [s, seen, f, ok, m] = [t.started.get(id), t.startSeen.get(id), t.finished.get(id), t.succeeded.get(id), t.merged.get(id)];
    if (ready !== undefined && s !== undefined) stages["ready -> attempt start"]!.push(s - ready);
    if (s !== undefined && seen !== undefined) stages["attempt start -> task.started seen"]!.push(seen - s);
    if (seen !== undefined && f !== undefined) stages["task.started seen -> finished, less the sleep"]!.push(f - seen - shape.sleeps.get(id)! * 1000);
    if (f !== undefined && ok !== undefined) stages["finished -> task.succeeded"]!.push(ok - f);
    if (ok !== undefined && m !== undefined) stages["task.succeeded -> task.merged"]!.push(m - ok);
    const needsMerged = def.needs.map((n) => t.merged.get(n));
    const q = t.queued.get(id);
    if (def.needs.length && q !== undefined && needsMerged.every((x) => x !== undefined)) stages["fan-in: last need merged -> queued"]!.push(q - Math.max(...(needsMerged as number[])));
  }
  return Object.fromEntries(Object.entries(stages).filter(([, v]) => v.length).map(([k, v]) => [k, summarize(v)]));
}

function render(rep: Report): string {
  const out: string[] = [];
  const o = rep.options;
  out.push(`ado merge-load benchmark  ${rep.at}  node ${rep.host.node}, ${rep.host.cpus} cpus; background before: ${rep.host.backgroundCpu ?? "?"}% of a core`);
  if ((rep.cpu?.other ?? 0) > 20 || (rep.host.backgroundCpu ?? 0) > 20) out.push("WARNING: other processes used > 20% of a core: figures are skewed; rerun on a quiet machine.");
  const g = rep.graph;
  out.push(
    `${g.tasks} tasks (${g.fanIns} fan-ins), each sleeping ${o.minSleep}-${o.maxSleep} s and writing a file; ${o.workers} workers x ${o.slots} slots; seed ${o.seed}`,
    `total task time ${r1(g.totalSleepSec)} s; critical path ${r1(g.criticalPathSec)} s`,
    "",
  );
  out.push(
    table(
      ["status", "wall s", "ideal s", "wall/ideal", "merged", "merges/s", "merges/s (span)", "lag p50 ms", "lag p90", "lag max", "floor merges/s", "node%", "git+sh%", "nats%", "other%"],
      [
        [
          rep.status,
          rep.wallMs === undefined ? undefined : r1(rep.wallMs / 1000),
          rep.idealMs === undefined ? undefined : r1(rep.idealMs / 1000),
          rep.overIdeal,
          rep.merged,
          rep.mergesPerSec,
          rep.mergesPerSecInSpan,
          rep.lagMs?.p50,
          rep.lagMs?.p90,
          rep.lagMs?.max,
          rep.floor ? `${rep.floor.perSec}${rep.floor.ok ? "" : " (!)"}` : undefined,
          rep.cpu?.node,
          rep.cpu?.children,
          rep.cpu?.nats,
          rep.cpu?.other,
        ],
      ],
    ),
  );
  out.push("   ideal = total task time / slots; wall/ideal against the larger of ideal and the critical path; lag = task finished -> task.merged;");
  out.push("   floor = the same commits folded by raw merge-tree/commit-tree/update-ref after the run, one after another.");
  if (rep.releasesLeft !== undefined || rep.closeMs !== undefined) {
    out.push(`worktree removals still queued when the run ended: ${rep.releasesLeft ?? "-"}; stack close afterwards: ${rep.closeMs ?? "-"} ms`);
  }
  if (rep.path) {
    out.push("", `a task's way (ms; slots busy ${rep.slotsBusy ?? "-"} of the wall: attempt start -> finished, over wall x slots):`);
    out.push(
      table(
        ["stage", "n", "p50", "p90", "max", "mean"],
        Object.entries(rep.path).map(([k, v]) => [k, v.n, Math.round(v.p50), Math.round(v.p90), Math.round(v.max), Math.round(v.mean)]),
      ),
    );
  }
  if (rep.worktreeLock && rep.wallMs) {
    const lock = Object.entries(rep.worktreeLock).filter(([, v]) => v.n > 0);
    const held = lock.reduce((sum, [, v]) => sum + v.heldMs, 0);
    out.push("", `the repository's worktree lock (one per repository in a process; every add and remove takes it): held ${r1((100 * held) / rep.wallMs)}% of the wall`);
    out.push(table(["operation", "n", "held ms (mean)", "waited ms (mean)"], lock.map(([k, v]) => [k, v.n, r1(v.heldMs / v.n), r1(v.waitMs / v.n)])));
  }
  if (rep.steps) {
    out.push("", `merge coordinator steps (all requests; ms; ${rep.perStep ?? "-"} requests per merge step):`);
    out.push(
      table(
        ["step", "n", "total ms", "mean ms"],
        Object.entries(rep.steps)
          .filter(([k]) => k !== "requests")
          .sort((a, b) => b[1].ms - a[1].ms)
          .map(([k, v]) => [k, v.n, r1(v.ms), v.n ? r1(v.ms / v.n) : undefined]),
      ),
    );
  }
  if (rep.gitSpawns) {
    const g = rep.gitSpawns;
    out.push("", `git processes the stack started (its start to its close): ${g.total}, ${g.perTask} per task`);
    out.push(table(["command", "n", "per task"], Object.entries(g.byCommand).map(([k, n]) => [k, n, r2(n / rep.graph.tasks)])));
  }
  if (rep.errors.length) out.push("", "ERRORS:", ...rep.errors.map((e) => `  ${e}`));
  out.push(`total ${(rep.totalMs / 1000).toFixed(1)} s`);
  return out.join("\n");
}

async function main(o: Options, log: Log): Promise<number> {
  const started = performance.now();
  const budget = new AbortController();
  const onSignal = () => budget.abort("interrupted");
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const shape = makeGraph(o);
  const { json: _json, ...shown } = o;
  const report: Report = {
    bench: "ado-merge-load",
    at: new Date().toISOString(),
    host: { node: process.version, cpus: 0 },
    options: shown,
    graph: { tasks: o.tasks, fanIns: shape.fanIns, totalSleepSec: r1(shape.totalSleep), criticalPathSec: r1(shape.criticalPath) },
    errors: [],
    totalMs: 0,
  };
  let server: EmbeddedServer | undefined;
  let repo: string | undefined;
  let budgetTimer: NodeJS.Timeout | undefined;
  try {
    server = await EmbeddedServer.start({ logger: silentLogger });
    const meter = new Meter(findChild(server.pid, "nats-server"));
    report.host.cpus = new CpuMeter({}).cores;
    report.host.backgroundCpu = await waitQuietOn(meter, (a, b) => meter.use(a, b).other, o.waitQuietMs, log);
    budgetTimer = setTimeout(() => budget.abort(`time budget of ${o.timeoutMs / 1000} s`), o.timeoutMs);
    repo = await makeRepo();
    log(`${o.tasks} tasks, ${o.workers} workers x ${o.slots} slots; ideal ${r1(shape.totalSleep / (o.workers * o.slots))} s, critical path ${r1(shape.criticalPath)} s`);
    await measure(o, server, meter, repo, shape, report, budget.signal, log);
  } catch (err) {
    report.errors.push((err as Error).stack ?? String(err));
  } finally {
    clearTimeout(budgetTimer);
    await server?.stop().catch((err) => report.errors.push(`server stop: ${(err as Error).message}`));
    if (repo) await rm(repo, { recursive: true, force: true }).catch(() => undefined);
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
  report.totalMs = Math.round(performance.now() - started);
  printReport(report, o.json, render);
  return report.errors.length ? 1 : 0;
}

runMain("merge-load", parseArgs, main);
