/**
 * Which provider credentials an agent CLI's process may see. A worker's environment
 * often holds keys of several providers; a CLI gets only those of its provider and
 * access mode, because a stray key changes who pays: with `ANTHROPIC_API_KEY` set,
 * Claude Code bills the API key pay-as-you-go instead of the logged-in subscription.
 */

/** How an agent is paid for: a logged-in subscription, an API key, or local models (no key). */
export const ACCESS_MODES = ["subscription", "api", "local"] as const;
export type AccessMode = (typeof ACCESS_MODES)[number];

/** Every credential variable ado knows, by provider. */
export const CREDENTIALS = {
  anthropic: { api: ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"], subscription: ["CLAUDE_CODE_OAUTH_TOKEN"] },
  openai: { api: ["OPENAI_API_KEY", "CODEX_API_KEY"], subscription: [] },
  google: { api: ["GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS"], subscription: [] },
  cursor: { api: ["CURSOR_API_KEY"], subscription: [] },
  /** Keys of other model APIs that aider (through litellm) can use. */
  other: {
    api: ["OPENROUTER_API_KEY", "DEEPSEEK_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY", "XAI_API_KEY", "COHERE_API_KEY", "AZURE_API_KEY", "TOGETHERAI_API_KEY", "FIREWORKS_API_KEY"],
    subscription: [],
  },
} as const satisfies Record<string, { api: readonly string[]; subscription: readonly string[] }>;
export type Provider = keyof typeof CREDENTIALS;

/** Every credential variable of every provider. */
export const ALL_CREDENTIALS: readonly string[] = Object.values(CREDENTIALS).flatMap((c) => [...c.api, ...c.subscription]);

/**
 * Variables that break a nested run of an agent CLI: Claude Code refuses to start when
 * `CLAUDECODE` says it runs inside another Claude Code session (ado itself may).
 */
export const NESTING_VARIABLES: readonly string[] = ["CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT"];

/** The credential variables a CLI of `providers` may see in `mode`. */
export function allowedCredentials(providers: readonly Provider[], mode: AccessMode): Set<string> {
  if (mode === "local") return new Set();
  return new Set(providers.flatMap((p) => [...CREDENTIALS[p][mode]]));
}

/**
 * What to remove from the environment the child would inherit (`inherited`, the worker's
 * own) and from what ado adds (`added`): credentials not allowed, and the nesting
 * variables. Returns the names to unset in the child and the added ones to keep.
 */
export function filterEnvironment(
  inherited: Readonly<Record<string, string | undefined>>,
  added: Readonly<Record<string, string>>,
  allowed: ReadonlySet<string>,
): { env: Record<string, string>; unset: string[]; withheld: string[] } {
  const banned = (name: string) => NESTING_VARIABLES.includes(name) || (ALL_CREDENTIALS.includes(name) && !allowed.has(name));
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(added)) if (!banned(k)) env[k] = v;
  const unset = Object.keys(inherited).filter((k) => inherited[k] !== undefined && banned(k) && !(k in env));
  const withheld = unset.filter((k) => ALL_CREDENTIALS.includes(k)).sort();
  return { env, unset: unset.sort(), withheld };
}
