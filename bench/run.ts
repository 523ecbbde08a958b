/**
 * ado pipeline benchmark: one process, one embedded nats-server (started here, stopped
 * at the end, also on failure, Ctrl-C or when the time budget runs out).
 *
 *   npm run bench                      # full run (~1 min; budget 170 s)
 *   npm run bench -- --quick           # smoke run (< 10 s)
 *   npm run bench -- --json            # one JSON object on stdout (progress goes to stderr)
 *   npm run bench -- --tasks 20000 --configs 2x64,4x64,1x128 --sweep 2000,5000
 *   npm run bench -- --wait-quiet 120  # wait for other processes to go quiet first
 *   npm run bench -- --pin             # node on CPU 0, nats-server on CPU 1 (steadier latency)
 *
 * Phases:
 *   raw       JetStream baseline: async publishes (window of in-flight PubAcks) to a
 *             work-queue file stream while a durable pull consumer acks them; plus the
 *             round trip of one awaited publish.
 *   pipeline  For each W x S: a Stack and an AdoClient, one run of N independent noop
 *             tasks, submit -> watch() returns run.completed. Durable writes per task
 *             (stream sequence deltas), messages per task per connection role (/connz),
 *             CPU of node and nats-server (/proc).
 *   latency   On the first stack: single-task noop runs one after another; submit ->
 *             task.started and submit -> run.completed, seen on a core subscription.
 *
 * Figures are printed, never asserted. Profile with:
 *   node --import tsx --cpu-prof --cpu-prof-dir=/tmp/prof bench/run.ts --phases pipeline
 *   npx tsx bench/profile-summary.ts /tmp/prof
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  AckPolicy,
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamManager,
  type PubAck,
} from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { Stack } from "../src/actors/stack.js";
import { AdoClient } from "../src/runtime/client.js";
import { decode, packRaw } from "../src/runtime/codec.js";
import { parseConfig } from "../src/runtime/config.js";
import { connectNats, drainQuietly } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { GraphDefSchema, type Graph } from "../src/runtime/graph.js";
import { newRunId, type RunId } from "../src/runtime/ids.js";
import { silentLogger } from "../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../src/runtime/messages.js";
import { consumers, ns, type Topology } from "../src/runtime/topology.js";
import { CpuMeter, CpuSampler, findChild, type CpuUse } from "./procstat.js";
import { connCounts, connDeltas, serverCounts, streamCounts, streamDeltas, type ConnCounts, type StreamDelta } from "./probes.js";
import { r1, r2, r3, summarize, table, type Summary } from "./stats.js";
import { printReport, runMain, waitQuiet, flagValues, parseFlags, orAbort } from "./harness.js";

// ---------------------------------------------------------------- options

interface Options {
  tasks: number;
  sweep: number[];
  configs: Array<{ workers: number; slots: number }>;
  rawMsgs: number;
  window: number;
  rttSamples: number;
  latencyRuns: number;
  warmup: number;
  phases: Set<"raw" | "pipeline" | "latency">;
  json: boolean;
  timeoutMs: number;
  quick: boolean;
  /** Wait up to this long for other processes to go quiet before measuring (0: do not wait). */
  waitQuietMs: number;
  /** Pin node to CPU 0 and nats-server to CPU 1 (taskset), for steadier latency figures. */
  pin: boolean;
}

const USAGE = `usage: tsx bench/run.ts [--quick] [--json] [--tasks N] [--configs WxS,...] [--sweep N,...]
       [--raw N] [--window W] [--latency-runs N] [--warmup N] [--phases raw,pipeline,latency] [--timeout SEC]
       [--wait-quiet SEC]   wait up to SEC for other processes to use < 15% of a core before starting
       [--pin]              pin node to CPU 0 and nats-server to CPU 1 (needs taskset and 2+ CPUs)`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = {
    tasks: quick ? 1_000 : 10_000,
    sweep: [],
    configs: quick ? [{ workers: 2, slots: 64 }] : [{ workers: 2, slots: 64 }, { workers: 4, slots: 64 }],
    rawMsgs: quick ? 20_000 : 100_000,
    window: 512,
    rttSamples: quick ? 300 : 1_000,
    latencyRuns: quick ? 60 : 300,
    warmup: quick ? 10 : 30,
    phases: new Set(["raw", "pipeline", "latency"]),
    json: false,
    timeoutMs: (quick ? 40 : 170) * 1000,
    quick,
    waitQuietMs: 0,
    pin: false,
  };
  const { int, ints, oneOf, list } = flagValues(USAGE);
  parseFlags(argv, USAGE, o, {
    "--tasks": (v, f) => (o.tasks = int(v, f, 1)),
    "--sweep": (v, f) => (o.sweep = ints(v, f, 1)),
    "--raw": (v, f) => (o.rawMsgs = int(v, f)),
    "--window": (v, f) => (o.window = int(v, f, 1)),
    "--latency-runs": (v, f) => (o.latencyRuns = int(v, f)),
    "--warmup": (v, f) => (o.warmup = int(v, f)),
    "--pin": { on: () => (o.pin = true) },
    "--timeout": (v, f) => (o.timeoutMs = int(v, f, 5) * 1000),
    "--configs": (v, f) =>
      (o.configs = list(v, f).map((c) => {
        const m = /^(\d+)x(\d+)$/.exec(c);
        if (!m) throw new Error(`--configs takes WORKERSxSLOTS,... e.g. 2x64,4x64 (got '${c}')\n${USAGE}`);
        return { workers: Number(m[1]), slots: Number(m[2]) };
      })),
    "--phases": (v, f) => (o.phases = new Set(oneOf(v, f, ["raw", "pipeline", "latency"] as const))),
  });
  return o;
}

