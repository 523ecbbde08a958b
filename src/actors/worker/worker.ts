import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import type { Msg, Subscription } from "@nats-io/transport-node";
import { Actor, type ActorContext } from "../../runtime/actor.js";
import { decode, encode, encodeValue } from "../../runtime/codec.js";
import { errorMessage } from "../../runtime/errors.js";
import { publishEvent } from "../../runtime/events.js";
import { type GitAccess, RepoAccess, type WorktreesConfig } from "../../git/index.js";
import type { WorkerId } from "../../runtime/ids.js";
import { SCHEMAS, type TaskResult, type TaskWork, type WorkerRecord } from "../../runtime/messages.js";
import { Signal } from "../../runtime/mutex.js";
import { consumers, WORKER_ACK_WAIT_MS, workerConsumer } from "../../runtime/topology.js";
import { type Agent, builtinAgents, type StopReason } from "../../agents/index.js";
import { ControlView } from "../../runtime/control.js";
import { Governor } from "../../runtime/governor/governor.js";
import { credentialHolders, type ProvidersConfig } from "../../runtime/providers.js";
import { attemptKey, msgIds } from "../../runtime/names.js";
import { requeueWork } from "../../runtime/requeue.js";
import { sleep } from "../../runtime/clock.js";
import { Backoff, retry } from "../../runtime/retry.js";
import { Attempt, type AttemptContext, ResultCache } from "./attempt.js";
import { CheckpointStore } from "../../runtime/checkpoints.js";

/** How often an agent CLI's work is checkpointed when the worker is given no interval. */
const DEFAULT_CHECKPOINT_INTERVAL_MS = 10 * 60_000;
import { WorkerPresence } from "./presence.js";
import { TaskWorktrees } from "./task-worktrees.js";
import { loadWork, PayloadStore } from "../../runtime/payloads.js";

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
  /** Versions of the agent CLIs among `agents`, as probed at start (advertised in the registry record). */
  agentVersions?: Record<string, string>;
  /** Placement labels (e.g. `local`, `process`, `remote`, `gpu`); tasks select workers by them. */
  labels?: string[];
  capabilities?: string[];
  accessMode?: WorkerRecord["accessMode"];
  costPerTask?: number;
  /** How long the server waits for an ack before redelivering; in-progress acks keep it alive. */
  ackWaitMs?: number;
  /** How often an agent CLI's work is checkpointed while it runs (config checkpointInterval); 0: only at an interruption. Default 10 min. */
  checkpointIntervalMs?: number;
  /** How this host reaches runs' repositories (config `git`): shared disk, clones of a remote, or auto. */
  gitAccess?: GitAccess;
  /** Where clones of runs' remotes go; default defaultCloneDir(). */
  cloneDir: string;
  /** The scaler's pool it belongs to (in its registry record). */
  pool?: string;
  /** Grace and force periods of a drain asked for over NATS (`ado workers drain`, the scaler). */
  shutdown?: { graceMs: number; forceMs: number };
  /** Config `providers:`: the variables holding their credentials are blanked for every agent but their own. */
  providers?: ProvidersConfig;
}

interface Running {
  attempt: Attempt;
  done: Promise<void>;
}

/**
 * A stateless worker: pulls work from its own subject when it has a free slot and runs
 * each attempt (attempt.ts: claim, worktree, agent, commit, result, ack). The class
 * keeps the pull loop, control (cancel, pause, resume) and the composition of its
 * parts: the attempts, its presence (registry record, heartbeat, load reports;
 * presence.ts) and its task worktrees (task-worktrees.ts).
 */
export class Worker extends Actor {
  private consumer?: Consumer;
  private readonly active = new Map<string, Running>();
  private readonly agents: Map<string, Agent>;
  private readonly worktrees: TaskWorktrees;
  private readonly presence: WorkerPresence;
  private readonly attemptContext: AttemptContext;
  private readonly payloads: PayloadStore;
  private requested = 0;
  private pending = 0;
  private readonly wake = new Signal();
  private readonly fetches = new Set<ConsumerMessages>();
  private pulling?: Promise<void>;
  private completed = 0;
  private control!: ControlView;
  private drainSub?: Subscription;
  /** Reports attempts' outcomes to their providers' circuits (made at the first task on a provider). */
  private governor?: Governor;

