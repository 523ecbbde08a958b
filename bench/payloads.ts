/**
 * Payload compression benchmark: what the codec's deflate (payloads over 8 KiB,
 * `Ado-Compression: deflate`) saves on real-looking prompts, graphs and events, and
 * what it costs. No server.
 *
 *   npx tsx bench/payloads.ts            # full
 *   npx tsx bench/payloads.ts --quick    # fewer repetitions
 *   npx tsx bench/payloads.ts --json
 *
 * Inputs, built from text in this repository (so they read like what people send):
 *   prompt-spec      a spec-like prompt: docs/ARCHITECTURE.md (markdown prose)
 *   prompt-code      an instruction plus five source files pasted as context
 *   task.work        the work message of a task with the prompt-code prompt and 20 fan-in inputs
 *   graph-demo       examples/demo/graph.yaml as a run.submit
 *   graph-<n>        a run.submit of up to 500 tasks (one per .ts file of src/, test/,
 *                    bench/: "fix lint in <file>", a paragraph of instructions and the
 *                    file's first lines; each depends on the previous one in its folder)
 *   run.completed    the completion event of that run
 *   task.output      a task.output event of 64 KiB of test-runner output
 * Each is measured as plain MessagePack and through encode() (deflate level 6), and
 * for comparison with brotli (quality 5). `ratio` = plain / compressed. Times are the
 * median of the repetitions, encode() and decode() of the whole message.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { brotliCompressSync, constants } from "node:zlib";
import { parseFlags, printReport, runMain } from "./harness.js";
import { decode, encode, packRaw, type SchemaRef } from "../src/runtime/codec.js";
import { parseGraph, type Graph } from "../src/runtime/graph.js";
import { SCHEMAS } from "../src/runtime/messages.js";

const USAGE = "usage: npx tsx bench/payloads.ts [--quick] [--json]";
type Opts = { quick: boolean; json: boolean };
type Row = { payload: string; plainBytes: number; deflateBytes: number; ratio: number; brotliBytes: number; brotliRatio: number; encodeMs: number; decodeMs: number };

const ROOT = new URL("..", import.meta.url).pathname;
const read = (p: string) => readFileSync(join(ROOT, p), "utf8");
const at = "2026-05-01T12:00:00.000Z";
const sha = "0123456789abcdef0123456789abcdef01234567";

function sourceFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(join(ROOT, dir)).sort()) {
      const p = `${dir}/${name}`;
      if (statSync(join(ROOT, p)).isDirectory()) walk(p);
      else if (p.endsWith(".ts")) out.push(p);
    }
  };
  for (const d of ["src", "test", "bench"]) walk(d);
  return out;
}

function inputs(): Array<[string, SchemaRef, unknown]> {
  const files = sourceFiles();
  const promptSpec = read("docs/ARCHITECTURE.md");
  const promptCode =
    "Refactor the balancer so that placements are matched once per dispatch pass. Keep every test passing; explain what you changed.\n\n" +
    files
      .filter((f) => f.startsWith("src/actors/balancer/"))
      .slice(0, 5)
      .map((f) => `--- ${f}\n${read(f)}`)
      .join("\n");
  const task = { id: "refactor", prompt: promptCode, agent: "claude", needs: [], priority: "normal", retry: { attempts: 2, backoffMs: 1000, factor: 2, maxBackoffMs: 60000, jitter: 0.2 } };
  const work = {
    type: "task.work",
    runId: "01JRUN00000000000000000000",
    taskId: "refactor",
    attempt: 1,
    priority: "normal",
    task: (({ needs: _n, ...rest }) => rest)(task),
    branch: "ado/01JRUN00000000000000000000/refactor",
    baseCommit: sha,
    repo: "/home/dev/projects/ado",
    inputs: Array.from({ length: 20 }, (_, i) => ({ taskId: `lint-${i}`, status: "succeeded", branch: `ado/r/lint-${i}`, commit: sha, summary: `fixed 3 lint warnings in ${files[i]}`, costUsd: 0.04 })),
    readyAt: at,
    submittedAt: at,
  };
  const demo = parseGraph(read("examples/demo/graph.yaml"));
  const big: Graph = parseGraph(
    JSON.stringify({
      name: "lint-everything",
      tasks: files.slice(0, 500).map((f, i) => ({
        id: `t${i}`,
        agent: "claude",
        prompt: `Fix every lint warning in ${f}. Do not change behaviour; keep the public API as it is. Run the file's tests (test/ mirrors src/) and make sure they pass. If a warning cannot be fixed without a larger change, leave a TODO that names the hazard.\nThe file starts:\n${read(f).split("\n").filter((l) => l.trim()).slice(0, 6).join("\n")}`,
        needs: i > 0 && f.split("/")[2] === files[i - 1]!.split("/")[2] ? [`t${i - 1}`] : [],
        timeout: "20m",
        retry: { attempts: 2 },
      })),
    }),
  );
  const submit = (graph: Graph) => ({ type: "run.submit", runId: "01JRUN00000000000000000000", graph, repo: "/home/dev/projects/ado", baseCommit: sha, submittedAt: at, submittedBy: "dev@laptop" });
  const completed = {
    type: "run.completed",
    runId: "01JRUN00000000000000000000",
    at,
    status: "succeeded",
    integrationBranch: "ado/01JRUN00000000000000000000/integration",
    integrationCommit: sha,
    counts: { succeeded: big.tasks.length },
    tasks: big.tasks.map((t, i) => ({ id: t.id, status: "succeeded", attempts: 1, startedAt: at, finishedAt: at, workerId: `w-host-${i % 8}`, commit: sha })),
  };
  const testOutput = Array.from({ length: 1200 }, (_, i) => ` ✓ test/unit/${files[i % files.length]!.replace(/^src\//, "").replace(/\.ts$/, "")}.test.ts > area - behaviour ${i} ${(i * 7) % 300}ms`).join("\n");
  const output = { type: "task.output", runId: "01JRUN00000000000000000000", taskId: "tests", attempt: 1, at, stream: "stdout", data: testOutput.slice(0, 64 * 1024) };
  const promptEvent = (p: string) => ({ ...submit({ name: "one", failFast: false, tasks: [{ ...task, id: "one", prompt: p }] } as Graph) });
  return [
    ["prompt-spec", SCHEMAS.SubmitRun, promptEvent(promptSpec)],
    ["prompt-code", SCHEMAS.SubmitRun, promptEvent(promptCode)],
    ["task.work", SCHEMAS.TaskWork, work],
    ["graph-demo", SCHEMAS.SubmitRun, submit(demo)],
    [`graph-${big.tasks.length}`, SCHEMAS.SubmitRun, submit(big)],
    ["run.completed", SCHEMAS.AdoEvent, completed],
    ["task.output", SCHEMAS.AdoEvent, output],
  ];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(opts: Opts, log: (m: string) => void): Promise<number> {
  const reps = opts.quick ? 5 : 41;
  const rows: Row[] = [];
  for (const [name, ref, value] of inputs()) {
    log(name);
    const plain = packRaw(ref.schema.parse(value));
    const brotli = brotliCompressSync(plain, { params: { [constants.BROTLI_PARAM_QUALITY]: 5 } });
    const enc: number[] = [];
    const dec: number[] = [];
    let m = encode(ref, value);
    for (let i = 0; i < reps; i++) {
      let t = performance.now();
      m = encode(ref, value);
      enc.push(performance.now() - t);
      t = performance.now();
      decode(ref, m.data, m.headers);
      dec.push(performance.now() - t);
    }
    rows.push({
      payload: name,
      plainBytes: plain.length,
      deflateBytes: m.data.length,
      ratio: plain.length / m.data.length,
      brotliBytes: brotli.length,
      brotliRatio: plain.length / brotli.length,
      encodeMs: median(enc),
      decodeMs: median(dec),
    });
  }
  const total = rows.reduce((a, r) => ({ plain: a.plain + r.plainBytes, z: a.z + r.deflateBytes }), { plain: 0, z: 0 });
  printReport({ rows, overallRatio: total.plain / total.z }, opts.json, (r) =>
    [
      "payload         plain KB  deflate KB  ratio  brotli KB  ratio  encode ms  decode ms",
      ...r.rows.map(
        (x) =>
          `${x.payload.padEnd(15)} ${(x.plainBytes / 1024).toFixed(1).padStart(8)}  ${(x.deflateBytes / 1024).toFixed(1).padStart(10)}  ${x.ratio.toFixed(1).padStart(5)}  ${(x.brotliBytes / 1024).toFixed(1).padStart(9)}  ${x.brotliRatio.toFixed(1).padStart(5)}  ${x.encodeMs.toFixed(2).padStart(9)}  ${x.decodeMs.toFixed(2).padStart(9)}`,
      ),
      `all together: ${r.overallRatio.toFixed(1)}x smaller with deflate`,
    ].join("\n"),
  );
  return 0;
}

runMain("payloads", (argv) => {
  const common = { json: false, waitQuietMs: 0 };
  parseFlags(argv, USAGE, common, {});
  return { quick: argv.includes("--quick"), json: common.json };
}, main);
