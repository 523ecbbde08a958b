/**
 * ado's one glob dialect, for every list of paths a user writes (the worktree include
 * list and dependency directories, merge rules): .gitignore's rule, matched by picomatch.
 *
 * - Paths are relative to the repository's root, with `/`.
 * - A pattern with no `/` (a trailing one aside) matches at any depth: `.env` is every
 *   `.env`, `node_modules` every `node_modules`, `CHANGELOG.md` every `CHANGELOG.md`.
 * - A pattern with a `/` at its start or in its middle is anchored at the root:
 *   `/.env` is the root's only, `config/*.json` is under the root's `config/`.
 * - `*` and `?` stay within one path segment and match dotfiles; `**` spans any number
 *   of directories; `[abc]` is a class.
 * - A trailing `/` matches directories only; a directory selected selects everything
 *   in it.
 * - In a list, a leading `!` excludes what earlier patterns matched (the last pattern
 *   that matches a path decides). As in git, what is inside a selected directory cannot
 *   be excluded again on its own.
 */
import picomatch from "picomatch";

interface Compiled {
  source: string;
  negated: boolean;
  dirOnly: boolean;
  /** The normalized pattern, as picomatch sees it. */
  glob: string;
  test: (path: string) => boolean;
  /**
   * The directory below which every match lies ("" for anywhere), so a walk need not
   * enter other directories.
   */
  base: string;
  /** Matches at any depth (no `/`): a walk must visit every directory. */
  anyDepth: boolean;
}

function compileOne(pattern: string): Compiled {
  const negated = pattern.startsWith("!");
  let body = negated ? pattern.slice(1) : pattern;
  const dirOnly = body.endsWith("/");
  body = body.replace(/\/+$/, "");
  const anchored = body.includes("/");
  body = body.replace(/^\/+/, "");
  const anyDepth = !anchored && body !== "**";
  const glob = anyDepth ? `**/${body}` : body;
  const test = picomatch(glob, { dot: true });
  return { source: pattern, negated, dirOnly, glob, test, base: anyDepth ? "" : picomatch.scan(body).base, anyDepth };
}

/** A compiled pattern list. */
export interface GlobList {
  /** Whether the list selects `path` (a directory when `isDir`): the last pattern that matches decides. */
  matches(path: string, isDir?: boolean): boolean;
  /** Whether a match could lie at or below directory `dir` (for pruning a walk). */
  mayMatchWithin(dir: string): boolean;
  /** The first positive pattern that matches `path` (to name it in a message). */
  patternOf(path: string): string | undefined;
  readonly empty: boolean;
}

/** Compiles a pattern list in ado's dialect (see the file comment). */
export function globList(patterns: readonly string[]): GlobList {
  const compiled = patterns.map(compileOne);
  const positive = compiled.filter((c) => !c.negated);
  const hit = (c: Compiled, path: string, isDir: boolean) => (!c.dirOnly || isDir) && c.test(path);
  return {
    empty: positive.length === 0,
    matches(path, isDir = false) {
      const own = (p: string, dir: boolean) => {
        let selected = false;
        for (const c of compiled) if (hit(c, p, dir)) selected = !c.negated;
        return selected;
      };
      if (own(path, isDir)) return true;
      for (let i = path.indexOf("/"); i > 0; i = path.indexOf("/", i + 1)) if (own(path.slice(0, i), true)) return true;
      return false;
    },
    mayMatchWithin(dir) {
      return positive.some((c) => c.anyDepth || c.base === "" || c.base === dir || c.base.startsWith(`${dir}/`) || dir.startsWith(`${c.base}/`));
    },
    patternOf(path) {
      return positive.find((c) => c.test(path))?.source;
    },
  };
}

/** Checks a pattern list for mistakes a person can fix: one message per problem (empty when all are fine). */
export function patternProblems(patterns: readonly string[]): string[] {
  const problems: string[] = [];
  for (const p of patterns) {
    const body = (p.startsWith("!") ? p.slice(1) : p).replace(/^\/+/, "");
    if (body.trim() === "") problems.push(`'${p}' is empty`);
    else if (/^[A-Za-z]:[\\/]/.test(body)) problems.push(`'${p}' must be relative to the repository root`);
    else if (body.split("/").some((s) => s === ".." || s === ".")) problems.push(`'${p}' may not contain '.' or '..' segments`);
    else if (body.split("/").includes(".git")) problems.push(`'${p}' may not reach into .git`);
  }
  return problems;
}
