import { hostname } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Actor, ActorContext } from "../runtime/actor.js";
import type { Config } from "../runtime/config.js";
import { connectNats, drainQuietly } from "../runtime/connection.js";
import { EmbeddedServer } from "../runtime/embedded-server.js";
import { errorMessage } from "../runtime/errors.js";
import { newWorkerId, type WorkerId } from "../runtime/ids.js";
import type { Logger } from "../runtime/logger.js";
import { describeServerHealth, ServerCondition, ServerHealthMonitor } from "../runtime/server-health.js";
import { authForRole, type NatsAuth, type Role } from "../runtime/nats-auth.js";
import { openBuckets, provision, resolveReplicas, topology, type Topology } from "../runtime/topology.js";
import { Balancer } from "./balancer/balancer.js";
import { Merger } from "./merger/merger.js";
import { Stealer } from "./stealer/stealer.js";
import { Scheduler } from "./scheduler/scheduler.js";
import { Scaler } from "./scaler/scaler.js";
import { Worker } from "./worker/worker.js";
import { hostAgents, priceOf, priceTable } from "../agents/index.js";
import { expectedTaskCost, type ProvidersConfig } from "../runtime/providers.js";
import { Recorder } from "./recorder/recorder.js";
import { Notifier } from "./notifier/notifier.js";
import { ApiActor } from "./api/api.js";
import { addStackMetrics } from "./stack-metrics.js";
import { Metrics } from "../runtime/metrics.js";

export type ActorKind = "scheduler" | "balancer" | "merger" | "stealer" | "recorder" | "notifier" | "scaler" | "api";
export const ACTOR_KINDS: readonly ActorKind[] = ["scheduler", "balancer", "merger", "stealer", "recorder", "notifier", "scaler", "api"];

/** The actors a full stack starts: the scaler only when pools are configured (it has nothing to do otherwise). */
export function defaultActors(config: Config): ActorKind[] {
  return ACTOR_KINDS.filter((k) => k !== "scaler" || config.scaler.pools.length > 0);
}

/**
 * What a worker started by the scaler inherits from this installation's config (the
 * rest comes from its flags), and the stack's per-role seeds when its server has them.
 */
export function workerEnvOf(config: Config, auth?: NatsAuth): Record<string, string> {
  return {
    ...(auth?.roleDir ? { ADO_NATS_ROLE_DIR: auth.roleDir } : {}),
    ADO_HEARTBEAT_MS: String(config.heartbeatMs),
    ADO_WORKTREE_DIR: config.worktreeDir,
    ADO_CLONE_DIR: config.git.cloneDir,
    ADO_GIT_ACCESS: config.git.access,
    ADO_LOG_LEVEL: config.logLevel,
  };
}

export interface StackOptions {
  config: Config;
  logger: Logger;
  /** Start these actor kinds (default: all). */
  actors?: readonly ActorKind[];
  /** Workers to start (default: config.workers). */
  workers?: number;
  /** Ids of the workers to start (`ado worker --id`, as the scaler starts them); default fresh ones. */
  workerIds?: readonly string[];
  /** Use this server instead of config.server / an embedded one. */
  server?: string;
  /** Recorder snapshot cadence (tests make it tighter). */
  recorder?: { everyEvents?: number; everyMs?: number };
}

/**
 * A set of actors and workers in one process, each on its own named NATS connection,
 * against a given server or an embedded one started for the stack. This is what
 * `ado run` (no server), `ado up`, `ado actor` and `ado worker` start, in different
 * amounts; the actors only ever talk over NATS, so the same code runs split across
 * processes and hosts.
 */
export class Stack {
  private closing?: Promise<void>;
  private dropMetrics?: () => void;
  /** Watches the server (a full or deadlocked JetStream store fails readiness, saying what to do). */
  private serverHealth?: ServerHealthMonitor;

  private constructor(
    readonly url: string,
    readonly topo: Topology,
    readonly embedded: EmbeddedServer | undefined,
    /**
     * How this stack's connections authenticate (each role's own by `authForRole`):
     * the embedded server's per-role seeds, none for an embedded server without auth,
     * else the configured settings. Clients of this process connect with it too.
     */
    readonly auth: NatsAuth,
    readonly actors: Actor[],
    readonly workers: Worker[],
    private readonly conns: NatsConnection[],
    private readonly logger: Logger,
    private readonly config: Config,
    /** This process's Prometheus metrics (served at `GET /metrics` by the health server). */
    readonly metrics: Metrics,
  ) {}

