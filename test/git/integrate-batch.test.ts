/**
 * integrateBatch: several task branches folded into the integration branch in one step,
 * each task's commit chained, the branch moved once.
 */
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { integrate, integrateBatch } from "../../src/git/integrate.js";
import { sh, show } from "../helpers/repo.js";
import { TARGET, commitChanges, head, integrationRepo, parents } from "./integrate-fixture.js";

const SHARED = "one\ntwo\nthree\n";

/** n tasks from the root, each adding its own file. */
async function tasks(n: number, files: Record<string, string> = {}) {
  const fx = await integrationRepo({ "shared.txt": SHARED, "CHANGELOG.md": "- initial\n", ...files });
  const commits = Array.from({ length: n }, (_, i) => commitChanges(fx.repo, `ado/r1/t${i}`, fx.root, { [`t${i}.txt`]: `task ${i}\n` }, `task ${i}`));
  const batch = (sources: string[], extra: { mode?: "merge" | "squash"; rules?: { paths: string[]; strategy: "union" | "ours" | "theirs" }[]; head?: string } = {}) =>
    integrateBatch({
      ...(extra.head ? { head: extra.head } : {}),
      repo: fx.repo,
      target: TARGET,
      mode: extra.mode ?? "merge",
      ...(extra.rules ? { rules: extra.rules } : {}),
      scratchDir: fx.scratchDir,
      items: sources.map((source) => ({ source, message: `merge ${source.slice(0, 8)}` })),
    });
  return { ...fx, commits, batch };
}

/** The git commands `fn` ran (GIT_TRACE, which git children inherit from this process's environment). */
async function gitCommands<T>(fn: () => Promise<T>): Promise<{ result: T; commands: string[] }> {
  const file = path.join(await mkdtemp(path.join(tmpdir(), "ado-trace-")), "trace");
  const before = process.env.GIT_TRACE;
  process.env.GIT_TRACE = file;
  try {
    const result = await fn();
    const text = await readFile(file, "utf8").catch(() => "");
    return { result, commands: [...text.matchAll(/trace: built-in: git (\S+)/g)].map((m) => m[1]!) };
  } finally {
    if (before === undefined) delete process.env.GIT_TRACE;
    else process.env.GIT_TRACE = before;
  }
}

/** How many times `commit` was merged: first-parent commits of the branch that bring it in as a new parent. */
function timesMerged(repo: string, commit: string): number {
  return sh(repo, "log", "--first-parent", "--format=%P", TARGET)
    .split("\n")
    .filter((line) => line.split(" ").slice(1).includes(commit)).length;
}

