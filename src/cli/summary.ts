import { formatTokens, formatUsd } from "../runtime/budget.js";
import { existsSync } from "node:fs";
import type { RunOutcome } from "../runtime/client.js";
import { formatDuration } from "../runtime/duration.js";
import { listRefs } from "../git/index.js";
import { runAttemptRefs } from "../runtime/names.js";
import { FINISHED, lastLines, type RunProgress, TAIL_LINES } from "./progress-state.js";
import { listTaskLogs, tailOfFile, taskLogPath } from "./task-logs.js";

/**
 * What a person reads when a run ends (or stops): the outcome, each failed task with
 * the last lines it printed and where its whole log is, where the work of failed or
 * lost attempts was archived, and what to do next. `--json` carries the same facts.
 * `summarize` is pure but for reading logs and refs; `report` prints it.
 */

/** Where a run that waits for a person waits, and what the client knows beyond the outcome. */
export interface ReportContext {
  /** The kept embedded store of a run that waits (or stopped). */
  keptStore?: string;
  /** The server a run waits on. */
  waitsOn?: string;
  /** What the client saw in the run's events: outputs of failures, archive refs of lost attempts. */
  progress?: RunProgress;
  /** The root of the task logs (task-logs.ts), when logs are kept. */
  logsRoot?: string;
  /** A repository on this machine to look for attempt refs in. */
  repo?: string;
}

/** What `--json` says about a task beyond the client's TaskSummary. */
interface TaskFacts {
  outputTail: string[];
  log?: string;
  logs: string[];
  archivedAttempts: string[];
}

async function factsOf(o: RunOutcome, ctx: ReportContext): Promise<Map<string, TaskFacts>> {
  const facts = new Map<string, TaskFacts>();
  const refs = new Map<string, string[]>();
  if (ctx.repo) {
    // Failed attempts are archived by the worker (refs/ado/attempts/<run>/<task>/<n>);
    // the refs are the record, whichever worker made them.
    const found = await listRefs(ctx.repo, runAttemptRefs(o.runId)).catch(() => []);
    for (const { ref } of found) {
      const task = ref.slice(runAttemptRefs(o.runId).length).split("/")[0]!;
      refs.set(task, [...(refs.get(task) ?? []), ref]);
    }
  }
  const logs = ctx.logsRoot ? await listTaskLogs(ctx.logsRoot, o.runId) : [];
  for (const t of o.tasks) {
    const live = ctx.progress?.task(t.id);
    const archived = [...new Set([...(refs.get(t.id) ?? []), ...(live?.archiveRefs ?? [])])].sort(byAttempt);
    const mine = logs.filter((l) => l.taskId === t.id);
    const last = ctx.logsRoot && t.attempts > 0 ? taskLogPath(ctx.logsRoot, o.runId, t.id, t.attempts) : undefined;
    const log = last && existsSync(last) ? last : mine.at(-1)?.path;
    let outputTail: string[] = [];
    if (t.status === "failed") {
      outputTail = live?.outputTail ? lastLines(live.outputTail, TAIL_LINES) : log ? await tailOfFile(log, TAIL_LINES).catch(() => []) : [];
    }
    facts.set(t.id, { outputTail, ...(log ? { log } : {}), logs: mine.map((l) => l.path), archivedAttempts: archived });
  }
  return facts;
}

/** Orders `.../<task>/<n>` refs by attempt number. */
function byAttempt(a: string, b: string): number {
  const n = (r: string) => Number(r.split("/").pop()) || 0;
  return n(a) - n(b) || (a < b ? -1 : 1);
}