  static async start(opts: StackOptions): Promise<Stack> {
    const { config, logger } = opts;
    const topo = topology(config.prefix);
    const serverUrl = opts.server ?? config.server;
    const embedded = serverUrl
      ? undefined
      : await EmbeddedServer.start({ storeDir: config.embedded.storeDir, port: config.embedded.port, logger, ...(config.embedded.auth ? { auth: topo } : {}) });
    const url = serverUrl ?? embedded!.url;
    const natsAuth: NatsAuth = embedded ? (embedded.roleDir ? { roleDir: embedded.roleDir } : {}) : config.nats;
    const conns: NatsConnection[] = [];
    const actors: Actor[] = [];
    const workers: Worker[] = [];
    const metrics = new Metrics();
    const stack = new Stack(url, topo, embedded, natsAuth, actors, workers, conns, logger, config, metrics);
    try {
      const auth = (role: Role) => authForRole(natsAuth, role);
      const admin = await connectNats({ servers: url, name: `${topo.prefix}-admin-${hostname()}`, logger, auth: auth("admin") });
      conns.push(admin);
      await provision(admin, topo, { replicas: resolveReplicas(config.nats.replicas, admin.info) });
      stack.serverHealth = new ServerHealthMonitor({ servers: url, name: `${topo.prefix}-health-${hostname()}-${process.pid}`, logger, auth: auth("observer") }).start();
      // Each actor owns its connection, as it would in a process of its own.
      const ctxFor = async (name: string, role: Role): Promise<ActorContext> => {
        const nc = await connectNats({ servers: url, name, logger, auth: auth(role) });
        conns.push(nc);
        return { nc, topo, kv: await openBuckets(nc, topo), logger };
      };
      const { worktreeDir } = config;
      for (const kind of opts.actors ?? defaultActors(config)) {
        const instance = `${kind}-${hostname()}-${process.pid}`;
        const ctx = await ctxFor(`${topo.prefix}-${instance}`, kind);
        const actor = ((): Actor => {
          switch (kind) {
            case "scheduler":
              return new Scheduler(instance, ctx, { maxQueued: config.maxQueued });
            case "balancer":
              return new Balancer(instance, ctx, { heartbeatMs: config.heartbeatMs, strategy: config.balancer.strategy, maxHeld: config.balancer.maxHeld, providers: config.providers, taskCosts: taskCosts(config.providers, config.prices) });
            case "stealer":
              return new Stealer(instance, ctx, { heartbeatMs: config.heartbeatMs, rebalanceIntervalMs: config.stealer.rebalanceInterval, rebalanceThreshold: config.stealer.rebalanceThreshold });
            case "recorder":
              return new Recorder(instance, ctx, { metrics, ...opts.recorder });
            case "notifier":
              return new Notifier(instance, ctx, config.notifications);
            case "scaler":
              return new Scaler(instance, ctx, { heartbeatMs: config.heartbeatMs, config: config.scaler, serverUrl: url, workerEnv: workerEnvOf(config, natsAuth), shutdown: config.shutdown });
            case "merger":
              return new Merger(instance, ctx, { worktreeDir, cloneDir: config.git.cloneDir });
            case "api":
              return new ApiActor(instance, ctx, { pools: config.scaler.pools.map((p) => ({ name: p.name, min: p.min, max: p.max })) });
          }
        })();
        actors.push(await actor.start());
      }
      const workerCount = opts.workerIds?.length ?? opts.workers ?? config.workers;
      // The agent CLIs this host runs, probed once for all its workers: each offers only those.
      const host = workerCount > 0 ? await hostAgents(config.agents, config.prices) : undefined;
      for (const p of host?.probes ?? []) {
        if (p.available) logger.info({ agent: p.name, version: p.version, path: p.path }, "agent CLI found");
        else logger.debug({ agent: p.name, reason: p.reason }, "agent CLI not offered");
      }
      for (let i = 0; i < workerCount; i++) {
        const given = opts.workerIds?.[i];
        const workerId = given !== undefined ? (given as WorkerId) : newWorkerId(hostname());
        const ctx = await ctxFor(`${topo.prefix}-${workerId}`, "worker");
        workers.push(
          await new Worker(ctx, { workerId, agents: host!.agents, agentVersions: host!.versions, checkpointIntervalMs: config.checkpointIntervalMs, slots: config.slots, heartbeatMs: config.heartbeatMs, worktreeDir, worktrees: config.worktrees, gitAccess: config.git.access, cloneDir: config.git.cloneDir, shutdown: config.shutdown, ...config.worker, providers: config.providers }).start(),
        );
      }
      stack.dropMetrics = await addStackMetrics(metrics, admin, topo, actors, workers);
      return stack;
    } catch (err) {
      await stack.close();
      throw err;
    }
  }

