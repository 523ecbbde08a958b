/**
 * Best-of-N end to end (issue 12): real scheduler, balancer, merger and workers on real
 * NATS and git. A task with `variants` runs N attempts at once on the workers; its
 * `select` rule picks one, only that one is merged, the others stay under
 * `refs/ado/variants/<run>/<task>/<n>` and `ado status` lists them. The agents are shell
 * commands and the fake CLIs of test/fixtures/fake-agents.
 */
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
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
import { SCHEMAS, type AdoEvent, type TaskRecord } from "../../src/runtime/messages.js";
import { runVariantRefs, taskKey, variantRef } from "../../src/runtime/names.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { runAdo } from "../helpers/cli.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { AdoCluster } from "../helpers/cluster.js";

const FAKES = resolve(dirname(fileURLToPath(import.meta.url)), "../fixtures/fake-agents/bin");

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-variants-e2e-"));
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
        .map((e) => `${e.type} ${"taskId" in e ? `${e.taskId}#${e.attempt}` : ""} ${e.type === "task.failed" || e.type === "task.selected" ? JSON.stringify(e) : ""}${e.type === "task.started" ? ` on ${e.workerId}` : ""}`)
        .join("\n"),
    ),
  );
}

/** A stack of every actor and `workers` workers on the test server, with its own names. */
async function stackWith(workers: number, extra: Record<string, unknown> = {}) {
  const topo = uniqueTopology();
  // Heartbeats of 1 s: at 200 ms a worker of a machine under a load of 30 was once taken
  // for dead (and its variant run again), which these tests do not exercise.
  const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers, worktreeDir: join(scratch, topo.prefix), heartbeatMs: 1_000, ...extra });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: ts.url, name: `variants-e2e-${topo.prefix}`, logger: silentLogger });
  const record = async (runId: string, taskId: string): Promise<TaskRecord> => {
    const e = await (await openBuckets(nc, topo)).tasks.get(taskKey(runId, taskId));
    return decode(SCHEMAS.TaskRecord, e!.value);
  };
  return {
    topo,
    stack,
    nc,
    client: new AdoClient(nc, topo),
    record,
    close: async () => {
      await nc.drain();
      await stack.close();
    },
  };
}

/** Whether `commit` is in the history of `rev`. */
function isAncestor(repo: string, commit: string, rev: string): boolean {
  const r = spawnSync("git", ["merge-base", "--is-ancestor", commit, rev], { cwd: repo });
  if (r.status !== 0 && r.status !== 1) throw new Error(`git merge-base failed: ${r.stderr}`);
  return r.status === 0;
}

/** `refname commit` of every variant ref of the run. */
function variantRefs(repo: string, runId: string): Map<string, string> {
  const out = gitOut(repo, "for-each-ref", "--format=%(refname) %(objectname)", runVariantRefs(runId));
  return new Map(out ? out.split("\n").map((l) => l.split(" ") as [string, string]) : []);
}

