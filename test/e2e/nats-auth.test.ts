/**
 * Users, permissions and TLS on a real nats-server 2.9 with the configuration `ado nats
 * config` writes: a whole run with every actor under its own user; a permission matrix
 * (every role tries what it must not do and is refused, and what it needs works),
 * printed in the test output; TLS with certificates made by openssl, a client without a
 * certificate refused under mutual TLS.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { encode, encodeValue } from "../../src/runtime/codec.js";
import { loadConfig, natsAuthFromEnv, parseConfig } from "../../src/runtime/config.js";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { EmbeddedServer } from "../../src/runtime/embedded-server.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS } from "../../src/runtime/messages.js";
import { authForRole, ROLES, writeNatsAuth, type Role } from "../../src/runtime/nats-auth.js";
import { readSnapshotHead } from "../../src/runtime/run-snapshot.js";
import { provision, topology, type ApiEndpointName } from "../../src/runtime/topology.js";
import { eventually, uniqueTopology } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

const at = () => new Date().toISOString();
let dir: string;
let server: EmbeddedServer;
const topo = uniqueTopology();
const other = uniqueTopology();
let seeds: Record<Role, string>;
const conns: NatsConnection[] = [];

async function as(role: Role): Promise<NatsConnection> {
  const nc = await connectNats({ servers: server.url, name: `test-${role}`, logger: silentLogger, auth: { nkeyFile: seeds[role] }, timeoutMs: 5_000 });
  conns.push(nc);
  return nc;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "ado-auth-"));
  // Both prefixes' users, as two installations sharing one server would have.
  const mine = await writeNatsAuth(topo, { dir, file: "ado-auth.conf", credsDir: join(dir, "creds") });
  const theirs = await writeNatsAuth(other, { dir, file: "other-auth.conf", credsDir: join(dir, "other-creds") });
  seeds = mine.seeds;
  const users = (file: string) => /users: \[\n([\s\S]*)\n {2}\]/.exec(execFileSync("cat", [file]).toString())![1]!;
  server = await EmbeddedServer.start({ extraConfig: `authorization {\n  users: [\n${users(mine.config)}\n${users(theirs.config)}\n  ]\n}` });
  await provision(await as("admin"), topo);
  const otherAdmin = await connectNats({ servers: server.url, name: "other-admin", logger: silentLogger, auth: { nkeyFile: theirs.seeds.admin } });
  conns.push(otherAdmin);
  await provision(otherAdmin, other);
});
afterAll(async () => {
  await Promise.all(conns.map((nc) => drainQuietly(nc)));
  await server?.stop();
  await rm(dir, { recursive: true, force: true, maxRetries: 10 });
});

describe("nats auth - users per role", () => {
  it("seeds are readable only by the user; a connection without credentials is refused", async () => {
    for (const r of ROLES) expect(((await stat(seeds[r])).mode & 0o777).toString(8)).toBe("600");
    expect(((await stat(join(dir, "creds"))).mode & 0o777).toString(8)).toBe("700");
    await expect(connectNats({ servers: server.url, name: "anon", logger: silentLogger, auth: {}, timeoutMs: 3_000 })).rejects.toThrow(/Authorization Violation|authorization/i);
  });

  it("a whole run with every actor under its own user", async () => {
    const repo = await makeRepo();
    const worktreeDir = await mkdtemp(join(tmpdir(), "ado-wt-"));
    const config = parseConfig({ prefix: topo.prefix, server: server.url, workers: 2, worktreeDir, heartbeatMs: 200, nats: { roleDir: join(dir, "creds") } });
    const stack = await Stack.start({ config, logger: silentLogger });
    try {
      const client = new AdoClient(await as("client"), topo);
      const graph = parseGraph(`
tasks:
  - { id: a, run: "echo A > a.txt" }
  - { id: b, run: "echo B > b.txt" }
  - { id: c, needs: [a, b], run: "cat a.txt b.txt > c.txt; echo done" }
`);
      graph.tasks[0]!.prompt = "x".repeat(100_000); // through the object store too
      const outcome = await client.run({ graph, repo: repo.dir });
      expect(outcome.error).toBeUndefined();
      expect(outcome.status).toBe("succeeded");
      expect(stack.health().live.ok).toBe(true);
    } finally {
      await stack.close();
      await repo.cleanup();
      await rm(worktreeDir, { recursive: true, force: true, maxRetries: 10 });
    }
  }, 120_000);

  it("permission matrix: every role is refused what it must not do, and what it needs works", async () => {
    type Op = { what: string; run: (nc: NatsConnection) => Promise<unknown>; allowed: readonly Role[] };
    const js = (nc: NatsConnection) => jetstream(nc);
    const submit = encode(SCHEMAS.SubmitRun, { type: "run.submit", runId: "r-matrix", graph: { tasks: [{ id: "a", agent: "noop" }] }, submittedAt: at() });
    const result = encode(SCHEMAS.SchedulerInput, { type: "control", runId: "r-matrix", action: "cancel", at: at() });
    const kvPut = (bucket: keyof typeof topo.buckets, key: string) => async (nc: NatsConnection) => (await new Kvm(nc).open(topo.buckets[bucket])).put(key, new Uint8Array([0x80]));
    const kvGet = (bucket: keyof typeof topo.buckets) => async (nc: NatsConnection) => (await new Kvm(nc).open(topo.buckets[bucket])).get("nothing");
    const ops: Op[] = [
      { what: "publish a run submission", run: (nc) => js(nc).publish(topo.subjects.submit, submit.data, { headers: submit.headers, msgID: `m-${Math.random()}` }), allowed: ["admin", "scheduler", "client", "api", "dashboard"] },
      { what: "publish to the results stream (a result, a control request)", run: (nc) => js(nc).publish(topo.subjects.results("r-matrix"), result.data, { headers: result.headers }), allowed: ["admin", "scheduler", "merger", "stealer", "worker", "client", "api", "dashboard"] },
      { what: "publish ready work", run: (nc) => js(nc).publish(topo.subjects.ready("normal"), new Uint8Array([0x80])), allowed: ["admin", "scheduler", "stealer", "worker"] },
      { what: "publish work to a worker", run: (nc) => js(nc).publish(topo.subjects.work("w-matrix"), new Uint8Array([0x80])), allowed: ["admin", "scheduler", "balancer"] },
      { what: "publish an event", run: (nc) => js(nc).publish(topo.subjects.event({ type: "run.paused", runId: "r-matrix" }), new Uint8Array([0x80])), allowed: ["admin", "scheduler", "balancer", "merger", "stealer", "worker"] },
      { what: "write a run record (KV runs)", run: kvPut("runs", "r-matrix"), allowed: ["admin", "scheduler"] },
      { what: "write the control bucket", run: kvPut("control", "r-matrix"), allowed: ["admin", "scheduler", "client", "api", "dashboard"] },
      { what: "claim an attempt (KV claims)", run: kvPut("claims", "r-matrix.a.1"), allowed: ["admin", "worker"] },
      { what: "write a worker record (KV workers)", run: kvPut("workers", "w-matrix"), allowed: ["admin", "stealer", "worker"] },
      { what: "write a HITL record", run: kvPut("hitl", "r-matrix.a"), allowed: ["admin", "merger", "client", "api", "dashboard"] },
      { what: "read run records", run: kvGet("runs"), allowed: ["admin", "scheduler", "scaler", "client", "observer", "api", "recorder", "dashboard"] },
      { what: "read the control bucket", run: kvGet("control"), allowed: ["admin", "scheduler", "balancer", "worker", "client", "observer", "api", "dashboard"] },
      { what: "read a run's events (last message)", run: async (nc) => (await jetstreamManager(nc)).streams.getMessage(topo.streams.events.name, { last_by_subj: topo.subjects.event({ type: "run.paused", runId: "r-matrix" }) }).catch((e: Error) => (/no message found/i.test(e.message) ? null : Promise.reject(e))), allowed: ["admin", "stealer", "client", "observer", "recorder", "notifier", "dashboard"] },
      { what: "read the providers' state (KV providers)", run: kvGet("providers"), allowed: ["admin", "balancer", "worker", "client", "observer", "dashboard"] },
      { what: "write a stage's limits (KV stages)", run: kvPut("stages", "r-matrix.plan"), allowed: ["admin", "scheduler"] },
      { what: "read the stages' limits (KV stages)", run: kvGet("stages"), allowed: ["admin", "scheduler", "observer"] },
      { what: "write a run snapshot (KV snapshots)", run: kvPut("snapshots", "r-matrix"), allowed: ["admin", "recorder"] },
      { what: "read run snapshots (KV snapshots)", run: kvGet("snapshots"), allowed: ["admin", "client", "observer", "recorder", "dashboard", "api"] },
      { what: "take a leader lease (KV leases)", run: kvPut("leases", "matrix"), allowed: ["admin", "stealer", "scaler", "recorder"] },
      { what: "create a durable consumer on the events (the notifier's)", run: async (nc) => (await jetstreamManager(nc)).consumers.add(topo.streams.events.name, { durable_name: "matrix", filter_subject: topo.subjects.allRunEvents, ack_policy: AckPolicy.Explicit }), allowed: ["admin", "notifier", "recorder", "client", "observer", "dashboard", "api"] },
      { what: "publish a dead letter as the notifier", run: (nc) => js(nc).publish(topo.subjects.deadLetter("notifier"), new Uint8Array([0x80])), allowed: ["admin", "notifier"] },
      { what: "call an API query (runs.list)", run: apiCall("runs.list"), allowed: ["admin", "client", "observer", "dashboard"] },
      { what: "call an API mutation (runs.cancel)", run: apiCall("runs.cancel"), allowed: ["admin", "client", "dashboard"] },
      { what: "call the API's workers.scale, workers.drain, hitl.manual", run: async (nc) => Promise.all((["workers.scale", "workers.drain", "hitl.manual"] as const).map((e) => apiCall(e)(nc))), allowed: ["admin", "client", "dashboard"] },
      { what: "submit a run through the API (runs.submit)", run: apiCall("runs.submit"), allowed: ["admin", "client", "dashboard"] },
      { what: "ask a worker to drain (core NATS; others go through the API)", run: coreRequest(topo.subjects.drain("w-matrix")), allowed: ["admin", "stealer", "scaler", "api"] },
      { what: "ask an actor for its status (core NATS)", run: coreRequest(topo.subjects.status("worker", "w-matrix")), allowed: ["admin", "stealer", "scaler", "client", "observer", "dashboard"] },
      { what: "ask the stealer for a rebalancing pass (core NATS)", run: coreRequest(topo.subjects.rebalance), allowed: ["admin", "scaler"] },
      { what: "create a stream", run: async (nc) => (await jetstreamManager(nc)).streams.add({ name: `${topo.prefix.toUpperCase()}_EXTRA`, subjects: [`${topo.prefix}.extra.>`] }), allowed: [] },
      { what: "delete a stream", run: async (nc) => (await jetstreamManager(nc)).streams.delete(topo.streams.dlq.name), allowed: [] },
      { what: "update a stream (provisioning)", run: async (nc) => (await jetstreamManager(nc)).streams.update(topo.streams.dlq.name, { ...topo.streams.dlq }), allowed: ["admin"] },
      { what: "subscribe to worker load reports (core NATS)", run: (nc) => subscribed(nc, topo.subjects.loadAll), allowed: ["admin", "balancer"] },
      { what: "subscribe to agents' usage events (core NATS: the scheduler's budget)", run: (nc) => subscribed(nc, topo.subjects.usageAll), allowed: ["admin", "scheduler"] },
      { what: "subscribe to another prefix's events (core NATS)", run: (nc) => subscribed(nc, other.subjects.allEvents), allowed: [] },
      { what: "count the work stream's messages by subject (the scaler's queued work per worker)", run: async (nc) => (await jetstreamManager(nc)).streams.info(topo.streams.work.name, { subjects_filter: topo.subjects.work("*") }), allowed: ["admin", "scheduler", "balancer", "stealer", "scaler", "worker", "api"] },
      { what: "read another prefix's stream", run: async (nc) => (await jetstreamManager(nc)).streams.info(other.streams.events.name), allowed: [] },
      { what: "write another prefix's control bucket", run: async (nc) => js(nc).publish(`$KV.${other.buckets.control}.r1`, new Uint8Array([0x80])), allowed: [] },
    ];
    /** A request to an API endpoint: no API runs here, so "no responders" means the server let it through. */
    function apiCall(endpoint: ApiEndpointName) {
      return (nc: NatsConnection) =>
        nc.request(topo.subjects.api(endpoint), new TextEncoder().encode("{}"), { timeout: 3_000 }).catch((e: Error) => (/no responders/i.test(`${e.message} ${(e.cause as Error | undefined)?.message ?? ""}`) ? null : Promise.reject(e)));
    }
    /** A core NATS request nobody answers here: "no responders" means the server let it through. */
    function coreRequest(subject: string) {
      return (nc: NatsConnection) =>
        nc.request(subject, new TextEncoder().encode("{}"), { timeout: 3_000 }).catch((e: Error) => (/no responders/i.test(`${e.message} ${(e.cause as Error | undefined)?.message ?? ""}`) ? null : Promise.reject(e)));
    }
    /** A subscription the server keeps (refused: it closes it with a permissions error). */
    async function subscribed(nc: NatsConnection, subject: string): Promise<void> {
      const sub = nc.subscribe(subject);
      await nc.flush();
      const closed = await Promise.race([sub.closed, new Promise((r) => setTimeout(() => r("open"), 500))]);
      sub.unsubscribe();
      if (closed instanceof Error) throw closed;
      if (closed !== "open") throw new Error(`subscription to ${subject} closed`);
    }
    const rows: string[] = [];
    const wrong: string[] = [];
    for (const role of ROLES) {
      const nc = await as(role);
      for (const op of ops) {
        const must = op.allowed.includes(role) ? "works" : "refused";
        let got: string;
        try {
          await Promise.race([op.run(nc), new Promise((_, rej) => setTimeout(() => rej(new Error("timed out")), 5_000))]);
          got = "works";
        } catch (err) {
          got = /permission|authorization/i.test(String((err as Error).message)) ? "refused" : `error: ${(err as Error).message}`;
        }
        rows.push(`${role.padEnd(9)} ${op.what.padEnd(62)} must ${must.padEnd(8)} ${got === must ? "ok" : `WRONG (${got})`}`);
        if (got !== must) wrong.push(`${role}: ${op.what}: must be ${must}, got ${got}`);
      }
      if (nc.isClosed()) conns.splice(conns.indexOf(nc), 1);
    }
    process.stdout.write(`nats auth - permission matrix (${rows.length} checks):\n  ${rows.join("\n  ")}\n`);
    expect(wrong).toEqual([]);
  }, 180_000);

  it("a role's seed from ADO_NATS_ROLE_DIR is what a stack's actors use", () => {
    expect(authForRole({ roleDir: "/x" }, "worker")).toEqual({ nkeyFile: "/x/worker.nk" });
    expect(authForRole({ user: "u", password: "p" }, "worker")).toEqual({ user: "u", password: "p" });
  });
});

