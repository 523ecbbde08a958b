/**
 * Attach benchmark: loading a live run's state from its snapshot and the events after it
 * (src/runtime/run-load.ts, what `ado attach` and `ado status` do) against replaying
 * every event of the run (what they did before). The issue's aim: a run of 10,000 tasks
 * with a million events attaches in under a second.
 *
 *   npx tsx bench/attach.ts                 # 1,000 tasks, 100,000 events
 *   npx tsx bench/attach.ts --full          # 10,000 tasks, 1,000,000 events (the issue's scale)
 *   npx tsx bench/attach.ts --quick         # 200 tasks, 10,000 events
 *   npx tsx bench/attach.ts --tasks N --events N --deltas N --reps N --window N --json
 *   npx tsx bench/attach.ts --full --fresh 5 --store /tmp/attach-store   # fresh processes, the stream kept
 *
 * The stream is built by raw JetStream publishes of valid events of one run
 * (bench/attach-stream.ts) into an embedded nats-server (a temp store, removed at the
 * end), and the run's snapshot is stored as the recorder stores it (its fold by stream
 * sequence, written to KV `snapshots`) `--deltas` events before the end (default 1,000:
 * the recorder writes every 1,000 events of a run, or every second). Each way is timed
 * `--reps` times from a fresh connection's point of view (the reads, decoding and
 * folding; not the connection), alternating; the states they give are compared. For
 * snapshot+deltas, "first frame" is the snapshot read and loaded (a view can draw it),
 * "current" adds the events after it. Memory: the process's heap and RSS after each
 * load (one process for all: a rough figure). `--window`: publishes in flight at once
 * while building. Figures are printed, never asserted.
 *
 * In one process every load after the first finds the decoding and folding compiled,
 * the modules loaded: a user's `ado attach` is a fresh process. `--fresh N` also runs N
 * rounds of fresh node processes on the compiled code (dist/: `npm run build` first),
 * each timed from its start (bench/attach-fresh.mjs): `floor` (the raw snapshot bytes by
 * KV get and the raw events after it, decoding nothing), `load` (a client's runState,
 * as `ado attach` loads the run, step by step), and `cli` (`bin/ado.mjs attach <run>
 * --progress plain` itself, until it prints its first frame; then it is killed).
 * `--store DIR` keeps the server's store there, and a later run with the same DIR and
 * shape reuses the stream instead of building it again (minutes at `--full`). `--root
 * DIR`: the fresh processes run that checkout's build instead (the code before a change).
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { isDeepStrictEqual } from "node:util";
import { randomBytes } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { encodeValue } from "../src/runtime/codec.js";
import { parseGraphObject } from "../src/runtime/graph.js";
import { SCHEMAS } from "../src/runtime/messages.js";
import { snapshotKey, snapshotPartKey } from "../src/runtime/names.js";
import { connectNats, drainQuietly } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { silentLogger } from "../src/runtime/logger.js";
import { loadRun, type LoadedRun, type LoadTimes } from "../src/runtime/run-load.js";
import type { RunFold } from "../src/runtime/run-fold.js";
import { openBuckets, provision, topology, type Topology } from "../src/runtime/topology.js";
import { publishRun, publishWithSnapshot, runEvents } from "./attach-stream.js";
import { flagValues, parseFlags, printReport, runMain, type Log } from "./harness.js";
import { r1, table } from "./stats.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

interface Options {
  tasks: number;
  events: number;
  deltas: number;
  reps: number;
  /** Events of other runs published between, as on a shared server. */
  noise: number;
  window: number;
  json: boolean;
  waitQuietMs: number;
  /** Rounds of fresh processes (0: none). */
  fresh: number;
  /** Where the server's store is kept (and reused); a temp directory, removed, when absent. */
  store?: string;
  /** The checkout whose bin/ado.mjs and dist/ the fresh processes run (another build, to compare). */
  root: string;
}

