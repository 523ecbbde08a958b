import { readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { GraphError } from "./errors.js";
import { ID_PATTERN } from "./ids.js";
import { DurationSchema } from "./duration.js";
import { didYouMean, shortList, shortPath } from "./suggest.js";
import { ProviderNameSchema, ROTATIONS } from "./providers.js";

export { DurationSchema };

/** Priority levels, highest first. */
export const Priority = {
  critical: "critical",
  high: "high",
  normal: "normal",
  low: "low",
  background: "background",
} as const;
export type Priority = (typeof Priority)[keyof typeof Priority];
export const PRIORITIES = Object.values(Priority) as [Priority, ...Priority[]];

const idSchema = z
  .string()
  .regex(ID_PATTERN, "letters, digits, '_' and '-' only (at most 64), starting with a letter or digit");

/** Balancing strategies (see src/actors/balancer/strategy.ts). */
export const STRATEGIES = ["least_loaded", "round_robin", "random", "capability_match", "cost_optimized"] as const;
export type Strategy = (typeof STRATEGIES)[number];

const labelList = z.array(z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, "labels are letters, digits, '_', '.', ':' or '-'")).default([]);

/** Where a task may run: worker labels it needs, capabilities it needs, or one worker. */
export const PlacementSchema = z
  .object({ labels: labelList, requires: labelList, worker: z.string().min(1).optional() })
  .strict();
export type Placement = z.output<typeof PlacementSchema>;

/** Retry policy on the wire: exponential backoff with jitter, in milliseconds. */
const RetryDefSchema = z
  .object({
    attempts: z.number().int().min(1).max(100).default(1),
    backoffMs: z.number().int().min(0).default(1_000),
    factor: z.number().min(1).max(10).default(2),
    maxBackoffMs: z.number().int().min(0).default(60_000),
    /** Fraction of the delay added or removed at random, 0..1. */
    jitter: z.number().min(0).max(1).default(0.2),
    /**
     * Times the task may be interrupted (its worker stopped or died while its agent ran)
     * and still run again; default: the graph's `maxInterruptions`, else 5. Attempts lost
     * before their agent started do not count.
     */
    maxInterruptions: z.number().int().min(0).max(1_000).optional(),
  })
  .strict();
const RETRY_DEFAULT = { attempts: 1, backoffMs: 1_000, factor: 2, maxBackoffMs: 60_000, jitter: 0.2 };

/** An environment variable name a task may set: ado's own (`ADO_*`) are not the task's to set. */
const envName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name: letters, digits and '_', not starting with a digit")
  .refine((n) => !n.toUpperCase().startsWith("ADO_"), "ADO_* variables are set by ado for every task; pick another name");

/**
 * A directory inside the task's worktree, relative to its root (`packages/api`): no
 * absolute path, no `..` out of the worktree.
 */
const worktreeSubdir = z
  .string()
  .min(1, "a directory relative to the worktree root, e.g. packages/api")
  .refine((d) => !path.posix.isAbsolute(d) && !/^[A-Za-z]:[\\/]/.test(d), "must be relative to the worktree root (e.g. packages/api), not an absolute path")
  .refine((d) => !path.posix.normalize(d.replace(/\\/g, "/")).split("/").includes(".."), "must stay inside the worktree: no '..'");

/** How an agent CLI is paid for (src/agents/credentials.ts ACCESS_MODES; spelled here, where agents may not be imported). */
export const AGENT_ACCESS_MODES = ["subscription", "api", "local"] as const;

/**
 * A task's settings for an agent CLI (claude, codex, gemini, cursor, aider), on the wire:
 * they win over the worker's config `agents.<name>`; `args` are added after the config's.
 * Ignored by the shell agent.
 */
const agentTaskFields = {
  /** The model (the CLI's name for it). */
  model: z.string().min(1).optional(),
  /** The most turns the agent may take (CLIs with such a limit: Claude Code). */
  maxTurns: z.number().int().min(1).optional(),
  /** Extra arguments for the CLI. */
  args: z.array(z.string()).optional(),
  /** No output for this long is a hang: the agent is killed and the attempt retried per its policy. */
  idleTimeoutMs: z.number().int().positive().optional(),
  /** How the agent is paid for, which chooses the credentials it is given. */
  access: z.enum(AGENT_ACCESS_MODES).optional(),
};

/** The most variants a best-of-N task may run. */
export const MAX_VARIANTS = 10;
/** A select command runs this long at most unless the graph says otherwise. */
export const DEFAULT_SELECT_TIMEOUT_MS = 10 * 60_000;

/**
 * Best-of-N: how many variants of the task run at once (`3`), or one agent per variant
 * (`[claude, codex, gemini]`). Checked by validateGraph (2 to MAX_VARIANTS), which can say
 * what was wrong better than a union's error.
 */
const VariantsSchema = z.union([z.number(), z.array(z.string().min(1))]);

/**
 * How the winner of a best-of-N task is picked, on the wire: the first variant (in the
 * order they finished) whose worktree passes `validate` (exit 0), or the highest number
 * the last line of `score` prints (each run in the variant's own worktree, by the worker
 * that ran it, once its work is committed), or the variant a `judge` agent names after
 * reading their diffs. Exactly one rule (validateGraph says so).
 */
export const SelectSchema = z
  .object({
    validate: z.string().min(1).optional(),
    score: z.string().min(1).optional(),
    /** A judge agent: given every successful variant's diff, it names the winner on the last line of its answer. */
    judge: z.string().min(1).optional(),
    timeoutMs: z.number().int().positive().default(DEFAULT_SELECT_TIMEOUT_MS),
  })
  .strict();
