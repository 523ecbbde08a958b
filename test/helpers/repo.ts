/**
 * Real git repositories in temp dirs, the one repository helper of the suite. Fixture
 * commits pass their identity with -c, so tests run on machines without a global git
 * identity; repositories made for whole runs get a local identity for the agents' commits.
 */
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { onTestFinished } from "vitest";

/** Runs git synchronously for fixture setup and returns trimmed stdout. */
export function sh(cwd: string, ...args: string[]): string {
  return execFileSync("git", ["-c", "user.name=Test", "-c", "user.email=test@example.com", ...args], {
    cwd,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

/** A fresh temp dir, removed when the current test finishes. */
export async function tempDir(): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(tmpdir(), "ado-git-")));
  onTestFinished(() => rm(dir, { recursive: true, force: true, maxRetries: 10 }));
  return dir;
}

export interface TempRepo {
  /** The user's checkout. */
  repo: string;
  /** Where worktrees go, outside the checkout. */
  worktrees: string;
  /** The first commit, on `main`. */
  root: string;
}

/** A repository with one commit holding `files` (default: a README). */
export async function tempRepo(files: Record<string, string> = { "README.md": "hello\n" }): Promise<TempRepo> {
  const dir = await tempDir();
  const repo = path.join(dir, "repo");
  await mkdir(repo);
  sh(repo, "init", "-q", "-b", "main");
  await writeFiles(repo, files);
  sh(repo, "add", "-A");
  sh(repo, "commit", "-q", "-m", "initial");
  return { repo, worktrees: path.join(dir, "worktrees"), root: sh(repo, "rev-parse", "HEAD") };
}

/** Writes `files` (path -> content) under `dir`, creating parent directories. */
export async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  for (const [file, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await writeFile(path.join(dir, file), content);
  }
}

/** Creates `branch` from `from` with one commit writing `files`, without touching the checkout. */
export function commitOnBranch(repo: string, branch: string, from: string, files: Record<string, string>, message = branch): string {
  // Build the commit from objects alone, like the code under test, so the user's index stays as it was.
  const env = { ...process.env, GIT_INDEX_FILE: path.join(repo, ".git", `fixture-index-${process.pid}`) };
  const run = (args: string[], input?: string) =>
    execFileSync("git", ["-c", "user.name=Test", "-c", "user.email=test@example.com", ...args], {
      cwd: repo,
      env,
      encoding: "utf8",
      input,
    }).trim();
  run(["read-tree", from]);
  for (const [file, content] of Object.entries(files)) {
    const blob = run(["hash-object", "-w", "--stdin"], content);
    run(["update-index", "--add", "--cacheinfo", `100644,${blob},${file}`]);
  }
  const tree = run(["write-tree"]);
  const commit = run(["commit-tree", tree, "-p", from, "-m", message]);
  run(["update-ref", `refs/heads/${branch}`, commit]);
  rmSync(env.GIT_INDEX_FILE, { force: true });
  return commit;
}

/** The content of `file` at `rev`. */
export function show(repo: string, rev: string, file: string): string {
  return execFileSync("git", ["show", `${rev}:${file}`], { cwd: repo, encoding: "utf8" });
}

/**
 * Runs `fn` with HOME and XDG_CONFIG_HOME pointing at an empty dir, as on a CI machine
 * with no git identity configured.
 */
export async function withoutGlobalGitConfig<T>(fn: () => Promise<T>): Promise<T> {
  const home = await tempDir();
  const saved = { HOME: process.env.HOME, XDG_CONFIG_HOME: process.env.XDG_CONFIG_HOME };
  process.env.HOME = home;
  process.env.XDG_CONFIG_HOME = home;
  try {
    return await fn();
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

/**
 * A repository for end-to-end runs, with one commit holding `files` and a local identity
 * (the tasks' shell commands and the merge commits need one); removed by `cleanup()`, or
 * left to the caller when a test keeps it past its end.
 */
export async function makeRepo(files: Record<string, string> = { "README.md": "# sample\n" }): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), "ado-repo-"));
  sh(dir, "init", "-q", "-b", "main");
  sh(dir, "config", "user.email", "test@example.com");
  sh(dir, "config", "user.name", "test");
  await writeFiles(dir, files);
  sh(dir, "add", "-A");
  sh(dir, "commit", "-q", "-m", "initial");
  // maxRetries: a worker may still be removing the run's worktrees (git writes under
  // .git/worktrees/ after the outcome is known); rm retries ENOTEMPTY instead of failing.
  // Every test's rm of a tree the stack may touch carries it, for the same reason.
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true, maxRetries: 10 }) };
}

/** Runs git in `dir` and returns trimmed stdout (with the user's own identity, if any). */
export function gitOut(dir: string, ...args: string[]): string {
  return execFileSync("git", args, { cwd: dir, encoding: "utf8" }).trim();
}
