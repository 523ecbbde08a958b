/**
 * The human side of the merge coordinator's git work: a worktree holding the conflict
 * for `ado hitl resolve --manual`, its completion, and `--merge-into` at the end of a run.
 */
import { execFileSync } from "node:child_process";
import { access, readFile, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { NotAManualResolutionError } from "../../src/git/integrate-errors.js";
import { completeManualResolution, integrate, prepareManualResolution } from "../../src/git/integrate.js";
import { checkoutFingerprint } from "../../src/git/repo.js";
import { mergeIntoTarget } from "../../src/git/target.js";
import { sh, show } from "../helpers/repo.js";
import { TARGET, commitChanges, head, integrationRepo, parents } from "./integrate-fixture.js";

const SHARED = "one\ntwo\nthree\n";

async function conflictingTasks() {
  const fx = await integrationRepo({ "shared.txt": SHARED, "CHANGELOG.md": "- initial\n" });
  const a = commitChanges(fx.repo, "ado/r1/a", fx.root, { "shared.txt": "one\nTWO from a\nthree\n", "CHANGELOG.md": "- initial\n- a\n" });
  const b = commitChanges(fx.repo, "ado/r1/b", fx.root, { "shared.txt": "one\nTWO from b\nthree\n", "CHANGELOG.md": "- initial\n- b\n" });
  await integrate(fx.opts(a));
  return { ...fx, a, b };
}

/** Runs git in the manual worktree as its user would. */
function user(dir: string, ...args: string[]): string {
  return execFileSync("git", ["-c", "user.name=Human", "-c", "user.email=human@example.com", ...args], { cwd: dir, encoding: "utf8" }).trim();
}

const exists = (p: string) => access(p).then(() => true, () => false);

describe("manual resolution", () => {
  it("manual - the worktree holds the merge in progress; after the user commits, completing lands it and removes the worktree", async () => {
    const { repo, a, b, opts, scratchDir, expectUntouched } = await conflictingTasks();
    const rules = [{ paths: ["CHANGELOG.md"], strategy: "union" as const }];
    const prepared = await prepareManualResolution(opts(b, { rules }), "r1-b", "ado/r1/b-resolve");
    expect(prepared.worktree).toBe(path.join(scratchDir, "manual", "r1-b"));
    expect(prepared.branch).toBe("ado/r1/b-resolve");
    // The changelog was settled by its rule; what is left for the person is shared.txt.
    expect(prepared.files).toEqual(["shared.txt"]);
    expect(user(prepared.worktree, "rev-parse", "MERGE_HEAD")).toBe(b);
    expect(user(prepared.worktree, "symbolic-ref", "HEAD")).toBe("refs/heads/ado/r1/b-resolve");
    expect(await readFile(path.join(prepared.worktree, "shared.txt"), "utf8")).toContain("<<<<<<<");
    expect(await readFile(path.join(prepared.worktree, "CHANGELOG.md"), "utf8")).toBe("- initial\n- a\n- b\n");

    // Completing before the markers are gone keeps everything as it is.
    const early = await completeManualResolution(opts(b), prepared.worktree);
    expect(early).toMatchObject({ kind: "conflict", files: ["shared.txt"], reason: expect.stringContaining("conflict markers remain in shared.txt") });
    expect(await exists(prepared.worktree)).toBe(true);
    expect(head(repo)).toBe(a);

    await writeFile(path.join(prepared.worktree, "shared.txt"), "one\nTWO by hand\nthree\n");
    user(prepared.worktree, "add", "-A");
    user(prepared.worktree, "commit", "-q", "--no-edit");
    const userCommit = user(prepared.worktree, "rev-parse", "HEAD");

    const done = await completeManualResolution(opts(b, { validate: { command: "grep -q 'by hand' shared.txt", timeoutMs: 30_000 } }), prepared.worktree);
    expect(done).toEqual({
      kind: "merged",
      commit: userCommit,
      how: "merged",
      resolved: [
        { path: "CHANGELOG.md", by: "union" },
        { path: "shared.txt", by: "manual" },
      ],
    });
    expect(head(repo)).toBe(userCommit);
    expect(parents(repo, userCommit)).toEqual([a, b]);
    expect(show(repo, TARGET, "shared.txt")).toBe("one\nTWO by hand\nthree\n");
    expect(await exists(prepared.worktree)).toBe(false);
    await expectUntouched();
  });

  it("manual - resolved files left uncommitted are committed at completion; squash mode lands one commit", async () => {
    const { repo, a, b, opts, scratchDir, expectUntouched } = await conflictingTasks();
    const prepared = await prepareManualResolution(opts(b, { mode: "squash" }), "r1-b", "ado/r1/b-resolve");
    expect(prepared.files.sort()).toEqual(["CHANGELOG.md", "shared.txt"]);
    await writeFile(path.join(prepared.worktree, "shared.txt"), "one\nTWO by hand\nthree\n");
    await writeFile(path.join(prepared.worktree, "CHANGELOG.md"), "- initial\n- a\n- b by hand\n");

    // Completion may name the scratch directory and the worktree through a symlink.
    const link = path.join(path.dirname(scratchDir), "scratch-link");
    await symlink(scratchDir, link);
    const done = await completeManualResolution(
      opts(b, { mode: "squash", message: "squash b (by hand)", scratchDir: link }),
      path.join(link, "manual", "r1-b"),
    );
    if (done.kind !== "merged") throw new Error(`expected merged, got ${JSON.stringify(done)}`);
    expect(done.how).toBe("squashed");
    expect(parents(repo, done.commit)).toEqual([a]);
    expect(sh(repo, "log", "-1", "--format=%s", TARGET)).toBe("squash b (by hand)");
    expect(show(repo, TARGET, "CHANGELOG.md")).toBe("- initial\n- a\n- b by hand\n");
    await expectUntouched();
  });

  it("manual - a failed validation keeps the worktree for another try; the target moving meanwhile is merged in", async () => {
    const { repo, a, b, root, opts, expectUntouched } = await conflictingTasks();
    const prepared = await prepareManualResolution(opts(b), "r1-b", "ado/r1/b-resolve");
    await writeFile(path.join(prepared.worktree, "shared.txt"), "one\nTWO by hand\nthree\n");
    await writeFile(path.join(prepared.worktree, "CHANGELOG.md"), "- initial\n- a\n- b\n");
    const validate = { command: "test -f other.txt", timeoutMs: 30_000 };
    const failed = await completeManualResolution(opts(b, { validate }), prepared.worktree);
    expect(failed).toMatchObject({ kind: "validation_failed", exitCode: 1 });
    expect(await exists(prepared.worktree)).toBe(true);
    expect(head(repo)).toBe(a);

    // Another task lands while the person looks; the resolution is merged on top of it.
    const c = commitChanges(repo, "ado/r1/c", root, { "other.txt": "c\n" });
    const landed = await integrate(opts(c));
    if (landed.kind !== "merged") throw new Error("c did not land");
    const done = await completeManualResolution(opts(b, { validate }), prepared.worktree);
    if (done.kind !== "merged") throw new Error(`expected merged, got ${JSON.stringify(done)}`);
    expect(parents(repo, done.commit)[0]).toBe(landed.commit);
    expect(show(repo, TARGET, "other.txt")).toBe("c\n");
    expect(show(repo, TARGET, "shared.txt")).toBe("one\nTWO by hand\nthree\n");
    await expectUntouched();
  });

  it("manual - a commit that does not contain the task, a foreign path and a taken name are refused clearly", async () => {
    const { a, b, opts, scratchDir } = await conflictingTasks();
    const prepared = await prepareManualResolution(opts(b), "r1-b", "ado/r1/b-resolve");
    // The user gives up on the merge and commits something else.
    user(prepared.worktree, "merge", "--abort");
    await writeFile(path.join(prepared.worktree, "shared.txt"), "something else\n");
    const outcome = await completeManualResolution(opts(b), prepared.worktree);
    expect(outcome).toMatchObject({ kind: "conflict", reason: expect.stringContaining(`does not contain the task's commit ${b.slice(0, 12)}`) });
    expect(await exists(prepared.worktree)).toBe(true);

    await expect(completeManualResolution(opts(b), scratchDir)).rejects.toBeInstanceOf(NotAManualResolutionError);
    await expect(completeManualResolution(opts(a), prepared.worktree)).rejects.toThrow(/not this merge/);
    await expect(prepareManualResolution(opts(b), "r1-b", "ado/r1/other")).rejects.toThrow(/already exists/);
    await expect(prepareManualResolution(opts(b), "r1-c", "ado/r1/b-resolve")).rejects.toThrow(/branch 'ado\/r1\/b-resolve' already exists/);
    await expect(prepareManualResolution(opts(b), "../escape", "ado/r1/x")).rejects.toThrow(/single directory name/);
  });
});

describe("mergeIntoTarget", () => {
  /** A run whose integration branch holds task a; `release` is a branch not checked out anywhere. */
  async function finishedRun() {
    const fx = await integrationRepo({ "a.txt": "a\n", "main.txt": "m\n" });
    const a = commitChanges(fx.repo, "ado/r1/a", fx.root, { "a.txt": "a done\n" });
    await integrate(fx.opts(a));
    sh(fx.repo, "branch", "release", fx.root);
    const into = (extra: Partial<Parameters<typeof mergeIntoTarget>[0]> = {}) =>
      mergeIntoTarget({ repo: fx.repo, integration: TARGET, into: "release", base: fx.root, message: "ado: merge run r1", ...extra });
    return { ...fx, a, into };
  }

  it("merge-into - fast-forwards a branch that has not moved since the base, then is up to date", async () => {
    const { repo, a, into, expectUntouched } = await finishedRun();
    expect(await into()).toEqual({ kind: "fast-forward", commit: a });
    expect(head(repo, "release")).toBe(a);
    expect(await into()).toEqual({ kind: "up-to-date", commit: a });
    await expectUntouched();
  });

  it("merge-into - a branch that moved but merges cleanly gets a merge commit; one that conflicts is refused", async () => {
    const { repo, root, a, into, expectUntouched } = await finishedRun();
    const moved = commitChanges(repo, "release", root, { "main.txt": "m moved\n" });
    const merged = await into();
    if (merged.kind !== "merged") throw new Error(`expected merged, got ${JSON.stringify(merged)}`);
    expect(parents(repo, merged.commit)).toEqual([moved, a]);
    expect(sh(repo, "log", "-1", "--format=%s", "release")).toBe("ado: merge run r1");

    const conflicting = commitChanges(repo, "release2", root, { "a.txt": "a changed on release\n" });
    const refused = await into({ into: "release2" });
    expect(refused).toMatchObject({ kind: "refused", reason: expect.stringContaining("conflicts in a.txt") });
    expect(head(repo, "release2")).toBe(conflicting);
    expect(await into({ into: "nope" })).toMatchObject({ kind: "refused", reason: expect.stringContaining("branch 'nope' does not exist") });
    await expectUntouched();
  });

  it("merge-into - a branch checked out in the user's tree is refused with the command to run there", async () => {
    const { repo, a, root, into, expectUntouched } = await finishedRun();
    const refused = await into({ into: "main" });
    expect(refused).toEqual({
      kind: "refused",
      reason: `'main' is checked out in ${repo}, and ado does not change a checkout behind its back: to fast-forward it, run git -C ${repo} merge --ff-only ${TARGET}`,
    });
    // Allowed to update it, but the checkout has uncommitted changes: still refused.
    const dirty = await into({ into: "main", updateCheckedOut: true });
    expect(dirty).toMatchObject({ kind: "refused", reason: expect.stringContaining("has uncommitted changes") });
    expect(head(repo, "main")).toBe(root);
    await expectUntouched();

    // Clean checkout, allowed, fast-forward: the checkout is moved with git merge --ff-only.
    sh(repo, "stash", "-q", "-u");
    const before = await checkoutFingerprint(repo);
    expect(await into({ into: "main", updateCheckedOut: true })).toEqual({ kind: "fast-forward", commit: a });
    expect(head(repo, "main")).toBe(a);
    expect(await readFile(path.join(repo, "a.txt"), "utf8")).toBe("a done\n");
    expect(sh(repo, "status", "--porcelain")).toBe("");
    expect(await checkoutFingerprint(repo)).not.toBe(before);
  });
});
