import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { applyCleanup, planCleanup, type CleanupItem, type CleanupPolicy } from "../../src/git/cleanup.js";
import { checkoutFingerprint, readBranch } from "../../src/git/repo.js";
import type { WorktreeRecord } from "../../src/git/index.js";
import { WorktreeManager, type WorktreeStatus } from "../../src/git/worktrees.js";
import { sh, tempDir, tempRepo, writeFiles } from "../helpers/repo.js";
import { ownerGone } from "./worktrees-helpers.js";
import { archiveRef } from "../../src/runtime/names.js";

const NOW = new Date("2026-05-10T12:00:00.000Z");
const DAY = 86_400_000;
const BASE = "a".repeat(40);

/** A worktree as inspect() reports it, for the planner's pure tests. */
function status(name: string, over: Partial<WorktreeStatus> = {}): WorktreeStatus {
  return {
    path: `/base/${name}`,
    name,
    branch: `ado/${name}`,
    head: BASE,
    exists: true,
    changes: [],
    unmerged: 0,
    createdAt: new Date(NOW.getTime() - DAY).toISOString(),
    meta: { version: 1, name, branch: `ado/${name}`, base: BASE, createdAt: new Date(NOW.getTime() - DAY).toISOString(), host: "h", pid: 1, local: [] },
    ...over,
  };
}

function record(name: string, state: WorktreeRecord["state"], over: Partial<WorktreeRecord> = {}): WorktreeRecord {
  const [runId, taskId] = name.split("/") as [string, string];
  return { runId, taskId, repo: "/repo", path: `/base/${name}`, branch: `ado/${name}`, host: "h", state, createdAt: NOW.toISOString(), updatedAt: NOW.toISOString(), updatedBy: "test", ...over };
}

/** Creators on host "h" with pid 2 still run; other pids there have exited; other hosts cannot be checked. */
const alive = (m: { host: string; pid: number }) => (m.host === "h" ? m.pid === 2 : undefined);
const plan = (ws: WorktreeStatus[], policy: CleanupPolicy = {}, records: WorktreeRecord[] = []) =>
  planCleanup(ws, new Map(records.map((r) => [r.path, r])), policy, { now: NOW, host: "h", alive });
const running = (name: string) => ({ ...status(name).meta!, pid: 2 });
const kinds = (items: CleanupItem[]) => Object.fromEntries(items.map((i) => [i.name, i.action.kind]));

