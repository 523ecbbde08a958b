import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";

/**
 * Prometheus metrics of one ado process (prom-client), served at `GET /metrics` on its
 * health port (health.ts) and by the dashboard. Each process exports what it knows:
 *
 * - the recorder (the replica holding its lease) follows every event, so it exports the
 *   fleet's task and run states, durations, retries, failure classes, HITL waits, cost,
 *   tokens and event lag, all updated from the events it folds anyway;
 * - a process running a balancer exports the ready backlog (`ado_task_queue_length`,
 *   per priority, and what it holds per placement);
 * - a process running workers exports each worker's running, queued, slots and
 *   utilization;
 * - every process exports the pending counts of the JetStream consumers its actors read,
 *   read from the server at scrape time.
 *
 * Hot paths only touch counters and histograms in memory; whatever needs a look at
 * NATS or a walk over state is done by a scrape hook, at scrape time (Prometheus scrapes
 * every 15-60 s), never per task.
 */

/** What a task's agent is billed through, for the `provider` label until providers are configured fleet-wide. */
export function providerOf(agent: string | undefined): string {
  switch (agent) {
    case "claude":
      return "anthropic";
    case "codex":
      return "openai";
    case "gemini":
      return "google";
    case "cursor":
      return "cursor";
    case "aider":
      return "aider";
    case undefined:
      return "unknown";
    default:
      // shell, noop: nothing is billed.
      return "local";
  }
}

/** Seconds, for durations of tasks and merges: 0.1 s to 2 h. */
const DURATION_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1_800, 3_600, 7_200];
/** Seconds, for how late an event is seen: 1 ms to 1 min. */
const LAG_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export type ScrapeHook = () => void | Promise<void>;

export class Metrics {
  readonly registry = new Registry();
  private readonly hooks = new Set<ScrapeHook>();

  // ---- the fleet, from the events (the recorder) ----
  /** Tasks of runs in progress, by state. */
  readonly tasks = this.gauge("ado_tasks", "Tasks of runs in progress, by state, agent and provider (from the event stream)", ["state", "agent", "provider"]);
  /** Tasks in each pipeline stage: waiting for dependencies, for a worker, running, merging, waiting for a person. */
  readonly taskStages = this.gauge("ado_task_stage", "Tasks of runs in progress by pipeline stage: blocked (dependencies), ready (for a worker), running, merging, attention (a person)", ["stage"]);
  /** Tasks of the graphs' stages (`stages:`), by stage and state: what a stage's maxParallel holds back shows as pending. */
  readonly stageTasks = this.gauge("ado_stage_tasks", "Tasks of runs in progress that belong to a graph stage (stages:), by stage and state", ["stage", "state"]);
  readonly stageTasksFinished = this.counter("ado_stage_tasks_finished_total", "Tasks of a graph stage that reached an end, by stage and how it ended", ["stage", "state"]);
  readonly stageCostUsd = this.counter("ado_stage_cost_usd_total", "What the agents of a graph stage's tasks reported spending, in USD, by stage", ["stage"]);
  readonly stageTaskDuration = this.histogram("ado_stage_task_duration_seconds", "Time an attempt of a graph stage's task ran, from its start to its result, by stage and outcome", ["stage", "outcome"], DURATION_BUCKETS);
  readonly stageFailures = this.counter("ado_stage_task_failures_total", "Failed attempts of a graph stage's tasks, by stage and failure class", ["stage", "class"]);
  readonly stageRetries = this.counter("ado_stage_task_retries_total", "Attempts of a graph stage's tasks queued again after a failure, by stage", ["stage"]);
  readonly runs = this.gauge("ado_runs", "Runs in progress, by state (running, paused, needs_attention)", ["state"]);
  readonly tasksFinished = this.counter("ado_tasks_finished_total", "Tasks that reached an end, by how it ended, agent and provider", ["state", "agent", "provider"]);
  readonly runsFinished = this.counter("ado_runs_finished_total", "Runs that ended, by how", ["state"]);
  readonly taskDuration = this.histogram("ado_task_duration_seconds", "Time an attempt ran, from its start to its result, by outcome, agent and provider", ["outcome", "agent", "provider"], DURATION_BUCKETS);
  readonly mergeDuration = this.histogram("ado_merge_duration_seconds", "Time from a task's result to its merge (or to a person being asked), by outcome", ["outcome"], DURATION_BUCKETS);
  readonly retries = this.counter("ado_task_retries_total", "Attempts queued again after a failure, by agent and provider", ["agent", "provider"]);
  readonly failures = this.counter("ado_task_failures_total", "Failed attempts by failure class (exit, timeout, rate_limit, auth, crash, hang, ...), agent and provider", ["class", "agent", "provider"]);
  readonly hitlWaiting = this.gauge("ado_hitl_waiting", "Merges waiting for a person (HITL)");
  readonly costUsd = this.counter("ado_cost_usd_total", "What agents reported spending, in USD, by provider and model", ["provider", "model"]);
  readonly tokens = this.counter("ado_tokens_total", "Tokens agents used, by provider, model and kind (input, output, cached, cache_write)", ["provider", "model", "kind"]);
  readonly eventLag = this.histogram("ado_event_lag_seconds", "How long after its time an event reached the recorder", [], LAG_BUCKETS);
  readonly recorderEvents = this.counter("ado_recorder_events_total", "Events the recorder applied");
  readonly recorderMalformed = this.counter("ado_recorder_malformed_total", "Events the recorder could not read (skipped)");
  readonly snapshotWrites = this.counter("ado_snapshot_writes_total", "Run snapshots written to KV");

