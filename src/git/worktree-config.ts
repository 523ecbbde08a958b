/**
 * The `worktrees` section of ado.config.yaml: what a new task worktree gets from the
 * user's checkout, and when finished worktrees are cleaned up.
 *
 *   worktrees:
 *     include: [".env", "config/*.local.json"]   # copied into each new worktree
 *     dependencies: ["node_modules", ".venv"]     # large dirs (at any depth): shared or skipped, never copied
 *     dependencyMode: symlink                      # or skip (default)
 *     maxCopyBytes: 268435456                      # the include list's budget per worktree
 *     cleanupAfter: 7d                             # finished worktrees older than this go
 *     maxWorktrees: 50                             # beyond this, the oldest finished ones go
 *
 * (`** /.venv` is written without the space.) Merged worktrees always go (the merge
 * coordinator removes them); worktrees with uncommitted or unmerged work are never
 * removed silently: see cleanup.ts.
 */
import { z } from "zod";
import { patternProblems } from "./globs.js";
import { DEFAULT_INCLUDE } from "./worktree-include.js";
import { DurationSchema } from "../runtime/duration.js";

const patterns = (what: string) =>
  z
    .array(z.string())
    .superRefine((list, ctx) => {
      for (const problem of patternProblems(list)) ctx.addIssue({ code: "custom", message: `${what}: ${problem}` });
    });

export const WorktreesConfigSchema = z
  .object({
    /** Globs, relative to the repository root, of files a new worktree lacks but a task needs. */
    include: patterns("include").default([...DEFAULT_INCLUDE.include]),
    /** Globs of large dependency directories: linked or skipped, never copied. */
    dependencies: patterns("dependencies").default([...DEFAULT_INCLUDE.dependencies]),
    dependencyMode: z.enum(["symlink", "skip"]).default(DEFAULT_INCLUDE.dependencyMode),
    maxCopyBytes: z.number().int().min(0).default(DEFAULT_INCLUDE.maxCopyBytes),
    /** Finished worktrees older than this are cleaned up (absent: no age limit). */
    cleanupAfter: DurationSchema.optional(),
    /** Most worktrees kept per repository; beyond it the oldest finished ones are cleaned up. */
    maxWorktrees: z.number().int().min(1).optional(),
  })
  .strict();

export type WorktreesConfig = z.output<typeof WorktreesConfigSchema>;

/** The section's value when the config file has none (a fresh object each time: callers may change it). */
export const worktreesDefault = (): WorktreesConfig => WorktreesConfigSchema.parse({});
