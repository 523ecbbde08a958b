/**
 * Where task worktrees may go, checked before anything is created: inside the user's
 * checkout, they would show in `git status` and be swept up by a `git add -A`, unless
 * git ignores the directory. WorktreeManager refuses such a directory when a task
 * starts; a command checks here first, so a bad setting stops the run before it begins
 * (and creates nothing).
 */
import { realpath } from "node:fs/promises";
import path from "node:path";
import { runGit } from "./exec.js";
import { openRepo } from "./repo.js";

/**
 * Why task worktrees cannot go under `baseDir` for the repository at `repo`, or
 * undefined when they can. Creates nothing: `baseDir` need not exist.
 */
export async function worktreeDirProblem(repo: string, baseDir: string): Promise<string | undefined> {
  const { topLevel, gitCommonDir } = await openRepo(repo);
  if (topLevel === gitCommonDir) return undefined; // a bare repository has no checkout to spoil
  const dir = await realpathOfNearest(path.resolve(baseDir));
  if (dir !== topLevel && !dir.startsWith(topLevel + path.sep)) return undefined;
  const rel = path.relative(topLevel, dir);
  const fix = `add '${rel || "."}/' to .gitignore (or .git/info/exclude), or set worktreeDir outside the checkout`;
  if (!rel) return `the worktree directory '${dir}' is the checkout '${topLevel}' itself: set worktreeDir outside the checkout`;
  // A path inside the directory: a pattern like `wt/` matches only directories, and the
  // directory may not exist yet.
  const probe = path.join(rel, "ado-probe");
  const ignored = await runGit(topLevel, ["check-ignore", "-q", "--", probe], [0, 1]);
  if (ignored.exitCode === 0) return undefined;
  return `the worktree directory '${dir}' is inside the checkout '${topLevel}' and git does not ignore it: ${fix}`;
}

/** `p` with symlinks resolved as far as it exists (git records resolved paths). */
async function realpathOfNearest(p: string): Promise<string> {
  const rest: string[] = [];
  for (let dir = p; ; dir = path.dirname(dir)) {
    try {
      return path.join(await realpath(dir), ...rest.reverse());
    } catch {
      if (path.dirname(dir) === dir) return p;
      rest.push(path.basename(dir));
    }
  }
}
