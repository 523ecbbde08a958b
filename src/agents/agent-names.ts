/**
 * The agents ado knows, by the name a task's `agent:` gives. One list for everything that
 * names them: graph validation, the worker's adapters, the balancer's routing.
 */
export const AGENT_NAMES = ["claude", "codex", "gemini", "cursor", "aider", "shell", "noop"] as const;
export type AgentName = (typeof AGENT_NAMES)[number];

/** The agents that are external CLIs with an adapter (the others are built in). */
export const CLI_AGENT_NAMES = ["claude", "codex", "gemini", "cursor", "aider"] as const satisfies readonly AgentName[];
export type CliAgentName = (typeof CLI_AGENT_NAMES)[number];

/** Whether `name` is one of AGENT_NAMES. */
export function isAgentName(name: string): name is AgentName {
  return (AGENT_NAMES as readonly string[]).includes(name);
}