// ---------------------------------------------------------------- shared context

interface Ctx {
  opts: Options;
  server: EmbeddedServer;
  meter: CpuMeter;
  signal: AbortSignal;
  admin: NatsConnection;
  jsm: JetStreamManager;
}

const rand = () => randomBytes(3).toString("hex");
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const progress = (ctx: Ctx, msg: string) => {
  if (!ctx.opts.json) process.stderr.write(`[bench] ${msg}\n`);
};

function checkAbort(signal: AbortSignal): void {
  if (signal.aborted) throw new Error(`benchmark time budget exhausted (${String(signal.reason ?? "aborted")})`);
}


// ---------------------------------------------------------------- 1. raw JetStream

interface RawResult {
  variant: string;
  msgs: number;
  window: number;
  payloadBytes: number;
  ms: number;
  msgsPerSec: number;
  publishMsgsPerSec: number;
  cpu: CpuUse;
}

/**
 * Raw variants: `plain` and `msgid+header` connect like ado's actors (connectNats) and
 * publish without / with a Nats-Msg-Id and a schema header, as the pipeline does;
 * `noAsyncTraces` is `plain` on connections with the client's noAsyncTraces option,
 * which skips the two Error objects (stack captures) nats.js makes per request.
 */
type RawVariant = "plain" | "msgid+header" | "noAsyncTraces";

async function rawConnect(ctx: Ctx, name: string, variant: RawVariant): Promise<NatsConnection> {
  if (variant !== "noAsyncTraces") return connectNats({ servers: ctx.server.url, name, logger: silentLogger });
  return connect({ servers: ctx.server.url, name, noAsyncTraces: true });
}

async function rawBaseline(ctx: Ctx, variant: RawVariant): Promise<RawResult> {
  const { opts } = ctx;
  const tag = `raw${rand()}`;
  const stream = `BENCH_${tag.toUpperCase()}`;
  const subject = `${tag}.q`;
  const pubNc = await rawConnect(ctx, `${tag}-pub`, variant);
  const subNc = await rawConnect(ctx, `${tag}-sub`, variant);
  try {
    await ctx.jsm.streams.add({
      name: stream,
      subjects: [subject],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: 1,
      duplicate_window: ns(120_000),
    });
    await ctx.jsm.consumers.add(stream, {
      durable_name: "bench",
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      max_ack_pending: 10_000,
    });
    // ~100-byte msgpack payload, like a small ado message.
    const payload = packRaw({ type: "bench.msg", runId: "r20260101t000000-abcdef", taskId: "t00001", attempt: 1, pad: "x".repeat(30) });
    const n = opts.rawMsgs;
    // A short untimed warm-up (JIT, consumer pull state), then the timed batch.
    const warm = Math.min(5_000, Math.ceil(n / 10));
    let acked = 0;
    let target = warm;
    let reached!: () => void;
    let done = new Promise<void>((r) => (reached = r));
    const consumer = await jetstream(subNc).consumers.get(stream, "bench");
    const messages = await consumer.consume({
      max_messages: 1_000,
      callback: (m) => {
        m.ack();
        if (++acked === target) reached();
      },
    });
    const js = jetstream(pubNc);
    const ring: Array<Promise<PubAck> | undefined> = new Array(opts.window);
    const hdr = natsHeaders();
    hdr.set("Ado-Schema", "bench.msg/1");
    let seq = 0;
    const publishAll = async (count: number) => {
      ring.fill(undefined);
      for (let i = 0; i < count; i++) {
        const slot = i % opts.window;
        const prev = ring[slot];
        if (prev) await prev;
        ring[slot] =
          variant === "msgid+header" ? js.publish(subject, payload, { msgID: `${tag}.${seq++}`, headers: hdr }) : js.publish(subject, payload);
        if ((i & 4095) === 0) checkAbort(ctx.signal);
      }
      await Promise.all(ring);
    };
    await publishAll(warm);
    await orAbort(done, ctx.signal);
    await subNc.flush();
    target = warm + n;
    done = new Promise<void>((r) => (reached = r));
    const cpu0 = ctx.meter.snapshot();
    const t0 = performance.now();
    await publishAll(n);
    const tPub = performance.now();
    await orAbort(done, ctx.signal);
    await subNc.flush(); // the server has every ack once the flush's PONG is back
    const t1 = performance.now();
    const cpu = ctx.meter.use(cpu0, ctx.meter.snapshot());
    await messages.close().catch(() => undefined);
    const ms = t1 - t0;
    return {
      variant,
      msgs: n,
      window: opts.window,
      payloadBytes: payload.length,
      ms: r1(ms),
      msgsPerSec: Math.round(n / (ms / 1000)),
      publishMsgsPerSec: Math.round(n / ((tPub - t0) / 1000)),
      cpu,
    };
  } finally {
    await ctx.jsm.streams.delete(stream).catch(() => undefined);
    await drainQuietly(pubNc);
    await drainQuietly(subNc);
  }
}