describe("best-of-N - variants run at once, select picks one, only it is merged", () => {
  it("best-of-3 with a validate rule: only the variant that passes is merged, its dependent sees only it, the losers' refs hold their work, ado status lists them", async () => {
    const repo = await makeRepo();
    const s = await stackWith(3);
    const events: AdoEvent[] = [];
    explainOnFailure(events);
    try {
      const graph = parseGraph(
        [
          "tasks:",
          // Each variant writes its number; only variant 2's passes the check.
          "  - id: pick",
          "    run: 'echo \"variant $ADO_VARIANT of $ADO_VARIANTS\" > out.txt'",
          "    variants: 3",
          "    select: { validate: 'grep -q \"variant 2 \" out.txt && test \"$ADO_VARIANT\" = 2', timeout: 1m }",
          "  - id: after",
          "    needs: [pick]",
          "    run: 'cp out.txt seen.txt'",
          "",
        ].join("\n"),
      );
      const outcome = await s.client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status, outcome.error).toBe("succeeded");
      const runId = outcome.runId;

      // Three attempts ran, one per variant, each on its own branch.
      const started = ofType(events, "task.started").filter((e) => e.taskId === "pick");
      expect(started.map((e) => e.attempt).sort()).toEqual([1, 2, 3]);
      expect(new Set(started.map((e) => e.branch)).size).toBe(3);

      // Only the winner is merged; the dependent starts from it.
      const [selected] = ofType(events, "task.selected");
      expect(selected).toMatchObject({ taskId: "pick", winner: 2, rule: "validate" });
      expect(selected!.variants.map((v) => [v.n, v.status, v.passed])).toEqual([
        [1, "lost", false],
        [2, "won", true],
        [3, "lost", false],
      ]);
      expect(ofType(events, "task.merged").map((e) => e.taskId).sort()).toEqual(["after", "pick"]);
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:out.txt`)).toBe("variant 2 of 3");
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:seen.txt`)).toBe("variant 2 of 3");

      // Every variant's work is kept under its ref.
      const refs = variantRefs(repo.dir, runId);
      expect([...refs.keys()].sort()).toEqual([1, 2, 3].map((n) => variantRef(runId, "pick", n)));
      for (const n of [1, 2, 3]) expect(gitOut(repo.dir, "show", `${variantRef(runId, "pick", n)}:out.txt`)).toBe(`variant ${n} of 3`);
      // The losers' work is not on the integration branch.
      for (const n of [1, 3]) expect(isAncestor(repo.dir, refs.get(variantRef(runId, "pick", n))!, outcome.integrationBranch!)).toBe(false);
      expect(isAncestor(repo.dir, refs.get(variantRef(runId, "pick", 2))!, outcome.integrationBranch!)).toBe(true);

      const rec = await s.record(runId, "pick");
      expect(rec.variants!.map((v) => [v.n, v.status, v.ref])).toEqual([1, 2, 3].map((n) => [n, n === 2 ? "won" : "lost", variantRef(runId, "pick", n)]));

      const status = await runAdo(["status", runId, "--server", ts.url, "--prefix", s.topo.prefix], { timeoutMs: 60_000 });
      expect(status.code, status.stderr).toBe(0);
      for (const n of [1, 2, 3]) {
        const line = status.stdout.split("\n").find((l) => l.includes(`variant ${n} `));
        expect(line, status.stdout).toBeDefined();
        expect(line).toContain(n === 2 ? "won" : "lost");
        expect(line).toContain(variantRef(runId, "pick", n));
      }
    } finally {
      await s.close();
      await repo.cleanup();
    }
  }, 180_000);

  it("a score rule picks the highest: variants: [claude, codex] on the fake CLIs, the one whose worktree scores higher is merged, the run's cost counts both", async () => {
    const repo = await makeRepo();
    const home = join(scratch, "home-score");
    await mkdir(home, { recursive: true });
    const s = await stackWith(2, {
      agents: {
        claude: { bin: join(FAKES, "claude"), env: { HOME: home, FAKE_AGENT_TOOLS: "2" } },
        codex: { bin: join(FAKES, "codex"), env: { HOME: home, FAKE_AGENT_TOOLS: "4" } },
      },
    });
    const events: AdoEvent[] = [];
    explainOnFailure(events);
    try {
      // The score: how many files the agent wrote (claude writes 1, codex 3).
      const graph = parseGraph(
        [
          "tasks:",
          "  - id: best",
          "    agent: claude",
          "    prompt: 'Write some files'",
          "    variants: [claude, codex]",
          "    select: { score: 'echo counting; ls fake-*.txt | wc -l' }",
          "",
        ].join("\n"),
      );
      const outcome = await s.client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status, outcome.error).toBe("succeeded");
      const agents = new Set(ofType(events, "task.started").map((e) => e.agent));
      expect([...agents].sort()).toEqual(["claude", "codex"]);
      const [selected] = ofType(events, "task.selected");
      expect(selected!.variants.map((v) => [v.n, v.score])).toEqual([
        [1, 1],
        [2, 3],
      ]);
      expect(selected!.winner).toBe(2);
      const tree = gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort();
      expect(tree).toEqual(["README.md", "fake-codex-2.txt", "fake-codex-3.txt", "fake-codex-4.txt"]);
      // The loser's work is kept.
      const loser = gitOut(repo.dir, "ls-tree", "-r", "--name-only", variantRef(outcome.runId, "best", 1)).split("\n").sort();
      expect(loser).toEqual(["README.md", "fake-claude-2.txt"]);
      // Both variants' tokens count on the task and the run.
      const rec = await s.record(outcome.runId, "best");
      const [one, two] = rec.variants!;
      expect(one!.tokens).toBeGreaterThan(0);
      expect(two!.tokens).toBeGreaterThan(0);
      expect(rec.tokens).toBe(one!.tokens + two!.tokens);
      const run = await s.client.status(outcome.runId);
      expect(run!.run.tokens).toBe(rec.tokens);
    } finally {
      await s.close();
      await repo.cleanup();
    }
  }, 180_000);

  it("a judge agent (the fake Claude Code) gets the candidates' diffs and names the winner, which alone is merged; its own edits are kept apart", async () => {
    const repo = await makeRepo();
    const home = join(scratch, "home-judge");
    await mkdir(home, { recursive: true });
    const rec = join(scratch, "judge-record.json");
    // The fake's answer ends "Done after 2 tool calls.": it names variant 2.
    const s = await stackWith(3, { agents: { claude: { bin: join(FAKES, "claude"), env: { HOME: home, FAKE_AGENT_TOOLS: "2", FAKE_AGENT_RECORD: rec } } } });
    const events: AdoEvent[] = [];
    explainOnFailure(events);
    try {
      const graph = parseGraph(
        ["tasks:", "  - id: judged", "    run: 'echo \"variant $ADO_VARIANT\" > out.txt'", "    variants: 3", "    select: { judge: claude }", ""].join("\n"),
      );
      const outcome = await s.client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status, outcome.error).toBe("succeeded");
      const started = ofType(events, "task.started");
      expect(started.map((e) => [e.attempt, e.agent])).toContainEqual([4, "claude"]);
      const [selected] = ofType(events, "task.selected");
      expect(selected).toMatchObject({ rule: "judge", winner: 2, reason: "the judge (claude) chose variant 2 of 3" });
      expect(gitOut(repo.dir, "show", `${outcome.integrationBranch}:out.txt`)).toBe("variant 2");
      // The judge's own file is not merged; it is kept under the judge attempt's ref.
      expect(gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort()).toEqual(["README.md", "out.txt"]);
      expect(gitOut(repo.dir, "ls-tree", "-r", "--name-only", `refs/ado/attempts/${outcome.runId}/judged/4`)).toContain("fake-claude-2.txt");
      // It was told where the diffs were, and which.
      const seen = await readFile(rec, "utf8");
      expect(seen).toContain("ADO_VARIANTS_DIR");
      expect(seen).toContain("1.diff, 2.diff, 3.diff");
      expect(variantRefs(repo.dir, outcome.runId).size).toBe(3);
    } finally {
      await s.close();
      await repo.cleanup();
    }
  }, 180_000);

  it("all variants failing fails the task, after the rounds its retry policy allows; its dependent is skipped", async () => {
    const repo = await makeRepo();
    const s = await stackWith(2);
    const events: AdoEvent[] = [];
    explainOnFailure(events);
    try {
      const graph = parseGraph(
        [
          "tasks:",
          "  - id: hopeless",
          "    run: 'echo $ADO_VARIANT > v.txt'",
          "    variants: 2",
          "    retry: { attempts: 2, backoff: 1s }",
          "    select: { validate: 'echo nope; exit 3' }",
          "  - id: after",
          "    needs: [hopeless]",
          "    run: 'true'",
          "",
        ].join("\n"),
      );
      const outcome = await s.client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status).toBe("failed");
      // Two rounds of two variants: four attempts.
      expect(ofType(events, "task.started").map((e) => e.attempt).sort()).toEqual([1, 2, 3, 4]);
      const selected = ofType(events, "task.selected");
      expect(selected).toHaveLength(2);
      expect(selected.every((e) => e.winner === undefined)).toBe(true);
      const failed = ofType(events, "task.failed").filter((e) => e.taskId === "hopeless");
      expect(failed.map((e) => e.willRetry)).toEqual([true, false]);
      // Listed in the order the variants ended, which either may win.
      expect(failed[1]!.error).toContain("2 variants, round 2: no variant passed `echo nope; exit 3` (variant ");
      for (const n of [1, 2]) expect(failed[1]!.error).toContain(`variant ${n}: did not pass: nope`);
      expect(ofType(events, "task.merged")).toEqual([]);
      expect(outcome.tasks.find((t) => t.id === "after")?.status).toBe("skipped");
      // Stored before run.completed was published (the scheduler's one exception to publish, then persist).
      expect((await s.record(outcome.runId, "after")).status).toBe("skipped");
      expect(outcome.error).toContain("round 2");
    } finally {
      await s.close();
      await repo.cleanup();
    }
  }, 180_000);

  it("ado run refuses a graph with bad variants or select before running anything (exit 2)", async () => {
    const dir = await mkdtemp(join(scratch, "bad-"));
    const file = join(dir, "g.yaml");
    await writeFile(file, "tasks:\n  - { id: t, run: 'true', variants: 3 }\n");
    const r = await runAdo(["run", "--graph", file, "--repo", dir], { timeoutMs: 60_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("task 't': runs 3 variants but has no rule to pick one: add select:");
    await writeFile(file, "tasks:\n  - { id: t, run: 'true', variants: 1, select: { validate: 'true' } }\n");
    const r2 = await runAdo(["run", "--graph", file, "--repo", dir], { timeoutMs: 60_000 });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain("variants must be a whole number from 2 to 10");
  }, 180_000);
});

