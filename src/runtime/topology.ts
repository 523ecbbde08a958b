import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstreamManager,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { errors, type NatsConnection } from "@nats-io/transport-node";
import { ServerError } from "./errors.js";
import type { Priority } from "./graph.js";
import type { RunId, TaskId, WorkerId } from "./ids.js";
import type { AdoEvent } from "./messages.js";

/**
 * The one place that spells subjects, streams, consumers and KV buckets. Everything
 * sits under a prefix (default `ado`) so several installations can share one NATS.
 * See docs/ARCHITECTURE.md for the map and who may write what.
 */

export const PREFIX_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;

/** Milliseconds to the nanoseconds JetStream configs use. */
export const ns = (ms: number) => ms * 1_000_000;

export type StreamKey = "submit" | "ready" | "work" | "results" | "merge" | "events" | "dlq" | "providers";
export type ObjectStoreKey = "sessions" | "payloads";
export type BucketKey = "runs" | "tasks" | "backlog" | "costs" | "claims" | "workers" | "leases" | "control" | "hitl" | "worktrees" | "sessions" | "snapshots" | "scaler" | "providers" | "stages";

/** Which actor reads each shared durable consumer. */
export type ActorName = "scheduler" | "balancer" | "merger" | "worker" | "stealer" | "recorder" | "notifier" | "scaler" | "api";

/**
 * The API's endpoints (request/reply on `<p>.api.<name>`, served by the `api` actor):
 * queries read state, mutations change it. The split is what a role may call: an
 * observer only the queries (src/runtime/nats-auth.ts).
 */
export const API_QUERIES = ["runs.list", "runs.get", "tasks.status", "hitl.list", "hitl.show", "workers.list"] as const;
export const API_MUTATIONS = ["runs.cancel", "runs.pause", "runs.resume", "hitl.resolve", "workers.scale", "budget.raise", "hitl.manual", "workers.drain", "runs.submit"] as const;
export type ApiQuery = (typeof API_QUERIES)[number];
export type ApiMutation = (typeof API_MUTATIONS)[number];
export type ApiEndpointName = ApiQuery | ApiMutation;

export interface Topology {
  readonly prefix: string;
  readonly subjects: ReturnType<typeof subjectsFor>;
  readonly streams: Record<StreamKey, Partial<StreamConfig> & { name: string; subjects: string[] }>;
  readonly buckets: Record<BucketKey, string>;
  /**
   * JetStream object stores. `sessions`: agent CLIs' session files packed at each
   * checkpoint (object `<run>.<task>.<attempt>.<n>`, named by the checkpoint record of KV
   * `sessions`), restored on the host that resumes the session. `payloads`: what is too
   * large for a message (a prompt, a fan-in's inputs), stored by its SHA-256 and named
   * in the message instead (src/runtime/payloads.ts).
   */
  readonly objects: Record<ObjectStoreKey, string>;
  /** Name of the services-framework service of an actor kind. */
  service(actor: ActorName): string;
}

