/**
 * Property-based tests of the parsers of what people write: the graph parser (YAML or
 * JSON text, and parsed objects) and the configuration (file and environment).
 * Generated and mutated inputs never make an exception escape other than GraphError /
 * ConfigError, every rejection names its source and what was wrong, and what is
 * accepted can be submitted. `ADO_FUZZ_RUNS=100000` runs the 100,000 cases.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it, vi } from "vitest";
import { stringify as toYaml } from "yaml";
import { encode } from "../../src/runtime/codec.js";
import { ENV_VARS, loadConfig } from "../../src/runtime/config.js";
import { ConfigError, GraphError } from "../../src/runtime/errors.js";
import { parseGraph, parseGraphObject, type Graph } from "../../src/runtime/graph.js";
import { SCHEMAS } from "../../src/runtime/messages.js";
import { CONFIG_SAMPLE, FUZZ_TIMEOUT_MS, fuzzParams, GRAPH_FILE_SAMPLE, mutate, mutationArb, nastyValue, prototypePolluted } from "../helpers/fuzz.js";

vi.setConfig({ testTimeout: FUZZ_TIMEOUT_MS });

const SOURCE = "fuzz.yaml";
// The yaml library reports odd but readable input (an ambiguous alias) as a process
// warning; thousands of them would bury this file's output.
process.removeAllListeners("warning");
const tally = { graph: { accepted: 0, rejected: 0 }, config: { accepted: 0, rejected: 0 } };

/** What parseGraph accepts is a graph a client can submit: it encodes as a run.submit. */
function submittable(graph: Graph): void {
  encode(SCHEMAS.SubmitRun, { type: "run.submit", runId: "r1", graph, submittedAt: "2026-05-01T12:00:00.000Z" });
}

function checkGraph(parse: () => Graph): void {
  let graph: Graph;
  try {
    graph = parse();
  } catch (err) {
    if (!(err instanceof GraphError)) throw new Error(`${String((err as Error)?.name)} escaped the graph parser: ${String((err as Error)?.message)}`, { cause: err });
    const m = err.message;
    if (!m.startsWith(`${SOURCE}:`) || m.length < SOURCE.length + 6 || /\[object Object\]|: $/.test(m)) throw new Error(`a graph rejection that does not say where and what: ${JSON.stringify(m)}`);
    tally.graph.rejected++;
    return;
  }
  tally.graph.accepted++;
  submittable(graph);
  const polluted = prototypePolluted();
  if (polluted) throw new Error(`parsing a graph reached Object.prototype (${polluted})`);
}

/** Edits to text: a character inserted, deleted or replaced, lines swapped or cut. */
const textEditArb = fc.array(
  fc.record({ op: fc.constantFrom("insert", "delete", "replace", "swapLines", "cut"), at: fc.nat(), text: fc.oneof(fc.string({ maxLength: 4 }), fc.constantFrom(":", "- ", "\n", "  ", "&a", "*a", "{", "[", "'", '"', "#", "!!binary", "<<: *a", "\t")) }),
  { minLength: 1, maxLength: 4 },
);

function editText(text: string, edits: readonly { op: string; at: number; text: string }[]): string {
  let s = text;
  for (const e of edits) {
    const i = s.length ? e.at % s.length : 0;
    if (e.op === "insert") s = s.slice(0, i) + e.text + s.slice(i);
    else if (e.op === "delete") s = s.slice(0, i) + s.slice(i + 1 + (e.at % 5));
    else if (e.op === "replace") s = s.slice(0, i) + e.text + s.slice(i + e.text.length);
    else if (e.op === "cut") s = s.slice(0, i);
    else {
      const lines = s.split("\n");
      const a = e.at % lines.length;
      const b = (e.at >> 3) % lines.length;
      [lines[a], lines[b]] = [lines[b]!, lines[a]!];
      s = lines.join("\n");
    }
  }
  return s;
}

