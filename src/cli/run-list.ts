/**
 * `ado runs [--all] [--json]`: the runs the server knows, newest first: state, start,
 * duration, cost, and tasks by state. The run records (KV `runs`) say state, times and
 * cost; each run's snapshot head (KV `snapshots`, one read per run, no event replay)
 * says its tasks by state. What is retained: run records until `ado prune` (no TTL),
 * snapshots 30 days, events 7 days (docs/ARCHITECTURE.md, "Retention").
 */
import type { AdoClient } from "../runtime/client.js";
import { formatUsd } from "../runtime/budget.js";
import { formatDuration } from "../runtime/duration.js";
import { errorMessage } from "../runtime/errors.js";
import { snapshotHead } from "../runtime/run-load.js";
import type { RunRecord, RunSnapshot, TaskStatus } from "../runtime/messages.js";
import { Exit, type CommonFlags } from "./common.js";
import { withClient } from "./live.js";

/** One run as `ado runs` lists it (also its `--json` row). */
export interface RunRow {
  runId: string;
  name: string;
  /** The run's state; `paused` for a running run that is paused. */
  state: string;
  acceptedAt: string;
  finishedAt: string | null;
  /** To its end, or until now while it goes on. */
  durationMs: number;
  costUsd: number;
  tokens: number;
  tasks: {
    total: number;
    /** By state, from the run's snapshot (null when it has none: a run older than its 30 days, or before the recorder). */
    byState: Partial<Record<TaskStatus, number>> | null;
    /** When the snapshot was written. */
    asOf: string | null;
  };
}

const ORDER: readonly TaskStatus[] = ["running", "merging", "needs_attention", "queued", "pending", "succeeded", "failed", "skipped", "cancelled"];

/** The row of a run, from its record and its snapshot head (pure). */
export function runRow(run: RunRecord, head: RunSnapshot | undefined, now = Date.now()): RunRow {
  const end = run.finishedAt ? Date.parse(run.finishedAt) : now;
  return {
    runId: run.runId,
    name: run.name,
    state: run.paused && run.status === "running" ? "paused" : run.status,
    acceptedAt: run.acceptedAt,
    finishedAt: run.finishedAt ?? null,
    durationMs: Math.max(0, end - Date.parse(run.acceptedAt)),
    // The record sums finished attempts; a live run's snapshot adds what running ones reported.
    costUsd: Math.max(run.costUsd, head?.costUsd ?? 0),
    tokens: run.tokens,
    tasks: { total: run.graph.tasks.length, byState: head ? head.counts : null, asOf: head?.updatedAt ?? null },
  };
}

/** `7 tasks: 3 succeeded, 2 running, 2 queued`. */
export function tasksText(t: RunRow["tasks"]): string {
  const total = `${t.total} task${t.total === 1 ? "" : "s"}`;
  if (!t.byState) return total;
  const parts = ORDER.filter((s) => (t.byState![s] ?? 0) > 0).map((s) => `${t.byState![s]} ${s}`);
  return parts.length ? `${total}: ${parts.join(", ")}` : total;
}

/** The rows of the runs (active ones, or all with `all`), newest first. */
export async function runRows(client: AdoClient, all: boolean, warn: (msg: string) => void = () => undefined): Promise<RunRow[]> {
  const runs = await client.runs({ active: !all });
  const rows: RunRow[] = [];
  for (const run of runs) {
    const head = await snapshotHead(client, run.runId).catch((err) => {
      warn(`the snapshot of run ${run.runId} is unreadable (${errorMessage(err)}): its tasks are not counted by state`);
      return undefined;
    });
    rows.push(runRow(run, head));
  }
  return rows;
}

/** `ado runs [--all] [--json]`. */
export async function runsCommand(flags: CommonFlags & { all?: boolean; json?: boolean }): Promise<number> {
  return withClient(flags, "ado runs", async (client) => {
    const rows = await runRows(client, flags.all ?? false, (m) => process.stderr.write(`ado: ${m}\n`));
    if (flags.json) {
      process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
      return Exit.ok;
    }
    if (!rows.length) {
      process.stdout.write(flags.all ? "no runs\n" : "no active runs (ado runs --all lists finished ones too)\n");
      return Exit.ok;
    }
    const head = ["RUN", "NAME", "STATE", "STARTED", "DURATION", "COST", "TASKS"];
    const cells = rows.map((r) => [r.runId, r.name, r.state, r.acceptedAt.slice(0, 19).replace("T", " "), formatDuration(r.durationMs), r.costUsd > 0 ? formatUsd(r.costUsd) : "-", tasksText(r.tasks)]);
    const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
    for (const line of [head, ...cells]) process.stdout.write(line.map((c, i) => (i === line.length - 1 ? c : c.padEnd(widths[i]!))).join("  ") + "\n");
    return Exit.ok;
  });
}
