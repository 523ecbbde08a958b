import { appendFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { mergeIntoBranch } from "../../src/git/merge.js";
import { checkoutFingerprint, createBranchIfAbsent } from "../../src/git/repo.js";
import { WorktreeManager } from "../../src/git/worktrees.js";
import { sh, tempRepo, writeFiles } from "../helpers/repo.js";

/** A checkout the user is in the middle of: untracked, modified and staged changes. */
async function busyCheckout() {
  const fixture = await tempRepo({ "tracked.txt": "original\n", "staged.txt": "before\n", "README.md": "hi\n" });
  const { repo } = fixture;
  await writeFile(path.join(repo, "untracked.txt"), "scratch\n");
  await writeFile(path.join(repo, "tracked.txt"), "modified, not staged\n");
  await writeFile(path.join(repo, "staged.txt"), "after\n");
  sh(repo, "add", "staged.txt");
  return fixture;
}

describe("checkoutFingerprint", () => {
  it("fingerprint - unchanged by worktree add, commit, merge and remove on a busy checkout", { timeout: 60_000 }, async () => {
    const { repo, worktrees, root } = await busyCheckout();
    const before = await checkoutFingerprint(repo);

    const manager = new WorktreeManager({ repo, baseDir: worktrees });
    await createBranchIfAbsent(repo, "ado/r1/integration", root);
    const tasks = await Promise.all(
      ["a", "b"].map((t) => manager.add({ name: `r1/${t}`, branch: `ado/r1/${t}`, base: root })),
    );
    for (const [i, wt] of tasks.entries()) {
      await writeFiles(wt.path, { [`task${i}.txt`]: `task ${i}\n` });
      const { commit } = await manager.commitAll(wt.path, { message: `task ${i}` });
      const outcome = await mergeIntoBranch(repo, { target: "ado/r1/integration", source: commit, message: `merge ${i}` });
      expect(["fast-forward", "merged"]).toContain(outcome.kind);
    }
    for (const wt of tasks) await manager.remove(wt.path);

    expect(await checkoutFingerprint(repo)).toBe(before);
    expect(sh(repo, "--no-optional-locks", "status", "--porcelain=v1")).toBe("M  staged.txt\n M tracked.txt\n?? untracked.txt");
  });

  it("fingerprint - changes when a modified file's content changes", async () => {
    const { repo } = await busyCheckout();
    const before = await checkoutFingerprint(repo);
    await appendFile(path.join(repo, "tracked.txt"), "more\n");
    expect(await checkoutFingerprint(repo)).not.toBe(before);
  });

  it("fingerprint - changes when the index changes", async () => {
    const { repo } = await busyCheckout();
    const before = await checkoutFingerprint(repo);
    sh(repo, "add", "tracked.txt");
    expect(await checkoutFingerprint(repo)).not.toBe(before);
  });
});
