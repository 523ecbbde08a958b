/**
 * What a new user hits in the first hour (issue 10), end to end through the real `ado`
 * binary: bad input refused before anything runs, `ado up` twice, a run's embedded
 * stack reachable from another terminal, finished runs, exit codes, closed pipes.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_NAMES } from "../../src/agents/index.js";
import { connectNats } from "../../src/runtime/connection.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { ADO_BIN, runAdo, startAdo, stopProcess } from "../helpers/cli.js";
import { eventually, uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { useScratch } from "../helpers/scratch.js";

const scratch = useScratch("ado-first-hour-");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** A machine with no `ado up` and no server configured. */
async function isolatedEnv(extra: Record<string, string> = {}): Promise<NodeJS.ProcessEnv> {
  const home = await mkdtemp(join(scratch.dir, "home-"));
  return {
    ADO_SERVER: "",
    ADO_PREFIX: uniqueTopology().prefix,
    XDG_STATE_HOME: join(home, "state"),
    XDG_CACHE_HOME: join(home, "cache"),
    ADO_WORKTREE_DIR: join(home, "worktrees"),
    ADO_HEARTBEAT_MS: "200",
    ...extra,
  };
}

const adoBranches = (dir: string) => gitOut(dir, "branch", "--list", "ado/*");
const noStack = (s: string) => expect(s).not.toMatch(/\n\s+at |unexpected error/);

describe("first hour - bad input is refused before anything runs", () => {
  it("an unknown agent in a graph: exit 2 naming the known agents (was: queued forever)", async () => {
    const repo = await makeRepo();
    try {
      const graph = `${repo.dir}.graph.yaml`;
      await writeFile(graph, 'tasks:\n  - { id: a, run: "true" }\n  - { id: b, agent: shelll, prompt: "hi" }\n');
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir], { env: await isolatedEnv(), timeoutMs: 30_000 });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`task 'b': unknown agent 'shelll' \\(did you mean 'shell'\\?\\); the agents are: ${AGENT_NAMES.join(", ")}`));
      expect(adoBranches(repo.dir)).toBe("");
    } finally {
      await repo.cleanup();
    }
  });

  it("--agent with an unknown name, and --cmd with an agent other than shell: exit 2 saying what to do", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    try {
      const unknown = await runAdo(["run", "fix it", "--agent", "claudee", "--repo", repo.dir], { env, timeoutMs: 30_000 });
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toMatch(new RegExp(`--agent 'claudee': no such agent \\(did you mean 'claude'\\?\\); the agents are: ${AGENT_NAMES.join(", ")}`));
      const cmd = await runAdo(["run", "fix it", "--agent", "claude", "--cmd", "true", "--repo", repo.dir], { env, timeoutMs: 30_000 });
      expect(cmd.code).toBe(2);
      expect(cmd.stderr).toMatch(/--cmd is for the shell agent/);
      expect(adoBranches(repo.dir)).toBe("");
    } finally {
      await repo.cleanup();
    }
  });

  it("a worktreeDir inside the checkout that git does not ignore: exit 2 before the run, nothing created", async () => {
    const repo = await makeRepo();
    try {
      const wt = join(repo.dir, "wt");
      const r = await runAdo(["run", "x", "--cmd", "echo x > x.txt", "--repo", repo.dir], { env: await isolatedEnv({ ADO_WORKTREE_DIR: wt }), timeoutMs: 30_000 });
      expect(r.code).toBe(2);
      expect(r.stderr.match(/inside the checkout/g)).toHaveLength(1);
      expect(r.stderr).toMatch(/add 'wt\/' to \.gitignore/);
      expect(existsSync(wt)).toBe(false);
      expect(adoBranches(repo.dir)).toBe("");
    } finally {
      await repo.cleanup();
    }
  });
});

