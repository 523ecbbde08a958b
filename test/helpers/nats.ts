import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { EmbeddedServer } from "../../src/runtime/embedded-server.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { useScratch } from "./scratch.js";
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

/** A server started once for the test file (or describe block), and a scratch directory beside it. */
export interface ServerFixture extends TestServer {
  /** A temporary directory removed with the server: worktrees, remotes, logs. */
  scratch: string;
}

/**
 * Starts a real nats-server and a scratch directory before the file's (or the enclosing
 * describe block's) tests and removes both after them; the one place tests do this. The
 * fields are readable from inside tests and hooks registered after this call.
 */
export function useTestServer(scratchPrefix = "ado-test-"): ServerFixture {
  let ts: TestServer | undefined;
  const scratch = useScratch(scratchPrefix);
  const started = (): TestServer => {
    if (ts === undefined) throw new Error("useTestServer: read its fields inside a test or a hook, not at module load");
    return ts;
  };
  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.stop();
  });
  return {
    get server() {
      return started().server;
    },
    get url() {
      return started().url;
    },
    get scratch() {
      return scratch.dir;
    },
    connect: (name?: string) => started().connect(name),
    stop: () => started().stop(),
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
