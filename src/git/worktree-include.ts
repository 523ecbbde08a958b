/**
 * What a new task worktree needs from the user's checkout beyond the commit: files git
 * does not carry (`.env`, local config, other untracked or ignored files) are copied,
 * and large dependency directories (`node_modules`, `.venv`) are shared through a
 * symlink or skipped, never copied blindly.
 *
 * Patterns are ado's one glob dialect, .gitignore's rule (globs.ts): `.env` is every
 * `.env`, `/.env` the root's only, `config/*.local.json` is anchored at the root.
 * Candidates are what git does not track (it lists them); the walk never enters `.git`
 * or a dependency directory.
 *
 * Only paths the new worktree lacks are created: a tracked file is never overwritten
 * with the user's copy, and a directory the worktree already has is left alone. The
 * paths created are returned, so the manager can keep them out of the task's commits
 * (see worktrees.ts).
 */
import { constants } from "node:fs";
import { copyFile, lstat, mkdir, readdir, readlink, symlink } from "node:fs/promises";
import path from "node:path";
import { IncludeTooLargeError } from "./errors.js";
import { git } from "./exec.js";
import { type GlobList, globList } from "./globs.js";

/** How a worktree is populated from the user's checkout (config `worktrees`). */
export interface IncludeSpec {
  /** Globs of files or directories to copy into each new worktree. */
  include: readonly string[];
  /** Globs of large dependency directories: shared by a symlink or skipped, never copied. */
  dependencies: readonly string[];
  /** `symlink`: the worktree's path links to the checkout's directory; `skip`: left out. */
  dependencyMode: "symlink" | "skip";
  /** Most bytes the include list may copy into one worktree; beyond it the add fails. */
  maxCopyBytes: number;
}

export const DEFAULT_INCLUDE: IncludeSpec = {
  include: [],
  dependencies: ["node_modules"],
  // Skipped unless configured: a linked node_modules is the user's own, and an agent
  // running `npm install` in the worktree would change it under them.
  dependencyMode: "skip",
  maxCopyBytes: 256 * 1024 * 1024,
};

/** What populating a worktree did; paths are relative to the worktree's root, with `/`. */
export interface LocalFiles {
  /** Copied files and directories (a copied directory is listed once, not its files). */
  copied: string[];
  /** Dependency directories linked to the checkout's. */
  linked: string[];
  /** Dependency directories left out (`dependencyMode: skip`), when an include list made ado look. */
  skipped: string[];
  /** Bytes copied. */
  bytes: number;
}

/**
 * What the checkout holds beyond its commit: untracked and ignored paths, as git lists
 * them (`ls-files --others --directory`: a directory with nothing tracked in it is one
 * entry, `dir/`). Git walks the tree in C, skipping what it tracks; ado then only looks
 * inside those directories when a pattern may match there.
 */
async function untrackedEntries(root: string): Promise<Array<{ rel: string; isDir: boolean }>> {
  const out = await git(root, ["ls-files", "-z", "--others", "--directory", "--no-empty-directory"]);
  return out
    .split("\0")
    .filter(Boolean)
    .map((e) => (e.endsWith("/") ? { rel: e.slice(0, -1), isDir: true } : { rel: e, isDir: false }));
}

/**
 * The checkout's paths that the include list selects, and its dependency directories.
 * A selected directory is taken whole; dependency directories are never entered, and
 * include patterns never reach into them.
 */
async function selectLocal(root: string, include: GlobList, deps: GlobList): Promise<{ include: Map<string, boolean>; deps: string[] }> {
  const selected = new Map<string, boolean>();
  const depDirs: string[] = [];
  const visit = async (rel: string, isDir: boolean): Promise<void> => {
    if (isDir && deps.matches(rel, true)) {
      depDirs.push(rel);
      return;
    }
    if (include.matches(rel, isDir)) {
      selected.set(rel, isDir);
      return;
    }
    if (!isDir || !(include.mayMatchWithin(rel) || deps.mayMatchWithin(rel))) return;
    const entries = await readdir(path.join(root, rel), { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.name !== ".git") await visit(`${rel}/${e.name}`, e.isDirectory());
  };
  // git lists a symlink (to a directory too) as a file: it is copied as a link.
  for (const e of await untrackedEntries(root)) await visit(e.rel, e.isDir);
  return { include: selected, deps: depDirs.sort() };
}

/** One file (or symlink) to create in the worktree. */
interface PlannedCopy {
  from: string;
  to: string;
  kind: "file" | "symlink" | "dir";
  size: number;
}

/**
 * Copies the include list and links (or skips) dependency directories from the
 * checkout at `source` into the new worktree at `target`. Everything is planned and
 * measured first, so a list that would copy more than `maxCopyBytes` fails before
 * anything is written.
 * @throws IncludeTooLargeError naming the pattern that went over the budget.
 */
export async function populateWorktree(source: string, target: string, spec: IncludeSpec): Promise<LocalFiles> {
  const result: LocalFiles = { copied: [], linked: [], skipped: [], bytes: 0 };
  // Nothing to copy or link (the default: no include list, dependencies skipped): a new
  // worktree lacks them anyway, and no walk of the checkout is needed.
  if (globList(spec.include).empty && (spec.dependencyMode === "skip" || globList(spec.dependencies).empty)) return result;
  const include = globList(spec.include);
  const deps = globList(spec.dependencies);
  const isDependency = (rel: string) => deps.matches(rel, true);
  const absent = async (rel: string) => (await lstat(path.join(target, rel)).catch(() => undefined)) === undefined;
  const local = await selectLocal(source, include, deps);

  for (const rel of local.deps) {
    if (!(await absent(rel))) continue;
    if (spec.dependencyMode === "skip") {
      result.skipped.push(rel);
      continue;
    }
    await mkdir(path.dirname(path.join(target, rel)), { recursive: true });
    // Absolute: the link must resolve from wherever the worktree lives.
    await symlink(path.join(source, rel), path.join(target, rel), "dir");
    result.linked.push(rel);
  }

  const plan: PlannedCopy[] = [];
  const tops: string[] = [];
  let planned = 0;
  for (const rel of [...local.include.keys()].sort()) {
    if (!(await absent(rel))) continue;
    const visit = async (r: string): Promise<void> => {
      const from = path.join(source, r);
      const info = await lstat(from).catch(() => undefined);
      if (!info) return;
      if (info.isSymbolicLink()) plan.push({ from, to: path.join(target, r), kind: "symlink", size: 0 });
      else if (info.isFile()) {
        plan.push({ from, to: path.join(target, r), kind: "file", size: info.size });
        planned += info.size;
      } else if (info.isDirectory()) {
        plan.push({ from, to: path.join(target, r), kind: "dir", size: 0 });
        for (const e of await readdir(from)) {
          const child = `${r}/${e}`;
          if (e === ".git" || isDependency(child)) continue;
          await visit(child);
        }
      }
      if (planned > spec.maxCopyBytes) {
        const pattern = include.patternOf(rel) ?? rel;
        throw new IncludeTooLargeError(pattern, planned, spec.maxCopyBytes);
      }
    };
    await visit(rel);
    tops.push(rel);
  }
  for (const c of plan) {
    if (c.kind === "dir") await mkdir(c.to, { recursive: true });
    else {
      await mkdir(path.dirname(c.to), { recursive: true });
      if (c.kind === "symlink") await symlink(await readlink(c.from), c.to);
      // FICLONE: a copy-on-write clone where the file system supports it, else a copy.
      else await copyFile(c.from, c.to, constants.COPYFILE_FICLONE);
    }
  }
  result.copied = tops;
  result.bytes = planned;
  return result;
}
