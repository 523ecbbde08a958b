/**
 * Public surface of ado's git layer: worktrees per task, merges without a work tree,
 * and read-only probes of the user's repository.
 */
export * from "./errors.js";
export { type MergeIntoBranchOptions, type MergeOutcome, mergeIntoBranch } from "./merge.js";
export {
  type RepoInfo,
  checkoutFingerprint,
  createBranchIfAbsent,
  isAncestor,
  openRepo,
  readBranch,
  resolveCommit,
} from "./repo.js";
export {
  type AddWorktreeOptions,
  type CommitAllOptions,
  type WorktreeEntry,
  WorktreeManager,
  type WorktreeManagerOptions,
} from "./worktrees.js";
