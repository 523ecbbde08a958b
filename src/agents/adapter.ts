/**
 * What an agent CLI adapter is: pure parts only. `buildCommand` turns a task and the
 * config into the command line, environment and stdin of a non-interactive run; a
 * parser turns the CLI's output lines into typed events and, with the exit, into an
 * outcome (success, or a failure class; session id; tokens and cost). The I/O around
 * them (the process, timers) is cli-agent.ts, so most of an adapter is tested by
 * feeding it lines.
 */
import { z } from "zod";
import { AdoError } from "../runtime/errors.js";
import { DurationSchema } from "../runtime/duration.js";
import type { TaskFailure } from "../runtime/messages.js";
import type { CliAgentName } from "./agent-names.js";
import type { SessionLayout } from "./sessions.js";
import { agentFailure, type FailureKind } from "./classify.js";
import { ACCESS_MODES, type AccessMode, allowedCredentials, ALL_CREDENTIALS, filterEnvironment, type Provider } from "./credentials.js";
import { type AgentEvent, type AgentEventOf, messageEvent } from "./events.js";
import { addTokens, costOf, type ModelPrice, NO_TOKENS, priceOf, type PriceTable, type TokenCounts } from "./prices.js";
import { Tail } from "./stream.js";
import type { AgentOutcome } from "./types.js";

// ---- config --------------------------------------------------------------------------

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name (letters, digits, '_')");

/**
 * Config `agents.<name>`: how this host runs one agent CLI. `bin`: the executable (name
 * on PATH or a path); `args`: appended to every run; `env`: added to its environment;
 * `model`: the default model; `access`: how it is paid for (which credentials it gets);
 * `idleTimeout`: no output for this long is a hang (default 20m); `linger`: how long it
 * may keep running after its final result before it is stopped (default 5s).
 */
export const AgentConfigSchema = z
  .object({
    bin: z.string().min(1).optional(),
    args: z.array(z.string()).default([]),
    env: z.record(envName, z.string()).default({}),
    model: z.string().min(1).optional(),
    access: z.enum(ACCESS_MODES).optional(),
    maxTurns: z.number().int().min(1).optional(),
    idleTimeout: DurationSchema.optional(),
    linger: DurationSchema.optional(),
  })
  .strict();
export type AgentConfig = z.output<typeof AgentConfigSchema>;

/** Config `agents`: one entry per agent CLI, each optional. */
export const AgentsConfigSchema = z
  .object({
    claude: AgentConfigSchema.optional(),
    codex: AgentConfigSchema.optional(),
    gemini: AgentConfigSchema.optional(),
    cursor: AgentConfigSchema.optional(),
    aider: AgentConfigSchema.optional(),
  })
  .strict();
export type AgentsConfig = z.output<typeof AgentsConfigSchema>;

/**
 * A task's own agent settings, as they travel on the wire (durations in ms). They win
 * over `agents.<name>`; `args` are appended after the config's.
 */
export const AgentTaskOptionsSchema = z
  .object({
    model: z.string().min(1).optional(),
    maxTurns: z.number().int().min(1).optional(),
    /** Claude only (`--max-budget-usd`). */
    maxBudgetUsd: z.number().positive().optional(),
    args: z.array(z.string()).optional(),
    idleTimeoutMs: z.number().int().positive().optional(),
    access: z.enum(ACCESS_MODES).optional(),
  })
  .strict();
export type AgentTaskOptions = z.output<typeof AgentTaskOptionsSchema>;

/** No output for this long (stdout or stderr) is a hang, unless the config or task says otherwise. */
export const DEFAULT_IDLE_TIMEOUT_MS = 20 * 60_000;
/** How long a CLI may run on after its final result before its group is stopped. */
export const DEFAULT_LINGER_MS = 5_000;

// ---- the command -----------------------------------------------------------------------

