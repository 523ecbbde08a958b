import { AdoClient, type RunStatusView, type WatchOptions } from "../runtime/client.js";
import { drainQuietly } from "../runtime/connection.js";
import type { ControlAction, RunRecord, VariantRecord } from "../runtime/messages.js";
import { asRunId, ID_PATTERN } from "../runtime/ids.js";
import { openBuckets, openJetStream, topology } from "../runtime/topology.js";
import { providerView, readProviderStates, type ProviderView } from "./providers-view.js";
import { CliError, clientConnection, configFrom, Exit, joinServer, type CommonFlags, type ServerRef } from "./common.js";
import { refuseFinished, requireRun, runIdOf } from "./targets.js";
import { followRun } from "./follow.js";
import { createProgress, type ProgressMode, type ProgressView } from "./progress.js";
import { plural } from "./progress-state.js";
import { exitCodeOf } from "./run.js";
import { report } from "./summary.js";
import { readReasonFacts, taskReason } from "./task-reasons.js";
import { stageLines, stageViews } from "./stages.js";
import { logsRootFor, TaskLogWriter } from "./task-logs.js";
import { formatDuration, parseDuration } from "../runtime/duration.js";
import { formatTokens, formatUsd } from "../runtime/budget.js";
import { silentLogger, type Logger } from "../runtime/logger.js";
import { runState } from "../runtime/run-load.js";
import { checkServer, describeServerHealth, isTimeout, ServerCondition, type ServerEndpoint } from "../runtime/server-health.js";
import { authForRole } from "../runtime/nats-auth.js";

/** The server's health probe, with a client's credentials. */
function healthEndpoint(server: ServerRef, name: string): ServerEndpoint {
  return { servers: server.url, name, logger: silentLogger, ...(server.auth ? { auth: authForRole(server.auth, "client") } : {}) };
}

/** Connects a client to the server of what runs (see joinServer) for one command. */
export async function withClient<T>(flags: CommonFlags, what: string, fn: (client: AdoClient, logger: Logger, server: ServerRef) => Promise<T>, runId?: string): Promise<T> {
  const { config, logger } = await configFrom(flags);
  const server = await joinServer(config, what, { runId });
  const nc = await clientConnection(server, logger);
  try {
    try {
      await openJetStream(nc); // the same clear error as `ado run` for a server with JetStream off
    } catch (err) {
      // A JetStream that does not answer (a full or deadlocked store): say what a probe sees and what to do.
      if (!isTimeout(err)) throw err;
      const trouble = describeServerHealth(await checkServer(healthEndpoint(server, `ado-health-${process.pid}`)));
      if (trouble) throw new CliError(trouble, Exit.failed);
      throw err;
    }
    return await fn(new AdoClient(nc, topology(config.prefix)), logger, server);
  } finally {
    await drainQuietly(nc);
  }
}

/** `ado cancel|pause|resume <run | run/task | task>` */
export async function controlCommand(action: ControlAction, spec: string, flags: CommonFlags & { reason?: string }): Promise<number> {
  return withClient(flags, `ado ${action}`, async (client) => {
    const target = await client.resolveTarget(spec);
    await refuseFinished(client, target, action);
    await client.control(target, action, flags.reason);
    const what = target.taskId ? `task ${target.taskId} of run ${target.runId}` : `run ${target.runId}`;
    process.stdout.write(`${{ cancel: "cancelling", pause: "pausing", resume: "resuming" }[action]} ${what}\n`);
    return Exit.ok;
  }, runIdOf(spec));
}

/**
 * `ado attach <run> [--since TIME]`: the run's state now, then follow; Ctrl-C detaches.
 * The state comes from the run's snapshot and the events after it (a full replay when
 * the snapshot is missing or unusable; the debug log says why); `--since` replays the
 * events from that time instead.
 */
