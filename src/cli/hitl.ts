import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import type { Command } from "commander";
import type { Stack } from "../actors/stack.js";
import { integrateOptionsFor, mergeScratchDir, taskMergeOf } from "../runtime/merging.js";
import { hitlTransition, mayContinue, mayRequest, type HitlEvent } from "../runtime/hitl-state.js";
import { AdoClient, WatchAbortedError, type RunOutcome } from "../runtime/client.js";
import type { Config } from "../runtime/config.js";
import { drainQuietly } from "../runtime/connection.js";
import { errorMessage } from "../runtime/errors.js";
import {
  completeManualResolution,
  type IntegrateOptions,
  isAncestor,
  openRepo,
  prepareManualResolution,
  readBranch,
} from "../git/index.js";
import { asRunId } from "../runtime/ids.js";
import type { HitlListItem } from "../runtime/api.js";
import type { Logger } from "../runtime/logger.js";
import type { AdoEvent, HitlChoice, HitlRecord } from "../runtime/messages.js";
import { topology } from "../runtime/topology.js";
import { CliError, clientConnection, configFrom, Exit, resolveServer, type CommonFlags, type ServerRef } from "./common.js";
import { dropKeptRun, findKeptRuns, keptRunOwner, markKeptRun, type KeptRun } from "./kept-runs.js";
import { LineProgress } from "./progress.js";
import { EXIT_NEEDS_ATTENTION, exitCodeOf } from "./run.js";
import { printAttention, report } from "./summary.js";
import { logsRootFor, TaskLogWriter } from "./task-logs.js";
import { onShutdown } from "./signals.js";
import { manualBranch, taskKey } from "../runtime/names.js";

/**
 * `ado hitl`: merges that wait for a person. `list` and `show` read the HITL records
 * (KV `hitl`); `resolve` has the merge coordinator carry out a choice (a merge request
 * with `resolution`, on the merge stream, so it works against a remote `ado up` too)
 * and follows the run until the merge is done or needs attention again.
 *
 * Where the records are: the configured server, or the `ado up` stack, or, for a run
 * that `ado run` ran with its embedded stack and that stopped in needs_attention, the
 * JetStream store kept in the repository (kept-runs.ts): then an embedded stack is
 * started on that store for the command, and `resolve` follows the run to its end.
 */

const say = (msg: string) => process.stderr.write(`ado: ${msg}\n`);

interface HitlFlags extends CommonFlags {
  repo?: string;
  json?: boolean;
}

/** Registers `ado hitl list|show|resolve`. */
export function hitlCommands(program: Command, common: (cmd: Command) => Command, setExit: (code: number) => void): void {
  const hitl = program.command("hitl").description("merges waiting for a person (human in the loop): list, show, resolve");
  const repoOption = (cmd: Command) => cmd.option("-r, --repo <dir>", "repository whose kept runs to look in (default: current directory)");
  common(
    repoOption(hitl.command("list").description("merges waiting for a person, in every run"))
      .option("--all", "include resolved ones and those of finished runs")
      .option("--json", "print JSON"),
  ).action(async (flags) => setExit(await listCommand(flags)));
  common(
    repoOption(hitl.command("show").description("one merge waiting for a person: files, conflict kinds, each side, validation output, prompts"))
      .argument("<id>", "the HITL id, <run>.<task> (from ado hitl list)")
      .option("--json", "print the whole record as JSON"),
  ).action(async (id, flags) => setExit(await showCommand(id, flags)));
  common(
    repoOption(
      hitl
        .command("resolve")
        .description("resolve a merge waiting for a person, then follow the run until it is merged (exit 0) or needs attention again (exit 3)")
        .argument("<id>", "the HITL id, <run>.<task>")
        .option("--choose <side>", "ours (the integration branch's side of each conflict), theirs (the task's), or agent (run a resolver)")
        .option("--resolver <cmd>", "with --choose agent: the resolver command (default: the run's)")
        .option("--manual", "get a worktree holding the conflict to resolve and commit yourself; then --continue")
        .option("--continue", "after --manual: check and land your commit")
        .option("--skip", "leave the task unmerged (its work stays on its branch); what needs it is skipped")
        .option("--json", "print one JSON object with the outcome"),
    ),
  ).action(async (id, flags) => setExit(await resolveCommand(id, flags)));
}

