import { spawn, type ChildProcess } from "node:child_process";
import { access, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { connect as tcpConnect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import { connectNats } from "../../src/runtime/connection.js";
import { EmbeddedServer, findNatsServer } from "../../src/runtime/embedded-server.js";
import { EmbeddedServerError, ServerError } from "../../src/runtime/errors.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { provision } from "../../src/runtime/topology.js";
import { eventually, uniqueTopology } from "../helpers/nats.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CHILD = fileURLToPath(new URL("../fixtures/embedded-server-child.ts", import.meta.url));

/** Processes this file started; killed at the end if a test failed half-way. */
const started: ChildProcess[] = [];
const leftovers: string[] = [];
afterAll(async () => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await Promise.all(leftovers.map((d) => rm(d, { recursive: true, force: true, maxRetries: 10 })));
});

const exists = (p: string) => access(p).then(() => true, () => false);

/** Whether a TCP connection to the url's host and port is accepted right now. */
function accepts(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const s = tcpConnect({ host: hostname, port: Number(port) });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * Live (not zombie) members of a process group. A zombie is dead, only not yet reaped
 * by whoever inherited it, so it does not count.
 */
async function liveMembers(pgid: number): Promise<number[]> {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return [];
    throw err;
  }
  const live: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after the last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z") live.push(Number(entry));
  }
  return live;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as { port: number };
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Runs the fixture in a child node process and waits for the server it started. */
async function serverInChild(mode: "hold" | "exit"): Promise<{ child: ChildProcess; url: string; pid: number; storeDir: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, mode], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  started.push(child);
  let out = "";
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf("\n");
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    child.once("exit", (code) => {
      if (!out.includes("\n")) reject(new Error(`the child exited (${code}) before starting a server:\n${err}`));
    });
  });
  const info = JSON.parse(line) as { url: string; pid: number; storeDir: string };
  leftovers.push(info.storeDir);
  return { child, ...info };
}

describe("embedded server - lifecycle", () => {
  it("starts, serves JetStream, stops, and removes the store it created", async () => {
    const server = await EmbeddedServer.start({});
    let stopped = false;
    try {
      expect(server.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
      expect(await exists(server.storeDir)).toBe(true);
      const nc = await connectNats({ servers: server.url, name: "embedded-test", logger: silentLogger });
      const jsm = await jetstreamManager(nc);
      const info = await jsm.getAccountInfo();
      expect(info.limits).toBeDefined();
      const topo = uniqueTopology();
      await provision(nc, topo);
      expect((await jsm.streams.info(topo.streams.submit.name)).config.name).toBe(topo.streams.submit.name);
      await nc.close();

      const [a, b] = [server.stop(), server.stop()];
      expect(a).toBe(b); // idempotent
      await a;
      stopped = true;
      expect(await exists(server.storeDir)).toBe(false);
      expect(await accepts(server.url)).toBe(false);
      expect(await liveMembers(server.pid)).toEqual([]);
    } finally {
      if (!stopped) await server.stop();
    }
  });

  it("keeps a store it was given, and serves the same data after a restart on it", async () => {
    const storeDir = await mkdtemp(join(tmpdir(), "ado-store-"));
    leftovers.push(storeDir);
    const topo = uniqueTopology();
    const first = await EmbeddedServer.start({ storeDir });
    try {
      const nc = await connectNats({ servers: first.url, name: "embedded-test", logger: silentLogger });
      const { kv } = await provision(nc, topo);
      await kv.runs.put("r1", new TextEncoder().encode("kept"));
      await nc.close();
    } finally {
      await first.stop();
    }
    expect(await exists(storeDir)).toBe(true);
    const second = await EmbeddedServer.start({ storeDir });
    try {
      const nc = await connectNats({ servers: second.url, name: "embedded-test", logger: silentLogger });
      const { kv } = await provision(nc, topo);
      expect(new TextDecoder().decode((await kv.runs.get("r1"))!.value)).toBe("kept");
      await nc.close();
    } finally {
      await second.stop();
    }
  });
});

describe("embedded server - missing binary", () => {
  it("names the given binary and says how to install nats-server", async () => {
    const err = await EmbeddedServer.start({ binary: "/nonexistent/nats-server" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EmbeddedServerError);
    expect((err as Error).message).toContain("/nonexistent/nats-server");
    expect((err as Error).message).toContain("apt-get install -y nats-server");
  });

  it("says how to install nats-server when PATH has none", async () => {
    const emptyDir = await mkdtemp(join(tmpdir(), "ado-nopath-"));
    leftovers.push(emptyDir);
    const saved = { PATH: process.env.PATH, ADO_NATS_SERVER: process.env.ADO_NATS_SERVER };
    process.env.PATH = emptyDir;
    delete process.env.ADO_NATS_SERVER;
    let err: unknown;
    try {
      await findNatsServer();
    } catch (e) {
      err = e;
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.ADO_NATS_SERVER !== undefined) process.env.ADO_NATS_SERVER = saved.ADO_NATS_SERVER;
    }
    expect(err).toBeInstanceOf(EmbeddedServerError);
    expect((err as Error).message).toMatch(/nats-server was not found on PATH/);
    expect((err as Error).message).toContain("apt-get install -y nats-server");
    // And with the real PATH it is found.
    expect(await findNatsServer()).toMatch(/nats-server$/);
  });
});

describe("embedded server - no orphans", () => {
  it.each([["SIGKILL"], ["SIGTERM"]] as const)("goes away when its parent process dies of %s", async (signal) => {
    const { child, url, pid } = await serverInChild("hold");
    expect(await accepts(url)).toBe(true);
    expect(await liveMembers(pid)).not.toEqual([]);
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
    await eventually(async () => !(await accepts(url)), 15_000, `${url} to stop accepting connections`);
    await eventually(async () => (await liveMembers(pid)).length === 0, 15_000, `process group ${pid} to end`);
  });

  it("goes away when its parent exits without stopping it", async () => {
    const { child, url, pid } = await serverInChild("exit");
    await new Promise((resolve) => (child.exitCode === null ? child.once("exit", resolve) : resolve(undefined)));
    expect(child.exitCode).toBe(0);
    await eventually(async () => !(await accepts(url)), 15_000, `${url} to stop accepting connections`);
    await eventually(async () => (await liveMembers(pid)).length === 0, 15_000, `process group ${pid} to end`);
  });
});

describe("topology - a server without JetStream", () => {
  it("refuses to provision with a ServerError that says how to enable JetStream", async () => {
    const port = await freePort();
    const plain = spawn(await findNatsServer(), ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
    started.push(plain);
    try {
      const url = `nats://127.0.0.1:${port}`;
      await eventually(() => accepts(url), 10_000, "plain nats-server to listen");
      const nc = await connectNats({ servers: url, name: "no-js", logger: silentLogger });
      try {
        const err = await provision(nc, uniqueTopology()).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(ServerError);
        expect((err as Error).message).toMatch(/JetStream disabled/);
        expect((err as Error).message).toContain("nats-server -js");
        expect((err as Error).message).toContain(`127.0.0.1:${port}`);
      } finally {
        await nc.close();
      }
    } finally {
      const gone = new Promise((resolve) => plain.once("exit", resolve));
      plain.kill("SIGTERM");
      await gone;
    }
  });
});
