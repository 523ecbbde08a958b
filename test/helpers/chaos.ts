/**
 * What the fault-injection tests (test/chaos/) share: a nats-server that can be
 * SIGKILLed and started again on the same store and port, an installation of ado as
 * separate processes against it, a task graph with fan-ins and retries whose every
 * execution is logged outside the repository, and the check of ado's promises after a
 * fault:
 *
 * - nothing is lost: the run succeeded, every task succeeded, nothing is left queued on
 *   any stream, and the integration branch holds every task's file (the fan-ins'
 *   contents prove each was built on all its dependencies' work);
 * - an attempt runs once: no (run, task, attempt) was executed twice, unless the
 *   worker that ran it was only cut off (the test says which ones could be), and the
 *   attempt each task succeeded with really ran;
 * - the user's checkout is untouched (fingerprint), no agent outlives the test, and
 *   every process still running drains on SIGINT and exits 0 (no actor died).
 */
import { execFileSync } from "node:child_process";
import { cp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DeliverPolicy, jetstream, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { expect } from "vitest";
import { checkoutFingerprint } from "../../src/git/index.js";
import { AdoClient, type RunOutcome } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { connectNats, drainQuietly } from "../../src/runtime/connection.js";
import { EmbeddedServer } from "../../src/runtime/embedded-server.js";
import type { GraphInput } from "../../src/runtime/graph.js";
import type { RunId } from "../../src/runtime/ids.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent, type DeadLetter } from "../../src/runtime/messages.js";
import { integrationBranch, taskBranch } from "../../src/runtime/names.js";
import { openJetStream, provision, type Topology } from "../../src/runtime/topology.js";
import { AdoCluster, isRunning, processesWith, type AdoProcess } from "./cluster.js";
import { eventually, uniqueTopology } from "./nats.js";
import { gitOut, makeRepo } from "./repo.js";

/**
 * A nats-server on a fixed store and port that a test can SIGKILL (server and its
 * watchdog, no shutdown of any kind) and start again on the same store and port, so
 * every client reconnects to the same URL.
 */
export class RestartableNats {
  private server: EmbeddedServer;
  readonly port: number;

  private constructor(
    server: EmbeddedServer,
    readonly storeDir: string,
  ) {
    this.server = server;
    this.port = Number(new URL(server.url).port);
  }

  static async start(storeDir: string): Promise<RestartableNats> {
    await mkdir(storeDir, { recursive: true });
    return new RestartableNats(await EmbeddedServer.start({ storeDir }), storeDir);
  }

  get url(): string {
    return this.server.url;
  }

  /** The server's recent stderr. */
  get log(): string {
    return this.server.log;
  }

  /** SIGKILLs the server's process group and waits until it is gone. */
  async kill(): Promise<void> {
    const pid = this.server.pid;
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
    await eventually(async () => !(await isRunning(pid)), 10_000, `nats-server group ${pid} gone`);
    await this.server.stop(0);
  }

  /** Starts the server again on the same store and port (retried while the port is still held). */
  async restart(): Promise<void> {
    this.server = await eventually(
      () => EmbeddedServer.start({ storeDir: this.storeDir, port: this.port }).catch(() => undefined),
      15_000,
      `nats-server restarted on port ${this.port}`,
    );
  }

  /** The copy of the store `keepCopy` makes. */
  get olderStore(): string {
    return `${this.storeDir}.older`;
  }

  /** Kills the server, copies its store aside (for `restoreMessages`), and starts it again. */
  async keepCopy(): Promise<void> {
    await this.kill();
    await rm(this.olderStore, { recursive: true, force: true });
    await cp(this.storeDir, this.olderStore, { recursive: true });
    await this.restart();
  }

  /**
   * Kills the server and starts it again with `stream`'s messages as they were at
   * `keepCopy`, everything else (its consumers' state, the other streams, KV) as it is
   * now: what a 2.9.10 server restarted on a store that lost its last writes comes back with.
   */
  async restoreMessages(stream: string): Promise<void> {
    const msgs = (root: string) => join(root, "jetstream", "$G", "streams", stream, "msgs");
    await this.kill();
    await rm(msgs(this.storeDir), { recursive: true });
    await cp(msgs(this.olderStore), msgs(this.storeDir), { recursive: true });
    await this.restart();
  }

  /** Stops it for good: gracefully, then SIGKILL after `graceMs` (a deadlocked server ignores SIGTERM). */
  stop(graceMs = 3_000): Promise<void> {
    return this.server.stop(graceMs);
  }
}

/**
 * A RestartableNats of a test's own, its store under `dir`, with a fresh topology
 * provisioned: connections made with `connect` are closed with it.
 */
export async function stagedServer(dir: string) {
  const nats = await RestartableNats.start(join(dir, "store"));
  const topo = uniqueTopology();
  const conns: NatsConnection[] = [];
  const connect = async (name: string) => {
    const nc = await connectNats({ servers: nats.url, name, logger: silentLogger });
    conns.push(nc);
    return nc;
  };
  const { kv } = await provision(await connect("provision"), topo);
  return {
    nats,
    topo,
    kv,
    connect,
    async close() {
      await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
      await nats.stop(1_000);
    },
  };
}

/** Task ids of the chaos graph, in the order the fan-ins concatenate them. */
function chaosShape(fanIns: 2 | 4) {
  const roots = Array.from({ length: 4 * fanIns }, (_, i) => `r${String(i).padStart(2, "0")}`);
  const fanIn = Array.from({ length: fanIns }, (_, k) => ({ id: `m${k}`, needs: roots.slice(k * 4, k * 4 + 4) }));
  const second = Array.from({ length: fanIns / 2 }, (_, j) => ({ id: `p${j}`, needs: [`m${2 * j}`, `m${2 * j + 1}`] }));
  return { roots, fanIn, second, all: [...roots, ...fanIn.map((t) => t.id), ...second.map((t) => t.id), "z"] };
}
/** Task ids of the chaos graph (23 tasks; 12 with `fanIns: 2`). */
export const CHAOS_TASKS = chaosShape(4).all;

export interface ChaosGraphOptions {
  /** Tasks whose first attempt sleeps `longSleep` (to be killed in the middle); later attempts are short. */
  longFirst?: string[];
  /**
   * How long those first attempts sleep, as `sleep`'s argument. Give each scenario its
   * own (`ChaosFixture.longSleep`): the sleeping process's command line is the only mark
   * its agents carry, and a test looks for leftovers by it (never another test's).
   */
  longSleep?: string;
  /** Tasks whose first attempt fails on purpose (after writing its file); the retry succeeds. */
  failFirst?: string[];
  /** Seconds each task sleeps after logging. */
  sleep?: number;
  /** KB of output each task prints (task.output events, stored by JetStream). */
  outputKb?: number;
  /** Fan-ins of four roots each: 4 (23 tasks, the default) or 2 (12 tasks: 8 roots, m0, m1, p0, z). */
  fanIns?: 2 | 4;
}

/**
 * 23 tasks (12 with `fanIns: 2`): roots r00..r15; fan-ins m0..m3 (four roots each, concatenating their files);
 * p0 (m0, m1) and p1 (m2, m3); z (p0, p1). Every task has `retry: {attempts: 2}` and
 * first appends `<run> <task> <attempt> <worker>` to `log`. A dependent reads its
 * dependencies' files with `cat`, which fails (on every attempt, so the run fails) if
 * its base does not hold their work. z.txt ends up as every root's id in order.
 */
export function chaosGraph(log: string, opts: ChaosGraphOptions = {}): GraphInput {
  const sleep = opts.sleep ?? 0.2;
  const output = opts.outputKb ? `head -c ${opts.outputKb * 1024} /dev/zero | tr '\\0' x | fold -w 100; ` : "";
  const task = (id: string, body: string, needs: string[] = []) => {
    const pause = opts.longFirst?.includes(id) ? `$([ "$ADO_ATTEMPT" = 1 ] && echo ${opts.longSleep ?? "900"} || echo ${sleep})` : String(sleep);
    const fail = opts.failFirst?.includes(id) ? `; [ "$ADO_ATTEMPT" != 1 ] || { echo "attempt 1 of ${id} fails on purpose" >&2; exit 1; }` : "";
    return {
      id,
      needs,
      retry: { attempts: 2, backoffMs: 200 },
      run: `echo "$ADO_RUN_ID $ADO_TASK_ID $ADO_ATTEMPT $ADO_WORKER_ID" >> ${log}; ${output}sleep ${pause}; ${body}${fail}`,
    };
  };
  const { roots: ROOTS, fanIn: FAN_IN, second: SECOND } = chaosShape(opts.fanIns ?? 4);
  const cat = (id: string, needs: string[]) => task(id, `cat ${needs.map((d) => `${d}.txt`).join(" ")} > ${id}.txt`, needs);
  return {
    name: "chaos",
    tasks: [
      ...ROOTS.map((id) => task(id, `echo ${id} > ${id}.txt`)),
      ...FAN_IN.map((t) => cat(t.id, t.needs)),
      ...SECOND.map((t) => cat(t.id, t.needs)),
      cat("z", SECOND.map((t) => t.id)),
    ],
  };
}

/** The chaos graph as a graph file (`ado run --graph`) writes it: JSON, which is YAML. */
export function chaosGraphFile(log: string, opts: ChaosGraphOptions = {}): string {
  const graph = chaosGraph(log, opts);
  return JSON.stringify({ ...graph, tasks: graph.tasks.map((t) => ({ ...t, retry: { attempts: 2, backoff: "200ms" } })) }, null, 2);
}

export interface Execution {
  runId: string;
  task: string;
  attempt: number;
  workerId: string;
}

/** The executions the agents logged, in order. */
export async function executions(log: string): Promise<Execution[]> {
  const text = await readFile(log, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [runId, task, attempt, workerId] = line.split(" ");
      return { runId: runId!, task: task!, attempt: Number(attempt), workerId: workerId ?? "" };
    });
}

