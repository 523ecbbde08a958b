/**
 * Status benchmark: `ado status <run>` (Records.statusRead, what the API's tasks.status
 * answers) served from the run's snapshot and the events after it, against reading
 * every task record (what it did before), and the floor under the latter: raw KV gets
 * of every task record, one at a time as the record path does them, and 32 at a time.
 *
 *   npx tsx bench/status.ts                  # runs of 1,000 and 10,000 tasks, 10 events per task
 *   npx tsx bench/status.ts --quick          # runs of 200 and 1,000 tasks
 *   npx tsx bench/status.ts --tasks 1000,10000 --per-task N --deltas N --reps N --json
 *
 * Each run is built in one embedded nats-server (a temp store, removed at the end): its
 * events (bench/attach-stream.ts: a live run, 1% of its tasks still running), its
 * snapshot `--deltas` events before the end (as the recorder writes it), its run record,
 * and a task record per task as the scheduler would have written it (from the same
 * events). Each way is timed `--reps` times from a fresh connection, alternating; the
 * views the two ways give are compared. Figures are printed, never asserted.
 */
import { performance } from "node:perf_hooks";
import { isDeepStrictEqual } from "node:util";
import { randomBytes } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import { encodeValue } from "../src/runtime/codec.js";
import { connectNats, drainQuietly } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { parseGraphObject } from "../src/runtime/graph.js";
import { silentLogger } from "../src/runtime/logger.js";
import { SCHEMAS } from "../src/runtime/messages.js";
import { taskKey } from "../src/runtime/names.js";
import { Records, type StatusRead } from "../src/runtime/records.js";
import { RunFold } from "../src/runtime/run-fold.js";
import { entriesOf } from "../src/runtime/kv-watch.js";
import { openBuckets, provision, topology, type Topology } from "../src/runtime/topology.js";
import type { KV } from "@nats-io/kv";
import { publishRun, publishWithSnapshot, runEvents } from "./attach-stream.js";
import { flagValues, parseFlags, printReport, runMain, type Log } from "./harness.js";
import { r1, table } from "./stats.js";

interface Options {
  tasks: number[];
  perTask: number;
  deltas: number;
  reps: number;
  json: boolean;
  waitQuietMs: number;
}