// ------------------------------------------------------------ where the records are

/** A client on the server that holds a run's records, and how to let go of it. */
interface Place {
  client: AdoClient;
  /** Set when an embedded stack was started on a kept store for this command. */
  kept?: KeptRun;
  /** Where the run waits, for messages. */
  where: string;
  /**
   * Set when this command saw the run end: a kept store is then deleted on close. (The
   * run record is written just after the run.completed event, so reading it at close
   * could still say otherwise.)
   */
  ended?: boolean;
  close(): Promise<void>;
}

async function loadConfig(flags: HitlFlags): Promise<{ config: Config; logger: Logger; gitCommonDir?: string }> {
  const dir = flags.repo ?? process.cwd();
  const info = await openRepo(dir).catch(() => undefined);
  if (flags.repo && !info) throw new CliError(`'${flags.repo}' is not a git repository`);
  const { config, logger } = await configFrom(flags, info?.topLevel);
  return { config, logger, ...(info ? { gitCommonDir: info.gitCommonDir } : {}) };
}

async function connect(server: ServerRef, prefix: string, logger: Logger, where: string): Promise<Place> {
  const nc = await clientConnection(server, logger);
  return { client: new AdoClient(nc, topology(prefix)), where, close: () => drainQuietly(nc) };
}

/**
 * Starts an embedded stack on a JetStream store: only the server (to read records), or
 * the whole stack (to let the run go on). A kept run's store is marked in use while
 * open, and on close deleted if the run is over, or marked as waiting again; a store
 * the user configured (embedded.storeDir) is theirs and left as it is.
 */
async function openStore(store: { kept: KeptRun } | { configured: string }, config: Config, logger: Logger, full: boolean): Promise<Place> {
  const kept = "kept" in store ? store.kept : undefined;
  const storeDir = kept ? kept.storeDir : (store as { configured: string }).configured;
  const marker = kept?.marker ?? (kept ? { runId: kept.runId, prefix: config.prefix, repo: "", state: "needs_attention" as const, pid: 0, updatedAt: "" } : undefined);
  const prefix = marker?.prefix ?? config.prefix;
  if (kept && marker) {
    const owner = keptRunOwner(kept);
    if (owner) throw new CliError(`run ${kept.runId} is in use by another ado (pid ${owner}); wait for it to end`);
    await markKeptRun(kept, { ...marker, state: "running", pid: process.pid, updatedAt: new Date().toISOString() });
  }
  // Let go in the state it was found in: a run stopped by Ctrl-C (or whose ado was
  // killed) stays resumable with `ado runs resume`, one waiting for a person waits.
  const previous = marker?.state === "interrupted" || marker?.state === "running" ? "interrupted" : "needs_attention";
  const release = async () => {
    if (kept && marker) await markKeptRun(kept, { ...marker, state: previous, pid: process.pid, updatedAt: new Date().toISOString() });
  };
  const { Stack } = await import("../actors/stack.js");
  let stack: Stack;
  try {
    stack = await Stack.start({
      config: { ...config, prefix, server: undefined, embedded: { ...config.embedded, storeDir } },
      logger,
      // Reading only: the server and the API (what the command asks), no scheduler to move the run.
      ...(full ? {} : { actors: ["api"], workers: 0 }),
    });
  } catch (err) {
    await release();
    throw err;
  }
  const place = await connect({ url: stack.url, auth: stack.auth }, prefix, logger, kept ? `the run's kept state (${kept.dir})` : `the embedded store ${storeDir}`).catch(async (err) => {
    await stack.close();
    await release();
    throw err;
  });
  const closeClient = place.close;
  const opened: Place = {
    ...place,
    ...(kept ? { kept } : {}),
    close: async () => {
      const run = kept && !opened.ended ? await place.client.runRecord(kept.runId).catch(() => undefined) : undefined;
      await closeClient();
      await stack.close();
      // The server has stopped: the store is complete, and safe to delete or keep.
      if (kept && (opened.ended || (run && run.status !== "running" && run.status !== "needs_attention"))) {
        await dropKeptRun(kept);
        say(`run ${kept.runId} is over: its kept state (${kept.dir}) was removed`);
      } else {
        await release();
      }
    },
  };
  return opened;
}

