import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { parseConfig } from "../../src/runtime/config.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { ADO_BIN, runAdo } from "../helpers/cli.js";
import { makeRepo } from "../helpers/repo.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";

/**
 * `ado logs`: a past run's output from the logs kept on this machine, and from the event
 * stream when they are not here (another host followed it, or they were deleted); its
 * agents' activity; following a task as it runs.
 */

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-logs-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

async function isolatedEnv(): Promise<NodeJS.ProcessEnv> {
  const home = await mkdtemp(join(scratch, "home-"));
  return { ADO_SERVER: "", XDG_STATE_HOME: join(home, "state"), XDG_CACHE_HOME: join(home, "cache"), ADO_WORKTREE_DIR: join(home, "worktrees"), ADO_HEARTBEAT_MS: "300" };
}

const GRAPH = `name: logs
tasks:
  - { id: build, run: "echo building; echo compiled > out.txt; echo warning: slow >&2" }
  - { id: flaky, run: "echo trying; exit 3", retry: { attempts: 2, backoff: 0.1s } }
`;

describe("logs - a past run", () => {
  it("prints a task's output from the logs kept in the repository, every task's with headers, and says what to do when there are none", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    try {
      const graph = join(scratch, "g1.yaml");
      await writeFile(graph, GRAPH);
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--progress", "none", "--json"], { env, timeoutMs: 240_000 });
      expect(r.code, r.stderr).toBe(1);
      const runId = JSON.parse(r.stdout).runId as string;

      const one = await runAdo(["logs", `${runId}/build`, "--repo", repo.dir], { env });
      expect(one.code, one.stderr).toBe(0);
      expect(one.stdout).toBe("building\nwarning: slow\n");

      const both = await runAdo(["logs", runId, "flaky", "--repo", repo.dir], { env });
      expect(both.code, both.stderr).toBe(0);
      expect(both.stdout).toBe("==> flaky attempt 1 <==\ntrying\n==> flaky attempt 2 <==\ntrying\n");
      const second = await runAdo(["logs", runId, "flaky", "--attempt", "2", "--repo", repo.dir], { env });
      expect(second.stdout).toBe("trying\n");

      const all = await runAdo(["logs", runId, "--repo", repo.dir], { env });
      expect(all.stdout).toContain("==> build attempt 1 <==\nbuilding\n");
      expect(all.stdout).toContain("==> flaky attempt 2 <==\ntrying\n");

      // No log of it here and no server to ask: what to do.
      const none = await runAdo(["logs", `${runId}/nope`, "--repo", repo.dir], { env });
      expect(none.code).toBe(2);
      expect(none.stderr).toMatch(/no logs of task nope of run .* on this machine, and ado logs needs a NATS server/);
      const bad = await runAdo(["logs", "../etc"], { env });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("is not a run id");
    } finally {
      await repo.cleanup();
    }
  }, 300_000);

  it("reads the event stream when the logs are not on this machine: the output, the agents' activity, the events as JSON", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    const topo = uniqueTopology();
    const stack = await Stack.start({ config: parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir: join(scratch, `wt-${topo.prefix}`), heartbeatMs: 300 }), logger: silentLogger });
    try {
      const graph = join(scratch, "g2.yaml");
      await writeFile(graph, GRAPH);
      const common = ["--server", ts.url, "--prefix", topo.prefix];
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--progress", "none", "--json", ...common], { env, timeoutMs: 240_000 });
      expect(r.code, r.stderr).toBe(1);
      const runId = JSON.parse(r.stdout).runId as string;
      // Read from elsewhere: another directory, no logs there.
      const elsewhere = await mkdtemp(join(scratch, "elsewhere-"));

      const out = await runAdo(["logs", runId, "flaky", ...common], { env, cwd: elsewhere });
      expect(out.code, out.stderr).toBe(0);
      expect(out.stdout).toBe("==> flaky attempt 1 <==\ntrying\n==> flaky attempt 2 <==\ntrying\n");

      const events = await runAdo(["logs", `${runId}/flaky`, "--events", ...common], { env, cwd: elsewhere });
      expect(events.code, events.stderr).toBe(0);
      const lines = events.stdout.trim().split("\n");
      expect(lines.filter((l) => / flaky#\d started on w-/.test(l))).toHaveLength(2);
      expect(lines.some((l) => / flaky#1 failed \(exit\): .*; will retry$/.test(l)), events.stdout).toBe(true);
      expect(lines.some((l) => / flaky#2 failed \(exit\): /.test(l) && !l.endsWith("will retry")), events.stdout).toBe(true);

      const json = await runAdo(["logs", runId, "build", "--json", ...common], { env, cwd: elsewhere });
      const parsed = json.stdout.trim().split("\n").map((l) => JSON.parse(l) as { type: string; taskId?: string; data?: string });
      expect(parsed.every((e) => e.taskId === "build")).toBe(true);
      expect(parsed.filter((e) => e.type === "task.output").map((e) => e.data).join("")).toBe("building\nwarning: slow\n");

      const unknown = await runAdo(["logs", "r20200101t000000-abcdef", ...common], { env, cwd: elsewhere });
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toMatch(/none kept on this machine and none in the event stream/);
    } finally {
      await stack.close();
      await repo.cleanup();
    }
  }, 300_000);

  it("--follow prints a running task's output as it comes and returns when the task ends", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    const topo = uniqueTopology();
    const stack = await Stack.start({ config: parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir: join(scratch, `wt-${topo.prefix}`), heartbeatMs: 300 }), logger: silentLogger });
    try {
      const gate = join(scratch, `gate-${topo.prefix}`);
      const graph = join(scratch, "g3.yaml");
      await writeFile(graph, `name: follow\ntasks:\n  - { id: slow, run: "echo first; while [ ! -f '${gate}' ]; do sleep 0.05; done; echo last; echo x > x.txt" }\n`);
      const common = ["--server", ts.url, "--prefix", topo.prefix];
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--detach", ...common], { env });
      expect(r.code, r.stderr).toBe(0);
      const runId = /(r\d{8}t\d{6}-[a-z0-9]+)/.exec(r.stdout + r.stderr)![1]!;

      const child = spawn(process.execPath, [ADO_BIN, "logs", `${runId}/slow`, "--follow", ...common], { env: { ...process.env, ADO_LOG_LEVEL: "warn", ...env }, cwd: scratch, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (err += d));
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      await eventually(() => out.includes("first\n"), 60_000, "the first line, while the task runs");
      expect(child.exitCode).toBeNull();
      expect(out).not.toContain("last");
      await writeFile(gate, "");
      expect(await exited, err).toBe(0);
      expect(out).toBe("first\nlast\n");
    } finally {
      await stack.close();
      await repo.cleanup();
    }
  }, 300_000);
});
