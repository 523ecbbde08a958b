import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseNumstat, taskDiff } from "../../src/git/diff.js";
import { commitOnBranch, sh, tempRepo } from "../helpers/repo.js";

describe("git - a task's diff against its base", () => {
  it("git diff - a commit against its base: the files with their counts and the patch", async () => {
    const { repo, root } = await tempRepo({ "README.md": "hello\n", "keep.txt": "same\n" });
    const head = commitOnBranch(repo, "task", root, { "README.md": "hello\nworld\n", "new.txt": "fresh\n" });
    const d = await taskDiff({ repo, base: root, head });
    expect(d.files).toEqual([
      { path: "README.md", added: 1, deleted: 0 },
      { path: "new.txt", added: 1, deleted: 0 },
    ]);
    expect(d.patch).toContain("+world");
    expect(d.patch).toContain("+fresh");
    expect(d.patch).not.toContain("keep.txt");
    expect(d.truncated).toBe(false);
    expect(d.untracked).toEqual([]);
  });

  it("git diff - a large patch is cut at a line end within the limit, and says so", async () => {
    const { repo, root } = await tempRepo();
    const big = Array.from({ length: 5_000 }, (_, i) => `line ${i} ${"x".repeat(60)}`).join("\n") + "\n";
    const head = commitOnBranch(repo, "task", root, { "big.txt": big });
    const d = await taskDiff({ repo, base: root, head, maxBytes: 10_000 });
    expect(d.truncated).toBe(true);
    expect(Buffer.byteLength(d.patch)).toBeLessThanOrEqual(10_000);
    expect(d.patch.endsWith("\n")).toBe(true);
    expect(d.files).toEqual([{ path: "big.txt", added: 5_000, deleted: 0 }]);
  });

  it("git diff - a work tree in progress: its changes to tracked files, and the new files it does not track yet", async () => {
    const { repo, root } = await tempRepo({ "README.md": "hello\n" });
    await writeFile(path.join(repo, "README.md"), "changed\n");
    await writeFile(path.join(repo, "draft.txt"), "new\n");
    // ado's own files in a worktree are not the task's work.
    await mkdir(path.join(repo, ".ado"));
    await writeFile(path.join(repo, ".ado", "prompt.md"), "do it\n");
    const d = await taskDiff({ repo, base: root, worktree: repo });
    expect(d.head).toBe("worktree");
    expect(d.files.map((f) => f.path)).toEqual(["README.md"]);
    expect(d.patch).toContain("+changed");
    expect(d.untracked).toEqual(["draft.txt"]);
    // Read-only: nothing was added to the index.
    expect(sh(repo, "status", "--porcelain")).toContain("?? draft.txt");
  });

  it("git diff - numstat records: plain, binary and renamed", () => {
    expect(parseNumstat("1\t2\ta.txt\0-\t-\tpic.png\0" + "0\t0\t\0old.txt\0new.txt\0")).toEqual([
      { path: "a.txt", added: 1, deleted: 2 },
      { path: "pic.png", added: null, deleted: null },
      { path: "new.txt", added: 0, deleted: 0 },
    ]);
  });

  it("git diff - an unknown base is an error that names the command", async () => {
    const { repo } = await tempRepo();
    await expect(taskDiff({ repo, base: "0".repeat(40), head: "HEAD" })).rejects.toThrow(/git .*diff/);
  });
});