  constructor(
    ctx: ActorContext,
    private readonly opts: WorkerOptions,
  ) {
    super("worker", opts.workerId, ctx);
    this.agents = opts.agents ?? builtinAgents();
    this.worktrees = new TaskWorktrees({ workerId: opts.workerId, baseDir: opts.worktreeDir, policy: opts.worktrees, kv: ctx.kv.worktrees, log: this.log });
    this.presence = new WorkerPresence({
      workerId: opts.workerId,
      workers: ctx.kv.workers,
      nc: ctx.nc,
      topo: ctx.topo,
      log: this.log,
      fixed: {
        slots: opts.slots,
        agents: [...this.agents.keys()],
        ...(opts.agentVersions && Object.keys(opts.agentVersions).length ? { agentVersions: opts.agentVersions } : {}),
        labels: opts.labels ?? [],
        capabilities: opts.capabilities ?? [],
        accessMode: opts.accessMode ?? "local",
        costPerTask: opts.costPerTask ?? 0,
        ...(opts.pool ? { pool: opts.pool } : {}),
      },
      load: () => ({ active: [...this.active.keys()], pending: this.pending }),
    });
    this.payloads = new PayloadStore(ctx.nc, ctx.topo);
    this.attemptContext = {
      workerId: opts.workerId,
      log: this.log,
      agents: this.agents,
      claim: (key) => this.claim(key),
      emit: (event, msgID) => publishEvent(this.js, this.ctx.topo, event, msgID),
      publishResult: (key, result) => this.publishResult(key, result),
      results: new ResultCache(),
      access: new RepoAccess(opts.gitAccess ?? "auto", opts.cloneDir, ctx.logger),
      worktrees: this.worktrees,
      checkpoints: new CheckpointStore(ctx.nc, ctx.kv.sessions, ctx.topo, this.log),
      checkpointIntervalMs: opts.checkpointIntervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS,
      reportProvider: (work, result) => this.reportProvider(work, result),
      credentialHolders: credentialHolders(opts.providers ?? {}),
      loadPayloads: (work) => loadWork(work, this.payloads),
    };
  }

  /** Applies an attempt's outcome to its provider's circuit (KV, compare-and-set); a failure to is logged, never fatal. */
  private async reportProvider(work: TaskWork, result: TaskResult): Promise<void> {
    const provider = work.provider!;
    this.governor ??= new Governor({ kv: this.ctx.kv.providers, nc: this.ctx.nc, js: this.js, topo: this.ctx.topo, log: this.log, clock: this.clock });
    const f = result.failure;
    await this.governor
      .report(provider.name, provider.circuit, {
        attempt: attemptKey(work),
        ok: result.status === "succeeded",
        latencyMs: Math.max(0, Date.parse(result.finishedAt) - Date.parse(result.startedAt)),
        costUsd: result.costUsd,
        ...(result.tokens !== undefined ? { tokens: result.tokens } : {}),
        ...(f ? { kind: f.kind, message: f.message, ...(f.retryAt !== undefined ? { retryAt: f.retryAt } : {}) } : {}),
      })
      .catch((err) => this.log.warn({ provider: provider.name, task: work.taskId, err: errorMessage(err) }, "provider outcome not recorded"));
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
    await this.presence.register("running");
    // Heartbeat: in-progress acks, so running work is not redelivered, then the record.
    this.presence.startHeartbeat(
      Math.min(this.opts.heartbeatMs, this.ackWaitMs / 3),
      () => {
        for (const r of this.active.values()) r.attempt.msg.working();
      },
      () => (this.state === "running" ? "running" : this.state === "draining" ? "draining" : undefined),
    );
    this.pulling = this.pullLoop();
    // `ado workers drain <id>` and the scaler: a drain on request, as on SIGTERM.
    this.drainSub = this.ctx.nc.subscribe(topo.subjects.drain(this.id), { callback: (_err, m) => this.onDrainRequest(m) });
  }