function subjectsFor(p: string) {
  return {
    /** Client -> scheduler: run submissions (JetStream, deduplicated by run id). */
    submit: `${p}.submit`,
    /** Scheduler -> balancer: ready tasks, one subject per priority level. */
    ready: (priority: Priority) => `${p}.ready.${priority}`,
    readyAll: `${p}.ready.*`,
    /** Balancer -> worker: work assigned to one worker. */
    work: (workerId: WorkerId | string) => `${p}.work.${workerId}`,
    /** Worker and merge coordinator -> scheduler: task results and merge outcomes. */
    results: (runId: RunId | string) => `${p}.results.${runId}`,
    resultsAll: `${p}.results.*`,
    /** Scheduler -> merge coordinator: branches to merge. */
    merge: (runId: RunId | string) => `${p}.merge.${runId}`,
    mergeAll: `${p}.merge.*`,
    /** Typed events: `<p>.evt.<runId>.run.<kind>` and `<p>.evt.<runId>.task.<taskId>.<kind>`. */
    event: (e: Pick<AdoEvent, "type" | "runId"> & { taskId?: string }) => eventSubject(p, e),
    runEvents: (runId: RunId | string) => `${p}.evt.${runId}.>`,
    taskEvents: (runId: RunId | string, taskId: TaskId | string) => `${p}.evt.${runId}.task.${taskId}.*`,
    /** A task's `agent.usage` events (the last one is its attempt's spend so far). */
    taskUsage: (runId: RunId | string, taskId: TaskId | string) => eventSubject(p, { type: "agent.usage", runId, taskId }),
    /** Every task's `agent.usage` events: the scheduler's view of what running attempts spend. */
    usageAll: `${p}.evt.*.task.*.${eventKind("agent.usage")}`,
    allEvents: `${p}.evt.>`,
    /** Every run's run-level events (`run.completed`, `run.needs_attention`, ...): what the notifier reads. */
    allRunEvents: `${p}.evt.*.run.*`,
    /**
     * A provider's events (`provider.circuit`, `provider.adaptive`):
     * `<p>.provider.<name>.<kind>`, in a stream of their own: they belong to no run, and
     * readers of every run event (the recorder) decode `evt.>` as run events.
     */
    providerEvent: (provider: string, kind: string) => `${p}.provider.${provider}.${kind}`,
    providerEvents: `${p}.provider.>`,
    /** Worker -> balancer, core NATS: load changes (not stored; heartbeats correct drift). */
    load: (workerId: WorkerId | string) => `${p}.load.${workerId}`,
    loadAll: `${p}.load.*`,
    /** Core NATS: tells clients attached to a run to detach (`ado detach`). */
    detach: (runId: RunId | string) => `${p}.detach.${runId}`,
    /** Request/reply: one actor instance's state and counters (services endpoint `status`). */
    status: (actor: ActorName, instance: string) => `${p}.svc.${actor}.${instance}.status`,
    /** Request/reply: a rebalancing pass now (`ado workers rebalance`); only the stealer holding the lease answers. */
    rebalance: `${p}.svc.stealer.rebalance`,
    /** Request/reply to one worker: drain (stop taking work, finish or hand back, stop). */
    drain: (workerId: WorkerId | string) => `${p}.svc.worker.${workerId}.drain`,
    /** Request/reply: one endpoint of the typed API (JSON in and out; src/runtime/api.ts), e.g. `<p>.api.runs.list`. */
    api: (endpoint: ApiEndpointName) => `${p}.api.${endpoint}`,
    /** Every endpoint of the API. */
    apiAll: `${p}.api.>`,
    /** Dead letters, one subject per actor that rejected the message. */
    deadLetter: (actor: string) => `${p}.dlq.${actor}`,
    deadLetterAll: `${p}.dlq.>`,
  };
}

function eventSubject(p: string, e: Pick<AdoEvent, "type" | "runId"> & { taskId?: string }): string {
  const [scope, kind] = e.type.split(".") as [string, string];
  if (scope === "run") return `${p}.evt.${e.runId}.run.${kind}`;
  // task.*, merge.* and agent.* events belong to a task.
  return `${p}.evt.${e.runId}.task.${e.taskId}.${eventKind(e.type)}`;
}

/** The last token of a task event's subject: `started` for task.started, `agent_usage` for agent.usage. */
function eventKind(type: AdoEvent["type"]): string {
  const [scope, kind] = type.split(".") as [string, string];
  return scope === "task" ? kind : `${scope}_${kind}`;
}

