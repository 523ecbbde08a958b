import type { TaskFailure, TaskWork } from "../runtime/messages.js";
import type { AgentEvent } from "./events.js";
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
  /** Agent CLIs: each typed event, numbered from 0 in the order the CLI produced them. */
  onEvent?(event: AgentEvent, seq: number): void;
  /** Agent CLIs: the session id, as soon as the stream names it (checkpoints store it). */
  onSession?(sessionId: string): void;
  /** Agent CLIs: a session to resume (an earlier attempt's), instead of starting a new one. */
  resume?: string;
}

export interface AgentOutcome {
  ok: boolean;
  failure?: TaskFailure;
  /** Agent CLIs: what the attempt cost (USD), as the CLI reported it or the price table says. */
  costUsd?: number;
  /** Agent CLIs: the agent's final text, the task's summary. */
  summary?: string;
  /** Agent CLIs: the session the attempt ran in, to resume from. */
  sessionId?: string;
  /** Agent CLIs: the session asked to resume was not found (the next run must start a new one). */
  sessionLost?: boolean;
}

/** Where an agent CLI runs, for finding its session files: the directory it starts in and its environment (HOME, config dirs). */
export interface SessionPlace {
  cwd: string;
  env: Readonly<Record<string, string | undefined>>;
}

/**
 * An agent CLI's sessions: whether it resumes one by id, and how its files (which live
 * on the host that ran it) are packed for another host and unpacked there.
 */
export interface AgentSessions {
  /** Whether the CLI resumes a session by id (`--resume <id>`, `codex exec resume <id>`). */
  readonly resumable: boolean;
  /** Whether ado knows where the CLI keeps a session's files, so it can carry them to another host. */
  readonly portable: boolean;
  /** The session's files on this host, packed; undefined when none are found (or the CLI's are not portable). */
  pack(sessionId: string, at: SessionPlace): Promise<Uint8Array | undefined>;
  /** Puts packed session files where the CLI looks for them on this host (for a session started in `at.cwd`). */
  unpack(packed: Uint8Array, at: SessionPlace): Promise<{ files: number }>;
  /** The environment the CLI sees for a task's environment: what `at.env` is made of. */
  placeEnv(taskEnv: Readonly<Record<string, string>>): Record<string, string | undefined>;
}

/** An agent adapter: how one kind of agent CLI (or a shell command) runs a task. */
export interface Agent {
  readonly name: string;
  /** Whether the agent edits files, and so needs a worktree and a commit afterwards. */
  readonly needsWorktree: boolean;
  /** Agent CLIs with sessions; absent for agents without (shell, noop). */
  readonly sessions?: AgentSessions;
  run(ctx: AgentContext): Promise<AgentOutcome>;
}
