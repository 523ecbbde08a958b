/**
 * The typed API (src/runtime/api.ts, src/actors/api/): every endpoint answers per its
 * schema on a real stack; malformed requests get bad_request saying what was wrong, and
 * the actor stays up; discovery through the services framework; replicas share the
 * requests; the CLI's status and control go through it; under per-role users an
 * observer may query but not cancel.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { Svcm, type ServiceIdentity, type ServiceInfo } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiActor } from "../../src/actors/api/api.js";
import { Stack } from "../../src/actors/stack.js";
import { API, API_ENDPOINTS, callApi, isApiError, replySchema, replyText, serviceEndpointName, type ApiErrorCode, type ApiResult } from "../../src/runtime/api.js";
import { AdoClient } from "../../src/runtime/client.js";
import { encodeValue, SCHEMA_HEADER } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { EmbeddedServer } from "../../src/runtime/embedded-server.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { RunId } from "../../src/runtime/ids.js";
import { SCHEMAS, type HitlRecord } from "../../src/runtime/messages.js";
import { writeNatsAuth, type Role } from "../../src/runtime/nats-auth.js";
import { openBuckets, type ApiEndpointName, type Topology } from "../../src/runtime/topology.js";
import { runAdo } from "../helpers/cli.js";
import { SAMPLES } from "../helpers/fuzz.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

const ts = useTestServer("ado-api-");
const enc = new TextEncoder();

/** A raw request: the reply's header, and its body checked against the endpoint's reply schema. */
async function ask<E extends ApiEndpointName>(nc: NatsConnection, topo: Topology, endpoint: E, body: string | Uint8Array) {
  // 30 s: the 400-task status reads every record, and took over 10 s once at load ~40.
  const m = await nc.request(topo.subjects.api(endpoint), typeof body === "string" ? enc.encode(body) : body, { timeout: 30_000 });
  const json: unknown = JSON.parse(replyText(endpoint, m.data, m.headers));
  const reply = replySchema(API[endpoint].result).parse(json) as { ok: true; result: ApiResult<E> } | { ok: false; error: { code: ApiErrorCode; message: string } };
  return { reply, schema: m.headers?.get(SCHEMA_HEADER), serviceError: m.headers?.get("Nats-Service-Error-Code"), compressed: m.headers?.get("Ado-Compression") === "deflate" };
}

async function refusedWith(nc: NatsConnection, topo: Topology, endpoint: ApiEndpointName, body: string | Uint8Array, code: ApiErrorCode): Promise<string> {
  const { reply, serviceError } = await ask(nc, topo, endpoint, body);
  if (reply.ok) throw new Error(`${endpoint} ${String(body)}: expected ${code}, got ok`);
  expect(reply.error.code, reply.error.message).toBe(code);
  expect(serviceError).toBeTruthy();
  return reply.error.message;
}

