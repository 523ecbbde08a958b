import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { GraphError } from "./errors.js";
import { ID_PATTERN } from "./ids.js";
import { DurationSchema } from "./duration.js";

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
  })
  .strict();
const RETRY_DEFAULT = { attempts: 1, backoffMs: 1_000, factor: 2, maxBackoffMs: 60_000, jitter: 0.2 };

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
  })
  .strict();

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
export type PathRuleDef = z.output<typeof PathRuleSchema>;

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
};

/** A graph on the wire. */
export const GraphDefSchema = z
  .object({
    ...runSettings,
    maxDurationMs: z.number().int().positive().optional(),
    /** The graph's own merge settings, over the submitter's config (see resolveMergeSettings). */
    merge: MergeOverridesSchema.optional(),
    tasks: z.array(TaskDefSchema).min(1, "a graph needs at least one task"),
  })
  .strict();

/** One task as written in a graph file: durations as "30s", "5m", or seconds. */
const TaskFileSchema = TaskDefSchema.omit({ timeoutMs: true, retry: true })
  .extend({
    timeout: DurationSchema.optional(),
    retry: z
      .object({
        attempts: z.number().int().min(1).max(100).default(1),
        backoff: DurationSchema.optional(),
        factor: z.number().min(1).max(10).optional(),
        maxBackoff: DurationSchema.optional(),
        jitter: z.number().min(0).max(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .transform(({ timeout, retry, ...rest }): TaskDef => ({
    ...rest,
    ...(timeout === undefined ? {} : { timeoutMs: timeout }),
    retry: {
      attempts: retry?.attempts ?? RETRY_DEFAULT.attempts,
      backoffMs: retry?.backoff ?? RETRY_DEFAULT.backoffMs,
      factor: retry?.factor ?? RETRY_DEFAULT.factor,
      maxBackoffMs: retry?.maxBackoff ?? RETRY_DEFAULT.maxBackoffMs,
      jitter: retry?.jitter ?? RETRY_DEFAULT.jitter,
    },
  }));

/** A graph file: a name, run settings and its tasks. */
export const GraphFileSchema = z
  .object({
    ...runSettings,
    maxDuration: DurationSchema.optional(),
    merge: MergeFileSchema.optional(),
    tasks: z.array(TaskFileSchema).min(1, "a graph needs at least one task"),
  })
  .strict()
  .transform(({ maxDuration, ...rest }): Graph => (maxDuration === undefined ? rest : { ...rest, maxDurationMs: maxDuration }));

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
 * Checks what a schema cannot: duplicate ids, unknown dependencies, cycles, and agent
 * fields (the shell agent needs `run`). Errors name the tasks involved, and a cycle is
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
        throw new GraphError(`task '${t.id}' needs '${dep}', which is not in the graph`, [t.id, dep]);
      }
      if (dep === t.id) throw new GraphError(`task '${t.id}' needs itself: cycle ${t.id} -> ${t.id}`, [t.id]);
    }
    if (t.agent === "shell" && !t.run?.trim()) {
      throw new GraphError(`task '${t.id}' uses the shell agent but has no 'run' command: add run: "<command>"`, [t.id]);
    }
  }
  const cycle = findCycle(graph.tasks);
  if (cycle) throw new GraphError(`the graph has a cycle: ${cycle.join(" -> ")}`, cycle);
  return graph;
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
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new GraphError(`${source}: not valid YAML: ${(err as Error).message}`);
  }
  return validateGraph(parseGraphObject(raw, source));
}

/** Validates an already-parsed graph-file object against the schema. */
export function parseGraphObject(raw: unknown, source = "graph"): Graph {
  const parsed = GraphFileSchema.safeParse(raw);
  if (!parsed.success) throw new GraphError(`${source}: ${formatIssues(parsed.error)}`);
  return parsed.data;
}

/** Formats zod issues as "field.path: message" lines, naming allowed values. */
export function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.length ? issue.path.join(".") : "(root)";
      let msg = issue.message;
      if (issue.code === "invalid_value" && "values" in issue) {
        msg = `expected one of ${(issue.values as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`;
      } else if (issue.code === "unrecognized_keys") {
        msg = `unknown field(s) ${issue.keys.map((k) => `'${k}'`).join(", ")}`;
      }
      return `${path}: ${msg}`;
    })
    .join("; ");
}