  /**
   * Liveness: no actor has failed. Readiness: every actor runs, every connection is up,
   * and the server's JetStream answers and has room (restarting ado would not fix that,
   * so it is not a liveness failure).
   */
  health(): { live: { ok: boolean; reason: string }; ready: { ok: boolean; reason: string } } {
    const all: Actor[] = [...this.actors, ...this.workers];
    const failed = all.filter((a) => a.state === "failed");
    const notRunning = all.filter((a) => a.state !== "running");
    const down = this.conns.filter((nc) => nc.isClosed());
    const server = this.serverHealth?.current;
    const serverTrouble =
      server && server.condition !== ServerCondition.ok
        ? describeServerHealth(server, { storeDir: this.embedded?.storeDir, embedded: !!this.embedded, url: this.url })
        : undefined;
    return {
      live: failed.length ? { ok: false, reason: `failed: ${failed.map((a) => a.instance).join(", ")}` } : { ok: true, reason: "ok" },
      ready: notRunning.length
        ? { ok: false, reason: `${notRunning.map((a) => `${a.instance} ${a.state}`).join(", ")}` }
        : down.length
          ? { ok: false, reason: `${down.length} NATS connection(s) closed` }
          : serverTrouble
            ? { ok: false, reason: serverTrouble }
            : { ok: true, reason: "ok" },
    };
  }

  /**
   * Stops the workers only, with no time limit: nothing new starts, running tasks run to
   * their end (and the actors, still running, record and merge them), queued work is
   * handed back. `interruptWorkers()` cuts it short; `close()` then stops the rest.
   * This is what a first Ctrl-C of `ado run` does.
   */
  stopWorkers(): Promise<void> {
    // setTimeout caps at 2^31-1 ms (~24 days); anything longer would fire at once.
    const untilInterrupted = 2 ** 31 - 1 - this.config.shutdown.forceMs;
    // The scaler's workers (`ado run --auto-scale`) are processes of its pools: the scaler
    // stops deciding and asks each to drain (within the shutdown grace, then a checkpoint).
    const scalers = this.actors.filter((a) => a.kind === "scaler");
    return Promise.all([
      ...this.workers.map((w) => w.close({ graceMs: untilInterrupted, forceMs: this.config.shutdown.forceMs })),
      // Its backends wait up to grace + force + 5 s for a worker process before killing it.
      ...scalers.map((a) => a.close({ graceMs: this.config.shutdown.graceMs + this.config.shutdown.forceMs + 5_000, forceMs: this.config.shutdown.forceMs })),
    ]).then(() => undefined);
  }

  /**
   * Interrupts what the workers run now (a second Ctrl-C): each agent is killed, its work
   * so far committed on the task branch as a checkpoint, and the attempt reported
   * interrupted, so the next attempt continues from it. Workers not yet stopping are
   * stopped.
   */
  interruptWorkers(): Promise<void> {
    const stopped = this.stopWorkers();
    for (const w of this.workers) w.hurry();
    return stopped;
  }

  /**
   * Stops workers first (they finish or hand back their tasks), then the actors, then
   * the connections, then the embedded server. Idempotent; every step runs even if an
   * earlier one failed.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const { graceMs, forceMs } = this.config.shutdown;
      this.dropMetrics?.();
      const steps: Array<() => Promise<unknown>> = [
        async () => this.serverHealth?.stop(),
        () => Promise.all(this.workers.map((w) => w.close({ graceMs, forceMs }))),
        () => Promise.all(this.actors.map((a) => a.close({ graceMs, forceMs }))),
        () => Promise.all(this.conns.map((nc) => drainQuietly(nc, this.logger))),
        async () => this.embedded?.stop(),
      ];
      for (const step of steps) {
        await step().catch((err) => this.logger.error({ err: errorMessage(err) }, "stack shutdown step failed"));
      }
    })();
    return this.closing;
  }
}

/** Each priced provider's expected cost of a task (USD) at the price table in force, for `rotation: cost_optimized`. */
function taskCosts(providers: ProvidersConfig, prices: Config["prices"]): Record<string, number> {
  const table = priceTable(prices);
  const out: Record<string, number> = {};
  for (const [name, def] of Object.entries(providers)) {
    const usd = expectedTaskCost(def, (model) => priceOf(model, table));
    if (usd !== undefined) out[name] = usd;
  }
  return out;
}
