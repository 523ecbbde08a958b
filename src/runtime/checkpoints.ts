/**
 * Tasks' checkpoints: one record per task in KV `sessions` (`<run>.<task>`,
 * CheckpointRecord: the commit of the work so far, its ref, the agent's session id,
 * where the session ran) and, in the `sessions` object store, a copy of the session's
 * files (object `<run>.<task>.<attempt>.<n>`). A session's files live on the host that
 * ran it; an attempt that resumes on another host restores them from here.
 *
 * The object is stored first and the record last (compare-and-set), so a record never
 * names an object that is not stored, and the files it names are never newer than its
 * commit (the worker packs the session before it snapshots the worktree). The object the
 * previous record named is deleted after; a crash between leaves an orphan, which the
 * store's age limit removes.
 *
 * Writers: the worker running the attempt, over a record of the same or an earlier
 * attempt only (a late checkpoint of a worker given up for dead never replaces its
 * successor's). Readers: the stealer (a lost attempt resumes from its last checkpoint),
 * the worker of the next attempt.
 */
import type { KV } from "@nats-io/kv";
import { Objm, type ObjectStore } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "./logger.js";
import { decode, encodeValue } from "./codec.js";
import { errorMessage } from "./errors.js";
import { SCHEMAS, type CheckpointRecord } from "./messages.js";
import { sessionObject, taskKey } from "./names.js";
import { Backoff, retry } from "./retry.js";
import type { Topology } from "./topology.js";

/** A packed session larger than this is not stored (the next attempt on another host starts a new session). */
export const MAX_SESSION_BYTES = 64 * 1024 * 1024;

const MAX_CAS_ATTEMPTS = 5;

/** What a put did. */
export type CheckpointWrite =
  | { kind: "written"; record: CheckpointRecord; sessionStored: boolean }
  /** The stored record is of a later attempt: nothing written. */
  | { kind: "stale"; current: CheckpointRecord };

export class CheckpointStore {
  #objects?: Promise<ObjectStore>;

  constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly topo: Topology,
    private readonly log?: Logger,
  ) {}

  /** The task's latest checkpoint; undefined when none (or it does not decode: logged). */
  async get(runId: string, taskId: string): Promise<CheckpointRecord | undefined> {
    return (await this.#read(runId, taskId)).record;
  }

  /**
   * Stores a checkpoint: the session's packed files (when given) as an object, then the
   * record, unless the stored record is of a later attempt.
   */
  async put(record: Omit<CheckpointRecord, "session">, session?: Uint8Array): Promise<CheckpointWrite> {
    const { runId, taskId } = record;
    let stored: CheckpointRecord["session"];
    if (session && session.length <= MAX_SESSION_BYTES) {
      const object = sessionObject(record, record.n);
      await (await this.#store()).putBlob({ name: object }, session);
      stored = { object, bytes: session.length };
    } else if (session) {
      this.log?.warn({ task: taskId, bytes: session.length, max: MAX_SESSION_BYTES }, "agent session too large to store with the checkpoint; another host cannot resume it");
    }
    let replaced: string | undefined;
    const result = await retry(
      async (): Promise<CheckpointWrite> => {
        const { record: current, revision } = await this.#read(runId, taskId);
        if (current && current.attempt > record.attempt) return { kind: "stale", current };
        const next: CheckpointRecord = { ...record, ...(stored ? { session: stored } : {}) };
        const value = encodeValue(SCHEMAS.CheckpointRecord, next);
        // A lost compare-and-set throws: read again and decide again.
        if (revision === undefined) await this.kv.create(taskKey(runId, taskId), value);
        else await this.kv.update(taskKey(runId, taskId), value, revision);
        replaced = current?.session && current.session.object !== stored?.object ? current.session.object : undefined;
        return { kind: "written", record: next, sessionStored: !!stored };
      },
      { attempts: MAX_CAS_ATTEMPTS, backoff: Backoff.cas },
    );
    // The object no record names any more: the previous copy, or ours when the record was not written.
    if (replaced) await this.#delete(taskId, replaced);
    if (stored && result.kind === "stale") await this.#delete(taskId, stored.object);
    return result;
  }

  /** The session files a record names; undefined when it names none or the object is gone. */
  async loadSession(record: CheckpointRecord): Promise<Uint8Array | undefined> {
    if (!record.session) return undefined;
    // The client checks the object's digest as it reads it.
    return (await (await this.#store()).getBlob(record.session.object)) ?? undefined;
  }

  #store(): Promise<ObjectStore> {
    this.#objects ??= new Objm(this.nc).open(this.topo.objects.sessions).catch((err) => {
      this.#objects = undefined;
      throw err;
    });
    return this.#objects;
  }

  async #read(runId: string, taskId: string): Promise<{ record?: CheckpointRecord; revision?: number }> {
    const entry = await this.kv.get(taskKey(runId, taskId));
    if (!entry) return {};
    if (entry.operation !== "PUT") return { revision: entry.revision };
    try {
      return { record: decode(SCHEMAS.CheckpointRecord, entry.value), revision: entry.revision };
    } catch (err) {
      this.log?.warn({ task: taskId, err: errorMessage(err) }, "malformed checkpoint record: ignored, and replaced by the next checkpoint");
      return { revision: entry.revision };
    }
  }

  async #delete(taskId: string, object: string): Promise<void> {
    await (await this.#store())
      .delete(object)
      .catch((err) => this.log?.debug({ task: taskId, object, err: errorMessage(err) }, "old session copy not removed; the store's age limit will"));
  }
}