const USAGE = `usage: tsx bench/attach.ts [--quick | --full] [--tasks N] [--events N] [--deltas N] [--reps N] [--noise N] [--window N] [--fresh N] [--store DIR] [--root DIR] [--json]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const full = argv.includes("--full");
  const o: Options = { tasks: full ? 10_000 : quick ? 200 : 1_000, events: full ? 1_000_000 : quick ? 10_000 : 100_000, deltas: 1_000, reps: 3, noise: 2_000, window: 2_000, json: false, waitQuietMs: 0, fresh: 0, root: ROOT };
  const { int } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--full": { on: () => undefined },
    "--tasks": (v, f) => (o.tasks = int(v, f, 1)),
    "--events": (v, f) => (o.events = int(v, f, 10)),
    "--deltas": (v, f) => (o.deltas = int(v, f)),
    "--reps": (v, f) => (o.reps = int(v, f)),
    "--fresh": (v, f) => (o.fresh = int(v, f)),
    "--store": (v) => (o.store = v),
    "--root": (v) => (o.root = v),
    "--noise": (v, f) => (o.noise = int(v, f)),
    "--window": (v, f) => (o.window = int(v, f, 1)),
  });
  return o;
}

interface Report {
  options: Options;
  published: { events: number; seconds: number; snapshotSeq: number; lastSeq: number; reused: boolean };
  /** The stored snapshot: bytes (head and parts) and parts. */
  snapshot: { bytes: number; parts: number };
  /** Milliseconds per repetition. */
  replayMs: number[];
  snapshotMs: number[];
  /** Snapshot+deltas: ms until the snapshot's state was loaded (the first frame a view can draw). */
  firstFrameMs: number[];
  /** Snapshot+deltas, in this process: when each step ended, per repetition (LoadTimes.at). */
  steps: LoadTimes["at"][];
  /** MB after each load, per way: heap used and RSS (the last repetition). */
  memory: { replay?: { heapMb: number; rssMb: number }; snapshot?: { heapMb: number; rssMb: number } };
  replayRead: number;
  snapshotRead: number;
  /** Median replay / median snapshot+deltas. */
  ratio: number;
  statesEqual: boolean;
  /** Fresh processes (`--fresh`), per round. */
  fresh: FreshRound[];
  /** Load averages (1 min) when the fresh rounds began and ended. */
  freshLoad?: [number, number];
  aimMet: boolean;
  errors: string[];
}

/** One round of fresh processes: each one's marks (ms since its start) and its wall time as the parent saw it. */
interface FreshRound {
  floor?: FreshResult;
  load?: FreshResult;
  cli?: FreshResult;
}

interface FreshResult {
  /** ms since the process started (performance.now() in it): imported, connected, loaded... */
  marks: Record<string, number>;
  /** ms from spawn to the process's answer (the parent's clock: node's own start included). */
  wallMs: number;
  ms?: LoadTimes;
  read?: number;
}

/** What a kept store holds (`--store`): the stream's shape and where things are, to reuse it. */
interface StoreMeta {
  shape: { tasks: number; events: number; deltas: number; noise: number };
  prefix: string;
  runId: string;
  published: { events: number; seconds: number; snapshotSeq: number; lastSeq: number };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};

/** What a reader sees of a fold, but what a snapshot does not keep per task (needs, commit, tokens). */
const view = (f: RunFold): unknown =>
  JSON.parse(JSON.stringify({
    run: [f.runId, f.status, f.seq, f.events, f.complete, f.integrationCommit, f.costUsd.toFixed(6), f.counts()],
    tasks: f.ids().map((id) => {
      const { needs: _n, commit: _c, tokens: _t, ...t } = f.task(id)!;
      return t;
    }),
  }));

const META = "attach-bench.json";

async function main(opts: Options, log: Log): Promise<number> {
  const report: Report = {
    options: opts,
    published: { events: 0, seconds: 0, snapshotSeq: 0, lastSeq: 0, reused: false },
    snapshot: { bytes: 0, parts: 0 },
    replayMs: [],
    snapshotMs: [],
    firstFrameMs: [],
    steps: [],
    memory: {},
    replayRead: 0,
    snapshotRead: 0,
    ratio: NaN,
    statesEqual: false,
    fresh: [],
    aimMet: false,
    errors: [],
  };
  if (opts.fresh > 0) {
    const stale = distStale(opts.root);
    if (stale) {
      report.errors.push(`--fresh runs the compiled code: ${stale}; run \`npm run build\` first`);
      printReport(report, opts.json, render);
      return 1;
    }
  }
  const shape = { tasks: opts.tasks, events: opts.events, deltas: opts.deltas, noise: opts.noise };
  const metaFile = opts.store ? join(opts.store, META) : undefined;
  let meta: StoreMeta | undefined = metaFile && existsSync(metaFile) ? (JSON.parse(readFileSync(metaFile, "utf8")) as StoreMeta) : undefined;
  if (meta && !isDeepStrictEqual(meta.shape, shape)) {
    log(`the store at ${opts.store} holds another shape (${JSON.stringify(meta.shape)}): building again`);
    rmSync(opts.store!, { recursive: true, force: true });
    meta = undefined;
  }
  const server = await EmbeddedServer.start({ logger: silentLogger, ...(opts.store ? { storeDir: opts.store } : {}) });
  const nc = await connectNats({ servers: server.url, name: "bench-attach", logger: silentLogger });
  try {
    const runId = meta?.runId ?? "attach1";
    const topo = topology(meta?.prefix ?? `bat${randomBytes(3).toString("hex")}`);
    let kv: Awaited<ReturnType<typeof openBuckets>>;
    if (meta) {
      kv = await openBuckets(nc, topo);
      report.published = { ...meta.published, reused: true };
      log(`run ${runId}: reusing the stream kept at ${opts.store} (${meta.published.events.toLocaleString("en")} events)`);
    } else {
      kv = (await provision(nc, topo)).kv;
      const js = jetstream(nc);
      const t0 = performance.now();
      if (opts.noise) await publishRun(js, topo, runEvents({ runId: "noise1", tasks: 20, events: opts.noise }));
      let next = 0;
      const pub = await publishWithSnapshot(js, topo, kv.snapshots, { runId, tasks: opts.tasks, events: opts.events }, opts.deltas, { window: opts.window }, (n) => {
        if (n >= next) {
          log(`published ${n.toLocaleString("en")} events`);
          next = n + Math.max(10_000, Math.floor(opts.events / 10));
        }
      });
      if (opts.noise) await publishRun(js, topo, runEvents({ runId: "noise2", tasks: 20, events: opts.noise }));
      await writeRunRecord(kv.runs, runId, opts.tasks);
      report.published = { events: pub.count, seconds: r1((performance.now() - t0) / 1000), snapshotSeq: pub.snapshotSeq, lastSeq: pub.lastSeq, reused: false };
      if (metaFile) writeFileSync(metaFile, JSON.stringify({ shape, prefix: topo.prefix, runId, published: report.published } satisfies StoreMeta));
      log(`run ${runId}: ${pub.count.toLocaleString("en")} events of ${opts.tasks.toLocaleString("en")} tasks in ${report.published.seconds} s; snapshot at sequence ${pub.snapshotSeq}, last ${pub.lastSeq}`);
    }
    report.snapshot = await snapshotSize(kv.snapshots, runId);

    let replay: LoadedRun | undefined;
    let snap: LoadedRun | undefined;
    for (let rep = 1; rep <= opts.reps; rep++) {
      // Each from a connection of its own, as a new `ado attach` would be.
      for (const way of ["snapshot", "replay"] as const) {
        const conn = await connectNats({ servers: server.url, name: `bench-attach-${way}`, logger: silentLogger });
        try {
          const cjs = jetstream(conn);
          const start = performance.now();
          const loaded = await loadRun({ js: cjs, snapshots: kv.snapshots, topo, runId, useSnapshot: way === "snapshot" });
          const ms = performance.now() - start;
          const mem = process.memoryUsage();
          report.memory[way] = { heapMb: r1(mem.heapUsed / 1e6), rssMb: r1(mem.rss / 1e6) };
          if (way === "snapshot") {
            if (loaded.from !== "snapshot") throw new Error(`the snapshot was not used: ${loaded.why}`);
            report.snapshotMs.push(r1(ms));
            report.firstFrameMs.push(loaded.ms.snapshot);
            report.steps.push(loaded.ms.at);
            snap = loaded;
          } else {
            report.replayMs.push(r1(ms));
            replay = loaded;
          }
          log(`rep ${rep}: ${way === "snapshot" ? "snapshot+deltas" : "full replay"} ${r1(ms)} ms (snapshot ${loaded.ms.snapshot} ms, ${loaded.read.toLocaleString("en")} events read in ${loaded.ms.events} ms; steps ${JSON.stringify(loaded.ms.at)})`);
        } finally {
          await drainQuietly(conn);
        }
      }
    }
    if (replay && snap) {
      report.replayRead = replay.read;
      report.snapshotRead = snap.read;
      report.ratio = r1(median(report.replayMs) / median(report.snapshotMs));
      report.statesEqual = isDeepStrictEqual(view(replay.fold), view(snap.fold));
    }

    if (opts.fresh > 0) {
      const cwd = mkdtempSync(join(tmpdir(), "attach-fresh-")); // no config, no repository: the CLI's defaults
      try {
        report.freshLoad = [r1(loadavg()[0]!), NaN];
        const args = { dist: join(opts.root, "dist"), url: server.url, prefix: topo.prefix, stream: topo.streams.events.name, filter: topo.subjects.runEvents(runId), runId, snapshotSeq: report.published.snapshotSeq, lastSeq: report.published.lastSeq };
        for (let round = 1; round <= opts.fresh; round++) {
          const r: FreshRound = {};
          for (const mode of ["floor", "load", "cli"] as const) {
            r[mode] = mode === "cli" ? await freshCli(opts.root, cwd, server.url, topo, runId) : await freshChild(cwd, { ...args, mode });
          }
          report.fresh.push(r);
          log(`fresh round ${round}: floor ${r.floor!.wallMs} ms, load ${r.load!.wallMs} ms (${JSON.stringify(r.load!.marks)}; steps ${JSON.stringify(r.load!.ms?.at)}), cli ${r.cli!.wallMs} ms (${JSON.stringify(r.cli!.marks)})`);
        }
        report.freshLoad[1] = r1(loadavg()[0]!);
      } finally {
        rmSync(cwd, { recursive: true, force: true });
      }
    }
    const fresh = report.fresh.length ? median(report.fresh.map((r) => r.cli!.wallMs)) : median(report.snapshotMs);
    report.aimMet = opts.tasks >= 10_000 && opts.events >= 1_000_000 && fresh < 1_000 && (report.statesEqual || !opts.reps);
  } catch (err) {
    report.errors.push((err as Error).stack ?? String(err));
  } finally {
    await drainQuietly(nc);
    await server.stop().catch((err) => report.errors.push(`server stop: ${(err as Error).message}`));
  }
  printReport(report, opts.json, render);
  return report.errors.length ? 1 : 0;
}