/**
 * The place for one run: its kept store in this repository (the only place such a run
 * exists), else the configured server or the `ado up` stack, else the configured
 * embedded store.
 */
async function openFor(runId: string, flags: HitlFlags, full: boolean): Promise<Place> {
  const { config, logger, gitCommonDir } = await loadConfig(flags);
  const kept = gitCommonDir ? (await findKeptRuns(gitCommonDir)).find((k) => k.runId === runId) : undefined;
  if (kept && !flags.server) return openStore({ kept }, config, logger, full);
  const server = await resolveServer(config);
  if (server) return connect(server, config.prefix, logger, server.url);
  if (config.embedded.storeDir) return openStore({ configured: config.embedded.storeDir }, config, logger, full);
  throw new CliError(
    `no run '${runId}' waits in this repository, and no server is configured: ` +
      "run `ado hitl` in the repository `ado run` ran on (or pass --repo), or pass --server for a run on `ado up`",
  );
}

/** Splits a HITL id: `<run>.<task>` (or `<run>/<task>`). */
function parseId(id: string): { runId: string; taskId: string; hitlId: string } {
  const m = /^([A-Za-z0-9][A-Za-z0-9_-]{0,63})[./]([A-Za-z0-9][A-Za-z0-9_-]{0,63})$/.exec(id);
  if (!m) throw new CliError(`'${id}' is not a HITL id: use <run>.<task>, as \`ado hitl list\` prints it`);
  return { runId: m[1]!, taskId: m[2]!, hitlId: taskKey(m[1]!, m[2]!) };
}

async function recordOrFail(place: Place, hitlId: string): Promise<{ record: HitlRecord; revision: number }> {
  const found = await place.client.hitlRecord(hitlId);
  if (!found) throw new CliError(`no merge of '${hitlId}' waits for a person on ${place.where}: see \`ado hitl list\``);
  return found;
}

/** Whether the record's task still waits (its run is live and the task needs attention). */
async function isWaiting(client: AdoClient, record: HitlRecord): Promise<boolean> {
  if (record.state === "resolved") return false;
  const view = await client.status(record.runId);
  return !!view && (view.run.status === "running" || view.run.status === "needs_attention") && view.tasks.find((t) => t.id === record.taskId)?.status === "needs_attention";
}

// ------------------------------------------------------------ list and show

