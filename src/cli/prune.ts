import { AdoClient } from "../runtime/client.js";
import { drainQuietly } from "../runtime/connection.js";
import { parseDuration, formatDuration } from "../runtime/duration.js";
import { errorMessage } from "../runtime/errors.js";
import type { RunRecord } from "../runtime/messages.js";
import { openJetStream, topology } from "../runtime/topology.js";
import {
  applyPrune,
  checkedOutBranches,
  listRemoteRunRefs,
  listRunRefs,
  mergedRunBranches,
  openRepo,
  planPrune,
  pruneRemoteRun,
  type RefAction,
  type RunRefs,
} from "../git/index.js";
import { CliError, clientConnection, configFrom, Exit, resolveServer, type CommonFlags } from "./common.js";
import { findKeptRuns, keptRunOwner } from "./kept-runs.js";
import { findRunStacks } from "./up-state.js";

export interface PruneFlags extends CommonFlags {
  repo?: string;
  olderThan?: string;
  dryRun?: boolean;
  remote?: string;
  json?: boolean;
}

/** When a run started, from its id (`r20261123t201127-...`), if it is one ado made. */
export function runStartedAt(runId: string): Date | undefined {
  const m = /^r(\d{4})(\d\d)(\d\d)t(\d\d)(\d\d)(\d\d)-/.exec(runId);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[];
  return new Date(Date.UTC(y!, mo! - 1, d!, h!, mi!, s!));
}

interface RunReport {
  runId: string;
  /** Why it was left alone, when it was. */
  skipped?: string;
  actions: RefAction[];
  remote?: { url: string; deleted: string[]; kept: string[]; error?: string };
}

/**
 * `ado prune`: deletes the branches and refs of finished runs in this repository (and
 * on the run's remote), archiving first whatever is not held by a branch that stays.
 * A run still going on (its own stack in another terminal, kept for `ado hitl`, or
 * active on the server) is left alone.
 */
export async function pruneCommand(flags: PruneFlags): Promise<number> {
  const info = await openRepo(flags.repo ?? process.cwd());
  const repo = info.topLevel;
  const { config, logger } = await configFrom(flags, repo);
  let olderThanMs: number | undefined;
  if (flags.olderThan !== undefined) {
    olderThanMs = parseDuration(flags.olderThan);
    if (olderThanMs === undefined) throw new CliError(`--older-than '${flags.olderThan}' is not a duration: use e.g. 12h, 7d or 2w`);
  }
  const say = (msg: string) => process.stderr.write(`ado: ${msg}\n`);
  const runs = await listRunRefs(repo);

  // What still goes on is not pruned.
  const active = new Map<string, string>();
  for (const k of await findKeptRuns(info.gitCommonDir)) {
    const owner = keptRunOwner(k);
    active.set(
      k.runId,
      owner ? `running (pid ${owner})` : k.marker?.state === "needs_attention" ? "waits for a person (ado hitl list)" : `its state is kept in ${k.dir} (an ado run that stopped abruptly): ado hitl list`,
    );
  }
  for (const s of await findRunStacks(info.gitCommonDir)) if (s.runId) active.set(s.runId, `running (ado run, pid ${s.pid})`);
  const records = new Map<string, RunRecord>();
  const server = await resolveServer(config);
  if (server) {
    const nc = await clientConnection(server, logger);
    try {
      await openJetStream(nc);
      const client = new AdoClient(nc, topology(config.prefix));
      for (const runId of runs.keys()) {
        const rec = await client.runRecord(runId);
        if (!rec) continue;
        records.set(runId, rec);
        if (rec.status === "running" || rec.status === "needs_attention") active.set(runId, `${rec.status.replace("_", " ")} on ${server.url}`);
      }
    } finally {
      await drainQuietly(nc);
    }
  } else if (runs.size) {
    say("no server is running here: runs are judged from this repository alone (work not in a branch that stays is archived, never lost)");
  }

  const now = new Date();
  const reports: RunReport[] = [];
  const candidates: RunRefs[] = [];
  for (const run of [...runs.values()].sort((a, b) => a.runId.localeCompare(b.runId))) {
    const why = active.get(run.runId);
    const started = runStartedAt(run.runId);
    if (why) reports.push({ runId: run.runId, skipped: why, actions: [] });
    else if (olderThanMs !== undefined && started && now.getTime() - started.getTime() < olderThanMs) {
      reports.push({ runId: run.runId, skipped: `started ${formatDuration(now.getTime() - started.getTime())} ago (--older-than ${flags.olderThan})`, actions: [] });
    } else candidates.push(run);
  }
  const merged = await mergedRunBranches(repo, candidates);
  const checkedOut = await checkedOutBranches(repo);
  let failed = false;
  for (const run of candidates) {
    const report: RunReport = { runId: run.runId, actions: planPrune({ run, merged, checkedOut, now }) };
    reports.push(report);
    try {
      if (!flags.dryRun) await applyPrune(repo, report.actions);
    } catch (err) {
      report.skipped = `not pruned: ${errorMessage(err)}`;
      failed = true;
      continue;
    }
    const url = records.get(run.runId)?.remote ?? flags.remote ?? config.remote;
    if (!url) continue;
    try {
      const { deleted, kept } = await pruneRemoteRun(repo, url, await listRemoteRunRefs(repo, url, run.runId), flags.dryRun ?? false);
      report.remote = { url, deleted: deleted.map((r) => r.ref), kept: kept.map((r) => r.ref) };
    } catch (err) {
      report.remote = { url, deleted: [], kept: [], error: errorMessage(err) };
      failed = true;
    }
  }
  reports.sort((a, b) => a.runId.localeCompare(b.runId));
  print(reports, flags);
  return failed ? Exit.failed : Exit.ok;
}

