/**
 * A stage's limits (its `perMinute` rate window and its circuit breaker) are stored in
 * KV `stages`, so a scheduler that takes over a run (a restart, another replica) goes on
 * from them: real scheduler processes' actors, balancer, merger and workers on real NATS
 * and git; shell tasks gated by files.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ACTOR_KINDS, Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { stageKey } from "../../src/runtime/names.js";
import { openBuckets } from "../../src/runtime/topology.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { eventually, uniqueTopology, useTestServer } from "../helpers/nats.js";

const ts = useTestServer("ado-stages-restart-");

describe("stages - the limits outlive the scheduler", () => {
  it("a scheduler that takes over while a stage's rate window is full and another's circuit is open keeps both: the tasks it releases wait for the slot and the cooldown", async () => {
    const repo = await makeRepo();
    const topo = uniqueTopology();
    const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 2, slots: 3, worktreeDir: ts.scratch, heartbeatMs: 200 });
    // Everything but the scheduler, which runs apart so it can be replaced mid-run.
    const rest = await Stack.start({ config, logger: silentLogger, actors: ACTOR_KINDS.filter((k) => k !== "scheduler" && k !== "scaler") });
    let scheduler = await Stack.start({ config, logger: silentLogger, actors: ["scheduler"], workers: 0 });
    const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
    const client = new AdoClient(nc, topo);
    const kv = await openBuckets(nc, topo);
    try {
      const dir = await mkdtemp(join(ts.scratch, "gate-"));
      const gate = join(dir, "open");
      // `rate`: two starts a minute (30 s apart). `brk`: one failure opens it for 30 s.
      // r2 and f2 wait for `gate`, which the test opens only once the first scheduler is gone.
      const graph = parseGraph(`
name: limits
stages:
  rate: { agent: shell, perMinute: 2 }
  brk: { agent: shell, circuit: { failures: 1, cooldown: 30s } }
tasks:
  - { id: r1, stage: rate, run: "echo r1 > r1.txt" }
  - { id: f1, stage: brk, run: "exit 3", retry: { attempts: 1 } }
  - { id: gate, run: "while [ ! -f ${gate} ]; do sleep 0.05; done; echo g > gate.txt" }
  - { id: r2, stage: rate, needs: [gate], run: "echo r2 > r2.txt" }
  - { id: f2, stage: brk, needs: [gate], run: "echo f2 > f2.txt" }
`);
      const events: AdoEvent[] = [];
      const { runId } = await client.submit({ graph, repo: repo.dir });
      const outcome = client.watch(runId, { onEvent: (e) => events.push(e) });
      outcome.catch(() => undefined); // awaited below
      const find = <T extends AdoEvent["type"]>(type: T, taskId?: string) =>
        events.find((e): e is Extract<AdoEvent, { type: T }> => e.type === type && (taskId === undefined || ("taskId" in e && e.taskId === taskId)));

      // r1 took the rate's slot; f1 failed for good and opened brk's circuit.
      await eventually(() => (find("task.succeeded", "r1") && find("task.failed", "f1") ? true : undefined), 60_000, "r1 done and f1 failed");
      const acceptedAt = Date.parse(find("run.accepted")!.at);
      const failedAt = Date.parse(find("task.failed", "f1")!.at);
      // What the next scheduler will read: the stored window and circuit.
      const stored = async (stage: string) => {
        const e = await kv.stages.get(stageKey(runId, stage));
        return e?.operation === "PUT" ? decode(SCHEMAS.StageState, e.value) : undefined;
      };
      expect(await stored("rate")).toMatchObject({ nextStart: acceptedAt + 30_000 });
      expect(await stored("brk")).toMatchObject({ failures: 1, openUntil: failedAt + 30_000 });

      // The scheduler goes; a new one takes over; then the gate opens and r2, f2 become ready.
      await scheduler.close();
      scheduler = await Stack.start({ config, logger: silentLogger, actors: ["scheduler"], workers: 0 });
      await writeFile(gate, "");

      const done = await outcome;
      expect(done.tasks.find((t) => t.id === "f1")?.status).toBe("failed");
      for (const id of ["r1", "gate", "r2", "f2"]) expect(done.tasks.find((t) => t.id === id)?.status, id).toBe("succeeded");
      // The released tasks were ready long before their limits allowed (the gate opened
      // seconds after acceptance), so a scheduler that started fresh ran them at once.
      const gateDone = Date.parse(find("task.succeeded", "gate")!.finishedAt!);
      expect(gateDone, "the gate ended before the rate's next slot (else this test proves nothing)").toBeLessThan(acceptedAt + 30_000);
      expect(Date.parse(find("task.started", "r2")!.at), "r2 started before the rate's next slot").toBeGreaterThanOrEqual(acceptedAt + 30_000);
      expect(Date.parse(find("task.started", "f2")!.at), "f2 started while brk's circuit was open").toBeGreaterThanOrEqual(failedAt + 30_000);
      for (const id of ["r1", "r2", "f2"]) expect(gitOut(repo.dir, "show", `${done.integrationBranch}:${id}.txt`)).toBe(id);
      // The run ended: its stages' limits are deleted.
      await eventually(async () => ((await stored("rate")) === undefined && (await stored("brk")) === undefined ? true : undefined), 30_000, "the stages' records deleted");
      await eventually(() => !gitOut(repo.dir, "worktree", "list").includes(runId), 30_000, "the run's worktrees removed");
    } finally {
      await nc.drain();
      await scheduler.close();
      await rest.close();
      await repo.cleanup();
    }
  }, 180_000);
});
