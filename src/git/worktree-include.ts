/**
 * What a new task worktree needs from the user's checkout beyond the commit: files git
 * does not carry (`.env`, local config, other untracked or ignored files) are copied,
 * and large dependency directories (`node_modules`, `.venv`) are shared through a
 * symlink or skipped, never copied blindly.
 *
 * Patterns are globs relative to the checkout's root: `*` and `?` stay within one path
 * segment, `**` spans any number of directories, `[abc]` is a class, a leading `!`
 * excludes what earlier patterns matched, a trailing `/` matches directories only.
 * `.env` therefore means the root's `.env` only; `**` then `/.env` means every `.env`.
 * Walks never enter `.git` or a dependency directory.
 *
 * Only paths the new worktree lacks are created: a tracked file is never overwritten
 * with the user's copy, and a directory the worktree already has is left alone. The paths created are returned, so the manager can keep them
 * out of the task's commits (see worktrees.ts).
 */
import { constants } from "node:fs";
import { copyFile, lstat, mkdir, readdir, readlink, stat, symlink } from "node:fs/promises";
import path from "node:path";
import { IncludeTooLargeError } from "./errors.js";

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
  /** Dependency directories left out (`dependencyMode: skip`). */
  skipped: string[];
  /** Bytes copied. */
  bytes: number;
}

/**
 * A compiled glob: one matcher per path segment, `"**"` for any number of segments.
 * `dirOnly` is set by a trailing `/`.
 */
interface Glob {
  source: string;
  segments: Array<RegExp | "**" | string>;
  negated: boolean;
  dirOnly: boolean;
}

/**
 * Checks a pattern list for mistakes a person can fix, returning one message per
 * problem (empty when all are fine). The config loader reports these.
 */
export function patternProblems(patterns: readonly string[]): string[] {
  const problems: string[] = [];
  for (const p of patterns) {
    const body = p.startsWith("!") ? p.slice(1) : p;
    if (body.trim() === "") problems.push(`'${p}' is empty`);
    else if (path.isAbsolute(body) && !body.startsWith("/")) problems.push(`'${p}' must be relative to the repository root`);
    else if (body.split("/").some((s) => s === ".." || s === ".")) problems.push(`'${p}' may not contain '.' or '..' segments`);
    else if (body.split("/").includes(".git")) problems.push(`'${p}' may not reach into .git`);
  }
  return problems;
}

