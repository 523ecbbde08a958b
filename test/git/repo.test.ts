import { mkdir } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  EmptyRepositoryError,
  NotAGitRepositoryError,
  UnknownRevisionError,
} from "../../src/git/errors.js";
import {
  createBranchIfAbsent,
  isAncestor,
  openRepo,
  readBranch,
  resolveCommit,
} from "../../src/git/repo.js";
import { commitOnBranch, sh, tempDir, tempRepo } from "../helpers/repo.js";

describe("openRepo", () => {
  it("openRepo - finds the top level and git common dir from a subdirectory", async () => {
    const { repo } = await tempRepo({ "src/a.ts": "a\n" });
    const info = await openRepo(path.join(repo, "src"));
    expect(info).toEqual({ topLevel: repo, gitCommonDir: path.join(repo, ".git") });
  });

  it("openRepo - rejects a directory that is not a repository, telling to pass --repo", async () => {
    const dir = await tempDir();
    const err = await openRepo(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotAGitRepositoryError);
    expect((err as Error).message).toContain("pass --repo");
    expect((err as NotAGitRepositoryError).retryable).toBe(false);
    expect((err as Error).name).toBe("NotAGitRepositoryError");
  });

  it("openRepo - rejects a directory that does not exist", async () => {
    const dir = await tempDir();
    await expect(openRepo(path.join(dir, "missing"))).rejects.toBeInstanceOf(NotAGitRepositoryError);
  });

  it("openRepo - rejects a repository without commits, telling to make a first commit", async () => {
    const repo = path.join(await tempDir(), "empty");
    await mkdir(repo);
    sh(repo, "init", "-q");
    const err = await openRepo(repo).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EmptyRepositoryError);
    expect((err as Error).message).toContain("make a first commit");
  });
});

describe("refs", () => {
  it("resolveCommit - returns the full sha of HEAD and of a branch", async () => {
    const { repo, root } = await tempRepo();
    expect(await resolveCommit(repo)).toBe(root);
    expect(await resolveCommit(repo, "main")).toMatch(/^[0-9a-f]{40}$/);
  });

  it("resolveCommit - rejects a revision that names no commit", async () => {
    const { repo } = await tempRepo();
    await expect(resolveCommit(repo, "no-such-branch")).rejects.toBeInstanceOf(UnknownRevisionError);
    await expect(resolveCommit(repo, "--all")).rejects.toBeInstanceOf(UnknownRevisionError);
  });

  it("createBranchIfAbsent - creates once, then reports the existing commit", async () => {
    const { repo, root } = await tempRepo();
    const other = commitOnBranch(repo, "other", root, { "x.txt": "x\n" });
    expect(await createBranchIfAbsent(repo, "ado/r1/integration", root)).toEqual({ created: true, commit: root });
    expect(await createBranchIfAbsent(repo, "ado/r1/integration", other)).toEqual({ created: false, commit: root });
    expect(await readBranch(repo, "ado/r1/integration")).toBe(root);
  });

  it("createBranchIfAbsent - of many concurrent callers exactly one creates", async () => {
    const { repo, root } = await tempRepo();
    const results = await Promise.all(
      Array.from({ length: 10 }, () => createBranchIfAbsent(repo, "ado/race", root)),
    );
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(results.every((r) => r.commit === root)).toBe(true);
  });

  it("readBranch - is undefined for a missing branch", async () => {
    const { repo } = await tempRepo();
    expect(await readBranch(repo, "nope")).toBeUndefined();
  });

  it("isAncestor - follows history in one direction only", async () => {
    const { repo, root } = await tempRepo();
    const child = commitOnBranch(repo, "child", root, { "c.txt": "c\n" });
    expect(await isAncestor(repo, root, child)).toBe(true);
    expect(await isAncestor(repo, child, root)).toBe(false);
    expect(await isAncestor(repo, root, root)).toBe(true);
  });
});
