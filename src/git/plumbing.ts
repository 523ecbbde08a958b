/**
 * Git plumbing the merge coordinator needs beyond exec.ts: commands fed on stdin or run
 * against a temporary index (GIT_INDEX_FILE), and blob contents read in one batch.
 * Everything here writes objects only, or a temporary index the caller owns; never the
 * user's index or work tree.
 */
import { spawn } from "node:child_process";
import { GitCommandError } from "./errors.js";
import { runGit } from "./exec.js";

export interface GitIoOptions {
  /** Written to git's stdin, which is then closed. */
  input?: string | Buffer;
  /** Variables added to the environment, e.g. GIT_INDEX_FILE or GIT_AUTHOR_NAME. */
  env?: Record<string, string>;
  /** Exit codes that resolve instead of throwing (besides 0). */
  okExitCodes?: readonly number[];
}

/**
 * Runs `git <args>` in `cwd` with optional stdin and extra environment, returning the
 * raw stdout bytes. exec.ts's runGit has neither stdin nor env, which `update-index
 * --index-info`, `hash-object --stdin`, `cat-file --batch` and commits with a replayed
 * author need.
 */
export function gitBytes(cwd: string, args: readonly string[], opts: GitIoOptions = {}): Promise<{ stdout: Buffer; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", [...args], {
      cwd,
      env: { ...process.env, GIT_TERMINAL_PROMPT: "0", GIT_EDITOR: "true", LC_ALL: "C", ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    child.once("error", (cause) => reject(new GitCommandError(args, undefined, { cause })));
    child.once("close", (code) => {
      const exitCode = code ?? -1;
      const stdout = Buffer.concat(out);
      if (exitCode === 0 || opts.okExitCodes?.includes(exitCode)) return resolve({ stdout, exitCode });
      const text = stdout.toString("utf8").replace(/\n$/, "");
      reject(new GitCommandError(args, { exitCode, stdout: text, stderr: Buffer.concat(err).toString("utf8") }));
    });
    // A git that exits before reading all its input closes the pipe: that is its exit code's business.
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.input ?? "");
  });
}

/** Like gitBytes, as text without its trailing newline. */
export async function gitText(cwd: string, args: readonly string[], opts: GitIoOptions = {}): Promise<string> {
  const { stdout } = await gitBytes(cwd, args, opts);
  return stdout.toString("utf8").replace(/\n$/, "");
}

/**
 * Reads many objects with one `git cat-file --batch`. Each spec is an object id or
 * `<rev>:<path>`; a spec that names nothing (or names a tree) maps to undefined.
 */
export async function readBlobs(repo: string, specs: readonly string[]): Promise<Map<string, Buffer | undefined>> {
  const result = new Map<string, Buffer | undefined>();
  const unique = [...new Set(specs)];
  if (unique.length === 0) return result;
  // A spec holding a newline would desynchronise the batch protocol; such paths are read alone below.
  const batchable = unique.filter((s) => !s.includes("\n"));
  const { stdout } = await gitBytes(repo, ["cat-file", "--batch"], { input: batchable.map((s) => `${s}\n`).join("") });
  let at = 0;
  for (const spec of batchable) {
    const eol = stdout.indexOf(0x0a, at);
    const header = stdout.subarray(at, eol).toString("utf8");
    at = eol + 1;
    // "<oid> <type> <size>", or "<spec> missing" / "<spec> ambiguous"
    const [, type, sizeText] = header.split(" ");
    const size = Number(sizeText);
    if (!Number.isInteger(size)) {
      result.set(spec, undefined);
      continue;
    }
    result.set(spec, type === "blob" ? Buffer.from(stdout.subarray(at, at + size)) : undefined);
    at += size + 1; // the content, then a newline
  }
  for (const spec of unique.filter((s) => s.includes("\n"))) {
    const { stdout: blob, exitCode } = await gitBytes(repo, ["cat-file", "blob", spec], { okExitCodes: [128] });
    result.set(spec, exitCode === 0 ? blob : undefined);
  }
  return result;
}

/** Git's own test (buffer_is_binary): a NUL byte in the first 8,000 bytes. */
export function isBinary(content: Buffer): boolean {
  return content.subarray(0, 8000).includes(0);
}

/** The tree id of a commit. */
export async function treeOf(repo: string, commit: string): Promise<string> {
  return (await runGit(repo, ["rev-parse", `${commit}^{tree}`])).stdout.trim();
}

/** The absolute, symlink-free git directory shared by every worktree of the repository. */
export async function gitCommonDir(repo: string): Promise<string> {
  return (await runGit(repo, ["rev-parse", "--path-format=absolute", "--git-common-dir"])).stdout.trim();
}

/** Writes `content` as a blob and returns its id. */
export async function writeBlob(repo: string, content: Buffer | string): Promise<string> {
  return gitText(repo, ["hash-object", "-w", "--stdin"], { input: content });
}

/**
 * One record for `update-index -z --index-info`: set `path` (at stage 0, which also
 * clears its conflict stages) to a blob, or remove it with mode 0 and the null id.
 * `oidLength` is the repository's hash length (40 for SHA-1, 64 for SHA-256).
 */
export function indexInfoRecord(path: string, entry: { mode: string; oid: string } | "delete", oidLength: number): string {
  return entry === "delete" ? `0 ${"0".repeat(oidLength)}\t${path}\0` : `${entry.mode} ${entry.oid}\t${path}\0`;
}
