/**
 * `ado worktrees list` and `ado worktrees cleanup`: the task worktrees of one repository
 * (under the configured base directory), from git, with the KV registry's view added
 * when a server is reachable. Both work without a server.
 */
import type { Command } from "commander";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { hostname } from "node:os";
import type { Config } from "../runtime/config.js";
import { connectNats, drainQuietly } from "../runtime/connection.js";
import { authForRole } from "../runtime/nats-auth.js";
import { errorMessage } from "../runtime/errors.js";
import {
  applyCleanup,
  type CleanupItem,
  type CleanupOutcome,
  openRepo,
  type OrphanDir,
  planCleanup,
  WorktreeManager,
  type WorktreeStatus,
  type WorktreeRecord,
} from "../git/index.js";
import { type MalformedEntry, WorktreeRegistry } from "../runtime/worktree-registry.js";
import type { Logger } from "../runtime/logger.js";
import { topology } from "../runtime/topology.js";
import { configFrom, Exit, resolveServer, type CommonFlags } from "./common.js";
import { findKeptRuns, keptRunState } from "./kept-runs.js";

interface WorktreeFlags extends CommonFlags {
  repo?: string;
  json?: boolean;
}

/** Registers `ado worktrees list|cleanup` on the program; `common` adds --server/--config/--prefix. */
export function registerWorktreeCommands(program: Command, common: (cmd: Command) => Command, setExit: (code: number) => void): void {
  const group = program
    .command("worktrees")
    .description("the task worktrees of a repository: list them, clean up finished ones (work is archived, never lost)");
  common(
    group
      .command("list")
      .description("every task worktree of the repository: branch, state, age, uncommitted changes, unmerged commits, in use or not")
      .option("-r, --repo <dir>", "the repository (default: current directory)")
      .option("--all", "also registry records of worktrees already removed, and of other repositories")
      .option("--json", "print JSON"),
  ).action(async (flags: WorktreeFlags & { all?: boolean }) => setExit(await listCommand(flags)));
  common(
    group
      .command("cleanup")
      .description(
        "remove merged worktrees; archive (refs/ado/archive/...) then remove those past worktrees.cleanupAfter or beyond " +
          "worktrees.maxWorktrees; keep the rest and say why",
      )
      .option("-r, --repo <dir>", "the repository (default: current directory)")
      .option("-n, --dry-run", "only print what would happen to each worktree, and why")
      .option("-f, --force", "also remove worktrees with unmerged or uncommitted work (archived first); never ones in use")
      .option("--json", "print JSON"),
  ).action(async (flags: WorktreeFlags & { dryRun?: boolean; force?: boolean }) => setExit(await cleanupCommand(flags)));
}

/** The manager, the registry (when a server answers) and what went wrong reaching it. */
interface Context {
  config: Config;
  logger: Logger;
  repo: string;
  gitCommonDir: string;
  manager: WorktreeManager;
  baseDir: string;
  registry?: WorktreeRegistry;
  /** Why the registry is not used, when it is not. */
  registryNote?: string;
  close(): Promise<void>;
}

async function open(flags: WorktreeFlags): Promise<Context> {
  const { topLevel, gitCommonDir } = await openRepo(flags.repo ?? process.cwd());
  const { config, logger } = await configFrom(flags, topLevel);
  const manager = new WorktreeManager({
    repo: topLevel,
    baseDir: config.worktreeDir,
    logger,
    include: config.worktrees,
  });
  const ctx: Context = { config, logger, repo: topLevel, gitCommonDir, manager, baseDir: await manager.baseDir(), close: async () => undefined };
  const server = await resolveServer(config);
  if (!server) {
    ctx.registryNote = "no server configured (--server, ADO_SERVER or `ado up`): showing what git knows";
    return ctx;
  }
  let nc: NatsConnection | undefined;
  try {
    nc = await connectNats({ servers: server.url, name: `ado-cli-worktrees-${hostname()}-${process.pid}`, logger, timeoutMs: 2_000, ...(server.auth ? { auth: authForRole(server.auth, "client") } : {}) });
    const kv = await new Kvm(nc).open(topology(config.prefix).buckets.worktrees);
    await kv.status(); // fails now, not later, when the bucket was never created
    ctx.registry = new WorktreeRegistry(kv, logger);
    ctx.close = () => drainQuietly(nc);
  } catch (err) {
    await drainQuietly(nc);
    ctx.registryNote = `the registry at ${server.url} could not be read (${errorMessage(err)}): showing what git knows`;
  }
  return ctx;
}

