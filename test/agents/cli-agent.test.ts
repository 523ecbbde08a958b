/**
 * The shell around the adapters, end to end with the fakes and the real process runner:
 * the idle timeout (a hang kills the group), paused time not counted as idle, the task's
 * timeout and a cancel passed through, bad settings refused before anything starts.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADAPTERS, AgentConfigSchema, Suspender } from "../../src/agents/index.js";
import { runAgent, sandbox } from "./helpers.js";

let box: Awaited<ReturnType<typeof sandbox>>;
beforeAll(async () => {
  box = await sandbox();
});
afterAll(async () => {
  await box.cleanup();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function eventually(check: () => boolean, withinMs = 10_000): Promise<boolean> {
  const by = Date.now() + withinMs;
  while (Date.now() < by) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

describe("cli agent - clocks", () => {
  it("cli agent - no output for the idle timeout is a hang: the group is killed, retryable", async () => {
    const recordFile = join(box.home, "hang.json");
    // Longer than a node start on a loaded machine, so the fake is up (and recorded its pid) when it fires.
    const r = await runAgent(ADAPTERS.claude, { cwd: box.repo, home: box.home, scenario: { scenario: "hang" }, options: { idleTimeoutMs: 3_000 }, env: { FAKE_AGENT_RECORD: recordFile } });
    expect(r.outcome.failure).toMatchObject({ kind: "hang", retryable: true });
    expect(r.outcome.failure!.message).toMatch(/printed nothing for 3 s/);
    const { pid } = JSON.parse(readFileSync(recordFile, "utf8")) as { pid: number };
    expect(await eventually(() => !alive(pid))).toBe(true);
  });

  it("cli agent - output, then silence (a stall) is a hang too, and the session seen so far is kept", async () => {
    const r = await runAgent(ADAPTERS.codex, { cwd: box.repo, home: box.home, scenario: { scenario: "stall" }, options: { idleTimeoutMs: 3_000 } });
    expect(r.outcome.failure).toMatchObject({ kind: "hang" });
    expect(r.outcome.sessionId).toBeTruthy();
  });

  it("cli agent - paused time is not idle time: a run paused longer than its idle timeout still succeeds", async () => {
    const suspender = new Suspender();
    const run = runAgent(ADAPTERS.gemini, { cwd: box.repo, home: box.home, scenario: { tools: 2, delayMs: 150 }, options: { idleTimeoutMs: 2_500 }, suspender });
    await new Promise((r) => setTimeout(r, 300));
    suspender.pause();
    await new Promise((r) => setTimeout(r, 3_500));
    suspender.resume();
    const r = await run;
    expect(r.outcome).toMatchObject({ ok: true });
  });

  it("cli agent - the task's timeout is the runner's: reported as a timeout", async () => {
    const r = await runAgent(ADAPTERS.cursor, { cwd: box.repo, home: box.home, scenario: { scenario: "hang" }, timeoutMs: 400 });
    expect(r.outcome.failure).toMatchObject({ kind: "timeout", retryable: true });
  });

  it("cli agent - a cancel is a cancel, whatever the stream said", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort("cancelled"), 300);
    const r = await runAgent(ADAPTERS.claude, { cwd: box.repo, home: box.home, scenario: { scenario: "stall" }, signal: ac.signal });
    expect(r.outcome.failure).toMatchObject({ kind: "cancelled", retryable: false });
  });
});

describe("cli agent - settings", () => {
  it("cli agent - a bad task setting or config fails the task as invalid before anything runs", async () => {
    const marker = join(box.home, "never.json");
    const bad = await runAgent(ADAPTERS.claude, { cwd: box.repo, home: box.home, options: { maxTurns: -1 }, env: { FAKE_AGENT_RECORD: marker } });
    expect(bad.outcome.failure).toMatchObject({ kind: "invalid", retryable: false });
    const cred = await runAgent(ADAPTERS.cursor, { cwd: box.repo, home: box.home, config: AgentConfigSchema.parse({ env: { CURSOR_API_KEY: "k" } }), env: { FAKE_AGENT_RECORD: marker } });
    expect(cred.outcome.failure).toMatchObject({ kind: "invalid" });
    expect(cred.outcome.failure!.message).toMatch(/agents\.cursor\.env sets CURSOR_API_KEY/);
    expect(existsSync(marker)).toBe(false);
  });

  it("cli agent - a binary that cannot be executed is invalid, not retried", async () => {
    const notExecutable = join(box.home, "claude-not-executable");
    writeFileSync(notExecutable, "#!/bin/sh\nexit 0\n", { mode: 0o644 });
    // Through the sh that unsets CLAUDECODE, as on a worker started from Claude Code.
    const r = await runAgent(ADAPTERS.claude, { cwd: box.repo, home: box.home, config: AgentConfigSchema.parse({ bin: notExecutable }), inherited: { ...process.env, CLAUDECODE: "1" } });
    expect(r.outcome.failure).toMatchObject({ kind: "invalid", retryable: false, exitCode: 126 });
    expect(r.outcome.failure!.message).toMatch(/not executable/);
  });

  it("cli agent - a setting the CLI cannot honour is said in the stream, and the run goes on", async () => {
    const r = await runAgent(ADAPTERS.codex, { cwd: box.repo, home: box.home, options: { maxTurns: 3 } });
    expect(r.outcome.ok).toBe(true);
    expect(r.events[0]!.event).toMatchObject({ type: "agent.message", raw: true });
    expect((r.events[0]!.event as { text: string }).text).toMatch(/maxTurns is ignored/);
  });
});
