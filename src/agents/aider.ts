/**
 * aider (`aider --message=… --yes-always`). Plain text, no session id. Text lines are
 * gathered into messages; `Applied edit to <path>` is an edit, `Tokens: … Cost: $x
 * message, $y session.` the usage (the session figure is the process's running total).
 * aider exits 0 after an auth or rate-limit failure, so those are read from its text.
 * ado owns the commits (aider's own are off) and aider's history files go to the
 * worktree's `.ado/` directory, which is never committed.
 */
import { join } from "node:path";
import { WORKTREE_ADO_DIR } from "../runtime/names.js";
import { parseResetTime } from "./classify.js";
import { BaseParser, commonCommand, fail, type CliAdapter, type CommandInput, type CommandSpec, type ParserContext, type ProcessExit, type Verdict } from "./adapter.js";
import { type AgentEvent, type AgentEventOf, toolEvent } from "./events.js";
import { type FailureKind } from "./classify.js";

function buildCommand(input: CommandInput): CommandSpec {
  const { base, extraArgs, maxTurns } = commonCommand(aider, input);
  const args = [
    "--yes-always",
    "--no-auto-commits",
    "--no-dirty-commits",
    // aider would otherwise add `.aider*` to the task's .gitignore, a change ado would commit.
    "--no-gitignore",
    "--no-pretty",
    "--no-stream",
    "--no-check-update",
    "--no-show-release-notes",
  ];
  if (input.cwd) {
    args.push("--chat-history-file", join(input.cwd, WORKTREE_ADO_DIR, "aider.chat.history.md"));
    args.push("--input-history-file", join(input.cwd, WORKTREE_ADO_DIR, "aider.input.history"));
  }
  if (base.model) args.push("--model", base.model);
  // The `=` form: a prompt starting with `-` is not taken for a flag.
  args.push(...extraArgs, `--message=${input.prompt}`);
  const warnings = [
    ...(maxTurns ? ["aider has no turn limit: maxTurns is ignored"] : []),
    ...(input.resume ? ["aider has no sessions: resume is ignored"] : []),
  ];
  return { ...base, args, stdin: "close", warnings };
}

/** `4.2k` -> 4200, `318` -> 318 (aider's format_tokens). */
function tokens(v: string | undefined): number {
  if (!v) return 0;
  const m = /^([\d.]+)\s*([kKmM]?)$/.exec(v.trim());
  if (!m) return 0;
  const n = Number(m[1]);
  const scale = m[2]?.toLowerCase() === "k" ? 1_000 : m[2]?.toLowerCase() === "m" ? 1_000_000 : 1;
  return Number.isFinite(n) ? Math.round(n * scale) : 0;
}

const BANNER = /^(Aider v\d|Main model:|Weak model:|Editor model:|Model:|Git repo:|Repo-map:|Use \/help|Added .* to the chat|Warning: .* expects these environment variables|Cur working dir:|Note: in-chat)/;

/** aider's failure lines, and what each means (aider/exceptions.py, base_coder.send_message). */
const FAILURES: [RegExp, FailureKind][] = [
  [/litellm\.AuthenticationError|not able to authenticate you|check your api key/i, "auth"],
  [/Insufficient credits|add credits/i, "auth"],
  [/litellm\.RateLimitError|has rate limited you/i, "rate_limit"],
  [/servers are down or overloaded|litellm\.(ServiceUnavailableError|InternalServerError|APIConnectionError)/i, "crash"],
  [/Only \d+ reflections allowed, stopping/i, "max_turns"],
  [/Message file not found|Unable to read git repository/i, "invalid"],
];

class AiderParser extends BaseParser {
  /** The failure the text last showed, cleared when a later reply came through. */
  private failure: { kind: FailureKind; line: string } | undefined;
  private missingKeys: string[] = [];
  private sawTokens = false;
  private readonly lastLines: string[] = [];

  protected onLine(line: string): AgentEvent[] {
    this.lastLines.push(line);
    if (this.lastLines.length > 5) this.lastLines.shift();
    const model = /^Main model:\s*(\S+)/.exec(line);
    if (model) this.model = model[1];
    const missing = /^-\s*([A-Z][A-Z0-9_]+):\s*Not set/.exec(line);
    if (missing) this.missingKeys.push(missing[1]!);
    if (BANNER.test(line) || missing) return this.flushText("\n");
    const events = this.judgeLine(line, true);
    return events ?? (this.text(line), []);
  }

  protected override onStderr(line: string): AgentEvent[] {
    return this.judgeLine(line, false) ?? [];
  }

