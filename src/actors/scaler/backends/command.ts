import { execFile } from "node:child_process";
import { errorMessage } from "../../../runtime/errors.js";
import type { WorkerRecord } from "../../../runtime/messages.js";
import type { StopOrder, WorkerExit } from "../decide.js";
import type { BackendContext, ScalerBackend } from "../backend.js";

/** How often a stopped worker's record is checked before its `down` command runs. */
const GONE_POLL_MS = 500;
/** Time past the drain's grace and force periods after which `down` runs anyway. */
const STOP_MARGIN_MS = 5_000;

/** The environment a pool's `up` and `down` commands get. */
export function commandEnv(
  ctx: Pick<BackendContext, "pool" | "prefix" | "serverUrl">,
  ids: readonly string[],
  target: number,
  hosts: readonly string[] = [],
): Record<string, string> {
  return {
    ADO_SCALE_POOL: ctx.pool.name,
    ADO_SCALE_COUNT: String(ids.length),
    ADO_SCALE_TARGET: String(target),
    ADO_WORKER_IDS: ids.join(" "),
    ADO_WORKER_HOSTS: hosts.join(" "),
    ADO_SERVER: ctx.serverUrl,
    ADO_PREFIX: ctx.prefix,
  };
}

/**
 * `command`: the user's own scale-up and scale-down commands (Docker, Coolify, an EC2
 * script), run by `sh -c` with the count, the pool's new size and the worker ids in
 * the environment (commandEnv). `up` starts workers that run `ado worker --id <id>
 * --pool <pool>` (the ids let the scaler see its warm-up end); a failing `up` counts as
 * a failed start (the scaler backs off). Scale-in first asks each worker over NATS to
 * drain, waits until it has stopped (its record gone or silent, at most the grace and
 * force time), then runs `down` for it, so the user's command never removes a worker
 * with an agent still running. Workers outlive the scaler: close() leaves them.
 */
export class CommandBackend implements ScalerBackend {
  readonly kind = "command" as const;
  private exits: WorkerExit[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly counts = { up: 0, down: 0, failed: 0 };
  private closed = false;

  constructor(private readonly ctx: BackendContext) {}

  async launch(ids: readonly string[], target: number): Promise<void> {
    if (this.closed || ids.length === 0) return;
    this.track(
      this.run("up", ids, target).then(
        () => void this.counts.up++,
        (err) => {
          this.counts.failed++;
          for (const id of ids) this.exits.push({ id, requested: false, detail: `scale-up command failed: ${errorMessage(err)}` });
        },
      ),
    );
  }

  async stop(orders: ReadonlyArray<StopOrder & { record?: WorkerRecord }>, target: number): Promise<void> {
    if (orders.length === 0) return;
    for (const o of orders) await this.ctx.drain(o.id, `scaler: ${o.why === "idle" ? "idle" : "over the pool's max"}`);
    const ids = orders.map((o) => o.id);
    const hosts = orders.map((o) => o.record?.host ?? "");
    this.track(
      (async () => {
        const deadline = Date.now() + this.ctx.shutdown.graceMs + this.ctx.shutdown.forceMs + STOP_MARGIN_MS;
        while (!this.closed && ids.some((id) => this.ctx.isLive(id)) && Date.now() < deadline) await sleep(GONE_POLL_MS);
        try {
          await this.run("down", ids, target, hosts);
          this.counts.down++;
        } catch (err) {
          this.counts.failed++;
          this.ctx.log.warn({ workers: ids, err: errorMessage(err) }, "scale-down command failed (the workers have drained)");
        }
        for (const id of ids) this.exits.push({ id, requested: true, detail: "removed by the scale-down command" });
      })(),
    );
  }

  async abandon(ids: readonly string[], target: number): Promise<void> {
    if (ids.length === 0) return;
    this.track(this.run("down", ids, target).catch((err) => this.ctx.log.warn({ workers: ids, err: errorMessage(err) }, "scale-down command failed for workers given up on")));
  }

  ready(): void {}

  takeExits(): WorkerExit[] {
    return this.exits.splice(0);
  }

  status(): Record<string, unknown> {
    return { commandsRunning: this.inFlight.size, ...this.counts };
  }

  /** Waits for commands under way; the workers themselves are the user's and stay. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.inFlight]);
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private run(which: "up" | "down", ids: readonly string[], target: number, hosts: readonly string[] = []): Promise<void> {
    const cfg = this.ctx.pool.command!;
    const command = which === "up" ? cfg.up : cfg.down;
    return new Promise((resolve, reject) => {
      execFile("sh", ["-c", command], { env: { ...process.env, ...this.ctx.env, ...this.ctx.pool.env, ...commandEnv(this.ctx, ids, target, hosts) }, timeout: cfg.timeout, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
        const out = `${stdout}${stderr}`.trim().slice(-2_000);
        if (err) reject(new Error(`\`${command}\` (${which}, ${ids.length} worker(s)): ${errorMessage(err)}${out ? `\n${out}` : ""}`));
        else {
          this.ctx.log.info({ which, workers: ids, output: out }, `scale-${which} command done`);
          resolve();
        }
      });
    });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
