/**
 * The Claude Code adapter against agent-cli-formats.md section 1 and its fake
 * (test/fixtures/fake-agents/claude.mjs): command line, environment, stream, failure
 * classes, cost, sessions; end to end through CliAgent and the real process runner.
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADAPTERS, AgentCommandError, AgentConfigSchema } from "../../src/agents/index.js";
import { fakeCost, feed, ofType, parse, record, runAgent, sandbox } from "./helpers.js";

const claude = ADAPTERS.claude;
let box: Awaited<ReturnType<typeof sandbox>>;
beforeAll(async () => {
  box = await sandbox();
});
afterAll(async () => {
  await box.cleanup();
});
const rec = (scenario: Parameters<typeof record>[1]["scenario"], extra: Partial<Parameters<typeof record>[1]> = {}) =>
  record(claude, { cwd: box.repo, home: box.home, scenario, ...extra });

describe("claude - command line and environment", () => {
  it("claude - print mode, stream-json with --verbose, permissions bypassed, settings, and the prompt after --", () => {
    const spec = claude.buildCommand({
      prompt: "-fix it",
      config: AgentConfigSchema.parse({ model: "opus", args: ["--add-dir", "/shared"] }),
      options: { model: "sonnet", maxTurns: 12, maxBudgetUsd: 2.5, args: ["--append-system-prompt", "be brief"] },
      resume: "8f2c1e4a",
      inherited: {},
    });
    expect(spec.bin).toBe("claude");
    expect(spec.args).toEqual([
      "-p",
      "--output-format",
      "stream-json",
      "--verbose",
      "--permission-mode",
      "bypassPermissions",
      "--model",
      "sonnet",
      "--max-turns",
      "12",
      "--max-budget-usd",
      "2.5",
      "--resume",
      "8f2c1e4a",
      "--add-dir",
      "/shared",
      "--append-system-prompt",
      "be brief",
      "--",
      "-fix it",
    ]);
    expect(spec.stdin).toBe("close");
    expect(spec.model).toBe("sonnet");
  });

  it("claude - subscription access withholds API keys (its own and other providers') and CLAUDECODE; api access passes the key", () => {
    const inherited = { ANTHROPIC_API_KEY: "sk-ant", OPENAI_API_KEY: "sk-oai", CLAUDE_CODE_OAUTH_TOKEN: "oauth", CLAUDECODE: "1", PATH: "/bin" };
    const sub = claude.buildCommand({ prompt: "x", inherited, env: { ADO_TASK_ID: "t1" } });
    expect(sub.access).toBe("subscription");
    expect(sub.unset).toEqual(["ANTHROPIC_API_KEY", "CLAUDECODE", "OPENAI_API_KEY"]);
    expect(sub.withheld).toEqual(["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]);
    expect(sub.env).toEqual({ ADO_TASK_ID: "t1" });

    const api = claude.buildCommand({ prompt: "x", inherited, options: { access: "api" } });
    expect(api.unset).toEqual(["CLAUDECODE", "CLAUDE_CODE_OAUTH_TOKEN", "OPENAI_API_KEY"]);
  });

  it("claude - a credential in agents.claude.env that its access mode does not use is refused, with what to do", () => {
    expect(() => claude.buildCommand({ prompt: "x", inherited: {}, config: AgentConfigSchema.parse({ env: { ANTHROPIC_API_KEY: "sk" } }) })).toThrow(AgentCommandError);
    expect(() => claude.buildCommand({ prompt: "x", inherited: {}, config: AgentConfigSchema.parse({ env: { ANTHROPIC_API_KEY: "sk" } }) })).toThrow(/access: api/);
    expect(() => claude.buildCommand({ prompt: "x", inherited: {}, options: { access: "local" } })).toThrow(/supports subscription, api/);
  });
});

describe("claude - stream", () => {
  it("claude - the fake's run becomes messages, tool started/completed pairs and usage; the cost is the reported one", async () => {
    const r = await rec({ tools: 3 });
    const { events, outcome } = parse(claude, r);
    expect(outcome.ok).toBe(true);
    expect(outcome.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(ofType(events, "agent.message").map((e) => e.text)).toEqual(["Step 1.", "Step 2.", "Step 3.", "Done after 3 tool calls."]);
    const tools = ofType(events, "agent.tool");
    expect(tools.map((t) => `${t.phase} ${t.tool} ${t.ok ?? ""}`)).toEqual(["started Bash ", "completed Bash true", "started Write ", "completed Write true", "started Write ", "completed Write true"]);
    expect(tools[0]!.summary).toBe("ls -1");
    expect(tools[2]!.summary).toBe(join(box.repo, "fake-claude-2.txt"));
    expect(tools[1]!.callId).toBe(tools[0]!.callId);
    const usage = ofType(events, "agent.usage");
    // An estimate per assistant message (price table), then the result's own figure.
    expect(usage.slice(0, -1).every((u) => u.costSource === "price_table")).toBe(true);
    const last = usage.at(-1)!;
    const expected = fakeCost(3, { input: 3, cachedInput: 0.3, output: 15 });
    expect(last).toMatchObject({ costSource: "reported", inputTokens: 15_000, cachedTokens: 9_500, outputTokens: 450 });
    expect(last.costUsd).toBeCloseTo(expected, 10);
    expect(outcome.costUsd).toBeCloseTo(expected, 10);
    expect(outcome.summary).toBe("Done after 3 tool calls.");
  });

  it("claude - cost falls back to the sum of modelUsage[*].costUSD when total_cost_usd is absent", () => {
    const line = JSON.stringify({
      type: "result",
      subtype: "success",
      is_error: false,
      session_id: "s",
      result: "ok",
      modelUsage: { "claude-sonnet-4-5": { inputTokens: 10, outputTokens: 5, costUSD: 0.125 }, "claude-haiku-4-5": { inputTokens: 3, outputTokens: 1, costUSD: 0.0625 } },
    });
    const { outcome } = feed(claude, [line], { code: 0 });
    expect(outcome).toMatchObject({ ok: true, costUsd: 0.1875, costSource: "reported", tokens: { input: 13, output: 6 } });
  });

  it("claude - an init that says it bills an API key under subscription access is reported", () => {
    const init = '{"type":"system","subtype":"init","session_id":"s","model":"claude-sonnet-4-5","apiKeySource":"ANTHROPIC_API_KEY"}';
    expect(ofType(feed(claude, [init], { code: 0 }, { ctx: { access: "subscription" } }).events, "agent.message")[0]!.text).toMatch(/bills an API key/);
    expect(feed(claude, [init], { code: 0 }, { ctx: { access: "api" } }).events).toEqual([]);
  });

  it("claude - garbage lines between JSON lines become raw messages and the run still succeeds", async () => {
    const { events, outcome } = parse(claude, await rec({ scenario: "garbage", tools: 2 }));
    expect(outcome.ok).toBe(true);
    const raw = ofType(events, "agent.message").filter((m) => m.raw);
    expect(raw.map((m) => m.text)).toContain("garbage: this is not json {");
    expect(raw.map((m) => m.text)).toContain("[1,2,3]");
    expect(ofType(events, "agent.tool")).toHaveLength(4);
  });

  it("claude - a result with is_error true is a failure whatever its subtype (the usage-limit line of the spec)", () => {
    const line = '{"type":"result","subtype":"success","is_error":true,"duration_ms":393,"duration_api_ms":0,"num_turns":1,"result":"Claude AI usage limit reached|1755806400","session_id":"71b47827-9527-47f3-8614-34249f877747","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0}}';
    const { outcome } = feed(claude, [line], { code: 1 });
    expect(outcome.ok).toBe(false);
    expect(outcome.failure).toMatchObject({ kind: "rate_limit", retryable: true, retryAt: 1755806400_000 });
    expect(outcome.sessionId).toBe("71b47827-9527-47f3-8614-34249f877747");
  });
});

describe("claude - failure classes", () => {
  it("claude - auth: not retried, says how to log in, and names the key ado withheld", async () => {
    const { outcome } = parse(claude, await rec({ scenario: "auth" }), { withheld: ["ANTHROPIC_API_KEY"], access: "subscription" });
    expect(outcome.failure).toMatchObject({ kind: "auth", retryable: false, exitCode: 1 });
    expect(outcome.failure!.message).toMatch(/Invalid API key/);
    expect(outcome.failure!.message).toMatch(/\/login/);
    expect(outcome.failure!.message).toMatch(/withheld ANTHROPIC_API_KEY.*access: api/);
  });

  it("claude - rate limit: a rejected rate_limit_event gives the reset time; the event says rejected", async () => {
    const resetAt = 1_900_000_000;
    const { events, outcome } = parse(claude, await rec({ scenario: "rate_limit", resetAt }));
    expect(outcome.failure).toMatchObject({ kind: "rate_limit", retryable: true, retryAt: resetAt * 1000 });
    expect(ofType(events, "agent.rate_limit")[0]).toMatchObject({ status: "rejected", resetAt: new Date(resetAt * 1000).toISOString(), limitType: "five_hour", utilization: 1 });
  });

  it("claude - usage limit (the old `…|<epoch>` text) is a rate limit until that time", async () => {
    const { outcome } = parse(claude, await rec({ scenario: "usage_limit", resetAt: 1_800_000_000 }));
    expect(outcome.failure).toMatchObject({ kind: "rate_limit", retryAt: 1_800_000_000_000 });
  });

  it("claude - max turns and budget: failed, not retried, resumable (the session id is kept)", async () => {
    const turns = parse(claude, await rec({ scenario: "max_turns", tools: 2 }));
    expect(turns.outcome.failure).toMatchObject({ kind: "max_turns", retryable: false });
    expect(turns.outcome.sessionId).toBeTruthy();
    const budget = parse(claude, await rec({ scenario: "budget", tools: 1 }));
    expect(budget.outcome.failure).toMatchObject({ kind: "budget", retryable: false });
    expect(budget.outcome.sessionId).toBeTruthy();
    expect(budget.outcome.costUsd).toBeGreaterThan(0);
  });

  it("claude - --max-turns is honoured by the fake and ends in max_turns", async () => {
    const { outcome } = parse(claude, await rec({ tools: 5 }, { options: { maxTurns: 2 } }));
    expect(outcome.failure).toMatchObject({ kind: "max_turns" });
  });

  it("claude - an API error (500) is a retryable crash; a crash mid-stream (cut line, exit 1) and a signal too", async () => {
    const api = parse(claude, await rec({ scenario: "api_error" }));
    expect(api.outcome.failure).toMatchObject({ kind: "crash", retryable: true });
    expect(api.outcome.failure!.message).toMatch(/API Error: 500/);
    const crash = parse(claude, await rec({ scenario: "crash" }));
    expect(crash.outcome.failure).toMatchObject({ kind: "crash", retryable: true, exitCode: 1 });
    expect(crash.outcome.failure!.message).toMatch(/without a result/);
    // The cut-off last line is kept as raw text, not a crash of the parser.
    expect(ofType(crash.events, "agent.message").at(-1)).toMatchObject({ raw: true });
    const killed = parse(claude, await rec({ scenario: "crash_signal" }));
    expect(killed.outcome.failure).toMatchObject({ kind: "crash", exitCode: null });
    expect(killed.outcome.failure!.message).toMatch(/SIGKILL/);
  });

  it("claude - a command line the CLI refuses (stream-json without --verbose) is invalid, not retried", async () => {
    const { outcome } = feed(claude, [], { code: 1 }, { stderr: ["Error: When using --print, --output-format=stream-json requires --verbose"] });
    expect(outcome.failure).toMatchObject({ kind: "invalid", retryable: false });
    const nested = feed(claude, [], { code: 1 }, { stderr: ["Error: Claude Code cannot be launched inside another Claude Code session."] });
    expect(nested.outcome.failure).toMatchObject({ kind: "invalid" });
    expect(nested.outcome.failure!.message).toMatch(/CLAUDECODE/);
  });

  it("claude - resume: the same session goes on; an unknown id fails and drops the session", async () => {
    const first = parse(claude, await rec({ tools: 1 }));
    const id = first.outcome.sessionId!;
    const again = parse(claude, await rec({ tools: 1 }, { resume: id }), { resume: id });
    expect(again.outcome).toMatchObject({ ok: true, sessionId: id });
    // Where Claude Code keeps it: ~/.claude/projects/<cwd with every other character as '-'>/<id>.jsonl.
    const transcript = join(box.home, ".claude", "projects", realpathSync(box.repo).replace(/[^A-Za-z0-9]/g, "-"), `${id}.jsonl`);
    const turns = readFileSync(transcript, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { type: string }).filter((l) => l.type === "user");
    expect(turns).toHaveLength(2);
    const lost = parse(claude, await rec({}, { resume: "00000000-dead-beef-0000-000000000000" }), { resume: "00000000-dead-beef-0000-000000000000" });
    expect(lost.outcome.failure).toMatchObject({ kind: "crash", retryable: true });
    expect(lost.outcome.failure!.message).toMatch(/No conversation found/);
    expect(lost.outcome.sessionId).toBeUndefined();
  });
});

describe("claude - end to end through the process runner", () => {
  it("claude - runs in the repository, edits files, numbers its events, and reports session and cost", async () => {
    const r = await runAgent(claude, { cwd: box.repo, home: box.home, scenario: { tools: 2 } });
    expect(r.outcome).toMatchObject({ ok: true, costSource: "reported" });
    expect(r.outcome.costUsd).toBeCloseTo(fakeCost(2, { input: 3, cachedInput: 0.3, output: 15 }), 10);
    expect(existsSync(join(box.repo, "fake-claude-2.txt"))).toBe(true);
    expect(r.events.map((e) => e.seq)).toEqual(r.events.map((_, i) => i));
    // The raw output stays available (task.output) alongside the events.
    expect(r.output.stdout).toContain('"type":"result"');
  });

  it("claude - the child never sees ANTHROPIC_API_KEY or CLAUDECODE of the worker under subscription access; with api access it gets the key", async () => {
    const saved = { key: process.env.ANTHROPIC_API_KEY, nested: process.env.CLAUDECODE };
    process.env.ANTHROPIC_API_KEY = "sk-ant-worker";
    process.env.CLAUDECODE = "1";
    try {
      const recordFile = join(box.home, "claude-env.json");
      const sub = await runAgent(claude, { cwd: box.repo, home: box.home, env: { FAKE_AGENT_RECORD: recordFile } });
      expect(sub.outcome.ok).toBe(true);
      const seen = JSON.parse(readFileSync(recordFile, "utf8")) as { env: Record<string, string>; argv: string[] };
      expect(seen.env.ANTHROPIC_API_KEY).toBeUndefined();
      expect(seen.env.CLAUDECODE).toBeUndefined();
      expect(seen.argv).toContain("--verbose");

      const api = await runAgent(claude, { cwd: box.repo, home: box.home, env: { FAKE_AGENT_RECORD: recordFile }, options: { access: "api" } });
      expect(api.outcome.ok).toBe(true);
      const seenApi = JSON.parse(readFileSync(recordFile, "utf8")) as { env: Record<string, string> };
      expect(seenApi.env.ANTHROPIC_API_KEY).toBe("sk-ant-worker");
      expect(seenApi.env.CLAUDECODE).toBeUndefined();
    } finally {
      if (saved.key === undefined) delete process.env.ANTHROPIC_API_KEY;
      else process.env.ANTHROPIC_API_KEY = saved.key;
      if (saved.nested === undefined) delete process.env.CLAUDECODE;
      else process.env.CLAUDECODE = saved.nested;
    }
  });

  it("claude - a binary that is not installed is agent_missing, not retried, with how to install it", async () => {
    const r = await runAgent(claude, { cwd: box.repo, home: box.home, config: AgentConfigSchema.parse({ bin: "claude-not-installed-here" }) });
    expect(r.outcome.failure).toMatchObject({ kind: "agent_missing", retryable: false });
    expect(r.outcome.failure!.message).toMatch(/claude-not-installed-here.*npm install -g @anthropic-ai\/claude-code/);
  });
});
