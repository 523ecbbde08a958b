import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

/**
 * Issue 13's burst, at its scale: 200 tasks on a `local` pool with min 0 and max 6. The
 * workers (real `ado worker` processes) come up, never more than 6; the backlog drains;
 * they go after the idle timeout, each stopped cleanly; every task's command ran exactly
 * once (counted in a file outside the repository, which the workers cannot undo or
 * retry away) and no agent was interrupted. The tasks are tiny (an append and no
 * change to the tree), so the run is about the pool, not about git.
 */

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-scaler-burst-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

describe("scaler - a burst of 200 tasks on a local pool, min 0, max 6", () => {
  it("burst - workers come up (at most 6), the backlog drains, they go after the idle timeout; every task ran once, none interrupted", async () => {
    const TASKS = 200;
    const MAX = 6;
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const logDir = join(scratch, "logs");
    const executions = join(scratch, "executions.txt");
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 0,
      heartbeatMs: 1_000,
      worktreeDir: join(scratch, "wt"),
      logLevel: "warn",
      scaler: {
        interval: "250ms",
        pools: [
          {
            name: "burst",
            backend: "local",
            min: 0,
            max: MAX,
            slots: 2,
            idleTimeout: "3s",
            scaleUp: { cooldown: 0, stabilization: 0 },
            scaleDown: { cooldown: "1s", stabilization: "1s" },
            local: { logDir },
          },
        ],
      },
    });
    const logFile = join(scratch, "stack.log");
    const logger = pino({ level: "info" }, pino.destination({ dest: logFile, sync: true }));
    onTestFailed(async () => {
      const lines = (await readFile(logFile, "utf8").catch(() => "")).split("\n").filter((l) => l.includes('"actor":"scaler"'));
      console.log(lines.slice(-60).join("\n"));
    });
    const stack = await Stack.start({ config, logger });
    const nc = await ts.connect("scaler-burst");
    const kv = await openBuckets(nc, topo);
    const seen = new Set<string>();
    const live = new Set<string>();
    let most = 0;
    const watch = await kv.workers.watch();
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") {
          live.delete(e.key);
          continue;
        }
        const r = decode(SCHEMAS.WorkerRecord, e.value);
        if (r.pool !== "burst") continue;
        seen.add(r.workerId);
        live.add(r.workerId);
        most = Math.max(most, live.size);
      }
    })();
    const client = new AdoClient(nc, topo);
    const events: AdoEvent[] = [];
    type Status = { pools: Array<{ backendStatus: { processes: unknown[] } }> };
    const scaler = () => stack.actors.find((a) => a.kind === "scaler")!;
    onTestFailed(() => {
      console.log(JSON.stringify(scaler().stats(), null, 2));
      const counts = new Map<string, number>();
      for (const e of events) counts.set(e.type, (counts.get(e.type) ?? 0) + 1);
      console.log([...counts].map(([t, n]) => `${t}: ${n}`).join("\n"));
    });
    try {
      const graph = parseGraph(["tasks:", ...Array.from({ length: TASKS }, (_, i) => `  - { id: t${i}, run: 'echo t${i} >> ${executions}' }`)].join("\n") + "\n");
      const t0 = Date.now();
      const { runId } = await client.submit({ graph, repo: repo.dir });
      client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(280_000) }).catch(() => undefined);
      const succeeded = () => events.filter((e) => e.type === "task.succeeded").length;
      await eventually(() => succeeded() === TASKS || events.some((e) => e.type === "task.failed"), 240_000, `all ${TASKS} tasks succeeded`);
      const drained = Date.now() - t0;

      const started = events.filter((e): e is Extract<AdoEvent, { type: "task.started" }> => e.type === "task.started");
      // Nothing lost, nothing twice: one start per task, on attempt 1, and one execution each.
      expect(started.length).toBe(TASKS);
      expect(started.every((e) => e.attempt === 1)).toBe(true);
      // No agent killed mid-task: nothing checkpointed, lost, interrupted or failed.
      expect(events.filter((e) => e.type === "task.checkpoint" || e.type === "worker.lost" || e.type === "task.failed")).toEqual([]);
      const ran = (await readFile(executions, "utf8")).split("\n").filter(Boolean);
      expect(ran.length).toBe(TASKS);
      expect(new Set(ran).size).toBe(TASKS);
      // On the pool's workers, started for the burst: more than one, never more than max.
      const ranOn = new Set(started.map((e) => e.workerId));
      expect([...ranOn].every((w) => seen.has(w))).toBe(true);
      expect(seen.size).toBeGreaterThan(1);
      expect(most).toBeLessThanOrEqual(MAX);

      // Idle for 3 s, they go: no record, no process, and each stopped cleanly (its log removed).
      await eventually(() => live.size === 0, 60_000, "every pool worker gone from the registry");
      await eventually(() => (scaler().stats() as Status).pools[0]!.backendStatus.processes.length === 0, 30_000, "every worker process ended");
      await eventually(async () => (await readdir(logDir).catch(() => [])).filter((f) => f.endsWith(".log")).length === 0, 20_000, "every worker's log removed after its clean stop");
      console.log(`burst of ${TASKS}: ${seen.size} worker(s), at most ${most} at once; drained in ${drained} ms; all gone ${Date.now() - t0} ms after the submission`);
    } finally {
      watch.stop();
      await stack.close();
      await repo.cleanup();
    }
  }, 300_000);
});
