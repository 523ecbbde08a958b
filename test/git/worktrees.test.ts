import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { BranchConflictError, InvalidWorktreeNameError, WorktreeDirtyError, WorktreeStateError } from "../../src/git/errors.js";
import { readBranch } from "../../src/git/repo.js";
import { WorktreeManager } from "../../src/git/worktrees.js";
import { GitSpawnCounter } from "../../bench/git-spawns.js";
import { commitOnBranch, sh, show, tempRepo, withoutGlobalGitConfig, writeFiles } from "../helpers/repo.js";
import { ownerGone } from "./worktrees-helpers.js";

describe("WorktreeManager", () => {
  it("worktrees - add, commitAll and remove round trip keeps the branch", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });

    const wt = await manager.add({ name: "r1/t1", branch: "ado/r1/t1", base: root, lockReason: "task t1" });
    expect(wt).toMatchObject({ path: path.join(worktrees, "r1/t1"), branch: "ado/r1/t1" });
    expect(await readFile(path.join(wt.path, "README.md"), "utf8")).toBe("hello\n");
    expect(await manager.list()).toEqual([{ path: wt.path, branch: "ado/r1/t1", head: root, locked: "task t1" }]);

    const unchanged = await manager.commitAll(wt.path, { message: "nothing" });
    expect(unchanged).toEqual({ commit: root, changed: false, files: [] });

    await writeFiles(wt.path, { "src/new.ts": "export {};\n", "README.md": "changed\n" });
    const committed = await manager.commitAll(wt.path, { message: "task t1", authorName: "Agent", authorEmail: "agent@example.com" });
    expect(committed.changed).toBe(true);
    expect(committed.files.sort()).toEqual(["README.md", "src/new.ts"]);
    expect(await readBranch(repo, "ado/r1/t1")).toBe(committed.commit);
    expect(sh(repo, "log", "-1", "--format=%an <%ae>|%s", committed.commit)).toBe("Agent <agent@example.com>|task t1");

    await manager.remove(wt.path);
    expect(existsSync(wt.path)).toBe(false);
    expect(await manager.list()).toEqual([]);
    expect(await readBranch(repo, "ado/r1/t1")).toBe(committed.commit);
  });

  it("worktrees - commitAll works with no git identity configured, committing as ado", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "t", branch: "ado/t", base: root });
    await writeFiles(wt.path, { "a.txt": "a\n" });
    const { commit } = await withoutGlobalGitConfig(() => manager.commitAll(wt.path, { message: "m" }));
    expect(sh(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", commit)).toBe("ado <ado@localhost>|ado <ado@localhost>");
  });

  it("worktrees - commitAll asks git for the identity once per repository (again after a config change, never another repository's) and reads the new HEAD from disk", async () => {
    const a = await tempRepo();
    const b = await tempRepo();
    const managers = { a: new WorktreeManager({ repo: a.repo, baseDir: a.worktrees }), b: new WorktreeManager({ repo: b.repo, baseDir: b.worktrees }) };
    const spawns = new GitSpawnCounter();
    const commitIn = async (which: "a" | "b", name: string) => {
      const { root } = which === "a" ? a : b;
      const wt = await managers[which].add({ name, branch: `ado/${name}`, base: root });
      await writeFiles(wt.path, { [`${name}.txt`]: `${name}\n` });
      spawns.start();
      try {
        return (await managers[which].commitAll(wt.path, { message: name })).commit;
      } finally {
        spawns.stop();
      }
    };
    const author = (repo: string, commit: string) => sh(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", commit);
    await withoutGlobalGitConfig(async () => {
      const first = await commitIn("a", "t1");
      const second = await commitIn("a", "t2");
      expect(spawns.counts.get("config -z")).toBe(1);
      sh(a.repo, "config", "user.name", "Someone");
      const third = await commitIn("a", "t3");
      expect(spawns.counts.get("config -z")).toBe(2);
      const inB = await commitIn("b", "t4"); // b configures no identity: a's is not b's
      expect(spawns.counts.get("config -z")).toBe(3);
      expect(author(a.repo, first)).toBe("ado <ado@localhost>|ado <ado@localhost>");
      expect(author(a.repo, second)).toBe("ado <ado@localhost>|ado <ado@localhost>");
      expect(author(a.repo, third)).toBe("Someone <ado@localhost>|Someone <ado@localhost>");
      expect(author(b.repo, inB)).toBe("ado <ado@localhost>|ado <ado@localhost>");
      for (const [repo, name, commit] of [[a.repo, "t1", first], [a.repo, "t2", second], [a.repo, "t3", third], [b.repo, "t4", inB]] as const) {
        expect(sh(repo, "rev-parse", `ado/${name}`)).toBe(commit);
      }
    });
    // Per commit: add, diff, commit; no rev-parse of the new HEAD, and the identity read twice in a, once in b.
    expect(Object.fromEntries(spawns.counts)).toEqual({ add: 4, diff: 4, commit: 4, "config -z": 3 });
  });

  it("worktrees - remove refuses a dirty worktree, names what is uncommitted and keeps the files", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "t", branch: "ado/t", base: root });
    await writeFiles(wt.path, { "notes.txt": "work in progress\n", "README.md": "edited\n" });

    const err = await manager.remove(wt.path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorktreeDirtyError);
    expect((err as Error).message).toContain(wt.path);
    expect((err as Error).message).toContain("notes.txt");
    expect((err as Error).message).toContain("README.md");
    expect(await readFile(path.join(wt.path, "notes.txt"), "utf8")).toBe("work in progress\n");
    expect(await manager.list()).toHaveLength(1);

    await manager.remove(wt.path, { force: true });
    expect(existsSync(wt.path)).toBe(false);
    expect(await manager.list()).toEqual([]);
  });

  it("worktrees - remove clears a registration whose directory is already gone", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "t", branch: "ado/t", base: root });
    await rm(wt.path, { recursive: true });
    await manager.remove(wt.path);
    expect(await manager.list()).toEqual([]);
  });

  it("worktrees - 50 concurrent adds on one repository all succeed, then all are removed", { timeout: 120_000 }, async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const names = Array.from({ length: 50 }, (_, i) => `run/t${i}`);

    const results = await Promise.allSettled(names.map((name) => manager.add({ name, branch: `ado/${name}`, base: root })));
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    expect(await manager.list()).toHaveLength(50);

    // A second manager on the same repository shares the per-repository queue.
    const other = new WorktreeManager({ repo: path.join(repo, "."), baseDir: worktrees });
    const removed = await Promise.allSettled(names.map((name, i) => (i % 2 ? manager : other).remove(path.join(worktrees, name))));
    expect(removed.filter((r) => r.status === "rejected")).toEqual([]);
    expect(await manager.list()).toEqual([]);
    expect(sh(repo, "branch", "--list", "ado/run/*").split("\n")).toHaveLength(50);
  });

  it("worktrees - add retries while another process holds the branch's ref lock", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const logs: string[] = [];
    const logger = pino({ level: "warn" }, { write: (line: string) => void logs.push(line) });
    const manager = new WorktreeManager({ repo, baseDir: worktrees, logger });
    const lockFile = path.join(repo, ".git/refs/heads/ado/locked.lock");
    await mkdir(path.dirname(lockFile), { recursive: true });
    await writeFile(lockFile, "");
    // git itself waits 100 ms for a ref lock (core.filesRefLockTimeout): the lock is held
    // until the manager has said it retries (not for a fixed time, which a loaded machine
    // can spend before the first add even runs), at most 30 s.
    const release = (async () => {
      for (let i = 0; i < 600 && !logs.some((line) => line.includes("git lock busy, retrying")); i++) await new Promise((r) => setTimeout(r, 50));
      await rm(lockFile);
    })();

    const wt = await manager.add({ name: "locked", branch: "ado/locked", base: root });
    await release;
    expect(await readBranch(repo, "ado/locked")).toBe(root);
    expect(existsSync(path.join(wt.path, "README.md"))).toBe(true);
    expect(logs.some((line) => line.includes("git lock busy, retrying"))).toBe(true);
  });

  it("worktrees - a directory in the way is moved aside, never deleted, even when a lock error forces a retry first", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    // Left by a crash whose registration is gone: it may hold work.
    await writeFiles(path.join(worktrees, "r/t"), { "precious.txt": "work nobody committed\n" });
    const lockFile = path.join(repo, ".git/refs/heads/ado/r/t.lock");
    await mkdir(path.dirname(lockFile), { recursive: true });
    await writeFile(lockFile, "");
    const release = new Promise((resolve) => setTimeout(resolve, 400)).then(() => rm(lockFile));

    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root });
    await release;
    expect(existsSync(path.join(wt.path, "README.md"))).toBe(true);
    const aside = (await readdir(path.join(worktrees, "r"))).filter((n) => n.startsWith("t.orphaned-"));
    expect(aside).toHaveLength(1);
    expect(await readFile(path.join(worktrees, "r", aside[0]!, "precious.txt"), "utf8")).toBe("work nobody committed\n");
  });

  it("worktrees - add reuses a branch left at base by an earlier attempt", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const first = await manager.add({ name: "t", branch: "ado/t", base: root });
    // A crashed attempt: the worktree registration is left behind and its directory is lost.
    await rm(first.path, { recursive: true });

    const again = await manager.add({ name: "t", branch: "ado/t", base: root });
    expect(again.path).toBe(first.path);
    expect(existsSync(path.join(again.path, "README.md"))).toBe(true);
    expect(await manager.list()).toHaveLength(1);
  });

  it("worktrees - add will not replace a leftover worktree that holds uncommitted work", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const first = await manager.add({ name: "t", branch: "ado/t", base: root });
    await writeFiles(first.path, { "half-done.txt": "agent output\n" });

    await expect(manager.add({ name: "t", branch: "ado/t", base: root })).rejects.toBeInstanceOf(WorktreeDirtyError);
    expect(await readFile(path.join(first.path, "half-done.txt"), "utf8")).toBe("agent output\n");
  });

  it("worktrees - a leftover of a process that died mid-task is archived, then replaced", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const first = await manager.add({ name: "r1/t", branch: "ado/r1/t", base: root, owner: { runId: "r1", taskId: "t", workerId: "w1" } });
    await writeFiles(first.path, { "half-done.txt": "agent output\n" });
    await ownerGone(first.path); // the worker that made it was SIGKILLed

    const again = await new WorktreeManager({ repo, baseDir: worktrees }).add({ name: "r1/t", branch: "ado/r1/t", base: root });
    expect(again.path).toBe(first.path);
    expect(existsSync(path.join(again.path, "half-done.txt"))).toBe(false); // a clean start
    const refs = sh(repo, "for-each-ref", "--format=%(refname)", "refs/ado/archive/r1/t/").split("\n").filter(Boolean);
    expect(refs).toHaveLength(1);
    expect(show(repo, refs[0]!, "half-done.txt")).toBe("agent output\n"); // nothing lost
  });

  it("worktrees - add refuses a branch that already moved past base", async () => {
    const { repo, worktrees, root } = await tempRepo();
    commitOnBranch(repo, "ado/t", root, { "x.txt": "x\n" });
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    await expect(manager.add({ name: "t", branch: "ado/t", base: root })).rejects.toBeInstanceOf(BranchConflictError);
    expect(await manager.list()).toEqual([]);
    expect(show(repo, "ado/t", "x.txt")).toBe("x\n");
  });

  it("worktrees - add rejects a name that escapes the base directory", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    await expect(manager.add({ name: "../outside", branch: "ado/x", base: root })).rejects.toBeInstanceOf(
      InvalidWorktreeNameError,
    );
  });
});

describe("WorktreeManager - base directory", () => {
  it("worktrees - a base directory inside the checkout must be ignored by git; ignored, it works", async () => {
    const { repo, root } = await tempRepo();
    const inside = path.join(repo, ".ado-worktrees");
    const manager = new WorktreeManager({ repo, baseDir: inside });
    const err = await manager.add({ name: "r/t", branch: "ado/r/t", base: root }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorktreeStateError);
    expect((err as Error).message).toMatch(/is inside the checkout .* add '\.ado-worktrees\/' to \.gitignore/);
    await writeFile(path.join(repo, ".git", "info", "exclude"), ".ado-worktrees/\n");
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root });
    expect(wt.path).toBe(path.join(inside, "r/t"));
    expect(sh(repo, "status", "--porcelain")).toBe("");
  });
});