/** Builds the topology for a prefix. */
export function topology(prefix = "ado"): Topology {
  if (!PREFIX_PATTERN.test(prefix)) {
    throw new ServerError(`prefix '${prefix}' is invalid: use 1-32 letters, digits, '_' or '-'`);
  }
  const s = subjectsFor(prefix);
  const S = prefix.toUpperCase().replace(/-/g, "_");
  const workQueue = {
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    duplicate_window: ns(120_000),
  } satisfies Partial<StreamConfig>;
  // Logs read by many (events, providers' events): kept a week, whoever has read them.
  const eventLog = {
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: ns(7 * 24 * 3_600_000),
    duplicate_window: ns(120_000),
  } satisfies Partial<StreamConfig>;
  return {
    prefix,
    subjects: s,
    streams: {
      submit: { name: `${S}_SUBMIT`, subjects: [s.submit], ...workQueue },
      ready: { name: `${S}_READY`, subjects: [s.readyAll], ...workQueue },
      work: { name: `${S}_WORK`, subjects: [`${prefix}.work.*`], ...workQueue },
      results: { name: `${S}_RESULTS`, subjects: [s.resultsAll], ...workQueue },
      merge: { name: `${S}_MERGE`, subjects: [s.mergeAll], ...workQueue },
      events: { name: `${S}_EVENTS`, subjects: [s.allEvents], ...eventLog },
      providers: { name: `${S}_PROVIDERS`, subjects: [s.providerEvents], ...eventLog },
      dlq: {
        name: `${S}_DLQ`,
        subjects: [s.deadLetterAll],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        max_age: ns(30 * 24 * 3_600_000),
      },
    },
    buckets: {
      runs: `${prefix}-runs`,
      tasks: `${prefix}-tasks`,
      backlog: `${prefix}-backlog`,
      costs: `${prefix}-costs`,
      claims: `${prefix}-claims`,
      workers: `${prefix}-workers`,
      leases: `${prefix}-leases`,
      control: `${prefix}-control`,
      hitl: `${prefix}-hitl`,
      worktrees: `${prefix}-worktrees`,
      sessions: `${prefix}-sessions`,
      snapshots: `${prefix}-snapshots`,
      scaler: `${prefix}-scaler`,
      providers: `${prefix}-providers`,
      stages: `${prefix}-stages`,
    },
    objects: { sessions: `${prefix}-sessions`, payloads: `${prefix}-payloads` },
    service: (actor) => `${prefix}-${actor}`,
  };
}

/** Durable pull consumer shared by every replica of an actor kind. */
export function actorConsumer(
  name: string,
  filter: string,
  opts: { ackWaitMs?: number; maxDeliver?: number; inactiveMs?: number } = {},
): Partial<ConsumerConfig> & { durable_name: string } {
  return {
    durable_name: name,
    filter_subject: filter,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: ns(opts.ackWaitMs ?? 30_000),
    // Unlimited by default: backpressure naks (no eligible worker yet) must never run a
    // task out of deliveries. Poison messages are caught by BatchLoop's own count.
    max_deliver: opts.maxDeliver ?? -1,
    // The server caps outstanding acks; a worker never has more than its slots anyway.
    max_ack_pending: 10_000,
    ...(opts.inactiveMs ? { inactive_threshold: ns(opts.inactiveMs) } : {}),
  };
}

/**
 * Liveness: an actor instance (a worker) that wrote no new registry record for this many
 * heartbeats is taken for gone: the balancer stops routing to it, the stealer suspects it.
 */
export const LIVENESS_HEARTBEATS = 3;
export const livenessWindowMs = (heartbeatMs: number) => LIVENESS_HEARTBEATS * heartbeatMs;

/**
 * How long the server waits for a worker's ack of a work message before it redelivers
 * it. A worker acks only after the attempt's result is stored and keeps running work
 * alive with in-progress acks every heartbeat (at most a third of this).
 */
export const WORKER_ACK_WAIT_MS = 30_000;

/**
 * A worker's own durable consumer on `work.<id>`. The worker creates it at start and the
 * stealer re-creates it for a worker it had given up for dead that came back; both use
 * this, so the two never disagree. A consumer nobody reads for a day is removed by the
 * server (a worker that never came back, and no stealer ran).
 */
