/**
 * The registry of task worktrees in the KV bucket `<p>-worktrees`, one key per task
 * (`<runId>.<taskId>`): where the worktree is, on which host and branch, which worker
 * made it, and what became of it. Git (and ado.json beside each registration) is the
 * truth about what exists on a disk; the registry is what a person or a service sees
 * across hosts: `ado worktrees list`, dashboards.
 *
 * Writers take turns on a record, never at once: the worker (created `active`, then
 * `committed`, `removed`, `archived` or `kept` when its attempt ends), then the merge
 * coordinator (`merged`, or `kept` when it cannot remove the worktree), then
 * `ado worktrees cleanup`. Updates still compare-and-set on the revision, so a write
 * that lost a race is retried on the fresh record, not lost.
 */
import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import { decode, encodeValue } from "./codec.js";
import { errorMessage } from "./errors.js";
import { currentEntries } from "./kv-watch.js";
import { WORKTREE_RECORD } from "./messages.js";
import type { WorktreeRecord } from "../git/index.js";
import { taskKey } from "./names.js";
import { Backoff, retry } from "./retry.js";


/** A registry entry that did not decode; reported, never fatal. */
export interface MalformedEntry {
  key: string;
  error: string;
}

const MAX_CAS_ATTEMPTS = 5;

/** Reads and writes worktree records in one KV bucket. */
export class WorktreeRegistry {
  constructor(
    private readonly kv: KV,
    private readonly log?: Logger,
  ) {}

  /** Writes a whole record (validated first: a bad record is our bug, caught at the writer). */
  async put(record: WorktreeRecord): Promise<void> {
    await this.kv.put(taskKey(record.runId, record.taskId), encodeValue(WORKTREE_RECORD, record));
  }

  /**
   * Applies `patch` to the task's record with compare-and-set, retrying on a lost race.
   * When there is no record, or only a malformed one (reported in the log), `fallback`
   * supplies the fields the patch does not.
   */
  async update(
    runId: string,
    taskId: string,
    patch: Partial<WorktreeRecord> & Pick<WorktreeRecord, "state" | "updatedBy">,
    fallback: Omit<WorktreeRecord, "state" | "updatedBy" | "updatedAt">,
  ): Promise<WorktreeRecord> {
    const key = taskKey(runId, taskId);
    return retry(async () => {
      const entry = await this.kv.get(key);
      let current: WorktreeRecord | undefined;
      if (entry && entry.operation === "PUT") {
        try {
          current = decode(WORKTREE_RECORD, entry.value);
        } catch (err) {
          this.log?.warn({ key, err: errorMessage(err) }, "malformed worktree record replaced");
        }
      }
      const next: WorktreeRecord = { ...fallback, ...current, ...patch, updatedAt: new Date().toISOString() };
      const value = encodeValue(WORKTREE_RECORD, next);
      // A lost compare-and-set throws: read the fresh record and apply the patch again.
      if (!entry) await this.kv.create(key, value);
      else await this.kv.update(key, value, entry.revision);
      return next;
    }, { attempts: MAX_CAS_ATTEMPTS, backoff: Backoff.cas });
  }

  /** The task's record; undefined when absent. @throws DecodeError when it is malformed. */
  async get(runId: string, taskId: string): Promise<WorktreeRecord | undefined> {
    const entry = await this.kv.get(taskKey(runId, taskId));
    return entry && entry.operation === "PUT" ? decode(WORKTREE_RECORD, entry.value) : undefined;
  }

  /** Every record; entries that do not decode are returned apart, with the reason. */
  async list(): Promise<{ records: WorktreeRecord[]; malformed: MalformedEntry[] }> {
    const records: WorktreeRecord[] = [];
    const malformed: MalformedEntry[] = [];
    const entries = (await currentEntries(this.kv)).sort((a, b) => (a.key < b.key ? -1 : 1));
    for (const entry of entries) {
      const key = entry.key;
      try {
        records.push(decode(WORKTREE_RECORD, entry.value));
      } catch (err) {
        malformed.push({ key, error: errorMessage(err) });
      }
    }
    return { records, malformed };
  }
}
