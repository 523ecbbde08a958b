/**
 * Providers: the accounts an agent CLI can run on (config `providers:`). A provider is
 * an agent CLI, how it is paid for, where its credentials are, its limits (concurrent
 * tasks, a rate with a burst) and its circuit breaker. Tasks name providers
 * (`providers: [a, b]`, tried in order) and the governor (src/runtime/governor/) decides,
 * fleet-wide, which one a task may use now.
 *
 * Config never holds a secret: `credentials` names the environment variable that holds
 * it on the worker's host, and the worker gives it to the agent's process only for tasks
 * of that provider.
 */
import { z } from "zod";
import { DurationSchema } from "./duration.js";
import { ConfigError, GraphError } from "./errors.js";
import { didYouMean, shortList } from "./suggest.js";

/** A provider's name: part of KV keys and subjects, so letters, digits, `_` and `-` only. */
export const PROVIDER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
export const ProviderNameSchema = z
  .string()
  .regex(PROVIDER_NAME_PATTERN, "a provider name: letters, digits, '_' and '-' (at most 64), starting with a letter or digit");

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name: letters, digits and '_', not starting with a digit");

/** How a provider's agent is paid for. */
export const PROVIDER_ACCESS = ["subscription", "api"] as const;
export type ProviderAccess = (typeof PROVIDER_ACCESS)[number];

/**
 * Where a provider's credential is: the variable the agent CLI reads (`env`), taken from
 * the worker's variable `from` (default: the same name). Two accounts of one CLI keep
 * their keys under two names on the worker (`from`) and both reach the CLI as `env`.
 */
export const ProviderCredentialsSchema = z.union([
  envName.transform((env): { env: string; from?: string } => ({ env })),
  z.object({ env: envName, from: envName.optional() }).strict(),
]);
export type ProviderCredentials = z.output<typeof ProviderCredentialsSchema>;

/** Circuit-breaker defaults: 3 consecutive provider failures open it for 1 minute; 1 probe; 2 successes close it. */
export const CIRCUIT_DEFAULTS = { failures: 3, cooldownMs: 60_000, probes: 1, successes: 2 } as const;

const CircuitFileSchema = z
  .object({
    /** Consecutive provider failures (auth, rate or usage limit, crash) that open the circuit. */
    failures: z.number().int().min(1).max(1_000).default(CIRCUIT_DEFAULTS.failures),
    /** How long an open circuit stays open (longer when the CLI reported a later reset time). */
    cooldown: DurationSchema.default(CIRCUIT_DEFAULTS.cooldownMs),
    /** Tasks let through at once while half-open (probes). */
    probes: z.number().int().min(1).max(100).default(CIRCUIT_DEFAULTS.probes),
    /** Successful probes that close it again. */
    successes: z.number().int().min(1).max(100).default(CIRCUIT_DEFAULTS.successes),
  })
  .strict()
  .transform(({ cooldown, ...rest }) => ({ ...rest, cooldownMs: cooldown }));

