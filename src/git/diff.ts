/**
 * A task's work as a diff against the commit it started from, for a person to read (the
 * dashboard's task view): read-only, and bounded, because an agent can rewrite a
 * thousand files and the page must still open.
 */
import { spawn } from "node:child_process";
import { GitCommandError } from "./errors.js";
import { WORKTREE_ADO_DIR } from "../runtime/names.js";
import { runGit } from "./exec.js";

/** What `taskDiff` reads. */
export interface TaskDiffOptions {
  /** The repository (any of its worktrees will do) holding both commits. */
  repo: string;
  /** The commit the task started from. */
  base: string;
  /** The task's commit; absent: the work tree of `worktree` as it is now (a task still running). */
  head?: string;
  /** The task's worktree, for a task without a commit yet. */
  worktree?: string;
  /** Bytes of patch kept; the rest is cut (default 256 KiB). */
  maxBytes?: number;
}

/** One changed file, as `git diff --numstat` counts it (binary files: null counts). */
export interface DiffFile {
  path: string;
  added: number | null;
  deleted: number | null;
}

export interface TaskDiff {
  base: string;
  /** The commit compared, or `worktree` for a work tree in progress. */
  head: string;
  files: DiffFile[];
  /** Files the task created and git does not track yet (a work tree in progress only). */
  untracked: string[];
  patch: string;
  /** The patch was longer than maxBytes and was cut there. */
  truncated: boolean;
}

/** Files listed at most (a task that rewrote the tree still gets a readable answer). */
const MAX_FILES = 2_000;
const DEFAULT_MAX_BYTES = 256 * 1024;

/** The diff of a task's commit (or its worktree) against its base, cut to a size. */
export async function taskDiff(opts: TaskDiffOptions): Promise<TaskDiff> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  const cwd = opts.head ? opts.repo : opts.worktree;
  if (!cwd) throw new GitCommandError(["diff"], { exitCode: 2, stdout: "", stderr: "a task without a commit needs its worktree to be diffed" });
  const range = opts.head ? [opts.base, opts.head] : [opts.base];
  // A worktree in progress holds ado's own directory (the inputs and prompt files), which is never committed: not the task's work.
  const paths = opts.head ? ["--"] : ["--", ".", `:(exclude,literal)${WORKTREE_ADO_DIR}`];
  // --no-ext-diff / --no-textconv: the user's configured diff drivers are not for this.
  const common = ["-c", "core.quotePath=false", "diff", "--no-ext-diff", "--no-textconv", "--no-color", "-M"];
  const numstat = (await runGit(cwd, [...common, "--numstat", "-z", ...range, ...paths])).stdout;
  const { text: patch, truncated } = await boundedOutput(cwd, [...common, ...range, ...paths], maxBytes);
  const untracked = opts.head ? [] : (await runGit(cwd, ["ls-files", "--others", "--exclude-standard", "-z", ...paths])).stdout.split("\0").filter(Boolean).slice(0, MAX_FILES);
  return { base: opts.base, head: opts.head ?? "worktree", files: parseNumstat(numstat).slice(0, MAX_FILES), untracked, patch, truncated };
}

/** `--numstat -z` records: `added\tdeleted\tpath\0`, or for a rename `added\tdeleted\t\0from\0to\0`. */
export function parseNumstat(out: string): DiffFile[] {
  const parts = out.split("\0");
  const files: DiffFile[] = [];
  for (let i = 0; i < parts.length; i++) {
    const rec = parts[i]!;
    if (!rec) continue;
    const [a, d, path] = rec.split("\t");
    const count = (s: string | undefined) => (s === undefined || s === "-" ? null : Number(s));
    if (path === "" || path === undefined) {
      // A rename: the two paths follow as their own records.
      const to = parts[i + 2];
      i += 2;
      if (to !== undefined) files.push({ path: to, added: count(a), deleted: count(d) });
    } else files.push({ path, added: count(a), deleted: count(d) });
  }
  return files;
}

/** Runs git and keeps the first `maxBytes` of its stdout, stopping it once it has printed that much. */
function boundedOutput(cwd: string, args: readonly string[], maxBytes: number): Promise<{ text: string; truncated: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", [...args], { cwd, env: { ...process.env, GIT_TERMINAL_PROMPT: "0", LC_ALL: "C" }, stdio: ["ignore", "pipe", "pipe"] });
    const chunks: Buffer[] = [];
    let size = 0;
    let truncated = false;
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      if (truncated) return;
      chunks.push(d);
      size += d.length;
      if (size > maxBytes) {
        truncated = true;
        child.kill("SIGTERM");
      }
    });
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8").slice(0, 4_000)));
    child.once("error", (cause) => reject(new GitCommandError(args, undefined, { cause })));
    child.once("close", (code) => {
      if (!truncated && code !== 0) return reject(new GitCommandError(args, { exitCode: code ?? -1, stdout: "", stderr }));
      const all = Buffer.concat(chunks);
      // Cut at a line end within the limit, so the page never shows half a character or half a line.
      let text = all.subarray(0, Math.min(all.length, maxBytes)).toString("utf8");
      if (truncated) text = text.slice(0, Math.max(0, text.lastIndexOf("\n") + 1));
      resolve({ text, truncated });
    });
  });
}