/** Round trip of one awaited JetStream publish (file storage), and of a core request. */
async function roundTrips(ctx: Ctx): Promise<{ jsPublish: Summary; kvCreate: Summary; corePing: Summary }> {
  const tag = `rtt${rand()}`;
  const stream = `BENCH_${tag.toUpperCase()}`;
  const nc = await connectNats({ servers: ctx.server.url, name: `${tag}-pub`, logger: silentLogger });
  const bucket = `${tag}-kv`;
  try {
    await ctx.jsm.streams.add({ name: stream, subjects: [`${tag}.q`], retention: RetentionPolicy.Limits, storage: StorageType.File, num_replicas: 1 });
    const kv = await new Kvm(nc).create(bucket, { history: 1, storage: StorageType.File });
    const js = jetstream(nc);
    const payload = packRaw({ type: "bench.msg", pad: "x".repeat(80) });
    const pub: number[] = [];
    const kvc: number[] = [];
    const ping: number[] = [];
    const n = ctx.opts.rttSamples;
    for (let i = 0; i < n + 50; i++) {
      let t = performance.now();
      await js.publish(`${tag}.q`, payload, { msgID: `${tag}.${i}` });
      if (i >= 50) pub.push(performance.now() - t);
      t = performance.now();
      await kv.create(`k${i}`, payload);
      if (i >= 50) kvc.push(performance.now() - t);
      t = performance.now();
      await nc.flush();
      if (i >= 50) ping.push(performance.now() - t);
      if ((i & 255) === 0) checkAbort(ctx.signal);
    }
    return { jsPublish: summarize(pub), kvCreate: summarize(kvc), corePing: summarize(ping) };
  } finally {
    await ctx.jsm.streams.delete(stream).catch(() => undefined);
    await ctx.jsm.streams.delete(`KV_${bucket}`).catch(() => undefined);
    await drainQuietly(nc);
  }
}

// ---------------------------------------------------------------- 2. pipeline throughput

/** N independent noop tasks; parsed through the graph schema so every default is filled in. */
function noopGraph(name: string, n: number): Graph {
  const width = String(n).length;
  return GraphDefSchema.parse({
    name,
    tasks: Array.from({ length: n }, (_, i) => ({
      id: `t${String(i + 1).padStart(width, "0")}`,
      agent: "noop",
      prompt: "",
      needs: [],
      priority: "normal",
      retry: { attempts: 1 },
    })),
  });
}

interface ThroughputResult {
  workers: number;
  slots: number;
  tasks: number;
  status: string;
  /** Client-observed: just before submit -> watch() returned run.completed. */
  ms: number;
  tasksPerSec: number;
  ratioToRaw?: number;
  /** Submit PubAck received (the whole graph published). */
  submitMs: number;
  /** Client-observed: first / last task.started, relative to submit. */
  firstStartMs?: number;
  lastStartMs?: number;
  /** Actor clocks: run.accepted.at -> run.completed.at (ms resolution). */
  schedulerSpanMs?: number;
  /** How far the client's event replay was behind when run.completed reached it. */
  clientLagMs?: number;
  /** Actor clocks (event `at`, ms resolution), relative to run.accepted.at. */
  milestones?: Record<string, number>;
  /** Tasks/s between the first task.started and the last task.succeeded (actor clocks): the rate once work flows, without the accept burst. */
  steadyTasksPerSec?: number;
  events: Record<string, number>;
  cpu: CpuUse;
  cpuPeak: CpuUse;
  writes: StreamDelta[];
  writesPerTask: number;
  removedPerTask: number;
  msgsPerTask?: Record<string, { in: number; out: number }>;
  serverMsgsPerTask?: { in: number; out: number; jsApi: number };
}

