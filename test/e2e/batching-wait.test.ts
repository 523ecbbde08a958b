/**
 * A batch's `wait` end to end: tasks of a batching stage that become ready at different
 * moments (behind gates the test opens one by one) run as one invocation of the fake
 * Claude Code; a batch not full when its wait ends runs as it is. Real scheduler,
 * balancer, merger and workers on real NATS and git.
 */
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ACTOR_KINDS, Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { stageKey, taskKey } from "../../src/runtime/names.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { makeRepo } from "../helpers/repo.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";

const FAKES = resolve(dirname(fileURLToPath(import.meta.url)), "../fixtures/fake-agents/bin");
const ts = useTestServer("ado-batching-wait-");

describe("batching - a batch waits for members that become ready later", () => {
  it("three tasks ready at different moments run as one batch once it is full, long before the wait ends; two that never fill theirs run as one batch when its wait ends", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const home = join(ts.scratch, "home");
    await mkdir(home, { recursive: true });
    const record = join(ts.scratch, "calls.jsonl");
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 2,
      slots: 4,
      worktreeDir: join(ts.scratch, topo.prefix),
      heartbeatMs: 200,
      // One tool call and no edits: the two batches change nothing that could conflict.
      agents: { claude: { bin: join(FAKES, "claude"), env: { HOME: home, FAKE_AGENT_RECORD: record, FAKE_AGENT_RECORD_APPEND: "1", FAKE_AGENT_TOOLS: "1" } } },
    });
    const stack = await Stack.start({ config, logger: silentLogger });
    const nc = await connectNats({ servers: ts.url, name: "batching-wait", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    try {
      const dir = await mkdtemp(join(ts.scratch, "gates-"));
      const gate = (id: string) => `{ id: ${id}, run: "while [ ! -f ${join(dir, id)} ]; do sleep 0.05; done" }`;
      // `small` waits up to 10 minutes: only filling up can start its batch within the test.
      // `tail` waits 15 s for a third member that never comes.
      const graph = parseGraph(`
name: waits
stages:
  small: { agent: claude, batch: { size: 3, wait: 10m } }
  tail: { agent: claude, batch: { size: 3, wait: 15s } }
tasks:
  - ${gate("a1")}
  - ${gate("a2")}
  - ${gate("a3")}
  - ${gate("b1")}
  - ${gate("b2")}
  - { id: m1, stage: small, needs: [a1], prompt: "Fix bug 1" }
  - { id: m2, stage: small, needs: [a2], prompt: "Fix bug 2" }
  - { id: m3, stage: small, needs: [a3], prompt: "Fix bug 3" }
  - { id: n1, stage: tail, needs: [b1], prompt: "Tidy 1" }
  - { id: n2, stage: tail, needs: [b2], prompt: "Tidy 2" }
`);
      const events: AdoEvent[] = [];
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const outcome = client.watch(runId, { onEvent: (e) => events.push(e) });
      outcome.catch(() => undefined); // awaited below
      const succeeded = (id: string) => events.some((e) => e.type === "task.succeeded" && e.taskId === id);
      const started = (id: string) => events.some((e) => e.type === "task.started" && e.taskId === id);
      // Each gate opens once the one before has ended and its dependent is ready (and waiting).
      for (const g of ["a1", "a2", "a3", "b1", "b2"]) {
        await writeFile(join(dir, g), "");
        // b2 opens with b1: n2 must be ready within n1's 15 s wait, which b2's run and merge after b1's could pass on a loaded machine.
        if (g === "b1") await writeFile(join(dir, "b2"), "");
        await eventually(() => succeeded(g) || undefined, 60_000, `gate ${g} done`);
        if (g === "a1" || g === "a2") expect(started("m1"), "m1 started before its batch filled").toBe(false);
        if (g === "b1") expect(started("n1"), "n1 started before its wait ended").toBe(false);
      }
      const done = await outcome;
      expect(done.status, done.error).toBe("succeeded");

      const calls = (await readFile(record, "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l) as { argv: string[]; stdin: string });
      const prompts = calls.map((c) => c.argv.join(" ") + c.stdin);
      expect(prompts).toHaveLength(2);
      const small = prompts.find((p) => p.includes("Do each of these 3 tasks"));
      const tail = prompts.find((p) => p.includes("Do each of these 2 tasks"));
      expect(small, prompts.join("\n---\n")).toBeDefined();
      for (let i = 1; i <= 3; i++) expect(small).toContain(`${i}. (task m${i})`);
      expect(tail, prompts.join("\n---\n")).toBeDefined();
      for (let i = 1; i <= 2; i++) expect(tail).toContain(`${i}. (task n${i})`);

      const kv = await openBuckets(nc, topo);
      const batchOf = async (id: string) => decode(SCHEMAS.TaskRecord, (await kv.tasks.get(taskKey(runId, id)))!.value).batch;
      expect(await Promise.all(["m1", "m2", "m3", "n1", "n2"].map(batchOf))).toEqual(["m1", "m1", "m1", "n1", "n1"]);
      // The tail's batch went when its wait ended: 15 s after its first member became ready
      // (b1 or b2 ended: their gates open together, either may end first), not before.
      const at = (type: AdoEvent["type"], id: string) => Date.parse(events.find((e) => e.type === type && "taskId" in e && e.taskId === id)!.at);
      expect(at("task.started", "n1")).toBeGreaterThanOrEqual(Math.min(at("task.succeeded", "b1"), at("task.succeeded", "b2")) + 15_000);
    } finally {
      await nc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 180_000);

  it("a scheduler replaced while tasks wait for their batch: none is lost or run twice, and the wait goes on from when it started", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const home = join(ts.scratch, "home-restart");
    await mkdir(home, { recursive: true });
    const record = join(ts.scratch, "calls-restart.jsonl");
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 2,
      slots: 2,
      worktreeDir: join(ts.scratch, topo.prefix),
      heartbeatMs: 200,
      agents: { claude: { bin: join(FAKES, "claude"), env: { HOME: home, FAKE_AGENT_RECORD: record, FAKE_AGENT_RECORD_APPEND: "1", FAKE_AGENT_TOOLS: "1" } } },
    });
    const rest = await Stack.start({ config, logger: silentLogger, actors: ACTOR_KINDS.filter((k) => k !== "scheduler" && k !== "scaler") });
    let scheduler = await Stack.start({ config, logger: silentLogger, actors: ["scheduler"], workers: 0 });
    const nc = await connectNats({ servers: ts.url, name: "batching-wait-restart", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const kv = await openBuckets(nc, topo);
    try {
      const dir = await mkdtemp(join(ts.scratch, "gates-"));
      const gate = (id: string) => `{ id: ${id}, run: "while [ ! -f ${join(dir, id)} ]; do sleep 0.05; done" }`;
      // A batch of up to 3 that waits 20 s; only two members ever come.
      const graph = parseGraph(`
name: wait-restart
stages:
  small: { agent: claude, batch: { size: 3, wait: 20s } }
tasks:
  - ${gate("a1")}
  - ${gate("a2")}
  - { id: m1, stage: small, needs: [a1], prompt: "Fix bug 1" }
  - { id: m2, stage: small, needs: [a2], prompt: "Fix bug 2" }
`);
      const events: AdoEvent[] = [];
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const outcome = client.watch(runId, { onEvent: (e) => events.push(e) });
      outcome.catch(() => undefined); // awaited below
      const succeeded = (id: string) => events.some((e) => e.type === "task.succeeded" && e.taskId === id);
      const since = async () => {
        const e = await kv.stages.get(stageKey(runId, "small"));
        return e?.operation === "PUT" ? decode(SCHEMAS.StageState, e.value).batchSince : 0;
      };
      await writeFile(join(dir, "a1"), "");
      // m1 waits: the wait's start is stored.
      const started = await eventually(async () => (succeeded("a1") ? (await since()) || undefined : undefined), 60_000, "m1 waiting for its batch");
      await scheduler.close();
      scheduler = await Stack.start({ config, logger: silentLogger, actors: ["scheduler"], workers: 0 });
      await writeFile(join(dir, "a2"), "");
      await eventually(() => succeeded("a2") || undefined, 60_000, "a2 done");
      // The new scheduler went on with the stored start (unless the wait has ended by now, on a slow machine).
      const after = await since();
      if (after !== 0) expect(after).toBe(started);
      const done = await outcome;
      expect(done.status, done.error).toBe("succeeded");
      // One invocation for both (none ran alone or twice), and it went when the first wait ended.
      const calls = (await readFile(record, "utf8")).split("\n").filter(Boolean).map((l) => JSON.parse(l) as { argv: string[]; stdin: string });
      expect(calls).toHaveLength(1);
      const prompt = calls[0]!.argv.join(" ") + calls[0]!.stdin;
      expect(prompt).toContain("Do each of these 2 tasks");
      for (let i = 1; i <= 2; i++) expect(prompt).toContain(`${i}. (task m${i})`);
      const startedAt = events.filter((e) => e.type === "task.started" && "taskId" in e && e.taskId === "m1").map((e) => Date.parse(e.at));
      expect(startedAt).toHaveLength(1);
      expect(startedAt[0]!).toBeGreaterThanOrEqual(started + 20_000);
      expect(events.filter((e) => e.type === "task.started" && "taskId" in e && e.taskId === "m2")).toHaveLength(0);
      const batchOf = async (id: string) => decode(SCHEMAS.TaskRecord, (await kv.tasks.get(taskKey(runId, id)))!.value).batch;
      expect(await Promise.all(["m1", "m2"].map(batchOf))).toEqual(["m1", "m1"]);
    } finally {
      await nc.drain();
      await scheduler.close();
      await rest.close();
      await repo.cleanup();
    }
  }, 180_000);
});
