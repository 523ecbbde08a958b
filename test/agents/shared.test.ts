/**
 * What the adapters share, without processes: reset times, prices, line splitting,
 * credentials, the process runner's options, task options, the list of agent names.
 */
import { describe, expect, it } from "vitest";
import { AGENT_NAMES, CLI_AGENT_NAMES, isAgentName } from "../../src/agents/agent-names.js";
import { classOfHttpStatus, parseResetTime, RETRYABLE } from "../../src/agents/classify.js";
import { exitOf, taskOptionsOf } from "../../src/agents/cli-agent.js";
import { filterEnvironment } from "../../src/agents/credentials.js";
import { costOf, DEFAULT_PRICES, normalizeModel, priceOf } from "../../src/agents/prices.js";
import { LineSplitter, parseJsonLine } from "../../src/agents/stream.js";
import { ADAPTERS, builtinAgents, priceTable, runProcessGroup, Suspender } from "../../src/agents/index.js";
import { TaskFailure } from "../../src/runtime/messages.js";

describe("agents - names", () => {
  it("agents - one list of names: every CLI has an adapter, shell and noop are built in", () => {
    expect([...AGENT_NAMES]).toEqual(["claude", "codex", "gemini", "cursor", "aider", "shell", "noop"]);
    expect(Object.keys(ADAPTERS).sort()).toEqual([...CLI_AGENT_NAMES].sort());
    expect([...builtinAgents().keys()].every(isAgentName)).toBe(true);
    expect(isAgentName("claude-code")).toBe(false);
  });

  it("agents - every failure kind of the wire has a retry rule", () => {
    expect(Object.keys(RETRYABLE).sort()).toEqual([...TaskFailure.shape.kind.options].sort());
  });
});

describe("agents - reset times", () => {
  const now = Date.UTC(2026, 7, 21, 10, 0, 0);

  it("agents - an epoch after `|` (Claude), in seconds or milliseconds", () => {
    expect(parseResetTime("Claude AI usage limit reached|1755806400", now)).toBe(1_755_806_400_000);
    expect(parseResetTime("limit|1755806400123", now)).toBe(1_755_806_400_123);
  });

  it("agents - a clock time in a named zone, later today or else tomorrow", () => {
    expect(parseResetTime("You've hit your session limit · resets 3:45pm (UTC)", now)).toBe(Date.UTC(2026, 7, 21, 15, 45));
    expect(parseResetTime("5-hour limit reached · resets 9am (UTC)", now)).toBe(Date.UTC(2026, 7, 22, 9, 0));
    // Berlin is UTC+2 in August.
    expect(parseResetTime("resets 3pm (Europe/Berlin)", now)).toBe(Date.UTC(2026, 7, 21, 13, 0));
  });

  it("agents - a clock time without a zone is the worker's local time", () => {
    const t = parseResetTime("try again at 11:05 PM.", now)!;
    const d = new Date(t);
    expect([d.getHours(), d.getMinutes()]).toEqual([23, 5]);
    expect(t).toBeGreaterThan(now);
    expect(t - now).toBeLessThanOrEqual(24 * 3_600_000);
  });

  it("agents - a date and time (Codex), an ISO time (Cursor), a delay", () => {
    const d = new Date(parseResetTime("or try again at Sep 19th, 2026 7:10 AM.", now)!);
    expect([d.getFullYear(), d.getMonth(), d.getDate(), d.getHours(), d.getMinutes()]).toEqual([2026, 8, 19, 7, 10]);
    expect(parseResetTime("Your usage resets at 2031-10-14T12:00:00.000Z.", now)).toBe(Date.UTC(2031, 9, 14, 12));
    expect(parseResetTime("Please retry in 23.5s", now)).toBe(now + 23_500);
    expect(parseResetTime("try again in 5 minutes", now)).toBe(now + 300_000);
  });

  it("agents - no time named: undefined (the retry backs off instead)", () => {
    expect(parseResetTime("Please wait and try again later.", now)).toBeUndefined();
    expect(parseResetTime("The API provider has rate limited you.", now)).toBeUndefined();
    expect(parseResetTime("resets 7", now)).toBeUndefined();
  });

  it("agents - HTTP statuses map to classes", () => {
    expect([401, 402, 403, 404, 429, 500, 503].map(classOfHttpStatus)).toEqual(["auth", "auth", "auth", "invalid", "rate_limit", "crash", "crash"]);
  });
});