export type Select = z.output<typeof SelectSchema>;

/** The name of an object in the payload store: the SHA-256 of its bytes (see src/runtime/payloads.ts). */
export const PAYLOAD_REF = z.string().regex(/^sha256-[0-9a-f]{64}$/, "sha256- and 64 hex digits");

/**
 * A task as it travels on the wire and lives inside ado: defaults applied, durations in
 * milliseconds. Services in other languages submit this form (see docs/schemas).
 */
export const TaskDefSchema = z
  .object({
    id: idSchema,
    prompt: z.string().default(""),
    agent: z.string().min(1).default("shell"),
    run: z.string().optional(),
    needs: z.array(idSchema).default([]),
    priority: z.enum(PRIORITIES).default("normal"),
    timeoutMs: z.number().int().positive().optional(),
    retry: RetryDefSchema.default(RETRY_DEFAULT),
    placement: PlacementSchema.optional(),
    /** Extra environment of the agent's process (ado's ADO_* variables win over none: they cannot be set here). */
    env: z.record(envName, z.string()).optional(),
    /** Where the agent starts: a subdirectory of the task's worktree (default: its root). */
    cwd: worktreeSubdir.optional(),
    ...agentTaskFields,
    /**
     * The task's own cap in USD, per attempt: passed to the agent (CLIs that enforce one get
     * it, e.g. Claude's --max-budget-usd; the worker stops others past it), and the most the
     * scheduler reserves for the task against the run's budget.
     */
    maxCost: z.number().finite().positive("must be more than 0 (USD)").optional(),
    /**
     * Providers (config `providers:`) the task may run on, in order of preference: the
     * balancer gives it the first whose circuit is closed and whose limits allow it now,
     * and the task runs that provider's agent (`agent` is then not used).
     */
    providers: z.array(ProviderNameSchema).min(1, "name at least one provider, or leave 'providers' out").optional(),
    /** How `providers` is used: in order (`fallback`, the default), taking turns (`round_robin`), or cheapest first (`cost_optimized`). */
    rotation: z.enum(ROTATIONS).optional(),
    /**
     * Best-of-N: run this many attempts at once, each in its own worktree (or one per
     * agent listed); `select` picks the one that is merged, the others are kept under
     * `refs/ado/variants/<run>/<task>/<n>`.
     */
    variants: VariantsSchema.optional(),
    /** The rule that picks the winner among `variants`. */
    select: SelectSchema.optional(),
    /**
     * Set by the submitter for a prompt too large to travel in messages: the whole prompt
     * is in the object store `<prefix>-payloads` under this name (`sha256-<hex>` of its
     * UTF-8 bytes) and `prompt` holds its beginning. Workers read it before the agent runs.
     */
    promptRef: PAYLOAD_REF.optional(),
    /**
     * The stage of the graph (`stages:`) the task belongs to: the stage's `maxParallel`
     * bounds it with the stage's other tasks, and a graph file gives it the stage's agent
     * or providers when it names neither.
     */
    stage: idSchema.optional(),
  })
  .strict();

/**
 * A stage of a graph on the wire (`stages: { plan: {...}, implement: {...} }`): what
 * its tasks share. `agent` and `providers` are the defaults a graph file gives the
 * stage's tasks (resolved into the tasks when the file is read: on the wire each task
 * carries its own); `maxParallel` is enforced by the scheduler per run.
 */
export const StageDefSchema = z
  .object({
    /** The agent of the stage's tasks that name neither an agent nor providers. */
    agent: z.string().min(1).optional(),
    /** The providers (in order) of the stage's tasks that name neither an agent nor providers. */
    providers: z.array(ProviderNameSchema).min(1, "name at least one provider, or leave 'providers' out").optional(),
    /** At most this many of the stage's tasks queued or running at once, per run. */
    maxParallel: z.number().int().min(1).optional(),
    /**
     * At most this many of the stage's attempts start per minute, per run: the scheduler
     * spaces them evenly (60 s / perMinute apart), each held by the balancer until its time.
     */
    perMinute: z.number().positive().max(60_000).optional(),
    /**
     * The stage's circuit breaker, per run: `failures` failed attempts of its tasks in a
     * row (cancelled and interrupted ones say nothing of the stage and do not count) hold
     * its next attempts for `cooldownMs`; then one probe runs at a time until an attempt
     * succeeds (closed again) or fails (open for another cooldown).
     */
    circuit: z.object({ failures: z.number().int().min(1).max(1_000), cooldownMs: z.number().int().positive().default(60_000) }).strict().optional(),
    /**
     * Batching: up to `max` of the stage's tasks that are ready together (none needs
     * another: they are ready at once), of the same agent and providers, run as one attempt
     * of one agent in one worktree, their prompts given as a numbered list; the batch lands
     * as one commit and one merge. A failed batch runs its tasks one by one. `waitMs`:
     * the stage's batchable tasks that become ready wait up to this long (from the first
     * of them) for more to join, and go at once when `max` of them are waiting.
     */
    batch: z.object({ max: z.number().int().min(2).max(100), waitMs: z.number().int().positive().max(24 * 3_600_000).optional() }).strict().optional(),
  })
  .strict();
export type StageDef = z.output<typeof StageDefSchema>;

/** An agent's settings as a graph file writes them: for a task, or as the graph's defaults for every task of that agent. */
const AgentFileFieldsSchema = z
  .object({
    model: agentTaskFields.model,
    maxTurns: agentTaskFields.maxTurns,
    args: agentTaskFields.args,
    idleTimeout: DurationSchema.optional(),
    access: agentTaskFields.access,
  })
  .strict();
