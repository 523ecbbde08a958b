/**
 * Worktree benchmark: ado's create + remove of a task worktree (WorktreeManager.add and
 * .remove, as the worker and the merge coordinator call them) against raw
 * `git worktree add -b` / `git worktree remove` on the same repository, on a small
 * repository and on one with 10,000 files.
 *
 *   npx tsx bench/worktrees.ts                 # full (~1-3 min: a 10,000-file checkout is slow)
 *   npx tsx bench/worktrees.ts --quick         # smoke (~20 s)
 *   npx tsx bench/worktrees.ts --json          # one JSON object on stdout
 *   npx tsx bench/worktrees.ts --reps 50 --large-reps 10 --files 10000 --sizes small,large
 *   npx tsx bench/worktrees.ts --trace         # also: which git processes each op starts
 *   npx tsx bench/worktrees.ts --include       # also: ado with an include list (.env copied,
 *                                              # node_modules symlinked), as configured
 *   npx tsx bench/worktrees.ts --wait-quiet 60 # wait for other processes to go quiet first
 *
 * Each round times, in alternating order so that drift hits both sides alike:
 *   - ado:  `WorktreeManager.add()` (new branch `ado/...`, locked with a reason) then
 *           `WorktreeManager.remove()` (refuses uncommitted work, unlocks, removes);
 *   - raw:  `git worktree add -b <branch> <path> <base>` then `git worktree remove <path>`,
 *           through execFile exactly as ado runs git, so the difference is ado's own work
 *           (extra git processes, file system probes, JavaScript);
 *   - raw locked (reference): `git worktree add --lock --reason ...`, `git worktree unlock`,
 *           `git worktree remove`: what locking costs in plain git.
 * Two untimed warm-up rounds come first. Branches are left in place (as ado leaves task
 * branches), so later rounds see more refs, as a long-lived repository would.
 *
 * Reported per repository and op: median and p90 in ms, and the ratio ado / raw of the
 * medians (aim: <= 1.2 for add + remove). `--trace` runs more rounds of ado and raw
 * git with GIT_TRACE2_EVENT and reports, per op, the git processes started and the wall
 * time inside and outside them: the profile that matters here, since the time is spent
 * in git, and steady where the checkout's own time is not (a 10,000-file checkout on a
 * busy disk swings by seconds). Figures are printed, never asserted.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { WorktreeManager } from "../src/git/index.js";
import { silentLogger } from "../src/runtime/logger.js";
import { printReport, runMain, waitQuietOn, flagValues, parseFlags, type Log } from "./harness.js";
import { CpuMeter } from "./procstat.js";
import { percentile, r1, r2, table } from "./stats.js";

// ---------------------------------------------------------------- options

type Size = "small" | "large";

interface Options {
  /** Timed rounds on the small repository. */
  reps: number;
  /** Timed rounds on the large one (each checks out every file, so fewer). */
  largeReps: number;
  /** Files in the large repository. */
  files: number;
  sizes: Size[];
  trace: boolean;
  include: boolean;
  json: boolean;
  quick: boolean;
  waitQuietMs: number;
}

const USAGE = `usage: tsx bench/worktrees.ts [--quick] [--json] [--reps N] [--large-reps N] [--files N] [--sizes small,large] [--trace] [--include]
       [--wait-quiet SEC]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = { reps: quick ? 8 : 30, largeReps: quick ? 2 : 8, files: 10_000, sizes: ["small", "large"], trace: false, include: false, json: false, quick, waitQuietMs: 0 };
  const { int, oneOf } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--trace": { on: () => (o.trace = true) },
    "--include": { on: () => (o.include = true) },
    "--reps": (v, f) => (o.reps = int(v, f, 1)),
    "--large-reps": (v, f) => (o.largeReps = int(v, f, 1)),
    "--files": (v, f) => (o.files = int(v, f, 1)),
    "--sizes": (v, f) => (o.sizes = oneOf(v, f, ["small", "large"] as const)),
  });
  return o;
}

// ---------------------------------------------------------------- helpers


/** `git <args>` in `cwd` through execFile, as src/git/exec.ts runs it. */
function git(cwd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("git", args, { cwd, env: { ...env, GIT_TERMINAL_PROMPT: "0" }, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`git ${args.join(" ")}: ${stderr || err.message}`)) : resolve(stdout.trim()),
    );
  });
}

/**
 * A scratch repository with one commit: `files` files spread over directories of 100
 * (about 60 bytes each), plus a README. Also an untracked `.env` and a `node_modules`
 * directory, which only the `--include` rows use.
 */
async function makeRepo(files: number): Promise<{ repo: string; dir: string; base: string }> {
  const dir = await mkdtemp(join(tmpdir(), "ado-bench-wtrepo-"));
  const repo = join(dir, "repo");
  await mkdir(repo);
  await git(repo, ["init", "-q", "-b", "main"]);
  await writeFile(join(repo, "README.md"), "# worktree bench\n");
  for (let d = 0; d * 100 < files; d++) {
    await mkdir(join(repo, "src", `d${d}`), { recursive: true });
    const n = Math.min(100, files - d * 100);
    await Promise.all(
      Array.from({ length: n }, (_, f) => writeFile(join(repo, "src", `d${d}`, `f${f}.ts`), `export const v${d}_${f} = ${d * 100 + f}; // bench\n`)),
    );
  }
  await git(repo, ["add", "-A"]);
  await git(repo, ["-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m", "initial"]);
  await writeFile(join(repo, ".gitignore"), "node_modules/\n.env\n");
  await writeFile(join(repo, ".env"), "SECRET=1\n");
  await mkdir(join(repo, "node_modules", "left-pad"), { recursive: true });
  await writeFile(join(repo, "node_modules", "left-pad", "index.js"), "module.exports = 1;\n");
  return { repo, dir, base: await git(repo, ["rev-parse", "HEAD"]) };
}