/** What buildCommand is given: the task, the config, and the environment around the child. */
export interface CommandInput {
  prompt: string;
  /** The task's worktree. */
  cwd?: string;
  options?: AgentTaskOptions;
  config?: AgentConfig;
  /** A session to resume (the id a previous attempt's outcome carried). */
  resume?: string;
  /** What ado adds to the child's environment (ADO_* and the like). */
  env?: Readonly<Record<string, string>>;
  /** The environment the child inherits (the worker's own): what to unset is chosen from it. */
  inherited?: Readonly<Record<string, string | undefined>>;
  /** A linked worktree's shared git directory: Codex's sandbox must be allowed to write it. */
  gitCommonDir?: string;
}

/** A command line ready to run, and what was chosen on the way. */
export interface CommandSpec {
  bin: string;
  args: string[];
  /** Added to the child's environment (over the inherited one). */
  env: Record<string, string>;
  /** Inherited variables the child must not see (credentials of other access modes, CLAUDECODE). */
  unset: string[];
  /** `close`: the child reads end-of-file at once; `text`: fed to it, then closed. */
  stdin: "close" | { text: string };
  access: AccessMode;
  model?: string;
  /** Credential variables of the worker's environment withheld from the child: named in an auth failure. */
  withheld: string[];
  /** Settings this CLI cannot honour (e.g. maxTurns for a CLI without such a flag). */
  warnings: string[];
}

/** buildCommand refused the settings: a wrong config or task, never retried. */
export class AgentCommandError extends AdoError {
  constructor(message: string) {
    super(message, { retryable: false });
  }
}

/**
 * The parts of CommandSpec every adapter computes the same way: binary, model, access
 * mode (checked against what the CLI supports), extra args, and the environment with
 * credentials filtered. Adapters add their own flags around `extraArgs`.
 */
export function commonCommand(
  adapter: Pick<CliAdapter, "name" | "bin" | "providers" | "accessModes">,
  input: CommandInput,
  adapterEnv: Record<string, string> = {},
): { base: Omit<CommandSpec, "args" | "stdin">; extraArgs: string[]; maxTurns?: number } {
  const config = input.config ?? AgentConfigSchema.parse({});
  const options = input.options ?? {};
  const access = options.access ?? config.access ?? adapter.accessModes[0]!;
  if (!adapter.accessModes.includes(access)) {
    throw new AgentCommandError(
      `agent '${adapter.name}' cannot run with access '${access}': it supports ${adapter.accessModes.join(", ")}; fix 'access' in agents.${adapter.name} or the task`,
    );
  }
  const allowed = allowedCredentials(adapter.providers, access);
  // A credential the config itself names must be meant: refusing it beats silently billing another account.
  for (const name of Object.keys(config.env)) {
    if (ALL_CREDENTIALS.includes(name) && !allowed.has(name)) {
      throw new AgentCommandError(
        `agents.${adapter.name}.env sets ${name}, which access '${access}' does not use: remove it, or set access: ${access === "api" ? "subscription" : "api"} if that is how this agent is paid for`,
      );
    }
  }
  const { env, unset, withheld } = filterEnvironment(input.inherited ?? process.env, { ...(input.env ?? {}), ...adapterEnv, ...config.env }, allowed);
  const model = options.model ?? config.model;
  const maxTurns = options.maxTurns ?? config.maxTurns;
  return {
    base: { bin: config.bin ?? adapter.bin, env, unset, withheld, access, ...(model ? { model } : {}), warnings: [] },
    extraArgs: [...config.args, ...(options.args ?? [])],
    ...(maxTurns ? { maxTurns } : {}),
  };
}

// ---- the parser ------------------------------------------------------------------------

/** How the process ended, as the shell (cli-agent.ts) saw it. */
export interface ProcessExit {
  code: number | null;
  signal?: string;
  /** The shell stopped it: `linger` after its final result, `hang` after the idle timeout. */
  stopped?: "linger" | "hang";
  /** The process runner's own failure (timeout, cancel, interrupt, spawn error): passed through. */
  runnerFailure?: TaskFailure;
  /** The idle timeout that fired, for the message. */
  idleTimeoutMs?: number;
}

