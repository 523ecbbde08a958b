/**
 * SSH backend at a larger burst: N cheap tasks (`run: 'true'`) on a `ssh` pool of two
 * loopback "hosts" (127.0.0.1 and localhost on one real sshd the bench starts on a free
 * port, as test/e2e/scaler-ssh.test.ts does), against the floor: the same N commands run
 * by hand over raw ssh (`ssh host true`, one connection each) at the same parallelism,
 * in the same run.
 *
 *   npx tsx bench/ssh-burst.ts                       # 200 tasks, 2 workers x 4 slots
 *   npx tsx bench/ssh-burst.ts --tasks 50 --slots 2
 *   npx tsx bench/ssh-burst.ts --json
 *
 * ado: an embedded nats-server, a stack (scheduler, balancer, merger, stealer, scaler)
 * whose only workers are the `ssh` pool (min 0, max 2: one worker per host, `--slots`
 * each, scaler interval 250 ms), a scratch git repository; the submission of one run
 * of N independent tasks to the first pool worker's registry record (scale-up: the
 * scaler's decision, ssh, node's start-up), to the first task started, and to every task
 * succeeded (the client's events). Each task gets a worktree, runs `true`, is checked for
 * changes and its worktree removed; the ssh session is per worker, not per task.
 * Floor: N `ssh -p <port> <host> true`, hosts alternating, 2 x slots at once.
 * Printed, never asserted. Needs /usr/sbin/sshd (scripts/setup.sh installs it).
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Stack } from "../src/actors/stack.js";
import { AdoClient } from "../src/runtime/client.js";
import { decode } from "../src/runtime/codec.js";
import { parseConfig } from "../src/runtime/config.js";
import { connectNats, drainQuietly } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { parseGraph } from "../src/runtime/graph.js";
import { silentLogger } from "../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../src/runtime/messages.js";
import { openBuckets, topology } from "../src/runtime/topology.js";
import { SSH_OPTIONS, startSshd } from "../test/helpers/sshd.js";
import { percentile, r1 } from "./stats.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const numberFlag = (name: string, dflt: number) => {
  if (!args.includes(name)) return dflt;
  const v = Number(args[args.indexOf(name) + 1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} needs a positive whole number, e.g. ${name} ${dflt}`);
  return v;
};
const TASKS = numberFlag("--tasks", 200);
const SLOTS = numberFlag("--slots", 4);
const ADO_BIN = new URL("../bin/ado.mjs", import.meta.url).pathname;

const log = (m: string) => process.stderr.write(`ssh-burst: ${m}\n`);

async function until(check: () => boolean, ms: number, what: string) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`${what} not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const dir = await mkdtemp(join(tmpdir(), "ado-bench-ssh-"));
const sshd = await startSshd(dir);
if (typeof sshd === "string") {
  process.stderr.write(`ssh-burst: cannot run: ${sshd}\n`);
  await rm(dir, { recursive: true, force: true });
  process.exit(2);
}
const hosts = ["127.0.0.1", "localhost"];
const server = await EmbeddedServer.start({});
let stack: Stack | undefined;
const nc = await connectNats({ servers: server.url, name: "bench-ssh-burst", logger: silentLogger });
try {
  // ------------------------------------------------------------------ ado
  const repo = join(dir, "repo");
  await mkdir(repo);
  const git = (...a: string[]) => execFileSync("git", a, { cwd: repo, stdio: "pipe" });
  git("init", "-q", "-b", "main");
  git("config", "user.email", "bench@example.com");
  git("config", "user.name", "bench");
  await writeFile(join(repo, "README"), "bench\n");
  git("add", "-A");
  git("commit", "-q", "-m", "initial");
  const topo = topology("benchssh");
  const host = (i: number) => ({ host: hosts[i]!, port: sshd.port, user: userInfo().username, identityFile: sshd.key, workDir: join(dir, `host${i}`) });
  const config = parseConfig({
    prefix: topo.prefix,
    server: server.url,
    workers: 0,
    heartbeatMs: 1_000,
    worktreeDir: join(dir, "wt"),
    scaler: {
      interval: "250ms",
      pools: [
        {
          name: "remote",
          backend: "ssh",
          min: 0,
          max: 2,
          slots: SLOTS,
          idleTimeout: "30s",
          scaleUp: { cooldown: 0, stabilization: 0 },
          local: { logDir: join(dir, "wlogs") },
          ssh: { hosts: [host(0), host(1)], command: `${process.execPath} ${ADO_BIN}`, options: SSH_OPTIONS },
        },
      ],
    },
  });
  stack = await Stack.start({ config, logger: silentLogger });
  const kv = await openBuckets(nc, topo);
  const ups: number[] = [];
  const watch = await kv.workers.watch();
  void (async () => {
    for await (const e of watch) if (e.operation === "PUT" && decode(SCHEMAS.WorkerRecord, e.value).pool === "remote") ups.push(performance.now());
  })();
  const client = new AdoClient(nc, topo);
  const graph = parseGraph(["tasks:", ...Array.from({ length: TASKS }, (_, i) => `  - { id: t${i}, run: 'true' }`)].join("\n") + "\n");
  let firstTask: number | undefined;
  let succeeded = 0;
  let failed = 0;
  const workers = new Set<string>();
  log(`ado: ${TASKS} tasks on 2 ssh workers x ${SLOTS} slots`);
  const t0 = performance.now();
  const { runId } = await client.submit({ graph, repo });
  const done = client.watch(runId, {
    onEvent: (e: AdoEvent) => {
      if (e.type === "task.started") {
        firstTask ??= performance.now();
        workers.add(e.workerId);
      }
      if (e.type === "task.succeeded") succeeded++;
      if (e.type === "task.failed") failed++;
    },
    signal: AbortSignal.timeout(900_000),
  });
  await until(() => succeeded + failed === TASKS, 900_000, `the ${TASKS} tasks`);
  const allMs = performance.now() - t0;
  await done.catch(() => undefined);
  watch.stop();
  const firstWorkerMs = ups[0]! - t0;
  const firstTaskMs = firstTask! - t0;

  // ------------------------------------------------------------------ floor: raw ssh
  const parallel = 2 * SLOTS;
  log(`floor: ${TASKS} x ssh <host> true, ${parallel} at once`);
  const sshOnce = (h: string) =>
    new Promise<number>((resolve, reject) => {
      const s = performance.now();
      execFile("ssh", ["-i", sshd.key, "-p", String(sshd.port), ...SSH_OPTIONS.flatMap((o) => ["-o", o]), "-o", "BatchMode=yes", `${userInfo().username}@${h}`, "true"], (err) => (err ? reject(err) : resolve(performance.now() - s)));
    });
  const calls: number[] = [];
  let next = 0;
  const f0 = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < TASKS) {
        const i = next++;
        calls.push(await sshOnce(hosts[i % 2]!));
      }
    }),
  );
  const floorMs = performance.now() - f0;
  calls.sort((a, b) => a - b);

  const report = {
    tasks: TASKS,
    workers: workers.size,
    slotsPerWorker: SLOTS,
    failed,
    ado: { firstWorkerMs: Math.round(firstWorkerMs), firstTaskMs: Math.round(firstTaskMs), allMs: Math.round(allMs), afterFirstTaskMs: Math.round(allMs - firstTaskMs), msPerTask: r1(allMs / TASKS), msPerTaskAfterFirst: r1((allMs - firstTaskMs) / TASKS) },
    floor: { parallel, allMs: Math.round(floorMs), msPerTask: r1(floorMs / TASKS), sshCallP50Ms: Math.round(percentile(calls, 50)), sshCallP95Ms: Math.round(percentile(calls, 95)) },
  };
  if (json) process.stdout.write(JSON.stringify(report) + "\n");
  else {
    const a = report.ado;
    const f = report.floor;
    process.stdout.write(
      [
        `ssh burst: ${TASKS} tasks ('true'), 2 loopback hosts x 1 worker x ${SLOTS} slots (workers used: ${report.workers}; failed: ${failed})`,
        `  ado:   first worker up ${a.firstWorkerMs} ms, first task ${a.firstTaskMs} ms, all done ${a.allMs} ms  (${a.msPerTask} ms/task overall; ${a.msPerTaskAfterFirst} ms/task after the first start)`,
        `  floor: ${TASKS} x raw 'ssh host true', ${f.parallel} at once: ${f.allMs} ms  (${f.msPerTask} ms/task; one call p50 ${f.sshCallP50Ms} ms, p95 ${f.sshCallP95Ms} ms)`,
        `  load average at the end: ${(await import("node:os")).loadavg().map((l) => l.toFixed(1)).join(" ")}`,
        "",
      ].join("\n"),
    );
  }
} finally {
  await stack?.close();
  await drainQuietly(nc);
  await server.stop();
  await sshd.stop();
  await rm(dir, { recursive: true, force: true, maxRetries: 10 });
}
