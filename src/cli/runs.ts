/**
 * `ado runs list|resume|remove`: the runs `ado run` kept in this repository because
 * they did not end (kept-runs.ts): one that waits for a person, one stopped by Ctrl-C,
 * one whose `ado run` was killed (orphaned: its worktrees stay locked and nobody drives
 * it). `resume` starts an embedded stack on the run's store and follows it to its end,
 * as `ado run` would have; `remove` gives up on it without losing work: the work of its
 * worktrees is archived under refs/ado/archive first, then the worktrees and the store go.
 */
import { type Command, Option } from "commander";
import { hostname } from "node:os";
import type { Stack } from "../actors/stack.js";
import { AdoClient } from "../runtime/client.js";
import { drainQuietly } from "../runtime/connection.js";
import { asRunId } from "../runtime/ids.js";
import { applyCleanup, openRepo, planCleanup, WorktreeManager, type WorktreeStatus } from "../git/index.js";
import { openJetStream, topology } from "../runtime/topology.js";
import { CliError, clientConnection, configFrom, Exit, type CommonFlags } from "./common.js";
import { endEmbedded, followRun, type Followed } from "./follow.js";
import { runsCommand } from "./run-list.js";
import { dropKeptRun, findKeptRun, findKeptRuns, type KeptRun, keptRunOwner, keptRunState, markKeptRun } from "./kept-runs.js";
import { createProgress, type ProgressMode } from "./progress.js";
import { exitCodeOf } from "./run.js";
import { report, reportStop } from "./summary.js";
import { logsRoot, TaskLogWriter } from "./task-logs.js";

interface RunsFlags extends CommonFlags {
  repo?: string;
  json?: boolean;
}

const say = (msg: string) => process.stderr.write(`ado: ${msg}\n`);

/** Registers `ado runs list|resume|remove`; `common` adds --server/--config/--prefix. */
export function registerRunsCommands(program: Command, common: (cmd: Command) => Command, setExit: (code: number) => void): void {
  const runs = program
    .command("runs")
    .description(
      "runs the server knows (`ado runs [--all] [--json]`: state, start, duration, cost, tasks); and those `ado run` kept in this repository because they did not end: list, resume, remove",
    );
  const repo = (cmd: Command) => cmd.option("-r, --repo <dir>", "the repository (default: current directory)");
  common(
    runs
      .command("show", { isDefault: true })
      .description("(the default) runs the server knows, newest first: state, start, duration, cost, tasks by state; active ones, or all with --all (kept: records until `ado prune`, snapshots 30 days)")
      .option("--all", "include finished runs")
      .option("--json", "print JSON"),
  ).action(async (flags: CommonFlags & { all?: boolean; json?: boolean }) => setExit(await runsCommand(flags)));
  common(repo(runs.command("list").description("kept runs: state (running, interrupted, orphaned, needs_attention), age, worktrees, what to do")).option("--json", "print JSON")).action(
    async (flags: RunsFlags) => setExit(await listCommand(flags)),
  );
  common(
    repo(
      runs
        .command("resume")
        .description("start an embedded stack on a kept run's state and follow the run to its end (exit as `ado run` would)")
        .argument("<run>", "run id (from ado runs list)")
        .option("--json", "print one JSON object with the outcome when the run ends")
        .addOption(new Option("--progress <mode>", "live, plain, none, or auto: live on a terminal, plain otherwise").choices(["auto", "live", "plain", "none"]).default("auto")),
    ),
  ).action(async (runId: string, flags: RunsFlags & { progress: ProgressMode }) => setExit(await resumeCommand(runId, flags)));
  common(
    repo(
      runs
        .command("remove")
        .description("give up on a kept run: archive its worktrees' work under refs/ado/archive, remove them, delete its state (its branches stay)")
        .argument("<run>", "run id (from ado runs list)")
        .option("--json", "print JSON"),
    ),
  ).action(async (runId: string, flags: RunsFlags) => setExit(await removeCommand(runId, flags)));
}

async function repoOf(flags: RunsFlags) {
  const info = await openRepo(flags.repo ?? process.cwd());
  const { config, logger } = await configFrom({ ...flags, server: undefined }, info.topLevel);
  return { info, config, logger };
}

/** The worktrees of a run (by ado.json, or by their `<run>/<task>` name). */
async function worktreesOf(manager: WorktreeManager, runId: string): Promise<WorktreeStatus[]> {
  return (await manager.inspect()).filter((w) => (w.meta?.runId ?? w.name.split("/")[0]) === runId);
}

