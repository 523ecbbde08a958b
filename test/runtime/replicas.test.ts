import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { ServerError } from "../../src/runtime/errors.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { openJetStream, provision, resolveReplicas, type Topology } from "../../src/runtime/topology.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";
import { useScratch } from "../helpers/scratch.js";

/**
 * Config `nats.replicas`: every stream, KV bucket and object store of a topology gets that
 * many copies when provisioned, existing ones included; `auto` is 3 on a cluster, 1 on a
 * single server. Over a real single nats-server, and a real three-node cluster started
 * here on loopback ports.
 */

/** Every JetStream stream behind a topology: its streams, its buckets' and its object stores'. */
function streamsOf(topo: Topology): string[] {
  return [...Object.values(topo.streams).map((s) => s.name), ...Object.values(topo.buckets).map((b) => `KV_${b}`), ...Object.values(topo.objects).map((o) => `OBJ_${o}`)];
}

async function replicasOf(jsm: JetStreamManager, topo: Topology): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const name of streamsOf(topo)) out.set(name, (await jsm.streams.info(name)).config.num_replicas);
  return out;
}

describe("replicas - one server", () => {
  const ts = useTestServer("ado-replicas-");

  it("replicas - auto is 1 on a single server, every stream and bucket gets 1", async () => {
    const nc = await ts.connect("replicas-single");
    const topo = uniqueTopology();
    expect(resolveReplicas("auto", nc.info)).toBe(1);
    expect(resolveReplicas(2, nc.info)).toBe(2);
    await provision(nc, topo, { replicas: resolveReplicas("auto", nc.info) });
    const jsm = await openJetStream(nc);
    expect(new Set((await replicasOf(jsm, topo)).values())).toEqual(new Set([1]));
  });
});

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe("replicas - a three-node cluster", () => {
  const scratch = useScratch("ado-replicas-cluster-");

  it("replicas - auto is 3 on a cluster; provisioning again with 3 moves existing R1 streams and buckets to R3", async () => {
    const nodes = await Promise.all([0, 1, 2].map(async (i) => ({ name: `n${i}`, client: await freePort(), route: await freePort() })));
    const procs: ChildProcess[] = [];
    let nc: NatsConnection | undefined;
    try {
      for (const n of nodes) {
        const dir = join(scratch.dir, n.name);
        await mkdir(dir, { recursive: true });
        const conf = join(dir, "nats.conf");
        await writeFile(
          conf,
          [
            `server_name: ${n.name}`,
            `listen: 127.0.0.1:${n.client}`,
            `jetstream { store_dir: "${join(dir, "js")}" }`,
            `cluster { name: ado-replicas, listen: 127.0.0.1:${n.route}, routes: [${nodes.map((o) => `nats-route://127.0.0.1:${o.route}`).join(", ")}] }`,
            "",
          ].join("\n"),
        );
        procs.push(spawn("nats-server", ["-c", conf], { stdio: "ignore" }));
      }
      nc = await eventually(() => connectNats({ servers: nodes.map((n) => `nats://127.0.0.1:${n.client}`), name: "replicas-cluster", logger: silentLogger }), 30_000, "a node of the cluster accepts a connection");
      expect(nc.info?.cluster).toBe("ado-replicas");
      expect(resolveReplicas("auto", nc.info)).toBe(3);
      const topo = uniqueTopology();
      // The first provisioning waits for the cluster's JetStream to elect its meta leader.
      const conn = nc;
      await eventually(() => provision(conn, topo, { replicas: 1 }).then(() => true), 60_000, "the cluster's JetStream ready (R1 provisioning)");
      const jsm = await openJetStream(nc);
      expect(new Set((await replicasOf(jsm, topo)).values())).toEqual(new Set([1]));
      // The config now says 3 (or auto): the same streams and buckets get three copies.
      await provision(nc, topo, { replicas: resolveReplicas("auto", nc.info) });
      expect(new Set((await replicasOf(jsm, topo)).values())).toEqual(new Set([3]));
      // Provisioning without a count leaves them as they are.
      await provision(nc, topo);
      expect(new Set((await replicasOf(jsm, topo)).values())).toEqual(new Set([3]));
      // More copies than the cluster has nodes: refused, saying what to set.
      const err = await provision(nc, uniqueTopology(), { replicas: 5 }).catch((e: unknown) => e);
      expect(err, String(err)).toBeInstanceOf(ServerError);
      expect((err as Error).message).toMatch(/cannot keep 5 copies of ado's streams .*Set nats\.replicas in the config to 1 \(or auto\)/);
    } finally {
      if (nc) await drainQuietly(nc);
      await Promise.all(
        procs.map(
          (p) =>
            new Promise<void>((r) => {
              if (p.exitCode !== null || p.signalCode !== null) return r();
              p.once("exit", () => r());
              p.kill("SIGTERM");
            }),
        ),
      );
    }
  }, 150_000);
});
