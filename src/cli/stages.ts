import type { Graph } from "../runtime/graph.js";
import type { TaskStatus } from "../runtime/messages.js";
import { formatDuration } from "../runtime/duration.js";

/** One stage of a run as `ado status` shows it: its settings and its tasks by state. */
export interface StageView {
  name: string;
  maxParallel: number | null;
  perMinute: number | null;
  /** Its circuit breaker's settings: failed attempts in a row that open it, for how long. */
  circuit: { failures: number; cooldownMs: number } | null;
  agent: string | null;
  providers: string[] | null;
  /** State -> tasks of the stage in it (states with none left out). */
  tasks: Partial<Record<TaskStatus, number>>;
}

/** Order of states in a stage's line: what is moving first, then what waits, then what ended. */
const ORDER: readonly TaskStatus[] = ["running", "queued", "pending", "merging", "needs_attention", "succeeded", "failed", "skipped", "cancelled"];

/**
 * The run's stages (in the graph's order) with their tasks counted by state; empty for a
 * graph without stages. `tasks` are the status views' (a claim already makes a task
 * `running` there).
 */
export function stageViews(graph: Pick<Graph, "stages" | "tasks">, tasks: readonly { id: string; status: TaskStatus }[]): StageView[] {
  if (!graph.stages) return [];
  const stageOf = new Map(graph.tasks.map((t) => [t.id, t.stage]));
  const views = new Map<string, StageView>(
    Object.entries(graph.stages).map(([name, s]) => [name, { name, maxParallel: s.maxParallel ?? null, perMinute: s.perMinute ?? null, circuit: s.circuit ?? null, agent: s.agent ?? null, providers: s.providers ?? null, tasks: {} }]),
  );
  for (const t of tasks) {
    const view = views.get(stageOf.get(t.id) ?? "");
    if (view) view.tasks[t.status] = (view.tasks[t.status] ?? 0) + 1;
  }
  return [...views.values()];
}

/** `  stage plan (claude, maxParallel 1): 1 running, 2 pending`, one line per stage. */
export function stageLines(views: readonly StageView[]): string[] {
  return views.map((v) => {
    const settings = [
      v.agent ?? (v.providers ? `providers ${v.providers.join(", ")}` : undefined), v.maxParallel === null ? undefined : `maxParallel ${v.maxParallel}`, v.perMinute === null ? undefined : `${v.perMinute}/min`,
      v.circuit === null ? undefined : `circuit ${v.circuit.failures} failures/${formatDuration(v.circuit.cooldownMs)}`,
    ].filter(Boolean);
    const counts = ORDER.filter((s) => v.tasks[s]).map((s) => `${v.tasks[s]} ${s.replace("_", " ")}`);
    return `  stage ${v.name}${settings.length ? ` (${settings.join(", ")})` : ""}: ${counts.length ? counts.join(", ") : "no tasks"}`;
  });
}