export async function attachCommand(runId: string, flags: CommonFlags & { since?: string; json?: boolean; progress?: ProgressMode }): Promise<number> {
  let since: Date | undefined;
  if (flags.since) {
    const ago = parseDuration(flags.since);
    since = new Date(ago !== undefined ? Date.now() - ago : flags.since);
    if (Number.isNaN(since.getTime())) throw new CliError(`--since '${flags.since}' is not a time: use an ISO time or an age like 30s, 5m, 2h`);
  }
  return withClient(flags, "ado attach", async (client, logger) => {
    const newView = () => createProgress(flags.progress ?? "auto", flags.json ? process.stderr : process.stdout);
    /** Follows the run from `from` (or `since`) until it ends or this client detaches, then reports. */
    const follow = async (run: RunRecord, view: ProgressView, from?: WatchOptions["from"]): Promise<number> => {
      // The logs of the attempts this client sees start (those that start after the state it loaded; with --since, after that).
      const root = await logsRootFor(run.repo);
      const followed = await followRun({
        runId,
        view,
        logs: new TaskLogWriter(root, runId, (m) => process.stderr.write(`ado: ${m}\n`)),
        say: (m) => process.stderr.write(`ado: ${m}\n`),
        watch: (w) => client.watch(asRunId(runId), { ...(since ? { since } : {}), ...(from ? { from } : {}), ...w }),
      });
      try {
        // Detached (Ctrl-C, `ado detach`): the view said so; the run goes on.
        if (!followed.outcome) return Exit.ok;
        await report(followed.outcome, flags.json ?? false, { logsRoot: root, progress: view.state, ...(run.repo ? { repo: run.repo } : {}) });
        return exitCodeOf(followed.outcome);
      } finally {
        followed.release();
      }
    };
    if (since) {
      // The record only (not every task's): a run of 10,000 tasks attaches at once.
      const run = await client.runRecord(runId);
      if (!run) throw new CliError(`no run '${runId}': list runs with \`ado runs\``);
      // A run that ended before --since has nothing left to replay or follow: its end, from the records.
      if (run.status !== "running" && run.status !== "needs_attention") {
        const outcome = await client.finishedOutcome(runId);
        if (outcome) {
          await report(outcome, flags.json ?? false, run.repo ? { repo: run.repo } : {});
          return exitCodeOf(outcome);
        }
      }
      return follow(run, newView());
    }
    // The run's state first, drawn at once; then its record, which carries the whole
    // graph (decoding a 10,000-task graph takes longer than the state: bench/attach.ts).
    const noRun = () => new CliError(`no run '${runId}': list runs with \`ado runs\``);
    if (!ID_PATTERN.test(runId)) throw noRun();
    const state = await runState(client, runId, logger);
    const view = newView();
    if (state.fold.seq > 0) view.seed(state.fold);
    const run = await client.runRecord(runId);
    if (!run) {
      view.stop();
      throw noRun();
    }
    if (state.fold.seq === 0) return follow(run, view);
    const from = { seq: state.fold.seq, tracker: state.fold.tracker.copy(), ...(state.waiting ? { waiting: state.waiting } : {}) };
    // Ended by the record and the state: the records say how (the event stream may hold events after the end).
    const ended = run.status !== "running" && run.status !== "needs_attention";
    if (ended && state.fold.status !== "running" && state.fold.status !== "needs_attention") {
      view.stop();
      const outcome = await client.finishedOutcome(runId);
      if (outcome) {
        await report(outcome, flags.json ?? false, { progress: view.state, ...(run.repo ? { repo: run.repo } : {}) });
        return exitCodeOf(outcome);
      }
    }
    return follow(run, view, from);
  }, runId);
}

/** `ado detach <run>`: every client attached to the run detaches; the run goes on. */
export async function detachCommand(runId: string, flags: CommonFlags): Promise<number> {
  return withClient(flags, "ado detach", async (client) => {
    await requireRun(client, runId);
    client.detach(runId);
    await client.nc.flush();
    process.stdout.write(`asked clients attached to ${runId} to detach; the run goes on\n`);
    return Exit.ok;
  }, runId);
}

