import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { EmbeddedServer, PortInUseError } from "../../src/runtime/embedded-server.js";
import { lockStore, STORE_LOCK_FILE, StoreInUseError } from "../../src/runtime/store-lock.js";

const dirs: string[] = [];
async function store(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "ado-lock-"));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true, maxRetries: 10 })));
});

/** A pid that is certainly dead: a process that has exited. */
function deadPid(): number {
  const r = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

describe("store lock - one server per JetStream store", () => {
  it("store lock - a live holder is refused, naming it; release lets the next one in", async () => {
    const dir = await store();
    const first = await lockStore(dir);
    const err = await lockStore(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreInUseError);
    expect((err as Error).message).toMatch(new RegExp(`in use by process ${process.pid}`));
    await first.release();
    await first.release(); // idempotent
    const second = await lockStore(dir);
    await second.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it("store lock - a lock left by a dead process (and a dead server group) is stale and taken over", async () => {
    const dir = await store();
    const dead = deadPid();
    await writeFile(join(dir, STORE_LOCK_FILE), JSON.stringify({ pid: dead, serverGroup: dead, at: "x", command: "ado up", token: "t" }));
    const lock = await lockStore(dir);
    expect(JSON.parse(await readFile(join(dir, STORE_LOCK_FILE), "utf8")).pid).toBe(process.pid);
    await lock.release();
    // Debris (an unreadable file) is stale too.
    await writeFile(join(dir, STORE_LOCK_FILE), "{");
    await (await lockStore(dir)).release();
  });

  it("store lock - a lock whose server group still lives is in use, even after its taker is gone", async () => {
    const dir = await store();
    const server = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
    try {
      await writeFile(join(dir, STORE_LOCK_FILE), JSON.stringify({ pid: deadPid(), serverGroup: server.pid, at: "x", command: "ado up", token: "t" }));
      const err = await lockStore(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreInUseError);
      expect((err as Error).message).toContain(`process ${server.pid}`);
    } finally {
      process.kill(-server.pid!, "SIGKILL");
    }
  });

  it("embedded server - a second server on the same store is refused while the first runs, and starts once it is killed", async () => {
    const dir = await store();
    const first = await EmbeddedServer.start({ storeDir: dir });
    try {
      await expect(EmbeddedServer.start({ storeDir: dir })).rejects.toBeInstanceOf(StoreInUseError);
      const gone = new Promise((r) => first["child"].once("exit", r));
      process.kill(-first.pid, "SIGKILL"); // the server dies hard; this process lives on
      await gone;
      const second = await EmbeddedServer.start({ storeDir: dir });
      await second.stop();
    } finally {
      await first.stop();
    }
  }, 60_000);

  it("embedded server - a port in use is one line, not the server's log", async () => {
    const first = await EmbeddedServer.start({});
    try {
      const port = Number(new URL(first.url).port);
      const err = await EmbeddedServer.start({ port }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PortInUseError);
      expect((err as Error).message.split("\n")).toHaveLength(1);
    } finally {
      await first.stop();
    }
  }, 60_000);
});
