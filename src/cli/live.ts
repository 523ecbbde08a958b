import { AdoClient, WatchAbortedError, type RunStatusView } from "../runtime/client.js";
import { drainQuietly } from "../runtime/connection.js";
import type { ControlAction } from "../runtime/messages.js";
import { asRunId } from "../runtime/ids.js";
import { topology } from "../runtime/topology.js";
import { CliError, clientConnection, configFrom, Exit, requireServer, type CommonFlags } from "./common.js";
import { LineProgress, TerminalProgress } from "./progress.js";
import { exitCodeOf, report } from "./run.js";
import { onShutdown } from "./signals.js";
import { parseDuration } from "../runtime/duration.js";

/** Connects a client to the configured (or `ado up`) server for one command. */
async function withClient<T>(flags: CommonFlags, what: string, fn: (client: AdoClient) => Promise<T>): Promise<T> {
  const { config, logger } = await configFrom(flags);
  const url = await requireServer(config, what);
  const nc = await clientConnection(url, logger);
  try {
    return await fn(new AdoClient(nc, topology(config.prefix)));
  } finally {
    await drainQuietly(nc);
  }
}

/** `ado cancel|pause|resume <run | run/task | task>` */
export async function controlCommand(action: ControlAction, spec: string, flags: CommonFlags & { reason?: string }): Promise<number> {
  return withClient(flags, `ado ${action}`, async (client) => {
    const target = await client.resolveTarget(spec);
    await client.control(target, action, flags.reason);
    const what = target.taskId ? `task ${target.taskId} of run ${target.runId}` : `run ${target.runId}`;
    process.stdout.write(`${{ cancel: "cancelling", pause: "pausing", resume: "resuming" }[action]} ${what}\n`);
    return Exit.ok;
  });
}

/** `ado attach <run> [--since TIME]`: replay, then follow; Ctrl-C detaches. */
export async function attachCommand(runId: string, flags: CommonFlags & { since?: string; json?: boolean }): Promise<number> {
  let since: Date | undefined;
  if (flags.since) {
    const ago = parseDuration(flags.since);
    since = new Date(ago !== undefined ? Date.now() - ago : flags.since);
    if (Number.isNaN(since.getTime())) throw new CliError(`--since '${flags.since}' is not a time: use an ISO time or an age like 30s, 5m, 2h`);
  }
  return withClient(flags, "ado attach", async (client) => {
    if (!(await client.status(runId))) throw new CliError(`no run '${runId}': list runs with \`ado parallel status\``);
    const out = flags.json ? process.stderr : process.stdout;
    const view = out.isTTY ? new TerminalProgress(out) : new LineProgress(out);
    const abort = new AbortController();
    const off = onShutdown(() => abort.abort(), (m) => process.stderr.write(`ado: ${m}\n`));
    try {
      const outcome = await client.watch(asRunId(runId), { since, onEvent: (e) => view.onEvent(e), signal: abort.signal });
      view.stop();
      report(outcome, flags.json ?? false);
      return exitCodeOf(outcome);
    } catch (err) {
      view.stop();
      if (!(err instanceof WatchAbortedError)) throw err;
      process.stderr.write(`ado: detached; run ${runId} goes on (ado attach ${runId})\n`);
      return Exit.ok;
    } finally {
      off();
    }
  });
}

/** `ado detach <run>`: every client attached to the run detaches; the run goes on. */
export async function detachCommand(runId: string, flags: CommonFlags): Promise<number> {
  return withClient(flags, "ado detach", async (client) => {
    client.detach(runId);
    await client.nc.flush();
    process.stdout.write(`asked clients attached to ${runId} to detach; the run goes on\n`);
    return Exit.ok;
  });
}

/** `ado status [run]` and `ado parallel status`. */
export async function statusCommand(runId: string | undefined, flags: CommonFlags & { json?: boolean; all?: boolean }): Promise<number> {
  return withClient(flags, "ado status", async (client) => {
    const ids = runId ? [runId] : (await client.runs({ active: !flags.all })).map((r) => r.runId);
    const views: RunStatusView[] = [];
    for (const id of ids) {
      const v = await client.status(id);
      if (!v) throw new CliError(`no run '${id}': list runs with \`ado parallel status\``);
      views.push(v);
    }
    if (flags.json) {
      const out = views.map(({ run, tasks }) => ({
        runId: run.runId,
        name: run.name,
        status: run.paused && run.status === "running" ? "paused" : run.status,
        integrationBranch: run.integrationBranch ?? null,
        acceptedAt: run.acceptedAt,
        finishedAt: run.finishedAt ?? null,
        error: run.error ?? null,
        tasks: tasks.map((t) => ({ ...t, elapsedMs: elapsed(t.startedAt, t.finishedAt) })),
      }));
      process.stdout.write(JSON.stringify(runId ? out[0] : out, null, 2) + "\n");
      return Exit.ok;
    }
    if (views.length === 0) process.stdout.write(flags.all ? "no runs\n" : "no active runs (ado parallel status --all lists finished ones)\n");
    for (const { run, tasks } of views) {
      const state = run.paused && run.status === "running" ? "paused" : run.status;
      process.stdout.write(`run ${run.runId} (${run.name}): ${state}${run.error ? ` - ${run.error}` : ""}\n`);
      const w = Math.max(4, ...tasks.map((t) => t.id.length));
      // needs_attention is the longest status; the column fits the ones present.
      const sw = Math.max(9, ...tasks.map((t) => t.status.length));
      for (const t of tasks) {
        const ms = elapsed(t.startedAt, t.finishedAt);
        const time = ms === null ? "" : `${(ms / 1000).toFixed(1)}s`;
        process.stdout.write(
          `  ${t.id.padEnd(w)}  ${t.status.padEnd(sw)} ${time.padStart(7)}  attempt ${t.attempts}  ${t.workerId ?? ""}${t.error ? `  ${t.error}` : ""}\n`,
        );
      }
      if (run.status === "needs_attention") process.stdout.write(`  waiting for a person: ado hitl list\n`);
    }
    return Exit.ok;
  });
}

function elapsed(start?: string, end?: string): number | null {
  if (!start) return null;
  return (end ? Date.parse(end) : Date.now()) - Date.parse(start);
}
