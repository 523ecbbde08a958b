/**
 * The typed API: request/reply endpoints on the NATS services framework, served by the
 * `api` actor (src/actors/api/) on `<p>.api.<endpoint>` (queue group: its replicas
 * share the requests). Clients (the CLI, the dashboard, services in any language) ask
 * it instead of reading and writing the KV buckets, so each role's NATS user needs only
 * these subjects and the event subjects.
 *
 * Wire: JSON in and out (UTF-8), so `nats req ado.api.runs.list '{}'` works and any
 * language needs only a JSON library. An empty request body is `{}`. Every reply is
 * `{"ok": true, "result": ...}` or `{"ok": false, "error": {"code", "message"}}`, with the
 * header `Ado-Schema: api.<endpoint>.reply/1`; an error reply also carries the services
 * framework's `Nats-Service-Error` / `Nats-Service-Error-Code` headers (so `$SRV.STATS`
 * counts it). The JSON Schemas are generated into docs/schemas (`npm run schemas`).
 */
import { headers as natsHeaders, errors as natsErrors, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { z } from "zod";
import { COMPRESSION_HEADER, deflated, inflated, SCHEMA_HEADER } from "./codec.js";
import { AdoError } from "./errors.js";
import { formatIssues, GraphDefSchema } from "./graph.js";
import { ID_PATTERN } from "./ids.js";
import { ControlAction, ControlRequest, BudgetRequest, HitlRecord, RunRecord, RunStatus, SubmitRun, TaskStatus, VariantRecord, WorkerRecord } from "./messages.js";
import { PolicyOverride, SCALER_POOL_STATE } from "./scaling.js";
import { API_MUTATIONS, API_QUERIES, type ApiEndpointName, type Topology } from "./topology.js";

/** The closed set of error codes an endpoint answers with. */
export const ApiErrorCode = z.enum(["bad_request", "not_found", "conflict", "forbidden", "unavailable"]);
export type ApiErrorCode = z.infer<typeof ApiErrorCode>;

/** The services framework's numeric code of each (`Nats-Service-Error-Code`), HTTP-like. */
export const API_ERROR_STATUS: Record<ApiErrorCode, number> = { bad_request: 400, forbidden: 403, not_found: 404, conflict: 409, unavailable: 503 };

/**
 * An endpoint refused a request, or could not be reached. `code` says what kind of
 * refusal (branch on it, not on the message); the message says what to do.
 * `unavailable` is the one worth retrying.
 */
export class ApiError extends AdoError {
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(message, { ...opts, retryable: code === "unavailable" });
  }
}

/** Whether `err` is an ApiError with one of `codes` (any code when none is given). */
export function isApiError(err: unknown, ...codes: ApiErrorCode[]): err is ApiError {
  return err instanceof ApiError && (codes.length === 0 || codes.includes(err.code));
}

const id = z.string().regex(ID_PATTERN, "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit");
const who = z.string().max(200);