describe("agents - prices", () => {
  it("agents - models are found under their snapshot ids, display names and short names", () => {
    expect(priceOf("claude-sonnet-4-5-20250929")).toBe(DEFAULT_PRICES["claude-sonnet-4-5"]);
    expect(priceOf("Claude 4 Sonnet")).toBe(DEFAULT_PRICES["claude-sonnet-4"]);
    expect(priceOf("Claude 4.5 Sonnet")).toBe(DEFAULT_PRICES["claude-sonnet-4-5"]);
    expect(priceOf("GPT-5.1")).toBe(DEFAULT_PRICES["gpt-5.1"]);
    expect(priceOf("gpt-4.1-2025-04-14")).toBe(DEFAULT_PRICES["gpt-4.1"]);
    expect(priceOf("models/gemini-2.5-flash")).toBe(DEFAULT_PRICES["gemini-2.5-flash"]);
    expect(priceOf("Auto")).toBeUndefined();
    expect(priceOf(undefined)).toBeUndefined();
    expect(normalizeModel("Claude 4.5 Sonnet")).toBe("claude-4-5-sonnet");
  });

  it("agents - a configured price wins over the default, also under another spelling", () => {
    const table = priceTable({ "GPT-5": { input: 9, output: 9 } });
    expect(priceOf("gpt-5", table)).toEqual({ input: 9, output: 9 });
    expect(priceOf("gpt-5-mini", table)).toBe(DEFAULT_PRICES["gpt-5-mini"]);
  });

  it("agents - cost: plain input, cache reads and writes and output each at their price, to the cent and below", () => {
    const p = { input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75 };
    // 1M prompt tokens of which 600k cached and 100k written: 300k*3 + 600k*0.3 + 100k*3.75 + 200k*15.
    expect(costOf({ input: 1_000_000, cached: 600_000, cacheWrite: 100_000, output: 200_000 }, p)).toBeCloseTo(0.9 + 0.18 + 0.375 + 3, 10);
    // Without cache prices, cached tokens cost as input (a budget errs high).
    expect(costOf({ input: 1_000_000, cached: 500_000, cacheWrite: 0, output: 0 }, { input: 2, output: 8 })).toBeCloseTo(2, 10);
  });
});

describe("agents - lines", () => {
  it("agents - chunks split on newlines wherever they fall; CRLF; the unterminated last line comes out at the end", () => {
    const lines: string[] = [];
    const s = new LineSplitter((l) => lines.push(l));
    for (const c of ['{"a":', '1}\n{"b"', ":2}\r\n\nlast"]) s.push(c);
    expect(lines).toEqual(['{"a":1}', '{"b":2}', ""]);
    s.end();
    expect(lines.at(-1)).toBe("last");
  });

  it("agents - a line that never ends is passed on in pieces, not held without bound", () => {
    const lines: string[] = [];
    const s = new LineSplitter((l) => lines.push(l), 10);
    s.push("x".repeat(25));
    expect(lines).toEqual(["x".repeat(10), "x".repeat(10)]);
  });

  it("agents - only a JSON object is a JSON line", () => {
    expect(parseJsonLine('{"type":"x"}')).toEqual({ type: "x" });
    for (const l of ["[1,2]", "null", "{broken", "text", '"s"']) expect(parseJsonLine(l)).toBeUndefined();
  });
});

