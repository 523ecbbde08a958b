import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { API_ERROR_STATUS, isApiError } from "../runtime/api.js";
import type { AddressInfo } from "node:net";
import { jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { AdoClient } from "../runtime/client.js";
import { AdoError, errorMessage } from "../runtime/errors.js";
import { ID_PATTERN } from "../runtime/ids.js";
import type { Logger } from "../runtime/logger.js";
import type { Metrics } from "../runtime/metrics.js";
import { readSnapshotHead } from "../runtime/run-snapshot.js";
import { openBuckets, type BucketKey, type Topology } from "../runtime/topology.js";
import { existsSync } from "node:fs";
import { taskDiff } from "../git/index.js";
import { decode } from "../runtime/codec.js";
import { SCHEMAS } from "../runtime/messages.js";
import { readWorkers } from "../runtime/workers-view.js";
import { readAttempts, RunFeed, TaskFeed } from "./feed.js";
import { readQueues } from "./queues.js";
import { PAGE } from "./page.js";

/**
 * The live web dashboard: a NATS client like the CLI, serving one page and a small
 * HTTP API. It reads the event stream and the KV buckets and sends the requests the
 * CLI sends (pause, resume, cancel, `hitl resolve`): there is no second source of truth.
 *
 * Why the process bridges NATS to the browser with server-sent events rather than the
 * browser speaking NATS over a websocket listener: the Debian nats-server is not
 * configured with one, and a browser holding NATS credentials could write any subject
 * (the buckets included); here the browser only reads what the dashboard folds and asks
 * for the few actions it offers. SSE is one-way, survives proxies, and EventSource
 * reconnects by itself; the dashboard then sends the whole state again, so nothing the
 * browser missed is lost.
 */
export interface DashboardOptions {
  nc: NatsConnection;
  topo: Topology;
  logger: Logger;
  port?: number;
  host?: string;
  /** Served at `GET /metrics` too, when the dashboard runs in a process that has metrics. */
  metrics?: Metrics;
  /** The workers' heartbeat (config `heartbeatMs`): a worker not heard from in three is shown silent. */
  heartbeatMs?: number;
  /** Bytes of a task's diff sent to the page (the rest is cut, and the page says so). */
  diffMaxBytes?: number;
}

export interface Dashboard {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** The dashboard's HTTP server could not start (port in use, no permission). */
export class DashboardError extends AdoError {}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const CHOICES = new Set(["ours", "theirs", "skip"]);
/** A task's diff is cut here by default: enough to read, small enough for a page. */
const DIFF_MAX_BYTES = 256 * 1024;
/** config `heartbeatMs`'s default. */
const HEARTBEAT_MS = 1_000;
const ACTIONS = new Set(["pause", "resume", "cancel"]);

export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const { nc, topo, logger } = opts;
  const log = logger.child({ component: "dashboard" });
  const heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;
  const js = jetstream(nc);
  const client = new AdoClient(nc, topo);
  let buckets: Promise<Record<BucketKey, KV>> | undefined;
  const kv = () => (buckets ??= openBuckets(nc, topo));
  const open = new Set<{ close(): Promise<void> }>();
  const sockets = new Set<import("node:net").Socket>();

  const json = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", "content-length": Buffer.byteLength(text) });
    res.end(text);
  };

  const sse = async (req: IncomingMessage, res: ServerResponse, start: (send: (data: unknown) => void) => Promise<{ close(): Promise<void> }>) => {
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store", connection: "keep-alive", "x-accel-buffering": "no" });
    res.write("retry: 1000\n\n");
    const send = (data: unknown) => {
      if (!res.destroyed) res.write(`data: ${JSON.stringify(data)}\n\n`);
    };
    const feed = await start(send);
    open.add(feed);
    // A comment every 15 s keeps proxies from closing an idle stream.
    const ping = setInterval(() => res.write(": ping\n\n"), 15_000);
    const end = () => {
      clearInterval(ping);
      open.delete(feed);
      void feed.close();
    };
    req.on("close", end);
    res.on("error", end);
  };

  const readBody = async (req: IncomingMessage): Promise<Record<string, unknown>> => {
    let text = "";
    for await (const chunk of req) {
      text += chunk;
      if (text.length > 64 * 1024) throw new HttpError(413, "the request body is too large");
    }
    if (!text) return {};
    try {
      const v = JSON.parse(text) as unknown;
      if (v && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch {
      // answered below
    }
    throw new HttpError(400, "the request body must be a JSON object");
  };

  const runId = (s: string | undefined) => {
    if (!s || !ID_PATTERN.test(s)) throw new HttpError(400, `'${s ?? ""}' is not a run id`);
    return s;
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://dashboard");
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    const method = req.method ?? "GET";
    if (method === "GET" && parts.length === 0) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store", "content-length": Buffer.byteLength(PAGE) });
      return void res.end(PAGE);
    }
    if (method === "GET" && url.pathname === "/metrics" && opts.metrics) {
      const text = await opts.metrics.text(log);
      res.writeHead(200, { "content-type": opts.metrics.contentType });
      return void res.end(text);
    }
    if (parts[0] !== "api") throw new HttpError(404, "no such page: the dashboard is at /");
    // GET /api/runs
    if (method === "GET" && parts.length === 2 && parts[1] === "runs") {
      const all = url.searchParams.get("all") === "1";
      const runs = (await client.runs({ active: !all })).slice(0, 200);
      const snapshots = (await kv()).snapshots;
      const rows = await Promise.all(
        runs.map(async (r) => {
          const head = await readSnapshotHead(snapshots, r.runId).catch(() => undefined);
          return {
            runId: r.runId,
            name: r.name,
            status: r.paused && r.status === "running" ? "paused" : r.status,
            acceptedAt: r.acceptedAt,
            finishedAt: r.finishedAt,
            tasks: r.graph.tasks.length,
            counts: head?.counts ?? {},
            costUsd: head?.costUsd ?? 0,
            attention: head?.attention?.length ?? 0,
            error: r.error,
          };
        }),
      );
      return json(res, 200, rows);
    }
    // GET /api/runs/:run/feed (SSE)
    if (method === "GET" && parts.length === 4 && parts[1] === "runs" && parts[3] === "feed") {
      const id = runId(parts[2]);
      const { snapshots, runs } = await kv();
      return sse(req, res, async (send) => {
        const feed = new RunFeed({ nc, js, snapshots, runs, topo, runId: id, log, send });
        await feed.start();
        return feed;
      });
    }
    // GET /api/runs/:run/tasks/:task/feed (SSE)
    if (method === "GET" && parts.length === 6 && parts[1] === "runs" && parts[3] === "tasks" && parts[5] === "feed") {
      const id = runId(parts[2]);
      const taskId = parts[4]!;
      if (!ID_PATTERN.test(taskId)) throw new HttpError(400, `'${taskId}' is not a task id`);
      return sse(req, res, async (send) => {
        const feed = new TaskFeed({ nc, js, topo, runId: id, taskId, log, send });
        await feed.start();
        return feed;
      });
    }
    // GET /api/runs/:run/tasks/:task/diff: the task's work against its base, from the repository on this host
    if (method === "GET" && parts.length === 6 && parts[1] === "runs" && parts[3] === "tasks" && parts[5] === "diff") {
      const id = runId(parts[2]);
      const taskId = parts[4]!;
      if (!ID_PATTERN.test(taskId)) throw new HttpError(400, `'${taskId}' is not a task id`);
      const entry = await (await kv()).runs.get(id);
      if (entry?.operation !== "PUT") throw new HttpError(404, `no run '${id}'`);
      const record = decode(SCHEMAS.RunRecord, entry.value);
      if (!record.repo) throw new HttpError(404, `run ${id} has no repository: its tasks have no diff`);
      if (!existsSync(record.repo)) throw new HttpError(404, `the run's repository ${record.repo} is not on this host: run the dashboard where it is (or look with git in a clone of ${record.remote ?? "it"})`);
      const range = (await readAttempts(js, topo, id, taskId)).diffRange(record.baseCommit);
      if (!range) throw new HttpError(404, `task ${taskId} has no work to compare yet (it has not started)`);
      if (!range.head && !(range.worktree && existsSync(range.worktree))) throw new HttpError(404, `task ${taskId} has no commit yet and its worktree ${range.worktree ?? ""} is not on this host`);
      const diff = await taskDiff({ repo: record.repo, base: range.base, ...(range.head ? { head: range.head } : { worktree: range.worktree! }), maxBytes: opts.diffMaxBytes ?? DIFF_MAX_BYTES });
      return json(res, 200, diff);
    }
    // GET /api/workers: what `ado workers list` shows
    if (method === "GET" && parts.length === 2 && parts[1] === "workers") {
      const { rows, states, policies, problems } = await readWorkers(nc, topo, heartbeatMs);
      return json(res, 200, { workers: rows, pools: states.map((s) => ({ pool: s.pool, backend: s.backend, reason: s.last?.reason ?? "", policy: policies.find((p) => p.pool === s.pool)?.policy ?? null })), problems });
    }
    // GET /api/queues: ready work by priority, placement and provider; work waiting per worker
    if (method === "GET" && parts.length === 2 && parts[1] === "queues") {
      return json(res, 200, await readQueues(nc, topo, heartbeatMs));
    }
    // POST /api/runs/:run/control {action, taskId?}
    if (method === "POST" && parts.length === 4 && parts[1] === "runs" && parts[3] === "control") {
      const id = runId(parts[2]);
      const body = await readBody(req);
      const action = String(body.action ?? "");
      if (!ACTIONS.has(action)) throw new HttpError(400, `action must be pause, resume or cancel, got '${action}'`);
      const taskId = body.taskId === undefined ? undefined : String(body.taskId);
      const target = await client.resolveTarget(taskId ? `${id}/${taskId}` : id).catch((err) => {
        throw new HttpError(404, errorMessage(err));
      });
      await client.control(target, action as "pause" | "resume" | "cancel", "from the dashboard");
      return json(res, 202, { ok: true, action, ...target });
    }
    // GET /api/hitl: the merges waiting for a person
    if (method === "GET" && parts.length === 2 && parts[1] === "hitl") {
      const records = await client.hitlRecords();
      return json(
        res,
        200,
        records
          .filter(({ record }) => record.state !== "resolved")
          .map(({ record }) => ({
            id: record.id,
            runId: record.runId,
            taskId: record.taskId,
            state: record.state,
            reason: record.reason,
            message: record.message,
            files: record.files,
            conflicts: record.conflicts.map((c) => ({ path: c.path, kind: c.kind, ours: c.ours, theirs: c.theirs })),
          })),
      );
    }
    // POST /api/hitl/:id/resolve {choice}: what `ado hitl resolve --choose|--skip` asks
    if (method === "POST" && parts.length === 4 && parts[1] === "hitl" && parts[3] === "resolve") {
      const body = await readBody(req);
      const choice = String(body.choice ?? "");
      if (!CHOICES.has(choice)) throw new HttpError(400, `choice must be ours, theirs or skip, got '${choice}' (the others need a terminal: ado hitl resolve)`);
      const found = await client.hitlRecord(parts[2]!);
      if (!found) throw new HttpError(404, `no merge '${parts[2]}' waits for a person`);
      const { record } = found;
      if (record.state !== "open") throw new HttpError(409, `${record.id} is ${record.state}${record.choice ? ` (${record.choice})` : ""}: nothing to resolve`);
      await client.requestResolution(record, { choice: choice as "ours" | "theirs" | "skip" });
      return json(res, 202, { ok: true, id: record.id, choice });
    }
    throw new HttpError(404, `no such endpoint: ${method} ${url.pathname}`);
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err) => {
      // A refusal of the ado API (a run that ended, a HITL round that moved on) keeps its code's status.
      const status = err instanceof HttpError ? err.status : isApiError(err) ? API_ERROR_STATUS[err.code] : 500;
      if (status === 500) log.warn({ err: errorMessage(err), url: req.url }, "dashboard request failed");
      if (res.headersSent) return void res.end();
      json(res, status, { error: errorMessage(err) });
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(new DashboardError(err.code === "EADDRINUSE" ? `port ${opts.port} is in use: choose another with --dashboard-port (0: a free one)` : `the dashboard could not listen on ${host}:${opts.port}: ${err.message}`, { cause: err })),
    );
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    url: `http://${host === "0.0.0.0" ? "localhost" : host}:${port}/`,
    close: () =>
      (closing ??= (async () => {
        await Promise.all([...open].map((f) => f.close()));
        for (const s of sockets) s.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })()),
  };
}