async function listCommand(flags: HitlFlags & { all?: boolean }): Promise<number> {
  const { config, logger, gitCommonDir } = await loadConfig(flags);
  const places: Array<() => Promise<Place>> = [];
  const server = await resolveServer(config);
  if (server) places.push(() => connect(server, config.prefix, logger, server.url));
  if (gitCommonDir && !flags.server) {
    for (const kept of await findKeptRuns(gitCommonDir)) places.push(() => openStore({ kept }, config, logger, false));
  }
  const configured = config.embedded.storeDir;
  if (!places.length && configured) places.push(() => openStore({ configured }, config, logger, false));
  if (!places.length) {
    process.stdout.write(flags.json ? "[]\n" : "no merge waits for a person (no server is configured, and no run waits in this repository)\n");
    return Exit.ok;
  }
  const rows: Array<{ record: HitlListItem; waiting: boolean; where: string }> = [];
  for (const open of places) {
    let place: Place;
    try {
      place = await open();
    } catch (err) {
      say(`skipped: ${errorMessage(err)}`);
      continue;
    }
    try {
      for (const record of await place.client.hitlList(flags.all ?? false)) rows.push({ record, waiting: record.waiting, where: place.where });
    } finally {
      await place.close();
    }
  }
  if (flags.json) {
    const out = rows.map(({ record: r, waiting }) => ({
      id: r.id,
      runId: r.runId,
      taskId: r.taskId,
      state: r.state,
      waiting,
      reason: r.reason,
      files: r.files,
      message: r.message,
      round: r.round,
      createdAt: r.createdAt,
    }));
    process.stdout.write(JSON.stringify(out, null, 2) + "\n");
    return Exit.ok;
  }
  if (!rows.length) {
    process.stdout.write(flags.all ? "no merges have needed a person\n" : "no merge waits for a person (ado hitl list --all shows past ones)\n");
    return Exit.ok;
  }
  const w = Math.max(2, ...rows.map((r) => r.record.id.length));
  process.stdout.write(`${"ID".padEnd(w)}  STATE      REASON      FILES\n`);
  for (const { record: r, waiting } of rows) {
    const state = waiting ? r.state : r.state === "resolved" ? "resolved" : "stale";
    process.stdout.write(`${r.id.padEnd(w)}  ${state.padEnd(9)}  ${r.reason.padEnd(10)}  ${r.files.join(", ")}\n`);
  }
  process.stdout.write("\nado hitl show <id> for details; ado hitl resolve <id> --choose ours|theirs|agent | --manual | --skip\n");
  return Exit.ok;
}

/** Lines of a side shown by `show`, at most. */
const EXCERPT_LINES = 40;

function excerpt(text: string | undefined, what: string): string[] {
  if (text === undefined) return [`    (${what}: absent: deleted on that side, or binary)`];
  const lines = text.replace(/\n$/, "").split("\n");
  const shown = lines.slice(0, EXCERPT_LINES).map((l) => `    | ${l}`);
  if (lines.length > EXCERPT_LINES) shown.push(`    | ... ${lines.length - EXCERPT_LINES} more lines`);
  return shown;
}

async function showCommand(id: string, flags: HitlFlags): Promise<number> {
  const { runId, hitlId } = parseId(id);
  const place = await openFor(runId, flags, false);
  try {
    const { record: r } = await recordOrFail(place, hitlId);
    if (flags.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + "\n");
      return Exit.ok;
    }
    const out: string[] = [];
    out.push(`${r.id}: ${r.state} (round ${r.round}${r.choice ? `, ${r.choice} by ${r.by || "?"}` : ""})`);
    out.push(`  ${r.message}`);
    out.push(`  run ${r.runId}, task ${r.taskId} (attempt ${r.attempt})`);
    out.push(`  theirs: ${r.branch} at ${r.source.slice(0, 12)}   ours: ${r.integrationBranch}${r.target ? ` at ${r.target.slice(0, 12)}` : ""}   base: ${r.base.slice(0, 12)}`);
    out.push(`  files (${r.reason}):`);
    const kinds = new Map(r.conflicts.map((c) => [c.path, c.kind]));
    for (const f of r.files) out.push(`    ${f}${kinds.has(f) ? `  (${kinds.get(f)})` : ""}`);
    for (const c of r.conflicts) {
      out.push("", `  --- ${c.path} (${c.kind})${c.truncated ? " [cut; the branches hold all of it]" : ""}`);
      out.push(`  base:`, ...excerpt(c.base, "base"));
      out.push(`  ours (${r.integrationBranch}):`, ...excerpt(c.ours, "ours"));
      out.push(`  theirs (${r.taskId}):`, ...excerpt(c.theirs, "theirs"));
    }
    if (r.validationOutput) out.push("", "  validation output (last lines):", ...excerpt(r.validationOutput, "output"));
    if (r.resolverOutput) out.push("", "  resolver output (last lines):", ...excerpt(r.resolverOutput, "output"));
    out.push("", "  prompts:", `    ${r.taskId}: ${r.prompts.task || "(none)"}`);
    for (const p of r.prompts.related) out.push(`    ${p.taskId} (merged; also changed ${p.files.join(", ")}): ${p.prompt || "(none)"}`);
    if (r.manual) out.push("", `  manual worktree: ${r.manual.worktree} (branch ${r.manual.branch}, on ${r.manual.host})`);
    if (r.history.length) {
      out.push("", "  tried:");
      for (const h of r.history) out.push(`    round ${h.round}: ${h.choice} by ${h.by || "?"} at ${h.at}: ${h.outcome}: ${h.message}`);
    }
    if (r.state !== "resolved") {
      out.push("", `  resolve: ado hitl resolve ${r.id} --choose ours|theirs|agent | --manual | --skip`);
    }
    process.stdout.write(out.join("\n") + "\n");
    return Exit.ok;
  } finally {
    await place.close();
  }
}

