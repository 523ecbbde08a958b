import { readFile } from "node:fs/promises";
import type { Stack } from "../actors/stack.js";
import { AdoClient, WatchAbortedError, type RunOutcome } from "../runtime/client.js";
import { parseGraph, parseGraphObject, validateGraph, type Graph } from "../runtime/graph.js";
import { openRepo } from "../runtime/git/index.js";
import { newRunId } from "../runtime/ids.js";
import { drainQuietly } from "../runtime/connection.js";
import { openJetStream, topology } from "../runtime/topology.js";
import { CliError, clientConnection, configFrom, Exit, resolveServer, type CommonFlags } from "./common.js";
import { LineProgress, TerminalProgress, type ProgressView } from "./progress.js";
import { onShutdown } from "./signals.js";

export interface RunFlags extends CommonFlags {
  graph?: string;
  repo?: string;
  workers?: number;
  json?: boolean;
  detach?: boolean;
  wait?: boolean;
  agent: string;
  cmd?: string;
}

/** `ado run`: submit a graph (or one task) and follow it to the end. Returns the exit code. */
export async function runCommand(prompt: string | undefined, flags: RunFlags): Promise<number> {
  const graph = await graphFrom(prompt, flags);
  const repoDir = flags.repo ?? process.cwd();
  const needsRepo = graph.tasks.some((t) => t.agent !== "noop");
  if (needsRepo || flags.repo) await openRepo(repoDir); // fail fast, before starting anything
  const { config, logger } = await configFrom(flags, needsRepo ? repoDir : undefined);
  const external = await resolveServer(config);
  const stderr = (msg: string) => process.stderr.write(`ado: ${msg}\n`);
  if (flags.detach && !external) {
    throw new CliError("--detach needs a stack that outlives this command: start one with `ado up`, or pass --server");
  }

  let stack: Stack | undefined;
  let url: string;
  if (external) {
    url = external.url;
    if (external.source !== "configured") stderr(`using ${external.source} at ${url}`);
  } else {
    const { Stack } = await import("../actors/stack.js");
    stack = await Stack.start({ config, logger });
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
  const runId = newRunId();
  const removeSignals = onShutdown(() => {
    view.stop();
    stderr(stack ? "interrupted: stopping the embedded stack (tasks in flight are stopped)" : `detached; the run goes on: ${runId}`);
    abort.abort();
  }, stderr);

  let outcome: RunOutcome | undefined;
  try {
    await client.submit({ graph, repo: needsRepo ? repoDir : flags.repo, runId });
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
  }
  if (!outcome) return stack ? Exit.interrupted : Exit.ok;
  report(outcome, flags.json ?? false);
  return exitCodeOf(outcome);
}

/** 0 only for a run that succeeded; 2 for one refused before it ran. */
export function exitCodeOf(outcome: RunOutcome): number {
  return outcome.status === "succeeded" ? Exit.ok : outcome.status === "rejected" ? Exit.usage : Exit.failed;
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

export function report(o: RunOutcome, json: boolean): void {
  if (json) {
    const out = {
      runId: o.runId,
      status: o.status,
      integrationBranch: o.integrationBranch ?? null,
      integrationCommit: o.integrationCommit ?? null,
      error: o.error ?? null,
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
  if (o.error) w(`  ${o.error}`);
  const bad = o.tasks.filter((t) => t.status === "failed" || t.status === "skipped");
  for (const t of bad) w(`  ${t.status === "failed" ? "✗" : "-"} ${t.id}: ${t.error ?? t.status}`);
  if (o.integrationBranch && o.status === "succeeded") {
    w(`  result: branch ${o.integrationBranch} (${o.integrationCommit?.slice(0, 10)})`);
    w(`  look:   git log --oneline --graph ${o.integrationBranch}`);
    w(`  take:   git merge ${o.integrationBranch}`);
  } else if (o.integrationBranch) {
    w(`  merged so far: ${o.integrationBranch}; task branches: ado/${o.runId}/<task>`);
  }
}
