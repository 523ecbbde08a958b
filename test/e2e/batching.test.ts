/**
 * Batching end to end: a stage's small tasks run as one invocation of the fake Claude
 * Code (test/fixtures/fake-agents), counted from the file the fake appends a line to per
 * run; real scheduler, balancer, merger and workers on real NATS and git.
 */
import { mkdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { taskKey } from "../../src/runtime/names.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";

const FAKES = resolve(dirname(fileURLToPath(import.meta.url)), "../fixtures/fake-agents/bin");
const ts = useTestServer("ado-batching-");

async function invocations(file: string): Promise<{ argv: string[]; stdin: string }[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

async function runBatched(name: string, env: Record<string, string>, tasks: number, during?: (client: AdoClient, runId: string) => Promise<void>) {
  const repo = await makeRepo();
  const topo = uniqueTopology();
  const home = join(ts.scratch, `home-${name}`);
  await mkdir(home, { recursive: true });
  const record = join(ts.scratch, `${name}.jsonl`);
  const config = parseConfig({
    prefix: topo.prefix,
    server: ts.url,
    workers: 2,
    slots: 2,
    worktreeDir: join(ts.scratch, topo.prefix),
    heartbeatMs: 200,
    agents: { claude: { bin: join(FAKES, "claude"), env: { HOME: home, FAKE_AGENT_RECORD: record, FAKE_AGENT_RECORD_APPEND: "1", ...env } } },
  });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: ts.url, name: `batching-${name}`, logger: silentLogger });
  const events: AdoEvent[] = [];
  try {
    const lines = Array.from({ length: tasks }, (_, i) => `  - { id: t${i + 1}, stage: small, prompt: "Fix bug ${i + 1}" }`).join("\n");
    const graph = parseGraph(`stages:\n  small: { agent: claude, batch: { max: 5 } }\ntasks:\n${lines}\n`);
    const client = new AdoClient(nc, topo);
    const { runId } = await client.submit({ graph, repo: repo.dir });
    const watching = client.watch(runId, { onEvent: (e) => events.push(e) });
    watching.catch(() => undefined); // awaited below; a failure in `during` must not leave it unhandled
    await during?.(client, runId);
    const outcome = await watching;
    const kv = await openBuckets(nc, topo);
    const records = await Promise.all(outcome.tasks.map(async (t) => decode(SCHEMAS.TaskRecord, (await kv.tasks.get(taskKey(outcome.runId, t.id)))!.value)));
    return { outcome, events, records, calls: await invocations(record), repo, git: (...a: string[]) => gitOut(repo.dir, ...a) };
  } finally {
    await nc.drain();
    await stack.close();
  }
}

describe("batching - end to end with the fake Claude Code", () => {
  it("a batch of five tasks runs as one invocation with the prompts numbered, lands as one commit and one merge; each task shows its batch and its share of the cost", async () => {
    let seen: Record<string, unknown>[] = [];
    // The fake takes a moment per line, so ado status can be seen while the batch runs: its members run with the lead.
    const { outcome, events, records, calls, repo, git } = await runBatched("five", { FAKE_AGENT_TOOLS: "3", FAKE_AGENT_DELAY_MS: "300" }, 5, async (client, runId) => {
      seen = await eventually(async () => {
        const view = await client.status(runId);
        const tasks = view?.tasks ?? [];
        return tasks.length === 5 && tasks.every((t) => t.status === "running") ? tasks.map((t) => ({ id: t.id, batch: t.batch, workerId: t.workerId })) : undefined;
      }, 60_000, "the batch's five tasks running in ado status");
    });
    expect(seen.map((t) => t.batch)).toEqual(["t1", "t1", "t1", "t1", "t1"]);
    expect(new Set(seen.map((t) => t.workerId)).size).toBe(1);
    try {
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(calls).toHaveLength(1);
      const prompt = calls[0]!.argv.join(" ") + calls[0]!.stdin;
      for (let i = 1; i <= 5; i++) expect(prompt).toContain(`${i}. (task t${i})`);
      expect(records.map((r) => r.batch)).toEqual(["t1", "t1", "t1", "t1", "t1"]);
      const succeeded = events.filter((e): e is Extract<AdoEvent, { type: "task.succeeded" }> => e.type === "task.succeeded");
      expect(succeeded.map((e) => e.batch)).toEqual(["t1", "t1", "t1", "t1", "t1"]);
      // The fake reports its cost once; each task carries a fifth of it.
      const shares = succeeded.map((e) => e.costUsd!);
      expect(shares[0]).toBeGreaterThan(0);
      for (const s of shares) expect(s).toBeCloseTo(shares[0]!, 10);
      expect(records.reduce((n, r) => n + r.costUsd, 0)).toBeCloseTo(shares[0]! * 5, 10);
      // One commit holds the batch's work, merged once (a fast-forward from the base: nothing else landed).
      const base = git("rev-parse", "HEAD"); // the run started from the checkout's HEAD, which it leaves alone
      expect(git("rev-list", "--count", `${base}..${outcome.integrationBranch}`)).toBe("1");
      expect(git("log", "-1", "--format=%B", outcome.integrationBranch!)).toMatch(/1\. \(task t1\)[\s\S]*5\. \(task t5\)/);
      expect(events.filter((e) => e.type === "task.merged")).toHaveLength(5);
      expect(new Set(records.map((r) => r.integrationCommit)).size).toBe(1);
      expect(git("ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort()).toEqual(["README.md", "fake-claude-2.txt", "fake-claude-3.txt"]);
    } finally {
      await repo.cleanup();
    }
  }, 180_000);

  it("a batch that fails runs its tasks again one by one", async () => {
    // The fake crashes on a batch's prompt only; alone, each task succeeds (with no edits, so nothing conflicts).
    const { outcome, events, records, calls, repo } = await runBatched("failing", { FAKE_AGENT_TOOLS: "1", FAKE_AGENT_FAIL_ON: "Do each of these" }, 3);
    try {
      expect(outcome.status, outcome.error).toBe("succeeded");
      expect(calls).toHaveLength(4);
      const prompts = calls.map((c) => c.argv.join(" ") + c.stdin);
      expect(prompts.filter((p) => p.includes("Do each of these 3 tasks"))).toHaveLength(1);
      for (let i = 1; i <= 3; i++) expect(prompts.filter((p) => p.includes(`Fix bug ${i}`) && !p.includes("Do each of these"))).toHaveLength(1);
      const failed = events.filter((e): e is Extract<AdoEvent, { type: "task.failed" }> => e.type === "task.failed");
      expect(failed.map((e) => [e.taskId, e.batch, e.willRetry])).toEqual([["t1", "t1", true], ["t2", "t1", true], ["t3", "t1", true]]);
      expect(records.map((r) => [r.attempts, r.unbatched, r.batch])).toEqual([[2, true, undefined], [2, true, undefined], [2, true, undefined]]);
    } finally {
      await repo.cleanup();
    }
  }, 180_000);
});
