import { mkdir, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode, encodeValue } from "../../runtime/codec.js";
import { AdoError, errorMessage } from "../../runtime/errors.js";
import { publishEvent } from "../../runtime/events.js";
import {
  applyCleanup,
  type GitAccess,
  planCleanup,
  pushRef,
  RepoAccess,
  type RepoTarget,
  WorktreeManager,
  type WorktreesConfig,
  type WorktreeRecord,
} from "../../git/index.js";
import { WorktreeRegistry } from "../../runtime/worktree-registry.js";
import type { WorkerId } from "../../runtime/ids.js";
import { SCHEMAS, type TaskFailure, type TaskResult, type TaskWork, type WorkerRecord } from "../../runtime/messages.js";
import { Signal } from "../../runtime/mutex.js";
import { consumers, WORKER_ACK_WAIT_MS, workerConsumer } from "../../runtime/topology.js";
import { type Agent, builtinAgents, type OutputStream, type StopReason, Suspender, taskDir } from "../../agents/index.js";
import { ControlView } from "../../runtime/control.js";
import { OutputBuffer } from "./output.js";
import { AgentEnv, attemptKey, attemptRef, msgIds } from "../../runtime/names.js";
import { requeueWork } from "../../runtime/requeue.js";
import { sleep } from "../../runtime/clock.js";
import { Backoff, retry } from "../../runtime/retry.js";

export interface WorkerOptions {
  workerId: WorkerId;
  /** Tasks run at once. The worker pulls only while a slot is free. */
  slots: number;
  heartbeatMs: number;
  /** Base directory for task worktrees. */
  worktreeDir: string;
  /** Include list, dependency dirs and cleanup policy of task worktrees (config `worktrees`). */
  worktrees?: WorktreesConfig;
  agents?: Map<string, Agent>;
  /** Placement labels (e.g. `local`, `process`, `remote`, `gpu`); tasks select workers by them. */
  labels?: string[];
  capabilities?: string[];
  accessMode?: WorkerRecord["accessMode"];
  costPerTask?: number;
  /** How long the server waits for an ack before redelivering; in-progress acks keep it alive. */
  ackWaitMs?: number;
  /** How this host reaches runs' repositories (config `git`): shared disk, clones of a remote, or auto. */
  gitAccess?: GitAccess;
  /** Where clones of runs' remotes go; default defaultCloneDir(). */
  cloneDir: string;
}

/** What became of a task's worktree, for its registry record. */
type WorktreeUpdate = Pick<WorktreeRecord, "state"> & Partial<Pick<WorktreeRecord, "commit" | "archiveRef" | "reason">>;

interface Running {
  work: TaskWork;
  msg: JsMsg;
  abort: AbortController;
  suspender: Suspender;
  done: Promise<void>;
}

/**
 * A stateless worker: pulls work from its own subject when it has a free slot, claims
 * the attempt in KV (create-only, so exactly one worker runs an attempt), runs the
 * agent in a worktree on the task's branch, streams output as events, commits, reports
 * the result to the scheduler and acks. Its registry record (slots, load, heartbeat)
 * lives in KV; the balancer reads it.
 */
export class Worker extends Actor {
  private consumer?: Consumer;
  private readonly active = new Map<string, Running>();
  private readonly agents: Map<string, Agent>;
  private readonly worktrees = new Map<string, WorktreeManager>();
  /** The user's repository or this host's clone of the run's remote, per run (remote.ts). */
  private readonly access: RepoAccess;
  /** When the cleanup policy last ran, per repository's manager (cleanupSoon). */
  private readonly lastCleanup = new Map<WorktreeManager, number>();
  private requested = 0;
  private pending = 0;
  private finishedSinceReport: string[] = [];
  /**
   * Goes up on every start and finish. The heartbeat record and the load report both
   * carry it, so the balancer can tell which of the two (sent on separate paths) is newer.
   */
  private loadSeq = 0;
  private readonly wake = new Signal();
  private readonly fetches = new Set<ConsumerMessages>();
  private heartbeat?: NodeJS.Timeout;
  private pulling?: Promise<void>;
  private readonly startedAt = new Date().toISOString();
  /** Results already produced, by attempt key, so a redelivery re-sends instead of re-running. */
  private readonly results = new Map<string, TaskResult>();
  private completed = 0;
  private control!: ControlView;

