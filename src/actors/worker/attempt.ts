import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JsMsg } from "@nats-io/jetstream";
import { pushRef, runShell, type RepoAccess, type RepoTarget, type WorktreeManager } from "../../git/index.js";
import { type Agent, type AgentEvent, type AgentOutcome, type CliOutcome, type OutputStream, type SessionPlace, type StopReason, Suspender, taskDir, toWireEvent } from "../../agents/index.js";
import { AdoError, errorMessage } from "../../runtime/errors.js";
import type { publishEvent } from "../../runtime/events.js";
import type { WorkerId } from "../../runtime/ids.js";
import type { Logger } from "../../runtime/logger.js";
import { withPrompt } from "../../runtime/commit-message.js";
import type { TaskFailure, TaskResult, TaskWork, VariantCheck } from "../../runtime/messages.js";
import { parseScore, selectCommand, selectRule } from "../../runtime/variants.js";
import { providerEnvironment, type ProviderAssignment } from "../../runtime/providers.js";
import {
  AgentEnv,
  attemptKey,
  attemptRef,
  CrashPoint,
  INPUTS_FILE,
  CHECKPOINT_TRAILER,
  PROMPT_ENV_MAX_BYTES,
  PROMPT_FILE,
  strayBranchRef,
  taskWorktreeName,
  variantRef,
  TEST_CRASH_ENV,
  WORKTREE_ADO_DIR,
} from "../../runtime/names.js";
import type { CheckpointStore } from "../../runtime/checkpoints.js";
import { Checkpointer, sessionHost } from "./checkpointer.js";
import { afterCommit, planAfterAgent, planBranches } from "./decide.js";
import { OutputBuffer } from "./output.js";
import type { TaskWorktrees, WorktreeUpdate } from "./task-worktrees.js";

/** An event the attempt publishes (task.started, task.output, task.checkpoint). */
export type AttemptEvent = Parameters<typeof publishEvent>[2];

/** A result before the fields execute() adds at the end (times, output, cost). */
type Outcome = Omit<TaskResult, "startedAt" | "finishedAt" | "outputTail" | "summary" | "costUsd" | "tokens">;

/**
 * Agents that enforce a task's `maxCost` themselves, given it on their command line
 * (Claude Code's --max-budget-usd: it ends with a resumable `error_max_budget_usd`
 * result). ado stops the others itself once their reported spend passes the cap.
 */
const SELF_CAPPED: ReadonlySet<string> = new Set(["claude"]);

/** What an attempt spent: USD, and tokens (prompt, cache reads included, plus output). */
interface Spend {
  usd: number;
  tokens: number;
}

/** What an agent's outcome says it spent (agent CLIs; nothing for shell and noop). */
function spendOf(outcome: AgentOutcome): Spend {
  const o = outcome as Partial<Pick<CliOutcome, "costUsd" | "tokens">>;
  return { usd: o.costUsd ?? 0, tokens: o.tokens ? o.tokens.input + o.tokens.output : 0 };
}

/**
 * What an attempt needs from its worker, and nothing more (BullMQ's
 * LockManagerWorkerContext, Temporal's Activity): who it runs on, the agents, how to
 * claim, publish and remember results, and where worktrees come from.
 */
export interface AttemptContext {
  readonly workerId: WorkerId;
  readonly log: Logger;
  readonly agents: ReadonlyMap<string, Agent>;
  /** Claims the attempt in KV `claims` (create only): true when it is this worker's. */
  claim(key: string): Promise<boolean>;
  /** Publishes an event (stored before the call resolves); `msgID` for events that recur within an attempt. */
  emit(event: AttemptEvent, msgID?: string): Promise<unknown>;
  /** Publishes the attempt's result to the scheduler, retrying while the server is unreachable. */
  publishResult(key: string, result: TaskResult): Promise<void>;
  /** Results this worker already produced, so a redelivery re-sends instead of re-running. */
  readonly results: ResultCache;
  /** How this host reaches a run's repository (its own, or a clone of the run's remote). */
  readonly access: RepoAccess;
  readonly worktrees: TaskWorktrees;
  /** Tasks' checkpoint records and agent sessions (KV and object store `sessions`). */
  readonly checkpoints: CheckpointStore;
  /** How often an agent CLI's work is checkpointed while it runs; 0: never (only at an interruption). */
  readonly checkpointIntervalMs: number;
  /**
   * Tells the provider's circuit breaker how an attempt on a provider ended (before the
   * result goes to the scheduler, so the breaker has counted it by the time the task
   * comes back to a balancer). Never throws.
   */
  reportProvider(work: TaskWork, result: TaskResult): Promise<void>;
  /** Worker variables holding providers' credentials under names of their own: blanked for every agent. */
  readonly credentialHolders: readonly string[];
  /** The work with what did not fit its message read back from the object store (a long prompt, a fan-in's inputs). */
  loadPayloads(work: TaskWork): Promise<TaskWork>;
}

