import { createServer, type IncomingMessage, type Server } from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackendContext } from "../../src/actors/scaler/backend.js";
import { CommandBackend } from "../../src/actors/scaler/backends/command.js";
import { KubernetesBackend, POD_DELETION_COST, scaleAfter } from "../../src/actors/scaler/backends/kubernetes.js";
import { workerRows } from "../../src/cli/workers.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { WorkerRecord } from "../../src/runtime/messages.js";
import { PoolConfigSchema, type PoolConfig } from "../../src/runtime/scaling.js";

/**
 * The scaler's `kubernetes` and `command` backends, and the rows of `ado workers list`.
 * No Kubernetes cluster can run here: the Kubernetes backend talks to a loopback HTTP
 * server that records what @kubernetes/client-node sends (method, path, content type,
 * body) and answers as the API server would, including a 409 Conflict.
 */

function backendCtx(pool: PoolConfig, over: Partial<BackendContext> = {}): BackendContext {
  return {
    pool,
    prefix: "ado",
    serverUrl: "nats://127.0.0.1:4222",
    env: {},
    log: silentLogger,
    shutdown: { graceMs: 100, forceMs: 100 },
    drain: async () => true,
    isLive: () => false,
    ...over,
  };
}

interface Seen {
  method: string;
  path: string;
  contentType: string;
  body: unknown;
}

describe("scaler backend - kubernetes: the requests it builds", () => {
  let server: Server;
  let url: string;
  const seen: Seen[] = [];
  let replicas = 2;
  let resourceVersion = 7;
  /** PUTs of the scale to refuse with 409 Conflict (someone else changed it). */
  let conflicts = 0;
  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res) => {
      let raw = "";
      req.on("data", (d) => (raw += d));
      req.on("end", () => {
        const body = raw ? JSON.parse(raw) : undefined;
        seen.push({ method: req.method!, path: req.url!, contentType: req.headers["content-type"] ?? "", body });
        res.setHeader("Content-Type", "application/json");
        const scale = () => ({ apiVersion: "autoscaling/v1", kind: "Scale", metadata: { name: "workers", namespace: "ado", resourceVersion: String(resourceVersion) }, spec: { replicas }, status: { replicas } });
        if (req.url!.endsWith("/deployments/workers/scale") && req.method === "GET") return res.end(JSON.stringify(scale()));
        if (req.url!.endsWith("/deployments/workers/scale") && req.method === "PUT") {
          if (conflicts > 0 || body.metadata.resourceVersion !== String(resourceVersion)) {
            conflicts = Math.max(0, conflicts - 1);
            resourceVersion++;
            replicas++; // someone else scaled meanwhile
            res.statusCode = 409;
            return res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", reason: "Conflict", code: 409, message: "the object has been modified" }));
          }
          replicas = body.spec.replicas;
          resourceVersion++;
          return res.end(JSON.stringify(scale()));
        }
        if (req.method === "PATCH" && req.url!.includes("/pods/")) return res.end(JSON.stringify({ apiVersion: "v1", kind: "Pod", metadata: { name: req.url!.split("/").pop() } }));
        res.statusCode = 404;
        res.end(JSON.stringify({ kind: "Status", code: 404, message: "not found" }));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const pool = PoolConfigSchema.parse({ name: "k8s", backend: "kubernetes", kubernetes: { namespace: "ado", deployment: "workers" } });
  const kubeConfig = () => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: "test", server: url, skipTLSVerify: true }],
      users: [{ name: "scaler", token: "secret-token" }],
      contexts: [{ name: "test", cluster: "test", user: "scaler" }],
      currentContext: "test",
    });
    return kc;
  };

  it("kubernetes - scale-up reads the Deployment's scale subresource and PUTs it with its resourceVersion and the replicas added", async () => {
    seen.length = 0;
    replicas = 2;
    const b = new KubernetesBackend(backendCtx(pool), kubeConfig());
    await b.launch(["a", "b"]);
    expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual(["GET /apis/apps/v1/namespaces/ado/deployments/workers/scale", "PUT /apis/apps/v1/namespaces/ado/deployments/workers/scale"]);
    expect(seen[1]!.body).toEqual({ apiVersion: "autoscaling/v1", kind: "Scale", metadata: { name: "workers", namespace: "ado", resourceVersion: "7" }, spec: { replicas: 4 } });
    expect(replicas).toBe(4);
    expect(b.status()).toMatchObject({ deployment: "ado/workers", replicas: 4, scaled: 1 });
  });

  it("kubernetes - scale-in marks the chosen (idle) pods with a low deletion cost (merge patch), then lowers replicas by as many", async () => {
    seen.length = 0;
    replicas = 4;
    const b = new KubernetesBackend(backendCtx(pool), kubeConfig());
    const record = (id: string, host: string) => ({ workerId: id, host }) as WorkerRecord;
    await b.stop([{ id: "w1", drain: false, why: "idle", record: record("w1", "workers-5d9c-abcde") }]);
    expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual([
      "PATCH /api/v1/namespaces/ado/pods/workers-5d9c-abcde",
      "GET /apis/apps/v1/namespaces/ado/deployments/workers/scale",
      "PUT /apis/apps/v1/namespaces/ado/deployments/workers/scale",
    ]);
    expect(seen[0]!.contentType).toContain("application/merge-patch+json");
    expect(seen[0]!.body).toEqual({ metadata: { annotations: { [POD_DELETION_COST]: "-1000" } } });
    expect(replicas).toBe(3);
  });

  it("kubernetes - a 409 Conflict (someone scaled meanwhile) is read again and built on, not overwritten", async () => {
    seen.length = 0;
    replicas = 3;
    conflicts = 1;
    const b = new KubernetesBackend(backendCtx(pool), kubeConfig());
    await b.launch(["x"]);
    // GET (3), PUT refused (now 4 by the other writer), GET (4), PUT 5.
    expect(seen.map((s) => s.method)).toEqual(["GET", "PUT", "GET", "PUT"]);
    expect(replicas).toBe(5);
  });

  it("kubernetes - an API error says what failed and how (HTTP status, the deployment)", async () => {
    const b = new KubernetesBackend(backendCtx(PoolConfigSchema.parse({ name: "k8s", backend: "kubernetes", kubernetes: { namespace: "ado", deployment: "nope" } })), kubeConfig());
    await expect(b.launch(["x"])).rejects.toThrow(/deployment ado\/nope could not be scaled by 1: HTTP 404/);
  });

  it("kubernetes - scaleAfter never goes below zero and keeps the resourceVersion", () => {
    expect(scaleAfter({ metadata: { name: "w", namespace: "n", resourceVersion: "9" }, spec: { replicas: 1 } }, -3)).toEqual({
      apiVersion: "autoscaling/v1",
      kind: "Scale",
      metadata: { name: "w", namespace: "n", resourceVersion: "9" },
      spec: { replicas: 0 },
    });
  });
});