/** A repository whose checkout has untracked, modified and staged changes, and its fingerprint. */
async function dirtyRepo() {
  const repo = await makeRepo();
  await writeFile(join(repo.dir, "scratch.txt"), "untracked\n");
  await writeFile(join(repo.dir, "README.md"), "# edited by the user\n");
  await writeFile(join(repo.dir, "staged.txt"), "staged\n");
  execFileSync("git", ["add", "staged.txt"], { cwd: repo.dir });
  return { ...repo, before: await checkoutFingerprint(repo.dir) };
}

/** One scenario's installation: its own prefix, repository, worktrees, log and processes. */
export interface ChaosFixture {
  name: string;
  dir: string;
  url: string;
  topo: Topology;
  cluster: AdoCluster;
  nc: NatsConnection;
  client: AdoClient;
  jsm: JetStreamManager;
  repo: { dir: string; before: string };
  /** Every agent appends `<run> <task> <attempt> <worker>` here; unique to the scenario, so it also marks its agents' command lines. */
  log: string;
  /**
   * `sleep`'s argument for long first attempts (ChaosGraphOptions.longSleep): 15 minutes,
   * longer than the test, so that such an attempt still runs whenever the test comes to
   * kill it (at a load average of ~40 a 2-minute one ended before the test got there);
   * its fraction is unique to the scenario.
   */
  longSleep: string;
  runId?: RunId;
  /** The tasks of the run submitted (CHAOS_TASKS unless a smaller graph was). */
  tasks: string[];
  /** The run's events as seen (printed when the test fails). */
  events: AdoEvent[];
  /** Extra lines a scenario wants printed when it fails (each gets the time it was pushed at). */
  notes: string[];
  /** Prints what a failure needs explained: the events, the tasks not done, the streams, the executions, each process's output. */
  diagnose(): Promise<void>;
  cleanup(): Promise<void>;
}

