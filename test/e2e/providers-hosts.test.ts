/**
 * One provider's rate shared by a fleet: two balancer processes and two worker processes
 * ("two hosts": separate processes, separate config files and worktree directories)
 * draw from one token bucket in NATS. Every permit the governor grants is stamped on the
 * work it sends (`task.work.provider.grantedAt`); the test reads every work message and
 * checks that no time window holds more permits than the bucket allows:
 * `burst + perMinute x window`.
 */
import { writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { decode } from "../../src/runtime/codec.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import { SCHEMAS, type AdoEvent } from "../../src/runtime/messages.js";
import { startAdo, stopProcess } from "../helpers/cli.js";
import { uniqueTopology, useTestServer } from "../helpers/nats.js";
import { makeRepo } from "../helpers/repo.js";

const ts = useTestServer("ado-providers-hosts-");

/** The most permits any window of `windowMs` (starting at a permit) holds. */
function busiestWindow(times: number[], windowMs: number): { count: number; from: number } {
  const sorted = [...times].sort((a, b) => a - b);
  let best = { count: 0, from: 0 };
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[j]! < sorted[i]! - windowMs) j++;
    // sorted[j..i] lie within windowMs of each other.
    if (i - j + 1 > best.count) best = { count: i - j + 1, from: sorted[j]! };
  }
  return best;
}

describe("providers - one rate shared by two hosts", () => {
  it(
    "providers - two balancer processes and two worker processes on separate directories never start more tasks on one provider than its rate and burst allow, together",
    { timeout: 180_000 },
    async () => {
      const repo = await makeRepo();
      const topo = uniqueTopology();
      // 60 a minute (one a second), 2 at once after a quiet spell: 12 tasks take ~10 s of permits.
      const perMinute = 60;
      const burst = 2;
      const tasks = 12;
      const hostConfig = async (name: string) => {
        const file = join(ts.scratch, `${name}.yaml`);
        await writeFile(
          file,
          [
            `prefix: ${topo.prefix}`,
            `server: ${ts.url}`,
            `worktreeDir: ${join(ts.scratch, name, "worktrees")}`,
            "heartbeatMs: 300",
            // A small window of held tasks, so both balancers hold some of the run; workers taken in turn.
            "balancer: { maxHeld: 2, strategy: round_robin }",
            "providers:",
            `  shared: { agent: shell, access: api, limits: { perMinute: ${perMinute}, burst: ${burst} } }`,
            "",
          ].join("\n"),
        );
        return file;
      };
      const [hostA, hostB] = [await hostConfig("host-a"), await hostConfig("host-b")];
      // The scheduler and merger in this process; what the test is about in processes of their own.
      const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 0, worktreeDir: join(ts.scratch, "here"), heartbeatMs: 300 });
      const stack = await Stack.start({ config, logger: silentLogger, actors: ["scheduler", "merger"] });
      const procs = await Promise.all([
        startAdo(["actor", "balancer", "--config", hostA], /balancer running/),
        startAdo(["actor", "balancer", "--config", hostB], /balancer running/),
        startAdo(["worker", "--config", hostA, "--slots", "4"], /worker\(s\)/),
        startAdo(["worker", "--config", hostB, "--slots", "4"], /worker\(s\)/),
      ]);
      const nc = await connectNats({ servers: ts.url, name: "providers-hosts-test", logger: silentLogger });
      // Every work message a balancer stores (a core subscription sees each publish once).
      const granted = new Map<string, { at: number; worker: string }>();
      const sub = nc.subscribe(topo.subjects.work("*"), {
        callback: (_e, m) => {
          const work = decode(SCHEMAS.TaskWork, m.data, m.headers);
          const at = work.provider?.grantedAt;
          // A redelivered ready message sent again carries its first permit: counted once.
          if (at !== undefined && !granted.has(`${work.taskId}.${work.attempt}`)) granted.set(`${work.taskId}.${work.attempt}`, { at, worker: work.workerId! });
        },
      });
      try {
        const client = new AdoClient(nc, topo);
        const graph = parseGraph("tasks:\n" + Array.from({ length: tasks }, (_, i) => `  - { id: t${i}, run: "true", provider: shared }`).join("\n") + "\n");
        const { runId } = await client.submit({ graph, repo: repo.dir });
        const seen: AdoEvent[] = [];
        const outcome = await client.watch(runId, { onEvent: (e) => seen.push(e) });
        expect(outcome.status).toBe("succeeded");
        await nc.flush();
        expect(granted.size).toBe(tasks);
        const times = [...granted.values()].map((g) => g.at);
        // Every window, of any length up to the whole run, holds at most burst + rate x window.
        const span = Math.max(...times) - Math.min(...times);
        for (const windowMs of [0, 500, 1_000, 2_000, 5_000, 10_000, 20_000, span]) {
          const w = busiestWindow(times, windowMs);
          const allowed = burst + Math.floor((perMinute * windowMs) / 60_000);
          expect(w.count, `${w.count} permits within ${windowMs} ms from ${new Date(w.from).toISOString()}; the bucket allows ${allowed}`).toBeLessThanOrEqual(allowed);
        }
        // The run really was rate-limited (not merely short): a permit a second after the burst.
        expect(span).toBeGreaterThanOrEqual(((tasks - burst) * 60_000) / perMinute - 1_000);
        // Both hosts took part: each balancer sent work, and each worker ran some.
        const assigned = await Promise.all(
          procs.slice(0, 2).map(async (p) => {
            const r = await nc.request(topo.subjects.status("balancer", `balancer-${hostname()}-${p.child.pid}`), undefined, { timeout: 10_000 });
            return (r.json() as { assigned: number }).assigned;
          }),
        );
        for (const n of assigned) expect(n).toBeGreaterThan(0);
        expect(assigned[0]! + assigned[1]!).toBeGreaterThanOrEqual(tasks);
        expect(new Set([...granted.values()].map((g) => g.worker)).size).toBe(2);
        // The starts the run's events report: each task once.
        expect(seen.filter((e) => e.type === "task.started")).toHaveLength(tasks);
      } finally {
        sub.unsubscribe();
        const codes = await Promise.all(procs.map((p) => stopProcess(p.child)));
        await nc.drain();
        await stack.close();
        await repo.cleanup();
        expect(codes).toEqual([0, 0, 0, 0]);
      }
    },
  );
});
