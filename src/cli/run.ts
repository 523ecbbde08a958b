import type { Stack } from "../actors/stack.js";
import { AdoClient, type RunOutcome } from "../runtime/client.js";
import type { Config } from "../runtime/config.js";
import {
  DEFAULT_MERGE_COMMAND_TIMEOUT_MS,
  formatIssues,
  loadGraphFile,
  MERGE_MODES,
  MergeOverridesSchema,
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
import { describeServerHealth, reportServerHealth } from "../runtime/server-health.js";
import { openJetStream, topology } from "../runtime/topology.js";
import { CliError, clientConnection, configFrom, Exit, resolveServer, type CommonFlags, type ServerRef } from "./common.js";
import { authForRole } from "../runtime/nats-auth.js";
import { createKeptRun, dropKeptRun, type KeptRun } from "./kept-runs.js";
import { endEmbedded, followRun, type Followed } from "./follow.js";
import { createProgress, type ProgressMode } from "./progress.js";
import { report, reportStop } from "./summary.js";
import { logsRoot, TaskLogWriter } from "./task-logs.js";
import { runBranchPrefix } from "../runtime/names.js";
import { checkGraphAgents, checkGraphProviders, checkSingleTaskFlags, checkWorktreeDir, chooseBase, noteUncommitted } from "./run-checks.js";
import { publishRunStack, type PublishedStack } from "./up-state.js";
import { autoScaleConfig } from "./auto-scale.js";
import { parseCapChange, resolveBudget, type CapChange, type RunBudget } from "../runtime/budget.js";

/** Exit code of a run that stopped for a person (`ado hitl`); see Exit in common.ts for the others. */
export const EXIT_NEEDS_ATTENTION = 3;

export interface RunFlags extends CommonFlags {
  graph?: string;
  repo?: string;
  workers?: number;
  /** `--auto-scale [min..max]`: the embedded stack's workers are a pool the scaler sizes (auto-scale.ts). */
  autoScale?: string | true;
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
  /** How progress is shown while the run goes on (see progress.ts). */
  progress?: ProgressMode;
  base?: string;
  /** The run's budget (see budgetFor). */
  maxCost?: string;
  maxTokens?: string;
  onBudget?: "wait" | "stop";
}

/** `ado run`: submit a graph (or one task) and follow it to the end. Returns the exit code. */
export async function runCommand(prompt: string | undefined, flags: RunFlags): Promise<number> {
  const graph = await graphFrom(prompt, flags);
  const repoDir = flags.repo ?? process.cwd();
  const needsRepo = graph.tasks.some((t) => t.agent !== "noop");
  // Fail fast, before starting anything.
  const repoInfo = needsRepo || flags.repo ? await openRepo(repoDir) : undefined;
  const loaded = await configFrom(flags, needsRepo ? repoDir : undefined);
  const { logger } = loaded;
  const config = flags.autoScale !== undefined ? autoScaleConfig(loaded.config, flags.autoScale, flags.workers) : loaded.config;
  checkGraphProviders(graph, config);
  const merge = repoInfo ? await mergeSettingsFor(config, graph, flags, repoInfo.topLevel) : undefined;
  const budget = budgetFor(config, graph, flags);
  const remote = flags.remote ?? config.remote;
  if (remote && !repoInfo) throw new CliError("--remote needs a repository: run it in a git checkout, or pass --repo");
  if (remote && merge?.into) {
    throw new CliError("--merge-into does not work with --remote yet: the integration branch lives on the remote; merge it after the run (git merge --ff-only ado/<run>/integration)");
  }
  const external = await resolveServer(config);
  if (external && flags.autoScale !== undefined) {
    throw new CliError(
      `--auto-scale sizes the workers of the run's own embedded stack, but this run goes to ${external.source} at ${external.url}: ` +
        "size that stack's pool with `ado workers autoscale --min 0 --max 6` (its config's scaler.pools), or leave out --server / ADO_SERVER (and `ado down`) to run on an embedded stack",
    );
  }
  const stderr = (msg: string) => process.stderr.write(`ado: ${msg}\n`);
  if (flags.detach && !external) {
    throw new CliError("--detach needs a stack that outlives this command: start one with `ado up`, or pass --server");
  }
  // Before anything starts (run-checks.ts): a worktree directory that would spoil the
  // checkout, the commit the run starts from, and changes in the checkout it won't see.
  const note = (msg: string) => stderr(`note: ${msg}`);
  if (repoInfo && !external) await checkWorktreeDir(repoInfo.topLevel, config);
  const base = repoInfo ? await chooseBase(repoInfo.topLevel, { base: flags.base, mergeInto: merge?.into }, note) : undefined;
  if (repoInfo && base?.rev === "HEAD") await noteUncommitted(repoInfo.topLevel, note);

  const runId = newRunId();
  let stack: Stack | undefined;
  let kept: KeptRun | undefined;
  let published: PublishedStack | undefined;
  let url: string;
  if (external) {
    url = external.url;
    if (external.source !== "configured") stderr(`using ${external.source} at ${url}`);
  } else {
    const { Stack } = await import("../actors/stack.js");
    // A run on a repository keeps its JetStream store next to it, so that if it stops
    // for a person, is stopped by Ctrl-C, or this process is killed, it can go on later
    // (`ado hitl`, `ado runs resume`; see kept-runs.ts). A configured store is the
    // user's own: used as it is.
    if (repoInfo && !config.embedded.storeDir) kept = await createKeptRun(repoInfo.gitCommonDir, runId, config.prefix, repoInfo.topLevel);
    try {
      stack = await Stack.start({ config: kept ? { ...config, embedded: { ...config.embedded, storeDir: kept.storeDir } } : config, logger });
    } catch (err) {
      if (kept) await dropKeptRun(kept);
      throw err;
    }
    url = stack.url;
    // Other terminals in this repository reach the run through its stack while it runs (ado status, cancel, attach).
    if (repoInfo) published = await publishRunStack(repoInfo.gitCommonDir, { url, pid: process.pid, prefix: config.prefix, startedAt: new Date().toISOString(), runId, ...(stack.auth.roleDir ? { roleDir: stack.auth.roleDir } : {}) });
  }
  const server: ServerRef = stack ? { url, auth: stack.auth } : external!;
  const nc = await clientConnection(server, logger);
  const topo = topology(config.prefix);
  await openJetStream(nc); // a clear error if the server has JetStream off
  const client = new AdoClient(nc, topo);
  // A full or deadlocked JetStream store stops the run without a word otherwise.
  const serverHealth = reportServerHealth({ servers: url, name: `ado-cli-health-${process.pid}`, logger, ...(server.auth ? { auth: authForRole(server.auth, "client") } : {}) }, { say: stderr, url, runId, storeDir: stack?.embedded?.storeDir, embedded: !!stack });

  // With --json, stdout carries only the outcome, so progress goes to stderr.
  const view = createProgress(flags.detach ? "none" : (flags.progress ?? "auto"), flags.json ? process.stderr : process.stdout);
  const logsDir = logsRoot(repoInfo?.gitCommonDir);
  const logs = new TaskLogWriter(logsDir, runId, stderr);
  let followed: Followed | undefined;
  try {
    await client.submit({
      graph,
      repo: needsRepo ? repoDir : flags.repo,
      runId,
      ...(merge ? { merge } : {}),
      ...(budget ? { budget } : {}),
      ...(remote ? { remote } : {}),
      ...(base ? { base: base.commit } : {}),
    });
    if (flags.detach) {
      process.stdout.write(flags.json ? JSON.stringify({ runId }) + "\n" : `${runId}\n`);
      stderr(`submitted; follow it with: ado attach ${runId}`);
      return Exit.ok;
    }
    followed = await followRun({
      runId,
      view,
      logs,
      ...(stack ? { stack } : {}),
      say: stderr,
      watch: (w) =>
        client.watchWaiting(runId, {
          graph,
          repo: needsRepo ? repoDir : flags.repo,
          wait: flags.wait,
          ...w,
          onNoScheduler: () => stderr("no scheduler has picked up the run yet: is one running? (ado up, or ado actor scheduler)"),
        }),
    });
  } catch (err) {
    if (serverHealth.noteError(err)) throw new CliError(describeServerHealth(serverHealth.current, { url, runId, storeDir: stack?.embedded?.storeDir, embedded: !!stack })!, Exit.failed);
    throw err;
  } finally {
    await serverHealth.stop();
    view.stop();
    // Nobody should reach the run's stack once it stops: unpublish first.
    await published?.remove();
    await endEmbedded({ kept, followed, stop: async () => (await drainQuietly(nc), await stack?.close()) });
  }
  // Past the try above, following ran: it returned, or threw (and so did we).
  followed = followed!;
  try {
    const ctx = { logsRoot: logsDir, progress: view.state, ...(repoInfo ? { repo: repoInfo.topLevel } : {}) };
    if (followed.stopped) {
      if (!followed.stopped.embedded) return Exit.ok; // detached: the run goes on
      await reportStop(runId, followed.stopped, flags.json ?? false, { ...ctx, ...(kept ? { keptStore: kept.dir } : {}) });
      return Exit.interrupted;
    }
    const outcome = followed.outcome!;
    // Remote mode: the run's branches live on the remote; bring them home.
    if (remote && repoInfo) {
      await fetchRunBranches(repoInfo.topLevel, remote, runId).catch((err) =>
        stderr(`${errorMessage(err)}; fetch them yourself: git fetch ${remote} '+refs/heads/${runBranchPrefix(runId)}*:refs/heads/${runBranchPrefix(runId)}*'`),
      );
    }
    await report(outcome, flags.json ?? false, { ...ctx, ...(kept ? { keptStore: kept.dir } : {}), ...(external ? { waitsOn: external.url } : {}) });
    return exitCodeOf(outcome);
  } finally {
    followed.release();
  }
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

/**
 * The run's budget: the config's `budget:`, then the graph's `maxCost`/`maxTokens`, then
 * `--max-cost`, `--max-tokens`, `--on-budget`. Undefined when nothing sets a cap.
 */
export function budgetFor(config: Pick<Config, "budget">, graph: Pick<Graph, "maxCost" | "maxTokens">, flags: Pick<RunFlags, "maxCost" | "maxTokens" | "onBudget">): RunBudget | undefined {
  let maxCost: number | undefined;
  let maxTokens: number | undefined;
  if (flags.maxCost !== undefined) {
    const c = /^\s*\$?\s*(\d+(?:\.\d+)?)\s*$/.exec(flags.maxCost);
    maxCost = c ? Number(c[1]) : NaN;
    if (!(maxCost > 0)) throw new CliError(`--max-cost '${flags.maxCost}' is not an amount in USD more than 0 (e.g. 10, 2.50)`);
  }
  if (flags.maxTokens !== undefined) {
    let cap: CapChange;
    try {
      cap = parseCapChange(flags.maxTokens, "tokens");
    } catch (err) {
      throw new CliError(`--max-tokens: ${(err as Error).message}`);
    }
    if (!("set" in cap)) throw new CliError(`--max-tokens '${flags.maxTokens}': give the cap itself (2m, 500000), not an amount to add`);
    maxTokens = cap.set;
  }
  const budget = resolveBudget(config.budget, { maxCost: graph.maxCost, maxTokens: graph.maxTokens }, { maxCost, maxTokens, onExceed: flags.onBudget });
  if (!budget && flags.onBudget) throw new CliError("--on-budget needs a budget: --max-cost, --max-tokens, the graph's maxCost, or the config's budget.maxCost");
  return budget;
}

async function graphFrom(prompt: string | undefined, flags: RunFlags): Promise<Graph> {
  if (flags.graph) {
    if (prompt) throw new CliError("give either a prompt or --graph, not both");
    const graph = await loadGraphFile(flags.graph);
    checkGraphAgents(graph);
    return graph;
  }
  if (prompt === undefined && !flags.cmd) {
    throw new CliError('nothing to run: pass --graph FILE, or a prompt ("ado run \\"fix the tests\\" --agent shell --cmd \\"npm test\\"")');
  }
  checkSingleTaskFlags(flags);
  return validateGraph(
    parseGraphObject({ name: "single", tasks: [{ id: "task", prompt: prompt ?? "", agent: flags.agent, ...(flags.cmd ? { run: flags.cmd } : {}) }] }, "command line"),
  );
}
