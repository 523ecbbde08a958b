import { readFile } from "node:fs/promises";
import type { Stack } from "../actors/stack.js";
import { AdoClient, WatchAbortedError, type RunOutcome } from "../runtime/client.js";
import type { Config } from "../runtime/config.js";
import {
  DEFAULT_MERGE_COMMAND_TIMEOUT_MS,
  formatIssues,
  MERGE_MODES,
  MergeOverridesSchema,
  parseGraph,
  parseGraphObject,
  resolveMergeSettings,
  validateGraph,
  type Graph,
  type MergeSettings,
} from "../runtime/graph.js";
import { fetchRunBranches, isValidBranchName, openRepo, readBranch } from "../git/index.js";
import { newRunId } from "../runtime/ids.js";
import { drainQuietly } from "../runtime/connection.js";
import { errorMessage } from "../runtime/errors.js";
import { openJetStream, topology } from "../runtime/topology.js";
import { CliError, clientConnection, configFrom, Exit, resolveServer, type CommonFlags } from "./common.js";
import { createKeptRun, dropKeptRun, markKeptRun, type KeptRun } from "./kept-runs.js";
import { LineProgress, TerminalProgress, type ProgressView } from "./progress.js";
import { onShutdown } from "./signals.js";
import { runBranchPrefix } from "../runtime/names.js";

/** Exit code of a run that stopped for a person (`ado hitl`); see Exit in common.ts for the others. */
export const EXIT_NEEDS_ATTENTION = 3;

export interface RunFlags extends CommonFlags {
  graph?: string;
  repo?: string;
  workers?: number;
  json?: boolean;
  detach?: boolean;
  wait?: boolean;
  agent: string;
  cmd?: string;
  mergeMode?: string;
  validate?: string;
  mergeInto?: string;
  updateCheckout?: boolean;
  remote?: string;
}