/** Results already produced, by attempt key; bounded (a redelivery comes within ack_wait, long before 1,000 newer results). */
export class ResultCache {
  private readonly results = new Map<string, TaskResult>();
  constructor(private readonly max = 1_000) {}

  get(key: string): TaskResult | undefined {
    return this.results.get(key);
  }

  remember(key: string, result: TaskResult): void {
    this.results.set(key, result);
    if (this.results.size > this.max) this.results.delete(this.results.keys().next().value!);
  }
}

/**
 * One attempt of a task on this worker, from its claim to its result: claims it, makes
 * its worktree on the task branch, runs the agent there (streaming its output as
 * events), does what decide.ts plans with the worktree afterwards, publishes the result
 * and acks the work message (only after the result is stored: until then the message
 * stays on the worker's subject, where the stealer finds it should this worker die).
 */
export class Attempt {
  readonly key: string;
  private readonly abort = new AbortController();
  /** Pauses and resumes the agent's process group. */
  readonly suspender = new Suspender();
  /** An agent CLI's final text (the task's summary) and its session, once the agent has ended. */
  private agentSummary?: string;
  private sessionId?: string;
  /** What the agent spent so far (its cumulative `agent.usage` events), then its outcome's figure. */
  private spend: Spend = { usd: 0, tokens: 0 };
  /** Set when ado stopped the agent for passing the task's `maxCost`: why. */
  private overCap?: string;
  /** Agent events being published: stored before the result, like the output. */
  private readonly publishing = new Set<Promise<unknown>>();

  constructor(
    private readonly ctx: AttemptContext,
    readonly work: TaskWork,
    private delivery: JsMsg,
  ) {
    this.key = attemptKey(work);
  }

  /** The latest delivery of this attempt's work message: the one acked at the end, and kept alive meanwhile. */
  get msg(): JsMsg {
    return this.delivery;
  }

  /**
   * The work message delivered again while the attempt runs: the end acks this delivery.
   * The earlier one's ack may go nowhere: a consumer re-created under it (the scheduler
   * mends one a server restart left skipping messages) knows only its own deliveries,
   * and a work message acked through the old one stayed in the queue.
   */
  redelivered(m: JsMsg): void {
    this.delivery = m;
  }

  /** Stops the agent now: cancelled on request, or interrupted because the worker shuts down. */
  stop(reason: StopReason): void {
    this.abort.abort(reason);
  }

  /**
   * An agent CLI's event: published on the task's subjects (the scheduler counts
   * `agent.usage` against the run's budget as it comes). Spend past the task's own
   * `maxCost` stops an agent that does not enforce the cap itself.
   */
  private onAgentEvent(e: AgentEvent, seq: number): void {
    const { work, ctx } = this;
    const p = ctx
      .emit(toWireEvent(e, { runId: work.runId, taskId: work.taskId, attempt: work.attempt, at: new Date().toISOString(), seq }))
      .catch((err) => ctx.log.warn({ task: work.taskId, event: e.type, err: errorMessage(err) }, "agent event not stored"))
      .finally(() => this.publishing.delete(p));
    this.publishing.add(p);
    if (e.type !== "agent.usage") return;
    this.spend = { usd: Math.max(this.spend.usd, e.costUsd), tokens: Math.max(this.spend.tokens, e.inputTokens + e.outputTokens) };
    const cap = work.task.maxCost;
    // A cap is passed only by more than a rounding error (sums of cents in floating point).
    if (cap === undefined || this.overCap || this.abort.signal.aborted || SELF_CAPPED.has(work.task.agent) || e.costUsd <= cap + 1e-9) return;
    this.overCap = `the agent spent $${e.costUsd.toFixed(4)}, past the task's maxCost of $${cap.toFixed(2)}: ado stopped it; raise the task's maxCost to let it go further`;
    ctx.log.info({ task: work.taskId, costUsd: e.costUsd, maxCost: cap }, "agent stopped: past the task's maxCost");
    this.abort.abort("cancelled");
  }

