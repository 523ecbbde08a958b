import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { checkoutFingerprint, readBranch } from "../../src/git/repo.js";
import { WorktreeManager } from "../../src/git/worktrees.js";
import { sh, tempRepo, writeFiles } from "../helpers/repo.js";

const CHILD = fileURLToPath(new URL("./worktrees-child.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

interface ChildResult {
  ok: number;
  failed: string[];
  warnings: string[];
}

/** Runs one child process (see worktrees-child.ts) and returns what it printed. */
function child(args: string[]): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ["--import", "tsx", CHILD, ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (err += d.toString()));
    p.on("error", reject);
    p.on("close", (code) => {
      const line = out.trim().split("\n").pop() ?? "";
      try {
        resolve(JSON.parse(line) as ChildResult);
      } catch {
        reject(new Error(`child exited ${code} without a result: ${out}\n${err}`));
      }
    });
  });
}

/** Every registration git has for the repository (the main checkout excluded). */
function registrations(repo: string): string[] {
  return sh(repo, "worktree", "list", "--porcelain")
    .split("\n")
    .filter((l) => l.startsWith("worktree "))
    .slice(1);
}

describe("worktrees at scale", () => {
  it(
    "worktrees - 5 processes x 10 worktrees at once (own managers, only git's locks between them): none fails, nor adds racing removes, nor removes",
    { timeout: 180_000 },
    async () => {
      const { repo, worktrees, root } = await tempRepo({ "README.md": "hello\n", "src/a.ts": "export const a = 1;\n" });
      // A busy checkout: the user's own uncommitted and untracked work must come through untouched.
      await writeFiles(repo, { "README.md": "edited by the user\n", "scratch.txt": "notes\n" });
      const before = await checkoutFingerprint(repo);
      const processes = 5;
      const each = 10;
      const retries: string[] = [];

      const run = (mode: "add" | "remove", round: number, startAt: string) =>
        Array.from({ length: processes }, (_, p) => child([mode, repo, worktrees, root, `r${round}p${p}`, String(each), startAt]));
      /** Every worktree of `round` exists, on its own branch at base, locked, clean. */
      const expectRound = async (round: number) => {
        for (let p = 0; p < processes; p++) {
          for (let i = 0; i < each; i++) {
            const name = `r${round}p${p}/t${i}`;
            expect(await readBranch(repo, `ado/${name}`)).toBe(root);
            expect(await readFile(path.join(worktrees, name, "src/a.ts"), "utf8")).toBe("export const a = 1;\n");
            expect(sh(path.join(worktrees, name), "status", "--porcelain")).toBe("");
          }
        }
      };
      const outcome = (results: ChildResult[]) => {
        retries.push(...results.flatMap((r) => r.warnings));
        return { failed: results.flatMap((r) => r.failed), ok: results.reduce((n, r) => n + r.ok, 0) };
      };
      // Children load first, then start together (startAt), so their git commands collide.
      const soon = () => String(Date.now() + 2_500);

      // 1. Round 1: 5 x 10 adds at once.
      expect(outcome(await Promise.all(run("add", 1, soon())))).toEqual({ failed: [], ok: processes * each });
      expect(registrations(repo)).toHaveLength(processes * each);
      const porcelain = sh(repo, "worktree", "list", "--porcelain");
      expect(porcelain).not.toContain("prunable");
      expect(porcelain.match(/^locked child \d+$/gm)).toHaveLength(processes * each);
      await expectRound(1);

      // 2. Round 2's adds while round 1's worktrees are removed: 10 processes, as when
      // workers start tasks while the merge coordinator removes merged worktrees.
      const at = soon();
      const mixed = await Promise.all([...run("add", 2, at), ...run("remove", 1, at)]);
      expect(outcome(mixed)).toEqual({ failed: [], ok: 2 * processes * each });
      expect(registrations(repo)).toHaveLength(processes * each);
      await expectRound(2);
      for (let p = 0; p < processes; p++) expect(existsSync(path.join(worktrees, `r1p${p}`, "t0"))).toBe(false);

      // 3. Round 2's removes at once.
      expect(outcome(await Promise.all(run("remove", 2, soon())))).toEqual({ failed: [], ok: processes * each });
      expect(registrations(repo)).toEqual([]);
      expect(await readdir(path.join(repo, ".git", "worktrees")).catch(() => [])).toEqual([]);

      // Branches stay (their work is what the merge coordinator merges).
      expect(sh(repo, "for-each-ref", "--format=%(refname)", "refs/heads/ado/").split("\n")).toHaveLength(2 * processes * each);
      expect(sh(repo, "fsck", "--no-dangling")).toBe("");
      expect(await checkoutFingerprint(repo)).toBe(before);
      // Only lock retries may be logged: anything else is a failure mode to look at.
      expect(retries.filter((w) => w !== "git lock busy, retrying")).toEqual([]);
    },
  );

  it("worktrees - 50 adds at once in one process, then 50 removes at once, across two managers", { timeout: 120_000 }, async () => {
    const { repo, worktrees, root } = await tempRepo();
    const before = await checkoutFingerprint(repo);
    const a = new WorktreeManager({ repo, baseDir: worktrees });
    const b = new WorktreeManager({ repo, baseDir: worktrees });
    const names = Array.from({ length: 50 }, (_, i) => `run/t${i}`);
    const added = await Promise.allSettled(names.map((name, i) => (i % 2 ? a : b).add({ name, branch: `ado/${name}`, base: root })));
    expect(added.filter((r) => r.status === "rejected")).toEqual([]);
    expect(await a.list()).toHaveLength(50);
    expect((await a.list()).every((w) => w.locked !== undefined)).toBe(true);
    const removed = await Promise.allSettled(names.map((name, i) => (i % 2 ? b : a).remove(path.join(worktrees, name))));
    expect(removed.filter((r) => r.status === "rejected")).toEqual([]);
    expect(registrations(repo)).toEqual([]);
    expect(await checkoutFingerprint(repo)).toBe(before);
  });
});
