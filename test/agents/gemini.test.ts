/**
 * The Gemini CLI adapter against agent-cli-formats.md section 3 and its fake
 * (test/fixtures/fake-agents/gemini.mjs).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADAPTERS } from "../../src/agents/index.js";
import { fakeCost, feed, ofType, parse, record, runAgent, sandbox } from "./helpers.js";

const gemini = ADAPTERS.gemini;
let box: Awaited<ReturnType<typeof sandbox>>;
beforeAll(async () => {
  box = await sandbox();
});
afterAll(async () => {
  await box.cleanup();
});
const rec = (scenario: Parameters<typeof record>[1]["scenario"], extra: Partial<Parameters<typeof record>[1]> = {}) =>
  record(gemini, { cwd: box.repo, home: box.home, scenario, ...extra });
const PRO = { input: 1.25, cachedInput: 0.125, output: 10 };

describe("gemini - command line and environment", () => {
  it("gemini - stream-json, yolo, the workspace trusted by its variable, the prompt in the `=` form", () => {
    const spec = gemini.buildCommand({ prompt: "-x", options: { model: "gemini-2.5-flash" }, resume: "6d1f", inherited: { GEMINI_API_KEY: "g", CLAUDECODE: "1" } });
    expect(spec.args).toEqual(["--output-format", "stream-json", "--yolo", "--model", "gemini-2.5-flash", "--resume", "6d1f", "--prompt=-x"]);
    expect(spec.env.GEMINI_CLI_TRUST_WORKSPACE).toBe("true");
    expect(spec.unset).toEqual(["CLAUDECODE", "GEMINI_API_KEY"]);
    expect(gemini.buildCommand({ prompt: "x", inherited: { GEMINI_API_KEY: "g" }, options: { access: "api" } }).unset).toEqual([]);
  });
});

describe("gemini - stream", () => {
  it("gemini - delta pieces are gathered into one message per stretch; tools pair up; tokens per model priced from the table", async () => {
    const { events, outcome } = parse(gemini, await rec({ tools: 2 }));
    expect(outcome.ok).toBe(true);
    expect(outcome.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(ofType(events, "agent.message").map((m) => m.text)).toEqual(["Step 1: working on it.", "Step 2: working on it.", "Done after 2 tool calls."]);
    expect(ofType(events, "agent.tool").map((t) => `${t.phase} ${t.tool} ${t.summary} ${t.ok ?? ""}`)).toEqual([
      "started run_shell_command ls -1 ",
      "completed run_shell_command ls -1 true",
      "started write_file fake-gemini-2.txt ",
      "completed write_file fake-gemini-2.txt true",
    ]);
    expect(ofType(events, "agent.usage")[0]).toMatchObject({ model: "gemini-2.5-pro", inputTokens: 14_000, cachedTokens: 9_000, outputTokens: 400, costSource: "price_table" });
    expect(outcome.costUsd).toBeCloseTo(fakeCost(2, PRO), 10);
    expect(outcome.summary).toBe("Done after 2 tool calls.");
  });

  it("gemini - garbage lines become raw messages; the run succeeds", async () => {
    const { events, outcome } = parse(gemini, await rec({ scenario: "garbage" }));
    expect(outcome.ok).toBe(true);
    expect(ofType(events, "agent.message").filter((m) => m.raw).length).toBeGreaterThanOrEqual(3);
  });

  it("gemini - a loop-detected warning then success is a success", () => {
    const lines = [
      '{"type":"init","timestamp":"2026-08-21T10:00:00.000Z","session_id":"s-1","model":"gemini-2.5-pro"}',
      '{"type":"error","timestamp":"2026-08-21T10:00:01.000Z","severity":"warning","message":"Loop detected, stopping execution"}',
      '{"type":"result","timestamp":"2026-08-21T10:00:02.000Z","status":"success","stats":{"total_tokens":10,"input_tokens":8,"output_tokens":2,"cached":0,"input":8,"duration_ms":1,"tool_calls":0,"models":{}}}',
    ];
    const { events, outcome } = feed(gemini, lines, { code: 0 });
    expect(outcome).toMatchObject({ ok: true, sessionId: "s-1", tokens: { input: 8, output: 2 } });
    expect(ofType(events, "agent.message")[0]!.text).toMatch(/warning: Loop detected/);
  });
});

describe("gemini - failure classes", () => {
  it("gemini - exit 41 (auth, nothing on stdout): not retried, says how to log in", async () => {
    const r = await rec({ scenario: "auth" });
    expect(r.lines).toEqual([]);
    const { outcome } = parse(gemini, r);
    expect(outcome.failure).toMatchObject({ kind: "auth", retryable: false, exitCode: 41 });
    expect(outcome.failure!.message).toMatch(/GEMINI_API_KEY/);
  });

  it("gemini - quota (exit 429 mod 256 = 173) is a rate limit; max turns (53) is max_turns; a 500 (244) a retryable crash", async () => {
    const quota = parse(gemini, await rec({ scenario: "usage_limit" }));
    expect(quota.outcome.failure).toMatchObject({ kind: "rate_limit", retryable: true, exitCode: 173 });
    expect(quota.outcome.failure!.message).toMatch(/exhausted your daily quota/);
    const rl = parse(gemini, await rec({ scenario: "rate_limit" }));
    expect(rl.outcome.failure).toMatchObject({ kind: "rate_limit", exitCode: 173 });
    const turns = parse(gemini, await rec({ scenario: "max_turns" }));
    expect(turns.outcome.failure).toMatchObject({ kind: "max_turns", retryable: false, exitCode: 53 });
    expect(turns.outcome.sessionId).toBeTruthy();
    const api = parse(gemini, await rec({ scenario: "api_error" }));
    expect(api.outcome.failure).toMatchObject({ kind: "crash", retryable: true, exitCode: 244 });
  });

  it("gemini - the exit code alone classes an API error: 173 without text is still a rate limit", () => {
    const { outcome } = feed(gemini, ['{"type":"result","status":"error","error":{"type":"unknown","message":"[API Error: boom]"},"stats":{}}'], { code: 173 });
    expect(outcome.failure).toMatchObject({ kind: "rate_limit" });
    expect(outcome.failure!.message).toMatch(/HTTP 429/);
  });

  it("gemini - crash mid-stream and signal are retryable crashes", async () => {
    expect(parse(gemini, await rec({ scenario: "crash" })).outcome.failure).toMatchObject({ kind: "crash", retryable: true, exitCode: 1 });
    expect(parse(gemini, await rec({ scenario: "crash_signal" })).outcome.failure).toMatchObject({ kind: "crash", exitCode: null });
  });

  it("gemini - an untrusted workspace (exit 55) is invalid: what ado runs must trust the worktree", async () => {
    const untrusted: typeof gemini = {
      ...gemini,
      buildCommand: (input) => {
        const spec = gemini.buildCommand(input);
        const { GEMINI_CLI_TRUST_WORKSPACE: _, ...env } = spec.env;
        return { ...spec, env };
      },
    };
    const { outcome } = parse(gemini, await record(untrusted, { cwd: box.repo, home: box.home }));
    expect(outcome.failure).toMatchObject({ kind: "invalid", retryable: false, exitCode: 55 });
  });

  it("gemini - without --yolo its tools are denied: the adapter's flag is what lets it edit", async () => {
    const noYolo: typeof gemini = {
      ...gemini,
      buildCommand: (input) => {
        const spec = gemini.buildCommand(input);
        return { ...spec, args: spec.args.filter((a) => a !== "--yolo") };
      },
    };
    const { events } = parse(gemini, await record(noYolo, { cwd: box.home, home: box.home }));
    expect(ofType(events, "agent.tool").filter((t) => t.phase === "completed").map((t) => t.ok)).toEqual([false, false]);
  });

  it("gemini - resume: the session goes on; an invalid one fails and drops it", async () => {
    const id = parse(gemini, await rec({ tools: 1 })).outcome.sessionId!;
    expect(parse(gemini, await rec({ tools: 1 }, { resume: id })).outcome).toMatchObject({ ok: true, sessionId: id });
    const lost = parse(gemini, await rec({}, { resume: "not-a-session" }));
    expect(lost.outcome.failure).toMatchObject({ kind: "crash" });
    expect(lost.outcome.failure!.message).toMatch(/Invalid session identifier/);
    expect(lost.outcome.sessionId).toBeUndefined();
  });
});

describe("gemini - end to end through the process runner", () => {
  it("gemini - edits files in the repository and reports tokens and cost", async () => {
    const r = await runAgent(gemini, { cwd: box.repo, home: box.home, scenario: { tools: 3 } });
    expect(r.outcome).toMatchObject({ ok: true, costSource: "price_table" });
    expect(r.outcome.costUsd).toBeCloseTo(fakeCost(3, PRO), 10);
    expect(existsSync(join(box.repo, "fake-gemini-3.txt"))).toBe(true);
  });
});