/** Why dist/ cannot be what runs (missing, or older than a source file), if so. */
function distStale(root: string): string | undefined {
  const entry = join(root, "dist/cli/main.js");
  const built = statSync(entry, { throwIfNoEntry: false })?.mtimeMs;
  if (!built) return "dist/ is missing";
  for (const name of readdirSync(join(root, "src"), { recursive: true }) as string[]) {
    if (name.endsWith(".ts") && statSync(join(root, "src", name)).mtimeMs > built) return `src/${name} is newer than dist/`;
  }
  return undefined;
}

/** The run's record, as the scheduler keeps it (what `ado attach` reads first): its graph of `tasks` tasks. */
async function writeRunRecord(runs: KV, runId: string, tasks: number): Promise<void> {
  const ids = Array.from({ length: tasks }, (_, i) => `t${i}`);
  const graph = parseGraphObject({ name: "attach-bench", tasks: ids.map((id, i) => ({ id, agent: "claude", prompt: `Work on ${id}: make its tests pass.`, ...(i % 10 === 9 ? { needs: [ids[i - 1]!] } : {}) })) });
  const at = new Date(Date.UTC(2026, 0, 1)).toISOString();
  const run = SCHEMAS.RunRecord.schema.parse({ runId, name: "attach-bench", status: "running", graph, submittedAt: at, acceptedAt: at });
  await runs.put(runId, encodeValue(SCHEMAS.RunRecord, run));
}