  // ---- the ready queue (a process with a balancer) ----
  readonly queueLength = this.gauge("ado_task_queue_length", "Ready tasks waiting for a worker, every priority (the ready stream's pending and held messages); what the HPA in deploy/ scales workers on");
  readonly readyBacklog = this.gauge("ado_ready_backlog", "Ready tasks waiting for a worker, by priority", ["priority"]);
  readonly readyHeld = this.gauge("ado_ready_held", "Ready tasks this balancer holds in memory, by priority and placement", ["priority", "placement"]);

  // ---- workers (a process with workers) ----
  readonly workerRunning = this.gauge("ado_worker_running", "Tasks a worker runs now", ["worker", "host"]);
  readonly workerQueued = this.gauge("ado_worker_queued", "Work waiting on a worker's own subject", ["worker", "host"]);
  readonly workerSlots = this.gauge("ado_worker_slots", "Tasks a worker can run at once", ["worker", "host"]);
  readonly workerUtilization = this.gauge("ado_worker_utilization", "A worker's running tasks over its slots (0..1)", ["worker", "host"]);

  // ---- JetStream ----
  readonly consumerPending = this.gauge("ado_jetstream_consumer_pending", "Messages a consumer has not been delivered yet", ["stream", "consumer"]);
  readonly consumerAckPending = this.gauge("ado_jetstream_consumer_ack_pending", "Messages delivered to a consumer and not acked yet", ["stream", "consumer"]);
  readonly consumerRedelivered = this.gauge("ado_jetstream_consumer_redelivered", "Messages delivered to a consumer more than once and not acked yet", ["stream", "consumer"]);

  constructor(opts: { processMetrics?: boolean } = {}) {
    // CPU, memory, event-loop lag, handles: what tells an overloaded process apart.
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** Runs `hook` before each scrape (to read what is only worth reading then). Returns its removal. */
  onScrape(hook: ScrapeHook): () => void {
    this.hooks.add(hook);
    return () => this.hooks.delete(hook);
  }

  /** The text exposition format. A hook that fails leaves its metrics as they were and is logged. */
  async text(log?: Logger): Promise<string> {
    await Promise.all(
      [...this.hooks].map(async (hook) => {
        try {
          await hook();
        } catch (err) {
          log?.warn({ err: errorMessage(err) }, "a metrics hook failed; its figures are from the last scrape");
        }
      }),
    );
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private gauge<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
  private counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }
  private histogram<L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]): Histogram<L> {
    return new Histogram({ name, help, labelNames, buckets, registers: [this.registry] });
  }
}