/** Registry records (and the malformed entries, reported), or none without a registry. */
async function readRegistry(ctx: Context): Promise<{ records: WorktreeRecord[]; malformed: MalformedEntry[] }> {
  if (!ctx.registry) return { records: [], malformed: [] };
  try {
    return await ctx.registry.list();
  } catch (err) {
    ctx.registryNote = `the registry could not be listed (${errorMessage(err)}): showing what git knows`;
    return { records: [], malformed: [] };
  }
}

/** Records by worktree path: the newest record wins when two tasks used one path. */
function byPath(records: readonly WorktreeRecord[]): Map<string, WorktreeRecord> {
  const map = new Map<string, WorktreeRecord>();
  for (const r of [...records].sort((a, b) => a.updatedAt.localeCompare(b.updatedAt))) map.set(r.path, r);
  return map;
}

function warnRegistry(ctx: Context, malformed: readonly MalformedEntry[], json: boolean): void {
  if (json) return;
  if (ctx.registryNote) process.stderr.write(`ado: ${ctx.registryNote}\n`);
  for (const m of malformed) process.stderr.write(`ado: registry entry '${m.key}' is malformed and was ignored: ${m.error}\n`);
}

// ---------------------------------------------------------------- list

interface ListedWorktree {
  path: string;
  name: string;
  branch?: string;
  head: string;
  exists: boolean;
  state?: string;
  createdAt?: string;
  finishedAt?: string;
  changes: string[];
  unmerged?: number;
  inUse: boolean;
  note?: string;
  /** What `ado worktrees cleanup` (without --force) would do, and why. */
  cleanup: CleanupItem["action"];
  owner?: { host: string; pid: number; workerId?: string };
  record?: WorktreeRecord;
}

async function listCommand(flags: WorktreeFlags & { all?: boolean }): Promise<number> {
  const ctx = await open(flags);
  try {
    const [worktrees, orphans, registry] = await Promise.all([ctx.manager.inspect(), ctx.manager.orphans(), readRegistry(ctx)]);
    const records = byPath(registry.records);
    const plan = planCleanup(worktrees, records, policyOf(ctx.config, false), { now: new Date() }, orphans);
    const stopped = await stoppedRuns(ctx.gitCommonDir);
    const listed = worktrees.map((w, i) => listed_(w, records.get(w.path), plan[i]!, stopped));
    const listedOrphans = orphans.map((o, i) => orphanRow(o, plan[worktrees.length + i]!));
    const shown = new Set(worktrees.map((w) => w.path));
    const history = flags.all ? registry.records.filter((r) => !shown.has(r.path)) : [];
    if (flags.json) {
      const out = {
        repo: ctx.repo,
        baseDir: ctx.baseDir,
        registry: ctx.registry ? "read" : ctx.registryNote,
        worktrees: listed,
        orphans: listedOrphans,
        ...(flags.all ? { history } : {}),
        malformed: registry.malformed,
      };
      process.stdout.write(JSON.stringify(out, null, 2) + "\n");
      return Exit.ok;
    }
    warnRegistry(ctx, registry.malformed, false);
    process.stdout.write(`worktrees of ${ctx.repo} under ${ctx.baseDir}\n`);
    const rows = [...listed, ...listedOrphans].map((w) => [
      w.name,
      w.branch ?? "-",
      w.state ?? "-",
      w.createdAt ? ago(w.createdAt) : "-",
      String(w.changes.length),
      w.unmerged === undefined ? "?" : String(w.unmerged),
      w.inUse ? "yes" : "no",
      w.note ?? cleanupWord(w.cleanup),
    ]);
    if (rows.length === 0) process.stdout.write("(none)\n");
    else process.stdout.write(table(["WORKTREE", "BRANCH", "STATE", "AGE", "CHANGES", "UNMERGED", "IN USE", "NOTE / CLEANUP WOULD"], rows) + "\n");
    if (history.length) {
      process.stdout.write(`\nregistry records without a worktree here (${history.length}):\n`);
      process.stdout.write(
        table(
          ["TASK", "STATE", "HOST", "FINISHED", "PATH", "REASON"],
          history.map((r) => [`${r.runId}/${r.taskId}`, r.state, r.host, r.finishedAt ? ago(r.finishedAt) : "-", r.path, r.archiveRef ?? r.reason ?? ""]),
        ) + "\n",
      );
    }
    return Exit.ok;
  } finally {
    await ctx.close();
  }
}

