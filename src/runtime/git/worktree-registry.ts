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
import { z } from "zod";
import { decode, encodeValue } from "../codec.js";
import { errorMessage } from "../errors.js";
import type { SchemaRef } from "../messages.js";

/** What happened to a task's worktree. */
export const WorktreeState = {
  /** Created; the task runs in it. */
  active: "active",
  /** The task's work is committed on its branch; the worktree waits for the merge. */
  committed: "committed",
  /** The branch was merged and the worktree removed. */
  merged: "merged",
  /** Its work was kept under a ref (`archiveRef`) and the worktree removed. */
  archived: "archived",
  /** Removed with nothing to keep (no changes, or its work is on its branch). */
  removed: "removed",
  /** Left in place on purpose; `reason` says why and what to do. */
  kept: "kept",
} as const;
export type WorktreeState = (typeof WorktreeState)[keyof typeof WorktreeState];
export const WORKTREE_STATES = Object.values(WorktreeState) as [WorktreeState, ...WorktreeState[]];

const isoTime = z.string().datetime({ offset: true });

export const WorktreeRecord = z
  .object({
    runId: z.string().min(1),
    taskId: z.string().min(1),
    /** The attempt that last used the worktree. */
    attempt: z.number().int().min(1).optional(),
    /** The repository (user's checkout or clone) the worktree belongs to. */
    repo: z.string().min(1),
    path: z.string().min(1),
    branch: z.string().min(1),
    /** os.hostname() of the machine whose disk holds the worktree. */
    host: z.string().min(1),
    workerId: z.string().optional(),
    state: z.enum(WORKTREE_STATES),
    createdAt: isoTime,
    /** When it left `active`. */
    finishedAt: isoTime.optional(),
    /** Last write, and who made it (`worker <id>`, `merger <id>`, `ado worktrees cleanup`). */
    updatedAt: isoTime,
    updatedBy: z.string().min(1),
    /** The task's commit (committed, merged) or the archive's. */
    commit: z.string().optional(),
    /** Where the work was kept (archived). */
    archiveRef: z.string().optional(),
    /** Why it was kept, or why it ended as it did. Required when kept. */
    reason: z.string().optional(),
  })
  .refine((r) => r.state !== "kept" || (r.reason ?? "") !== "", { message: "a kept worktree needs a reason", path: ["reason"] });
export type WorktreeRecord = z.infer<typeof WorktreeRecord>;

/** Schema name and version of a registry value (KV values carry no header). */
export const WORKTREE_RECORD: SchemaRef<WorktreeRecord> = { name: "worktree.record", version: 1, schema: WorktreeRecord };

/** The key of a task's worktree: `<runId>.<taskId>` (ids hold no dots). */
export const worktreeKey = (runId: string, taskId: string) => `${runId}.${taskId}`;

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
    await this.kv.put(worktreeKey(record.runId, record.taskId), encodeValue(WORKTREE_RECORD, record));
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
    const key = worktreeKey(runId, taskId);
    for (let attempt = 1; ; attempt++) {
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
      try {
        if (!entry) await this.kv.create(key, value);
        else await this.kv.update(key, value, entry.revision);
        return next;
      } catch (err) {
        if (attempt >= MAX_CAS_ATTEMPTS) throw err;
      }
    }
  }

  /** The task's record; undefined when absent. @throws DecodeError when it is malformed. */
  async get(runId: string, taskId: string): Promise<WorktreeRecord | undefined> {
    const entry = await this.kv.get(worktreeKey(runId, taskId));
    return entry && entry.operation === "PUT" ? decode(WORKTREE_RECORD, entry.value) : undefined;
  }

  /** Every record; entries that do not decode are returned apart, with the reason. */
  async list(): Promise<{ records: WorktreeRecord[]; malformed: MalformedEntry[] }> {
    const records: WorktreeRecord[] = [];
    const malformed: MalformedEntry[] = [];
    const keys: string[] = [];
    for await (const key of await this.kv.keys()) keys.push(key);
    for (const key of keys.sort()) {
      const entry = await this.kv.get(key);
      if (!entry || entry.operation !== "PUT") continue;
      try {
        records.push(decode(WORKTREE_RECORD, entry.value));
      } catch (err) {
        malformed.push({ key, error: errorMessage(err) });
      }
    }
    return { records, malformed };
  }
}
