import { createConnection } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { HealthServerError, startHealthServer, type HealthCheck, type HealthServer } from "../../src/runtime/health.js";
import { silentLogger } from "../../src/runtime/logger.js";

const started: HealthServer[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.close()));
});

/** A server on a free loopback port whose checks read the given functions. */
async function serve(live: HealthCheck, ready: HealthCheck, checkTimeoutMs?: number) {
  const server = await startHealthServer({
    port: 0,
    host: "127.0.0.1",
    checks: { live, ready },
    logger: silentLogger,
    ...(checkTimeoutMs === undefined ? {} : { checkTimeoutMs }),
  });
  started.push(server);
  const get = async (path: string, init?: RequestInit) => {
    const res = await fetch(`http://127.0.0.1:${server.port}${path}`, init);
    const text = await res.text();
    return { status: res.status, type: res.headers.get("content-type"), body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
  };
  return { server, get };
}

/** Sends raw bytes and returns the first line of the answer. */
function raw(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ port, host: "127.0.0.1" }, () => socket.write(request));
    let data = "";
    socket.on("data", (d) => (data += d.toString()));
    socket.on("end", () => resolve(data.split("\r\n")[0] ?? ""));
    socket.on("error", reject);
  });
}

describe("health - probes", () => {
  it("answers 200 on /health and /ready when both checks pass", async () => {
    const { server, get } = await serve(() => true, async () => true);
    expect(server.port).toBeGreaterThan(0);
    const health = await get("/health");
    expect(health).toEqual({ status: 200, type: "application/json; charset=utf-8", body: { status: "ok" } });
    const ready = await get("/ready");
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({ status: "ok", reason: expect.any(String) });
  });

  it("answers 503 with a reason when a check fails, and follows the check's state", async () => {
    let live = false;
    let ready: boolean | { ok: boolean; reason: string } = { ok: false, reason: "draining" };
    const { get } = await serve(
      () => live,
      () => ready,
    );
    expect((await get("/health")).status).toBe(503);
    expect(await get("/ready")).toMatchObject({ status: 503, body: { status: "unavailable", reason: "draining" } });
    live = true;
    ready = true;
    expect((await get("/health")).status).toBe(200);
    expect((await get("/ready")).status).toBe(200);
    ready = false;
    expect(await get("/ready")).toMatchObject({ status: 503, body: { reason: "the ready check failed" } });
  });

  it("treats a check that throws, rejects or hangs as failing", async () => {
    const { get } = await serve(
      () => {
        throw new Error("event loop wedged");
      },
      () => new Promise<boolean>(() => undefined),
      50,
    );
    expect(await get("/health")).toMatchObject({ status: 503, body: { reason: "event loop wedged" } });
    expect(await get("/ready")).toMatchObject({ status: 503, body: { reason: "the ready check timed out after 50 ms" } });
    const rejecting = await serve(() => Promise.reject(new Error("nats closed")), () => true);
    expect(await rejecting.get("/health")).toMatchObject({ status: 503, body: { reason: "nats closed" } });
  });

  it("answers 404 to anything else, and keeps serving after bad requests", async () => {
    const { server, get } = await serve(() => true, () => true);
    expect((await get("/")).status).toBe(404);
    expect((await get("/healthz")).status).toBe(404);
    expect((await get("/health", { method: "POST", body: "x" })).status).toBe(404);
    expect((await get("/health?verbose=1")).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${server.port}/ready`, { method: "HEAD" })).status).toBe(200);
    expect(await raw(server.port, "NOT HTTP AT ALL\r\n\r\n")).toMatch(/^HTTP\/1\.1 400/);
    expect(await raw(server.port, "GET http://[bad/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).toMatch(/^HTTP\/1\.1 (400|404)/);
    expect((await get("/health")).status).toBe(200);
  });
});

describe("health - lifecycle", () => {
  it("close() is idempotent and frees the port", async () => {
    const { server, get } = await serve(() => true, () => true);
    await get("/health"); // leaves a keep-alive connection open
    const first = server.close();
    expect(server.close()).toBe(first);
    await first;
    await expect(fetch(`http://127.0.0.1:${server.port}/health`)).rejects.toThrow();
  });

  it("fails to start with a clear error when the port is taken", async () => {
    const { server } = await serve(() => true, () => true);
    const err = await startHealthServer({
      port: server.port,
      host: "127.0.0.1",
      checks: { live: () => true, ready: () => true },
      logger: silentLogger,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HealthServerError);
    expect((err as Error).message).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${server.port} \\(EADDRINUSE\\)`));
  });
});
