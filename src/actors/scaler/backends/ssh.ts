import { execFile } from "node:child_process";
import { homedir } from "node:os";
import { join } from "node:path";
import { errorMessage } from "../../../runtime/errors.js";
import type { WorkerRecord } from "../../../runtime/messages.js";
import { backoffDelay, Backoff } from "../../../runtime/retry.js";
import { BACKEND_LABELS, type SshHost } from "../../../runtime/scaling.js";
import type { StopOrder, WorkerExit } from "../decide.js";
import { workerArgs, workerLabels, type BackendContext, type ScalerBackend } from "../backend.js";
import { ProcessHandle } from "./process-handle.js";

/** Time past the drain's grace and force periods before a stopped worker's ssh is killed. */
const STOP_MARGIN_MS = 5_000;
/** `ssh` exits 255 when it could not connect or authenticate. */
const SSH_FAILED = 255;

interface HostState {
  cfg: SshHost;
  /** Failed starts in a row (no connection, or the worker ended before its first heartbeat). */
  failures: number;
  /** Circuit open until then: no start is tried on the host. */
  openUntil: number;
  workers: Set<string>;
}

interface Remote {
  handle: ProcessHandle;
  host: HostState;
  /** Its first record was seen: the host works. */
  up: boolean;
  pid?: number;
}

