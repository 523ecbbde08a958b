/**
 * OpenAI Codex (`codex exec --json`). Runs in the worktree with `--sandbox
 * workspace-write` (exec mode never asks for approval); a linked worktree's shared git
 * directory is added as a writable root, or the agent's own git commands fail in the
 * sandbox. Stdin is closed: the newest versions read it to EOF even with a prompt.
 * `turn.completed` ends a good run and carries the thread's cumulative tokens (no cost:
 * the price table gives it); `turn.failed` or a fatal `error` ends a bad one;
 * `Reconnecting... n/m` errors are transient.
 */
import { AUTH_TEXT, parseResetTime, RATE_LIMIT_TEXT } from "./classify.js";
import { BaseParser, commonCommand, fail, rawLine, type CliAdapter, type CommandInput, type CommandSpec, type ParserContext, type ProcessExit, type Verdict } from "./adapter.js";
import { type AgentEvent, messageEvent, toolEvent } from "./events.js";
import { arr, count, type Json, obj, parseJsonLine, str } from "./stream.js";
import { codexSessionLayout } from "./sessions.js";
import { homedir } from "node:os";
import { join } from "node:path";

function buildCommand(input: CommandInput): CommandSpec {
  const { base, extraArgs, maxTurns } = commonCommand(codex, input);
  const args = ["exec", "--json", "--sandbox", "workspace-write"];
  if (input.gitCommonDir) args.push("--add-dir", input.gitCommonDir);
  if (base.model) args.push("--model", base.model);
  args.push(...extraArgs);
  // Options go before `resume`; `--` ends them, so a prompt starting with `-` stays the prompt.
  if (input.resume) args.push("resume", input.resume);
  args.push("--", input.prompt);
  const warnings = maxTurns ? ["codex exec has no turn limit: maxTurns is ignored"] : [];
  return { ...base, args, stdin: "close", warnings };
}

const RECONNECTING = /^Reconnecting\.\.\.\s*\d+\s*\/\s*\d+/i;

class CodexParser extends BaseParser {
  private completed = false;
  private failed: string | undefined;
  private fatal: string | undefined;

  protected onLine(line: string): AgentEvent[] {
    const j = parseJsonLine(line);
    if (!j) return rawLine(line);
    switch (str(j.type)) {
      case "thread.started":
        this.session(j.thread_id);
        return [];
      case "item.started":
        return this.onItem(obj(j.item) ?? {}, "started");
      case "item.completed":
        return this.onItem(obj(j.item) ?? {}, "completed");
      case "turn.completed": {
        this.completed = true;
        this.terminal = true;
        const u = obj(j.usage);
        // The thread's running total, not the turn's: set, not added.
        this.setTokens(undefined, { input: count(u?.input_tokens), output: count(u?.output_tokens), cached: count(u?.cached_input_tokens), cacheWrite: 0 });
        return [this.usageEvent()];
      }
      case "turn.failed":
        this.terminal = true;
        this.failed = str(obj(j.error)?.message) ?? "turn failed";
        return [];
      case "error": {
        const message = str(j.message) ?? "";
        if (!RECONNECTING.test(message)) this.fatal = message;
        return [];
      }
      default:
        // turn.started, item.updated (todo lists), newer event types.
        return [];
    }
  }

  private onItem(item: Json, phase: "started" | "completed"): AgentEvent[] {
    const id = str(item.id);
    const callId = id ? { callId: id } : {};
    switch (str(item.type)) {
      case "agent_message":
        return phase === "completed" && str(item.text) ? [messageEvent(item.text as string)] : [];
      case "command_execution": {
        const command = str(item.command) ?? "";
        if (phase === "started") return [toolEvent("started", "shell", command, callId)];
        return [toolEvent("completed", "shell", command, { ...callId, ok: item.status === "completed" && (item.exit_code === 0 || item.exit_code === undefined) })];
      }
      case "file_change": {
        const paths = arr(item.changes).map((c) => `${str(obj(c)?.kind) ?? "update"} ${str(obj(c)?.path) ?? "?"}`);
        return [toolEvent(phase, "edit", paths.join(", "), phase === "completed" ? { ...callId, ok: item.status !== "failed" } : callId)];
      }
      case "mcp_tool_call": {
        const name = `${str(item.server) ?? "mcp"}.${str(item.tool) ?? "tool"}`;
        const args = item.arguments === undefined ? "" : JSON.stringify(item.arguments);
        return [toolEvent(phase, name, args, phase === "completed" ? { ...callId, ok: !item.error && item.status !== "failed" } : callId)];
      }
      case "web_search":
        return [toolEvent(phase, "web_search", str(item.query) ?? "", callId)];
      case "error":
        return phase === "completed" && str(item.message) ? [messageEvent(`warning: ${item.message as string}`)] : [];
      default:
        // reasoning, todo_list, plan, and item types of newer versions.
        return [];
    }
  }

  protected judge(exit: ProcessExit): Verdict {
    const error = this.failed ?? this.fatal;
    if (error) return this.classify(`codex: ${error}`);
    if (this.completed) {
      if (exit.code === 0 || exit.stopped === "linger") return { ok: true };
      return fail("crash", `codex completed its turn but ended with ${this.exitText(exit)}${this.stderrHint()}`);
    }
    const err = this.stderr.text;
    const why = `codex ended without completing its turn (${this.exitText(exit)})${this.stderrHint()}`;
    if (/not inside a trusted directory|unexpected argument|invalid value|Usage: codex/i.test(err)) {
      return fail("invalid", `codex refused its command line or directory${this.stderrHint()}: the task needs a git worktree, and agents.codex.args must be valid; not retried`);
    }
    if (/no saved session found/i.test(err)) return fail("crash", `${why}; the next attempt starts a new session`, { sessionLost: true });
    if (AUTH_TEXT.test(err) || RATE_LIMIT_TEXT.test(err)) return this.classify(why + `\n${err}`);
    return fail("crash", why);
  }

  private classify(text: string): Verdict {
    if (RATE_LIMIT_TEXT.test(text)) {
      const retryAt = parseResetTime(text, this.now());
      return fail("rate_limit", text, retryAt !== undefined ? { retryAt } : {});
    }
    if (AUTH_TEXT.test(text)) return fail("auth", `${text}: log in on this worker (codex login), or give it CODEX_API_KEY with access: api${this.authHint()}`);
    return fail("crash", text);
  }
}

/** The Codex adapter. */
export const codex: CliAdapter = {
  name: "codex",
  bin: "codex",
  providers: ["openai"],
  accessModes: ["subscription", "api"],
  install: "install Codex (npm install -g @openai/codex) and log in once (codex login)",
  session: { layout: codexSessionLayout },
  loginFiles: (env) => [join(env.CODEX_HOME || join(env.HOME || homedir(), ".codex"), "auth.json")],
  buildCommand,
  parser: (ctx?: ParserContext) => new CodexParser(codex, ctx),
};