describe("nats auth - TLS", () => {
  let tlsDir: string;
  let tlsServer: EmbeddedServer;
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: tlsDir, stdio: "pipe" });
  beforeAll(async () => {
    tlsDir = await mkdtemp(join(tmpdir(), "ado-tls-"));
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ado test CA");
    for (const name of ["server", "client"]) {
      openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name === "server" ? "127.0.0.1" : "ado-client"}`);
      execFileSync("sh", ["-c", `printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ${name}.ext`], { cwd: tlsDir });
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`);
    }
    const f = (n: string) => JSON.stringify(join(tlsDir, n));
    tlsServer = await EmbeddedServer.start({ extraConfig: `tls {\n  cert_file: ${f("server.pem")}\n  key_file: ${f("server.key")}\n  ca_file: ${f("ca.pem")}\n  verify: true\n  timeout: 5\n}` });
  });
  afterAll(async () => {
    await tlsServer?.stop();
    await rm(tlsDir, { recursive: true, force: true, maxRetries: 10 });
  });

  it("a client with the CA and its certificate connects and uses JetStream; one without a certificate is refused under mutual TLS", async () => {
    const tls = { ca: join(tlsDir, "ca.pem"), cert: join(tlsDir, "client.pem"), key: join(tlsDir, "client.key") };
    const nc = await connectNats({ servers: tlsServer.url, name: "tls-client", logger: silentLogger, auth: { tls } });
    try {
      const t = topology(uniqueTopology().prefix);
      await provision(nc, t);
      const kv = await new Kvm(nc).open(t.buckets.control);
      await kv.put("k", encodeValue(SCHEMAS.AttemptClaim, { workerId: "w1", claimedAt: at() }));
      expect((await kv.get("k"))?.operation).toBe("PUT");
    } finally {
      await drainQuietly(nc);
    }
    await expect(connectNats({ servers: tlsServer.url, name: "no-cert", logger: silentLogger, auth: { tls: { ca: tls.ca } }, timeoutMs: 3_000 })).rejects.toThrow();
    await expect(connectNats({ servers: tlsServer.url, name: "no-tls", logger: silentLogger, auth: {}, timeoutMs: 3_000 })).rejects.toThrow();
  }, 60_000);
});

