import type { AdoEvent } from "../../runtime/messages.js";
import { FINISHED, type RunFold } from "../../runtime/run-fold.js";
import { providerOf, type Metrics } from "../../runtime/metrics.js";
import { attemptKey } from "../../runtime/names.js";

/**
 * What the recorder counts from the events it folds: the fleet's metrics (metrics.ts).
 * Counters and histograms move on each event; the gauges (tasks by state and stage,
 * runs, HITL waits) are recomputed from the folds at scrape time (gauges()).
 */

/** Per run: what a task's agent is, and what the tally must remember between events. */
export interface RunTally {
  /** Task id -> agent, from the run's graph (absent until read: labelled `unknown`). */
  agents: Map<string, string>;
  /** Task id -> the graph stage it belongs to (tasks of a stage only). */
  stages: Map<string, string>;
  /** Task id -> when its work was done and handed to the merge coordinator (epoch ms). */
  mergeStart: Map<string, number>;
  /** Attempt key -> the last cumulative usage its agent reported. */
  usage: Map<string, Usage>;
}

interface Usage {
  model: string;
  costUsd: number;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  cacheWriteTokens: number;
}

export const newRunTally = (): RunTally => ({ agents: new Map(), stages: new Map(), mergeStart: new Map(), usage: new Map() });

const seconds = (from: string | undefined, to: string | undefined) => {
  if (!from || !to) return undefined;
  const s = (Date.parse(to) - Date.parse(from)) / 1000;
  return Number.isFinite(s) && s >= 0 ? s : undefined;
};

/** Counts one event (already applied to the run's fold). */
export function countEvent(m: Metrics, t: RunTally, e: AdoEvent): void {
  if (e.type === "run.completed") return void m.runsFinished.inc({ state: e.status });
  if (e.type === "run.rejected") return void m.runsFinished.inc({ state: "rejected" });
  if (!("taskId" in e)) return;
  const agent = t.agents.get(e.taskId) ?? "unknown";
  const provider = providerOf(t.agents.get(e.taskId));
  const labels = { agent, provider };
  const stage = t.stages.get(e.taskId);
  const finished = (state: string) => {
    m.tasksFinished.inc({ state, ...labels });
    if (stage !== undefined) m.stageTasksFinished.inc({ stage, state });
  };
  switch (e.type) {
    case "task.succeeded": {
      const s = seconds(e.startedAt, e.finishedAt);
      if (s !== undefined) {
        m.taskDuration.observe({ outcome: "succeeded", ...labels }, s);
        if (stage !== undefined) m.stageTaskDuration.observe({ stage, outcome: "succeeded" }, s);
      }
      if (e.commit && e.files.length > 0) t.mergeStart.set(e.taskId, Date.parse(e.at));
      else finished("succeeded");
      settleCost(m, t, e, provider);
      return;
    }
    case "task.failed": {
      const s = seconds(e.startedAt, e.finishedAt);
      if (s !== undefined) {
        m.taskDuration.observe({ outcome: "failed", ...labels }, s);
        if (stage !== undefined) m.stageTaskDuration.observe({ stage, outcome: "failed" }, s);
      }
      m.failures.inc({ class: e.kind ?? "unknown", ...labels });
      if (stage !== undefined) m.stageFailures.inc({ stage, class: e.kind ?? "unknown" });
      if (!e.willRetry) finished("failed");
      settleCost(m, t, e, provider);
      return;
    }
    case "task.retrying":
      m.retries.inc(labels);
      if (stage !== undefined) m.stageRetries.inc({ stage });
      return;
    case "task.merged": {
      const start = t.mergeStart.get(e.taskId);
      if (start !== undefined) m.mergeDuration.observe({ outcome: "merged" }, Math.max(0, (Date.parse(e.at) - start) / 1000));
      t.mergeStart.delete(e.taskId);
      return void finished("succeeded");
    }
    case "merge.hitl_required": {
      const start = t.mergeStart.get(e.taskId);
      if (start !== undefined) m.mergeDuration.observe({ outcome: "needs_attention" }, Math.max(0, (Date.parse(e.at) - start) / 1000));
      t.mergeStart.delete(e.taskId);
      return;
    }
    case "task.skipped":
    case "task.cancelled":
      return void finished(e.type === "task.skipped" ? "skipped" : "cancelled");
    case "agent.usage": {
      // Cumulative within the attempt: count what is new since its last report.
      const key = attemptKey(e);
      const before = t.usage.get(key);
      const model = e.model ?? before?.model ?? "unknown";
      const now: Usage = { model, costUsd: e.costUsd, inputTokens: e.inputTokens, outputTokens: e.outputTokens, cachedTokens: e.cachedTokens, cacheWriteTokens: e.cacheWriteTokens };
      const delta = (k: keyof Omit<Usage, "model">) => Math.max(0, now[k] - (before?.[k] ?? 0));
      const cost = delta("costUsd");
      if (cost > 0) {
        m.costUsd.inc({ provider, model }, cost);
        if (stage !== undefined) m.stageCostUsd.inc({ stage }, cost);
      }
      for (const [kind, k] of [["input", "inputTokens"], ["output", "outputTokens"], ["cached", "cachedTokens"], ["cache_write", "cacheWriteTokens"]] as const) {
        const n = delta(k);
        if (n > 0) m.tokens.inc({ provider, model, kind }, n);
      }
      t.usage.set(key, now);
      return;
    }
  }
}