describe("scaler backend - command", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ado-cmd-backend-"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true, maxRetries: 10 }));

  it("command - up gets the pool, count, target and worker ids; down runs only once the drained workers are gone", async () => {
    const out = join(dir, "calls");
    const pool = PoolConfigSchema.parse({
      name: "docker",
      backend: "command",
      command: { up: `echo "up $ADO_SCALE_POOL $ADO_SCALE_COUNT $ADO_SCALE_TARGET $ADO_WORKER_IDS $ADO_PREFIX" >> ${out}`, down: `echo "down $ADO_WORKER_IDS $ADO_WORKER_HOSTS" >> ${out}` },
    });
    const drained: string[] = [];
    let live = true;
    const b = new CommandBackend(backendCtx(pool, { drain: async (id) => (drained.push(id), true), isLive: () => live }));
    await b.launch(["w-a", "w-b"], 2);
    await b.close(); // waits for the command under way
    expect((await readFile(out, "utf8")).trim()).toBe("up docker 2 2 w-a w-b ado");

    const b2 = new CommandBackend(backendCtx(pool, { drain: async (id) => (drained.push(id), true), isLive: () => live }));
    await b2.stop([{ id: "w-a", drain: false, why: "idle", record: { workerId: "w-a", host: "box1" } as WorkerRecord }], 1);
    expect(drained).toEqual(["w-a"]);
    await new Promise((r) => setTimeout(r, 300));
    // Still live (draining): down has not run.
    expect((await readFile(out, "utf8")).trim().split("\n")).toHaveLength(1);
    live = false;
    await b2.close();
    expect((await readFile(out, "utf8")).trim().split("\n")[1]).toBe("down w-a box1");
    expect(b2.takeExits()).toEqual([{ id: "w-a", requested: true, detail: "removed by the scale-down command" }]);
  });

  it("command - a failing up command is reported as failed starts of those workers (the scaler backs off)", async () => {
    const pool = PoolConfigSchema.parse({ name: "bad", backend: "command", command: { up: "echo quota exceeded >&2; exit 3", down: "true" } });
    const b = new CommandBackend(backendCtx(pool));
    await b.launch(["w-x"], 1);
    await b.close();
    const exits = b.takeExits();
    expect(exits).toHaveLength(1);
    expect(exits[0]).toMatchObject({ id: "w-x", requested: false });
    expect(exits[0]!.detail).toMatch(/scale-up command failed: .*quota exceeded/s);
  });
});

describe("ado workers list - rows", () => {
  it("workers list - registry records are ready, draining or silent; the scaler's launches not heard from yet are warming", () => {
    const now = Date.parse("2026-01-01T00:00:10Z");
    const rec = (id: string, state: "running" | "draining", heartbeatAt: string): WorkerRecord =>
      ({ workerId: id, host: "h", pid: 1, slots: 2, running: 1, pending: 3, agents: ["shell"], labels: ["local"], capabilities: [], accessMode: "local", costPerTask: 0, active: [], loadSeq: 0, startedAt: heartbeatAt, heartbeatAt, state, pool: "p" }) as WorkerRecord;
    const rows = workerRows(
      [rec("w-1", "running", "2026-01-01T00:00:09.500Z"), rec("w-2", "draining", "2026-01-01T00:00:09Z"), rec("w-3", "running", "2026-01-01T00:00:00Z")],
      [{ pool: "p", backend: "local", warming: [{ id: "w-4", at: now - 2_000, by: "s" }, { id: "w-1", at: now - 5_000, by: "s" }], recommendations: [], idleSince: {}, stopping: {}, seen: [], agents: [], warmups: [], failures: 0, term: 1, updatedAt: "2026-01-01T00:00:10Z" }],
      now,
      1_000,
    );
    expect(rows.map((r) => `${r.id} ${r.state} ${r.heartbeatAgeS}`)).toEqual(["w-1 ready 0.5", "w-2 draining 1", "w-3 silent 10", "w-4 warming 2"]);
    expect(rows[0]).toMatchObject({ pool: "p", slots: 2, running: 1, queued: 3, labels: ["local"], agents: ["shell"] });
  });
});