describe("nats auth - user and password, token", () => {
  it("ado connects with a user and password from the environment, and with a token from the config; wrong ones are refused", async () => {
    const userServer = await EmbeddedServer.start({ extraConfig: `authorization {\n  users: [ { user: "ado", password: "s3cret" } ]\n}` });
    const tokenServer = await EmbeddedServer.start({ extraConfig: `authorization {\n  token: "t0ken"\n}` });
    try {
      const env = { ADO_NATS_USER: "ado", ADO_NATS_PASSWORD: "s3cret" };
      expect(natsAuthFromEnv(env)).toEqual({ user: "ado", password: "s3cret" });
      const byEnv = await connectNats({ servers: userServer.url, name: "env-user", logger: silentLogger, auth: natsAuthFromEnv(env) });
      await provision(byEnv, uniqueTopology());
      await drainQuietly(byEnv);
      await expect(connectNats({ servers: userServer.url, name: "bad-pass", logger: silentLogger, auth: { user: "ado", password: "nope" }, timeoutMs: 3_000 })).rejects.toThrow(/Authorization Violation/i);

      const cfgDir = await mkdtemp(join(tmpdir(), "ado-cfg-"));
      try {
        const file = join(cfgDir, "ado.config.yaml");
        await import("node:fs/promises").then((fs) => fs.writeFile(file, "nats:\n  token: t0ken\n"));
        const config = await loadConfig({ file, env: {} });
        const byToken = await connectNats({ servers: tokenServer.url, name: "cfg-token", logger: silentLogger, auth: config.nats });
        await provision(byToken, uniqueTopology());
        await drainQuietly(byToken);
      } finally {
        await rm(cfgDir, { recursive: true, force: true, maxRetries: 10 });
      }
      await expect(connectNats({ servers: tokenServer.url, name: "bad-token", logger: silentLogger, auth: { token: "wrong" }, timeoutMs: 3_000 })).rejects.toThrow(/Authorization Violation/i);
    } finally {
      await userServer.stop();
      await tokenServer.stop();
    }
  }, 60_000);

  it("a seed file that holds no seed, or a missing one, is a clear configuration error", async () => {
    const d = await mkdtemp(join(tmpdir(), "ado-seed-"));
    try {
      const bad = join(d, "bad.nk");
      await import("node:fs/promises").then((fs) => fs.writeFile(bad, "not a seed\n"));
      await expect(connectNats({ servers: "nats://127.0.0.1:1", name: "x", logger: silentLogger, auth: { nkeyFile: bad } })).rejects.toThrow(/does not hold a seed/);
      await expect(connectNats({ servers: "nats://127.0.0.1:1", name: "x", logger: silentLogger, auth: { nkeyFile: join(d, "missing.nk") } })).rejects.toThrow(/cannot read the NATS nkey seed file .*ENOENT/);
      await expect(connectNats({ servers: "nats://127.0.0.1:1", name: "x", logger: silentLogger, auth: { tls: { cert: "/c.pem" } } })).rejects.toThrow(/needs both nats.tls.cert and nats.tls.key/);
    } finally {
      await rm(d, { recursive: true, force: true, maxRetries: 10 });
    }
  });
});