export function workerConsumer(topo: Topology, workerId: string, ackWaitMs = WORKER_ACK_WAIT_MS) {
  return actorConsumer(consumers.work(workerId), topo.subjects.work(workerId), { ackWaitMs, inactiveMs: 24 * 3_600_000 });
}

/** Consumer names, one per actor kind (workers get one each, the balancer one per priority level). */
export const consumers = {
  submit: "scheduler",
  results: "scheduler",
  /**
   * The balancer's, one per priority level, each with its own window of held messages:
   * a backlog of one level never keeps a higher level's tasks out of the held queue.
   */
  readyLevel: (priority: Priority) => `balancer-${priority}`,
  /**
   * One consumer of every level, as balancers before the per-level consumers had. A
   * balancer deletes it at start: consumers of a work-queue stream may not overlap.
   */
  ready: "balancer",
  merge: "merger",
  work: (workerId: string) => `worker-${workerId}`,
  /** The notifier's, on run-level events (webhooks), shared by its replicas. */
  notifier: "notifier",
} as const;

export interface Provisioned {
  jsm: JetStreamManager;
  kv: Record<BucketKey, KV>;
}

/** How long a stored agent session (and its checkpoint record) is kept. */
const SESSION_TTL_MS = 7 * 24 * 3_600_000;
/** How long stored payloads are kept: longer than any run waits (retries, a HITL resolution weeks later). */
export const PAYLOAD_TTL_MS = 90 * 24 * 3_600_000;
const OBJECT_TTL_MS: Record<ObjectStoreKey, number> = { sessions: SESSION_TTL_MS, payloads: PAYLOAD_TTL_MS };

const bucketOptions: Record<BucketKey, { history: number; ttlMs?: number }> = {
  runs: { history: 1 },
  tasks: { history: 1 },
  // Open tasks per accepted run (key runId), what "queue full" counts; deleted at the run's end.
  backlog: { history: 1 },
  // What tasks cost in past runs, per agent and prompt size (key agent.sizeClass): what a
  // budget reserves for a task with no history in its own run. Folded in at a run's end.
  costs: { history: 1 },
  claims: { history: 1, ttlMs: 7 * 24 * 3_600_000 },
  workers: { history: 1 },
  leases: { history: 1 },
  // Desired state per run / task: the latest cancel|pause|resume. Workers and the
  // balancer watch it, so one that was disconnected catches up when it reconnects.
  control: { history: 1, ttlMs: 30 * 24 * 3_600_000 },
  // Merges waiting for a person (key runId.taskId). No TTL: a run may wait for weeks.
  hitl: { history: 1 },
  // Task worktrees (key runId.taskId): written by the worker, the merge coordinator and
  // `ado worktrees cleanup`; read by `ado worktrees list`. Git is the truth, so old
  // records may expire.
  worktrees: { history: 1, ttlMs: 30 * 24 * 3_600_000 },
  // Tasks' latest checkpoints (key runId.taskId: commit, ref, agent session id, and the
  // object holding the session's files in the `sessions` object store): written by the
  // worker of the attempt, read by the stealer and by the worker that resumes. A session
  // is worth resuming for days at most.
  sessions: { history: 1, ttlMs: SESSION_TTL_MS },
  // Run snapshots (key runId, parts runId.p<n>; `_cursor`): written by the recorder from
  // the event stream, read by `ado attach|status|runs` and the dashboard. A finished run's
  // stays a month (`ado runs --all` reads its cost and counts); without it, readers replay.
  snapshots: { history: 1, ttlMs: 30 * 24 * 3_600_000 },
  // The scaler's: each pool's policy as set live (`ado workers scale|autoscale`, key
  // `policy.<pool>`) and the leader's memory of its decisions (`state.<pool>`).
  scaler: { history: 1 },
  providers: { history: 1 },
  // A stage's rate window and circuit per run (key <run>.<stage>), the scheduler's, by
  // compare-and-set; deleted at the run's end. A week untouched, both are long past: a
  // record a crash left behind may expire.
  stages: { history: 1, ttlMs: 7 * 24 * 3_600_000 },
};