  constructor(
    ctx: ActorContext,
    private readonly opts: WorkerOptions,
  ) {
    super("worker", opts.workerId, ctx);
    this.agents = opts.agents ?? builtinAgents();
    this.access = new RepoAccess(opts.gitAccess ?? "auto", opts.cloneDir, ctx.logger);
  }

  get id(): WorkerId {
    return this.opts.workerId;
  }

  protected async onStart(): Promise<void> {
    const { topo } = this.ctx;
    const jsm = await this.js.jetstreamManager();
    await jsm.consumers.add(topo.streams.work.name, workerConsumer(topo, this.id, this.ackWaitMs));
    this.consumer = await this.js.consumers.get(topo.streams.work.name, consumers.work(this.id));
    this.control = new ControlView(this.ctx.kv.control, this.log, () => this.applyControl(), this.ctx.nc);
    await this.control.start();
    await this.register("running");
    this.heartbeat = setInterval(() => void this.beat(), Math.min(this.opts.heartbeatMs, this.ackWaitMs / 3));
    this.pulling = this.pullLoop();
  }

  protected async onDrain(force: AbortSignal): Promise<void> {
    // Stop pulling first, so the balancer stops routing here while tasks finish.
    await this.register("draining").catch(() => undefined);
    this.wake.notify();
    for (const f of this.fetches) f.stop();
    // Past the grace period, what still runs is interrupted: checkpointed on its branch
    // and handed back, to resume on another worker.
    const interruptAll = () => {
      for (const r of this.active.values()) r.abort.abort("interrupted" satisfies StopReason);
    };
    force.addEventListener("abort", interruptAll, { once: true });
    await Promise.all([...this.active.values()].map((r) => r.done));
    await this.pulling;
    await this.handBackQueued();
    // A cleanup pass under way finishes (each step is safe to interrupt, but a finished
    // pass leaves nothing half-reported in the registry).
    await this.cleaning;
    this.control?.stop();
    clearInterval(this.heartbeat);
    await this.ctx.kv.workers.delete(this.id).catch(() => undefined);
  }

  /**
   * Work already on this worker's subject that it will not run goes back to the ready
   * queue, so another worker takes it now rather than when this one comes back.
   */
  private async handBackQueued(): Promise<void> {
    for (;;) {
      const batch = await this.consumer!.fetch({ max_messages: 100, expires: 1_000 }).catch(() => undefined);
      if (!batch) return;
      let got = 0;
      for await (const m of batch) {
        got++;
        try {
          const work = decode(SCHEMAS.TaskWork, m.data, m.headers);
          await requeueWork(this.js, this.ctx.topo, work, msgIds.handBack(work, this.id));
          await m.ackAck();
        } catch (err) {
          this.log.warn({ subject: m.subject, err: errorMessage(err) }, "could not hand back queued work; it stays on this worker's subject");
          m.nak();
        }
      }
      if (got === 0) return;
    }
  }

  /** Acts on the control bucket: cancel, pause or resume what runs here. */
  private applyControl(): void {
    for (const r of this.active.values()) {
      const state = this.control.stateOf(r.work.runId, r.work.taskId);
      const at = new Date().toISOString();
      const base = { runId: r.work.runId, taskId: r.work.taskId, attempt: r.work.attempt, at, workerId: this.id };
      if (state === "cancelled") r.abort.abort("cancelled" satisfies StopReason);
      else if (state === "paused" && r.suspender.pause()) void this.emit({ type: "task.paused", ...base }).catch(() => undefined);
      else if (state === "running" && r.suspender.resume()) void this.emit({ type: "task.resumed", ...base }).catch(() => undefined);
    }
  }

  override stats() {
    return { slots: this.opts.slots, running: this.active.size, pending: this.pending, completed: this.completed };
  }

  private get ackWaitMs(): number {
    return this.opts.ackWaitMs ?? WORKER_ACK_WAIT_MS;
  }

