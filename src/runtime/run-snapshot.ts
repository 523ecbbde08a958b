import type { KV } from "@nats-io/kv";
import { z } from "zod";
import { decode, encodeValue, type SchemaRef } from "./codec.js";
import { errorMessage } from "./errors.js";
import { ID_PATTERN } from "./ids.js";
import { RunSnapshot as RunSnapshotSchema, RunSnapshotPart as RunSnapshotPartSchema, SCHEMAS, SnapshotTasks as SnapshotTasksSchema, TaskStatus, type RunSnapshot, type RunSnapshotPart, type SnapshotTasks, type TaskSummary } from "./messages.js";
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

/**
 * The task columns as a reader checks them: the same rules as the schema
 * (messages.ts), each column checked in one loop instead of element by element through
 * zod (a 10,000-task snapshot has over 100,000 elements; decoding them was most of the
 * snapshot's read in a fresh process). test/unit/run-snapshot.test.ts checks both accept
 * and refuse the same values.
 */
function column<T>(what: string, ok: (x: unknown) => boolean) {
  return z.custom<T[]>((v) => Array.isArray(v) && v.every(ok), { message: `expected an array of ${what}` });
}
const wholeFrom = (min: number, max = Number.MAX_SAFE_INTEGER) => (x: unknown) => Number.isSafeInteger(x) && (x as number) >= min && (x as number) <= max;
const isString = (x: unknown) => typeof x === "string";
const wholeOrZero = wholeFrom(0);
/** A task's note as SnapshotTasks.notes has it (keys it does not name are left, unread). */
function isNote(x: unknown): boolean {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return false;
  const n = x as Record<string, unknown>;
  return (
    wholeOrZero(n.i) &&
    (n.outputTail === undefined || typeof n.outputTail === "string") &&
    (n.paused === undefined || typeof n.paused === "boolean") &&
    (n.archiveRefs === undefined || (Array.isArray(n.archiveRefs) && n.archiveRefs.every(isString))) &&
    (n.live === undefined || (typeof n.live === "number" && Number.isFinite(n.live) && n.live >= 0)) &&
    (n.agent === undefined || wholeOrZero(n.agent))
  );
}
const FastColumns = SnapshotTasksSchema.extend({
  ids: column<string>("task ids", (x) => typeof x === "string" && ID_PATTERN.test(x)),
  status: column<number>("task status codes", wholeFrom(0, STATUS_CODES.length - 1)),
  attempts: column<number>("whole numbers >= 0", wholeFrom(0)),
  started: column<number | null>("whole numbers or null", (x) => x === null || Number.isSafeInteger(x)),
  finished: column<number | null>("whole numbers or null", (x) => x === null || Number.isSafeInteger(x)),
  worker: column<number>("whole numbers >= -1", wholeFrom(-1)),
  cost: column<number>("numbers >= 0", (x) => typeof x === "number" && Number.isFinite(x) && x >= 0),
  tokens: column<number>("whole numbers >= 0", wholeFrom(0)).optional(),
  activity: column<number>("whole numbers >= -1", wholeFrom(-1)),
  error: column<number>("whole numbers >= -1", wholeFrom(-1)),
  waiting: column<number>("whole numbers >= -1", wholeFrom(-1)),
  workers: column<string>("strings", isString),
  texts: column<string>("strings", isString),
  // Nearly every task of a run of agents has one (its agent attempt): as many as tasks.
  notes: column<SnapshotTasks["notes"][number]>("task notes", isNote),
});
/** SCHEMAS.RunSnapshot and RunSnapshotPart, the columns checked as above: what readers decode with. */
export const SNAPSHOT_READ: SchemaRef<RunSnapshot> = { ...SCHEMAS.RunSnapshot, schema: RunSnapshotSchema.extend({ tasks: FastColumns }) };
export const SNAPSHOT_PART_READ: SchemaRef<RunSnapshotPart> = { ...SCHEMAS.RunSnapshotPart, schema: RunSnapshotPartSchema.extend({ tasks: FastColumns }) };

/**
 * The recorder's place in the event stream: every event up to `seq` is in the stored
 * snapshots; `ms`, the time the server stored that event, tells a stream rewritten since
 * (see src/runtime/stream-resume.ts; absent in cursors written before it was kept).
 */