/** Config `nats.replicas`: copies of every stream and bucket, or `auto`. */
export type ReplicasSetting = "auto" | number;

/**
 * How many copies of each stream and bucket to keep: a number as given; `auto` is 3 on
 * a server that is part of a cluster (its INFO names one: a three-node cluster then
 * survives losing a node) and 1 on a single server (which refuses more than one).
 */
export function resolveReplicas(setting: ReplicasSetting, server: { cluster?: string } | undefined): number {
  if (setting !== "auto") return setting;
  return server?.cluster ? 3 : 1;
}

/**
 * Creates or updates every stream and bucket of the topology. Safe to call from every
 * process at start: concurrent and repeated calls converge on the same configuration.
 * With `replicas`, every stream, KV bucket and object store gets that many copies,
 * existing ones included (JetStream changes a live stream's replicas); without it new
 * ones get the server's default (1) and existing ones keep theirs.
 */
export async function provision(nc: NatsConnection, topo: Topology, opts: { replicas?: number } = {}): Promise<Provisioned> {
  const jsm = await openJetStream(nc);
  const { replicas } = opts;
  const withReplicas = replicas === undefined ? {} : { num_replicas: replicas };
  try {
    for (const cfg of Object.values(topo.streams)) await ensureStream(jsm, { ...cfg, ...withReplicas });
    const kvm = new Kvm(nc);
    const kv = {} as Record<BucketKey, KV>;
    for (const key of Object.keys(topo.buckets) as BucketKey[]) {
      const { history, ttlMs } = bucketOptions[key];
      kv[key] = await afterAddRace(() =>
        kvm.create(topo.buckets[key], {
          history,
          storage: StorageType.File,
          ...(ttlMs ? { ttl: ttlMs } : {}),
          ...(replicas === undefined ? {} : { replicas }),
        }),
      );
      // create() leaves an existing bucket as it is.
      if (replicas !== undefined) await ensureReplicas(jsm, `KV_${topo.buckets[key]}`, replicas);
    }
    const objm = new Objm(nc);
    for (const key of Object.keys(topo.objects) as ObjectStoreKey[]) {
      await afterAddRace(() => objm.create(topo.objects[key], { storage: StorageType.File, ttl: ns(OBJECT_TTL_MS[key]), ...(replicas === undefined ? {} : { replicas }) }));
      if (replicas !== undefined) await ensureReplicas(jsm, `OBJ_${topo.objects[key]}`, replicas);
    }
    return { jsm, kv };
  } catch (err) {
    if (replicas !== undefined && replicas > 1 && err instanceof JetStreamApiError && REPLICA_REFUSALS.has(err.code)) {
      throw new ServerError(
        `the NATS server at ${nc.getServer()} cannot keep ${replicas} copies of ado's streams (${err.message}): ` +
          `a single server keeps 1, a cluster at most as many as it has JetStream nodes. Set nats.replicas in the config to 1 (or auto), or join more servers to the cluster.`,
        { cause: err },
      );
    }
    throw err;
  }
}

/**
 * JetStream's refusals of a replica count (nats-server's errors.json): 10005 "no suitable
 * peers for placement" and 10023 "insufficient resources" (fewer nodes than replicas),
 * 10074 "replicas > 1 not supported in non-clustered mode".
 */
const REPLICA_REFUSALS = new Set([10005, 10023, 10074]);
/** JetStream's 10058: "stream name already in use with a different configuration". */
const STREAM_NAME_IN_USE = 10058;
/** JetStream's 10065: "subjects overlap with an existing stream". */
const SUBJECTS_OVERLAP = 10065;

/** Gives an existing stream (a bucket's or object store's) this many replicas, if it has another count. */
async function ensureReplicas(jsm: JetStreamManager, stream: string, replicas: number): Promise<void> {
  const info = await jsm.streams.info(stream);
  if (info.config.num_replicas !== replicas) await jsm.streams.update(stream, { ...info.config, num_replicas: replicas });
}