  /**
   * Pulls with credits: never more requested from the server than free slots, so work
   * beyond capacity stays in the stream where it can be seen and moved.
   */
  private async pullLoop(): Promise<void> {
    while (this.isRunning) {
      const free = this.opts.slots - this.runningCount - this.requested;
      if (free <= 0) {
        await this.wake.wait();
        continue;
      }
      this.requested += free;
      let batch: ConsumerMessages;
      try {
        batch = await this.consumer!.fetch({ max_messages: free, expires: 5_000 });
      } catch (err) {
        this.requested -= free;
        if (!this.isRunning) break;
        this.log.warn({ err: errorMessage(err) }, "fetch failed; retrying");
        await sleep(500);
        continue;
      }
      this.fetches.add(batch);
      void (async () => {
        let got = 0;
        try {
          for await (const m of batch) {
            got++;
            this.requested--;
            this.pending = m.info.pending;
            this.accept(m);
          }
        } catch (err) {
          this.log.debug({ err: errorMessage(err) }, "fetch ended with an error");
        } finally {
          this.fetches.delete(batch);
          this.requested -= free - got;
          this.wake.notify();
        }
      })();
    }
  }

  private get runningCount(): number {
    return this.active.size;
  }

  private accept(m: JsMsg): void {
    if (!this.isRunning) {
      m.nak(); // draining: hand it back untouched
      return;
    }
    let work: TaskWork;
    try {
      work = decode(SCHEMAS.TaskWork, m.data, m.headers);
    } catch (err) {
      void this.deadLetters.recordAndAck(m, errorMessage(err));
      return;
    }
    const key = attemptKey(work);
    if (this.active.has(key)) return; // a redelivery of what we are running: keep going
    if (this.control.stateOf(work.runId, work.taskId) === "cancelled") {
      m.ack(); // the scheduler already counts it cancelled: nothing to run or report
      return;
    }
    const abort = new AbortController();
    const suspender = new Suspender();
    // Paused before it started: it starts paused, and the slot waits with it.
    if (this.control.stateOf(work.runId, work.taskId) === "paused") suspender.pause();
    const entry: Running = { work, msg: m, abort, suspender, done: Promise.resolve() };
    this.active.set(key, entry);
    this.loadSeq++;
    entry.done = this.execute(key, work, m, abort.signal, suspender)
      .catch((err) => this.log.error({ key, err: errorMessage(err) }, "task execution failed"))
      .finally(() => {
        this.active.delete(key);
        this.loadSeq++;
        this.finishedSinceReport.push(key);
        this.reportLoad();
        this.wake.notify();
      });
  }

  private async execute(key: string, work: TaskWork, m: JsMsg, signal: AbortSignal, suspender: Suspender): Promise<void> {
    const claimed = await this.claim(key);
    if (!claimed) {
      // Another worker holds this attempt: ours is a duplicate delivery.
      m.ack();
      return;
    }
    const done = this.results.get(key);
    if (done) {
      // We ran it, but the ack was lost: send the result again (deduplicated), never re-run.
      await this.publishResult(key, done);
      m.ack();
      return;
    }
    const startedAt = new Date().toISOString();
    const output = new OutputBuffer((stream, data) =>
      this.emit({ type: "task.output", runId: work.runId, taskId: work.taskId, attempt: work.attempt, at: new Date().toISOString(), stream, data }),
    );
    let result: Omit<TaskResult, "startedAt" | "finishedAt" | "outputTail" | "summary" | "costUsd">;
    try {
      result = await this.runAttempt(work, startedAt, signal, suspender, (s: OutputStream, d: string) => output.push(s, d));
    } catch (err) {
      result = this.failed(work, {
        kind: err instanceof AdoError && !err.retryable ? "git" : "internal",
        retryable: err instanceof AdoError ? err.retryable : true,
        message: errorMessage(err),
      });
    }
    output.flush();
    await output.settled(); // output events are stored before the result that ends the task
    const tail = output.tail();
    const summary = tail.trimEnd().split("\n").pop()?.slice(0, 500) ?? "";
    const full: TaskResult = { ...result, startedAt, finishedAt: new Date().toISOString(), outputTail: tail, summary, costUsd: 0 };
    this.remember(key, full);
    await this.publishResult(key, full);
    m.ack();
    this.completed++;
  }

  /**
   * Publishes a result, retrying while the server is unreachable: the attempt is done
   * and its outcome must reach the scheduler. The msg id makes repeats harmless.
   */
  private async publishResult(key: string, result: TaskResult): Promise<void> {
    const { data, headers } = encode(SCHEMAS.SchedulerInput, result);
    // Past the last try the message stays unacked, and its redelivery re-sends.
    await retry(() => this.js.publish(this.ctx.topo.subjects.results(result.runId), data, { headers, msgID: msgIds.result(result) }), {
      attempts: 10,
      backoff: Backoff.server,
      onRetry: (err, attempt) => this.log.warn({ key, attempt, err: errorMessage(err) }, "result not stored yet; retrying"),
    });
  }

