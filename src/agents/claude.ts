/**
 * Claude Code (`claude -p … --output-format stream-json --verbose`). The prompt goes as
 * the last argument and stdin is closed (an open one costs a 3 s wait). Completion is the
 * `result` line: `is_error: true` is a failure whatever its subtype, classed by subtype
 * (max turns, budget), the assistant's `error` field, a `rejected` rate-limit event and
 * the text. Cost is the result's `total_cost_usd` (or the sum of `modelUsage[*].costUSD`);
 * before it arrives, each assistant message's usage gives an estimate from the price table.
 */
import { AUTH_TEXT, classOfHttpStatus, parseResetTime, RATE_LIMIT_TEXT } from "./classify.js";
import { BaseParser, commonCommand, fail, rawLine, type CliAdapter, type CommandInput, type CommandSpec, type ParserContext, type ProcessExit, type Verdict } from "./adapter.js";
import { type AgentEvent, messageEvent, summarizeArgs, toolEvent } from "./events.js";
import { arr, count, type Json, num, obj, parseJsonLine, str } from "./stream.js";
import type { TokenCounts } from "./prices.js";
import { claudeSessionLayout } from "./sessions.js";
import { homedir } from "node:os";
import { join } from "node:path";

const NAME = "claude";

function buildCommand(input: CommandInput): CommandSpec {
  const { base, extraArgs, maxTurns } = commonCommand(claude, input);
  const args = ["-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions"];
  if (base.model) args.push("--model", base.model);
  if (maxTurns) args.push("--max-turns", String(maxTurns));
  if (input.options?.maxBudgetUsd) args.push("--max-budget-usd", String(input.options.maxBudgetUsd));
  if (input.resume) args.push("--resume", input.resume);
  // `--` ends the options: a prompt that starts with `-` is still the prompt.
  args.push(...extraArgs, "--", input.prompt);
  return { ...base, args, stdin: "close" };
}

/** Tokens of one `usage` object (an API call's or the result's): input counts cache reads and writes too. */
function tokensOfUsage(u: Json | undefined): TokenCounts {
  const cached = count(u?.cache_read_input_tokens);
  const cacheWrite = count(u?.cache_creation_input_tokens);
  return { input: count(u?.input_tokens) + cached + cacheWrite, output: count(u?.output_tokens), cached, cacheWrite };
}

const negate = (t: TokenCounts): TokenCounts => ({ input: -t.input, output: -t.output, cached: -t.cached, cacheWrite: -t.cacheWrite });

class ClaudeParser extends BaseParser {
  private result: Json | undefined;
  /** The `error` of the last assistant message that had one (authentication_failed, rate_limit, ...). */
  private assistantError: string | undefined;
  private assistantErrorText = "";
  private rejected: { resetAt?: number } | undefined;
  /** Usage per API message id: a message split over several lines repeats its usage. */
  private readonly perMessage = new Map<string, { model: string | undefined; t: TokenCounts }>();
  /** Tool names by call id, for the completed event. */
  private readonly tools = new Map<string, { name: string; summary: string }>();

  protected onLine(line: string): AgentEvent[] {
    const j = parseJsonLine(line);
    if (!j) return rawLine(line);
    this.session(j.session_id);
    switch (str(j.type)) {
      case "system":
        return this.onSystem(j);
      case "assistant":
        return this.onAssistant(j);
      case "user":
        return this.onUser(j);
      case "rate_limit_event":
        return this.onRateLimit(obj(j.rate_limit_info) ?? {});
      case "result":
        return this.onResult(j);
      default:
        // stream_event, tool_progress, control_* and types of newer versions: nothing to report.
        return [];
    }
  }

  private onSystem(j: Json): AgentEvent[] {
    if (j.subtype === "init") {
      this.model = str(j.model) ?? this.model;
      // ado withholds the variable under subscription access; a key from claude's own settings still bills the API.
      if (j.apiKeySource === "ANTHROPIC_API_KEY" && this.ctx.access === "subscription") {
        return [messageEvent("ado: claude says it bills an API key (apiKeySource ANTHROPIC_API_KEY) although its access is 'subscription': remove the key from claude's settings, or set access: api", true)];
      }
      return [];
    }
    if (j.subtype === "api_retry") {
      const error = str(j.error) ?? "";
      if (!/rate_limit|overloaded/.test(error)) return [];
      const delay = num(j.retry_delay_ms);
      return [
        {
          type: "agent.rate_limit",
          status: "retrying",
          limitType: error,
          ...(delay !== undefined ? { retryInMs: Math.max(0, Math.round(delay)) } : {}),
          message: `attempt ${num(j.attempt) ?? "?"} of ${num(j.max_retries) ?? "?"}${j.error_status ? ` (HTTP ${String(j.error_status)})` : ""}`,
        },
      ];
    }
    return [];
  }