/** The work-queue streams: each message is someone's to handle, and removed once acked. */
export const WORK_QUEUE_STREAMS: readonly StreamKey[] = ["submit", "ready", "work", "results", "merge"];

/** Opens the KV buckets without creating them (for clients of an already provisioned server). */
export async function openBuckets(nc: NatsConnection, topo: Topology): Promise<Record<BucketKey, KV>> {
  const kvm = new Kvm(nc);
  const kv = {} as Record<BucketKey, KV>;
  for (const key of Object.keys(topo.buckets) as BucketKey[]) kv[key] = await kvm.open(topo.buckets[key]);
  return kv;
}

/** A JetStream manager, or a clear error when the server has JetStream off. */
export async function openJetStream(nc: NatsConnection): Promise<JetStreamManager> {
  try {
    return await jetstreamManager(nc);
  } catch (err) {
    // No answer is not "disabled" (a server with JetStream off answers at once): a
    // deadlocked store (full disk) or an overloaded server. Starting it with -js would
    // be the wrong advice.
    if (err instanceof errors.TimeoutError || (err instanceof Error && err.cause instanceof errors.TimeoutError)) {
      throw new ServerError(
        `the NATS server at ${nc.getServer()} does not answer JetStream requests: it is overloaded, or its store is full or deadlocked. ` +
          "Check the server's log and the space left on its store_dir; after freeing space restart it (docs/OPERATIONS.md).",
        { cause: err },
      );
    }
    throw new ServerError(
      `the NATS server at ${nc.getServer()} has JetStream disabled: ado needs it. ` +
        "Start the server with `nats-server -js -sd <dir>`, or add `jetstream { store_dir: <dir> }` to its config.",
      { cause: err },
    );
  }
}

async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  const existing = await streamConfig(jsm, cfg.name);
  if (existing) return converge(jsm, existing, cfg);
  try {
    await jsm.streams.add(cfg);
  } catch (addErr) {
    // Another process created it between our info and add: converge on it. nats-server
    // 2.9 answers that race with 10058 (name in use) or, when it checks subjects first,
    // 10065 (subjects overlap, with the very stream being created): ask again by name
    // rather than trust the code. Any other refusal (more replicas than nodes, a real
    // overlap with a stream of someone else) is the add's to report.
    if (!lostAddRace(addErr)) throw addErr;
    const created = await streamConfig(jsm, cfg.name);
    if (!created) throw addErr;
    await converge(jsm, created, cfg);
  }
}

/** Whether an add was refused because another process added the same stream at that moment (see ensureStream). */
function lostAddRace(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === STREAM_NAME_IN_USE || err.code === SUBJECTS_OVERLAP);
}

/**
 * Creates a bucket or object store, once more after losing the add race to another
 * process (the clients' create() asks for the stream, then adds it: the same race as
 * ensureStream's). The second call finds the stream and opens it.
 */
async function afterAddRace<T>(create: () => Promise<T>): Promise<T> {
  try {
    return await create();
  } catch (err) {
    if (!lostAddRace(err)) throw err;
    return create();
  }
}

/** A stream's configuration, or undefined when there is no stream of that name. */
async function streamConfig(jsm: JetStreamManager, name: string): Promise<Record<string, unknown> | undefined> {
  try {
    return (await jsm.streams.info(name)).config as unknown as Record<string, unknown>;
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw err;
  }
}

/** Updates a stream whose configuration differs from ours in what we set (retention cannot change on a live stream; everything else we set can). */
async function converge(jsm: JetStreamManager, current: Record<string, unknown>, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  const drifted = Object.entries(cfg).some(([k, v]) => JSON.stringify(current[k]) !== JSON.stringify(v));
  if (drifted) await jsm.streams.update(cfg.name, cfg);
}
