/**
 * Agent adapter benchmark: how fast each adapter's parser reads its CLI's stream, and
 * what an adapter adds to running the CLI, measured against the fake CLIs
 * (test/fixtures/fake-agents), the only agent CLIs there are here.
 *
 *   npx tsx bench/agents.ts                  # full (~2-4 min on a busy 2-core box)
 *   npx tsx bench/agents.ts --quick          # smoke (~40 s)
 *   npx tsx bench/agents.ts --json           # one JSON object on stdout
 *   npx tsx bench/agents.ts --adapters claude,codex --reps 20 --lines 5000 --seconds 2
 *   npx tsx bench/agents.ts --wait-quiet 60  # wait for other processes to go quiet first
 *
 * Parsing: each fake's output for a run of `--lines`/4 tool calls is recorded once (a
 * straight spawn of the adapter's command line), then fed line by line to fresh parsers
 * (feed, end, outcome) for `--seconds` per adapter: lines/s and MB/s of parsing alone.
 *
 * Overhead, per round and adapter, in rotating order:
 *   bare     the fake spawned straight with the adapter's command line (child_process,
 *            no group, no parser): the floor, a node process starting and printing;
 *   runner   the same through runProcessGroup (process group, reaper registration);
 *   adapter  CliAgent.run (command building, the runner, line splitting, parsing, the
 *            idle and linger clocks, the outcome).
 * For each: spawn -> first output (bare, runner) or first typed event (adapter), and
 * last output -> result (the process closed, or run() resolved). Medians and p90 in ms;
 * `overhead` is adapter minus bare (medians). Figures are printed, never asserted.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { ADAPTERS, CliAgent, CLI_AGENT_NAMES, runProcessGroup, Suspender, type CliAdapter, type CliAgentName, type CommandSpec } from "../src/agents/index.js";
import { printReport, runMain, waitQuietOn, flagValues, parseFlags, type Log } from "./harness.js";
import { CpuMeter } from "./procstat.js";
import { r1, r2, summarize, table, type Summary } from "./stats.js";

// ---------------------------------------------------------------- options

interface Options {
  adapters: CliAgentName[];
  /** Timed rounds of the overhead measurement, per adapter and variant. */
  reps: number;
  /** About how many lines the recorded stream has (tool calls x ~4). */
  lines: number;
  /** Seconds of parsing per adapter. */
  seconds: number;
  /** Tool calls in each overhead run. */
  tools: number;
  json: boolean;
  quick: boolean;
  waitQuietMs: number;
}