/** An attempt's outcome with what the stream told: session, tokens, cost, final text. */
export interface CliOutcome extends AgentOutcome {
  /** The session to resume from (absent when the CLI gave none, or the one resumed was not found). */
  sessionId?: string;
  /** The session asked to resume was not found: the next run must start a new one. */
  sessionLost?: boolean;
  model?: string;
  tokens: TokenCounts;
  costUsd: number;
  costSource: "reported" | "price_table" | "unknown";
  /** The agent's final text (its result), for the task's summary. */
  summary?: string;
  /** The events the stream produced, counted by type (for logs and tests). */
  eventCounts: Partial<Record<AgentEvent["type"], number>>;
}

/** What a parser is told about the run it parses. */
export interface ParserContext {
  /** The model asked for (the CLI may report another). */
  model?: string;
  prices?: PriceTable;
  /** The session resumed, if any. */
  resume?: string;
  /** Credential variables withheld from the child, named in an auth failure. */
  withheld?: string[];
  access?: AccessMode;
  /** The binary run, named when it is missing. */
  bin?: string;
  now?: () => number;
}

/** A verdict of an adapter on a finished run: success, or a failure class and a message. */
export type Verdict = { ok: true } | { ok: false; kind: FailureKind; message: string; retryAt?: number; sessionLost?: boolean };

/** One adapter's stream parser: stateful, one per attempt. */
export interface StreamParser {
  /** One line of stdout (without its newline). */
  feed(line: string): AgentEvent[];
  /** One line of stderr: kept to explain a failure; rarely an event. */
  feedStderr(line: string): AgentEvent[];
  /** Both streams ended: what is still pending (text being gathered). */
  end(): AgentEvent[];
  /** Whether the CLI's final event (its result) has been seen. */
  readonly terminal: boolean;
  readonly sessionId: string | undefined;
  /** The outcome, from the stream and the exit together. */
  outcome(exit: ProcessExit): CliOutcome;
}

/** An agent CLI adapter. */
export interface CliAdapter {
  readonly name: CliAgentName;
  /** The executable's default name on PATH. */
  readonly bin: string;
  /** Whose credentials it may get. */
  readonly providers: readonly Provider[];
  /** The access modes it supports; the first is the default. */
  readonly accessModes: readonly AccessMode[];
  /** How to install it, for the `agent_missing` message. */
  readonly install: string;
  /**
   * Present when the CLI resumes a session by id; `layout` when ado knows where it keeps
   * a session's files (so they can be carried to another host).
   */
  readonly session?: { readonly layout?: SessionLayout };
  /**
   * Files whose presence says the CLI is logged in (subscription access), for `ado
   * doctor`; a guess from the CLI's docs, so their absence is a warning, never a refusal.
   */
  loginFiles?(env: Readonly<Record<string, string | undefined>>): string[];
  buildCommand(input: CommandInput): CommandSpec;
  parser(ctx?: ParserContext): StreamParser;
}

/**
 * What every parser shares: the session id, token and cost accounting, gathering text
 * that arrives in pieces, the stderr tail, and the outcome cases common to all CLIs
 * (runner failures, hang, a missing binary). Subclasses read their CLI's lines and judge
 * its ending.
 */
export abstract class BaseParser implements StreamParser {
  sessionId: string | undefined;
  terminal = false;
  protected model: string | undefined;
  protected readonly stderr = new Tail();
  /** Lines of stdout seen (a missing binary prints none). */
  protected stdoutLines = 0;
  /** The CLI's final text (its result), when it gives one. */
  protected summary: string | undefined;
  /** The last message the agent wrote: the summary of CLIs without a result text. */
  private lastMessage: string | undefined;
  /** Tokens per model, cumulative (keyed "" when the model is unknown). */
  protected readonly tokens = new Map<string, TokenCounts>();
  /** A cost the CLI reported itself, cumulative. */
  protected reportedCost: number | undefined;
  private pendingText: string[] = [];
  private readonly counts: Partial<Record<AgentEvent["type"], number>> = {};
  protected readonly now: () => number;

