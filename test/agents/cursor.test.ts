/**
 * The Cursor agent adapter against agent-cli-formats.md section 4 and its fake
 * (test/fixtures/fake-agents/cursor-agent.mjs).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADAPTERS, AgentConfigSchema } from "../../src/agents/index.js";
import { fakeCost, feed, ofType, parse, record, runAgent, sandbox } from "./helpers.js";

const cursor = ADAPTERS.cursor;
let box: Awaited<ReturnType<typeof sandbox>>;
beforeAll(async () => {
  box = await sandbox();
});
afterAll(async () => {
  await box.cleanup();
});
const rec = (scenario: Parameters<typeof record>[1]["scenario"], extra: Partial<Parameters<typeof record>[1]> = {}) =>
  record(cursor, { cwd: box.repo, home: box.home, scenario, ...extra });
/** "Claude 4 Sonnet", the fake's model, is claude-sonnet-4 in the price table. */
const SONNET = { input: 3, cachedInput: 0.3, output: 15 };

describe("cursor - command line and environment", () => {
  it("cursor - print mode, stream-json, --force, the prompt on stdin", () => {
    const spec = cursor.buildCommand({ prompt: "--fix it", options: { model: "sonnet-4" }, resume: "c6b6", inherited: { CURSOR_API_KEY: "k" } });
    expect(spec.bin).toBe("cursor-agent");
    expect(spec.args).toEqual(["-p", "--output-format", "stream-json", "--force", "--model", "sonnet-4", "--resume", "c6b6"]);
    expect(spec.stdin).toEqual({ text: "--fix it" });
    expect(spec.unset).toEqual(["CURSOR_API_KEY"]);
    expect(cursor.buildCommand({ prompt: "x", inherited: { CURSOR_API_KEY: "k" }, options: { access: "api" } }).unset).toEqual([]);
  });
});

describe("cursor - stream", () => {
  it("cursor - messages, tool kinds as tool names, the result's tokens priced from the table under the display name", async () => {
    const { events, outcome } = parse(cursor, await rec({ tools: 2 }));
    expect(outcome.ok).toBe(true);
    expect(outcome.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(ofType(events, "agent.message").map((m) => m.text)).toEqual(["Step 1.", "Step 2.", "Done after 2 tool calls."]);
    expect(ofType(events, "agent.tool").map((t) => `${t.phase} ${t.tool} ${t.summary} ${t.ok ?? ""}`)).toEqual([
      "started shell ls -1 ",
      "completed shell ls -1 true",
      "started write fake-cursor-2.txt ",
      "completed write fake-cursor-2.txt true",
    ]);
    expect(ofType(events, "agent.usage")[0]).toMatchObject({ model: "Claude 4 Sonnet", inputTokens: 14_000, cachedTokens: 9_000, outputTokens: 400, costSource: "price_table" });
    expect(outcome.costUsd).toBeCloseTo(fakeCost(2, SONNET), 10);
  });

  it("cursor - a duplicate flush of the same assistant message is reported once", () => {
    const a = '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Running the test suite."}]},"session_id":"c"}';
    const { events } = feed(cursor, [a, a], { code: 0 });
    expect(ofType(events, "agent.message")).toHaveLength(1);
  });

  it("cursor - garbage lines become raw messages; the run succeeds", async () => {
    const { events, outcome } = parse(cursor, await rec({ scenario: "garbage" }));
    expect(outcome.ok).toBe(true);
    expect(ofType(events, "agent.message").filter((m) => m.raw).length).toBeGreaterThanOrEqual(3);
  });
});

describe("cursor - failure classes", () => {
  it("cursor - auth on stderr with no terminal event: not retried, says how to log in", async () => {
    const { outcome } = parse(cursor, await rec({ scenario: "auth" }));
    expect(outcome.failure).toMatchObject({ kind: "auth", retryable: false, exitCode: 1 });
    expect(outcome.failure!.message).toMatch(/cursor-agent login/);
  });

  it("cursor - usage limit on stderr is a rate limit until the reset it names", async () => {
    const resetAt = 1_950_000_000;
    const { outcome } = parse(cursor, await rec({ scenario: "usage_limit", resetAt }));
    expect(outcome.failure).toMatchObject({ kind: "rate_limit", retryable: true, retryAt: resetAt * 1000 });
  });

  it("cursor - a crash mid-stream and a signal are retryable crashes", async () => {
    expect(parse(cursor, await rec({ scenario: "crash" })).outcome.failure).toMatchObject({ kind: "crash", retryable: true, exitCode: 1 });
    expect(parse(cursor, await rec({ scenario: "crash_signal" })).outcome.failure).toMatchObject({ kind: "crash", exitCode: null });
  });

  it("cursor - a bad model is invalid, not retried", () => {
    const { outcome } = feed(cursor, [], { code: 1 }, { stderr: ['AI Model Not Found. Model name is not valid: "gpt-9"'] });
    expect(outcome.failure).toMatchObject({ kind: "invalid", retryable: false });
  });

  it("cursor - without --force its commands and writes are rejected: the adapter's flag is what lets it work", async () => {
    const noForce: typeof cursor = {
      ...cursor,
      buildCommand: (input) => {
        const spec = cursor.buildCommand(input);
        return { ...spec, args: spec.args.filter((a) => a !== "--force") };
      },
    };
    const { events } = parse(cursor, await record(noForce, { cwd: box.home, home: box.home }));
    expect(ofType(events, "agent.tool").filter((t) => t.phase === "completed").map((t) => t.ok)).toEqual([false, false]);
  });

  it("cursor - resume: the chat goes on", async () => {
    const id = parse(cursor, await rec({ tools: 1 })).outcome.sessionId!;
    expect(parse(cursor, await rec({ tools: 1 }, { resume: id })).outcome).toMatchObject({ ok: true, sessionId: id });
  });
});

describe("cursor - end to end through the process runner", () => {
  it("cursor - the prompt reaches it on stdin, which is then closed; it edits files", async () => {
    const recordFile = join(box.home, "cursor-stdin.json");
    const r = await runAgent(cursor, { cwd: box.repo, home: box.home, prompt: "-p is not a flag here", env: { FAKE_AGENT_RECORD: recordFile } });
    expect(r.outcome.ok).toBe(true);
    expect(existsSync(join(box.repo, "fake-cursor-2.txt"))).toBe(true);
    const seen = JSON.parse(readFileSync(recordFile, "utf8")) as { stdin: string; argv: string[] };
    expect(seen.stdin).toBe("-p is not a flag here");
    expect(seen.argv).not.toContain("-p is not a flag here");
  });

  it("cursor - lingering after its result: stopped after the grace period, and the result stands", async () => {
    const r = await runAgent(cursor, { cwd: box.repo, home: box.home, scenario: { scenario: "linger" }, config: AgentConfigSchema.parse({ linger: "200ms" }) });
    expect(r.outcome).toMatchObject({ ok: true });
    expect(r.outcome.costUsd).toBeGreaterThan(0);
  });
});