describe("best-of-N - a worker that dies mid-variant loses nothing", () => {
  it("the variant it ran is reported lost and runs again on the other worker as a new attempt; the task still picks from every variant", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const dir = await mkdtemp(join(scratch, "kill-"));
    const log = join(dir, "ran.log");
    const cluster = new AdoCluster({ ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix, ADO_WORKTREE_DIR: join(dir, "wt"), ADO_HEARTBEAT_MS: "200" });
    onTestFailed(() => {
      for (const p of cluster.all) console.log(`${p.name} pid ${p.child.pid} exit ${p.child.exitCode ?? p.child.signalCode}:\n${p.output().slice(-3_000)}`);
    });
    const nc = await connectNats({ servers: ts.url, name: "variants-e2e-kill", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const events: AdoEvent[] = [];
    explainOnFailure(events);
    try {
      const [, , , , victim] = await Promise.all([
        cluster.actor("scheduler"),
        cluster.actor("balancer"),
        cluster.actor("merger"),
        cluster.actor("stealer"),
        cluster.worker("victim", 1),
        cluster.worker("survivor", 1),
      ]);
      const victimId = victim.workerIds[0]!;
      // One slot each: the balancer puts one variant on each worker. The one on the victim hangs there.
      const body = `echo "$ADO_VARIANT $ADO_ATTEMPT $ADO_WORKER_ID" >> ${log}; if [ "$ADO_WORKER_ID" = "${victimId}" ]; then echo wip > wip.txt; sleep 120; fi; echo "v$ADO_VARIANT" > out.txt`;
      const graph = parseGraph(`tasks:\n  - id: both\n    run: '${body.replace(/'/g, "''")}'\n    variants: 2\n    select: { validate: 'test -s out.txt' }\n`);
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const outcome = client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(170_000) });
      outcome.catch(() => undefined);
      const ran = async () => (await readFile(log, "utf8").catch(() => "")).split("\n").filter(Boolean);
      await eventually(async () => (await ran()).some((l) => l.endsWith(victimId)), 60_000, "a variant started on the victim");
      const [lostLine] = (await ran()).filter((l) => l.endsWith(victimId));
      const [lostVariant, lostAttempt] = lostLine!.split(" ").map(Number) as [number, number];
      await cluster.kill("victim");

      const done = await outcome;
      expect(done.status, done.error).toBe("succeeded");
      const lost = ofType(events, "worker.lost");
      expect(lost.map((e) => `${e.attempt} ${e.outcome}`)).toEqual([`${lostAttempt} interrupted`]);
      // The lost variant ran again as attempt 3, on the survivor; the other variant ran once.
      const lines = (await ran()).map((l) => l.split(" ").slice(0, 2).join(" ")).sort();
      expect(lines).toEqual([`${3 - lostVariant} ${3 - lostAttempt}`, `${lostVariant} ${lostAttempt}`, `${lostVariant} 3`].sort());
      const [selected] = ofType(events, "task.selected");
      expect(selected!.variants.map((v) => [v.n, v.attempt])).toEqual(
        [1, 2].map((n) => [n, n === lostVariant ? 3 : n]),
      );
      expect(selected!.variants.every((v) => v.ref)).toBe(true);
      // The first to pass won; both variants' work is kept, the lost attempt's too.
      expect(variantRefs(repo.dir, runId).size).toBe(2);
      expect(gitOut(repo.dir, "show", `refs/ado/attempts/${runId}/both/${lostAttempt}:wip.txt`)).toBe("wip");
      expect(gitOut(repo.dir, "show", `${done.integrationBranch}:out.txt`)).toBe(`v${selected!.winner}`);
    } finally {
      cluster.killAll();
      await nc.drain();
      await repo.cleanup();
    }
  }, 180_000);
});
