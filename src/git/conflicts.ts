/**
 * Conflicts of a merge computed without a work tree, and the per-path strategies that
 * resolve them without one.
 *
 * `git merge-tree --write-tree -z` (without --name-only) gives the result tree, then
 * the "conflicted file info" (`<mode> <oid> <stage>\t<path>` per stage: 1 base, 2 ours,
 * 3 theirs), then git's messages. From the stage blobs, `union`, `ours` and `theirs`
 * are computed with `git merge-file` (git 2.39 has no `--object-id`, so the blobs go
 * through temp files) and written back as blobs; the caller builds the tree in a
 * temporary index. `ours`/`theirs` resolve each conflicting hunk to that side and keep
 * both sides' non-conflicting changes, as `git merge -X ours|theirs` does; where one side
 * deleted the file they pick that side, deletion included; `union` cannot decide a
 * deletion or a binary file and leaves those unresolved.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { globList } from "./globs.js";
import { runGit } from "./exec.js";
import { InvalidIntegrateOptionsError } from "./integrate-errors.js";
import { gitBytes, isBinary, readBlobs, writeBlob } from "./plumbing.js";

/** How a conflicted path is resolved by a rule. */
export type PathStrategy = "union" | "ours" | "theirs" | "regenerate";

/**
 * A per-path conflict strategy. The first rule whose globs match a conflicted path
 * decides it. Globs are ado's one dialect (globs.ts, .gitignore's rule): a glob without
 * `/` matches at any depth, as in .gitattributes (`CHANGELOG.md`, `*.lock`); `/x` or
 * `docs/*.md` are anchored at the root.
 */
export interface PathRule {
  paths: string[];
  strategy: PathStrategy;
  /**
   * regenerate: a shell command run at the root of a scratch worktree holding the
   * merge in progress (the matched files hold conflict markers and `git checkout
   * --ours -- <path>` works); afterwards the matched files are taken as they are,
   * unless markers remain. It gets ADO_REGENERATE_PATHS (the matched paths, one a line).
   */
  command?: string;
  /** regenerate: how long the command may run; default 10 minutes. */
  timeoutMs?: number;
}

export interface ConflictFile {
  path: string;
  /** Conflict kind from git: "content", "add/add", "modify/delete", "rename/delete", "binary", ... */
  kind: string;
  /** Contents of each side (utf8) when it exists and is text; absent when the side deleted it or it is binary. */
  base?: string;
  ours?: string;
  theirs?: string;
}

export interface CommandSpec {
  command: string;
  timeoutMs: number;
  env?: Record<string, string>;
}

/** One stage of a conflicted path in the index sense: 1 base, 2 ours, 3 theirs. */
export interface StageEntry {
  mode: string;
  oid: string;
}

export interface ConflictedPath {
  path: string;
  kind: string;
  stages: { 1?: StageEntry; 2?: StageEntry; 3?: StageEntry };
}

/** The result of `merge-tree --write-tree`: on conflict, the tree holds the conflict markers. */
export type TreeMerge =
  | { kind: "clean"; tree: string }
  | { kind: "conflict"; tree: string; paths: ConflictedPath[]; messages: string };

/** What a strategy made of one path: a blob to put there, or its deletion. */
export type Resolution = { mode: string; oid: string } | "delete";

/** Default time a regenerate command may run. */
export const REGENERATE_TIMEOUT_MS = 10 * 60_000;

const GITLINK = "160000";
const SYMLINK = "120000";

/**
 * Merges two commits with `git merge-tree --write-tree` (merge base found by git) and
 * returns the tree, plus the conflicted paths with their stages and git's messages.
 */
export async function mergeTreesDetailed(
  repo: string,
  ours: string,
  theirs: string,
  opts: { allowUnrelated?: boolean } = {},
): Promise<TreeMerge> {
  const unrelated = opts.allowUnrelated ? ["--allow-unrelated-histories"] : [];
  const { stdout, exitCode } = await runGit(repo, ["merge-tree", "--write-tree", "-z", ...unrelated, ours, theirs], [0, 1]);
  const fields = stdout.split("\0");
  const tree = fields[0] ?? "";
  if (exitCode === 0) return { kind: "clean", tree };

  const byPath = new Map<string, ConflictedPath>();
  let i = 1;
  for (; i < fields.length && fields[i] !== ""; i++) {
    const field = fields[i] ?? "";
    const tab = field.indexOf("\t");
    const [mode = "", oid = "", stage = ""] = field.slice(0, tab).split(" ");
    const file = field.slice(tab + 1);
    let entry = byPath.get(file);
    if (!entry) byPath.set(file, (entry = { path: file, kind: "", stages: {} }));
    if (stage === "1" || stage === "2" || stage === "3") entry.stages[stage] = { mode, oid };
  }
  i++;
  // Per message: a path count, that many paths, a conflict type, the message text.
  const kinds = new Map<string, string>();
  const messages: string[] = [];
  while (i < fields.length && fields[i] !== "") {
    const count = Number(fields[i]);
    const paths = fields.slice(i + 1, i + 1 + count);
    const type = fields[i + 1 + count] ?? "";
    const text = (fields[i + 2 + count] ?? "").trimEnd();
    i += count + 3;
    messages.push(text);
    const kind = conflictKind(type, text);
    if (kind === undefined) continue;
    for (const p of paths) {
      // A binary conflict is also reported as a content conflict; binary says more.
      if (!kinds.has(p) || kind === "binary") kinds.set(p, kind);
    }
  }
  const paths = [...byPath.values()];
  for (const p of paths) p.kind = kinds.get(p.path) ?? kindFromStages(p.stages);
  return { kind: "conflict", tree, paths, messages: messages.join("\n") };
}