/** `ado status [run]` and `ado parallel status`. */
export async function statusCommand(runId: string | undefined, flags: CommonFlags & { json?: boolean; all?: boolean; providers?: boolean }): Promise<number> {
  return withClient(flags, "ado status", async (client, _logger, ref) => {
    // Run and task records live in JetStream: if it cannot answer, say why instead of timing out.
    const server = await checkServer(healthEndpoint(ref, `ado-status-health-${process.pid}`));
    const trouble = describeServerHealth(server);
    if (trouble) process.stderr.write(`ado: ${trouble}\n`);
    if (server.condition === ServerCondition.unresponsive || server.condition === ServerCondition.unreachable) return Exit.failed;
    const providerViews = async () => {
      const { providers } = await openBuckets(client.nc, client.topo);
      const now = Date.now();
      return (await readProviderStates(providers)).map((s) => providerView(s, now));
    };
    if (flags.providers) {
      const views = await providerViews();
      if (flags.json) process.stdout.write(JSON.stringify(views.map(({ cells: _cells, ...v }) => v), null, 2) + "\n");
      else process.stdout.write(views.length ? providersTable(views) : "no provider has been used yet (config providers:, and tasks that name them)\n");
      return Exit.ok;
    }
    const ids = runId ? [runId] : (await client.listRuns({ active: !flags.all })).map((r) => r.runId);
    const views: RunStatusView[] = [];
    for (const id of ids) {
      const v = await client.status(id);
      if (!v) throw new CliError(`no run '${id}': list runs with \`ado parallel status\``);
      views.push(v);
    }
    const reasons = new Map<string, Map<string, string | undefined>>();
    for (const v of views) {
      const facts = await readReasonFacts(client, v);
      reasons.set(v.run.runId, new Map(v.tasks.map((t) => [t.id, taskReason(t, v, facts.get(t.id) ?? { paused: false })])));
    }
    const reasonOf = (run: string, task: string) => reasons.get(run)?.get(task);
    if (flags.json) {
      const out = views.map(({ run, tasks }) => ({
        runId: run.runId,
        name: run.name,
        status: run.paused && run.status === "running" ? "paused" : run.status,
        integrationBranch: run.integrationBranch ?? null,
        acceptedAt: run.acceptedAt,
        finishedAt: run.finishedAt ?? null,
        error: run.error ?? null,
        costUsd: run.costUsd,
        tokens: run.tokens,
        ...(run.budget ? { budget: { maxCostUsd: run.budget.maxCostUsd ?? null, maxTokens: run.budget.maxTokens ?? null, onExceed: run.budget.onExceed } } : {}),
        ...(run.budgetWait ? { budgetWait: run.budgetWait } : {}),
        ...(run.graph.stages ? { stages: stageViews(run.graph, tasks) } : {}),
        tasks: tasks.map((t) => ({ ...t, ...stageField(run, t.id), elapsedMs: elapsed(t.startedAt, t.finishedAt), reason: reasonOf(run.runId, t.id) ?? null })),
      }));
      process.stdout.write(JSON.stringify(runId ? out[0] : out, null, 2) + "\n");
      return Exit.ok;
    }
    if (views.length === 0) process.stdout.write(flags.all ? "no runs\n" : "no active runs (ado parallel status --all lists finished ones)\n");
    for (const { run, tasks } of views) {
      const state = run.paused && run.status === "running" ? "paused" : run.status;
      const took = elapsed(run.acceptedAt, run.finishedAt);
      process.stdout.write(
        `run ${run.runId} (${run.name}): ${state}${took === null ? "" : `, ${formatDuration(took)}`}, ${plural(tasks.length, "task")}${costText(run)}${run.error ? ` - ${run.error}` : ""}\n`,
      );
      const rows = tasks.flatMap((t) => {
        const ms = elapsed(t.startedAt, t.finishedAt);
        const reason = reasonOf(run.runId, t.id);
        const word = reason === "paused" ? "paused" : t.status;
        const row = [t.id, word, ms === null ? "" : formatDuration(ms), t.attempts > 0 ? `attempt ${t.attempts}` : "", t.workerId ?? "", reason && reason !== "paused" ? reason : (t.error ?? "")];
        return [row, ...(t.variants ?? []).map(variantRow)];
      });
      process.stdout.write(table(rows) + "\n");
      for (const line of stageLines(stageViews(run.graph, tasks))) process.stdout.write(line + "\n");
      if (run.budgetWait) process.stdout.write(`  waiting for its budget: ${run.budgetWait.message}\n  ado budget raise ${run.runId} <usd>, or ado cancel ${run.runId}\n`);
      if (run.status === "needs_attention" && (!run.budgetWait || tasks.some((t) => t.status === "needs_attention"))) process.stdout.write(`  waiting for a person: ado hitl list\n`);
    }
    // The providers the runs share, when any was used (`ado status --providers` for them alone).
    const providers = await providerViews();
    if (providers.length) process.stdout.write(providersTable(providers));
    return Exit.ok;
  }, runId);
}