async function throughput(ctx: Ctx, stack: Stack, client: AdoClient, workers: number, slots: number, n: number): Promise<ThroughputResult> {
  const topo = stack.topo;
  const graph = noopGraph(`bench-${n}`, n);
  const before = {
    streams: await streamCounts(ctx.jsm, topo),
    conns: await connCounts(ctx.server.monitorUrl, topo.prefix),
    server: await serverCounts(ctx.server.monitorUrl),
  };
  const events: Record<string, number> = {};
  let firstStart: number | undefined;
  let lastStart: number | undefined;
  let acceptedAt: string | undefined;
  let completedAt: string | undefined;
  // Earliest and latest `at` per event type, by the actors' clocks.
  const span: Record<string, { min: number; max: number }> = {};
  const sampler = new CpuSampler(ctx.meter, 500);
  const cpu0 = ctx.meter.snapshot();
  sampler.start();
  const t0 = performance.now();
  const { runId } = await client.submit({ graph });
  const tSubmitted = performance.now();
  const outcome = await client.watch(runId, {
    signal: ctx.signal,
    onEvent: (e: AdoEvent) => {
      events[e.type] = (events[e.type] ?? 0) + 1;
      const at = Date.parse(e.at);
      const sp = (span[e.type] ??= { min: at, max: at });
      if (at < sp.min) sp.min = at;
      if (at > sp.max) sp.max = at;
      if (e.type === "task.started") {
        const t = performance.now();
        firstStart ??= t;
        lastStart = t;
      } else if (e.type === "run.accepted") acceptedAt = e.at;
      else if (e.type === "run.completed") completedAt = e.at;
    },
  });
  const t1 = performance.now();
  const wallDone = Date.now();
  const cpu1 = ctx.meter.snapshot();
  sampler.stop();
  // Let the writes that follow run.completed (the last task and run records) land.
  await sleep(300);
  const after = {
    streams: await streamCounts(ctx.jsm, topo),
    conns: await connCounts(ctx.server.monitorUrl, topo.prefix),
    server: await serverCounts(ctx.server.monitorUrl),
  };
  const writes = streamDeltas(before.streams, after.streams).filter((d) => d.writes || d.removed);
  const conns = connDeltas(before.conns, after.conns);
  const ms = t1 - t0;
  return {
    workers,
    slots,
    tasks: n,
    status: outcome.status,
    ms: r1(ms),
    tasksPerSec: Math.round(n / (ms / 1000)),
    submitMs: r1(tSubmitted - t0),
    firstStartMs: firstStart === undefined ? undefined : r1(firstStart - t0),
    lastStartMs: lastStart === undefined ? undefined : r1(lastStart - t0),
    schedulerSpanMs: acceptedAt && completedAt ? Date.parse(completedAt) - Date.parse(acceptedAt) : undefined,
    clientLagMs: completedAt ? wallDone - Date.parse(completedAt) : undefined,
    milestones: acceptedAt ? milestones(Date.parse(acceptedAt), span) : undefined,
    steadyTasksPerSec:
      span["task.started"] && span["task.succeeded"] && span["task.succeeded"].max > span["task.started"].min
        ? Math.round(n / ((span["task.succeeded"].max - span["task.started"].min) / 1000))
        : undefined,
    events,
    cpu: ctx.meter.use(cpu0, cpu1),
    cpuPeak: sampler.peak(),
    writes,
    writesPerTask: r2(writes.reduce((a, d) => a + d.writes, 0) / n),
    removedPerTask: r2(writes.reduce((a, d) => a + d.removed, 0) / n),
    msgsPerTask: conns ? perTask(conns, n) : undefined,
    serverMsgsPerTask:
      before.server && after.server
        ? {
            in: r2((after.server.inMsgs - before.server.inMsgs) / n),
            out: r2((after.server.outMsgs - before.server.outMsgs) / n),
            jsApi: r2((after.server.jsApi - before.server.jsApi) / n),
          }
        : undefined,
  };
}

function milestones(base: number, span: Record<string, { min: number; max: number }>): Record<string, number> {
  const m: Record<string, number> = {};
  const put = (name: string, type: string, which: "min" | "max") => {
    const s = span[type];
    if (s) m[name] = s[which] - base;
  };
  put("last task.queued", "task.queued", "max");
  put("first task.started", "task.started", "min");
  put("last task.started", "task.started", "max");
  put("first task.succeeded", "task.succeeded", "min");
  put("last task.succeeded", "task.succeeded", "max");
  put("run.completed", "run.completed", "max");
  return m;
}

function perTask(c: ConnCounts, n: number): Record<string, { in: number; out: number }> {
  const out: Record<string, { in: number; out: number }> = {};
  for (const [role, v] of Object.entries(c)) out[role] = { in: r2(v.inMsgs / n), out: r2(v.outMsgs / n) };
  return out;
}

// ---------------------------------------------------------------- 3. latency at light load

interface LatencyResult {
  workers: number;
  slots: number;
  runs: number;
  warmup: number;
  submitToStart: Summary;
  submitToCompleted: Summary;
  /** Hops, from the arrival times of each event on the client's subscription. */
  stages: Record<string, Summary>;
  cpu: CpuUse;
  /** Node CPU per single-task run (ms), all actors and the client together. */
  nodeCpuMsPerRun?: number;
  /** Messages per run per connection role (/connz deltas). */
  msgsPerRun?: Record<string, { in: number; out: number }>;
  /** Pull requests waiting on each worker's consumer at the end (consumer info num_waiting). */
  workerPullsWaiting?: number[];
}

interface Track {
  t0: number;
  submitted?: number;
  accepted?: number;
  queued?: number;
  started?: number;
  succeeded?: number;
  completed?: number;
  status?: string;
  done: () => void;
}

