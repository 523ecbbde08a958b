/**
 * Sessions, checkpoints and resume (issue 11), end to end with OS processes: actors and
 * a worker on "host A" (its own HOME and worktree directory), the fake Claude Code as the
 * agent. While it works, the worker checkpoints: the worktree committed to the attempt's
 * checkpoint ref through a temporary index, the session's transcript stored in the
 * object store. The worker is SIGKILLed mid-task; a worker on "host B" (another HOME,
 * another worktree directory: the session's files are not there) takes the next
 * attempt, starts from the checkpoint commit, restores the transcript and resumes the
 * same session with --resume, going on from the steps the checkpoint held.
 */
import { mkdir, mkdtemp, readFile, realpath, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { parseGraph } from "../../src/runtime/graph.js";
import type { RunId } from "../../src/runtime/ids.js";
import type { AdoEvent } from "../../src/runtime/messages.js";
import { AdoCluster, awaitAgentsGone } from "../helpers/cluster.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";

const exists = (p: string) => stat(p).then(() => true, () => false);
const FAKES = resolve(dirname(fileURLToPath(import.meta.url)), "../fixtures/fake-agents/bin");

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await realpath(await mkdtemp(join(tmpdir(), "ado-resume-")));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

const ofType = <T extends AdoEvent["type"]>(events: AdoEvent[], type: T) => events.filter((e): e is Extract<AdoEvent, { type: T }> => e.type === type);

function follow(client: AdoClient, runId: RunId, ms: number) {
  const events: AdoEvent[] = [];
  const outcome = client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(ms) });
  outcome.catch(() => undefined);
  onTestFailed(() =>
    console.log(
      events
        .filter((e) => e.type !== "task.output" && !e.type.startsWith("agent."))
        .map((e) => `${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}${e.type === "task.failed" ? ` ${e.error}` : ""}${e.type === "task.checkpoint" ? ` ${e.reason} ${e.commit.slice(0, 8)} ${e.sessionId}` : ""}`)
        .join("\n"),
    ),
  );
  return { events, outcome };
}

