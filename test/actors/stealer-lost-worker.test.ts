/** The stealer's handling of what a lost worker left on this host: its attempt's worktree (real git, real KV) and its processes. */
import { execFileSync } from "node:child_process";
import { readdir, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { keepLostWorktree } from "../../src/actors/stealer/lost-worktree.js";
import { WorktreeManager } from "../../src/git/index.js";
import { WorktreeRegistry } from "../../src/runtime/worktree-registry.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { WorkerRecord } from "../../src/runtime/messages.js";
import { useTestServer, provisioned } from "../helpers/nats.js";
import { taskWork, workerRecord } from "../helpers/records.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { attemptRef } from "../../src/runtime/names.js";

const record = (workerId: string, over: Partial<WorkerRecord> = {}): WorkerRecord => workerRecord({ workerId, running: 1, ...over });
const work = taskWork;

// ---------------------------------------------------------------- the lost attempt's worktree (real git, real KV)

const ts = useTestServer("ado-stealer-unit-");

describe("stealer - the worktree of an attempt lost with its worker", () => {
  it("its work (uncommitted and the agent's own commit) is kept under refs/ado/attempts, the worktree removed, the branch put back; once", async () => {
    const repo = await makeRepo();
    const { kv } = await provisioned(await ts.connect("stealer-wt"));
    try {
      const base = gitOut(repo.dir, "rev-parse", "HEAD");
      const w = work("t1", 1, { repo: repo.dir, baseCommit: base, branch: "ado/r1/t1" });
      const wt = new WorktreeManager({ repo: repo.dir, baseDir: join(ts.scratch, "wt"), logger: silentLogger });
      const { path } = await wt.add({ name: "r1/t1", branch: w.branch, base, owner: { runId: "r1", taskId: "t1", workerId: "w-dead" } });
      const registry = new WorktreeRegistry(kv.worktrees);
      const now = new Date().toISOString();
      await registry.put({ runId: "r1", taskId: "t1", attempt: 1, repo: repo.dir, path, branch: w.branch, host: hostname(), workerId: "w-dead", state: "active", createdAt: now, updatedAt: now, updatedBy: "worker w-dead" });
      // What the killed agent left: a commit of its own, a half-written file, the inputs file.
      await writeFile(join(path, "done.txt"), "committed by the agent\n");
      execFileSync("git", ["add", "done.txt"], { cwd: path });
      execFileSync("git", ["-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q", "-m", "agent commit"], { cwd: path });
      await writeFile(join(path, "half.txt"), "half written\n");
      execFileSync("mkdir", ["-p", join(path, ".ado")]);
      await writeFile(join(path, ".ado", "inputs.json"), "[]\n");

      const dead = record("w-dead", { host: hostname(), pid: 999_999 });
      const opts = { kv: kv.worktrees, work: w, worker: dead, deadWorkerId: "w-dead", by: "stealer s1", logger: silentLogger };
      // Its process still runs (cut off, not dead): its agent may still write there. Untouched.
      expect(await keepLostWorktree({ ...opts, processAlive: () => true })).toMatchObject({ kind: "untouched", why: expect.stringContaining("still runs") });
      // On another host: cannot be reached from here. Untouched.
      expect(await keepLostWorktree({ ...opts, worker: { ...dead, host: "elsewhere" }, processAlive: () => false })).toMatchObject({ kind: "untouched" });

      const kept = await keepLostWorktree({ ...opts, processAlive: () => false });
      expect(kept).toMatchObject({ kind: "archived", ref: attemptRef("r1", "t1", 1) });
      const ref = attemptRef("r1", "t1", 1);
      expect(gitOut(repo.dir, "show", `${ref}:done.txt`)).toBe("committed by the agent");
      expect(gitOut(repo.dir, "show", `${ref}:half.txt`)).toBe("half written");
      expect(gitOut(repo.dir, "ls-tree", "-r", "--name-only", ref)).not.toContain(".ado/inputs.json");
      // The next attempt can start: the branch is at the base again and the path is free.
      expect(gitOut(repo.dir, "rev-parse", "refs/heads/ado/r1/t1")).toBe(base);
      expect(await readdir(join(ts.scratch, "wt", "r1")).catch(() => [])).not.toContain("t1");
      expect(gitOut(repo.dir, "worktree", "list", "--porcelain")).not.toContain(path);
      expect(await registry.get("r1", "t1")).toMatchObject({ state: "archived", archiveRef: ref, updatedBy: "stealer s1" });
      // Redone by a successor: nothing left to do, nothing changes.
      expect(await keepLostWorktree({ ...opts, processAlive: () => false })).toMatchObject({ kind: "untouched" });
      expect(gitOut(repo.dir, "rev-parse", ref)).toBe((kept as { commit: string }).commit);

      const again = await wt.add({ name: "r1/t1", branch: w.branch, base, owner: { runId: "r1", taskId: "t1", workerId: "w-next" } });
      expect(gitOut(again.path, "rev-parse", "HEAD")).toBe(base);
    } finally {
      await repo.cleanup();
    }
  });
});

describe("stealer - processes a lost worker left on this host", () => {
  it("kills every process carrying the worker's id (a paused one and its child too), and nothing else", async () => {
    const { spawn } = await import("node:child_process");
    const { killLeftovers } = await import("../../src/actors/stealer/leftovers.js");
    const start = (workerId: string) => {
      // An agent in a session of its own (as agents are), with a child, both with the id.
      const c = spawn("sh", ["-c", "sleep 60 & wait"], { detached: true, stdio: "ignore", env: { ...process.env, ADO_WORKER_ID: workerId } });
      c.unref();
      return c.pid!;
    };
    const { isRunning } = await import("../helpers/cluster.js"); // a zombie does not count
    const lost = start("w-lost-test");
    const other = start("w-other-test");
    try {
      // Both shells have started their sleep (each is 2 processes), then one is paused.
      const { readFile } = await import("node:fs/promises");
      const { processesWith } = await import("../helpers/cluster.js");
      const sleepOf = async (parent: number) => {
        for (const p of await processesWith("sleep 60")) {
          const stat = await readFile(`/proc/${p.pid}/stat`, "utf8").catch(() => "");
          if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === parent) return true;
        }
        return false;
      };
      for (let i = 0; i < 200 && !((await sleepOf(lost)) && (await sleepOf(other))); i++) await new Promise((r) => setTimeout(r, 25));
      process.kill(lost, "SIGSTOP"); // paused by `ado pause`
      const killed = await killLeftovers("w-lost-test");
      expect(killed).toContain(lost);
      expect(killed.length).toBe(2); // the shell and its sleep
      await new Promise((r) => setTimeout(r, 200));
      for (const pid of killed) expect(await isRunning(pid)).toBe(false);
      expect(await isRunning(other)).toBe(true);
      expect(await killLeftovers("w-nobody")).toEqual([]);
    } finally {
      for (const g of [lost, other]) {
        try {
          process.kill(-g, "SIGKILL");
        } catch {
          // gone
        }
      }
    }
  });
});