describe("worktrees cleanup - the policy (pure)", () => {
  it("cleanup - merged and empty worktrees go, gone directories are cleared, work is kept and says why", () => {
    const items = plan([
      status("r/empty"),
      status("r/merged", { head: "b".repeat(40) }),
      status("r/dirty", { changes: [" M README.md", "?? notes.txt"] }),
      status("r/unmerged", { head: "c".repeat(40), unmerged: 2 }),
      status("r/gone", { exists: false }),
    ]);
    expect(kinds(items)).toEqual({ "r/empty": "remove", "r/merged": "remove", "r/dirty": "keep", "r/unmerged": "keep", "r/gone": "clear" });
    const byName = new Map(items.map((i) => [i.name, i]));
    expect(byName.get("r/empty")!.action.why).toBe("no changes and no commits of its own");
    expect(byName.get("r/merged")!.action.why).toMatch(/^merged/);
    expect(byName.get("r/dirty")!.action).toEqual({
      kind: "keep",
      why: "has 2 uncommitted change(s)",
      hint: "--force archives it and removes it, or set worktrees.cleanupAfter",
    });
    expect(byName.get("r/unmerged")!.action.why).toBe("has 2 unmerged commit(s)");
  });

  it("cleanup - a worktree in use is never touched, not even with force; a finished task's is not in use", () => {
    const ws = [
      status("r/running", { changes: ["?? wip"], meta: running("r/running") }),
      status("r/done", { changes: ["?? wip"], meta: running("r/done") }),
      status("r/other-host", { meta: { ...status("x").meta!, host: "elsewhere" } }),
    ];
    const records = [record("r/running", "active"), record("r/done", "committed")];
    const items = plan(ws, { force: true }, records);
    expect(kinds(items)).toEqual({ "r/running": "keep", "r/done": "archive", "r/other-host": "keep" });
    expect(items[0]!.inUse).toBe(true);
    expect(items[0]!.action.why).toMatch(/still runs and its task is active/);
    expect(items[2]!.action.why).toMatch(/created on host elsewhere/);
    // Without ado.json: the registry, or a registration made moments ago, marks it in use.
    const legacy = plan([status("r/legacy", { meta: undefined }), status("r/young", { meta: undefined, createdAt: new Date(NOW.getTime() - 5_000).toISOString() })], { force: true }, [record("r/legacy", "active")]);
    expect(kinds(legacy)).toEqual({ "r/legacy": "keep", "r/young": "keep" });
  });

  it("cleanup - cleanupAfter archives work older than it (since the task finished); force archives all work", () => {
    const ws = [
      status("r/old", { changes: ["?? wip"] }),
      status("r/recent", { unmerged: 1 }),
      status("r/finished-long-ago", { unmerged: 1 }),
    ];
    const records = [record("r/finished-long-ago", "committed", { finishedAt: new Date(NOW.getTime() - 10 * DAY).toISOString() }), record("r/recent", "committed", { finishedAt: new Date(NOW.getTime() - DAY / 2).toISOString() })];
    ws[0]!.createdAt = new Date(NOW.getTime() - 8 * DAY).toISOString();
    const items = plan(ws, { cleanupAfterMs: 7 * DAY }, records);
    expect(kinds(items)).toEqual({ "r/old": "archive", "r/recent": "keep", "r/finished-long-ago": "archive" });
    expect(items[0]!.action).toEqual({ kind: "archive", why: "has 1 uncommitted change(s); created 8d ago, over cleanupAfter (7d)", ref: archiveRef("r", "old", NOW) });
    expect(items[1]!.action.why).toBe("has 1 unmerged commit(s); 12h old, under cleanupAfter (7d)");
    expect(items[2]!.action.why).toMatch(/finished 10d ago/);
    expect(kinds(plan(ws, { force: true }, records))).toEqual({ "r/old": "archive", "r/recent": "archive", "r/finished-long-ago": "archive" });
    expect(archiveRef("r", "old", NOW)).toBe("refs/ado/archive/r/old/2026-05-10T12-00-00-000Z");
  });

  it("cleanup - beyond maxWorktrees the oldest worktrees with work are archived, after the merged ones went", () => {
    const at = (days: number) => new Date(NOW.getTime() - days * DAY).toISOString();
    const ws = [
      status("r/a", { unmerged: 1, createdAt: at(3) }),
      status("r/b", { unmerged: 1, createdAt: at(5) }),
      status("r/c", { unmerged: 1, createdAt: at(1) }),
      status("r/merged", { createdAt: at(9) }),
      status("r/busy", { unmerged: 1, createdAt: at(10), meta: running("r/busy") }),
    ];
    const items = plan(ws, { maxWorktrees: 2 }, [record("r/busy", "active")]);
    // busy (in use) and the newest (c) stay; merged goes anyway; the two oldest with work are archived.
    expect(kinds(items)).toEqual({ "r/a": "archive", "r/b": "archive", "r/c": "keep", "r/merged": "remove", "r/busy": "keep" });
    expect(items[1]!.action.why).toBe("has 1 unmerged commit(s); among the oldest beyond maxWorktrees (2; 4 would stay)");
  });
});

/** Every ref and each worktree's HEAD and status: equal before and after means nothing changed. */
function snapshot(repo: string, dirs: string[]): string {
  return [sh(repo, "for-each-ref", "--format=%(refname) %(objectname)"), sh(repo, "worktree", "list", "--porcelain"), ...dirs.map((d) => (existsSync(d) ? sh(d, "status", "--porcelain", "--untracked-files=all") : "gone"))].join("\n");
}