/** A task's state as `ado status` shows it: the scheduler's record, corrected by a live claim (it runs). */
export const TaskStatusView = z.object({
  id: z.string(),
  status: TaskStatus,
  attempts: z.number().int().min(0),
  workerId: z.string().optional(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  error: z.string().optional(),
  needs: z.array(z.string()),
  /** What its finished attempts cost so far, USD and tokens. */
  costUsd: z.number().min(0).optional(),
  tokens: z.number().int().min(0).optional(),
  /** The batch (its lead task's id) the task's attempt runs or ran in (a stage's `batch:`). */
  batch: z.string().optional(),
  /** A best-of-N task: its variants (current round), the winner and the refs keeping the others. */
  variants: z.array(VariantRecord).optional(),
});
export type TaskStatusView = z.infer<typeof TaskStatusView>;

/** One run in a listing: the record without its graph (a list of graphs would not fit one message). */
export const RunListItem = z.object({
  runId: z.string(),
  name: z.string(),
  status: RunStatus,
  paused: z.boolean(),
  submittedAt: z.string(),
  acceptedAt: z.string(),
  finishedAt: z.string().optional(),
  error: z.string().optional(),
  tasks: z.number().int().min(0),
  costUsd: z.number().min(0),
  tokens: z.number().int().min(0),
});
export type RunListItem = z.infer<typeof RunListItem>;

/** One HITL record in a listing: what `ado hitl list` prints, and whether its task still waits. */
export const HitlListItem = z.object({
  id: z.string(),
  runId: z.string(),
  taskId: z.string(),
  state: HitlRecord.shape.state,
  waiting: z.boolean(),
  reason: HitlRecord.shape.reason,
  files: z.array(z.string()),
  message: z.string(),
  round: z.number().int(),
  createdAt: z.string(),
});
export type HitlListItem = z.infer<typeof HitlListItem>;

const capChange = z.union([z.object({ set: z.number().positive() }).strict(), z.object({ add: z.number().positive() }).strict()]);
const controlInput = z
  .object({
    runId: id,
    taskId: id.optional(),
    reason: z.string().max(2_000).default(""),
    by: who.optional(),
  })
  .strict();
const controlOutput = z.object({ request: ControlRequest });

/** Each endpoint's request and result (the `result` of an ok reply). */
export const API = {
  "runs.list": {
    summary: "Runs known to the scheduler, newest first. `active`: only running ones and those waiting for a person; `task`: only runs with a task of that id.",
    request: z.object({ active: z.boolean().default(false), task: id.optional() }).strict(),
    result: z.object({ runs: z.array(RunListItem) }),
  },
  "runs.get": {
    summary: "One run's record (graph, status, integration branch, budget). not_found when the scheduler does not know it.",
    request: z.object({ runId: id }).strict(),
    result: z.object({ run: RunRecord }),
  },
  "tasks.status": {
    summary: "One run's record and every task's state (or one task's, with `taskId`), including which worker runs what now.",
    request: z.object({ runId: id, taskId: id.optional() }).strict(),
    result: z.object({ run: RunRecord, tasks: z.array(TaskStatusView) }),
  },
  "runs.cancel": {
    summary: "Cancels a run, or one task with `taskId`. Durable: written to the control bucket and sent to the scheduler. conflict when it has ended.",
    request: controlInput,
    result: controlOutput,
  },
  "runs.pause": { summary: "Pauses a run or one task (running agents are stopped, nothing new starts). conflict when it has ended.", request: controlInput, result: controlOutput },
  "runs.resume": { summary: "Resumes a paused run or task. conflict when it has ended.", request: controlInput, result: controlOutput },
  "hitl.list": {
    summary: "Merges that need (`all`: or needed) a person, oldest first.",
    request: z.object({ all: z.boolean().default(false) }).strict(),
    result: z.object({ records: z.array(HitlListItem) }),
  },
  "hitl.show": {
    summary: "One HITL record (`<runId>.<taskId>`) in full, its KV revision, and whether its task still waits.",
    request: z.object({ id: z.string().min(1).max(200) }).strict(),
    result: z.object({ record: HitlRecord, revision: z.number().int(), waiting: z.boolean() }),
  },
  "hitl.resolve": {
    summary:
      "Asks the merge coordinator to carry out a person's choice for a merge that waits. `round`: the round the choice was made on (conflict if the record moved on since). `manual` needs `commit` (the resolved commit, after `ado hitl resolve --manual`). Follow the run's events for the outcome.",
    request: z
      .object({
        id: z.string().min(1).max(200),
        choice: z.enum(["ours", "theirs", "agent", "skip", "manual"]),
        round: z.number().int().min(0).optional(),
        resolver: z.string().min(1).max(10_000).optional(),
        commit: z.string().regex(/^[0-9a-f]{40}([0-9a-f]{24})?$/, "must be a full commit id").optional(),
        by: who.optional(),
      })
      .strict(),
    result: z.object({ id: z.string(), round: z.number().int(), choice: z.string() }),
  },
  "workers.list": {
    summary: "The worker registry, and each scaler pool's state and live policy.",
    request: z.object({}).strict(),
    result: z.object({
      workers: z.array(WorkerRecord),
      pools: z.array(z.object({ state: SCALER_POOL_STATE.schema, policy: PolicyOverride.optional() })),
      /** Messages waiting on each worker's work subject (worker id -> count, what it runs included), when the work stream could be read. */
      queued: z.record(z.string(), z.number().int().min(0)).optional(),
    }),
  },
  "workers.scale": {
    summary: "Sets a pool's policy live (`scale`: pinned at `min`; `autoscale`: merged over what was set before). not_found for an unknown pool; bad_request when min > max.",
    request: z.object({ pool: z.string().min(1).max(64), source: z.enum(["scale", "autoscale"]), policy: PolicyOverride.shape.policy, by: who.optional() }).strict(),
    result: z.object({ record: PolicyOverride }),
  },
  "budget.raise": {
    summary: "Changes a run's budget caps: `usd`/`tokens` `{set: n}` (a new cap, above the current one) or `{add: n}`. conflict when the run has ended or its budget stopped it.",
    request: z.object({ runId: id, usd: capChange.optional(), tokens: capChange.optional(), by: who.optional() }).strict(),
    result: z.object({ request: BudgetRequest }),
  },
  "hitl.manual": {
    summary:
      "Records a `--manual` resolution on a HITL record: `prepare` (a worktree holding the conflict was made on the person's host: `manual` says where) or `reopen` (that worktree is gone and nothing landed: the merge waits again). `round`: the round it was made for; `revision`: the record's KV revision it was read at (conflict if either moved on).",
    request: z
      .object({
        id: z.string().min(1).max(200),
        round: z.number().int().min(1),
        action: z.enum(["prepare", "reopen"]),
        manual: z.object({ worktree: z.string().min(1).max(4_096), branch: z.string().min(1).max(400), host: z.string().min(1).max(255) }).strict().optional(),
        revision: z.number().int().min(1).optional(),
        by: who.optional(),
      })
      .strict(),
    result: z.object({ record: HitlRecord, revision: z.number().int() }),
  },
  "workers.drain": {
    summary:
      "Asks one worker to stop taking work, finish (or after `graceMs`, checkpoint and hand back) what it runs, and stop. not_found when no worker of that id answers (workers.list lists them).",
    request: z.object({ workerId: id, graceMs: z.number().int().min(0).max(86_400_000).optional(), reason: z.string().max(2_000).optional(), by: who.optional() }).strict(),
    result: z.object({ workerId: z.string(), state: z.string() }),
  },
  "runs.submit": {
    summary:
      "Submits a run: the graph is validated as `ado run` does (unknown needs, cycles, unknown agents, variants; bad_request saying what is wrong), then published to the submit stream; the reply comes after the stream's acknowledgement, so an ok reply means durably accepted. Follow the run's events (`<p>.evt.<runId>.>`). Deduplicated by run id: the same `runId` again is `duplicate`. `repo` (a path on the workers' hosts) and `baseCommit` are needed by every agent but noop.",
    request: z
      .object({
        runId: id.optional(),
        graph: GraphDefSchema,
        repo: SubmitRun.shape.repo,
        baseCommit: SubmitRun.shape.baseCommit,
        remote: SubmitRun.shape.remote,
        merge: SubmitRun.shape.merge,
        budget: SubmitRun.shape.budget,
        by: who.optional(),
      })
      .strict(),
    result: z.object({ runId: z.string(), duplicate: z.boolean(), seq: z.number().int().min(0) }),
  },
} as const satisfies Record<ApiEndpointName, { summary: string; request: z.ZodType; result: z.ZodType }>;

export type ApiRequest<E extends ApiEndpointName> = z.input<(typeof API)[E]["request"]>;
export type ApiParsedRequest<E extends ApiEndpointName> = z.output<(typeof API)[E]["request"]>;
export type ApiResult<E extends ApiEndpointName> = z.output<(typeof API)[E]["result"]>;

/** Every endpoint name, queries first. */
export const API_ENDPOINTS: readonly ApiEndpointName[] = [...API_QUERIES, ...API_MUTATIONS];

/** The control action of a control endpoint. */
export const CONTROL_ENDPOINTS = { "runs.cancel": "cancel", "runs.pause": "pause", "runs.resume": "resume" } as const satisfies Record<string, ControlAction>;

export const ApiErrorBody = z.object({ code: ApiErrorCode, message: z.string() });

/** The reply envelope of an endpoint: its result, or an error. */
export function replySchema<S extends z.ZodType>(result: S) {
  return z.discriminatedUnion("ok", [z.object({ ok: z.literal(true), result }), z.object({ ok: z.literal(false), error: ApiErrorBody })]);
}

/** An endpoint's name in the services framework (`$SRV.INFO`), which allows no dots: `runs-list`. */
export const serviceEndpointName = (endpoint: ApiEndpointName) => endpoint.replace(/\./g, "-");

/** The wire names of an endpoint's request and reply (`Ado-Schema`, and the JSON Schema files). */
export const apiSchemaName = (endpoint: ApiEndpointName, part: "request" | "reply") => `api.${endpoint}.${part}`;
export const API_VERSION = 1;

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Parses a request body through its schema: an empty body is `{}`. Throws ApiError
 * `bad_request` saying what was wrong, never anything else.
 */
export function parseRequest<E extends ApiEndpointName>(endpoint: E, data: Uint8Array): ApiParsedRequest<E> {
  let raw: unknown = {};
  const text = dec.decode(data).trim();
  if (text) {
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ApiError("bad_request", `${endpoint}: the request is not JSON (${(err as Error).message}): send a JSON object, e.g. {}`);
    }
  }
  const parsed = API[endpoint].request.safeParse(raw);
  if (!parsed.success) throw new ApiError("bad_request", `${endpoint}: invalid request: ${formatIssues(parsed.error)} (the schema: docs/schemas/${apiSchemaName(endpoint, "request")}.v1.json)`);
  return parsed.data as ApiParsedRequest<E>;
}