  constructor(
    protected readonly adapter: Pick<CliAdapter, "name" | "install" | "bin">,
    protected readonly ctx: ParserContext = {},
  ) {
    this.model = ctx.model;
    this.now = ctx.now ?? Date.now;
  }

  feed(line: string): AgentEvent[] {
    this.stdoutLines++;
    return this.count(this.onLine(line));
  }

  feedStderr(line: string): AgentEvent[] {
    this.stderr.push(line);
    return this.count(this.onStderr(line));
  }

  end(): AgentEvent[] {
    return this.count(this.flushText());
  }

  /** Reads one stdout line. */
  protected abstract onLine(line: string): AgentEvent[];
  /** Judges a run that ended on its own (not stopped by a runner failure or a hang). */
  protected abstract judge(exit: ProcessExit): Verdict;

  protected onStderr(_line: string): AgentEvent[] {
    return [];
  }

  /** Text that arrives in pieces (deltas, plain lines), gathered into one message. */
  protected text(piece: string): void {
    this.pendingText.push(piece);
  }

  /** The gathered text as one message event (none when there is none). */
  protected flushText(separator = ""): AgentEvent[] {
    if (!this.pendingText.length) return [];
    const text = this.pendingText.join(separator);
    this.pendingText = [];
    return text.trim() ? [messageEvent(text)] : [];
  }

  /** Records the session id the first time a line carries one. */
  protected session(id: unknown): void {
    if (typeof id === "string" && id && this.sessionId === undefined) this.sessionId = id;
  }

  /** Sets a model's cumulative tokens (CLIs that report running totals). */
  protected setTokens(model: string | undefined, t: TokenCounts): void {
    this.tokens.set(model ?? this.model ?? "", t);
  }

  /** Adds to a model's tokens (CLIs that report each call). */
  protected addTokens(model: string | undefined, t: TokenCounts): void {
    const key = model ?? this.model ?? "";
    this.tokens.set(key, addTokens(this.tokens.get(key) ?? NO_TOKENS, t));
  }

  protected totals(): TokenCounts {
    let t = NO_TOKENS;
    for (const v of this.tokens.values()) t = addTokens(t, v);
    return t;
  }

  /** Cost so far: the CLI's own figure, else tokens times the price table. */
  protected cost(): { costUsd: number; costSource: CliOutcome["costSource"] } {
    if (this.reportedCost !== undefined) return { costUsd: this.reportedCost, costSource: "reported" };
    let usd = 0;
    let unknown = false;
    for (const [model, t] of this.tokens) {
      const price = this.priceOf(model);
      if (price) usd += costOf(t, price);
      else if (t.input || t.output) unknown = true;
    }
    return { costUsd: usd, costSource: unknown ? "unknown" : "price_table" };
  }

  private readonly prices = new Map<string, ModelPrice | undefined>();
  /** A model's price, looked up once per parser (a usage event per message would normalize the name each time). */
  private priceOf(model: string): ModelPrice | undefined {
    if (!this.prices.has(model)) this.prices.set(model, priceOf(model || undefined, this.ctx.prices));
    return this.prices.get(model);
  }

  /** The cumulative usage event. */
  protected usageEvent(): AgentEventOf<"agent.usage"> {
    const t = this.totals();
    const models = [...this.tokens.keys()].filter(Boolean);
    const model = models.length === 1 ? models[0] : (this.model ?? models[0]);
    return {
      type: "agent.usage",
      ...(model ? { model } : {}),
      inputTokens: t.input,
      outputTokens: t.output,
      cachedTokens: t.cached,
      cacheWriteTokens: t.cacheWrite,
      ...this.cost(),
    };
  }

  /** A hint for an auth failure: which credentials ado withheld, and how to change that. */
  protected authHint(): string {
    const withheld = this.ctx.withheld ?? [];
    if (!withheld.length) return "";
    const other = this.ctx.access === "api" ? "subscription" : "api";
    return ` (ado withheld ${withheld.join(", ")} from it because its access is '${this.ctx.access ?? "subscription"}'; set access: ${other} in agents.${this.adapter.name} or the task to use ${withheld.length > 1 ? "them" : "it"})`;
  }