/** Bytes of the stored snapshot (head and parts) and its parts. */
async function snapshotSize(kv: KV, runId: string): Promise<{ bytes: number; parts: number }> {
  let bytes = 0;
  let parts = 0;
  const head = await kv.get(snapshotKey(runId));
  bytes += head?.value.length ?? 0;
  for (;;) {
    const e = await kv.get(snapshotPartKey(runId, parts));
    if (!e || e.operation !== "PUT") break;
    bytes += e.value.length;
    parts++;
  }
  return { bytes, parts };
}

/** One fresh node process of bench/attach-fresh.mjs, and its answer. */
async function freshChild(cwd: string, args: Record<string, unknown>): Promise<FreshResult> {
  const t0 = performance.now();
  const { stdout, stderr, code } = await runProcess(process.execPath, [join(ROOT, "bench/attach-fresh.mjs"), JSON.stringify(args)], cwd);
  const wallMs = Math.round(performance.now() - t0);
  if (code !== 0) throw new Error(`bench/attach-fresh.mjs ${String(args.mode)} exited ${code}: ${stderr.slice(-2_000)}`);
  const out = JSON.parse(stdout.trim().split("\n").pop()!) as Omit<FreshResult, "wallMs">;
  return { ...out, wallMs };
}

/**
 * `bin/ado.mjs attach <run>` in a fresh process, as a user runs it (`--progress plain`),
 * until it prints its first frame (the run's counts, after loading its state; then it
 * is killed: it would follow the run). Marks, from its debug log: `loaded` (the state
 * loaded, ms since the process started) and the load's own steps.
 */