/** `ado run`: submit a graph (or one task) and follow it to the end. Returns the exit code. */
export async function runCommand(prompt: string | undefined, flags: RunFlags): Promise<number> {
  const graph = await graphFrom(prompt, flags);
  const repoDir = flags.repo ?? process.cwd();
  const needsRepo = graph.tasks.some((t) => t.agent !== "noop");
  // Fail fast, before starting anything.
  const repoInfo = needsRepo || flags.repo ? await openRepo(repoDir) : undefined;
  const { config, logger } = await configFrom(flags, needsRepo ? repoDir : undefined);
  const merge = repoInfo ? await mergeSettingsFor(config, graph, flags, repoInfo.topLevel) : undefined;
  const remote = flags.remote ?? config.remote;
  if (remote && !repoInfo) throw new CliError("--remote needs a repository: run it in a git checkout, or pass --repo");
  if (remote && merge?.into) {
    throw new CliError("--merge-into does not work with --remote yet: the integration branch lives on the remote; merge it after the run (git merge --ff-only ado/<run>/integration)");
  }
  const external = await resolveServer(config);
  const stderr = (msg: string) => process.stderr.write(`ado: ${msg}\n`);
  if (flags.detach && !external) {
    throw new CliError("--detach needs a stack that outlives this command: start one with `ado up`, or pass --server");
  }

  const runId = newRunId();
  let stack: Stack | undefined;
  let kept: KeptRun | undefined;
  let url: string;
  if (external) {
    url = external.url;
    if (external.source !== "configured") stderr(`using ${external.source} at ${url}`);
  } else {
    const { Stack } = await import("../actors/stack.js");
    // A run on a repository keeps its JetStream store next to it, so that if it stops
    // for a person, `ado hitl` can resume it later (see kept-runs.ts). A configured
    // store is the user's own: used as it is.
    if (repoInfo && !config.embedded.storeDir) kept = await createKeptRun(repoInfo.gitCommonDir, runId, config.prefix, repoInfo.topLevel);
    try {
      stack = await Stack.start({ config: kept ? { ...config, embedded: { ...config.embedded, storeDir: kept.storeDir } } : config, logger });
    } catch (err) {
      if (kept) await dropKeptRun(kept);
      throw err;
    }
    url = stack.url;
  }
  const nc = await clientConnection(url, logger);
  const topo = topology(config.prefix);
  await openJetStream(nc); // a clear error if the server has JetStream off
  const client = new AdoClient(nc, topo);

  // With --json, stdout carries only the outcome, so progress goes to stderr.
  const out = flags.json ? process.stderr : process.stdout;
  const view: ProgressView = out.isTTY ? new TerminalProgress(out) : new LineProgress(out);
  const abort = new AbortController();
  const removeSignals = onShutdown(() => {
    view.stop();
    stderr(stack ? "interrupted: stopping the embedded stack (tasks in flight are stopped)" : `detached; the run goes on: ${runId}`);
    abort.abort();
  }, stderr);

  let outcome: RunOutcome | undefined;
  try {
    await client.submit({ graph, repo: needsRepo ? repoDir : flags.repo, runId, ...(merge ? { merge } : {}), ...(remote ? { remote } : {}) });
    if (flags.detach) {
      process.stdout.write(flags.json ? JSON.stringify({ runId }) + "\n" : `${runId}\n`);
      stderr(`submitted; follow it with: ado attach ${runId}`);
      return Exit.ok;
    }
    outcome = await client.watchWaiting(runId, {
      graph,
      repo: needsRepo ? repoDir : flags.repo,
      wait: flags.wait,
      onEvent: (e) => view.onEvent(e),
      signal: abort.signal,
      onNoScheduler: () => stderr("no scheduler has picked up the run yet: is one running? (ado up, or ado actor scheduler)"),
    });
  } catch (err) {
    if (!(err instanceof WatchAbortedError)) throw err;
  } finally {
    view.stop();
    removeSignals();
    await drainQuietly(nc);
    await stack?.close();
    // Kept only for a run that waits for a person; the server has stopped, so the store is complete.
    if (kept && outcome?.status === "needs_attention") {
      await markKeptRun(kept, { ...kept.marker!, state: "needs_attention", updatedAt: new Date().toISOString() });
    } else if (kept) {
      await dropKeptRun(kept);
    }
  }
  if (!outcome) return stack ? Exit.interrupted : Exit.ok;
  // Remote mode: the run's branches live on the remote; bring them home.
  if (remote && repoInfo) {
    await fetchRunBranches(repoInfo.topLevel, remote, runId).catch((err) =>
      stderr(`${errorMessage(err)}; fetch them yourself: git fetch ${remote} '+refs/heads/${runBranchPrefix(runId)}*:refs/heads/${runBranchPrefix(runId)}*'`),
    );
  }
  report(outcome, flags.json ?? false, { keptStore: kept?.dir, waitsOn: external?.url });
  return exitCodeOf(outcome);
}


/** 0 only for a run that succeeded; 3 for one waiting for a person; 2 for one refused before it ran. */
export function exitCodeOf(outcome: RunOutcome): number {
  switch (outcome.status) {
    case "succeeded":
      return Exit.ok;
    case "needs_attention":
      return EXIT_NEEDS_ATTENTION;
    case "rejected":
      return Exit.usage;
    default:
      return Exit.failed;
  }
}

/**
 * The run's merge settings: the config's `merge:`, then the graph's, then the flags.
 * Checks what git can check before anything starts: the --merge-into branch exists.
 */
async function mergeSettingsFor(config: Config, graph: Graph, flags: RunFlags, repo: string): Promise<MergeSettings> {
  if (flags.mergeMode && !(MERGE_MODES as readonly string[]).includes(flags.mergeMode)) {
    throw new CliError(`--merge-mode must be one of ${MERGE_MODES.join(", ")}, got '${flags.mergeMode}'`);
  }
  const timeoutMs = (graph.merge?.validate ?? config.merge.validate)?.timeoutMs ?? DEFAULT_MERGE_COMMAND_TIMEOUT_MS;
  const parsed = MergeOverridesSchema.safeParse({
    ...(flags.mergeMode ? { mode: flags.mergeMode } : {}),
    ...(flags.validate !== undefined ? { validate: { run: flags.validate, timeoutMs } } : {}),
    ...(flags.mergeInto !== undefined ? { into: flags.mergeInto } : {}),
    ...(flags.updateCheckout ? { updateCheckout: true } : {}),
  });
  if (!parsed.success) throw new CliError(`invalid merge flags: ${formatIssues(parsed.error).replace(/^validate\.run/, "--validate").replace(/^into/, "--merge-into")}`);
  const settings = resolveMergeSettings(config.merge, graph.merge, parsed.data);
  if (settings.into) {
    if (!(await isValidBranchName(repo, settings.into))) throw new CliError(`merge into '${settings.into}': not a valid branch name`);
    if ((await readBranch(repo, settings.into)) === undefined) {
      throw new CliError(`merge into '${settings.into}': no such branch in ${repo}; create it first, or leave --merge-into out`);
    }
  }
  return settings;
}

