/**
 * Fixtures for the integrate tests: a busy user checkout with an integration branch,
 * commits built from objects (so the checkout is never touched) with chosen authors and
 * deletions, and the checks every test ends with: the user's checkout unchanged and no
 * scratch worktree or temp file left.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { expect } from "vitest";
import type { IntegrateOptions } from "../../src/git/integrate.js";
import { checkoutFingerprint, createBranchIfAbsent } from "../../src/git/repo.js";
import { sh, tempRepo } from "../helpers/repo.js";

export const TARGET = "ado/r1/integration";

export interface Author {
  name: string;
  email: string;
  /** `<seconds> <zone>` */
  date?: string;
}

/**
 * Creates (or moves) `branch` to a new commit on `from` applying `changes` (path ->
 * content, or null to delete), without touching the checkout or its index.
 */
export function commitChanges(
  repo: string,
  branch: string,
  from: string,
  changes: Record<string, string | Buffer | null>,
  message = branch,
  author: Author = { name: "Test", email: "test@example.com" },
): string {
  const index = path.join(repo, ".git", `fixture-index-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    GIT_INDEX_FILE: index,
    GIT_AUTHOR_NAME: author.name,
    GIT_AUTHOR_EMAIL: author.email,
    GIT_COMMITTER_NAME: "Fixture",
    GIT_COMMITTER_EMAIL: "fixture@example.com",
  };
  if (author.date) env.GIT_AUTHOR_DATE = `@${author.date}`;
  const run = (args: string[], input?: string | Buffer) =>
    execFileSync("git", args, { cwd: repo, env, encoding: "utf8", ...(input === undefined ? {} : { input }) }).trim();
  try {
    run(["read-tree", from]);
    for (const [file, content] of Object.entries(changes)) {
      if (content === null) run(["update-index", "--force-remove", "--", file]);
      else run(["update-index", "--add", "--cacheinfo", `100644,${run(["hash-object", "-w", "--stdin"], content)},${file}`]);
    }
    const commit = run(["commit-tree", run(["write-tree"]), "-p", from, "-F", "-"], message);
    run(["update-ref", `refs/heads/${branch}`, commit]);
    return commit;
  } finally {
    rmSync(index, { force: true });
  }
}

/**
 * A repository whose checkout is in use (a modified file, a staged one, an untracked
 * one) with `files` committed, and the integration branch at the first commit.
 */
export async function integrationRepo(files: Record<string, string>) {
  const fixture = await tempRepo({ ...files, "user-notes.txt": "mine\n" });
  const { repo, root } = fixture;
  await createBranchIfAbsent(repo, TARGET, root);
  await writeFile(path.join(repo, "user-notes.txt"), "edited by the user, not staged\n");
  await writeFile(path.join(repo, "untracked-by-user.txt"), "scratch\n");
  const scratchDir = path.join(path.dirname(repo), "ado-scratch");
  const fingerprint = await checkoutFingerprint(repo);
  const opts = (source: string, extra: Partial<IntegrateOptions> = {}): IntegrateOptions => ({
    repo,
    target: TARGET,
    source,
    base: root,
    mode: "merge",
    message: `merge ${source.slice(0, 8)}`,
    scratchDir,
    ...extra,
  });
  /** The user's checkout is as it was, and no scratch worktree or temp dir is left. */
  const expectUntouched = async () => {
    expect(await checkoutFingerprint(repo)).toBe(fingerprint);
    expect(sh(repo, "worktree", "list", "--porcelain").match(/^worktree /gm)).toHaveLength(1);
    expect(await readdir(path.join(scratchDir, "scratch")).catch(() => [])).toEqual([]);
  };
  return { ...fixture, scratchDir, opts, expectUntouched };
}

/** The branch's head. */
export function head(repo: string, branch = TARGET): string {
  return sh(repo, "rev-parse", `refs/heads/${branch}`);
}

/** `%P` of a commit: its parents, space-separated. */
export function parents(repo: string, commit: string): string[] {
  return sh(repo, "log", "-1", "--format=%P", commit).split(" ").filter(Boolean);
}

/** Whether a process exists and is not a zombie (killed, waiting to be reaped). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = (() => {
    try {
      return readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      return "";
    }
  })();
  // The state follows the parenthesised command name: "Z" is a zombie.
  return !/\) Z /.test(stat);
}

/** Waits up to `ms` for `pid` to be gone; returns whether it still lives. A SIGKILL is delivered asynchronously. */
export async function stillAliveAfter(pid: number, ms = 2_000): Promise<boolean> {
  const by = Date.now() + ms;
  while (alive(pid) && Date.now() < by) await new Promise((r) => setTimeout(r, 20));
  return alive(pid);
}
