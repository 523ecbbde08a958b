import { spawn, type ChildProcess } from "node:child_process";
import { access, constants, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { sleep } from "./clock.js";
import { EmbeddedServerError } from "./errors.js";
import type { Logger } from "./logger.js";
import { stackCredentials } from "./stack-auth.js";
import { lockStore, type StoreLock } from "./store-lock.js";
import type { Topology } from "./topology.js";

/** The client port is taken by another process (another ado up, another NATS server). */
export class PortInUseError extends EmbeddedServerError {
  constructor(readonly port: number) {
    super(`port ${port} is already in use (another \`ado up\`, or another NATS server?): choose another port, or stop what listens there`);
  }
}

export interface EmbeddedServerOptions {
  /** JetStream store; a fresh temp directory (removed on stop) when absent. */
  storeDir?: string;
  /** Client port; a free one when absent. */
  port?: number;
  /** Also open the HTTP monitoring port (for `/jsz`, `/healthz`), on a free port. */
  monitoring?: boolean;
  /** Binary to run; default `$ADO_NATS_SERVER` or `nats-server` on PATH. */
  binary?: string;
  startTimeoutMs?: number;
  logger?: Logger;
  /**
   * More server configuration, appended (a key given again wins over ado's): users and
   * permissions, TLS, another max_payload.
   */
  extraConfig?: string;
  /**
   * Users for this prefix, one per role (stack-auth.ts): the seeds are kept under the
   * store (`<store>/auth`, 0600) and nothing else can connect. Absent: no auth.
   */
  auth?: Topology;
}

const INSTALL = "install it with `apt-get install -y nats-server` (Debian/Ubuntu)";
export const INSTALL_HINT = `${INSTALL}, or set ADO_NATS_SERVER to the binary's path`;

// The watchdog: runs nats-server and terminates it as soon as our stdin pipe closes,
// which happens however the parent ends (clean exit, Ctrl-C, crash, SIGKILL). The
// loop reads with the shell builtin, so killing this one subshell ends the watcher.
const WATCHDOG = `
bin=$1; shift
exec 3<&0
"$bin" "$@" </dev/null &
srv=$!
( while read -r _ <&3; do :; done; kill -TERM "$srv" 2>/dev/null ) &
watch=$!
trap 'kill -TERM "$srv" 2>/dev/null' TERM INT HUP
while kill -0 "$srv" 2>/dev/null; do wait "$srv"; st=$?; done
kill "$watch" 2>/dev/null
[ -n "$ADO_WATCHDOG_REMOVE" ] && rm -rf "$ADO_WATCHDOG_REMOVE"
exit \${st:-0}
`;

/**
 * A `nats-server` with JetStream, started for this process and stopped with it. Never
 * leaves an orphan: see WATCHDOG.
 */
export class EmbeddedServer {
  private stopping?: Promise<void>;
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    readonly monitorUrl: string | undefined,
    readonly storeDir: string,
    private readonly ownsStore: boolean,
    private readonly stderr: () => string,
    private readonly lock: StoreLock | undefined,
    /** The per-role seeds of a server started with `auth` (connect with `{ roleDir }`); undefined: no auth. */
    readonly roleDir: string | undefined,
  ) {}

  /** Starts the server and resolves once it accepts connections. */
  static async start(opts: EmbeddedServerOptions = {}): Promise<EmbeddedServer> {
    const binary = await findNatsServer(opts.binary);
    const ownsStore = !opts.storeDir;
    // Before the store is touched: two servers on one store would corrupt it.
    const lock = opts.storeDir ? await lockStore(opts.storeDir) : undefined;
    try {
      if (opts.port) await checkPortFree(opts.port);
      return await EmbeddedServer.spawn(binary, opts, ownsStore, lock);
    } catch (err) {
      await lock?.release();
      throw err;
    }
  }

  private static async spawn(binary: string, opts: EmbeddedServerOptions, ownsStore: boolean, lock: StoreLock | undefined): Promise<EmbeddedServer> {
    const storeDir = opts.storeDir ?? (await mkdtemp(join(tmpdir(), "ado-nats-")));
    const runDir = await mkdtemp(join(tmpdir(), "ado-nats-run-"));
    await mkdir(storeDir, { recursive: true });
    const creds = opts.auth ? await stackCredentials(storeDir, opts.auth) : undefined;
    const conf = [
      `listen: "127.0.0.1:${opts.port ?? -1}"`,
      opts.monitoring ? `http: "127.0.0.1:-1"` : "",
      `server_name: "ado-embedded"`,
      `ports_file_dir: ${JSON.stringify(runDir)}`,
      `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
      // Our heaviest messages are run submissions with large graphs.
      `max_payload: 8MB`,
      creds?.authorization ?? "",
      opts.extraConfig ?? "",
    ].join("\n");
    const confPath = join(runDir, "nats.conf");
    await writeFile(confPath, conf);

    const child = spawn("sh", ["-c", WATCHDOG, "ado-nats-watchdog", binary, "-c", confPath], {
      stdio: ["pipe", "ignore", "pipe"],
      // A temp store is removed by the watchdog once the server is gone, parent or not.
      env: { ...process.env, ADO_WATCHDOG_REMOVE: ownsStore ? storeDir : "" },
      // Own process group: a Ctrl-C in the terminal reaches us, and we stop the server
      // after draining, instead of it dying under our actors' feet.
      detached: true,
    });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-8_000);
    });
    const killOnExit = () => {
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {
        // already gone
      }
    };
    process.once("exit", killOnExit);
    child.once("exit", () => process.removeListener("exit", killOnExit));
    // From now on the server's process group holds the store: it may outlive us by a moment.
    child.once("exit", () => lock?.serverGone());
    await lock?.heldBy(child.pid!);

    const deadline = Date.now() + (opts.startTimeoutMs ?? 10_000);
    let exited: number | null | undefined;
    child.once("exit", (code) => (exited = code));
    for (;;) {
      const ports = await readPortsFile(runDir);
      if (ports?.nats?.[0]) {
        const server = new EmbeddedServer(child, ports.nats[0], ports.monitoring?.[0], storeDir, ownsStore, () => stderr, lock, creds?.roleDir);
        await rm(runDir, { recursive: true, force: true });
        opts.logger?.info({ url: server.url, storeDir }, "embedded nats-server started");
        return server;
      }
      if (exited !== undefined) {
        await rm(runDir, { recursive: true, force: true });
        // Taken between our check and its bind: one line, not the server's whole log.
        if (opts.port && !(await portIsFree(opts.port))) throw new PortInUseError(opts.port);
        throw new EmbeddedServerError(`nats-server exited (code ${exited}) before it was ready; the end of its log:\n${tail(stderr)}`);
      }
      if (Date.now() > deadline) {
        child.stdin!.end();
        throw new EmbeddedServerError(`nats-server did not become ready in time; the end of its log:\n${tail(stderr)}`);
      }
      await sleep(10);
    }
  }

  /** Process id of the watchdog (the process group leader). */
  get pid(): number {
    return this.child.pid!;
  }

  /** Recent stderr of the server, for error reports. */
  get log(): string {
    return this.stderr();
  }

  /** Stops the server (graceful, then forced) and removes a store it created. Idempotent. */
  stop(graceMs = 5_000): Promise<void> {
    this.stopping ??= (async () => {
      const exited = new Promise<void>((resolve) => {
        if (this.child.exitCode !== null || this.child.signalCode !== null) resolve();
        else this.child.once("exit", () => resolve());
      });
      this.child.stdin!.end();
      const timer = setTimeout(() => {
        try {
          process.kill(-this.child.pid!, "SIGKILL");
        } catch {
          // already gone
        }
      }, graceMs);
      await exited;
      clearTimeout(timer);
      if (this.ownsStore) await rm(this.storeDir, { recursive: true, force: true });
      await this.lock?.release();
    })();
    return this.stopping;
  }
}

/** The last lines of a server log, enough to see why it stopped. */
function tail(log: string, lines = 12): string {
  return log.trim().split("\n").slice(-lines).join("\n");
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen({ port, host: "127.0.0.1", exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

async function checkPortFree(port: number): Promise<void> {
  if (!(await portIsFree(port))) throw new PortInUseError(port);
}

async function readPortsFile(dir: string): Promise<{ nats?: string[]; monitoring?: string[] } | undefined> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const file = names.find((n) => n.endsWith(".ports"));
  if (!file) return undefined;
  try {
    return JSON.parse(await readFile(join(dir, file), "utf8"));
  } catch {
    return undefined; // written but not complete yet
  }
}

/** Finds the `nats-server` binary, or throws an error that says how to install it. */
export async function findNatsServer(binary?: string): Promise<string> {
  const fromEnv = !binary && !!process.env.ADO_NATS_SERVER;
  const explicit = binary ?? process.env.ADO_NATS_SERVER;
  const candidates = explicit
    ? [explicit]
    : (process.env.PATH ?? "").split(delimiter).filter(Boolean).map((d) => join(d, "nats-server"));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // keep looking
    }
  }
  throw new EmbeddedServerError(
    explicit
      ? `nats-server was not found at '${explicit}'${fromEnv ? " (from ADO_NATS_SERVER)" : ""}: fix the path, or ${INSTALL}`
      : `nats-server was not found on PATH: ${INSTALL_HINT}`,
  );
}
