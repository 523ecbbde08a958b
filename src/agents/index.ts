/**
 * Agents: one adapter per agent CLI (command line, environment, stream parser, failure
 * classes, cost), and the process machinery they share (process groups, pause and
 * resume, the reaper that outlives a dead worker). The worker imports only this file.
 */
export { builtinAgents, noopAgent, shellAgent } from "./builtin.js";
export { executablePath, KILL_GRACE_MS, runProcessGroup, taskDir, type AbortReason, type RunOptions, type RunOutcome } from "./process.js";
export { reaper } from "./reaper.js";
export { signalGroup, Suspender } from "./suspender.js";
export type { Agent, AgentContext, AgentOutcome, AgentSessions, OutputStream, SessionPlace, StopReason } from "./types.js";

// Agent CLIs (claude, codex, gemini, cursor, aider).
export { AGENT_NAMES, CLI_AGENT_NAMES, isAgentName, type AgentName, type CliAgentName } from "./agent-names.js";
export {
  AgentCommandError,
  AgentConfigSchema,
  AgentsConfigSchema,
  AgentTaskOptionsSchema,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_LINGER_MS,
  type AgentConfig,
  type AgentsConfig,
  type AgentTaskOptions,
  type CliAdapter,
  type CliOutcome,
  type CommandInput,
  type CommandSpec,
  type ParserContext,
  type ProcessExit,
  type StreamParser,
} from "./adapter.js";
export { ADAPTERS, cliAgents, priceTable } from "./catalog.js";
export { CliAgent, type CliAgentSettings, type CliRunContext } from "./cli-agent.js";
export { agentFailure, parseResetTime, RETRYABLE, type FailureKind } from "./classify.js";
export { ACCESS_MODES, type AccessMode } from "./credentials.js";
export { toWireEvent, type AgentEvent, type AgentEventOf, type AgentEventType } from "./events.js";
export { costOf, DEFAULT_PRICES, priceOf, PriceTableSchema, type ModelPrice, type PriceTable, type TokenCounts } from "./prices.js";
export { checkLogin, forgetProbes, probeAgent, probeAgents, PROBE_TIMEOUT_MS, type AgentProbe, type LoginCheck } from "./probe.js";
export { diagnoseAgents, hostAgents, type AgentDiagnosis, type HostAgents } from "./host.js";
export { claudeSessionLayout, codexSessionLayout, packSession, unpackSession, type SessionLayout } from "./sessions.js";