  private onAssistant(j: Json): AgentEvent[] {
    const m = obj(j.message) ?? {};
    const events: AgentEvent[] = [];
    const texts: string[] = [];
    for (const block of arr(m.content)) {
      const b = obj(block);
      if (!b) continue;
      if (b.type === "text" && str(b.text)) texts.push(b.text as string);
      if (b.type === "tool_use") {
        const name = str(b.name) ?? "tool";
        const summary = summarizeArgs(b.input);
        const id = str(b.id);
        if (id) this.tools.set(id, { name, summary });
        events.push(toolEvent("started", name, summary, id ? { callId: id } : {}));
      }
    }
    if (texts.length) events.unshift(messageEvent(texts.join("\n")));
    const error = str(j.error);
    if (error) {
      this.assistantError = error;
      this.assistantErrorText = texts.join("\n");
    }
    // A synthetic message (an error the CLI made up) used no tokens.
    const model = str(m.model);
    const id = str(m.id);
    if (id && m.usage && model !== "<synthetic>") {
      // A later line of the same message replaces its usage: take the old one back out.
      const t = tokensOfUsage(obj(m.usage));
      const before = this.perMessage.get(id);
      if (before) this.addTokens(before.model, negate(before.t));
      this.perMessage.set(id, { model, t });
      this.addTokens(model, t);
      events.push(this.usageEvent());
    }
    return events;
  }

  private onUser(j: Json): AgentEvent[] {
    const events: AgentEvent[] = [];
    for (const block of arr(obj(j.message)?.content)) {
      const b = obj(block);
      if (b?.type !== "tool_result") continue;
      const id = str(b.tool_use_id);
      const known = id ? this.tools.get(id) : undefined;
      events.push(toolEvent("completed", known?.name ?? "tool", known?.summary ?? "", { ...(id ? { callId: id } : {}), ok: b.is_error !== true }));
    }
    return events;
  }

  private onRateLimit(info: Json): AgentEvent[] {
    const status = str(info.status);
    const resetsAt = num(info.resetsAt);
    const resetAt = resetsAt !== undefined ? (resetsAt < 1e12 ? resetsAt * 1000 : resetsAt) : undefined;
    const mapped = status === "rejected" ? "rejected" : status === "allowed_warning" ? "warning" : "allowed";
    if (mapped === "rejected") this.rejected = { ...(resetAt !== undefined ? { resetAt } : {}) };
    const utilization = num(info.utilization);
    return [
      {
        type: "agent.rate_limit",
        status: mapped,
        ...(resetAt !== undefined ? { resetAt: new Date(resetAt).toISOString() } : {}),
        ...(str(info.rateLimitType) ? { limitType: str(info.rateLimitType) } : {}),
        ...(utilization !== undefined && utilization >= 0 ? { utilization } : {}),
        message: "",
      },
    ];
  }

  private onResult(j: Json): AgentEvent[] {
    this.result = j;
    this.terminal = true;
    this.summary = str(j.result);
    const modelUsage = obj(j.modelUsage);
    if (modelUsage && Object.keys(modelUsage).length) {
      // modelUsage is cumulative for the session's whole run: the figure for accounting.
      this.tokens.clear();
      let sum = 0;
      let anyCost = false;
      for (const [model, v] of Object.entries(modelUsage)) {
        const u = obj(v) ?? {};
        const cached = count(u.cacheReadInputTokens);
        const cacheWrite = count(u.cacheCreationInputTokens);
        this.setTokens(model, { input: count(u.inputTokens) + cached + cacheWrite, output: count(u.outputTokens), cached, cacheWrite });
        const c = num(u.costUSD);
        if (c !== undefined) {
          sum += c;
          anyCost = true;
        }
      }
      const total = num(j.total_cost_usd);
      this.reportedCost = total ?? (anyCost ? sum : undefined);
    } else {
      const usage = obj(j.usage);
      if (usage && this.perMessage.size === 0) {
        this.tokens.clear();
        this.setTokens(undefined, tokensOfUsage(usage));
      }
      const total = num(j.total_cost_usd);
      if (total !== undefined) this.reportedCost = total;
    }
    return [this.usageEvent()];
  }