describe("api - endpoints on a stack", () => {
  let stack: Stack;
  let nc: NatsConnection;
  let topo: Topology;
  let repo: Awaited<ReturnType<typeof makeRepo>>;
  let replica: ApiActor;

  beforeAll(async () => {
    repo = await makeRepo();
    topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 1, worktreeDir: join(ts.scratch, "wt"), heartbeatMs: 200 });
    stack = await Stack.start({ config, logger: silentLogger });
    nc = await ts.connect("api-test");
    // A second replica, knowing one configured pool: replicas share the requests (queue group).
    const rnc = await ts.connect("api-replica");
    replica = await new ApiActor("api-replica", { nc: rnc, topo, kv: await openBuckets(rnc, topo), logger: silentLogger }, { pools: [{ name: "gpu", min: 0, max: 4 }] }).start();
  }, 120_000);
  afterAll(async () => {
    await replica?.close();
    await stack?.close();
    await repo?.cleanup();
  });

  it("discovery: $SRV.PING and $SRV.INFO find both replicas and every endpoint with its subject and schemas", async () => {
    const svc = new Svcm(nc).client({ maxWait: 2_000, strategy: "timer" });
    const pings: ServiceIdentity[] = [];
    for await (const p of await svc.ping(topo.service("api"))) pings.push(p);
    expect(pings.length).toBe(2);
    const infos: ServiceInfo[] = [];
    for await (const i of await svc.info(topo.service("api"))) infos.push(i);
    expect(infos.length).toBe(2);
    for (const info of infos) {
      for (const e of API_ENDPOINTS) {
        const ep = info.endpoints.find((x) => x.name === serviceEndpointName(e));
        expect(ep, e).toBeDefined();
        expect(ep!.subject).toBe(topo.subjects.api(e));
        expect(ep!.queue_group).toBe("q");
        expect(ep!.metadata?.request).toBe(`api.${e}.request/1`);
      }
    }
  });

  it("every endpoint answers per its schema; unknown things are not_found, ended ones conflict", async () => {
    // Cancelled below: it must still run then, however long the steps before take (30 s is not past the test's bound).
    const { runId } = await new AdoClient(nc, topo).submit({ graph: parseGraph('tasks:\n  - { id: long, run: "sleep 300" }\n  - { id: after, needs: [long], run: "true" }\n'), repo: repo.dir });
    const running = await eventually(async () => {
      const { reply } = await ask(nc, topo, "tasks.status", JSON.stringify({ runId }));
      return reply.ok && reply.result.tasks.find((t) => t.id === "long")?.status === "running" ? reply.result : undefined;
    }, 60_000, "task long running");
    expect(running.run.runId).toBe(runId);
    expect(running.tasks.map((t) => t.id)).toEqual(["long", "after"]);

    const listed = await ask(nc, topo, "runs.list", "");
    expect(listed.schema).toBe("api.runs.list.reply/1");
    expect(listed.reply.ok && listed.reply.result.runs.map((r) => r.runId)).toContain(runId);
    const byTask = await ask(nc, topo, "runs.list", JSON.stringify({ active: true, task: "long" }));
    expect(byTask.reply.ok && byTask.reply.result.runs.map((r) => r.runId)).toEqual([runId]);
    expect((await ask(nc, topo, "runs.list", JSON.stringify({ task: "nope" }))).reply).toEqual({ ok: true, result: { runs: [] } });
    const got = await ask(nc, topo, "runs.get", JSON.stringify({ runId }));
    expect(got.reply.ok && got.reply.result.run.graph.tasks.length).toBe(2);
    const one = await ask(nc, topo, "tasks.status", JSON.stringify({ runId, taskId: "after" }));
    expect(one.reply.ok && one.reply.result.tasks).toEqual([expect.objectContaining({ id: "after", needs: ["long"] })]);
    expect(await refusedWith(nc, topo, "runs.get", JSON.stringify({ runId: "nosuchrun" }), "not_found")).toMatch(/no run 'nosuchrun'/);
    expect(await refusedWith(nc, topo, "tasks.status", JSON.stringify({ runId, taskId: "ghost" }), "not_found")).toMatch(/has no task 'ghost'/);
    await refusedWith(nc, topo, "runs.pause", JSON.stringify({ runId, taskId: "ghost" }), "not_found");

    // Budget: a raise is sent to the scheduler, which records it on the run.
    const raised = await ask(nc, topo, "budget.raise", JSON.stringify({ runId, usd: { add: 5 }, by: "tester" }));
    expect(raised.reply.ok && raised.reply.result.request).toMatchObject({ type: "budget", runId, addCostUsd: 5, by: "tester" });
    await eventually(async () => ((await new AdoClient(nc, topo).runRecord(runId))?.budget?.changes ?? 0) > 0, 30_000, "raise recorded");
    expect(await refusedWith(nc, topo, "budget.raise", JSON.stringify({ runId }), "bad_request")).toMatch(/say how much/);

    // Control: pause, resume, cancel; the run ends cancelled; then it is a conflict.
    for (const action of ["pause", "resume"] as const) {
      const r = await ask(nc, topo, `runs.${action}`, JSON.stringify({ runId, reason: "test" }));
      expect(r.reply.ok && r.reply.result.request).toMatchObject({ type: "control", runId, action, reason: "test" });
    }
    const cancelled = await ask(nc, topo, "runs.cancel", JSON.stringify({ runId }));
    expect(cancelled.reply.ok && cancelled.reply.result.request.action).toBe("cancel");
    await eventually(async () => (await new AdoClient(nc, topo).runRecord(runId))?.status === "cancelled", 60_000, "run cancelled");
    expect(await refusedWith(nc, topo, "runs.cancel", JSON.stringify({ runId }), "conflict")).toMatch(/has already ended \(cancelled\)/);
    await refusedWith(nc, topo, "budget.raise", JSON.stringify({ runId, usd: { add: 1 } }), "conflict");
    expect((await ask(nc, topo, "runs.list", JSON.stringify({ active: true }))).reply).toEqual({ ok: true, result: { runs: [] } });

    // HITL: a record whose run is over does not wait; it is listed with --all, shown, and its resolution refused.
    const record: HitlRecord = { ...(SAMPLES.HitlRecord![0] as HitlRecord), id: `${runId}.long`, runId, taskId: "long" };
    await (await new Kvm(nc).open(topo.buckets.hitl)).put(record.id, encodeValue(SCHEMAS.HitlRecord, record));
    expect((await ask(nc, topo, "hitl.list", "{}")).reply).toEqual({ ok: true, result: { records: [] } });
    const all = await ask(nc, topo, "hitl.list", JSON.stringify({ all: true }));
    expect(all.reply.ok && all.reply.result.records).toEqual([expect.objectContaining({ id: record.id, waiting: false, state: "open" })]);
    const shown = await ask(nc, topo, "hitl.show", JSON.stringify({ id: record.id }));
    expect(shown.reply.ok && shown.reply.result).toMatchObject({ record: { id: record.id, round: 1 }, waiting: false });
    expect(await refusedWith(nc, topo, "hitl.resolve", JSON.stringify({ id: record.id, choice: "ours" }), "conflict")).toMatch(/does not wait for a person any more/);
    await refusedWith(nc, topo, "hitl.show", JSON.stringify({ id: "nosuch.thing" }), "not_found");
    await refusedWith(nc, topo, "hitl.resolve", JSON.stringify({ id: "nosuch.thing", choice: "skip" }), "not_found");

    // Workers and pools.
    const workers = await ask(nc, topo, "workers.list", "{}");
    expect(workers.reply.ok && workers.reply.result.workers.map((w) => w.workerId)).toEqual(stack.workers.map((w) => w.id));
    // Only the replica knows pool 'gpu' (its config): ask until it is the one that answers.
    expect(await refusedWith(nc, topo, "workers.scale", JSON.stringify({ pool: "nopool", source: "scale", policy: { min: 1, max: 1 } }), "not_found")).toMatch(/no pool 'nopool'/);
    const scaled = await eventually(async () => {
      const { reply } = await ask(nc, topo, "workers.scale", JSON.stringify({ pool: "gpu", source: "autoscale", policy: { max: 3 }, by: "tester" }));
      return reply.ok ? reply.result : undefined;
    }, 30_000, "the replica with pool gpu answered");
    expect(scaled.record).toMatchObject({ pool: "gpu", source: "autoscale", policy: { max: 3 }, by: "tester" });
    const pol = await (await new Kvm(nc).open(topo.buckets.scaler)).get("policy.gpu");
    expect(pol?.operation).toBe("PUT");
  }, 180_000);

  it("runs.submit validates the graph as ado run does (bad_request with the reason), replies after the PubAck with the run id, deduplicates by run id; the run goes on", async () => {
    const submit = (body: unknown) => ask(nc, topo, "runs.submit", JSON.stringify(body));
    const refusals: Array<[unknown, RegExp]> = [
      [{ graph: { tasks: [{ id: "a", agent: "noop", needs: ["b"] }, { id: "b", agent: "noop", needs: ["a"] }] } }, /cycle/],
      [{ graph: { tasks: [{ id: "a", agent: "noop", needs: ["nope"] }] } }, /needs 'nope', which is not in the graph/],
      [{ graph: { tasks: [{ id: "a", agent: "claudee", prompt: "x" }] }, repo: repo.dir, baseCommit: "0".repeat(40) }, /unknown agent 'claudee'.*did you mean 'claude'/],
      [{ graph: { tasks: [{ id: "a", agent: "noop", variants: 3 }] } }, /no rule to pick one/],
      [{ graph: { tasks: [{ id: "a", agent: "noop", variants: 1, select: { validate: "true" } }] } }, /variants must be a whole number from 2/],
      [{ graph: { tasks: [{ id: "a", agent: "noop" }, { id: "a", agent: "noop" }] } }, /appears more than once/],
      [{ graph: { tasks: [{ id: "a", run: "true" }] } }, /give 'repo'/],
      [{ graph: { tasks: [{ id: "a", agent: "noop" }] }, repo: repo.dir }, /'repo' needs 'baseCommit'/],
      [{ graph: { tasks: [] } }, /at least one task|tasks/],
    ];
    const client = new AdoClient(nc, topo);
    const runsBefore = (await client.listRuns()).length;
    for (const [body, why] of refusals) {
      const message = await refusedWith(nc, topo, "runs.submit", JSON.stringify(body), "bad_request");
      expect(message, JSON.stringify(body)).toMatch(why);
    }
    // Nothing of a refused submission reached the scheduler.
    expect((await client.listRuns()).length).toBe(runsBefore);

    const baseCommit = execFileSync("git", ["rev-parse", "HEAD"], { cwd: repo.dir }).toString().trim();
    const body = { graph: { name: "via-api", tasks: [{ id: "a", run: "echo A > a.txt" }, { id: "b", needs: ["a"], agent: "noop" }] }, repo: repo.dir, baseCommit, by: "tester" };
    const first = await submit(body);
    expect(first.schema).toBe("api.runs.submit.reply/1");
    if (!first.reply.ok) throw new Error(first.reply.error.message);
    const { runId } = first.reply.result;
    expect(first.reply.result).toMatchObject({ duplicate: false });
    expect(first.reply.result.seq).toBeGreaterThan(0);
    // Durable on the reply: the same run id again is the stream's duplicate, not a second run.
    const again = await submit({ ...body, runId });
    expect(again.reply.ok && again.reply.result).toMatchObject({ runId, duplicate: true });
    const outcome = await client.watch(runId as RunId);
    expect(outcome.error).toBeUndefined();
    expect(outcome.status).toBe("succeeded");
    const record = await client.runRecord(runId);
    expect(record).toMatchObject({ name: "via-api", baseCommit });
  }, 180_000);

  it("hitl.manual and workers.drain refuse what does not apply, with their codes", async () => {
    const runId = "r-manual-gone";
    const record: HitlRecord = { ...(SAMPLES.HitlRecord![0] as HitlRecord), id: `${runId}.t`, runId, taskId: "t", round: 2, state: "open" };
    const kv = await new Kvm(nc).open(topo.buckets.hitl);
    const revision = await kv.put(record.id, encodeValue(SCHEMAS.HitlRecord, record));
    const manual = { worktree: "/tmp/wt", branch: "ado/x/_manual", host: "h" };
    await refusedWith(nc, topo, "hitl.manual", JSON.stringify({ id: "no.such", round: 1, action: "reopen" }), "not_found");
    expect(await refusedWith(nc, topo, "hitl.manual", JSON.stringify({ id: record.id, round: 2, action: "prepare" }), "bad_request")).toMatch(/'prepare' needs 'manual'/);
    expect(await refusedWith(nc, topo, "hitl.manual", JSON.stringify({ id: record.id, round: 2, action: "prepare", manual, revision: revision + 7 }), "conflict")).toMatch(/changed since it was read/);
    expect(await refusedWith(nc, topo, "hitl.manual", JSON.stringify({ id: record.id, round: 1, action: "prepare", manual }), "conflict")).toMatch(/at round 2 now, not 1/);
    // Its run is unknown: the task does not wait, so nothing is prepared.
    expect(await refusedWith(nc, topo, "hitl.manual", JSON.stringify({ id: record.id, round: 2, action: "prepare", manual, revision }), "conflict")).toMatch(/does not wait for a person any more/);
    // An open record has no --manual resolution to reopen.
    expect(await refusedWith(nc, topo, "hitl.manual", JSON.stringify({ id: record.id, round: 2, action: "reopen" }), "conflict")).toMatch(/not a --manual resolution/);
    expect((await kv.get(record.id))?.revision).toBe(revision);

    expect(await refusedWith(nc, topo, "workers.drain", JSON.stringify({ workerId: "w-nobody" }), "not_found")).toMatch(/worker 'w-nobody' did not answer/);
    await refusedWith(nc, topo, "workers.drain", JSON.stringify({ workerId: "a.b" }), "bad_request");
  }, 60_000);

  it("a large reply (a run of 400 tasks with long prompts) is deflated with Ado-Compression and reads back whole", async () => {
    const tasks = Array.from({ length: 400 }, (_, i) => ({ id: `t${i}`, agent: "noop", prompt: `task ${i}: ${"refactor the module and keep its tests green. ".repeat(40)}` }));
    const { runId } = await new AdoClient(nc, topo).submit({ graph: { name: "big", tasks } });
    const got = await eventually(async () => {
      const r = await ask(nc, topo, "runs.get", JSON.stringify({ runId }));
      return r.reply.ok ? r : undefined;
    }, 60_000, "big run accepted");
    expect(got.compressed).toBe(true);
    expect(got.reply.ok && got.reply.result.run.graph.tasks.length).toBe(400);
    const status = await ask(nc, topo, "tasks.status", JSON.stringify({ runId }));
    expect(status.compressed).toBe(true);
    expect(status.reply.ok && status.reply.result.tasks.length).toBe(400);
    expect((await new AdoClient(nc, topo).status(runId))?.tasks.length).toBe(400);
  }, 120_000);

  it("malformed requests get bad_request with what was wrong, at every endpoint, and the actors stay up", async () => {
    const bad: Array<[string | Uint8Array, RegExp]> = [
      ["{", /not JSON/],
      ["[1,2]", /invalid request/],
      ['"text"', /invalid request/],
      ["null", /invalid request/],
      [JSON.stringify({ surprise: 1 }), /surprise|unrecognized|Unrecognized/],
      [new Uint8Array([0xff, 0xfe, 0x00, 0x81]), /not JSON|invalid request/],
      ["x".repeat(100_000), /not JSON/],
    ];
    for (const endpoint of API_ENDPOINTS) {
      for (const [body, why] of bad) {
        const message = await refusedWith(nc, topo, endpoint, body, "bad_request");
        expect(message, `${endpoint}`).toMatch(why);
        expect(message).toContain(endpoint);
      }
    }
    expect(await refusedWith(nc, topo, "runs.get", JSON.stringify({ runId: "../../etc" }), "bad_request")).toMatch(/runId/);
    expect(await refusedWith(nc, topo, "workers.scale", JSON.stringify({ pool: "gpu", source: "scale", policy: { min: -1 } }), "bad_request")).toMatch(/min/);
    expect(await refusedWith(nc, topo, "hitl.resolve", JSON.stringify({ id: "a.b", choice: "maybe" }), "bad_request")).toMatch(/choice/);
    // Still up: both replicas running, and a query answers.
    expect(stack.actors.find((a) => a.kind === "api")?.state).toBe("running");
    expect(replica.state).toBe("running");
    expect((await ask(nc, topo, "runs.list", "{}")).reply.ok).toBe(true);
  }, 120_000);

  it("the CLI's status and cancel go through the API (its counters move); callApi throws the endpoint's code", async () => {
    const answered = async () => {
      let n = 0;
      for (const a of [stack.actors.find((x) => x.kind === "api")!, replica]) n += (a.stats() as { answered: { ok: number } }).answered.ok;
      return n;
    };
    const client = new AdoClient(nc, topo);
    // Cancelled below: it must still run then, though two CLI starts can take 30 s on a loaded machine.
    const { runId } = await client.submit({ graph: parseGraph('tasks:\n  - { id: slow, run: "sleep 300" }\n'), repo: repo.dir });
    await eventually(async () => (await client.status(runId))?.tasks[0]?.status === "running", 60_000, "slow running");
    const before = await answered();
    const env = { ...process.env, ADO_SERVER: ts.url, ADO_PREFIX: topo.prefix };
    const status = await runAdo(["status", runId, "--json"], { env, cwd: repo.dir });
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ runId, tasks: [expect.objectContaining({ id: "slow", status: "running" })] });
    const cancel = await runAdo(["cancel", `${runId}/slow`], { env, cwd: repo.dir });
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(cancel.stdout).toContain(`cancelling task slow of run ${runId}`);
    expect(await answered()).toBeGreaterThan(before + 2);
    await eventually(async () => (await client.runRecord(runId))?.status !== "running", 60_000, "run over");
    const err = await callApi(nc, topo, "runs.cancel", { runId }).catch((e: unknown) => e);
    expect(isApiError(err, "conflict")).toBe(true);
  }, 180_000);
});