describe("nats auth - the embedded stack", () => {
  it("turns auth on by default: seeds 0600 under the store, no connection without them, every actor (recorder and notifier included) works under its own user", async () => {
    const repo = await makeRepo();
    const scratch = await mkdtemp(join(tmpdir(), "ado-embedded-auth-"));
    const storeDir = join(scratch, "store");
    // The notifier's webhook: what it posts, it read from the events as its own user.
    const posted: string[] = [];
    const hook = createServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => {
        posted.push(body);
        res.end("ok");
      });
    });
    await new Promise<void>((resolve) => hook.listen(0, "127.0.0.1", resolve));
    const hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`;
    const config = parseConfig({ prefix: uniqueTopology().prefix, workers: 1, worktreeDir: join(scratch, "wt"), heartbeatMs: 200, embedded: { storeDir }, notifications: { webhooks: [{ url: hookUrl }] } });
    const t = topology(config.prefix);
    const stack = await Stack.start({ config, logger: silentLogger, recorder: { everyMs: 100 } });
    const mine: NatsConnection[] = [];
    const connectAs = async (role: Role) => {
      const nc = await connectNats({ servers: stack.url, name: `embedded-${role}`, logger: silentLogger, auth: authForRole(stack.auth, role) });
      mine.push(nc);
      return nc;
    };
    try {
      expect(stack.auth.roleDir).toBe(join(storeDir, "auth"));
      expect(((await stat(stack.auth.roleDir!)).mode & 0o777).toString(8)).toBe("700");
      for (const r of ROLES) expect(((await stat(join(stack.auth.roleDir!, `${r}.nk`))).mode & 0o777).toString(8)).toBe("600");
      await expect(connectNats({ servers: stack.url, name: "anon", logger: silentLogger, auth: {}, timeoutMs: 3_000 })).rejects.toThrow(/Authorization Violation|authorization/i);
      // Another prefix's client (another installation's keys) gets nothing either.
      await expect(connectNats({ servers: stack.url, name: "stranger", logger: silentLogger, auth: { nkeyFile: seeds.client }, timeoutMs: 3_000 })).rejects.toThrow(/Authorization Violation|authorization/i);

      const client = new AdoClient(await connectAs("client"), t);
      const outcome = await client.run({ graph: parseGraph(`tasks:\n  - { id: a, run: "echo A > a.txt" }\n  - { id: b, needs: [a], run: "cat a.txt" }\n`), repo: repo.dir });
      expect(outcome.error).toBeUndefined();
      expect(outcome.status).toBe("succeeded");
      // The recorder, as its own user, folded the run into a snapshot; the notifier made its durable.
      const observer = await connectAs("observer");
      const snapshots = await new Kvm(observer).open(t.buckets.snapshots);
      await eventually(() => readSnapshotHead(snapshots, outcome.runId), 30_000, "the recorder's snapshot of the run");
      await eventually(() => posted.find((b) => b.includes(outcome.runId) && b.includes("run.completed")), 30_000, "the notifier's webhook for the run");
      expect(stack.health().live.ok).toBe(true);
      expect(stack.health().ready).toEqual({ ok: true, reason: "ok" });
    } finally {
      await Promise.all(mine.map((nc) => drainQuietly(nc)));
      await stack.close();
    }
    try {
      // Started again on the same store (a kept run resumed), the stack keeps its keys.
      const seed = await readFile(join(storeDir, "auth", "client.nk"), "utf8");
      const again = await Stack.start({ config, logger: silentLogger, actors: [], workers: 0 });
      try {
        expect(await readFile(join(storeDir, "auth", "client.nk"), "utf8")).toBe(seed);
        const nc = await connectNats({ servers: again.url, name: "again", logger: silentLogger, auth: authForRole(again.auth, "client") });
        await drainQuietly(nc);
      } finally {
        await again.close();
      }
    } finally {
      hook.close();
      await repo.cleanup();
      await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
    }
  }, 180_000);

  it("embedded.auth false (ado up --no-auth, ADO_EMBEDDED_AUTH=0): connections without credentials are taken", async () => {
    expect((await loadConfig({ env: { ADO_EMBEDDED_AUTH: "0" }, dir: tmpdir() })).embedded.auth).toBe(false);
    await expect(loadConfig({ env: { ADO_EMBEDDED_AUTH: "maybe" }, dir: tmpdir() })).rejects.toThrow(/embedded.auth \(from environment ADO_EMBEDDED_AUTH\)/);
    const scratch = await mkdtemp(join(tmpdir(), "ado-embedded-noauth-"));
    const config = parseConfig({ prefix: uniqueTopology().prefix, workers: 0, worktreeDir: join(scratch, "wt"), embedded: { auth: false } });
    const stack = await Stack.start({ config, logger: silentLogger, actors: ["scheduler"] });
    try {
      expect(stack.auth).toEqual({});
      const nc = await connectNats({ servers: stack.url, name: "anon", logger: silentLogger, auth: {} });
      await (await jetstreamManager(nc)).streams.info(topology(config.prefix).streams.submit.name);
      await drainQuietly(nc);
    } finally {
      await stack.close();
      await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
    }
  }, 60_000);
});