  protected judge(exit: ProcessExit): Verdict {
    const r = this.result;
    if (r && r.is_error !== true) {
      if (exit.code === 0 || exit.stopped === "linger") return { ok: true };
      return fail("crash", `claude reported success but then ended with ${this.exitText(exit)}${this.stderrHint()}`);
    }
    if (r) return this.judgeError(r);
    return this.judgeNoResult(exit);
  }

  private judgeError(r: Json): Verdict {
    const subtype = str(r.subtype) ?? "";
    const errors = arr(r.errors).map(String);
    const text = [str(r.result), ...errors, this.assistantErrorText].filter(Boolean).join("; ") || subtype;
    const said = `claude: ${text}`;
    if (subtype === "error_max_turns" || r.terminal_reason === "max_turns") {
      return fail("max_turns", `claude used up its turns (${num(r.num_turns) ?? "?"}): ${text}; resume its session with more turns (maxTurns)`);
    }
    if (subtype === "error_max_budget_usd") return fail("budget", `claude used up its budget (maxBudgetUsd): ${text}; resume its session with a larger budget`);
    const lost = errors.find((e) => /no conversation found/i.test(e));
    if (lost) return fail("crash", `claude could not resume session ${this.ctx.resume ?? ""}: ${lost}; the next attempt starts a new session`, { sessionLost: true });
    if (this.assistantError === "authentication_failed" || this.assistantError === "billing_error" || (AUTH_TEXT.test(text) && !RATE_LIMIT_TEXT.test(text))) {
      return fail("auth", `${said}: log in on this worker (claude /login), or give it ANTHROPIC_API_KEY with access: api${this.authHint()}`);
    }
    const status = num(r.api_error_status);
    if (this.rejected || this.assistantError === "rate_limit" || RATE_LIMIT_TEXT.test(text) || status === 429) {
      const retryAt = this.rejected?.resetAt ?? parseResetTime(text, this.now());
      return fail("rate_limit", said, retryAt !== undefined ? { retryAt } : {});
    }
    if (status !== undefined) return fail(classOfHttpStatus(status), said);
    return fail("crash", said);
  }

  private judgeNoResult(exit: ProcessExit): Verdict {
    const err = this.stderr.text;
    const why = `claude ended without a result (${this.exitText(exit)})${this.stderrHint()}`;
    if (/requires --verbose|unknown option|error: option|cannot be used with|Input must be provided/i.test(err)) {
      return fail("invalid", `ado ran claude with a command line it refused${this.stderrHint()}: fix agents.claude.args or the task's args; not retried`);
    }
    if (/root\/sudo/i.test(err)) {
      return fail("invalid", `claude refuses to skip permission prompts as root${this.stderrHint()}: run the worker as another user; not retried`);
    }
    if (/inside another Claude Code session/i.test(err)) {
      return fail("invalid", `claude refused to run nested in another Claude Code session${this.stderrHint()}: unset CLAUDECODE for the worker`);
    }
    if (/no conversation found/i.test(err)) return fail("crash", `${why}; the next attempt starts a new session`, { sessionLost: true });
    if (AUTH_TEXT.test(err)) return fail("auth", `${why}: log in on this worker (claude /login)${this.authHint()}`);
    if (RATE_LIMIT_TEXT.test(err)) {
      const retryAt = parseResetTime(err, this.now());
      return fail("rate_limit", why, retryAt !== undefined ? { retryAt } : {});
    }
    return fail("crash", why);
  }
}

/** The Claude Code adapter. */
export const claude: CliAdapter = {
  name: NAME,
  bin: "claude",
  providers: ["anthropic"],
  accessModes: ["subscription", "api"],
  install: "install Claude Code (npm install -g @anthropic-ai/claude-code) and log in once (claude, then /login)",
  session: { layout: claudeSessionLayout },
  // Linux keeps the login there (macOS in the keychain, which cannot be checked offline).
  loginFiles: (env) => [join(env.CLAUDE_CONFIG_DIR || join(env.HOME || homedir(), ".claude"), ".credentials.json")],
  buildCommand,
  parser: (ctx?: ParserContext) => new ClaudeParser(claude, ctx),
};