/** The summary as text for stdout and stderr (either may be empty). */
export async function summarize(o: RunOutcome, json: boolean, ctx: ReportContext = {}): Promise<{ stdout: string; stderr: string }> {
  const refused = o.mergeInto && (o.mergeInto.status === "refused" || o.mergeInto.status === "error");
  const facts = await factsOf(o, ctx);
  // The scheduler's sum when the run ended (every attempt, lost ones too), else what the events said.
  const cost = o.costUsd ?? (ctx.progress?.costKnown ? ctx.progress.costUsd : undefined);
  if (json) {
    const out = {
      runId: o.runId,
      status: o.status,
      integrationBranch: o.integrationBranch ?? null,
      integrationCommit: o.integrationCommit ?? null,
      error: o.error ?? null,
      ...(o.mergeInto ? { mergeInto: o.mergeInto } : {}),
      ...(o.attention ? { attention: o.attention, ...(ctx.keptStore ? { keptStore: ctx.keptStore } : {}) } : {}),
      ...(ctx.logsRoot ? { logsDir: `${ctx.logsRoot}/${o.runId}` } : {}),
      ...(cost !== undefined ? { costUsd: cost } : {}),
      ...(o.tokens ? { tokens: o.tokens } : {}),
      ...(o.budget ? { budget: o.budget } : {}),
      tasks: o.tasks.map((t) => {
        const f = facts.get(t.id)!;
        return {
          id: t.id,
          status: t.status,
          attempts: t.attempts,
          startedAt: t.startedAt ?? null,
          finishedAt: t.finishedAt ?? null,
          workerId: t.workerId ?? null,
          ...(t.error ? { error: t.error } : {}),
          ...(t.costUsd !== undefined ? { costUsd: t.costUsd } : {}),
          ...(t.tokens !== undefined ? { tokens: t.tokens } : {}),
          ...(t.status === "failed" ? { outputTail: f.outputTail } : {}),
          log: f.log ?? null,
          ...(f.archivedAttempts.length ? { archivedAttempts: f.archivedAttempts } : {}),
        };
      }),
    };
    // stdout carries only the JSON: a refusal's reason (in it) is said once on stderr.
    return { stdout: JSON.stringify(out, null, 2) + "\n", stderr: refused ? `ado: warning: ${o.mergeInto!.into} was not updated: ${o.mergeInto!.reason}\n` : "" };
  }
  const lines: string[] = [""];
  const w = (s: string) => lines.push(s);
  w(`run ${o.runId}: ${o.status}`);
  if (o.error && o.status !== "needs_attention") w(`  ${o.error}`);
  for (const t of o.tasks.filter((x) => x.status === "failed" || x.status === "skipped" || x.status === "cancelled")) {
    const f = facts.get(t.id)!;
    const took = t.startedAt && t.finishedAt ? `, ${formatDuration(Date.parse(t.finishedAt) - Date.parse(t.startedAt))}` : "";
    const mark = t.status === "failed" ? "✗" : t.status === "cancelled" ? "⊘" : "-";
    w(`  ${mark} ${t.id}: ${t.error ?? t.status}${t.status === "failed" ? ` (attempt ${t.attempts}${took})` : ""}`);
    if (t.status === "failed") {
      if (f.outputTail.length) {
        w(`      last ${f.outputTail.length === 1 ? "line" : `${f.outputTail.length} lines`} of its output:`);
        for (const l of f.outputTail) w(`      | ${l}`);
      } else w("      (it printed nothing)");
    }
    if (f.log && t.status === "failed") w(`      log: ${f.log}`);
  }
  const archived = o.tasks.filter((t) => facts.get(t.id)!.archivedAttempts.length);
  if (archived.length) {
    w("  work of failed or lost attempts:");
    for (const t of archived) for (const ref of facts.get(t.id)!.archivedAttempts) w(`    git log ${ref}`);
  }
  if (o.status === "needs_attention") {
    if (o.budget) {
      w(`  $ the run waits for its budget: ${o.budget.message}`);
      w(`      ado budget raise ${o.runId} <usd>   (the new cap, or +<usd> to add; --tokens for a token cap), or ado cancel ${o.runId}`);
    }
    if (o.attention?.length || !o.budget) printAttention(o, ctx, w);
    else if (ctx.keptStore) w(`  the run's state is kept in ${ctx.keptStore}; \`ado budget raise\` in this repository resumes it`);
    else if (ctx.waitsOn) w(`  the run waits on ${ctx.waitsOn}; it goes on once its budget is raised (ado attach ${o.runId})`);
  } else if (o.integrationBranch && o.status === "succeeded") {
    w(`  result: branch ${o.integrationBranch} (${o.integrationCommit?.slice(0, 10)})`);
    w(`  look:   git log --oneline --graph ${o.integrationBranch}`);
    const into = o.mergeInto;
    if (into && !refused) w(`  ${into.into}: ${into.status === "up-to-date" ? "already up to date" : `updated (${into.status}) to ${into.commit?.slice(0, 10)}`}`);
    else if (into) w(`  warning: ${into.into} was not updated: ${into.reason}`);
    else w(`  take:   git merge ${o.integrationBranch}`);
  } else if (o.integrationBranch) {
    w(`  merged so far: ${o.integrationBranch}; task branches: ado/${o.runId}/<task>`);
  }
  if (cost !== undefined && (cost > 0 || ctx.progress?.costKnown)) w(`  cost: ${formatUsd(cost)}${o.tokens ? ` (${formatTokens(o.tokens)} tokens)` : ""}`);
  if (ctx.logsRoot && o.tasks.some((t) => facts.get(t.id)!.logs.length)) w(`  logs: ${ctx.logsRoot}/${o.runId}/<task>.<attempt>.log`);
  return { stdout: lines.join("\n") + "\n", stderr: "" };
}

