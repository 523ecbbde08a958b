import { jetstream, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode } from "../runtime/codec.js";
import { drainQuietly } from "../runtime/connection.js";
import { errorMessage } from "../runtime/errors.js";
import { StreamFollower } from "../runtime/follow.js";
import { ID_PATTERN } from "../runtime/ids.js";
import { SCHEMAS, type AdoEvent } from "../runtime/messages.js";
import { FINISHED, RunFold } from "../runtime/run-fold.js";
import { activityLine } from "../runtime/activity.js";
import { openJetStream, topology, type Topology } from "../runtime/topology.js";
import { CliError, clientConnection, configFrom, Exit, joinServer, type CommonFlags, type ServerRef } from "./common.js";
import { listTaskLogs, logsRootFor, type TaskLog } from "./task-logs.js";
import { createReadStream } from "node:fs";

/**
 * `ado logs <run>[/<task>] [task]`: what a run's tasks printed, after the run (or while
 * it goes on, with --follow).
 *
 * Two sources, the same text: the logs the following client kept on this machine
 * (task-logs.ts, `<git dir>/ado/logs/<run>/<task>.<attempt>.log`), read first because
 * they need no server and outlive the event stream; else the `task.output` events of
 * the run in the event stream, which every host sees but which the stream keeps only
 * for its retention (7 days). `--events` shows the agents' activity (tool calls,
 * messages, attempts and how they ended) instead, `--json` the events themselves, one
 * per line; both read the stream.
 */
export interface LogsFlags extends CommonFlags {
  repo?: string;
  attempt?: number;
  follow?: boolean;
  events?: boolean;
  json?: boolean;
}

/** The run and the task a `logs` target names: `run`, `run/task`, or `run` then `task`. */
export function parseLogsTarget(spec: string, task?: string): { runId: string; taskId?: string } {
  const [runId, inline, ...rest] = spec.split("/");
  const taskId = inline ?? task;
  if (rest.length > 0 || (inline !== undefined && task !== undefined)) {
    throw new CliError(`'${spec}${task ? ` ${task}` : ""}' names more than a run and a task: use ado logs <run> [task] or ado logs <run>/<task>`);
  }
  if (!runId || !ID_PATTERN.test(runId)) throw new CliError(`'${runId ?? ""}' is not a run id (ado runs list, ado status --all)`);
  if (taskId !== undefined && !ID_PATTERN.test(taskId)) throw new CliError(`'${taskId}' is not a task id (ado status ${runId} lists them)`);
  return taskId === undefined ? { runId } : { runId, taskId };
}

/** `ado logs` */
export async function logsCommand(spec: string, task: string | undefined, flags: LogsFlags): Promise<number> {
  const { runId, taskId } = parseLogsTarget(spec, task);
  const out = process.stdout;
  if (!flags.follow && !flags.events && !flags.json) {
    const root = await logsRootFor(flags.repo ?? process.cwd());
    const logs = (await listTaskLogs(root, runId, taskId)).filter((l) => flags.attempt === undefined || l.attempt === flags.attempt);
    if (logs.length > 0) {
      await printFiles(logs, out, taskId === undefined || logs.length > 1);
      return Exit.ok;
    }
  }
  const { config, logger } = await configFrom(flags);
  let server: ServerRef;
  try {
    server = await joinServer(config, "ado logs", { runId, ...(flags.repo ? { dir: flags.repo } : {}) });
  } catch (err) {
    throw new CliError(`no logs of ${taskId ? `task ${taskId} of ` : ""}run ${runId} on this machine, and ${errorMessage(err)}`);
  }
  const nc = await clientConnection(server, logger);
  try {
    await openJetStream(nc);
    const topo = topology(config.prefix);
    let printer: EventPrinter;
    let seen: number;
    if (flags.follow) {
      printer = new EventPrinter(out, { ...flags, taskId, headers: taskId === undefined });
      seen = await readEvents(nc, topo, runId, taskId, true, (e) => printer.print(e));
    } else {
      // What is there now, read whole first: a header per attempt only when there is more than one to tell apart, as from the files.
      const events: AdoEvent[] = [];
      seen = await readEvents(nc, topo, runId, taskId, false, (e) => events.push(e));
      const attempts = new Set(events.flatMap((e) => (e.type === "task.output" && (flags.attempt === undefined || e.attempt === flags.attempt) ? [`${e.taskId}.${e.attempt}`] : [])));
      printer = new EventPrinter(out, { ...flags, taskId, headers: taskId === undefined || attempts.size > 1 });
      for (const e of events) printer.print(e);
    }
    printer.end();
    if (seen === 0) {
      throw new CliError(
        `no logs of ${taskId ? `task ${taskId} of ` : ""}run ${runId}: none kept on this machine and none in the event stream (it keeps a run's events 7 days; ado status --all lists the runs it knows)`,
      );
    }
    if (taskId && !printer.sawTask) throw new CliError(`run ${runId} has no task '${taskId}' with events (ado status ${runId} lists its tasks)`);
    return Exit.ok;
  } finally {
    await drainQuietly(nc);
  }
}

