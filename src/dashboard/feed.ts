import { DeliverPolicy, type JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { activityLine } from "../runtime/activity.js";
import { decode } from "../runtime/codec.js";
import { errorMessage } from "../runtime/errors.js";
import { StreamFollower } from "../runtime/follow.js";
import type { Logger } from "../runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../runtime/messages.js";
import { RunFold, type FoldTask } from "../runtime/run-fold.js";
import { readSnapshot } from "../runtime/run-snapshot.js";
import type { Topology } from "../runtime/topology.js";
import { AttemptLog, type AttemptView } from "./attempts.js";
import { criticalPath, graphDepths, type CriticalPath } from "./graph.js";

/**
 * What the dashboard sends a browser about one run: its state once (`state`), then
 * what changed (`delta`), batched every `batchMs`, from one fold of the run's events
 * (run-fold.ts). The fold starts from the run's snapshot in KV and applies only the
 * events after it, so opening a run of 10,000 tasks does not replay a million events.
 *
 * Each browser connection gets a feed of its own (its own ordered consumer): a
 * reconnecting browser (EventSource does that by itself) gets a fresh `state`, so
 * nothing it missed is lost. After a NATS reconnect (a server restart) or a stalled
 * consumer, the feed follows on from the last event it read with a consumer of its own
 * (runtime/follow.ts), within seconds and without a gap or an event twice; after a
 * restart on a store that lost its last writes, by time. An event this version cannot
 * read is counted and skipped: the run's other events still tell the story.
 */

/** A task as the page shows it; `depth`: its layer in the graph view (graph.ts). */
export type TaskView = Pick<FoldTask, "id" | "status" | "attempts" | "workerId" | "startedAt" | "finishedAt" | "error" | "needs" | "paused" | "activity" | "waiting"> & { costUsd: number; depth: number };

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
  /** The longest chain by duration (graph.ts), as of the last time it was worked out. */
  critical: Pick<CriticalPath, "ids" | "ms" | "estimated">;
}

export type FeedMessage = { type: "state"; run: RunView; tasks: TaskView[] } | { type: "delta"; run: RunView; tasks: TaskView[] };

export function taskView(t: FoldTask, depth = 0): TaskView {
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
    depth,
  };
}

function runView(fold: RunFold, runId: string, malformed: number, critical: RunView["critical"]): RunView {
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
    critical,
  };
}

/**
 * The critical path is worked out again at most this often while things change, and this
 * often while the run is live (running tasks grow). For 10,000 tasks it took 130-420 ms
 * at a load average of 20 on 2 cores, and it runs once per browser: large runs get it
 * less often.
 */
const criticalEvery = (tasks: number) => (tasks > 2_000 ? { changed: 2_000, live: 5_000 } : { changed: 200, live: 1_000 });

export interface FeedOptions {
  /** The connection `js` is on: a reconnect tells the feed to follow on with a fresh consumer. */
  nc: NatsConnection;
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
  private follower?: StreamFollower;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private malformed = 0;
  private fold = new RunFold();
  private depths = new Map<string, number>();
  private critical: RunView["critical"] = { ids: [], ms: 0, estimated: 0 };
  private criticalAt = 0;
  /** Tasks changed since the critical path was last worked out. */
  private criticalStale = false;

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
    this.depths = graphDepths(this.graphTasks());
    this.updateCritical(Date.now());
    this.opts.send({ type: "state", run: this.runView(), tasks: this.fold.ids().map((id) => this.view(id)!) });
    if (this.closed) return;
    this.follower = new StreamFollower({
      nc: this.opts.nc,
      js,
      stream: topo.streams.events.name,
      filter: topo.subjects.runEvents(runId),
      after: this.fold.seq,
      log: log.child({ runId }),
      onMessage: (m, rewritten) => {
        let e: AdoEvent;
        try {
          e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
        } catch (err) {
          this.malformed++;
          log.debug({ seq: m.seq, err: errorMessage(err) }, "dashboard: unreadable event skipped");
          return;
        }
        // After a rewrite the stream's new events may come at sequences the fold has passed: they are new all the same.
        if (rewritten && m.seq <= this.fold.seq) this.fold.seq = m.seq - 1;
        this.fold.apply(e, m.seq);
      },
    });
    await this.follower.start();
    if (this.closed) return this.follower.close();
    this.timer = setInterval(() => this.flush(), this.opts.batchMs ?? 50);
  }

  private graphTasks() {
    return this.fold.ids().map((id) => this.fold.task(id)!);
  }

  private view(id: string): TaskView | undefined {
    const t = this.fold.task(id);
    return t && taskView(t, this.depths.get(id) ?? 0);
  }

  private runView(): RunView {
    return runView(this.fold, this.opts.runId, this.malformed, this.critical);
  }

  /** Works the critical path out again; true when it changed. */
  private updateCritical(now: number): boolean {
    this.criticalAt = now;
    this.criticalStale = false;
    const p = criticalPath(this.graphTasks(), now);
    const next = { ids: p.ids, ms: p.ms, estimated: p.estimated };
    // A second more or less of a running task is no news: the page is told of a new path, or of 1 s more.
    const same = next.ids.length === this.critical.ids.length && next.ids.every((id, i) => id === this.critical.ids[i]) && Math.abs(next.ms - this.critical.ms) < 1_000 && next.estimated === this.critical.estimated;
    if (!same) this.critical = next;
    return !same;
  }

  private flush(): void {
    const changes = this.fold.takeChanges();
    const now = Date.now();
    let ids = changes.tasks;
    // Tasks the page has not seen (a run opened before its run.accepted): the layers are worked out again, and every task whose layer moved is sent.
    if (ids.some((id) => !this.depths.has(id))) {
      const before = this.depths;
      this.depths = graphDepths(this.graphTasks());
      const moved = this.fold.ids().filter((id) => before.get(id) !== this.depths.get(id));
      ids = [...new Set([...ids, ...moved])];
    }
    const live = this.fold.status === "running" || this.fold.status === "needs_attention";
    if (changes.run || ids.length) this.criticalStale = true;
    const every = criticalEvery(this.depths.size);
    const due = now - this.criticalAt >= (this.criticalStale ? every.changed : live ? every.live : Infinity);
    const criticalMoved = due && this.updateCritical(now);
    if (!changes.run && ids.length === 0 && !criticalMoved) return;
    this.opts.send({ type: "delta", run: this.runView(), tasks: ids.map((id) => this.view(id)).filter((t): t is TaskView => !!t) });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.follower?.close();
  }
}

