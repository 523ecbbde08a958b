/**
 * Merge throughput benchmark: task branches merged per second into an integration
 * branch with no conflicts, by the merge coordinator's git side (integrate), per mode.
 * The issue's figure: branches merged per second into an integration branch with no
 * conflicts. No server is needed: this is git work only.
 *
 *   npx tsx bench/merge.ts                  # full (~1-2 min)
 *   npx tsx bench/merge.ts --quick          # smoke (~15 s)
 *   npx tsx bench/merge.ts --json           # one JSON object on stdout
 *   npx tsx bench/merge.ts --branches 100 --commits 3 --files 100,10000
 *   npx tsx bench/merge.ts --modes merge,linear,linear-cherry-pick
 *   npx tsx bench/merge.ts --wait-quiet 60  # wait for other processes to go quiet first
 *
 * Setup (untimed), per repository size: a repository of F files in one commit (built
 * with `git fast-import`, no checkout), then B task branches from it, each of C commits
 * adding its own file and editing its own existing file, so no two tasks conflict.
 *
 * Measures, per mode, B sequential integrations into a fresh integration branch at the
 * root, each timed with performance.now() around the call (ms): branches/s = B / total.
 * The linear-* alternatives, slow on a big repository, take the first --alt-branches.
 *   merge               integrate(mode merge): the first is a fast-forward, then merge commits
 *   merge-batch         integrateBatch(mode merge), --batch tasks per call (8): what the merge
 *                       coordinator does with the requests waiting; per-branch time is the
 *                       call's time over its tasks
 *   squash              integrate(mode squash): one commit per task
 *   linear              integrate(mode linear): each task's C commits replayed with
 *                       merge-tree onto a throwaway parent (no work tree; what ado uses)
 *   linear-cherry-pick  an alternative for linear on git 2.39: a scratch worktree at the
 *                       target, `git cherry-pick` of the C commits, update-ref CAS, remove
 *   linear-read-tree    the other alternative: per commit, a temporary index with
 *                       `read-tree -m <parent> <head> <commit>`, write-tree, commit-tree
 *                       (trivial merges only here: a file changed on both sides would
 *                       need merge-file per path, and renames are not detected)
 *   mergeIntoBranch     the previous merge function (merge mode, no rules/validation), as a
 *                       baseline for integrate's overhead
 * After each mode the integration branch is checked to hold every task's files (ok).
 * Figures are printed, never asserted.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import {
  compareAndSwap,
  createBranchIfAbsent,
  git,
  gitBytes,
  gitText,
  integrate,
  integrateBatch,
  mergeIntoBranch,
  type MergeMode,
  readBranch,
  SCRATCH_GIT_OPTIONS,
  withScratchWorktree,
} from "../src/git/internal.js";
import { CpuMeter } from "./procstat.js";
import { printReport, runMain, waitQuietOn, flagValues, parseFlags, type Log } from "./harness.js";
import { r1, r2, summarize, table, type Summary } from "./stats.js";

// ---------------------------------------------------------------- options

const MODES = ["merge", "merge-batch", "squash", "linear", "linear-cherry-pick", "linear-read-tree", "mergeIntoBranch"] as const;
type Mode = (typeof MODES)[number];

interface Options {
  branches: number;
  /** Branches for the alternative linear implementations (slow on big repositories). */
  altBranches: number;
  commits: number;
  /** Tasks per integrateBatch call in mode merge-batch. */
  batch: number;
  files: number[];
  modes: Mode[];
  json: boolean;
  quick: boolean;
  waitQuietMs: number;
}