describe("api - per-role users", () => {
  let dir: string;
  let server: EmbeddedServer;
  let seeds: Record<Role, string>;
  const topo = uniqueTopology();
  const conns: NatsConnection[] = [];
  const as = async (role: Role) => {
    const nc = await connectNats({ servers: server.url, name: `api-${role}`, logger: silentLogger, auth: { nkeyFile: seeds[role] }, timeoutMs: 5_000 });
    conns.push(nc);
    return nc;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ado-api-auth-"));
    const written = await writeNatsAuth(topo, { dir, file: "auth.conf", credsDir: join(dir, "creds") });
    seeds = written.seeds;
    server = await EmbeddedServer.start({ extraConfig: execFileSync("cat", [written.config]).toString() });
  }, 60_000);
  afterAll(async () => {
    await Promise.all(conns.map((nc) => drainQuietly(nc)));
    await server?.stop();
    await rm(dir, { recursive: true, force: true, maxRetries: 10 });
  });

  it("the API actor works under its own user; an observer may query but not cancel; a client may cancel", async () => {
    const repo = await makeRepo();
    const config = parseConfig({ prefix: topo.prefix, server: server.url, workers: 1, worktreeDir: join(dir, "wt"), heartbeatMs: 200, nats: { roleDir: join(dir, "creds") } });
    const stack = await Stack.start({ config, logger: silentLogger });
    try {
      const client = await as("client");
      // Cancelled below: it must still run then, CLI calls before included (30 s is not past the test's bound).
      const { runId } = await new AdoClient(client, topo).submit({ graph: parseGraph('tasks:\n  - { id: slow, run: "sleep 300" }\n'), repo: repo.dir });
      const observer = await as("observer");
      await eventually(async () => (await callApi(observer, topo, "tasks.status", { runId })).tasks[0]?.status === "running", 60_000, "observer sees it run");
      expect((await callApi(observer, topo, "runs.list", {})).runs.map((r) => r.runId)).toEqual([runId]);
      const refused = await callApi(observer, topo, "runs.cancel", { runId }, { timeoutMs: 5_000 }).catch((e: unknown) => e);
      expect(isApiError(refused, "forbidden"), String(refused)).toBe(true);
      expect((await callApi(observer, topo, "runs.get", { runId })).run.status).toBe("running");
      // Every other mutation too, each refused by the server with the forbidden code.
      const mutations: Array<Promise<unknown>> = [
        callApi(observer, topo, "workers.scale", { pool: "p", source: "scale", policy: { min: 1, max: 1 } }, { timeoutMs: 5_000 }),
        callApi(observer, topo, "workers.drain", { workerId: stack.workers[0]!.id }, { timeoutMs: 5_000 }),
        callApi(observer, topo, "hitl.manual", { id: `${runId}.slow`, round: 1, action: "reopen" }, { timeoutMs: 5_000 }),
        callApi(observer, topo, "runs.submit", { graph: { tasks: [{ id: "a", agent: "noop" }] } }, { timeoutMs: 5_000 }),
      ];
      for (const refusal of await Promise.all(mutations.map((p) => p.catch((e: unknown) => e)))) expect(isApiError(refusal, "forbidden"), String(refusal)).toBe(true);
      expect(stack.workers[0]!.state).toBe("running");
      const fleet = await callApi(observer, topo, "workers.list", {});
      expect(fleet.workers.map((w) => w.workerId)).toEqual([stack.workers[0]!.id]);
      // The api actor's user may read the work stream's per-subject counts (what waits per worker).
      expect(fleet.queued).toBeDefined();
      // The same through the CLI as the observer: `ado workers list` works, `ado workers drain` is refused with forbidden's words.
      const asObserver = { ADO_SERVER: server.url, ADO_PREFIX: topo.prefix, ADO_NATS_NKEY: seeds.observer };
      const listed = await runAdo(["workers", "list", "--json"], { env: asObserver, cwd: dir });
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stderr).not.toMatch(/work stream was not read/);
      expect((JSON.parse(listed.stdout) as { workers: Array<{ id: string }> }).workers.map((w) => w.id)).toEqual([stack.workers[0]!.id]);
      const drain = await runAdo(["workers", "drain", stack.workers[0]!.id], { env: asObserver, cwd: dir });
      expect(drain.code, drain.stderr).toBe(2);
      expect(drain.stderr).toMatch(/workers\.drain: this NATS user may not call it/);
      expect(stack.workers[0]!.state).toBe("running");
      // The observer's user cannot reach the buckets' write side either: the API was its only door, and it is closed.
      const cancelled = await callApi(client, topo, "runs.cancel", { runId, by: "client" });
      expect(cancelled.request.action).toBe("cancel");
      await eventually(async () => (await callApi(observer, topo, "runs.get", { runId })).run.status === "cancelled", 60_000, "cancelled");
      // A client submits a run through the API (the api actor publishes it as its own user), and it runs.
      const viaApi = await callApi(client, topo, "runs.submit", { graph: { name: "client-submit", tasks: [{ id: "n", agent: "noop" }] }, by: "client" });
      expect(viaApi.duplicate).toBe(false);
      await eventually(async () => (await callApi(observer, topo, "runs.get", { runId: viaApi.runId }).catch(() => undefined))?.run.status === "succeeded", 120_000, "the client's API submission ran");
    } finally {
      await stack.close();
      await repo.cleanup();
    }
  }, 180_000);
});
