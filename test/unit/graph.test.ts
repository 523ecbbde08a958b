import { describe, expect, it } from "vitest";
import { GraphError } from "../../src/runtime/errors.js";
import { DurationSchema, GraphDefSchema, PRIORITIES, parseGraph, validateGraph, type Graph } from "../../src/runtime/graph.js";

/** The GraphError a call throws; fails the test when it throws nothing or something else. */
function graphError(fn: () => unknown): GraphError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GraphError);
    return err as GraphError;
  }
  throw new Error("expected a GraphError, but nothing was thrown");
}

/** A wire-form graph (defaults applied by the schema) without the file-level checks. */
const wire = (tasks: Array<{ id: string; needs?: string[]; run?: string; agent?: string }>): Graph =>
  GraphDefSchema.parse({ name: "g", tasks: tasks.map((t) => ({ run: "true", ...t })) });

/** The default retry policy with a given number of attempts. */
const RETRY = (attempts: number) => ({ attempts, backoffMs: 1_000, factor: 2, maxBackoffMs: 60_000, jitter: 0.2 });

describe("graph - parsing", () => {
  it("applies defaults to a minimal task", () => {
    const g = parseGraph(`tasks:\n  - { id: a, run: "echo hi" }\n`);
    expect(g).toEqual({
      name: "run",
      failFast: false,
      tasks: [{ id: "a", prompt: "", agent: "shell", run: "echo hi", needs: [], priority: "normal", retry: RETRY(1) }],
    });
    expect(g.tasks[0]).not.toHaveProperty("timeoutMs");
  });

  it("keeps given fields and turns timeout into timeoutMs", () => {
    const g = parseGraph(`
name: build
tasks:
  - id: a
    prompt: write the parser
    agent: noop
    priority: high
    timeout: 5m
    retry: { attempts: 3 }
  - { id: b, needs: [a], run: "make", timeout: 2 }
`);
    expect(g.name).toBe("build");
    expect(g.tasks[0]).toEqual({ id: "a", prompt: "write the parser", agent: "noop", needs: [], priority: "high", retry: RETRY(3), timeoutMs: 300_000 });
    expect(g.tasks[1]).toMatchObject({ id: "b", needs: ["a"], timeoutMs: 2_000 });
    expect(g.tasks[1]).not.toHaveProperty("timeout");
  });

  it("reads durations in ms, s, m, h and bare seconds", () => {
    expect(DurationSchema.parse("250ms")).toBe(250);
    expect(DurationSchema.parse("30s")).toBe(30_000);
    expect(DurationSchema.parse("5m")).toBe(300_000);
    expect(DurationSchema.parse("1h")).toBe(3_600_000);
    expect(DurationSchema.parse("1.5s")).toBe(1_500);
    expect(DurationSchema.parse(2)).toBe(2_000);
    expect(DurationSchema.parse(0.25)).toBe(250);
  });

  it("refuses a malformed duration and names the accepted forms", () => {
    for (const bad of ["30 seconds", "5x", "-1s", "", 0, -2]) expect(DurationSchema.safeParse(bad).success).toBe(false);
    const err = graphError(() => parseGraph(`tasks: [{ id: a, run: "true", timeout: "soon" }]`));
    expect(err.message).toMatch(/tasks\.0\.timeout/);
    expect(err.message).toContain('"30s"');
  });

  it("refuses a bad priority and names the allowed values", () => {
    const err = graphError(() => parseGraph(`tasks: [{ id: a, run: "true", priority: urgent }]`));
    expect(err.message).toContain("tasks.0.priority");
    for (const p of PRIORITIES) expect(err.message).toContain(`"${p}"`);
  });

  it("refuses an unknown field and names it", () => {
    const err = graphError(() => parseGraph(`tasks: [{ id: a, run: "true", colour: red }]`));
    expect(err.message).toMatch(/tasks\.0.*unknown field\(s\) 'colour'/);
    const top = graphError(() => parseGraph(`name: x\nowner: me\ntasks: [{ id: a, run: "true" }]`));
    expect(top.message).toContain("'owner'");
  });

  it("refuses invalid YAML, naming the source", () => {
    const err = graphError(() => parseGraph("tasks: [ { id: a, run: \"true\" ", "plan.yaml"));
    expect(err.message).toMatch(/^plan\.yaml: not valid YAML/);
  });

  it("refuses a graph without tasks and an id with a bad character", () => {
    expect(graphError(() => parseGraph("name: empty\ntasks: []\n")).message).toMatch(/at least one task/);
    expect(graphError(() => parseGraph(`tasks: [{ id: "a b", run: "true" }]`)).message).toMatch(/tasks\.0\.id/);
  });
});

