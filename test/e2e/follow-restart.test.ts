/**
 * The long-lived followers of the events stream after a nats-server restart (or a lost
 * consumer): the dashboard's run and task feeds and `ado logs --follow`
 * (src/runtime/follow.ts).
 *
 * nats.js recovers a lost ordered consumer by itself, but after a failed check of it
 * (JetStream not ready yet after the restart) it waits `expires`, 30 s, before it looks
 * again. The waits below are bounded under that on purpose: a follower left to nats.js
 * fails them; one that follows on by itself from the last message it handled passes.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RunFeed, TaskFeed, type FeedMessage, type TaskMessage } from "../../src/dashboard/feed.js";
import { encode } from "../../src/runtime/codec.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import type { Topology } from "../../src/runtime/topology.js";
import { stagedServer } from "../helpers/chaos.js";
import { ADO_BIN } from "../helpers/cli.js";
import { eventually } from "../helpers/nats.js";

/** Under nats.js's own recovery (30 s after a failed check), with room for a slow machine. */
const PROMPTLY = 20_000;

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "ado-follow-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true, maxRetries: 10 });
});

/** A restartable server of the test's own, provisioned; events published idempotently (retried across the restart). */
async function staged() {
  const base = await stagedServer(await mkdtemp(join(scratch, "s-")));
  const { nats, topo, connect } = base;
  const js = jetstream(await connect("publisher"));
  let n = 0;
  return {
    ...base,
    /** Publishes an event (retried until the server takes it; a message id keeps a retry from storing it twice); its sequence. */
    async publish(e: AdoEvent): Promise<number> {
      const { data, headers } = encode(SCHEMAS.AdoEvent, e);
      const subject = topo.subjects.event({ type: e.type, runId: e.runId, taskId: "taskId" in e ? e.taskId : undefined });
      const msgID = `test-${++n}`;
      return (await eventually(() => js.publish(subject, data, { headers, msgID }).catch(() => undefined), 60_000, `event ${n} published`)).seq;
    },
    /** A plain restart: killed, started again on the same store and port. */
    async restart() {
      await nats.kill();
      await nats.restart();
    },
    /** Restarts the server, its store copied aside first. */
    keep: () => nats.keepCopy(),
    /** Restarts the server with the events stream's messages as they were at `keep` (a store that lost its last writes). */
    rewrite: () => nats.restoreMessages(topo.streams.events.name),
  };
}

const RUN = "r20260101t000000-follow1";
const at = () => new Date().toISOString();
const accepted = (tasks: string[]): AdoEvent => ({ type: "run.accepted", runId: RUN, at: at(), name: "follow", tasks: tasks.map((id) => ({ id, needs: [], priority: "normal" as const })), queued: tasks });
const started = (taskId: string): AdoEvent => ({ type: "task.started", runId: RUN, taskId, attempt: 1, at: at(), workerId: "w1" });
const output = (taskId: string, data: string): AdoEvent => ({ type: "task.output", runId: RUN, taskId, attempt: 1, at: at(), stream: "stdout", data });
const succeeded = (taskId: string): AdoEvent => ({ type: "task.succeeded", runId: RUN, taskId, attempt: 1, at: at(), workerId: "w1", files: [], startedAt: at(), finishedAt: at() });

/** A run feed and a task feed (of t1) on a connection of their own, as the dashboard opens them for a browser. */
async function feeds(s: Awaited<ReturnType<typeof staged>>, topo: Topology) {
  const nc = await s.connect("dashboard");
  const js = jetstream(nc);
  const run: FeedMessage[] = [];
  const task: TaskMessage[] = [];
  const runFeed = new RunFeed({ nc, js, snapshots: s.kv.snapshots, runs: s.kv.runs, topo, runId: RUN, log: silentLogger, send: (m) => run.push(m), batchMs: 20 });
  const taskFeed = new TaskFeed({ nc, js, topo, runId: RUN, taskId: "t1", log: silentLogger, send: (m) => task.push(m) });
  await runFeed.start();
  await taskFeed.start();
  return {
    /** The run as the page has it now: the last message's run and every task's latest view. */
    page() {
      const tasks = new Map<string, string>();
      for (const m of run) for (const t of m.tasks) tasks.set(t.id, t.status);
      return { seq: run.at(-1)?.run.seq ?? 0, tasks, states: run.filter((m) => m.type === "state").length };
    },
    outputs: () => task.flatMap((m) => (m.type === "output" ? [m.data] : [])),
    starts: () => task.filter((m) => m.type === "start").length,
    async close() {
      await runFeed.close();
      await taskFeed.close();
    },
  };
}

