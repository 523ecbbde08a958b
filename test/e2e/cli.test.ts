import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkoutFingerprint } from "../../src/git/index.js";
import { runAdo, startAdo, stopProcess } from "../helpers/cli.js";
import { useTestServer, uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

describe("cli - ado run with the embedded stack", () => {
  it("prints one JSON outcome and exits 0 when the run succeeds", async () => {
    const repo = await makeRepo();
    try {
      const graph = join(repo.dir, "..", `${repo.dir.split("/").pop()}-graph.yaml`);
      await writeFile(graph, 'name: json\ntasks:\n  - { id: one, run: "echo 1 > one.txt" }\n  - { id: two, needs: [one], run: "cp one.txt two.txt" }\n');
      const before = await checkoutFingerprint(repo.dir);
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--workers", "2", "--json"]);
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.status).toBe("succeeded");
      expect(out.integrationBranch).toBe(`ado/${out.runId}/integration`);
      expect(out.tasks.map((t: { id: string }) => t.id)).toEqual(["one", "two"]);
      for (const t of out.tasks) {
        expect(t.status).toBe("succeeded");
        expect(t.attempts).toBe(1);
        expect(t.startedAt).toMatch(ISO);
        expect(t.finishedAt).toMatch(ISO);
      }
      expect(gitOut(repo.dir, "show", `${out.integrationBranch}:two.txt`)).toBe("1");
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      await repo.cleanup();
    }
  });

  it("exits 1 and shows the failing task's output when a task fails", async () => {
    const repo = await makeRepo();
    try {
      const r = await runAdo(["run", "check", "--cmd", "echo 'it broke here'; exit 7", "--repo", repo.dir]);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain("it broke here");
      expect(r.stdout).toMatch(/task: exited with code 7/);
    } finally {
      await repo.cleanup();
    }
  });

  it("exits 2 without running anything on a cycle, naming its path", async () => {
    const repo = await makeRepo();
    try {
      const graph = `${repo.dir}.cycle.yaml`;
      await writeFile(graph, 'tasks:\n  - { id: a, needs: [b], run: "true" }\n  - { id: b, needs: [a], run: "true" }\n');
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/cycle: (a -> b -> a|b -> a -> b)/);
      expect(gitOut(repo.dir, "branch", "--list", "ado/*")).toBe("");
    } finally {
      await repo.cleanup();
    }
  });
});

describe("cli - actors and workers as separate processes", () => {
  const ts = useTestServer();

  it("scheduler, balancer, merger and workers in their own processes run a graph, then drain on SIGINT", async () => {
    const repo = await makeRepo();
    const { prefix } = uniqueTopology();
    const env = { ADO_SERVER: ts.url, ADO_PREFIX: prefix };
    const procs = await Promise.all([
      startAdo(["actor", "scheduler"], /scheduler running/, { env }),
      startAdo(["actor", "balancer"], /balancer running/, { env }),
      startAdo(["actor", "merger"], /merger running/, { env }),
      startAdo(["worker", "--count", "2", "--health-port", "0"], /health: http:\/\/0\.0\.0\.0:\d+/, { env }),
    ]);
    // The worker process answers Kubernetes probes.
    const port = /health: http:\/\/0\.0\.0\.0:(\d+)/.exec(procs[3]!.output())![1];
    const ready = await fetch(`http://127.0.0.1:${port}/ready`);
    expect(ready.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    try {
      const graph = `${repo.dir}.graph.yaml`;
      await writeFile(graph, 'tasks:\n  - { id: x, run: "echo x > x.txt" }\n  - { id: y, run: "echo y > y.txt" }\n  - { id: z, needs: [x, y], run: "cat x.txt y.txt > z.txt" }\n');
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--json"], { env });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(gitOut(repo.dir, "show", `${out.integrationBranch}:z.txt`)).toBe("x\ny");
      // Work really went to the worker process: two distinct worker ids took x and y.
      const workers = new Set(out.tasks.filter((t: { id: string }) => t.id !== "z").map((t: { workerId: string }) => t.workerId));
      expect(workers.size).toBe(2);
    } finally {
      const codes = await Promise.all(procs.map((p) => stopProcess(p.child)));
      expect(codes).toEqual([0, 0, 0, 0]);
      await repo.cleanup();
    }
  });
});