describe("graph - validation", () => {
  it("refuses a cycle and names its path", () => {
    const err = graphError(() =>
      parseGraph(`
tasks:
  - { id: a, needs: [b], run: "true" }
  - { id: b, needs: [c], run: "true" }
  - { id: c, needs: [a], run: "true" }
  - { id: d, run: "true" }
`),
    );
    expect(err.message).toContain("a -> b -> c -> a");
    expect([...err.tasks].sort()).toEqual(["a", "a", "b", "c"].sort());
  });

  it("finds a cycle below an acyclic prefix", () => {
    const err = graphError(() =>
      validateGraph(wire([{ id: "root" }, { id: "x", needs: ["root", "z"] }, { id: "y", needs: ["x"] }, { id: "z", needs: ["y"] }])),
    );
    expect(err.message).toMatch(/cycle: (x -> z -> y -> x|z -> y -> x -> z|y -> x -> z -> y)/);
    expect(err.tasks).not.toContain("root");
  });

  it("refuses a self-dependency", () => {
    const err = graphError(() => validateGraph(wire([{ id: "a", needs: ["a"] }])));
    expect(err.message).toContain("a -> a");
    expect(err.tasks).toEqual(["a"]);
  });

  it("refuses an unknown dependency and names both tasks", () => {
    const err = graphError(() => validateGraph(wire([{ id: "a" }, { id: "b", needs: ["a", "ghost"] }])));
    expect(err.message).toContain("'b'");
    expect(err.message).toContain("'ghost'");
    expect(err.tasks).toEqual(["b", "ghost"]);
  });

  it("refuses duplicate ids", () => {
    const err = graphError(() => validateGraph(wire([{ id: "a" }, { id: "b" }, { id: "a" }])));
    expect(err.message).toMatch(/'a' appears more than once/);
    expect(err.tasks).toEqual(["a"]);
  });

  it("refuses a shell task without run, and accepts another agent without it", () => {
    const err = graphError(() => parseGraph(`tasks: [{ id: a }]`));
    expect(err.message).toMatch(/'a' uses the shell agent but has no 'run'/);
    expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "   " }]`)).tasks).toEqual(["a"]);
    expect(parseGraph(`tasks: [{ id: a, agent: noop }]`).tasks[0]!.agent).toBe("noop");
  });

  it("validates a 5,000-task chain, and finds the cycle when it is closed, without overflowing the stack", () => {
    const n = 5_000;
    const tasks = Array.from({ length: n }, (_, i) => ({ id: `t${i}`, run: "true", needs: i ? [`t${i - 1}`] : [] }));
    // Listed last-first, so the search walks the whole chain from its deep end.
    const text = JSON.stringify({ name: "chain", tasks: [...tasks].reverse() });
    const g = parseGraph(text);
    expect(g.tasks).toHaveLength(n);

    tasks[0]!.needs = [`t${n - 1}`];
    const err = graphError(() => parseGraph(JSON.stringify({ name: "ring", tasks })));
    expect(err.message).toMatch(/cycle: t0 -> t4999 -> t4998 -> /);
    expect(err.tasks).toHaveLength(n + 1);
  });
});