  /**
   * Runs the attempt to its end: result published and work message acked.
   * @returns false when there was nothing to run (a duplicate delivery, or a result re-sent).
   */
  async run(): Promise<boolean> {
    const { ctx, key } = this;
    if (!(await ctx.claim(key))) {
      // Another worker holds this attempt: ours is a duplicate delivery.
      this.msg.ack();
      return false;
    }
    const done = ctx.results.get(key);
    if (done) {
      // We ran it, but the ack was lost: send the result again (deduplicated), never re-run.
      await ctx.publishResult(key, done);
      this.msg.ack();
      return false;
    }
    const work = this.work;
    const startedAt = new Date().toISOString();
    const output = new OutputBuffer((stream, data) =>
      ctx.emit({ type: "task.output", runId: work.runId, taskId: work.taskId, attempt: work.attempt, at: new Date().toISOString(), stream, data }),
    );
    let result: Outcome;
    try {
      result = await this.execute(startedAt, (s: OutputStream, d: string) => output.push(s, d));
    } catch (err) {
      result = this.failed({
        kind: err instanceof AdoError && !err.retryable ? "git" : "internal",
        retryable: err instanceof AdoError ? err.retryable : true,
        message: errorMessage(err),
      });
    }
    output.flush();
    await output.settled(); // output events are stored before the result that ends the task
    await Promise.all(this.publishing);
    const tail = output.tail();
    const summary = (this.agentSummary?.trim() || tail.trimEnd().split("\n").pop())?.slice(0, 500) ?? "";
    const { usd, tokens } = this.spend;
    const full: TaskResult = {
      ...result,
      startedAt,
      finishedAt: new Date().toISOString(),
      outputTail: tail,
      summary,
      costUsd: usd,
      ...(tokens > 0 ? { tokens } : {}),
      ...(this.sessionId ? { sessionId: this.sessionId } : {}),
    };
    ctx.results.remember(key, full);
    if (work.provider) await ctx.reportProvider(work, full);
    await ctx.publishResult(key, full);
    this.msg.ack();
    return true;
  }

