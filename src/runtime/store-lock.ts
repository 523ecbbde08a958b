/**
 * An exclusive lock on a JetStream store directory: two nats-servers on one store
 * corrupt it, and a second `ado up` (another port, another prefix) would otherwise start
 * one. The lock is a file in the store, `ado.lock`, naming the process that took it and
 * then the process group of the server that uses the store. A lock whose holder is gone
 * (a crash, SIGKILL) is stale and taken over.
 */
import { link, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { sleep } from "./clock.js";
import { EmbeddedServerError } from "./errors.js";

export const STORE_LOCK_FILE = "ado.lock";

interface LockContent {
  /** The process that took the lock. */
  pid: number;
  /** The server's process group, once started: it holds the store as long as it lives. */
  serverGroup?: number;
  at: string;
  command: string;
  /** Tells this lock from a later one of the same process (a server restarted on the store). */
  token: string;
}

/** The store is in use by a live process. */
export class StoreInUseError extends EmbeddedServerError {
  constructor(
    readonly storeDir: string,
    readonly holder: number,
    command: string,
  ) {
    super(
      `the JetStream store ${storeDir} is in use by process ${holder}${command ? ` (${command})` : ""}: ` +
        "two servers on one store would corrupt it. Stop that one, or give this one another store",
    );
  }
}

export interface StoreLock {
  /** Records the server's process group as the holder (it may outlive this process by a moment). */
  heldBy(serverGroup: number): Promise<void>;
  /** The server has exited (however): in this process the lock no longer counts, though its file stays until release(). */
  serverGone(): void;
  /** Removes the lock if it is still this one's. Idempotent. */
  release(): Promise<void>;
}

/** Locks held by this process, path -> token: a lock naming this process is live only while listed here. */
const held = new Map<string, string>();

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function isLive(path: string, c: LockContent | undefined): boolean {
  if (!c) return false; // unreadable: a lock is written whole (link of a complete file), so this is debris
  // This process knows its own servers: one whose process has exited (killed) holds nothing.
  if (c.pid === process.pid) return held.get(path) === c.token;
  return c.serverGroup !== undefined ? groupAlive(c.serverGroup) : processAlive(c.pid);
}

/** The process to name: the one that took the lock, or its server if that one outlived it. */
const holderOf = (c: LockContent) => (processAlive(c.pid) || c.serverGroup === undefined ? c.pid : c.serverGroup);

async function readLock(path: string): Promise<LockContent | undefined> {
  try {
    const c = JSON.parse(await readFile(path, "utf8")) as LockContent;
    return typeof c.pid === "number" ? c : undefined;
  } catch {
    return undefined;
  }
}

/** Writes `content` to `path` whole, failing with EEXIST if `path` exists (link is atomic). */
async function createWhole(path: string, content: LockContent): Promise<void> {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  await writeFile(tmp, JSON.stringify(content) + "\n");
  try {
    await link(tmp, path);
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * Takes the lock of the store at `storeDir` (created if absent).
 * @throws StoreInUseError when a live process holds it.
 */
export async function lockStore(storeDir: string): Promise<StoreLock> {
  await mkdir(storeDir, { recursive: true });
  const path = join(storeDir, STORE_LOCK_FILE);
  const token = randomBytes(6).toString("hex");
  const content: LockContent = { pid: process.pid, at: new Date().toISOString(), command: `ado ${process.argv[2] ?? ""}`.trim(), token };
  for (let tries = 0; ; tries++) {
    try {
      await createWhole(path, content);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST" || tries >= 5) throw err;
    }
    let current = await readLock(path);
    // A server of this process that was just killed: its exit may not have been seen yet.
    for (let waited = 0; current?.pid === process.pid && isLive(path, current) && waited < 3_000; waited += 50) {
      await sleep(50);
      current = await readLock(path);
    }
    if (isLive(path, current)) throw new StoreInUseError(storeDir, holderOf(current!), current!.command);
    // Stale: move it aside (only one of several racing takers can) and look again at
    // what was moved, in case a live lock replaced the stale one in between.
    const aside = `${path}.stale.${process.pid}`;
    try {
      await rename(path, aside);
    } catch {
      continue; // someone else moved it first
    }
    const moved = await readLock(aside);
    if (isLive(path, moved)) {
      await link(aside, path).catch(() => undefined); // put the live one back
      await rm(aside, { force: true });
      throw new StoreInUseError(storeDir, holderOf(moved!), moved!.command);
    }
    await rm(aside, { force: true });
  }
  held.set(path, token);
  let released: Promise<void> | undefined;
  return {
    async heldBy(serverGroup: number) {
      // Still ours? (A lock is only taken over when its holder is gone, and we are here.)
      if ((await readLock(path))?.token !== token) return;
      const tmp = `${path}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify({ ...content, serverGroup }) + "\n");
      await rename(tmp, path);
    },
    serverGone() {
      if (held.get(path) === token) held.delete(path);
    },
    release: () =>
      (released ??= (async () => {
        if (held.get(path) === token) held.delete(path);
        if ((await readLock(path))?.token === token) await rm(path, { force: true });
      })()),
  };
}