/**
 * Kept runs of the repository that nobody drives (kept-runs.ts): killed (`orphaned`: the
 * `ado run` that ran the embedded stack is gone) or stopped by Ctrl-C (`interrupted`).
 * Their worktrees stay locked until the run is resumed or removed.
 */
async function stoppedRuns(gitCommonDir: string): Promise<Map<string, { state: "orphaned" | "interrupted"; pid?: number }>> {
  const out = new Map<string, { state: "orphaned" | "interrupted"; pid?: number }>();
  for (const k of await findKeptRuns(gitCommonDir)) {
    const state = keptRunState(k);
    if (state === "orphaned" || state === "interrupted") out.set(k.runId, { state, ...(k.marker ? { pid: k.marker.pid } : {}) });
  }
  return out;
}

function listed_(w: WorktreeStatus, record: WorktreeRecord | undefined, item: CleanupItem, stopped: ReadonlyMap<string, { state: "orphaned" | "interrupted"; pid?: number }>): ListedWorktree {
  const run = item.runId ? stopped.get(item.runId) : undefined;
  // The registry (when read) knows better; without it, a worktree of a run nobody drives says so.
  const orphaned =
    !record && run && !item.inUse
      ? {
          state: run.state === "orphaned" ? "orphaned" : "interrupted",
          note: `${run.state === "orphaned" ? `run ${item.runId}'s ado (pid ${run.pid}) is gone` : `run ${item.runId} was stopped`}: ado runs resume ${item.runId}, or ado runs remove ${item.runId}`,
        }
      : undefined;
  return {
    path: w.path,
    name: w.name,
    branch: w.branch,
    head: w.head,
    exists: w.exists,
    state: record?.state ?? orphaned?.state,
    createdAt: item.createdAt,
    finishedAt: record?.finishedAt,
    changes: w.changes,
    unmerged: w.unmerged,
    inUse: item.inUse,
    note: w.metaProblem
      ? `ado.json unreadable: ${w.metaProblem}`
      : !w.exists
        ? "directory gone"
        : record?.state === "kept"
          ? `kept: ${record.reason}`
          : orphaned?.note,
    cleanup: item.action,
    ...(w.meta ? { owner: { host: w.meta.host, pid: w.meta.pid, workerId: w.meta.workerId } } : {}),
    ...(record ? { record } : {}),
  };
}

function orphanRow(o: OrphanDir, item: CleanupItem): ListedWorktree {
  return { path: o.path, name: o.name, head: "", exists: true, state: "orphaned", changes: [], inUse: false, note: `orphaned: ${o.reason}`, cleanup: item.action };
}

function cleanupWord(a: CleanupItem["action"]): string {
  switch (a.kind) {
    case "remove":
      return `remove (${a.why})`;
    case "archive":
      return `archive, remove (${a.why})`;
    case "clear":
      return `clear (${a.why})`;
    case "keep":
      return `keep (${a.why})`;
  }
}

