import { describe, expect, it } from "vitest";
import { GraphError } from "../../src/runtime/errors.js";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkAgents, DurationSchema, GraphDefSchema, loadGraphFile, PRIORITIES, parseGraph, validateGraph, type Graph } from "../../src/runtime/graph.js";
import { closest, shortPath } from "../../src/runtime/suggest.js";

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
    // Located by the task's id, not its position (was "tasks.0.timeout").
    expect(err.message).toMatch(/task 'a': timeout: expected a duration/);
    expect(err.message).toContain('"30s"');
  });

  it("says a duration must be more than zero, and that a quoted number needs a unit", () => {
    const zero = graphError(() => parseGraph(`tasks: [{ id: a, run: "true" }, { id: b, run: "true", timeout: 0 }]`, "g.yaml"));
    expect(zero.message).toBe(`g.yaml: task 'b': timeout: must be more than zero (e.g. "30s" or "5m"), got 0`);
    const quoted = graphError(() => parseGraph(`tasks: [{ id: a, run: "true", timeout: "30" }]`));
    expect(quoted.message).toMatch(/task 'a': timeout: got "30": a duration in quotes needs a unit \("30s"\)/);
  });

  it("says what is allowed in people's words, not zod's", () => {
    const attempts = graphError(() => parseGraph(`tasks: [{ id: a, run: "true", retry: { attempts: 0 } }]`));
    expect(attempts.message).toMatch(/task 'a': retry\.attempts: must be at least 1, got 0$/);
    const parallel = graphError(() => parseGraph(`maxParallel: 1.5\ntasks: [{ id: a, run: "true" }]`));
    expect(parallel.message).toMatch(/maxParallel: must be a whole number, got 1\.5$/);
    const noId = graphError(() => parseGraph(`tasks: [{ run: "true" }]`));
    expect(noId.message).toMatch(/task #1 \(no id\): id: is required$/);
    for (const e of [attempts, parallel, noId]) expect(e.message).not.toMatch(/Too small|Invalid input|expected number to be/);
  });

  it("suggests the field, value or task id that was probably meant", () => {
    expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "true" }, { id: b, run: "true", neeeds: [a] }]`)).message).toMatch(
      /task 'b': unknown field 'neeeds' \(did you mean 'needs'\?\)/,
    );
    expect(graphError(() => parseGraph(`taks: [{ id: a, run: "true" }]`)).message).toMatch(/unknown field 'taks' \(did you mean 'tasks'\?\)/);
    expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "true", placement: { lables: [gpu] } }]`)).message).toMatch(/did you mean 'labels'/);
    expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "true", priority: hihg }]`)).message).toMatch(/did you mean 'high'/);
    expect(graphError(() => parseGraph(`tasks: [{ id: api, run: "true" }, { id: ui, needs: [apii], run: "true" }]`)).message).toMatch(
      /task 'ui' needs 'apii', which is not in the graph \(did you mean 'api'\?\)/,
    );
  });

  it("lists at most a few problems of a large graph, and counts the rest", () => {
    const tasks = Array.from({ length: 30 }, (_, i) => `  - { id: t${i}, run: "true", timeout: 0 }`).join("\n");
    const err = graphError(() => parseGraph(`tasks:\n${tasks}\n`));
    expect(err.message.split("\n").filter((l) => l.includes("timeout")).length).toBeLessThanOrEqual(8);
    expect(err.message).toMatch(/and 22 more problem\(s\)/);
  });

  it("refuses a bad priority and names the allowed values", () => {
    const err = graphError(() => parseGraph(`tasks: [{ id: a, run: "true", priority: urgent }]`));
    expect(err.message).toContain("task 'a': priority");
    for (const p of PRIORITIES) expect(err.message).toContain(`"${p}"`);
  });

  it("refuses an unknown field and names it", () => {
    const err = graphError(() => parseGraph(`tasks: [{ id: a, run: "true", colour: red }]`));
    expect(err.message).toMatch(/task 'a': unknown field 'colour' \(fields here: id, prompt, agent, run, needs/);
    const top = graphError(() => parseGraph(`name: x\nowner: me\ntasks: [{ id: a, run: "true" }]`));
    expect(top.message).toContain("'owner'");
  });

  it("refuses invalid YAML, naming the source", () => {
    const err = graphError(() => parseGraph("tasks: [ { id: a, run: \"true\" ", "plan.yaml"));
    expect(err.message).toMatch(/^plan\.yaml: not valid YAML/);
  });

  it("refuses a graph without tasks and an id with a bad character", () => {
    expect(graphError(() => parseGraph("name: empty\ntasks: []\n")).message).toMatch(/at least one task/);
    expect(graphError(() => parseGraph(`tasks: [{ id: "a b", run: "true" }]`)).message).toMatch(/task 'a b': id: letters, digits/);
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
    // The message stays short; the error still carries every id of the cycle.
    expect(err.message).toMatch(/\.\.\. \(4994 more\) \.\.\./);
    expect(err.message.length).toBeLessThan(200);
    expect(err.tasks).toHaveLength(n + 1);
  });
});

describe("graph - per-task env, cwd and promptFile", () => {
  it("takes env (numbers and booleans as text) and a cwd inside the worktree", () => {
    const g = parseGraph(`tasks: [{ id: a, run: "true", env: { DEBUG: 1, ON: true, NAME: x }, cwd: "pkg/api" }]`);
    expect(g.tasks[0]).toMatchObject({ env: { DEBUG: "1", ON: "true", NAME: "x" }, cwd: "pkg/api" });
  });

  it("refuses a cwd outside the worktree and env names that are not names or are ado's own", () => {
    expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "true", cwd: "../up" }]`)).message).toMatch(/task 'a': cwd: must stay inside the worktree/);
    expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "true", cwd: "/etc" }]`)).message).toMatch(/task 'a': cwd: must be relative/);
    expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "true", env: { ADO_TASK_ID: x } }]`)).message).toMatch(/'ADO_TASK_ID': ADO_\* variables are set by ado/);
    expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "true", env: { "A-B": x } }]`)).message).toMatch(/'A-B': an environment variable name/);
  });

  it("reads promptFile relative to the graph file; refuses it beside a prompt, or unreadable", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ado-graph-"));
    try {
      await mkdir(join(dir, "prompts"));
      await writeFile(join(dir, "prompts", "a.md"), "do the thing\n");
      await writeFile(join(dir, "g.yaml"), "tasks:\n  - { id: a, run: \"true\", promptFile: prompts/a.md }\n");
      expect((await loadGraphFile(join(dir, "g.yaml"))).tasks[0]!.prompt).toBe("do the thing\n");
      await writeFile(join(dir, "both.yaml"), "tasks:\n  - { id: a, run: \"true\", prompt: x, promptFile: prompts/a.md }\n");
      await expect(loadGraphFile(join(dir, "both.yaml"))).rejects.toThrow(/task 'a': give prompt or promptFile, not both/);
      await writeFile(join(dir, "missing.yaml"), "tasks:\n  - { id: a, run: \"true\", promptFile: nope.md }\n");
      await expect(loadGraphFile(join(dir, "missing.yaml"))).rejects.toThrow(/task 'a': promptFile 'nope.md' cannot be read .*ENOENT/);
      // Without a file to be relative to, it is refused with what to do.
      expect(graphError(() => parseGraph(`tasks: [{ id: a, run: "true", promptFile: a.md }]`)).message).toMatch(/promptFile: is read relative to the graph file/);
    } finally {
      await rm(dir, { recursive: true, force: true, maxRetries: 10 });
    }
  });
});

describe("graph - agents and words for people", () => {
  it("refuses tasks whose agent nobody has, naming the known ones and the likely one", () => {
    const g = parseGraph(`tasks: [{ id: a, run: "true" }, { id: b, agent: claudee }, { id: c, agent: claudee }]`);
    expect(() => checkAgents(g, ["shell", "noop", "claude"])).toThrow(/tasks 'b', 'c': unknown agent 'claudee' \(did you mean 'claude'\?\); the agents are: shell, noop, claude/);
    expect(() => checkAgents(g, ["shell", "claudee"])).not.toThrow();
  });

  it("suggests only close words, and shortens long paths", () => {
    expect(closest("neeeds", ["needs", "name"])).toBe("needs");
    expect(closest("lables", ["labels", "requires"])).toBe("labels");
    expect(closest("zzz", ["needs", "name"])).toBeUndefined();
    expect(shortPath(["a", "b", "a"])).toBe("a -> b -> a");
    expect(shortPath(Array.from({ length: 100 }, (_, i) => `t${i}`))).toBe("t0 -> t1 -> t2 -> t3 -> ... (93 more) ... -> t97 -> t98 -> t99");
  });
});

describe("graph - agent CLI settings on tasks and graph defaults", () => {
  it("a task's model, maxTurns, args, idleTimeout and access reach the wire form; the graph's agents.<name> fill in what a task of that agent leaves out", () => {
    const g = parseGraph(
      [
        "agents:",
        "  claude: { model: opus, maxTurns: 40, idleTimeout: 5m, args: [--verbose-x] }",
        "tasks:",
        "  - { id: a, agent: claude, prompt: p }",
        "  - { id: b, agent: claude, prompt: p, model: sonnet, idleTimeout: 30s, access: api }",
        "  - { id: c, agent: codex, prompt: p }",
      ].join("\n") + "\n",
    );
    const t = (id: string) => g.tasks.find((x) => x.id === id)!;
    expect(t("a")).toMatchObject({ model: "opus", maxTurns: 40, idleTimeoutMs: 300_000, args: ["--verbose-x"] });
    expect(t("b")).toMatchObject({ model: "sonnet", maxTurns: 40, idleTimeoutMs: 30_000, access: "api" });
    // Another agent's task gets none of claude's defaults.
    expect(t("c").model).toBeUndefined();
    expect(t("c").maxTurns).toBeUndefined();
  });

  it("bad agent settings are refused with the field named", () => {
    expect(() => parseGraph("tasks:\n  - { id: a, agent: claude, prompt: p, maxTurns: 0 }\n")).toThrow(/maxTurns/);
    expect(() => parseGraph("tasks:\n  - { id: a, agent: claude, prompt: p, access: free }\n")).toThrow(/access/);
  });
});
