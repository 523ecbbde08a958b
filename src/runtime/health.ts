import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { AdoError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

/**
 * A tiny HTTP server for Kubernetes probes: `GET /health` (liveness) and `GET /ready`
 * (readiness), each 200 or 503 with a small JSON body, and `GET /metrics` (Prometheus,
 * when the process has metrics). No framework: three routes do not need one, and a
 * probe endpoint must not pull in anything that can fail at import.
 */

/** What a check returns: a verdict, optionally with the reason shown in the body. */
export type CheckResult = boolean | { ok: boolean; reason: string };

/** A probe check. Throwing, rejecting or running past the timeout counts as failing. */
export type HealthCheck = () => CheckResult | Promise<CheckResult>;

export interface HealthServerOptions {
  /** 0 picks a free port; the one bound is reported as `port`. */
  port: number;
  /** Default `0.0.0.0`: the kubelet probes the pod's IP, not loopback. */
  host?: string;
  checks: { live: HealthCheck; ready: HealthCheck };
  logger: Logger;
  /** Served at `GET /metrics` in the Prometheus text format. */
  metrics?: Metrics;
  /**
   * A check that has not answered by then fails with "timed out". Default 800 ms: under
   * the kubelet's default probe timeout (1 s), so it sees our 503 and reason, not its own.
   */
  checkTimeoutMs?: number;
}

export interface HealthServer {
  /** The port actually bound (useful with `port: 0`). */
  readonly port: number;
  /** Stops listening and closes connections. Idempotent: returns the same promise every time. */
  close(): Promise<void>;
}

/** The HTTP server could not start (port in use, no permission, bad host). */
export class HealthServerError extends AdoError {}

type Probe = "live" | "ready";

const ROUTES: Record<string, Probe> = { "/health": "live", "/ready": "ready" };

/** Starts the probe server; resolves once it listens. */
export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const host = opts.host ?? "0.0.0.0";
  const timeoutMs = opts.checkTimeoutMs ?? 800;
  const log = opts.logger.child({ component: "health" });
  // Only transitions are logged: the kubelet probes every few seconds.
  const last: Partial<Record<Probe, boolean>> = {};

  const evaluate = async (probe: Probe): Promise<{ ok: boolean; reason: string }> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the ${probe} check timed out after ${timeoutMs} ms`)), timeoutMs);
      });
      // Called inside the race so a check that throws synchronously is caught like a rejection.
      const result = await Promise.race([Promise.resolve().then(() => opts.checks[probe]()), timeout]);
      if (typeof result === "boolean") return { ok: result, reason: result ? "ok" : `the ${probe} check failed` };
      return { ok: result.ok === true, reason: String(result.reason) };
    } catch (err) {
      return { ok: false, reason: err instanceof Error ? err.message : String(err) };
    } finally {
      clearTimeout(timer);
    }
  };

  const respond = (res: ServerResponse, status: number, body: unknown) => {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(text),
      "cache-control": "no-store",
    });
    res.end(text); // Node leaves the body out for HEAD.
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    let path: string;
    try {
      path = new URL(req.url ?? "/", "http://probe.invalid").pathname;
    } catch {
      return respond(res, 400, { status: "bad_request", reason: "the request target is not a valid URL" });
    }
    if (path === "/metrics" && opts.metrics && (req.method === "GET" || req.method === "HEAD")) {
      const text = await opts.metrics.text(log);
      if (res.headersSent || res.destroyed) return;
      res.writeHead(200, { "content-type": opts.metrics.contentType, "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
      res.end(text);
      return;
    }
    const probe = ROUTES[path];
    if (!probe || (req.method !== "GET" && req.method !== "HEAD")) {
      return respond(res, 404, { status: "not_found", reason: `use GET /health or GET /ready${opts.metrics ? " or GET /metrics" : ""}` });
    }
    const { ok, reason } = await evaluate(probe);
    if (last[probe] !== ok) {
      if (last[probe] !== undefined || !ok) log[ok ? "info" : "warn"]({ probe, reason }, `${probe} probe now ${ok ? "passing" : "failing"}`);
      last[probe] = ok;
    }
    // /health answers exactly {"status":"ok"} when live; /ready always says why.
    if (probe === "live" && ok) return respond(res, 200, { status: "ok" });
    respond(res, ok ? 200 : 503, { status: ok ? "ok" : "unavailable", reason });
  };

  const server = createServer((req, res) => {
    // A response stream can error when the prober hangs up; nothing to do about it.
    res.on("error", () => undefined);
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, "health request failed");
      respond(res, 500, { status: "error", reason: "internal error" });
    });
  });
  // Malformed HTTP gets Node's default 400 and a closed socket (there is no
  // 'clientError' listener); keep-alive sockets left idle must not hold close() up.
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(
        new HealthServerError(
          `the health server cannot listen on ${host}:${opts.port} (${err.code ?? err.message}): ` +
            "choose another port, or 0 for any free one",
          { cause: err },
        ),
      );
    };
    server.once("error", onError);
    server.listen(opts.port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (err) => log.error({ err }, "health server error"));
  const port = (server.address() as AddressInfo).port;
  log.info({ host, port }, "health server listening");

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= new Promise<void>((resolve) => {
      // Grace: in-flight probes finish (their checks time out by then); force after.
      const force = setTimeout(() => server.closeAllConnections(), timeoutMs + 200);
      force.unref();
      server.close(() => {
        clearTimeout(force);
        resolve();
      });
      server.closeIdleConnections();
    });
    return closing;
  };
  return { port, close };
}
