import type { ServiceMsg } from "@nats-io/services";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import {
  API,
  API_ENDPOINTS,
  API_ERROR_STATUS,
  API_VERSION,
  ApiError,
  apiSchemaName,
  CONTROL_ENDPOINTS,
  encodeReply,
  parseRequest,
  serviceEndpointName,
  type ApiErrorCode,
  type ApiParsedRequest,
  type ApiResult,
} from "../../runtime/api.js";
import { DecodeError, errorMessage, GraphError } from "../../runtime/errors.js";
import { Records, runListItem } from "../../runtime/records.js";
import type { ApiEndpointName } from "../../runtime/topology.js";
import { budgetRefusal, controlRefusal, manualDecision, resolveRefusal, scaleDecision, submitDecision, type PoolBounds } from "./decide.js";
import { AGENT_NAMES } from "../../agents/index.js";
import { newRunId } from "../../runtime/ids.js";
import { PayloadStore } from "../../runtime/payloads.js";
import { publishSubmission } from "../../runtime/submit.js";
import { requestDrain } from "../../runtime/workers-view.js";

export interface ApiOptions {
  /** The scaler's pools as configured (`workers.scale` knows them, and their bounds, before the scaler has run). */
  pools?: readonly PoolBounds[];
}

/** Who a request says it is from, when it does not say. */
const ANONYMOUS = "api";

/**
 * The API actor: serves the typed request/reply endpoints (src/runtime/api.ts) on the
 * services framework, each on `<p>.api.<endpoint>` in the framework's queue group, so
 * its replicas share the requests and `$SRV.PING|INFO|STATS.<p>-api` finds them. It
 * owns the KV access those operations need: it reads the run, task, claim, HITL, worker
 * and scaler records, and writes control requests (KV `control` and the scheduler's
 * results subject), budget changes (results), HITL resolutions (the merge stream) and
 * pools' live policies (KV `scaler`). Every request is decoded through its schema: a
 * malformed one gets `bad_request` saying what was wrong, never a crash.
 */