  /** Events of a line aider means as status (an edit, tokens, a failure); undefined for plain text. */
  private judgeLine(line: string, stdout: boolean): AgentEvent[] | undefined {
    const edit = /^Applied edit to (.+)$/.exec(line);
    if (edit) return [...this.flushText("\n"), toolEvent("completed", "edit", edit[1]!, { ok: true })];
    const dry = /^Did not apply edit to (.+?)(?: \(--dry-run\))?$/.exec(line);
    if (dry) return [...this.flushText("\n"), toolEvent("completed", "edit", dry[1]!, { ok: false })];
    const commit = /^Commit ([0-9a-f]{7,40}) (.*)$/.exec(line);
    if (commit) return [...this.flushText("\n"), toolEvent("completed", "git commit", `${commit[1]} ${commit[2]}`, { ok: true })];
    if (/^Tokens:/.test(line) || /^Cost:\s*\$/.test(line)) return [...this.flushText("\n"), ...this.onTokens(line)];
    const retry = /Retrying in ([\d.]+) seconds/.exec(line);
    if (retry && this.failure?.kind === "rate_limit") {
      return [...this.flushText("\n"), rateLimit("retrying", this.failure.line, Math.round(Number(retry[1]) * 1000))];
    }
    for (const [re, kind] of FAILURES) {
      if (!re.test(line)) continue;
      this.failure = { kind, line: line.trim() };
      const events = stdout ? [...this.flushText("\n")] : [];
      // The line stays in the text gathered (it is what aider said); the event marks the limit.
      if (stdout) this.text(line);
      if (kind === "rate_limit") events.push(rateLimit("rejected", line.trim()));
      return events;
    }
    return undefined;
  }

  private onTokens(line: string): AgentEvent[] {
    const t = /Tokens:\s*([\d.]+[kKmM]?) sent(?:,\s*([\d.]+[kKmM]?) cache write)?(?:,\s*([\d.]+[kKmM]?) cache hit)?,\s*([\d.]+[kKmM]?) received/.exec(line);
    if (t) {
      this.sawTokens = true;
      // A reply came through: an earlier retried failure did not end the run.
      this.failure = undefined;
      const cacheWrite = tokens(t[2]);
      const cached = tokens(t[3]);
      // `sent` is the prompt; the cache counts are parts of it (never fewer than their sum).
      this.addTokens(undefined, { input: Math.max(tokens(t[1]), cached + cacheWrite), output: tokens(t[4]), cached, cacheWrite });
    }
    const cost = /Cost:\s*\$([\d.]+) message,\s*\$([\d.]+) session/.exec(line);
    if (cost) this.reportedCost = Number(cost[2]);
    return t || cost ? [this.usageEvent()] : [];
  }

  protected judge(exit: ProcessExit): Verdict {
    const last = this.lastLines.filter((l) => l.trim()).pop()?.trim() ?? "";
    if (exit.code !== 0 && exit.stopped !== "linger") {
      if (this.failure?.kind === "invalid" || /unrecognized arguments|error: argument/i.test(this.stderr.text)) {
        return fail("invalid", `aider refused its command line or repository${this.stderrHint() || `: ${last}`}; not retried`);
      }
      return fail("crash", `aider ended with ${this.exitText(exit)}${this.stderrHint() || (last ? `: ${last}` : "")}`);
    }
    const f = this.failure;
    if (f?.kind === "auth") {
      const keys = this.missingKeys.length ? `; not set: ${this.missingKeys.join(", ")}` : "";
      return fail("auth", `aider: ${f.line}${keys}: give it the model's API key (agents.aider.env or the worker's environment)${this.authHint()}`);
    }
    if (f?.kind === "rate_limit") {
      const retryAt = parseResetTime(f.line, this.now());
      return fail("rate_limit", `aider: ${f.line}`, retryAt !== undefined ? { retryAt } : {});
    }
    if (f) return fail(f.kind, `aider: ${f.line}`);
    if (this.missingKeys.length && !this.sawTokens) {
      return fail("auth", `aider got no reply and its model's keys are not set (${this.missingKeys.join(", ")}): give them in agents.aider.env or the worker's environment${this.authHint()}`);
    }
    return { ok: true };
  }
}

function rateLimit(status: "rejected" | "retrying", message: string, retryInMs?: number): AgentEventOf<"agent.rate_limit"> {
  return { type: "agent.rate_limit", status, message, ...(retryInMs !== undefined ? { retryInMs } : {}) };
}

/** The aider adapter. */
export const aider: CliAdapter = {
  name: "aider",
  bin: "aider",
  providers: ["anthropic", "openai", "google", "other"],
  accessModes: ["api", "local"],
  install: "install aider (python -m pip install aider-install && aider-install)",
  buildCommand,
  parser: (ctx?: ParserContext) => new AiderParser(aider, ctx),
};
