/**
 * Scaling benchmark: throughput of tasks that sleep, at parallelism 1, 2, 4, 8 and 16
 * (P workers of one slot each), on one embedded nats-server (started here, stopped at
 * the end, also on failure, Ctrl-C or when the time budget runs out).
 *
 *   npx tsx bench/scaling.ts                  # full (~60 s)
 *   npx tsx bench/scaling.ts --quick          # smoke (~20 s)
 *   npx tsx bench/scaling.ts --json           # one JSON object on stdout
 *   npx tsx bench/scaling.ts --levels 1,4,16 --waves 12 --sleep 0.2
 *   npx tsx bench/scaling.ts --tasks 64       # the same 64 tasks at every level (strong scaling)
 *   npx tsx bench/scaling.ts --write          # each task also writes a file: commit + merge
 *   npx tsx bench/scaling.ts --wait-quiet 60  # wait for other processes to go quiet first
 *                                             # (and up to 30 s more before each level)
 *
 * For each P: a Stack (scheduler, balancer, merger, P workers x 1 slot) and an AdoClient
 * on the shared server, one untimed warm-up run of P tasks, then one run of
 * waves x P independent shell tasks `sleep S` (default: 8 waves, so the ideal wall time
 * is the same 8 x S at every level) in a scratch git repository. Each shell task gets a
 * worktree (git worktree add), runs its command, checks for changes to commit and
 * removes the worktree; with --write it also commits a file and the merger merges it.
 *
 * Reported: wall time (submit -> run.completed seen by the client), tasks/s, speedup
 * (tasks/s over P=1's), efficiency (speedup / P), the worker span of a task (its
 * startedAt -> finishedAt, which includes the worktree work) and the hand-off gap (one
 * task's finish to the next start on the same worker: result -> scheduler -> balancer
 * -> worker), both from the actors' millisecond timestamps; and the overhead per task
 * at P=1: wall / tasks - S. CPU of node, nats-server, node's child processes (git, sh)
 * and everything else. Figures are printed, never asserted.
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
import { resolveCommit, WorktreeManager } from "../src/git/index.js";
import { GraphDefSchema, type Graph } from "../src/runtime/graph.js";
import { silentLogger } from "../src/runtime/logger.js";
import type { AdoEvent } from "../src/runtime/messages.js";
import { findChild, ProcessMeter as Meter, type ProcessCpu as Cpu } from "./procstat.js";
import { percentile, r1, r2, r3, table } from "./stats.js";
import { printReport, runMain, waitQuietOn, flagValues, parseFlags, type Log, orAbort } from "./harness.js";

// ---------------------------------------------------------------- options

interface Options {
  levels: number[];
  /** Tasks per level = waves x P, unless `tasks` fixes the count. */
  waves: number;
  tasks?: number;
  sleepSec: number;
  write: boolean;
  json: boolean;
  quick: boolean;
  waitQuietMs: number;
  timeoutMs: number;
}