function print(reports: RunReport[], flags: PruneFlags): void {
  if (flags.json) {
    process.stdout.write(JSON.stringify({ dryRun: flags.dryRun ?? false, runs: reports }, null, 2) + "\n");
    return;
  }
  const w = (s: string) => process.stdout.write(s + "\n");
  const would = flags.dryRun ? "would " : "";
  if (!reports.length) w("no runs' branches or refs here: nothing to prune");
  let deleted = 0;
  let archived = 0;
  let pruned = 0;
  for (const r of reports) {
    if (r.skipped && !r.actions.length) {
      w(`${r.runId}: left alone: ${r.skipped}`);
      continue;
    }
    if (r.skipped) {
      w(`${r.runId}: ${r.skipped}`);
      continue;
    }
    pruned++;
    const del = r.actions.filter((a) => a.action === "delete");
    const arc = r.actions.filter((a) => a.action === "archive");
    const keep = r.actions.filter((a) => a.action === "keep");
    deleted += del.length;
    archived += arc.length;
    w(`${r.runId}: ${would}delete ${del.length + arc.length} ref(s)${arc.length ? `, archiving ${arc.length} first` : ""}`);
    for (const a of arc) if (a.action === "archive") w(`  ${a.ref.replace("refs/heads/", "")} -> ${a.archive} (not in a branch that stays)`);
    for (const a of keep) if (a.action === "keep") w(`  kept ${a.ref.replace("refs/heads/", "")}: ${a.why}`);
    if (r.remote?.error) w(`  on ${r.remote.url}: ${r.remote.error}`);
    else if (r.remote) {
      w(`  on ${r.remote.url}: ${would}delete ${r.remote.deleted.length} ref(s)`);
      for (const k of r.remote.kept) w(`  kept on the remote: ${k} (its commit is not in this repository: fetch it first)`);
    }
  }
  if (reports.length) {
    w(`${flags.dryRun ? "dry run: " : ""}${pruned} run(s) ${flags.dryRun ? "to prune" : "pruned"}: ${deleted + archived} branch(es) and ref(s)${archived ? `, ${archived} archived under refs/ado/archive/ first` : ""}`);
  }
}