  /** Worktree, agent, and what becomes of the worktree. */
  private async execute(startedAt: string, onOutput: (s: OutputStream, d: string) => void): Promise<Outcome> {
    const { ctx } = this;
    let work: TaskWork;
    try {
      work = await ctx.loadPayloads(this.work);
    } catch (err) {
      // A prompt or inputs gone from the object store: running without them would be wrong work.
      return this.failed({ kind: "invalid", retryable: err instanceof AdoError ? err.retryable : true, message: errorMessage(err) });
    }
    const agent = ctx.agents.get(work.task.agent);
    if (!agent) {
      return this.failed({
        kind: "agent_missing",
        retryable: false,
        message: `agent '${work.task.agent}' is not available on worker ${ctx.workerId} (it has: ${[...ctx.agents.keys()].join(", ")})`,
      });
    }
    let cwd: string | undefined;
    let wt: WorktreeManager | undefined;
    let target: RepoTarget | undefined;
    let branchesBefore: Set<string> | undefined;
    // Started at an earlier attempt's checkpoint: its work counts as this attempt's too,
    // measured from where the task started (read only when it matters: one git process).
    let startOf: Promise<string> | undefined;
    const taskStart = () => (startOf ??= wt!.trailer(work.baseCommit!, CHECKPOINT_TRAILER).then((t) => t ?? work.baseCommit!, () => work.baseCommit!));
    if (agent.needsWorktree) {
      if (!work.repo || !work.baseCommit) {
        return this.failed({ kind: "invalid", retryable: false, message: `agent '${agent.name}' needs a repository, and the run has none` });
      }
      // The user's repository when it is on this host, else a clone of the run's remote;
      // from here on `work.repo` names the repository the worktree belongs to.
      target = await ctx.access.resolve(work, work.baseCommit);
      work = { ...work, repo: target.dir };
      wt = ctx.worktrees.manager(work.repo!);
      ({ path: cwd } = await wt.add({
        name: taskWorktreeName(work.runId, work.taskId, work.judge ? "judge" : work.variant?.n),
        branch: work.branch,
        base: work.baseCommit!,
        lockReason: `ado task ${work.runId}/${work.taskId} attempt ${work.attempt} on ${ctx.workerId}`,
        owner: { runId: work.runId, taskId: work.taskId, workerId: ctx.workerId, attempt: work.attempt },
        // The next attempt of a task owns its branch: what an earlier one left there is
        // archived already (or is only an old base), and moves to this attempt's base.
        ownBranch: true,
      }));
      crashAt(CrashPoint.afterAdd);
      // The repository's branches before the agent runs, to tell the ones it makes.
      branchesBefore = await wt.branchNames();
      await ctx.worktrees.record(work, cwd, { state: "active", createdAt: new Date().toISOString() });
    }
    // ado's files for the agent: in the worktree's `.ado/` (never committed, never the
    // agent's work), or in a temporary directory when there is no worktree. Fan-in: what
    // the tasks this one needs produced (also in the environment). The prompt: always
    // as a file, in the environment only when small (a large one fails spawn: E2BIG).
    const adoDir = cwd ? join(cwd, WORKTREE_ADO_DIR) : await mkdtemp(join(tmpdir(), "ado-agent-"));
    await mkdir(adoDir, { recursive: true });
    let inputsFile = "";
    if (cwd) {
      inputsFile = join(adoDir, INPUTS_FILE);
      await writeFile(inputsFile, JSON.stringify(work.inputs, null, 2) + "\n");
    }
    // A best-of-N judge reads each candidate's change as a patch from the task's base.
    let variantsDir = "";
    if (work.judge && wt && cwd) {
      variantsDir = join(adoDir, "variants");
      await mkdir(variantsDir, { recursive: true });
      for (const c of work.judge.candidates) await writeFile(join(variantsDir, `${c.n}.diff`), await wt.diff(work.baseCommit!, c.commit));
    }
    const promptFile = join(adoDir, PROMPT_FILE);
    await writeFile(promptFile, work.task.prompt);
    const promptInEnv = Buffer.byteLength(work.task.prompt) <= PROMPT_ENV_MAX_BYTES;
    // Stored before the agent starts: should this worker die, the stealer tells from it
    // whether the agent had started (an attempt lost before costs the task nothing).
    // One round trip, no extra write. Not stored (the server unreachable): the agent
    // runs all the same, and a loss would be counted as one after the start.
    const agentCwd = taskDir(cwd, work.task);
    const env = {
      ...work.task.env,
      // No agent sees where the worker keeps providers' credentials...
      ...Object.fromEntries(ctx.credentialHolders.map((name) => [name, ""])),
      // ...and a provider's agent gets its own credential, under the name its CLI reads.
      ...(work.provider ? this.providerEnv(work.provider) : {}),
      [AgentEnv.runId]: work.runId,
      [AgentEnv.taskId]: work.taskId,
      ...(promptInEnv ? { [AgentEnv.prompt]: work.task.prompt } : {}),
      [AgentEnv.promptFile]: promptFile,
      [AgentEnv.attempt]: String(work.attempt),
      [AgentEnv.workerId]: ctx.workerId,
      [AgentEnv.branch]: work.branch,
      ...(work.variant ? { [AgentEnv.variant]: String(work.variant.n), [AgentEnv.variants]: String(work.variant.of) } : {}),
      ...(variantsDir ? { [AgentEnv.variantsDir]: variantsDir } : {}),
      [AgentEnv.inputs]: JSON.stringify(work.inputs),
      [AgentEnv.inputsFile]: inputsFile,
      // Git run by the agent itself ignores what the include list copied in (.env).
      ...(wt && cwd ? await wt.agentGitEnv(cwd).catch(() => ({})) : {}),
    };
    // An agent CLI with sessions, in a worktree: its work is checkpointed while it runs
    // (and at an interruption), and an earlier attempt's session is resumed.
    const place = agent.sessions && agentCwd ? { cwd: agentCwd, env: agent.sessions.placeEnv(env) } : undefined;
    const resumed = await this.prepareResume(agent, place);
    // Not for a variant: checkpoints are kept per task, and its variants run at once.
    const checkpointer =
      place && wt && cwd && !work.variant
        ? new Checkpointer({ workerId: ctx.workerId, log: ctx.log, store: ctx.checkpoints, emit: ctx.emit, work, agent, wt, cwd, place, target: target!, taskStart })
        : undefined;
    const started = { type: "task.started" as const, runId: work.runId, taskId: work.taskId, attempt: work.attempt, at: startedAt, workerId: ctx.workerId };
    await ctx
      .emit({ ...started, branch: cwd ? work.branch : undefined, worktree: cwd, agent: agent.name, ...(resumed.resume ? { resumed: resumed.resume } : {}) })
      .catch((err) => ctx.log.warn({ task: work.taskId, err: errorMessage(err) }, "task.started event not stored"));
    if (checkpointer && ctx.checkpointIntervalMs > 0) checkpointer.start(ctx.checkpointIntervalMs);
    const maxCost = work.task.maxCost;
    let outcome = await agent
      .run({
        // The task's own `cwd:` (a subdirectory) and `env:` from its graph; ado's variables win.
        cwd: agentCwd,
        env,
        task: resumed.prompt === work.task.prompt ? work.task : { ...work.task, prompt: resumed.prompt },
        signal: this.abort.signal,
        suspender: this.suspender,
        onOutput,
        onEvent: (e, seq) => this.onAgentEvent(e, seq),
        onSession: (id) => {
          this.sessionId = id;
          if (checkpointer) checkpointer.sessionId = id;
        },
        ...(resumed.resume ? { resume: resumed.resume } : {}),
        // The task's cap, for CLIs that enforce one (the others ignore it; see SELF_CAPPED).
        ...(maxCost !== undefined ? { options: { maxBudgetUsd: maxCost } } : {}),
      })
      .finally(async () => {
        await checkpointer?.stop();
        if (!cwd) await rm(adoDir, { recursive: true, force: true });
      });
    this.agentSummary = outcome.summary;
    // A session asked for and not found is not carried on: the next attempt starts afresh.
    this.sessionId = outcome.sessionLost ? undefined : (outcome.sessionId ?? this.sessionId);
    if (checkpointer) checkpointer.sessionId = this.sessionId;
    const reported = spendOf(outcome);
    this.spend = { usd: Math.max(this.spend.usd, reported.usd), tokens: Math.max(this.spend.tokens, reported.tokens) };
    // Stopped for its cost: a budget failure (not a cancel). One that finished before the stop took stands.
    if (this.overCap && !outcome.ok) outcome = { ok: false, failure: { kind: "budget", retryable: false, message: this.overCap } };
    if (!wt || !cwd) return outcome.ok ? this.succeeded() : this.failed(outcome.failure!);
    await rm(join(cwd, WORKTREE_ADO_DIR), { recursive: true, force: true });
    const base = work.baseCommit!;
    const ref = attemptRef(work.runId, work.taskId, work.attempt);
    if (work.judge) return this.afterJudge(work, wt, cwd, ref, outcome);

    // What the agent did with git itself: commits on the task branch, on a branch of its
    // own, a detached HEAD; lands on the task branch when that is unambiguous.
    const facts = await wt.attemptGit(cwd, { branch: work.branch, base, before: branchesBefore! });
    const clean = facts.head === base && facts.headBranch === work.branch && facts.strays.some((b) => !b.inHead) ? !(await wt.hasChanges(cwd)) : undefined;
    const branches = planBranches({ ...facts, branch: work.branch, base, clean });
    const plan = planAfterAgent({ end: outcome.ok ? { ok: true } : { ok: false, failure: outcome.failure! }, worktree: true, remote: !!target?.remote, branches, attemptRef: ref });
    if (plan.kind !== "archive" && branches.kind === "land") {
      await wt.landOnTaskBranch(cwd, { branch: work.branch, from: branches.from, to: branches.to, fastForward: branches.fastForward });
      ctx.log.info({ task: work.taskId, to: branches.to }, branches.what);
    }
    // The agent's branches go once their commits are safe: on the task branch (`keptBy`), else archived first.
    // `headMoved`: HEAD stayed on the agent's branch and ado's commit went there (an archive).
    const dropStrays = async (keptBy: string | undefined, headMoved = false) => {
      const strays = facts.strays.map((b) => (headMoved && b.branch === facts.headBranch && keptBy ? { ...b, tip: keptBy } : b));
      if (strays.length === 0) return;
      const { deleted, archived } = await wt.dropStrayBranches(strays, { keptBy, archiveRef: (name) => strayBranchRef(work.runId, work.taskId, work.attempt, name) });
      ctx.log.info({ task: work.taskId, deleted, archived }, "branches the agent made removed (their commits are kept)");
    };

    if (plan.kind === "checkpoint") {
      // The work so far is committed on the task branch, and the next attempt starts
      // from that commit instead of from scratch.
      // Always a commit of ado's when there is work (the agent's own commits, or an earlier
      // checkpoint), so the trailer tells the next attempt where the task started.
      const start = await taskStart();
      const hasWork = start !== base || facts.head !== base || branches.kind === "land" || (await wt.hasChanges(cwd));
      const c = await wt.commitAll(cwd, {
        message: `ado: ${work.taskId} checkpoint (attempt ${work.attempt} interrupted)\n\n${CHECKPOINT_TRAILER}: ${start}`,
        allowEmpty: hasWork,
      });
      const changed = c.commit !== base;
      if (changed) await ctx.access.publishBranch(target!, c.commit, work.branch);
      await wt.remove(cwd, { force: true });
      await dropStrays(c.commit);
      await ctx.worktrees.record(work, cwd, { state: "removed", commit: c.commit, reason: "interrupted: the work so far is committed on the branch (checkpoint)" });
      if (checkpointer) {
        // The session goes with it: the next attempt resumes it, on whichever host.
        await checkpointer.final(c.commit, work.branch, "worker shutting down").catch((err) => ctx.log.warn({ task: work.taskId, err: errorMessage(err) }, "the interrupted attempt's session was not stored"));
      } else if (changed) {
        await ctx
          .emit({ type: "task.checkpoint", runId: work.runId, taskId: work.taskId, attempt: work.attempt, at: new Date().toISOString(), workerId: ctx.workerId, commit: c.commit, reason: "worker shutting down" })
          .catch(() => undefined);
      }
      return { ...this.failed(outcome.failure!), branch: work.branch, commit: c.commit };
    }
    if (plan.kind === "archive") {
      const kept = await this.keepFailedAttempt(wt, cwd, work);
      // The agent's commits on the task branch that HEAD did not hold (it was elsewhere)
      // are kept too, and the branch goes back to its base.
      const taskTip = facts.taskTip;
      if (kept.state !== "kept" && taskTip && taskTip !== base && !facts.taskInHead) {
        await wt.dropStrayBranches([{ branch: work.branch, tip: taskTip }], { archiveRef: (name) => strayBranchRef(work.runId, work.taskId, work.attempt, name) });
      }
      if (kept.state !== "kept") await dropStrays(kept.commit, true);
      // Remote mode: the failed attempt's work is kept on the remote too (best effort).
      if (target!.remote && kept.archiveRef && kept.commit) {
        await pushRef(work.repo!, target!.remote, kept.commit, kept.archiveRef).catch((err) =>
          ctx.log.warn({ task: work.taskId, err: errorMessage(err) }, "failed attempt archived here, but not pushed"),
        );
      }
      await ctx.worktrees.record(work, cwd, kept);
      ctx.worktrees.cleanupSoon(wt, work.repo!);
      return this.failed(plan.failure);
    }
    const commit = await wt.commitAll(cwd, { message: commitMessage(work) });
    // The agent's own commits are its work too, and so is a checkpoint the attempt started
    // from: "changed" is the branch against where the task started.
    const from = commit.commit === base ? await taskStart() : base;
    const changed = commit.commit !== from;
    const files = !changed ? [] : from === base && facts.taskTip === base && branches.kind === "asIs" ? commit.files : await wt.filesBetween(from, commit.commit);
    const next = afterCommit({ changed, remote: !!target!.remote });
    // A variant of a best-of-N task: its work is kept under its variant ref and judged by
    // the task's select command here, in its own worktree, while that still exists.
    const check = work.variant ? await this.checkVariant(work, wt, agentCwd ?? cwd, commit.commit, target!.remote) : undefined;
    // A variant's worktree goes now, winner or not: the merge needs only its commit, and
    // nobody would remove a loser's.
    const keep = next.kind === "keepForMerge" && !check;
    // Remote mode: the branch goes to the remote, where the merge coordinator takes it
    // from, and the worktree goes now (no merger on another host could remove it).
    if (next.kind === "pushAndRemove") await ctx.access.publishBranch(target!, commit.commit, work.branch);
    if (!keep) await wt.remove(cwd);
    await dropStrays(commit.commit);
    await ctx.worktrees.record(
      work,
      cwd,
      next.kind === "pushAndRemove"
        ? { state: "removed", commit: commit.commit, reason: `pushed to ${target!.remote}` }
        : keep
          ? { state: "committed", commit: commit.commit }
          : check
            ? { state: "removed", commit: commit.commit, reason: `variant ${work.variant!.n}: its work is kept under ${check.ref}` }
            : { state: "removed", commit: commit.commit, reason: "no changes" },
    );
    if (keep) crashAt(CrashPoint.afterCommit);
    ctx.worktrees.cleanupSoon(wt, work.repo!);
    if (check && this.abort.signal.aborted) return this.failed({ kind: "cancelled", retryable: false, message: `cancelled while its select command ran (its work is kept under ${check.ref})` });
    return { ...this.succeeded(), branch: work.branch, commit: commit.commit, files, worktree: keep ? cwd : undefined, ...(check ? { variant: check } : {}) };
  }