/** Task id -> stage, per run record (read once per run: `ado status --json` of a large graph). */
const stagesOfRun = new WeakMap<RunStatusView["run"], Map<string, string | undefined>>();

/** `{ stage }` of a task of a graph with stages (null for one outside them); nothing otherwise. */
function stageField(run: RunStatusView["run"], taskId: string): { stage?: string | null } {
  if (!run.graph.stages) return {};
  let byId = stagesOfRun.get(run);
  if (!byId) stagesOfRun.set(run, (byId = new Map(run.graph.tasks.map((t) => [t.id, t.stage]))));
  return { stage: byId.get(taskId) ?? null };
}

/** A best-of-N task's variant under its task: its outcome, what select saw, and the ref keeping its work. */
function variantRow(v: VariantRecord): string[] {
  const ms = elapsed(v.startedAt, v.finishedAt);
  const check = v.passed !== undefined ? (v.passed ? "passed" : "did not pass") : v.score !== undefined ? `score ${v.score}` : "";
  const what = [check, v.ref ?? "", v.status === "failed" ? (v.error ?? "") : ""].filter(Boolean).join("  ");
  return [`  variant ${v.n}`, v.status, ms === null ? "" : formatDuration(ms), `attempt ${v.attempt}`, v.workerId ?? "", what];
}

/** `, $0.42 of $10.00` (what the run spent, of its budget); nothing for a run without cost or budget. */
function costText(run: RunStatusView["run"]): string {
  const cap = run.budget?.maxCostUsd;
  const tokenCap = run.budget?.maxTokens;
  const parts: string[] = [];
  if (run.costUsd > 0 || cap !== undefined) parts.push(`${formatUsd(run.costUsd)}${cap !== undefined ? ` of ${formatUsd(cap)}` : ""}`);
  if (tokenCap !== undefined) parts.push(`${formatTokens(run.tokens)} of ${formatTokens(tokenCap)} tokens`);
  return parts.length ? `, ${parts.join(", ")}` : "";
}

/** The providers section: a header and one row per provider. */
function providersTable(views: ProviderView[]): string {
  return `providers:\n${table([["provider", "circuit", "permits", "running", "spend", "why / last adaptive step"], ...views.map((v) => v.cells)])}\n`;
}

/** Rows of cells, columns padded to their widest cell; the last column (free text) is not. */
function table(rows: string[][]): string {
  const cols = Math.max(0, ...rows.map((r) => r.length));
  const widths = Array.from({ length: cols }, (_, i) => Math.max(0, ...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => `  ${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")}`.trimEnd()).join("\n");
}

function elapsed(start?: string, end?: string): number | null {
  if (!start) return null;
  return (end ? Date.parse(end) : Date.now()) - Date.parse(start);
}