/** An array whose pushes are stamped with the time (mm:ss.sss), to read a failure's steps against the events' times. */
function timed(lines: string[]): string[] {
  const push = lines.push.bind(lines);
  lines.push = (...items: string[]) => push(...items.map((l) => `${new Date().toISOString().slice(14, 23)} ${l}`));
  return lines;
}

export async function chaosFixture(name: string, scratch: string, url: string): Promise<ChaosFixture> {
  const dir = join(scratch, name);
  await mkdir(dir, { recursive: true });
  const repo = await dirtyRepo();
  const topo = uniqueTopology();
  const cluster = new AdoCluster({
    ADO_SERVER: url,
    ADO_PREFIX: topo.prefix,
    ADO_WORKTREE_DIR: join(dir, "wt"),
    // A dead worker is suspected after 3 heartbeats, then pinged for one. ado's default
    // (1 s): with 500 ms, at a load average of ~30 on 2 cores live workers went silent
    // for 1.7-1.9 s, did not answer a 500 ms ping, and were declared dead.
    ADO_HEARTBEAT_MS: "1000",
    // Info: what the schedulers' sweep of the work queues saw and did (diagnose() shows it).
    ADO_LOG_LEVEL: "info",
  });
  const nc = await connectNats({ servers: url, name: `chaos-${name}`, logger: silentLogger });
  // A test that times out is abandoned, its finally never run: its processes must not outlive the test process.
  const onExit = () => cluster.killAll();
  process.once("exit", onExit);
  const f: ChaosFixture = {
    name,
    dir,
    url,
    topo,
    cluster,
    nc,
    client: new AdoClient(nc, topo),
    jsm: await openJetStream(nc),
    repo: { dir: repo.dir, before: repo.before },
    log: join(dir, "ran.log"),
    longSleep: `900.${String(process.pid % 1000).padStart(3, "0")}${String(Math.floor(Math.random() * 1e6)).padStart(6, "0")}`,
    tasks: CHAOS_TASKS,
    events: [],
    notes: timed([]),
    diagnose: async () => undefined,
    cleanup: async () => {
      process.off("exit", onExit);
      cluster.killAll();
      await drainQuietly(nc);
      await repo.cleanup();
    },
  };
  f.diagnose = async () => {
    const seen = f.events.filter((e) => e.type !== "task.output").map((e) => `${e.at.slice(17, 23)} ${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}`);
    const status = f.runId ? await f.client.status(f.runId).catch((err) => ({ error: String(err) })) : undefined;
    const open = status && "tasks" in status ? status.tasks.filter((t) => t.status !== "succeeded").map((t) => `${t.id}:${t.status}#${t.attempts}@${t.workerId ?? "-"}${t.error ? ` (${t.error})` : ""}`) : status;
    // A failed attempt's own words (the tail of what it printed), and where its branch started:
    // "exited with code 1" alone does not say whether a fan-in's base lacked a dependency.
    const tail = (taskId: string, attempt: number) =>
      f.events
        .flatMap((o) => (o.type === "task.output" && o.taskId === taskId && o.attempt === attempt ? [o.data] : []))
        .join("")
        .slice(-400);
    const git = (...args: string[]) => {
      try {
        return gitOut(f.repo.dir, ...args).trim();
      } catch (err) {
        return `(${String(err).split("\n")[0]})`;
      }
    };
    const why = f.events.flatMap((e) =>
      e.type === "task.failed"
        ? [`${e.taskId}#${e.attempt} failed: ${e.error}; output: ${JSON.stringify(tail(e.taskId, e.attempt))}; branch tip: ${git("log", "-1", "--format=%h %s", taskBranch(e.runId, e.taskId))}`]
        : e.type === "worker.lost"
          ? [`${e.taskId}#${e.attempt} lost with ${e.workerId}: ${e.outcome}, ${e.reason}`]
          : [],
    );
    if (f.runId) why.push(`integration branch: ${git("log", "--format=%h %s", integrationBranch(f.runId)).split("\n").join(" | ")}`);
    const lines = [
      `events: ${seen.join(", ")}`,
      ...why,
      `run ${status && "run" in status ? status.run.status : "?"}; tasks not succeeded: ${JSON.stringify(open)}; stream messages: ${JSON.stringify(await streamCounts(f).catch((e) => String(e)))}`,
      `consumers: ${(await consumerStates(f).catch((e) => [String(e)])).join("; ")}`,
      `executions: ${(await executions(f.log)).map((x) => `${x.task}#${x.attempt}@${x.workerId.slice(-6)}`).join(" ")}`,
      ...f.notes,
      `sweeps of the work queues: ${cluster.all.flatMap((p) => p.output().split("\n").filter((l) => l.includes('"sweep":')).map((l) => `${p.name} ${l}`)).slice(-40).join("\n") || "none logged"}`,
      ...cluster.all.map((p) => `${p.name} pid ${p.child.pid} exit ${p.child.exitCode ?? p.child.signalCode}:\n${p.output().slice(-3_000)}`),
    ];
    console.log(lines.map((l) => `[${name}] ${l}`).join("\n"));
  };
  return f;
}