  private onDrainRequest(m: Msg): void {
    let by = "?";
    let graceMs = this.opts.shutdown?.graceMs;
    try {
      const req = decode(SCHEMAS.WorkerDrain, m.data, m.headers);
      by = req.by;
      graceMs = req.graceMs ?? graceMs;
    } catch (err) {
      m.respond(JSON.stringify({ ok: false, worker: this.id, error: errorMessage(err) }));
      return;
    }
    m.respond(JSON.stringify({ ok: true, worker: this.id, state: this.state }));
    this.log.info({ by, graceMs }, "drain requested");
    void this.close({ ...(graceMs !== undefined ? { graceMs } : {}), ...(this.opts.shutdown ? { forceMs: this.opts.shutdown.forceMs } : {}) });
  }

  protected async onDrain(force: AbortSignal): Promise<void> {
    this.drainSub?.unsubscribe();
    // Stop pulling first, so the balancer stops routing here while tasks finish.
    await this.presence.register("draining").catch(() => undefined);
    this.wake.notify();
    for (const f of this.fetches) f.stop();
    // Past the grace period, what still runs is interrupted: checkpointed on its branch
    // and handed back, to resume on another worker.
    const interruptAll = () => {
      for (const r of this.active.values()) r.attempt.stop("interrupted" satisfies StopReason);
    };
    force.addEventListener("abort", interruptAll, { once: true });
    // Hurried before the record above was written (stopWorkers then interruptWorkers at
    // once): the abort has happened already, and a listener added now would never run.
    if (force.aborted) interruptAll();
    await Promise.all([...this.active.values()].map((r) => r.done));
    await this.pulling;
    await this.handBackQueued();
    // A cleanup pass under way finishes (each step is safe to interrupt, but a finished
    // pass leaves nothing half-reported in the registry).
    await this.worktrees.settled();
    this.control?.stop();
    await this.presence.stop();
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
    for (const { attempt: r } of this.active.values()) {
      const state = this.control.stateOf(r.work.runId, r.work.taskId);
      const at = new Date().toISOString();
      const base = { runId: r.work.runId, taskId: r.work.taskId, attempt: r.work.attempt, at, workerId: this.id };
      const suspension = (type: "task.paused" | "task.resumed") =>
        void publishEvent(this.js, this.ctx.topo, { type, ...base }, msgIds.suspension({ runId: base.runId, type }, base.taskId, base.attempt, r.suspender.pauseCount)).catch(() => undefined);
      if (state === "cancelled") r.stop("cancelled" satisfies StopReason);
      else if (state === "paused" && r.suspender.pause()) suspension("task.paused");
      else if (state === "running" && r.suspender.resume()) suspension("task.resumed");
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
    const running = this.active.get(key);
    if (running) {
      running.attempt.redelivered(m); // a redelivery of what we are running: keep going, and ack this one at the end
      return;
    }
    if (this.control.stateOf(work.runId, work.taskId) === "cancelled") {
      m.ack(); // the scheduler already counts it cancelled: nothing to run or report
      return;
    }
    const attempt = new Attempt(this.attemptContext, work, m);
    // Paused before it started: it starts paused, and the slot waits with it.
    if (this.control.stateOf(work.runId, work.taskId) === "paused") attempt.suspender.pause();
    const entry: Running = { attempt, done: Promise.resolve() };
    this.active.set(key, entry);
    this.presence.started();
    entry.done = attempt
      .run()
      .then((ran) => {
        if (ran) this.completed++;
      })
      .catch((err) => this.log.error({ key, err: errorMessage(err) }, "task execution failed"))
      .finally(() => {
        this.active.delete(key);
        this.presence.finished(key);
        this.wake.notify();
      });
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
}
