import { mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { checkoutFingerprint } from "../../src/git/index.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { AdoEvent } from "../../src/runtime/messages.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { useTestServer, eventually, uniqueTopology } from "../helpers/nats.js";

const ts = useTestServer("ado-wt-");

async function stackAndClient(workers: number, extra: Record<string, unknown> = {}) {
  const topo = uniqueTopology();
  const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers, worktreeDir: ts.scratch, heartbeatMs: 200, ...extra });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: ts.url, name: "test-client", logger: silentLogger });
  const extraStacks: Stack[] = [];
  return {
    stack,
    config,
    client: new AdoClient(nc, topo),
    /** Starts more workers later, in a stack of their own (as `ado worker` would). */
    addWorkers: async (n: number) => {
      extraStacks.push(await Stack.start({ config, logger: silentLogger, actors: [], workers: n }));
    },
    close: async () => {
      await nc.drain();
      await Promise.all(extraStacks.map((s) => s.close()));
      await stack.close();
    },
  };
}

describe("run - end to end on real NATS and git", () => {
  it("three independent tasks on three workers overlap in time; dependents see their dependencies' files; the checkout is untouched", async () => {
    const repo = await makeRepo();
    // Untracked, modified and staged state in the user's checkout must all survive.
    await writeFile(join(repo.dir, "scratch.txt"), "untracked\n");
    await writeFile(join(repo.dir, "README.md"), "# sample, edited by the user\n");
    await writeFile(join(repo.dir, "staged.txt"), "staged\n");
    gitOut(repo.dir, "add", "staged.txt");
    const before = await checkoutFingerprint(repo.dir);
    const { client, close } = await stackAndClient(3);
    try {
      // Each root waits (at most 20 s) until all three have started, outside the worktrees:
      // they overlap in time however slow the machine is, unless they cannot run at once.
      const gate = await mkdtemp(join(ts.scratch, "overlap-"));
      const meet = (id: string) => `touch ${gate}/${id}; for i in $(seq 200); do [ $(ls ${gate} | wc -l) -ge 3 ] && break; sleep 0.1; done`;
      const graph = parseGraph(`
name: e2e
tasks:
  - { id: a, run: "${meet("a")}; echo A > a.txt" }
  - { id: b, run: "${meet("b")}; echo B > b.txt" }
  - { id: c, run: "${meet("c")}; echo C > c.txt" }
  - { id: d, needs: [a, b, c], run: "cat a.txt b.txt c.txt > d.txt" }
`);
      const events: AdoEvent[] = [];
      const outcome = await client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status).toBe("succeeded");
      const byId = new Map(outcome.tasks.map((t) => [t.id, t]));
      // Overlap: each of a, b, c started before any of them finished.
      const roots = ["a", "b", "c"].map((id) => byId.get(id)!);
      const lastStart = Math.max(...roots.map((t) => Date.parse(t.startedAt!)));
      const firstEnd = Math.min(...roots.map((t) => Date.parse(t.finishedAt!)));
      expect(lastStart).toBeLessThan(firstEnd);
      expect(new Set(roots.map((t) => t.workerId)).size).toBe(3);
      // d ran on top of a, b and c.
      const integration = outcome.integrationBranch!;
      expect(gitOut(repo.dir, "show", `${integration}:d.txt`)).toBe("A\nB\nC");
      expect(gitOut(repo.dir, "show", `ado/${outcome.runId}/d:d.txt`)).toBe("A\nB\nC");
      expect(events.some((e) => e.type === "task.output")).toBe(false); // these tasks print nothing
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
      // Merged tasks' worktrees are removed just after their merge is reported (off the merge path).
      await eventually(() => !gitOut(repo.dir, "worktree", "list").includes(outcome.runId), 30_000, "the run's worktrees removed");
    } finally {
      await close();
      await repo.cleanup();
    }
  });

  it("a failing task fails the run, its output is shown, and its dependents are skipped", async () => {
    const repo = await makeRepo();
    const { client, close } = await stackAndClient(2);
    try {
      const graph = parseGraph(`
name: failing
tasks:
  - { id: ok, run: "echo fine > ok.txt" }
  - { id: bad, run: "echo about to fail; echo oops >&2; exit 3" }
  - { id: after, needs: [bad], run: "true" }
`);
      const events: AdoEvent[] = [];
      const outcome = await client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status).toBe("failed");
      expect(outcome.error).toMatch(/'bad' failed: exited with code 3/);
      const status = Object.fromEntries(outcome.tasks.map((t) => [t.id, t.status]));
      expect(status).toEqual({ ok: "succeeded", bad: "failed", after: "skipped" });
      const failed = events.find((e) => e.type === "task.failed");
      expect(failed && failed.type === "task.failed" && failed.outputTail).toMatch(/about to fail[\s\S]*oops/);
      const output = events.filter((e) => e.type === "task.output").map((e) => (e.type === "task.output" ? e.data : "")).join("");
      expect(output).toContain("oops");
    } finally {
      await close();
      await repo.cleanup();
    }
  });

  it("a command that is not installed fails at once, not retried, and says so", async () => {
    const repo = await makeRepo();
    const { client, close } = await stackAndClient(1);
    try {
      const graph = parseGraph(`
name: missing-binary
tasks:
  - id: t
    run: "ado-test-no-such-command --flag"
    retry: { attempts: 3, backoff: 10ms }
`);
      const events: AdoEvent[] = [];
      const outcome = await client.run({ graph, repo: repo.dir, onEvent: (e) => events.push(e) });
      expect(outcome.status).toBe("failed");
      const t = outcome.tasks.find((x) => x.id === "t")!;
      expect(t.attempts).toBe(1);
      expect(t.error).toMatch(/not found \(exit 127\).*not retried/);
      expect(events.some((e) => e.type === "task.retrying")).toBe(false);
      const failed = events.find((e) => e.type === "task.failed");
      expect(failed && failed.type === "task.failed" && failed.outputTail).toMatch(/ado-test-no-such-command/);
    } finally {
      await close();
      await repo.cleanup();
    }
  });

  it("a task waits in the ready queue while no worker exists, and runs when one arrives (backpressure, not loss)", async () => {
    const { client, addWorkers, close } = await stackAndClient(0);
    try {
      const graph = parseGraph('tasks:\n  - { id: late, agent: noop }\n');
      const { runId } = await client.submit({ graph });
      // Longer than ten redeliveries at the balancer's 250 ms backoff.
      await new Promise((r) => setTimeout(r, 3_500));
      await addWorkers(1);
      const outcome = await client.watch(runId);
      expect(outcome.status).toBe("succeeded");
      expect(outcome.tasks[0]!.attempts).toBe(1);
    } finally {
      await close();
    }
  });

  it("a submission delivered again after the dedupe window is not run again", async () => {
    const { client, close } = await stackAndClient(2);
    try {
      const graph = parseGraph('tasks:\n  - { id: a, agent: noop }\n  - { id: b, agent: noop, needs: [a] }\n');
      const first = await client.run({ graph });
      expect(first.status).toBe("succeeded");
      // The same run id under another msg id: the dedupe window no longer protects it.
      const { encode } = await import("../../src/runtime/codec.js");
      const { SCHEMAS } = await import("../../src/runtime/messages.js");
      const { GraphDefSchema } = await import("../../src/runtime/graph.js");
      const again = encode(SCHEMAS.SubmitRun, {
        type: "run.submit",
        runId: first.runId,
        graph: GraphDefSchema.parse(graph),
        submittedAt: new Date().toISOString(),
      });
      await client.js.publish(client.topo.subjects.submit, again.data, { headers: again.headers, msgID: "another-id" });
      // Give the scheduler time to handle it, then count what ran: still one start per task.
      await new Promise((r) => setTimeout(r, 1_000));
      const started: string[] = [];
      const consumer = await client.js.consumers.get(client.topo.streams.events.name, {
        filter_subjects: `${client.topo.subjects.runEvents(first.runId).slice(0, -1)}task.*.started`,
      });
      const info = await consumer.info();
      for (let i = 0; i < info.num_pending; i++) {
        const m = await consumer.next({ expires: 1_000 });
        if (m) started.push(m.subject);
      }
      expect(started).toHaveLength(2);
    } finally {
      await close();
    }
  });
});