// ------------------------------------------------------------ resolve

interface ResolveFlags extends HitlFlags {
  choose?: string;
  resolver?: string;
  manual?: boolean;
  continue?: boolean;
  skip?: boolean;
}

async function resolveCommand(id: string, flags: ResolveFlags): Promise<number> {
  const picked = [flags.choose !== undefined, !!flags.manual, !!flags.continue, !!flags.skip].filter(Boolean).length;
  if (picked !== 1) throw new CliError("say how to resolve it: exactly one of --choose ours|theirs|agent, --manual, --continue, --skip");
  if (flags.choose !== undefined && !["ours", "theirs", "agent"].includes(flags.choose)) {
    throw new CliError(`--choose must be ours, theirs or agent, got '${flags.choose}'`);
  }
  if (flags.resolver !== undefined && flags.choose !== "agent") throw new CliError("--resolver goes with --choose agent");
  const { runId, hitlId } = parseId(id);
  // --manual only prepares a worktree and records it: the run does not move.
  const place = await openFor(runId, flags, !flags.manual);
  try {
    const { record, revision } = await recordOrFail(place, hitlId);
    if (!(await isWaiting(place.client, record))) {
      throw new CliError(`${hitlId} does not wait for a person any more (${record.state}${record.choice ? `: ${record.choice}` : ""}); see \`ado hitl show ${hitlId}\``);
    }
    if (flags.manual) return await prepareManual(place, record, revision);
    let choice: HitlChoice;
    let commit: string | undefined;
    if (flags.continue) {
      const landed = await completeManual(place, record, revision);
      if (typeof landed === "number") return landed;
      choice = "manual";
      commit = landed.commit;
    } else {
      choice = flags.skip ? "skip" : (flags.choose as HitlChoice);
      const refusal = mayRequest(record, choice);
      if (refusal) throw new CliError(`${refusal.message}; follow it with \`ado attach ${runId}\``);
      if (choice === "agent" && !flags.resolver && !record.settings.resolver) {
        throw new CliError("the run has no resolver configured: pass one with --resolver <cmd> (it runs in a worktree holding the conflict; ADO_CONFLICTS_FILE describes it)");
      }
      if (record.manual) say(`note: the --manual worktree ${record.manual.worktree} stays; remove it with \`git worktree remove ${record.manual.worktree}\``);
    }
    const after = await place.client.lastEventSequence();
    await place.client.requestResolution(record, { choice, ...(flags.resolver ? { resolver: flags.resolver } : {}), ...(commit ? { commit } : {}) });
    say(`asked the merge coordinator to resolve ${hitlId}: ${choice}`);
    return await follow(place, record, after, choice, flags.json ?? false);
  } finally {
    await place.close();
  }
}

