/**
 * The types of the merge coordinator's git entry point (integrate.ts): its options and
 * outcomes, shared by the modules that build them (integrate-step.ts, manual.ts).
 */
import type { CommandSpec, ConflictFile, PathRule, PathStrategy } from "./conflicts.js";

export type MergeMode = "merge" | "squash" | "linear";

export interface IntegrateOptions {
  /** Any directory in the repository (a bare repository works for the clean path and with worktrees). */
  repo: string;
  /** Integration branch name (no refs/heads/); it must exist. */
  target: string;
  /** The task's commit. */
  source: string;
  /** The run's base commit: the task's own commits are base..source (for squash/linear). */
  base: string;
  mode: MergeMode;
  /** Merge or squash commit message. */
  message: string;
  /** Per-path conflict strategies, tried first. */
  rules?: PathRule[];
  /**
   * A resolver agent, tried second: `sh -c command` at the root of a scratch worktree
   * holding the conflict markers (MERGE_HEAD set), as its own process group, killed
   * with everything it started at `timeoutMs`. It gets env ADO_CONFLICTS_FILE, a JSON
   * file `{ conflicts: ConflictFile[], context }` outside the worktree. Its result is
   * accepted when it exits 0, the merge is still in progress (or it committed it), and
   * every conflicted file exists (or was deleted where one side deleted it) with no
   * conflict markers; then everything it left in the worktree is taken (`git add -A`).
   */
  resolver?: CommandSpec & { context?: unknown };
  /**
   * Validation of the merged tree, run at the root of a scratch worktree checked out at
   * the candidate commit (env ADO_CANDIDATE holds its sha) before the branch moves.
   */
  validate?: CommandSpec;
  /** Base directory for scratch worktrees (`scratch/`) and manual ones (`manual/`). */
  scratchDir: string;
  signal?: AbortSignal;
  onOutput?: (stream: "stdout" | "stderr", chunk: string, phase: "regenerate" | "resolver" | "validate") => void;
}

/** How a conflicted path was resolved: a rule's strategy, the resolver agent, or a person (--manual). */
export type ResolvedBy = PathStrategy | "agent" | "manual";

export type IntegrateOutcome =
  | {
      kind: "merged";
      commit: string;
      how: "up-to-date" | "fast-forward" | "merged" | "squashed" | "rebased";
      resolved: { path: string; by: ResolvedBy }[];
    }
  | {
      kind: "conflict";
      /** Paths still conflicted, each once. */
      files: string[];
      conflicts: ConflictFile[];
      /** Git's informational and CONFLICT messages, one per line. */
      messages: string;
      /** Why nothing resolved it, human readable. */
      reason: string;
      /** The tail of the resolver's output, when it ran and was rejected. */
      resolverOutput?: string;
    }
  | { kind: "validation_failed"; candidate: string; output: string; exitCode: number | null };

/** Parts of the outcome union, for the modules that build them. */
export type Merged = Extract<IntegrateOutcome, { kind: "merged" }>;
export type Conflict = Extract<IntegrateOutcome, { kind: "conflict" }>;
export type ValidationFailed = Extract<IntegrateOutcome, { kind: "validation_failed" }>;
export type Resolved = Merged["resolved"][number];
