/**
 * Payloads larger than the server's max payload (1 MB, nats-server's default, here):
 * a 5 MB prompt goes through the object store and reaches the agent whole; a fan-in's
 * inputs too large for a message do too; large payloads are compressed (a header, or a
 * KV value's first bytes, says so); a graph that cannot fit even so is refused with
 * what to do.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { COMPRESSION_HEADER, decode, encode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { EmbeddedServer } from "../../src/runtime/embedded-server.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type TaskWork } from "../../src/runtime/messages.js";
import { fitWork, loadWork, PayloadStore, PROMPT_INLINE_MAX_BYTES } from "../../src/runtime/payloads.js";
import { provision } from "../../src/runtime/topology.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { uniqueTopology } from "../helpers/nats.js";

let server: EmbeddedServer;
let nc: NatsConnection;
let worktreeDir: string;
beforeAll(async () => {
  // A server as users run it: nats-server's default max payload, not the embedded 8 MB.
  server = await EmbeddedServer.start({ extraConfig: "max_payload: 1MB" });
  nc = await connectNats({ servers: server.url, name: "test-large", logger: silentLogger });
  worktreeDir = await mkdtemp(join(tmpdir(), "ado-wt-"));
});
afterAll(async () => {
  await drainQuietly(nc);
  await server?.stop();
  await rm(worktreeDir, { recursive: true, force: true, maxRetries: 10 });
});

/** Text like a long prompt that zlib cannot shrink below 1 MB: random words. */
function incompressibleText(bytes: number): string {
  return randomBytes(Math.ceil((bytes * 3) / 4)).toString("base64").slice(0, bytes);
}

describe("large payloads - object store and compression", () => {
  it("the server takes at most 1 MB a message here", () => {
    expect(nc.info?.max_payload).toBe(1024 * 1024);
  });

  it("a 5 MB prompt reaches the agent whole, through the object store; the run's records and messages stay small", async () => {
    const topo = uniqueTopology();
    const repo = await makeRepo();
    const config = parseConfig({ prefix: topo.prefix, server: server.url, workers: 1, worktreeDir, heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger });
    try {
      const prompt = `# Task\n${incompressibleText(5 * 1024 * 1024)}\nThe end.\n`;
      const digest = createHash("sha256").update(prompt).digest("hex");
      const graph = parseGraph(`
tasks:
  - id: big
    run: 'sha256sum "$ADO_PROMPT_FILE" | cut -c1-64 > sum.txt; wc -c < "$ADO_PROMPT_FILE" | tr -d " " > size.txt; echo "\${ADO_PROMPT:-no prompt in env}" | head -c 40 > env.txt'
`);
      graph.tasks[0]!.prompt = prompt;
      const client = new AdoClient(nc, topo);
      const outcome = await client.run({ graph, repo: repo.dir });
      expect(outcome.status).toBe("succeeded");
      const branch = outcome.integrationBranch!;
      expect(gitOut(repo.dir, "show", `${branch}:size.txt`)).toBe(String(Buffer.byteLength(prompt)));
      expect(gitOut(repo.dir, "show", `${branch}:sum.txt`)).toBe(digest);
      // Too large for the environment (E2BIG): the file only.
      expect(gitOut(repo.dir, "show", `${branch}:env.txt`)).toBe("no prompt in env");
      // The run record keeps the prompt's beginning and where the rest is.
      const run = await client.runRecord(outcome.runId);
      const task = run!.graph.tasks[0]!;
      expect(task.promptRef).toBe(`sha256-${digest}`);
      expect(Buffer.byteLength(task.prompt)).toBeLessThanOrEqual(PROMPT_INLINE_MAX_BYTES);
      expect(prompt.startsWith(task.prompt)).toBe(true);
    } finally {
      await stack.close();
      await repo.cleanup();
    }
  }, 120_000);

  it("a prompt whose object is gone fails its task, saying so and what to do, not run without it", async () => {
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: server.url, workers: 1, worktreeDir, heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger });
    try {
      const graph = parseGraph(`tasks:\n  - { id: lost, agent: noop }\n`);
      graph.tasks[0]!.promptRef = `sha256-${"0".repeat(64)}`;
      const outcome = await new AdoClient(nc, topo).run({ graph });
      expect(outcome.status).toBe("failed");
      expect(outcome.tasks[0]!.error).toMatch(/payload sha256-0+ is not in the object store .*-payloads .*submit the run again/);
    } finally {
      await stack.close();
    }
  }, 60_000);

  it("a fan-in's inputs too large for a message are moved to the object store and read back whole", async () => {
    const topo = uniqueTopology();
    await provision(nc, topo);
    const store = new PayloadStore(nc, topo);
    const at = new Date().toISOString();
    const inputs = Array.from({ length: 3_000 }, (_, i) => ({ taskId: `t${i}`, status: "succeeded", summary: incompressibleText(500), costUsd: 0 }));
    const work = TaskWorkOf({ runId: "r1", taskId: "fan", attempt: 1, priority: "normal", task: { id: "fan", agent: "noop" }, branch: "ado/r1/fan", inputs, readyAt: at, submittedAt: at });
    expect(encode(SCHEMAS.TaskWork, work).data.length).toBeGreaterThan(1024 * 1024);
    const fitted = await fitWork(work, store);
    expect(fitted.inputs).toEqual([]);
    expect(fitted.inputsRef).toMatch(/^sha256-/);
    const m = encode(SCHEMAS.TaskWork, fitted);
    expect(m.data.length).toBeLessThan(store.maxInline);
    // Through the server as the balancer and worker would get it.
    const back = await loadWork(decode(SCHEMAS.TaskWork, m.data, m.headers), store);
    expect(back.inputs).toEqual(work.inputs);
    expect(back.inputsRef).toBeUndefined();
    // Small work is left as it is.
    const small = { ...work, inputs: work.inputs.slice(0, 3) };
    expect(await fitWork(small, store)).toBe(small);
  }, 60_000);

  it("a graph that does not fit a message even with its prompts moved out is refused with what to do", async () => {
    const topo = uniqueTopology();
    await provision(nc, topo);
    const client = new AdoClient(nc, topo);
    // 40 prompts of 60 KB: each under the inline limit, together 2.4 MB that does not compress.
    const tasks = Array.from({ length: 40 }, (_, i) => ({ id: `t${i}`, agent: "noop", prompt: incompressibleText(60 * 1024) }));
    await expect(client.submit({ graph: { tasks } })).rejects.toThrow(/MB compressed.*split it into several runs, or raise max_payload/);
  });

  it("payloads over 8 KiB are compressed and say so; readers inflate them", () => {
    const at = new Date().toISOString();
    const event = { type: "task.output" as const, runId: "r1", taskId: "a", attempt: 1, at, stream: "stdout" as const, data: "line of output\n".repeat(2_000) };
    const m = encode(SCHEMAS.AdoEvent, event);
    expect(m.headers.get(COMPRESSION_HEADER)).toBe("deflate");
    expect(m.data.length).toBeLessThan(2_000);
    expect(decode(SCHEMAS.AdoEvent, m.data, m.headers)).toEqual(event);
    const small = encode(SCHEMAS.AdoEvent, { ...event, data: "short\n" });
    expect(small.headers.get(COMPRESSION_HEADER)).toBe("");
  });
});

function TaskWorkOf(input: Omit<import("zod").input<typeof SCHEMAS.TaskWork.schema>, "type">): TaskWork {
  return SCHEMAS.TaskWork.schema.parse({ type: "task.work", ...input });
}
