/**
 * A task's attempts and its branch: the next attempt owns the branch an earlier one
 * left (moved to the new base, nothing lost), a dead worker's leftover is replaced
 * whatever it holds, and ado's own `.ado/` directory never counts as the agent's work.
 */
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { BranchConflictError } from "../../src/git/errors.js";
import { readBranch } from "../../src/git/repo.js";
import { WorktreeManager, worktreesOnBranch } from "../../src/git/worktrees.js";
import { commitOnBranch, sh, show, tempRepo, writeFiles } from "../helpers/repo.js";
import { ownerGone } from "./worktrees-helpers.js";

const archives = (repo: string, prefix: string) => sh(repo, "for-each-ref", "--format=%(refname)", prefix).split("\n").filter(Boolean);

describe("worktrees - the next attempt owns its branch", () => {
  it("a branch left at an old base (kept by another ref) is moved to the new base, nothing archived", async () => {
    const { repo, worktrees, root } = await tempRepo();
    // The integration branch moved on (another task merged); attempt 1 had started at root.
    const newBase = commitOnBranch(repo, "ado/r/integration", root, { "b.txt": "b\n" });
    sh(repo, "branch", "ado/r/c", root);
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    // Without owning the branch: refused, as before.
    await expect(manager.add({ name: "r/c", branch: "ado/r/c", base: newBase })).rejects.toBeInstanceOf(BranchConflictError);
    const wt = await manager.add({ name: "r/c", branch: "ado/r/c", base: newBase, ownBranch: true, owner: { runId: "r", taskId: "c" } });
    expect(await readBranch(repo, "ado/r/c")).toBe(newBase);
    expect(existsSync(path.join(wt.path, "b.txt"))).toBe(true);
    expect(archives(repo, "refs/ado/")).toEqual([]);
  });

  it("commits on the branch that no ref keeps are archived before it moves", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const newBase = commitOnBranch(repo, "ado/r/integration", root, { "b.txt": "b\n" });
    const orphan = commitOnBranch(repo, "ado/r/c", root, { "lonely.txt": "only here\n" });
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    await manager.add({ name: "r/c", branch: "ado/r/c", base: newBase, ownBranch: true, owner: { runId: "r", taskId: "c" } });
    expect(await readBranch(repo, "ado/r/c")).toBe(newBase);
    const kept = archives(repo, "refs/ado/archive/r/c/");
    expect(kept).toHaveLength(1);
    expect(sh(repo, "rev-parse", kept[0]!)).toBe(orphan);
    expect(show(repo, kept[0]!, "lonely.txt")).toBe("only here\n");
  });

  it("a dead worker's leftover whose branch moved past base (killed after its commit) is archived and replaced", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const first = await manager.add({ name: "r/t", branch: "ado/r/t", base: root, owner: { runId: "r", taskId: "t", workerId: "w1", attempt: 1 } });
    await writeFiles(first.path, { "done.txt": "attempt 1\n" });
    const committed = await manager.commitAll(first.path, { message: "attempt 1" });
    expect(committed.changed).toBe(true);
    await ownerGone(first.path); // SIGKILLed before its result was stored

    const again = await new WorktreeManager({ repo, baseDir: worktrees }).add({ name: "r/t", branch: "ado/r/t", base: root, ownBranch: true, owner: { runId: "r", taskId: "t", attempt: 2 } });
    expect(again.path).toBe(first.path);
    expect(await readBranch(repo, "ado/r/t")).toBe(root);
    expect(existsSync(path.join(again.path, "done.txt"))).toBe(false);
    // Its commit is kept (the leftover's archive holds it).
    const kept = archives(repo, "refs/ado/archive/r/t/");
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.some((ref) => sh(repo, "rev-parse", ref) === committed.commit)).toBe(true);
  });

  it("worktreesOnBranch finds the worktree with its ado.json (worker and attempt)", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root, owner: { runId: "r", taskId: "t", workerId: "w9", attempt: 3 } });
    const found = await worktreesOnBranch(repo, "ado/r/t");
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ path: wt.path, exists: true, meta: { workerId: "w9", attempt: 3, pid: process.pid } });
    expect(await worktreesOnBranch(repo, "ado/r/other")).toEqual([]);
  });
});

describe("worktrees - ado's own .ado/ directory is never the agent's work", () => {
  it("inspect, remove, commitAll and archives leave it out", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root, owner: { runId: "r", taskId: "t" } });
    await mkdir(path.join(wt.path, ".ado"), { recursive: true });
    await writeFile(path.join(wt.path, ".ado", "inputs.json"), "[]\n");
    // What a worker killed mid-task leaves: no uncommitted change of the agent's.
    expect((await manager.inspect())[0]!.changes).toEqual([]);
    const c = await manager.commitAll(wt.path, { message: "nothing" });
    expect(c).toMatchObject({ changed: false, commit: root });
    await writeFiles(wt.path, { "work.txt": "w\n" });
    const a = await manager.archive(wt.path, "refs/ado/archive/r/t/x", "kept");
    expect(sh(repo, "ls-tree", "-r", "--name-only", a.commit).split("\n").sort()).toEqual(["README.md", "work.txt"]);
    const done = await manager.commitAll(wt.path, { message: "work" });
    expect(done.files).toEqual(["work.txt"]);
    // A clean worktree but for .ado/: removed without force.
    expect(await manager.remove(wt.path)).toBe(true);
    expect(existsSync(wt.path)).toBe(false);
  });

  it("the agent's own git ignores it", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root });
    await mkdir(path.join(wt.path, ".ado"), { recursive: true });
    await writeFile(path.join(wt.path, ".ado", "prompt.md"), "do it\n");
    const env = await manager.agentGitEnv(wt.path);
    const { execFileSync } = await import("node:child_process");
    const status = execFileSync("git", ["status", "--porcelain", "--untracked-files=all"], { cwd: wt.path, env: { ...process.env, ...env }, encoding: "utf8" });
    expect(status).toBe("");
  });
});

