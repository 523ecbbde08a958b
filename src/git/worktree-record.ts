/**
 * The record of a task's worktree: what the registry (src/runtime/worktree-registry.ts,
 * a KV bucket) keeps per task, and what cleanup reads to tell a worktree in use from a
 * finished one. Git (and ado.json beside each registration) is the truth about what
 * exists on a disk; the record is what a person or a service sees across hosts.
 */
import { z } from "zod";

/** What happened to a task's worktree. */
export const WorktreeState = {
  /** Created; the task runs in it. */
  active: "active",
  /** The task's work is committed on its branch; the worktree waits for the merge. */
  committed: "committed",
  /** The branch was merged and the worktree removed. */
  merged: "merged",
  /** Its work was kept under a ref (`archiveRef`) and the worktree removed. */
  archived: "archived",
  /** Removed with nothing to keep (no changes, or its work is on its branch). */
  removed: "removed",
  /** Left in place on purpose; `reason` says why and what to do. */
  kept: "kept",
} as const;
export type WorktreeState = (typeof WorktreeState)[keyof typeof WorktreeState];
export const WORKTREE_STATES = Object.values(WorktreeState) as [WorktreeState, ...WorktreeState[]];

const isoTime = z.string().datetime({ offset: true });

export const WorktreeRecord = z
  .object({
    runId: z.string().min(1),
    taskId: z.string().min(1),
    /** The attempt that last used the worktree. */
    attempt: z.number().int().min(1).optional(),
    /** The repository (user's checkout or clone) the worktree belongs to. */
    repo: z.string().min(1),
    path: z.string().min(1),
    branch: z.string().min(1),
    /** os.hostname() of the machine whose disk holds the worktree. */
    host: z.string().min(1),
    workerId: z.string().optional(),
    state: z.enum(WORKTREE_STATES),
    createdAt: isoTime,
    /** When it left `active`. */
    finishedAt: isoTime.optional(),
    /** Last write, and who made it (`worker <id>`, `merger <id>`, `ado worktrees cleanup`). */
    updatedAt: isoTime,
    updatedBy: z.string().min(1),
    /** The task's commit (committed, merged) or the archive's. */
    commit: z.string().optional(),
    /** Where the work was kept (archived). */
    archiveRef: z.string().optional(),
    /** Why it was kept, or why it ended as it did. Required when kept. */
    reason: z.string().optional(),
  })
  .refine((r) => r.state !== "kept" || (r.reason ?? "") !== "", { message: "a kept worktree needs a reason", path: ["reason"] });
export type WorktreeRecord = z.infer<typeof WorktreeRecord>;