const USAGE = `usage: tsx bench/agents.ts [--quick] [--json] [--adapters claude,codex,...] [--reps N] [--lines N] [--seconds S] [--tools N] [--wait-quiet SEC]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = { adapters: [...CLI_AGENT_NAMES], reps: quick ? 3 : 15, lines: quick ? 2_000 : 20_000, seconds: quick ? 0.5 : 2, tools: 4, json: false, quick, waitQuietMs: 0 };
  const { int, oneOf } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--adapters": (v, f) => (o.adapters = oneOf(v, f, CLI_AGENT_NAMES)),
    "--reps": (v, f) => (o.reps = int(v, f, 1)),
    "--lines": (v, f) => (o.lines = int(v, f, 10)),
    "--seconds": (v, f) => (o.seconds = int(v, f, 1)),
    "--tools": (v, f) => (o.tools = int(v, f, 0)),
  });
  return o;
}

// ---------------------------------------------------------------- setup

const FAKE_BIN = fileURLToPath(new URL("../test/fixtures/fake-agents/bin", import.meta.url));

interface Sandbox {
  repo: string;
  home: string;
  env: Record<string, string>;
}

async function sandbox(): Promise<Sandbox & { cleanup(): Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), "ado-bench-agents-"));
  const repo = join(root, "repo");
  const home = join(root, "home");
  execFileSync("git", ["init", "-q", "-b", "main", repo]);
  execFileSync("mkdir", ["-p", home]);
  return {
    repo,
    home,
    // aider needs its model's key; the others run on their (fake) logins.
    env: { PATH: `${FAKE_BIN}:${process.env.PATH ?? ""}`, HOME: home, OPENAI_API_KEY: "sk-bench" },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}

function specFor(adapter: CliAdapter, box: Sandbox, tools: number): CommandSpec {
  return adapter.buildCommand({
    prompt: "fix the off-by-one",
    cwd: box.repo,
    env: { ...box.env, FAKE_AGENT_TOOLS: String(tools) },
    ...(adapter.name === "codex" ? { options: { model: "gpt-5-codex" } } : {}),
  });
}

function childEnv(spec: CommandSpec): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...spec.env })) if (v !== undefined && !spec.unset.includes(k)) env[k] = v;
  return env;
}

interface Timing {
  /** Spawn to the first output (or event). */
  firstMs: number;
  /** Last output to the result. */
  tailMs: number;
}

/** The floor: the fake spawned straight, its output read and dropped. */
function runBare(spec: CommandSpec, cwd: string): Promise<Timing & { out: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    let last = 0;
    let out = "";
    const child = spawn(spec.bin, spec.args, { cwd, env: childEnv(spec), stdio: [typeof spec.stdin === "object" ? "pipe" : "ignore", "pipe", "pipe"] });
    if (typeof spec.stdin === "object") child.stdin!.end(spec.stdin.text);
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      last = performance.now();
      first ||= last;
      out += d;
    });
    child.stderr!.resume();
    child.once("error", reject);
    child.once("close", (code) => {
      const end = performance.now();
      if (code !== 0) return reject(new Error(`${spec.bin} exited ${code}`));
      resolve({ firstMs: first - t0, tailMs: end - last, out });
    });
  });
}

function ctxFor(box: Sandbox, adapter: CliAdapter, tools: number, onOutput: () => void) {
  return {
    cwd: box.repo,
    env: { ...box.env, FAKE_AGENT_TOOLS: String(tools) },
    task: { id: "t1", agent: adapter.name, prompt: "fix the off-by-one", priority: "normal", needs: [], retry: { attempts: 1, backoffMs: 0, factor: 2, maxBackoffMs: 0, jitter: 0 } } as never,
    signal: new AbortController().signal,
    suspender: new Suspender(),
    onOutput,
  };
}

/** Through the process runner, without the adapter's parsing and clocks. */
async function runRunner(spec: CommandSpec, box: Sandbox, adapter: CliAdapter, tools: number): Promise<Timing> {
  let first = 0;
  let last = 0;
  const t0 = performance.now();
  // The runner cannot feed stdin: the adapter's sh redirect is part of what is measured for Cursor.
  const outcome = await runProcessGroup(spec.bin, spec.args, {
    ...ctxFor(box, adapter, tools, () => {
      last = performance.now();
      first ||= last;
    }),
    env: spec.env,
  });
  const end = performance.now();
  if (!outcome.ok && adapter.name !== "cursor") throw new Error(`${adapter.name} through the runner: ${outcome.failure?.message}`);
  return { firstMs: first - t0, tailMs: end - last };
}

/** The whole adapter: CliAgent.run. */
async function runAdapter(box: Sandbox, adapter: CliAdapter, tools: number): Promise<Timing> {
  const agent = new CliAgent(adapter, adapter.name === "codex" ? { config: { model: "gpt-5-codex", args: [], env: {} } } : {});
  let firstEvent = 0;
  let last = 0;
  const t0 = performance.now();
  const outcome = await agent.run({
    ...ctxFor(box, adapter, tools, () => (last = performance.now())),
    onEvent: () => (firstEvent ||= performance.now()),
  });
  const end = performance.now();
  if (!outcome.ok) throw new Error(`${adapter.name} through CliAgent: ${outcome.failure?.message}`);
  return { firstMs: firstEvent - t0, tailMs: end - last };
}

// ---------------------------------------------------------------- measurements

interface ParseResult {
  lines: number;
  bytes: number;
  eventsPerLine: number;
  linesPerSec: number;
  mbPerSec: number;
}

function benchParse(adapter: CliAdapter, lines: string[], seconds: number): ParseResult {
  const bytes = lines.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  let events = 0;
  const once = () => {
    const p = adapter.parser({ model: "gpt-5-codex" });
    let n = 0;
    for (const l of lines) n += p.feed(l).length;
    n += p.end().length;
    p.outcome({ code: 0 });
    return n;
  };
  for (let i = 0; i < 3; i++) events = once(); // warm-up
  let runs = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    once();
    runs++;
  }
  const sec = (performance.now() - t0) / 1000;
  return { lines: lines.length, bytes, eventsPerLine: r2(events / lines.length), linesPerSec: Math.round((runs * lines.length) / sec), mbPerSec: r1((runs * bytes) / sec / 1e6) };
}

type Variant = "bare" | "runner" | "adapter";
const VARIANTS: Variant[] = ["bare", "runner", "adapter"];

interface AdapterReport {
  adapter: CliAgentName;
  parse: ParseResult;
  first: Record<Variant, Summary>;
  tail: Record<Variant, Summary>;
  /** adapter minus bare, medians (ms). */
  overhead: { firstMs: number; tailMs: number };
}

async function benchAdapter(name: CliAgentName, opts: Options, box: Sandbox, log: Log): Promise<AdapterReport> {
  const adapter = ADAPTERS[name];
  log(`${name}: recording ~${opts.lines} lines`);
  const recorded = await runBare(specFor(adapter, box, Math.max(1, Math.round(opts.lines / 4))), box.repo);
  const lines = recorded.out.split("\n").filter((l, i, a) => l !== "" || i < a.length - 1);
  const parse = benchParse(adapter, lines, opts.seconds);
  log(`${name}: ${parse.linesPerSec} lines/s; overhead rounds`);
  const spec = specFor(adapter, box, opts.tools);
  const samples: Record<Variant, Timing[]> = { bare: [], runner: [], adapter: [] };
  const run = (v: Variant) => (v === "bare" ? runBare(spec, box.repo) : v === "runner" ? runRunner(spec, box, adapter, opts.tools) : runAdapter(box, adapter, opts.tools));
  for (const v of VARIANTS) await run(v); // warm-up
  for (let i = 0; i < opts.reps; i++) {
    // Rotate the order every round: no variant always runs right after another.
    for (let k = 0; k < VARIANTS.length; k++) {
      const v = VARIANTS[(i + k) % VARIANTS.length]!;
      samples[v].push(await run(v));
    }
  }
  const first = Object.fromEntries(VARIANTS.map((v) => [v, summarize(samples[v].map((s) => s.firstMs))])) as Record<Variant, Summary>;
  const tail = Object.fromEntries(VARIANTS.map((v) => [v, summarize(samples[v].map((s) => s.tailMs))])) as Record<Variant, Summary>;
  return { adapter: name, parse, first, tail, overhead: { firstMs: r2(first.adapter.p50 - first.bare.p50), tailMs: r2(tail.adapter.p50 - tail.bare.p50) } };
}

// ---------------------------------------------------------------- report

interface Report {
  bench: "ado-agents";
  at: string;
  host: { node: string; cpus: number; backgroundCpu?: number };
  options: Omit<Options, "json">;
  adapters: AdapterReport[];
  errors: string[];
  totalMs: number;
}

function render(rep: Report): string {
  const out: string[] = [];
  out.push(`ado agent adapter benchmark (node ${rep.host.node}, ${rep.host.cpus} cpus; fakes of the CLIs; ${rep.options.reps} rounds)`);
  out.push("", "parsing (recorded fake output, parser only):");
  out.push(table(["adapter", "lines", "KB", "events/line", "lines/s", "MB/s"], rep.adapters.map((a) => [a.adapter, a.parse.lines, Math.round(a.parse.bytes / 1024), a.parse.eventsPerLine, a.parse.linesPerSec, a.parse.mbPerSec])));
  out.push("", "spawn -> first output (bare, runner) / first typed event (adapter), ms:");
  out.push(table(["adapter", "bare p50", "p90", "runner p50", "p90", "adapter p50", "p90", "overhead p50"], rep.adapters.map((a) => [a.adapter, r1(a.first.bare.p50), r1(a.first.bare.p90), r1(a.first.runner.p50), r1(a.first.runner.p90), r1(a.first.adapter.p50), r1(a.first.adapter.p90), r1(a.overhead.firstMs)])));
  out.push("", "last output -> result (process closed / run() resolved), ms:");
  out.push(table(["adapter", "bare p50", "p90", "runner p50", "p90", "adapter p50", "p90", "overhead p50"], rep.adapters.map((a) => [a.adapter, r2(a.tail.bare.p50), r2(a.tail.bare.p90), r2(a.tail.runner.p50), r2(a.tail.runner.p90), r2(a.tail.adapter.p50), r2(a.tail.adapter.p90), r2(a.overhead.tailMs)])));
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
  const report: Report = { bench: "ado-agents", at: new Date().toISOString(), host: { node: process.version, cpus: meter.cores }, options: shown, adapters: [], errors: [], totalMs: 0 };
  const bg = await waitQuietOn(
    meter,
    (a, b) => {
      const u = meter.use(a, b);
      return u.machine === undefined ? undefined : r1(Math.max(0, u.machine * meter.cores - (u.node ?? 0)));
    },
    opts.waitQuietMs,
    log,
  );
  if (bg !== undefined) report.host.backgroundCpu = bg;
  const box = await sandbox();
  try {
    for (const name of opts.adapters) {
      try {
        report.adapters.push(await benchAdapter(name, opts, box, log));
      } catch (err) {
        report.errors.push(`${name}: ${(err as Error).message}`);
      }
    }
  } finally {
    await box.cleanup();
  }
  report.totalMs = performance.now() - started;
  printReport(report, opts.json, render);
  return report.errors.length ? 1 : 0;
}

runMain("agents", parseArgs, main);