describe("fuzz - graph parser", () => {
  afterAll(() => {
    process.stdout.write(`fuzz - parsers: graph accepted ${tally.graph.accepted}, rejected ${tally.graph.rejected}; config accepted ${tally.config.accepted}, rejected ${tally.config.rejected}\n`);
  });

  it("the samples parse", () => {
    expect(() => parseGraph(toYaml(GRAPH_FILE_SAMPLE), SOURCE)).not.toThrow();
  });

  it("a duration beyond 100 years is refused where it is written, not when the run is submitted", () => {
    // Found by the mutation property: `timeout: 4.5e159` parsed, then encoding the submission threw a ZodError.
    expect(() => parseGraph("tasks:\n  - id: a\n    run: echo\n    timeout: 4.5e159\n", SOURCE)).toThrow(/task 'a': timeout: must be at most 100 years/);
    expect(parseGraph("tasks:\n  - id: a\n    run: echo\n    timeout: 30d\n", SOURCE).tasks[0]!.timeoutMs).toBe(30 * 86_400_000);
  });

  it("arbitrary text is parsed or rejected with a GraphError naming the file", () => {
    fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: "binary", maxLength: 100 })), (text) => checkGraph(() => parseGraph(text, SOURCE))), fuzzParams());
  });

  it("edited YAML and JSON of a valid graph file is parsed or rejected with what was wrong", () => {
    const texts = [toYaml(GRAPH_FILE_SAMPLE), JSON.stringify(GRAPH_FILE_SAMPLE, null, 2), toYaml(GRAPH_FILE_SAMPLE, { defaultStringType: "QUOTE_DOUBLE" })];
    fc.assert(fc.property(fc.constantFrom(...texts), textEditArb, (text, edits) => checkGraph(() => parseGraph(editText(text, edits), SOURCE))), fuzzParams());
  });

  it("mutated graph files (fields removed, replaced, unknown, __proto__) are parsed or rejected with what was wrong", () => {
    fc.assert(
      fc.property(fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.boolean(), (muts, asText) => {
        const raw = mutate(GRAPH_FILE_SAMPLE, muts);
        if (asText) {
          let text: string;
          try {
            text = toYaml(raw);
          } catch {
            return;
          }
          checkGraph(() => parseGraph(text, SOURCE));
        } else {
          checkGraph(() => parseGraphObject(raw, SOURCE));
        }
      }),
      fuzzParams(),
    );
  });

  it("generated graphs of random ids and dependencies: cycles, unknown and duplicate ids are named", () => {
    const ids = fc.constantFrom("a", "b", "c", "d", "e", "A", "0", "_x", "a b");
    const taskArb = fc.record({ id: ids, run: fc.constantFrom("echo", "", " "), needs: fc.array(ids, { maxLength: 3 }) }, { requiredKeys: ["id"] });
    fc.assert(fc.property(fc.array(taskArb, { maxLength: 6 }), (tasks) => checkGraph(() => parseGraphObject({ tasks }, SOURCE)) ?? checkGraph(() => parseGraph(toYaml({ tasks }), SOURCE))), fuzzParams());
  });
});

describe("fuzz - configuration", () => {
  const dir = mkdtempSync(join(tmpdir(), "ado-fuzz-config-"));
  const file = join(dir, "ado.config.yaml");
  afterAll(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10 }));

  async function checkConfig(load: () => Promise<unknown>): Promise<void> {
    try {
      await load();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw new Error(`${String((err as Error)?.name)} escaped loadConfig: ${String((err as Error)?.message)}`, { cause: err });
      if (err.message.length < 20 || /\[object Object\]/.test(err.message)) throw new Error(`a config rejection that does not say what: ${JSON.stringify(err.message)}`);
      tally.config.rejected++;
      return;
    }
    tally.config.accepted++;
    const polluted = prototypePolluted();
    if (polluted) throw new Error(`loading a config reached Object.prototype (${polluted})`);
  }

  it("a config file's __proto__ is an unknown setting, not a change to every object", async () => {
    writeFileSync(file, "__proto__:\n  polluted: 1\nbalancer:\n  __proto__:\n    polluted: 2\n");
    // Before: `polluted` landed on Object.prototype and a ZodError escaped.
    await expect(loadConfig({ file, env: {} })).rejects.toThrow(/unknown setting\(s\) '__proto__'/);
    expect(prototypePolluted()).toBeUndefined();
  });

  it("mutated and edited config files are loaded or rejected with a ConfigError", async () => {
    const text = toYaml(CONFIG_SAMPLE);
    await fc.assert(
      fc.asyncProperty(fc.array(mutationArb, { minLength: 1, maxLength: 3 }), fc.option(textEditArb, { nil: undefined }), async (muts, edits) => {
        let body: string;
        try {
          body = edits ? editText(text, edits) : toYaml(mutate(CONFIG_SAMPLE, muts));
        } catch {
          return;
        }
        // The whole value replaced by `undefined` stringifies to nothing: no file to write.
        if (typeof body !== "string") return;
        writeFileSync(file, body);
        await checkConfig(() => loadConfig({ file, env: {} }));
      }),
      fuzzParams(),
    );
  });

  it("environment variables with any values are taken or rejected with a ConfigError", async () => {
    const names = Object.keys(ENV_VARS);
    const value = fc.oneof(fc.string({ maxLength: 12 }), fc.integer().map(String), fc.double().map(String), nastyValue.map(String));
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.constantFrom(...names), value, { maxKeys: 4 }), async (env) => {
        await checkConfig(() => loadConfig({ dir, env }));
      }),
      fuzzParams(),
    );
  });
});
