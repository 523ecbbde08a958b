import { runProcessGroup } from "./process.js";
import type { Agent, AgentOutcome } from "./types.js";

/** Runs the task's `run` command with `sh -c` in its worktree. */
export const shellAgent: Agent = {
  name: "shell",
  needsWorktree: true,
  async run(ctx) {
    if (!ctx.task.run?.trim()) {
      return { ok: false, failure: { kind: "invalid", retryable: false, message: "the shell agent needs a 'run' command" } };
    }
    const outcome = await runProcessGroup("sh", ["-c", ctx.task.run], ctx, { timeoutMs: ctx.task.timeoutMs });
    return classifyShellExit(outcome);
  },
};

/**
 * The shell's own exit codes for a command it could not run: 127, not found; 126, found
 * but not executable. Running the same command again on this worker cannot help, so
 * these fail at once instead of using up the retry budget.
 */
export function classifyShellExit(outcome: AgentOutcome): AgentOutcome {
  const f = outcome.failure;
  if (outcome.ok || f?.kind !== "exit") return outcome;
  if (f.exitCode === 127) {
    return {
      ok: false,
      failure: { ...f, kind: "agent_missing", retryable: false, message: "a command of the task was not found (exit 127): install it on the worker or fix the command; not retried" },
    };
  }
  if (f.exitCode === 126) {
    return {
      ok: false,
      failure: { ...f, kind: "invalid", retryable: false, message: "a command of the task is not executable (exit 126): check its permissions; not retried" },
    };
  }
  return outcome;
}

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
