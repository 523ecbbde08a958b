import type { Logger } from "../../runtime/logger.js";
import type { WorkerRecord } from "../../runtime/messages.js";
import type { BackendKind, PoolConfig } from "../../runtime/scaling.js";
import type { StopOrder, WorkerExit } from "./decide.js";

/**
 * What a pool's backend does for the scaler: start workers, stop them, and say which of
 * the processes it started have ended. The scaler decides how many (decide.ts); the
 * backend only carries it out, each its own way (backends/*.ts).
 */
export interface ScalerBackend {
  readonly kind: BackendKind;
  /**
   * Starts workers with these ids (a backend whose workers cannot be told their id, as a
   * Deployment's pods, just starts as many). `target`: the pool's size once done.
   */
  launch(ids: readonly string[], target: number): Promise<void>;
  /**
   * Stops these workers gracefully: each drains (finishes or checkpoints and hands back
   * what it runs) and ends. `record` is the worker's last registry record, when known.
   */
  stop(orders: ReadonlyArray<StopOrder & { record?: WorkerRecord }>, target: number): Promise<void>;
  /** Gives up on workers started that never heartbeat (or no longer wanted): stopped if the backend can. */
  abandon(ids: readonly string[], target: number): Promise<void>;
  /** A worker of the pool is up (its record is live): what it needed from the host worked. */
  ready(id: string, record: WorkerRecord): void;
  /** Workers it started that ended since the last call. */
  takeExits(): WorkerExit[];
  /** For the scaler's status. */
  status(): Record<string, unknown>;
  /**
   * Stops every worker it started and waits for them (within the grace and force time).
   * Idempotent. A backend whose workers outlive the scaler by design (Kubernetes,
   * command) leaves them alone.
   */
  close(): Promise<void>;
}

/** What a backend is given. */
export interface BackendContext {
  pool: PoolConfig;
  prefix: string;
  /** The NATS URL as this process reaches it (local workers use it; SSH hosts may need another). */
  serverUrl: string;
  /** Settings of this installation a worker needs (ADO_* variables: prefix, heartbeat, directories, log level). */
  env: Record<string, string>;
  log: Logger;
  /** Time a stopped worker gets to drain, then to be forced. */
  shutdown: { graceMs: number; forceMs: number };
  /** Asks a worker over NATS to drain (for workers this process did not start); true when it answered. */
  drain(id: string, reason: string): Promise<boolean>;
  /** Whether a worker's record is still live (it has not stopped yet). */
  isLive(id: string): boolean;
}

/**
 * The backend of a pool. Kubernetes' client is imported only here, when a pool uses it:
 * the CLI never pays for it at start-up.
 */
export async function createBackend(ctx: BackendContext): Promise<ScalerBackend> {
  switch (ctx.pool.backend) {
    case "local":
      return new (await import("./backends/local.js")).LocalBackend(ctx);
    case "ssh":
      return new (await import("./backends/ssh.js")).SshBackend(ctx);
    case "kubernetes":
      return new (await import("./backends/kubernetes.js")).KubernetesBackend(ctx);
    case "command":
      return new (await import("./backends/command.js")).CommandBackend(ctx);
  }
}

/** The labels a pool's workers advertise: the backend's own, the pool's, and extra ones (an SSH host's). */
export function workerLabels(backendLabels: readonly string[], pool: PoolConfig, extra: readonly string[] = []): string[] {
  return [...new Set([...backendLabels, ...pool.labels, ...extra])];
}

/** `ado worker` arguments for a worker of a pool. */
export function workerArgs(id: string, pool: PoolConfig, labels: readonly string[], server: string, prefix: string): string[] {
  return [
    "worker",
    "--id",
    id,
    "--pool",
    pool.name,
    "--slots",
    String(pool.slots),
    ...(labels.length ? ["--labels", labels.join(",")] : []),
    ...(pool.capabilities.length ? ["--capabilities", pool.capabilities.join(",")] : []),
    "--server",
    server,
    "--prefix",
    prefix,
    // Its supervisor holds its stdin: when that ends (the supervisor stopped it, or died), it drains and stops.
    "--exit-on-stdin-close",
  ];
}
