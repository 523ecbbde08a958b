/**
 * Generators for the property-based tests (fast-check): valid samples of every wire
 * payload and KV record, and mutations of them, so the decoders are fed inputs close to
 * what they accept (a field of the wrong type, a key removed, an unknown key, a
 * truncated buffer) as well as noise.
 */
import fc from "fast-check";

/** Runs per property (a decoder has three: ~2,000 cases each by default); `ADO_FUZZ_RUNS=100000` runs the 100,000. */
export const FUZZ_RUNS = (() => {
  const v = Number(process.env.ADO_FUZZ_RUNS ?? "");
  return Number.isInteger(v) && v > 0 ? v : 700;
})();

/** A test's time limit: the default minute, or more when many runs are asked for (a loaded machine takes ~5 ms a case). */
export const FUZZ_TIMEOUT_MS = Math.max(60_000, FUZZ_RUNS * 20);

/** A fast-check run of `FUZZ_RUNS` cases with a seed printed on failure (fast-check does). */
export const fuzzParams = (runs = FUZZ_RUNS): fc.Parameters<unknown> => ({ numRuns: runs, endOnFailure: true });

/** Values that break decoders: odd numbers, odd strings, prototypes, deep nesting. */
export const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    null,
    undefined,
    true,
    false,
    0,
    -0,
    -1,
    1.5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    Number.MAX_SAFE_INTEGER + 2,
    1e308,
    "",
    " ",
    "\u0000",
    "../../etc/passwd",
    "__proto__",
    "constructor",
    "a".repeat(70),
    "2026-13-45T99:99:99Z",
    "not-a-date",
    "0".repeat(40),
    "g".repeat(40),
    "task.work/1",
    "\ud800",
    [],
    {},
    { __proto__: { polluted: true } },
    JSON.parse('{"__proto__":{"polluted":true}}') as unknown,
  ),
  fc.string({ maxLength: 20 }),
  fc.string({ unit: "binary", maxLength: 20 }),
  fc.integer(),
  fc.double(),
  fc.uint8Array({ maxLength: 16 }),
  fc.jsonValue({ maxDepth: 3 }),
);

/** A path into a JSON-like value and the value there. */
type Slot = { parent: Record<string, unknown> | unknown[]; key: string | number };

function slots(value: unknown, out: Slot[] = []): Slot[] {
  if (Array.isArray(value)) {
    value.forEach((v, i) => {
      out.push({ parent: value, key: i });
      slots(v, out);
    });
  } else if (value && typeof value === "object" && !(value instanceof Uint8Array)) {
    for (const [k, v] of Object.entries(value)) {
      out.push({ parent: value as Record<string, unknown>, key: k });
      slots(v, out);
    }
  }
  return out;
}

/** One change to a value: where (an index into its slots, modulo their count) and what. */
export type Mutation = { at: number; op: "delete" | "replace" | "unknownKey" | "proto" | "wrap" | "emptyArray"; value: unknown; key: string };

export const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom("delete", "replace", "replace", "replace", "unknownKey", "proto", "wrap", "emptyArray"),
  value: nastyValue,
  key: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("__proto__", "constructor", "type", "runId", "tasks")),
});

