import { mkdtemp, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { AdoEvent } from "../../src/runtime/messages.js";
import { stageViews } from "../../src/cli/stages.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { runAdo } from "../helpers/cli.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";

const ts = useTestServer("ado-stages-");

/** `name{labels} value` lines of a metric whose labels include all of `labels`, summed. */
function metric(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{")) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

describe("stages - the CLI", () => {
  it("ado run exits 2 without running anything when a task names a stage the graph does not declare, naming it", async () => {
    const repo = await makeRepo();
    try {
      const graph = `${repo.dir}.stages.yaml`;
      await writeFile(graph, 'stages:\n  plan: { maxParallel: 1 }\n  review: {}\ntasks:\n  - { id: a, stage: plna, run: "true" }\n');
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain("task 'a' names stage 'plna', which the graph does not declare (did you mean 'plan'?): its stages are plan, review");
      expect(gitOut(repo.dir, "branch", "--list", "ado/*")).toBe("");
    } finally {
      await repo.cleanup();
    }
  }, 120_000);
});

describe("stages - end to end", () => {
  it("maxParallel 1 on a stage runs its tasks one after another while another stage's run at once; status and metrics show both stages", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    // Six slots: only the stage's limit can keep plan's tasks apart.
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 2, slots: 3, worktreeDir: ts.scratch, heartbeatMs: 200 });
    const stack = await Stack.start({ config, logger: silentLogger, recorder: { everyMs: 100 } });
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    try {
      const dir = await mkdtemp(join(ts.scratch, "gates-"));
      const started = join(dir, "started");
      const planGate = join(dir, "plan-gate");
      const buildGate = join(dir, "build-gate");
      // Each task notes that it started (outside the worktrees), waits for its stage's gate
      // (the test opens it), then works a moment: long enough for plan's tasks to overlap
      // if anything let two of them run at once.
      const task = (id: string, gate: string) =>
        `mkdir -p ${started} && touch ${started}/${id}; while [ ! -f ${gate} ]; do sleep 0.05; done; sleep 0.4; echo ${id} > ${id}.txt`;
      const graph = parseGraph(`
name: staged
stages:
  plan: { agent: shell, maxParallel: 1 }
  build: {}
tasks:
  - { id: p1, stage: plan, run: "${task("p1", planGate)}" }
  - { id: p2, stage: plan, run: "${task("p2", planGate)}" }
  - { id: p3, stage: plan, run: "${task("p3", planGate)}" }
  - { id: b1, stage: build, run: "${task("b1", buildGate)}" }
  - { id: b2, stage: build, run: "${task("b2", buildGate)}" }
  - { id: b3, stage: build, run: "${task("b3", buildGate)}" }
`);
      const events: AdoEvent[] = [];
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const outcome = client.watch(runId, { onEvent: (e) => events.push(e) });
      // Awaited below; a failed assertion before then must not leave its rejection unhandled.
      outcome.catch(() => undefined);

      // All three build tasks run at once, and only one plan task: the stages are apart.
      const marks = await eventually(
        async () => {
          const names = await readdir(started).catch(() => [] as string[]);
          return names.filter((n) => n.startsWith("b")).length === 3 && names.some((n) => n.startsWith("p")) ? names : undefined;
        },
        60_000,
        "the three build tasks and one plan task started",
      );
      expect(marks.filter((n) => n.startsWith("p"))).toHaveLength(1);
      // What `ado status` shows: each stage's tasks by state.
      const view = await eventually(async () => {
        const v = await client.status(runId);
        const stages = v ? stageViews(v.run.graph, v.tasks) : [];
        return stages.find((s) => s.name === "build")?.tasks.running === 3 && stages.find((s) => s.name === "plan")?.tasks.running === 1 ? stages : undefined;
      }, 30_000, "ado status: 3 build tasks running, 1 plan task running");
      expect(view.find((s) => s.name === "plan")).toMatchObject({ maxParallel: 1, tasks: { running: 1, pending: 2 } });
      // And the recorder's metrics.
      await eventually(async () => {
        const text = await stack.metrics.text();
        return metric(text, "ado_stage_tasks", { stage: "build", state: "running" }) === 3 &&
          metric(text, "ado_stage_tasks", { stage: "plan", state: "running" }) === 1 &&
          metric(text, "ado_stage_tasks", { stage: "plan", state: "pending" }) === 2
          ? true
          : undefined;
      }, 30_000, "ado_stage_tasks by stage and state");

      await writeFile(buildGate, "");
      await writeFile(planGate, "");
      const done = await outcome;
      expect(done.status).toBe("succeeded");

      // From the events: no two plan tasks overlapped (each started after the one before ended).
      const startOf = (id: string) => {
        const e = events.find((x): x is Extract<AdoEvent, { type: "task.started" }> => x.type === "task.started" && x.taskId === id);
        return Date.parse(e!.at);
      };
      const endOf = (id: string) => {
        const e = events.find((x): x is Extract<AdoEvent, { type: "task.succeeded" }> => x.type === "task.succeeded" && x.taskId === id);
        return Date.parse(e!.finishedAt!);
      };
      const plan = ["p1", "p2", "p3"].map((id) => ({ id, start: startOf(id), end: endOf(id) })).sort((a, b) => a.start - b.start);
      for (let i = 1; i < plan.length; i++) expect(plan[i]!.start, `${plan[i]!.id} started before ${plan[i - 1]!.id} ended`).toBeGreaterThanOrEqual(plan[i - 1]!.end);
      // The build tasks overlapped: each started before any of them ended.
      const build = ["b1", "b2", "b3"].map((id) => ({ start: startOf(id), end: endOf(id) }));
      expect(Math.max(...build.map((b) => b.start))).toBeLessThan(Math.min(...build.map((b) => b.end)));
      for (const id of ["p1", "p2", "p3", "b1", "b2", "b3"]) expect(gitOut(repo.dir, "show", `${done.integrationBranch}:${id}.txt`)).toBe(id);

      const text = await eventually(async () => {
        const t = await stack.metrics.text();
        return metric(t, "ado_stage_tasks_finished_total", { stage: "plan", state: "succeeded" }) === 3 ? t : undefined;
      }, 30_000, "the stage's finished tasks in the metrics");
      expect(metric(text, "ado_stage_tasks_finished_total", { stage: "build", state: "succeeded" })).toBe(3);
      await eventually(() => !gitOut(repo.dir, "worktree", "list").includes(runId), 30_000, "the run's worktrees removed");
    } finally {
      await nc.drain();
      await stack.close();
      await repo.cleanup();
    }
  }, 180_000);
});
