import type { KV } from "@nats-io/kv";
import { z } from "zod";
import { decode, encodeValue } from "./codec.js";
import { errorMessage } from "./errors.js";
import { SCHEMAS, TaskStatus, type RunSnapshot, type RunSnapshotPart, type SnapshotTasks, type TaskSummary } from "./messages.js";
import { snapshotKey, snapshotPartKey, SNAPSHOT_CURSOR_KEY } from "./names.js";
import { RunFold, type TaskNotes } from "./run-fold.js";

/**
 * Run snapshots: a run's fold (run-fold.ts) at one sequence of the event stream, kept in
 * KV `snapshots` so a reader loads it and applies only the events after it, instead of
 * replaying the run from its first event (a run of 10,000 tasks with a million events:
 * milliseconds instead of minutes; bench/attach.ts). The recorder actor writes them;
 * `ado attach|status|runs` and the dashboard read them.
 *
 * Large snapshots are split: the task columns go to parts (`<run>.p<n>`) written before
 * the head, each tagged with the head's sequence, so a reader that finds parts of
 * another sequence (a write in between) reads again.
 */

/** A value larger than this is split into parts (servers default to a 1 MB max_payload). */
export const SNAPSHOT_MAX_BYTES = 512 * 1024;

const STATUS_CODES = TaskStatus.options;
const statusCode = new Map(STATUS_CODES.map((s, i) => [s, i]));

/** The recorder's place in the event stream: every event up to `seq` is in the stored snapshots. */
const SnapshotCursor = z.object({ seq: z.number().int().min(0), updatedAt: z.string() });
const CURSOR = { name: "snapshot.cursor", version: 1, schema: SnapshotCursor };

/** The snapshot of a fold, task columns included (not yet split). */
export function snapshotOf(fold: RunFold, now = new Date()): RunSnapshot {
  if (!fold.runId) throw new Error("a fold with no run id has nothing to snapshot");
  const base = fold.acceptedAt ? Date.parse(fold.acceptedAt) : now.getTime();
  const tasks = emptyColumns();
  const workerIndex = new Map<string, number>();
  const textIndex = new Map<string, number>();
  const text = (s: string | undefined) => {
    if (s === undefined) return -1;
    let n = textIndex.get(s);
    if (n === undefined) {
      n = tasks.texts.length;
      textIndex.set(s, n);
      tasks.texts.push(s);
    }
    return n;
  };
  const rel = (iso: string | undefined) => (iso ? Date.parse(iso) - base : null);
  let i = 0;
  for (const id of fold.ids()) {
    const { summary: t, notes: x } = fold.parts(id)!;
    tasks.ids.push(id);
    tasks.status.push(statusCode.get(t.status)!);
    tasks.attempts.push(t.attempts);
    tasks.started.push(rel(t.startedAt));
    tasks.finished.push(rel(t.finishedAt));
    let w = -1;
    if (t.workerId) {
      w = workerIndex.get(t.workerId) ?? -1;
      if (w < 0) {
        w = tasks.workers.length;
        workerIndex.set(t.workerId, w);
        tasks.workers.push(t.workerId);
      }
    }
    tasks.worker.push(w);
    tasks.cost.push(x.costUsd);
    tasks.tokens!.push(t.tokens ?? 0);
    tasks.activity.push(text(x.activity));
    tasks.error.push(text(t.error));
    tasks.waiting.push(text(x.waiting));
    const note: SnapshotTasks["notes"][number] = { i };
    if (x.outputTail) note.outputTail = x.outputTail;
    if (x.paused) note.paused = true;
    if (x.archiveRefs.length) note.archiveRefs = x.archiveRefs;
    if (x.liveCostUsd > 0) note.live = x.liveCostUsd;
    if (x.agentAttempt !== undefined) note.agent = x.agentAttempt;
    if (Object.keys(note).length > 1) tasks.notes.push(note);
    i++;
  }
  return {
    runId: fold.runId,
    name: fold.name ?? "",
    status: fold.status,
    paused: fold.paused,
    seq: fold.seq,
    events: fold.events,
    complete: fold.complete,
    base,
    ...(fold.acceptedAt ? { acceptedAt: fold.acceptedAt } : {}),
    ...(fold.finishedAt ? { finishedAt: fold.finishedAt } : {}),
    updatedAt: now.toISOString(),
    ...(fold.tracker.integrationBranch ? { integrationBranch: fold.tracker.integrationBranch } : {}),
    ...(fold.integrationCommit ? { integrationCommit: fold.integrationCommit } : {}),
    ...(fold.baseCommit ? { baseCommit: fold.baseCommit } : {}),
    ...(fold.error ? { error: fold.error } : {}),
    ...(fold.attention ? { attention: fold.attention } : {}),
    ...(fold.mergedInto ? { mergedInto: fold.mergedInto } : {}),
    ...(fold.budget ? { budget: fold.budget } : {}),
    ...(fold.budgetWait ? { budgetWait: fold.budgetWait } : {}),
    counts: fold.counts(),
    costUsd: fold.costUsd,
    costKnown: fold.costKnown,
    tasks,
    parts: 0,
  };
}

