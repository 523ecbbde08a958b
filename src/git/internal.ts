/**
 * The git layer's internals, for its own tests and for benchmarks that measure it
 * against raw git. Code in src/ outside src/git imports only ./index.ts (a test in
 * test/boundaries.test.ts holds that door).
 */
export * from "./index.js";
export { compareAndSwap } from "./merge.js";
export { ADO_IDENTITY, git, runGit } from "./exec.js";
export { gitBytes, gitText } from "./plumbing.js";
export { SCRATCH_GIT_OPTIONS, withScratchWorktree } from "./scratch.js";
export { worktreeLockStats, type WorktreeLockStats } from "./worktrees.js";