describe("first hour - what a run starts from", () => {
  it("says once that uncommitted changes are not part of the run; --base and --merge-into choose the start", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv({ ADO_WORKERS: "1" });
    try {
      // release is behind main by one commit nobody wants in release.
      gitOut(repo.dir, "branch", "release");
      await writeFile(join(repo.dir, "main-only.txt"), "main\n");
      gitOut(repo.dir, "add", "-A");
      gitOut(repo.dir, "commit", "-q", "-m", "main only");
      await writeFile(join(repo.dir, "README.md"), "# edited, not committed\n");

      const dirty = await runAdo(["run", "x", "--cmd", "test ! -e main-only.txt || exit 9; echo x > x.txt", "--repo", repo.dir, "--merge-into", "release", "--json"], { env });
      expect(dirty.code, dirty.stderr).toBe(0);
      // From release (where the result goes), not HEAD: release is fast-forwarded over nothing of main's.
      expect(dirty.stderr).toMatch(/note: the run starts from release/);
      expect(gitOut(repo.dir, "log", "--format=%s", "release")).not.toContain("main only");
      expect(gitOut(repo.dir, "show", "release:x.txt")).toBe("x");
      // It started from release, not HEAD: no note about the checkout's changes.
      expect(dirty.stderr).not.toMatch(/uncommitted/);

      const fromHead = await runAdo(["run", "y", "--cmd", "echo y > y.txt", "--repo", repo.dir, "--json"], { env });
      expect(fromHead.code, fromHead.stderr).toBe(0);
      expect(fromHead.stderr.match(/note: 1 uncommitted change\(s\) in .* are not part of the run/g)).toHaveLength(1);

      const based = await runAdo(["run", "z", "--cmd", "echo z > z.txt", "--repo", repo.dir, "--base", "main", "--merge-into", "release", "--json"], { env });
      expect(based.code, based.stderr).toBe(0);
      expect(based.stderr).toMatch(/note: main has 1 commit\(s\) that release lacks: --merge-into release will bring them in too/);

      const bad = await runAdo(["run", "z", "--cmd", "true", "--repo", repo.dir, "--base", "nosuch"], { env, timeoutMs: 30_000 });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/--base 'nosuch': no such branch, tag or commit/);

      // A refusal to update a checked-out branch is said in the summary (and at most once more, in the live feed; it was three times).
      const refused = await runAdo(["run", "w", "--cmd", "echo w > w.txt", "--repo", repo.dir, "--merge-into", "main", "-v"], { env });
      expect(refused.code, refused.stderr).toBe(0);
      const said = (refused.stdout + refused.stderr).match(/is checked out in/g)?.length ?? 0;
      expect(said).toBeGreaterThanOrEqual(1);
      expect(said).toBeLessThanOrEqual(2);
      expect(refused.stderr).not.toMatch(/is checked out in/);
      // -v: info logs (on stderr).
      expect(refused.stderr).toMatch(/embedded nats-server started/);

      // ado prune: the finished runs' branches go; the work nobody took (y's and w's results) is archived first.
      const branches = adoBranches(repo.dir).split("\n").map((b) => b.trim());
      expect(branches.length).toBeGreaterThanOrEqual(8);
      const dry = await runAdo(["prune", "--dry-run"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(dry.code, dry.stderr).toBe(0);
      expect(dry.stdout).toMatch(/dry run: 4 run\(s\) to prune/);
      expect(adoBranches(repo.dir).split("\n").map((b) => b.trim())).toEqual(branches);
      const young = await runAdo(["prune", "--older-than", "1d"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(young.stdout).toMatch(/left alone: started .* ago \(--older-than 1d\)/);
      expect(adoBranches(repo.dir).split("\n").map((b) => b.trim())).toEqual(branches);
      const yIntegration = gitOut(repo.dir, "rev-parse", `ado/${JSON.parse(fromHead.stdout).runId}/integration`);
      const pruned = await runAdo(["prune"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(pruned.code, pruned.stderr).toBe(0);
      expect(adoBranches(repo.dir)).toBe("");
      const archived = gitOut(repo.dir, "for-each-ref", "--format=%(refname) %(objectname)", "refs/ado/archive/");
      expect(archived).toContain(`refs/ado/archive/${JSON.parse(fromHead.stdout).runId}/integration/`);
      expect(archived).toContain(yIntegration);
      // release holds what was merged into it: nothing of those runs needed archiving.
      expect(archived).not.toContain(JSON.parse(dirty.stdout).runId);
    } finally {
      await repo.cleanup();
    }
  }, 180_000);
});

describe("first hour - per-task env, cwd and promptFile", () => {
  it("a task gets its env, starts in its cwd, and its prompt from a file beside the graph; a missing cwd fails clearly", async () => {
    const repo = await makeRepo({ "README.md": "# r\n", "pkg/api/keep.txt": "" });
    const env = await isolatedEnv({ ADO_WORKERS: "2" });
    try {
      const dir = await mkdtemp(join(scratch.dir, "graph-"));
      await writeFile(join(dir, "prompt.md"), "make it so\n");
      const graph = join(dir, "g.yaml");
      await writeFile(
        graph,
        [
          "tasks:",
          '  - { id: api, promptFile: prompt.md, cwd: pkg/api, env: { GREETING: hello, LEVEL: 3 }, run: \'echo "$GREETING $LEVEL $ADO_PROMPT" > out.txt\' }',
          '  - { id: gone, cwd: not/there, run: "true" }',
          "",
        ].join("\n"),
      );
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--json"], { env });
      expect(r.code, r.stderr).toBe(1);
      const out = JSON.parse(r.stdout);
      const byId = Object.fromEntries(out.tasks.map((t: { id: string }) => [t.id, t]));
      expect(byId.api.status).toBe("succeeded");
      expect(gitOut(repo.dir, "show", `${out.integrationBranch}:pkg/api/out.txt`)).toBe("hello 3 make it so");
      expect(byId.gone.status).toBe("failed");
      expect(byId.gone.error).toMatch(/the task's cwd 'not\/there' .* is not a directory in the task's worktree/);
    } finally {
      await repo.cleanup();
    }
  }, 180_000);
});

describe("first hour - ado up twice", () => {
  it("a second ado up (same port, another port, another prefix on the same store) exits 2 with one line and leaves the first alone", async () => {
    const env = await isolatedEnv();
    const port = await freePort();
    const store = join(scratch.dir, `store-${port}`);
    const up = await startAdo(["up", "--port", String(port), "--store", store, "--workers", "0"], /ado is up/, { env });
    try {
      const statePath = join(env.XDG_STATE_HOME!, "ado", `up-${env.ADO_PREFIX}.json`);
      const again = await runAdo(["up", "--port", String(port), "--store", store, "--workers", "0"], { env, timeoutMs: 30_000 });
      expect(again.code).toBe(2);
      expect(again.stderr).toMatch(new RegExp(`^ado: \`ado up\` is already running: pid ${up.child.pid}, nats://127\\.0\\.0\\.1:${port}`));
      expect(again.stderr.trim().split("\n")).toHaveLength(1);

      const other = await runAdo(["up", "--port", String(await freePort()), "--store", store, "--workers", "0", "--prefix", "other1"], { env, timeoutMs: 30_000 });
      expect(other.code).toBe(2);
      expect(other.stderr).toMatch(/the JetStream store .* is in use by process/);
      expect(other.stderr.trim().split("\n")).toHaveLength(1);

      const samePort = await runAdo(["up", "--port", String(port), "--store", join(scratch.dir, "store-b"), "--workers", "0", "--prefix", "other2"], { env, timeoutMs: 30_000 });
      expect(samePort.code).toBe(2);
      expect(samePort.stderr.trim()).toMatch(new RegExp(`^ado: port ${port} is already in use .*--port`));
      expect(samePort.stderr.trim().split("\n")).toHaveLength(1);
      // The first stack is still the one the state file names, and still serves.
      expect(existsSync(statePath)).toBe(true);
      const status = await runAdo(["status"], { env, timeoutMs: 30_000 });
      expect(status.code, status.stderr).toBe(0);
      // Auth by default: ado status above found the stack's keys by itself; without them the server refuses.
      const roleDir = join(store, "auth");
      expect(up.output()).toContain(`auth: a user per role, keys in ${roleDir}`);
      expect(JSON.parse(await readFile(statePath, "utf8")).roleDir).toBe(roleDir);
      expect(((await stat(roleDir)).mode & 0o777).toString(8)).toBe("700");
      expect(((await stat(join(roleDir, "client.nk"))).mode & 0o777).toString(8)).toBe("600");
      await expect(connectNats({ servers: `nats://127.0.0.1:${port}`, name: "anon", logger: silentLogger, auth: {}, timeoutMs: 5_000 })).rejects.toThrow(/Authorization Violation|authorization/i);
    } finally {
      expect(await stopProcess(up.child)).toBe(0);
    }
    // Stopped: the store's lock is gone, so a new stack may use it.
    expect((await readdir(store)).filter((n) => n.startsWith("ado.lock"))).toEqual([]);
  }, 120_000);
});

describe("first hour - a run on its own embedded stack, seen from another terminal", () => {
  it("ado status, ado cancel and ado attach reach it from the same repository; the published stack goes with the run", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv({ ADO_WORKERS: "1" });
    const flag = join(scratch.dir, `started-${Date.now()}`);
    // Cancelled below: it must still run after four CLI starts, which can take minutes on a loaded machine (120 s could pass).
    const child = spawn(process.execPath, [ADO_BIN, "run", "slow", "--cmd", `touch ${flag}; sleep 600`, "--repo", repo.dir], {
      env: { ...process.env, ADO_LOG_LEVEL: "warn", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await eventually(() => existsSync(flag), 60_000, "the task started");
      const stacks = join(gitOut(repo.dir, "rev-parse", "--path-format=absolute", "--git-common-dir"), "ado", "stacks");
      const [file] = await readdir(stacks);
      const runId = file!.replace(/\.json$/, "");

      const status = await runAdo(["status"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toContain(`run ${runId}`);
      expect(status.stdout).toMatch(/task\s+running/);

      const prune = await runAdo(["prune"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(prune.stdout).toMatch(new RegExp(`${runId}: left alone: running`));
      expect(adoBranches(repo.dir)).toContain(`ado/${runId}/task`);

      // attach follows the run before it is cancelled (its progress goes to stderr with --json).
      let following: () => void = () => undefined;
      const isFollowing = new Promise<void>((resolve) => (following = resolve));
      const attached = runAdo(["attach", runId, "--json"], { env, cwd: repo.dir, timeoutMs: 90_000, onStderr: (all) => /started/.test(all) && following() });
      await Promise.race([isFollowing, attached]);
      const cancel = await runAdo(["cancel", runId, "--reason", "from another terminal"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(cancel.code, cancel.stderr).toBe(0);
      expect(await exited).toBe(1);
      const seen = await attached;
      expect(seen.code, seen.stderr).toBe(1);
      expect(JSON.parse(seen.stdout)).toMatchObject({ runId, status: "cancelled" });
      expect(out).toMatch(/cancelled/);
      // The run is over: its stack is no longer published.
      expect(existsSync(join(stacks, file!))).toBe(false);
      const after = await runAdo(["status"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(after.code).toBe(2);
      expect(after.stderr).toMatch(/needs a NATS server/);
    } finally {
      child.kill("SIGKILL");
      await repo.cleanup();
    }
  }, 180_000);
});

describe("first hour - finished runs, exit codes, pipes (on an ado up stack)", () => {
  let env: NodeJS.ProcessEnv;
  let up: Awaited<ReturnType<typeof startAdo>>;
  beforeAll(async () => {
    env = await isolatedEnv();
    const port = await freePort();
    up = await startAdo(["up", "--port", String(port), "--store", join(scratch.dir, `store-up-${port}`), "--workers", "1"], /ado is up/, { env });
  });
  afterAll(async () => {
    if (up) await stopProcess(up.child);
  });

  it("attach --since to a finished run prints its end and exits with its code; cancel/pause of it and detach of an unknown run fail", async () => {
    const repo = await makeRepo();
    try {
      const ok = await runAdo(["run", "ok", "--cmd", "echo ok > ok.txt", "--repo", repo.dir, "--json"], { env });
      expect(ok.code, ok.stderr).toBe(0);
      const okId = JSON.parse(ok.stdout).runId;
      const bad = await runAdo(["run", "bad", "--cmd", "exit 4", "--repo", repo.dir, "--json"], { env });
      expect(bad.code, bad.stderr).toBe(1);
      const badId = JSON.parse(bad.stdout).runId;
      await new Promise((r) => setTimeout(r, 1_500)); // both ended more than a second ago

      const attached = await runAdo(["attach", okId, "--since", "1s", "--json"], { env, timeoutMs: 30_000 });
      expect(attached.code, attached.stderr).toBe(0);
      expect(JSON.parse(attached.stdout)).toMatchObject({ runId: okId, status: "succeeded", tasks: [expect.objectContaining({ id: "task", status: "succeeded" })] });
      const attachedBad = await runAdo(["attach", badId, "--since", "1s"], { env, timeoutMs: 30_000 });
      expect(attachedBad.code).toBe(1);
      expect(attachedBad.stdout).toMatch(new RegExp(`run ${badId}: failed`));

      for (const action of ["cancel", "pause", "resume"]) {
        const r = await runAdo([action, okId], { env, timeoutMs: 30_000 });
        expect(r.code, `${action}: ${r.stdout}`).toBe(2);
        expect(r.stderr).toMatch(new RegExp(`run ${okId} has already ended \\(succeeded\\): nothing to ${action}`));
      }
      const detach = await runAdo(["detach", "r-nosuch"], { env, timeoutMs: 30_000 });
      expect(detach.code).toBe(2);
      expect(detach.stderr).toMatch(/no run 'r-nosuch'/);
    } finally {
      await repo.cleanup();
    }
  }, 180_000);

  it("ado runs lists the server's runs with state, start, duration, cost and tasks; attach to an ended run shows its end from its snapshot", async () => {
    const repo = await makeRepo();
    try {
      const ok = await runAdo(["run", "listed-ok", "--cmd", "echo ok > listed.txt", "--repo", repo.dir, "--json"], { env });
      expect(ok.code, ok.stderr).toBe(0);
      const okId = JSON.parse(ok.stdout).runId as string;
      const bad = await runAdo(["run", "listed-bad", "--cmd", "exit 3", "--repo", repo.dir, "--json"], { env });
      expect(bad.code, bad.stderr).toBe(1);
      const badId = JSON.parse(bad.stdout).runId as string;

      // The recorder stores a run's snapshot at its end: the counts by state come from it.
      type Row = { runId: string; name: string; state: string; acceptedAt: string; finishedAt: string | null; durationMs: number; costUsd: number; tasks: { total: number; byState: Record<string, number> | null } };
      const listed = await eventually(async () => {
        const r = await runAdo(["runs", "--all", "--json"], { env, timeoutMs: 30_000 });
        expect(r.code, r.stderr).toBe(0);
        const rows = JSON.parse(r.stdout) as Row[];
        const mine = [rows.find((x) => x.runId === okId), rows.find((x) => x.runId === badId)];
        return mine.every((x) => x?.tasks.byState) ? (mine as Row[]) : undefined;
      }, 30_000, "both runs listed with their tasks by state");
      expect(listed[0]).toMatchObject({ state: "succeeded", tasks: { total: 1, byState: { succeeded: 1 } } });
      expect(listed[1]).toMatchObject({ state: "failed", tasks: { total: 1, byState: { failed: 1 } } });
      for (const row of listed) {
        expect(row.finishedAt).not.toBeNull();
        expect(row.durationMs).toBe(Date.parse(row.finishedAt!) - Date.parse(row.acceptedAt));
      }
      const table = await runAdo(["runs", "--all"], { env, timeoutMs: 30_000 });
      expect(table.code, table.stderr).toBe(0);
      expect(table.stdout).toMatch(/^RUN\s+NAME\s+STATE\s+STARTED\s+DURATION\s+COST\s+TASKS/);
      expect(table.stdout).toMatch(new RegExp(`${badId}\\s+\\S+\\s+failed\\s+.*1 task: 1 failed`));
      // Without --all: only active runs (none of these).
      const active = await runAdo(["runs", "--json"], { env, timeoutMs: 30_000 });
      expect((JSON.parse(active.stdout) as Row[]).map((r) => r.runId)).not.toContain(okId);
      // The kept runs of a repository are still `ado runs list`.
      const kept = await runAdo(["runs", "list", "--repo", repo.dir], { env, timeoutMs: 30_000 });
      expect(kept.stdout).toMatch(/no kept runs/);

      const attached = await runAdo(["attach", badId, "--json"], { env, timeoutMs: 30_000 });
      expect(attached.code, attached.stderr).toBe(1);
      expect(JSON.parse(attached.stdout)).toMatchObject({ runId: badId, status: "failed", tasks: [expect.objectContaining({ id: "task", status: "failed" })] });
    } finally {
      await repo.cleanup();
    }
  }, 180_000);

  it("ado status with its stdout closed early (ado status | head) ends quietly", async () => {
    const child = spawn(process.execPath, [ADO_BIN, "status", "--all"], { env: { ...process.env, ADO_LOG_LEVEL: "warn", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.destroy(); // the reader is gone before anything is written
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.once("close", (c) => resolve(c)));
    expect(stderr).not.toMatch(/EPIPE|Error/);
    noStack(stderr);
    expect(code).toBe(0);
  }, 60_000);
});

describe("first hour - a server without JetStream", () => {
  it("ado status says how to enable JetStream, as ado run does (no stack trace)", async () => {
    const port = await freePort();
    const dir = join(scratch.dir, "nojs");
    await mkdir(dir, { recursive: true });
    const server = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
    try {
      const env = await isolatedEnv({ ADO_SERVER: `nats://127.0.0.1:${port}` });
      const status = await eventually(async () => {
        const r = await runAdo(["status"], { env, timeoutMs: 30_000 });
        return /JetStream/.test(r.stderr) ? r : undefined;
      }, 30_000, "the server answers");
      expect(status.code).toBe(2);
      expect(status.stderr).toMatch(/has JetStream disabled: ado needs it/);
      noStack(status.stderr);
    } finally {
      server.kill();
    }
  }, 60_000);
});

describe("first hour - init, completion, hitl list", () => {
  it("ado init writes a commented config and an example graph that load, and never overwrites", async () => {
    const repo = await makeRepo();
    const env = await isolatedEnv();
    try {
      const r = await runAdo(["init"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/wrote ado\.config\.yaml .* and ado\.graph\.yaml/);
      const { loadConfig } = await import("../../src/runtime/config.js");
      const { loadGraphFile } = await import("../../src/runtime/graph.js");
      await expect(loadConfig({ dir: repo.dir, env: {} })).resolves.toMatchObject({ workers: 4 });
      const graph = await loadGraphFile(join(repo.dir, "ado.graph.yaml"));
      expect(graph.tasks.map((t) => t.id)).toEqual(["hello", "world", "both"]);
      const config = await import("node:fs/promises").then((fs) => fs.readFile(join(repo.dir, "ado.config.yaml"), "utf8"));
      await writeFile(join(repo.dir, "ado.config.yaml"), "workers: 2\n");
      const again = await runAdo(["init"], { env, cwd: repo.dir, timeoutMs: 30_000 });
      expect(again.code).toBe(2);
      expect(again.stderr).toMatch(/ado\.config\.yaml exists already: ado init writes nothing over it/);
      expect(config).toMatch(/^# server: /m);
      expect(await import("node:fs/promises").then((fs) => fs.readFile(join(repo.dir, "ado.config.yaml"), "utf8"))).toBe("workers: 2\n");
    } finally {
      await repo.cleanup();
    }
  });

  it("ado completion bash completes commands, subcommands, options and agent names", async () => {
    const script = await runAdo(["completion", "bash"], { timeoutMs: 30_000 });
    expect(script.code, script.stderr).toBe(0);
    const file = join(scratch.dir, "ado-completion.bash");
    await writeFile(file, script.stdout);
    const probe = [
      `source ${file}`,
      't() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); _ado_complete; echo "${COMPREPLY[*]}"; }',
      "t ado hitl l",
      "t ado run --gr",
      "t ado run --agent s",
      "t ado pr",
    ].join("\n");
    const out = await new Promise<string>((resolve, reject) => {
      const sh = spawn("bash", ["-c", probe], { stdio: ["ignore", "pipe", "pipe"] });
      let o = "";
      sh.stdout.on("data", (d) => (o += d));
      sh.once("error", reject);
      sh.once("close", () => resolve(o));
    });
    expect(out.split("\n").slice(0, 4)).toEqual(["list", "--graph", "shell", "prune"]);
    const zsh = await runAdo(["completion", "zsh"], { timeoutMs: 30_000 });
    expect(zsh.stdout).toMatch(/compdef _ado ado/);
  });

  it("ado hitl list with nothing anywhere says nothing waits (exit 0)", async () => {
    const repo = await makeRepo();
    try {
      const r = await runAdo(["hitl", "list"], { env: await isolatedEnv(), cwd: repo.dir, timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/no merge waits for a person/);
    } finally {
      await repo.cleanup();
    }
  });
});