const USAGE = `usage: tsx bench/merge.ts [--quick] [--json] [--branches N] [--alt-branches N] [--commits N] [--batch N] [--files N,...] [--modes ${MODES.join(",")}] [--wait-quiet SEC]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = {
    branches: quick ? 20 : 60,
    altBranches: quick ? 10 : 15,
    commits: 2,
    batch: 8,
    files: quick ? [100] : [100, 10_000],
    modes: [...MODES],
    json: false,
    quick,
    waitQuietMs: 0,
  };
  const { int, ints, oneOf } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--branches": (v, f) => (o.branches = int(v, f, 2)),
    "--alt-branches": (v, f) => (o.altBranches = int(v, f, 1)),
    "--commits": (v, f) => (o.commits = int(v, f, 1)),
    "--batch": (v, f) => (o.batch = int(v, f, 1)),
    "--files": (v, f) => (o.files = ints(v, f, 1)),
    "--modes": (v, f) => (o.modes = oneOf(v, f, MODES)),
  });
  return o;
}

// ---------------------------------------------------------------- fixture

interface Fixture {
  repo: string;
  root: string;
  /** Task branch heads, in merge order. */
  tasks: string[];
  setupMs: number;
}

/**
 * A repository of `files` files and `branches` task branches of `commits` commits each,
 * written by one `git fast-import` (seconds for 10,000 files, no checkout).
 */
function makeFixture(dir: string, files: number, branches: number, commits: number): Fixture {
  const started = performance.now();
  const repo = path.join(dir, "repo");
  execFileSync("git", ["init", "-q", "-b", "main", repo]);
  const chunks: string[] = [];
  const data = (s: string) => `data ${Buffer.byteLength(s)}\n${s}\n`;
  const who = (name: string, t: number) => `${name} <${name.toLowerCase()}@example.com> ${1_700_000_000 + t} +0000\n`;
  chunks.push("commit refs/heads/main\nmark :1\n", `committer ${who("Bench", 0)}`, data("initial"));
  for (let f = 0; f < files; f++) chunks.push(`M 100644 inline src/dir${f % 100}/file${f}.txt\n`, data(`file ${f}\nline 2\nline 3\n`));
  let mark = 1;
  for (let b = 0; b < branches; b++) {
    let parent = ":1";
    for (let c = 0; c < commits; c++) {
      mark++;
      chunks.push(`commit refs/heads/task/${b}\nmark :${mark}\n`, `author ${who(`Author${b}`, mark)}`, `committer ${who("Bench", mark)}`);
      chunks.push(data(`task ${b}: step ${c}`), `from ${parent}\n`);
      chunks.push(`M 100644 inline tasks/task${b}-${c}.txt\n`, data(`task ${b} commit ${c}\n`));
      // Each task also edits "its" existing file (one the others leave alone).
      chunks.push(`M 100644 inline src/dir${b % files % 100}/file${b % files}.txt\n`, data(`file ${b % files}\nedited by task ${b} in commit ${c}\nline 3\n`));
      parent = `:${mark}`;
    }
  }
  execFileSync("git", ["fast-import", "--quiet"], { cwd: repo, input: chunks.join(""), maxBuffer: 1 << 30 });
  const sha = (ref: string) => execFileSync("git", ["rev-parse", ref], { cwd: repo, encoding: "utf8" }).trim();
  return {
    repo,
    root: sha("main"),
    tasks: Array.from({ length: branches }, (_, b) => sha(`task/${b}`)),
    setupMs: Math.round(performance.now() - started),
  };
}

// ---------------------------------------------------------------- modes

/** The alternative linear implementation measured against ado's: cherry-pick in a scratch worktree. */
async function cherryPickInto(repo: string, target: string, source: string, base: string, scratchDir: string): Promise<void> {
  const old = (await readBranch(repo, target))!;
  const commits = (await git(repo, ["rev-list", "--reverse", "--no-merges", source, `^${base}`, `^${old}`])).split("\n").filter(Boolean);
  const head = await withScratchWorktree(repo, scratchDir, old, async (dir) => {
    await git(dir, [...SCRATCH_GIT_OPTIONS, "-c", "user.name=ado", "-c", "user.email=ado@localhost", "cherry-pick", "--allow-empty", ...commits]);
    return (await git(dir, ["rev-parse", "HEAD"])).trim();
  });
  if (!(await compareAndSwap(repo, target, head, old))) throw new Error("target moved during the benchmark");
}

/** The other alternative: a three-way read-tree into a temporary index per replayed commit. */
async function readTreeInto(repo: string, target: string, source: string, base: string, scratchDir: string): Promise<void> {
  const old = (await readBranch(repo, target))!;
  const commits = (await git(repo, ["rev-list", "--reverse", "--no-merges", source, `^${base}`, `^${old}`])).split("\n").filter(Boolean);
  mkdirSync(scratchDir, { recursive: true });
  const env = { GIT_INDEX_FILE: path.join(scratchDir, `index-${process.pid}`) };
  let head = old;
  try {
    for (const c of commits) {
      await gitBytes(repo, ["read-tree", "-m", "-i", "--aggressive", `${c}^`, head, c], { env });
      if ((await gitText(repo, ["ls-files", "-u"], { env })) !== "") throw new Error("linear-read-tree: a content merge would be needed");
      const tree = await gitText(repo, ["write-tree"], { env });
      const message = await gitText(repo, ["log", "-1", "--format=%B", c]);
      head = await gitText(repo, ["-c", "user.name=ado", "-c", "user.email=ado@localhost", "commit-tree", tree, "-p", head, "-F", "-"], { input: message });
    }
  } finally {
    rmSync(env.GIT_INDEX_FILE, { force: true });
  }
  if (!(await compareAndSwap(repo, target, head, old))) throw new Error("target moved during the benchmark");
}

interface ModeRow {
  files: number;
  mode: Mode;
  branches: number;
  commitsPerBranch: number;
  totalMs: number;
  branchesPerSec: number;
  ms: Summary;
  /** The integration branch holds every task's files. */
  ok: boolean;
  /** CPU of this process and of its git children during the mode (% of one core). */
  cpu: { node?: number; git?: number; other?: number };
}

async function runMode(fx: Fixture, mode: Mode, files: number, commits: number, scratchDir: string, meter: CpuMeter, branches: number, batch: number): Promise<ModeRow> {
  const target = `ado/bench-${mode}/integration`;
  await createBranchIfAbsent(fx.repo, target, fx.root);
  const tasks = fx.tasks.slice(0, branches);
  const times: number[] = [];
  const c0 = childTicks();
  const s0 = meter.snapshot();
  const started = performance.now();
  for (let i = 0; mode === "merge-batch" && i < tasks.length; i += batch) {
    const t0 = performance.now();
    const sources = tasks.slice(i, i + batch);
    const r = await integrateBatch({ repo: fx.repo, target, mode: "merge", scratchDir, items: sources.map((source, k) => ({ source, message: `merge task ${i + k}` })) });
    const bad = r.outcomes.find((o) => o.kind !== "merged");
    if (bad) throw new Error(`batch at ${i}: ${bad.kind}`);
    const each = (performance.now() - t0) / sources.length;
    for (const _ of sources) times.push(each);
  }
  for (const [i, source] of (mode === "merge-batch" ? [] : tasks).entries()) {
    const t0 = performance.now();
    if (mode === "mergeIntoBranch") {
      await mergeIntoBranch(fx.repo, { target, source, message: `merge task ${i}` });
    } else if (mode === "linear-cherry-pick") {
      await cherryPickInto(fx.repo, target, source, fx.root, scratchDir);
    } else if (mode === "linear-read-tree") {
      await readTreeInto(fx.repo, target, source, fx.root, scratchDir);
    } else {
      const outcome = await integrate({ repo: fx.repo, target, source, base: fx.root, mode: mode as MergeMode, message: `merge task ${i}`, scratchDir });
      if (outcome.kind !== "merged") throw new Error(`task ${i} in mode ${mode}: ${outcome.kind}`);
    }
    times.push(performance.now() - t0);
  }
  const totalMs = performance.now() - started;
  const use = meter.use(s0, meter.snapshot());
  const gitCpu = childCpu(c0, childTicks(), totalMs);
  const other = use.machine !== undefined && use.node !== undefined && gitCpu !== undefined ? r1(Math.max(0, use.machine * meter.cores - use.node - gitCpu)) : undefined;
  return {
    files,
    mode,
    branches: tasks.length,
    commitsPerBranch: commits,
    totalMs: Math.round(totalMs),
    branchesPerSec: r1((tasks.length / totalMs) * 1000),
    ms: summarize(times.map((t) => r2(t))),
    ok: holdsEveryTask(fx, target, commits, tasks.length),
    cpu: { node: use.node, git: gitCpu, other },
  };
}

function holdsEveryTask(fx: Fixture, target: string, commits: number, branches: number): boolean {
  const names = new Set(execFileSync("git", ["ls-tree", "-r", "--name-only", target, "tasks/"], { cwd: fx.repo, encoding: "utf8", maxBuffer: 1 << 28 }).split("\n"));
  return fx.tasks.slice(0, branches).every((_, b) => Array.from({ length: commits }, (_, c) => `tasks/task${b}-${c}.txt`).every((n) => names.has(n)));
}

// ---------------------------------------------------------------- cpu

/** cutime + cstime of this process (its reaped children: the git processes), in ticks. */
function childTicks(): number | undefined {
  try {
    const s = readFileSync(`/proc/${process.pid}/stat`, "utf8");
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return Number(rest[13]) + Number(rest[14]);
  } catch {
    return undefined;
  }
}

function childCpu(a: number | undefined, b: number | undefined, ms: number): number | undefined {
  if (a === undefined || b === undefined || ms <= 0) return undefined;
  let hz = 100;
  try {
    hz = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    // keep 100
  }
  return r1(((b - a) / hz / (ms / 1000)) * 100);
}


/** Waits (up to maxMs) for a quiet machine (see harness.ts): other processes than this one and its git children. */
const waitQuiet = (meter: CpuMeter, maxMs: number, log: Log) =>
  waitQuietOn(
    meter,
    (x, y) => {
      const u = meter.use(x, y);
      return u.machine === undefined || u.node === undefined ? undefined : r1(Math.max(0, u.machine * meter.cores - u.node));
    },
    maxMs,
    log,
  );

// ---------------------------------------------------------------- report

interface Report {
  bench: "ado-merge";
  at: string;
  host: { node: string; git: string; cpus: number; backgroundCpu?: number };
  options: Omit<Options, "json">;
  setup: { files: number; ms: number }[];
  rows: ModeRow[];
  totalMs: number;
}

function render(rep: Report): string {
  const out: string[] = [];
  out.push(`ado merge benchmark  ${rep.at}  node ${rep.host.node}, ${rep.host.git}, ${rep.host.cpus} cpus`);
  const worstOther = Math.max(0, ...rep.rows.map((r) => r.cpu.other ?? 0));
  out.push(`other processes: ${rep.host.backgroundCpu ?? "?"}% of a core before, at most ${worstOther}% during a mode`);
  if (worstOther > 20 || (rep.host.backgroundCpu ?? 0) > 20) out.push("WARNING: other processes used > 20% of a core: figures are skewed; rerun on a quiet machine.");
  out.push(
    `${rep.options.branches} task branches (the first ${rep.options.altBranches} for the linear-* alternatives) of ${rep.options.commits} commits each (own files, no conflicts), merged one after another into a fresh integration branch per mode`,
    `setup (untimed): ${rep.setup.map((s) => `${s.files} files ${s.ms} ms`).join(", ")}`,
    "",
  );
  out.push(
    table(
      ["files", "mode", "branches", "branches/s", "total ms", "p50 ms", "p90 ms", "max ms", "node %", "git %", "ok"],
      rep.rows.map((r) => [r.files, r.mode, r.branches, r.branchesPerSec, r.totalMs, r.ms.p50, r.ms.p90, r.ms.max, r.cpu.node, r.cpu.git, r.ok ? "yes" : "NO"]),
    ),
  );
  out.push("", "node % / git %: CPU of this process / of its git child processes, in % of one core.");
  out.push(`total ${(rep.totalMs / 1000).toFixed(1)} s`);
  return out.join("\n");
}

// ---------------------------------------------------------------- main

async function main(o: Options, log: Log): Promise<number> {
  const started = performance.now();
  const meter = new CpuMeter({ node: `/proc/${process.pid}/stat` });
  const backgroundCpu = await waitQuiet(meter, o.waitQuietMs, log);
  const dir = await mkdtemp(path.join(tmpdir(), "ado-bench-merge-"));
  const rows: ModeRow[] = [];
  const setup: Report["setup"] = [];
  try {
    for (const files of o.files) {
      log(`repository of ${files} files, ${o.branches} task branches x ${o.commits} commits`);
      const fxDir = path.join(dir, `f${files}`);
      mkdirSync(fxDir, { recursive: true });
      const fx = makeFixture(fxDir, files, o.branches, o.commits);
      setup.push({ files, ms: fx.setupMs });
      for (const mode of o.modes) {
        log(`  ${mode}`);
        const branches = mode.startsWith("linear-") ? Math.min(o.altBranches, o.branches) : o.branches;
        rows.push(await runMode(fx, mode, files, o.commits, path.join(fxDir, "scratch"), meter, branches, o.batch));
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const report: Report = {
    bench: "ado-merge",
    at: new Date().toISOString(),
    host: { node: process.version, git: execFileSync("git", ["--version"], { encoding: "utf8" }).trim(), cpus: meter.cores, backgroundCpu },
    options: { branches: o.branches, altBranches: o.altBranches, commits: o.commits, batch: o.batch, files: o.files, modes: o.modes, quick: o.quick, waitQuietMs: o.waitQuietMs },
    setup,
    rows,
    totalMs: Math.round(performance.now() - started),
  };
  printReport(report, o.json, render);
  return rows.every((r) => r.ok) ? 0 : 1;
}

runMain("merge", parseArgs, main);
