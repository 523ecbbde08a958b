import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { findNatsServer } from "../../src/runtime/embedded-server.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { checkServer, describeServerHealth, ServerCondition, ServerHealthMonitor } from "../../src/runtime/server-health.js";
import { RestartableNats } from "../helpers/chaos.js";
import { eventually } from "../helpers/nats.js";

/**
 * The server-health probe against real servers: one that is killed and started again
 * (unreachable, then ok), and one without JetStream (pings answer, JetStream does not:
 * how a deadlocked or disabled JetStream looks). The full disk itself is in
 * test/chaos/disk-full.test.ts (it needs to mount a file system).
 */

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "ado-server-health-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

const fast = { intervalMs: 200, timeoutMs: 1_000, assess: { unresponsiveAfterMs: 1_000, unreachableAfterMs: 1_000 } };

describe("server health - probing a real server", () => {
  it("ok with the account's storage; unreachable while it is down; ok again once it is back", async () => {
    const nats = await RestartableNats.start(join(scratch, "store"));
    const nc = await connectNats({ servers: nats.url, name: "server-health", logger: silentLogger });
    const monitor = new ServerHealthMonitor(nc, fast).start();
    try {
      const ok = await monitor.probe();
      expect(ok.condition).toBe(ServerCondition.ok);
      expect((await checkServer(nc, 1_000)).condition).toBe(ServerCondition.ok);

      await nats.kill();
      const down = await eventually(() => (monitor.current.condition === ServerCondition.unreachable ? monitor.current : undefined), 15_000, "unreachable");
      expect(describeServerHealth(down, { url: nats.url })).toMatch(new RegExp(`^cannot reach nats-server at ${nats.url}: no answer to pings for \\d+ s; ado reconnects`));

      await nats.restart();
      await eventually(() => monitor.current.condition === ServerCondition.ok, 20_000, "ok again");
    } finally {
      monitor.stop();
      await drainQuietly(nc);
      await nats.stop();
    }
  }, 60_000);

  it("a server whose JetStream does not answer while pings do is unresponsive, and ado status's one-shot check says so at once", async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    // No -js: JetStream is off, as after a server disabled it for lack of storage.
    const server = spawn(await findNatsServer(), ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
    const url = `nats://127.0.0.1:${port}`;
    try {
      const nc = await eventually(() => connectNats({ servers: url, name: "no-js", logger: silentLogger, timeoutMs: 500 }).catch(() => undefined), 10_000, "no-JetStream server up");
      const monitor = new ServerHealthMonitor(nc, fast).start();
      try {
        const h = await eventually(() => (monitor.current.condition === ServerCondition.unresponsive ? monitor.current : undefined), 10_000, "unresponsive");
        expect(h.detail).toMatch(/its JetStream API has not answered for \d+ s while the server answers pings/);
        const once = await checkServer(nc, 1_000);
        expect(once.condition).toBe(ServerCondition.unresponsive);
        expect(describeServerHealth(once)).toMatch(/is not answering JetStream requests, its store is likely full .*: free space on the server's JetStream store \(its store_dir\) and restart nats-server; ado resumes the run$/);
      } finally {
        monitor.stop();
        await drainQuietly(nc);
      }
    } finally {
      server.kill("SIGKILL");
    }
  }, 30_000);
});
