/**
 * Attach benchmark: loading a live run's state from its snapshot and the events after it
 * (src/runtime/run-load.ts, what `ado attach` and `ado status` do) against replaying
 * every event of the run (what they did before). The aim: a run of 10,000 tasks
 * with a million events attaches in under a second.
 *
 *   npx tsx bench/attach.ts                 # 1,000 tasks, 100,000 events
 *   npx tsx bench/attach.ts --full          # 10,000 tasks, 1,000,000 events (the scale)
 *   npx tsx bench/attach.ts --quick         # 200 tasks, 10,000 events
 *   npx tsx bench/attach.ts --tasks N --events N --deltas N --reps N --window N --json
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
 */
import { performance } from "node:perf_hooks";
import { isDeepStrictEqual } from "node:util";
import { randomBytes } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import { connectNats, drainQuietly } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { silentLogger } from "../src/runtime/logger.js";
import { loadRun, type LoadedRun } from "../src/runtime/run-load.js";
import type { RunFold } from "../src/runtime/run-fold.js";
import { provision, topology } from "../src/runtime/topology.js";
import { publishRun, publishWithSnapshot, runEvents } from "./attach-stream.js";
import { flagValues, parseFlags, printReport, runMain, type Log } from "./harness.js";
import { r1, table } from "./stats.js";

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
}

const USAGE = `usage: tsx bench/attach.ts [--quick | --full] [--tasks N] [--events N] [--deltas N] [--reps N] [--noise N] [--window N] [--json]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const full = argv.includes("--full");
  const o: Options = { tasks: full ? 10_000 : quick ? 200 : 1_000, events: full ? 1_000_000 : quick ? 10_000 : 100_000, deltas: 1_000, reps: 3, noise: 2_000, window: 2_000, json: false, waitQuietMs: 0 };
  const { int } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--full": { on: () => undefined },
    "--tasks": (v, f) => (o.tasks = int(v, f, 1)),
    "--events": (v, f) => (o.events = int(v, f, 10)),
    "--deltas": (v, f) => (o.deltas = int(v, f)),
    "--reps": (v, f) => (o.reps = int(v, f, 1)),
    "--noise": (v, f) => (o.noise = int(v, f)),
    "--window": (v, f) => (o.window = int(v, f, 1)),
  });
  return o;
}

interface Report {
  options: Options;
  published: { events: number; seconds: number; snapshotSeq: number; lastSeq: number };
  /** Milliseconds per repetition. */
  replayMs: number[];
  snapshotMs: number[];
  /** Snapshot+deltas: ms until the snapshot's state was loaded (the first frame a view can draw). */
  firstFrameMs: number[];
  /** MB after each load, per way: heap used and RSS (the last repetition). */
  memory: { replay?: { heapMb: number; rssMb: number }; snapshot?: { heapMb: number; rssMb: number } };
  replayRead: number;
  snapshotRead: number;
  /** Median replay / median snapshot+deltas. */
  ratio: number;
  statesEqual: boolean;
  aimMet: boolean;
  errors: string[];
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

async function main(opts: Options, log: Log): Promise<number> {
  const report: Report = { options: opts, published: { events: 0, seconds: 0, snapshotSeq: 0, lastSeq: 0 }, replayMs: [], snapshotMs: [], firstFrameMs: [], memory: {}, replayRead: 0, snapshotRead: 0, ratio: NaN, statesEqual: false, aimMet: false, errors: [] };
  const server = await EmbeddedServer.start({ logger: silentLogger });
  const nc = await connectNats({ servers: server.url, name: "bench-attach", logger: silentLogger });
  try {
    const topo = topology(`bat${randomBytes(3).toString("hex")}`);
    const { kv } = await provision(nc, topo);
    const js = jetstream(nc);
    const runId = "attach1";
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
    report.published = { events: pub.count, seconds: r1((performance.now() - t0) / 1000), snapshotSeq: pub.snapshotSeq, lastSeq: pub.lastSeq };
    log(`run ${runId}: ${pub.count.toLocaleString("en")} events of ${opts.tasks.toLocaleString("en")} tasks in ${report.published.seconds} s; snapshot at sequence ${pub.snapshotSeq}, last ${pub.lastSeq}`);

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
            snap = loaded;
          } else {
            report.replayMs.push(r1(ms));
            replay = loaded;
          }
          log(`rep ${rep}: ${way === "snapshot" ? "snapshot+deltas" : "full replay"} ${r1(ms)} ms (snapshot ${loaded.ms.snapshot} ms, ${loaded.read.toLocaleString("en")} events read in ${loaded.ms.events} ms)`);
        } finally {
          await drainQuietly(conn);
        }
      }
    }
    report.replayRead = replay!.read;
    report.snapshotRead = snap!.read;
    report.ratio = r1(median(report.replayMs) / median(report.snapshotMs));
    report.statesEqual = isDeepStrictEqual(view(replay!.fold), view(snap!.fold));
    report.aimMet = opts.tasks >= 10_000 && opts.events >= 1_000_000 && median(report.snapshotMs) < 1_000 && report.statesEqual;
  } catch (err) {
    report.errors.push((err as Error).stack ?? String(err));
  } finally {
    await drainQuietly(nc);
    await server.stop().catch((err) => report.errors.push(`server stop: ${(err as Error).message}`));
  }
  printReport(report, opts.json, render);
  return report.errors.length ? 1 : 0;
}

function render(r: Report): string {
  const o = r.options;
  const lines = [
    `attach to a live run of ${o.tasks.toLocaleString("en")} tasks, ${r.published.events.toLocaleString("en")} events (snapshot ${o.deltas.toLocaleString("en")} events before the end; published in ${r.published.seconds} s)`,
    table(
      ["way", "events read", "median ms", "runs (ms)"],
      [
        ["full replay", r.replayRead, median(r.replayMs), r.replayMs.join(", ")],
        ["snapshot+deltas", r.snapshotRead, median(r.snapshotMs), r.snapshotMs.join(", ")],
      ],
    ),
    `ratio (replay / snapshot+deltas): ${r.ratio}x; states equal: ${r.statesEqual ? "yes" : "NO"}`,
    `snapshot+deltas: first frame (snapshot loaded) median ${median(r.firstFrameMs)} ms (${r.firstFrameMs.join(", ")}), current median ${median(r.snapshotMs)} ms`,
    `memory after loading (heap / RSS, MB): replay ${r.memory.replay?.heapMb} / ${r.memory.replay?.rssMb}; snapshot+deltas ${r.memory.snapshot?.heapMb} / ${r.memory.snapshot?.rssMb}`,
    o.tasks >= 10_000 && o.events >= 1_000_000 ? `aim (10,000 tasks, 1,000,000 events, < 1 s): ${r.aimMet ? "met" : "NOT met"}` : `aim (10,000 tasks, 1,000,000 events, < 1 s): not measured at this scale (--full)`,
    ...r.errors.map((e) => `error: ${e}`),
  ];
  return lines.join("\n");
}

runMain("attach", parseArgs, main);
