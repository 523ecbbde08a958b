/**
 * What a removal does under the repository lock of this process, which every task's add
 * and remove take in turn: only git's removal. The check for uncommitted work runs
 * before it, so a refused removal never takes the lock, and a clean one takes it once.
 */
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { WorktreeDirtyError } from "../../src/git/errors.js";
import { readBranch } from "../../src/git/repo.js";
import { worktreeLockStats, WorktreeManager } from "../../src/git/worktrees.js";
import { tempRepo, writeFiles } from "../helpers/repo.js";

describe("WorktreeManager - the repository lock", () => {
  it("a removal refused for uncommitted work never takes the lock; a clean removal takes it once and removes the worktree", async () => {
    const { repo, worktrees, root } = await tempRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root, lockReason: "task t" });
    await writeFiles(wt.path, { "work.txt": "not committed\n" });

    const before = worktreeLockStats().remove.n;
    const err = await manager.remove(wt.path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorktreeDirtyError);
    expect((err as WorktreeDirtyError).message).toContain("work.txt");
    expect(worktreeLockStats().remove.n).toBe(before);
    // Still there and still locked: prune leaves it alone.
    expect(existsSync(wt.path)).toBe(true);
    expect(await manager.list()).toEqual([{ path: wt.path, branch: "ado/r/t", head: root, locked: "task t" }]);

    const { commit } = await manager.commitAll(wt.path, { message: "task t" });
    expect(await manager.remove(wt.path)).toBe(true);
    expect(worktreeLockStats().remove.n).toBe(before + 1);
    expect(existsSync(wt.path)).toBe(false);
    expect(await manager.list()).toEqual([]);
    expect(await readBranch(repo, "ado/r/t")).toBe(commit);
    // Gone already: nothing to remove.
    expect(await manager.remove(wt.path)).toBe(false);
  });
});
