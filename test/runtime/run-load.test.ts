import { jetstream } from "@nats-io/jetstream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { publishRun, publishWithSnapshot, runEvents } from "../../bench/attach-stream.js";
import { AdoClient } from "../../src/runtime/client.js";
import { encodeValue } from "../../src/runtime/codec.js";
import { asRunId } from "../../src/runtime/ids.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { snapshotKey, snapshotPartKey } from "../../src/runtime/names.js";
import { loadRun, runState } from "../../src/runtime/run-load.js";
import { RunFold } from "../../src/runtime/run-fold.js";
import { snapshotOf, writeSnapshot } from "../../src/runtime/run-snapshot.js";
import { provisioned, useTestServer } from "../helpers/nats.js";

const ts = useTestServer("ado-run-load-");

/** Everything a reader sees of a fold, but what a snapshot does not keep per task: needs (the run record has them), commit and tokens (the task events and run.completed do). */
const view = (f: RunFold) => ({
  run: { id: f.runId, name: f.name, status: f.status, paused: f.paused, seq: f.seq, events: f.events, complete: f.complete, attention: f.attention, acceptedAt: f.acceptedAt, finishedAt: f.finishedAt, head: f.integrationCommit, base: f.baseCommit, branch: f.tracker.integrationBranch, cost: f.costUsd.toFixed(6), counts: f.counts() },
  tasks: f.ids().map((id) => {
    const { needs: _needs, commit: _commit, tokens: _tokens, ...t } = f.task(id)!;
    return JSON.parse(JSON.stringify(t)) as unknown;
  }),
});

/** A logger whose debug lines are kept, to check what it says. */
function debugLog() {
  const lines: string[] = [];
  return { log: pino({ level: "debug" }, { write: (s: string) => void lines.push(s) }), lines };
}

async function setup(runId: string, shape = { tasks: 40, events: 2_500 }) {
  const nc = await ts.connect(`run-load-${runId}`);
  const { kv, topo } = await provisioned(nc);
  const js = jetstream(nc);
  // Another run's events interleave in the stream, as they do on a shared server.
  await publishRun(js, topo, runEvents({ runId: `${runId}x`, tasks: 5, events: 100 }));
  return { nc, js, kv, topo, shape: { runId, ...shape } };
}

