import { performance } from "node:perf_hooks";
import { DeliverPolicy, type JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { decode } from "./codec.js";
import { errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";
import { SCHEMAS, type AdoEvent, type EventOf, type RunSnapshot } from "./messages.js";
import { RunFold } from "./run-fold.js";
import { readSnapshot, readSnapshotHead } from "./run-snapshot.js";
import type { Topology } from "./topology.js";

/**
 * A run's state now, the cheap way: its snapshot (KV `snapshots`, written by the
 * recorder), then the run's events after the snapshot's sequence (the deltas), instead
 * of every event of the run. `ado attach`, `ado status` and `ado runs` read runs so;
 * bench/attach.ts measures it against a full replay.
 *
 * A snapshot that is missing, unreadable, of another run, of a run seen from its middle,
 * or ahead of the event stream (a stream that was reset) is not used: the run's events
 * are replayed from the first, which always gives the same state, only slower. The
 * reason goes to the debug log.
 */

export interface LoadedRun {
  fold: RunFold;
  /** `snapshot`: a snapshot and the events after it; `replay`: every event of the run. */
  from: "snapshot" | "replay";
  /** Events read from the stream (after the snapshot, or all of them). */
  read: number;
  /** Events that could not be decoded (skipped). */
  malformed: number;
  /** Why the snapshot was not used (from `replay`). */
  why?: string;
  /** Where the time went (ms). */
  ms: LoadTimes;
}

/** Where a load's time went, in ms. */
export interface LoadTimes {
  /** Until the snapshot's state was loaded (the first frame a view can draw; 0 for a replay). */
  snapshot: number;
  /** After that, until the events after it (or all of them) were applied. */
  events: number;
  /**
   * When each step ended, in ms from the start of the load (they overlap: the run's last
   * event is looked up while the snapshot is read): the snapshot's bytes read (`got`),
   * decoded and folded, the run's last event found, the first event after the snapshot
   * read (`consumer`), and the last one applied (`deltas`).
   */
  at: Partial<Record<LoadStep, number>>;
}

export type LoadStep = "got" | "decoded" | "folded" | "last" | "consumer" | "deltas";

export interface LoadRunOptions {
  js: JetStreamClient;
  snapshots: KV;
  topo: Topology;
  runId: string;
  log?: Logger;
  /** false: replay every event, whatever the snapshot (the benchmark's baseline). */
  useSnapshot?: boolean;
  /** Called with each event read from the stream after the starting point, in order. */
  onEvent?: (e: AdoEvent, seq: number) => void;
}

/** Times the steps of one load (LoadTimes.at). */
class LoadClock {
  readonly t0 = performance.now();
  readonly at: LoadTimes["at"] = {};
  mark(step: LoadStep): void {
    this.at[step] = Math.round(performance.now() - this.t0);
  }
}

/** Loads a run's fold: its snapshot and the events after it, or, failing that, all its events (see the module comment). */
export async function loadRun(o: LoadRunOptions): Promise<LoadedRun> {
  const clock = new LoadClock();
  // The run's last event is looked up while the snapshot is read: neither needs the other.
  const last = runLast(o, clock);
  try {
    const found = o.useSnapshot === false ? { why: "asked to replay" } : await usableSnapshot(o, last, clock);
    if (found.why) o.log?.debug({ runId: o.runId, why: found.why }, "run state: replaying the run's events instead of its snapshot");
    return await carryOn(o, found, last, clock);
  } finally {
    // Settled either way (a failed read above must not leave it to reject unheard).
    await last.catch(() => undefined);
  }
}

/**
 * A run's fold from its snapshot and the events after it, never a replay: `{ why }` when
 * it has no usable snapshot. For a reader with a cheaper way than a replay (`ado status`
 * reads the task records instead).
 */
export async function loadRunFromSnapshot(o: Omit<LoadRunOptions, "useSnapshot">): Promise<LoadedRun | { why: string }> {
  const clock = new LoadClock();
  const last = runLast(o, clock);
  try {
    const found = await usableSnapshot(o, last, clock);
    if (!found.fold) return { why: found.why ?? "it has no snapshot" };
    return await carryOn(o, found, last, clock);
  } finally {
    await last.catch(() => undefined);
  }
}

function runLast(o: Pick<LoadRunOptions, "js" | "topo" | "runId">, clock: LoadClock): Promise<number> {
  const last = lastEventSequence(o.js, o.topo, o.runId).then((seq) => {
    clock.mark("last");
    return seq;
  });
  // Awaited where needed; this only keeps a rejection before then from counting as unhandled.
  last.catch(() => undefined);
  return last;
}

/** The events after the snapshot's sequence applied to its fold (all of them to a new fold, with none). */
async function carryOn(o: LoadRunOptions, found: { fold?: RunFold; why?: string }, last: Promise<number>, clock: LoadClock): Promise<LoadedRun> {
  const { fold, why } = found;
  const start = fold ?? new RunFold();
  const snapshotSeq = start.seq;
  const t1 = performance.now();
  const { read, malformed } = await applyEvents(o, start, await last, clock);
  const ms: LoadTimes = { snapshot: fold ? Math.round(t1 - clock.t0) : 0, events: Math.round(performance.now() - t1), at: clock.at };
  start.takeChanges();
  o.log?.debug(
    { runId: o.runId, from: fold ? "snapshot" : "replay", ...(fold ? { snapshotSeq } : {}), read, malformed, ms, processMs: Math.round(performance.now()) },
    "run state loaded",
  );
  return { fold: start, from: fold ? "snapshot" : "replay", read, malformed, ms, ...(why ? { why } : {}) };
}

async function usableSnapshot(o: LoadRunOptions, last: Promise<number>, clock: LoadClock): Promise<{ fold?: RunFold; why?: string }> {
  let warned: string | undefined;
  let loaded;
  try {
    loaded = await readSnapshot(o.snapshots, o.runId, (m) => (warned = m), (step) => clock.mark(step));
  } catch (err) {
    return { why: `its snapshot is unreadable (${errorMessage(err)})` };
  }
  if (!loaded) return { why: warned ?? "it has no snapshot" };
  clock.mark("folded");
  const { snapshot, fold } = loaded;
  if (snapshot.runId !== o.runId) return { why: `its snapshot is of another run (${snapshot.runId})` };
  // Seen from its middle: tasks before the recorder's first event of it are missing.
  if (!fold.complete) return { why: "its snapshot holds the run from its middle only" };
  // Past the run's last event: a stream that was reset, unless the run's events are gone
  // from an intact stream (expired): the stream's end says which.
  if (snapshot.seq > 0 && snapshot.seq > (await last)) {
    const jsm = await o.js.jetstreamManager(false);
    const end = (await jsm.streams.info(o.topo.streams.events.name)).state.last_seq;
    if (snapshot.seq > end) return { why: `its snapshot reflects event ${snapshot.seq}, past the stream's last (${end}): the stream was reset` };
  }
  return { fold };
}

/** Applies the run's events after the fold's sequence (all of them for a new fold), up to `last` (the run's last event when the load began). */
async function applyEvents(o: LoadRunOptions, fold: RunFold, last: number, clock: LoadClock): Promise<{ read: number; malformed: number }> {
  let read = 0;
  let malformed = 0;
  // The end is known before reading: pending counts of filtered consumers are not
  // reliable on nats-server 2.9 (they reached 0 dozens of events early here).
  if (last <= fold.seq) return { read, malformed };
  const consumer = await o.js.consumers.get(o.topo.streams.events.name, {
    filter_subjects: o.topo.subjects.runEvents(o.runId),
    ...(fold.seq > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: fold.seq + 1 } : { deliver_policy: DeliverPolicy.All }),
  });
  const messages = await consumer.consume();
  try {
    for await (const m of messages) {
      if (read++ === 0) clock.mark("consumer");
      let e: AdoEvent | undefined;
      try {
        e = decode(SCHEMAS.AdoEvent, m.data, m.headers);
      } catch (err) {
        malformed++;
        o.log?.debug({ runId: o.runId, seq: m.seq, err: errorMessage(err) }, "run state: unreadable event skipped");
      }
      if (e && fold.apply(e, m.seq)) o.onEvent?.(e, m.seq);
      if (m.seq >= last) break;
    }
  } finally {
    await messages.close().catch(() => undefined);
  }
  clock.mark("deltas");
  return { read, malformed };
}

/**
 * Sequence of the run's last event in the stream now (0: it has none): one message get
 * by the run's subject wildcard (nats-server answers it from the end of the stream: no
 * consumer, one round trip).
 */
export async function lastEventSequence(js: JetStreamClient, topo: Topology, runId: string): Promise<number> {
  // No account-info round trip first (checkAPI): the caller's connection already did JetStream.
  const jsm = await js.jetstreamManager(false);
  const m = await jsm.streams.getMessage(topo.streams.events.name, { last_by_subj: topo.subjects.runEvents(runId) });
  return m?.seq ?? 0;
}

/**
 * The latest event on each subject a wildcard `filter` matches in the events stream (a
 * run's `task.waiting` of every task: `<p>.evt.<run>.task.*.waiting`), by subject, in
 * two requests and one consumer whatever the number of subjects: the filter's last
 * event (a message get, as lastEventSequence), then an ordered consumer delivering the
 * last message per subject, in stream order, read up to that event. The end is known
 * before reading, not from the consumer's pending count (unreliable on nats-server 2.9
 * for filtered consumers). Events are only appended: no subject's latest event can be
 * replaced by one before that end. Undefined when the read did not reach the end within
 * `boundMs` or failed (the caller reads what it needs another way); an empty map when
 * nothing matches.
 */
export async function lastEventPerSubject(js: JetStreamClient, topo: Topology, filter: string, boundMs = 10_000): Promise<Map<string, { seq: number; data: Uint8Array }> | undefined> {
  const out = new Map<string, { seq: number; data: Uint8Array }>();
  try {
    const jsm = await js.jetstreamManager(false);
    const last = (await jsm.streams.getMessage(topo.streams.events.name, { last_by_subj: filter }))?.seq ?? 0;
    if (last === 0) return out;
    const consumer = await js.consumers.get(topo.streams.events.name, { filter_subjects: filter, deliver_policy: DeliverPolicy.LastPerSubject });
    const messages = await consumer.consume({ max_messages: 1_000 });
    let reached = false;
    const bound = setTimeout(() => void messages.close().catch(() => undefined), boundMs);
    try {
      for await (const m of messages) {
        out.set(m.subject, { seq: m.seq, data: m.data });
        if (m.seq >= last) {
          reached = true;
          break;
        }
      }
    } finally {
      clearTimeout(bound);
      await messages.close().catch(() => undefined);
    }
    return reached ? out : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The run's latest `run.needs_attention` event (what a watch that starts after it needs
 * to know the run waits), if it has one. Read directly by subject: no replay.
 */
export async function lastNeedsAttention(js: JetStreamClient, topo: Topology, runId: string): Promise<EventOf<"run.needs_attention"> | undefined> {
  const jsm = await js.jetstreamManager();
  const m = await jsm.streams.getMessage(topo.streams.events.name, { last_by_subj: topo.subjects.event({ type: "run.needs_attention", runId }) }).catch(() => null);
  if (!m) return undefined;
  try {
    const e = decode(SCHEMAS.AdoEvent, m.data, m.header);
    return e.type === "run.needs_attention" ? e : undefined;
  } catch {
    return undefined;
  }
}

/** What runState and snapshotHead need of a client (AdoClient has it; named here so the run loader does not import the client). */
export interface RunReader {
  js: JetStreamClient;
  topo: Topology;
  bucket(name: "snapshots"): Promise<KV>;
}

/**
 * A run's state as a client loads it (loadRun), and, when it waits for a person, its
 * last run.needs_attention: what `AdoClient.watch({ from })` carries on from.
 */
export async function runState(client: RunReader, runId: string, log?: Logger): Promise<LoadedRun & { waiting?: EventOf<"run.needs_attention"> }> {
  const loaded = await loadRun({ js: client.js, snapshots: await client.bucket("snapshots"), topo: client.topo, runId, ...(log ? { log } : {}) });
  if (loaded.fold.status !== "needs_attention") return loaded;
  const waiting = await lastNeedsAttention(client.js, client.topo, runId);
  return waiting ? { ...loaded, waiting } : loaded;
}

/**
 * The head of a run's stored snapshot (state, task counts, cost; as of the recorder's
 * last write, at most a second or so behind while the run changes), if it has one.
 */
export async function snapshotHead(client: RunReader, runId: string): Promise<RunSnapshot | undefined> {
  return readSnapshotHead(await client.bucket("snapshots"), runId);
}
