import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * The doors between the rooms of src/ (docs/ARCHITECTURE.md, "Rooms and doors"). Every
 * relative import of every file is checked, type-only ones included: a developer given
 * one room knows what it may import, and this test says when a change walks through a wall.
 */

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith(".ts") ? [p] : [];
  });
}

interface Edge {
  from: string;
  to: string;
}

/** Every relative import (and re-export) in the files under `dirs`, as paths relative to the project root. */
function imports(dirs: string[]): Edge[] {
  const edges: Edge[] = [];
  for (const file of dirs.flatMap((d) => walk(join(root, d)))) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+"(\.{1,2}\/[^"]+)"/g)) {
      const target = resolve(dirname(file), m[1]!).replace(/\.js$/, ".ts");
      edges.push({ from: relative(root, file), to: relative(root, target) });
    }
  }
  return edges;
}

/** The room of a file under src/: `actors/<name>`, `actors` (stack.ts), `runtime`, `git`, `agents`, `cli`. */
function room(path: string): string {
  const parts = path.split("/");
  if (parts[0] !== "src") return parts[0]!;
  if (parts[1] === "actors") return parts.length > 3 ? `actors/${parts[2]}` : "actors";
  return parts[1]!;
}

/** Runtime modules that import nothing of ado's but each other: the git layer may use them. */
const RUNTIME_LEAVES = new Set(["src/runtime/errors.ts", "src/runtime/logger.ts", "src/runtime/mutex.ts", "src/runtime/names.ts", "src/runtime/retry.ts", "src/runtime/duration.ts", "src/runtime/clock.ts"]);

const violations = (edges: Edge[], rule: (e: Edge) => string | undefined) =>
  edges.flatMap((e) => {
    const why = rule(e);
    return why ? [`${e.from} -> ${e.to}: ${why}`] : [];
  });

describe("boundaries", () => {
  const all = imports(["src"]);

  it("boundaries - the scan sees the code (a test that cannot fail is no test)", () => {
    expect(all.length).toBeGreaterThan(200);
    expect(all.some((e) => e.from === "src/actors/stack.ts" && e.to === "src/actors/worker/worker.ts")).toBe(true);
  });

  it("boundaries - no actor imports another actor", () => {
    expect(
      violations(all, (e) => {
        const [a, b] = [room(e.from), room(e.to)];
        return a.startsWith("actors/") && b.startsWith("actors/") && a !== b ? `${a} reaches into ${b}` : undefined;
      }),
    ).toEqual([]);
  });

  it("boundaries - runtime, git and agents import neither actors nor cli", () => {
    expect(
      violations(all, (e) => {
        const [a, b] = [room(e.from), room(e.to)];
        return ["runtime", "git", "agents"].includes(a) && (b.startsWith("actors") || b === "cli") ? `${a} imports ${b}` : undefined;
      }),
    ).toEqual([]);
  });

  it("boundaries - the dashboard is a NATS client: it imports neither actors nor cli", () => {
    expect(violations(all, (e) => (room(e.from) === "dashboard" && (room(e.to).startsWith("actors") || room(e.to) === "cli") ? `dashboard imports ${room(e.to)}` : undefined))).toEqual([]);
    expect(all.some((e) => e.from === "src/dashboard/server.ts")).toBe(true);
  });

  it("boundaries - the cli reaches actors only through src/actors/stack.ts", () => {
    expect(
      violations(all, (e) => (room(e.from) === "cli" && room(e.to).startsWith("actors") && e.to !== "src/actors/stack.ts" ? "use the stack" : undefined)),
    ).toEqual([]);
  });

  it("boundaries - code outside src/git imports only its index; outside src/agents only its index", () => {
    expect(
      violations(all, (e) => {
        if (room(e.to) === "git" && room(e.from) !== "git" && e.to !== "src/git/index.ts") return "import src/git/index.ts";
        if (room(e.to) === "agents" && room(e.from) !== "agents" && e.to !== "src/agents/index.ts") return "import src/agents/index.ts";
        return undefined;
      }),
    ).toEqual([]);
  });

  it("boundaries - the git layer uses only the runtime's leaf modules, and those import no git", () => {
    expect(
      violations(all, (e) => {
        if (room(e.from) === "git" && room(e.to) === "runtime" && !RUNTIME_LEAVES.has(e.to)) return "git may use runtime leaves only";
        if (RUNTIME_LEAVES.has(e.from) && !RUNTIME_LEAVES.has(e.to)) return "a leaf imports only other leaves";
        return undefined;
      }),
    ).toEqual([]);
  });

  it("boundaries - agents use only the runtime's messages and leaves", () => {
    expect(
      violations(all, (e) =>
        room(e.from) === "agents" && room(e.to) === "runtime" && !RUNTIME_LEAVES.has(e.to) && e.to !== "src/runtime/messages.ts" ? "agents may use messages and leaves only" : undefined,
      ),
    ).toEqual([]);
  });

  it("boundaries - benchmarks and tests outside test/git import the git layer through index or internal", () => {
    const outside = imports(["bench", "test/e2e", "test/unit", "test/actors", "test/agents", "test/runtime", "test/helpers", "test/fixtures"]);
    expect(
      violations(outside, (e) =>
        room(e.to) === "git" && e.to !== "src/git/index.ts" && e.to !== "src/git/internal.ts" ? "import src/git/index.ts (or internal.ts to measure it)" : undefined,
      ),
    ).toEqual([]);
  });

  it("boundaries - test/unit needs no server: server-backed tests live in test/actors, test/runtime, test/git and test/e2e", () => {
    const SERVER = new Set(["test/helpers/nats.ts", "src/runtime/connection.ts", "src/runtime/embedded-server.ts", "src/actors/stack.ts"]);
    const unit = imports(["test/unit"]);
    expect(unit.length).toBeGreaterThan(50);
    expect(violations(unit, (e) => (SERVER.has(e.to) ? "a test that needs nats-server goes outside test/unit" : undefined))).toEqual([]);
  });

  it("boundaries - no import cycles in src/", () => {
    const graph = new Map<string, string[]>();
    for (const e of all) graph.set(e.from, [...(graph.get(e.from) ?? []), e.to]);
    const cycles: string[] = [];
    const state = new Map<string, "open" | "done">();
    const stack: string[] = [];
    const visit = (v: string) => {
      state.set(v, "open");
      stack.push(v);
      for (const w of graph.get(v) ?? []) {
        if (state.get(w) === "open") cycles.push([...stack.slice(stack.indexOf(w)), w].join(" -> "));
        else if (!state.has(w)) visit(w);
      }
      stack.pop();
      state.set(v, "done");
    };
    for (const v of graph.keys()) if (!state.has(v)) visit(v);
    expect(cycles).toEqual([]);
  });
});