/** Times `fn` in ms. */
async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

interface OpStats {
  p50: number;
  p90: number;
}

function stats(xs: number[]): OpStats {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: r2(percentile(s, 50)), p90: r2(percentile(s, 90)) };
}

interface Row {
  size: Size;
  files: number;
  variant: "ado" | "ado+include" | "raw" | "raw locked";
  add: OpStats;
  remove: OpStats;
  /** add + remove of one round. */
  total: OpStats;
}

/** One variant's add and remove, round `i`. */
type Variant = (i: number) => Promise<{ add: number; remove: number }>;

interface RepoResult {
  rows: Row[];
  /** ado p50 / raw p50 for add, remove, add + remove. */
  ratio: { add: number; remove: number; total: number };
  ratioInclude?: { add: number; remove: number; total: number };
  /** With --trace: git processes per op and the time inside and outside git, ado and raw. */
  trace?: TraceResult;
}

// ---------------------------------------------------------------- one repository

async function benchRepo(size: Size, opts: Options, log: (m: string) => void): Promise<RepoResult> {
  const files = size === "small" ? 10 : opts.files;
  log(`${size}: making a repository with ${files} files`);
  const { repo, dir, base } = await makeRepo(files);
  try {
    const adoDir = join(dir, "ado-wt");
    const rawDir = join(dir, "raw-wt");
    const ado = new WorktreeManager({ repo, baseDir: adoDir, logger: silentLogger });
    const variants: Record<Row["variant"], Variant> = {
      ado: async (i) => {
        let path = "";
        const add = await time(async () => ({ path } = await ado.add({ name: `r/a${i}`, branch: `ado/r/a${i}`, base, lockReason: "ado bench" })));
        return { add, remove: await time(() => ado.remove(path)) };
      },
      raw: async (i) => {
        const path = join(rawDir, `w${i}`);
        const add = await time(() => git(repo, ["worktree", "add", "-q", "-b", `raw/w${i}`, path, base]));
        return { add, remove: await time(() => git(repo, ["worktree", "remove", path])) };
      },
      "raw locked": async (i) => {
        const path = join(rawDir, `l${i}`);
        const add = await time(() => git(repo, ["worktree", "add", "-q", "--lock", "--reason", "bench", "-b", `raw/l${i}`, path, base]));
        const remove = await time(async () => {
          await git(repo, ["worktree", "unlock", path]);
          await git(repo, ["worktree", "remove", path]);
        });
        return { add, remove };
      },
      "ado+include": async () => ({ add: NaN, remove: NaN }),
    };
    if (opts.include) {
      const withInclude = await includeManager(repo, join(dir, "ado-inc-wt"));
      variants["ado+include"] = async (i) => {
        let path = "";
        const add = await time(async () => ({ path } = await withInclude.add({ name: `r/i${i}`, branch: `ado/r/i${i}`, base })));
        return { add, remove: await time(() => withInclude.remove(path)) };
      };
    }
    const names = (Object.keys(variants) as Row["variant"][]).filter((v) => v !== "ado+include" || opts.include);
    const samples = new Map(names.map((n) => [n, { add: [] as number[], remove: [] as number[], total: [] as number[] }]));
    const reps = size === "small" ? opts.reps : opts.largeReps;
    for (let i = -2; i < reps; i++) {
      // Rotate the order every round: no variant always runs right after another.
      const order = names.map((_, k) => names[(k + i + 2) % names.length]!);
      for (const name of order) {
        const r = await variants[name](i + 2);
        if (i < 0) continue; // warm-up
        const s = samples.get(name)!;
        s.add.push(r.add);
        s.remove.push(r.remove);
        s.total.push(r.add + r.remove);
      }
    }
    const rows: Row[] = names.map((variant) => {
      const s = samples.get(variant)!;
      return { size, files, variant, add: stats(s.add), remove: stats(s.remove), total: stats(s.total) };
    });
    const row = (v: Row["variant"]) => rows.find((r) => r.variant === v)!;
    const ratioOf = (v: Row["variant"]) => ({
      add: r2(row(v).add.p50 / row("raw").add.p50),
      remove: r2(row(v).remove.p50 / row("raw").remove.p50),
      total: r2(row(v).total.p50 / row("raw").total.p50),
    });
    const result: RepoResult = { rows, ratio: ratioOf("ado"), ...(opts.include ? { ratioInclude: ratioOf("ado+include") } : {}) };
    if (opts.trace) result.trace = await traceOps(ado, repo, base, dir, size === "small" ? 10 : 3);
    return result;
  } finally {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * A manager configured as a user would for a Node project: `.env` copied, node_modules
 * symlinked. Built through `include` options when this ado has them; without them (an
 * older ado, for before/after figures) the rows repeat the plain manager's.
 */
async function includeManager(repo: string, baseDir: string): Promise<WorktreeManager> {
  const opts = { repo, baseDir, logger: silentLogger, include: { include: [".env"], dependencies: ["node_modules"], dependencyMode: "symlink" } };
  return new WorktreeManager(opts as ConstructorParameters<typeof WorktreeManager>[0]);
}

/** One op's profile: git processes it started, and where its wall time went (medians, ms). */
interface OpTrace {
  /** Top-level git processes per op, by subcommand (git's own children not counted). */
  processes: Record<string, number>;
  wallMs: number;
  /** Sum of the git processes' own run times (trace2 `exit` t_abs). */
  inGitMs: number;
  /** wall - in git: spawning, file system work and JavaScript. */
  outsideGitMs: number;
}

interface TraceResult {
  rounds: number;
  add: { ado: OpTrace; raw: OpTrace };
  remove: { ado: OpTrace; raw: OpTrace };
}

/**
 * The profile that matters here: the time is spent in git, not in node, so this runs
 * more rounds of ado and raw git with GIT_TRACE2_EVENT set (a file per op), and splits
 * each op's wall time into what its git processes took (trace2 `exit` events) and the
 * rest. On a noisy file system the checkout's time swings by seconds, but ado's
 * overhead is the "outside git" column plus any extra git process, and both are steady.
 */
async function traceOps(ado: WorktreeManager, repo: string, base: string, dir: string, rounds: number): Promise<TraceResult> {
  const saved = process.env.GIT_TRACE2_EVENT;
  const wall = { add: { ado: [] as number[], raw: [] as number[] }, remove: { ado: [] as number[], raw: [] as number[] } };
  const files = (op: string, who: string, i: number) => join(dir, `trace-${op}-${who}-${i}.json`);
  const traced = async (file: string, fn: () => Promise<unknown>) => {
    process.env.GIT_TRACE2_EVENT = file;
    try {
      return await time(fn);
    } finally {
      if (saved === undefined) delete process.env.GIT_TRACE2_EVENT;
      else process.env.GIT_TRACE2_EVENT = saved;
    }
  };
  for (let i = 0; i < rounds; i++) {
    let path = "";
    wall.add.ado.push(await traced(files("add", "ado", i), async () => ({ path } = await ado.add({ name: `trace/t${i}`, branch: `ado/trace/t${i}`, base }))));
    wall.remove.ado.push(await traced(files("remove", "ado", i), () => ado.remove(path)));
    const raw = join(dir, "raw-trace", `t${i}`);
    wall.add.raw.push(await traced(files("add", "raw", i), () => git(repo, ["worktree", "add", "-q", "-b", `raw/trace${i}`, raw, base])));
    wall.remove.raw.push(await traced(files("remove", "raw", i), () => git(repo, ["worktree", "remove", raw])));
  }
  const median = (xs: number[]) => r2(percentile([...xs].sort((a, b) => a - b), 50));
  const profile = async (op: "add" | "remove", who: "ado" | "raw"): Promise<OpTrace> => {
    const processes: Record<string, number> = {};
    const inGit: number[] = [];
    for (let i = 0; i < rounds; i++) {
      let sum = 0;
      for (const line of (await readFile(files(op, who, i), "utf8").catch(() => "")).split("\n")) {
        if (!line) continue;
        const e = JSON.parse(line) as { event: string; sid: string; argv?: string[]; t_abs?: number };
        // A child git process's sid is its parent's sid + "/" + its own.
        if (e.sid.includes("/")) continue;
        if (e.event === "exit") sum += (e.t_abs ?? 0) * 1000;
        if (e.event !== "start") continue;
        const argv = (e.argv ?? []).slice(1).filter((a) => !a.startsWith("-"));
        const key = argv.slice(0, argv[0] === "worktree" ? 2 : 1).join(" ");
        processes[key] = (processes[key] ?? 0) + 1 / rounds;
      }
      inGit.push(sum);
    }
    for (const k of Object.keys(processes)) processes[k] = r1(processes[k]!);
    const outside = wall[op][who].map((w, i) => w - inGit[i]!);
    return { processes, wallMs: median(wall[op][who]), inGitMs: median(inGit), outsideGitMs: median(outside) };
  };
  return {
    rounds,
    add: { ado: await profile("add", "ado"), raw: await profile("add", "raw") },
    remove: { ado: await profile("remove", "ado"), raw: await profile("remove", "raw") },
  };
}

// ---------------------------------------------------------------- report

interface Report {
  bench: "ado-worktrees";
  at: string;
  host: { node: string; git: string; cpus: number; backgroundCpu?: number };
  options: Omit<Options, "json">;
  repos: RepoResult[];
  errors: string[];
  totalMs: number;
}

function render(rep: Report): string {
  const out: string[] = [];
  out.push(
    `ado worktree benchmark (${rep.host.git}, node ${rep.host.node}, ${rep.host.cpus} cpus; ${rep.options.reps} rounds small, ${rep.options.largeReps} large; ms)`,
  );
  out.push("");
  const rows = rep.repos.flatMap((r) =>
    r.rows.map((row) => [
      row.size,
      row.files,
      row.variant,
      row.add.p50,
      row.add.p90,
      row.remove.p50,
      row.remove.p90,
      row.total.p50,
      row.total.p90,
    ]),
  );
  out.push(table(["repo", "files", "variant", "add p50", "add p90", "remove p50", "remove p90", "add+remove p50", "p90"], rows));
  out.push("");
  out.push("ratio ado / raw git (medians; aim: add+remove <= 1.2):");
  out.push(
    table(
      ["repo", "variant", "add", "remove", "add+remove"],
      rep.repos.flatMap((r) => [
        [r.rows[0]!.size, "ado", r.ratio.add, r.ratio.remove, r.ratio.total],
        ...(r.ratioInclude ? [[r.rows[0]!.size, "ado+include", r.ratioInclude.add, r.ratioInclude.remove, r.ratioInclude.total]] : []),
      ]),
    ),
  );
  const traced = rep.repos.filter((r) => r.trace);
  if (traced.length) {
    const fmt = (o: Record<string, number>) => Object.entries(o).map(([k, v]) => `${k} x${v}`).join(", ") || "(none)";
    out.push("", "profile (--trace; medians, ms): git processes per op, and wall time inside and outside them");
    out.push(
      table(
        ["repo", "op", "who", "wall", "in git", "outside git", "git processes"],
        traced.flatMap((r) =>
          (["add", "remove"] as const).flatMap((op) =>
            (["ado", "raw"] as const).map((who) => {
              const t = r.trace![op][who];
              return [r.rows[0]!.size, op, who, t.wallMs, r2(t.inGitMs), r2(t.outsideGitMs), fmt(t.processes)];
            }),
          ),
        ),
      ),
    );
  }
  if (rep.host.backgroundCpu !== undefined && rep.host.backgroundCpu > 20) {
    out.push("", `warning: other processes used ${rep.host.backgroundCpu}% of a core before the run; figures are noisy`);
  }
  for (const e of rep.errors) out.push(`error: ${e}`);
  out.push("", `total ${r1(rep.totalMs / 1000)} s`);
  return out.join("\n");
}

// ---------------------------------------------------------------- main

async function main(opts: Options, log: Log): Promise<number> {
  const started = performance.now();
  const meter = new CpuMeter({ node: `/proc/${process.pid}/stat` });
  const { json: _json, ...shown } = opts;
  const report: Report = {
    bench: "ado-worktrees",
    at: new Date().toISOString(),
    host: { node: process.version, git: await git(process.cwd(), ["--version"]), cpus: meter.cores },
    options: shown,
    repos: [],
    errors: [],
    totalMs: 0,
  };
  report.host.backgroundCpu = await waitQuietOn(
    meter,
    (a, b) => {
      const u = meter.use(a, b);
      return u.machine === undefined ? undefined : r1(Math.max(0, u.machine * meter.cores - (u.node ?? 0)));
    },
    opts.waitQuietMs,
    log,
  );
  for (const size of opts.sizes) {
    try {
      report.repos.push(await benchRepo(size, opts, log));
    } catch (err) {
      report.errors.push(`${size}: ${(err as Error).message}`);
    }
  }
  report.totalMs = performance.now() - started;
  printReport(report, opts.json, render);
  return report.errors.length ? 1 : 0;
}

runMain("worktrees", parseArgs, main);