/**
 * Scheduler, balancer, merger and stealer processes, and `processes` worker processes
 * (w1, w2, ...) of `perProcess` workers each. A worker to be killed alone needs a
 * process of its own; otherwise fewer processes cost less to start (~2 s of CPU each).
 */
export async function startInstallation(f: ChaosFixture, processes: number, perProcess = 1): Promise<void> {
  await Promise.all([
    f.cluster.actor("scheduler"),
    f.cluster.actor("balancer"),
    f.cluster.actor("merger"),
    f.cluster.actor("stealer"),
    ...Array.from({ length: processes }, (_, i) => f.cluster.worker(`w${i + 1}`, perProcess)),
  ]);
  f.notes.push(`installation up: ${f.cluster.all.length} processes`);
}

/** How long a followed run may go without any event, and in all. */
export interface FollowLimits {
  /** No event for this long: the run is stuck (a slow machine still makes events). Default 120 s (60 s passed without one after a server restart at a load average of ~50). */
  idleMs?: number;
  /** The longest a run may take however it progresses. Default 10 min. */
  maxMs?: number;
}

/**
 * Follows a run in the background, keeping every event. A run that makes no event for
 * `idleMs` is taken for stuck and the watch stops (the test then fails on the outcome
 * and says so), so that a loaded machine, where everything is slow, does not fail a
 * run that still moves.
 */
