import { join } from "node:path";
import { homedir } from "node:os";
import { Stack, type ActorKind } from "../actors/stack.js";
import { CliError, configFrom, Exit, requireServer, type CommonFlags, type ServerRef } from "./common.js";
import { PortInUseError } from "../runtime/embedded-server.js";
import { StoreInUseError } from "../runtime/store-lock.js";
import { startHealthServer } from "../runtime/health.js";
import type { Logger } from "../runtime/logger.js";
import { describeSlots, type Config } from "../runtime/config.js";
import { onShutdown } from "./signals.js";
import { ID_PATTERN } from "../runtime/ids.js";
import { readUpState, removeUpState, writeUpState } from "./up-state.js";
import { startDashboard, DashboardError, type Dashboard } from "../dashboard/server.js";
import { clientConnection } from "./common.js";
import { drainQuietly } from "../runtime/connection.js";

const say = (msg: string) => process.stderr.write(`ado: ${msg}\n`);

/**
 * Runs a stack until SIGINT/SIGTERM, then closes it gracefully. With a health port,
 * `GET /health` and `GET /ready` answer for Kubernetes probes (not ready while draining),
 * and `GET /metrics` in the Prometheus format.
 */
async function serveUntilSignal(
  stack: Stack,
  healthPort: number | undefined,
  logger: Logger,
  onStop?: () => Promise<void>,
  beforeClose?: () => Promise<void>,
  stopWhen?: Promise<string>,
  /** The start lines, printed once the signal handlers are set: whoever waits for them may signal at once (a SIGINT before them killed the process undrained). */
  announce?: () => void,
): Promise<number> {
  const health =
    healthPort === undefined
      ? undefined
      : await startHealthServer({ port: healthPort, logger, checks: { live: () => stack.health().live, ready: () => stack.health().ready }, metrics: stack.metrics });
  if (health) say(`health: http://0.0.0.0:${health.port}/health, /ready and /metrics`);
  await new Promise<void>((resolve) => {
    let stopping: Promise<void> | undefined;
    const stop = (why: string) =>
      (stopping ??= (async () => {
        say(`${why}: draining`);
        await beforeClose?.().catch(() => undefined);
        await stack.close();
        await onStop?.();
        await health?.close();
        resolve();
      })());
    onShutdown((signal) => stop(`${signal} (a second signal forces)`), say);
    announce?.();
    void stopWhen?.then(stop);
  });
  return Exit.ok;
}

export interface ServeFlags extends CommonFlags {
  healthPort?: number;
}

export interface UpFlags extends ServeFlags {
  port: number;
  store?: string;
  /** `--no-dashboard` makes it false. */
  dashboard?: boolean;
  /** `--no-auth` makes it false: the server takes connections without credentials. */
  auth?: boolean;
  dashboardPort?: number;
  workers?: number;
  slots?: number | "auto";
}

/** `ado up`: embedded NATS + every actor + workers, kept running for other commands. */
export async function upCommand(flags: UpFlags): Promise<number> {
  const { config, logger } = await configFrom({ ...flags, server: undefined });
  const storeDir = flags.store ?? config.embedded.storeDir ?? join(process.env.XDG_STATE_HOME || join(homedir(), ".local", "state"), "ado", "nats");
  // Before anything starts: a second stack would share the first one's store and state file.
  const running = await readUpState(config.prefix);
  if (running) {
    throw new CliError(
      `\`ado up\` is already running: pid ${running.pid}, ${running.url}${running.storeDir ? ` (store ${running.storeDir})` : ""}. ` +
        `Other ado commands use it as it is; to restart it, stop it first (Ctrl-C in its terminal, or kill ${running.pid})`,
    );
  }
  let stack: Stack;
  try {
    stack = await Stack.start({ config: { ...config, server: undefined, embedded: { storeDir, port: flags.port, auth: flags.auth !== false && config.embedded.auth } }, logger });
  } catch (err) {
    if (err instanceof PortInUseError) throw new CliError(`${err.message} (ado up --port <n>)`);
    if (err instanceof StoreInUseError) throw new CliError(`${err.message} (ado up --store <dir>)`);
    throw err;
  }
  let dashboard: Dashboard | undefined;
  try {
    dashboard = flags.dashboard === false ? undefined : await serveDashboard(stack, config.prefix, flags.dashboardPort, logger, config.heartbeatMs);
  } catch (err) {
    await stack.close();
    throw err;
  }
  const roleDir = stack.auth.roleDir;
  const statePath = await writeUpState({ url: stack.url, pid: process.pid, prefix: config.prefix, startedAt: new Date().toISOString(), storeDir, ...(roleDir ? { roleDir } : {}) });
  const announce = () =>
    process.stdout.write(
      [
        `ado is up: NATS at ${stack.url} (JetStream store ${storeDir})`,
        `  actors: ${stack.actors.map((a) => a.kind).join(", ")}; workers: ${stack.workers.length} x ${config.slots} slot(s)`,
        ...(config.slotsAuto !== undefined && stack.workers.length > 0 ? [`  ${describeSlots(config)}`] : []),
        `  other ado commands on this machine use it (${statePath}); elsewhere: --server ${stack.url}`,
        roleDir
          ? `  auth: a user per role, keys in ${roleDir} (yours only); another tool connects with one, e.g. \`nats --nkey ${roleDir}/client.nk\``
          : `  auth: off (--no-auth): anyone who reaches the port can submit work and read prompts`,
        ...(dashboard ? [`  dashboard: ${dashboard.url}`] : []),
        `  Ctrl-C stops it.`,
        "",
      ].join("\n"),
    );
  // The dashboard goes first: its clients are told the stream ended, not that NATS went away.
  return serveUntilSignal(stack, flags.healthPort, logger, () => removeUpState(config.prefix), async () => dashboard?.close(), undefined, announce);
}

