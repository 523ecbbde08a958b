/**
 * Remote mode end to end: workers and the merge coordinator share no disk with the
 * user's checkout. A local bare repository is the git remote; every actor and worker is
 * a separate OS process with its own directories; `ado run --remote` publishes the base
 * and brings the integration branch home.
 */
import { execFileSync } from "node:child_process";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkoutFingerprint } from "../../src/git/index.js";
import { runAdo, startAdo, stopProcess } from "../helpers/cli.js";
import { useTestServer, uniqueTopology } from "../helpers/nats.js";
import { gitOut, makeRepo } from "../helpers/repo.js";

const ts = useTestServer("ado-remote-");

describe("remote mode: workers and merger on clones of a git remote", () => {
  it("runs a graph on clone-only workers in separate processes and brings the integration branch home", async () => {
    const repo = await makeRepo();
    const remote = join(ts.scratch, "remote.git");
    execFileSync("git", ["init", "-q", "--bare", remote]);
    await writeFile(join(repo.dir, "untracked.txt"), "the user's\n");
    const before = await checkoutFingerprint(repo.dir);
    const { prefix } = uniqueTopology();
    const env = { ADO_SERVER: ts.url, ADO_PREFIX: prefix, ADO_GIT_ACCESS: "clone" };
    // Each host gets its own directories: nothing but the remote is shared.
    const host = (name: string) => ({ ...env, ADO_WORKTREE_DIR: join(ts.scratch, name, "worktrees"), ADO_CLONE_DIR: join(ts.scratch, name, "clones") });
    const procs = await Promise.all([
      startAdo(["actor", "scheduler"], /scheduler running/, { env }),
      startAdo(["actor", "balancer"], /balancer running/, { env }),
      // Two merge coordinators on two hosts: their pushes of the integration branch race,
      // and the lease makes the loser merge again on top of the winner's head.
      startAdo(["actor", "merger"], /merger running/, { env: host("merger-host") }),
      startAdo(["actor", "merger"], /merger running/, { env: host("merger-host-2") }),
      startAdo(["worker"], /worker\(s\)/, { env: host("worker-1") }),
      startAdo(["worker"], /worker\(s\)/, { env: host("worker-2") }),
    ]);
    try {
      const graph = `${repo.dir}.graph.yaml`;
      await writeFile(
        graph,
        [
          "tasks:",
          '  - { id: x, run: "sleep 0.3; echo x > x.txt" }',
          '  - { id: y, run: "sleep 0.3; echo y > y.txt" }',
          ...[1, 2, 3, 4, 5, 6].map((i) => `  - { id: f${i}, run: "echo ${i} > f${i}.txt" }`),
          '  - { id: z, needs: [x, y, f1, f2, f3, f4, f5, f6], run: "cat x.txt y.txt f*.txt > z.txt" }',
          "",
        ].join("\n"),
      );
      const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--remote", remote, "--json"], { env: { ADO_SERVER: ts.url, ADO_PREFIX: prefix }, timeoutMs: 150_000 });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      // The result is in the user's repository as a branch, and on the remote.
      expect(gitOut(repo.dir, "show", `${out.integrationBranch}:z.txt`)).toBe("x\ny\n1\n2\n3\n4\n5\n6");
      expect(gitOut(remote, "show", `${out.integrationBranch}:z.txt`)).toBe("x\ny\n1\n2\n3\n4\n5\n6");
      for (const t of ["x", "y", "z", "f1", "f6"]) expect(gitOut(remote, "rev-parse", `refs/heads/ado/${out.runId}/${t}`)).toMatch(/^[0-9a-f]{40}$/);
      // Work really happened on both workers' own clones, never in the user's repository.
      const workers = new Set(out.tasks.filter((t: { id: string }) => t.id === "x" || t.id === "y").map((t: { workerId: string }) => t.workerId));
      expect(workers.size).toBe(2);
      expect(gitOut(repo.dir, "worktree", "list", "--porcelain").match(/^worktree /gm)).toHaveLength(1);
      for (const h of ["worker-1", "worker-2"]) expect((await readdir(join(ts.scratch, h, "clones"))).length).toBe(1);
      expect(await checkoutFingerprint(repo.dir)).toBe(before);
    } finally {
      const codes = await Promise.all(procs.map((p) => stopProcess(p.child)));
      expect(codes).toEqual([0, 0, 0, 0, 0, 0]);
      await repo.cleanup();
    }
  }, 180_000);

  // One host, the embedded stack: the merge coordinator and the workers share one clone
  // directory, so a clone fetched by one is found "already there" by the others.
  for (const access of ["auto", "clone"] as const) {
    it(`runs a graph with --remote on the embedded stack (git access ${access}): dependents start from the integration commit`, async () => {
      const repo = await makeRepo();
      const remote = join(ts.scratch, `one-host-${access}.git`);
      execFileSync("git", ["init", "-q", "--bare", remote]);
      const host = join(ts.scratch, `one-host-${access}`);
      try {
        const graph = `${repo.dir}.graph.yaml`;
        await writeFile(
          graph,
          [
            "tasks:",
            '  - { id: x, run: "echo x > x.txt" }',
            '  - { id: y, run: "echo y > y.txt" }',
            '  - { id: z, needs: [x, y], run: "cat x.txt y.txt > z.txt" }',
            "",
          ].join("\n"),
        );
        const env = { ADO_GIT_ACCESS: access, ADO_WORKTREE_DIR: join(host, "worktrees"), ADO_CLONE_DIR: join(host, "clones"), ADO_WORKERS: "2", XDG_STATE_HOME: join(host, "state") };
        // Twice: the second run finds the clone the first one left.
        for (let i = 0; i < 2; i++) {
          const r = await runAdo(["run", "--graph", graph, "--repo", repo.dir, "--remote", remote, "--json"], { env, timeoutMs: 150_000 });
          expect(r.code, r.stderr + r.stdout).toBe(0);
          const out = JSON.parse(r.stdout);
          expect(gitOut(repo.dir, "show", `${out.integrationBranch}:z.txt`)).toBe("x\ny");
          // Every task's commit descends from the run's base: no root commit of its own.
          const base = gitOut(repo.dir, "rev-parse", "main");
          for (const t of ["x", "y", "z"]) expect(gitOut(repo.dir, "merge-base", "--is-ancestor", base, `ado/${out.runId}/${t}`)).toBe("");
        }
        if (access === "clone") {
          // ado prune also removes the runs' refs on the remote (their work is here, archived).
          expect(gitOut(remote, "for-each-ref", "refs/ado/runs/", "refs/heads/ado/")).not.toBe("");
          const pruned = await runAdo(["prune", "--remote", remote], { env, cwd: repo.dir, timeoutMs: 60_000 });
          expect(pruned.code, pruned.stderr + pruned.stdout).toBe(0);
          expect(gitOut(remote, "for-each-ref", "refs/ado/runs/", "refs/heads/ado/")).toBe("");
          expect(gitOut(repo.dir, "branch", "--list", "ado/*")).toBe("");
          expect(gitOut(repo.dir, "for-each-ref", "refs/ado/archive/")).toMatch(/integration/);
        }
      } finally {
        await repo.cleanup();
      }
    }, 360_000);
  }

  it("a clone-only worker refuses a run without a remote with an error that says what to do", async () => {
    // Checked at submission: nothing would ever run it.
    const repo = await makeRepo();
    try {
      const r = await runAdo(["run", "echo hi", "--cmd", "echo hi > hi.txt", "--repo", repo.dir, "--json"], {
        env: { ADO_GIT_ACCESS: "clone", ADO_CLONE_DIR: join(ts.scratch, "c0") },
      });
      expect(r.code).toBe(1);
      expect(r.stderr + r.stdout).toMatch(/--remote/);
    } finally {
      await repo.cleanup();
    }
  }, 60_000);
});