/** The body and headers of a reply. */
/**
 * The body and headers of a reply. A large one (a run's record with its graph, the status
 * of thousands of tasks) is deflated, as ado's other payloads are, with
 * `Ado-Compression: deflate`: the JSON of a graph is several times its compressed size,
 * and the reply must fit the server's max_payload.
 */
export function encodeReply(endpoint: ApiEndpointName, reply: { ok: true; result: unknown } | { ok: false; error: { code: ApiErrorCode; message: string } }): { data: Uint8Array; headers: MsgHdrs } {
  const headers = natsHeaders();
  headers.set(SCHEMA_HEADER, `${apiSchemaName(endpoint, "reply")}/${API_VERSION}`);
  const data = enc.encode(JSON.stringify(reply));
  const z = deflated(data);
  if (!z) return { data, headers };
  headers.set(COMPRESSION_HEADER, "deflate");
  return { data: z, headers };
}

/** The JSON text of a reply, inflated when its header says it is compressed. */
export function replyText(endpoint: ApiEndpointName, data: Uint8Array, headers?: MsgHdrs): string {
  const how = headers?.get(COMPRESSION_HEADER);
  if (!how) return dec.decode(data);
  if (how !== "deflate") throw new ApiError("unavailable", `${endpoint}: the reply's ${COMPRESSION_HEADER} '${how}' is not one this ado reads (deflate): upgrade ado`);
  return dec.decode(inflated(data, apiSchemaName(endpoint, "reply")));
}