/** Prints the summary of a run's outcome (see summarize). */
export async function report(o: RunOutcome, json: boolean, ctx: ReportContext = {}): Promise<void> {
  const { stdout, stderr } = await summarize(o, json, ctx);
  if (stderr) process.stderr.write(stderr);
  process.stdout.write(stdout);
}

/** Which merges wait for a person, and the `ado hitl` commands that resolve them. */
export function printAttention(o: Pick<RunOutcome, "runId" | "attention">, ctx: ReportContext, w: (line: string) => void): void {
  for (const a of o.attention ?? []) {
    w(`  ? ${a.taskId}: ${a.message}`);
    w(`      ado hitl show ${a.hitlId}`);
  }
  const id = o.attention?.length === 1 ? o.attention[0]!.hitlId : "<id>";
  w("  resolve with one of:");
  w(`    ado hitl resolve ${id} --choose ours|theirs   (keep the integration branch's side, or the task's, per conflict)`);
  w(`    ado hitl resolve ${id} --choose agent [--resolver <cmd>]   (run a resolver agent)`);
  w(`    ado hitl resolve ${id} --manual   (resolve by hand in a worktree, then --continue)`);
  w(`    ado hitl resolve ${id} --skip     (leave it unmerged; what needs it is skipped)`);
  if (ctx.keptStore) w(`  the run's state is kept in ${ctx.keptStore}; \`ado hitl\` in this repository resumes it`);
  else if (ctx.waitsOn) w(`  the run waits on ${ctx.waitsOn}; it goes on once resolved (ado attach ${o.runId})`);
}

/** What Ctrl-C left: a run stopped before its end (follow.ts). */
export interface StopFacts {
  mergedWhileStopping: string[];
  interrupted: string[];
}

/** The summary of a run that Ctrl-C stopped before its end, and how to go on. */
export function summarizeStop(runId: string, stop: StopFacts, json: boolean, ctx: ReportContext = {}): string {
  const tasks = ctx.progress?.tasks() ?? [];
  const left = tasks.filter((t) => !FINISHED.has(t.status));
  const done = tasks.filter((t) => t.status === "succeeded").map((t) => t.id);
  const failed = tasks.filter((t) => t.status === "failed").map((t) => t.id);
  if (json) {
    return (
      JSON.stringify(
        {
          runId,
          status: "interrupted",
          keptStore: ctx.keptStore ?? null,
          mergedWhileStopping: stop.mergedWhileStopping,
          interrupted: stop.interrupted,
          ...(ctx.logsRoot ? { logsDir: `${ctx.logsRoot}/${runId}` } : {}),
          tasks: tasks.map((t) => ({ id: t.id, status: t.status, attempts: t.attempt })),
          ...(ctx.keptStore ? { resume: `ado runs resume ${runId}`, remove: `ado runs remove ${runId}` } : {}),
        },
        null,
        2,
      ) + "\n"
    );
  }
  const lines = ["", `run ${runId}: stopped by Ctrl-C before its end`];
  const list = (ids: string[]) => (ids.length > 8 ? `${ids.slice(0, 8).join(", ")}, … (${ids.length})` : ids.join(", "));
  lines.push(`  merged while stopping: ${stop.mergedWhileStopping.length ? list(stop.mergedWhileStopping) : "nothing"}`);
  if (stop.interrupted.length) {
    lines.push(`  interrupted: ${list(stop.interrupted)} (work so far committed on ado/${runId}/<task>; the next attempt continues from it)`);
  }
  if (done.length) lines.push(`  succeeded: ${list(done)}`);
  if (failed.length) lines.push(`  failed: ${list(failed)}`);
  if (left.length) lines.push(`  not finished: ${list(left.map((t) => t.id))}`);
  if (ctx.logsRoot) lines.push(`  logs: ${ctx.logsRoot}/${runId}/<task>.<attempt>.log`);
  if (ctx.keptStore) {
    lines.push(`  its state is kept in ${ctx.keptStore}`);
    lines.push(`  go on:   ado runs resume ${runId}`);
    lines.push(`  drop it: ado runs remove ${runId}   (unmerged work is archived under refs/ado/archive first)`);
  } else {
    lines.push("  its state is not kept (the embedded store was not in a repository): it cannot be resumed");
  }
  return lines.join("\n") + "\n";
}

/** Prints summarizeStop. */
export async function reportStop(runId: string, stop: StopFacts, json: boolean, ctx: ReportContext = {}): Promise<void> {
  process.stdout.write(summarizeStop(runId, stop, json, ctx));
}