/** An attempt's cost beyond what its agent reported on the way (agents that report only at the end, or not at all). */
function settleCost(m: Metrics, t: RunTally, e: Extract<AdoEvent, { type: "task.succeeded" | "task.failed" }>, provider: string): void {
  const key = attemptKey(e);
  const seen = t.usage.get(key);
  t.usage.delete(key);
  const rest = (e.costUsd ?? 0) - (seen?.costUsd ?? 0);
  if (rest <= 1e-12) return;
  m.costUsd.inc({ provider, model: seen?.model ?? "unknown" }, rest);
  const stage = t.stages.get(e.taskId);
  if (stage !== undefined) m.stageCostUsd.inc({ stage }, rest);
}

const STAGE: Partial<Record<string, string>> = { pending: "blocked", queued: "ready", running: "running", merging: "merging", needs_attention: "attention" };

/** Sets the gauges from the runs in progress (at scrape time). */
export function setGauges(m: Metrics, runs: Iterable<{ fold: RunFold; tally: RunTally }>): void {
  m.tasks.reset();
  m.taskStages.reset();
  m.stageTasks.reset();
  m.runs.reset();
  let hitl = 0;
  const tasks = new Map<string, { state: string; agent: string; provider: string; n: number }>();
  const stages = new Map<string, number>();
  const byStage = new Map<string, { stage: string; state: string; n: number }>();
  const runStates = new Map<string, number>();
  for (const { fold, tally } of runs) {
    if (fold.status !== "running" && fold.status !== "needs_attention") continue;
    const runState = fold.paused && fold.status === "running" ? "paused" : fold.status;
    runStates.set(runState, (runStates.get(runState) ?? 0) + 1);
    for (const id of fold.ids()) {
      const { summary, notes } = fold.parts(id)!;
      if (FINISHED.has(summary.status)) continue;
      const state = notes.paused && summary.status === "running" ? "paused" : summary.status;
      const agent = tally.agents.get(id) ?? "unknown";
      const key = `${state}\u0000${agent}`;
      const row = tasks.get(key);
      if (row) row.n++;
      else tasks.set(key, { state, agent, provider: providerOf(tally.agents.get(id)), n: 1 });
      const stage = STAGE[summary.status];
      if (stage) stages.set(stage, (stages.get(stage) ?? 0) + 1);
      if (summary.status === "needs_attention") hitl++;
      const graphStage = tally.stages.get(id);
      if (graphStage !== undefined) {
        const k = `${graphStage}\u0000${state}`;
        const r = byStage.get(k);
        if (r) r.n++;
        else byStage.set(k, { stage: graphStage, state, n: 1 });
      }
    }
  }
  for (const r of tasks.values()) m.tasks.set({ state: r.state, agent: r.agent, provider: r.provider }, r.n);
  for (const r of byStage.values()) m.stageTasks.set({ stage: r.stage, state: r.state }, r.n);
  // Every stage and state is always exported, 0 included: a series that vanishes reads as "no data", not "none".
  for (const stage of Object.values(STAGE) as string[]) m.taskStages.set({ stage }, stages.get(stage) ?? 0);
  for (const state of ["running", "paused", "needs_attention"]) m.runs.set({ state }, runStates.get(state) ?? 0);
  m.hitlWaiting.set(hitl);
}