async function freshCli(root: string, cwd: string, url: string, topo: Topology, runId: string): Promise<FreshResult> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(root, "bin/ado.mjs"), "attach", runId, "--server", url, "--prefix", topo.prefix, "--progress", "plain", "-vv"], {
    cwd,
    env: { ...process.env, ADO_LOG_LEVEL: "debug" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  let frameMs: number | undefined;
  let logged: { processMs: number; ms: LoadTimes; read: number } | undefined;
  return await new Promise<FreshResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ado attach did not draw its first frame within 120 s: ${err.slice(-2_000)}`));
    }, 120_000);
    const check = () => {
      // Lines written to their end only.
      const line = err.split("\n").slice(0, -1).find((l) => l.includes("run state loaded"));
      if (line && !logged) logged = JSON.parse(line.slice(line.indexOf("{"))) as typeof logged;
      if (frameMs === undefined && out.split("\n").slice(0, -1).some((l) => l.startsWith(`run ${runId}`))) frameMs = Math.round(performance.now() - t0);
      if (frameMs === undefined || !logged) return;
      clearTimeout(timer);
      child.kill("SIGKILL");
      resolve({ marks: { loaded: logged.processMs }, wallMs: frameMs, ms: logged.ms, read: logged.read });
    };
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      out += c;
      check();
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      err += c;
      check();
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (frameMs === undefined || !logged) reject(new Error(`ado attach exited ${code} before its first frame: ${err.slice(-2_000)}`));
    });
  });
}

function runProcess(cmd: string, args: string[], cwd: string): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.on("error", reject);
    child.on("close", (code) => resolve({ stdout, stderr, code }));
  });
}

function render(r: Report): string {
  const o = r.options;
  const lines = [
    `attach to a live run of ${o.tasks.toLocaleString("en")} tasks, ${r.published.events.toLocaleString("en")} events (snapshot ${o.deltas.toLocaleString("en")} events before the end, ${r.snapshot.bytes.toLocaleString("en")} bytes in ${r.snapshot.parts || 1} value${r.snapshot.parts > 1 ? "s" : ""}; ${r.published.reused ? "stream reused" : `published in ${r.published.seconds} s`})`,
  ];
  if (r.snapshotMs.length) {
    lines.push(
      table(
        ["way (in this process)", "events read", "median ms", "runs (ms)"],
        [
          ["full replay", r.replayRead, median(r.replayMs), r.replayMs.join(", ")],
          ["snapshot+deltas", r.snapshotRead, median(r.snapshotMs), r.snapshotMs.join(", ")],
        ],
      ),
      `ratio (replay / snapshot+deltas): ${r.ratio}x; states equal: ${r.statesEqual ? "yes" : "NO"}`,
      `snapshot+deltas: first frame (snapshot loaded) median ${median(r.firstFrameMs)} ms (${r.firstFrameMs.join(", ")}), current median ${median(r.snapshotMs)} ms`,
      `snapshot+deltas steps (ms from the load's start), first rep: ${JSON.stringify(r.steps[0])}; last: ${JSON.stringify(r.steps[r.steps.length - 1])}`,
      `memory after loading (heap / RSS, MB): replay ${r.memory.replay?.heapMb} / ${r.memory.replay?.rssMb}; snapshot+deltas ${r.memory.snapshot?.heapMb} / ${r.memory.snapshot?.rssMb}`,
    );
  }
  if (r.fresh.length) {
    const col = (mode: keyof FreshRound, f: (x: FreshResult) => number | undefined) => {
      const xs = r.fresh.map((x) => (x[mode] ? f(x[mode]!) : undefined)).filter((x): x is number => x !== undefined);
      return xs.length ? `${median(xs)} (${xs.join(", ")})` : "-";
    };
    const fromConnect = (x: FreshResult) => (x.marks.connected !== undefined ? (x.marks.loaded ?? x.marks.deltas ?? NaN) - x.marks.connected : undefined);
    lines.push(
      `fresh processes (${r.fresh.length} rounds; load average ${r.freshLoad?.[0]} -> ${r.freshLoad?.[1]} on ${cpus().length} cores), ms, median (each):`,
      table(
        ["process", "spawn to answer", "imported", "connected", "loaded", "from connect"],
        [
          ["floor: raw get + raw deltas", col("floor", (x) => x.wallMs), col("floor", (x) => x.marks.imported), col("floor", (x) => x.marks.connected), col("floor", (x) => x.marks.deltas), col("floor", fromConnect)],
          ["load: runState (dist/)", col("load", (x) => x.wallMs), col("load", (x) => x.marks.imported), col("load", (x) => x.marks.connected), col("load", (x) => x.marks.loaded), col("load", fromConnect)],
          ["cli: bin/ado.mjs attach (first frame)", col("cli", (x) => x.wallMs), "-", "-", col("cli", (x) => x.marks.loaded), "-"],
        ],
      ),
      `load steps (ms from the load's start): ${r.fresh.map((x) => JSON.stringify(x.load?.ms?.at)).join(" ")}`,
      `cli steps (ms from the load's start): ${r.fresh.map((x) => JSON.stringify(x.cli?.ms?.at)).join(" ")}`,
      `ratio cli / floor (spawn to answer): ${r1(median(r.fresh.map((x) => x.cli!.wallMs)) / median(r.fresh.map((x) => x.floor!.wallMs)))}x`,
    );
  }
  lines.push(
    o.tasks >= 10_000 && o.events >= 1_000_000
      ? `aim (10,000 tasks, 1,000,000 events, < 1 s${r.fresh.length ? " for a fresh `ado attach`" : " in this process"}): ${r.aimMet ? "met" : "NOT met"}`
      : `aim (10,000 tasks, 1,000,000 events, < 1 s): not measured at this scale (--full)`,
    ...r.errors.map((e) => `error: ${e}`),
  );
  return lines.join("\n");
}

runMain("attach", parseArgs, main);
