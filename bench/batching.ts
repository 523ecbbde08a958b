/**
 * Batching benchmark: what a stage's `batch:` saves, on the fake Claude Code
 * (test/fixtures/fake-agents), the only agent CLI there is here. The same graph of N
 * independent tasks of one stage runs twice on one embedded nats-server: without
 * batching, then with `batch: { max: B }`. Agent starts are counted from the file the
 * fake appends a line to per run; tokens and cost are what the fake reported (the run's
 * totals, as the scheduler summed them); wall time is the run's. Figures are printed,
 * never asserted. The fake's token counts are fixed per run (12,000 in + 300 out plus a
 * little per tool call), so the token saving here is the per-invocation overhead a real
 * CLI pays too (system prompt, tools), not a claim about any real model's output.
 *
 *   npx tsx bench/batching.ts                 # 10 tasks, batches of 5
 *   npx tsx bench/batching.ts --tasks 20 --max 5
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { Stack } from "../src/actors/stack.js";
import { AdoClient } from "../src/runtime/client.js";
import { parseConfig } from "../src/runtime/config.js";
import { connectNats } from "../src/runtime/connection.js";
import { EmbeddedServer } from "../src/runtime/embedded-server.js";
import { parseGraph } from "../src/runtime/graph.js";
import { silentLogger } from "../src/runtime/logger.js";

const FAKES = resolve(dirname(fileURLToPath(import.meta.url)), "../test/fixtures/fake-agents/bin");

function flag(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} takes a whole number of at least 1, got ${process.argv[i + 1]}`);
  return v;
}

interface Figures {
  mode: string;
  status: string;
  agentStarts: number;
  tokens: number;
  costUsd: number;
  wallMs: number;
}

async function makeRepo(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ado-bench-batch-"));
  const g = (...args: string[]) => execFileSync("git", args, { cwd: dir, stdio: "pipe" });
  g("init", "-q", "-b", "main");
  g("config", "user.email", "bench@example.com");
  g("config", "user.name", "bench");
  await writeFile(join(dir, "README.md"), "# batching bench\n");
  g("add", "-A");
  g("commit", "-q", "-m", "initial");
  return dir;
}

async function measure(server: EmbeddedServer, scratch: string, mode: string, tasks: number, max: number | undefined): Promise<Figures> {
  const repo = await makeRepo();
  const record = join(scratch, `${mode}.jsonl`);
  const home = await mkdtemp(join(scratch, "home-"));
  // One tool call that edits nothing: the tasks never conflict, whether batched or not.
  const config = parseConfig({
    prefix: `bb${mode}`,
    server: server.url,
    workers: 2,
    slots: 2,
    heartbeatMs: 1000,
    worktreeDir: join(scratch, `wt-${mode}`),
    agents: { claude: { bin: join(FAKES, "claude"), env: { HOME: home, FAKE_AGENT_TOOLS: "1", FAKE_AGENT_RECORD: record, FAKE_AGENT_RECORD_APPEND: "1" } } },
  });
  const stack = await Stack.start({ config, logger: silentLogger, server: server.url });
  const nc = await connectNats({ servers: server.url, name: `bench-batching-${mode}`, logger: silentLogger });
  try {
    const lines = Array.from({ length: tasks }, (_, i) => `  - { id: t${i + 1}, stage: small, prompt: "Fix bug ${i + 1}" }`).join("\n");
    const stage = max === undefined ? "{ agent: claude }" : `{ agent: claude, batch: { max: ${max} } }`;
    const graph = parseGraph(`stages:\n  small: ${stage}\ntasks:\n${lines}\n`);
    const t0 = performance.now();
    const outcome = await new AdoClient(nc, stack.topo).run({ graph, repo });
    const wallMs = Math.round(performance.now() - t0);
    const starts = (await readFile(record, "utf8").catch(() => "")).split("\n").filter(Boolean).length;
    return { mode, status: outcome.status, agentStarts: starts, tokens: outcome.tokens ?? 0, costUsd: outcome.costUsd ?? 0, wallMs };
  } finally {
    await nc.drain();
    await stack.close();
    await rm(repo, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const tasks = flag("tasks", 10);
  const max = flag("max", 5);
  const scratch = await mkdtemp(join(tmpdir(), "ado-bench-batching-"));
  const server = await EmbeddedServer.start({ logger: silentLogger });
  try {
    const alone = await measure(server, scratch, "alone", tasks, undefined);
    const batched = await measure(server, scratch, "batched", tasks, max);
    const rows = [alone, batched];
    const pct = (a: number, b: number) => (a > 0 ? `${Math.round((1 - b / a) * 100)}%` : "-");
    process.stdout.write(`batching bench: ${tasks} independent tasks of one stage, fake Claude Code, 2 workers x 2 slots\n`);
    process.stdout.write(`${"mode".padEnd(22)} ${"status".padEnd(10)} ${"agent starts".padStart(12)} ${"tokens".padStart(10)} ${"cost USD".padStart(10)} ${"wall s".padStart(8)}\n`);
    for (const r of rows) {
      const label = r.mode === "batched" ? `batched (max ${max})` : "one by one";
      process.stdout.write(`${label.padEnd(22)} ${r.status.padEnd(10)} ${String(r.agentStarts).padStart(12)} ${String(r.tokens).padStart(10)} ${r.costUsd.toFixed(4).padStart(10)} ${(r.wallMs / 1000).toFixed(1).padStart(8)}\n`);
    }
    process.stdout.write(`saved by batching: agent starts ${pct(alone.agentStarts, batched.agentStarts)}, tokens ${pct(alone.tokens, batched.tokens)}, cost ${pct(alone.costUsd, batched.costUsd)}\n`);
    if (rows.some((r) => r.status !== "succeeded")) process.exitCode = 1;
  } finally {
    await server.stop();
    await rm(scratch, { recursive: true, force: true, maxRetries: 5 });
  }
}

await main();
