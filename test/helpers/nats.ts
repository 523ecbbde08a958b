import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { EmbeddedServer } from "../../src/runtime/embedded-server.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { provision, topology, type Provisioned, type Topology } from "../../src/runtime/topology.js";

/**
 * A real nats-server for one test file: free port, temporary JetStream store, removed
 * afterwards. Fails with the install hint when the binary is missing.
 */
export interface TestServer {
  server: EmbeddedServer;
  url: string;
  connect(name?: string): Promise<NatsConnection>;
  stop(): Promise<void>;
}

export async function startTestServer(): Promise<TestServer> {
  const server = await EmbeddedServer.start({});
  const conns: NatsConnection[] = [];
  return {
    server,
    url: server.url,
    async connect(name = "test") {
      const nc = await connectNats({ servers: server.url, name, logger: silentLogger });
      conns.push(nc);
      return nc;
    },
    async stop() {
      await Promise.all(conns.map((nc) => drainQuietly(nc)));
      await server.stop();
    },
  };
}

/** A topology with a prefix of its own, so tests sharing a server never see each other. */
export function uniqueTopology(): Topology {
  return topology(`t${randomBytes(4).toString("hex")}`);
}

export async function provisioned(nc: NatsConnection, topo = uniqueTopology()): Promise<Provisioned & { topo: Topology }> {
  return { ...(await provision(nc, topo)), topo };
}

/** Polls until `check` returns a truthy value, or fails after `ms`. */
export async function eventually<T>(check: () => T | Promise<T>, ms = 10_000, what = "condition"): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
