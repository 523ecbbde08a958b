/**
 * The Codex adapter against agent-cli-formats.md section 2 and its fake
 * (test/fixtures/fake-agents/codex.mjs).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADAPTERS, AgentConfigSchema } from "../../src/agents/index.js";
import { fakeCost, feed, ofType, parse, record, runAgent, sandbox } from "./helpers.js";

const codex = ADAPTERS.codex;
let box: Awaited<ReturnType<typeof sandbox>>;
beforeAll(async () => {
  box = await sandbox();
});
afterAll(async () => {
  await box.cleanup();
});
const rec = (scenario: Parameters<typeof record>[1]["scenario"], extra: Partial<Parameters<typeof record>[1]> = {}) =>
  record(codex, { cwd: box.repo, home: box.home, scenario, options: { model: "gpt-5-codex" }, ...extra });
const GPT5 = { input: 1.25, cachedInput: 0.125, output: 10 };

describe("codex - command line and environment", () => {
  it("codex - exec --json in a writable sandbox, the shared git dir writable, options before `resume`, the prompt after --", () => {
    const spec = codex.buildCommand({ prompt: "-do it", gitCommonDir: "/repo/.git", options: { model: "gpt-5-codex", args: ["-c", "model_reasoning_effort=high"] }, resume: "0199a213", inherited: {} });
    expect(spec.args).toEqual(["exec", "--json", "--sandbox", "workspace-write", "--add-dir", "/repo/.git", "--model", "gpt-5-codex", "-c", "model_reasoning_effort=high", "resume", "0199a213", "--", "-do it"]);
    expect(spec.stdin).toBe("close");
    expect(codex.buildCommand({ prompt: "x", inherited: {}, options: { maxTurns: 3 } }).warnings[0]).toMatch(/maxTurns is ignored/);
  });

  it("codex - subscription access withholds OPENAI_API_KEY and CODEX_API_KEY; api access passes them and withholds Anthropic's", () => {
    const inherited = { OPENAI_API_KEY: "sk", CODEX_API_KEY: "ck", ANTHROPIC_API_KEY: "ak" };
    expect(codex.buildCommand({ prompt: "x", inherited }).unset).toEqual(["ANTHROPIC_API_KEY", "CODEX_API_KEY", "OPENAI_API_KEY"]);
    expect(codex.buildCommand({ prompt: "x", inherited, options: { access: "api" } }).unset).toEqual(["ANTHROPIC_API_KEY"]);
  });
});

describe("codex - stream", () => {
  it("codex - the fake's run becomes tool events, the final message and usage; cost from the price table; `Reconnecting...` is not fatal", async () => {
    const { events, outcome } = parse(codex, await rec({ tools: 3 }), { model: "gpt-5-codex" });
    expect(outcome.ok).toBe(true);
    expect(outcome.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    const tools = ofType(events, "agent.tool");
    expect(tools.map((t) => `${t.phase} ${t.tool} ${t.summary} ${t.ok ?? ""}`)).toEqual([
      "started shell bash -lc 'ls -1' ",
      "completed shell bash -lc 'ls -1' true",
      "completed edit add fake-codex-2.txt true",
      "completed edit add fake-codex-3.txt true",
    ]);
    expect(ofType(events, "agent.message").map((m) => m.text)).toEqual(["Done after 3 tool calls."]);
    const usage = ofType(events, "agent.usage");
    expect(usage).toHaveLength(1);
    expect(usage[0]).toMatchObject({ model: "gpt-5-codex", inputTokens: 15_000, cachedTokens: 9_500, outputTokens: 450, costSource: "price_table" });
    expect(outcome.costUsd).toBeCloseTo(fakeCost(3, GPT5), 10);
    expect(outcome.summary).toBe("Done after 3 tool calls.");
  });

  it("codex - without a known model the cost is unknown, never guessed", async () => {
    const { outcome } = parse(codex, await rec({ tools: 1 }, { options: {} }));
    expect(outcome).toMatchObject({ ok: true, costUsd: 0, costSource: "unknown" });
  });

  it("codex - garbage lines become raw messages; the run succeeds", async () => {
    const { events, outcome } = parse(codex, await rec({ scenario: "garbage" }), { model: "gpt-5-codex" });
    expect(outcome.ok).toBe(true);
    expect(ofType(events, "agent.message").filter((m) => m.raw).length).toBeGreaterThanOrEqual(3);
  });

  it("codex - the spec's usage-limit turn.failed is a rate limit until the time it names", () => {
    const now = Date.UTC(2026, 7, 21, 12, 0);
    const line = '{"type":"turn.failed","error":{"message":"You\'ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at Sep 19th, 2026 7:10 AM."}}';
    const { outcome } = feed(codex, ['{"type":"thread.started","thread_id":"t-1"}', line], { code: 1 }, { ctx: { now: () => now } });
    expect(outcome.failure?.kind).toBe("rate_limit");
    const at = new Date(outcome.failure!.retryAt!);
    expect([at.getFullYear(), at.getMonth(), at.getDate(), at.getHours(), at.getMinutes()]).toEqual([2026, 8, 19, 7, 10]);
    expect(outcome.sessionId).toBe("t-1");
  });
});

describe("codex - failure classes", () => {
  it("codex - auth (401): not retried, says how to log in", async () => {
    const { outcome } = parse(codex, await rec({ scenario: "auth" }));
    expect(outcome.failure).toMatchObject({ kind: "auth", retryable: false, exitCode: 1 });
    expect(outcome.failure!.message).toMatch(/401 Unauthorized.*codex login/);
  });

  it("codex - rate limit (429 after retries) and usage limit with its reset time", async () => {
    const rl = parse(codex, await rec({ scenario: "rate_limit" }));
    expect(rl.outcome.failure).toMatchObject({ kind: "rate_limit", retryable: true });
    const resetAt = Math.floor(Date.now() / 1000) + 2 * 3600;
    const ul = parse(codex, await rec({ scenario: "usage_limit", resetAt }));
    expect(ul.outcome.failure?.kind).toBe("rate_limit");
    // The CLI names the minute; the reset is that minute, in this host's zone.
    expect(ul.outcome.failure!.retryAt!).toBeGreaterThan(resetAt * 1000 - 60_000);
    expect(ul.outcome.failure!.retryAt!).toBeLessThanOrEqual(resetAt * 1000);
  });

  it("codex - a crash mid-stream and a signal are retryable crashes", async () => {
    expect(parse(codex, await rec({ scenario: "crash" })).outcome.failure).toMatchObject({ kind: "crash", retryable: true, exitCode: 1 });
    expect(parse(codex, await rec({ scenario: "crash_signal" })).outcome.failure).toMatchObject({ kind: "crash", exitCode: null });
  });

  it("codex - outside a git repository it refuses to run: invalid, not retried", async () => {
    const { outcome } = parse(codex, await rec({}, { cwd: box.home }));
    expect(outcome.failure).toMatchObject({ kind: "invalid", retryable: false });
    expect(outcome.failure!.message).toMatch(/trusted directory/);
  });

  it("codex - without --json the output is unreadable, and the run is not taken for a success", async () => {
    const noJson: typeof codex = {
      ...codex,
      buildCommand: (input) => {
        const spec = codex.buildCommand(input);
        return { ...spec, args: spec.args.filter((a) => a !== "--json") };
      },
    };
    const { outcome } = parse(codex, await record(noJson, { cwd: box.repo, home: box.home }));
    expect(outcome.failure?.kind).toBe("crash");
  });

  it("codex - resume: the thread goes on; an unknown thread fails and drops the session", async () => {
    const first = parse(codex, await rec({ tools: 1 }));
    const id = first.outcome.sessionId!;
    const again = parse(codex, await rec({ tools: 1 }, { resume: id }));
    expect(again.outcome).toMatchObject({ ok: true, sessionId: id });
    const lost = parse(codex, await rec({}, { resume: "nope" }));
    expect(lost.outcome.failure).toMatchObject({ kind: "crash" });
    expect(lost.outcome.failure!.message).toMatch(/No saved session found/);
    expect(lost.outcome.sessionId).toBeUndefined();
  });
});

describe("codex - end to end through the process runner", () => {
  it("codex - in a linked worktree: the shared git dir is made writable, files are edited, cost comes from the price table", async () => {
    const wt = join(box.home, "wt-codex");
    execFileSync("git", ["worktree", "add", "-q", "-b", "codex-task", wt], { cwd: box.repo });
    const recordFile = join(box.home, "codex-args.json");
    const r = await runAgent(codex, { cwd: wt, home: box.home, scenario: { tools: 2 }, config: AgentConfigSchema.parse({ model: "gpt-5-codex" }), env: { FAKE_AGENT_RECORD: recordFile } });
    expect(r.outcome).toMatchObject({ ok: true, costSource: "price_table" });
    expect(r.outcome.costUsd).toBeCloseTo(fakeCost(2, GPT5), 10);
    expect(existsSync(join(wt, "fake-codex-2.txt"))).toBe(true);
    const { argv } = JSON.parse(readFileSync(recordFile, "utf8")) as { argv: string[] };
    expect(realpathSync(argv[argv.indexOf("--add-dir") + 1]!)).toBe(realpathSync(join(box.repo, ".git")));
  });
});