/** The fold a snapshot (and its parts' task columns, when split) holds. */
export function foldOf(snap: RunSnapshot, columns: SnapshotTasks = snap.tasks): RunFold {
  const fold = new RunFold();
  fold.runId = snap.runId;
  fold.name = snap.name;
  fold.status = snap.status;
  fold.paused = snap.paused;
  fold.seq = snap.seq;
  fold.events = snap.events;
  fold.complete = snap.complete;
  fold.costKnown = snap.costKnown;
  // A recorder that predates the tokens column: its fold lacks what `ado status` shows.
  fold.statusKnown = columns.tokens !== undefined;
  if (snap.acceptedAt) fold.acceptedAt = snap.acceptedAt;
  if (snap.finishedAt) fold.finishedAt = snap.finishedAt;
  if (snap.integrationBranch) fold.tracker.integrationBranch = snap.integrationBranch;
  if (snap.integrationCommit) fold.integrationCommit = snap.integrationCommit;
  if (snap.baseCommit) fold.baseCommit = snap.baseCommit;
  if (snap.error) fold.error = snap.error;
  if (snap.attention) fold.attention = snap.attention;
  if (snap.mergedInto) fold.mergedInto = snap.mergedInto;
  if (snap.budget) fold.budget = snap.budget;
  if (snap.budgetWait) fold.budgetWait = snap.budgetWait;
  const notes = new Map(columns.notes.map((n) => [n.i, n]));
  const iso = (off: number | null | undefined) => (off === null || off === undefined ? undefined : new Date(snap.base + off).toISOString());
  columns.ids.forEach((id, i) => {
    const n = notes.get(i);
    const w = columns.worker[i] ?? -1;
    const startedAt = iso(columns.started[i]);
    const finishedAt = iso(columns.finished[i]);
    const workerId = w >= 0 ? columns.workers[w] : undefined;
    const textOf = (col: number[]) => {
      const k = col[i] ?? -1;
      return k >= 0 ? columns.texts[k] : undefined;
    };
    const tokens = columns.tokens?.[i] ?? 0;
    const error = textOf(columns.error);
    const activity = textOf(columns.activity);
    const waiting = textOf(columns.waiting);
    const summary: TaskSummary = {
      id,
      status: STATUS_CODES[columns.status[i] ?? 0]!,
      attempts: columns.attempts[i] ?? 0,
      ...(startedAt ? { startedAt } : {}),
      ...(finishedAt ? { finishedAt } : {}),
      ...(workerId ? { workerId } : {}),
      ...(error !== undefined ? { error } : {}),
      // As the TaskTracker keeps it: set once an attempt reported some.
      ...(tokens > 0 ? { tokens } : {}),
    };
    const x: TaskNotes = {
      needs: [],
      paused: n?.paused ?? false,
      archiveRefs: n?.archiveRefs ?? [],
      costUsd: columns.cost[i] ?? 0,
      liveCostUsd: n?.live ?? 0,
      ...(n?.agent !== undefined ? { agentAttempt: n.agent } : {}),
      ...(activity !== undefined ? { activity } : {}),
      ...(waiting !== undefined ? { waiting } : {}),
      ...(n?.outputTail !== undefined ? { outputTail: n.outputTail } : {}),
    };
    fold.restoreTask(summary, x);
  });
  // The snapshot's state is the fold's starting point, not news.
  fold.takeChanges();
  return fold;
}

/** A snapshot split for storage: the head, and the parts holding its task columns (none when it fits). */
export function splitSnapshot(snap: RunSnapshot, maxBytes = SNAPSHOT_MAX_BYTES): { head: Uint8Array; parts: Uint8Array[] } {
  const whole = encodeValue(SCHEMAS.RunSnapshot, snap);
  if (whole.byteLength <= maxBytes) return { head: whole, parts: [] };
  const n = snap.tasks.ids.length;
  let count = Math.ceil(whole.byteLength / maxBytes) + 1;
  for (;;) {
    const per = Math.ceil(n / count);
    const parts: Uint8Array[] = [];
    let fits = true;
    for (let p = 0; p * per < n; p++) {
      const part: RunSnapshotPart = { runId: snap.runId, seq: snap.seq, part: p, tasks: sliceColumns(snap.tasks, p * per, Math.min(n, (p + 1) * per)) };
      const bytes = encodeValue(SCHEMAS.RunSnapshotPart, part);
      if (bytes.byteLength > maxBytes && per > 1) {
        fits = false;
        break;
      }
      parts.push(bytes);
    }
    if (fits) {
      const head = encodeValue(SCHEMAS.RunSnapshot, { ...snap, tasks: emptyColumns(), parts: parts.length });
      return { head, parts };
    }
    count *= 2;
  }
}

const emptyColumns = (): SnapshotTasks => ({
  ids: [],
  status: [],
  attempts: [],
  started: [],
  finished: [],
  worker: [],
  workers: [],
  cost: [],
  tokens: [],
  activity: [],
  error: [],
  waiting: [],
  texts: [],
  notes: [],
});

