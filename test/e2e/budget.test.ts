/**
 * A run's cost and budget end to end: real scheduler, balancer, merge coordinator and a
 * worker on real NATS and git; the agent is the fake Claude Code CLI
 * (test/fixtures/fake-agents), whose reported cost follows from its tool calls
 * (usageFor in common.mjs: Sonnet's list price on deterministic token counts).
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { ADAPTERS, AgentConfigSchema, builtinAgents, CliAgent, type Agent, type CliRunContext } from "../../src/agents/index.js";
import { Stack } from "../../src/actors/stack.js";
import { Worker } from "../../src/actors/worker/worker.js";
import { formatUsd } from "../../src/runtime/budget.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { newWorkerId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { decode } from "../../src/runtime/codec.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { FAKE_BIN, FAKE_PATH } from "../agents/helpers.js";
import { runAdo } from "../helpers/cli.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-budget-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

/** What the fake claude reports for a run of `tools` tool calls (common.mjs usageFor, its own price). */
function fakeClaudeCost(tools: number): { usd: number; tokens: number } {
  const u = { input: 12_000 + 1_000 * tools, cached: 8_000 + 500 * tools, output: 300 + 50 * tools };
  return { usd: ((u.input - u.cached) * 3 + u.cached * 0.3 + u.output * 15) / 1_000_000, tokens: u.input + u.output };
}

const describeEvents = (events: AdoEvent[]) =>
  events
    .filter((e) => e.type !== "task.output" && e.type !== "agent.message" && e.type !== "agent.tool")
    .map((e) => `${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}${"costUsd" in e ? ` $${e.costUsd}` : ""}${e.type === "task.failed" ? ` ${e.error}` : ""}`)
    .join("\n");

/** The actors, and one worker whose `claude` is the fake claude CLI and whose `spender` is a stand-in agent (spender()). */
async function startWith(topo: ReturnType<typeof uniqueTopology>, dir: string, home: string) {
  const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(dir, "wt"), heartbeatMs: 200 });
  const stack = await Stack.start({ config, logger: silentLogger, workers: 0 });
  // Workers get agent CLIs from the host's config elsewhere; here the fake claude is given by hand.
  const agents: Map<string, Agent> = builtinAgents();
  agents.set(
    "claude",
    new CliAgent(ADAPTERS.claude, { config: AgentConfigSchema.parse({ bin: join(FAKE_BIN, "claude") }), inherited: { ...process.env, HOME: home, PATH: FAKE_PATH } }),
  );
  agents.set("spender", spender);
  const wnc = await connectNats({ servers: ts.url, name: "budget-worker", logger: silentLogger });
  const worker = await new Worker(
    { nc: wnc, topo, kv: await openBuckets(wnc, topo), logger: silentLogger },
    { workerId: newWorkerId(hostname()), slots: 2, heartbeatMs: 200, worktreeDir: join(dir, "wt"), cloneDir: join(dir, "clones"), agents },
  ).start();
  return { stack, worker, wnc };
}

/**
 * A stand-in for an agent CLI that enforces no cap of its own and keeps going: it reports
 * $0.30 spent (an `agent.usage` event, as an adapter makes of a CLI's stream) and then
 * works until it is stopped.
 */
const spender: Agent = {
  name: "spender",
  needsWorktree: true,
  async run(ctx) {
    (ctx as CliRunContext).onEvent?.({ type: "agent.usage", inputTokens: 90_000, outputTokens: 2_000, cachedTokens: 0, cacheWriteTokens: 0, costUsd: 0.3, costSource: "reported" }, 0);
    await new Promise((resolve) => (ctx.signal.aborted ? resolve(undefined) : ctx.signal.addEventListener("abort", resolve, { once: true })));
    return { ok: false, failure: { kind: "cancelled", retryable: false, message: "stopped" } };
  },
};

