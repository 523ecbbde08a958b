/**
 * The I/O shell around an adapter: builds its command, runs it through the process
 * runner (its own group, killed as a whole; the variables to withhold unset and the
 * stdin text fed by the runner), splits the output into lines for the parser while
 * passing the raw chunks on as before, and adds the two clocks the runner has not got:
 * an idle timeout (no output for so long is a hang) and a linger grace (a CLI still
 * running after its final result is stopped, and the result stands).
 */
import { mkdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { WORKTREE_ADO_DIR } from "../runtime/names.js";
import {
  AgentCommandError,
  AgentTaskOptionsSchema,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_LINGER_MS,
  type AgentConfig,
  type AgentTaskOptions,
  type CliAdapter,
  type CliOutcome,
  type CommandSpec,
  type ProcessExit,
  type StreamParser,
} from "./adapter.js";
import { agentFailure } from "./classify.js";
import { type AgentEvent, messageEvent } from "./events.js";
import { NO_TOKENS, type PriceTable } from "./prices.js";
import { runProcessGroup, type RunOutcome } from "./process.js";
import { packSession, unpackSession } from "./sessions.js";
import { LineSplitter } from "./stream.js";
import type { Agent, AgentContext, AgentSessions, OutputStream, SessionPlace } from "./types.js";

/** What a CLI agent may be given beyond an AgentContext (which carries onEvent, onSession and resume). */
export interface CliRunContext extends AgentContext {
  /** The task's agent settings; they win over those read from `task`. */
  options?: AgentTaskOptions;
}

/** How this host runs the CLI (config `agents.<name>`) and what tokens cost (config `prices`). */
export interface CliAgentSettings {
  config?: AgentConfig;
  prices?: PriceTable;
  /** The environment the child inherits; default process.env (what the runner merges). */
  inherited?: Readonly<Record<string, string | undefined>>;
}

/** An Agent that runs one agent CLI through its adapter. */
export class CliAgent implements Agent {
  readonly name: string;
  readonly needsWorktree = true;
  readonly sessions?: AgentSessions;

  constructor(
    readonly adapter: CliAdapter,
    private readonly settings: CliAgentSettings = {},
  ) {
    this.name = adapter.name;
    if (adapter.session) this.sessions = cliSessions(adapter, settings);
  }

  /** The binary this host runs (config `agents.<name>.bin`, else the CLI's name on PATH). */
  get bin(): string {
    return this.settings.config?.bin ?? this.adapter.bin;
  }

  /** The environment the CLI's process starts from, before ado adds its own: the worker's, and `agents.<name>.env` over it. */
  get baseEnv(): Record<string, string | undefined> {
    return { ...(this.settings.inherited ?? process.env), ...(this.settings.config?.env ?? {}) };
  }

  /** The access mode the config gives it (a task may choose another). */
  get access(): NonNullable<AgentConfig["access"]> {
    return this.settings.config?.access ?? this.adapter.accessModes[0]!;
  }

  async run(ctx: CliRunContext): Promise<CliOutcome> {
    const options = taskOptionsOf(ctx.task, ctx.options);
    if (!options.ok) return failed("invalid", options.message);
    const config = this.settings.config;
    let spec: CommandSpec;
    try {
      spec = this.adapter.buildCommand({
        prompt: ctx.task.prompt,
        options: options.value,
        ...(config ? { config } : {}),
        ...(ctx.cwd ? { cwd: ctx.cwd, gitCommonDir: await gitCommonDir(ctx.cwd) } : {}),
        ...(ctx.resume ? { resume: ctx.resume } : {}),
        env: ctx.env,
        inherited: this.settings.inherited ?? process.env,
      });
    } catch (err) {
      if (err instanceof AgentCommandError) return failed("invalid", err.message);
      throw err;
    }
    const parser = this.adapter.parser({
      ...(spec.model ? { model: spec.model } : {}),
      ...(this.settings.prices ? { prices: this.settings.prices } : {}),
      ...(ctx.resume ? { resume: ctx.resume } : {}),
      withheld: spec.withheld,
      access: spec.access,
      bin: spec.bin,
    });
    // aider keeps its history there; the worker makes it too, and never commits it.
    if (ctx.cwd) await mkdir(join(ctx.cwd, WORKTREE_ADO_DIR), { recursive: true });
    const idleTimeoutMs = options.value.idleTimeoutMs ?? config?.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS;
    const lingerMs = config?.linger ?? DEFAULT_LINGER_MS;
    return runAttached(spec, parser, ctx, { idleTimeoutMs, lingerMs });
  }
}

/** The sessions of a CLI that resumes them: packed and unpacked where its layout says (none: not portable). */
function cliSessions(adapter: CliAdapter, settings: CliAgentSettings): AgentSessions {
  const layout = adapter.session?.layout;
  return {
    resumable: true,
    portable: !!layout,
    pack: (id, at) => (layout ? packSession(layout, id, at) : Promise.resolve(undefined)),
    unpack: (packed, at) => {
      if (!layout) throw new AgentCommandError(`ado cannot place ${adapter.name}'s session files on another host`);
      return unpackSession(layout, packed, at);
    },
    // What the child's environment holds: the worker's, the task's, then the config's (buildCommand's order).
    placeEnv: (taskEnv) => ({ ...(settings.inherited ?? process.env), ...taskEnv, ...(settings.config?.env ?? {}) }),
  };
}

export type { SessionPlace };

/** The clocks of one run. */
interface Clocks {
  idleTimeoutMs: number;
  lingerMs: number;
}

async function runAttached(spec: CommandSpec, parser: StreamParser, ctx: CliRunContext, clocks: Clocks): Promise<CliOutcome> {
  let seq = 0;
  let session: string | undefined;
  const emit = (events: AgentEvent[]) => {
    for (const e of events) ctx.onEvent?.(e, seq++);
    // The session id as soon as the stream names it: a checkpoint taken meanwhile stores it.
    if (session === undefined && parser.sessionId !== undefined) {
      session = parser.sessionId;
      ctx.onSession?.(session);
    }
  };
  // A parser bug must cost a line, never the attempt (nor the worker).
  const guarded = (f: () => AgentEvent[]) => {
    try {
      emit(f());
    } catch (err) {
      emit([messageEvent(`ado: a line of ${spec.bin}'s output could not be read: ${(err as Error).message}`, true)]);
    }
  };
  for (const w of spec.warnings) emit([messageEvent(`ado: ${w}`, true)]);

  // Our own abort, so the clocks can stop the group; the worker's abort is passed on with its reason.
  const stop = new AbortController();
  let stopped: ProcessExit["stopped"];
  const onParentAbort = () => stop.abort(ctx.signal.reason);
  ctx.signal.addEventListener("abort", onParentAbort, { once: true });
  if (ctx.signal.aborted) onParentAbort();

  let idle: NodeJS.Timeout | undefined;
  let linger: NodeJS.Timeout | undefined;
  const armIdle = () => {
    clearTimeout(idle);
    if (ctx.suspender.isPaused || stopped) return;
    idle = setTimeout(() => {
      // Silent after its final result is lingering, not hanging: the result stands.
      stopped ??= parser.terminal ? "linger" : "hang";
      stop.abort(stopped);
    }, clocks.idleTimeoutMs);
  };
  // Paused time is not idle time: the clock restarts in full on resume.
  const offSuspend = ctx.suspender.onChange((paused) => (paused ? clearTimeout(idle) : armIdle()));
  const checkTerminal = () => {
    if (!parser.terminal || linger || stopped) return;
    linger = setTimeout(() => {
      stopped ??= "linger";
      stop.abort("linger");
    }, clocks.lingerMs);
  };

  const splitters: Record<OutputStream, LineSplitter> = {
    stdout: new LineSplitter((l) => guarded(() => parser.feed(l))),
    stderr: new LineSplitter((l) => guarded(() => parser.feedStderr(l))),
  };
  const onOutput = (stream: OutputStream, chunk: string) => {
    ctx.onOutput(stream, chunk);
    armIdle();
    splitters[stream].push(chunk);
    checkTerminal();
  };

  armIdle();
  let result: RunOutcome;
  try {
    result = await runProcessGroup(spec.bin, spec.args, { ...ctx, env: spec.env, signal: stop.signal, onOutput }, {
      ...(ctx.task.timeoutMs ? { timeoutMs: ctx.task.timeoutMs } : {}),
      unsetEnv: spec.unset,
      stdin: spec.stdin === "close" ? "ignore" : spec.stdin,
    });
  } finally {
    clearTimeout(idle);
    clearTimeout(linger);
    offSuspend();
    ctx.signal.removeEventListener("abort", onParentAbort);
  }
  splitters.stdout.end();
  splitters.stderr.end();
  guarded(() => parser.end());
  const exit = exitOf(result, ctx.signal.aborted ? undefined : stopped, clocks.idleTimeoutMs);
  return parser.outcome(exit);
}

/**
 * How the process ended, from the runner's outcome: its exit code, the signal that
 * killed it (the runner's field; the message of a runner that predates it), a stop by
 * one of the shell's clocks, or the runner's own failure.
 */
export function exitOf(outcome: RunOutcome, stopped: ProcessExit["stopped"], idleTimeoutMs: number): ProcessExit {
  const f = outcome.failure;
  if (stopped) return { code: f?.exitCode ?? null, stopped, idleTimeoutMs };
  if (outcome.ok || !f) return { code: 0 };
  if (f.kind === "exit") {
    const signal = outcome.signal ?? (f.exitCode === null ? /killed by (SIG[A-Z0-9]+)/.exec(f.message)?.[1] : undefined);
    return { code: f.exitCode ?? null, ...(signal ? { signal } : {}) };
  }
  return { code: f.exitCode ?? null, runnerFailure: f };
}

/**
 * A linked worktree's shared git directory (`.git` is a file naming the worktree's git
 * dir, whose `commondir` names the shared one); undefined for a main checkout or no repo.
 */
export async function gitCommonDir(cwd: string): Promise<string | undefined> {
  const dotGit = await readFile(join(cwd, ".git"), "utf8").catch(() => undefined);
  const m = dotGit ? /^gitdir:\s*(.+)$/m.exec(dotGit) : null;
  if (!m) return undefined;
  const gitDir = resolve(cwd, m[1]!.trim());
  const common = (await readFile(join(gitDir, "commondir"), "utf8").catch(() => "")).trim();
  return common ? resolve(gitDir, common) : gitDir;
}

const TASK_OPTION_KEYS = Object.keys(AgentTaskOptionsSchema.shape) as (keyof AgentTaskOptions)[];

/**
 * The task's agent settings: those on the task (once the graph carries them), under the
 * ones the worker passes. Only the known keys are read; a bad value fails the task.
 */
export function taskOptionsOf(task: object, given: AgentTaskOptions = {}): { ok: true; value: AgentTaskOptions } | { ok: false; message: string } {
  const t = task as Record<string, unknown>;
  const picked = Object.fromEntries(TASK_OPTION_KEYS.filter((k) => t[k] !== undefined).map((k) => [k, t[k]]));
  const parsed = AgentTaskOptionsSchema.safeParse({ ...picked, ...given });
  if (parsed.success) return { ok: true, value: parsed.data };
  const issue = parsed.error.issues[0]!;
  return { ok: false, message: `the task's agent setting '${issue.path.join(".")}' is invalid: ${issue.message}` };
}

function failed(kind: "invalid", message: string): CliOutcome {
  return { ok: false, failure: agentFailure(kind, message), tokens: NO_TOKENS, costUsd: 0, costSource: "unknown", eventCounts: {} };
}
