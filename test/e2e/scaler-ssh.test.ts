import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import type { BackendContext } from "../../src/actors/scaler/backend.js";
import { SshBackend } from "../../src/actors/scaler/backends/ssh.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { PoolConfigSchema } from "../../src/runtime/scaling.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { ADO_BIN } from "../helpers/cli.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";
import { freePort, SSH_OPTIONS, startSshd, type Sshd } from "../helpers/sshd.js";

/**
 * Issue 13, the `ssh` backend: `ado worker` started over SSH on two loopback "hosts",
 * against a real sshd (Debian's openssh-server) the test starts on a free port with a
 * generated host key and user key. Skipped, saying why, when sshd is not installed
 * (scripts/setup.sh installs it) or cannot run here.
 */


let ts: TestServer;
let scratch: string;
let sshd: Sshd | string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-scaler-ssh-"));
  sshd = await startSshd(scratch);
  if (typeof sshd === "string") console.warn(`scaler-ssh: the tests that need sshd are skipped: ${sshd}`);
});
afterAll(async () => {
  if (typeof sshd === "object") await sshd.stop();
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

describe("scaler - ssh backend", () => {
  it("ssh - a burst of 50 on a pool of two loopback hosts (4 slots each): workers start over SSH on both, the tasks run once, the workers go when idle and their scratch directories are removed", async (ctx) => {
    if (typeof sshd === "string") return ctx.skip();
    const { port, key } = sshd;
    // 50 cheap tasks (bench/ssh-burst.ts runs 200 and compares them with raw ssh).
    const TASKS = 50;
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const hostDir = (n: number) => join(scratch, `host${n}`);
    const logFile = join(scratch, "stack.log");
    const logger = pino({ level: "info" }, pino.destination({ dest: logFile, sync: true }));
    onTestFailed(async () => {
      console.log(((await readFile(logFile, "utf8").catch(() => "")).split("\n").filter((l) => l.includes('"actor":"scaler"')).slice(-60)).join("\n"));
      for (const f of await readdir(join(scratch, "wlogs")).catch(() => [])) console.log(`${f}:\n${(await readFile(join(scratch, "wlogs", f), "utf8")).slice(-2_000)}`);
    });
    const host = (n: number, name: string) => ({ host: name, port, user: userInfo().username, identityFile: key, workDir: hostDir(n) });
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 0,
      heartbeatMs: 1_000,
      worktreeDir: join(scratch, "wt"),
      scaler: {
        interval: "250ms",
        pools: [
          {
            name: "remote",
            backend: "ssh",
            min: 0,
            max: 2,
            slots: 4,
            idleTimeout: "2s",
            scaleUp: { cooldown: 0, stabilization: 0 },
            scaleDown: { cooldown: "1s", stabilization: "1s" },
            local: { logDir: join(scratch, "wlogs") },
            ssh: { hosts: [host(1, "127.0.0.1"), host(2, "localhost")], command: `${process.execPath} ${ADO_BIN}`, options: SSH_OPTIONS },
          },
        ],
      },
    });
    const stack = await Stack.start({ config, logger });
    const nc = await ts.connect("scaler-ssh");
    const kv = await openBuckets(nc, topo);
    const seen = new Map<string, string[]>();
    const live = new Set<string>();
    const watch = await kv.workers.watch();
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") {
          live.delete(e.key);
          continue;
        }
        const r = decode(SCHEMAS.WorkerRecord, e.value);
        if (r.pool !== "remote") continue;
        seen.set(r.workerId, r.labels);
        live.add(r.workerId);
      }
    })();
    const events: AdoEvent[] = [];
    try {
      const client = new AdoClient(nc, topo);
      // Each command counts itself in a file outside the repository (the hosts share this disk); none writes to its
      // worktree, so no merge per task: what is measured is the ssh workers' start and the per-task round trip.
      const executions = join(scratch, "ssh-executions.txt");
      const graph = parseGraph(["tasks:", ...Array.from({ length: TASKS }, (_, i) => `  - { id: s${i}, run: 'echo s${i} >> ${executions}; sleep 0.3' }`)].join("\n") + "\n");
      const { runId } = await client.submit({ graph, repo: repo.dir });
      client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(170_000) }).catch(() => undefined);
      await eventually(() => events.filter((e) => e.type === "task.succeeded").length === TASKS || events.some((e) => e.type === "task.failed"), 150_000, "every task succeeded");
      const started = events.filter((e): e is Extract<AdoEvent, { type: "task.started" }> => e.type === "task.started");
      expect(started.length).toBe(TASKS);
      expect(events.filter((e) => e.type === "task.checkpoint" || e.type === "worker.lost" || e.type === "task.failed")).toEqual([]);
      // Nothing lost, nothing twice: every command ran once, each start on attempt 1.
      expect(started.every((e) => e.attempt === 1)).toBe(true);
      expect((await readFile(executions, "utf8")).split("\n").filter(Boolean).sort()).toEqual(Array.from({ length: TASKS }, (_, i) => `s${i}`).sort());
      // Two workers, one per host (the least loaded host first), each advertising `ssh`; their worktrees under each host's workDir.
      expect(seen.size).toBe(2);
      expect([...seen.values()].every((labels) => labels.includes("ssh"))).toBe(true);
      expect(started.every((e) => seen.has(e.workerId))).toBe(true);
      expect(existsSync(join(hostDir(1), "worktrees"))).toBe(true);
      expect(existsSync(join(hostDir(2), "worktrees"))).toBe(true);
      // Idle, they go: the ssh sessions end, the scratch directories on the hosts are removed.
      await eventually(() => live.size === 0, 60_000, "every ssh worker gone from the registry");
      await eventually(async () => (await readdir(join(hostDir(1), "workers")).catch(() => [])).length + (await readdir(join(hostDir(2), "workers")).catch(() => [])).length === 0, 30_000, "the workers' scratch directories removed");
    } finally {
      watch.stop();
      await stack.close();
      await repo.cleanup();
    }
  }, 200_000);

  it("ssh - a host that refuses the connection: the start fails (exit 255), its circuit opens, and no start goes there until it half-opens", async () => {
    const dead = await freePort(); // nothing listens there
    const pool = PoolConfigSchema.parse({
      name: "broken",
      backend: "ssh",
      local: { logDir: join(scratch, "broken-logs") },
      ssh: { hosts: [{ host: "127.0.0.1", port: dead, workDir: join(scratch, "nowhere") }], options: SSH_OPTIONS, connectTimeout: "2s" },
    });
    const ctx: BackendContext = { pool, prefix: "ado", serverUrl: ts.url, env: {}, log: silentLogger, shutdown: { graceMs: 100, forceMs: 100 }, drain: async () => true, isLive: () => false };
    let now = 1_000_000;
    const b = new SshBackend(ctx, () => now);
    await b.launch(["w-1"]);
    const exits = await eventually(() => {
      const e = b.takeExits();
      return e.length ? e : undefined;
    }, 20_000, "the ssh client to end");
    expect(exits).toMatchObject([{ id: "w-1", requested: false }]);
    expect(exits[0]!.detail).toContain(`exit code 255 on 127.0.0.1:${dead}`);
    const c = b.circuit(0);
    expect(c.failures).toBe(1);
    expect(c.openUntil).toBeGreaterThan(now);
    // While open: no host can take a worker, and the reason says so.
    await b.launch(["w-2"]);
    expect(b.takeExits()).toEqual([{ id: "w-2", requested: false, detail: expect.stringMatching(/no SSH host can take a worker: 127\.0\.0\.1:\d+ circuit open for \d+ s after 1 failure/) }]);
    // Half-open after the backoff: one trial start goes there again.
    now = c.openUntil + 1;
    expect(b.pick()).toBeDefined();
    await b.close();
  }, 60_000);
});
