/**
 * Remote mode at the git level: a bare repository plays the remote; the submitter, a
 * worker and a merge coordinator each use their own directory, sharing nothing but it.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { checkoutFingerprint, createBranchIfAbsent, mergeIntoBranch, WorktreeManager } from "../../src/git/index.js";
import {
  fetchRunBranches,
  MissingCommitError,
  publishRunBase,
  PushRejectedError,
  pushRef,
  RemoteClones,
  RemoteGitError,
  remoteRef,
  RepoAccess,
  RepoAccessError,
} from "../../src/git/remote.js";
import { GitSpawnCounter } from "../../bench/git-spawns.js";
import { sh, show, tempDir, tempRepo } from "../helpers/repo.js";

async function setup() {
  const user = await tempRepo({ "README.md": "hello\n", "a.txt": "a\n" });
  const dir = await tempDir();
  const remote = path.join(dir, "remote.git");
  sh(dir, "init", "-q", "--bare", remote);
  return { ...user, dir, remote };
}

describe("remote mode (git)", () => {
  it("runs a task on a worker clone and merges it in a merger clone, leaving the user's checkout alone", async () => {
    const { repo, root, dir, remote } = await setup();
    const before = await checkoutFingerprint(repo);
    await publishRunBase(repo, remote, "r1", root);
    expect(await remoteRef(remote, "refs/ado/runs/r1/base", repo)).toBe(root);

    // Worker host: a clone of its own, a worktree of it, a commit, a push of the task branch.
    const worker = new RemoteClones({ dir: path.join(dir, "worker-clones") });
    const wclone = await worker.withCommit(remote, "r1", root);
    const wt = new WorktreeManager({ repo: wclone, baseDir: path.join(dir, "worker-wt") });
    const { path: cwd } = await wt.add({ name: "r1/t1", branch: "ado/r1/t1", base: root });
    await writeFile(path.join(cwd, "b.txt"), "from t1\n");
    const { commit } = await wt.commitAll(cwd, { message: "t1" });
    await pushRef(wclone, remote, commit, "refs/heads/ado/r1/t1");
    await wt.remove(cwd);

    // Merger host: another clone; the integration branch is pushed with a lease.
    const merger = new RemoteClones({ dir: path.join(dir, "merger-clones") });
    const mclone = await merger.withCommit(remote, "r1", commit);
    await createBranchIfAbsent(mclone, "ado/r1/integration", root);
    const merged = await mergeIntoBranch(mclone, { target: "ado/r1/integration", source: commit, message: "merge t1" });
    expect(merged.kind).toBe("fast-forward");
    await pushRef(mclone, remote, commit, "refs/heads/ado/r1/integration", { expected: "" });

    // A second push expecting the branch absent lost the race: told apart from a dead remote.
    await expect(pushRef(mclone, remote, root, "refs/heads/ado/r1/integration", { expected: "" })).rejects.toBeInstanceOf(PushRejectedError);

    // The submitter brings the result home, as a branch; the checkout is untouched.
    await fetchRunBranches(repo, remote, "r1");
    expect(sh(repo, "rev-parse", "ado/r1/integration")).toBe(commit);
    expect(sh(repo, "rev-parse", "ado/r1/t1")).toBe(commit);
    expect(show(repo, "ado/r1/integration", "b.txt")).toBe("from t1\n");
    expect(await checkoutFingerprint(repo)).toBe(before);
  });

  it("fetches a later commit of the run (an integration commit) into an existing clone", async () => {
    const { repo, root, dir, remote } = await setup();
    await publishRunBase(repo, remote, "r2", root);
    const clones = new RemoteClones({ dir: path.join(dir, "c") });
    const clone = await clones.withCommit(remote, "r2", root);
    const other = sh(repo, "commit-tree", `${root}^{tree}`, "-p", root, "-m", "later");
    await pushRef(repo, remote, other, "refs/heads/ado/r2/integration");
    expect(await clones.withCommit(remote, "r2", other)).toBe(clone);
  });

  it("a clone that was found holding a commit is not asked again for it", async () => {
    const { repo, root, dir, remote } = await setup();
    await publishRunBase(repo, remote, "r7", root);
    const clones = new RemoteClones({ dir: path.join(dir, "c") });
    const clone = await clones.withCommit(remote, "r7", root);
    const spawns = new GitSpawnCounter().start();
    try {
      expect(await Promise.all([1, 2, 3].map(() => clones.withCommit(remote, "r7", root)))).toEqual([clone, clone, clone]);
    } finally {
      spawns.stop();
    }
    expect(spawns.total()).toBe(0);
    expect(sh(clone, "rev-parse", "HEAD")).toBe(root);
  });

  it("RepoAccess: the run's repository is asked once for a commit it holds (tasks starting together share the question), again for one it lacked", async () => {
    const { repo, root, dir } = await setup();
    const access = new RepoAccess("auto", path.join(dir, "clones"));
    const run = { runId: "r8", repo };
    const spawns = new GitSpawnCounter().start();
    try {
      const targets = await Promise.all([1, 2, 3, 4].map(() => access.resolve(run, root)));
      targets.push(await access.resolve(run, root));
      for (const t of targets) expect(t).toEqual({ dir: repo, clone: false, remote: undefined });
      expect(spawns.counts.get("cat-file -e")).toBe(1);
      // A commit the repository does not hold yet: refused (no remote to clone), and found once it is there.
      const other = await tempRepo({ "b.txt": "b\n" });
      const err = await access.resolve(run, other.root).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RepoAccessError);
      sh(repo, "fetch", "-q", other.repo, "main:refs/heads/other");
      expect(await access.resolve(run, other.root)).toEqual({ dir: repo, clone: false, remote: undefined });
      expect(spawns.counts.get("cat-file -e")).toBe(3);
    } finally {
      spawns.stop();
    }
  });

  it("one host: a clone fetched by another instance (the merge coordinator) has a HEAD for the workers", async () => {
    const { repo, root, dir, remote } = await setup();
    await publishRunBase(repo, remote, "r5", root);
    const shared = path.join(dir, "shared-clones");
    const mclone = await new RemoteClones({ dir: shared }).fetchRun(remote, "r5");
    expect(sh(mclone, "rev-parse", "HEAD")).toBe(root);
    // A clone left with an unborn HEAD (by a version that did not set it): a worker that
    // finds the commit already there still gives it one.
    const other = await tempDir();
    const left = new RemoteClones({ dir: other });
    const lclone = await left.open(remote);
    sh(lclone, "fetch", "-q", "origin", "+refs/ado/runs/r5/*:refs/ado/runs/r5/*");
    expect(sh(lclone, "rev-parse", "--verify", "-q", "refs/ado/runs/r5/base")).toBe(root);
    expect(await new RemoteClones({ dir: other }).withCommit(remote, "r5", root)).toBe(lclone);
    expect(sh(lclone, "rev-parse", "HEAD")).toBe(root);
  });

  it("one host: fetching the run keeps a task branch a worker created in the clone and has not pushed yet", async () => {
    const { repo, root, dir, remote } = await setup();
    await publishRunBase(repo, remote, "r6", root);
    const shared = path.join(dir, "shared-clones");
    const worker = new RemoteClones({ dir: shared });
    const clone = await worker.withCommit(remote, "r6", root);
    const wt = new WorktreeManager({ repo: clone, baseDir: path.join(dir, "wt") });
    const { path: cwd } = await wt.add({ name: "r6/t1", branch: "ado/r6/t1", base: root });
    // Meanwhile the merge coordinator (another instance, same directory) fetches the run.
    await new RemoteClones({ dir: shared }).fetchRun(remote, "r6");
    await writeFile(path.join(cwd, "t1.txt"), "t1\n");
    const { commit } = await wt.commitAll(cwd, { message: "t1" });
    // The task's commit sits on the run's base, not on a root of its own.
    expect(sh(clone, "rev-parse", `${commit}^`)).toBe(root);
  });

  it("says what is wrong for a commit the remote lacks, and for a remote that is not there", async () => {
    const { repo, root, dir, remote } = await setup();
    const clones = new RemoteClones({ dir: path.join(dir, "c") });
    const err = await clones.withCommit(remote, "r3", root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MissingCommitError);
    expect((err as Error).message).toMatch(/was the run's base pushed/);

    const missing = path.join(dir, "nowhere.git");
    const dead = await clones.withCommit(missing, "r3", root).catch((e: unknown) => e);
    expect(dead).toBeInstanceOf(RemoteGitError);
    expect((dead as RemoteGitError).retryable).toBe(true);
    expect((dead as Error).message).toContain(`git ls-remote ${missing}`);
    await expect(publishRunBase(repo, missing, "r3", root)).rejects.toBeInstanceOf(RemoteGitError);
  });

  it("creates one clone when many tasks ask at once", async () => {
    const { repo, root, dir, remote } = await setup();
    await publishRunBase(repo, remote, "r4", root);
    const clones = new RemoteClones({ dir: path.join(dir, "c") });
    const dirs = await Promise.all(Array.from({ length: 8 }, () => clones.withCommit(remote, "r4", root)));
    expect(new Set(dirs).size).toBe(1);
  });
});