const USAGE = `usage: tsx bench/status.ts [--quick] [--tasks N,N] [--per-task N] [--deltas N] [--reps N] [--json]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = { tasks: quick ? [200, 1_000] : [1_000, 10_000], perTask: 10, deltas: 1_000, reps: 3, json: false, waitQuietMs: 0 };
  const { int, ints } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--tasks": (v, f) => (o.tasks = ints(v, f, 1)),
    "--per-task": (v, f) => (o.perTask = int(v, f, 4)),
    "--deltas": (v, f) => (o.deltas = int(v, f)),
    "--reps": (v, f) => (o.reps = int(v, f, 1)),
  });
  return o;
}

type Way = "snapshot" | "records" | "gets" | "gets32";
const WAYS: readonly Way[] = ["snapshot", "records", "gets", "gets32"];
const LABEL: Record<Way, string> = {
  snapshot: "status: snapshot+deltas",
  records: "status: every record",
  gets: "floor: a KV get per record",
  gets32: "floor: KV gets, 32 at a time",
};

interface SizeReport {
  tasks: number;
  events: number;
  buildSeconds: number;
  ms: Record<Way, number[]>;
  /** What the two status ways read (the last repetition). */
  read: { snapshot?: StatusRead; records?: StatusRead };
  viewsEqual: boolean;
}

interface Report {
  options: Options;
  sizes: SizeReport[];
  errors: string[];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};

/** The run record and every task record, as the scheduler would have written them for these events. */
async function writeRecords(kv: Record<"runs" | "tasks", KV>, runId: string, tasks: number, fold: RunFold): Promise<void> {
  const ids = Array.from({ length: tasks }, (_, i) => `t${i}`);
  const graph = parseGraphObject({ name: "status-bench", tasks: ids.map((id, i) => ({ id, run: "true", ...(i % 10 === 9 ? { needs: [ids[i - 1]!] } : {}) })) });
  const now = new Date().toISOString();
  const run = SCHEMAS.RunRecord.schema.parse({ runId, name: "status-bench", status: "running", graph, submittedAt: fold.acceptedAt ?? now, acceptedAt: fold.acceptedAt ?? now, costUsd: fold.settledCostUsd });
  await kv.runs.put(runId, encodeValue(SCHEMAS.RunRecord, run));
  const inflight = new Set<Promise<unknown>>();
  for (const id of ids) {
    const { summary: t, notes } = fold.parts(id)!;
    if (t.status === "pending") continue; // the scheduler writes none for a task that never ran
    const rec = SCHEMAS.TaskRecord.schema.parse({
      runId,
      taskId: id,
      status: t.status,
      attempts: t.attempts,
      ...(t.workerId ? { workerId: t.workerId } : {}),
      ...(t.startedAt ? { startedAt: t.startedAt } : {}),
      ...(t.finishedAt ? { finishedAt: t.finishedAt } : {}),
      ...(t.status !== "succeeded" && t.error ? { error: t.error } : {}),
      costUsd: notes.costUsd,
      tokens: t.tokens ?? 0,
    });
    const p = kv.tasks.put(taskKey(runId, id), encodeValue(SCHEMAS.TaskRecord, rec)).finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= 500) await Promise.race(inflight);
  }
  await Promise.all(inflight);
}

async function measureSize(server: EmbeddedServer, tasks: number, opts: Options, log: Log): Promise<SizeReport> {
  const nc = await connectNats({ servers: server.url, name: "bench-status", logger: silentLogger });
  const out: SizeReport = { tasks, events: 0, buildSeconds: 0, ms: { snapshot: [], records: [], gets: [], gets32: [] }, read: {}, viewsEqual: false };
  try {
    const topo: Topology = topology(`bst${randomBytes(3).toString("hex")}`);
    const { kv } = await provision(nc, topo);
    const js = jetstream(nc);
    const runId = `status${tasks}`;
    const t0 = performance.now();
    await publishRun(js, topo, runEvents({ runId: "noise1", tasks: 20, events: 2_000 }));
    const shape = { runId, tasks, events: tasks * opts.perTask };
    const pub = await publishWithSnapshot(js, topo, kv.snapshots, shape, opts.deltas);
    // The records as of the run's last event.
    const fold = new RunFold();
    for (const e of runEvents(shape)) fold.apply(e);
    await writeRecords(kv, runId, tasks, fold);
    out.events = pub.count;
    out.buildSeconds = r1((performance.now() - t0) / 1000);
    log(`run of ${tasks.toLocaleString("en")} tasks: ${pub.count.toLocaleString("en")} events and ${tasks.toLocaleString("en")} records in ${out.buildSeconds} s`);
    const keys = Array.from({ length: tasks }, (_, i) => taskKey(runId, `t${i}`));
    const views: Partial<Record<"snapshot" | "records", unknown>> = {};
    for (let rep = 1; rep <= opts.reps; rep++) {
      for (const way of WAYS) {
        // Each from a connection of its own, as a new `ado status` (or the API's first request) would be.
        const conn = await connectNats({ servers: server.url, name: `bench-status-${way}`, logger: silentLogger });
        try {
          const buckets = await openBuckets(conn, topo);
          const start = performance.now();
          if (way === "gets") {
            for (const k of keys) await buckets.tasks.get(k);
          } else if (way === "gets32") {
            await entriesOf(buckets.tasks, keys, 32);
          } else {
            const records = new Records(async () => buckets, jetstream(conn), topo);
            const got = await records.statusRead(runId, way === "records" ? { via: "records" } : {});
            if (!got) throw new Error(`run ${runId} not found`);
            if (way === "snapshot" && got.read.from !== "snapshot") throw new Error(`the snapshot was not used: ${got.read.why}`);
            out.read[way] = got.read;
            views[way] = JSON.parse(JSON.stringify(got.view));
          }
          const ms = r1(performance.now() - start);
          out.ms[way].push(ms);
          log(`rep ${rep}, ${tasks} tasks: ${LABEL[way]} ${ms} ms`);
        } finally {
          await drainQuietly(conn);
        }
      }
    }
    out.viewsEqual = isDeepStrictEqual(views.snapshot, views.records);
  } finally {
    await drainQuietly(nc);
  }
  return out;
}

async function main(opts: Options, log: Log): Promise<number> {
  const report: Report = { options: opts, sizes: [], errors: [] };
  const server = await EmbeddedServer.start({ logger: silentLogger });
  try {
    for (const tasks of opts.tasks) report.sizes.push(await measureSize(server, tasks, opts, log));
  } catch (err) {
    report.errors.push((err as Error).stack ?? String(err));
  } finally {
    await server.stop().catch((err) => report.errors.push(`server stop: ${(err as Error).message}`));
  }
  printReport(report, opts.json, render);
  return report.errors.length ? 1 : 0;
}

function render(r: Report): string {
  const lines: string[] = [];
  for (const s of r.sizes) {
    lines.push(
      `ado status of a live run of ${s.tasks.toLocaleString("en")} tasks (${s.events.toLocaleString("en")} events; snapshot ${r.options.deltas.toLocaleString("en")} events before the end; built in ${s.buildSeconds} s)`,
      table(
        ["way", "median ms", "runs (ms)", "task records / claims / events read", "snapshot + events ms (last run)"],
        WAYS.map((w) => {
          const read = w === "snapshot" || w === "records" ? s.read[w] : undefined;
          return [LABEL[w], median(s.ms[w]), s.ms[w].join(", "), read ? `${read.taskRecords} / ${read.claims} / ${read.events}` : w === "gets" || w === "gets32" ? `${s.tasks} / 0 / 0` : "", read?.loadMs ? `${read.loadMs.snapshot} + ${read.loadMs.events}` : ""];
        }),
      ),
      `ratio (every record / snapshot+deltas): ${r1(median(s.ms.records) / median(s.ms.snapshot))}x; views equal: ${s.viewsEqual ? "yes" : "NO"}`,
      "",
    );
  }
  lines.push(...r.errors.map((e) => `error: ${e}`));
  return lines.join("\n");
}

runMain("status", parseArgs, main);