/** "content", "add/add", "modify/delete", "binary", ... from one of git's messages; undefined for informational ones. */
function conflictKind(type: string, text: string): string | undefined {
  if (!type.startsWith("CONFLICT")) return undefined;
  if (type === "CONFLICT (binary)") return "binary";
  // The type says "contents" for add/add too; the text names the precise kind.
  const named = /^CONFLICT \(([^)]+)\)/.exec(text)?.[1] ?? /^CONFLICT \(([^)]+)\)/.exec(type)?.[1];
  return named === "contents" ? "content" : named;
}

function kindFromStages(stages: ConflictedPath["stages"]): string {
  if (stages[2] && stages[3]) return stages[1] ? "content" : "add/add";
  return "modify/delete";
}

/** Checks rules and returns the matcher: the first rule whose globs match a path. */
export function compileRules(rules: readonly PathRule[]): (file: string) => PathRule | undefined {
  const compiled = rules.map((rule, i) => {
    const where = `rule ${i + 1} (${JSON.stringify(rule.paths)})`;
    if (!Array.isArray(rule.paths) || rule.paths.length === 0 || rule.paths.some((p) => typeof p !== "string" || p === "")) {
      throw new InvalidIntegrateOptionsError(`${where} needs 'paths': a non-empty list of globs such as ["CHANGELOG.md"]`);
    }
    if (!["union", "ours", "theirs", "regenerate"].includes(rule.strategy)) {
      throw new InvalidIntegrateOptionsError(`${where} has strategy '${String(rule.strategy)}': use union, ours, theirs or regenerate`);
    }
    if (rule.strategy === "regenerate" && (typeof rule.command !== "string" || rule.command.trim() === "")) {
      throw new InvalidIntegrateOptionsError(`${where} uses regenerate but has no 'command' to run`);
    }
    if (rule.timeoutMs !== undefined && !(rule.timeoutMs > 0)) {
      throw new InvalidIntegrateOptionsError(`${where} has timeoutMs ${rule.timeoutMs}: give a positive number of milliseconds`);
    }
    return { rule, paths: globList(rule.paths) };
  });
  return (file) => compiled.find((c) => c.paths.matches(file))?.rule;
}

/** The ConflictFile record (sides as text when they are text) of each conflicted path. */
export async function describeConflicts(repo: string, paths: readonly ConflictedPath[]): Promise<ConflictFile[]> {
  const blobs = await readBlobs(repo, stageOids(paths));
  const text = (entry: StageEntry | undefined): string | undefined => {
    if (!entry || entry.mode === GITLINK) return undefined;
    const blob = blobs.get(entry.oid);
    return blob === undefined || isBinary(blob) ? undefined : blob.toString("utf8");
  };
  return paths.map((p) => {
    const file: ConflictFile = { path: p.path, kind: p.kind };
    const base = text(p.stages[1]);
    const ours = text(p.stages[2]);
    const theirs = text(p.stages[3]);
    if (base !== undefined) file.base = base;
    if (ours !== undefined) file.ours = ours;
    if (theirs !== undefined) file.theirs = theirs;
    return file;
  });
}

function stageOids(paths: readonly ConflictedPath[]): string[] {
  return paths.flatMap((p) => [p.stages[1], p.stages[2], p.stages[3]].filter((s) => s && s.mode !== GITLINK).map((s) => s!.oid));
}

/**
 * Resolves conflicted paths with union/ours/theirs, writing the merged blobs.
 * @param tmpRoot a directory for the temp files merge-file needs (removed afterwards)
 * @returns per path, the resolution, or why the strategy cannot decide it
 */