describe("integrateBatch - merge mode", () => {
  it("batch - five tasks land in one step: a fast-forward, then one merge commit each, chained; the branch moved once", async () => {
    const { repo, root, commits, batch, expectUntouched } = await tasks(5);
    const reflogBefore = sh(repo, "reflog", "show", "--format=%H", `refs/heads/${TARGET}`).split("\n").length;
    const result = await batch(commits);
    expect(result.start).toBe(root);
    expect(result.outcomes.map((o) => o.kind === "merged" && o.how)).toEqual(["fast-forward", "merged", "merged", "merged", "merged"]);
    expect(result.outcomes.map((o) => o.kind === "merged" && o.depth)).toEqual([1, 2, 3, 4, 5]);
    // Each merge commit has the previous one and its task as parents.
    const landed = result.outcomes.map((o) => (o.kind === "merged" ? o.commit : ""));
    expect(landed[0]).toBe(commits[0]);
    for (let i = 1; i < 5; i++) expect(parents(repo, landed[i]!)).toEqual([landed[i - 1], commits[i]]);
    expect(head(repo)).toBe(landed[4]);
    expect(result.head).toBe(landed[4]);
    for (let i = 0; i < 5; i++) expect(show(repo, TARGET, `t${i}.txt`)).toBe(`task ${i}\n`);
    // One update of the ref for the whole batch.
    expect(sh(repo, "reflog", "show", "--format=%H", `refs/heads/${TARGET}`).split("\n").length).toBe(reflogBefore + 1);
    expect(Number(sh(repo, "rev-list", "--count", "--first-parent", TARGET))).toBe(Number(sh(repo, "rev-list", "--count", "--first-parent", root)) + 5);
    await expectUntouched();
  });

  it("batch - the same tasks again (a redelivery) are up to date and move nothing; a mix lands only what is new", async () => {
    const { repo, commits, batch } = await tasks(4);
    const first = await batch(commits.slice(0, 3));
    const again = await batch([commits[1]!, commits[0]!, commits[3]!, commits[2]!]);
    expect(again.start).toBe(first.head);
    expect(again.outcomes.map((o) => o.kind === "merged" && o.how)).toEqual(["up-to-date", "up-to-date", "merged", "up-to-date"]);
    // The first landed by fast-forward (no merge commit names it); every other once.
    for (const c of commits) expect(timesMerged(repo, c) + (c === commits[0] ? 1 : 0)).toBe(1);
    expect(await batch(commits)).toMatchObject({ start: again.head, head: again.head });
  });

  it("batch - a conflict a union rule settles lands; one left for a person is deferred and holds nobody back", async () => {
    const { repo, root, commits, batch, scratchDir, expectUntouched } = await tasks(2);
    const a = commitChanges(repo, "ado/r1/a", root, { "shared.txt": "one\nTWO from a\nthree\n", "CHANGELOG.md": "- initial\n- a\n" });
    const b = commitChanges(repo, "ado/r1/b", root, { "shared.txt": "one\nTWO from b\nthree\n", "CHANGELOG.md": "- initial\n- b\n" });
    const c = commitChanges(repo, "ado/r1/c", root, { "CHANGELOG.md": "- initial\n- c\n" });
    const rules = [{ paths: ["CHANGELOG.md"], strategy: "union" as const }];
    const result = await batch([a, b, commits[0]!, c, commits[1]!], { rules });
    expect(result.outcomes.map((o) => o.kind === "merged" ? o.how : o.kind)).toEqual(["fast-forward", "deferred", "merged", "merged", "merged"]);
    expect(result.outcomes[1]).toMatchObject({ kind: "deferred", why: expect.stringContaining("shared.txt") });
    expect(result.outcomes[3]).toMatchObject({ resolved: [{ path: "CHANGELOG.md", by: "union" }] });
    expect(show(repo, TARGET, "CHANGELOG.md")).toBe("- initial\n- a\n- c\n");
    expect(show(repo, TARGET, "shared.txt")).toBe("one\nTWO from a\nthree\n");
    expect(timesMerged(repo, b)).toBe(0);
    // The deferred one goes alone, through integrate (here: still a conflict for a person).
    expect(await integrate({ repo, target: TARGET, source: b, base: root, mode: "merge", message: "m", rules, scratchDir })).toMatchObject({
      kind: "conflict",
      files: ["shared.txt"],
    });
    await expectUntouched();
  });

  it("batch - a source that names no commit is invalid; the others land", async () => {
    const { repo, commits, batch } = await tasks(2);
    const result = await batch([commits[0]!, "no-such-commit", commits[1]!]);
    expect(result.outcomes.map((o) => o.kind)).toEqual(["merged", "invalid", "merged"]);
    expect(result.outcomes[1]).toMatchObject({ error: { message: expect.stringContaining("does not name a commit") } });
    expect(show(repo, TARGET, "t1.txt")).toBe("task 1\n");
  });

  it("batch - two batches racing on one branch both land, each task merged once", async () => {
    const { repo, commits, batch } = await tasks(10);
    const [x, y] = await Promise.all([batch(commits.slice(0, 5)), batch(commits.slice(5))]);
    expect([...x.outcomes, ...y.outcomes].every((o) => o.kind === "merged")).toBe(true);
    for (let i = 0; i < 10; i++) expect(show(repo, TARGET, `t${i}.txt`)).toBe(`task ${i}\n`);
    const ff = [x.outcomes[0], y.outcomes[0]].filter((o) => o?.kind === "merged" && o.how === "fast-forward").length;
    expect(commits.reduce((n, c) => n + timesMerged(repo, c), 0)).toBe(10 - ff);
  });
});