/** A word for the remote shell, quoted so that nothing in it is interpreted. */
export const shellQuote = (s: string) => (/^[A-Za-z0-9_./:=,@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/**
 * `ssh`: `ado worker` started on the pool's hosts over SSH, dialing back to NATS. Each
 * worker is one `ssh` client process here (its own process group), whose stdin is the
 * worker's: ending it makes the worker drain and exit, and should this process die the
 * remote worker sees its stdin end the same way. On the host a worker runs in the
 * host's `workDir`, with its worktrees and clones under it and a scratch directory
 * (`workers/<id>`, its TMPDIR) removed after it stopped when `cleanup` is on.
 *
 * A host that fails (ssh exits 255, or the worker ends before its first heartbeat) is
 * tried again with backoff: its circuit opens for Backoff.hostCircuit (5 s doubling to
 * 5 min), then half-opens for one trial start; a worker coming up closes it. Starts go
 * to hosts with a closed circuit first, the least loaded first.
 */
export class SshBackend implements ScalerBackend {
  readonly kind = "ssh" as const;
  private readonly hosts: HostState[];
  private readonly remotes = new Map<string, Remote>();
  private exits: WorkerExit[] = [];
  private readonly logDir: string;
  private closing?: Promise<void>;

  constructor(
    private readonly ctx: BackendContext,
    private readonly now: () => number = Date.now,
  ) {
    const ssh = ctx.pool.ssh!;
    this.hosts = ssh.hosts.map((cfg) => ({ cfg, failures: 0, openUntil: 0, workers: new Set() }));
    const state = process.env.XDG_STATE_HOME || join(homedir(), ".local", "state");
    this.logDir = ctx.pool.local.logDir ?? join(state, "ado", "workers");
  }

  async launch(ids: readonly string[]): Promise<void> {
    if (this.closing) return;
    for (const id of ids) {
      const host = this.pick();
      if (!host) {
        this.exits.push({ id, requested: false, detail: `no SSH host can take a worker: ${this.describeHosts()}` });
        continue;
      }
      this.start(id, host);
    }
  }

  /** The host for the next start: circuit closed first, then half-open with no trial under way; the least loaded; config order. */
  pick(): HostState | undefined {
    const now = this.now();
    const trying = (h: HostState) => [...h.workers].some((id) => !this.remotes.get(id)?.up);
    const usable = this.hosts.filter((h) => h.workers.size < h.cfg.maxWorkers && h.openUntil <= now && (h.failures === 0 || !trying(h)));
    return usable.sort((a, b) => Math.sign(a.failures) - Math.sign(b.failures) || a.workers.size - b.workers.size)[0];
  }

  private start(id: string, host: HostState): void {
    const { pool } = this.ctx;
    const ssh = pool.ssh!;
    const h = host.cfg;
    const dir = h.workDir.replace(/\/+$/, "");
    const scratch = `${dir}/workers/${id}`;
    const env = {
      ...this.ctx.env,
      ...pool.env,
      TMPDIR: `${scratch}/tmp`,
      ADO_WORKTREE_DIR: `${dir}/worktrees`,
      ADO_CLONE_DIR: `${dir}/clones`,
    };
    const args = workerArgs(id, pool, workerLabels(BACKEND_LABELS.ssh, pool, h.labels), ssh.server ?? this.ctx.serverUrl, this.ctx.prefix);
    // One string for the remote shell: `command` is the user's (e.g. `node /opt/ado/bin/ado.mjs`), everything else quoted.
    const remote = [
      `mkdir -p ${shellQuote(`${scratch}/tmp`)}`,
      `cd ${shellQuote(dir)}`,
      `exec env ${Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)}`).join(" ")} ${ssh.command} ${args.map(shellQuote).join(" ")}`,
    ].join(" && ");
    const logFile = join(this.logDir, `${id}.log`);
    const handle = new ProcessHandle({
      command: "ssh",
      args: [...this.sshArgs(h), remote],
      env: process.env,
      logFile,
      log: this.ctx.log,
      onExit: (end) => {
        const r = this.remotes.get(id);
        this.remotes.delete(id);
        host.workers.delete(id);
        if (r && !r.up && !end.requested) this.hostFailed(host, end.code === SSH_FAILED ? `ssh could not connect (exit 255; see ${logFile})` : `the worker ended before its first heartbeat (${end.detail}; see ${logFile})`);
        this.exits.push({ id, requested: end.requested, detail: `${end.detail} on ${h.host}:${h.port}` });
        if (ssh.cleanup && r?.up) this.run(h, `rm -rf ${shellQuote(scratch)}`).catch((err) => this.ctx.log.warn({ worker: id, host: h.host, err: errorMessage(err) }, "the worker's scratch directory was not removed"));
      },
    });
    this.remotes.set(id, { handle, host, up: false });
    host.workers.add(id);
    this.ctx.log.info({ worker: id, pool: pool.name, host: `${h.host}:${h.port}`, log: logFile }, "worker started over ssh");
  }

  private hostFailed(host: HostState, why: string): void {
    host.failures++;
    const delay = backoffDelay(host.failures, Backoff.hostCircuit);
    host.openUntil = this.now() + delay;
    this.ctx.log.warn({ host: `${host.cfg.host}:${host.cfg.port}`, failures: host.failures, retryInMs: delay, why }, "ssh host failed: its circuit is open");
  }

  /** For tests and the status: a host's circuit. */
  circuit(hostIndex: number): { failures: number; openUntil: number; workers: number } {
    const h = this.hosts[hostIndex]!;
    return { failures: h.failures, openUntil: h.openUntil, workers: h.workers.size };
  }

  ready(id: string, record: WorkerRecord): void {
    const r = this.remotes.get(id);
    if (!r) return;
    r.pid = record.pid;
    if (r.up) return;
    r.up = true;
    r.host.failures = 0;
    r.host.openUntil = 0;
  }

  async stop(orders: ReadonlyArray<StopOrder & { record?: WorkerRecord }>): Promise<void> {
    for (const o of orders) {
      const r = this.remotes.get(o.id);
      if (!r) {
        await this.ctx.drain(o.id, `scaler: ${o.why === "idle" ? "idle" : "over the pool's max"}`);
        continue;
      }
      r.handle.stop(this.stopDeadline());
      // Past the deadline the ssh client is killed; the remote process is then killed by pid too.
      void r.handle.exited().then((end) => {
        if (end.signal && r.pid !== undefined) this.run(r.host.cfg, `kill -KILL ${r.pid} 2>/dev/null || true`).catch(() => undefined);
      });
    }
  }

  async abandon(ids: readonly string[]): Promise<void> {
    for (const id of ids) this.remotes.get(id)?.handle.kill();
  }

  takeExits(): WorkerExit[] {
    return this.exits.splice(0);
  }

  status(): Record<string, unknown> {
    const now = this.now();
    return {
      hosts: this.hosts.map((h) => ({ host: `${h.cfg.host}:${h.cfg.port}`, workers: h.workers.size, failures: h.failures, circuit: h.openUntil > now ? "open" : h.failures > 0 ? "half-open" : "closed" })),
    };
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const all = [...this.remotes.values()];
      for (const r of all) r.handle.stop(this.stopDeadline());
      await Promise.all(all.map((r) => r.handle.exited()));
    })();
    return this.closing;
  }

  private describeHosts(): string {
    const now = this.now();
    return this.hosts
      .map((h) => `${h.cfg.host}:${h.cfg.port} ${h.openUntil > now ? `circuit open for ${Math.ceil((h.openUntil - now) / 1000)} s after ${h.failures} failure(s)` : h.workers.size >= h.cfg.maxWorkers ? `full (${h.cfg.maxWorkers})` : "trying a start"}`)
      .join("; ");
  }

  private sshArgs(h: SshHost): string[] {
    const ssh = this.ctx.pool.ssh!;
    return [
      "-o",
      "BatchMode=yes",
      "-o",
      `ConnectTimeout=${Math.max(1, Math.round(ssh.connectTimeout / 1000))}`,
      // A dead connection ends the worker's ssh client (and its stdin on the host) within a minute.
      "-o",
      "ServerAliveInterval=15",
      "-o",
      "ServerAliveCountMax=4",
      ...ssh.options.flatMap((o) => ["-o", o]),
      "-p",
      String(h.port),
      ...(h.identityFile ? ["-i", h.identityFile] : []),
      h.user ? `${h.user}@${h.host}` : h.host,
    ];
  }

  /** Runs a short command on a host (cleanup, a last-resort kill). */
  private run(h: SshHost, command: string): Promise<void> {
    return new Promise((resolve, reject) => {
      execFile("ssh", [...this.sshArgs(h), command], { timeout: 30_000 }, (err, _out, stderr) => (err ? reject(new Error(`${errorMessage(err)}: ${stderr.trim()}`)) : resolve()));
    });
  }

  private stopDeadline(): number {
    return this.ctx.shutdown.graceMs + this.ctx.shutdown.forceMs + STOP_MARGIN_MS;
  }
}