export async function resolveByStrategy(
  repo: string,
  tmpRoot: string,
  items: readonly { conflict: ConflictedPath; strategy: "union" | "ours" | "theirs" }[],
): Promise<Map<string, Resolution | { unresolved: string }>> {
  const result = new Map<string, Resolution | { unresolved: string }>();
  if (items.length === 0) return result;
  const blobs = await readBlobs(repo, stageOids(items.map((i) => i.conflict)));
  const dir = await mkdtemp(path.join(tmpRoot, "merge-file-"));
  try {
    let n = 0;
    for (const { conflict, strategy } of items) {
      result.set(conflict.path, await resolveOne(repo, dir, `${n++}`, conflict, strategy, blobs));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return result;
}

async function resolveOne(
  repo: string,
  dir: string,
  id: string,
  conflict: ConflictedPath,
  strategy: "union" | "ours" | "theirs",
  blobs: Map<string, Buffer | undefined>,
): Promise<Resolution | { unresolved: string }> {
  const { 1: base, 2: ours, 3: theirs } = conflict.stages;
  if (!ours || !theirs) {
    // One side deleted (or renamed away) the path: there is nothing to unite.
    if (strategy === "union") return { unresolved: `union cannot decide ${conflict.kind} of ${conflict.path}: one side deleted it` };
    const side = strategy === "ours" ? ours : theirs;
    return side ? { mode: side.mode, oid: side.oid } : "delete";
  }
  const content = (e: StageEntry | undefined) => (e ? blobs.get(e.oid) : Buffer.alloc(0));
  const sides = [content(base), content(ours), content(theirs)];
  const mergeable =
    [base, ours, theirs].every((e) => !e || (e.mode !== GITLINK && e.mode !== SYMLINK)) &&
    sides.every((b) => b !== undefined && !isBinary(b));
  if (!mergeable) {
    if (strategy === "union") return { unresolved: `union cannot merge ${conflict.path}: it is binary, a symlink or a submodule` };
    const side = strategy === "ours" ? ours : theirs;
    return { mode: side.mode, oid: side.oid };
  }
  const files = ["ours", "base", "theirs"].map((s) => path.join(dir, `${id}-${s}`));
  await Promise.all(files.map((f, i) => writeFile(f, [sides[1], sides[0], sides[2]][i]!)));
  // merge-file exits with the number of conflicts left (0 with --ours/--theirs/--union).
  const { stdout } = await gitBytes(repo, ["merge-file", "-p", `--${strategy}`, ...files], {
    okExitCodes: Array.from({ length: 127 }, (_, k) => k + 1),
  });
  return { mode: resolvedMode(base, ours, theirs, strategy), oid: await writeBlob(repo, stdout) };
}

/** Like git: a mode changed on one side only wins; changed on both, the chosen side's. */
function resolvedMode(base: StageEntry | undefined, ours: StageEntry, theirs: StageEntry, strategy: string): string {
  if (ours.mode === theirs.mode) return ours.mode;
  if (base?.mode === ours.mode) return theirs.mode;
  if (base?.mode === theirs.mode) return ours.mode;
  return strategy === "theirs" ? theirs.mode : ours.mode;
}

const MARKERS: [string, RegExp][] = [
  ["<", /^<{7,}(?: |$)/],
  ["|", /^\|{7,}(?: |$)/],
  ["=", /^={7,}$/],
  [">", /^>{7,}(?: |$)/],
];

function markerCounts(content: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const raw of content.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    for (const [kind, re] of MARKERS) if (re.test(line)) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  return counts;
}

/**
 * Whether `content` holds conflict-marker lines (`<<<<<<<`, `|||||||`, `=======`,
 * `>>>>>>>` at a line start) that none of the merge's sides had. Counting against the
 * sides keeps a legitimate line such as a 7-character Markdown heading underline, or a
 * test fixture holding markers, from being taken for a leftover conflict.
 */
export function hasLeftoverMarkers(content: Buffer | string, sides: readonly (Buffer | string | undefined)[]): boolean {
  const text = typeof content === "string" ? content : content.toString("utf8");
  const found = markerCounts(text);
  if (found.size === 0) return false;
  const allowed = new Map<string, number>();
  for (const side of sides) {
    if (side === undefined) continue;
    for (const [kind, n] of markerCounts(typeof side === "string" ? side : side.toString("utf8"))) {
      allowed.set(kind, Math.max(allowed.get(kind) ?? 0, n));
    }
  }
  return [...found].some(([kind, n]) => n > (allowed.get(kind) ?? 0));
}

/** The contents of the stages of `conflict` (for hasLeftoverMarkers), read in one batch. */
export async function stageContents(repo: string, conflicts: readonly ConflictedPath[]): Promise<Map<string, Buffer[]>> {
  const blobs = await readBlobs(repo, stageOids(conflicts));
  return new Map(
    conflicts.map((c) => [
      c.path,
      [c.stages[1], c.stages[2], c.stages[3]].flatMap((s) => {
        const blob = s && s.mode !== GITLINK ? blobs.get(s.oid) : undefined;
        return blob ? [blob] : [];
      }),
    ]),
  );
}