function compile(pattern: string): Glob {
  const negated = pattern.startsWith("!");
  let body = negated ? pattern.slice(1) : pattern;
  const dirOnly = body.endsWith("/");
  body = body.replace(/^\/+/, "").replace(/\/+$/, "");
  const segments = body
    .split("/")
    .filter((s) => s !== "")
    .map((s) => (s === "**" ? ("**" as const) : /[*?[]/.test(s) ? segmentRegExp(s) : s));
  return { source: pattern, segments, negated, dirOnly };
}

/** One path segment's glob as an anchored regular expression. */
function segmentRegExp(segment: string): RegExp {
  let re = "";
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = segment.indexOf("]", i + 2);
      if (end < 0) {
        re += "\\[";
        continue;
      }
      let cls = segment.slice(i + 1, end).replace(/\\/g, "\\\\");
      if (cls.startsWith("!")) cls = "^" + cls.slice(1);
      re += `[${cls}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

function segmentMatches(m: RegExp | string, name: string): boolean {
  return typeof m === "string" ? m === name : m.test(name);
}

/** Whether `rel` (segments) matches the whole glob. */
function matchesPath(segs: Glob["segments"], parts: readonly string[], i = 0, j = 0): boolean {
  if (i === segs.length) return j === parts.length;
  const s = segs[i]!;
  if (s === "**") {
    for (let k = j; k <= parts.length; k++) if (matchesPath(segs, parts, i + 1, k)) return true;
    return false;
  }
  return j < parts.length && segmentMatches(s, parts[j]!) && matchesPath(segs, parts, i + 1, j + 1);
}

/** Collects paths of the checkout matching one glob, never entering `.git` or a pruned directory. */
async function expand(
  root: string,
  glob: Glob,
  prune: (rel: string) => boolean,
  out: Map<string, boolean>,
  i = 0,
  rel = "",
): Promise<void> {
  if (i === glob.segments.length) {
    if (rel === "") return;
    const info = await lstat(path.join(root, rel)).catch(() => undefined);
    if (!info) return;
    const isDir = info.isDirectory() || (info.isSymbolicLink() && (await stat(path.join(root, rel)).then((s) => s.isDirectory(), () => false)));
    if (!glob.dirOnly || isDir) out.set(rel, isDir);
    return;
  }
  const seg = glob.segments[i]!;
  if (typeof seg === "string" && seg !== "**") {
    // A literal segment needs no directory listing: the common `.env`, `config/local.yaml`.
    const child = rel ? `${rel}/${seg}` : seg;
    if (seg === ".git") return;
    if (i + 1 < glob.segments.length && prune(child)) return;
    return expand(root, glob, prune, out, i + 1, child);
  }
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(path.join(root, rel), { withFileTypes: true });
  } catch {
    return; // not a directory, or gone
  }
  if (seg === "**") {
    await expand(root, glob, prune, out, i + 1, rel); // zero directories
    for (const e of entries) {
      if (!e.isDirectory() || e.name === ".git") continue;
      const child = rel ? `${rel}/${e.name}` : e.name;
      if (prune(child)) continue;
      await expand(root, glob, prune, out, i, child);
    }
    return;
  }
  for (const e of entries) {
    if (e.name === ".git" || !segmentMatches(seg, e.name)) continue;
    const child = rel ? `${rel}/${e.name}` : e.name;
    if (i + 1 < glob.segments.length && (!e.isDirectory() || prune(child))) continue;
    await expand(root, glob, prune, out, i + 1, child);
  }
}

/**
 * The checkout's paths matching a pattern list (later `!` patterns remove earlier
 * matches), with whether each is a directory. A path inside another match is dropped:
 * copying or linking the outer one covers it.
 */
async function resolvePatterns(root: string, patterns: readonly string[], prune: (rel: string) => boolean): Promise<Map<string, boolean>> {
  const found = new Map<string, boolean>();
  const globs = patterns.map(compile);
  for (const g of globs) {
    if (g.negated) {
      for (const rel of [...found.keys()]) if (matchesPath(g.segments, rel.split("/"))) found.delete(rel);
      continue;
    }
    await expand(root, g, prune, found);
  }
  const sorted = [...found.keys()].sort();
  const kept = new Map<string, boolean>();
  for (const rel of sorted) {
    if ([...kept.keys()].some((outer) => rel.startsWith(outer + "/"))) continue;
    kept.set(rel, found.get(rel)!);
  }
  return kept;
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
  if (spec.include.length === 0 && spec.dependencies.length === 0) return result;
  const depGlobs = spec.dependencies.filter((p) => !p.startsWith("!")).map(compile);
  const isDependency = (rel: string) => depGlobs.some((g) => matchesPath(g.segments, rel.split("/")));
  const absent = async (rel: string) => (await lstat(path.join(target, rel)).catch(() => undefined)) === undefined;

  // Dependency directories first: include patterns never walk into them.
  const deps = await resolvePatterns(source, spec.dependencies, isDependency);
  for (const [rel, isDir] of deps) {
    if (!isDir || !(await absent(rel))) continue;
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
  const matches = await resolvePatterns(source, spec.include, isDependency);
  for (const [rel] of matches) {
    if (isDependency(rel) || !(await absent(rel))) continue;
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
        const pattern = spec.include.find((p) => !p.startsWith("!") && matchesPath(compile(p).segments, rel.split("/"))) ?? rel;
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