/** The options the merge coordinator would use for this record, for work done on this host. */
function optionsFor(record: HitlRecord, scratchDir: string): IntegrateOptions {
  return integrateOptionsFor(taskMergeOf(record), scratchDir);
}

function requireLocalRepo(record: HitlRecord): void {
  if (!existsSync(record.repo)) {
    throw new CliError(`the repository ${record.repo} is not on this machine: run --manual and --continue on the host that has it`);
  }
}

/** `--manual`: a worktree on this host holding the conflict; the record notes it (compare-and-set). */
async function prepareManual(place: Place, record: HitlRecord, revision: number): Promise<number> {
  const name = `${record.runId}-${record.taskId}-r${record.round}`;
  // `_manual` cannot be a task id (ids start with a letter or digit), so this never
  // collides with a task branch `ado/<run>/<task>`.
  const branch = manualBranch(record.runId, record.taskId, record.round);
  const { config } = await loadConfig({});
  const scratchDir = mergeScratchDir(config.worktreeDir);
  const event = (worktree: string, branchName: string): HitlEvent => ({
    type: "prepare_manual",
    at: new Date().toISOString(),
    by: whoAmI(),
    manual: { worktree, branch: branchName, host: hostname() },
  });
  // Refused before any worktree is made (another resolution in progress).
  const planned = hitlTransition(record, event(join(scratchDir, "manual", name), branch));
  if (!planned.ok) throw new CliError(planned.refusal.message);
  requireLocalRepo(record);
  const prepared = await prepareManualResolution(optionsFor(record, scratchDir), name, branch);
  try {
    // Through the API (hitl.manual), which moves the record only if it is still at this revision.
    await place.client.recordManual(record, revision, { action: "prepare", manual: { worktree: prepared.worktree, branch: prepared.branch, host: hostname() } });
  } catch (err) {
    throw new CliError(
      `${record.id} changed while the worktree was made (${errorMessage(err)}); the worktree ${prepared.worktree} is yours to remove (git worktree remove --force ${prepared.worktree})`,
    );
  }
  const w = (s: string) => process.stdout.write(s + "\n");
  w(`the conflict of ${record.id} is in ${prepared.worktree} (branch ${prepared.branch})`);
  w(`  conflicted: ${prepared.files.length ? prepared.files.join(", ") : "(nothing left: rules resolved it; check and commit)"}`);
  w(`  1. cd ${prepared.worktree} and resolve the conflicts (git status lists them)`);
  w(`  2. git add <files> && git commit`);
  w(`  3. ado hitl resolve ${record.id} --continue`);
  return Exit.ok;
}

/**
 * `--continue`: lands the person's commit on the integration branch here (the worktree
 * is on this host), then the merge coordinator records it. Returns an exit code when
 * there is nothing to send yet (still conflicted, validation failed).
 */
async function completeManual(place: Place, record: HitlRecord, revision: number): Promise<{ commit: string } | number> {
  const refusal = mayContinue(record);
  if (refusal) throw new CliError(refusal.message);
  const manual = record.manual!;
  if (manual.host !== hostname()) throw new CliError(`${record.id} was prepared on ${manual.host}: run --continue there`);
  requireLocalRepo(record);
  if (!existsSync(manual.worktree)) {
    // Landed by an earlier --continue that stopped before telling the merge coordinator?
    const head = await readBranch(record.repo, record.integrationBranch);
    if (head && (await isAncestor(record.repo, record.source, head))) return { commit: head };
    await place.client.recordManual(record, revision, { action: "reopen" });
    throw new CliError(`the worktree ${manual.worktree} is gone and nothing landed: start again with \`ado hitl resolve ${record.id} --manual\``);
  }
  // The worktree sits at <scratchDir>/manual/<name>.
  const outcome = await completeManualResolution(optionsFor(record, dirname(dirname(manual.worktree))), manual.worktree);
  if (outcome.kind === "merged") return { commit: outcome.commit };
  const w = (s: string) => process.stdout.write(s + "\n");
  if (outcome.kind === "conflict") {
    w(`${record.id}: not landed: ${outcome.reason}`);
  } else {
    w(`${record.id}: validation failed (${outcome.exitCode === null ? "killed" : `exit ${outcome.exitCode}`}) on your resolution:`);
    w(outcome.output.trimEnd().split("\n").slice(-20).map((l) => `  | ${l}`).join("\n"));
    w(`  fix it in ${manual.worktree}, commit, then \`ado hitl resolve ${record.id} --continue\` again`);
  }
  return EXIT_NEEDS_ATTENTION;
}