describe("run state from a snapshot and its deltas", () => {
  it("run load - a snapshot and the events after it give what a replay of every event gives, reading only those events", { timeout: 120_000 }, async () => {
    const { nc, js, kv, topo, shape } = await setup("r1");
    try {
      const pub = await publishWithSnapshot(js, topo, kv.snapshots, shape, 300);
      const replay = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r1", useSnapshot: false });
      expect(replay.from).toBe("replay");
      expect(replay.read).toBe(pub.count);
      const loaded = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r1" });
      expect(loaded.from).toBe("snapshot");
      expect(loaded.read).toBe(300);
      expect(view(loaded.fold)).toEqual(view(replay.fold));
      expect(loaded.fold.seq).toBe(pub.lastSeq);
      // A live run: some tasks still run, with text for what they do.
      expect(loaded.fold.counts().running).toBeGreaterThan(0);
      const running = loaded.fold.ids().map((id) => loaded.fold.task(id)!).filter((t) => t.status === "running");
      for (const t of running) expect(t.activity).toMatch(/^(Bash: npm test|Editing src\/)/);
    } finally {
      await nc.drain();
    }
  });

  it("run load - a stale snapshot (events after it of this run and others) still gives the replay's state", { timeout: 120_000 }, async () => {
    const { nc, js, kv, topo, shape } = await setup("r2");
    try {
      // Taken early in the run: most of the run comes after it.
      await publishWithSnapshot(js, topo, kv.snapshots, shape, 2_000);
      await publishRun(js, topo, runEvents({ runId: "r2y", tasks: 3, events: 50 }));
      const replay = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r2", useSnapshot: false });
      const loaded = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r2" });
      expect(loaded.from).toBe("snapshot");
      expect(loaded.read).toBe(2_000);
      expect(view(loaded.fold)).toEqual(view(replay.fold));
      // Nothing after its last event: nothing to read, no wait.
      const done = new RunFold();
      const again = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r2", onEvent: (e, seq) => done.apply(e, seq) });
      expect(again.read).toBe(2_000);
    } finally {
      await nc.drain();
    }
  });

  it("run load - a run whose events left an intact stream (expired, purged): its snapshot alone, nothing replayed", { timeout: 120_000 }, async () => {
    const { nc, js, kv, topo, shape } = await setup("r4");
    try {
      // The snapshot holds the whole run; other runs publish after it.
      const pub = await publishWithSnapshot(js, topo, kv.snapshots, shape, 0);
      await publishRun(js, topo, runEvents({ runId: "r4y", tasks: 3, events: 50 }));
      const before = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r4" });
      await (await js.jetstreamManager()).streams.purge(topo.streams.events.name, { filter: topo.subjects.runEvents("r4") });
      const loaded = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r4" });
      expect(loaded.from).toBe("snapshot");
      expect(loaded.read).toBe(0);
      expect(loaded.fold.seq).toBe(pub.lastSeq);
      expect(view(loaded.fold)).toEqual(view(before.fold));
    } finally {
      await nc.drain();
    }
  });

  it("run load - a missing, malformed, torn, foreign, partial or too-new snapshot: every event is replayed, and the debug log says why", { timeout: 180_000 }, async () => {
    const { nc, js, kv, topo, shape } = await setup("r3");
    try {
      const pub = await publishWithSnapshot(js, topo, kv.snapshots, shape, 500);
      const replay = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r3", useSnapshot: false });
      const expectReplay = async (why: RegExp) => {
        const { log, lines } = debugLog();
        const loaded = await loadRun({ js, snapshots: kv.snapshots, topo, runId: "r3", log });
        expect(loaded.from).toBe("replay");
        expect(loaded.why).toMatch(why);
        expect(loaded.read).toBe(pub.count);
        expect(view(loaded.fold)).toEqual(view(replay.fold));
        expect(lines.some((l) => l.includes("replaying the run's events instead of its snapshot") && why.test(JSON.parse(l).why as string))).toBe(true);
      };
      const full = new RunFold();
      for (const e of runEvents(shape)) full.apply(e);
      const good = snapshotOf(full);

      await kv.snapshots.delete(snapshotKey("r3"));
      await expectReplay(/no snapshot/);

      await kv.snapshots.put(snapshotKey("r3"), new TextEncoder().encode("{not a snapshot"));
      await expectReplay(/unreadable/);

      // A head that names parts, one of which is garbage.
      await writeSnapshot(kv.snapshots, full, new Date(), 2_000);
      await kv.snapshots.put(snapshotPartKey("r3", 1), new TextEncoder().encode("garbage"));
      await expectReplay(/unreadable/);

      // A head whose parts are of another sequence (a write in between that never finished).
      await writeSnapshot(kv.snapshots, full, new Date(), 2_000);
      const head = SCHEMAS.RunSnapshot.schema.parse(JSON.parse(JSON.stringify({ ...good, seq: good.seq + 1, tasks: { ...good.tasks, ids: [], status: [], attempts: [], started: [], finished: [], worker: [], cost: [], activity: [], error: [], waiting: [], notes: [] }, parts: 2 })));
      await kv.snapshots.put(snapshotKey("r3"), encodeValue(SCHEMAS.RunSnapshot, head));
      await expectReplay(/kept changing/);

      await kv.snapshots.put(snapshotKey("r3"), encodeValue(SCHEMAS.RunSnapshot, { ...good, runId: "other" }));
      await expectReplay(/another run/);

      await kv.snapshots.put(snapshotKey("r3"), encodeValue(SCHEMAS.RunSnapshot, { ...good, complete: false }));
      await expectReplay(/middle/);

      await kv.snapshots.put(snapshotKey("r3"), encodeValue(SCHEMAS.RunSnapshot, { ...good, seq: pub.lastSeq + 1_000 }));
      await expectReplay(/past the stream's last/);
    } finally {
      await nc.drain();
    }
  });
});

describe("watch from a loaded state (ado attach)", () => {
  it("run load - a watch from the loaded state sees only later events, and its outcome has every task", { timeout: 120_000 }, async () => {
    const { nc, js, kv, topo } = await setup("w1");
    try {
      const client = new AdoClient(nc, topo);
      const shape = { runId: "w1", tasks: 30, events: 1_500, running: 30 };
      const all = [...runEvents(shape)];
      // The run so far, its snapshot 200 events back.
      await publishWithSnapshot(js, topo, kv.snapshots, shape, 200);
      const state = await runState(client, "w1");
      expect(state.from).toBe("snapshot");
      const seen: AdoEvent[] = [];
      const watching = client.watch(asRunId("w1"), { from: { seq: state.fold.seq, tracker: state.fold.tracker.copy() }, onEvent: (e) => seen.push(e) });
      // What happens next: every task succeeds, then the run completes.
      const next: AdoEvent[] = [];
      const at = new Date().toISOString();
      for (const id of state.fold.ids()) {
        next.push({ type: "task.succeeded", runId: "w1", taskId: id, attempt: state.fold.task(id)!.attempts || 1, at, workerId: "w1", files: [], startedAt: at, finishedAt: at });
      }
      next.push({ type: "run.completed", runId: "w1", at, status: "succeeded", integrationBranch: "ado/w1/integration", counts: {}, tasks: [] });
      await publishRun(js, topo, next);
      const outcome = await watching;
      expect(outcome.status).toBe("succeeded");
      expect(seen.map((e) => e.type)).toEqual(next.map((e) => e.type));
      expect(outcome.tasks).toHaveLength(30);
      expect(outcome.tasks.every((t) => t.status === "succeeded")).toBe(true);
      expect(all.length).toBeGreaterThan(1_000);
    } finally {
      await nc.drain();
    }
  });

  it("run load - a run that waits for a person, or has ended, is known at once from the loaded state", { timeout: 120_000 }, async () => {
    const { nc, js, kv, topo } = await setup("w2");
    try {
      const client = new AdoClient(nc, topo);
      const shape = { runId: "w2", tasks: 10, events: 400, running: 0 };
      await publishWithSnapshot(js, topo, kv.snapshots, shape, 0);
      const at = new Date().toISOString();
      await publishRun(js, topo, [
        { type: "run.needs_attention", runId: "w2", at, round: 1, tasks: [{ taskId: "t3", hitlId: "w2.t3", message: "conflict in a.txt" }] },
        // Something after the stop: the watch must not wait for yet another event.
        { type: "task.output", runId: "w2", taskId: "t4", attempt: 1, at, stream: "stderr", data: "late line\n" },
      ]);
      const waiting = await runState(client, "w2");
      expect(waiting.fold.status).toBe("needs_attention");
      expect(waiting.waiting?.tasks[0]?.hitlId).toBe("w2.t3");
      const seen: AdoEvent[] = [];
      const stopped = await client.watch(asRunId("w2"), { from: { seq: waiting.fold.seq, tracker: waiting.fold.tracker.copy(), ...(waiting.waiting ? { waiting: waiting.waiting } : {}) }, onEvent: (e) => seen.push(e) });
      expect(stopped.status).toBe("needs_attention");
      expect(stopped.attention?.[0]?.taskId).toBe("t3");
      expect(seen).toEqual([]);

      await publishRun(js, topo, [
        { type: "run.continued", runId: "w2", at, round: 1 },
        { type: "run.completed", runId: "w2", at, status: "succeeded", integrationBranch: "ado/w2/integration", counts: {}, tasks: [] },
      ]);
      const ended = await runState(client, "w2");
      const outcome = await client.watch(asRunId("w2"), { from: { seq: ended.fold.seq, tracker: ended.fold.tracker.copy() }, onEvent: (e) => seen.push(e) });
      expect(outcome.status).toBe("succeeded");
      expect(outcome.tasks).toHaveLength(10);
      expect(seen).toEqual([]);
    } finally {
      await nc.drain();
    }
  });
});