  /**
   * A failed attempt's changes are committed and kept under
   * `refs/ado/attempts/<run>/<task>/<attempt>`; the task branch goes back to its base so
   * the next attempt starts clean. Nothing the agent wrote is lost.
   */
  private async keepFailedAttempt(wt: WorktreeManager, cwd: string, work: TaskWork): Promise<WorktreeUpdate> {
    const ref = attemptRef(work.runId, work.taskId, work.attempt);
    try {
      const kept = await wt.archiveAttempt(cwd, {
        ref,
        branch: work.branch,
        base: work.baseCommit!,
        message: `ado: ${work.taskId} attempt ${work.attempt} failed (work in progress)`,
      });
      return kept.archived
        ? { state: "archived", archiveRef: ref, commit: kept.commit, reason: `attempt ${work.attempt} failed` }
        : { state: "removed", reason: `attempt ${work.attempt} failed with no changes` };
    } catch (err) {
      this.ctx.log.warn({ task: work.taskId, err: errorMessage(err) }, "could not archive a failed attempt; its worktree is kept");
      return { state: "kept", reason: `attempt ${work.attempt} failed and its work could not be archived: ${errorMessage(err)}` };
    }
  }

  /**
   * How the agent goes on from an earlier attempt's checkpoint (`work.resume`): in the same
   * session when its CLI resumes sessions and the session is here (restored from the
   * checkpoint's copy: the files a checkpoint stored match its commit, which is this
   * attempt's base), else in a new session told where the work stands (an agent without
   * sessions, aider, too; the shell agent runs its command and ignores the prompt).
   */
  private async prepareResume(agent: Agent, place: SessionPlace | undefined): Promise<{ resume?: string; prompt: string }> {
    const { ctx, work } = this;
    const r = work.resume;
    const prompt = work.task.prompt;
    if (!r) return { prompt };
    const sessions = agent.sessions;
    if (sessions && place && sessions.resumable && r.sessionId) {
      const record = await ctx.checkpoints.get(work.runId, work.taskId).catch((err) => {
        ctx.log.warn({ task: work.taskId, err: errorMessage(err) }, "checkpoint record not read");
        return undefined;
      });
      const ours = record && record.attempt === r.fromAttempt && record.sessionId === r.sessionId ? record : undefined;
      let restored = false;
      if (ours?.session && sessions.portable) {
        try {
          const data = await ctx.checkpoints.loadSession(ours);
          if (data) restored = (await sessions.unpack(data, place)).files > 0;
        } catch (err) {
          ctx.log.warn({ task: work.taskId, err: errorMessage(err) }, "the stored session could not be restored; the agent starts a new one");
        }
      }
      // Not restored, but made on this host and home: the CLI finds it where it left it.
      if (restored || ours?.sessionHost === sessionHost(place)) {
        ctx.log.info({ task: work.taskId, session: r.sessionId, restored }, "resuming the agent's session");
        return { resume: r.sessionId, prompt: continuation(work, r.commit) + prompt };
      }
    }
    return { prompt: continuation(work, r.commit, true) + prompt };
  }

