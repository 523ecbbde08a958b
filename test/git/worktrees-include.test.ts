import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { lstat, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { IncludeTooLargeError } from "../../src/git/errors.js";
import { checkoutFingerprint } from "../../src/git/repo.js";
import { WorktreeManager } from "../../src/git/worktrees.js";
import { sh, tempRepo, writeFiles } from "../helpers/repo.js";

/** A checkout as a developer has it: committed code, ignored and untracked local files, dependencies. */
async function projectRepo() {
  const r = await tempRepo({
    "README.md": "hello\n",
    ".gitignore": "node_modules/\n.env\nconfig/*.local.json\n",
    "config/app.json": '{"tracked":true}\n',
    "packages/web/package.json": "{}\n",
  });
  await writeFiles(r.repo, {
    ".env": "SECRET=from-the-user\n", // ignored
    ".env.example": "SECRET=\n", // untracked, not ignored
    ".env.test": "SECRET=test\n",
    "config/db.local.json": '{"password":"hunter2"}\n', // ignored
    "config/app.json": '{"tracked":"but edited by the user"}\n', // tracked: never copied over
    "packages/web/.env": "WEB=1\n",
    "node_modules/left-pad/index.js": "module.exports = 1;\n",
    "packages/web/node_modules/react/index.js": "module.exports = 2;\n",
    "notes/todo.txt": "not in the include list\n",
  });
  return r;
}

describe("worktrees - include list", () => {
  it("copies listed files the worktree lacks, links dependencies, never overwrites tracked files, and leaves the checkout alone", async () => {
    const { repo, worktrees, root } = await projectRepo();
    const before = await checkoutFingerprint(repo);
    const manager = new WorktreeManager({
      repo,
      baseDir: worktrees,
      include: { include: [".env*", "!.env.test", "config/*.local.json", "config/app.json", "**/.env"], dependencies: ["**/node_modules"], dependencyMode: "symlink" },
    });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root });

    expect(wt.local.copied.sort()).toEqual([".env", ".env.example", "config/db.local.json", "packages/web/.env"]);
    expect(wt.local.linked.sort()).toEqual(["node_modules", "packages/web/node_modules"]);
    expect(await readFile(path.join(wt.path, ".env"), "utf8")).toBe("SECRET=from-the-user\n");
    expect(await readFile(path.join(wt.path, "config/db.local.json"), "utf8")).toBe('{"password":"hunter2"}\n');
    expect(existsSync(path.join(wt.path, ".env.test"))).toBe(false); // excluded by "!"
    expect(existsSync(path.join(wt.path, "notes"))).toBe(false); // not listed
    // The tracked file is the commit's, not the user's edited copy.
    expect(await readFile(path.join(wt.path, "config/app.json"), "utf8")).toBe('{"tracked":true}\n');
    // Dependencies are links to the checkout's directories, not copies.
    expect((await lstat(path.join(wt.path, "node_modules"))).isSymbolicLink()).toBe(true);
    expect(await readlink(path.join(wt.path, "node_modules"))).toBe(path.join(repo, "node_modules"));
    expect(await readFile(path.join(wt.path, "packages/web/node_modules/react/index.js"), "utf8")).toBe("module.exports = 2;\n");
    // The task's commit and an archive of its uncommitted work hold its work only.
    await writeFiles(wt.path, { "src/feature.ts": "export const f = 1;\n" });
    expect((await manager.commitAll(wt.path, { message: "task" })).files).toEqual(["src/feature.ts"]);
    await writeFiles(wt.path, { "src/wip.ts": "export const w = 2;\n", ".env": "SECRET=edited\n" });
    const archived = await manager.archive(wt.path, "refs/ado/archive/r/t/now", "archive");
    expect(archived.withChanges).toBe(true);
    expect(sh(repo, "rev-parse", `${archived.commit}^`)).toBe(sh(wt.path, "rev-parse", "HEAD"));
    expect(sh(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", `${archived.commit}^`, archived.commit)).toBe("src/wip.ts");
    expect(await checkoutFingerprint(repo)).toBe(before);
  });

  it("copied and linked files never reach a commit, even when the agent stages them, and the agent's own git ignores them", async () => {
    const { repo, worktrees, root } = await projectRepo();
    const manager = new WorktreeManager({
      repo,
      baseDir: worktrees,
      // .env.example is untracked but NOT ignored in the checkout: git add -A would take it.
      include: { include: [".env", ".env.example"], dependencies: ["node_modules"], dependencyMode: "symlink" },
    });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root });
    // The agent works, and stages a copied file on purpose.
    await writeFiles(wt.path, { "src/feature.ts": "export const f = 1;\n", ".env": "SECRET=changed-by-agent\n" });
    sh(wt.path, "add", "-f", ".env", ".env.example");
    const c = await manager.commitAll(wt.path, { message: "task" });
    expect(c.files).toEqual(["src/feature.ts"]);
    expect(sh(repo, "ls-tree", "-r", "--name-only", c.commit).split("\n").sort()).toEqual([
      ".gitignore",
      "README.md",
      "config/app.json",
      "packages/web/package.json",
      "src/feature.ts",
    ]);

    // An agent that commits by itself, with the environment the worker gives it.
    const env = { ...process.env, ...(await manager.agentGitEnv(wt.path)) };
    const git = (...args: string[]) => execFileSync("git", ["-c", "user.name=Agent", "-c", "user.email=a@example.com", ...args], { cwd: wt.path, env, encoding: "utf8" });
    await writeFiles(wt.path, { "src/more.ts": "export const m = 2;\n" });
    git("add", "-A");
    git("commit", "-q", "-m", "agent commit");
    expect(git("show", "--name-only", "--format=", "HEAD").trim()).toBe("src/more.ts");
    expect(git("status", "--porcelain")).toBe("");
  });

  it("remove deletes copies and links (never what a link points at) and still refuses real uncommitted work", async () => {
    const { repo, worktrees, root } = await projectRepo();
    const manager = new WorktreeManager({ repo, baseDir: worktrees, include: { include: [".env.example"], dependencies: ["node_modules"], dependencyMode: "symlink" } });
    const wt = await manager.add({ name: "r/t", branch: "ado/r/t", base: root });
    await writeFiles(wt.path, { "wip.txt": "agent's unfinished work\n" });
    await expect(manager.remove(wt.path)).rejects.toThrow(/wip\.txt/);
    // Still there, still locked, the copy too.
    expect(await readFile(path.join(wt.path, "wip.txt"), "utf8")).toBe("agent's unfinished work\n");
    expect((await manager.list())[0]?.locked).toBeDefined();
    expect(await readFile(path.join(wt.path, ".env.example"), "utf8")).toBe("SECRET=\n");
    expect((await lstat(path.join(wt.path, "node_modules"))).isSymbolicLink()).toBe(true);
    expect((await readdir(path.dirname(wt.path))).sort()).toEqual(["t"]); // nothing left beside it
    await writeFile(path.join(wt.path, "wip.txt"), "");
    sh(wt.path, "add", "wip.txt");
    sh(wt.path, "commit", "-q", "-m", "wip");

    expect(await manager.remove(wt.path)).toBe(true);
    expect(existsSync(wt.path)).toBe(false);
    // The user's dependencies survived the removal of the link to them.
    expect(await readFile(path.join(repo, "node_modules/left-pad/index.js"), "utf8")).toBe("module.exports = 1;\n");
    expect(await manager.remove(wt.path)).toBe(false); // already gone: nothing to do
  });

  it("the one glob dialect: a name without '/' is copied at any depth, '/name' only at the root", async () => {
    const { repo, worktrees, root } = await projectRepo();
    const anywhere = new WorktreeManager({ repo, baseDir: worktrees, include: { include: [".env"] } });
    expect((await anywhere.add({ name: "r/any", branch: "ado/r/any", base: root })).local.copied.sort()).toEqual([".env", "packages/web/.env"]);
    const rootOnly = new WorktreeManager({ repo, baseDir: worktrees, include: { include: ["/.env", "config/"] } });
    // config/ is tracked (the worktree has it): of a selected directory, what the worktree lacks is copied.
    expect((await rootOnly.add({ name: "r/root", branch: "ado/r/root", base: root })).local.copied.sort()).toEqual([".env", "config/db.local.json"]);
    // `node_modules` (the default) has no `/`: every node_modules, at any depth, is left out.
    expect((await rootOnly.add({ name: "r/deps", branch: "ado/r/deps", base: root })).local.skipped).toEqual(["node_modules", "packages/web/node_modules"]);
  });

  it("dependencies are skipped by default, and an include list over its budget fails before writing anything", async () => {
    const { repo, worktrees, root } = await projectRepo();
    const plain = new WorktreeManager({ repo, baseDir: worktrees });
    const wt = await plain.add({ name: "r/plain", branch: "ado/r/plain", base: root });
    // Nothing to copy or link: the checkout is not even walked (every task's add pays for a walk).
    expect(wt.local).toEqual({ copied: [], linked: [], skipped: [], bytes: 0 });
    expect(existsSync(path.join(wt.path, "node_modules"))).toBe(false);

    await writeFiles(repo, { "big/blob.bin": "x".repeat(64 * 1024) });
    const greedy = new WorktreeManager({ repo, baseDir: worktrees, include: { include: [".env", "big"], maxCopyBytes: 32 * 1024 } });
    const err = await greedy.add({ name: "r/greedy", branch: "ado/r/greedy", base: root }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncludeTooLargeError);
    expect((err as Error).message).toMatch(/worktrees\.include 'big' would copy 0\.1 MiB .*worktrees\.dependencies/);
    // Nothing left half-made: no worktree, no registration.
    expect(existsSync(path.join(worktrees, "r/greedy"))).toBe(false);
    expect((await greedy.list()).map((w) => w.path)).toEqual([wt.path]);
  });
});
