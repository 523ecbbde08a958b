/**
 * Reading a repository without touching the user's checkout: every probe here reads
 * refs and objects, or runs with --no-optional-locks so git never rewrites the index.
 */
import { createHash } from "node:crypto";
import { lstat, readFile, readlink, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { EmptyRepositoryError, NotAGitRepositoryError, UnknownRevisionError } from "./errors.js";
import { git, runGit } from "./exec.js";

/** Where a repository lives. Both paths are absolute and symlink-free. */
export interface RepoInfo {
  /** Root of the work tree that `dir` belongs to. */
  topLevel: string;
  /** The `.git` directory shared by all worktrees; identifies the repository. */
  gitCommonDir: string;
}

/**
 * Finds the repository containing `dir`.
 * @throws NotAGitRepositoryError when `dir` is missing or not in a git work tree.
 * @throws EmptyRepositoryError when HEAD has no commit yet.
 */
export async function openRepo(dir: string): Promise<RepoInfo> {
  const absolute = path.resolve(dir);
  const isDir = await stat(absolute).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!isDir) throw new NotAGitRepositoryError(absolute);
  let out: string;
  try {
    // --is-bare-repository first: --show-toplevel fails in a bare repository (a remote
    // worker's clone), which has no work tree; its top level is then its git dir.
    const bare = (await git(absolute, ["rev-parse", "--is-bare-repository"])).trim() === "true";
    out = await git(absolute, ["rev-parse", "--path-format=absolute", ...(bare ? ["--git-common-dir"] : ["--show-toplevel"]), "--git-common-dir"]);
  } catch (cause) {
    throw new NotAGitRepositoryError(absolute, { cause });
  }
  const [topLevel = "", gitCommonDir = ""] = out.trim().split("\n");
  const head = await runGit(absolute, ["rev-parse", "-q", "--verify", "HEAD^{commit}"], [0, 1]);
  if (head.exitCode !== 0) throw new EmptyRepositoryError(topLevel);
  return { topLevel: await realpath(topLevel), gitCommonDir: await realpath(gitCommonDir) };
}

/**
 * Resolves `rev` (branch, tag, sha, `HEAD~2`, ...) to a full commit sha.
 * @param repo any directory inside the repository
 * @throws UnknownRevisionError when `rev` names no commit.
 */
export async function resolveCommit(repo: string, rev = "HEAD"): Promise<string> {
  // --end-of-options keeps a rev such as "--all" from being read as an option.
  const { stdout, exitCode } = await runGit(
    repo,
    ["rev-parse", "-q", "--verify", "--end-of-options", `${rev}^{commit}`],
    [0, 1],
  );
  if (exitCode !== 0) throw new UnknownRevisionError(repo, rev);
  return stdout.trim();
}

/** The commit sha `refs/heads/<branch>` points at, or undefined when there is no such branch. */
export async function readBranch(repo: string, branch: string): Promise<string | undefined> {
  const { stdout, exitCode } = await runGit(repo, ["rev-parse", "-q", "--verify", `refs/heads/${branch}^{commit}`], [0, 1]);
  return exitCode === 0 ? stdout.trim() : undefined;
}

/**
 * Creates `branch` at `commit` unless it exists. Creation is atomic (update-ref with an
 * empty old value), so of two concurrent callers exactly one creates.
 * @returns whether this call created the branch, and the commit the branch points at.
 */
export async function createBranchIfAbsent(
  repo: string,
  branch: string,
  commit: string,
): Promise<{ created: boolean; commit: string }> {
  try {
    await git(repo, ["update-ref", "-m", "ado: create branch", `refs/heads/${branch}`, commit, ""]);
    return { created: true, commit };
  } catch (err) {
    // Whether the failure was "already exists" is read from the ref, not from git's message.
    const current = await readBranch(repo, branch);
    if (current === undefined) throw err;
    return { created: false, commit: current };
  }
}

/** The refs under `prefix` (e.g. `refs/ado/attempts/<run>/`), sorted by name, with the commit each points at. */
export async function listRefs(repo: string, prefix: string): Promise<{ ref: string; commit: string }[]> {
  const out = await git(repo, ["for-each-ref", "--format=%(refname) %(objectname)", "--sort=refname", prefix]);
  return out
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [ref = "", commit = ""] = line.split(" ");
      return { ref, commit };
    });
}

