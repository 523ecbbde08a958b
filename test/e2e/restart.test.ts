import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { JetStreamManager } from "@nats-io/jetstream";
import { describe, expect, it, onTestFailed } from "vitest";
import { READY_ACK_WAIT_MS } from "../../src/actors/balancer/balancer.js";
import { acceptRun, applyMergeResult, applyTaskResult, isEarly, type Effect } from "../../src/actors/scheduler/run-state.js";
import { AdoClient, type RunOutcome } from "../../src/runtime/client.js";
import { GraphDefSchema, type GraphInput } from "../../src/runtime/graph.js";
import type { RunId } from "../../src/runtime/ids.js";
import type { AdoEvent, MergeResult, TaskResult } from "../../src/runtime/messages.js";
import { consumers, openJetStream } from "../../src/runtime/topology.js";
import { AdoCluster, isRunning, processesWith, awaitAgentsGone } from "../helpers/cluster.js";
import { useTestServer, eventually, uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";

/**
 * Issue 3: "a scheduler, balancer or worker that dies and comes back loses nothing".
 * Every actor and worker runs as its own OS process (`ado actor`, `ado worker`) against
 * a real nats-server and a real git repository; the test SIGKILLs one of them mid-run
 * (no handler runs, nothing is drained or acked) and starts it again. Each task appends
 * `<task> <attempt>` to a log outside the repository when it starts, so the test counts
 * executions: a task that had finished must never run again.
 */

const ts = useTestServer("ado-restart-");

/** One test's installation: its own prefix, repository, worktrees, log and processes. */
interface Fixture {
  cluster: AdoCluster;
  client: AdoClient;
  jsm: JetStreamManager;
  repo: string;
  /** Each task appends `<task> <attempt>` here when it starts. Unique to the test, so it also marks its agents' command lines. */
  log: string;
  /** The run under test, once submitted, and its events as seen (printed if the test fails). */
  runId?: RunId;
  events: AdoEvent[];
  cleanup(): Promise<void>;
}

async function fixture(name: string): Promise<Fixture> {
  const dir = join(ts.scratch, name);
  await mkdir(dir, { recursive: true });
  const repo = await makeRepo();
  const topo = uniqueTopology();
  const cluster = new AdoCluster({
    ADO_SERVER: ts.url,
    ADO_PREFIX: topo.prefix,
    ADO_WORKTREE_DIR: join(dir, "wt"),
    // Fast heartbeats: the balancer drops a dead worker after 3 of them.
    ADO_HEARTBEAT_MS: "200",
  });
  const nc = await ts.connect(`restart-${name}`);
  const f: Fixture = {
    cluster,
    client: new AdoClient(nc, topo),
    jsm: await openJetStream(nc),
    repo: repo.dir,
    log: join(dir, "ran.log"),
    events: [],
    cleanup: async () => {
      cluster.killAll();
      await repo.cleanup();
    },
  };
  // What a failure needs explained: the events, the tasks not done, the streams, each process's output.
  onTestFailed(async () => {
    const seen = f.events.filter((e) => e.type !== "task.output").map((e) => `${e.at.slice(17, 23)} ${e.type}${"taskId" in e ? ` ${e.taskId}#${e.attempt}` : ""}`);
    const status = f.runId ? await f.client.status(f.runId).catch(() => undefined) : undefined;
    const open = status?.tasks.filter((t) => t.status !== "succeeded").map((t) => `${t.id}:${t.status}#${t.attempts}@${t.workerId ?? "-"}`);
    const streams: Record<string, number> = {};
    for (const [key, cfg] of Object.entries(topo.streams)) streams[key] = await streamMessages(f.jsm, cfg.name).catch(() => -1);
    console.log(`[${name}] events: ${seen.join(", ")}`);
    console.log(`[${name}] run ${status?.run.status}; tasks not succeeded: ${open?.join(" ")}; stream messages: ${JSON.stringify(streams)}`);
    for (const p of cluster.all) console.log(`[${name}] ${p.name} pid ${p.child.pid} exit ${p.child.exitCode ?? p.child.signalCode}:\n${p.output().slice(-4_000)}`);
  });
  return f;
}

/** The scheduler, balancer and merger, and two worker processes of two workers each. */
async function startAll(f: Fixture): Promise<void> {
  await Promise.all([
    f.cluster.actor("scheduler"),
    f.cluster.actor("balancer"),
    f.cluster.actor("merger"),
    f.cluster.worker("workers-a", 2),
    f.cluster.worker("workers-b", 2),
  ]);
}

/**
 * How long a whole run may take here. On a quiet machine the fan graph finishes in ~30 s;
 * on this 2-core machine at a load average of 30 its 40 merges (one at a time, each a few
 * git processes) took 2-3 s apiece and each test 140-175 s. The tests wait for
 * conditions, so a generous bound costs nothing when things go well.
 */
const RUN_MS = 300_000;

const ROOTS = 27;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const pad = (i: number) => String(i).padStart(2, "0");
const TASK_IDS = [...range(ROOTS).map((i) => `r${pad(i)}`), ...range(4).map((m) => `m${m}`), ...range(8).map((j) => `f${j}`), "z"];

/**
 * 40 tasks: 27 roots r00..r26; fan-in m0..m3, each needing six roots and concatenating
 * their files; fan-out f0..f7, two per fan-in; and z needing all of f0..f7. Every task
 * logs `<id> <attempt>` first, then writes `<id>.txt`. A dependent reads its
 * dependencies' files with `cat`, which fails (and so fails the run: one attempt only)
 * if its base commit does not hold every dependency's work.
 */
function fanGraph(log: string, sleep = (_id: string): number | string => 0.2): { graph: GraphInput; expectedZ: string } {
  const task = (id: string, body: string, needs: string[] = []) => ({
    id,
    run: `echo "${id} $ADO_ATTEMPT" >> ${log}; sleep ${sleep(id)}; ${body}`,
    needs,
  });
  const roots = range(ROOTS).map((i) => task(`r${pad(i)}`, `echo r${pad(i)} > r${pad(i)}.txt`));
  const fanIn = range(4).map((m) => {
    const deps = range(6).map((k) => `r${pad(m * 6 + k)}`);
    return task(`m${m}`, `cat ${deps.map((d) => `${d}.txt`).join(" ")} > m${m}.txt`, deps);
  });
  const fanOut = range(8).map((j) => task(`f${j}`, `{ cat m${j % 4}.txt; echo f${j}; } > f${j}.txt`, [`m${j % 4}`]));
  const join_ = task("z", `cat ${range(8).map((j) => `f${j}.txt`).join(" ")} > z.txt`, range(8).map((j) => `f${j}`));
  const expectedZ = range(8)
    .flatMap((j) => [...range(6).map((k) => `r${pad((j % 4) * 6 + k)}`), `f${j}`])
    .join("\n");
  return { graph: { name: "restart", tasks: [...roots, ...fanIn, ...fanOut, join_] }, expectedZ };
}

/** The `<task> <attempt>` lines the agents wrote, in order. */
async function executions(log: string): Promise<Array<{ task: string; attempt: number }>> {
  const text = await readFile(log, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [task, attempt] = line.split(" ");
      return { task: task!, attempt: Number(attempt) };
    });
}

/** Follows a run in the background, keeping every event; bounded so a stuck run fails the test. */
function follow(f: Fixture, runId: RunId, ms: number) {
  f.runId = runId;
  const events = f.events;
  const outcome = f.client.watch(runId, { onEvent: (e) => events.push(e), signal: AbortSignal.timeout(ms) });
  outcome.catch(() => undefined); // awaited by the test; a rejection before then is not unhandled
  const count = (type: AdoEvent["type"]) => events.filter((e) => e.type === type).length;
  return { events, outcome, count };
}

/** Messages stored in a stream (for the results stream: results no scheduler has taken yet). */
async function streamMessages(jsm: JetStreamManager, stream: string): Promise<number> {
  return (await jsm.streams.info(stream)).state.messages;
}

/**
 * What every restart test ends with: the run succeeded; each task ran exactly the
 * attempts expected (attempt 1 only, unless listed); the integration branch holds every
 * task's file and the fan-in's content; every process still running drains on SIGINT and
 * exits 0; the killed ones are gone; and no agent is left running.
 */
async function verify(f: Fixture, outcome: RunOutcome, expectedZ: string, attempts: Record<string, number[]> = {}): Promise<void> {
  expect(outcome.status, outcome.error).toBe("succeeded");
  const ran = await executions(f.log);
  const byTask = new Map<string, number[]>();
  for (const { task, attempt } of ran) byTask.set(task, [...(byTask.get(task) ?? []), attempt]);
  for (const id of TASK_IDS) expect(byTask.get(id), `executions of ${id}`).toEqual(attempts[id] ?? [1]);
  expect(ran).toHaveLength(TASK_IDS.reduce((n, id) => n + (attempts[id]?.length ?? 1), 0));
  expect(outcome.tasks.filter((t) => t.status !== "succeeded")).toEqual([]);

  const files = gitOut(f.repo, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n");
  expect(files.sort()).toEqual(["README.md", ...TASK_IDS.map((id) => `${id}.txt`)].sort());
  expect(gitOut(f.repo, "show", `${outcome.integrationBranch}:z.txt`)).toBe(expectedZ);

  const codes = await f.cluster.stopAll();
  expect(Object.values(codes).every((c) => c === 0), JSON.stringify(codes)).toBe(true);
  for (const p of f.cluster.all) expect(await isRunning(p.child.pid!), `${p.name} (pid ${p.child.pid})`).toBe(false);
  expect(await processesWith(f.log)).toEqual([]);
}

describe("restart - the scheduler process is SIGKILLed mid-run", () => {
  it("twice, while results arrive and right after a fan-in task is queued: the run completes, every task ran once", async () => {
    const f = await fixture("scheduler");
    try {
      await startAll(f);
      const { graph, expectedZ } = fanGraph(f.log);
      const { runId } = await f.client.submit({ graph, repo: f.repo });
      const run = follow(f, runId, RUN_MS);

      // Roots running and results coming back: kill it.
      await eventually(async () => run.count("task.merged") >= 3 && (await executions(f.log)).length >= 6, 60_000, "results arriving");
      await f.cluster.kill("scheduler");
      // Workers go on, and their results pile up unread.
      await eventually(async () => (await streamMessages(f.jsm, f.client.topo.streams.results.name)) >= 2, 60_000, "results waiting for a scheduler");
      const merged = run.count("task.merged");
      await f.cluster.actor("scheduler");
      // The new process picks the run up from KV and the results from the stream.
      await eventually(() => run.count("task.merged") > merged, 60_000, "the new scheduler merging");

      // Again, right after it released a fan-in task (its decision may not be stored
      // yet), and started again at once.
      await eventually(() => run.events.some((e) => e.type === "task.queued" && e.taskId.startsWith("m")), 120_000, "a fan-in task queued");
      await f.cluster.kill("scheduler");
      await f.cluster.actor("scheduler");

      await verify(f, await run.outcome, expectedZ);
    } finally {
      await f.cleanup();
    }
  }, RUN_MS + 60_000);
});

/**
 * The balancer's ready consumer's ack wait (src/actors/balancer/balancer.ts): a dead
 * balancer's held tasks come back only after it, so the run stalls that long.
 */
const BALANCER_ACK_WAIT_MS = READY_ACK_WAIT_MS;

describe("restart - the balancer process is SIGKILLed mid-run", () => {
  it("with ready tasks held and tasks running: the new process dispatches what the dead one held, every task ran once", async () => {
    const f = await fixture("balancer");
    try {
      await startAll(f);
      const { graph, expectedZ } = fanGraph(f.log);
      const { runId } = await f.client.submit({ graph, repo: f.repo });
      const run = follow(f, runId, BALANCER_ACK_WAIT_MS + RUN_MS);

      // Four roots running, the other 23 held by the balancer (unacked): kill it.
      await eventually(async () => (await executions(f.log)).length >= 4, 60_000, "tasks running");
      await f.cluster.kill("balancer");
      const ranAtKill = (await executions(f.log)).length;
      // What was running finishes and merges; nothing new is dispatched.
      await eventually(() => run.count("task.merged") >= ranAtKill, 60_000, "running tasks merged");
      const ranBefore = (await executions(f.log)).length;

      await f.cluster.actor("balancer");
      await eventually(async () => (await executions(f.log)).length > ranBefore, BALANCER_ACK_WAIT_MS + 30_000, "a held task dispatched by the new balancer");

      await verify(f, await run.outcome, expectedZ);
    } finally {
      await f.cleanup();
    }
  }, BALANCER_ACK_WAIT_MS + RUN_MS + 60_000);
});

describe("restart - a worker process is SIGKILLed mid-task", () => {
  /**
   * Its agent dies with it (the reaper). The stealer sees the worker silent for 3
   * heartbeats, finds attempt 1 of r05 still on the dead worker's subject and claimed by
   * it, and reports it interrupted; the scheduler issues attempt 2, which a live worker
   * runs. Every other task ran once; nothing is left on the dead worker's subject.
   */
  it("its agent is stopped with it; the stealer reports its attempt lost and attempt 2 runs elsewhere; the run completes", async () => {
    const f = await fixture("worker");
    try {
      // One worker per process, so killing a process kills exactly one running task.
      await Promise.all([
        f.cluster.actor("scheduler"),
        f.cluster.actor("balancer"),
        f.cluster.actor("merger"),
        f.cluster.actor("stealer"),
        f.cluster.worker("worker-1", 1),
        f.cluster.worker("worker-2", 1),
        f.cluster.worker("worker-3", 1),
      ]);
      // r05's first attempt runs long enough to be killed in the middle, and to outlive
      // the test if it survived its worker; its second is as short as the others.
      const { graph, expectedZ } = fanGraph(f.log, (id) => (id === "r05" ? `$([ "$ADO_ATTEMPT" = 1 ] && echo 60 || echo 0.2)` : 0.2));
      const { runId } = await f.client.submit({ graph, repo: f.repo });
      const run = follow(f, runId, RUN_MS);

      const started = await eventually(
        () => run.events.find((e): e is Extract<AdoEvent, { type: "task.started" }> => e.type === "task.started" && e.taskId === "r05"),
        60_000,
        "r05 started",
      );
      await eventually(async () => (await executions(f.log)).some((x) => x.task === "r05"), 15_000, "r05's agent running");
      const victim = f.cluster.all.find((p) => p.workerIds.includes(started.workerId))!;
      await f.cluster.kill(victim.name);
      // Its agent does not outlive it: the reaper terminates the group (KILL after 2 s).
      await awaitAgentsGone('echo "r05 ', 15_000); // the dead worker's agent, stopped by its reaper
      // The worker comes back (a new process, so a new worker id).
      await f.cluster.worker("worker-4", 1);

      // The stealer reports the attempt lost, naming the dead worker; attempt 2 starts soon after.
      const lost = await eventually(() => run.events.find((e) => e.type === "worker.lost" && e.taskId === "r05"), 30_000, "worker.lost for r05");
      expect(lost).toMatchObject({ attempt: 1, workerId: started.workerId, outcome: "interrupted" });
      await eventually(() => run.events.some((e) => e.type === "task.started" && e.taskId === "r05" && e.attempt === 2), 30_000, "r05 attempt 2 started");

      await verify(f, await run.outcome, expectedZ, { r05: [1, 2] });
      // Nothing left behind: no work on any worker's subject, the dead worker's consumer gone.
      expect(await streamMessages(f.jsm, f.client.topo.streams.work.name)).toBe(0);
      await expect(f.jsm.consumers.info(f.client.topo.streams.work.name, consumers.work(started.workerId))).rejects.toThrow(/consumer not found/);
    } finally {
      await f.cleanup();
    }
  }, RUN_MS + 60_000);
});

/**
 * The two scheduler rules the restart tests depend on, as pure decisions (see
 * run-state.ts): a result that comes back before the stored state knows its work was
 * issued waits instead of being dropped, and a merge result that arrives late never
 * moves the run's integration commit backwards.
 */
describe("restart - scheduler decisions after a crash between publishing and saving", () => {
  const NOW = "2026-01-01T00:00:00.000Z";
  const sha = (c: string) => c.repeat(40);
  const accept = (tasks: Array<{ id: string; needs?: string[] }>) => {
    const graph = GraphDefSchema.parse({ tasks: tasks.map((t) => ({ ...t, run: "true" })) });
    const outcome = acceptRun({ type: "run.submit", runId: "r1", graph, repo: "/repo", baseCommit: sha("b"), submittedAt: NOW }, NOW);
    if (!outcome.ok) throw new Error(outcome.reason);
    return outcome.state;
  };
  const done = (taskId: string, attempt = 1): TaskResult => ({
    type: "task.result",
    runId: "r1",
    taskId,
    attempt,
    workerId: "w1",
    status: "succeeded",
    commit: sha("c"),
    files: [`${taskId}.txt`],
    startedAt: NOW,
    finishedAt: NOW,
    outputTail: "",
    summary: "",
    costUsd: 0,
  });
  const merged = (taskId: string, commit: string): MergeResult => ({ type: "merge.result", runId: "r1", taskId, status: "merged", integrationCommit: commit, files: [], message: "", round: 0 });
  const readyBase = (effects: Effect[], taskId: string) => effects.flatMap((e) => (e.type === "ready" && e.work.taskId === taskId ? [e.work.baseCommit] : []));

  it("a result for work the stored state has not issued is early; once the state catches up it applies", () => {
    const state = accept([{ id: "a" }, { id: "b", needs: ["a"] }]);
    applyTaskResult(state, done("a"), NOW); // a: merging (stored)
    // The dead scheduler applied a's merge and released b, but did not store it: b's
    // result and the merge result of b's merge are both early.
    expect(isEarly(state, done("b"))).toBe(true);
    expect(isEarly(state, merged("b", sha("e")))).toBe(true);
    // The redelivered merge result of a releases b; now b's result applies.
    expect(readyBase(applyMergeResult(state, merged("a", sha("d")), NOW, 10), "b")).toEqual([sha("d")]);
    expect(isEarly(state, done("b"))).toBe(false);
    expect(isEarly(state, merged("b", sha("e")))).toBe(true); // b's merge not asked for yet
    applyTaskResult(state, done("b"), NOW);
    expect(isEarly(state, merged("b", sha("e")))).toBe(false);
    // Not early: stale ones (an older attempt than the one queued, a task already done).
    expect(isEarly(state, done("a"))).toBe(false);
  });

  it("a late merge result does not move the integration commit back: a dependent gets the newest", () => {
    const state = accept([{ id: "x" }, { id: "y" }, { id: "z", needs: ["x", "y"] }]);
    applyTaskResult(state, done("x"), NOW);
    applyTaskResult(state, done("y"), NOW);
    // y was merged after x (results-stream sequence 20 > 10), but x's result comes last.
    applyMergeResult(state, merged("y", sha("9")), NOW, 20);
    const effects = applyMergeResult(state, merged("x", sha("8")), NOW, 10);
    expect(readyBase(effects, "z")).toEqual([sha("9")]);
    expect(state.run.integrationCommit).toBe(sha("9"));
  });
});