// ---------------------------------------------------------------- cleanup

function policyOf(config: Config, force: boolean) {
  return { cleanupAfterMs: config.worktrees.cleanupAfter, maxWorktrees: config.worktrees.maxWorktrees, force };
}

async function cleanupCommand(flags: WorktreeFlags & { dryRun?: boolean; force?: boolean }): Promise<number> {
  const ctx = await open(flags);
  try {
    // Registrations git itself calls stale (unlocked, directory gone) go first.
    if (!flags.dryRun) await ctx.manager.prune();
    const [worktrees, orphans, registry] = await Promise.all([ctx.manager.inspect(), ctx.manager.orphans(), readRegistry(ctx)]);
    const plan = planCleanup(worktrees, byPath(registry.records), policyOf(ctx.config, flags.force ?? false), { now: new Date() }, orphans);
    const outcomes = await applyCleanup(ctx.manager, plan, {
      dryRun: flags.dryRun,
      registry: ctx.registry,
      actor: `ado worktrees cleanup (${hostname()})`,
      repo: ctx.repo,
      logger: ctx.logger,
    });
    const failed = outcomes.filter((o) => o.result === "failed").length;
    if (flags.json) {
      process.stdout.write(
        JSON.stringify({ repo: ctx.repo, baseDir: ctx.baseDir, dryRun: flags.dryRun ?? false, force: flags.force ?? false, registry: ctx.registry ? "read" : ctx.registryNote, worktrees: outcomes, malformed: registry.malformed }, null, 2) + "\n",
      );
    } else {
      warnRegistry(ctx, registry.malformed, false);
      printOutcomes(ctx, outcomes, flags.dryRun ?? false);
    }
    return failed ? Exit.failed : Exit.ok;
  } finally {
    await ctx.close();
  }
}

function printOutcomes(ctx: Context, outcomes: readonly CleanupOutcome[], dryRun: boolean): void {
  const out = process.stdout;
  out.write(`${dryRun ? "dry run: nothing changed. " : ""}worktrees of ${ctx.repo} under ${ctx.baseDir}\n`);
  if (outcomes.length === 0) {
    out.write("(none)\n");
    return;
  }
  for (const o of outcomes) {
    const a = o.action;
    let line: string;
    if (o.result === "failed") line = `FAILED    ${o.name}: ${o.error} (kept)`;
    else if (o.result === "kept") line = `keep      ${o.name}: ${a.why}${a.kind === "keep" && a.hint ? ` (${a.hint})` : ""}`;
    else if (a.kind === "archive") {
      const ref = o.archive?.ref ?? a.ref;
      line = `${dryRun ? "would archive" : "archived "} ${o.name}: ${a.why} -> ${ref}${o.archive ? ` (${o.archive.commit.slice(0, 12)})` : ""}, then remove`;
    } else line = `${dryRun ? `would ${a.kind === "clear" ? "clear" : "remove"}` : o.result.padEnd(9)} ${o.name}: ${a.why}`;
    out.write(line + "\n");
  }
  const count = (r: CleanupOutcome["result"]) => outcomes.filter((o) => o.result === r).length;
  if (!dryRun) {
    out.write(`\n${count("removed")} removed, ${count("archived")} archived and removed, ${count("cleared")} cleared, ${count("kept")} kept, ${count("failed")} failed\n`);
    if (count("archived")) out.write("archived work: git log refs/ado/archive/<run>/<task>/<time> (git for-each-ref refs/ado/archive lists them)\n");
  }
}

// ---------------------------------------------------------------- formatting

function ago(iso: string): string {
  const ms = Date.now() - Date.parse(iso);
  if (!Number.isFinite(ms)) return "-";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (i === headers.length - 1 ? 0 : (r[i] ?? "").length))));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ");
  return [line(headers), ...rows.map(line)].join("\n");
}