/**
 * Follows the run after the request: on a kept store (the stack lives in this command)
 * to the run's end or its next stop; on a server until this merge is done or needs
 * attention again (the run goes on there).
 */
async function follow(place: Place, record: HitlRecord, after: number, choice: HitlChoice, json: boolean): Promise<number> {
  const out = json ? process.stderr : process.stdout;
  const view = new LineProgress(out);
  // Tasks that run after the resolution get their logs, as under `ado run`.
  const logs = new TaskLogWriter(await logsRootFor(record.repo), record.runId, say);
  const abort = new AbortController();
  const off = onShutdown(() => abort.abort(), say);
  let last: AdoEvent | undefined;
  const mine = (e: AdoEvent) =>
    "taskId" in e &&
    e.taskId === record.taskId &&
    (e.type === "task.merged" || e.type === "task.skipped" || (e.type === "merge.hitl_required" && e.round > record.round));
  let outcome: RunOutcome;
  try {
    outcome = await place.client.watch(asRunId(record.runId), {
      afterSequence: after,
      onEvent: (e) => {
        last = e;
        view.onEvent(e);
        logs.onEvent(e);
      },
      ...(place.kept ? {} : { until: mine }),
      signal: abort.signal,
      noSchedulerAfterMs: 30_000,
      onNoScheduler: () => say("the merge coordinator has not answered yet: a resolver or validation can take a while; is a merger running?"),
    });
  } catch (err) {
    if (!(err instanceof WatchAbortedError)) throw err;
    say(place.kept ? `interrupted; the run's state stays kept: \`ado hitl list\` to go on` : `stopped following; the resolution goes on (ado attach ${record.runId})`);
    return Exit.interrupted;
  } finally {
    view.stop();
    logs.close();
    off();
  }
  if (outcome.status !== "running" && outcome.status !== "needs_attention") place.ended = true;
  const ctx = place.kept ? { keptStore: place.kept.dir } : { waitsOn: place.where };
  if (outcome.status === "running") {
    // Stopped by `mine`: this merge is done, or needs a person again; the run goes on.
    const again = last?.type === "merge.hitl_required";
    const status = last?.type === "task.merged" ? "merged" : last?.type === "task.skipped" ? "skipped" : "needs_attention";
    if (json) process.stdout.write(JSON.stringify({ hitlId: record.id, choice, status, runId: record.runId }, null, 2) + "\n");
    else if (again) {
      process.stdout.write(`\n${record.id}: needs attention again: ${last?.type === "merge.hitl_required" ? last.message : ""}\n`);
      printAttention({ runId: asRunId(record.runId), attention: [{ taskId: record.taskId, hitlId: record.id, message: "" }] }, ctx, (s) => process.stdout.write(s + "\n"));
    } else process.stdout.write(`\n${record.id}: ${status}; run ${record.runId} goes on (ado attach ${record.runId})\n`);
    return again ? EXIT_NEEDS_ATTENTION : Exit.ok;
  }
  await report(outcome, json, ctx);
  return exitCodeOf(outcome);
}

function whoAmI(): string {
  try {
    return `${process.env.USER ?? "unknown"}@${hostname()}`;
  } catch {
    return "unknown";
  }
}