describe("resume - a worker SIGKILLed mid-task: another worker process resumes the same session from the last checkpoint", () => {
  it("attempt 2 on host B starts from the checkpoint commit, with the transcript restored and --resume <session>, and carries on from the steps the checkpoint held", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const homeA = join(scratch, "home-a");
    const homeB = join(scratch, "home-b");
    await Promise.all([mkdir(homeA, { recursive: true }), mkdir(homeB, { recursive: true })]);
    const recordFile = join(scratch, "claude-runs.jsonl");
    const common = {
      ADO_SERVER: ts.url,
      ADO_PREFIX: topo.prefix,
      ADO_HEARTBEAT_MS: "200",
      ADO_CHECKPOINT_INTERVAL: "250ms",
      PATH: `${FAKES}:${process.env.PATH}`,
      // Eight tool calls (files 2..8); attempt 1 stops after the fourth, until its worker is killed.
      FAKE_AGENT_TOOLS: "8",
      FAKE_AGENT_DELAY_MS: "100",
      FAKE_AGENT_HOLD_AFTER: "4",
      FAKE_AGENT_RECORD: recordFile,
      FAKE_AGENT_RECORD_APPEND: "1",
    };
    const hostA = new AdoCluster({ ...common, HOME: homeA, ADO_WORKTREE_DIR: join(scratch, "wt-a") });
    const hostB = new AdoCluster({ ...common, HOME: homeB, ADO_WORKTREE_DIR: join(scratch, "wt-b") });
    onTestFailed(() => {
      for (const p of [...hostA.all, ...hostB.all]) console.log(`${p.name} pid ${p.child.pid} exit ${p.child.exitCode ?? p.child.signalCode}:\n${p.output().slice(-3_000)}`);
    });
    const nc = await ts.connect("resume-e2e");
    const client = new AdoClient(nc, topo);
    try {
      await Promise.all([hostA.actor("scheduler"), hostA.actor("balancer"), hostA.actor("merger"), hostA.actor("stealer"), hostA.worker("victim", 1)]);
      const { runId } = await client.submit({ graph: parseGraph("tasks:\n  - { id: long, agent: claude, prompt: 'Write the eight files' }\n"), repo: repo.dir });
      const run = follow(client, runId, 150_000);

      // A periodic checkpoint of attempt 1 that holds at least three steps' files.
      const treeOf = (commit: string) => gitOut(repo.dir, "ls-tree", "-r", "--name-only", commit).split("\n");
      const checkpoint = await eventually(
        () => ofType(run.events, "task.checkpoint").find((e) => e.attempt === 1 && e.reason === "periodic" && e.sessionId && treeOf(e.commit).includes("fake-claude-4.txt")),
        60_000,
        "a periodic checkpoint of attempt 1 holding fake-claude-4.txt",
      );
      const session = checkpoint.sessionId!;
      // The checkpoint ref holds it, and the agent's own branch and index were left alone.
      const cpRef = `refs/ado/runs/${runId}/checkpoints/long/1`;
      expect(() => gitOut(repo.dir, "merge-base", "--is-ancestor", checkpoint.commit, cpRef)).not.toThrow();
      expect(gitOut(repo.dir, "rev-parse", `ado/${runId}/long`)).not.toBe(checkpoint.commit);
      const heldSteps = treeOf(checkpoint.commit).filter((f) => /^fake-claude-\d+\.txt$/.test(f)).length + 1;

      await hostA.kill("victim");
      expect(await awaitAgentsGone(join(scratch, "wt-a"), 30_000)).toEqual([]);
      const survivor = await hostB.worker("survivor", 1);

      const outcome = await run.outcome;
      expect(outcome.status, outcome.error).toBe("succeeded");

      // Attempt 2 ran on host B, resuming the session of attempt 1.
      const started = ofType(run.events, "task.started").filter((e) => e.taskId === "long");
      expect(started.map((e) => e.attempt)).toEqual([1, 2]);
      expect(started[1]!.workerId).toBe(survivor.workerIds[0]);
      expect(started[1]!.resumed).toBe(session);
      expect(ofType(run.events, "task.queued").find((e) => e.attempt === 2)?.baseCommit).toBe(
        // The lost attempt's last checkpoint: the one the stealer read, at least as far as the one seen.
        ofType(run.events, "task.checkpoint").filter((e) => e.attempt === 1).at(-1)!.commit,
      );

      // The fake was run twice: the second time in host B's worktree with --resume <session>.
      const runs = (await readFile(recordFile, "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l) as { argv: string[]; cwd: string; env: Record<string, string> });
      expect(runs).toHaveLength(2);
      expect(runs[0]!.argv).not.toContain("--resume");
      expect(runs[1]!.argv.slice(runs[1]!.argv.indexOf("--resume"), runs[1]!.argv.indexOf("--resume") + 2)).toEqual(["--resume", session]);
      expect(runs[1]!.cwd.startsWith(join(scratch, "wt-b"))).toBe(true);
      expect(runs[1]!.env.HOME).toBe(homeB);

      // Host B's copy of the transcript: restored from the checkpoint, then continued. Each
      // step appears once, in order: attempt 2 went on from the checkpoint's steps, it did not start over.
      const project = runs[1]!.cwd.replace(/[^A-Za-z0-9]/g, "-");
      const transcript = (await readFile(join(homeB, ".claude", "projects", project, `${session}.jsonl`), "utf8"))
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { type: string; n?: number; prompt?: string });
      const steps = transcript.filter((e) => e.type === "step").map((e) => e.n);
      expect(steps).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(transcript.filter((e) => e.type === "user")).toHaveLength(2);
      expect(transcript.filter((e) => e.type === "user")[1]!.prompt).toContain("Write the eight files");
      expect(heldSteps).toBe(4);

      // Every file is merged: those of the checkpoint and those attempt 2 wrote.
      const tree = gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort();
      expect(tree).toEqual(["README.md", ...[2, 3, 4, 5, 6, 7, 8].map((n) => `fake-claude-${n}.txt`)].sort());
    } finally {
      await nc.drain().catch(() => undefined);
      await Promise.all([hostB.stopAll(), hostA.stopAll()]);
      await repo.cleanup();
    }
  }, 180_000);
});

describe("resume - a worker drained mid-task (a second Ctrl-C): the next attempt resumes the session from the interruption's checkpoint", () => {
  it("the interruption's checkpoint on the task branch is stored with the session; another worker (other home) resumes it with --resume and finishes", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const homeA = join(scratch, "drain-home-a");
    const homeB = join(scratch, "drain-home-b");
    await Promise.all([mkdir(homeA, { recursive: true }), mkdir(homeB, { recursive: true })]);
    const fake = (home: string) => ({ bin: join(FAKES, "claude"), env: { HOME: home, FAKE_AGENT_TOOLS: "8", FAKE_AGENT_DELAY_MS: "100", FAKE_AGENT_HOLD_AFTER: "3" } });
    // No periodic checkpoints: only the interruption's.
    const base = { prefix: topo.prefix, server: ts.url, heartbeatMs: 200, checkpointInterval: "off" as const };
    const a = await Stack.start({ config: parseConfig({ ...base, workers: 1, worktreeDir: join(scratch, "drain-wt-a"), agents: { claude: fake(homeA) } }), logger: silentLogger });
    let b: Stack | undefined;
    const nc = await ts.connect("resume-drain");
    const client = new AdoClient(nc, topo);
    try {
      const { runId } = await client.submit({ graph: parseGraph("tasks:\n  - { id: job, agent: claude, prompt: 'Write eight files' }\n"), repo: repo.dir });
      const run = follow(client, runId, 120_000);
      // Interrupted once the agent has written fake-claude-3.txt in its worktree (of eight): it waits there.
      await eventually(() => exists(join(scratch, "drain-wt-a", runId, "job", "fake-claude-3.txt")), 60_000, "fake-claude-3.txt written");
      await a.interruptWorkers();
      const cp = await eventually(() => ofType(run.events, "task.checkpoint").find((e) => e.attempt === 1), 30_000, "the interruption's checkpoint");
      expect(cp.reason).toBe("worker shutting down");
      expect(cp.ref).toBe(`refs/heads/ado/${runId}/job`);
      expect(cp.sessionId).toBeDefined();

      b = await Stack.start({ config: parseConfig({ ...base, workers: 1, worktreeDir: join(scratch, "drain-wt-b"), agents: { claude: fake(homeB) } }), logger: silentLogger, actors: [] });
      const outcome = await run.outcome;
      expect(outcome.status, outcome.error).toBe("succeeded");
      const started = ofType(run.events, "task.started");
      expect(started.map((e) => e.attempt)).toEqual([1, 2]);
      expect(started[1]!.workerId).toBe(b.workers[0]!.id);
      expect(started[1]!.resumed).toBe(cp.sessionId);
      expect(ofType(run.events, "task.queued").find((e) => e.attempt === 2)?.baseCommit).toBe(cp.commit);
      // Host B's transcript: restored, then continued; each step once.
      const worktree = started[1]!.worktree!;
      const transcript = (await readFile(join(homeB, ".claude", "projects", worktree.replace(/[^A-Za-z0-9]/g, "-"), `${cp.sessionId}.jsonl`), "utf8").catch(() => ""))
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { type: string; n?: number });
      expect(transcript.filter((e) => e.type === "step").map((e) => e.n)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      const tree = gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort();
      expect(tree).toEqual(["README.md", ...[2, 3, 4, 5, 6, 7, 8].map((n) => `fake-claude-${n}.txt`)].sort());
    } finally {
      await nc.drain().catch(() => undefined);
      await b?.close();
      await a.close();
      await repo.cleanup();
    }
  }, 150_000);
});

