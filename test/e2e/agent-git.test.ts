/**
 * Agents that commit and branch on their own (aider, Claude Code do), end to end: real
 * scheduler, balancer, merge coordinator and workers on real NATS and git; the agents
 * are shell commands doing what such an agent does. What they commit lands when that is
 * unambiguous, otherwise the attempt fails naming what happened; nothing is lost, no
 * "no changes" when there were commits, and no branch of theirs is left behind.
 */
import { join } from "node:path";
import { describe, expect, it, onTestFailed } from "vitest";
import { Stack } from "../../src/actors/stack.js";
import { AdoClient } from "../../src/runtime/client.js";
import { parseConfig } from "../../src/runtime/config.js";
import { connectNats } from "../../src/runtime/connection.js";
import { parseGraph } from "../../src/runtime/graph.js";
import { silentLogger } from "../../src/runtime/logger.js";
import type { AdoEvent } from "../../src/runtime/messages.js";
import { gitOut, makeRepo } from "../helpers/repo.js";
import { useTestServer, uniqueTopology } from "../helpers/nats.js";

const ts = useTestServer("ado-agent-git-");

async function runGraph(yaml: string) {
  const repo = await makeRepo();
  const topo = uniqueTopology();
  const config = parseConfig({ prefix: topo.prefix, server: ts.url, workers: 2, worktreeDir: join(ts.scratch, topo.prefix), heartbeatMs: 200 });
  const stack = await Stack.start({ config, logger: silentLogger });
  const nc = await connectNats({ servers: ts.url, name: "agent-git", logger: silentLogger });
  const events: AdoEvent[] = [];
  onTestFailed(() => console.log(events.filter((e) => e.type !== "task.output").map((e) => `${e.type} ${"taskId" in e ? e.taskId : ""} ${e.type === "task.failed" ? e.error : ""}`).join("\n")));
  try {
    const outcome = await new AdoClient(nc, topo).run({ graph: parseGraph(yaml), repo: repo.dir, onEvent: (e) => events.push(e) });
    return { repo, outcome, events };
  } finally {
    await nc.drain();
    await stack.close();
  }
}

const branches = (dir: string) => gitOut(dir, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split("\n").filter(Boolean).sort();

describe("agent git - what an agent commits lands when it is unambiguous", () => {
  it("commits on the task branch, on a branch of its own, on a detached HEAD, and on a branch it left again: all land, reported with their files; its branches are gone", async () => {
    const { repo, outcome, events } = await runGraph(`
tasks:
  - { id: own, run: "echo own > own.txt && git add own.txt && git commit -qm own" }
  - { id: side, run: "git checkout -q -b side && echo side > side.txt && git add -A && git commit -qm side && echo more > more.txt" }
  - { id: detached, run: "git checkout -q --detach && echo d > detached.txt && git add -A && git commit -qm detached" }
  - { id: back, run: "git checkout -q -b elsewhere && echo back > back.txt && git add -A && git commit -qm back && git checkout -q -" }
`);
    try {
      expect(outcome.status, outcome.error).toBe("succeeded");
      // Never "no changes" when the agent committed: each reports its files and was merged.
      const files = (id: string) => events.find((e): e is Extract<AdoEvent, { type: "task.succeeded" }> => e.type === "task.succeeded" && e.taskId === id)!.files.sort();
      expect(files("own")).toEqual(["own.txt"]);
      expect(files("side")).toEqual(["more.txt", "side.txt"]);
      expect(files("detached")).toEqual(["detached.txt"]);
      expect(files("back")).toEqual(["back.txt"]);
      expect(outcome.tasks.every((t) => t.status === "succeeded")).toBe(true);
      const tree = gitOut(repo.dir, "ls-tree", "-r", "--name-only", outcome.integrationBranch!).split("\n").sort();
      expect(tree).toEqual(["README.md", "back.txt", "detached.txt", "more.txt", "own.txt", "side.txt"]);
      // No branch of the agents' is left in the user's repository.
      expect(branches(repo.dir).filter((b) => !b.startsWith("ado/"))).toEqual(["main"]);
    } finally {
      await repo.cleanup();
    }
  }, 90_000);
});

describe("agent git - what cannot land unambiguously fails the attempt, naming what happened, and is kept", () => {
  it("work on two branches of its own; a task branch moved below its base", async () => {
    const { repo, outcome, events } = await runGraph(`
tasks:
  - { id: two, run: "git checkout -q -b p1 && echo p1 > p1.txt && git add -A && git commit -qm p1 && git checkout -q -b p2 HEAD~1 && echo p2 > p2.txt && git add -A && git commit -qm p2" }
  - { id: a, run: "echo a > a.txt" }
  - { id: below, needs: [a], run: "git reset -q --hard HEAD~1" }
`);
    try {
      expect(outcome.status).toBe("failed");
      const failed = (id: string) => events.find((e): e is Extract<AdoEvent, { type: "task.failed" }> => e.type === "task.failed" && e.taskId === id)!;
      expect(failed("two").error).toMatch(/the agent committed on branch 'p2' and on branch 'p1'|the agent committed on branch 'p1'/);
      expect(failed("below").error).toContain("moved the task branch below its base");
      // Nothing is lost: HEAD's work under the attempt ref, the other branch beside it.
      const run = outcome.runId;
      expect(gitOut(repo.dir, "show", `refs/ado/attempts/${run}/two/1:p2.txt`)).toBe("p2");
      expect(gitOut(repo.dir, "show", `refs/ado/attempts/${run}/two/1-branches/p1:p1.txt`)).toBe("p1");
      // And no branch of the agent's is left.
      expect(branches(repo.dir).filter((b) => !b.startsWith("ado/"))).toEqual(["main"]);
    } finally {
      await repo.cleanup();
    }
  }, 90_000);
});