/**
 * How long a client waits for an answer by default: an upper bound, not a typical
 * time. Generous because a query over a large run (every task of 400 took over 10 s
 * once on a 2-core machine at load 40) is slow, not lost, and a timeout is reported as
 * the API being unavailable.
 */
export const API_TIMEOUT_MS = 30_000;

/**
 * Calls an endpoint and returns its result, or throws ApiError with the endpoint's code.
 * Nobody serving the API (no `api` actor on this server) is `unavailable` with
 * `noResponders` set, so a caller may fall back; a timeout is `unavailable` too.
 */
export async function callApi<E extends ApiEndpointName>(nc: NatsConnection, topo: Topology, endpoint: E, request: ApiRequest<E>, opts: { timeoutMs?: number } = {}): Promise<ApiResult<E>> {
  let reply;
  try {
    reply = await nc.request(topo.subjects.api(endpoint), enc.encode(JSON.stringify(request)), { timeout: opts.timeoutMs ?? API_TIMEOUT_MS });
  } catch (err) {
    if (causedBy(err, natsErrors.NoRespondersError)) throw new NoApiError(`no ado API answers on ${topo.subjects.api(endpoint)}: start one (\`ado up\` runs it, or \`ado actor api\`)`, { cause: err });
    const denied = causedBy(err, natsErrors.PermissionViolationError);
    if (denied) throw new ApiError("forbidden", `${endpoint}: this NATS user may not call it (${denied.message}): ask for a user whose role may`, { cause: err });
    throw new ApiError("unavailable", `${endpoint}: the ado API did not answer (${(err as Error).message}); try again`, { cause: err });
  }
  let body: unknown;
  try {
    body = JSON.parse(replyText(endpoint, reply.data, reply.headers));
  } catch (err) {
    throw new ApiError("unavailable", `${endpoint}: the API's reply is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = replySchema(API[endpoint].result).safeParse(body);
  if (!parsed.success) throw new ApiError("unavailable", `${endpoint}: the API's reply does not match its schema: ${formatIssues(parsed.error)}`);
  if (!parsed.data.ok) throw new ApiError(parsed.data.error.code, parsed.data.error.message);
  return parsed.data.result as ApiResult<E>;
}

/** No `api` actor answers on this server: the caller may fall back to reading the records itself. */
export class NoApiError extends ApiError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super("unavailable", message, opts);
  }
}

/** Whether a request failed because nobody subscribes to its subject (core NATS "no responders"). */
export function isNoResponders(err: unknown): boolean {
  return causedBy(err, natsErrors.NoRespondersError) !== undefined;
}

/** The error of class `cls` in `err`'s chain of causes (nats.js wraps a request's failure in a RequestError). */
function causedBy<T extends Error>(err: unknown, cls: new (...args: never[]) => T): T | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof cls) return e;
  }
  return undefined;
}