export class ApiActor extends Actor {
  private readonly records: Records;
  private readonly payloads: PayloadStore;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly answered: Record<"ok" | ApiErrorCode, number> = { ok: 0, bad_request: 0, not_found: 0, conflict: 0, forbidden: 0, unavailable: 0 };

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: ApiOptions = {},
  ) {
    super("api", instance, ctx);
    this.records = new Records(async () => ctx.kv, this.js, ctx.topo, this.log);
    this.payloads = new PayloadStore(ctx.nc, ctx.topo);
  }

  protected async onStart(): Promise<void> {
    const service = this.service!;
    for (const endpoint of API_ENDPOINTS) {
      service.addEndpoint(serviceEndpointName(endpoint), {
        subject: this.ctx.topo.subjects.api(endpoint),
        handler: (_err, msg) => this.track(this.answer(endpoint, msg)),
        metadata: {
          description: API[endpoint].summary,
          request: `${apiSchemaName(endpoint, "request")}/${API_VERSION}`,
          reply: `${apiSchemaName(endpoint, "reply")}/${API_VERSION}`,
          format: "json",
        },
      });
    }
  }

  protected async onDrain(force: AbortSignal): Promise<void> {
    // No new requests (a replica that stays takes them), then let the ones under way answer.
    await this.service?.stop();
    const aborted = new Promise<void>((resolve) => (force.aborted ? resolve() : force.addEventListener("abort", () => resolve(), { once: true })));
    await Promise.race([Promise.allSettled([...this.inFlight]), aborted]);
  }

  override stats(): Record<string, unknown> {
    return { answered: { ...this.answered }, inFlight: this.inFlight.size };
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** Decodes, carries out, answers: every path ends in one reply, an error one if anything threw. */
  private async answer(endpoint: ApiEndpointName, msg: ServiceMsg): Promise<void> {
    let reply: Parameters<typeof encodeReply>[1];
    try {
      const request = parseRequest(endpoint, msg.data);
      const result = await this.carryOut(endpoint, request);
      // Checked on the way out: a reply that breaks its own schema is our bug, said as such.
      const checked = API[endpoint].result.safeParse(result);
      if (!checked.success) throw new Error(`its reply broke the reply schema (${checked.error.issues[0]?.message ?? "?"}): a bug, please report it`);
      reply = { ok: true, result: checked.data };
    } catch (err) {
      const e =
        err instanceof ApiError
          ? err
          : new ApiError("unavailable", `${endpoint} failed: ${errorMessage(err)}${err instanceof DecodeError ? " (a stored record is unreadable)" : "; try again"}`, { cause: err });
      if (e.code === "unavailable") this.log.warn({ endpoint, err: e.message }, "API request failed");
      reply = { ok: false, error: { code: e.code, message: e.message } };
    }
    let encoded = encodeReply(endpoint, reply);
    const max = this.ctx.nc.info?.max_payload;
    if (max !== undefined && encoded.data.length > max) {
      // Said, not dropped: the requester would otherwise wait for its timeout.
      reply = { ok: false, error: { code: "unavailable", message: `${endpoint}: the reply is ${encoded.data.length} bytes compressed, more than the server's max_payload (${max}): ask for less (tasks.status with a taskId), or raise max_payload` } };
      encoded = encodeReply(endpoint, reply);
    }
    this.answered[reply.ok ? "ok" : reply.error.code]++;
    try {
      const { data, headers } = encoded;
      if (reply.ok) msg.respond(data, { headers });
      // A header value holds one line.
      else msg.respondError(API_ERROR_STATUS[reply.error.code], reply.error.message.replace(/[\r\n]+/g, " "), data, { headers });
    } catch (err) {
      // The requester went away, or the connection closed: nobody to tell.
      this.log.debug({ endpoint, err: errorMessage(err) }, "API reply not sent");
    }
  }

  private async carryOut<E extends ApiEndpointName>(endpoint: E, request: ApiParsedRequest<E>): Promise<ApiResult<E>> {
    const r = this.records;
    // One case per endpoint; the casts tie each case's request and result to its endpoint.
    const req = request as ApiParsedRequest<ApiEndpointName> & Record<string, never>;
    switch (endpoint) {
      case "runs.list": {
        const q = req as ApiParsedRequest<"runs.list">;
        return { runs: (await r.runs({ active: q.active, ...(q.task !== undefined ? { task: q.task } : {}) })).map(runListItem) } as ApiResult<E>;
      }
      case "runs.get": {
        const q = req as ApiParsedRequest<"runs.get">;
        const run = await r.run(q.runId);
        if (!run) throw notFoundRun(q.runId);
        return { run } as ApiResult<E>;
      }
      case "tasks.status": {
        const q = req as ApiParsedRequest<"tasks.status">;
        const view = await r.status(q.runId);
        if (!view) throw notFoundRun(q.runId);
        if (q.taskId === undefined) return view as ApiResult<E>;
        const task = view.tasks.find((t) => t.id === q.taskId);
        if (!task) throw new ApiError("not_found", `run '${q.runId}' has no task '${q.taskId}'`);
        return { run: view.run, tasks: [task] } as ApiResult<E>;
      }
      case "runs.cancel":
      case "runs.pause":
      case "runs.resume": {
        const q = req as ApiParsedRequest<"runs.cancel">;
        const action = CONTROL_ENDPOINTS[endpoint as keyof typeof CONTROL_ENDPOINTS];
        const target = { runId: q.runId, ...(q.taskId !== undefined ? { taskId: q.taskId } : {}) };
        const refusal = controlRefusal(await r.status(q.runId), target, action);
        if (refusal) throw refusal;
        return { request: await r.control(target, action, q.reason, q.by ?? ANONYMOUS) } as ApiResult<E>;
      }
      case "hitl.list": {
        const q = req as ApiParsedRequest<"hitl.list">;
        return { records: await r.hitlList(q.all) } as ApiResult<E>;
      }
      case "hitl.show": {
        const q = req as ApiParsedRequest<"hitl.show">;
        const found = await r.hitlRecord(q.id);
        if (!found) throw new ApiError("not_found", `no merge of '${q.id}' needs or needed a person: see hitl.list (ado hitl list --all)`);
        return { ...found, waiting: await r.isWaiting(found.record) } as ApiResult<E>;
      }
      case "hitl.resolve": {
        const q = req as ApiParsedRequest<"hitl.resolve">;
        const found = await r.hitlRecord(q.id);
        const waiting = found ? await r.isWaiting(found.record) : false;
        const refusal = resolveRefusal(found?.record, waiting, q);
        if (refusal || !found) throw refusal;
        await r.requestResolution(found.record, { choice: q.choice, ...(q.resolver ? { resolver: q.resolver } : {}), ...(q.commit ? { commit: q.commit } : {}) }, q.by ?? ANONYMOUS);
        return { id: found.record.id, round: found.record.round, choice: q.choice } as ApiResult<E>;
      }
      case "workers.list":
        return (await r.workers()) as ApiResult<E>;
      case "workers.scale": {
        const q = req as ApiParsedRequest<"workers.scale">;
        const decided = scaleDecision(
          { pool: q.pool, source: q.source, policy: q.policy, by: q.by ?? ANONYMOUS, at: new Date(this.clock.now()).toISOString() },
          { configured: this.opts.pools ?? [], scaler: await r.scalerPools() },
          q.source === "autoscale" ? await r.policy(q.pool) : undefined,
        );
        if ("refusal" in decided) throw decided.refusal;
        await r.setPolicy(decided.record);
        return decided as ApiResult<E>;
      }
      case "budget.raise": {
        const q = req as ApiParsedRequest<"budget.raise">;
        const change = { ...(q.usd ? { usd: q.usd } : {}), ...(q.tokens ? { tokens: q.tokens } : {}) };
        const refusal = budgetRefusal(await r.run(q.runId), q.runId, change);
        if (refusal) throw refusal;
        return { request: await r.budget(q.runId, change, q.by ?? ANONYMOUS) } as ApiResult<E>;
      }
      case "hitl.manual": {
        const q = req as ApiParsedRequest<"hitl.manual">;
        const found = await r.hitlRecord(q.id);
        const decided = manualDecision(found, found ? await r.isWaiting(found.record) : false, { ...q, by: q.by ?? ANONYMOUS }, new Date(this.clock.now()).toISOString());
        if ("refusal" in decided) throw decided.refusal;
        let revision: number;
        try {
          revision = await r.writeHitl(decided.record, found!.revision);
        } catch (err) {
          // The merge coordinator (or another person) wrote it between the read and this write.
          throw new ApiError("conflict", `${q.id} changed while this was recorded (${errorMessage(err)}): look again (ado hitl show ${q.id})`, { cause: err });
        }
        return { record: decided.record, revision } as ApiResult<E>;
      }
      case "workers.drain": {
        const q = req as ApiParsedRequest<"workers.drain">;
        return (await requestDrain(this.ctx.nc, this.ctx.topo, q.workerId, { by: q.by ?? ANONYMOUS, reason: q.reason ?? "workers.drain", ...(q.graceMs !== undefined ? { graceMs: q.graceMs } : {}) })) as ApiResult<E>;
      }
      case "runs.submit": {
        const q = req as ApiParsedRequest<"runs.submit">;
        const checked = submitDecision(q, AGENT_NAMES);
        if ("refusal" in checked) throw checked.refusal;
        const runId = q.runId ?? newRunId();
        const { graph: _g, by, runId: _r, ...rest } = q;
        let ack;
        try {
          ack = await publishSubmission(
            this.js,
            this.ctx.topo,
            this.payloads,
            { ...rest, runId, graph: checked.graph, submittedAt: new Date(this.clock.now()).toISOString(), submittedBy: by ?? ANONYMOUS },
            this.ctx.nc.info ? { maxPayload: this.ctx.nc.info.max_payload } : {},
          );
        } catch (err) {
          if (err instanceof GraphError) throw new ApiError("bad_request", `runs.submit: ${err.message}`, { cause: err });
          throw err;
        }
        return { runId, duplicate: ack.duplicate, seq: ack.seq } as ApiResult<E>;
      }
    }
    throw new ApiError("not_found", `no endpoint '${endpoint}'`);
  }

}

function notFoundRun(runId: string): ApiError {
  return new ApiError("not_found", `no run '${runId}': list runs with runs.list (ado parallel status --all)`);
}
