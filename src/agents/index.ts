/**
 * Agents: one adapter per agent CLI (command line, environment, stream parser, failure
 * classes, cost), and the process machinery they share (process groups, pause and
 * resume, the reaper that outlives a dead worker). The worker imports only this file.
 */
export { builtinAgents, noopAgent, shellAgent } from "./builtin.js";
export { KILL_GRACE_MS, runProcessGroup } from "./process.js";
export { reaper } from "./reaper.js";
export { signalGroup, Suspender } from "./suspender.js";
export type { Agent, AgentContext, AgentOutcome, OutputStream, StopReason } from "./types.js";