const SnapshotCursor = z.object({ seq: z.number().int().min(0), ms: z.number().optional(), updatedAt: z.string() });
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
  // One loop of plain assignments: 10,000 tasks, in a process that just started (no
  // closure or spread per task; bench/attach.ts --fresh).
  const notes: (SnapshotTasks["notes"][number] | undefined)[] = [];
  for (const n of columns.notes) notes[n.i] = n;
  const { ids, status, attempts, started, finished, worker, workers, cost, tokens, activity, error, waiting, texts } = columns;
  const base = snap.base;
  for (let i = 0; i < ids.length; i++) {
    const summary: TaskSummary = { id: ids[i]!, status: STATUS_CODES[status[i] ?? 0]!, attempts: attempts[i] ?? 0 };
    const from = started[i];
    if (from !== null && from !== undefined) summary.startedAt = new Date(base + from).toISOString();
    const to = finished[i];
    if (to !== null && to !== undefined) summary.finishedAt = new Date(base + to).toISOString();
    const w = worker[i] ?? -1;
    const workerId = w >= 0 ? workers[w] : undefined;
    if (workerId) summary.workerId = workerId;
    const e = error[i] ?? -1;
    if (e >= 0 && texts[e] !== undefined) summary.error = texts[e];
    // As the TaskTracker keeps it: set once an attempt reported some.
    const used = tokens?.[i] ?? 0;
    if (used > 0) summary.tokens = used;
    const n = notes[i];
    const x: TaskNotes = { needs: [], paused: n?.paused ?? false, archiveRefs: n?.archiveRefs ?? [], costUsd: cost[i] ?? 0, liveCostUsd: n?.live ?? 0 };
    if (n?.agent !== undefined) x.agentAttempt = n.agent;
    const a = activity[i] ?? -1;
    if (a >= 0 && texts[a] !== undefined) x.activity = texts[a];
    const wt = waiting[i] ?? -1;
    if (wt >= 0 && texts[wt] !== undefined) x.waiting = texts[wt];
    if (n?.outputTail !== undefined) x.outputTail = n.outputTail;
    fold.restoreTask(summary, x);
  }
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
  return e?.operation === "PUT" ? decode(SNAPSHOT_READ, e.value) : undefined;
}

/**
 * A run's stored snapshot, or undefined when there is none (or only an unreadable one:
 * the caller then replays the run's events, which always works). `mark` is told when
 * the bytes are in (`got`) and when they are decoded (`decoded`; the fold follows).
 */
export async function readSnapshot(kv: KV, runId: string, warn?: (msg: string) => void, mark?: (step: "got" | "decoded") => void): Promise<LoadedSnapshot | undefined> {
  for (let tries = 0; tries < 4; tries++) {
    let head: RunSnapshot | undefined;
    try {
      const e = await kv.get(snapshotKey(runId));
      if (e?.operation !== "PUT") return undefined;
      mark?.("got");
      head = decode(SNAPSHOT_READ, e.value);
      mark?.("decoded");
    } catch (err) {
      warn?.(`the snapshot of run ${runId} is unreadable (${errorMessage(err)}); its events are replayed instead`);
      return undefined;
    }
    if (head.parts === 0) return { snapshot: head, fold: foldOf(head) };
    const parts: SnapshotTasks[] = [];
    let torn = false;
    for (let p = 0; p < head.parts; p++) {
      const e = await kv.get(snapshotPartKey(runId, p));
      const part = e?.operation === "PUT" ? decode(SNAPSHOT_PART_READ, e.value) : undefined;
      // A part of another sequence: the recorder wrote a newer snapshot meanwhile.
      if (!part || part.seq !== head.seq) {
        torn = true;
        break;
      }
      parts.push(part.tasks);
    }
    if (torn) continue;
    mark?.("decoded");
    const tasks = joinColumns(parts);
    const snapshot = { ...head, tasks, parts: 0 };
    return { snapshot, fold: foldOf(snapshot, tasks) };
  }
  warn?.(`the snapshot of run ${runId} kept changing while it was read; its events are replayed instead`);
  return undefined;
}

/** The recorder's cursor (sequence 0 when it has none; without `ms` when written before it was kept). */
export async function readSnapshotCursor(kv: KV): Promise<{ seq: number; ms?: number }> {
  const e = await kv.get(SNAPSHOT_CURSOR_KEY);
  if (e?.operation !== "PUT") return { seq: 0 };
  try {
    const { seq, ms } = decode(CURSOR, e.value);
    return ms === undefined ? { seq } : { seq, ms };
  } catch {
    return { seq: 0 };
  }
}

export async function writeSnapshotCursor(kv: KV, at: { seq: number; ms?: number }, now = new Date()): Promise<void> {
  await kv.put(SNAPSHOT_CURSOR_KEY, encodeValue(CURSOR, { seq: at.seq, ...(at.ms === undefined ? {} : { ms: at.ms }), updatedAt: now.toISOString() }));
}