async function latency(ctx: Ctx, stack: Stack, client: AdoClient, nc: NatsConnection, workers: number, slots: number): Promise<LatencyResult> {
  const topo: Topology = stack.topo;
  const tracks = new Map<string, Track>();
  const sub = nc.subscribe(topo.subjects.allEvents, {
    callback: (err, m) => {
      if (err) return;
      const t = performance.now();
      let e: AdoEvent;
      try {
        e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
      } catch {
        return;
      }
      const tr = tracks.get(e.runId);
      if (!tr) return;
      switch (e.type) {
        case "run.accepted":
          tr.accepted ??= t;
          break;
        case "task.queued":
          tr.queued ??= t;
          break;
        case "task.started":
          tr.started ??= t;
          break;
        case "task.succeeded":
        case "task.failed":
          tr.succeeded ??= t;
          break;
        case "run.completed":
        case "run.rejected":
          tr.completed ??= t;
          tr.status = e.type === "run.completed" ? e.status : "rejected";
          tr.done();
          break;
      }
    },
  });
  await nc.flush(); // the subscription is live on the server before the first submit
  const graph = noopGraph("latency", 1);
  const measured: Track[] = [];
  const total = ctx.opts.warmup + ctx.opts.latencyRuns;
  let cpu0 = ctx.meter.snapshot();
  let conns0: ConnCounts | undefined;
  let usage0 = process.cpuUsage();
  try {
    for (let i = 0; i < total; i++) {
      checkAbort(ctx.signal);
      if (i === ctx.opts.warmup) {
        conns0 = await connCounts(ctx.server.monitorUrl, topo.prefix);
        cpu0 = ctx.meter.snapshot();
        usage0 = process.cpuUsage();
      }
      const runId: RunId = newRunId();
      let done!: () => void;
      const finished = new Promise<void>((r) => (done = r));
      const tr: Track = { t0: 0, done };
      tracks.set(runId, tr);
      tr.t0 = performance.now();
      await client.submit({ graph, runId });
      tr.submitted = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`single-task run ${runId} did not complete within 10 s`)), 10_000);
      });
      try {
        await orAbort(Promise.race([finished, timeout]), ctx.signal);
      } finally {
        clearTimeout(timer);
      }
      tracks.delete(runId);
      if (tr.status !== "succeeded") throw new Error(`single-task run ${runId} ended ${tr.status}`);
      if (i >= ctx.opts.warmup) measured.push(tr);
    }
  } finally {
    sub.unsubscribe();
  }
  const cpu = ctx.meter.use(cpu0, ctx.meter.snapshot());
  const usage = process.cpuUsage(usage0);
  const conns = connDeltas(conns0, await connCounts(ctx.server.monitorUrl, topo.prefix));
  const workerPullsWaiting: number[] = [];
  for (const w of stack.workers) {
    const info = await ctx.jsm.consumers.info(topo.streams.work.name, consumers.work(w.id)).catch(() => undefined);
    if (info) workerPullsWaiting.push(info.num_waiting);
  }
  const d = (f: (t: Track) => number | undefined) => summarize(measured.map(f).filter((x): x is number => x !== undefined && Number.isFinite(x)));
  return {
    workers,
    slots,
    runs: measured.length,
    warmup: ctx.opts.warmup,
    submitToStart: d((t) => t.started! - t.t0),
    submitToCompleted: d((t) => t.completed! - t.t0),
    stages: {
      "submit -> PubAck": d((t) => t.submitted! - t.t0),
      "submit -> run.accepted": d((t) => t.accepted! - t.t0),
      "run.accepted -> task.queued": d((t) => t.queued! - t.accepted!),
      "task.queued -> task.started": d((t) => t.started! - t.queued!),
      "task.started -> task.succeeded": d((t) => t.succeeded! - t.started!),
      "task.succeeded -> run.completed": d((t) => t.completed! - t.succeeded!),
    },
    cpu,
    nodeCpuMsPerRun: measured.length ? r3((usage.user + usage.system) / 1000 / measured.length) : undefined,
    msgsPerRun: conns && measured.length ? perTask(conns, measured.length) : undefined,
    workerPullsWaiting,
  };
}

// ---------------------------------------------------------------- stacks

interface PipelineResult {
  throughput: ThroughputResult[];
  latency?: LatencyResult;
}