describe("following the events stream across a nats-server restart", () => {
  it("the dashboard's run and task feeds get what is published after a restart promptly, each event once and in order", async () => {
    const s = await staged();
    const { topo } = s;
    const f = await feeds(s, topo).catch(async (err) => {
      await s.close();
      throw err;
    });
    try {
      await s.publish(accepted(["t1", "t2"]));
      await s.publish(started("t1"));
      await s.publish(output("t1", "a\n"));
      await eventually(() => f.page().seq === 3 && f.outputs().length === 1, 20_000, "the feeds at the third event");

      await s.restart();
      const upAt = Date.now();
      await s.publish(output("t1", "b\n"));
      await s.publish(started("t2"));
      await s.publish(output("t1", "c\n"));
      const last = await s.publish(succeeded("t1"));
      const publishedAt = Date.now();
      await eventually(() => f.page().seq === last, PROMPTLY, `the run feed at sequence ${last}, soon after the restart`);
      await eventually(() => f.outputs().length === 3, PROMPTLY, "the task feed's output after the restart, soon after it");
      console.info(`follow: server up again -> events published ${publishedAt - upAt} ms -> both feeds had them ${Date.now() - publishedAt} ms later`);
      const page = f.page();
      expect(Object.fromEntries(page.tasks)).toEqual({ t1: "succeeded", t2: "running" });
      // Through the feeds it had: no second state (the page would have been reloaded), no output twice.
      await new Promise((r) => setTimeout(r, 500));
      expect(page.states).toBe(1);
      expect(f.starts()).toBe(1);
      expect(f.outputs()).toEqual(["a\n", "b\n", "c\n"]);
    } finally {
      await f.close();
      await s.close();
    }
  }, 120_000);

  it("a task feed follows on by time after a restart on a store that lost its last writes (new events at sequences it had passed)", async () => {
    const s = await staged();
    const { topo } = s;
    const f = await feeds(s, topo).catch(async (err) => {
      await s.close();
      throw err;
    });
    try {
      await s.publish(accepted(["t1"]));
      await s.publish(output("t1", "a\n"));
      await eventually(() => f.outputs().length === 1, 20_000, "a");
      await s.keep();
      await s.publish(output("t1", "b\n"));
      expect(await s.publish(output("t1", "c\n"))).toBe(4);
      await eventually(() => f.outputs().length === 3, PROMPTLY, "b and c");
      await s.rewrite();
      // d takes sequence 3, which the feed had passed.
      expect(await s.publish(output("t1", "d\n"))).toBe(3);
      const last = await s.publish(succeeded("t1"));
      await eventually(() => f.outputs().length === 4, PROMPTLY, "d, at a sequence the feed had passed");
      await eventually(() => f.page().seq === last && f.page().tasks.get("t1") === "succeeded", PROMPTLY, "the run feed's fold on the rewritten stream");
      await new Promise((r) => setTimeout(r, 500));
      expect(f.outputs()).toEqual(["a\n", "b\n", "c\n", "d\n"]);
    } finally {
      await f.close();
      await s.close();
    }
  }, 120_000);

  it("ado logs --follow prints what a task printed after a restart, and after its consumer was lost, promptly; and returns when the task ends", async () => {
    const s = await staged();
    const { topo } = s;
    const home = await mkdtemp(join(scratch, "home-"));
    const env = { ...process.env, ADO_SERVER: "", ADO_LOG_LEVEL: "warn", XDG_STATE_HOME: join(home, "state"), XDG_CACHE_HOME: join(home, "cache") };
    try {
      await s.publish(accepted(["t1"]));
      await s.publish(started("t1"));
      await s.publish(output("t1", "first\n"));
      const child = spawn(process.execPath, [ADO_BIN, "logs", `${RUN}/t1`, "--follow", "--server", s.nats.url, "--prefix", topo.prefix], { env, cwd: home, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (err += d));
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      try {
        await eventually(() => out === "first\n", 30_000, "the first line");
        await s.restart();
        await s.publish(output("t1", "second\n"));
        await eventually(() => out === "first\nsecond\n", PROMPTLY, `the line printed after the restart, soon after it (stderr: ${err})`);
        // Its consumer lost without a reconnect (deleted): nats.js would wait for two missed heartbeats (30 s).
        const jsm = await jetstreamManager(await s.connect("operator"));
        for await (const c of jsm.consumers.list(topo.streams.events.name)) await jsm.consumers.delete(topo.streams.events.name, c.name);
        await s.publish(output("t1", "third\n"));
        await eventually(() => out === "first\nsecond\nthird\n", PROMPTLY, `the line printed after its consumer was deleted, soon after it (stderr: ${err})`);
        await s.publish(succeeded("t1"));
        await eventually(() => child.exitCode !== null, PROMPTLY, "ado logs returned once the task ended");
        expect(await exited, err).toBe(0);
        expect(out).toBe("first\nsecond\nthird\n");
      } finally {
        child.kill("SIGKILL");
      }
    } finally {
      await s.close();
    }
  }, 120_000);
});