/** One provider as config `providers.<name>` writes it. */
export const ProviderSchema = z
  .object({
    /** The agent CLI (`claude`, `codex`, `gemini`, `cursor`, `aider`, or `shell`). */
    agent: z.string().min(1),
    access: z.enum(PROVIDER_ACCESS),
    /** The variable holding the credential (a name, never the secret): given to the child only for this provider. */
    credentials: ProviderCredentialsSchema.optional(),
    /** More environment for the agent of this provider only (e.g. CLAUDE_CONFIG_DIR of a second login); no secrets. */
    env: z.record(envName, z.union([z.string(), z.number(), z.boolean()]).transform(String)).optional(),
    limits: z
      .object({
        /** Tasks of this provider running at once, across every host. */
        concurrent: z.number().int().min(1).max(100_000).optional(),
        /** Tasks started per minute, across every host (a token bucket). */
        perMinute: z.number().positive().max(1_000_000).optional(),
        /** Tasks that may start at once after a quiet spell (the bucket's size); default 1. */
        burst: z.number().int().min(1).max(1_000_000).optional(),
        /**
         * Adaptive concurrency: cut `concurrent` by a quarter and `perMinute` by half when
         * the provider's error rate over `window` passes 20% (or the median task latency
         * passes `latency`); raise them by a third and a quarter when errors stay under 5%
         * and latency is healthy; never above the configured limits nor below the minimums;
         * at most one step per `cooldown`.
         */
        adaptive: z
          .object({
            minConcurrent: z.number().int().min(1).default(1),
            minPerMinute: z.number().positive().optional(),
            window: DurationSchema.default(300_000),
            latency: DurationSchema.optional(),
            cooldown: DurationSchema.default(60_000),
            /** Outcomes in the window before any step is taken. */
            minSamples: z.number().int().min(1).default(10),
          })
          .strict()
          .optional(),
      })
      .strict()
      .refine((l) => !l.adaptive || l.concurrent !== undefined || l.perMinute !== undefined, {
        message: "adaptive needs a limit to adjust: set concurrent or perMinute (the most it may raise them to)",
        path: ["adaptive"],
      })
      .default({}),
    circuit: CircuitFileSchema.default({ ...CIRCUIT_DEFAULTS }),
    /** The model in the price table (config `prices`) this provider's tasks are priced at. */
    prices: z.string().min(1).optional(),
    /**
     * Tokens a typical task of this provider uses, for `rotation: cost_optimized` (its
     * expected cost per task = these tokens at its `prices` model). Default: TASK_TOKENS_DEFAULT.
     */
    taskTokens: z.object({ input: z.number().int().min(0), output: z.number().int().min(0) }).strict().optional(),
  })
  .strict();
export type ProviderDef = z.output<typeof ProviderSchema>;

/**
 * The tokens of an "expected task" when a provider does not say (`taskTokens`).
 * ASSUMPTION, not measured: an agent task that reads a few files and writes a change;
 * cost_optimized only ranks providers by it, so what matters is that every provider is
 * priced on the same task. Set `taskTokens` per provider where you know better.
 */
export const TASK_TOKENS_DEFAULT = { input: 100_000, output: 10_000 } as const;

/**
 * What a task is expected to cost on provider `def` (USD): its `taskTokens` at the price
 * of its `prices` model (`priceOf`: the price table in force, USD per million tokens).
 * Undefined when it names no model or the table does not know it (never a guessed price).
 */
export function expectedTaskCost(
  def: Pick<ProviderDef, "prices" | "taskTokens">,
  priceOf: (model: string) => { input: number; output: number } | undefined,
): number | undefined {
  const price = def.prices === undefined ? undefined : priceOf(def.prices);
  if (!price) return undefined;
  const t = def.taskTokens ?? TASK_TOKENS_DEFAULT;
  return (t.input * price.input + t.output * price.output) / 1_000_000;
}

/**
 * How a task's provider list is used (graph or task `rotation:`; the governor applies it, rotationOrder in governor/decide.ts):
 * - `fallback` (default): in the order written; the next only when the first has no room.
 * - `round_robin`: the providers take turns (each balancer starts after the one it used
 *   last for that list), so equivalent accounts share the work; a provider without room
 *   is skipped as in `fallback`.
 * - `cost_optimized`: subscription accounts first (already paid for), then pay-per-use
 *   ones from the cheapest expected task up; ones with no known price last.
 */
export const ROTATIONS = ["fallback", "round_robin", "cost_optimized"] as const;
export type Rotation = (typeof ROTATIONS)[number];

/** Config `providers:`: provider name -> definition. */
export const ProvidersConfigSchema = z.record(ProviderNameSchema, ProviderSchema);
export type ProvidersConfig = z.output<typeof ProvidersConfigSchema>;

/**
 * What the balancer tells the worker about the provider a task runs on (in `task.work`):
 * enough to set up the agent's environment without the worker's own config.
 */
