import { rm } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BACKEND_LABELS } from "../../../runtime/scaling.js";
import type { WorkerRecord } from "../../../runtime/messages.js";
import type { StopOrder, WorkerExit } from "../decide.js";
import { workerArgs, workerLabels, type BackendContext, type ScalerBackend } from "../backend.js";
import { ProcessHandle } from "./process-handle.js";

/** This ado's own entry point (the same depth under src/ and dist/). */
const ADO_BIN = fileURLToPath(new URL("../../../../bin/ado.mjs", import.meta.url));

/** Time past the drain's grace and force periods before a stopped worker's group is killed. */
const STOP_MARGIN_MS = 5_000;

/**
 * `local`: `ado worker` processes on this host, one per worker, each in its own process
 * group, with labels `local` and `process`. The scaler supervises them: a process that
 * ends without being asked to is reported as a crash, and the scaler starts another
 * after its backoff (decide.ts). Stopping one ends its stdin: it drains (running tasks
 * finish within the grace period, then are checkpointed and handed back) and exits. A
 * worker of the pool this process did not start (a predecessor's) is asked over NATS.
 */
export class LocalBackend implements ScalerBackend {
  readonly kind = "local" as const;
  private readonly procs = new Map<string, ProcessHandle>();
  private exits: WorkerExit[] = [];
  private readonly labels: string[];
  private readonly logDir: string;
  private closing?: Promise<void>;

  constructor(private readonly ctx: BackendContext) {
    this.labels = workerLabels(BACKEND_LABELS.local, ctx.pool);
    const state = process.env.XDG_STATE_HOME || join(homedir(), ".local", "state");
    this.logDir = ctx.pool.local.logDir ?? join(state, "ado", "workers");
  }

  async launch(ids: readonly string[]): Promise<void> {
    if (this.closing) return;
    const { pool } = this.ctx;
    const [command, ...pre] = pool.local.command ? ["sh", "-c", `exec ${pool.local.command} "$@"`, "ado"] : [process.execPath, ADO_BIN];
    for (const id of ids) {
      const logFile = join(this.logDir, `${id}.log`);
      const handle = new ProcessHandle({
        command: command!,
        args: [...pre, ...workerArgs(id, pool, this.labels, this.ctx.serverUrl, this.ctx.prefix)],
        env: { ...process.env, ...this.ctx.env, ...pool.env },
        logFile,
        log: this.ctx.log,
        onExit: (end) => {
          this.procs.delete(id);
          this.exits.push({ id, requested: end.requested, detail: end.detail });
          const clean = end.requested && end.code === 0;
          if (clean) void rm(logFile, { force: true }).catch(() => undefined);
          else this.ctx.log.warn({ worker: id, pool: pool.name, ...end, log: logFile }, end.requested ? "worker stopped, not cleanly" : "worker process ended on its own");
        },
      });
      this.procs.set(id, handle);
      this.ctx.log.info({ worker: id, pool: pool.name, pid: handle.pid, log: logFile }, "worker started");
    }
  }

  async stop(orders: ReadonlyArray<StopOrder & { record?: WorkerRecord }>): Promise<void> {
    for (const o of orders) {
      const p = this.procs.get(o.id);
      if (p) p.stop(this.stopDeadline());
      else await this.ctx.drain(o.id, `scaler: ${o.why === "idle" ? "idle" : "over the pool's max"}`);
    }
  }

  async abandon(ids: readonly string[]): Promise<void> {
    for (const id of ids) this.procs.get(id)?.kill();
  }

  ready(): void {}

  takeExits(): WorkerExit[] {
    return this.exits.splice(0);
  }

  status(): Record<string, unknown> {
    return { processes: [...this.procs].map(([id, p]) => ({ id, pid: p.pid, stopping: p.requested })), logDir: this.logDir };
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const all = [...this.procs.values()];
      for (const p of all) p.stop(this.stopDeadline());
      await Promise.all(all.map((p) => p.exited()));
    })();
    return this.closing;
  }

  private stopDeadline(): number {
    return this.ctx.shutdown.graceMs + this.ctx.shutdown.forceMs + STOP_MARGIN_MS;
  }
}
