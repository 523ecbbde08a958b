/**
 * Gemini CLI (`gemini --output-format stream-json --yolo --prompt=…`). Headless because of
 * the prompt flag and the non-TTY stdio; the worktree is trusted through
 * GEMINI_CLI_TRUST_WORKSPACE (an untrusted folder exits 55). Assistant text arrives in
 * `delta` pieces, gathered into one message per stretch of text. Completion is the exit
 * code with the `result` event: 41 auth (nothing on stdout), 53 max turns, an API
 * error exits with its HTTP status mod 256 (429 -> 173). Tokens come per model from
 * `result.stats` (no cost: the price table gives it).
 */
import { AUTH_TEXT, classOfHttpStatus, parseResetTime, RATE_LIMIT_TEXT } from "./classify.js";
import { BaseParser, commonCommand, fail, rawLine, type CliAdapter, type CommandInput, type CommandSpec, type ParserContext, type ProcessExit, type Verdict } from "./adapter.js";
import { type AgentEvent, messageEvent, summarizeArgs, toolEvent } from "./events.js";
import { count, type Json, obj, parseJsonLine, str } from "./stream.js";
import { homedir } from "node:os";
import { join } from "node:path";

/** The worktree is the task's own: trusting it is what a headless run needs. */
const TRUST_ENV = { GEMINI_CLI_TRUST_WORKSPACE: "true" };

function buildCommand(input: CommandInput): CommandSpec {
  const { base, extraArgs, maxTurns } = commonCommand(gemini, input, TRUST_ENV);
  const args = ["--output-format", "stream-json", "--yolo"];
  if (base.model) args.push("--model", base.model);
  if (input.resume) args.push("--resume", input.resume);
  // The `=` form: a prompt starting with `-` is not taken for a flag.
  args.push(...extraArgs, `--prompt=${input.prompt}`);
  const warnings = maxTurns ? ["gemini takes its turn limit from settings.json (maxSessionTurns), not a flag: maxTurns is ignored"] : [];
  return { ...base, args, stdin: "close", warnings };
}

/** Exit codes of Gemini CLI's own (core/src/utils/exitCodes.ts). */
const EXIT = { auth: 41, input: 42, sandbox: 44, config: 52, turns: 53, tool: 54, untrusted: 55, sigint: 130 } as const;

/** HTTP statuses a failed API call exits with, by their value mod 256. */
const HTTP_BY_EXIT = new Map([400, 401, 402, 403, 404, 408, 429, 500, 502, 503, 504].map((s) => [s & 255, s]));

class GeminiParser extends BaseParser {
  private result: Json | undefined;
  private lastError: string | undefined;
  private readonly tools = new Map<string, { name: string; summary: string }>();

  protected onLine(line: string): AgentEvent[] {
    const j = parseJsonLine(line);
    if (!j) return [...this.flushText(), ...rawLine(line)];
    const type = str(j.type);
    if (type === "message") return this.onMessage(j);
    // Any other event ends a stretch of assistant text.
    const events = this.flushText();
    switch (type) {
      case "init":
        this.session(j.session_id);
        this.model = str(j.model) ?? this.model;
        break;
      case "tool_use": {
        const name = str(j.tool_name) ?? "tool";
        const summary = summarizeArgs(j.parameters);
        const id = str(j.tool_id);
        if (id) this.tools.set(id, { name, summary });
        events.push(toolEvent("started", name, summary, id ? { callId: id } : {}));
        break;
      }
      case "tool_result": {
        const id = str(j.tool_id);
        const known = id ? this.tools.get(id) : undefined;
        const ok = j.status === "success";
        const error = str(obj(j.error)?.message);
        events.push(toolEvent("completed", known?.name ?? "tool", ok || !error ? (known?.summary ?? "") : `${known?.summary ?? ""}: ${error}`, { ...(id ? { callId: id } : {}), ok }));
        break;
      }
      case "error": {
        const message = str(j.message) ?? "";
        if (j.severity === "error") this.lastError = message;
        else if (message) events.push(messageEvent(`warning: ${message}`));
        break;
      }
      case "result":
        this.onResult(j);
        events.push(this.usageEvent());
        break;
    }
    return events;
  }