describe("integrateBatch - squash mode and a new branch", () => {
  it("squash - one commit per task, chained; again: up to date", async () => {
    const { repo, root, commits, batch } = await tasks(3);
    const result = await batch(commits, { mode: "squash" });
    expect(result.outcomes.map((o) => o.kind === "merged" && o.how)).toEqual(["squashed", "squashed", "squashed"]);
    const landed = result.outcomes.map((o) => (o.kind === "merged" ? o.commit : ""));
    expect(parents(repo, landed[0]!)).toEqual([root]);
    expect(parents(repo, landed[2]!)).toEqual([landed[1]]);
    expect(sh(repo, "rev-list", TARGET)).not.toContain(commits[0]);
    expect((await batch(commits, { mode: "squash" })).outcomes.map((o) => o.kind === "merged" && o.how)).toEqual(["up-to-date", "up-to-date", "up-to-date"]);
  });

  it("createAt - a branch that does not exist yet is created at the base first", async () => {
    const { repo, root, commits, scratchDir } = await tasks(2);
    const result = await integrateBatch({
      repo,
      target: "ado/r2/integration",
      createAt: root,
      mode: "merge",
      scratchDir,
      items: commits.map((source) => ({ source, message: "m" })),
    });
    expect(result.start).toBe(root);
    expect(sh(repo, "rev-parse", "ado/r2/integration")).toBe(result.head);
    await expect(integrateBatch({ repo, target: "ado/none", mode: "merge", scratchDir, items: [] })).rejects.toThrow(/does not exist/);
  });
});

describe("integrateBatch - a head the caller knows", () => {
  it("batch - started from the head its caller left (the previous batch's), it reads neither the head nor the names, and lands the same", async () => {
    const { repo, commits, batch } = await tasks(4);
    const first = await batch(commits.slice(0, 2));
    const { result, commands } = await gitCommands(() => batch(commits.slice(2), { head: first.head }));
    expect(result.start).toBe(first.head);
    expect(result.outcomes.map((o) => o.kind === "merged" && o.how)).toEqual(["merged", "merged"]);
    expect(head(repo)).toBe(result.head);
    for (let i = 0; i < 4; i++) expect(show(repo, TARGET, `t${i}.txt`)).toBe(`task ${i}\n`);
    // rev-list, then merge-tree + commit-tree per task, then update-ref: no cat-file or rev-parse.
    expect(commands).toEqual(["rev-list", "merge-tree", "commit-tree", "merge-tree", "commit-tree", "update-ref"]);
    // Without it: the head and the names are read first (one cat-file).
    const again = await gitCommands(() => batch(commits));
    expect(again.commands[0]).toBe("cat-file");
    expect(again.result.outcomes.every((o) => o.kind === "merged" && o.how === "up-to-date")).toBe(true);
  });

  it("batch - a head given that is not the branch's any more: the batch lands on the branch's own head, each task once", async () => {
    const { repo, root, commits, batch } = await tasks(4);
    const first = await batch(commits.slice(0, 2));
    // Another writer moved the branch since: the given head is stale (the CAS catches it).
    const moved = await batch(commits.slice(2, 3));
    const late = await batch([commits[3]!], { head: first.head });
    expect(late.start).toBe(moved.head);
    expect(head(repo)).toBe(late.head);
    expect(show(repo, TARGET, "t3.txt")).toBe("task 3\n");
    expect(timesMerged(repo, commits[3]!)).toBe(1);
    // A head given that holds the task but is not on the branch at all (nothing to move
    // from there): not taken for "up to date"; the task lands on the branch.
    const elsewhere = commitChanges(repo, "ado/r1/elsewhere", root, { "other.txt": "x\n" });
    const t4 = commitChanges(repo, "ado/r1/t4", elsewhere, { "t4.txt": "task 4\n" });
    const r = await batch([t4], { head: t4 });
    expect(r.start).toBe(late.head);
    expect(r.outcomes[0]).toMatchObject({ kind: "merged", how: "merged" });
    expect(show(repo, TARGET, "t4.txt")).toBe("task 4\n");
  });

  it("batch - a source that names no commit, with a head given: it is invalid, the others land", async () => {
    const { repo, commits, batch } = await tasks(3);
    const first = await batch(commits.slice(0, 1));
    const missing = "0".repeat(40);
    const result = await batch([commits[1]!, missing, commits[2]!], { head: first.head });
    expect(result.outcomes.map((o) => o.kind)).toEqual(["merged", "invalid", "merged"]);
    expect(show(repo, TARGET, "t1.txt")).toBe("task 1\n");
    expect(show(repo, TARGET, "t2.txt")).toBe("task 2\n");
  });
});