  /** The last stderr line worth quoting. */
  protected stderrHint(): string {
    const last = this.stderr.last;
    return last ? `: ${last.trim()}` : "";
  }

  protected exitText(exit: ProcessExit): string {
    return exit.code === null ? `killed by ${exit.signal ?? "a signal"}` : `exit ${exit.code}`;
  }

  outcome(exit: ProcessExit): CliOutcome {
    const verdict = this.verdict(exit);
    const sessionLost = !verdict.ok && !!verdict.sessionLost;
    const sessionId = sessionLost ? undefined : this.sessionId;
    const base = {
      ...(sessionId ? { sessionId } : {}),
      ...(sessionLost ? { sessionLost } : {}),
      ...(this.model ? { model: this.model } : {}),
      tokens: this.totals(),
      ...this.cost(),
      ...((this.summary ?? this.lastMessage) ? { summary: this.summary ?? this.lastMessage } : {}),
      eventCounts: { ...this.counts },
    };
    if (verdict.ok) return { ok: true, ...base };
    if (exit.runnerFailure && PASSED_THROUGH.has(exit.runnerFailure.kind)) return { ok: false, failure: exit.runnerFailure, ...base };
    const failure = agentFailure(verdict.kind, verdict.message, {
      exitCode: exit.code,
      ...(verdict.retryAt !== undefined ? { retryAt: verdict.retryAt } : {}),
    });
    return { ok: false, failure, ...base };
  }

  private verdict(exit: ProcessExit): Verdict {
    const rf = exit.runnerFailure;
    if (rf && PASSED_THROUGH.has(rf.kind)) return { ok: false, kind: rf.kind, message: rf.message };
    if (exit.stopped === "hang") {
      const secs = exit.idleTimeoutMs !== undefined ? `${Math.round(exit.idleTimeoutMs / 1000)} s` : "its idle timeout";
      return { ok: false, kind: "hang", message: `${this.adapter.name} printed nothing for ${secs} (idle timeout): its process group was killed` };
    }
    // A missing binary: spawned directly (ENOENT) or through `sh -c exec` (127, nothing printed).
    if (rf?.kind === "agent_missing" || (exit.code === 127 && this.stdoutLines === 0)) {
      return {
        ok: false,
        kind: "agent_missing",
        message: `'${this.ctx.bin ?? this.adapter.bin}' is not installed or not on PATH on this worker: ${this.adapter.install}, or set agents.${this.adapter.name}.bin; not retried`,
      };
    }
    if (exit.code === 126 && this.stdoutLines === 0) {
      return { ok: false, kind: "invalid", message: `'${this.ctx.bin ?? this.adapter.bin}' is not executable on this worker (exit 126): check its permissions or agents.${this.adapter.name}.bin; not retried` };
    }
    return this.judge(exit);
  }

  private count(events: AgentEvent[]): AgentEvent[] {
    for (const e of events) {
      this.counts[e.type] = (this.counts[e.type] ?? 0) + 1;
      if (e.type === "agent.message" && !e.raw) this.lastMessage = e.text;
    }
    return events;
  }
}

/** Runner failures that say all there is (the stream cannot change them): reported as the runner gave them. */
const PASSED_THROUGH: ReadonlySet<FailureKind> = new Set(["timeout", "cancelled", "interrupted", "internal"]);

/** A raw (non-JSON) stdout line of a JSON-speaking CLI, as a message; blank lines are dropped. */
export function rawLine(line: string): AgentEvent[] {
  return line.trim() ? [messageEvent(line, true)] : [];
}

/** Fails with the adapter's class and message; a shorthand for judges. */
export function fail(kind: FailureKind, message: string, extra: { retryAt?: number; sessionLost?: boolean } = {}): Verdict {
  return { ok: false, kind, message, ...extra };
}
