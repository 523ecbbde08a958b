/**
 * A three-node nats-server cluster on loopback, JetStream on every node, for tests that
 * lose a node: each node is an EmbeddedServer (watchdog: no orphan) on its own store,
 * client port and route port, with the cluster block of nats/cluster/ in its config.
 * A node can be SIGKILLed, stopped gracefully, and started again on the same store and
 * ports.
 */
import { mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { EmbeddedServer } from "../../src/runtime/embedded-server.js";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { eventually } from "./nats.js";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export class ClusterNode {
  private server?: EmbeddedServer;
  constructor(
    readonly name: string,
    readonly port: number,
    readonly routePort: number,
    readonly storeDir: string,
    private readonly routes: readonly number[],
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  /** Starts the node (again) on its store and ports; retried while a port is still held by its previous self. */
  async start(): Promise<void> {
    const extraConfig = [
      `server_name: ${this.name}`,
      `cluster {`,
      `  name: ado-test`,
      `  listen: "127.0.0.1:${this.routePort}"`,
      `  routes: [${this.routes.map((p) => `"nats-route://127.0.0.1:${p}"`).join(", ")}]`,
      `}`,
    ].join("\n");
    this.server = await eventually(() => EmbeddedServer.start({ storeDir: this.storeDir, port: this.port, extraConfig }).catch(() => undefined), 30_000, `nats-server ${this.name} started`);
  }

  /** SIGKILL: no shutdown of any kind. */
  async kill(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    try {
      process.kill(-server.pid, "SIGKILL");
    } catch {
      // already gone
    }
    await server.stop(0);
  }

  /** A graceful stop (SIGTERM: the node leaves the cluster cleanly), SIGKILL after 10 s. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    await server?.stop(10_000);
  }

  /** Recent stderr of the node (for a failure's diagnosis). */
  get log(): string {
    return this.server?.log ?? "(not running)";
  }
}

export class NatsCluster {
  constructor(readonly nodes: ClusterNode[]) {}

  /** Every node's URL, comma-separated, as ADO_SERVER takes them. */
  get servers(): string {
    return this.nodes.map((n) => n.url).join(",");
  }

  node(name: string): ClusterNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no cluster node named '${name}'`);
    return n;
  }

  /** Waits until the JetStream meta group has a leader (the cluster takes requests). */
  async ready(ms = 60_000): Promise<void> {
    const nc = await connectNats({ servers: this.servers, name: "cluster-ready", logger: silentLogger });
    try {
      await eventually(async () => {
        const jsm = await jetstreamManager(nc, { timeout: 3_000 }).catch(() => undefined);
        return jsm ? await jsm.getAccountInfo().then(() => true, () => false) : false;
      }, ms, "the cluster's JetStream meta leader");
    } finally {
      await drainQuietly(nc);
    }
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
  }
}

/** Starts three nodes under `dir` and waits for the cluster to take JetStream requests. */
export async function startNatsCluster(dir: string, size = 3): Promise<NatsCluster> {
  const ports = await Promise.all(Array.from({ length: size * 2 }, () => freePort()));
  const routes = ports.slice(size);
  const nodes: ClusterNode[] = [];
  for (let i = 0; i < size; i++) {
    const storeDir = join(dir, `n${i + 1}`);
    await mkdir(storeDir, { recursive: true });
    nodes.push(new ClusterNode(`n${i + 1}`, ports[i]!, routes[i]!, storeDir, routes));
  }
  const cluster = new NatsCluster(nodes);
  try {
    await Promise.all(nodes.map((n) => n.start()));
    await cluster.ready();
  } catch (err) {
    await cluster.stopAll();
    throw err;
  }
  return cluster;
}

/**
 * Whether every replica of `stream` is on a running node, current, and without lag:
 * a node that came back has caught up. Returns what is not, or undefined when all are.
 */
export async function replicaLag(jsm: JetStreamManager, stream: string, expected: number): Promise<string | undefined> {
  const info = await jsm.streams.info(stream);
  const c = info.cluster;
  if (!c?.leader) return `${stream}: no leader`;
  const replicas = c.replicas ?? [];
  if (replicas.length + 1 !== expected) return `${stream}: ${replicas.length + 1} of ${expected} peers`;
  const behind = replicas.filter((r) => !r.current || r.offline || (r.lag ?? 0) > 0);
  return behind.length ? `${stream}: ${behind.map((r) => `${r.name} current=${r.current} offline=${!!r.offline} lag=${r.lag ?? 0}`).join(", ")}` : undefined;
}