async function graphFrom(prompt: string | undefined, flags: RunFlags): Promise<Graph> {
  if (flags.graph) {
    if (prompt) throw new CliError("give either a prompt or --graph, not both");
    let text: string;
    try {
      text = await readFile(flags.graph, "utf8");
    } catch (err) {
      throw new CliError(`cannot read graph file '${flags.graph}': ${(err as Error).message}`);
    }
    return parseGraph(text, flags.graph);
  }
  if (prompt === undefined && !flags.cmd) {
    throw new CliError('nothing to run: pass --graph FILE, or a prompt ("ado run \\"fix the tests\\" --agent shell --cmd \\"npm test\\"")');
  }
  return validateGraph(
    parseGraphObject({ name: "single", tasks: [{ id: "task", prompt: prompt ?? "", agent: flags.agent, ...(flags.cmd ? { run: flags.cmd } : {}) }] }, "command line"),
  );
}

/** Where a run waiting for a person waits: in a kept embedded store, or on a server. */
export interface ReportContext {
  keptStore?: string;
  waitsOn?: string;
}

export function report(o: RunOutcome, json: boolean, ctx: ReportContext = {}): void {
  const refused = o.mergeInto && (o.mergeInto.status === "refused" || o.mergeInto.status === "error");
  if (refused) process.stderr.write(`ado: warning: ${o.mergeInto!.into} was not updated: ${o.mergeInto!.reason}\n`);
  if (json) {
    const out = {
      runId: o.runId,
      status: o.status,
      integrationBranch: o.integrationBranch ?? null,
      integrationCommit: o.integrationCommit ?? null,
      error: o.error ?? null,
      ...(o.mergeInto ? { mergeInto: o.mergeInto } : {}),
      ...(o.attention ? { attention: o.attention, ...(ctx.keptStore ? { keptStore: ctx.keptStore } : {}) } : {}),
      tasks: o.tasks.map((t) => ({
        id: t.id,
        status: t.status,
        attempts: t.attempts,
        startedAt: t.startedAt ?? null,
        finishedAt: t.finishedAt ?? null,
        workerId: t.workerId ?? null,
        ...(t.error ? { error: t.error } : {}),
      })),
    };
    process.stdout.write(JSON.stringify(out, null, 2) + "\n");
    return;
  }
  const w = (s: string) => process.stdout.write(s + "\n");
  w("");
  w(`run ${o.runId}: ${o.status}`);
  if (o.error && o.status !== "needs_attention") w(`  ${o.error}`);
  const bad = o.tasks.filter((t) => t.status === "failed" || t.status === "skipped");
  for (const t of bad) w(`  ${t.status === "failed" ? "✗" : "-"} ${t.id}: ${t.error ?? t.status}`);
  if (o.status === "needs_attention") {
    printAttention(o, ctx, w);
  } else if (o.integrationBranch && o.status === "succeeded") {
    w(`  result: branch ${o.integrationBranch} (${o.integrationCommit?.slice(0, 10)})`);
    w(`  look:   git log --oneline --graph ${o.integrationBranch}`);
    const into = o.mergeInto;
    if (into && !refused) w(`  ${into.into}: ${into.status === "up-to-date" ? "already up to date" : `updated (${into.status}) to ${into.commit?.slice(0, 10)}`}`);
    else if (into) w(`  ${into.into}: not updated: ${into.reason}`);
    else w(`  take:   git merge ${o.integrationBranch}`);
  } else if (o.integrationBranch) {
    w(`  merged so far: ${o.integrationBranch}; task branches: ado/${o.runId}/<task>`);
  }
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
