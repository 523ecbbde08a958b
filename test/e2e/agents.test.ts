/**
 * Agent CLIs on workers, end to end (issue 11): real scheduler, balancer, merger and
 * workers on real NATS and git; the agents are the fake CLIs of test/fixtures/fake-agents
 * (the only fakes ado has). A task's `agent:` runs through its adapter on a worker, its
 * stream becomes `agent.*` events, workers advertise the CLIs they found (with versions),
 * and the balancer sends a task only to a worker that has its agent.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent, type WorkerRecord } from "../../src/runtime/messages.js";
import { taskKey } from "../../src/runtime/names.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { runAdo } from "../helpers/cli.js";
import { startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";

const FAKES = resolve(dirname(fileURLToPath(import.meta.url)), "../fixtures/fake-agents/bin");

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-agents-e2e-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

const ofType = <T extends AdoEvent["type"]>(events: AdoEvent[], type: T) => events.filter((e): e is Extract<AdoEvent, { type: T }> => e.type === type);

function explainOnFailure(events: AdoEvent[]) {
  onTestFailed(() =>
    console.log(
      events
        .filter((e) => e.type !== "task.output")
        .map((e) => `${e.type} ${"taskId" in e ? `${e.taskId}#${e.attempt}` : ""} ${e.type === "task.failed" ? e.error : ""}${e.type === "task.started" ? ` on ${e.workerId}` : ""}`)
        .join("\n"),
    ),
  );
}

async function workerRecords(topo: ReturnType<typeof uniqueTopology>): Promise<WorkerRecord[]> {
  const nc = await connectNats({ servers: ts.url, name: "agents-e2e-registry", logger: silentLogger });
  try {
    const kv = (await openBuckets(nc, topo)).workers;
    const out: WorkerRecord[] = [];
    for await (const key of await kv.keys()) {
      const e = await kv.get(key);
      if (e?.operation === "PUT") out.push(decode(SCHEMAS.WorkerRecord, e.value));
    }
    return out;
  } finally {
    await nc.close();
  }
}

describe("agents on workers - a task's agent CLI runs through its adapter", () => {
  it("a claude task runs the fake Claude Code in its worktree: its edits are merged, its stream is published as agent events, its final text is the summary; the worker advertises claude with its version", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const home = join(scratch, "home-claude");
    await mkdir(home, { recursive: true });
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 1,
      worktreeDir: join(scratch, topo.prefix),
      heartbeatMs: 200,
      agents: { claude: { bin: join(FAKES, "claude"), env: { HOME: home, FAKE_AGENT_TOOLS: "3" } } },
    });
    const stack = await Stack.start({ config, logger: silentLogger });
    const nc = await connectNats({ servers: ts.url, name: "agents-e2e", logger: silentLogger });
    const events: AdoEvent[] = [];
    explainOnFailure(events);
    try {
      const [record] = await workerRecords(topo);
      expect(record!.agents).toContain("claude");
      expect(record!.agentVersions?.claude).toBe("2.1.119 (Claude Code)");
      // Only the CLIs found are offered: no real codex or gemini is installed here.
      expect(record!.agents).not.toContain("gemini");

      const graph = parseGraph("tasks:\n  - { id: fix, agent: claude, prompt: 'Fix the off-by-one' }\n");
      const outcome = await new AdoClient(nc, topo).run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status, outcome.error).toBe("succeeded");
      // The fake wrote these files in the task's worktree (tool calls 2 and 3); they are merged.
      const tree = gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort();
      expect(tree).toEqual(["README.md", "fake-claude-2.txt", "fake-claude-3.txt"]);

      expect(ofType(events, "task.started")[0]!.agent).toBe("claude");
      const tools = ofType(events, "agent.tool");
      expect(tools.filter((t) => t.phase === "started").map((t) => t.tool)).toEqual(["Bash", "Write", "Write"]);
      expect(tools.find((t) => t.tool === "Bash")!.summary).toBe("ls -1");
      expect(ofType(events, "agent.message").map((m) => m.text)).toContain("Done after 3 tool calls.");
      const usage = ofType(events, "agent.usage");
      expect(usage.length).toBeGreaterThan(0);
      expect(usage.at(-1)!.costSource).toBe("reported");
      // Every agent event of the attempt, numbered in order, none dropped as a duplicate.
      const seqs = events.filter((e): e is Extract<AdoEvent, { type: `agent.${string}` }> => e.type.startsWith("agent.")).map((e) => e.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(new Set(seqs).size).toBe(seqs.length);
      expect(Math.max(...seqs)).toBe(seqs.length - 1);
      // The agent's final text is the task's summary (what dependents are given), not its last raw line.
      const rec = await (await openBuckets(nc, topo)).tasks.get(taskKey(outcome.runId, "fix"));
      expect(decode(SCHEMAS.TaskRecord, rec!.value).summary).toBe("Done after 3 tool calls.");
    } finally {
      await nc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 120_000);
});

describe("agents on workers - ado run shows what the agent does", () => {
  it("ado run --agent claude --progress plain prints the fake Claude Code's tool calls and final message as lines, not its raw JSON stream", async () => {
    const repo = await makeRepo();
    const dir = await mkdtemp(join(scratch, "cli-claude-"));
    const home = join(dir, "home");
    await mkdir(home, { recursive: true });
    const config = join(dir, "ado.config.yaml");
    await writeFile(config, `agents:\n  claude:\n    bin: ${JSON.stringify(join(FAKES, "claude"))}\n    env: { HOME: ${JSON.stringify(home)}, FAKE_AGENT_TOOLS: "3" }\n`);
    try {
      const r = await runAdo(["run", "Fix the off-by-one", "--agent", "claude", "--repo", repo.dir, "--config", config, "--progress", "plain"], { timeoutMs: 120_000 });
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/\] task: started on \S+ \(claude\)\n/);
      expect(r.stdout).toMatch(/\] task: Bash: ls -1\n/);
      expect(r.stdout).toMatch(/\] task: Write: \S*fake-claude-2\.txt\n/);
      expect(r.stdout).toContain("  task| Done after 3 tool calls.\n");
      expect(r.stdout).not.toContain('"type"');
    } finally {
      await repo.cleanup();
    }
  }, 180_000);
});

describe("agents on workers - the balancer sends a task only to a worker that has its agent", () => {
  it("codex tasks all run on the worker with codex, never on the one without, while shell tasks run on both", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const base = { prefix: topo.prefix, server: ts.url, heartbeatMs: 200 };
    // The worker without codex (its configured binary does not exist), with every actor.
    const without = await Stack.start({
      config: parseConfig({ ...base, workers: 1, worktreeDir: join(scratch, topo.prefix, "a"), agents: { codex: { bin: join(scratch, "no-such-dir", "codex") } } }),
      logger: silentLogger,
    });
    const withCodex = await Stack.start({
      config: parseConfig({ ...base, workers: 1, worktreeDir: join(scratch, topo.prefix, "b"), agents: { codex: { bin: join(FAKES, "codex"), env: { HOME: join(scratch, "home-codex"), FAKE_AGENT_TOOLS: "1", FAKE_AGENT_DELAY_MS: "100" } } } }),
      logger: silentLogger,
      actors: [],
    });
    const nc = await connectNats({ servers: ts.url, name: "agents-e2e-route", logger: silentLogger });
    const events: AdoEvent[] = [];
    explainOnFailure(events);
    try {
      const records = await workerRecords(topo);
      const codexWorker = withCodex.workers[0]!.id;
      const plainWorker = without.workers[0]!.id;
      expect(records.find((r) => r.workerId === codexWorker)?.agentVersions?.codex).toBe("codex-cli 0.124.0");
      expect(records.find((r) => r.workerId === plainWorker)?.agents).not.toContain("codex");

      const codexTasks = ["c1", "c2", "c3", "c4"];
      const shellTasks = ["s1", "s2", "s3", "s4"];
      const yaml = [
        "tasks:",
        // One tool call (a command): the fake writes no file, so the tasks do not conflict.
        ...codexTasks.map((id) => `  - { id: ${id}, agent: codex, prompt: 'Task ${id}' }`),
        // Slow enough that both workers are asked for work while the codex tasks wait.
        ...shellTasks.map((id) => `  - { id: ${id}, run: 'sleep 0.3; echo ${id} > ${id}.txt' }`),
      ].join("\n");
      const outcome = await new AdoClient(nc, topo).run({ graph: parseGraph(yaml + "\n"), repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status, outcome.error).toBe("succeeded");
      const started = ofType(events, "task.started");
      for (const id of codexTasks) expect(started.filter((e) => e.taskId === id).map((e) => e.workerId)).toEqual([codexWorker]);
      // No attempt failed for want of its agent (the balancer never tried the other worker);
      // an attempt lost with a worker declared dead on a starved machine is another story.
      expect(ofType(events, "task.failed").filter((e) => !/was lost with it/.test(e.error))).toEqual([]);
      // The worker without codex did take work: it was free, and the codex tasks still went elsewhere.
      expect(started.some((e) => e.workerId === plainWorker)).toBe(true);
    } finally {
      await nc.drain();
      await withCodex.close();
      await without.close();
      await repo.cleanup();
    }
  }, 120_000);
});

describe("agents on workers - ado doctor lists what this host can run and why not", () => {
  it("a CLI on PATH is listed with its version and login state; a missing one with how to install it; --json says the same", async () => {
    // A PATH with only Claude Code's fake, and a home where it is logged in.
    const bin = join(scratch, "doctor-bin");
    const home = join(scratch, "doctor-home");
    await mkdir(bin, { recursive: true });
    await mkdir(join(home, ".claude"), { recursive: true });
    await symlink(join(FAKES, "claude"), join(bin, "claude"));
    await writeFile(join(home, ".claude", ".credentials.json"), "{}");
    const env = { PATH: `${bin}:${dirname(process.execPath)}:/usr/bin:/bin`, HOME: home, ANTHROPIC_API_KEY: "", CLAUDE_CODE_OAUTH_TOKEN: "" };
    const json = await runAdo(["doctor", "--json"], { env, cwd: scratch });
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout) as { builtin: string[]; agents: Array<{ name: string; available: boolean; version?: string; reason?: string; login?: { state: string } }> };
    expect(report.builtin).toEqual(["shell", "noop"]);
    // What `slots: auto` would give here, from this host's cores, memory and load.
    const hw = (JSON.parse(json.stdout) as { hardware: { cores: number; autoSlots: number; why: string; slots: number } }).hardware;
    expect(hw.cores).toBe(availableParallelism());
    expect(hw.autoSlots).toBeGreaterThanOrEqual(1);
    expect(hw.why).toMatch(new RegExp(`^${hw.cores} cores? at load .* ${hw.autoSlots} slots? per worker`));
    expect(hw.slots).toBe(1);
    const claude = report.agents.find((a) => a.name === "claude")!;
    expect(claude).toMatchObject({ available: true, version: "2.1.119 (Claude Code)", login: { state: "ok" } });
    const codex = report.agents.find((a) => a.name === "codex")!;
    expect(codex.available).toBe(false);
    expect(codex.reason).toMatch(/'codex' is not on PATH: install Codex .*or set agents\.codex\.bin/);

    const text = await runAdo(["doctor"], { env, cwd: scratch });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/claude\s+available\s+2\.1\.119 \(Claude Code\)/);
    expect(text.stdout).toMatch(/codex\s+missing\s+'codex' is not on PATH/);
    // The suite pins slots at 1 (vitest.config.ts ADO_SLOTS); auto's own line follows.
    expect(text.stdout).toMatch(/\nHardware: slots: 1 per worker \(from environment ADO_SLOTS\)\n {2}slots: auto gives \d+ per worker here for one worker: \d+ cores? at load [\d.]+ \(\d+ idle\), .* per worker/);
  }, 60_000);
});