describe("agents - environment and launch", () => {
  it("agents - credentials not allowed and the nesting variables go; what ado adds stays", () => {
    const r = filterEnvironment({ ANTHROPIC_API_KEY: "a", GEMINI_API_KEY: "g", CLAUDECODE: "1", HOME: "/h" }, { ADO_TASK_ID: "t", CLAUDECODE: "1", GEMINI_API_KEY: "x" }, new Set(["GEMINI_API_KEY"]));
    expect(r.env).toEqual({ ADO_TASK_ID: "t", GEMINI_API_KEY: "x" });
    expect(r.unset).toEqual(["ANTHROPIC_API_KEY", "CLAUDECODE"]);
    expect(r.withheld).toEqual(["ANTHROPIC_API_KEY"]);
  });

  it("agents - the runner withholds inherited variables, feeds stdin text behind its gate, and reports the signal and any abort reason", async () => {
    const ctx = (signal = new AbortController().signal) => {
      let out = "";
      return {
        ctx: { env: { ADDED: "a" }, task: { id: "t" } as never, signal, suspender: new Suspender(), onOutput: (_s: string, d: string) => void (out += d) },
        out: () => out,
      };
    };
    process.env.ADO_TEST_WITHHELD = "secret";
    try {
      const fed = ctx();
      const r = await runProcessGroup("sh", ["-c", 'echo "${ADO_TEST_WITHHELD-unset} $ADDED"; cat'], fed.ctx, { unsetEnv: ["ADO_TEST_WITHHELD"], stdin: { text: "line 1\nline 2" } });
      expect(r.ok).toBe(true);
      expect(fed.out()).toBe("unset a\nline 1\nline 2");
      const plain = ctx();
      await runProcessGroup("sh", ["-c", 'echo "$ADO_TEST_WITHHELD"; cat'], plain.ctx);
      expect(plain.out()).toBe("secret\n"); // inherited when not withheld; stdin is end-of-file at once
    } finally {
      delete process.env.ADO_TEST_WITHHELD;
    }
    const killed = await runProcessGroup("sh", ["-c", "kill -9 $$"], ctx().ctx);
    expect(killed).toMatchObject({ ok: false, signal: "SIGKILL", failure: { kind: "exit", exitCode: null } });
    const abort = new AbortController();
    const hung = runProcessGroup("sh", ["-c", "sleep 30"], ctx(abort.signal).ctx);
    setTimeout(() => abort.abort("hang"), 100);
    expect(await hung).toMatchObject({ ok: false, stoppedBy: "hang", failure: { kind: "internal" } });
  });

  it("agents - task options: read from the task when it carries them, the worker's win, a bad one is refused with its name", () => {
    expect(taskOptionsOf({ id: "t", model: "opus", maxTurns: 3 }, { maxTurns: 5 })).toEqual({ ok: true, value: { model: "opus", maxTurns: 5 } });
    const bad = taskOptionsOf({ maxTurns: 0 });
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.message).toMatch(/'maxTurns' is invalid/);
  });

  it("agents - the runner's outcome as an exit: code, signal from its message, stop by a clock, its own failures", () => {
    expect(exitOf({ ok: true }, undefined, 1)).toEqual({ code: 0 });
    expect(exitOf({ ok: false, failure: { kind: "exit", retryable: true, exitCode: null, message: "killed by SIGKILL" } }, undefined, 1)).toEqual({ code: null, signal: "SIGKILL" });
    expect(exitOf({ ok: false, signal: "SIGTERM", failure: { kind: "exit", retryable: true, exitCode: null, message: "m" } }, undefined, 1)).toEqual({ code: null, signal: "SIGTERM" });
    expect(exitOf({ ok: false, failure: { kind: "interrupted", retryable: true, message: "m", exitCode: null } }, "hang", 500)).toEqual({ code: null, stopped: "hang", idleTimeoutMs: 500 });
    const timeout = { kind: "timeout" as const, retryable: true, message: "timed out", exitCode: null };
    expect(exitOf({ ok: false, failure: timeout }, undefined, 1)).toEqual({ code: null, runnerFailure: timeout });
  });
});