const USAGE = `usage: tsx bench/scaling.ts [--quick] [--json] [--levels P,...] [--waves W | --tasks N] [--sleep SEC] [--write]
       [--wait-quiet SEC] [--timeout SEC]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = {
    levels: quick ? [1, 4, 16] : [1, 2, 4, 8, 16],
    waves: quick ? 4 : 8,
    sleepSec: 0.2,
    write: false,
    json: false,
    quick,
    waitQuietMs: 0,
    timeoutMs: (quick ? 60 : 150) * 1000,
  };
  const { int, ints } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--write": { on: () => (o.write = true) },
    "--levels": (v, f) =>
      (o.levels = ints(v, f).map((p) => {
        if (p < 1 || p > 256) throw new Error(`--levels takes worker counts from 1 to 256 (got ${p})\n${USAGE}`);
        return p;
      })),
    "--waves": (v, f) => (o.waves = int(v, f, 1)),
    "--tasks": (v, f) => (o.tasks = int(v, f, 1)),
    "--sleep": (v) => {
      const s = Number(v);
      if (!Number.isFinite(s) || s < 0 || s > 60) throw new Error(`--sleep takes seconds from 0 to 60\n${USAGE}`);
      o.sleepSec = s;
    },
    "--timeout": (v, f) => (o.timeoutMs = int(v, f, 10) * 1000),
  });
  return o;
}

// ---------------------------------------------------------------- helpers

const rand = () => randomBytes(3).toString("hex");

/** A scratch git repository with one commit (as test/helpers/repo.ts makes). */
async function makeRepo(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ado-bench-repo-"));
  const git = (...args: string[]) => execFileSync("git", args, { cwd: dir, stdio: "pipe" });
  git("init", "-q", "-b", "main");
  git("config", "user.email", "bench@example.com");
  git("config", "user.name", "bench");
  await writeFile(join(dir, "README.md"), "# scaling bench\n");
  git("add", "-A");
  git("commit", "-q", "-m", "initial");
  return dir;
}

/** N independent shell tasks; parsed through the graph schema so every default is filled in. */
function sleepGraph(name: string, n: number, sleepSec: number, write: boolean): Graph {
  const width = String(n).length;
  // With --write each task adds a file of its own: a commit and a conflict-free merge.
  const run = write ? `sleep ${sleepSec} && echo "$ADO_TASK_ID" > "out-$ADO_TASK_ID.txt"` : `sleep ${sleepSec}`;
  return GraphDefSchema.parse({
    name,
    tasks: Array.from({ length: n }, (_, i) => ({
      id: `t${String(i + 1).padStart(width, "0")}`,
      agent: "shell",
      run,
      needs: [],
      retry: { attempts: 1 },
    })),
  });
}

/** Longest wait for quiet before each level (with --wait-quiet). */
const LEVEL_QUIET_MS = 30_000;

/** Waits (up to maxMs) for a quiet machine (see harness.ts), sampling this benchmark's meter. */
const waitQuiet = (meter: Meter, maxMs: number, log: Log) => waitQuietOn(meter, (x, y) => meter.use(x, y).other, maxMs, log);


// ---------------------------------------------------------------- git costs

interface GitCosts {
  /** Other worktrees present meanwhile (what the other workers' tasks would hold). */
  others: number;
  reps: number;
  /** p50 ms of WorktreeManager.add / commitAll (nothing to commit) / remove. */
  addMs: number;
  commitMs: number;
  removeMs: number;
  /** add + remove run under the per-repository mutex: at most 1000 / this tasks/s per repository. */
  serialMs: number;
  ceilingTasksPerSec: number;
}

/**
 * Times the worktree work of one shell task, one after another, as the worker does it
 * (src/actors/worker/worker.ts runAttempt): add, commitAll, remove. add and remove hold
 * a per-repository mutex (src/git/worktrees.ts), so their sum bounds the tasks/s
 * of one repository whatever the parallelism.
 */
async function gitCosts(repo: string, reps: number, others: number): Promise<GitCosts> {
  const baseDir = await mkdtemp(join(tmpdir(), "ado-bench-gitwt-"));
  const wt = new WorktreeManager({ repo, baseDir, logger: silentLogger });
  const base = await resolveCommit(repo, "HEAD");
  const tag = rand();
  const held: string[] = [];
  try {
    for (let i = 0; i < others; i++) held.push((await wt.add({ name: `o${tag}/${i}`, branch: `ado-bench/o${tag}-${i}`, base })).path);
    const add: number[] = [];
    const commit: number[] = [];
    const remove: number[] = [];
    for (let i = -1; i < reps; i++) {
      let t = performance.now();
      const { path } = await wt.add({ name: `g${tag}/${i + 1}`, branch: `ado-bench/g${tag}-${i + 1}`, base });
      const a = performance.now() - t;
      t = performance.now();
      await wt.commitAll(path, { message: "bench" });
      const c = performance.now() - t;
      t = performance.now();
      await wt.remove(path);
      const r = performance.now() - t;
      // The first round warms git's caches and is not counted.
      if (i >= 0) {
        add.push(a);
        commit.push(c);
        remove.push(r);
      }
    }
    const p50 = (xs: number[]) => r1(percentile([...xs].sort((x, y) => x - y), 50));
    const serialMs = r1(p50(add) + p50(remove));
    return { others, reps, addMs: p50(add), commitMs: p50(commit), removeMs: p50(remove), serialMs, ceilingTasksPerSec: r1(1000 / serialMs) };
  } finally {
    for (const p of held) await wt.remove(p, { force: true }).catch(() => undefined);
    await rm(baseDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

// ---------------------------------------------------------------- one level

interface LevelResult {
  parallelism: number;
  tasks: number;
  status: string;
  wallMs: number;
  tasksPerSec: number;
  /** Filled in once P=1 is known. */
  speedup?: number;
  efficiency?: number;
  /** Ideal wall time: ceil(tasks / P) x sleep. */
  idealMs: number;
  /** Wall per task per worker minus the sleep: what each task costs beyond its command. */
  overheadPerTaskMs: number;
  /** Per task, worker startedAt -> finishedAt (ms, actor clock): p50 / p90. */
  spanP50Ms?: number;
  spanP90Ms?: number;
  /** Finish of one task to the start of the next on the same worker (ms): p50 / p90. */
  gapP50Ms?: number;
  gapP90Ms?: number;
  gapMaxMs?: number;
  /** Submit -> first task.started on the client (ms). */
  firstStartMs?: number;
  /** Tasks each worker ran: min / max (how even the balancing was). */
  perWorkerMin?: number;
  perWorkerMax?: number;
  /** Stack start (P workers and the actors), ms. */
  startMs: number;
  cpu: Cpu;
}

interface Ctx {
  opts: Options;
  server: EmbeddedServer;
  meter: Meter;
  repo: string;
  signal: AbortSignal;
  log: (m: string) => void;
}

async function level(ctx: Ctx, p: number): Promise<LevelResult> {
  const { opts } = ctx;
  const prefix = `bsc${p}-${rand()}`;
  const worktreeDir = await mkdtemp(join(tmpdir(), "ado-bench-wt-"));
  const config = parseConfig({ prefix, server: ctx.server.url, workers: p, slots: 1, heartbeatMs: 1000, worktreeDir });
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  try {
    const s0 = performance.now();
    stack = await Stack.start({ config, logger: silentLogger, server: ctx.server.url });
    const startMs = r1(performance.now() - s0);
    nc = await connectNats({ servers: ctx.server.url, name: `${prefix}-client`, logger: silentLogger });
    const client = new AdoClient(nc, stack.topo);
    // Untimed warm-up: one task per worker (JIT, consumers, the balancer's view of the workers).
    const warm = await orAbort(client.run({ graph: sleepGraph("warmup", p, 0, opts.write), repo: ctx.repo, signal: ctx.signal }), ctx.signal);
    if (warm.status !== "succeeded") throw new Error(`warm-up run ended ${warm.status}: ${warm.error ?? ""}`);

    const n = opts.tasks ?? opts.waves * p;
    const graph = sleepGraph(`scale-${p}`, n, opts.sleepSec, opts.write);
    const spans: number[] = [];
    const byWorker = new Map<string, Array<{ start: number; finish: number }>>();
    let firstStart: number | undefined;
    const cpu0 = ctx.meter.snapshot();
    const t0 = performance.now();
    const outcome = await orAbort(
      client.run({
        graph,
        repo: ctx.repo,
        signal: ctx.signal,
        onEvent: (e: AdoEvent) => {
          if (e.type === "task.started") firstStart ??= performance.now();
          else if (e.type === "task.succeeded") {
            const start = Date.parse(e.startedAt);
            const finish = Date.parse(e.finishedAt);
            spans.push(finish - start);
            const list = byWorker.get(e.workerId) ?? [];
            list.push({ start, finish });
            byWorker.set(e.workerId, list);
          }
        },
      }),
      ctx.signal,
    );
    const wallMs = performance.now() - t0;
    const cpu = ctx.meter.use(cpu0, ctx.meter.snapshot());
    if (outcome.status !== "succeeded") {
      const failed = outcome.tasks.find((t) => t.status !== "succeeded");
      throw new Error(`run ended ${outcome.status}: ${outcome.error ?? failed?.error ?? ""}`);
    }
    const gaps: number[] = [];
    for (const list of byWorker.values()) {
      list.sort((a, b) => a.start - b.start);
      for (let i = 1; i < list.length; i++) gaps.push(list[i]!.start - list[i - 1]!.finish);
    }
    const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
    const sp = sorted(spans);
    const gp = sorted(gaps);
    const counts = [...byWorker.values()].map((l) => l.length);
    return {
      parallelism: p,
      tasks: n,
      status: outcome.status,
      wallMs: r1(wallMs),
      tasksPerSec: r2(n / (wallMs / 1000)),
      idealMs: Math.round(Math.ceil(n / p) * opts.sleepSec * 1000),
      overheadPerTaskMs: r1(wallMs / (n / p) - opts.sleepSec * 1000),
      spanP50Ms: sp.length ? percentile(sp, 50) : undefined,
      spanP90Ms: sp.length ? percentile(sp, 90) : undefined,
      gapP50Ms: gp.length ? percentile(gp, 50) : undefined,
      gapP90Ms: gp.length ? percentile(gp, 90) : undefined,
      gapMaxMs: gp.length ? gp[gp.length - 1] : undefined,
      firstStartMs: firstStart === undefined ? undefined : r1(firstStart - t0),
      perWorkerMin: counts.length ? Math.min(...counts, ...(byWorker.size < p ? [0] : [])) : undefined,
      perWorkerMax: counts.length ? Math.max(...counts) : undefined,
      startMs,
      cpu,
    };
  } finally {
    await drainQuietly(nc);
    await stack?.close();
    await rm(worktreeDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

// ---------------------------------------------------------------- report

interface Report {
  bench: "ado-scaling";
  at: string;
  host: { node: string; cpus: number; natsServer: string; backgroundCpu?: number };
  options: Omit<Options, "json">;
  levels: LevelResult[];
  git: GitCosts[];
  /** Wall per task at P=1 minus the sleep: the fixed cost of one shell task end to end. */
  overheadPerTaskAtP1Ms?: number;
  errors: string[];
  totalMs: number;
}

function render(rep: Report): string {
  const out: string[] = [];
  const o = rep.options;
  out.push(`ado scaling benchmark  ${rep.at}  node ${rep.host.node}, ${rep.host.cpus} cpus, nats-server pid ${rep.host.natsServer}`);
  out.push(`CPU columns: % of one core; 'git+sh' = child processes of this node (worktrees, commits, the task's shell); 'other' = the rest of the machine. Background before: ${rep.host.backgroundCpu ?? "?"}%.`);
  if ((rep.host.backgroundCpu ?? 0) > 20 || rep.levels.some((l) => (l.cpu.other ?? 0) > 20)) {
    out.push("WARNING: other processes used > 20% of a core during a level: figures are skewed; rerun on a quiet machine.");
  }
  const what = o.tasks ? `${o.tasks} tasks per level` : `${o.waves} x P tasks per level (${o.waves} waves)`;
  out.push("", `P workers x 1 slot; ${what} of \`sleep ${o.sleepSec}\`${o.write ? " + write a file (commit + merge)" : ""}, independent; submit -> run.completed`);
  out.push(
    table(
      ["P", "tasks", "wall ms", "ideal ms", "tasks/s", "speedup", "efficiency", "ovh/task ms", "span p50", "span p90", "gap p50", "gap p90", "gap max", "1st start ms", "per worker", "node%", "git+sh%", "nats%", "other%"],
      rep.levels.map((l) => [
        l.parallelism,
        l.tasks,
        l.wallMs,
        l.idealMs,
        l.tasksPerSec,
        l.speedup,
        l.efficiency === undefined ? undefined : `${Math.round(l.efficiency * 100)}%`,
        l.overheadPerTaskMs,
        l.spanP50Ms,
        l.spanP90Ms,
        l.gapP50Ms,
        l.gapP90Ms,
        l.gapMaxMs,
        l.firstStartMs,
        l.perWorkerMin === undefined ? undefined : `${l.perWorkerMin}-${l.perWorkerMax}`,
        l.cpu.node,
        l.cpu.children,
        l.cpu.nats,
        l.cpu.other,
      ]),
    ),
  );
  out.push("   ovh/task = wall / (tasks / P) - sleep; span = a task's worker startedAt -> finishedAt (worktree add, command, commit check, worktree remove);");
  out.push("   gap = one task's finish to the next start on the same worker (result -> scheduler -> balancer -> worker); spans and gaps in ms, actor clocks.");
  const p1 = rep.levels.find((l) => l.parallelism === 1);
  if (p1) {
    out.push(
      "",
      `Per-task overhead at P=1: ${rep.overheadPerTaskAtP1Ms} ms (wall ${p1.wallMs} ms / ${p1.tasks} tasks - ${o.sleepSec * 1000} ms); of which in the worker beyond the sleep (span p50 - sleep): ${p1.spanP50Ms === undefined ? "-" : p1.spanP50Ms - o.sleepSec * 1000} ms, hand-off gap p50: ${p1.gapP50Ms ?? "-"} ms.`,
    );
  }
  if (rep.git.length) {
    out.push("", "Worktree work of one task, run alone (WorktreeManager, as the worker does it; p50 ms). add and remove hold a per-repository mutex,");
    out.push("so 1000 / (add + remove) bounds one repository's tasks/s whatever P is:");
    out.push(
      table(
        ["other worktrees", "reps", "add", "commitAll", "remove", "add+remove", "ceiling tasks/s"],
        rep.git.map((g) => [g.others, g.reps, g.addMs, g.commitMs, g.removeMs, g.serialMs, g.ceilingTasksPerSec]),
      ),
    );
  }
  if (rep.errors.length) out.push("", "ERRORS:", ...rep.errors.map((e) => `  ${e}`));
  out.push(`total ${(rep.totalMs / 1000).toFixed(1)} s`);
  return out.join("\n");
}

