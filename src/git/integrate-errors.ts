/**
 * Error classes of the merge coordinator's git side (integrate.ts and its helpers).
 * They sit apart from errors.ts only because that file is being reworked at the same
 * time; like those, each names itself and says whether a retry can succeed. Outcomes a
 * caller expects (a conflict, a failed validation, a refused --merge-into) are returned
 * values, not errors: these are for input that is wrong and for interruptions.
 */
import { AdoError } from "../runtime/errors.js";

/** The options of an integration are invalid (a rule without paths, a bad mode, ...). */
export class InvalidIntegrateOptionsError extends AdoError {
  constructor(what: string) {
    super(`invalid merge options: ${what}`, { retryable: false });
  }
}

/** The caller's AbortSignal fired; every scratch worktree was removed and the target left alone. */
export class IntegrationAbortedError extends AdoError {
  constructor(readonly target: string, opts: { cause?: unknown } = {}) {
    super(`merge into '${target}' was aborted before it moved the branch: nothing was changed; retry it`, {
      ...opts,
      retryable: true,
    });
  }
}

/** A path given to completeManualResolution is not a worktree made by prepareManualResolution. */
export class NotAManualResolutionError extends AdoError {
  constructor(readonly worktree: string, why: string) {
    super(
      `'${worktree}' is not a manual-resolution worktree prepared by ado (${why}): ` +
        `pass the path that 'ado hitl resolve --manual' printed`,
      { retryable: false },
    );
  }
}

/** prepareManualResolution would reuse a branch or directory that already exists. */
export class ManualResolutionExistsError extends AdoError {
  constructor(readonly what: string) {
    super(`${what} already exists: finish or remove the earlier manual resolution, or choose another name`, {
      retryable: false,
    });
  }
}