/** Whether commit `a` is an ancestor of (or equal to) commit `b`. */
export async function isAncestor(repo: string, a: string, b: string): Promise<boolean> {
  const { exitCode } = await runGit(repo, ["merge-base", "--is-ancestor", a, b], [0, 1]);
  return exitCode === 0;
}

/**
 * A hash of everything a user sees in their checkout: HEAD (symbolic ref and sha), the
 * index file's bytes, `git status`, and the content of every modified or untracked
 * file. Equal values before and after an operation prove it left the checkout alone.
 * @param repo a directory of the checkout to fingerprint
 */
export async function checkoutFingerprint(repo: string): Promise<string> {
  const hash = createHash("sha256");
  const add = (label: string, value: string | Buffer) => hash.update(`${label}\0`).update(value).update("\0");

  const symbolic = await runGit(repo, ["symbolic-ref", "-q", "HEAD"], [0, 1]);
  add("head-ref", symbolic.stdout);
  const head = await runGit(repo, ["rev-parse", "-q", "--verify", "HEAD"], [0, 1]);
  add("head", head.stdout);

  const [topLevel = "", indexPath = ""] = (
    await git(repo, ["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-path", "index"])
  )
    .trim()
    .split("\n");
  add("index", await readFile(indexPath).catch(() => "(no index)"));

  const status = await git(repo, [
    "--no-optional-locks",
    "status",
    "--porcelain=v1",
    "-z",
    "--untracked-files=all",
  ]);
  add("status", status);
  for (const file of statusPaths(status)) add(`file ${file}`, await describeFile(path.join(topLevel, file)));
  return hash.digest("hex");
}

/** Every path named in `status --porcelain=v1 -z` output, including rename sources. */
function statusPaths(status: string): string[] {
  const fields = status.split("\0");
  const paths: string[] = [];
  for (let i = 0; i < fields.length; i++) {
    const entry = fields[i] ?? "";
    if (entry === "") continue;
    paths.push(entry.slice(3));
    // A rename or copy entry is followed by a field holding its source path.
    if (/[RC]/.test(entry.slice(0, 2))) paths.push(fields[++i] ?? "");
  }
  return paths;
}

/** The content of a file, the target of a symlink, or what kind of thing is at `file`. */
async function describeFile(file: string): Promise<string | Buffer> {
  const info = await lstat(file).catch(() => undefined);
  if (!info) return "(absent)";
  if (info.isSymbolicLink()) return `symlink ${await readlink(file)}`;
  if (info.isFile()) return readFile(file);
  return "(directory)";
}

/** The number of first-parent commits up to `commit` (its generation on a branch), or undefined if git cannot tell. */
export async function firstParentCount(repo: string, commit: string): Promise<number | undefined> {
  const { stdout, exitCode } = await runGit(repo, ["rev-list", "--count", "--first-parent", commit], [0, 128]);
  const n = exitCode === 0 ? Number(stdout.trim()) : NaN;
  return Number.isInteger(n) ? n : undefined;
}

/**
 * The paths `commit` changed since it forked from `from` (their merge base; `fallback`
 * when they share none).
 */
export async function filesChangedSinceFork(repo: string, from: string, commit: string, fallback: string): Promise<string[]> {
  const forkPoint = (await runGit(repo, ["merge-base", from, commit], [0, 1])).stdout.trim() || fallback;
  return (await git(repo, ["diff", "--name-only", "-z", forkPoint, commit])).split("\0").filter(Boolean);
}

/** Whether `name` is a valid branch name (`git check-ref-format --branch`). */
export async function isValidBranchName(repo: string, name: string): Promise<boolean> {
  return (await runGit(repo, ["check-ref-format", "--branch", name], [0, 1, 128])).exitCode === 0;
}

/**
 * How many paths of the checkout differ from HEAD: staged, unstaged and untracked (not
 * ignored). Reads without taking the index lock.
 * @param repo a directory of the checkout
 */
export async function uncommittedChanges(repo: string): Promise<number> {
  const status = await git(repo, ["--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=normal"]);
  return statusPaths(status).length - (status.match(/(^|\0)[RC]/g)?.length ?? 0);
}

/** The number of commits reachable from `to` and not from `from` (`git rev-list --count from..to`). */
export async function commitsMissingFrom(repo: string, from: string, to: string): Promise<number> {
  return Number((await git(repo, ["rev-list", "--count", `${from}..${to}`])).trim());
}
