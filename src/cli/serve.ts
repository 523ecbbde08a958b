import { join } from "node:path";
import { homedir } from "node:os";
import { Stack, type ActorKind } from "../actors/stack.js";
import { CliError, configFrom, Exit, requireServer, type CommonFlags } from "./common.js";
import { PortInUseError } from "../runtime/embedded-server.js";
import { StoreInUseError } from "../runtime/store-lock.js";
import { startHealthServer } from "../runtime/health.js";
import type { Logger } from "../runtime/logger.js";
import { onShutdown } from "./signals.js";
import { ID_PATTERN } from "../runtime/ids.js";
import { readUpState, removeUpState, writeUpState } from "./up-state.js";

const say = (msg: string) => process.stderr.write(`ado: ${msg}\n`);

/**
 * Runs a stack until SIGINT/SIGTERM, then closes it gracefully. With a health port,
 * `GET /health` and `GET /ready` answer for Kubernetes probes (not ready while draining).
 */
async function serveUntilSignal(stack: Stack, healthPort: number | undefined, logger: Logger, onStop?: () => Promise<void>, stopWhen?: Promise<string>): Promise<number> {
  const health =
    healthPort === undefined
      ? undefined
      : await startHealthServer({ port: healthPort, logger, checks: { live: () => stack.health().live, ready: () => stack.health().ready } });
  if (health) say(`health: http://0.0.0.0:${health.port}/health and /ready`);
  await new Promise<void>((resolve) => {
    let stopping: Promise<void> | undefined;
    const stop = (why: string) =>
      (stopping ??= (async () => {
        say(`${why}: draining`);
        await stack.close();
        await onStop?.();
        await health?.close();
        resolve();
      })());
    onShutdown((signal) => stop(`${signal} (a second signal forces)`), say);
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
  workers?: number;
  slots?: number;
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
    stack = await Stack.start({ config: { ...config, server: undefined, embedded: { storeDir, port: flags.port } }, logger });
  } catch (err) {
    if (err instanceof PortInUseError) throw new CliError(`${err.message} (ado up --port <n>)`);
    if (err instanceof StoreInUseError) throw new CliError(`${err.message} (ado up --store <dir>)`);
    throw err;
  }
  const statePath = await writeUpState({ url: stack.url, pid: process.pid, prefix: config.prefix, startedAt: new Date().toISOString(), storeDir });
  process.stdout.write(
    [
      `ado is up: NATS at ${stack.url} (JetStream store ${storeDir})`,
      `  actors: ${stack.actors.map((a) => a.kind).join(", ")}; workers: ${stack.workers.length} x ${config.slots} slot(s)`,
      `  other ado commands on this machine use it (${statePath}); elsewhere: --server ${stack.url}`,
      `  Ctrl-C stops it.`,
      "",
    ].join("\n"),
  );
  return serveUntilSignal(stack, flags.healthPort, logger, () => removeUpState(config.prefix));
}

export interface WorkerFlags extends ServeFlags {
  count: number;
  slots?: number;
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
  const { config: loaded, logger } = await configFrom(flags);
  const config = flags.pool === undefined ? loaded : { ...loaded, worker: { ...loaded.worker, pool: flags.pool } };
  if (config.worker.pool !== undefined && !ID_PATTERN.test(config.worker.pool)) throw new CliError(`--pool '${config.worker.pool}' is not a pool name: letters, digits, '_' or '-'`);
  const server = await requireServer(config, "ado worker");
  const stack = await Stack.start({ config, logger, server, actors: [], ...(flags.id !== undefined ? { workerIds: [flags.id] } : { workers: flags.count }) });
  say(`${stack.workers.length} worker(s) (${config.slots} slot(s) each) on ${server}: ${stack.workers.map((w) => w.id).join(", ")}`);
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
  return serveUntilSignal(stack, flags.healthPort, logger, undefined, Promise.race(reasons));
}

/** `ado actor <name>`: one actor replica against an existing server. */
export async function actorCommand(name: ActorKind, flags: ServeFlags): Promise<number> {
  const { config, logger } = await configFrom(flags);
  const server = await requireServer(config, `ado actor ${name}`);
  const stack = await Stack.start({ config, logger, server, actors: [name], workers: 0 });
  say(`${name} running on ${server} (instance ${stack.actors[0]?.instance})`);
  return serveUntilSignal(stack, flags.healthPort, logger);
}