/** One task's output, activity and attempts, from its first event, for the task view. */
export type TaskMessage = { type: "start" } | { type: "output"; attempt: number; data: string } | { type: "activity"; attempt: number; line: string } | { type: "attempt"; attempt: AttemptView };

/** Follows one task's events for one browser until close(). */
export class TaskFeed {
  private follower?: StreamFollower;
  private closed = false;
  private readonly attempts = new AttemptLog();

  constructor(private readonly opts: { nc: NatsConnection; js: JetStreamClient; topo: Topology; runId: string; taskId: string; log: Logger; send: (m: TaskMessage) => void }) {}

  async start(): Promise<void> {
    const { js, topo, runId, taskId, log, send } = this.opts;
    // A browser that reconnected gets the task from its first event again: it clears what it had.
    send({ type: "start" });
    if (this.closed) return;
    // The follower keeps the sequence of the last event sent: after a restart the feed goes on after it, nothing sent twice.
    this.follower = new StreamFollower({
      nc: this.opts.nc,
      js,
      stream: topo.streams.events.name,
      filter: topo.subjects.taskEvents(runId, taskId),
      log: log.child({ runId, taskId }),
      onMessage: (m) => {
        let e: AdoEvent;
        try {
          e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
        } catch {
          return;
        }
        if (!("taskId" in e)) return;
        if (e.type === "task.output") send({ type: "output", attempt: e.attempt, data: e.data });
        else {
          const line = activityLine(e);
          if (line) send({ type: "activity", attempt: e.attempt, line });
          const a = this.attempts.apply(e);
          if (a) send({ type: "attempt", attempt: { ...a } });
        }
      },
    });
    await this.follower.start();
    if (this.closed) this.follower.close();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.follower?.close();
  }
}

/** The task events that say where its attempts ran and what they committed (not its output). */
const ATTEMPT_EVENTS = ["task.queued", "task.started", "task.succeeded", "task.failed"] as const;

/**
 * A task's attempts as its stored events tell them, read up to the last one there now
 * (the diff of the task view needs its base, commit and worktree). One consumer per
 * kind of event rather than the task's whole subject: its output can be most of its
 * events, and nats-server 2.9 takes one filter subject per consumer.
 */
export async function readAttempts(js: JetStreamClient, topo: Topology, runId: string, taskId: string): Promise<AttemptLog> {
  const found = await Promise.all(
    ATTEMPT_EVENTS.map(async (type) => {
      const out: { seq: number; e: AdoEvent }[] = [];
      const consumer = await js.consumers.get(topo.streams.events.name, { filter_subjects: topo.subjects.event({ type, runId, taskId }), deliver_policy: DeliverPolicy.All });
      if ((await consumer.info()).num_pending === 0) return out;
      const messages = await consumer.consume();
      try {
        for await (const m of messages) {
          try {
            out.push({ seq: m.seq, e: decode(SCHEMAS.AdoEvent, m.data, m.headers) });
          } catch {
            // an event this version cannot read: the others still tell where the work is
          }
          if (m.info.pending === 0) break;
        }
      } finally {
        await messages.close().catch(() => undefined);
      }
      return out;
    }),
  );
  const log = new AttemptLog();
  for (const { e } of found.flat().sort((a, b) => a.seq - b.seq)) log.apply(e);
  return log;
}
