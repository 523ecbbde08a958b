import { DeliverPolicy, type ConsumerMessages, type JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { activityLine } from "../runtime/activity.js";
import { decode } from "../runtime/codec.js";
import { errorMessage } from "../runtime/errors.js";
import type { Logger } from "../runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../runtime/messages.js";
import { RunFold, type FoldTask } from "../runtime/run-fold.js";
import { readSnapshot } from "../runtime/run-snapshot.js";
import type { Topology } from "../runtime/topology.js";

/**
 * What the dashboard sends a browser about one run: its state once (`state`), then
 * what changed (`delta`), batched every `batchMs`, from one fold of the run's events
 * (run-fold.ts). The fold starts from the run's snapshot in KV and applies only the
 * events after it, so opening a run of 10,000 tasks does not replay a million events.
 *
 * Each browser connection gets a feed of its own (its own ordered consumer): a
 * reconnecting browser (EventSource does that by itself) gets a fresh `state`, so
 * nothing it missed is lost. The ordered consumer resumes by itself after a NATS
 * reconnect, from the next sequence. An event this version cannot read is counted and
 * skipped: the run's other events still tell the story.
 */

/** A task as the page shows it. */
export type TaskView = Pick<FoldTask, "id" | "status" | "attempts" | "workerId" | "startedAt" | "finishedAt" | "error" | "needs" | "paused" | "activity" | "waiting"> & { costUsd: number };

/** The run as the page shows it. */
export interface RunView {
  runId: string;
  name: string;
  status: string;
  paused: boolean;
  acceptedAt?: string;
  finishedAt?: string;
  error?: string;
  attention: { taskId: string; hitlId: string; message: string }[];
  integrationCommit?: string;
  costUsd: number;
  counts: Record<string, number>;
  seq: number;
  malformed: number;
}

export type FeedMessage = { type: "state"; run: RunView; tasks: TaskView[] } | { type: "delta"; run: RunView; tasks: TaskView[] };

export function taskView(t: FoldTask): TaskView {
  return {
    id: t.id,
    status: t.status,
    attempts: t.attempts,
    workerId: t.workerId,
    startedAt: t.startedAt,
    finishedAt: t.finishedAt,
    error: t.error,
    needs: t.needs,
    paused: t.paused,
    activity: t.activity,
    waiting: t.waiting,
    costUsd: t.costUsd + t.liveCostUsd,
  };
}

function runView(fold: RunFold, runId: string, malformed: number): RunView {
  return {
    runId,
    name: fold.name ?? "",
    status: fold.status,
    paused: fold.paused,
    acceptedAt: fold.acceptedAt,
    finishedAt: fold.finishedAt,
    error: fold.error,
    attention: fold.attention ?? [],
    integrationCommit: fold.integrationCommit,
    costUsd: fold.costUsd,
    counts: fold.counts() as Record<string, number>,
    seq: fold.seq,
    malformed,
  };
}

export interface FeedOptions {
  js: JetStreamClient;
  snapshots: KV;
  /** The runs bucket: a snapshot keeps no dependencies, the run's graph has them. */
  runs: KV;
  topo: Topology;
  runId: string;
  log: Logger;
  send: (m: FeedMessage) => void;
  batchMs?: number;
}

/** Follows one run for one browser until close(). */
export class RunFeed {
  private messages?: ConsumerMessages;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private malformed = 0;
  private fold = new RunFold();

  constructor(private readonly opts: FeedOptions) {}

  async start(): Promise<void> {
    const { js, snapshots, topo, runId, log } = this.opts;
    const loaded = await readSnapshot(snapshots, runId, (m) => log.warn(m)).catch(() => undefined);
    // A snapshot of a run seen from its middle lacks the tasks' needs: the events from the start have them.
    if (loaded?.fold.complete) {
      this.fold = loaded.fold;
      const record = await this.opts.runs.get(runId).catch(() => null);
      if (record?.operation === "PUT") {
        try {
          this.fold.setNeeds(new Map(decode(SCHEMAS.RunRecord, record.value).graph.tasks.map((t) => [t.id, t.needs])));
        } catch (err) {
          log.debug({ runId, err: errorMessage(err) }, "dashboard: run record unreadable; dependencies not shown");
        }
      }
    }
    this.fold.runId ??= runId;
    this.fold.takeChanges();
    this.opts.send({ type: "state", run: runView(this.fold, runId, this.malformed), tasks: this.fold.ids().map((id) => taskView(this.fold.task(id)!)) });
    const consumer = await js.consumers.get(topo.streams.events.name, {
      filter_subjects: topo.subjects.runEvents(runId),
      ...(this.fold.seq > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.fold.seq + 1 } : { deliver_policy: DeliverPolicy.All }),
    });
    if (this.closed) return;
    this.messages = await consumer.consume();
    this.timer = setInterval(() => this.flush(), this.opts.batchMs ?? 50);
    void (async () => {
      try {
        for await (const m of this.messages!) {
          let e: AdoEvent;
          try {
            e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
          } catch (err) {
            this.malformed++;
            log.debug({ seq: m.seq, err: errorMessage(err) }, "dashboard: unreadable event skipped");
            continue;
          }
          this.fold.apply(e, m.seq);
        }
      } catch (err) {
        if (!this.closed) log.warn({ runId, err: errorMessage(err) }, "dashboard: the run's events stopped");
      }
    })();
  }

  private flush(): void {
    const changes = this.fold.takeChanges();
    if (!changes.run && changes.tasks.length === 0) return;
    this.opts.send({ type: "delta", run: runView(this.fold, this.opts.runId, this.malformed), tasks: changes.tasks.map((id) => this.fold.task(id)).filter((t): t is FoldTask => !!t).map(taskView) });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.messages?.close().catch(() => undefined);
  }
}

/** One task's output and activity, from its first event, for the task view. */
export type TaskMessage = { type: "output"; attempt: number; data: string } | { type: "activity"; attempt: number; line: string };

/** Follows one task's events for one browser until close(). */
export class TaskFeed {
  private messages?: ConsumerMessages;
  private closed = false;

  constructor(private readonly opts: { js: JetStreamClient; topo: Topology; runId: string; taskId: string; log: Logger; send: (m: TaskMessage) => void }) {}

  async start(): Promise<void> {
    const { js, topo, runId, taskId, log, send } = this.opts;
    const consumer = await js.consumers.get(topo.streams.events.name, { filter_subjects: topo.subjects.taskEvents(runId, taskId), deliver_policy: DeliverPolicy.All });
    if (this.closed) return;
    this.messages = await consumer.consume();
    void (async () => {
      try {
        for await (const m of this.messages!) {
          let e: AdoEvent;
          try {
            e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
          } catch {
            continue;
          }
          if (!("taskId" in e)) continue;
          if (e.type === "task.output") send({ type: "output", attempt: e.attempt, data: e.data });
          else {
            const line = activityLine(e);
            if (line) send({ type: "activity", attempt: e.attempt, line });
          }
        }
      } catch (err) {
        if (!this.closed) log.warn({ runId, taskId, err: errorMessage(err) }, "dashboard: the task's events stopped");
      }
    })();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.messages?.close().catch(() => undefined);
  }
}