describe("worktrees - what an agent did with git", () => {
  it("branchNames() and branchTip() read loose and packed refs from disk as git lists them", async () => {
    const { repo, worktrees, root } = await tempRepo();
    commitOnBranch(repo, "packed/one", root, { "a.txt": "a\n" });
    sh(repo, "pack-refs", "--all");
    const loose = commitOnBranch(repo, "loose", root, { "b.txt": "b\n" });
    // A packed ref overridden by a loose one.
    const moved = commitOnBranch(repo, "packed/one", loose, { "c.txt": "c\n" });
    const fromGit = new Map(
      sh(repo, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/")
        .split("\n")
        .filter(Boolean)
        .map((l) => l.split(" ") as [string, string]),
    );
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    expect([...(await manager.branchNames())].sort()).toEqual([...fromGit.keys()].sort());
    for (const [name, sha] of fromGit) expect(await manager.branchTip(name), name).toBe(sha);
    expect(await manager.branchTip("no-such-branch")).toBeUndefined();
    expect(fromGit.get("packed/one")).toBe(moved);
  });

  it("attemptGit: an agent that left git alone shows nothing; a branch it made and committed on shows, another task's does not", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root });
    const before = await manager.branchNames();
    expect(await manager.attemptGit(wt.path, { branch: "ado/r/t", base: root, before })).toEqual({
      head: root,
      headBranch: "ado/r/t",
      taskTip: root,
      onBase: true,
      belowBase: false,
      taskInHead: true,
      strays: [],
    });
    sh(wt.path, "checkout", "-q", "-b", "mine");
    await writeFiles(wt.path, { "m.txt": "m\n" });
    sh(wt.path, "add", "m.txt");
    sh(wt.path, "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q", "-m", "mine");
    // Another task's branch made meanwhile at the same base is none of this attempt's.
    sh(repo, "branch", "ado/r/other", root);
    const after = await manager.attemptGit(wt.path, { branch: "ado/r/t", base: root, before });
    const tip = sh(wt.path, "rev-parse", "HEAD");
    expect(after).toMatchObject({ head: tip, headBranch: "mine", taskTip: root, onBase: true, belowBase: false, taskInHead: true });
    expect(after.strays).toEqual([{ branch: "mine", tip, onBase: true, inHead: true }]);
  });
});


describe("worktrees - a checkpoint of a worktree an agent works in", () => {
  it("commits the worktree's state (staged, unstaged, untracked) on HEAD under the ref, leaving the agent's index, HEAD and branch as they were; skipped when nothing changed since", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root, owner: { runId: "r", taskId: "t" } });
    await writeFiles(wt.path, { "staged.txt": "s\n", "README.md": "changed\n", "new/untracked.txt": "u\n" });
    sh(wt.path, "add", "staged.txt");
    await mkdir(path.join(wt.path, ".ado"), { recursive: true });
    await writeFile(path.join(wt.path, ".ado", "prompt.md"), "ado's own\n");
    const indexBefore = sh(wt.path, "ls-files", "--stage");
    const statusBefore = sh(wt.path, "status", "--porcelain=v1", "--untracked-files=all");

    const ref = "refs/ado/runs/r/checkpoints/t/1";
    const first = await manager.snapshot(wt.path, { ref, message: "checkpoint 1" });
    expect(first.commit).toBeDefined();
    expect(sh(repo, "rev-parse", ref)).toBe(first.commit);
    expect(sh(repo, "rev-parse", `${first.commit}^`)).toBe(root);
    expect(sh(repo, "ls-tree", "-r", "--name-only", first.commit!).split("\n").sort()).toEqual(["README.md", "new/untracked.txt", "staged.txt"]);
    expect(show(repo, first.commit!, "README.md")).toBe("changed\n");
    // The agent sees nothing: same index, same status, HEAD and branch still at the base.
    expect(sh(wt.path, "ls-files", "--stage")).toBe(indexBefore);
    expect(sh(wt.path, "status", "--porcelain=v1", "--untracked-files=all")).toBe(statusBefore);
    expect(sh(wt.path, "rev-parse", "HEAD")).toBe(root);
    expect(await readBranch(repo, "ado/r/t")).toBe(root);

    // Nothing changed since: no new commit, the ref stays.
    const again = await manager.snapshot(wt.path, { ref, message: "checkpoint 2", unless: { tree: first.tree, head: first.head } });
    expect(again.commit).toBeUndefined();
    expect(sh(repo, "rev-parse", ref)).toBe(first.commit);
    // A change: the ref moves on.
    await writeFiles(wt.path, { "more.txt": "m\n" });
    const third = await manager.snapshot(wt.path, { ref, message: "checkpoint 3", unless: { tree: first.tree, head: first.head } });
    expect(third.commit).toBeDefined();
    expect(sh(repo, "rev-parse", ref)).toBe(third.commit);
  });
});
