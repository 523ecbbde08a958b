import { execFileSync, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, statfs, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
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
 * how a disabled JetStream looks), and, where a tmpfs can be mounted, a server
 * deadlocked by a full disk. ado's reports of it end to end are in
 * test/chaos/disk-full.test.ts.
 */

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "ado-server-health-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

// Short waits to judge, but a probe may take 3 s: on a loaded machine (load ~40 on 2
// cores) a fresh connection and a round trip can take over a second.
const fast = { intervalMs: 200, timeoutMs: 3_000, assess: { unresponsiveAfterMs: 1_000, unreachableAfterMs: 1_000 } };

describe("server health - probing a real server", () => {
  it("ok with the account's storage; unreachable while it is down; ok again once it is back", async () => {
    const nats = await RestartableNats.start(join(scratch, "store"));
    const endpoint = { servers: nats.url, name: "server-health", logger: silentLogger };
    const monitor = new ServerHealthMonitor(endpoint, fast).start();
    try {
      const ok = await monitor.probe();
      expect(ok.condition).toBe(ServerCondition.ok);
      expect((await checkServer(endpoint, 5_000)).condition).toBe(ServerCondition.ok);

      await nats.kill();
      const down = await eventually(() => (monitor.current.condition === ServerCondition.unreachable ? monitor.current : undefined), 15_000, "unreachable");
      expect(describeServerHealth(down, { url: nats.url })).toMatch(new RegExp(`^cannot reach nats-server at ${nats.url}: no answer to pings for \\d+ s; ado reconnects`));

      await nats.restart();
      await eventually(() => monitor.current.condition === ServerCondition.ok, 20_000, "ok again");
    } finally {
      await monitor.stop();
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
      await drainQuietly(nc);
      const endpoint = { servers: url, name: "no-js", logger: silentLogger };
      const monitor = new ServerHealthMonitor(endpoint, fast).start();
      try {
        const h = await eventually(() => (monitor.current.condition === ServerCondition.unresponsive ? monitor.current : undefined), 10_000, "unresponsive");
        expect(h.detail).toMatch(/its JetStream API has not answered for \d+ s while the server answers pings/);
        const once = await checkServer(endpoint, 1_000);
        expect(once.condition).toBe(ServerCondition.unresponsive);
        expect(describeServerHealth(once)).toMatch(/is not answering JetStream requests, its store is likely full .*: free space on the server's JetStream store \(its store_dir\) and restart nats-server; ado resumes the run$/);
      } finally {
        await monitor.stop();
      }
    } finally {
      server.kill("SIGKILL");
    }
  }, 30_000);

  it("a server deadlocked by a full disk (nats-server 2.9.10) is unresponsive, not unreachable, for as long as it lasts; ok once restarted with space", async (ctx) => {
    const mnt = join(scratch, "fs");
    await mkdir(mnt, { recursive: true });
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt], { stdio: "pipe" });
    } catch (err) {
      ctx.skip(`cannot mount a tmpfs (${String((err as { stderr?: Buffer }).stderr ?? err).trim()}): run as root or with CAP_SYS_ADMIN`);
    }
    const nats = await RestartableNats.start(join(mnt, "store"));
    const endpoint = { servers: nats.url, name: "deadlock", logger: silentLogger };
    const monitor = new ServerHealthMonitor(endpoint, { intervalMs: 500, timeoutMs: 1_000, assess: { unresponsiveAfterMs: 3_000 } }).start();
    const nc = await connectNats({ servers: nats.url, name: "filler", logger: silentLogger });
    try {
      // Something else takes the disk but for 300 KB (the server sized its store when the disk was empty)...
      const fs = await statfs(mnt);
      await writeFile(join(mnt, "filler"), Buffer.alloc(fs.bavail * fs.bsize - 300 * 1024));
      // ... and a stream's writes take the rest: the write that fails deadlocks the store.
      await (await jetstreamManager(nc)).streams.add({ name: "FILL", subjects: ["fill"] });
      const js = jetstream(nc, { timeout: 2_000 });
      let timedOut = false;
      for (let i = 0; i < 200 && !timedOut; i++) await js.publish("fill", new Uint8Array(64 * 1024)).catch(() => (timedOut = true));
      expect(timedOut, "a publish that never got its ack").toBe(true);

      const h = await eventually(() => (monitor.current.condition === ServerCondition.unresponsive ? monitor.current : undefined), 20_000, "unresponsive");
      expect(h.detail).toMatch(/its JetStream API has not answered for \d+ s while the server answers pings/);
      // The probe's own JetStream connection is jammed (and goes stale); its pings, on
      // another connection, still answer: it stays unresponsive, never unreachable.
      const seen = new Set<string>();
      const until = Date.now() + 25_000;
      while (Date.now() < until) {
        seen.add(monitor.current.condition);
        await new Promise((r) => setTimeout(r, 250));
      }
      expect([...seen]).toEqual([ServerCondition.unresponsive]);
      expect((await checkServer(endpoint, 1_000)).condition).toBe(ServerCondition.unresponsive);

      // Space freed: still deadlocked. Restarted on the same store: ok.
      await rm(join(mnt, "filler"));
      await new Promise((r) => setTimeout(r, 2_000));
      expect(monitor.current.condition).toBe(ServerCondition.unresponsive);
      await nats.kill();
      await nats.restart();
      await eventually(() => monitor.current.condition === ServerCondition.ok, 30_000, "ok after the restart");
      // The stream's messages survived: asked on a fresh connection (the filler's is the
      // jammed one, and may still be reconnecting), until the restarted server answers.
      const { messages } = await eventually(async () => {
        const fresh = await connectNats({ servers: nats.url, name: "after-restart", logger: silentLogger, timeoutMs: 5_000 }).catch(() => undefined);
        if (!fresh) return undefined;
        try {
          return { messages: (await (await jetstreamManager(fresh, { timeout: 5_000 })).streams.info("FILL")).state.messages };
        } catch {
          return undefined;
        } finally {
          await fresh.close();
        }
      }, 30_000, "the FILL stream readable after the restart");
      expect(messages).toBeGreaterThan(0);
    } finally {
      await monitor.stop();
      await nc.close().catch(() => undefined);
      await nats.stop(500);
      try {
        execFileSync("umount", [mnt], { stdio: "pipe" });
      } catch {
        execFileSync("umount", ["-l", mnt], { stdio: "pipe" });
      }
    }
  }, 120_000);
});
