import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { RunFold } from "../../src/runtime/run-fold.js";
import { foldOf, SNAPSHOT_PART_READ, SNAPSHOT_READ, snapshotOf, splitSnapshot } from "../../src/runtime/run-snapshot.js";
import { decode } from "../../src/runtime/codec.js";
import { SCHEMAS, TaskStatus, type AdoEvent } from "../../src/runtime/messages.js";

const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const sha = (c: string) => c.repeat(40);
const ev = (e: Record<string, unknown>): AdoEvent => ({ runId: "r1", attempt: 1, ...e }) as unknown as AdoEvent;

/** A run of `n` tasks (t1 needs t0, ...) with a bit of everything: retries, output, pause, costs, a conflict, a lost worker. */
function history(n: number): AdoEvent[] {
  const ids = Array.from({ length: n }, (_, i) => `t${i}`);
  const out: AdoEvent[] = [
    ev({ type: "run.accepted", at: at(0), name: "demo", tasks: ids.map((id, i) => ({ id, needs: i % 3 === 2 ? [ids[i - 1]] : [], priority: "normal" })), queued: ids.filter((_, i) => i % 3 !== 2), integrationBranch: "ado/r1/integration", baseCommit: sha("0") }),
  ];
  ids.forEach((id, i) => {
    const s = i + 1;
    out.push(ev({ type: "task.started", taskId: id, at: at(s), workerId: `w${i % 4}` }));
    out.push(ev({ type: "task.output", taskId: id, at: at(s), stream: "stdout", data: `working on ${id}\n\x1b[31mred\x1b[0m line\n` }));
    if (i % 5 === 0) out.push(ev({ type: "agent.usage", taskId: id, at: at(s), seq: 0, inputTokens: 10, outputTokens: 5, costUsd: 0.25, costSource: "reported" }));
    if (i % 7 === 3) {
      out.push(ev({ type: "task.paused", taskId: id, at: at(s), workerId: "w1" }));
      out.push(ev({ type: "task.resumed", taskId: id, at: at(s + 0.5), workerId: "w1" }));
    }
    if (i % 4 === 1) {
      out.push(ev({ type: "task.failed", taskId: id, at: at(s + 1), workerId: "w1", error: "exit 1", willRetry: true, outputTail: "boom\n", startedAt: at(s), finishedAt: at(s + 1), costUsd: 0.1 }));
      out.push(ev({ type: "task.queued", taskId: id, attempt: 2, at: at(s + 2) }));
      out.push(ev({ type: "task.waiting", taskId: id, attempt: 2, at: at(s + 2), reason: "no worker has label gpu", workers: 2 }));
      out.push(ev({ type: "worker.lost", taskId: id, attempt: 2, at: at(s + 2), workerId: "w9", outcome: "requeued", reason: "dead", archiveRef: `refs/ado/attempts/r1/${id}/2` }));
      out.push(ev({ type: "task.started", taskId: id, attempt: 2, at: at(s + 3), workerId: "w2" }));
    }
    const attempt = i % 4 === 1 ? 2 : 1;
    if (i === 6) {
      out.push(ev({ type: "task.succeeded", taskId: id, attempt, at: at(s + 4), workerId: "w1", commit: sha("c"), files: ["a.txt"], startedAt: at(s), finishedAt: at(s + 4), costUsd: 0.5 }));
      out.push(ev({ type: "merge.conflict", taskId: id, attempt, at: at(s + 5), files: ["a.txt"], message: "conflict in a.txt" }));
      out.push(ev({ type: "merge.hitl_required", taskId: id, attempt, at: at(s + 5), hitlId: `r1.${id}`, round: 1, reason: "conflict", files: ["a.txt"], message: "conflict in a.txt" }));
      out.push(ev({ type: "run.needs_attention", at: at(s + 6), round: 1, tasks: [{ taskId: id, hitlId: `r1.${id}`, message: "conflict" }] }));
      out.push(ev({ type: "run.continued", at: at(s + 7), round: 1 }));
      out.push(ev({ type: "merge.resolved", taskId: id, attempt, at: at(s + 7), paths: [{ path: "a.txt", by: "theirs" }], integrationCommit: sha("d") }));
      out.push(ev({ type: "task.merged", taskId: id, attempt, at: at(s + 7), integrationCommit: sha("d") }));
    } else if (i % 9 === 8) {
      out.push(ev({ type: "task.failed", taskId: id, attempt, at: at(s + 4), workerId: "w1", error: "exit 2", willRetry: false, outputTail: "tail\n", startedAt: at(s), finishedAt: at(s + 4) }));
    } else {
      out.push(ev({ type: "task.succeeded", taskId: id, attempt, at: at(s + 4), workerId: "w1", commit: sha("e"), files: ["f"], startedAt: at(s), finishedAt: at(s + 4), costUsd: 0.01 }));
      out.push(ev({ type: "task.merged", taskId: id, attempt, at: at(s + 5), integrationCommit: sha("f") }));
    }
    if (i === 2) out.push(ev({ type: "run.paused", at: at(s), by: "me" }));
    if (i === 4) out.push(ev({ type: "run.resumed", at: at(s), by: "me" }));
  });
  out.push(ev({ type: "run.completed", at: at(n + 10), status: "failed", integrationBranch: "ado/r1/integration", integrationCommit: sha("f"), counts: {}, tasks: [] }));
  return out;
}

