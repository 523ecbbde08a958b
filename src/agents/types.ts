import type { TaskFailure, TaskWork } from "../runtime/messages.js";
import type { Suspender } from "./suspender.js";

/** Why a running task was stopped from outside. */
export type StopReason = "cancelled" | "interrupted";

export type OutputStream = "stdout" | "stderr";

/** What an agent is given for one attempt. */
export interface AgentContext {
  /** The task's worktree; absent for agents that need none. */
  cwd?: string;
  /** Extra environment (ADO_RUN_ID, ADO_TASK_ID, ADO_PROMPT, ADO_ATTEMPT, ...). */
  env: Record<string, string>;
  task: TaskWork["task"];
  /**
   * Aborted when the task must stop now; `signal.reason` is a StopReason saying why
   * (cancelled on request, or interrupted because the worker is shutting down).
   */
  signal: AbortSignal;
  /** Pauses and resumes the agent's processes (SIGSTOP / SIGCONT of its group). */
  suspender: Suspender;
  onOutput(stream: OutputStream, chunk: string): void;
}

export interface AgentOutcome {
  ok: boolean;
  failure?: TaskFailure;
}

/** An agent adapter: how one kind of agent CLI (or a shell command) runs a task. */
export interface Agent {
  readonly name: string;
  /** Whether the agent edits files, and so needs a worktree and a commit afterwards. */
  readonly needsWorktree: boolean;
  run(ctx: AgentContext): Promise<AgentOutcome>;
}
