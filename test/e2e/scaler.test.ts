import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { authForRole } from "../../src/runtime/nats-auth.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { pino } from "pino";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { scalerKeys } from "../../src/runtime/names.js";
import { openBuckets, provision } from "../../src/runtime/topology.js";
import { Scaler } from "../../src/actors/scaler/scaler.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";
import { ADO_BIN, runAdo } from "../helpers/cli.js";
import { spawn } from "node:child_process";
import { AUTO_SCALE_POOL } from "../../src/cli/auto-scale.js";

/**
 * Issue 13: the scaler on the `local` backend. A burst of tasks on a pool with min 0:
 * `ado worker` processes come up (never more than max), the backlog drains, the
 * workers go away after the idle timeout, nothing is lost and no agent is interrupted.
 * Real nats-server, real git, real `ado worker` processes; the agents are shell commands.
 */

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-scaler-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

describe("scaler - a burst on a local pool with min 0", () => {
  it("workers come up (at most max), the backlog drains, they go away after the idle timeout; every task ran once", async () => {
    const TASKS = 24;
    const MAX = 3;
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const logDir = join(scratch, "logs");
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 0,
      // The default heartbeat: a shorter one makes the stealer take a slow worker of this loaded machine for dead.
      heartbeatMs: 1_000,
      worktreeDir: join(scratch, "wt"),
      logLevel: "warn",
      scaler: {
        interval: "200ms",
        pools: [
          {
            name: "burst",
            backend: "local",
            min: 0,
            max: MAX,
            slots: 2,
            idleTimeout: "2s",
            scaleUp: { cooldown: 0, stabilization: 0 },
            scaleDown: { cooldown: "1s", stabilization: "1s" },
            local: { logDir },
          },
        ],
      },
    });
    // The scaler's decisions, in its own words, shown when the test fails.
    const logFile = join(scratch, "stack.log");
    const logger = pino({ level: "info" }, pino.destination({ dest: logFile, sync: true }));
    onTestFailed(async () => {
      const lines = (await readFile(logFile, "utf8").catch(() => "")).split("\n").filter((l) => l.includes('"actor":"scaler"'));
      console.log(lines.slice(-80).join("\n"));
    });
    const stack = await Stack.start({ config, logger });
    const nc = await ts.connect("scaler-burst");
    const kv = await openBuckets(nc, topo);
    // Every pool worker ever seen in the registry, and the most seen live at once.
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
    const scaler = () => stack.actors.find((a) => a.kind === "scaler")!;
    onTestFailed(async () => {
      console.log(JSON.stringify(scaler().stats(), null, 2));
      console.log(events.filter((e) => e.type !== "task.output").map((e) => `${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}`).join("\n"));
      for (const f of await readdir(logDir).catch(() => [])) console.log(f);
    });
    try {
      // Before any work: min 0, so no worker.
      await new Promise((r) => setTimeout(r, 1_000));
      expect(seen.size).toBe(0);

      const graph = parseGraph(["tasks:", ...Array.from({ length: TASKS }, (_, i) => `  - { id: t${i}, run: 'echo ${i} > t${i}.txt; sleep 0.2' }`)].join("\n") + "\n");
      const t0 = Date.now();
      const { runId } = await client.submit({ graph, repo: repo.dir });
      // The merges (one at a time, slow on a loaded machine) are not the scaler's business: the run is followed until every task has succeeded.
      const run = client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(170_000) });
      run.catch(() => undefined);
      const succeeded = () => events.filter((e) => e.type === "task.succeeded").length;
      await eventually(() => succeeded() === TASKS || events.some((e) => e.type === "task.failed"), 150_000, "every task succeeded");
      const firstStart = events.find((e) => e.type === "task.started");
      console.log(`burst of ${TASKS}: first task started after ${firstStart ? Date.parse(firstStart.at) - t0 : "?"} ms, all succeeded after ${Date.now() - t0} ms on ${seen.size} worker(s)`);

      // Every task ran exactly once: one start each, on attempt 1, nothing lost or interrupted.
      const started = events.filter((e) => e.type === "task.started");
      expect(started.length).toBe(TASKS);
      expect(started.every((e) => "attempt" in e && e.attempt === 1)).toBe(true);
      expect(events.filter((e) => e.type === "task.checkpoint" || e.type === "worker.lost" || e.type === "task.failed")).toEqual([]);
      // The work ran on the pool's workers, started for it: more than one, never more than max.
      const ranOn = new Set(started.map((e) => ("workerId" in e ? e.workerId : "")));
      expect([...ranOn].every((w) => seen.has(w))).toBe(true);
      expect(seen.size).toBeGreaterThan(1);
      expect(most).toBeLessThanOrEqual(MAX);

      // Idle for 2 s, they go: no record, no process, each log removed (a clean stop).
      await eventually(() => live.size === 0, 30_000, "every pool worker gone from the registry");
      await eventually(() => (scaler().stats() as { pools: Array<{ backendStatus: { processes: unknown[] } }> }).pools[0]!.backendStatus.processes.length === 0, 30_000, "every worker process ended");
      // The workers that ran tasks stopped cleanly (drained, exit 0: their logs are removed), none was killed.
      await eventually(async () => {
        const left = new Set(await readdir(logDir).catch(() => []));
        return [...ranOn].every((w) => !left.has(`${w}.log`));
      }, 10_000, "the logs of the workers that ran tasks removed after their clean stop");
      // The scaler's memory of the pool is in KV for a successor, and says why it is where it is.
      const state = decode(SCHEMAS.ScalerState, (await kv.scaler.get(scalerKeys.state("burst")))!.value);
      expect(state).toMatchObject({ pool: "burst", backend: "local", warming: [], failures: 0 });
      expect(state.warmups.length).toBe(seen.size);
      console.log(`warm-up (decision to first heartbeat), ms: ${state.warmups.join(", ")}; all gone ${Date.now() - t0} ms after the submission`);
    } finally {
      watch.stop();
      await stack.close();
      await repo.cleanup();
    }
  }, 180_000);

  it("scaler - a pool worker killed (SIGKILL to its process group) is replaced after the crash backoff; each worker leads its own process group", async () => {
    const topo = uniqueTopology();
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 0,
      heartbeatMs: 1_000,
      worktreeDir: join(scratch, "wt-crash"),
      scaler: { interval: "250ms", pools: [{ name: "steady", backend: "local", min: 1, max: 1, local: { logDir: join(scratch, "logs-crash") } }] },
    });
    const stack = await Stack.start({ config, logger: silentLogger });
    const nc = await ts.connect("scaler-crash");
    const kv = await openBuckets(nc, topo);
    type Status = { pools: Array<{ backendStatus: { processes: Array<{ id: string; pid: number }> } }> };
    const processes = () => (stack.actors.find((a) => a.kind === "scaler")!.stats() as Status).pools[0]!.backendStatus.processes;
    const liveIds = async () => {
      const ids: string[] = [];
      for await (const k of await kv.workers.keys()) ids.push(k);
      return ids;
    };
    try {
      const first = await eventually(async () => ((await liveIds()).length === 1 && processes().length === 1 ? processes()[0] : undefined), 60_000, "the pool's one worker up");
      // Its own process group (and session): a signal to the scaler's terminal never reaches it, and its group can be killed whole.
      const stat = (await readFile(`/proc/${first.pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
      expect(Number(stat[2])).toBe(first.pid); // pgrp
      expect(Number(stat[3])).toBe(first.pid); // session
      process.kill(-first.pid, "SIGKILL");
      // Replaced by a new worker (a new id); the crash is in the scaler's memory, with its backoff.
      const second = await eventually(() => processes().find((p) => p.id !== first.id), 60_000, "a replacement started");
      const state = decode(SCHEMAS.ScalerState, (await kv.scaler.get(scalerKeys.state("steady")))!.value);
      expect(state.failures).toBe(1);
      expect(state.retryAt).toBeGreaterThan(0);
      expect(state.last?.reason ?? "").not.toBe("");
      await eventually(async () => (await liveIds()).includes(second.id), 60_000, "the replacement heartbeats");
    } finally {
      await stack.close();
    }
  }, 180_000);

  it("scaler - two replicas: only the lease holder acts; its successor goes on from the stored memory and does not start the same workers again", async () => {
    const topo = uniqueTopology();
    const ups = join(scratch, "replicas-ups");
    // The command backend: `up` only records what it was asked (its workers never come up, so they stay warming).
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 0,
      heartbeatMs: 1_000,
      worktreeDir: join(scratch, "wt-replicas"),
      scaler: { interval: "200ms", pools: [{ name: "cmd", backend: "command", min: 2, max: 2, warmupTimeout: "5m", command: { up: `echo "$ADO_WORKER_IDS" >> ${ups}`, down: "true" } }] },
    });
    // Two replicas as two processes would run them: each its own connection and instance name.
    const replica = async (name: string) => {
      const nc = await ts.connect(name);
      await provision(nc, topo);
      return new Scaler(name, { nc, topo, kv: await openBuckets(nc, topo), logger: silentLogger }, { heartbeatMs: config.heartbeatMs, config: config.scaler, serverUrl: ts.url, workerEnv: {}, shutdown: config.shutdown }).start();
    };
    const a = await replica("scaler-a");
    const b = await replica("scaler-b");
    const leaderOf = () => [a, b].find((s) => s.stats().leader);
    const lines = async () => (await readFile(ups, "utf8").catch(() => "")).split("\n").filter(Boolean);
    try {
      const first = await eventually(leaderOf, 20_000, "one scaler leads");
      await eventually(async () => (await lines()).length === 1, 20_000, "the leader started the pool's 2 workers");
      expect((await lines())[0]!.split(" ")).toHaveLength(2);
      expect([a, b].filter((s) => s.stats().leader)).toHaveLength(1);
      const standby = first === a ? b : a;
      await first.close();
      await eventually(() => standby.stats().leader, 20_000, "the standby takes the lease");
      // It decides several times from the stored memory: the 2 launches are still warming, nothing more starts.
      const before = standby.stats().decisions;
      await eventually(() => standby.stats().decisions >= before + 5, 20_000, "five decisions of the new leader");
      expect(await lines()).toHaveLength(1);
      expect(standby.stats().pools[0]!.warming).toBe(2);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  }, 120_000);
});

describe("ado run --auto-scale", () => {
  it("auto-scale - the embedded stack's workers are the scaler's processes: they come up for the run, run every task once, and are stopped cleanly at its end", async () => {
    const TASKS = 6;
    const repo = await makeRepo();
    const home = join(scratch, "auto-home");
    const count = join(scratch, "auto-executions.txt");
    const graph = join(scratch, "auto-graph.yaml");
    await writeFile(graph, ["tasks:", ...Array.from({ length: TASKS }, (_, i) => `  - { id: t${i}, run: 'echo t${i} >> ${count}; echo ${i} > t${i}.txt; sleep 0.3' }`)].join("\n") + "\n");
    const env = { XDG_STATE_HOME: join(home, "state"), XDG_CACHE_HOME: join(home, "cache"), ADO_PREFIX: uniqueTopology().prefix };
    try {
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--auto-scale", "0..2", "--json"], { env, timeoutMs: 170_000 });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { status: string; tasks: Array<{ id: string; status: string; attempts: number; workerId: string }> };
      expect(out.status).toBe("succeeded");
      expect(out.tasks.every((t) => t.status === "succeeded" && t.attempts === 1)).toBe(true);
      // Run by the pool's workers (ids `w-run-*`: the scaler names them after the pool), at most 2, none in the run's own process.
      const on = new Set(out.tasks.map((t) => t.workerId));
      expect([...on].every((w) => w.startsWith(`w-${AUTO_SCALE_POOL}-`)), [...on].join(", ")).toBe(true);
      expect(on.size).toBeGreaterThanOrEqual(1);
      expect(on.size).toBeLessThanOrEqual(2);
      // Each task's command ran once, counted outside the repository.
      const lines = (await readFile(count, "utf8")).split("\n").filter(Boolean).sort();
      expect(lines).toEqual(Array.from({ length: TASKS }, (_, i) => `t${i}`).sort());
      // The workers were stopped cleanly when the run ended: a worker's log is removed after a clean stop.
      expect((await readdir(join(home, "state", "ado", "workers")).catch(() => [])).filter((f) => f.endsWith(".log"))).toEqual([]);
    } finally {
      await repo.cleanup();
    }
  }, 180_000);

  it("auto-scale - Ctrl-C once: the pool's workers drain (the running task finishes and merges), the waiting one does not start", async () => {
    const repo = await makeRepo();
    const home = join(scratch, "auto-ctrlc");
    const graph = join(scratch, "auto-ctrlc.yaml");
    // Two tasks and one worker of one slot: the second waits for the first, which ends when
    // the test opens the gate, once the pool's worker drains (an 8 s sleep was the time
    // left for the Ctrl-C to reach it, which a loaded machine could pass).
    const gate = join(scratch, "auto-ctrlc-gate");
    const task = (id: string) => `{ id: ${id}, run: "while [ ! -f ${gate} ]; do sleep 0.05; done; echo ${id} > ${id}.txt" }`;
    await writeFile(graph, `tasks:\n  - ${task("one")}\n  - ${task("two")}\n`);
    const topo = uniqueTopology();
    const env = { ADO_SERVER: "", XDG_STATE_HOME: join(home, "state"), XDG_CACHE_HOME: join(home, "cache"), ADO_PREFIX: topo.prefix, ADO_LOG_LEVEL: "error" };
    const child = spawn(process.execPath, [ADO_BIN, "run", "--graph", graph, "--repo", repo.dir, "--auto-scale", "0..1", "--progress", "plain"], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    onTestFailed(() => console.log(out));
    try {
      await eventually(() => /(one|two): started/.test(out) || child.exitCode !== null, 120_000, "a task started on a pool worker");
      const first = /(one|two): started/.exec(out)![1]!;
      // The run's embedded stack, as published in the repository: its server, to see the pool's worker drain.
      const stacks = join(repo.dir, ".git", "ado", "stacks");
      const [published] = await readdir(stacks);
      const { url, roleDir } = JSON.parse(await readFile(join(stacks, published!), "utf8")) as { url: string; roleDir?: string };
      const nc = await connectNats({ servers: url, name: "auto-ctrlc-test", logger: silentLogger, ...(roleDir ? { auth: authForRole({ roleDir }, "admin") } : {}) });
      try {
        const watch = await (await openBuckets(nc, topo)).workers.watch();
        let draining = false;
        void (async () => {
          for await (const e of watch) if (e.operation === "PUT" && decode(SCHEMAS.WorkerRecord, e.value).state === "draining") draining = true;
        })();
        child.kill("SIGINT");
        await eventually(() => draining, 120_000, "the pool's worker draining");
        watch.stop();
      } finally {
        await nc.close();
      }
      await writeFile(gate, "");
      expect(await exited).toBe(130);
      expect(out).toMatch(new RegExp(`${first}: merged`));
      // Before the first Ctrl-C stopped the scaler, its worker went on to start the other task.
      expect(out.match(/(one|two): started/g)).toEqual([`${first}: started`]);
      expect((await readdir(join(home, "state", "ado", "workers")).catch(() => [])).filter((f) => f.endsWith(".log"))).toEqual([]);
    } finally {
      await writeFile(gate, ""); // a failed test leaves no pool worker's agent waiting on it
      if (child.exitCode === null) child.kill("SIGKILL");
      await repo.cleanup();
    }
  }, 180_000);

  it("auto-scale - against a server it is refused, saying how to size that stack's pool instead", async () => {
    const r = await runAdo(["run", "x", "--agent", "noop", "--auto-scale", "0..2", "--server", ts.url], { cwd: scratch });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--auto-scale sizes the workers of the run's own embedded stack.*ado workers autoscale/);
  });
});