// ---------------------------------------------------------------- main

async function main(opts: Options, log: Log): Promise<number> {
  const started = performance.now();
  const budget = new AbortController();
  const onSignal = () => budget.abort("interrupted");
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  // With --wait-quiet each level also waits (up to LEVEL_QUIET_MS) for a quiet machine first.
  const levelQuietMs = Math.min(opts.waitQuietMs, LEVEL_QUIET_MS);
  const hardTimer = setTimeout(() => {
    console.error("[scaling] cleanup did not finish; exiting");
    process.exit(3);
  }, opts.waitQuietMs + opts.levels.length * levelQuietMs + opts.timeoutMs + 45_000);
  hardTimer.unref();
  let budgetTimer: NodeJS.Timeout | undefined;

  const errors: string[] = [];
  const { json: _json, ...shown } = opts;
  const report: Report = {
    bench: "ado-scaling",
    at: new Date().toISOString(),
    host: { node: process.version, cpus: 0, natsServer: "?" },
    options: shown,
    levels: [],
    git: [],
    errors,
    totalMs: 0,
  };
  let server: EmbeddedServer | undefined;
  let repo: string | undefined;
  try {
    server = await EmbeddedServer.start({ logger: silentLogger });
    const natsPid = findChild(server.pid, "nats-server");
    report.host.natsServer = String(natsPid ?? "?");
    const meter = new Meter(natsPid);
    report.host.cpus = meter.cores;
    report.host.backgroundCpu = await waitQuiet(meter, opts.waitQuietMs, log);
    // The budget covers the measurements, not the waits for quiet.
    budgetTimer = setTimeout(() => budget.abort(`time budget of ${opts.timeoutMs / 1000} s`), opts.timeoutMs + opts.levels.length * levelQuietMs);
    repo = await makeRepo();
    const ctx: Ctx = { opts, server, meter, repo, signal: budget.signal, log };
    for (const others of [0, Math.max(...opts.levels) - 1]) {
      if (budget.signal.aborted || (others === 0 && report.git.length)) break;
      try {
        log(`git worktree costs with ${others} other worktrees present`);
        report.git.push(await gitCosts(repo, opts.quick ? 5 : 10, others));
      } catch (err) {
        errors.push(`git costs: ${(err as Error).message}`);
      }
    }
    for (const p of opts.levels) {
      if (budget.signal.aborted) break;
      const n = opts.tasks ?? opts.waves * p;
      try {
        if (levelQuietMs) await waitQuiet(meter, levelQuietMs, log);
        log(`P=${p}: ${p} workers x 1 slot, ${n} tasks of sleep ${opts.sleepSec}`);
        const r = await level(ctx, p);
        log(`P=${p}: ${r.wallMs} ms, ${r.tasksPerSec} tasks/s, overhead/task ${r.overheadPerTaskMs} ms (other CPU ${r.cpu.other ?? "?"}%)`);
        report.levels.push(r);
      } catch (err) {
        errors.push(`P=${p}: ${budget.signal.aborted ? `stopped: ${String(budget.signal.reason)}; ` : ""}${(err as Error).message}`);
      }
    }
    const base = report.levels.find((l) => l.parallelism === 1);
    if (base) {
      report.overheadPerTaskAtP1Ms = base.overheadPerTaskMs;
      for (const l of report.levels) {
        l.speedup = r2(l.tasksPerSec / base.tasksPerSec);
        l.efficiency = r3(l.speedup / l.parallelism);
      }
    }
  } catch (err) {
    errors.push((err as Error).stack ?? String(err));
  } finally {
    clearTimeout(budgetTimer);
    await server?.stop().catch((err) => errors.push(`server stop: ${(err as Error).message}`));
    if (repo) await rm(repo, { recursive: true, force: true }).catch(() => undefined);
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
  report.totalMs = Math.round(performance.now() - started);
  printReport(report, opts.json, render);
  return errors.length ? 1 : 0;
}

runMain("scaling", parseArgs, main);
