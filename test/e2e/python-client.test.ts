/**
 * examples/ado_client.py, a client written from docs/schemas alone (Python's standard
 * library: NATS over a socket, MessagePack, a JSON Schema subset), against a stack: it
 * submits a run, follows its events to the end and asks the API. Skipped, saying so,
 * where python3 is absent.
 */
import { execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { uniqueTopology, useTestServer } from "../helpers/nats.js";

const SCRIPT = fileURLToPath(new URL("../../examples/ado_client.py", import.meta.url));
const python = (() => {
  try {
    execFileSync("python3", ["--version"], { stdio: "pipe" });
    return true;
  } catch {
    return false;
  }
})();
if (!python) process.stdout.write("python client - skipped: python3 is not on this machine\n");

function py(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("python3", [SCRIPT, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ado_client.py ${args.join(" ")} timed out\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, 150_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe.skipIf(!python)("python client - from the JSON Schemas alone", () => {
  const ts = useTestServer("ado-python-");
  const topo = uniqueTopology();
  let stack: Stack;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200 });
    stack = await Stack.start({ config, logger: silentLogger });
    env = { ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix };
  }, 120_000);
  afterAll(async () => {
    await stack?.close();
  });

  it("submits a run, follows its events to run.completed, asks the API for its tasks", async () => {
    const r = await py(["run", "--noop", "first,second"], env);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^api runs\.list: 0 run\(s\) known$/m);
    const runId = /^submitted (py-[a-z0-9]+) \(stream [A-Z0-9_]+_SUBMIT, seq \d+\)$/m.exec(r.stdout)?.[1];
    expect(runId, r.stdout).toBeDefined();
    const events = r.stdout.split("\n").filter((l) => l.startsWith("event ")).map((l) => l.slice(6));
    // run.accepted comes before the tasks' own events, except that a fast worker's task.started may be stored first.
    expect(events).toContain("run.accepted");
    expect(events).toContain("task.succeeded first");
    expect(events).toContain("task.succeeded second");
    expect(events.at(-1)).toBe("run.completed succeeded");
    expect(r.stdout).toMatch(/^api tasks\.status: first succeeded \(attempts 1\)$/m);
    expect(r.stdout).toMatch(/^api tasks\.status: second succeeded \(attempts 1\)$/m);
    // What ado itself says of the run.
    const nc = await ts.connect("python-check");
    expect((await new AdoClient(nc, topo).runRecord(runId!))?.status).toBe("succeeded");
  }, 180_000);

  it("submits through the API's runs.submit (JSON, replied after the stream stored it) and follows the run; a bad graph is bad_request saying why", async () => {
    const r = await py(["run", "--via-api", "--noop", "one,two"], env);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^submitted py-[a-z0-9]+ \(api runs\.submit, seq \d+\)$/m);
    expect(r.stdout).toMatch(/^event run\.completed succeeded$/m);
    expect(r.stdout).toMatch(/^api tasks\.status: two succeeded \(attempts 1\)$/m);
    const cycle = await py(["api", "runs.submit", JSON.stringify({ graph: { tasks: [{ id: "a", agent: "noop", needs: ["b"] }, { id: "b", agent: "noop", needs: ["a"] }] } })], env);
    expect(cycle.code, cycle.stderr).toBe(1);
    expect(JSON.parse(cycle.stdout)).toEqual({ ok: false, error: { code: "bad_request", message: expect.stringMatching(/cycle/) } });
  }, 180_000);

  it("calls an endpoint; a refusal is the endpoint's error reply (exit 1), a bad request never crashes the API", async () => {
    const missing = await py(["api", "runs.get", JSON.stringify({ runId: "nosuch" })], env);
    expect(missing.code, missing.stderr).toBe(1);
    expect(JSON.parse(missing.stdout)).toEqual({ ok: false, error: { code: "not_found", message: expect.stringContaining("no run 'nosuch'") } });
    // The script checks its requests against the schema before sending: a bad one is refused on this side.
    const bad = await py(["api", "runs.get", JSON.stringify({ runId: 5 })], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/\$\.runId: must be string/);
    const list = await py(["api", "runs.list", JSON.stringify({ active: false })], env);
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).result.runs.length).toBeGreaterThanOrEqual(1);
  }, 120_000);
});