function sliceColumns(c: SnapshotTasks, from: number, to: number): SnapshotTasks {
  return {
    ids: c.ids.slice(from, to),
    status: c.status.slice(from, to),
    attempts: c.attempts.slice(from, to),
    started: c.started.slice(from, to),
    finished: c.finished.slice(from, to),
    // Worker indexes stay valid: every part carries the whole (short) list.
    worker: c.worker.slice(from, to),
    workers: c.workers,
    cost: c.cost.slice(from, to),
    ...(c.tokens ? { tokens: c.tokens.slice(from, to) } : {}),
    // Text indexes stay valid too; each part carries the texts (a part rarely needs all, but they are short and shared).
    activity: c.activity.slice(from, to),
    error: c.error.slice(from, to),
    waiting: c.waiting.slice(from, to),
    texts: c.texts,
    notes: c.notes.filter((n) => n.i >= from && n.i < to).map((n) => ({ ...n, i: n.i - from })),
  };
}

function joinColumns(parts: SnapshotTasks[]): SnapshotTasks {
  const out = emptyColumns();
  for (const p of parts) {
    const offset = out.ids.length;
    out.ids.push(...p.ids);
    out.status.push(...p.status);
    out.attempts.push(...p.attempts);
    out.started.push(...p.started);
    out.finished.push(...p.finished);
    out.worker.push(...p.worker);
    out.cost.push(...p.cost);
    // A part without the column (an older recorder) leaves the whole without it.
    if (out.tokens && p.tokens) out.tokens.push(...p.tokens);
    else delete out.tokens;
    out.activity.push(...p.activity);
    out.error.push(...p.error);
    out.waiting.push(...p.waiting);
    out.workers = p.workers;
    out.texts = p.texts;
    for (const n of p.notes) out.notes.push({ ...n, i: n.i + offset });
  }
  return out;
}

/** Stores a fold's snapshot: parts first, then the head that names them. */
export async function writeSnapshot(kv: KV, fold: RunFold, now = new Date(), maxBytes = SNAPSHOT_MAX_BYTES): Promise<RunSnapshot> {
  const snap = snapshotOf(fold, now);
  const { head, parts } = splitSnapshot(snap, maxBytes);
  for (let p = 0; p < parts.length; p++) await kv.put(snapshotPartKey(snap.runId, p), parts[p]!);
  await kv.put(snapshotKey(snap.runId), head);
  return snap;
}

/** A snapshot as read: its head (task columns joined in when it was split) and its fold. */
export interface LoadedSnapshot {
  snapshot: RunSnapshot;
  fold: RunFold;
}

/** Only the head of a run's snapshot: state, counts, cost, sequence (no task columns when split). */
export async function readSnapshotHead(kv: KV, runId: string): Promise<RunSnapshot | undefined> {
  const e = await kv.get(snapshotKey(runId));
  return e?.operation === "PUT" ? decode(SCHEMAS.RunSnapshot, e.value) : undefined;
}

/**
 * A run's stored snapshot, or undefined when there is none (or only an unreadable one:
 * the caller then replays the run's events, which always works).
 */
export async function readSnapshot(kv: KV, runId: string, warn?: (msg: string) => void): Promise<LoadedSnapshot | undefined> {
  for (let tries = 0; tries < 4; tries++) {
    let head: RunSnapshot | undefined;
    try {
      head = await readSnapshotHead(kv, runId);
    } catch (err) {
      warn?.(`the snapshot of run ${runId} is unreadable (${errorMessage(err)}); its events are replayed instead`);
      return undefined;
    }
    if (!head) return undefined;
    if (head.parts === 0) return { snapshot: head, fold: foldOf(head) };
    const parts: SnapshotTasks[] = [];
    let torn = false;
    for (let p = 0; p < head.parts; p++) {
      const e = await kv.get(snapshotPartKey(runId, p));
      const part = e?.operation === "PUT" ? decode(SCHEMAS.RunSnapshotPart, e.value) : undefined;
      // A part of another sequence: the recorder wrote a newer snapshot meanwhile.
      if (!part || part.seq !== head.seq) {
        torn = true;
        break;
      }
      parts.push(part.tasks);
    }
    if (torn) continue;
    const tasks = joinColumns(parts);
    const snapshot = { ...head, tasks, parts: 0 };
    return { snapshot, fold: foldOf(snapshot, tasks) };
  }
  warn?.(`the snapshot of run ${runId} kept changing while it was read; its events are replayed instead`);
  return undefined;
}

/** The recorder's cursor (0 when it has none). */
export async function readSnapshotCursor(kv: KV): Promise<number> {
  const e = await kv.get(SNAPSHOT_CURSOR_KEY);
  if (e?.operation !== "PUT") return 0;
  try {
    return decode(CURSOR, e.value).seq;
  } catch {
    return 0;
  }
}

export async function writeSnapshotCursor(kv: KV, seq: number, now = new Date()): Promise<void> {
  await kv.put(SNAPSHOT_CURSOR_KEY, encodeValue(CURSOR, { seq, updatedAt: now.toISOString() }));
}