export const ProviderAssignmentSchema = z.object({
  name: ProviderNameSchema,
  agent: z.string().min(1),
  access: z.enum(PROVIDER_ACCESS),
  credentials: z.object({ env: envName, from: envName.optional() }).optional(),
  env: z.record(envName, z.string()).optional(),
  /**
   * The circuit-breaker settings of the balancer that granted the task: the worker
   * applies the attempt's outcome with them, so both judge by one rule.
   */
  circuit: z.object({ failures: z.number().int().min(1), cooldownMs: z.number().int().min(1), probes: z.number().int().min(1), successes: z.number().int().min(1) }),
  /** When the governor granted the permit (epoch ms, as the stored state records it): what the provider's rate limits. */
  grantedAt: z.number().int().min(0).optional(),
});
export type ProviderAssignment = z.output<typeof ProviderAssignmentSchema>;

/** The assignment for a task run on provider `name`, granted at `grantedAt` (epoch ms). */
export function providerAssignment(name: string, def: ProviderDef, grantedAt?: number): ProviderAssignment {
  return {
    name,
    agent: def.agent,
    access: def.access,
    circuit: def.circuit,
    ...(grantedAt !== undefined ? { grantedAt } : {}),
    ...(def.credentials ? { credentials: def.credentials } : {}),
    ...(def.env ? { env: def.env } : {}),
  };
}

/**
 * The variables the agent of a task on `assignment` gets on top of the task's: the
 * provider's `env` and its credential, read from the worker's environment. A credential
 * missing there is left out (the CLI's auth failure then counts against the provider's
 * circuit, and its message names the variable): `missing` says which, for the log.
 */
export function providerEnvironment(
  assignment: ProviderAssignment,
  workerEnv: Readonly<Record<string, string | undefined>>,
): { env: Record<string, string>; missing?: string } {
  const env: Record<string, string> = { ...assignment.env };
  const cred = assignment.credentials;
  if (!cred) return { env };
  const from = cred.from ?? cred.env;
  const value = workerEnv[from];
  if (value === undefined || value === "") return { env, missing: from };
  env[cred.env] = value;
  return { env };
}

/**
 * The worker variables that hold providers' credentials under names of their own (a
 * `from` other than the name the CLI reads): only ado reads them, so every agent gets
 * them blanked, and a provider's agent gets its value under the CLI's name only.
 * Variables the CLIs read themselves (ANTHROPIC_API_KEY, ...) are left to the agents'
 * own rules (their access mode).
 */
export function credentialHolders(providers: ProvidersConfig): string[] {
  const names = new Set<string>();
  for (const p of Object.values(providers)) if (p.credentials?.from && p.credentials.from !== p.credentials.env) names.add(p.credentials.from);
  return [...names].sort();
}

/**
 * Checks the config's providers against the agents ado has: a provider of an agent
 * nobody has would hold its tasks forever.
 */
export function checkProviderAgents(providers: ProvidersConfig, known: readonly string[]): void {
  for (const [name, p] of Object.entries(providers)) {
    if (!known.includes(p.agent)) {
      throw new ConfigError(`providers.${name}.agent: no agent '${p.agent}'${didYouMean(p.agent, known)}; the agents are: ${known.join(", ")}`);
    }
  }
}

/**
 * Checks that every provider a task names is configured. A task naming a provider this
 * config lacks would wait for it forever.
 */
export function checkProviders(graph: { tasks: ReadonlyArray<{ id: string; providers?: readonly string[] | undefined }> }, providers: ProvidersConfig): void {
  const known = Object.keys(providers);
  const bad: Array<{ task: string; name: string }> = [];
  for (const t of graph.tasks) for (const name of t.providers ?? []) if (!(name in providers)) bad.push({ task: t.id, name });
  if (!bad.length) return;
  const names = [...new Set(bad.map((b) => b.name))];
  const tasks = [...new Set(bad.map((b) => b.task))];
  throw new GraphError(
    `${tasks.length === 1 ? "task" : "tasks"} ${shortList(tasks.map((t) => `'${t}'`), 5)}: unknown provider ${names.map((n) => `'${n}'${didYouMean(n, known)}`).join(", ")}; ` +
      (known.length ? `the providers are: ${known.join(", ")}` : `no providers are configured: add them under 'providers:' in ado.config.yaml`),
    tasks,
  );
}