  /**
   * A best-of-N variant's work, committed: kept under its variant ref (whether it wins or
   * not), then the task's select command run where its agent ran: `validate` passes on
   * exit 0; `score` gives the last number on its last line (none when it fails).
   */
  private async checkVariant(work: TaskWork, wt: WorktreeManager, dir: string, commit: string, remote: string | undefined): Promise<VariantCheck> {
    const { n, of } = work.variant!;
    const ref = variantRef(work.runId, work.taskId, n);
    await wt.setRef(ref, commit, `ado: ${work.taskId} variant ${n} of ${of} (attempt ${work.attempt})`);
    // Remote mode: kept on the remote too (best effort, as a failed attempt's archive).
    if (remote) {
      await pushRef(work.repo!, remote, commit, ref).catch((err) => this.ctx.log.warn({ task: work.taskId, err: errorMessage(err) }, "variant kept here, but its ref not pushed"));
    }
    const select = work.task.select;
    const command = select && selectCommand(select);
    if (!select || !command) return { n, ref, detail: "" };
    const r = await runShell(command, {
      cwd: dir,
      timeoutMs: select.timeoutMs,
      signal: this.abort.signal,
      env: {
        [AgentEnv.runId]: work.runId,
        [AgentEnv.taskId]: work.taskId,
        [AgentEnv.attempt]: String(work.attempt),
        [AgentEnv.branch]: work.branch,
        [AgentEnv.variant]: String(n),
        [AgentEnv.variants]: String(of),
      },
    });
    const why = r.timedOut ? `\n[timed out after ${Math.round(select.timeoutMs / 1000)} s]` : r.exitCode === null && !r.aborted ? "\n[could not run]" : "";
    const detail = (r.output.slice(-2_000) + why).trim();
    this.ctx.log.info({ task: work.taskId, variant: n, exitCode: r.exitCode, timedOut: r.timedOut }, "variant's select command ran");
    if (selectRule(select) === "validate") return { n, ref, passed: r.exitCode === 0, detail };
    const score = r.exitCode === 0 ? parseScore(r.output) : undefined;
    return { n, ref, ...(score !== undefined ? { score } : {}), detail };
  }