function foldAll(events: AdoEvent[], from = new RunFold(), offset = 0): RunFold {
  events.forEach((e, i) => from.apply(e, offset + i + 1));
  return from;
}

/** Everything a reader can see of a fold. */
const view = (f: RunFold) => ({
  run: { id: f.runId, name: f.name, status: f.status, paused: f.paused, seq: f.seq, events: f.events, complete: f.complete, attention: f.attention, acceptedAt: f.acceptedAt, finishedAt: f.finishedAt, head: f.integrationCommit, base: f.baseCommit, branch: f.tracker.integrationBranch, cost: f.costUsd.toFixed(6), counts: f.counts() },
  tasks: f.ids().map((id) => {
    // A snapshot keeps no commit per task (40 bytes x 10,000 tasks): run.completed and the task events have it.
    const { needs: _needs, commit: _commit, ...t } = f.task(id)!;
    return JSON.parse(JSON.stringify(t)) as unknown;
  }),
});

describe("run snapshots", () => {
  it("snapshot - loading a snapshot taken anywhere and applying the rest gives what a full replay gives", () => {
    const events = history(40);
    const full = foldAll(events);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: events.length }), fc.integer({ min: 200, max: 4_000_000 }), (cut, maxBytes) => {
        const head = foldAll(events.slice(0, cut));
        const snap = snapshotOf(head, new Date(T0));
        const { head: headBytes, parts } = splitSnapshot(snap, maxBytes);
        // Through the wire codec, as a reader gets it.
        const stored = decode(SCHEMAS.RunSnapshot, headBytes);
        const columns = parts.length
          ? parts.map((p) => decode(SCHEMAS.RunSnapshotPart, p).tasks).reduce((acc, t) => {
              const offset = acc.ids.length;
              const cat = (k: "ids" | "status" | "attempts" | "started" | "finished" | "worker" | "cost" | "activity" | "error" | "waiting") => [...acc[k], ...t[k]];
              return { ...acc, ids: cat("ids") as string[], status: cat("status") as number[], attempts: cat("attempts") as number[], started: cat("started") as (number | null)[], finished: cat("finished") as (number | null)[], worker: cat("worker") as number[], cost: cat("cost") as number[], activity: cat("activity") as number[], error: cat("error") as number[], waiting: cat("waiting") as number[], workers: t.workers, texts: t.texts, notes: [...acc.notes, ...t.notes.map((n) => ({ ...n, i: n.i + offset }))] };
            })
          : stored.tasks;
        if (parts.length) expect(stored.tasks.ids).toEqual([]);
        const resumed = foldOf(stored, columns);
        // Applying the events the snapshot holds again changes nothing: they are skipped by sequence.
        foldAll(events, resumed);
        expect(view(resumed)).toEqual(view(full));
      }),
      { numRuns: 60 },
    );
  });

  it("snapshot - readers check the task columns as the schema does: the same values accepted, the same refused", () => {
    const snap = JSON.parse(JSON.stringify(snapshotOf(foldAll(history(30)), new Date(T0)))) as Record<string, unknown> & { tasks: Record<string, unknown[]> };
    const same = (value: unknown) => {
      const strict = SCHEMAS.RunSnapshot.schema.safeParse(value);
      const read = SNAPSHOT_READ.schema.safeParse(value);
      expect(read.success).toBe(strict.success);
      // The same fold (a note's keys the schema does not name are dropped by one, left unread by the other).
      if (strict.success && read.success) expect(view(foldOf(read.data))).toEqual(view(foldOf(strict.data)));
      const part = { runId: "r1", seq: 3, part: 0, tasks: (value as { tasks: unknown }).tasks };
      expect(SNAPSHOT_PART_READ.schema.safeParse(part).success).toBe(SCHEMAS.RunSnapshotPart.schema.safeParse(part).success);
      return strict.success;
    };
    expect(same(snap)).toBe(true);
    // Through the wire codec too.
    const bytes = splitSnapshot(SCHEMAS.RunSnapshot.schema.parse(snap)).head;
    expect(decode(SNAPSHOT_READ, bytes)).toEqual(decode(SCHEMAS.RunSnapshot, bytes));
    const columns = ["ids", "status", "attempts", "started", "finished", "worker", "cost", "tokens", "activity", "error", "waiting", "workers", "texts", "notes"] as const;
    const scalar = fc.oneof(
      fc.integer({ min: -3, max: TaskStatus.options.length + 2 }),
      fc.constantFrom(null, undefined, "t1", "bad id!", "", 0.5, -0.5, 1e300, -1, Number.MAX_SAFE_INTEGER + 2, Number.NaN, Number.POSITIVE_INFINITY, true, false, [], {}, ["a"], [1]),
      fc.double(),
      fc.string(),
    );
    // Notes: a right one with one key set to anything.
    const note = fc
      .tuple(fc.constantFrom("i", "outputTail", "paused", "archiveRefs", "live", "agent", "other"), fc.oneof(scalar, fc.array(fc.oneof(fc.string(), scalar), { maxLength: 2 })))
      .map(([key, value]) => ({ i: 1, outputTail: "x", archiveRefs: ["refs/a"], [key]: value }));
    const odd = fc.oneof(scalar, note);
    let refused = 0;
    fc.assert(
      // One element replaced, the whole column replaced by one value, or by a list of them.
      fc.property(fc.constantFrom(...columns), fc.nat(), odd, fc.constantFrom("one", "whole", "list"), fc.array(odd, { maxLength: 3 }), (col, i, value, how, list) => {
        const current = snap.tasks[col] ?? [];
        const tasks = { ...snap.tasks, [col]: how === "whole" ? value : how === "list" ? [value, ...list] : current.map((x, k) => (k === i % current.length ? value : x)) };
        if (col === "tokens" && value === undefined && how === "whole") delete (tasks as Record<string, unknown>).tokens;
        if (!same({ ...snap, tasks })) refused++;
      }),
      { numRuns: 4_000 },
    );
    // The property saw both sides.
    expect(refused).toBeGreaterThan(100);
  });

  it("snapshot - what the fold shows: states, retries, waiting, lost attempts, pause, costs, the integration head", () => {
    const events = history(12);
    const mid = foldAll(events.slice(0, events.findIndex((e) => e.type === "run.needs_attention") + 1));
    expect(mid.status).toBe("needs_attention");
    expect(mid.task("t6")!.status).toBe("needs_attention");
    const f = foldAll(events);
    expect(f.status).toBe("failed");
    expect(f.task("t1")).toMatchObject({ status: "succeeded", attempts: 2, archiveRefs: ["refs/ado/attempts/r1/t1/2"], costUsd: 0.11 });
    expect(f.task("t8")).toMatchObject({ status: "failed", error: "exit 2", outputTail: "tail\n" });
    expect(f.task("t0")!.activity).toBe("red line");
    expect(f.integrationCommit).toBe(sha("f"));
    expect(f.counts()).toEqual({ succeeded: 11, failed: 1 });
  });

  it("snapshot - a 10,000-task run's snapshot stays small enough for one KV value", () => {
    const ids = Array.from({ length: 10_000 }, (_, i) => `task-${i}`);
    const f = new RunFold();
    f.apply(ev({ type: "run.accepted", at: at(0), name: "big", tasks: ids.map((id) => ({ id, needs: [], priority: "normal" })), queued: ids }), 1);
    ids.forEach((id, i) => {
      f.apply(ev({ type: "task.started", taskId: id, at: at(1), workerId: `w-host-${i % 8}` }), 2 + 2 * i);
      f.apply(ev({ type: "task.succeeded", taskId: id, at: at(2), workerId: `w-host-${i % 8}`, files: [], startedAt: at(1), finishedAt: at(2), costUsd: 0 }), 3 + 2 * i);
    });
    const { head, parts } = splitSnapshot(snapshotOf(f));
    expect(parts).toEqual([]);
    expect(head.byteLength).toBeLessThan(400_000);
  });
});
