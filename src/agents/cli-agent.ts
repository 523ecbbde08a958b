/**
 * The I/O shell around an adapter: builds its command, runs it through the process
 * runner (its own group, killed as a whole), splits the output into lines for the
 * parser while passing the raw chunks on as before, and adds the two clocks the runner
 * has not got: an idle timeout (no output for so long is a hang) and a linger grace (a
 * CLI still running after its final result is stopped, and the result stands).
 *
 * What the runner cannot do yet is done around it: variables to remove from the
 * inherited environment are unset, and stdin text is redirected from a file, by a `sh`
 * that then `exec`s the CLI (same process, same group).
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
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
import { runProcessGroup } from "./process.js";
import { LineSplitter } from "./stream.js";
import type { Agent, AgentContext, AgentOutcome, OutputStream } from "./types.js";

/** What the worker gives a CLI agent beyond an AgentContext. */
export interface CliRunContext extends AgentContext {
  /** Each typed event, numbered from 0 in the order the CLI produced them. */
  onEvent?(event: AgentEvent, seq: number): void;
  /** A session to resume (a previous attempt's outcome's sessionId). */
  resume?: string;
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

  constructor(
    readonly adapter: CliAdapter,
    private readonly settings: CliAgentSettings = {},
  ) {
    this.name = adapter.name;
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
    const scratch = typeof spec.stdin === "object" ? await mkdtemp(join(tmpdir(), "ado-agent-")) : undefined;
    try {
      let stdinFile: string | undefined;
      if (scratch && typeof spec.stdin === "object") {
        stdinFile = join(scratch, "stdin");
        await writeFile(stdinFile, spec.stdin.text, { mode: 0o600 });
      }
      const idleTimeoutMs = options.value.idleTimeoutMs ?? config?.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS;
      const lingerMs = config?.linger ?? DEFAULT_LINGER_MS;
      return await runAttached(spec, launchLine(spec, stdinFile), parser, ctx, { idleTimeoutMs, lingerMs });
    } finally {
      if (scratch) await rm(scratch, { recursive: true, force: true });
    }
  }
}

/** The clocks of one run. */
interface Clocks {
  idleTimeoutMs: number;
  lingerMs: number;
}

async function runAttached(spec: CommandSpec, line: { command: string; args: string[] }, parser: StreamParser, ctx: CliRunContext, clocks: Clocks): Promise<CliOutcome> {
  let seq = 0;
  const emit = (events: AgentEvent[]) => {
    for (const e of events) ctx.onEvent?.(e, seq++);
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
  let result: AgentOutcome;
  try {
    result = await runProcessGroup(line.command, line.args, { ...ctx, env: spec.env, signal: stop.signal, onOutput }, {
      ...(ctx.task.timeoutMs ? { timeoutMs: ctx.task.timeoutMs } : {}),
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
 * How the process ended, from the runner's outcome. The runner reports a signal only in
 * its message ("killed by SIGKILL"); it is read from there until the runner returns it
 * as a field (phase 2).
 */
export function exitOf(outcome: AgentOutcome, stopped: ProcessExit["stopped"], idleTimeoutMs: number): ProcessExit {
  const f = outcome.failure;
  if (stopped) return { code: f?.exitCode ?? null, stopped, idleTimeoutMs };
  if (outcome.ok || !f) return { code: 0 };
  if (f.kind === "exit") {
    const signal = f.exitCode === null ? /killed by (SIG[A-Z0-9]+)/.exec(f.message)?.[1] : undefined;
    return { code: f.exitCode ?? null, ...(signal ? { signal } : {}) };
  }
  return { code: f.exitCode ?? null, runnerFailure: f };
}

/**
 * The command the runner starts: the CLI itself, or, when inherited variables must go
 * or stdin must be fed, `sh -c` doing that and then `exec`ing the CLI in its place (so
 * the group, the pid and the exit status are the CLI's; a missing CLI exits 127).
 */
export function launchLine(spec: Pick<CommandSpec, "bin" | "args" | "unset">, stdinFile?: string): { command: string; args: string[] } {
  if (!spec.unset.length && !stdinFile) return { command: spec.bin, args: spec.args };
  for (const name of spec.unset) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new AgentCommandError(`cannot unset '${name}': not a variable name`);
  }
  const unset = spec.unset.length ? `unset ${spec.unset.join(" ")}; ` : "";
  if (!stdinFile) return { command: "sh", args: ["-c", `${unset}exec "$@"`, "ado-agent", spec.bin, ...spec.args] };
  return { command: "sh", args: ["-c", `${unset}f=$1; shift; exec "$@" <"$f"`, "ado-agent", stdinFile, spec.bin, ...spec.args] };
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
