/**
 * Running the fake agent CLIs (test/fixtures/fake-agents) for adapter tests: straight,
 * to record what they print for a parser, or end to end through CliAgent and the real
 * process runner.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  CliAgent,
  Suspender,
  type AgentConfig,
  type AgentEvent,
  type AgentTaskOptions,
  type CliAdapter,
  type CliOutcome,
  type CommandInput,
  type ProcessExit,
} from "../../src/agents/index.js";
import { makeRepo } from "../helpers/repo.js";

export const FAKE_BIN = fileURLToPath(new URL("../fixtures/fake-agents/bin", import.meta.url));
export const FAKE_PATH = `${FAKE_BIN}:${process.env.PATH ?? ""}`;

/** A scenario of the fakes (see test/fixtures/fake-agents/common.mjs). */
export interface Scenario {
  scenario?: string;
  tools?: number;
  resetAt?: number;
  delayMs?: number;
}

export function scenarioEnv(s: Scenario = {}): Record<string, string> {
  return {
    FAKE_AGENT_SCENARIO: s.scenario ?? "success",
    ...(s.tools !== undefined ? { FAKE_AGENT_TOOLS: String(s.tools) } : {}),
    ...(s.resetAt !== undefined ? { FAKE_AGENT_RESET_AT: String(s.resetAt) } : {}),
    ...(s.delayMs !== undefined ? { FAKE_AGENT_DELAY_MS: String(s.delayMs) } : {}),
  };
}

/** A temp git repository and a temp HOME (for the fakes' sessions), removed by cleanup(). */
export async function sandbox(): Promise<{ repo: string; home: string; cleanup(): Promise<void> }> {
  const repo = await makeRepo();
  const home = await mkdtemp(join(tmpdir(), "ado-fake-home-"));
  return {
    repo: repo.dir,
    home,
    cleanup: async () => {
      await repo.cleanup();
      await rm(home, { recursive: true, force: true, maxRetries: 10 });
    },
  };
}

export interface Recorded {
  lines: string[];
  stderr: string[];
  exit: ProcessExit;
}

/**
 * Runs the adapter's command line against its fake, straight (no process group, no
 * clocks), and returns what it printed: the input of a parser test.
 */
export async function record(adapter: CliAdapter, input: Omit<CommandInput, "prompt"> & { prompt?: string; scenario?: Scenario; home: string }): Promise<Recorded> {
  const spec = adapter.buildCommand({
    prompt: input.prompt ?? "fix the off-by-one",
    ...input,
    env: { ...scenarioEnv(input.scenario), ...(input.env ?? {}), PATH: FAKE_PATH, HOME: input.home },
  });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...spec.env })) if (v !== undefined && !spec.unset.includes(k)) env[k] = v;
  const child = spawn(spec.bin, spec.args, { cwd: input.cwd, env, stdio: [typeof spec.stdin === "object" ? "pipe" : "ignore", "pipe", "pipe"] });
  if (typeof spec.stdin === "object") child.stdin!.end(spec.stdin.text);
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c, s) => resolve([c, s]));
  });
  clearTimeout(timer);
  const split = (s: string) => (s.endsWith("\n") ? s.slice(0, -1) : s).split("\n").filter((l, i, a) => l !== "" || i < a.length - 1);
  return { lines: out ? split(out) : [], stderr: err ? split(err) : [], exit: { code, ...(signal ? { signal } : {}) } };
}

/** Feeds recorded output to a fresh parser: its events and outcome. */
export function parse(adapter: CliAdapter, rec: Recorded, ctx: Parameters<CliAdapter["parser"]>[0] = {}, exit: Partial<ProcessExit> = {}): { events: AgentEvent[]; outcome: CliOutcome } {
  const p = adapter.parser(ctx);
  const events: AgentEvent[] = [];
  for (const l of rec.stderr) events.push(...p.feedStderr(l));
  for (const l of rec.lines) events.push(...p.feed(l));
  events.push(...p.end());
  return { events, outcome: p.outcome({ ...rec.exit, ...exit }) };
}

/** Feeds literal lines (stdout) to a parser. */
export function feed(adapter: CliAdapter, lines: string[], exit: ProcessExit, opts: { stderr?: string[]; ctx?: Parameters<CliAdapter["parser"]>[0] } = {}) {
  return parse(adapter, { lines, stderr: opts.stderr ?? [], exit }, opts.ctx);
}

export interface AgentRun {
  outcome: CliOutcome;
  events: { event: AgentEvent; seq: number }[];
  output: { stdout: string; stderr: string };
}

/** Runs an adapter end to end through CliAgent (and so the real runProcessGroup) against its fake. */
export async function runAgent(
  adapter: CliAdapter,
  opts: {
    cwd: string;
    home: string;
    scenario?: Scenario;
    prompt?: string;
    config?: AgentConfig;
    options?: AgentTaskOptions;
    resume?: string;
    env?: Record<string, string>;
    inherited?: Record<string, string | undefined>;
    timeoutMs?: number;
    signal?: AbortSignal;
    suspender?: Suspender;
  },
): Promise<AgentRun> {
  const agent = new CliAgent(adapter, { ...(opts.config ? { config: opts.config } : {}), ...(opts.inherited ? { inherited: opts.inherited } : {}) });
  const events: AgentRun["events"] = [];
  const output = { stdout: "", stderr: "" };
  const outcome = await agent.run({
    cwd: opts.cwd,
    env: { ...scenarioEnv(opts.scenario), PATH: FAKE_PATH, HOME: opts.home, ...(opts.env ?? {}) },
    task: { id: "t1", agent: adapter.name, prompt: opts.prompt ?? "fix the off-by-one", priority: "normal", needs: [], retry: { attempts: 1, backoffMs: 0, factor: 2, maxBackoffMs: 0, jitter: 0 }, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) } as never,
    signal: opts.signal ?? new AbortController().signal,
    suspender: opts.suspender ?? new Suspender(),
    onOutput: (s, d) => (output[s] += d),
    onEvent: (event, seq) => events.push({ event, seq }),
    ...(opts.options ? { options: opts.options } : {}),
    ...(opts.resume ? { resume: opts.resume } : {}),
  });
  return { outcome, events, output };
}

/** The events of one type. */
export function ofType<T extends AgentEvent["type"]>(events: readonly AgentEvent[], type: T): Extract<AgentEvent, { type: T }>[] {
  return events.filter((e): e is Extract<AgentEvent, { type: T }> => e.type === type);
}

/** Expected USD of the fakes' usageFor(tools) at a price (USD per million). */
export function fakeCost(tools: number, price: { input: number; cachedInput: number; output: number }): number {
  const input = 12_000 + 1_000 * tools;
  const cached = 8_000 + 500 * tools;
  const output = 300 + 50 * tools;
  return ((input - cached) * price.input + cached * price.cachedInput + output * price.output) / 1_000_000;
}
