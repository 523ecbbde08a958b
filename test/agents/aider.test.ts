/**
 * The aider adapter against agent-cli-formats.md section 5 and its fake
 * (test/fixtures/fake-agents/aider.mjs). aider exits 0 after its failures: every class
 * here comes from its text.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADAPTERS } from "../../src/agents/index.js";
import { feed, ofType, parse, record, runAgent, sandbox } from "./helpers.js";

const aider = ADAPTERS.aider;
let box: Awaited<ReturnType<typeof sandbox>>;
beforeAll(async () => {
  box = await sandbox();
});
afterAll(async () => {
  await box.cleanup();
});
const KEY = { OPENAI_API_KEY: "sk-test" };
const rec = (scenario: Parameters<typeof record>[1]["scenario"], extra: Partial<Parameters<typeof record>[1]> = {}) =>
  record(aider, { cwd: box.repo, home: box.home, scenario, env: KEY, ...extra });

describe("aider - command line and environment", () => {
  it("aider - yes-always, ado owns commits and .gitignore, history under .ado, the prompt in the `=` form", () => {
    const spec = aider.buildCommand({ prompt: "-x", cwd: "/w/t", options: { model: "gpt-4.1" }, inherited: {} });
    expect(spec.args).toEqual([
      "--yes-always",
      "--no-auto-commits",
      "--no-dirty-commits",
      "--no-gitignore",
      "--no-pretty",
      "--no-stream",
      "--no-check-update",
      "--no-show-release-notes",
      "--chat-history-file",
      "/w/t/.ado/aider.chat.history.md",
      "--input-history-file",
      "/w/t/.ado/aider.input.history",
      "--model",
      "gpt-4.1",
      "--message=-x",
    ]);
    expect(spec.access).toBe("api");
  });

  it("aider - api access passes model API keys but withholds subscription tokens and Cursor's key; local passes none", () => {
    const inherited = { OPENAI_API_KEY: "o", ANTHROPIC_API_KEY: "a", CLAUDE_CODE_OAUTH_TOKEN: "t", CURSOR_API_KEY: "c" };
    expect(aider.buildCommand({ prompt: "x", inherited }).unset).toEqual(["CLAUDE_CODE_OAUTH_TOKEN", "CURSOR_API_KEY"]);
    expect(aider.buildCommand({ prompt: "x", inherited, options: { access: "local" } }).unset).toEqual(["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "CURSOR_API_KEY", "OPENAI_API_KEY"]);
  });
});

describe("aider - stream", () => {
  it("aider - text becomes messages, `Applied edit` tool events, the Tokens/Cost lines usage with the session cost", async () => {
    const { events, outcome } = parse(aider, await rec({ tools: 3 }, { cwd: box.repo }));
    expect(outcome.ok).toBe(true);
    expect(outcome.sessionId).toBeUndefined();
    expect(ofType(events, "agent.tool").map((t) => `${t.tool} ${t.summary} ${t.ok}`)).toEqual(["edit fake-aider-2.txt true", "edit fake-aider-3.txt true"]);
    expect(ofType(events, "agent.message")[0]!.text).toContain("I'll make the change");
    const usage = ofType(events, "agent.usage").at(-1)!;
    // Tokens: 15k sent, 100 cache write, 9.5k cache hit, 450 received. Cost: $0.02 ... $0.02 session.
    expect(usage).toMatchObject({ model: "gpt-4.1", inputTokens: 15_000, cacheWriteTokens: 100, cachedTokens: 9_500, outputTokens: 450, costSource: "reported", costUsd: 0.02 });
    expect(outcome.costUsd).toBe(0.02);
    // ado's own flag: aider made no commit.
    expect(ofType(events, "agent.tool").some((t) => t.tool === "git commit")).toBe(false);
  });

  it("aider - the one-line form (Tokens and Cost together, k-rounded counts) is read too", () => {
    const { events, outcome } = feed(aider, ["Applied edit to src/range.py", "Tokens: 4.2k sent, 318 received. Cost: $0.0098 message, $0.0098 session."], { code: 0 });
    expect(ofType(events, "agent.usage")[0]).toMatchObject({ inputTokens: 4_200, outputTokens: 318, costUsd: 0.0098 });
    expect(outcome).toMatchObject({ ok: true, costUsd: 0.0098 });
  });

  it("aider - garbage lines are text (messages), never a crash", async () => {
    const { outcome } = parse(aider, await rec({ scenario: "garbage" }));
    expect(outcome.ok).toBe(true);
  });
});

describe("aider - failure classes (exit 0 all the same)", () => {
  it("aider - auth: not retried", async () => {
    const { outcome } = parse(aider, await rec({ scenario: "auth" }));
    expect(outcome.failure).toMatchObject({ kind: "auth", retryable: false, exitCode: 0 });
    expect(outcome.failure!.message).toMatch(/not able to authenticate/);
  });

  it("aider - a missing key: the warning names it, and the auth failure says which", async () => {
    // Empty, whatever the machine running the test has: aider counts it as not set.
    const { outcome } = parse(aider, await rec({}, { env: { OPENAI_API_KEY: "" } }));
    expect(outcome.failure).toMatchObject({ kind: "auth" });
    expect(outcome.failure!.message).toMatch(/OPENAI_API_KEY/);
  });

  it("aider - rate limited until it gives up: rate_limit, with its own retries as events", async () => {
    const { events, outcome } = parse(aider, await rec({ scenario: "rate_limit" }));
    expect(outcome.failure).toMatchObject({ kind: "rate_limit", retryable: true, exitCode: 0 });
    expect(ofType(events, "agent.rate_limit").filter((e) => e.status === "retrying").map((e) => e.retryInMs)).toEqual([125, 250, 500]);
  });

  it("aider - servers down is a retryable crash; reflections used up is max_turns; a crash is a crash", async () => {
    expect(parse(aider, await rec({ scenario: "api_error" })).outcome.failure).toMatchObject({ kind: "crash", retryable: true });
    expect(parse(aider, await rec({ scenario: "max_turns" })).outcome.failure).toMatchObject({ kind: "max_turns" });
    expect(parse(aider, await rec({ scenario: "crash" })).outcome.failure).toMatchObject({ kind: "crash", exitCode: 1 });
  });

  it("aider - a rate limit it recovered from (a reply came after) is no failure", () => {
    const { outcome } = feed(aider, ["litellm.RateLimitError: slow down", "The API provider has rate limited you. Try again later or check your quotas.", "Retrying in 0.125 seconds...", "Done.", "Tokens: 1.0k sent, 20 received."], { code: 0 });
    expect(outcome.ok).toBe(true);
  });

  it("aider - an unknown argument (argparse, exit 2) is invalid", async () => {
    const bad: typeof aider = { ...aider, buildCommand: (input) => ({ ...aider.buildCommand(input), args: ["--no-such-flag"] }) };
    const { outcome } = parse(aider, await record(bad, { cwd: box.repo, home: box.home }));
    expect(outcome.failure).toMatchObject({ kind: "invalid", exitCode: 2 });
  });
});

describe("aider - end to end through the process runner", () => {
  it("aider - edits files, keeps its history under .ado, gets the key it needs", async () => {
    const r = await runAgent(aider, { cwd: box.repo, home: box.home, scenario: { tools: 2 }, env: KEY });
    expect(r.outcome).toMatchObject({ ok: true, costSource: "reported" });
    expect(existsSync(join(box.repo, "fake-aider-2.txt"))).toBe(true);
    expect(readFileSync(join(box.repo, ".ado", "aider.chat.history.md"), "utf8")).toContain("fix the off-by-one");
    expect(existsSync(join(box.repo, ".aider.chat.history.md"))).toBe(false);
  });
});