export function follow(f: ChaosFixture, runId: RunId, limits: FollowLimits = {}) {
  const idleMs = limits.idleMs ?? 120_000;
  f.runId = runId;
  const events = f.events;
  const stop = new AbortController();
  let idle: NodeJS.Timeout | undefined;
  const armIdle = () => {
    clearTimeout(idle);
    idle = setTimeout(() => {
      const last = events.at(-1);
      f.notes.push(`the run made no event for ${idleMs / 1000} s (the last: ${last ? `${last.type}${"taskId" in last ? ` ${last.taskId}#${last.attempt}` : ""} at ${last.at}` : "none"}): taken for stuck`);
      stop.abort();
    }, idleMs);
  };
  const max = setTimeout(() => {
    f.notes.push(`the run did not end within ${(limits.maxMs ?? 600_000) / 1000} s`);
    stop.abort();
  }, limits.maxMs ?? 600_000);
  armIdle();
  const outcome = f.client
    .watch(runId, {
      onEvent: (e) => {
        events.push(e);
        armIdle();
      },
      signal: stop.signal,
    })
    .catch((err: unknown) => {
      throw new Error(`following run ${runId} stopped: ${f.notes.at(-1) ?? String(err)}`, { cause: err });
    })
    .finally(() => {
      clearTimeout(idle);
      clearTimeout(max);
    });
  let ended: string | undefined;
  outcome.then(
    (o) => (ended = `the run ended ${o.status}${o.error ? ` (${o.error})` : ""}`),
    (err: unknown) => (ended = (err as Error).message),
  );
  /**
   * Waits for `check` to hold as long as the run moves: no fixed time, since a loaded
   * machine makes everything slow; fails once the run has ended or is taken for stuck.
   */
  const until = async <T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string): Promise<T> => {
    for (;;) {
      const v = await check();
      if (v) return v;
      if (ended !== undefined) throw new Error(`waiting for ${what}: ${ended}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const count = (type: AdoEvent["type"]) => events.filter((e) => e.type === type).length;
  const find = <T extends AdoEvent["type"]>(type: T, pred: (e: Extract<AdoEvent, { type: T }>) => boolean = () => true) =>
    events.find((e): e is Extract<AdoEvent, { type: T }> => e.type === type && pred(e as Extract<AdoEvent, { type: T }>));
  return { events, outcome, count, find, until };
}

/** A followed run (see follow). */
export type FollowedRun = ReturnType<typeof follow>;

/** Submits the chaos graph on the fixture's repository and follows it. */
export async function submitChaos(f: ChaosFixture, opts: ChaosGraphOptions = {}, limits: FollowLimits = {}) {
  const { runId } = await f.client.submit({ graph: chaosGraph(f.log, { longSleep: f.longSleep, ...opts }), repo: f.repo.dir });
  f.tasks = chaosShape(opts.fanIns ?? 4).all;
  return follow(f, runId, limits);
}

/** The worker process that runs `workerId`. */
export function processOf(f: ChaosFixture, workerId: string): AdoProcess {
  const p = f.cluster.all.find((x) => x.workerIds.includes(workerId));
  if (!p) throw new Error(`no process runs worker ${workerId}`);
  return p;
}

/** Messages stored in each work-queue stream: what is still queued or unacknowledged. */
export async function streamCounts(f: Pick<ChaosFixture, "jsm" | "topo">): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const key of ["submit", "ready", "work", "results", "merge"] as const) out[key] = (await f.jsm.streams.info(f.topo.streams[key].name)).state.messages;
  return out;
}

/**
 * Each work-queue consumer's position: what it has not delivered yet (pending), what it
 * delivered and nobody acked (ack pending), redeliveries, and pull requests waiting. A
 * stream holding messages that its consumer neither delivers nor has outstanding says
 * the consumer lost its place; messages ack-pending forever say a holder stopped.
 */
async function consumerStates(f: Pick<ChaosFixture, "jsm" | "topo">): Promise<string[]> {
  const out: string[] = [];
  for (const key of ["submit", "ready", "work", "results", "merge"] as const) {
    for await (const c of f.jsm.consumers.list(f.topo.streams[key].name)) {
      out.push(`${key}/${c.name}: pending ${c.num_pending}, ack pending ${c.num_ack_pending}, redelivered ${c.num_redelivered}, waiting pulls ${c.num_waiting}, delivered #${c.delivered.stream_seq}, ack floor #${c.ack_floor.stream_seq}`);
    }
  }
  return out;
}

