/**
 * Status benchmark: `ado status <run>` (Records.statusRead, what the API's tasks.status
 * answers) served from the run's snapshot and the events after it, against reading
 * every task record (what it did before), and the floor under the latter: raw KV gets
 * of every task record, one at a time as the record path does them, and 32 at a time.
 *
 *   npx tsx bench/status.ts                  # runs of 1,000 and 10,000 tasks, 10 events per task
 *   npx tsx bench/status.ts --quick          # runs of 200 and 1,000 tasks
 *   npx tsx bench/status.ts --tasks 1000,10000 --per-task N --deltas N --reps N --json
 *   npx tsx bench/status.ts --parts reasons  # only the reasons beside waiting tasks (readReasonFacts)
 *
 * Each run is built in one embedded nats-server (a temp store, removed at the end): its
 * events (bench/attach-stream.ts: a live run, 1% of its tasks still running), its
 * snapshot `--deltas` events before the end (as the recorder writes it), its run record,
 * and a task record per task as the scheduler would have written it (from the same
 * events). Each way is timed `--reps` times from a fresh connection, alternating; the
 * views the two ways give are compared. Figures are printed, never asserted.
 *
 * The `reasons` part times what `ado status` reads besides the view: why each open task
 * is not moving (src/cli/task-reasons.ts readReasonFacts: pause requests in the control
 * bucket, each queued task's latest `task.waiting` event), for runs of `--reasons N,N`
 * tasks, most of them queued or pending (60% queued, 20% pending, 10% running, 10%
 * succeeded; 1% paused, 1% resumed, half the queued ones with `task.waiting` events, some
 * of an earlier attempt), among events and control keys of another run. Against it, the
 * per-task reads it did before (a KV get and a message get per task, one at a time);
 * both give the reasons, compared. Reported: time and the requests made (the
 * connection's request() calls, and its messages out: requests, consumer pulls, acks).
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
import { AdoClient } from "../src/runtime/client.js";
import type { RunStatusView } from "../src/runtime/records.js";
import { readReasonFacts, taskReason, type ReasonFacts } from "../src/cli/task-reasons.js";
import { controlKey } from "../src/runtime/names.js";
import { decode, unpackRaw } from "../src/runtime/codec.js";
import { publishEvent } from "../src/runtime/events.js";
import type { AdoEventType, TaskStatus } from "../src/runtime/messages.js";
import type { NatsConnection } from "@nats-io/transport-node";
import { flagValues, parseFlags, printReport, runMain, type Log } from "./harness.js";
import { r1, table } from "./stats.js";

interface Options {
  tasks: number[];
  perTask: number;
  deltas: number;
  reps: number;
  json: boolean;
  waitQuietMs: number;
  parts: Part[];
  reasons: number[];
}

type Part = "status" | "reasons";
const USAGE = `usage: tsx bench/status.ts [--quick] [--parts status,reasons] [--tasks N,N] [--reasons N,N] [--per-task N] [--deltas N] [--reps N] [--json]`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = { tasks: quick ? [200, 1_000] : [1_000, 10_000], perTask: 10, deltas: 1_000, reps: 3, json: false, waitQuietMs: 0, parts: ["status", "reasons"], reasons: quick ? [200, 1_000] : [1_000, 10_000] };
  const { int, ints, oneOf } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--tasks": (v, f) => (o.tasks = ints(v, f, 1)),
    "--per-task": (v, f) => (o.perTask = int(v, f, 4)),
    "--deltas": (v, f) => (o.deltas = int(v, f)),
    "--reps": (v, f) => (o.reps = int(v, f, 1)),
    "--parts": (v, f) => (o.parts = oneOf(v, f, ["status", "reasons"] as const)),
    "--reasons": (v, f) => (o.reasons = ints(v, f, 1)),
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

type ReasonWay = "bulk" | "perTask";
const REASON_WAYS: readonly ReasonWay[] = ["bulk", "perTask"];
const REASON_LABEL: Record<ReasonWay, string> = { bulk: "readReasonFacts", perTask: "a get per task (before)" };

interface ReasonsReport {
  tasks: number;
  /** Tasks by status, paused tasks, tasks with task.waiting events. */
  staged: { queued: number; pending: number; running: number; paused: number; waiting: number };
  buildSeconds: number;
  ms: Record<ReasonWay, number[]>;
  /** request() calls and messages out of the connection (the last repetition). */
  requests: Record<ReasonWay, number>;
  msgsOut: Record<ReasonWay, number>;
  /** Tasks given a reason, and whether the two ways gave the same reasons. */
  withReason: number;
  reasonsEqual: boolean;
}