  /**
   * A judge's attempt ended: its verdict is the number its final message ends with. What
   * it changed is never the task's work: kept under its attempt ref (nothing is lost),
   * then its worktree goes.
   */
  private async afterJudge(work: TaskWork, wt: WorktreeManager, cwd: string, ref: string, outcome: AgentOutcome): Promise<Outcome> {
    if (await wt.hasChanges(cwd)) {
      await wt.archive(cwd, ref, `ado: ${work.taskId} judge (attempt ${work.attempt}): its edits, not the task's work`).catch((err) =>
        this.ctx.log.warn({ task: work.taskId, err: errorMessage(err) }, "the judge's edits were not archived"),
      );
    }
    await wt.remove(cwd, { force: true });
    await this.ctx.worktrees.record(work, cwd, { state: "removed", reason: "the judge's worktree (its verdict is in the result)" });
    if (!outcome.ok) return this.failed(outcome.failure!);
    const judged = parseScore(outcome.summary ?? "");
    return { ...this.succeeded(), ...(judged !== undefined ? { judged } : {}) };
  }

  private providerEnv(provider: ProviderAssignment): Record<string, string> {
    const { env, missing } = providerEnvironment(provider, process.env);
    if (missing) this.ctx.log.warn({ task: this.work.taskId, provider: provider.name, variable: missing }, "the provider's credential variable is not set on this worker");
    return env;
  }