  private remember(key: string, result: TaskResult): void {
    this.results.set(key, result);
    // Bounded: a redelivery comes within ack_wait, long before 1,000 newer results.
    if (this.results.size > 1_000) this.results.delete(this.results.keys().next().value!);
  }

  private async runAttempt(
    work: TaskWork,
    startedAt: string,
    signal: AbortSignal,
    suspender: Suspender,
    onOutput: (s: OutputStream, d: string) => void,
  ): Promise<Omit<TaskResult, "startedAt" | "finishedAt" | "outputTail" | "summary" | "costUsd">> {
    const agent = this.agents.get(work.task.agent);
    if (!agent) {
      return this.failed(work, {
        kind: "agent_missing",
        retryable: false,
        message: `agent '${work.task.agent}' is not available on worker ${this.id} (it has: ${[...this.agents.keys()].join(", ")})`,
      });
    }
    let cwd: string | undefined;
    let wt: WorktreeManager | undefined;
    let target: RepoTarget | undefined;
    if (agent.needsWorktree) {
      if (!work.repo || !work.baseCommit) {
        return this.failed(work, { kind: "invalid", retryable: false, message: `agent '${agent.name}' needs a repository, and the run has none` });
      }
      // The user's repository when it is on this host, else a clone of the run's remote;
      // from here on `work.repo` names the repository the worktree belongs to.
      target = await this.access.resolve(work, work.baseCommit);
      work = { ...work, repo: target.dir };
      wt = this.worktreeManager(work.repo!);
      ({ path: cwd } = await wt.add({
        name: `${work.runId}/${work.taskId}`,
        branch: work.branch,
        base: work.baseCommit!,
        lockReason: `ado task ${work.runId}/${work.taskId} attempt ${work.attempt} on ${this.id}`,
        owner: { runId: work.runId, taskId: work.taskId, workerId: this.id },
      }));
      await this.recordWorktree(work, cwd, { state: "active", createdAt: new Date().toISOString() });
    }
    // Fan-in: what the tasks this one needs produced, as a file in its worktree (never
    // committed: removed before the commit) and in its environment.
    let inputsFile = "";
    if (cwd) {
      await mkdir(join(cwd, ".ado"), { recursive: true });
      inputsFile = join(cwd, ".ado", "inputs.json");
      await writeFile(inputsFile, JSON.stringify(work.inputs, null, 2) + "\n");
    }
    // Not awaited: the agent starts now. The event is stored before the result, which
    // goes out later on the same connection and is awaited (see execute()).
    const announced = this.emit({
      type: "task.started",
      runId: work.runId,
      taskId: work.taskId,
      attempt: work.attempt,
      at: startedAt,
      workerId: this.id,
      branch: cwd ? work.branch : undefined,
      worktree: cwd,
    });
    announced.catch((err) => this.log.warn({ task: work.taskId, err: errorMessage(err) }, "task.started event not stored"));
    const outcome = await agent.run({
      // The task's own `cwd:` (a subdirectory) and `env:` from its graph; ado's variables win.
      cwd: taskDir(cwd, work.task),
      env: {
        ...work.task.env,
        [AgentEnv.runId]: work.runId,
        [AgentEnv.taskId]: work.taskId,
        [AgentEnv.prompt]: work.task.prompt,
        [AgentEnv.attempt]: String(work.attempt),
        [AgentEnv.workerId]: this.id,
        [AgentEnv.branch]: work.branch,
        [AgentEnv.inputs]: JSON.stringify(work.inputs),
        [AgentEnv.inputsFile]: inputsFile,
        // Git run by the agent itself ignores what the include list copied in (.env).
        ...(wt && cwd ? await wt.agentGitEnv(cwd).catch(() => ({})) : {}),
      },
      task: work.task,
      signal,
      suspender,
      onOutput,
    });
    if (!wt || !cwd) return outcome.ok ? this.succeeded(work) : this.failed(work, outcome.failure!);
    await rm(join(cwd, ".ado"), { recursive: true, force: true });

    if (!outcome.ok && outcome.failure!.kind === "interrupted") {
      // Checkpoint: the work so far is committed on the task branch, and the next
      // attempt starts from that commit instead of from scratch.
      const c = await wt.commitAll(cwd, { message: `ado: ${work.taskId} checkpoint (attempt ${work.attempt} interrupted)` });
      if (c.changed) await this.access.publishBranch(target!, c.commit, work.branch);
      await wt.remove(cwd, { force: true });
      await this.recordWorktree(work, cwd, { state: "removed", commit: c.commit, reason: "interrupted: the work so far is committed on the branch (checkpoint)" });
      if (c.changed) {
        await this.emit({ type: "task.checkpoint", runId: work.runId, taskId: work.taskId, attempt: work.attempt, at: new Date().toISOString(), workerId: this.id, commit: c.commit, reason: "worker shutting down" }).catch(() => undefined);
      }
      return { ...this.failed(work, outcome.failure!), branch: work.branch, commit: c.commit };
    }
    if (!outcome.ok) {
      const kept = await this.keepFailedAttempt(wt, cwd, work);
      // Remote mode: the failed attempt's work is kept on the remote too (best effort).
      if (target!.remote && kept.archiveRef && kept.commit) {
        await pushRef(work.repo!, target!.remote, kept.commit, kept.archiveRef).catch((err) =>
          this.log.warn({ task: work.taskId, err: errorMessage(err) }, "failed attempt archived here, but not pushed"),
        );
      }
      await this.recordWorktree(work, cwd, kept);
      this.cleanupSoon(wt, work.repo!);
      return this.failed(work, outcome.failure!);
    }
    const commit = await wt.commitAll(cwd, { message: `ado: ${work.taskId} (run ${work.runId})\n\n${work.task.prompt}`.trim() });
    // Remote mode: the branch goes to the remote, where the merge coordinator takes it
    // from, and the worktree goes now (no merger on another host could remove it).
    const pushed = commit.changed && !!target!.remote;
    if (pushed) await this.access.publishBranch(target!, commit.commit, work.branch);
    if (!commit.changed || pushed) await wt.remove(cwd);
    await this.recordWorktree(
      work,
      cwd,
      pushed
        ? { state: "removed", commit: commit.commit, reason: `pushed to ${target!.remote}` }
        : commit.changed
          ? { state: "committed", commit: commit.commit }
          : { state: "removed", commit: commit.commit, reason: "no changes" },
    );
    this.cleanupSoon(wt, work.repo!);
    return { ...this.succeeded(work), branch: work.branch, commit: commit.commit, files: commit.files, worktree: commit.changed && !pushed ? cwd : undefined };
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
      this.log.warn({ task: work.taskId, err: errorMessage(err) }, "could not archive a failed attempt; its worktree is kept");
      return { state: "kept", reason: `attempt ${work.attempt} failed and its work could not be archived: ${errorMessage(err)}` };
    }
  }

  /**
   * Writes the task's worktree record in the registry (KV `worktrees`). Never fails the
   * task: the registry is for people and tools; git holds the truth.
   */
  private async recordWorktree(work: TaskWork, path: string, update: WorktreeUpdate & { createdAt?: string }): Promise<void> {
    const now = new Date().toISOString();
    try {
      await new WorktreeRegistry(this.ctx.kv.worktrees, this.log).update(
        work.runId,
        work.taskId,
        { ...update, attempt: work.attempt, workerId: this.id, updatedBy: `worker ${this.id}`, ...(update.state === "active" ? {} : { finishedAt: now }) },
        { runId: work.runId, taskId: work.taskId, repo: work.repo!, path, branch: work.branch, host: hostname(), createdAt: update.createdAt ?? now },
      );
    } catch (err) {
      this.log.warn({ task: work.taskId, err: errorMessage(err) }, "worktree registry not updated");
    }
  }

  /**
   * Applies the cleanup policy (worktrees.cleanupAfter / maxWorktrees) to the
   * repository's worktrees in the background, at most once a minute per repository:
   * finished worktrees past the policy are archived and removed; merged ones removed.
   * Never with force, never touching a worktree in use (see src/git/cleanup.ts).
   */
  private cleanupSoon(wt: WorktreeManager, repo: string): void {
    const policy = this.opts.worktrees;
    if (policy?.cleanupAfter === undefined && policy?.maxWorktrees === undefined) return;
    const last = this.lastCleanup.get(wt) ?? 0;
    if (Date.now() - last < 60_000) return;
    this.lastCleanup.set(wt, Date.now());
    const pass = (async () => {
      const registry = new WorktreeRegistry(this.ctx.kv.worktrees, this.log);
      const { records } = await registry.list().catch(() => ({ records: [] as WorktreeRecord[] }));
      const byPath = new Map(records.map((r) => [r.path, r]));
      const plan = planCleanup(await wt.inspect(), byPath, { cleanupAfterMs: policy.cleanupAfter, maxWorktrees: policy.maxWorktrees }, { now: new Date() });
      const done = await applyCleanup(wt, plan.filter((i) => i.action.kind !== "keep"), { registry, actor: `worker ${this.id} (cleanup policy)`, repo, logger: this.log });
      for (const d of done) if (d.result === "archived") this.log.info({ path: d.path, ref: d.archive?.ref }, "worktree past the cleanup policy archived and removed");
    })().catch((err) => this.log.warn({ err: errorMessage(err) }, "worktree cleanup policy not applied"));
    this.cleaning = Promise.all([this.cleaning, pass]).then(() => undefined);
  }

  /** The worktree cleanup pass under way, if any (cleanupSoon); awaited on shutdown. */
  private cleaning: Promise<void> = Promise.resolve();

  private worktreeManager(repo: string): WorktreeManager {
    let m = this.worktrees.get(repo);
    if (!m) {
      m = new WorktreeManager({ repo, baseDir: this.opts.worktreeDir, logger: this.log, include: this.opts.worktrees });
      this.worktrees.set(repo, m);
    }
    return m;
  }

  private succeeded(work: TaskWork) {
    return { type: "task.result" as const, runId: work.runId, taskId: work.taskId, attempt: work.attempt, workerId: this.id, status: "succeeded" as const, files: [] as string[] };
  }

  private failed(work: TaskWork, failure: TaskFailure) {
    return { ...this.succeeded(work), status: "failed" as const, failure };
  }

  /**
   * Claims the attempt by creating its key; only one worker can. True also when the
   * claim is already ours (a redelivery, or a create whose reply was lost).
   */
  private async claim(key: string): Promise<boolean> {
    try {
      await this.ctx.kv.claims.create(key, encodeValue(SCHEMAS.AttemptClaim, { workerId: this.id, claimedAt: new Date().toISOString() }));
      return true;
    } catch (err) {
      const existing = await this.ctx.kv.claims.get(key).catch(() => null);
      if (!existing || existing.operation !== "PUT") throw err; // not a lost race: a real failure
      return decode(SCHEMAS.AttemptClaim, existing.value).workerId === this.id;
    }
  }

  private emit(event: Parameters<typeof publishEvent>[2]) {
    return publishEvent(this.js, this.ctx.topo, event);
  }

  private record(state: WorkerRecord["state"]): WorkerRecord {
    return {
      workerId: this.id,
      host: hostname(),
      pid: process.pid,
      slots: this.opts.slots,
      running: this.runningCount,
      pending: this.pending,
      agents: [...this.agents.keys()],
      labels: this.opts.labels ?? [],
      capabilities: this.opts.capabilities ?? [],
      accessMode: this.opts.accessMode ?? "local",
      costPerTask: this.opts.costPerTask ?? 0,
      active: [...this.active.keys()],
      loadSeq: this.loadSeq,
      startedAt: this.startedAt,
      heartbeatAt: new Date().toISOString(),
      state,
    };
  }

  private async register(state: WorkerRecord["state"]): Promise<void> {
    await this.ctx.kv.workers.put(this.id, encodeValue(SCHEMAS.WorkerRecord, this.record(state)));
  }

  /** Heartbeat: registry record in KV, and in-progress acks so running work is not redelivered. */
  private async beat(): Promise<void> {
    for (const r of this.active.values()) r.msg.working();
    // A draining worker keeps beating (as draining), so the stealer never mistakes it
    // for a dead one while its last tasks finish.
    const state = this.state === "running" ? "running" : this.state === "draining" ? "draining" : undefined;
    if (!state) return;
    await this.register(state).catch((err) => this.log.warn({ err: errorMessage(err) }, "heartbeat failed"));
  }

  private reportLoad(): void {
    const finished = this.finishedSinceReport.splice(0);
    try {
      const { data, headers } = encode(SCHEMAS.WorkerLoad, {
        type: "worker.load",
        workerId: this.id,
        running: this.runningCount,
        finished,
        loadSeq: this.loadSeq,
      });
      this.ctx.nc.publish(this.ctx.topo.subjects.load(this.id), data, { headers });
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, "load report not sent");
    }
  }
}