/**
 * The dashboard of `ado up`, on a connection of its own like any client. The default
 * port taken (another `ado up` of another prefix, say): a free one, said in the URL.
 */
async function serveDashboard(stack: Stack, prefix: string, port: number | undefined, logger: Logger, heartbeatMs: number): Promise<Dashboard> {
  const nc = await clientConnection({ url: stack.url, auth: stack.auth }, logger, "dashboard");
  const start = (p: number) => startDashboard({ nc, topo: stack.topo, logger, port: p, metrics: stack.metrics, heartbeatMs });
  try {
    const dashboard = await start(port ?? 4280).catch((err) => {
      if (port === undefined && err instanceof DashboardError) return start(0);
      throw err;
    });
    return {
      ...dashboard,
      port: dashboard.port,
      url: dashboard.url,
      close: async () => {
        await dashboard.close();
        await drainQuietly(nc, logger);
      },
    };
  } catch (err) {
    await drainQuietly(nc, logger);
    if (err instanceof DashboardError) throw new CliError(`${err.message} (prefix ${prefix})`);
    throw err;
  }
}

export interface WorkerFlags extends ServeFlags {
  count: number;
  slots?: number | "auto";
  labels?: string;
  capabilities?: string;
  id?: string;
  pool?: string;
  exitOnStdinClose?: boolean;
}

/** `ado worker`: N workers in this process against an existing server. */
export async function workerCommand(flags: WorkerFlags): Promise<number> {
  if (flags.id !== undefined) {
    if (!ID_PATTERN.test(flags.id)) throw new CliError(`--id '${flags.id}' is not a worker id: 1-64 letters, digits, '_' or '-', starting with a letter or digit`);
    if (flags.count !== 1) throw new CliError(`--id names one worker; drop --count ${flags.count} (or drop --id)`);
  }
  // `slots: auto` shares the host among the workers this process starts.
  const { config: loaded, logger } = await configFrom({ ...flags, workers: flags.count });
  const config = flags.pool === undefined ? loaded : { ...loaded, worker: { ...loaded.worker, pool: flags.pool } };
  if (config.worker.pool !== undefined && !ID_PATTERN.test(config.worker.pool)) throw new CliError(`--pool '${config.worker.pool}' is not a pool name: letters, digits, '_' or '-'`);
  const server = await requireServer(config, "ado worker");
  const stack = await Stack.start({ config: withServerAuth(config, server), logger, server: server.url, actors: [], ...(flags.id !== undefined ? { workerIds: [flags.id] } : { workers: flags.count }) });
  const announce = () => {
    say(`${stack.workers.length} worker(s) (${config.slots} slot(s) each) on ${server.url}: ${stack.workers.map((w) => w.id).join(", ")}`);
    // Where auto decided (the default, or `slots: auto`): how many, and why.
    if (config.slotsAuto !== undefined) say(describeSlots(config));
  };
  // The process ends once its workers have stopped, whoever asked (`ado workers drain`, the scaler), or when its supervisor lets go of stdin.
  const reasons: Array<Promise<string>> = [Promise.all(stack.workers.map((w) => w.whenStopped())).then(() => "every worker stopped")];
  if (flags.exitOnStdinClose) {
    reasons.push(
      new Promise((resolve) => {
        process.stdin.on("end", () => resolve("stdin closed"));
        process.stdin.on("error", () => resolve("stdin failed"));
        process.stdin.resume();
      }),
    );
  }
  return serveUntilSignal(stack, flags.healthPort, logger, undefined, undefined, Promise.race(reasons), announce);
}

/** The config of processes that join a server: its credentials when found with it (the seeds of an `ado up` on this machine). */
function withServerAuth(config: Config, server: ServerRef): Config {
  return server.auth ? { ...config, nats: { ...server.auth, replicas: config.nats.replicas } } : config;
}

/** `ado actor <name>`: one actor replica against an existing server. */
export async function actorCommand(name: ActorKind, flags: ServeFlags): Promise<number> {
  const { config, logger } = await configFrom(flags);
  const server = await requireServer(config, `ado actor ${name}`);
  const stack = await Stack.start({ config: withServerAuth(config, server), logger, server: server.url, actors: [name], workers: 0 });
  return serveUntilSignal(stack, flags.healthPort, logger, undefined, undefined, undefined, () => say(`${name} running on ${server.url} (instance ${stack.actors[0]?.instance})`));
}