describe("worktrees cleanup - on a real repository", () => {
  it("cleanup - uncommitted and unmerged work survives: kept without force, archived to refs/ado/archive before removal with it", async () => {
    const { repo, worktrees, root } = await tempRepo({ "README.md": "hello\n", "src/a.ts": "a\n" });
    await writeFiles(repo, { "README.md": "the user's own edit\n" });
    const userBefore = await checkoutFingerprint(repo);
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const add = async (task: string) => (await manager.add({ name: `r1/${task}`, branch: `ado/r1/${task}`, base: root, owner: { runId: "r1", taskId: task } })).path;
    const merged = await add("merged");
    const clean = await add("clean");
    const dirty = await add("dirty");
    const unmerged = await add("unmerged");
    const gone = await add("gone");
    const busy = await add("busy");
    for (const w of [merged, clean, dirty, unmerged, gone]) await ownerGone(w);
    // merged: committed, and the commit is on the run's integration branch.
    await writeFiles(merged, { "m.txt": "merged work\n" });
    const m = await manager.commitAll(merged, { message: "m" });
    sh(repo, "branch", "ado/r1/integration", m.commit);
    // dirty: a modified tracked file and a new untracked one, never committed.
    await writeFiles(dirty, { "src/a.ts": "a, edited by the agent\n", "new/notes.md": "half-written\n" });
    // unmerged: a commit only its branch holds.
    await writeFiles(unmerged, { "u.txt": "unmerged work\n" });
    const u = await manager.commitAll(unmerged, { message: "u" });
    await rm(gone, { recursive: true });
    await writeFiles(busy, { "wip.txt": "the agent is still writing\n" });
    // A worktree outside the base directory, made by the user: never considered.
    const elsewhere = path.join(await tempDir(), "mine");
    sh(repo, "worktree", "add", "-q", "-b", "user-branch", elsewhere, root);
    await writeFiles(elsewhere, { "mine.txt": "the user's\n" });
    // The merge coordinator's `ado hitl resolve --manual` worktree under the same base: not a task's.
    const manual = path.join(worktrees, "_merge", "manual", "h1");
    sh(repo, "worktree", "add", "-q", "--detach", manual, root);
    await writeFiles(manual, { "resolved.txt": "a person's resolution in progress\n" });

    const all = [merged, clean, dirty, unmerged, gone, busy, elsewhere, manual];
    const inspected = await manager.inspect();
    expect(inspected.map((w) => w.name).sort()).toEqual(["r1/busy", "r1/clean", "r1/dirty", "r1/gone", "r1/merged", "r1/unmerged"]);

    // 1. Dry run: a decision and its reason per worktree, and nothing changes.
    const before = snapshot(repo, all);
    const dry = await applyCleanup(manager, planCleanup(inspected, new Map(), {}, { now: new Date() }), { dryRun: true, repo });
    expect(Object.fromEntries(dry.map((o) => [o.name, `${o.result} ${o.action.kind}`]))).toEqual({
      "r1/merged": "planned remove",
      "r1/clean": "planned remove",
      "r1/dirty": "kept keep",
      "r1/unmerged": "kept keep",
      "r1/gone": "planned clear",
      "r1/busy": "kept keep",
    });
    expect(snapshot(repo, all)).toBe(before);

    // 2. Without force: only what holds nothing of its own goes.
    const first = await applyCleanup(manager, planCleanup(await manager.inspect(), new Map(), {}, { now: new Date() }), { repo });
    expect(Object.fromEntries(first.map((o) => [o.name, o.result]))).toEqual({
      "r1/merged": "removed",
      "r1/clean": "removed",
      "r1/dirty": "kept",
      "r1/unmerged": "kept",
      "r1/gone": "cleared",
      "r1/busy": "kept",
    });
    expect([merged, clean].map(existsSync)).toEqual([false, false]);
    expect(await readFile(path.join(dirty, "new/notes.md"), "utf8")).toBe("half-written\n");
    expect(await readBranch(repo, "ado/r1/merged")).toBe(m.commit); // branches always stay

    // 3. With force: work is archived first, then the worktree removed; the one in use stays.
    const forced = await applyCleanup(manager, planCleanup(await manager.inspect(), new Map(), { force: true }, { now: new Date() }), { repo });
    const byName = new Map(forced.map((o) => [o.name, o]));
    expect(byName.get("r1/dirty")!.result).toBe("archived");
    expect(byName.get("r1/unmerged")!.result).toBe("archived");
    expect(byName.get("r1/busy")!.result).toBe("kept");
    expect([dirty, unmerged].map(existsSync)).toEqual([false, false]);
    const dirtyArchive = byName.get("r1/dirty")!.archive!;
    expect(dirtyArchive.ref).toMatch(/^refs\/ado\/archive\/r1\/dirty\/\d{4}-\d\d-\d\dT/);
    expect(dirtyArchive.withChanges).toBe(true);
    expect(sh(repo, "show", `${dirtyArchive.ref}:src/a.ts`)).toBe("a, edited by the agent");
    expect(sh(repo, "show", `${dirtyArchive.ref}:new/notes.md`)).toBe("half-written");
    expect(sh(repo, "rev-parse", `${dirtyArchive.ref}^`)).toBe(root); // on top of the worktree's HEAD
    expect(await readBranch(repo, "ado/r1/dirty")).toBe(root); // its branch did not move
    expect(byName.get("r1/unmerged")!.archive).toMatchObject({ commit: u.commit, withChanges: false });
    expect(sh(repo, "rev-parse", byName.get("r1/unmerged")!.archive!.ref)).toBe(u.commit);

    // The worktree in use, the user's own worktree, the merge coordinator's and the user's checkout are as they were.
    expect(await readFile(path.join(busy, "wip.txt"), "utf8")).toBe("the agent is still writing\n");
    expect(await readFile(path.join(elsewhere, "mine.txt"), "utf8")).toBe("the user's\n");
    expect(await readFile(path.join(manual, "resolved.txt"), "utf8")).toBe("a person's resolution in progress\n");
    expect(sh(repo, "worktree", "list", "--porcelain")).toContain(`worktree ${elsewhere}`);
    expect(await checkoutFingerprint(repo)).toBe(userBefore);
  });

  it("cleanup - cleanupAfter and maxWorktrees archive and remove old work without force", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const paths: string[] = [];
    for (const [i, days] of [20, 3, 2, 1].entries()) {
      const p = (await manager.add({ name: `r/t${i}`, branch: `ado/r/t${i}`, base: root, owner: { runId: "r", taskId: `t${i}` } })).path;
      await writeFiles(p, { [`f${i}.txt`]: `work ${i}\n` });
      await manager.commitAll(p, { message: `t${i}` });
      await ownerGone(p, new Date(Date.now() - days * DAY));
      paths.push(p);
    }
    const out = await applyCleanup(manager, planCleanup(await manager.inspect(), new Map(), { cleanupAfterMs: 7 * DAY, maxWorktrees: 2 }, { now: new Date() }), { repo });
    // t0 is past cleanupAfter; of the 3 left, the oldest (t1) goes for maxWorktrees.
    expect(Object.fromEntries(out.map((o) => [o.name, o.result]))).toEqual({ "r/t0": "archived", "r/t1": "archived", "r/t2": "kept", "r/t3": "kept" });
    expect(paths.map(existsSync)).toEqual([false, false, true, true]);
    expect(sh(repo, "for-each-ref", "--format=%(refname)", "refs/ado/archive/").split("\n").map((r) => r.split("/").slice(0, 5).join("/"))).toEqual([
      "refs/ado/archive/r/t0",
      "refs/ado/archive/r/t1",
    ]);
    expect(sh(repo, "show", `${out[0]!.archive!.ref}:f0.txt`)).toBe("work 0");
  });

  it("cleanup - a worktree that changed after it was inspected is kept, and the failure reported", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const p = (await manager.add({ name: "r/t", branch: "ado/r/t", base: root })).path;
    await ownerGone(p);
    const items = planCleanup(await manager.inspect(), new Map(), {}, { now: new Date() });
    expect(items[0]!.action.kind).toBe("remove");
    await writeFiles(p, { "late.txt": "written after the inspection\n" });
    const [o] = await applyCleanup(manager, items, { repo });
    expect(o!.result).toBe("failed");
    expect(o!.error).toMatch(/changed since it was inspected: .*late\.txt/);
    expect(await readFile(path.join(p, "late.txt"), "utf8")).toBe("written after the inspection\n");
    expect((await manager.list())[0]?.locked).toBeDefined(); // locked again
  });
});
