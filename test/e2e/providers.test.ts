import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { builtinAgents, cliAgents, type Agent } from "../../src/agents/index.js";
import { Stack } from "../../src/actors/stack.js";
import { Worker } from "../../src/actors/worker/worker.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { newWorkerId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent, type ProviderEvent, type ProviderState } from "../../src/runtime/messages.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";
import { FAKE_PATH } from "../agents/helpers.js";
import { runAdo } from "../helpers/cli.js";

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-providers-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

describe("providers - circuit breaker and fallback, end to end", () => {
  it(
    "providers - a provider whose CLI refuses the credentials opens its circuit; tasks fall back to the next provider and succeed; a task with only that provider waits for it",
    { timeout: 240_000 },
    async () => {
      const repo = await makeRepo();
      const topo = uniqueTopology();
      const home = join(scratch, "home");
      // Two accounts of one CLI (the fake Claude Code): the first's login is refused.
      const badRecord = join(scratch, "bad.json");
      const goodRecord = join(scratch, "good.json");
      // The second account pays by API key, kept on the worker under a name of its own.
      process.env.PROVIDERS_TEST_GOOD_API_KEY = "sk-test-good";
      const providers = {
        bad: { agent: "claude", access: "subscription" as const, env: { PATH: FAKE_PATH, HOME: home, FAKE_AGENT_SCENARIO: "auth", FAKE_AGENT_RECORD: badRecord }, circuit: { failures: 2, cooldown: "10m" } },
        // One tool call (a command, no file written): the tasks change nothing, so no merges to conflict.
        good: {
          agent: "claude",
          access: "api" as const,
          credentials: { env: "ANTHROPIC_API_KEY", from: "PROVIDERS_TEST_GOOD_API_KEY" },
          env: { PATH: FAKE_PATH, HOME: home, FAKE_AGENT_TOOLS: "1", FAKE_AGENT_RECORD: goodRecord },
        },
      };
      const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(scratch, "wt"), heartbeatMs: 200, providers });
      const stack = await Stack.start({ config, logger: silentLogger });
      const agents = new Map<string, Agent>([...builtinAgents(), ...cliAgents()]);
      const workers: Worker[] = [];
      const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
      const circuitEvents: ProviderEvent[] = [];
      const sub = nc.subscribe(topo.subjects.providerEvents, { callback: (_e, m) => void circuitEvents.push(decode(SCHEMAS.ProviderEvent, m.data, m.headers)) });
      try {
        for (let i = 0; i < 2; i++) {
          const wnc = await connectNats({ servers: ts.url, name: `worker-${i}`, logger: silentLogger });
          const ctx = { nc: wnc, topo, kv: await openBuckets(wnc, topo), logger: silentLogger };
          workers.push(await new Worker(ctx, { workerId: newWorkerId(hostname()), slots: 1, heartbeatMs: 200, worktreeDir: config.worktreeDir, cloneDir: config.git.cloneDir, agents, providers: config.providers }).start());
        }
        const client = new AdoClient(nc, topo);
        const graph = parseGraph(
          "tasks:\n" + Array.from({ length: 4 }, (_, i) => `  - { id: t${i}, prompt: "add a note ${i}", providers: [bad, good] }`).join("\n") + "\n",
        );
        const { runId } = await client.submit({ graph, repo: repo.dir });
        const seen: AdoEvent[] = [];
        const outcome = await client.watch(runId, { onEvent: (e) => seen.push(e) });
        // Every task succeeded: none failed for good on the provider that refused it.
        expect(outcome.status).toBe("succeeded");
        expect(seen.filter((e) => e.type === "task.succeeded")).toHaveLength(4);
        const failed = seen.filter((e): e is Extract<AdoEvent, { type: "task.failed" }> => e.type === "task.failed");
        expect(failed.length).toBeGreaterThanOrEqual(2);
        for (const f of failed) expect(f).toMatchObject({ willRetry: true });
        // The circuit opened once, and the provider state shows who ran what.
        await eventually(() => circuitEvents.some((e) => e.provider === "bad" && e.to === "open"), 10_000, "bad's circuit.open event");
        expect(circuitEvents.filter((e) => e.provider === "bad").map((e) => `${e.from}->${e.to}`)).toEqual(["closed->open"]);
        const kv = await openBuckets(nc, topo);
        const state = async (name: string) => decode(SCHEMAS.ProviderState, (await kv.providers.get(name))!.value) as ProviderState;
        const bad = await state("bad");
        const good = await state("good");
        expect(bad.circuit.state).toBe("open");
        // Every failed attempt ran on the refusing provider; every success on the other.
        expect(bad.counted.sort()).toEqual(failed.map((f) => `${runId}.${f.taskId}.${f.attempt}`).sort());
        expect(good.counted).toHaveLength(4);
        expect(good.circuit.state).toBe("closed");
        // Each provider's agent got its own environment: the API key only on the API account.
        const envOf = async (path: string) => (JSON.parse(await readFile(path, "utf8")) as { env: Record<string, string> }).env;
        expect((await envOf(goodRecord)).ANTHROPIC_API_KEY).toBe("sk-test-good");
        expect((await envOf(badRecord)).ANTHROPIC_API_KEY).toBeUndefined();
        expect((await envOf(badRecord)).FAKE_AGENT_SCENARIO).toBe("auth");
        // Where the worker keeps the key is blanked for every agent (the fake records it).
        expect((await envOf(badRecord)).PROVIDERS_TEST_GOOD_API_KEY ?? "").toBe("");
        expect((await envOf(goodRecord)).PROVIDERS_TEST_GOOD_API_KEY ?? "").toBe("");

        // A task whose only provider is open waits (it does not fail), saying for what and until when.
        const waiting = await client.submit({ graph: parseGraph('tasks:\n  - { id: w, prompt: "x", provider: bad }\n'), repo: repo.dir });
        const events: AdoEvent[] = [];
        const watch = client.watch(waiting.runId, { onEvent: (e) => events.push(e) });
        const wait = await eventually(() => events.find((e) => e.type === "task.waiting"), 30_000, "task.waiting for provider bad");
        expect(wait.type === "task.waiting" && wait.reason).toMatch(/^waiting for provider bad until \d\d:\d\d UTC: circuit open: 2 auth failures in a row/);
        expect(events.some((e) => e.type === "task.started" || e.type === "task.failed")).toBe(false);
        // `ado status` (a separate process, as a person runs it) says the same beside the
        // task, and its providers view shows each provider's circuit, running and spend.
        const env = { ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix };
        const status = await runAdo(["status", waiting.runId], { env });
        expect(status.code, status.stderr).toBe(0);
        expect(status.stdout).toMatch(/\n {2}w +queued .*waiting for provider bad until \d\d:\d\d UTC: circuit open/);
        expect(status.stdout).toMatch(/\nproviders:\n {2}provider +circuit +permits +running +spend +why \/ last adaptive step\n/);
        expect(status.stdout).toMatch(new RegExp(`\\n {2}bad +open until \\d\\d:\\d\\d UTC +no rate limit +0 running +\\$0\\.00 today, ${bad.counted.length} tasks +circuit: 2 auth failures in a row`));
        expect(status.stdout).toMatch(/\n {2}good +closed +no rate limit +0 running +\$\d+\.\d\d today, 4 tasks/);
        const json = await runAdo(["status", "--providers", "--json"], { env });
        expect(json.code, json.stderr).toBe(0);
        const views = JSON.parse(json.stdout) as Array<{ provider: string; circuit: { state: string }; spendToday: { tasks: number } }>;
        expect(views.map((v) => [v.provider, v.circuit.state, v.spendToday.tasks])).toEqual([
          ["bad", "open", bad.counted.length],
          ["good", "closed", 4],
        ]);
        await client.control({ runId: waiting.runId }, "cancel", "test over");
        expect((await watch).status).toBe("cancelled");
      } finally {
        delete process.env.PROVIDERS_TEST_GOOD_API_KEY;
        sub.unsubscribe();
        await Promise.all(workers.map((w) => w.close()));
        await nc.drain();
        await stack.close();
        await repo.cleanup();
      }
    },
  );

  it(
    "providers - a usage limit with a reset time parks the provider until then; the task is requeued, waits, and succeeds after the reset",
    { timeout: 240_000 },
    async () => {
      const repo = await makeRepo();
      const topo = uniqueTopology();
      const home = join(scratch, "home2");
      const scenarioFile = join(scratch, "scenario.json");
      // Far enough ahead that the first attempt hits the limit before it resets, on a loaded machine too.
      const resetAtSec = Math.ceil(Date.now() / 1000) + 20;
      await writeFile(scenarioFile, JSON.stringify({ scenario: "usage_limit", resetAt: resetAtSec, tools: 1 }));
      const providers = {
        p: { agent: "claude", access: "subscription" as const, env: { PATH: FAKE_PATH, HOME: home, FAKE_AGENT_SCENARIO_FILE: scenarioFile }, circuit: { failures: 3, cooldown: "1s", successes: 1 } },
      };
      const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(scratch, "wt2"), heartbeatMs: 200, providers });
      const stack = await Stack.start({ config, logger: silentLogger });
      const nc = await connectNats({ servers: ts.url, name: "test-client-2", logger: silentLogger });
      const circuit: ProviderEvent[] = [];
      const sub = nc.subscribe(topo.subjects.providerEvents, { callback: (_e, m) => void circuit.push(decode(SCHEMAS.ProviderEvent, m.data, m.headers)) });
      const wnc = await connectNats({ servers: ts.url, name: "worker-p", logger: silentLogger });
      const worker = await new Worker(
        { nc: wnc, topo, kv: await openBuckets(wnc, topo), logger: silentLogger },
        { workerId: newWorkerId(hostname()), slots: 1, heartbeatMs: 200, worktreeDir: config.worktreeDir, cloneDir: config.git.cloneDir, agents: new Map<string, Agent>([...builtinAgents(), ...cliAgents()]) },
      ).start();
      try {
        const client = new AdoClient(nc, topo);
        const { runId } = await client.submit({ graph: parseGraph('tasks:\n  - { id: u, prompt: "x", provider: p }\n'), repo: repo.dir });
        const seen: AdoEvent[] = [];
        let healed = false;
        const outcome = await client.watch(runId, {
          onEvent: (e) => {
            seen.push(e);
            // The account's limit is over once it resets: from then on the CLI works.
            if (e.type === "task.failed" && !healed) {
              healed = true;
              void writeFile(scenarioFile, JSON.stringify({ scenario: "success", tools: 1 }));
            }
          },
        });
        expect(outcome.status).toBe("succeeded");
        const failed = seen.filter((e) => e.type === "task.failed");
        expect(failed).toHaveLength(1);
        expect(failed[0]).toMatchObject({ attempt: 1, willRetry: true });
        // Parked until the reset the CLI reported, for every host (one KV key), then probed and closed.
        const resetAt = new Date(resetAtSec * 1000).toISOString();
        expect(circuit.map((e) => `${e.from}->${e.to}`)).toEqual(["closed->open", "open->half_open", "half_open->closed"]);
        expect(circuit[0]).toMatchObject({ provider: "p", until: resetAt });
        expect(circuit[0]!.reason).toMatch(/^usage limit reached; resets /);
        // The requeued attempt waited, visibly, and started only after the reset.
        const wait = seen.find((e) => e.type === "task.waiting");
        expect(wait && wait.type === "task.waiting" && wait.reason).toMatch(/^waiting for provider p until \d\d:\d\d UTC: circuit open: usage limit reached/);
        const second = seen.find((e) => e.type === "task.started" && e.attempt === 2);
        expect(second).toBeDefined();
        expect(Date.parse(second!.at)).toBeGreaterThanOrEqual(resetAtSec * 1000);
      } finally {
        sub.unsubscribe();
        await worker.close();
        await nc.drain();
        await stack.close();
        await repo.cleanup();
      }
    },
  );

  it(
    "providers - rotation: round_robin: the tasks of one provider list take turns on two equal providers (fallback would put them all on the first)",
    { timeout: 180_000 },
    async () => {
      const repo = await makeRepo();
      const topo = uniqueTopology();
      const home = join(scratch, "home3");
      // Two equal accounts, no limits: only the rotation spreads the tasks.
      const env = { PATH: FAKE_PATH, HOME: home, FAKE_AGENT_TOOLS: "1" };
      const providers = { a: { agent: "claude", access: "subscription" as const, env }, b: { agent: "claude", access: "subscription" as const, env } };
      const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(scratch, "wt3"), heartbeatMs: 200, providers });
      const stack = await Stack.start({ config, logger: silentLogger });
      const nc = await connectNats({ servers: ts.url, name: "test-client-3", logger: silentLogger });
      const wnc = await connectNats({ servers: ts.url, name: "worker-rr", logger: silentLogger });
      const worker = await new Worker(
        { nc: wnc, topo, kv: await openBuckets(wnc, topo), logger: silentLogger },
        { workerId: newWorkerId(hostname()), slots: 2, heartbeatMs: 200, worktreeDir: config.worktreeDir, cloneDir: config.git.cloneDir, agents: new Map<string, Agent>([...builtinAgents(), ...cliAgents()]), providers: config.providers },
      ).start();
      try {
        const client = new AdoClient(nc, topo);
        const graph = parseGraph("rotation: round_robin\ntasks:\n" + Array.from({ length: 6 }, (_, i) => `  - { id: r${i}, prompt: "note ${i}", providers: [a, b] }`).join("\n") + "\n");
        expect(graph.tasks.every((t) => t.rotation === "round_robin")).toBe(true);
        const { runId } = await client.submit({ graph, repo: repo.dir });
        expect((await client.watch(runId)).status).toBe("succeeded");
        const kv = await openBuckets(nc, topo);
        const ran = async (name: string) => {
          const e = await kv.providers.get(name);
          return e?.operation === "PUT" ? (decode(SCHEMAS.ProviderState, e.value) as ProviderState).counted.length : 0;
        };
        // One balancer turns the list after every placement: 3 and 3 (a redelivered message
        // asked again could shift one), never all on the first as the written order would.
        const [onA, onB] = [await ran("a"), await ran("b")];
        expect(onA + onB).toBe(6);
        expect(onA).toBeGreaterThanOrEqual(2);
        expect(onB).toBeGreaterThanOrEqual(2);
      } finally {
        await worker.close();
        await nc.drain();
        await stack.close();
        await repo.cleanup();
      }
    },
  );

  it(
    "providers - rotation: cost_optimized: the subscription account first, then the cheapest pay-per-use one per expected task; the dearest (written first) never while the cheaper has room",
    { timeout: 180_000 },
    async () => {
      const repo = await makeRepo();
      const topo = uniqueTopology();
      const home = join(scratch, "home-cost");
      // Each task runs a few seconds, so they overlap: the subscription (one at a time) is busy when the others are placed.
      const env = { PATH: FAKE_PATH, HOME: home, FAKE_AGENT_TOOLS: "1", FAKE_AGENT_DELAY_MS: "700" };
      const providers = {
        dear: { agent: "claude", access: "api" as const, env, prices: "m-dear" },
        cheap: { agent: "claude", access: "api" as const, env, prices: "m-cheap" },
        sub: { agent: "claude", access: "subscription" as const, env, limits: { concurrent: 1 } },
      };
      const prices = { "m-dear": { input: 15, output: 75 }, "m-cheap": { input: 1, output: 5 } };
      const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(scratch, "wt-cost"), heartbeatMs: 200, providers, prices });
      const stack = await Stack.start({ config, logger: silentLogger });
      const nc = await connectNats({ servers: ts.url, name: "test-client-cost", logger: silentLogger });
      const wnc = await connectNats({ servers: ts.url, name: "worker-cost", logger: silentLogger });
      const worker = await new Worker(
        { nc: wnc, topo, kv: await openBuckets(wnc, topo), logger: silentLogger },
        { workerId: newWorkerId(hostname()), slots: 4, heartbeatMs: 200, worktreeDir: config.worktreeDir, cloneDir: config.git.cloneDir, agents: new Map<string, Agent>([...builtinAgents(), ...cliAgents()]), providers: config.providers },
      ).start();
      try {
        const client = new AdoClient(nc, topo);
        // Written dearest first: fallback would put every task on `dear`.
        const graph = parseGraph("rotation: cost_optimized\ntasks:\n" + Array.from({ length: 4 }, (_, i) => `  - { id: c${i}, prompt: "note ${i}", providers: [dear, cheap, sub] }`).join("\n") + "\n");
        expect(graph.tasks.every((t) => t.rotation === "cost_optimized")).toBe(true);
        const { runId } = await client.submit({ graph, repo: repo.dir });
        expect((await client.watch(runId)).status).toBe("succeeded");
        const kv = await openBuckets(nc, topo);
        const ran = async (name: string) => {
          const e = await kv.providers.get(name);
          return e?.operation === "PUT" ? (decode(SCHEMAS.ProviderState, e.value) as ProviderState).counted.length : 0;
        };
        const [onSub, onCheap, onDear] = [await ran("sub"), await ran("cheap"), await ran("dear")];
        expect(onSub + onCheap + onDear).toBe(4);
        expect(onSub).toBeGreaterThanOrEqual(1);
        expect(onCheap).toBeGreaterThanOrEqual(1);
        expect(onDear).toBe(0);
      } finally {
        await worker.close();
        await nc.drain();
        await stack.close();
        await repo.cleanup();
      }
    },
  );
});
