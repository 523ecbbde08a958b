import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { GraphError } from "./errors.js";
import { ID_PATTERN } from "./ids.js";

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

const DURATION_HINT = 'a duration like "250ms", "30s", "5m" or "1h", or a number of seconds';
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** "30s", "5m", "1h", "250ms" or a number of seconds -> milliseconds. */
export const DurationSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  if (typeof v === "number" && v > 0) return Math.round(v * 1000);
  const m = typeof v === "string" ? /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v.trim()) : null;
  if (!m || Number(m[1]) <= 0) {
    ctx.addIssue({ code: "custom", message: `expected ${DURATION_HINT}, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
});

const idSchema = z
  .string()
  .regex(ID_PATTERN, "letters, digits, '_' and '-' only (at most 64), starting with a letter or digit");

const retrySchema = z
  .object({ attempts: z.number().int().min(1).max(100).default(1) })
  .strict()
  .default({ attempts: 1 });

/**
 * A task as it travels on the wire and lives inside ado: defaults applied, timeout in
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
    retry: retrySchema,
  })
  .strict();

/** A graph on the wire. */
export const GraphDefSchema = z
  .object({
    name: z.string().min(1).default("run"),
    tasks: z.array(TaskDefSchema).min(1, "a graph needs at least one task"),
  })
  .strict();

/** One task as written in a graph file: `timeout` is a duration ("30s", "5m", or seconds). */
const TaskFileSchema = TaskDefSchema.omit({ timeoutMs: true })
  .extend({ timeout: DurationSchema.optional() })
  .strict()
  .transform(({ timeout, ...rest }): TaskDef => (timeout === undefined ? rest : { ...rest, timeoutMs: timeout }));

/** A graph file: a name and its tasks. */
export const GraphFileSchema = z
  .object({
    name: z.string().min(1).default("run"),
    tasks: z.array(TaskFileSchema).min(1, "a graph needs at least one task"),
  })
  .strict();

export type TaskDef = z.output<typeof TaskDefSchema>;
export type Graph = z.output<typeof GraphDefSchema>;

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