/** Applies mutations to a deep copy of `value` (the sample is never changed). */
export function mutate(value: unknown, mutations: readonly Mutation[]): unknown {
  const root = { v: structuredClone(value) };
  for (const m of mutations) {
    const all = slots(root);
    const s = all[m.at % all.length]!;
    const { parent, key } = s;
    const here = (parent as Record<string | number, unknown>)[key];
    switch (m.op) {
      case "delete":
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else if (parent !== (root as unknown)) delete (parent as Record<string, unknown>)[key];
        break;
      case "replace":
        (parent as Record<string | number, unknown>)[key] = m.value;
        break;
      case "unknownKey":
        if (here && typeof here === "object" && !Array.isArray(here)) Object.defineProperty(here, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
        else (parent as Record<string | number, unknown>)[key] = { [m.key]: m.value };
        break;
      case "proto":
        // An own `__proto__` key, as a JSON or MessagePack map can carry.
        if (here && typeof here === "object" && !Array.isArray(here)) Object.defineProperty(here, "__proto__", { value: { polluted: true, type: "x" }, enumerable: true, writable: true, configurable: true });
        break;
      case "wrap":
        (parent as Record<string | number, unknown>)[key] = [here];
        break;
      case "emptyArray":
        (parent as Record<string | number, unknown>)[key] = Array.isArray(here) ? [] : here;
        break;
    }
  }
  return root.v;
}

/** Byte-level damage to an encoding: flips, truncation, insertion. */
export const bytesMutationArb = fc.array(
  fc.record({ op: fc.constantFrom("flip", "truncate", "insert", "set"), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  { minLength: 1, maxLength: 4 },
);

export function damage(data: Uint8Array, ops: readonly { op: string; at: number; byte: number }[]): Uint8Array {
  let b = Array.from(data);
  for (const o of ops) {
    const i = b.length ? o.at % b.length : 0;
    if (o.op === "flip" && b.length) b[i] = b[i]! ^ (1 << o.byte % 8);
    else if (o.op === "truncate") b = b.slice(0, i);
    else if (o.op === "insert") b.splice(i, 0, o.byte);
    else if (o.op === "set" && b.length) b[i] = o.byte;
  }
  return Uint8Array.from(b);
}

/** Whether anything reached Object.prototype (a `__proto__` key merged into a plain object). */
export function prototypePolluted(): string | undefined {
  const probe = {} as Record<string, unknown>;
  for (const k of ["polluted", "type", "runId", "tasks"]) if (k in probe) return k;
  return Object.keys(Object.prototype).length ? Object.keys(Object.prototype).join(", ") : undefined;
}

const at = "2026-05-01T12:00:00.000Z";
const sha = "0123456789abcdef0123456789abcdef01234567";
const graph = {
  name: "demo",
  failFast: false,
  maxParallel: 4,
  merge: { mode: "squash", rules: [{ paths: ["CHANGELOG.md"], strategy: "union" }] },
  tasks: [
    { id: "api", prompt: "write the api", agent: "shell", run: "echo api", needs: [], priority: "high", timeoutMs: 60_000, env: { DEBUG: "1" }, cwd: "packages/api" },
    { id: "ui", prompt: "write the ui", agent: "shell", run: "echo ui", needs: ["api"], retry: { attempts: 3, backoffMs: 10, factor: 2, maxBackoffMs: 100, jitter: 0.1 } },
  ],
};
const task = { id: "api", prompt: "write the api", agent: "shell", run: "echo api", priority: "normal", retry: { attempts: 1, backoffMs: 1000, factor: 2, maxBackoffMs: 60000, jitter: 0.2 } };

/** Task columns of a run snapshot: two tasks, one done and one running. */
const snapshotTasks = {
  ids: ["api", "ui"],
  status: [5, 2],
  attempts: [1, 2],
  started: [10, 200],
  finished: [150, null],
  worker: [0, -1],
  workers: ["w1"],
  cost: [0.5, 0],
  activity: [-1, 0],
  error: [-1, 1],
  waiting: [-1, -1],
  texts: ["editing a.ts", "attempt 1 failed"],
  notes: [{ i: 0, outputTail: "done", archiveRefs: ["refs/ado/archive/r1/api/1"] }, { i: 1, paused: false, live: 0.1 }],
};

/** One or more valid values of each schema in SCHEMAS (by its key), to mutate. */
export const SAMPLES: Record<string, unknown[]> = {
  SubmitRun: [{ type: "run.submit", runId: "r1", graph, repo: "/tmp/repo", baseCommit: sha, submittedAt: at, submittedBy: "me@host", merge: { mode: "merge", rules: [] } }],
  TaskWork: [
    {
      type: "task.work",
      runId: "r1",
      taskId: "ui",
      attempt: 2,
      priority: "high",
      task,
      rank: 3,
      notBefore: 0,
      placement: { labels: ["gpu"], requires: [] },
      repo: "/tmp/repo",
      baseCommit: sha,
      branch: "ado/r1/ui",
      inputs: [{ taskId: "api", status: "succeeded", branch: "ado/r1/api", commit: sha, summary: "done", costUsd: 0.5 }],
      readyAt: at,
      submittedAt: at,
      workerId: "w1",
    },
  ],
  SchedulerInput: [
    {
      type: "task.result",
      runId: "r1",
      taskId: "api",
      attempt: 1,
      workerId: "w1",
      status: "failed",
      failure: { message: "exit 1", retryable: true, kind: "exit", exitCode: 1 },
      files: ["a.ts"],
      startedAt: at,
      finishedAt: at,
      outputTail: "boom",
    },
    { type: "merge.result", runId: "r1", taskId: "api", status: "merged", integrationCommit: sha, integrationGeneration: 3, files: ["a.ts"], round: 0 },
    { type: "merge.into.result", runId: "r1", into: "main", status: "fast-forward", commit: sha, reason: "" },
    { type: "control", runId: "r1", taskId: "api", action: "pause", reason: "lunch", by: "me", at },
    { type: "batch.due", runId: "r1", stage: "small", due: 1_700_000_005_000 },
  ],
  MergeRequest: [
    {
      type: "merge.request",
      runId: "r1",
      taskId: "api",
      attempt: 1,
      repo: "/tmp/repo",
      commit: sha,
      branch: "ado/r1/api",
      baseCommit: sha,
      integrationBranch: "ado/r1/integration",
      settings: { mode: "merge", rules: [{ paths: ["x"], strategy: "regenerate", command: "npm i" }] },
      prompt: "p",
      related: [{ taskId: "ui", prompt: "q", files: ["x"] }],
      resolution: { round: 1, choice: "agent", resolver: "fix", by: "me", at },
    },
    { type: "merge.into", runId: "r1", repo: "/tmp/repo", integrationBranch: "ado/r1/integration", baseCommit: sha, into: "main", updateCheckout: true },
  ],
  AdoEvent: [
    { type: "run.accepted", runId: "r1", at, name: "demo", tasks: [{ id: "api", needs: [], priority: "normal" }], queued: ["api"] },
    { type: "run.completed", runId: "r1", at, status: "succeeded", counts: { succeeded: 2 }, tasks: [{ id: "api", status: "succeeded", attempts: 1 }] },
    { type: "task.output", runId: "r1", taskId: "api", attempt: 1, at, stream: "stdout", data: "hello\n" },
    { type: "task.failed", runId: "r1", taskId: "api", attempt: 1, at, error: "x", willRetry: false, finishedAt: at },
    { type: "agent.usage", runId: "r1", taskId: "api", attempt: 1, at, seq: 3, inputTokens: 10, outputTokens: 5, costUsd: 0.1, costSource: "reported" },
    { type: "merge.hitl_required", runId: "r1", taskId: "api", attempt: 1, at, hitlId: "r1.api", round: 1, reason: "conflict", files: ["a"], message: "m" },
  ],
  WorkerRecord: [
    { workerId: "w1", host: "h", pid: 1, slots: 2, running: 1, pending: 0, agents: ["shell"], labels: ["gpu"], active: ["r1.api.1"], loadSeq: 4, startedAt: at, heartbeatAt: at, state: "running" },
  ],
  WorkerLoad: [{ type: "worker.load", workerId: "w1", running: 0, finished: ["r1.api.1"], loadSeq: 5 }],
  AttemptClaim: [{ workerId: "w1", claimedAt: at }],
  ControlRequest: [{ type: "control", runId: "r1", action: "cancel", reason: "", by: "me", at }],
  RunRecord: [{ runId: "r1", name: "demo", status: "running", graph, repo: "/tmp/repo", baseCommit: sha, submittedAt: at, acceptedAt: at, deadline: 5, merge: { mode: "merge", rules: [] } }],
  TaskRecord: [{ runId: "r1", taskId: "api", status: "succeeded", attempts: 1, workerId: "w1", commit: sha, files: ["a"], summary: "s", costUsd: 1, hitlRound: 0 }],
  RunBacklog: [{ runId: "r1", open: 3, updatedAt: at }],
  StageState: [{ runId: "r1", stage: "review", nextStart: 1_700_000_010_000, failures: 2, openUntil: 1_700_000_060_000, batchSince: 1_700_000_000_000, updatedAt: at }],
  HitlRecord: [
    {
      id: "r1.api",
      runId: "r1",
      taskId: "api",
      attempt: 1,
      repo: "/tmp/repo",
      integrationBranch: "ado/r1/integration",
      branch: "ado/r1/api",
      source: sha,
      base: sha,
      files: ["a"],
      reason: "conflict",
      message: "m",
      conflicts: [{ path: "a", kind: "content", base: "x", ours: "y", theirs: "z" }],
      prompts: { task: "p", related: [] },
      settings: { mode: "merge", rules: [] },
      round: 1,
      state: "open",
      history: [{ round: 1, choice: "ours", by: "me", at, outcome: "conflict", message: "m" }],
      createdAt: at,
      updatedAt: at,
    },
  ],
  WorktreeRecord: [
    { runId: "r1", taskId: "api", attempt: 1, repo: "/tmp/repo", path: "/tmp/wt", branch: "ado/r1/api", host: "h", state: "kept", reason: "dirty", createdAt: at, updatedAt: at, updatedBy: "worker w1" },
  ],
  DeadLetter: [{ type: "dead.letter", actor: "scheduler", subject: "ado.submit", reason: "bad", payload: new Uint8Array([1, 2, 3]), headers: { a: "b" }, at }],
  LeaseRecord: [{ holder: "s1", expiresAt: 5, term: 2 }],
  CostHistory: [{ agent: "claude", sizeClass: "m", samples: 3, costUsd: 0.4, tokens: 12000, updatedAt: at }],
  CheckpointRecord: [
    { runId: "r1", taskId: "api", attempt: 1, n: 2, workerId: "w1", agent: "claude", sessionHost: "h", at, commit: sha, ref: "refs/ado/checkpoints/r1/api/1", sessionId: "s-1", session: { object: "r1.api.1.2", bytes: 100 } },
  ],
  WorkerDrain: [{ type: "worker.drain", by: "me@host", reason: "scale down", graceMs: 30_000 }, { type: "worker.drain", by: "scaler-1" }],
  ScalerPolicy: [
    {
      pool: "local",
      policy: { min: 0, max: 6, targetQueue: 5, utilization: { low: 0.2, high: 0.8 }, scaleUp: { cooldown: 1000, stabilization: 0 }, scaleDown: { cooldown: 60_000 }, idleTimeout: 120_000, maxStep: 2, warmupTimeout: 60_000 },
      source: "autoscale",
      by: "me@host",
      at,
    },
    { pool: "gpu", policy: { min: 4, max: 4 }, source: "scale", by: "me@host", at },
  ],
  ScalerState: [
    {
      pool: "local",
      backend: "local",
      lastUpAt: 5,
      recommendations: [{ at: 5, desired: 3 }],
      idleSince: { w1: 4 },
      warming: [{ id: "w2", at: 5, by: "scaler-1", host: "h" }],
      stopping: { w3: 6 },
      seen: ["w1"],
      agents: ["shell"],
      warmups: [1200],
      failures: 1,
      retryAt: 9,
      last: { at: 5, desired: 3, ready: 1, warming: 1, backlog: 4, running: 1, reason: "backlog 4 over target 1" },
      term: 2,
      updatedAt: at,
    },
  ],
  RunSnapshot: [
    {
      runId: "r1",
      name: "demo",
      status: "running",
      paused: false,
      seq: 42,
      events: 17,
      complete: true,
      base: 1_700_000_000_000,
      acceptedAt: at,
      updatedAt: at,
      integrationBranch: "ado/r1/integration",
      integrationCommit: sha,
      baseCommit: sha,
      attention: [{ taskId: "ui", hitlId: "r1.ui", message: "conflict in a" }],
      budget: { maxCostUsd: 5 },
      budgetWait: { message: "would pass the budget", nextTaskId: "ui" },
      counts: { succeeded: 1, running: 1 },
      costUsd: 0.5,
      costKnown: true,
      tasks: snapshotTasks,
      parts: 0,
    },
    { runId: "r2", status: "unknown", seq: 0, events: 0, complete: false, base: 0, updatedAt: at, counts: {}, costUsd: 0, tasks: { ...snapshotTasks, ids: [], status: [], attempts: [], started: [], finished: [], worker: [], workers: [], cost: [], activity: [], error: [], waiting: [], texts: [], notes: [] }, parts: 2 },
  ],
  RunSnapshotPart: [{ runId: "r1", seq: 42, part: 1, tasks: snapshotTasks }],
  WebhookBody: [
    { type: "run.completed", delivery: "d-1", runId: "r1", at, status: "succeeded", integrationBranch: "ado/r1/integration", counts: { succeeded: 2 } },
    { type: "run.needs_attention", delivery: "d-2", runId: "r1", at, status: "needs_attention", attention: [{ taskId: "ui", hitlId: "r1.ui", message: "m" }] },
  ],
  ProviderState: [
    {
      provider: "anthropic-team",
      tokens: 2.5,
      refilledAt: 5,
      active: { "r1.api.1": 4 },
      circuit: { state: "half_open", failures: 0, until: 9, probes: ["r1.ui.1"], successes: 1, reason: "rate limited", changedAt: 5 },
      counted: ["r1.api.1"],
      samples: [[5, 1, 1200], [6, 0, 300]],
      adapted: { concurrent: 2, perMinute: 10, steppedAt: 6 },
    },
  ],
  ProviderEvent: [
    { type: "provider.circuit", provider: "anthropic-team", at, from: "closed", to: "open", reason: "3 rate limits", until: at },
    { type: "provider.adaptive", provider: "anthropic-team", at, direction: "down", from: { concurrent: 4 }, to: { concurrent: 2 }, reason: "30% errors" },
  ],
};

/** A graph file as a person writes it (durations as text, env numbers): the parser's happy path. */
export const GRAPH_FILE_SAMPLE = {
  name: "demo",
  maxDuration: "1h",
  maxParallel: 2,
  placement: { labels: ["linux"] },
  merge: { mode: "squash", validate: { run: "npm test", timeout: "5m" }, rules: [{ paths: ["*.lock"], strategy: "regenerate", command: "npm i" }], into: "main" },
  tasks: [
    { id: "api", prompt: "write it", run: "echo api", timeout: "30s", env: { DEBUG: 1, FLAG: true }, retry: { attempts: 3, backoff: "1s", maxBackoff: "1m" } },
    { id: "ui", agent: "shell", run: "echo ui", needs: ["api"], priority: "critical", cwd: "web" },
    { id: "doc", agent: "noop", needs: ["api", "ui"], placement: { requires: ["docs"] } },
  ],
};

/** ado.config.yaml with most settings. */
export const CONFIG_SAMPLE = {
  prefix: "ado",
  server: "nats://127.0.0.1:4222",
  workers: 2,
  slots: 3,
  logLevel: "info",
  balancer: { strategy: "round_robin", maxHeld: 100 },
  worker: { labels: ["gpu"], capabilities: ["docker"], accessMode: "api", costPerTask: 0.5 },
  maxQueued: 10,
  heartbeatMs: 500,
  shutdown: { graceMs: 1000, forceMs: 500 },
  embedded: { port: 4333 },
  merge: { mode: "merge", resolver: { run: "fix", timeout: "2m" } },
  git: { access: "clone" },
};