  private onMessage(j: Json): AgentEvent[] {
    if (j.role !== "assistant") return [];
    const content = str(j.content) ?? "";
    if (j.delta === true) {
      this.text(content);
      return [];
    }
    return [...this.flushText(), ...(content.trim() ? [messageEvent(content)] : [])];
  }

  private onResult(j: Json): void {
    this.result = j;
    this.terminal = true;
    const stats = obj(j.stats) ?? {};
    const models = obj(stats.models) ?? {};
    this.tokens.clear();
    const perModel = Object.entries(models);
    // input_tokens counts cached ones too; `input` is the part not cached.
    const tokensOf = (s: Json) => ({ input: count(s.input_tokens), output: count(s.output_tokens), cached: count(s.cached), cacheWrite: 0 });
    if (perModel.length) for (const [model, s] of perModel) this.setTokens(model, tokensOf(obj(s) ?? {}));
    else if (count(stats.input_tokens) || count(stats.output_tokens)) this.setTokens(undefined, tokensOf(stats));
  }

  protected judge(exit: ProcessExit): Verdict {
    const r = this.result;
    const error = obj(r?.error);
    const text = [str(error?.message), this.lastError, this.stderr.text].filter(Boolean).join("\n");
    const said = `gemini: ${(str(error?.message) ?? this.lastError ?? this.stderr.last ?? this.exitText(exit)).trim()}`;
    if (r?.status === "success" && (exit.code === 0 || exit.stopped === "linger")) return { ok: true };
    switch (exit.code) {
      case EXIT.auth:
        return fail("auth", `${said}: log in once with gemini on this worker (access: subscription), or give it GEMINI_API_KEY with access: api${this.authHint()}`);
      case EXIT.turns:
        return fail("max_turns", `${said}; resume its session with more turns (maxSessionTurns in gemini's settings.json)`);
      case EXIT.input:
      case EXIT.sandbox:
      case EXIT.config:
      case EXIT.untrusted:
        return fail("invalid", `${said} (exit ${exit.code}): check agents.gemini (args, env) and gemini's settings on this worker; not retried`);
      case EXIT.tool:
        return fail("crash", `${said} (a fatal tool error)`);
    }
    if (/invalid session identifier/i.test(text)) return fail("crash", `${said}; the next attempt starts a new session`, { sessionLost: true });
    if (str(error?.type) === "FatalTurnLimitedError" || /max(imum)? session turns/i.test(text)) return fail("max_turns", said);
    if (RATE_LIMIT_TEXT.test(text)) {
      const retryAt = parseResetTime(text, this.now());
      return fail("rate_limit", said, retryAt !== undefined ? { retryAt } : {});
    }
    if (AUTH_TEXT.test(text)) return fail("auth", `${said}${this.authHint()}`);
    const status = exit.code !== null ? HTTP_BY_EXIT.get(exit.code) : undefined;
    if (status !== undefined && (r?.status === "error" || !r)) return fail(classOfHttpStatus(status), `${said} (HTTP ${status})`);
    if (exit.code === EXIT.sigint) return fail("crash", `${said} (interrupted)`);
    if (!r) return fail("crash", `gemini ended without a result (${this.exitText(exit)})${this.stderrHint()}`);
    if (r.status === "success") return fail("crash", `gemini reported success but then ended with ${this.exitText(exit)}${this.stderrHint()}`);
    return fail("crash", said);
  }
}

/** The Gemini CLI adapter. */
export const gemini: CliAdapter = {
  name: "gemini",
  bin: "gemini",
  providers: ["google"],
  accessModes: ["subscription", "api"],
  install: "install Gemini CLI (npm install -g @google/gemini-cli) and log in once (gemini)",
  // Resumed by id; where it keeps a session is not documented well enough to move it to another host.
  session: {},
  loginFiles: (env) => [join(env.HOME || homedir(), ".gemini", "oauth_creds.json")],
  buildCommand,
  parser: (ctx?: ParserContext) => new GeminiParser(gemini, ctx),
};