  private succeeded() {
    const w = this.work;
    return { type: "task.result" as const, runId: w.runId, taskId: w.taskId, attempt: w.attempt, workerId: this.ctx.workerId, status: "succeeded" as const, files: [] as string[] };
  }

  private failed(failure: TaskFailure) {
    return { ...this.succeeded(), status: "failed" as const, failure };
  }
}

/** What an agent resuming an interrupted attempt is told before the task's prompt. */
function continuation(work: TaskWork, commit: string | undefined, newSession = false): string {
  const where = commit ? ` (checkpoint commit ${commit.slice(0, 12)})` : "";
  return newSession
    ? `[ado] An earlier attempt at this task (attempt ${work.resume!.fromAttempt}) was interrupted. Its work so far is already in this worktree${where}: review it and carry on from there rather than starting over. The task:\n\n`
    : `[ado] You were interrupted (attempt ${work.resume!.fromAttempt} of this task stopped). The worktree holds your work as of the last checkpoint${where}, which may be a little behind this conversation: check it, then continue the task where you left off. The task:\n\n`;
}

/** TEST ONLY (names.ts TEST_CRASH_ENV): the worker dies here, as a SIGKILL would kill it. */
function crashAt(step: CrashPoint): void {
  if (process.env[TEST_CRASH_ENV] === step) process.kill(process.pid, "SIGKILL");
}

/** The message of a succeeded attempt's commit: the task, the run, and its prompt (cut when long). */
export function commitMessage(work: Pick<TaskWork, "taskId" | "runId" | "task">): string {
  return withPrompt(`ado: ${work.taskId} (run ${work.runId})`, work.task.prompt);
}