describe("resume - a CLI without sessions (aider) interrupted mid-task: the next attempt starts a new run told where the work stands", () => {
  it("attempt 2 starts from the interruption's checkpoint commit and its message says the earlier attempt's work is in the worktree", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const recordFile = join(scratch, "aider-runs.jsonl");
    const aider = { bin: join(FAKES, "aider"), env: { OPENAI_API_KEY: "sk-test", FAKE_AGENT_TOOLS: "5", FAKE_AGENT_DELAY_MS: "50", FAKE_AGENT_HOLD_AFTER: "3", FAKE_AGENT_RECORD: recordFile, FAKE_AGENT_RECORD_APPEND: "1" } };
    const base = { prefix: topo.prefix, server: ts.url, heartbeatMs: 200, agents: { aider } };
    const a = await Stack.start({ config: parseConfig({ ...base, workers: 1, worktreeDir: join(scratch, "aider-wt-a") }), logger: silentLogger });
    let b: Stack | undefined;
    const nc = await ts.connect("resume-aider");
    const client = new AdoClient(nc, topo);
    try {
      const { runId } = await client.submit({ graph: parseGraph("tasks:\n  - { id: edit, agent: aider, prompt: 'Edit four files' }\n"), repo: repo.dir });
      const run = follow(client, runId, 120_000);
      await eventually(() => exists(join(scratch, "aider-wt-a", runId, "edit", "fake-aider-3.txt")), 60_000, "fake-aider-3.txt written");
      await a.interruptWorkers();
      const cp = await eventually(() => ofType(run.events, "task.checkpoint").find((e) => e.attempt === 1), 30_000, "the interruption's checkpoint");
      expect(cp.sessionId).toBeUndefined();
      b = await Stack.start({ config: parseConfig({ ...base, workers: 1, worktreeDir: join(scratch, "aider-wt-b") }), logger: silentLogger, actors: [] });
      const outcome = await run.outcome;
      expect(outcome.status, outcome.error).toBe("succeeded");
      const started = ofType(run.events, "task.started");
      expect(started.map((e) => e.attempt)).toEqual([1, 2]);
      expect(started[1]!.resumed).toBeUndefined();
      expect(ofType(run.events, "task.queued").find((e) => e.attempt === 2)?.baseCommit).toBe(cp.commit);
      const runs = (await readFile(recordFile, "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l) as { argv: string[] });
      expect(runs).toHaveLength(2);
      const message = (r: { argv: string[] }) => r.argv.find((x) => x.startsWith("--message="))!;
      expect(message(runs[0]!)).toBe("--message=Edit four files");
      expect(message(runs[1]!)).toContain(`An earlier attempt at this task (attempt 1) was interrupted. Its work so far is already in this worktree (checkpoint commit ${cp.commit.slice(0, 12)})`);
      expect(message(runs[1]!).endsWith("Edit four files")).toBe(true);
      const tree = gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").filter((f) => f.startsWith("fake-aider-")).sort();
      expect(tree).toEqual(["fake-aider-2.txt", "fake-aider-3.txt", "fake-aider-4.txt", "fake-aider-5.txt"]);
    } finally {
      await nc.drain().catch(() => undefined);
      await b?.close();
      await a.close();
      await repo.cleanup();
    }
  }, 150_000);
});
