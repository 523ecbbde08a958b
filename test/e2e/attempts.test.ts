/**
 * A task's next attempt after its earlier one failed or was lost, end to end: real
 * scheduler, balancer, merge coordinator, stealer and workers on real NATS and git; the
 * agents are shell commands.
 */
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { AdoEvent } from "../../src/runtime/messages.js";
import { CrashPoint, TEST_CRASH_ENV } from "../../src/runtime/names.js";
import { AdoCluster } from "../helpers/cluster.js";
import { useTestServer, eventually, uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";

const ts = useTestServer("ado-attempts-");

const describeEvents = (events: AdoEvent[]) =>
  events
    .filter((e) => e.type !== "task.output")
    .map((e) => `${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}${e.type === "task.failed" ? ` ${e.error}` : ""}`)
    .join("\n");

describe("attempts - a retry of a task with needs after the integration branch moved (issue 9.1)", () => {
  it("c's attempt 2 starts at the new integration head (its branch moved there) and succeeds with a's and b's work", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const dir = join(ts.scratch, "moved");
    await mkdir(dir, { recursive: true });
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 2, worktreeDir: join(dir, "wt"), heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger });
    const nc = await connectNats({ servers: ts.url, name: "attempts-moved", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const events: AdoEvent[] = [];
    onTestFailed(() => console.log(describeEvents(events)));
    try {
      // b (slow) finishes only once c's attempt 1 runs; c's attempt 1 fails only once b
      // has merged, so attempt 2's base (the integration head) is not attempt 1's.
      const graph = parseGraph(`
tasks:
  - { id: a, run: "echo A > a.txt" }
  - { id: b, run: "while [ ! -f ${dir}/c-started ]; do sleep 0.1; done; echo B > b.txt" }
  - id: c
    needs: [a]
    retry: { attempts: 2, backoff: 0.1 }
    run: 'if [ "$ADO_ATTEMPT" = 1 ]; then echo wip > wip.txt; touch ${dir}/c-started; while [ ! -f ${dir}/b-merged ]; do sleep 0.1; done; exit 3; fi; cat a.txt b.txt > c.txt'
`);
      const done = client.run({
        graph,
        repo: repo.dir,
        onEvent: (e) => {
          events.push(e);
          if (e.type === "task.merged" && e.taskId === "b") void writeFile(join(dir, "b-merged"), "");
        },
      });
      const outcome = await done;
      expect(outcome.status, outcome.error).toBe("succeeded");
      const c = outcome.tasks.find((t) => t.id === "c")!;
      expect(c).toMatchObject({ status: "succeeded", attempts: 2 });
      const tree = gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort();
      expect(tree).toEqual(["README.md", "a.txt", "b.txt", "c.txt"]);
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:c.txt`)).toBe("A\nB");
      // Attempt 1's work is kept, out of the integration branch.
      expect(gitOut(repo.dir, "show", `refs/ado/attempts/${outcome.runId}/c/1:wip.txt`)).toBe("wip");
      // The two attempts started from different bases: b merged in between.
      const queued = events.filter((e): e is Extract<AdoEvent, { type: "task.queued" }> => e.type === "task.queued" && e.taskId === "c");
      expect(queued.map((e) => e.attempt)).toEqual([1, 2]);
      expect(queued[0]!.baseCommit).not.toBe(queued[1]!.baseCommit);
    } finally {
      await nc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 90_000);
});

/**
 * A worker process killed at a named step of an attempt (TEST_CRASH_ENV makes it SIGKILL
 * itself there): the stealer reports the attempt lost, clears what the dead worker left
 * in git on this host, and the next attempt, on another worker process of the same host,
 * succeeds on the same path and branch. Nothing is lost.
 */
describe("attempts - a worker killed in the windows of an attempt (issue 9.2)", () => {
  for (const [step, what] of [
    [CrashPoint.afterCommit, "after committing, before its result is stored"],
    [CrashPoint.afterAdd, "after adding the worktree, before recording it"],
  ] as const) {
    it(`killed ${what}: the task runs again and succeeds`, async () => {
      const repo = await makeRepo();
      const topo = uniqueTopology();
      const dir = join(ts.scratch, step);
      await mkdir(dir, { recursive: true });
      const env = { ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix, ADO_WORKTREE_DIR: join(dir, "wt"), ADO_HEARTBEAT_MS: "200" };
      const cluster = new AdoCluster(env);
      const doomed = new AdoCluster({ ...env, [TEST_CRASH_ENV]: step });
      onTestFailed(() => {
        for (const p of [...cluster.all, ...doomed.all]) console.log(`${p.name} pid ${p.child.pid} exit ${p.child.exitCode ?? p.child.signalCode}:\n${p.output().slice(-3_000)}`);
      });
      const nc = await connectNats({ servers: ts.url, name: `attempts-${step}`, logger: silentLogger });
      const client = new AdoClient(nc, topo);
      const events: AdoEvent[] = [];
      onTestFailed(() => console.log(describeEvents(events)));
      try {
        await Promise.all([cluster.actor("scheduler"), cluster.actor("balancer"), cluster.actor("merger"), cluster.actor("stealer")]);
        const victim = await doomed.worker("victim", 1);
        const graph = parseGraph(`tasks:\n  - { id: t, run: 'echo "t $ADO_ATTEMPT" > t.txt' }\n`);
        const { runId } = await client.submit({ graph, repo: repo.dir });
        const outcome = client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(80_000) });
        outcome.catch(() => undefined);
        // The victim kills itself at the step; then a healthy worker joins.
        await eventually(() => victim.child.signalCode === "SIGKILL", 30_000, "the victim killed itself at the step");
        await cluster.worker("healthy", 1);
        const result = await outcome;
        expect(result.status, result.error).toBe("succeeded");
        expect(result.tasks[0]).toMatchObject({ id: "t", status: "succeeded", attempts: 2 });
        expect(gitOut(repo.dir, "show", `${result.integrationBranch}:t.txt`)).toBe("t 2");
        const lost = events.find((e) => e.type === "worker.lost");
        expect(lost).toMatchObject({ taskId: "t", attempt: 1, workerId: victim.workerIds[0], outcome: "interrupted" });
        // The stealer tells whether its agent had started (task.started stored before it
        // runs): lost before, the attempt costs the task nothing (9.6).
        const failed = events.find((e): e is Extract<AdoEvent, { type: "task.failed" }> => e.type === "task.failed" && e.attempt === 1);
        if (step === CrashPoint.afterAdd) expect(failed?.error).toContain("before its agent started");
        else expect(failed?.error).not.toContain("before its agent started");
        if (step === CrashPoint.afterCommit) {
          // The lost attempt's commit is kept under its attempt ref.
          expect(gitOut(repo.dir, "show", `refs/ado/attempts/${runId}/t/1:t.txt`)).toBe("t 1");
        }
        // Nothing left: the user's checkout is the only worktree.
        await eventually(
          () => gitOut(repo.dir, "worktree", "list", "--porcelain").split("\n").filter((l) => l.startsWith("worktree ")).length === 1,
          10_000,
          "task worktrees removed",
        );
        const codes = await cluster.stopAll();
        expect(Object.values(codes).every((c) => c === 0), JSON.stringify(codes)).toBe(true);
      } finally {
        cluster.killAll();
        doomed.killAll();
        await nc.drain();
        await repo.cleanup();
      }
    }, 90_000);
  }
});

describe("attempts - prompts of any size reach the agent (a file; the environment only for small ones)", () => {
  it("a 200 KB prompt is in ADO_PROMPT_FILE and not in ADO_PROMPT; a small one is in both; the file is never committed", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir: join(ts.scratch, "wt-prompt"), heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger });
    const nc = await connectNats({ servers: ts.url, name: "attempts-prompt", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    try {
      const big = "x".repeat(200 * 1024 - 3) + "end";
      const report = 'wc -c < "$ADO_PROMPT_FILE" | tr -d " " > $ADO_TASK_ID.size; if [ -z "${ADO_PROMPT+x}" ]; then echo absent; else printf %s "$ADO_PROMPT" | wc -c | tr -d " "; fi > $ADO_TASK_ID.env';
      const graph = parseGraph(JSON.stringify({ tasks: [{ id: "big", prompt: big, run: report }, { id: "small", prompt: "fix the bug", run: report }] }));
      const outcome = await client.run({ graph, repo: repo.dir });
      expect(outcome.status, outcome.error).toBe("succeeded");
      const at = (f: string) => gitOut(repo.dir, "show", `${outcome.integrationBranch}:${f}`);
      expect(at("big.size")).toBe(String(200 * 1024));
      expect(at("big.env")).toBe("absent");
      expect(at("small.size")).toBe("11");
      expect(at("small.env")).toBe("11");
      expect(gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort()).toEqual(["README.md", "big.env", "big.size", "small.env", "small.size"]);
      // The commit message carries the prompt's beginning only (git takes it as one argument).
      expect(gitOut(repo.dir, "log", "-1", "--format=%B", `ado/${outcome.runId}/big`)).toContain("[prompt cut at 8 KiB of 200 KiB]");
    } finally {
      await nc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 60_000);
});

describe("attempts - a checkpoint's work is the next attempt's too", () => {
  it("an attempt resumed from a checkpoint that adds nothing still lands the checkpoint's work (never 'no changes')", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const base = { prefix: topo.prefix, server: ts.url, worktreeDir: join(ts.scratch, "wt-checkpoint"), heartbeatMs: 200 };
    const actors = await Stack.start({ config: parseConfig({ ...base, workers: 0 }), logger: silentLogger });
    // A grace of 300 ms: the task outlives it and is interrupted (checkpointed).
    const first = await Stack.start({ config: parseConfig({ ...base, shutdown: { graceMs: 300, forceMs: 5_000 } }), logger: silentLogger, actors: [], workers: 1 });
    const nc = await connectNats({ servers: ts.url, name: "attempts-checkpoint", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    let second: Stack | undefined;
    try {
      const wrote = join(ts.scratch, "checkpoint-part1-written");
      const graph = parseGraph(`tasks:\n  - { id: long, run: 'if [ -f part1.txt ]; then echo resumed; else echo one > part1.txt; touch ${wrote}; sleep 30; fi' }\n`);
      const events: AdoEvent[] = [];
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const watching = client.watch(runId, { onEvent: (e) => events.push(e) });
      await eventually(() => events.some((e) => e.type === "task.output" && e.taskId === "long") || events.some((e) => e.type === "task.started"), 20_000, "task started");
      await eventually(async () => gitOut(repo.dir, "worktree", "list").includes(runId), 10_000, "its worktree");
      // Until part1 is written (not a fixed 500 ms, which a slow agent start outlasted: no part1 in the checkpoint).
      await eventually(() => existsSync(wrote), 30_000, "part1 written");
      await first.close();
      second = await Stack.start({ config: parseConfig({ ...base, workers: 1 }), logger: silentLogger, actors: [] });
      const outcome = await watching;
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(events.some((e) => e.type === "task.checkpoint")).toBe(true);
      const succeeded = events.find((e): e is Extract<AdoEvent, { type: "task.succeeded" }> => e.type === "task.succeeded")!;
      expect(succeeded).toMatchObject({ attempt: 2, files: ["part1.txt"] });
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:part1.txt`)).toBe("one");
    } finally {
      await nc.drain();
      await second?.close();
      await first.close();
      await actors.close();
      await repo.cleanup();
    }
  }, 60_000);
});