/** What is left on the work-queue streams: subject, schema and sequence of each message (at most 20). */
async function leftovers(f: Pick<ChaosFixture, "jsm" | "topo">): Promise<string[]> {
  const out: string[] = [];
  for (const key of ["submit", "ready", "work", "results", "merge"] as const) {
    const stream = f.topo.streams[key].name;
    const { state } = await f.jsm.streams.info(stream);
    for (let seq = state.first_seq; seq <= Math.min(state.last_seq, state.first_seq + 200) && state.messages > 0 && out.length < 20; seq++) {
      const m = await f.jsm.streams.getMessage(stream, { seq }).catch(() => undefined);
      if (!m) continue;
      // Whether the stream's per-subject index finds it too (a consumer with a filter, and
      // the sweep's lookups, go by it): the next message of its subject from the stream's start, and the subject's count.
      const bySubject = await f.jsm.streams
        .getMessage(stream, { seq: state.first_seq, next_by_subj: m.subject } as unknown as { seq: number })
        .then((n) => (n ? `#${n.seq}` : "none"))
        .catch((err: unknown) => `(${String(err)})`);
      const counted = await f.jsm.streams
        .info(stream, { subjects_filter: m.subject })
        .then((i) => String(i.state.subjects?.[m.subject] ?? 0))
        .catch((err: unknown) => `(${String(err)})`);
      out.push(`${stream} #${seq} ${m.subject} ${m.header?.get("Ado-Schema") ?? ""} at ${m.time.toISOString()} (by subject: ${bySubject}, counted ${counted})`);
    }
  }
  return out;
}

