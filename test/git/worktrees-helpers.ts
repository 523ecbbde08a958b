/** Helpers shared by the worktree tests (test/git/worktrees-*.test.ts). */
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * Makes a worktree's ado.json name a creator process that has exited (as after a crash,
 * or a worker that finished), optionally created at `createdAt`: cleanup then treats it
 * as not in use. The pid is that of a node process that ran and exited just now.
 */
export async function ownerGone(worktree: string, createdAt?: Date): Promise<void> {
  const dotGit = await readFile(path.join(worktree, ".git"), "utf8");
  const admin = dotGit.replace(/^gitdir: /, "").trim();
  const meta = JSON.parse(await readFile(path.join(admin, "ado.json"), "utf8")) as Record<string, unknown>;
  const gone = execFileSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
  await writeFile(path.join(admin, "ado.json"), JSON.stringify({ ...meta, pid: Number(gone), ...(createdAt ? { createdAt: createdAt.toISOString() } : {}) }));
}
