/**
 * Public surface of ado's git layer: worktrees per task, merges without a work tree
 * (and the merge coordinator's integrate: modes, conflict rules, resolver, validation,
 * manual resolution, --merge-into), and read-only probes of the user's repository.
 */
export * from "./errors.js";
export { type DiffFile, type TaskDiff, type TaskDiffOptions, taskDiff } from "./diff.js";
export { type MergeIntoBranchOptions, type MergeOutcome, mergeIntoBranch } from "./merge.js";
export {
  type BatchItem,
  type BatchOutcome,
  type CommandSpec,
  type ConflictFile,
  type IntegrateBatchOptions,
  type IntegrateBatchResult,
  type IntegrateOptions,
  type IntegrateOutcome,
  type MergeMode,
  type PathRule,
  type PathStrategy,
  type ResolvedBy,
  completeManualResolution,
  integrate,
  integrateBatch,
  integrateChoosing,
  prepareManualResolution,
} from "./integrate.js";
export * from "./integrate-errors.js";
export { type MergeIntoTargetOptions, type MergeIntoTargetOutcome, mergeIntoTarget } from "./target.js";
export {
  type RepoInfo,
  checkoutFingerprint,
  commitsMissingFrom,
  createBranchIfAbsent,
  filesChangedSinceFork,
  firstParentCount,
  isAncestor,
  isValidBranchName,
  listRefs,
  openRepo,
  readBranch,
  resolveCommit,
  uncommittedChanges,
} from "./repo.js";
export { worktreeDirProblem } from "./worktree-dir.js";
export { type ShellOptions, type ShellResult, runShell } from "./command.js";
export {
  type RefAction,
  type RefAt,
  type RunRefs,
  applyPrune,
  checkedOutBranches,
  listRemoteRunRefs,
  listRunRefs,
  mergedRunBranches,
  planPrune,
  pruneRemoteRun,
} from "./prune.js";
export {
  type AddWorktreeOptions,
  type CommitAllOptions,
  type WorktreeEntry,
  WorktreeManager,
  type WorktreeManagerOptions,
} from "./worktrees.js";
export { WorktreeRecord, WorktreeState, WORKTREE_STATES } from "./worktree-record.js";
export {
  type CleanupItem,
  type CleanupOutcome,
  type CleanupRegistry,
  applyCleanup,
  planCleanup,
} from "./cleanup.js";
export {
  type GitAccess,
  type RepoTarget,
  GIT_ACCESS,
  fetchRunBranches,
  publishRunBase,
  pushRef,
  RemoteClones,
  RepoAccess,
} from "./remote.js";
export { type WorktreesConfig, WorktreesConfigSchema, worktreesDefault } from "./worktree-config.js";
export { type AttemptGit, type OrphanDir, type WorktreeMeta, type WorktreeStatus, ownerAlive, worktreesOnBranch } from "./worktrees.js";
