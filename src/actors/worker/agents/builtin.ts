import { runProcessGroup } from "./process.js";
import type { Agent } from "./types.js";

/** Runs the task's `run` command with `sh -c` in its worktree. */
export const shellAgent: Agent = {
  name: "shell",
  needsWorktree: true,
  async run(ctx) {
    if (!ctx.task.run?.trim()) {
      return { ok: false, failure: { kind: "invalid", retryable: false, message: "the shell agent needs a 'run' command" } };
    }
    return runProcessGroup("sh", ["-c", ctx.task.run], ctx, { timeoutMs: ctx.task.timeoutMs });
  },
};

/** Does nothing and succeeds: for benchmarks of the pipeline itself. Needs no worktree. */
export const noopAgent: Agent = {
  name: "noop",
  needsWorktree: false,
  async run() {
    return { ok: true };
  },
};

/** The agents a worker offers by default. */
export function builtinAgents(): Map<string, Agent> {
  return new Map([shellAgent, noopAgent].map((a) => [a.name, a]));
}