describe("budget - a run stops at its budget and goes on after `ado budget raise`", () => {
  it("costs are right to the cent per attempt, task and run; c waits for the budget, then runs with its own cap passed to claude", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const dir = await mkdtemp(join(scratch, "run-"));
    const home = join(dir, "home");
    const recorded = join(dir, "c-argv.json");
    const { stack, worker, wnc } = await startWith(topo, dir, home);
    const nc = await connectNats({ servers: ts.url, name: "budget-client", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const events: AdoEvent[] = [];
    onTestFailed(() => console.log(describeEvents(events)));
    try {
      const [a, b, c] = [fakeClaudeCost(2), fakeClaudeCost(4), fakeClaudeCost(2)];
      // a: no history and no default, nothing reserved: it starts. b: reserved at a's mean
      // (0.0237), 0.0474 fits 0.05; it costs 0.0285. c: spent 0.0522 is past the cap already.
      const graph = parseGraph(`
name: budget
maxCost: 0.05
tasks:
  - { id: a, agent: claude, prompt: "write a", env: { FAKE_AGENT_TOOLS: "2" } }
  - { id: b, agent: claude, prompt: "write b", needs: [a], env: { FAKE_AGENT_TOOLS: "4" } }
  - { id: c, agent: claude, prompt: "write c", needs: [b], maxCost: 1, env: { FAKE_AGENT_TOOLS: "2", FAKE_AGENT_RECORD: "${recorded}" } }
`);
      const stopped = await client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(stopped.status, stopped.error).toBe("needs_attention");
      expect(stopped.attention).toEqual([]);
      expect(stopped.budget).toMatchObject({ maxCostUsd: 0.05, next: { taskId: "c" }, reservedUsd: 0 });
      expect(stopped.budget!.spentUsd).toBeCloseTo(a.usd + b.usd, 9);
      expect(stopped.budget!.next.costUsd).toBeCloseTo((a.usd + b.usd) / 2, 9);
      expect(stopped.error).toMatch(/budget.*ado budget raise/);
      expect(events.some((e) => e.type === "task.started" && e.taskId === "c")).toBe(false);
      // Each attempt's cost, from the agent's stream, on its event; usage came live too.
      const succeeded = (id: string) => events.find((e): e is Extract<AdoEvent, { type: "task.succeeded" }> => e.type === "task.succeeded" && e.taskId === id)!;
      expect(succeeded("a").costUsd).toBeCloseTo(a.usd, 9);
      expect(succeeded("a").tokens).toBe(a.tokens);
      expect(succeeded("b").costUsd).toBeCloseTo(b.usd, 9);
      const usage = await eventually(async () => {
        const view = await client.status(stopped.runId);
        return view?.run.status === "needs_attention" ? view : undefined;
      });
      expect(usage.run.costUsd).toBeCloseTo(a.usd + b.usd, 9);
      expect(usage.tasks.find((t) => t.id === "b")!.costUsd).toBeCloseTo(b.usd, 9);

      // `ado status` tells why the run waits, and what it spent of its budget.
      const status = await runAdo(["status", stopped.runId, "--json", "--server", ts.url, "--prefix", topo.prefix], { timeoutMs: 120_000 });
      expect(status.code, status.stderr).toBe(0);
      const shown = JSON.parse(status.stdout) as { status: string; costUsd: number; budget: { maxCostUsd: number }; budgetWait: { next: { taskId: string } }; tasks: { id: string; costUsd: number }[] };
      expect(shown).toMatchObject({ status: "needs_attention", budget: { maxCostUsd: 0.05 }, budgetWait: { next: { taskId: "c" } } });
      expect(shown.costUsd).toBeCloseTo(a.usd + b.usd, 9);
      expect(shown.tasks.find((t) => t.id === "a")!.costUsd).toBeCloseTo(a.usd, 9);

      // A person raises the budget by $0.05 with the CLI: c fits now (0.0522 + 0.0261 <= 0.10).
      const raised = await runAdo(["budget", "raise", stopped.runId, "+0.05", "--server", ts.url, "--prefix", topo.prefix], { timeoutMs: 120_000 });
      expect(raised.code, raised.stderr).toBe(0);
      expect(raised.stdout).toMatch(/raising run .* USD cap by \$0\.05 \(spent so far \$0\.05/);
      await eventually(async () => ["succeeded", "failed", "cancelled"].includes((await client.runRecord(stopped.runId))?.status ?? ""), 120_000, "the run to end");
      const done = await client.watch(stopped.runId);
      expect(done.status, done.error).toBe("succeeded");
      expect(done.costUsd).toBeCloseTo(a.usd + b.usd + c.usd, 9);
      expect(done.tokens).toBe(a.tokens + b.tokens + c.tokens);
      expect(formatUsd(done.costUsd!)).toBe("$0.08");
      expect(Object.fromEntries(done.tasks.map((t) => [t.id, t.costUsd]))).toEqual({ a: expect.closeTo(a.usd, 9), b: expect.closeTo(b.usd, 9), c: expect.closeTo(c.usd, 9) });
      // The raise is on record, and c's own cap went to claude; its fan-in input carries b's cost.
      const all: AdoEvent[] = [];
      await client.watch(stopped.runId, { onEvent: (e) => all.push(e) });
      expect(all.find((e) => e.type === "run.budget")).toMatchObject({ maxCostUsd: expect.closeTo(0.1, 9), previousMaxCostUsd: 0.05 });
      expect(all.filter((e) => e.type === "run.continued")).toHaveLength(1);
      const rec = JSON.parse(await readFile(recorded, "utf8")) as { argv: string[]; env: Record<string, string> };
      expect(rec.argv.join(" ")).toContain("--max-budget-usd 1");
      const inputs = JSON.parse(rec.env.ADO_INPUTS!) as { taskId: string; costUsd: number }[];
      expect(inputs).toEqual([expect.objectContaining({ taskId: "b", costUsd: expect.closeTo(b.usd, 9) })]);
      // What claude tasks cost is kept for the next runs' reservations: the mean of the three attempts.
      const costs = (await openBuckets(nc, topo)).costs;
      const history = await eventually(async () => {
        const e = await costs.get("claude.xs");
        return e?.operation === "PUT" ? decode(SCHEMAS.CostHistory, e.value) : undefined;
      }, 30_000, "the cost history");
      expect(history.samples).toBe(3);
      expect(history.costUsd).toBeCloseTo((a.usd + b.usd + c.usd) / 3, 9);
    } finally {
      await nc.drain();
      await worker.close({ graceMs: 5_000, forceMs: 2_000 });
      await wnc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 240_000);

  it("ado stops an agent that passes its task's maxCost when the CLI does not enforce it: failed as budget, its spend counted", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const dir = await mkdtemp(join(scratch, "cap-"));
    const { stack, worker, wnc } = await startWith(topo, dir, join(dir, "home"));
    const nc = await connectNats({ servers: ts.url, name: "budget-client-cap", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const events: AdoEvent[] = [];
    onTestFailed(() => console.log(describeEvents(events)));
    try {
      const graph = parseGraph(`
name: cap
tasks:
  - { id: s, agent: spender, prompt: "spend", maxCost: 0.25, retry: { attempts: 3 } }
`);
      const done = await client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(done.status).toBe("failed");
      const failed = events.filter((e): e is Extract<AdoEvent, { type: "task.failed" }> => e.type === "task.failed");
      // Not retried: a budget failure is not one more attempt can fix.
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ attempt: 1, willRetry: false, costUsd: 0.3, tokens: 92_000 });
      expect(failed[0]!.error).toMatch(/spent \$0\.3000, past the task's maxCost of \$0\.25: ado stopped it/);
      expect(done.costUsd).toBeCloseTo(0.3, 9);
      expect(events.some((e) => e.type === "agent.usage" && e.taskId === "s")).toBe(true);
    } finally {
      await nc.drain();
      await worker.close({ graceMs: 5_000, forceMs: 2_000 });
      await wnc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 240_000);

  it("ado run --max-cost: a run whose first task would pass its budget waits (exit 3, its state kept); ado budget raise in the repository resumes it to its end", async () => {
    const repo = await makeRepo();
    const dir = await mkdtemp(join(scratch, "cli-"));
    // Shell tasks report no cost: the configured default reservation ($1) is what does not fit $0.50.
    const config = join(dir, "ado.config.yaml");
    await writeFile(config, "budget:\n  defaultTaskCost: 1\n");
    try {
      const r = await runAdo(["run", "one", "--cmd", "echo 1 > one.txt", "--repo", repo.dir, "--config", config, "--max-cost", "0.5", "--json", "--progress", "none"], { timeoutMs: 120_000 });
      expect(r.code, r.stderr).toBe(3);
      const stopped = JSON.parse(r.stdout) as { runId: string; status: string; budget: { maxCostUsd: number; next: { taskId: string; costUsd: number } } };
      expect(stopped).toMatchObject({ status: "needs_attention", budget: { maxCostUsd: 0.5, next: { taskId: "task", costUsd: 1 } } });
      const raised = await runAdo(["budget", "raise", stopped.runId, "2", "--repo", repo.dir, "--config", config, "--json", "--progress", "none"], { timeoutMs: 120_000 });
      expect(raised.code, raised.stderr).toBe(0);
      expect(raised.stderr).toMatch(/raising run .*'s USD cap to \$2\.00/);
      const done = JSON.parse(raised.stdout) as { status: string; integrationBranch: string; costUsd: number };
      expect(done).toMatchObject({ status: "succeeded", costUsd: 0 });
      expect(gitOut(repo.dir, "show", `${done.integrationBranch}:one.txt`)).toBe("1");
    } finally {
      await repo.cleanup();
    }
  }, 240_000);
});
