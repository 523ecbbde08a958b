import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { parseConfig } from "../../src/runtime/config.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { runAdo } from "../helpers/cli.js";
import { eventually, startTestServer, uniqueTopology, type TestServer } from "../helpers/nats.js";

/**
 * `ado workers list|scale|autoscale|drain` through the real binary and the API, against a stack
 * with one worker of pool `p` and a scaler whose pool `p` uses the `command` backend
 * (its `up` command writes what it was asked to a file): a policy set by the CLI is
 * applied by the running scaler without a restart.
 */

let ts: TestServer;
let scratch: string;
beforeAll(async () => {
  ts = await startTestServer();
  scratch = await mkdtemp(join(tmpdir(), "ado-workers-cli-"));
});
afterAll(async () => {
  await ts?.stop();
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

describe("ado workers - the CLI", () => {
  it("workers cli - list shows the worker and the pool; scale is applied live by the scaler; autoscale refuses min above max; drain stops a worker, and names one that does not answer", async () => {
    const topo = uniqueTopology();
    const ups = join(scratch, "ups");
    const config = parseConfig({
      prefix: topo.prefix,
      server: ts.url,
      workers: 1,
      worktreeDir: join(scratch, "wt"),
      worker: { pool: "p", labels: ["cli"] },
      scaler: { interval: "250ms", pools: [{ name: "p", backend: "command", min: 1, max: 1, scaleUp: { cooldown: 0 }, command: { up: `echo "$ADO_SCALE_COUNT $ADO_SCALE_TARGET" >> ${ups}`, down: "true" } }] },
    });
    const stack = await Stack.start({ config, logger: silentLogger });
    const env = { ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix };
    const workerId = stack.workers[0]!.id;
    try {
      // The scaler has decided at least once (its state names the pool the CLI looks for).
      await eventually(() => (stack.actors.find((a) => a.kind === "scaler")!.stats() as { decisions: number }).decisions > 0, 20_000, "a first decision");

      const list = await runAdo(["workers", "list", "--json"], { env, cwd: scratch });
      expect(list.code, list.stderr).toBe(0);
      const parsed = JSON.parse(list.stdout) as { workers: Array<Record<string, unknown>>; pools: Array<{ pool: string }> };
      expect(parsed.workers).toEqual([expect.objectContaining({ id: workerId, pool: "p", labels: ["cli"], slots: 1, running: 0, queued: 0 })]);
      // Ready, unless this loaded machine delayed its heartbeat past 3 s (the rows' rules are unit-tested).
      expect(["ready", "silent"]).toContain(parsed.workers[0]!.state);
      expect(parsed.pools.map((p) => p.pool)).toEqual(["p"]);

      // min = max = 3: the scaler (config max 1) now wants 3 and has 1, so it starts 2 through `up`.
      const scale = await runAdo(["workers", "scale", "3"], { env, cwd: scratch });
      expect(scale.code, scale.stderr).toBe(0);
      expect(scale.stderr).toContain("pool p: pinned at 3 worker(s)");
      await eventually(async () => (await readFile(ups, "utf8").catch(() => "")).trim() === "2 3", 30_000, "the up command asked for 2 more (3 in all)");

      const bad = await runAdo(["workers", "autoscale", "--min", "5", "--max", "2"], { env, cwd: scratch });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain("--min 5 is above --max 2");

      // Every one of these went through the API (its counters), none to KV directly.
      const api = stack.actors.find((a) => a.kind === "api")!;
      const answered = () => (api.stats() as { answered: Record<string, number> }).answered;
      expect(answered().ok).toBeGreaterThanOrEqual(3); // list; scale's list and workers.scale
      expect(answered().not_found).toBe(0);

      const none = await runAdo(["workers", "drain", "w-nobody"], { env, cwd: scratch });
      expect(none.code).toBe(1);
      expect(none.stderr).toMatch(/worker 'w-nobody' did not answer .*ado workers list/);
      expect(answered().not_found).toBe(1); // workers.drain answered it

      const drain = await runAdo(["workers", "drain", workerId], { env, cwd: scratch });
      expect(drain.code, drain.stderr).toBe(0);
      expect(drain.stderr).toContain(`worker ${workerId} is draining`);
      await eventually(() => stack.workers[0]!.state === "stopped", 20_000, "the drained worker stopped");
    } finally {
      await stack.close();
    }
  }, 180_000);
});
