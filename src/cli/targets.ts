import type { AdoClient, Target } from "../runtime/client.js";
import type { ControlAction, TaskStatus } from "../runtime/messages.js";
import { CliError } from "./common.js";

const TASK_DONE: readonly TaskStatus[] = ["succeeded", "failed", "skipped", "cancelled"];

/**
 * A cancel, pause or resume of a run or task that has ended would do nothing: say so and
 * fail (exit 2), rather than report an action that cannot happen.
 */
export async function refuseFinished(client: AdoClient, target: Target, action: ControlAction): Promise<void> {
  const view = await client.status(target.runId);
  if (!view) return;
  const { run } = view;
  if (run.status !== "running" && run.status !== "needs_attention") {
    throw new CliError(`run ${run.runId} has already ended (${run.status}): nothing to ${action} (ado status ${run.runId})`);
  }
  const task = target.taskId ? view.tasks.find((t) => t.id === target.taskId) : undefined;
  if (task && TASK_DONE.includes(task.status)) {
    throw new CliError(`task ${task.id} of run ${run.runId} has already ended (${task.status}): nothing to ${action}`);
  }
}

/** `ado detach` of a run nobody knows would silently do nothing. */
export async function requireRun(client: AdoClient, runId: string): Promise<void> {
  if (!(await client.runRecord(runId))) throw new CliError(`no run '${runId}': list runs with \`ado parallel status --all\``);
}

/** The run id a control target names, if it names one (`run`, `run/task`); a bare task id names none. */
export const runIdOf = (spec: string): string => spec.split(/[/.]/, 1)[0]!;