interface Report {
  options: Options;
  sizes: SizeReport[];
  reasons: ReasonsReport[];
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

/** What readReasonFacts did before it read in bulk: a KV get of each open task's pause key and a message get of each queued task's last `task.waiting`, one at a time. */
async function perTaskFacts(client: AdoClient, view: RunStatusView): Promise<Map<string, ReasonFacts>> {
  const { control } = await openBuckets(client.nc, client.topo);
  const pausedKey = async (key: string) => {
    const e = await control.get(key).catch(() => null);
    if (e?.operation !== "PUT") return false;
    try {
      return decode(SCHEMAS.ControlRequest, e.value).action === "pause";
    } catch {
      return false;
    }
  };
  const runPaused = view.run.paused || (await pausedKey(controlKey(view.run.runId)));
  const jsm = await client.js.jetstreamManager();
  const out = new Map<string, ReasonFacts>();
  for (const t of view.tasks) {
    const facts: ReasonFacts = { paused: runPaused || ((t.status === "running" || t.status === "queued") && (await pausedKey(controlKey(view.run.runId, t.id)))) };
    if (t.status === "queued") {
      const subject = client.topo.subjects.event({ type: "task.waiting" as AdoEventType, runId: view.run.runId, taskId: t.id });
      const m = await jsm.streams.getMessage(client.topo.streams.events.name, { last_by_subj: subject }).catch(() => null);
      let raw: { reason?: unknown; attempt?: unknown } | undefined;
      try {
        raw = m ? (unpackRaw(m.data) as typeof raw) : undefined;
      } catch {
        raw = undefined;
      }
      if (raw && typeof raw.reason === "string") facts.waiting = { reason: raw.reason, attempt: typeof raw.attempt === "number" ? raw.attempt : 1 };
    }
    out.set(t.id, facts);
  }
  return out;
}

/** Counts a connection's request() calls from now on. */
function countRequests(nc: NatsConnection): () => number {
  let n = 0;
  const request = nc.request.bind(nc);
  nc.request = ((...a: Parameters<NatsConnection["request"]>) => {
    n++;
    return request(...a);
  }) as NatsConnection["request"];
  return () => n;
}

/** Stages a run of `tasks` open tasks (statuses, pause requests, task.waiting events) and times the reasons of `ado status` both ways. */
async function measureReasons(server: EmbeddedServer, tasks: number, opts: Options, log: Log): Promise<ReasonsReport> {
  const nc = await connectNats({ servers: server.url, name: "bench-status-reasons", logger: silentLogger });
  const out: ReasonsReport = {
    tasks,
    staged: { queued: 0, pending: 0, running: 0, paused: 0, waiting: 0 },
    buildSeconds: 0,
    ms: { bulk: [], perTask: [] },
    requests: { bulk: 0, perTask: 0 },
    msgsOut: { bulk: 0, perTask: 0 },
    withReason: 0,
    reasonsEqual: false,
  };
  try {
    const topo: Topology = topology(`bsr${randomBytes(3).toString("hex")}`);
    const { kv } = await provision(nc, topo);
    const js = jetstream(nc);
    const runId = `reasons${tasks}`;
    const t0 = performance.now();
    // Another run's events and control keys around it, and this run's other events.
    await publishRun(js, topo, runEvents({ runId: "noise1", tasks: 200, events: 2_000 }));
    await publishRun(js, topo, runEvents({ runId, tasks, events: tasks * 3 }));
    const ids = Array.from({ length: tasks }, (_, i) => `t${i}`);
    const statusOf = (i: number): TaskStatus => (i % 10 < 6 ? "queued" : i % 10 < 8 ? "pending" : i % 10 === 8 ? "running" : "succeeded");
    const attemptsOf = (i: number) => (statusOf(i) === "pending" ? 0 : i % 30 === 0 ? 2 : 1);
    const at = new Date().toISOString();
    const inflight = new Set<Promise<unknown>>();
    const put = async (p: Promise<unknown>) => {
      const q = p.finally(() => inflight.delete(q));
      inflight.add(q);
      if (inflight.size >= 500) await Promise.race(inflight);
    };
    for (let i = 0; i < 100; i++) await put(kv.control.put(controlKey("noise1", `t${i}`), encodeValue(SCHEMAS.ControlRequest, { type: "control", runId: "noise1", taskId: `t${i}`, action: "pause", reason: "", by: "bench", at })));
    for (let i = 0; i < tasks; i++) {
      const taskId = ids[i]!;
      const st = statusOf(i);
      if (st === "queued" || st === "pending" || st === "running") out.staged[st]++;
      // 1% paused, 1% paused then resumed (a key that says resume).
      if (i % 100 === 0 || i % 100 === 50) {
        await put(kv.control.put(controlKey(runId, taskId), encodeValue(SCHEMAS.ControlRequest, { type: "control", runId, taskId, action: i % 100 === 0 ? "pause" : "resume", reason: "", by: "bench", at })));
        if (i % 100 === 0 && (st === "queued" || st === "running")) out.staged.paused++;
      }
      // Half the queued tasks have task.waiting events: two of the current attempt (the later reason wins);
      // a second attempt's task has one of its first attempt only (every 60th one of its own as well).
      if (st === "queued" && i % 2 === 0) {
        out.staged.waiting++;
        const attempts = attemptsOf(i);
        const evs = attempts === 2 ? [1, ...(i % 60 === 0 ? [2] : [])] : [1, 1];
        evs.forEach((attempt, k) =>
          void put(publishEvent(js, topo, { type: "task.waiting", runId, taskId, attempt, at, reason: `no worker has label gpu${k ? " (still)" : ""}`, workers: 3 }, `${runId}.${taskId}.${attempt}.waiting.${k}`)),
        );
      }
    }
    await Promise.all(inflight);
    const graph = parseGraphObject({ name: "reasons-bench", tasks: ids.map((id, i) => ({ id, run: "true", ...(statusOf(i) === "pending" ? { needs: [ids[i - 1]!] } : {}) })) });
    const run = SCHEMAS.RunRecord.schema.parse({ runId, name: "reasons-bench", status: "running", graph, submittedAt: at, acceptedAt: at, costUsd: 0 });
    const view: RunStatusView = { run, tasks: ids.map((id, i) => ({ id, status: statusOf(i), attempts: attemptsOf(i), needs: statusOf(i) === "pending" ? [ids[i - 1]!] : [] })) } as RunStatusView;
    out.buildSeconds = r1((performance.now() - t0) / 1000);
    log(`reasons, run of ${tasks.toLocaleString("en")} tasks staged in ${out.buildSeconds} s: ${JSON.stringify(out.staged)}`);
    const given: Partial<Record<ReasonWay, (string | undefined)[]>> = {};
    for (let rep = 1; rep <= opts.reps; rep++) {
      for (const way of rep % 2 ? REASON_WAYS : [...REASON_WAYS].reverse()) {
        const conn = await connectNats({ servers: server.url, name: `bench-status-reasons-${way}`, logger: silentLogger });
        try {
          const client = new AdoClient(conn, topo);
          // What `ado status` has done on its connection by then (JetStream account info, the buckets opened).
          await openBuckets(conn, topo);
          await client.js.jetstreamManager();
          const requests = countRequests(conn);
          const out0 = conn.stats().outMsgs;
          const start = performance.now();
          const facts = way === "bulk" ? await readReasonFacts(client, view) : await perTaskFacts(client, view);
          const ms = r1(performance.now() - start);
          out.ms[way].push(ms);
          out.requests[way] = requests();
          out.msgsOut[way] = conn.stats().outMsgs - out0;
          given[way] = view.tasks.map((t) => taskReason(t, view, facts.get(t.id) ?? { paused: false }));
          log(`rep ${rep}, ${tasks} tasks: ${REASON_LABEL[way]} ${ms} ms, ${out.requests[way]} requests, ${out.msgsOut[way]} messages out`);
        } finally {
          await drainQuietly(conn);
        }
      }
    }
    out.withReason = (given.bulk ?? []).filter(Boolean).length;
    out.reasonsEqual = isDeepStrictEqual(given.bulk, given.perTask);
  } finally {
    await drainQuietly(nc);
  }
  return out;
}

async function main(opts: Options, log: Log): Promise<number> {
  const report: Report = { options: opts, sizes: [], reasons: [], errors: [] };
  const server = await EmbeddedServer.start({ logger: silentLogger });
  try {
    if (opts.parts.includes("status")) for (const tasks of opts.tasks) report.sizes.push(await measureSize(server, tasks, opts, log));
    if (opts.parts.includes("reasons")) for (const tasks of opts.reasons) report.reasons.push(await measureReasons(server, tasks, opts, log));
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
  for (const s of r.reasons) {
    lines.push(
      `reasons beside the tasks of ado status, run of ${s.tasks.toLocaleString("en")} tasks (${s.staged.queued} queued, ${s.staged.pending} pending, ${s.staged.running} running, ${s.staged.paused} paused, ${s.staged.waiting} with task.waiting; staged in ${s.buildSeconds} s)`,
      table(
        ["way", "median ms", "runs (ms)", "requests", "messages out"],
        REASON_WAYS.map((w) => [REASON_LABEL[w], median(s.ms[w]), s.ms[w].join(", "), s.requests[w], s.msgsOut[w]]),
      ),
      `ratio (per task / readReasonFacts): ${r1(median(s.ms.perTask) / median(s.ms.bulk))}x; tasks with a reason: ${s.withReason}; reasons equal: ${s.reasonsEqual ? "yes" : "NO"}`,
      "",
    );
  }
  lines.push(...r.errors.map((e) => `error: ${e}`));
  return lines.join("\n");
}

runMain("status", parseArgs, main);