async function pipeline(ctx: Ctx, index: number, workers: number, slots: number, withLatency: boolean, sizes: number[]): Promise<PipelineResult> {
  const prefix = `bench${index}-${rand()}`;
  const worktreeDir = await mkdtemp(join(tmpdir(), "ado-bench-wt-"));
  const config = parseConfig({ prefix, server: ctx.server.url, workers, slots, heartbeatMs: 1000, worktreeDir });
  const result: PipelineResult = { throughput: [] };
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  try {
    stack = await Stack.start({ config, logger: silentLogger, server: ctx.server.url });
    nc = await connectNats({ servers: ctx.server.url, name: `${prefix}-client`, logger: silentLogger });
    const client = new AdoClient(nc, stack.topo);
    // Warm-up: JIT, consumers, the balancer's view of the workers.
    const warm = sizes.length ? Math.min(500, Math.max(1, Math.floor(sizes[0]! / 10))) : 50;
    progress(ctx, `${workers}x${slots}: warm-up run of ${warm} tasks`);
    const w = await orAbort(client.run({ graph: noopGraph("warmup", warm), signal: ctx.signal }), ctx.signal);
    if (w.status !== "succeeded") throw new Error(`warm-up run ended ${w.status}: ${w.error ?? ""}`);
    await sleep(300); // the warm-up's last acks and record writes land before the counters are read
    for (const n of sizes) {
      checkAbort(ctx.signal);
      progress(ctx, `${workers}x${slots}: run of ${n} noop tasks`);
      const r = await throughput(ctx, stack, client, workers, slots, n);
      progress(ctx, `${workers}x${slots}: ${n} tasks in ${r.ms} ms = ${r.tasksPerSec} tasks/s (${r.status})`);
      result.throughput.push(r);
    }
    if (withLatency) {
      progress(ctx, `${workers}x${slots}: latency, ${ctx.opts.warmup} + ${ctx.opts.latencyRuns} single-task runs`);
      result.latency = await latency(ctx, stack, client, nc, workers, slots);
    }
    return result;
  } finally {
    await drainQuietly(nc);
    await stack?.close();
    await rm(worktreeDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

// ---------------------------------------------------------------- report

interface Report {
  bench: "ado-pipeline";
  at: string;
  host: { node: string; cpus: number; natsServer: string; backgroundCpu?: number; pinned?: boolean };
  options: Record<string, unknown>;
  raw: RawResult[];
  roundTrips?: { jsPublish: Summary; kvCreate: Summary; corePing: Summary };
  pipeline: ThroughputResult[];
  latency?: LatencyResult;
  targets: { tasksPerSec: number; p50SubmitToStartMs: number };
  errors: string[];
  totalMs: number;
}

function render(rep: Report): string {
  const out: string[] = [];
  out.push(`ado pipeline benchmark  ${rep.at}  node ${rep.host.node}, ${rep.host.cpus} cpus, nats-server pid ${rep.host.natsServer}`);
  out.push("CPU columns: % of one core (node = whole process, main = its main thread); 'machine' = % of all cores busy; 'other' = % of a core used by other processes.");
  out.push(`background CPU of other processes before the run: ${rep.host.backgroundCpu ?? "?"}% of a core${rep.host.pinned ? "; node pinned to CPU 0, nats-server to CPU 1" : ""}`);
  const noisy = [...rep.raw.map((r) => r.cpu), ...rep.pipeline.map((r) => r.cpu), ...(rep.latency ? [rep.latency.cpu] : [])].some((c) => (c.other ?? 0) > 20);
  if (noisy || (rep.host.backgroundCpu ?? 0) > 20) out.push("WARNING: other processes used > 20% of a core during a phase: figures are skewed; rerun on a quiet machine.");
  if (rep.raw.length) {
    out.push("", "1. Raw JetStream (work-queue file stream, async publish window + pull consume/ack)");
    out.push(
      table(
        ["variant", "msgs", "window", "bytes", "ms", "msgs/s", "publish-only msgs/s", "node%", "main%", "nats%", "other%"],
        rep.raw.map((r) => [r.variant, r.msgs, r.window, r.payloadBytes, r.ms, r.msgsPerSec, r.publishMsgsPerSec, r.cpu.node, r.cpu.nodeMain, r.cpu.nats, r.cpu.other]),
      ),
    );
  }
  if (rep.roundTrips) {
    const rt = rep.roundTrips;
    out.push("", "   Single round trips (sequential, ms)");
    out.push(
      table(
        ["operation", "n", "p50", "p90", "p99", "max"],
        [
          ["core PING/PONG (flush)", rt.corePing.n, rt.corePing.p50, rt.corePing.p90, rt.corePing.p99, rt.corePing.max],
          ["js.publish + PubAck", rt.jsPublish.n, rt.jsPublish.p50, rt.jsPublish.p90, rt.jsPublish.p99, rt.jsPublish.max],
          ["kv.create", rt.kvCreate.n, rt.kvCreate.p50, rt.kvCreate.p90, rt.kvCreate.p99, rt.kvCreate.max],
        ],
      ),
    );
  }
  if (rep.pipeline.length) {
    out.push("", "2. Pipeline throughput (one run of N independent noop tasks, submit -> watch() sees run.completed)");
    out.push("   vs raw = tasks/s / raw 'plain' msgs/s; steady t/s = N / (first task.started .. last task.succeeded), actor clocks.");
    out.push(
      table(
        ["WxS", "tasks", "status", "ms", "tasks/s", "vs raw", "steady t/s", "submit ms", "1st start ms", "last start ms", "sched span ms", "client lag ms", "node%", "main%", "nats%", "other%", "peak main%"],
        rep.pipeline.map((r) => [
          `${r.workers}x${r.slots}`,
          r.tasks,
          r.status,
          r.ms,
          r.tasksPerSec,
          r.ratioToRaw === undefined ? undefined : `${(r.ratioToRaw * 100).toFixed(2)}%`,
          r.steadyTasksPerSec,
          r.submitMs,
          r.firstStartMs,
          r.lastStartMs,
          r.schedulerSpanMs,
          r.clientLagMs,
          r.cpu.node,
          r.cpu.nodeMain,
          r.cpu.nats,
          r.cpu.other,
          r.cpuPeak.nodeMain,
        ]),
      ),
    );
    const first = rep.pipeline[0]!;
    out.push("", `   Durable writes per task (stream sequence deltas / N), run ${first.workers}x${first.slots} of ${first.tasks} tasks`);
    out.push(
      table(
        ["stream", "writes", "per task", "removed", "per task"],
        [
          ...first.writes.map((d) => [d.stream, d.writes, r2(d.writes / first.tasks), d.removed, r2(d.removed / first.tasks)]),
          ["TOTAL", first.writes.reduce((a, d) => a + d.writes, 0), first.writesPerTask, first.writes.reduce((a, d) => a + d.removed, 0), first.removedPerTask],
        ],
      ),
    );
    const w = first.writes.reduce((a, d) => a + d.writes, 0);
    out.push(`   => ${first.writesPerTask} stored writes/task x ${first.tasksPerSec} tasks/s = ${Math.round((w / first.ms) * 1000)} stored msgs/s (raw baseline: ${rep.raw[0]?.msgsPerSec ?? "-"} msgs/s)`);
    if (first.msgsPerTask) {
      out.push("", "   Messages per task per connection role (/connz; in = sent by the client to the server, out = delivered to it)");
      out.push(
        table(
          ["role", "in/task", "out/task"],
          Object.entries(first.msgsPerTask).map(([role, v]) => [role, v.in, v.out]),
        ),
      );
      if (first.serverMsgsPerTask) {
        const s = first.serverMsgsPerTask;
        out.push(`   server totals per task: in ${s.in}, out ${s.out}, JetStream API requests ${s.jsApi}`);
      }
    }
    for (const r of rep.pipeline) {
      if (r.milestones) out.push(`   ${r.workers}x${r.slots} N=${r.tasks} actor-clock milestones after run.accepted (ms): ${Object.entries(r.milestones).map(([k, v]) => `${k} ${v}`).join(", ")}`);
    }
    out.push(`   events seen by the client: ${Object.entries(first.events).map(([k, v]) => `${k}=${v}`).join(", ")}`);
  }
  if (rep.latency) {
    const l = rep.latency;
    out.push("", `3. Latency at light load (${l.workers}x${l.slots}; ${l.runs} single-task noop runs after ${l.warmup} warm-up, one at a time; ms)`);
    const row = (name: string, s: Summary) => [name, s.n, s.p50, s.p90, s.p99, s.max, s.mean];
    out.push(
      table(
        ["measure", "n", "p50", "p90", "p99", "max", "mean"],
        [
          row("submit -> task.started", l.submitToStart),
          row("submit -> run.completed", l.submitToCompleted),
          ...Object.entries(l.stages).map(([k, s]) => row(`  ${k}`, s)),
        ],
      ),
    );
    out.push(`   CPU during the latency phase: node ${l.cpu.node}%, main ${l.cpu.nodeMain}%, nats ${l.cpu.nats}%, other ${l.cpu.other ?? "-"}%; node CPU per single-task run: ${l.nodeCpuMsPerRun ?? "-"} ms`);
    if (l.msgsPerRun) {
      out.push(`   messages per run (in/out): ${Object.entries(l.msgsPerRun).filter(([, v]) => v.in || v.out).map(([k, v]) => `${k} ${v.in}/${v.out}`).join(", ")}`);
    }
    if (l.workerPullsWaiting?.length) out.push(`   pull requests waiting on the worker consumers at the end: ${l.workerPullsWaiting.join(", ")}`);
  }
  out.push("", "Targets (issue): >= 3000 noop tasks/s; p50 submit -> start <= 2 ms.");
  const best = rep.pipeline.reduce<ThroughputResult | undefined>((b, r) => (!b || r.tasksPerSec > b.tasksPerSec ? r : b), undefined);
  if (best) out.push(`   best throughput: ${best.tasksPerSec} tasks/s (${best.workers}x${best.slots}, N=${best.tasks}) -> ${best.tasksPerSec >= rep.targets.tasksPerSec ? "meets" : "below"} target`);
  if (rep.latency) out.push(`   p50 submit -> start: ${rep.latency.submitToStart.p50} ms -> ${rep.latency.submitToStart.p50 <= rep.targets.p50SubmitToStartMs ? "meets" : "above"} target`);
  if (rep.errors.length) out.push("", "ERRORS:", ...rep.errors.map((e) => `  ${e}`));
  out.push(`total ${(rep.totalMs / 1000).toFixed(1)} s`);
  return out.join("\n");
}

// ---------------------------------------------------------------- main

/** Pins every thread of this process to CPU 0 and nats-server to CPU 1. */
function pin(natsPid: number | undefined, cores: number, errors: string[]): boolean {
  if (!natsPid || cores < 2) {
    errors.push("--pin: needs 2+ CPUs and the nats-server pid");
    return false;
  }
  try {
    execFileSync("taskset", ["-a", "-p", "-c", "0", String(process.pid)], { stdio: "ignore" });
    execFileSync("taskset", ["-a", "-p", "-c", "1", String(natsPid)], { stdio: "ignore" });
    return true;
  } catch (err) {
    errors.push(`--pin: taskset failed: ${(err as Error).message}`);
    return false;
  }
}

async function main(opts: Options): Promise<number> {
  const started = performance.now();
  const budget = new AbortController();
  let budgetTimer: NodeJS.Timeout | undefined;
  // Last resort if cleanup itself hangs: the watchdog of the embedded server ends it with us.
  const hardTimer = setTimeout(() => {
    console.error("[bench] cleanup did not finish; exiting");
    process.exit(3);
  }, opts.waitQuietMs + opts.timeoutMs + 30_000);
  hardTimer.unref();
  const onSignal = () => budget.abort("interrupted");
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const errors: string[] = [];
  const report: Report = {
    bench: "ado-pipeline",
    at: new Date().toISOString(),
    host: { node: process.version, cpus: 0, natsServer: "?" },
    options: {
      tasks: opts.tasks,
      sweep: opts.sweep,
      configs: opts.configs.map((c) => `${c.workers}x${c.slots}`),
      rawMsgs: opts.rawMsgs,
      window: opts.window,
      latencyRuns: opts.latencyRuns,
      warmup: opts.warmup,
      phases: [...opts.phases],
      quick: opts.quick,
    },
    raw: [],
    pipeline: [],
    targets: { tasksPerSec: 3_000, p50SubmitToStartMs: 2 },
    errors,
    totalMs: 0,
  };

  let server: EmbeddedServer | undefined;
  let admin: NatsConnection | undefined;
  try {
    server = await EmbeddedServer.start({ monitoring: true, logger: silentLogger });
    const natsPid = findChild(server.pid, "nats-server");
    report.host.natsServer = String(natsPid ?? "?");
    const meter = new CpuMeter({
      node: `/proc/${process.pid}/stat`,
      nodeMain: `/proc/${process.pid}/task/${process.pid}/stat`,
      ...(natsPid ? { nats: `/proc/${natsPid}/stat` } : {}),
    });
    report.host.cpus = meter.cores;
    if (opts.pin) report.host.pinned = pin(natsPid, meter.cores, errors);
    // CPU used by other processes on the box while we idle: other load skews every figure.
    report.host.backgroundCpu = await waitQuiet(
      async () => {
        const idle0 = meter.snapshot();
        await sleep(1_000);
        return meter.use(idle0, meter.snapshot()).other;
      },
      opts.waitQuietMs,
      (m) => !opts.json && process.stderr.write(`[bench] ${m}\n`),
      budget.signal,
    );
    // The time budget covers the measurements, not the wait for quiet.
    budgetTimer = setTimeout(() => budget.abort(`time budget of ${opts.timeoutMs / 1000} s`), opts.timeoutMs);
    admin = await connectNats({ servers: server.url, name: "bench-admin", logger: silentLogger });
    const ctx: Ctx = { opts, server, meter, signal: budget.signal, admin, jsm: await jetstreamManager(admin) };

    if (opts.phases.has("raw")) {
      for (const variant of ["plain", "msgid+header", "noAsyncTraces"] as const) {
        if (budget.signal.aborted) break;
        try {
          progress(ctx, `raw JetStream baseline (${variant}): ${opts.rawMsgs} msgs, window ${opts.window}`);
          const r = await rawBaseline(ctx, variant);
          progress(ctx, `raw ${variant}: ${r.msgsPerSec} msgs/s`);
          report.raw.push(r);
        } catch (err) {
          errors.push(`raw ${variant}: ${(err as Error).message}`);
        }
      }
      if (!budget.signal.aborted) try {
        progress(ctx, `sequential round trips: ${opts.rttSamples} each`);
        report.roundTrips = await roundTrips(ctx);
      } catch (err) {
        errors.push(`round trips: ${(err as Error).message}`);
      }
    }
    if (opts.phases.has("pipeline") || opts.phases.has("latency")) {
      for (let i = 0; i < opts.configs.length; i++) {
        if (budget.signal.aborted) break;
        const { workers, slots } = opts.configs[i]!;
        const sizes = opts.phases.has("pipeline") ? (i === 0 ? [opts.tasks, ...opts.sweep] : [opts.tasks]) : [];
        const withLatency = i === 0 && opts.phases.has("latency");
        if (!sizes.length && !withLatency) continue;
        try {
          const r = await pipeline(ctx, i, workers, slots, withLatency, sizes);
          report.pipeline.push(...r.throughput);
          if (r.latency) report.latency = r.latency;
        } catch (err) {
          errors.push(`pipeline ${workers}x${slots}: ${budget.signal.aborted ? `stopped: ${String(budget.signal.reason)}; ` : ""}${(err as Error).message}`);
        }
      }
      const raw = report.raw[0]?.msgsPerSec;
      if (raw) for (const r of report.pipeline) r.ratioToRaw = r3(r.tasksPerSec / raw);
    }
  } catch (err) {
    errors.push((err as Error).stack ?? String(err));
  } finally {
    clearTimeout(budgetTimer);
    await drainQuietly(admin);
    await server?.stop().catch((err) => errors.push(`server stop: ${(err as Error).message}`));
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
  report.totalMs = Math.round(performance.now() - started);
  printReport(report, opts.json, render);
  return errors.length ? 1 : 0;
}

runMain("run", parseArgs, main);
