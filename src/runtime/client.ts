import { hostname, userInfo } from "node:os";
import { DeliverPolicy, jetstream, type JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode, encode } from "./codec.js";
import { AdoError, errorMessage } from "./errors.js";
import { openRepo, resolveCommit } from "./git/index.js";
import { formatIssues, GraphDefSchema, validateGraph, type GraphInput } from "./graph.js";
import { GraphError } from "./errors.js";
import { newRunId, type RunId } from "./ids.js";
import { SCHEMAS, type AdoEvent, type EventOf, type TaskStatus, type TaskSummary } from "./messages.js";
import type { Topology } from "./topology.js";

export interface SubmitOptions {
  graph: GraphInput;
  /** Repository directory; required unless every task uses an agent that needs no worktree. */
  repo?: string;
  runId?: RunId;
}

export interface Submitted {
  runId: RunId;
  repo?: string;
  baseCommit?: string;
}

/** How a run ended, as seen by the client. */
export interface RunOutcome {
  runId: RunId;
  status: "succeeded" | "failed" | "rejected";
  integrationBranch?: string;
  integrationCommit?: string;
  error?: string;
  tasks: TaskSummary[];
}

export interface WatchOptions {
  onEvent?: (event: AdoEvent) => void;
  /** Called once if no scheduler has answered after this long (the run stays queued). */
  onNoScheduler?: () => void;
  noSchedulerAfterMs?: number;
  signal?: AbortSignal;
}

/** A run was cancelled by the caller's signal while watching. */
export class WatchAbortedError extends AdoError {}

/**
 * The client side of ado, as used by the CLI, the tests and the benchmarks: submit a
 * run (durably: the PubAck means accepted) and follow its events to the end. Anything
 * that speaks NATS can do the same with the documented subjects and schemas.
 */
export class AdoClient {
  readonly js: JetStreamClient;

  constructor(
    readonly nc: NatsConnection,
    readonly topo: Topology,
  ) {
    this.js = jetstream(nc);
  }

  /** Validates the graph, resolves the base commit, and publishes the run. */
  async submit(opts: SubmitOptions): Promise<Submitted> {
    const parsed = GraphDefSchema.safeParse(opts.graph);
    if (!parsed.success) throw new GraphError(`invalid graph: ${formatIssues(parsed.error)}`);
    const graph = validateGraph(parsed.data);
    const runId = opts.runId ?? newRunId();
    let repo: string | undefined;
    let baseCommit: string | undefined;
    const needsRepo = graph.tasks.some((t) => t.agent !== "noop");
    if (opts.repo !== undefined || needsRepo) {
      const info = await openRepo(opts.repo ?? process.cwd());
      repo = info.topLevel;
      baseCommit = await resolveCommit(repo, "HEAD");
    }
    const { data, headers } = encode(SCHEMAS.SubmitRun, {
      type: "run.submit",
      runId,
      graph,
      repo,
      baseCommit,
      submittedAt: new Date().toISOString(),
      submittedBy: `${safeUser()}@${hostname()}`,
    });
    // The run id doubles as the message id: a retried submission is deduplicated.
    await this.js.publish(this.topo.subjects.submit, data, { headers, msgID: runId, timeout: 10_000 });
    return { runId, repo, baseCommit };
  }

  /**
   * Replays a run's events from the start, then follows live, until it completes or is
   * rejected. Uses an ordered consumer, so a reconnect resumes without gap or duplicate.
   */
  async watch(runId: RunId, opts: WatchOptions = {}): Promise<RunOutcome> {
    const consumer = await this.js.consumers.get(this.topo.streams.events.name, {
      filter_subjects: this.topo.subjects.runEvents(runId),
      deliver_policy: DeliverPolicy.All,
    });
    const messages = await consumer.consume();
    const tracker = new TaskTracker();
    let heard = false;
    const timer = setTimeout(() => {
      if (!heard) opts.onNoScheduler?.();
    }, opts.noSchedulerAfterMs ?? 10_000);
    const onAbort = () => void messages.close();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const m of messages) {
        let event: AdoEvent;
        try {
          event = decode(SCHEMAS.AdoEvent, m.data, m.headers);
        } catch (err) {
          // An event we cannot read is skipped, not fatal: say so once on the caller's channel.
          opts.onEvent?.({ type: "task.output", runId, taskId: "_", attempt: 1, at: new Date().toISOString(), stream: "stderr", data: `ado: unreadable event on ${m.subject}: ${errorMessage(err)}\n` });
          continue;
        }
        heard = true;
        tracker.apply(event);
        opts.onEvent?.(event);
        if (event.type === "run.completed") return tracker.outcome(event);
        if (event.type === "run.rejected") return { runId, status: "rejected", error: event.reason, tasks: [] };
      }
      throw new WatchAbortedError(`stopped watching run ${runId}; it goes on (ado attach ${runId})`);
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      await messages.close().catch(() => undefined);
    }
  }

  /** Submits and follows a run to its end. */
  async run(opts: SubmitOptions & WatchOptions): Promise<RunOutcome> {
    const { runId } = await this.submit(opts);
    return this.watch(runId, opts);
  }
}

/** Builds per-task summaries from the event stream (for runs too large to list in run.completed). */
export class TaskTracker {
  readonly tasks = new Map<string, TaskSummary>();

  apply(e: AdoEvent): void {
    if (e.type === "run.accepted") {
      for (const t of e.tasks) this.tasks.set(t.id, { id: t.id, status: "pending", attempts: 0 });
      for (const id of e.queued) this.tasks.set(id, { id, status: "queued", attempts: 1 });
      return;
    }
    if (!("taskId" in e)) return;
    const t = this.tasks.get(e.taskId);
    if (!t) return;
    const set = (status: TaskStatus) => (t.status = status);
    switch (e.type) {
      case "task.queued":
        set("queued");
        t.attempts = e.attempt;
        break;
      case "task.started":
        set("running");
        t.startedAt = e.at;
        t.workerId = e.workerId;
        break;
      case "task.succeeded":
        set("merging");
        t.startedAt = e.startedAt;
        t.finishedAt = e.finishedAt;
        t.commit = e.commit;
        break;
      case "task.merged":
        set("succeeded");
        break;
      case "task.failed":
        set(e.willRetry ? "queued" : "failed");
        t.finishedAt = e.finishedAt;
        t.error = e.error;
        break;
      case "task.skipped":
        set("skipped");
        t.error = e.reason;
        break;
      case "merge.conflict":
        set("failed");
        t.error = e.message;
        break;
    }
  }

  outcome(done: EventOf<"run.completed">): RunOutcome {
    return {
      runId: done.runId as RunId,
      status: done.status,
      integrationBranch: done.integrationBranch,
      integrationCommit: done.integrationCommit,
      error: done.error,
      tasks: done.tasks.length ? done.tasks : [...this.tasks.values()],
    };
  }
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return "unknown";
  }
}