async function printFiles(logs: TaskLog[], out: NodeJS.WritableStream, headers: boolean): Promise<void> {
  for (const log of logs) {
    if (headers) out.write(`==> ${log.taskId} attempt ${log.attempt} <==\n`);
    let last = "\n";
    for await (const chunk of createReadStream(log.path, { encoding: "utf8" })) {
      out.write(chunk);
      if (chunk.length) last = chunk[chunk.length - 1]!;
    }
    if (last !== "\n") out.write("\n");
  }
}

/** Writes events as output text, activity lines or JSON, with a header when the attempt shown changes. */
class EventPrinter {
  sawTask = false;
  private current?: string;
  private lastChar = "\n";

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly opts: { taskId?: string; attempt?: number; events?: boolean; json?: boolean; headers: boolean },
  ) {}

  print(e: AdoEvent): void {
    const task = "taskId" in e ? e : undefined;
    if (this.opts.taskId !== undefined && task?.taskId !== this.opts.taskId) return;
    if (task) this.sawTask = true;
    if (this.opts.attempt !== undefined && task && task.attempt !== this.opts.attempt) return;
    if (this.opts.json) return void this.out.write(JSON.stringify(e) + "\n");
    if (this.opts.events) {
      const line = activityLine(e);
      if (line) this.out.write(line + "\n");
      return;
    }
    if (e.type !== "task.output") return;
    const key = `${e.taskId} attempt ${e.attempt}`;
    if (key !== this.current && (this.opts.headers || this.current !== undefined)) {
      if (this.lastChar !== "\n") this.out.write("\n");
      this.out.write(`==> ${key} <==\n`);
    }
    this.current = key;
    this.out.write(e.data);
    if (e.data.length) this.lastChar = e.data[e.data.length - 1]!;
  }

  end(): void {
    if (this.lastChar !== "\n") this.out.write("\n");
  }
}

/**
 * Reads a run's events (one task's only, unless following) in order, up to the last
 * one there now, or, with `follow`, until the run (or the task) has ended. Returns how
 * many it read.
 */
async function readEvents(nc: NatsConnection, topo: Topology, runId: string, taskId: string | undefined, follow: boolean, onEvent: (e: AdoEvent) => void): Promise<number> {
  const js = jetstream(nc);
  const jsm = await js.jetstreamManager();
  const stream = topo.streams.events.name;
  // Following a task needs the run's own events too (its end); reading one does not.
  const filter = taskId && !follow ? topo.subjects.taskEvents(runId, taskId) : topo.subjects.runEvents(runId);
  const info = await jsm.streams.info(stream, { subjects_filter: filter });
  const stored = Object.values(info.state.subjects ?? {}).reduce((n, c) => n + c, 0);
  if (stored === 0 && !follow) return 0;
  const fold = new RunFold();
  let n = 0;
  /** Handles one event; true once following is done (the run or the task ended). */
  const handle = (m: JsMsg, rewritten = false): boolean => {
    n++;
    let e: AdoEvent;
    try {
      e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
    } catch {
      return false; // an event this version cannot read: the others still tell the story
    }
    // After a rewrite (a server restarted on a store that lost its last writes) new events may reuse sequences the fold has passed.
    if (rewritten && m.seq <= fold.seq) fold.seq = m.seq - 1;
    fold.apply(e, m.seq);
    onEvent(e);
    if (!follow) return false;
    if (fold.status === "succeeded" || fold.status === "failed" || fold.status === "cancelled" || fold.status === "rejected") return true;
    const t = taskId ? fold.task(taskId) : undefined;
    return t !== undefined && FINISHED.has(t.status);
  };
  if (follow) return followEvents(nc, js, stream, filter, handle).then(() => n);
  const messages = await (await js.consumers.get(stream, { filter_subjects: filter })).consume();
  try {
    for await (const m of messages as AsyncIterable<JsMsg>) {
      handle(m);
      if (m.info.pending === 0) break;
    }
  } finally {
    await messages.close().catch(() => undefined);
  }
  return n;
}

/**
 * Follows the run's events until `handle` says it is done or the user stops it (^C).
 * A server restart does not stop it: it follows on from the last event read (runtime/follow.ts).
 */
async function followEvents(nc: NatsConnection, js: JetStreamClient, stream: string, filter: string, handle: (m: JsMsg, rewritten: boolean) => boolean): Promise<void> {
  const follower: StreamFollower = new StreamFollower({
    nc,
    js,
    stream,
    filter,
    onMessage: (m, rewritten) => {
      if (handle(m, rewritten)) follower.close();
    },
  });
  const onSignal = () => follower.close();
  process.once("SIGINT", onSignal);
  try {
    await follower.start();
    await follower.done;
  } finally {
    process.off("SIGINT", onSignal);
    follower.close();
  }
}