type AgentFileFields = z.output<typeof AgentFileFieldsSchema>;

/** How a task branch lands on the integration branch (see src/git/integrate.ts). */
export const MERGE_MODES = ["merge", "squash", "linear"] as const;
/** Per-path conflict strategies, tried before the resolver agent. */
export const PATH_STRATEGIES = ["union", "ours", "theirs", "regenerate"] as const;
/** Resolver and validation commands run this long at most unless they say otherwise. */
export const DEFAULT_MERGE_COMMAND_TIMEOUT_MS = 10 * 60_000;

/** `regenerate` needs the command that regenerates the files; the other strategies take none. */
export const PathRuleSchema = z
  .object({
    /** Globs matched against repository-relative paths (`CHANGELOG.md`, `**\/*.lock`). */
    paths: z.array(z.string().min(1)).min(1, "a rule needs at least one path glob"),
    strategy: z.enum(PATH_STRATEGIES),
    /** For `regenerate`: a shell command run at the root of a worktree holding the merge. */
    command: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (rule.strategy === "regenerate" && !rule.command) {
      ctx.addIssue({ code: "custom", path: ["command"], message: 'strategy "regenerate" needs a command that regenerates the files, e.g. command: "npm install"' });
    }
    if (rule.strategy !== "regenerate" && rule.command) {
      ctx.addIssue({ code: "custom", path: ["command"], message: `only strategy "regenerate" runs a command; "${rule.strategy}" takes none` });
    }
  });

/** A shell command with its time limit, on the wire. */
const MergeCommandSchema = z.object({ run: z.string().min(1), timeoutMs: z.number().int().positive() }).strict();

/**
 * A branch name as `git check-ref-format --branch` would take it (the common cases;
 * the CLI asks git itself before submitting).
 */
