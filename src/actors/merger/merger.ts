import { Actor, type ActorContext } from "../../runtime/actor.js";
import { encode } from "../../runtime/codec.js";
import { BatchLoop, type Delivery } from "../../runtime/consume.js";
import { AdoError, errorMessage } from "../../runtime/errors.js";
import { createBranchIfAbsent, mergeIntoBranch, WorktreeManager } from "../../runtime/git/index.js";
import { SCHEMAS, type MergeRequest, type MergeResult } from "../../runtime/messages.js";
import { actorConsumer, consumers } from "../../runtime/topology.js";

export interface MergerOptions {
  /** Worktree base directory, to remove task worktrees once merged. */
  worktreeDir: string;
}

/**
 * The merge coordinator: folds each finished task branch into the run's integration
 * branch, without a work tree (merge-tree, commit-tree, update-ref with the expected
 * old value), so the user's checkout is never touched. The scheduler only asks for a
 * merge once the task's dependencies are merged, so merges land in dependency order.
 * After a merge, or a conflict, the task's worktree is removed: its work is committed on
 * its branch, which stays.
 */
export class Merger extends Actor {
  private loop?: BatchLoop<MergeRequest>;
  private merged = 0;
  private conflicts = 0;

  constructor(
    instance: string,
    ctx: ActorContext,
    private readonly opts: MergerOptions,
  ) {
    super("merger", instance, ctx);
  }

  protected async onStart(): Promise<void> {
    const { topo } = this.ctx;
    const jsm = await this.js.jetstreamManager();
    // A merge can take a while on a big repository: give it minutes, not seconds.
    await jsm.consumers.add(topo.streams.merge.name, actorConsumer(consumers.merge, topo.subjects.mergeAll, { ackWaitMs: 300_000 }));
    this.loop = new BatchLoop<MergeRequest>({
      js: this.js,
      topo,
      consumer: await this.js.consumers.get(topo.streams.merge.name, consumers.merge),
      schema: SCHEMAS.MergeRequest,
      actor: "merger",
      logger: this.log,
      // One merge at a time per replica: merges into one branch are sequential anyway.
      maxBatch: 1,
      handle: async (batch) => {
        for (const d of batch) await this.mergeOne(d);
      },
    });
    await this.loop.start();
  }

  protected async onDrain(): Promise<void> {
    await this.loop?.stop();
  }

  override stats() {
    return { merged: this.merged, conflicts: this.conflicts };
  }

  private async mergeOne({ data: req }: Delivery<MergeRequest>): Promise<void> {
    if (req.releaseOnly) {
      if (req.worktree) await this.removeWorktree(req);
      return;
    }
    let result: MergeResult;
    try {
      await createBranchIfAbsent(req.repo, req.integrationBranch, req.baseCommit);
      const outcome = await mergeIntoBranch(req.repo, {
        target: req.integrationBranch,
        source: req.commit,
        message: `ado: merge task '${req.taskId}' (${req.branch}) into ${req.integrationBranch}`,
      });
      if (outcome.kind === "conflict") {
        this.conflicts++;
        result = { type: "merge.result", runId: req.runId, taskId: req.taskId, status: "conflict", files: outcome.files, message: outcome.messages };
        // The task's work is committed on its branch, which the conflict report names.
        if (req.worktree) await this.removeWorktree(req);
      } else {
        this.merged++;
        result = { type: "merge.result", runId: req.runId, taskId: req.taskId, status: "merged", integrationCommit: outcome.commit, files: [], message: outcome.kind };
        if (req.worktree) await this.removeWorktree(req);
      }
    } catch (err) {
      // Transient (a lock, a race): let the message be redelivered. Otherwise report it.
      if (err instanceof AdoError && err.retryable) throw err;
      result = { type: "merge.result", runId: req.runId, taskId: req.taskId, status: "error", files: [], message: errorMessage(err) };
    }
    const { data, headers } = encode(SCHEMAS.SchedulerInput, result);
    await this.js.publish(this.ctx.topo.subjects.results(req.runId), data, { headers, msgID: `${req.runId}.${req.taskId}.merge` });
  }

  private async removeWorktree(req: MergeRequest): Promise<void> {
    try {
      await new WorktreeManager({ repo: req.repo, baseDir: this.opts.worktreeDir, logger: this.log }).remove(req.worktree!);
    } catch (err) {
      // Never fatal: the branch is merged; a worktree we cannot remove cleanly is kept and reported.
      this.log.warn({ worktree: req.worktree, err: errorMessage(err) }, "merged, but the worktree was kept");
    }
  }
}
