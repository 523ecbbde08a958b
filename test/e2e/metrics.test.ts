import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { startHealthServer } from "../../src/runtime/health.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { readSnapshot } from "../../src/runtime/run-snapshot.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { makeRepo } from "../helpers/repo.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";

let ts: TestServer;
let dir: string;
beforeAll(async () => {
  ts = await startTestServer();
  dir = await mkdtemp(join(tmpdir(), "ado-metrics-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(dir, { recursive: true, force: true, maxRetries: 10 });
});

/** One sample of the Prometheus text format: `name{a="x",b="y"} value`. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The sum of a metric's samples whose labels include `labels`. */
function sum(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);
}

describe("metrics - a live stack's /metrics during and after a run", () => {
  it("shows the running task, the worker's load and the consumers while it runs, then the figures of what the run did", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 2, slots: 1, worktreeDir: join(dir, "wt"), heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger, recorder: { everyMs: 100 } });
    const health = await startHealthServer({ port: 0, host: "127.0.0.1", logger: silentLogger, checks: { live: () => stack.health().live, ready: () => stack.health().ready }, metrics: stack.metrics });
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    const scrape = async () => {
      const res = await fetch(`http://127.0.0.1:${health.port}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
      return parseMetrics(await res.text());
    };
    try {
      const gate = join(dir, "gate");
      // `slow` holds its worker until the test opens the gate, so "while it runs" is a state, not a race.
      const graph = parseGraph(`
name: metrics
tasks:
  - { id: slow, run: "while [ ! -f '${gate}' ]; do sleep 0.05; done; echo S > s.txt" }
  - { id: quick, run: "echo Q > q.txt" }
  - { id: after, needs: [slow], run: "echo A > a.txt" }
  - { id: flaky, run: "echo broken >&2; exit 3", retry: { attempts: 2, backoff: 0.1s } }
`);
      const client = new AdoClient(nc, topo);
      const outcome = client.run({ graph, repo: repo.dir });

      let last: Sample[] = [];
      const live = await eventually(
        async () => {
          const s = await scrape();
          last = s;
          return sum(s, "ado_task_stage", { stage: "running" }) >= 1 && sum(s, "ado_worker_running") >= 1 && sum(s, "ado_runs", { state: "running" }) === 1 ? s : undefined;
        },
        30_000,
        "the running task in /metrics",
      ).catch((err) => {
        throw new Error(`${err.message}; last scrape: ${last.filter((x) => x.name.startsWith("ado_")).map((x) => `${x.name}${JSON.stringify(x.labels)} ${x.value}`).join("; ")}`);
      });
      expect(sum(live, "ado_worker_slots")).toBe(2);
      expect(sum(live, "ado_worker_utilization")).toBeGreaterThan(0);
      // `after` waits for `slow`: blocked on its dependency.
      expect(sum(live, "ado_task_stage", { stage: "blocked" })).toBe(1);
      for (const consumer of ["scheduler", "merger", "balancer-normal"]) {
        expect(live.some((x) => x.name === "ado_jetstream_consumer_pending" && x.labels.consumer === consumer), consumer).toBe(true);
      }
      expect(live.filter((x) => x.name === "ado_jetstream_consumer_pending" && x.labels.consumer?.startsWith("worker-")).length).toBe(2);
      expect(live.some((x) => x.name === "ado_task_queue_length")).toBe(true);
      expect(live.some((x) => x.name === "process_cpu_seconds_total")).toBe(true);

      await writeFile(gate, "");
      const done = await outcome;
      expect(done.status).toBe("failed");
      const by = (status: string) => done.tasks.filter((t) => t.status === status);
      expect(by("succeeded").map((t) => t.id).sort()).toEqual(["after", "quick", "slow"]);
      expect(by("failed").map((t) => t.id)).toEqual(["flaky"]);
      const attempts = done.tasks.reduce((n, t) => n + t.attempts, 0);

      const end = await eventually(
        async () => {
          const s = await scrape();
          return sum(s, "ado_runs_finished_total") === 1 && sum(s, "ado_tasks_finished_total") === done.tasks.length ? s : undefined;
        },
        30_000,
        "the run's end in /metrics",
      );
      expect(sum(end, "ado_runs_finished_total", { state: "failed" })).toBe(1);
      expect(sum(end, "ado_tasks_finished_total", { state: "succeeded", agent: "shell", provider: "local" })).toBe(3);
      expect(sum(end, "ado_tasks_finished_total", { state: "failed", agent: "shell" })).toBe(1);
      // Every attempt ran and ended: one duration each, failures by class.
      expect(sum(end, "ado_task_duration_seconds_count")).toBe(attempts);
      expect(sum(end, "ado_task_duration_seconds_count", { outcome: "failed" })).toBe(2);
      expect(sum(end, "ado_task_failures_total", { agent: "shell" })).toBe(2);
      expect(end.some((x) => x.name === "ado_task_failures_total" && x.labels.class && x.labels.class !== "unknown")).toBe(true);
      expect(sum(end, "ado_task_retries_total", { agent: "shell" })).toBe(1);
      // Three branches with files were merged.
      expect(sum(end, "ado_merge_duration_seconds_count", { outcome: "merged" })).toBe(3);
      // Nothing left in progress, nothing waiting.
      expect(sum(end, "ado_tasks")).toBe(0);
      expect(sum(end, "ado_runs")).toBe(0);
      expect(sum(end, "ado_task_queue_length")).toBe(0);
      expect(sum(end, "ado_hitl_waiting")).toBe(0);
      expect(sum(end, "ado_worker_running")).toBe(0);
      expect(sum(end, "ado_event_lag_seconds_count")).toBeGreaterThan(0);
      expect(sum(end, "ado_recorder_malformed_total")).toBe(0);

      // The recorder's snapshot of the finished run says what the run's outcome says.
      const kv = await openBuckets(nc, topo);
      const snap = await eventually(async () => {
        const loaded = await readSnapshot(kv.snapshots, done.runId);
        return loaded?.fold.status === "failed" ? loaded : undefined;
      }, 20_000, "the run's final snapshot");
      expect(Object.fromEntries(snap.fold.ids().map((id) => [id, snap.fold.task(id)!.status]))).toEqual(Object.fromEntries(done.tasks.map((t) => [t.id, t.status])));
      expect(snap.fold.task("flaky")!.attempts).toBe(2);
      expect(sum(end, "ado_snapshot_writes_total")).toBeGreaterThan(0);
    } finally {
      await nc.drain();
      await health.close();
      await stack.close();
      await repo.cleanup();
    }
  }, 90_000);
});