const branchName = z
  .string()
  .regex(/^(?!-)(?!.*\.\.)(?!.*\/\/)(?!.*@\{)[^\s~^:?*[\\\x00-\x1f\x7f]+(?<![./])$/, "a git branch name such as main or release/1.2 (no refs/heads/)")
  .refine((b) => !b.startsWith("refs/"), "a branch name without refs/heads/, e.g. main");

/**
 * Merge settings as one layer (config, graph file, command line) gives them: every
 * field optional, so a layer overrides only what it names. resolveMergeSettings()
 * combines the layers into MergeSettings.
 */
export const MergeOverridesSchema = z
  .object({
    mode: z.enum(MERGE_MODES).optional(),
    /** First matching rule wins; a later layer's rules are tried before an earlier one's. */
    rules: z.array(PathRuleSchema).optional(),
    /** A resolver agent: gets the conflict in a scratch worktree (ADO_CONFLICTS_FILE). */
    resolver: MergeCommandSchema.optional(),
    /** Run on every merged tree before the integration branch moves; failing backs the merge out. */
    validate: MergeCommandSchema.optional(),
    /** When the run succeeds, bring this branch up to the integration branch (only when safe). */
    into: branchName.optional(),
    /**
     * With `into`: when that branch is checked out in a worktree with no uncommitted
     * changes and the update is a fast-forward, fast-forward that checkout too
     * (`git merge --ff-only` there). Off: such a branch is left alone and the command
     * to run is reported.
     */
    updateCheckout: z.boolean().optional(),
  })
  .strict();
export type MergeOverrides = z.output<typeof MergeOverridesSchema>;

/** A run's effective merge settings: what every merger replica applies to the run. */
export const MergeSettingsSchema = MergeOverridesSchema.extend({
  mode: z.enum(MERGE_MODES).default("merge"),
  rules: z.array(PathRuleSchema).default([]),
}).strict();
export type MergeSettings = z.output<typeof MergeSettingsSchema>;

/** A merge command as a person writes it: `{ run: "npm test", timeout: "10m" }`. */
const MergeCommandFileSchema = z
  .object({ run: z.string().min(1), timeout: DurationSchema.optional() })
  .strict()
  .transform(({ run, timeout }) => ({ run, timeoutMs: timeout ?? DEFAULT_MERGE_COMMAND_TIMEOUT_MS }));

/** The `merge:` section of a graph file or of ado.config.yaml. */
export const MergeFileSchema = MergeOverridesSchema.extend({
  resolver: MergeCommandFileSchema.optional(),
  validate: MergeCommandFileSchema.optional(),
}).strict();

/**
 * Combines merge-setting layers, lowest precedence first (config, graph, flags): scalar
 * fields take the last layer that sets them; rules of later layers come first, so a
 * graph's rule wins over the config's for the same path and the config's still apply
 * to the rest.
 */
export function resolveMergeSettings(...layers: (MergeOverrides | undefined)[]): MergeSettings {
  const out: MergeSettings = { mode: "merge", rules: [] };
  for (const layer of layers) {
    if (!layer) continue;
    if (layer.mode) out.mode = layer.mode;
    if (layer.rules) out.rules = [...layer.rules, ...out.rules];
    if (layer.resolver) out.resolver = layer.resolver;
    if (layer.validate) out.validate = layer.validate;
    if (layer.into) out.into = layer.into;
    if (layer.updateCheckout !== undefined) out.updateCheckout = layer.updateCheckout;
  }
  return out;
}

/** Run-wide settings, on the wire. */
const runSettings = {
  name: z.string().min(1).default("run"),
  /** Stop the whole run (cancel what runs) when a task fails for good; default: skip its dependents. */
  failFast: z.boolean().default(false),
  /** At most this many of the run's tasks queued or running at once. */
  maxParallel: z.number().int().min(1).optional(),
  /** Placement for tasks that name none. */
  placement: PlacementSchema.optional(),
  /** Balancing strategy for this run's tasks; default from the balancer's config. */
  strategy: z.enum(STRATEGIES).optional(),
  /** Interruptions each task may take (its `retry.maxInterruptions` overrides); default 5. */
  maxInterruptions: z.number().int().min(0).max(1_000).optional(),
  /** The run's budget in USD (every attempt counts); `ado run --max-cost` overrides it. See src/runtime/budget.ts. */
  maxCost: z.number().finite().positive("must be more than 0 (USD)").optional(),
  /** The run's budget in tokens (input + output), for agents that report no dollars (subscriptions). */
  maxTokens: z.number().int().positive("must be a whole number of tokens, more than 0").optional(),
};

/** A graph on the wire. */
export const GraphDefSchema = z
  .object({
    ...runSettings,
    maxDurationMs: z.number().int().positive().optional(),
    /** The graph's own merge settings, over the submitter's config (see resolveMergeSettings). */
    merge: MergeOverridesSchema.optional(),
    /** The graph's stages by name, in order (plan, implement, review, test): see StageDefSchema. */
    stages: z.record(idSchema, StageDefSchema).optional(),
    tasks: z.array(TaskDefSchema).min(1, "a graph needs at least one task"),
  })
  .strict();

/** One task as written in a graph file: durations as "30s", "5m", or seconds. */
const TaskFileSchema = TaskDefSchema.omit({ timeoutMs: true, retry: true, env: true, idleTimeoutMs: true, promptRef: true, select: true })
  .extend({
    /** Left out: the stage's agent (or providers), else `shell` (resolved by GraphFileSchema). */
    agent: z.string().min(1).optional(),
    /** `select: { validate: "npm test", timeout: "5m" }`, `{ score: "<command>" }`. */
    select: z
      .object({ validate: z.string().min(1).optional(), score: z.string().min(1).optional(), judge: z.string().min(1).optional(), timeout: DurationSchema.optional() })
      .strict()
      .transform(({ timeout, ...rule }) => ({ ...rule, timeoutMs: timeout ?? DEFAULT_SELECT_TIMEOUT_MS }))
      .optional(),
    idleTimeout: DurationSchema.optional(),
    /** YAML reads `DEBUG: 1` as a number: numbers and booleans are taken as their text. */
    env: z.record(envName, z.union([z.string(), z.number(), z.boolean()]).transform(String)).optional(),
    /** One provider: shorthand for `providers: [name]`. */
    provider: ProviderNameSchema.optional(),
    /** The prompt read from this file, relative to the graph file (loadGraphFile reads it). */
    promptFile: z.string().min(1).optional(),
    timeout: DurationSchema.optional(),
    retry: z
      .object({
        attempts: z.number().int().min(1).max(100).default(1),
        backoff: DurationSchema.optional(),
        factor: z.number().min(1).max(10).optional(),
        maxBackoff: DurationSchema.optional(),
        jitter: z.number().min(0).max(1).optional(),
        maxInterruptions: z.number().int().min(0).max(1_000).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((t, ctx) => {
    // loadGraphFile replaces promptFile with the file's text before the schema sees it.
    if (t.promptFile !== undefined) {
      ctx.addIssue({ code: "custom", path: ["promptFile"], message: "is read relative to the graph file: give the graph as a file (ado run --graph FILE)" });
    }
    if (t.provider !== undefined && t.providers !== undefined) {
      ctx.addIssue({ code: "custom", path: ["provider"], message: "give either 'provider: <name>' or 'providers: [<name>, ...]', not both" });
    }
    if (t.rotation !== undefined && t.providers === undefined) {
      ctx.addIssue({ code: "custom", path: ["rotation"], message: "says how a task's providers take turns: give the task 'providers: [<name>, ...]' too, or leave 'rotation' out" });
    }
  })
  .transform(({ timeout, idleTimeout, retry, promptFile: _promptFile, provider, ...rest }): TaskFileDef => ({
    ...rest,
    ...(provider === undefined ? {} : { providers: [provider] }),
    ...(timeout === undefined ? {} : { timeoutMs: timeout }),
    ...(idleTimeout === undefined ? {} : { idleTimeoutMs: idleTimeout }),
    retry: {
      attempts: retry?.attempts ?? RETRY_DEFAULT.attempts,
      backoffMs: retry?.backoff ?? RETRY_DEFAULT.backoffMs,
      factor: retry?.factor ?? RETRY_DEFAULT.factor,
      maxBackoffMs: retry?.maxBackoff ?? RETRY_DEFAULT.maxBackoffMs,
      jitter: retry?.jitter ?? RETRY_DEFAULT.jitter,
      ...(retry?.maxInterruptions === undefined ? {} : { maxInterruptions: retry.maxInterruptions }),
    },
  }));

/** A task as a graph file gives it, before its stage's and agent's defaults: its agent may be left to its stage. */
type TaskFileDef = Omit<TaskDef, "agent"> & { agent?: string };

/** A stage as a graph file writes it: `provider: x` is shorthand for `providers: [x]`. */
const StageFileSchema = StageDefSchema.extend({
  /** One provider: shorthand for `providers: [name]`. */
  provider: ProviderNameSchema.optional(),
  circuit: z
    .object({ failures: z.number().int().min(1).max(1_000), cooldown: DurationSchema.default(60_000) })
    .strict()
    .transform(({ failures, cooldown }) => ({ failures, cooldownMs: cooldown }))
    .optional(),
  /** `size` is `max` under the issue's name; `wait` a duration (`wait: 5s`). */
  batch: z
    .object({ max: z.number().int().min(2).max(100).optional(), size: z.number().int().min(2).max(100).optional(), wait: DurationSchema.optional() })
    .strict()
    .superRefine((b, ctx) => {
      if (b.max !== undefined && b.size !== undefined) ctx.addIssue({ code: "custom", path: ["size"], message: "give the batch's size as 'size' or 'max', not both" });
      if (b.max === undefined && b.size === undefined) ctx.addIssue({ code: "custom", path: ["size"], message: "say how many tasks a batch holds at most: batch: { size: 5, wait: 10s }" });
      if (b.wait !== undefined && b.wait > 24 * 3_600_000) ctx.addIssue({ code: "custom", path: ["wait"], message: "must be at most 24h (how long ready tasks wait for more to join their batch; a few seconds is usual)" });
    })
    .transform(({ max, size, wait }) => ({ max: (max ?? size)!, ...(wait === undefined ? {} : { waitMs: wait }) }))
    .optional(),
})
  .strict()
  .superRefine((st, ctx) => {
    if (st.provider !== undefined && st.providers !== undefined) {
      ctx.addIssue({ code: "custom", path: ["provider"], message: "give either 'provider: <name>' or 'providers: [<name>, ...]', not both" });
    }
    if (st.agent !== undefined && (st.provider !== undefined || st.providers !== undefined)) {
      ctx.addIssue({ code: "custom", path: ["agent"], message: "give the stage an agent or providers, not both (a provider names its own agent)" });
    }
  })
  .transform(({ provider, ...rest }): StageDef => ({ ...rest, ...(provider === undefined ? {} : { providers: [provider] }) }));

/** A graph file: a name, run settings and its tasks. */
export const GraphFileSchema = z
  .object({
    ...runSettings,
    maxDuration: DurationSchema.optional(),
    merge: MergeFileSchema.optional(),
    /**
     * Stages (`stages: { plan: { agent: claude, maxParallel: 1 }, ... }`): a task names
     * its `stage`, and takes the stage's agent or providers when it names neither.
     */
    stages: z.record(idSchema, StageFileSchema).optional(),
    /**
     * Defaults for the tasks of each agent CLI (`agents: { claude: { model: opus, maxTurns: 40 } }`):
     * a task's own setting wins. Resolved into the tasks when the file is read.
     */
    agents: z.record(z.string().min(1), AgentFileFieldsSchema).optional(),
    /** How every task's `providers` list is used unless the task says (`rotation:` of a task). */
    rotation: z.enum(ROTATIONS).optional(),
    tasks: z.array(TaskFileSchema).min(1, "a graph needs at least one task"),
  })
  .strict()
  .transform(({ maxDuration, agents, rotation, ...rest }): Graph => {
    // The stage's agent or providers first: its providers get the graph's rotation, its agent the agent's defaults.
    const tasks = rest.tasks.map((t) => {
      const staged = withStageDefaults(t, t.stage === undefined ? undefined : rest.stages?.[t.stage]);
      const rotated = rotation !== undefined && staged.providers && staged.rotation === undefined ? { ...staged, rotation } : staged;
      return agents ? withAgentDefaults(rotated, agents[rotated.agent]) : rotated;
    });
    const graph = { ...rest, tasks };
    return maxDuration === undefined ? graph : { ...graph, maxDurationMs: maxDuration };
  });

/**
 * A task with its stage's agent or providers when it names neither (a task that names
 * either keeps its own choice whole). A stage unknown here is left for validateGraph to
 * name. Without both, the agent is `shell`.
 */
export function withStageDefaults(task: TaskFileDef, stage: StageDef | undefined): TaskDef {
  if (task.agent !== undefined || task.providers !== undefined || !stage) return { ...task, agent: task.agent ?? "shell" };
  if (stage.providers) return { ...task, agent: "shell", providers: [...stage.providers] };
  return { ...task, agent: stage.agent ?? "shell" };
}

/** A task with the graph's defaults for its agent under its own settings. */
function withAgentDefaults(task: TaskDef, defaults: AgentFileFields | undefined): TaskDef {
  if (!defaults) return task;
  const { idleTimeout, ...rest } = defaults;
  const fromGraph: Partial<TaskDef> = { ...rest, ...(idleTimeout === undefined ? {} : { idleTimeoutMs: idleTimeout }) };
  const own = Object.fromEntries(Object.entries(task).filter(([, v]) => v !== undefined));
  return { ...fromGraph, ...own } as TaskDef;
}

export type TaskDef = z.output<typeof TaskDefSchema>;
export type Graph = z.output<typeof GraphDefSchema>;
/** A graph as code may write it: defaults optional. */
export type GraphInput = z.input<typeof GraphDefSchema>;

/**
 * Longest remaining path, in tasks, from each task to the end of the graph. Ready tasks
 * of one priority level go longest-first, so a run's critical path is never starved by
 * its side branches. Iterative (Kahn over dependents), for graphs of any depth.
 */
export function remainingPathLengths(tasks: readonly Pick<TaskDef, "id" | "needs">[]): Map<string, number> {
  const dependents = new Map<string, string[]>(tasks.map((t) => [t.id, []]));
  for (const t of tasks) for (const d of t.needs) dependents.get(d)?.push(t.id);
  const pendingOut = new Map(tasks.map((t) => [t.id, dependents.get(t.id)!.length]));
  const needs = new Map(tasks.map((t) => [t.id, t.needs]));
  const length = new Map<string, number>();
  const queue = tasks.filter((t) => pendingOut.get(t.id) === 0).map((t) => t.id);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i]!;
    let longest = 0;
    for (const d of dependents.get(id)!) longest = Math.max(longest, length.get(d)!);
    length.set(id, longest + 1);
    for (const dep of needs.get(id) ?? []) {
      const left = pendingOut.get(dep)! - 1;
      pendingOut.set(dep, left);
      if (left === 0) queue.push(dep);
    }
  }
  return length;
}

/**
 * Checks what a schema cannot: duplicate ids, unknown dependencies and stages, cycles,
 * and agent fields (the shell agent needs `run`). Errors name the tasks involved, and a cycle is
 * reported as its path ("a -> b -> c -> a").
 */
export function validateGraph(graph: Graph): Graph {
  const ids = new Set<string>();
  for (const t of graph.tasks) {
    if (ids.has(t.id)) throw new GraphError(`task id '${t.id}' appears more than once: task ids must be unique`, [t.id]);
    ids.add(t.id);
  }
  for (const t of graph.tasks) {
    for (const dep of t.needs) {
      if (!ids.has(dep)) {
        throw new GraphError(`task '${t.id}' needs '${dep}', which is not in the graph${didYouMean(dep, ids)}`, [t.id, dep]);
      }
      if (dep === t.id) throw new GraphError(`task '${t.id}' needs itself: cycle ${t.id} -> ${t.id}`, [t.id]);
    }
    if (t.stage !== undefined && !graph.stages?.[t.stage]) {
      const stages = Object.keys(graph.stages ?? {});
      throw new GraphError(
        `task '${t.id}' names stage '${t.stage}', which the graph does not declare${didYouMean(t.stage, stages)}: ` +
          (stages.length ? `its stages are ${stages.join(", ")}` : `declare it under 'stages:' (stages: { ${t.stage}: { maxParallel: 2 } }) or remove the task's 'stage'`),
        [t.id],
      );
    }
    if ((t.agent === "shell" || variantAgents(t)?.includes("shell")) && !t.providers && !t.run?.trim()) {
      throw new GraphError(`task '${t.id}' uses the shell agent but has no 'run' command: add run: "<command>"`, [t.id]);
    }
    checkVariants(t);
  }
  const cycle = findCycle(graph.tasks);
  if (cycle) throw new GraphError(`the graph has a cycle: ${shortPath(cycle)}`, cycle);
  return graph;
}

/** The agents a best-of-N task's variants run, when it lists them (`variants: [claude, codex]`). */
export function variantAgents(t: Pick<TaskDef, "variants">): string[] | undefined {
  return Array.isArray(t.variants) ? t.variants : undefined;
}

/** How many variants a task runs: 1 for a task without `variants`. */
export function variantCount(t: Pick<TaskDef, "variants">): number {
  return t.variants === undefined ? 1 : Array.isArray(t.variants) ? t.variants.length : t.variants;
}

/** A best-of-N task's `variants` and `select`, as a person can fix them. */
function checkVariants(t: TaskDef): void {
  const bad = (msg: string) => new GraphError(`task '${t.id}': ${msg}`, [t.id]);
  const v = t.variants;
  if (v === undefined) {
    if (t.select) throw bad(`'select' picks one of the task's variants, but it has none: add variants: 3 (or a list of agents), or remove select`);
    return;
  }
  if (typeof v === "number") {
    if (!Number.isInteger(v) || v < 2 || v > MAX_VARIANTS) {
      throw bad(`variants must be a whole number from 2 to ${MAX_VARIANTS} (or a list of 2 to ${MAX_VARIANTS} agents), got ${v}`);
    }
  } else {
    if (v.length < 2 || v.length > MAX_VARIANTS) throw bad(`variants lists ${v.length} agent(s): list 2 to ${MAX_VARIANTS}, one per variant (or give a number)`);
    if (t.providers) {
      throw bad(`variants lists agents, but the task runs on providers (${t.providers.join(", ")}): give variants as a number, and each variant starts at the next provider of the list`);
    }
  }
  const s = t.select;
  if (!s) {
    throw bad(
      `runs ${variantCount(t)} variants but has no rule to pick one: add select: { validate: "<command>" } (the first to pass wins), select: { score: "<command>" } (the highest number on its last line wins) or select: { judge: <agent> } (an agent reads their diffs and names one)`,
    );
  }
  const rules = (["validate", "score", "judge"] as const).filter((k) => s[k] !== undefined);
  if (rules.length !== 1) {
    throw bad(`select needs exactly one rule, validate, score or judge${rules.length ? `; it has ${rules.join(" and ")}` : ""}`);
  }
}

/**
 * Checks that every task names an agent in `known` (the agents ado has: the CLI passes
 * the agents index's list). A name nobody knows would wait forever for a worker that
 * has it.
 */
export function checkAgents(graph: Pick<Graph, "tasks">, known: readonly string[]): void {
  const agentsOf = (t: TaskDef) => [...(variantAgents(t) ?? [t.agent]), ...(t.select?.judge ? [t.select.judge] : [])];
  const unknown = graph.tasks.filter((t) => agentsOf(t).some((a) => !known.includes(a)));
  if (!unknown.length) return;
  const names = [...new Set(unknown.flatMap((t) => agentsOf(t).filter((a) => !known.includes(a))))];
  const tasks = shortList(unknown.map((t) => `'${t.id}'`), 5);
  throw new GraphError(
    `${unknown.length === 1 ? "task" : "tasks"} ${tasks}: unknown agent ${names.map((n) => `'${n}'${didYouMean(n, known)}`).join(", ")}; ` +
      `the agents are: ${known.join(", ")}`,
    unknown.map((t) => t.id),
  );
}

/** Returns one cycle as a closed path (first id repeated at the end), or undefined. */
export function findCycle(tasks: readonly Pick<TaskDef, "id" | "needs">[]): string[] | undefined {
  const needs = new Map(tasks.map((t) => [t.id, t.needs]));
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  // Iterative DFS: graphs of thousands of tasks must not overflow the call stack.
  for (const root of needs.keys()) {
    if (state.has(root)) continue;
    const frames: Array<{ id: string; next: number }> = [{ id: root, next: 0 }];
    state.set(root, "visiting");
    stack.push(root);
    while (frames.length > 0) {
      const frame = frames[frames.length - 1]!;
      const deps = needs.get(frame.id) ?? [];
      if (frame.next < deps.length) {
        const dep = deps[frame.next++]!;
        const s = state.get(dep);
        if (s === "visiting") return [...stack.slice(stack.indexOf(dep)), dep];
        if (s === undefined && needs.has(dep)) {
          state.set(dep, "visiting");
          stack.push(dep);
          frames.push({ id: dep, next: 0 });
        }
      } else {
        state.set(frame.id, "done");
        stack.pop();
        frames.pop();
      }
    }
  }
  return undefined;
}

/** Parses and validates a graph given as YAML (or JSON) text. */
export function parseGraph(text: string, source = "graph"): Graph {
  return validateIn(source, parseGraphObject(parseGraphText(text, source), source));
}

/** validateGraph, its errors prefixed with the file they are about. */
function validateIn(source: string, graph: Graph): Graph {
  try {
    return validateGraph(graph);
  } catch (err) {
    if (err instanceof GraphError) throw new GraphError(`${source}: ${err.message}`, err.tasks);
    throw err;
  }
}

/** `source: problem`, or `source:` and one problem a line. */
const about = (source: string, problems: string) => `${source}:${problems.startsWith("\n") ? "" : " "}${problems}`;

function parseGraphText(text: string, source: string): unknown {
  try {
    return parseYaml(text);
  } catch (err) {
    throw new GraphError(`${source}: not valid YAML: ${(err as Error).message}`);
  }
}

/**
 * Reads, parses and validates a graph file. A task's `promptFile` is read relative to
 * the graph file's directory and becomes its prompt.
 */
export async function loadGraphFile(file: string): Promise<Graph> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new GraphError(`cannot read graph file '${file}': ${(err as Error).message}`);
  }
  const raw = parseGraphText(text, file);
  const tasks = (raw as { tasks?: unknown } | null)?.tasks;
  if (Array.isArray(tasks)) {
    for (const [i, t] of tasks.entries()) {
      if (!t || typeof t !== "object" || !("promptFile" in t)) continue;
      const task = t as Record<string, unknown>;
      const where = `${file}: ${taskLabel(task, i)}`;
      if (typeof task.promptFile !== "string" || !task.promptFile) throw new GraphError(`${where}: promptFile: a file name, relative to the graph file`);
      if (task.prompt !== undefined) throw new GraphError(`${where}: give prompt or promptFile, not both`);
      const promptPath = path.resolve(path.dirname(file), task.promptFile);
      try {
        task.prompt = await readFile(promptPath, "utf8");
      } catch (err) {
        throw new GraphError(`${where}: promptFile '${task.promptFile}' cannot be read (${promptPath}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      delete task.promptFile;
    }
  }
  return validateIn(file, parseGraphObject(raw, file));
}

/** Validates an already-parsed graph-file object against the schema. */
export function parseGraphObject(raw: unknown, source = "graph"): Graph {
  const parsed = GraphFileSchema.safeParse(raw, { error: friendlyIssue });
  if (!parsed.success) throw new GraphError(about(source, formatIssues(parsed.error, { input: raw, schema: GraphFileSchema })));
  return parsed.data;
}

/**
 * Messages for zod's built-in checks in the words of a person writing a file ("must be
 * at least 1, got 0"), given to `safeParse` as its error map. A schema's own message
 * still wins over it.
 */
export const friendlyIssue: z.core.$ZodErrorMap = (iss) => {
  const got = (v: unknown) => (v === undefined ? "nothing" : typeof v === "string" ? JSON.stringify(v) : Array.isArray(v) ? "a list" : v === null ? "null" : typeof v === "object" ? "a mapping" : String(v));
  const a = (what: string) =>
    ({ int: "a whole number", number: "a number", string: "text", boolean: "true or false", array: "a list", object: "a mapping", record: "a mapping" })[what] ?? `a ${what}`;
  switch (iss.code) {
    case "invalid_type":
      return iss.input === undefined ? "is required" : `must be ${a(iss.expected)}, got ${got(iss.input)}`;
    case "too_small": {
      const min = Number(iss.minimum);
      if (iss.origin === "string") return min <= 1 ? "must not be empty" : `must be at least ${min} characters`;
      if (iss.origin === "array" || iss.origin === "set") return `needs at least ${min} item${min === 1 ? "" : "s"}`;
      return `${iss.inclusive ? `must be at least ${min}` : `must be more than ${min}`}, got ${got(iss.input)}`;
    }
    case "too_big": {
      const max = Number(iss.maximum);
      if (iss.origin === "string") return `must be at most ${max} characters`;
      if (iss.origin === "array" || iss.origin === "set") return `takes at most ${max} item${max === 1 ? "" : "s"}`;
      return `${iss.inclusive ? `must be at most ${max}` : `must be less than ${max}`}, got ${got(iss.input)}`;
    }
    case "invalid_value":
      return `must be one of ${iss.values.map((v) => JSON.stringify(v)).join(", ")}, got ${got(iss.input)}${typeof iss.input === "string" ? didYouMean(iss.input, iss.values.map(String)) : ""}`;
    case "invalid_format":
      return `must match ${"pattern" in iss ? String(iss.pattern) : iss.format}, got ${got(iss.input)}`;
    case "invalid_union":
      return `got ${got(iss.input)}, which is none of the forms allowed here`;
    default:
      return undefined;
  }
};

/** At most this many problems are listed; the rest are counted. */
const MAX_ISSUES = 8;

/**
 * Formats zod issues for a person: one problem as it is, several one a line (the text
 * then starts with a line break). With the parsed `input`, a task
 * is named by its id (`task 'b': timeout: ...`) rather than its position; with the
 * `schema`, an unknown field gets a "did you mean" from the fields allowed there.
 */
export function formatIssues(error: z.ZodError, opts: { input?: unknown; schema?: z.ZodType } = {}): string {
  const lines = error.issues.map((issue) => {
    const where = locate(issue.path, opts.input);
    let msg = issue.message;
    if (issue.code === "unrecognized_keys") {
      const known = opts.schema ? fieldsAt(opts.schema, issue.path) : undefined;
      msg = issue.keys
        .map((k) => `unknown field '${k}'${known ? didYouMean(k, known) : ""}`)
        .join("; ");
      if (known && !issue.keys.some((k) => didYouMean(k, known))) msg += ` (fields here: ${known.join(", ")})`;
    } else if (issue.code === "invalid_key") {
      const key = issue.path[issue.path.length - 1];
      msg = `'${String(key)}': ${issue.issues.map((i) => i.message).join("; ")}`;
      return `${locate(issue.path.slice(0, -1), opts.input)}: ${msg}`;
    } else if (issue.code === "invalid_value" && !/got /.test(msg)) {
      // Decoding wire payloads (no error map): still name what is allowed.
      msg = `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    }
    return `${where}: ${msg}`;
  });
  const shown = lines.slice(0, MAX_ISSUES);
  if (lines.length > MAX_ISSUES) shown.push(`... and ${lines.length - MAX_ISSUES} more problem(s)`);
  return shown.length === 1 ? shown[0]! : "\n  " + shown.join("\n  ");
}

/** `task 'b'` for a task with an id, else its position (`task #2`). */
function taskLabel(task: unknown, index: number): string {
  const id = task && typeof task === "object" ? (task as { id?: unknown }).id : undefined;
  return typeof id === "string" && id ? `task '${id}'` : `task #${index + 1} (no id)`;
}

/** An issue's place: `task 'b': retry.attempts`, `merge.rules[0].strategy`, `(top level)`. */
function locate(issuePath: readonly PropertyKey[], input: unknown): string {
  const parts: string[] = [];
  let node: unknown = input;
  for (let i = 0; i < issuePath.length; i++) {
    const seg = issuePath[i]!;
    const next = issuePath[i + 1];
    if (seg === "tasks" && i === 0 && typeof next === "number" && input !== undefined) {
      const task = Array.isArray(node) ? undefined : (node as { tasks?: unknown[] } | null)?.tasks?.[next];
      parts.push(`${taskLabel(task, next)}:`);
      node = task;
      i++;
      continue;
    }
    if (typeof seg === "number") {
      const last = parts.pop() ?? "";
      parts.push(`${last}[${seg}]`);
    } else {
      parts.push(String(seg));
    }
    node = node && typeof node === "object" ? (node as Record<PropertyKey, unknown>)[seg] : undefined;
  }
  if (!parts.length) return "(top level)";
  // "task 'b':" then "retry", "attempts" -> "task 'b': retry.attempts"
  const out: string[] = [];
  for (const p of parts) {
    const prev = out[out.length - 1];
    if (prev === undefined || prev.endsWith(":")) out.push(p);
    else out[out.length - 1] = `${prev}.${p}`;
  }
  return out.join(" ").replace(/:$/, "");
}

/** The fields an object schema allows at `at` (through optional, default, pipe and array wrappers). */
function fieldsAt(schema: z.ZodType, at: readonly PropertyKey[]): string[] | undefined {
  type Def = { type: string; innerType?: unknown; in?: unknown; element?: unknown; valueType?: unknown; shape?: Record<string, unknown> };
  const defOf = (s: unknown): Def | undefined => (s as { _zod?: { def?: Def } } | undefined)?._zod?.def;
  const unwrap = (s: unknown): unknown => {
    for (let d = defOf(s); d; d = defOf(s)) {
      if (d.innerType !== undefined && ["optional", "nullable", "default", "prefault", "readonly", "catch", "nonoptional"].includes(d.type)) s = d.innerType;
      else if (d.type === "pipe") s = d.in;
      else break;
    }
    return s;
  };
  let s = unwrap(schema);
  for (const seg of at) {
    const d = defOf(s);
    if (d?.type === "object") s = d.shape?.[String(seg)];
    else if (d?.type === "array") s = d.element;
    else if (d?.type === "record") s = d.valueType;
    else return undefined;
    s = unwrap(s);
  }
  const d = defOf(s);
  return d?.type === "object" && d.shape ? Object.keys(d.shape) : undefined;
}
