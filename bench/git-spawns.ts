/**
 * Counts the git processes this process starts (child_process execFile, spawn and
 * execFileSync with "git"), by command, while counting is on: the built-in module's
 * functions are wrapped and the ES module bindings synced (syncBuiltinESMExports), so
 * src/git's own imports go through the wrappers. Only the count is added; each call is
 * passed on unchanged. Benches only.
 */
import cp from "node:child_process";
import { syncBuiltinESMExports } from "node:module";

type Fn = (...args: unknown[]) => unknown;
const NAMES = ["execFile", "spawn", "execFileSync", "spawnSync"] as const;

/** Global options that take a value as the next argument. */
const WITH_VALUE = new Set(["-c", "-C", "--git-dir", "--work-tree", "--namespace", "--exec-path"]);
/** Commands told apart by their first argument too. */
const BY_FIRST = new Set(["worktree", "cat-file", "config", "rev-parse", "merge-tree", "update-ref"]);

/** `git -c a=b worktree add ...` -> "worktree add". */
export function gitCommand(args: readonly string[]): string {
  let i = 0;
  while (i < args.length && args[i]!.startsWith("-")) i += WITH_VALUE.has(args[i]!) ? 2 : 1;
  const cmd = args[i] ?? "(none)";
  const first = args[i + 1];
  if (first === undefined || !BY_FIRST.has(cmd)) return cmd;
  // `worktree add`, `cat-file -e`, `rev-parse --verify`; not the commit or path a command is given.
  return cmd === "worktree" || first.startsWith("-") ? `${cmd} ${first}` : cmd;
}

export class GitSpawnCounter {
  readonly counts = new Map<string, number>();
  #originals?: Map<string, Fn>;

  /** Starts counting (idempotent). */
  start(): this {
    if (this.#originals) return this;
    const mod = cp as unknown as Record<string, Fn>;
    this.#originals = new Map(NAMES.map((n) => [n, mod[n]!]));
    for (const name of NAMES) {
      const original = this.#originals.get(name)!;
      const counts = this.counts;
      mod[name] = function (this: unknown, ...args: unknown[]) {
        if (args[0] === "git" && Array.isArray(args[1])) {
          const key = gitCommand(args[1] as string[]);
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
        return original.apply(this, args);
      };
    }
    syncBuiltinESMExports();
    return this;
  }

  /** Stops counting; the counts stay. */
  stop(): void {
    if (!this.#originals) return;
    const mod = cp as unknown as Record<string, Fn>;
    for (const [name, fn] of this.#originals) mod[name] = fn;
    this.#originals = undefined;
    syncBuiltinESMExports();
  }

  total(): number {
    return [...this.counts.values()].reduce((a, b) => a + b, 0);
  }
}