/** What to do with a kept run, by its state. */
function nextStep(k: KeptRun): string {
  const pid = k.marker?.pid;
  switch (keptRunState(k)) {
    case "running":
      return `in use by ado (pid ${pid})`;
    case "orphaned":
      return `its ado (pid ${pid}) is gone: ado runs resume ${k.runId}, or ado runs remove ${k.runId}`;
    case "interrupted":
      return `stopped by Ctrl-C: ado runs resume ${k.runId}, or ado runs remove ${k.runId}`;
    case "needs_attention":
      return `waits for a person: ado hitl list (a merge), or ado budget raise ${k.runId} <usd> (its budget)`;
    default:
      return `no readable run.json in ${k.dir}: ado runs remove ${k.runId}`;
  }
}

async function listCommand(flags: RunsFlags): Promise<number> {
  const { info, config, logger } = await repoOf(flags);
  const kept = await findKeptRuns(info.gitCommonDir);
  const manager = new WorktreeManager({ repo: info.topLevel, baseDir: config.worktreeDir, logger, include: config.worktrees });
  const all = kept.length ? await manager.inspect() : [];
  const rows = kept.map((k) => ({
    runId: k.runId,
    state: keptRunState(k),
    pid: k.marker?.pid ?? null,
    updatedAt: k.marker?.updatedAt ?? null,
    dir: k.dir,
    worktrees: all.filter((w) => (w.meta?.runId ?? w.name.split("/")[0]) === k.runId).map((w) => w.path),
    next: nextStep(k),
  }));
  if (flags.json) {
    process.stdout.write(JSON.stringify({ repo: info.topLevel, runs: rows }, null, 2) + "\n");
    return Exit.ok;
  }
  if (!rows.length) {
    process.stdout.write(`no kept runs in ${info.topLevel}\n`);
    return Exit.ok;
  }
  const head = ["RUN", "STATE", "SINCE", "WORKTREES", "NEXT"];
  const cells = rows.map((r) => [r.runId, r.state, r.updatedAt ? ago(r.updatedAt) : "-", String(r.worktrees.length), r.next]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  for (const line of [head, ...cells]) process.stdout.write(line.map((c, i) => (i === line.length - 1 ? c : c.padEnd(widths[i]!))).join("  ") + "\n");
  return Exit.ok;
}

async function findOrFail(gitCommonDir: string, runId: string): Promise<KeptRun> {
  const kept = await findKeptRun(gitCommonDir, runId);
  if (!kept) throw new CliError(`no kept run '${runId}' in this repository: \`ado runs list\` lists them (a run that ended keeps nothing to resume)`);
  const owner = keptRunOwner(kept);
  if (owner !== undefined) throw new CliError(`run ${runId} is in use by another ado (pid ${owner}); wait for it, or stop it with Ctrl-C there`);
  return kept;
}

async function resumeCommand(runId: string, flags: RunsFlags & { progress: ProgressMode }): Promise<number> {
  return resumeKeptRun(runId, flags);
}

/**
 * Resumes a kept run (see `ado runs resume`). `beforeFollow`: what to ask of the run once its
 * stack is up and before following it (`ado budget raise` on a run that waits for its
 * budget sends its raise there).
 */
export async function resumeKeptRun(runId: string, flags: RunsFlags & { progress: ProgressMode }, beforeFollow?: (client: AdoClient) => Promise<void>): Promise<number> {
  const { info, config, logger } = await repoOf(flags);
  const kept = await findOrFail(info.gitCommonDir, runId);
  const marker = kept.marker ?? { runId, prefix: config.prefix, repo: info.topLevel, state: "interrupted" as const, pid: 0, updatedAt: "" };
  const before = marker.state;
  await markKeptRun(kept, { ...marker, state: "running", pid: process.pid, updatedAt: new Date().toISOString() });
  const prefix = marker.prefix;
  const { Stack } = await import("../actors/stack.js");
  let stack: Stack;
  try {
    stack = await Stack.start({ config: { ...config, prefix, server: undefined, embedded: { ...config.embedded, storeDir: kept.storeDir } }, logger });
  } catch (err) {
    await markKeptRun(kept, { ...marker, state: before === "running" ? "interrupted" : before, updatedAt: new Date().toISOString() });
    throw err;
  }
  say(`resuming run ${runId} from ${kept.dir} (an embedded stack on its state); its events so far are replayed first`);
  const nc = await clientConnection({ url: stack.url, auth: stack.auth }, logger).catch(async (err) => {
    await stack.close();
    await markKeptRun(kept, { ...marker, state: "interrupted", updatedAt: new Date().toISOString() });
    throw err;
  });
  const view = createProgress(flags.progress, flags.json ? process.stderr : process.stdout);
  const root = logsRoot(info.gitCommonDir);
  let followed: Followed | undefined;
  try {
    await openJetStream(nc);
    const client = new AdoClient(nc, topology(prefix));
    if (!(await client.runRecord(runId))) {
      // Stopped before the scheduler took the submission: it is still in its stream, and will be now.
      const jsm = await client.js.jetstreamManager();
      const pending = (await jsm.streams.info(client.topo.streams.submit.name)).state.messages;
      if (!pending) throw new CliError(`the kept state of ${runId} (${kept.storeDir}) holds no such run: nothing to resume; \`ado runs remove ${runId}\` deletes it`);
    }
    await beforeFollow?.(client);
    followed = await followRun({
      runId,
      view,
      logs: new TaskLogWriter(root, runId, say),
      stack,
      say,
      watch: (w) => client.watch(asRunId(runId), { ...w, noSchedulerAfterMs: 30_000, onNoScheduler: () => say("no event yet: the run's scheduler is catching up") }),
    });
  } finally {
    view.stop();
    await endEmbedded({ kept, followed, keepIfNotFollowed: true, stop: async () => (await drainQuietly(nc), await stack.close()) });
  }
  try {
    const ctx = { logsRoot: root, progress: view.state, repo: info.topLevel, keptStore: kept.dir };
    if (followed.stopped) {
      await reportStop(runId, followed.stopped, flags.json ?? false, ctx);
      return Exit.interrupted;
    }
    await report(followed.outcome!, flags.json ?? false, ctx);
    return exitCodeOf(followed.outcome!);
  } finally {
    followed.release();
  }
}

async function removeCommand(runId: string, flags: RunsFlags): Promise<number> {
  const { info, config, logger } = await repoOf(flags);
  const kept = await findOrFail(info.gitCommonDir, runId);
  const manager = new WorktreeManager({ repo: info.topLevel, baseDir: config.worktreeDir, logger, include: config.worktrees });
  const mine = await worktreesOf(manager, runId);
  // Every worktree of the run goes, its work archived first (force: they are not in use,
  // their creator is gone; one still in use is kept and reported).
  const plan = planCleanup(mine, new Map(), { force: true }, { now: new Date() });
  const outcomes = await applyCleanup(manager, plan, { repo: info.topLevel, logger, actor: `ado runs remove (${hostname()})` });
  const failed = outcomes.filter((o) => o.result === "failed" || o.result === "kept");
  if (!failed.length) await dropKeptRun(kept);
  const logs = `${logsRoot(info.gitCommonDir)}/${runId}`;
  if (flags.json) {
    process.stdout.write(
      JSON.stringify({ runId, removed: !failed.length, store: kept.dir, worktrees: outcomes.map((o) => ({ path: o.path, result: o.result, archive: o.archive ?? null, error: o.error ?? (o.result === "kept" ? o.action.why : null) })), logs }, null, 2) + "\n",
    );
    return failed.length ? Exit.failed : Exit.ok;
  }
  const w = (s: string) => process.stdout.write(s + "\n");
  for (const o of outcomes) {
    const why = o.action.why.replace(/; --force$/, "");
    if (o.result === "archived") w(`archived ${o.name}: ${why} -> git log ${o.archive!.ref}; removed`);
    else if (o.result === "removed" || o.result === "cleared") w(`removed  ${o.name}: ${why}`);
    else w(`KEPT     ${o.name}: ${o.error ?? why}`);
  }
  if (failed.length) {
    w(`run ${runId} is not removed: ${failed.length} worktree(s) could not be (see above); its state stays in ${kept.dir}`);
    return Exit.failed;
  }
  w(`run ${runId} removed: its state (${kept.dir}) and ${mine.length} worktree(s)`);
  w(`  its branches stay: git branch --list 'ado/${runId}/*' (delete them with git branch -D when you are done)`);
  w(`  its logs stay: ${logs}`);
  return Exit.ok;
}

function ago(iso: string): string {
  const ms = Date.now() - Date.parse(iso);
  if (!Number.isFinite(ms)) return "-";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.floor(s / 60)}m ago`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}
