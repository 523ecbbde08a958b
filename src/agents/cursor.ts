/**
 * Cursor agent (`cursor-agent -p --output-format stream-json --force`), driven as
 * vibe-kanban does: the prompt on stdin, which is then closed; `--force` approves its
 * commands. `result` ends the run, but the process may linger after it: the shell stops
 * it after a grace period and the result stands. Failures come on stderr, often with no
 * terminal event. Tokens only in the undocumented `result.usage`; cost from the price
 * table (Cursor reports display names such as "Claude 4 Sonnet", which it maps).
 */
import { AUTH_TEXT, parseResetTime, RATE_LIMIT_TEXT } from "./classify.js";
import { BaseParser, commonCommand, fail, rawLine, type CliAdapter, type CommandInput, type CommandSpec, type ParserContext, type ProcessExit, type Verdict } from "./adapter.js";
import { type AgentEvent, messageEvent, summarizeArgs, toolEvent } from "./events.js";
import { arr, count, type Json, obj, parseJsonLine, str } from "./stream.js";

function buildCommand(input: CommandInput): CommandSpec {
  const { base, extraArgs, maxTurns } = commonCommand(cursor, input);
  const args = ["-p", "--output-format", "stream-json", "--force"];
  if (base.model) args.push("--model", base.model);
  if (input.resume) args.push("--resume", input.resume);
  args.push(...extraArgs);
  const warnings = maxTurns ? ["cursor-agent has no turn limit: maxTurns is ignored"] : [];
  return { ...base, args, stdin: { text: input.prompt }, warnings };
}

/** `{shellToolCall: {args, result}}` -> ["shell", {args, result}]; the `function` fallback by its name. */
function toolOf(toolCall: Json | undefined): { name: string; body: Json } {
  const [key, value] = Object.entries(toolCall ?? {})[0] ?? ["tool", {}];
  const body = obj(value) ?? {};
  if (key === "function") return { name: str(body.name) ?? "function", body: { args: safeJson(body.arguments), result: body.result } };
  return { name: key.replace(/ToolCall$/, ""), body };
}

function safeJson(v: unknown): unknown {
  if (typeof v !== "string") return v;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

class CursorParser extends BaseParser {
  private result: Json | undefined;
  private lastAssistant: string | undefined;

  protected onLine(line: string): AgentEvent[] {
    const j = parseJsonLine(line);
    if (!j) return rawLine(line);
    this.session(j.session_id);
    switch (str(j.type)) {
      case "system":
        if (j.subtype === "init") this.model = str(j.model) ?? this.model;
        return [];
      case "assistant": {
        const text = arr(obj(j.message)?.content)
          .map((c) => (obj(c)?.type === "text" ? (str(obj(c)?.text) ?? "") : ""))
          .join("");
        // With partial output the CLI flushes the same message twice: report it once.
        if (!text.trim() || text === this.lastAssistant) return [];
        this.lastAssistant = text;
        return [messageEvent(text)];
      }
      case "tool_call": {
        const { name, body } = toolOf(obj(j.tool_call));
        const summary = summarizeArgs(body.args);
        const callId = str(j.call_id);
        if (j.subtype === "started") return [toolEvent("started", name, summary, callId ? { callId } : {})];
        if (j.subtype !== "completed") return [];
        const result = obj(body.result);
        const ok = result ? !("failure" in result) && !("error" in result) : undefined;
        return [toolEvent("completed", name, summary, { ...(callId ? { callId } : {}), ...(ok !== undefined ? { ok } : {}) })];
      }
      case "result": {
        this.result = j;
        this.terminal = true;
        this.summary = str(j.result);
        const u = obj(j.usage);
        if (!u) return [];
        // ASSUMPTION (undocumented field): inputTokens excludes cache reads and writes, as
        // in Anthropic's usage; if it included them, the cost errs high, not low.
        const cached = count(u.cacheReadTokens);
        const cacheWrite = count(u.cacheWriteTokens);
        this.setTokens(undefined, { input: count(u.inputTokens) + cached + cacheWrite, output: count(u.outputTokens), cached, cacheWrite });
        return [this.usageEvent()];
      }
      default:
        // user (the prompt echoed), thinking.
        return [];
    }
  }

  protected judge(exit: ProcessExit): Verdict {
    const r = this.result;
    if (r && r.is_error !== true) {
      if (exit.code === 0 || exit.stopped === "linger") return { ok: true };
      return fail("crash", `cursor-agent reported success but then ended with ${this.exitText(exit)}${this.stderrHint()}`);
    }
    const err = [str(r?.result), this.stderr.text].filter(Boolean).join("\n");
    const why = r ? `cursor-agent: ${str(r.result) ?? "error"}` : `cursor-agent ended without a result (${this.exitText(exit)})${this.stderrHint()}`;
    if (/authentication required|cursor-agent login/i.test(err) || (AUTH_TEXT.test(err) && !RATE_LIMIT_TEXT.test(err))) {
      return fail("auth", `${why}: run 'cursor-agent login' on this worker, or give it CURSOR_API_KEY with access: api${this.authHint()}`);
    }
    if (RATE_LIMIT_TEXT.test(err)) {
      const retryAt = parseResetTime(err, this.now());
      return fail("rate_limit", why, retryAt !== undefined ? { retryAt } : {});
    }
    if (/model not found|model name is not valid|cannot use this model/i.test(err)) {
      return fail("invalid", `${why}: fix the model (agents.cursor.model or the task's); not retried`);
    }
    if (/unknown option|unexpected argument|invalid option/i.test(err)) return fail("invalid", `${why}: fix agents.cursor.args; not retried`);
    return fail("crash", why);
  }
}

/** The Cursor agent adapter. */
export const cursor: CliAdapter = {
  name: "cursor",
  bin: "cursor-agent",
  providers: ["cursor"],
  accessModes: ["subscription", "api"],
  install: "install the Cursor agent CLI (curl https://cursor.com/install -fsS | bash) and log in once (cursor-agent login)",
  // Resumed by id; where it keeps a chat is not documented: it resumes on the host that made it.
  session: {},
  buildCommand,
  parser: (ctx?: ParserContext) => new CursorParser(cursor, ctx),
};