/** Every dead-letter record of the fixture's prefix. */
export async function deadLetters(f: Pick<ChaosFixture, "nc" | "jsm" | "topo">): Promise<DeadLetter[]> {
  const stream = f.topo.streams.dlq.name;
  const total = (await f.jsm.streams.info(stream)).state.messages;
  const consumer = await jetstream(f.nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const letters: DeadLetter[] = [];
  while (letters.length < total) {
    const m = await consumer.next({ expires: 5_000 });
    if (!m) break;
    letters.push(decode(SCHEMAS.DeadLetter, m.data, m.headers));
  }
  return letters;
}

export interface PromiseOptions {
  /**
   * Workers that may have been cut off from NATS without dying (a server restart): an
   * attempt they ran may have run twice. Every other duplicate breaks "an attempt runs once".
   */
  cutOff?: (workerId: string) => boolean;
}

/** Checks ado's promises after a scenario (see the file's comment), then stops every process. */
export async function verifyPromises(f: ChaosFixture, outcome: RunOutcome, opts: PromiseOptions = {}): Promise<void> {
  // Nothing is lost.
  expect(outcome.status, outcome.error).toBe("succeeded");
  expect(outcome.tasks.filter((t) => t.status !== "succeeded").map((t) => `${t.id}: ${t.status} ${t.error ?? ""}`)).toEqual([]);
  expect(outcome.tasks.map((t) => t.id).sort()).toEqual([...f.tasks].sort());
  await eventually(async () => Object.values(await streamCounts(f)).every((n) => n === 0), 15_000, "every work-queue stream empty").catch(async (err) => {
    throw new Error(`${(err as Error).message}: ${JSON.stringify(await streamCounts(f))}; left: ${(await leftovers(f)).join("; ")}`);
  });
  const files = gitOut(f.repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n");
  expect(files.sort()).toEqual(["README.md", ...f.tasks.map((id) => `${id}.txt`)].sort());
  expect(gitOut(f.repo.dir, "show", `${outcome.integrationBranch}:z.txt`)).toBe(f.tasks.filter((id) => /^r\d+$/.test(id)).join("\n"));

  // An attempt runs once, and the attempt that succeeded ran.
  const ran = (await executions(f.log)).filter((x) => x.runId === outcome.runId);
  const seen = new Map<string, Execution[]>();
  for (const x of ran) seen.set(`${x.task}#${x.attempt}`, [...(seen.get(`${x.task}#${x.attempt}`) ?? []), x]);
  const twice = [...seen.entries()].filter(([, xs]) => xs.length > 1 && !xs.some((x) => opts.cutOff?.(x.workerId)));
  expect(twice.map(([key, xs]) => `${key} ran ${xs.length} times (workers ${xs.map((x) => x.workerId).join(", ")})`)).toEqual([]);
  for (const t of outcome.tasks) expect(seen.has(`${t.id}#${t.attempts}`), `${t.id} succeeded with attempt ${t.attempts}, which never ran`).toBe(true);

  // The user's checkout is untouched.
  expect(await checkoutFingerprint(f.repo.dir)).toBe(f.repo.before);

  // No actor died: every process still running drains and exits 0; no agent is left.
  const codes = await f.cluster.stopAll();
  expect(codes, "exit codes of the processes still running at the end").toEqual(Object.fromEntries(Object.keys(codes).map((k) => [k, 0])));
  expect(await processesWith(f.log)).toEqual([]);
}
