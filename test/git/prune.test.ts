/**
 * Pruning a finished run's refs: deleted when something that stays holds their work,
 * archived first when nothing does, kept when checked out; on the remote, deleted only
 * when this repository has their commits.
 */
import path from "node:path";
import { describe, expect, it } from "vitest";
import { applyPrune, checkedOutBranches, listRemoteRunRefs, listRunRefs, mergedRunBranches, planPrune, pruneRemoteRun } from "../../src/git/index.js";
import { sh, tempDir, tempRepo } from "../helpers/repo.js";

/** A commit on top of `parent` (no work tree involved). */
const commitOn = (repo: string, parent: string, msg: string) => sh(repo, "commit-tree", `${parent}^{tree}`, "-p", parent, "-m", msg);

describe("prune - plan (pure)", () => {
  it("prune - deletes what is held elsewhere, archives the rest first, keeps what is checked out", () => {
    const run = {
      runId: "r1",
      branches: [
        { ref: "refs/heads/ado/r1/a", commit: "1".repeat(40) },
        { ref: "refs/heads/ado/r1/integration", commit: "2".repeat(40) },
        { ref: "refs/heads/ado/r1/b", commit: "3".repeat(40) },
      ],
      runRefs: [{ ref: "refs/ado/runs/r1/base", commit: "4".repeat(40) }],
    };
    const now = new Date("2026-01-02T03:04:05.678Z");
    const actions = planPrune({ run, merged: new Set(["refs/heads/ado/r1/a"]), checkedOut: new Map([["refs/heads/ado/r1/b", "/wt/b"]]), now });
    expect(actions).toEqual([
      { ref: "refs/heads/ado/r1/a", commit: "1".repeat(40), action: "delete" },
      { ref: "refs/heads/ado/r1/integration", commit: "2".repeat(40), action: "archive", archive: "refs/ado/archive/r1/integration/2026-01-02T03-04-05-678Z" },
      { ref: "refs/heads/ado/r1/b", commit: "3".repeat(40), action: "keep", why: expect.stringMatching(/checked out in \/wt\/b/) },
      { ref: "refs/ado/runs/r1/base", commit: "4".repeat(40), action: "delete" },
    ]);
  });
});

describe("prune - in a repository", () => {
  it("prune - a run whose result was taken is deleted; one whose result nobody took is archived, then deleted; nothing is lost", async () => {
    const { repo, root } = await tempRepo();
    // Run r1: its result was merged into main. Run r2: its result is only on its branches.
    const t1 = commitOn(repo, root, "r1 task");
    sh(repo, "branch", "ado/r1/t", t1);
    sh(repo, "branch", "ado/r1/integration", t1);
    sh(repo, "merge", "-q", "--ff-only", t1);
    const t2 = commitOn(repo, root, "r2 task");
    const i2 = commitOn(repo, t2, "r2 merge");
    sh(repo, "branch", "ado/r2/t", t2);
    sh(repo, "branch", "ado/r2/integration", i2);
    const failed = root; // a failed task's branch is reset to its base
    sh(repo, "branch", "ado/r2/failed", failed);

    const runs = await listRunRefs(repo);
    expect([...runs.keys()].sort()).toEqual(["r1", "r2"]);
    const merged = await mergedRunBranches(repo, runs.values());
    const checkedOut = await checkedOutBranches(repo);
    const now = new Date();
    for (const run of runs.values()) await applyPrune(repo, planPrune({ run, merged, checkedOut, now }));

    expect(sh(repo, "branch", "--list", "ado/*")).toBe("");
    const archives = sh(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/ado/archive/").split("\n");
    // Only r2's integration branch held work nothing else holds; its task's work is in it.
    expect(archives).toHaveLength(1);
    expect(archives[0]).toMatch(new RegExp(`^refs/ado/archive/r2/integration/\\S+ ${i2}$`));
    expect(sh(repo, "merge-base", "--is-ancestor", t2, i2)).toBe("");
  });

  it("prune - a branch that moved since the plan is not deleted (the transaction fails whole)", async () => {
    const { repo, root } = await tempRepo();
    sh(repo, "branch", "ado/r3/a", root);
    sh(repo, "branch", "ado/r3/b", root);
    const runs = await listRunRefs(repo);
    const plan = planPrune({ run: runs.get("r3")!, merged: new Set(["refs/heads/ado/r3/a", "refs/heads/ado/r3/b"]), checkedOut: new Map(), now: new Date() });
    sh(repo, "branch", "-f", "ado/r3/b", commitOn(repo, root, "moved"));
    await expect(applyPrune(repo, plan)).rejects.toThrow();
    expect(sh(repo, "branch", "--list", "ado/r3/*").split("\n")).toHaveLength(2);
  });

  it("prune - on the remote, deletes the run's refs whose commits are here, keeps the others", async () => {
    const { repo, root } = await tempRepo();
    const dir = await tempDir();
    const remote = path.join(dir, "remote.git");
    sh(dir, "init", "-q", "--bare", remote);
    const here = commitOn(repo, root, "here");
    sh(repo, "push", "-q", remote, `${root}:refs/ado/runs/r4/base`, `${here}:refs/heads/ado/r4/integration`);
    // A commit only the remote has (made in a clone elsewhere).
    const other = path.join(dir, "other");
    sh(dir, "clone", "-q", remote, other);
    sh(other, "fetch", "-q", "origin", "refs/ado/runs/r4/base");
    const only = commitOn(other, "FETCH_HEAD", "only on the remote");
    sh(other, "push", "-q", "origin", `${only}:refs/heads/ado/r4/t`);

    const refs = await listRemoteRunRefs(repo, remote, "r4");
    expect(refs.map((r) => r.ref).sort()).toEqual(["refs/ado/runs/r4/base", "refs/heads/ado/r4/integration", "refs/heads/ado/r4/t"]);
    const dry = await pruneRemoteRun(repo, remote, refs, true);
    expect(dry.kept.map((r) => r.ref)).toEqual(["refs/heads/ado/r4/t"]);
    expect(await listRemoteRunRefs(repo, remote, "r4")).toHaveLength(3);
    await pruneRemoteRun(repo, remote, refs, false);
    expect((await listRemoteRunRefs(repo, remote, "r4")).map((r) => r.ref)).toEqual(["refs/heads/ado/r4/t"]);
  });
});
